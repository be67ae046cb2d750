//! The kit set up for the channel binder: dead letters read back, the broker cut off, the log
//! looked at. Shared by the conformance run and the mutation checks.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different subset"
)]

use std::time::Duration;

use async_trait::async_trait;
use channel_binder::{ChannelBinderFactory, Fault, LogBroker};
use stream_core::binder::AnyBinderFactory;
use stream_core::conformance::{BrokerControl, Kit, WireProbe, WireTap};

/// Cuts a broker of its own off, so trials running meanwhile are not affected.
pub struct Outage {
    broker: LogBroker,
    fault: Option<Fault>,
}

#[async_trait]
impl BrokerControl for Outage {
    fn properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn factory(&self) -> Option<AnyBinderFactory> {
        let f = ChannelBinderFactory::new(self.broker.clone());
        Some(AnyBinderFactory::new(match self.fault {
            Some(fault) => f.with_fault(fault),
            None => f,
        }))
    }
    async fn cut(&self) {
        self.broker.cut();
    }
    async fn restore(&self) {
        self.broker.restore();
    }
}

/// Looks at the log itself.
pub struct Probe(pub LogBroker);

struct Tap {
    broker: LogBroker,
    destination: String,
    from: usize,
}

#[async_trait]
impl WireProbe for Probe {
    async fn tap(&self, destination: &str) -> Result<Box<dyn WireTap>, String> {
        Ok(Box::new(Tap {
            broker: self.0.clone(),
            destination: destination.to_owned(),
            from: self.0.records(destination).len(),
        }))
    }
}

#[async_trait]
impl WireTap for Tap {
    async fn next_header_names(&mut self, timeout: Duration) -> Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.broker.records(&self.destination).get(self.from) {
                self.from += 1;
                return Ok(r.headers.iter().map(|(k, _)| k.to_owned()).collect());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("nothing reached `{}`", self.destination));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The kit over a channel binder, with `fault` built in.
pub fn kit(fault: Option<Fault>) -> Kit {
    let broker = LogBroker::new();
    let factory = ChannelBinderFactory::new(broker.clone());
    let factory = match fault {
        Some(f) => factory.with_fault(f),
        None => factory,
    };
    Kit::new(factory)
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
        .with_broker_control(Outage {
            broker: LogBroker::new(),
            fault,
        })
        .with_wire_probe(Probe(broker))
}
