//! The RabbitMQ binder passes the conformance kit against the real broker: one trial per
//! scenario (ignored unless asked: `cargo xtask itest rabbit` runs them with `--ignored`).

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use binder_rabbit::RabbitBinderFactory;
use binder_rabbit::stream_core::conformance::{Kit, TcpProxy, WireProbe, WireTap};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Reads what reached the broker: a queue of its own bound to the destination's exchange.
struct Probe {
    uri: String,
}

struct Tap {
    _conn: Connection,
    channel: Channel,
    queue: String,
}

#[async_trait]
impl WireProbe for Probe {
    async fn tap(&self, destination: &str) -> Result<Box<dyn WireTap>, String> {
        let conn = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        channel
            .exchange_declare(
                destination.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let queue = q.name().as_str().to_owned();
        channel
            .queue_bind(
                queue.as_str().into(),
                destination.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Tap {
            _conn: conn,
            channel,
            queue,
        }))
    }
}

#[async_trait]
impl WireTap for Tap {
    async fn next_header_names(&mut self, timeout: Duration) -> Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .map_err(|e| e.to_string())?;
            if let Some(m) = got {
                return Ok(m
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|t| t.inner().keys().map(|k| k.as_str().to_owned()).collect())
                    .unwrap_or_default());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("nothing reached the tap within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn main() -> ExitCode {
    let (host, port) = (common::host(), common::port());
    // The proxy lives on a runtime of its own that outlives every trial's.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let upstream: Option<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    let proxy = upstream.and_then(|upstream| {
        rt.block_on(TcpProxy::start(upstream, |addr| {
            vec![
                ("spring.rabbitmq.host".into(), addr.ip().to_string()),
                ("spring.rabbitmq.port".into(), addr.port().to_string()),
            ]
        }))
        .ok()
    });
    let mut kit = Kit::new(RabbitBinderFactory::new())
        .with_property("spring.rabbitmq.host", host.clone())
        .with_property("spring.rabbitmq.port", port.to_string())
        .with_property(
            "spring.cloud.stream.rabbit.default.consumer.auto-bind-dlq",
            "true",
        )
        // Required-group queues the producer declares match the consumer's declaration.
        .with_property(
            "spring.cloud.stream.rabbit.default.producer.auto-bind-dlq",
            "true",
        )
        .with_property(
            "spring.cloud.stream.rabbit.default.consumer.recovery-interval",
            "500ms",
        )
        .with_dead_letters(|destination, group| {
            let reader =
                |k: &str| format!("spring.cloud.stream.rabbit.bindings.dlq-in-0.consumer.{k}");
            vec![
                (
                    "spring.cloud.stream.bindings.dlq-in-0.destination".into(),
                    "DLX".into(),
                ),
                (
                    "spring.cloud.stream.bindings.dlq-in-0.group".into(),
                    format!("{destination}.{group}.dlq"),
                ),
                (reader("queue-name-group-only"), "true".into()),
                (reader("bind-queue"), "false".into()),
                (reader("declare-exchange"), "false".into()),
                (reader("auto-bind-dlq"), "false".into()),
            ]
        })
        .with_wire_probe(Probe {
            uri: format!("amqp://guest:guest@{host}:{port}/%2f"),
        })
        .ignored_unless_asked(common::IGNORE);
    if let Some(proxy) = proxy {
        kit = kit.with_broker_control(proxy);
    }
    let code = kit.run();
    drop(rt);
    code
}
