//! The in-memory binder passes the conformance kit: one trial per scenario.

use async_trait::async_trait;
use stream_core::binder::AnyBinderFactory;
use stream_core::conformance::{BrokerControl, Kit, WireProbe, WireTap};
use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};

/// Cuts an in-memory broker of its own off (so trials running meanwhile are not affected).
struct Outage(InMemoryBroker);

#[async_trait]
impl BrokerControl for Outage {
    fn properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn factory(&self) -> Option<AnyBinderFactory> {
        Some(AnyBinderFactory::new(InMemoryBinderFactory::with_broker(
            self.0.clone(),
        )))
    }
    async fn cut(&self) {
        self.0.cut();
    }
    async fn restore(&self) {
        self.0.restore();
    }
}

/// Reads what reached the in-memory broker.
struct Probe(InMemoryBroker);

struct Tap {
    broker: InMemoryBroker,
    destination: String,
}

#[async_trait]
impl WireProbe for Probe {
    async fn tap(&self, destination: &str) -> Result<Box<dyn WireTap>, String> {
        self.0.capture(destination);
        Ok(Box::new(Tap {
            broker: self.0.clone(),
            destination: destination.to_owned(),
        }))
    }
}

#[async_trait]
impl WireTap for Tap {
    async fn next_header_names(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, String> {
        let m = self
            .broker
            .receive(&self.destination, timeout)
            .await
            .ok_or_else(|| format!("nothing reached `{}`", self.destination))?;
        Ok(m.headers().iter().map(|(k, _)| k.to_owned()).collect())
    }
}

fn main() -> std::process::ExitCode {
    let broker = InMemoryBroker::new();
    Kit::new(InMemoryBinderFactory::with_broker(broker.clone()))
        .with_dead_letters(|destination, group| {
            vec![
                (
                    "spring.cloud.stream.bindings.dlq-in-0.destination".into(),
                    format!("{destination}.{group}.dlq"),
                ),
                (
                    "spring.cloud.stream.bindings.dlq-in-0.group".into(),
                    "reader".into(),
                ),
            ]
        })
        .with_broker_control(Outage(InMemoryBroker::new()))
        .with_wire_probe(Probe(broker))
        .run()
}
