//! Helpers shared by the broker tests: a raw lapin client to inspect what the broker holds,
//! unique names, a recording InboundHandler.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different subset"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use binder_rabbit::stream_config::{ConsumerProperties, Environment, ProducerProperties};
use binder_rabbit::stream_core::binder::{
    Binder, ConsumerRequest, Delivery, Disposition, InboundHandler, ProducerRequest,
};
use binder_rabbit::{Message, RabbitBinder};
use bytes::Bytes;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

pub const IGNORE: &str = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest";

pub fn host() -> String {
    std::env::var("SPRING_RABBITMQ_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned())
}

pub fn port() -> u16 {
    std::env::var("SPRING_RABBITMQ_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "binder_rabbit=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A unique name: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{n:x}")
}

/// An environment pointing at the test broker, plus `extra` properties.
pub fn env(extra: &str) -> Environment {
    env_at(&host(), port(), extra)
}

pub fn env_at(host: &str, port: u16, extra: &str) -> Environment {
    let text = format!("spring.rabbitmq.host={host}\nspring.rabbitmq.port={port}\n{extra}");
    Environment::builder()
        .properties_str("test.properties", text)
        .build()
        .expect("test environment")
}

pub fn binder(extra: &str) -> RabbitBinder {
    init_tracing();
    RabbitBinder::new(env(extra)).expect("binder")
}

/// A raw client connection; failing to connect fails the test.
pub async fn raw() -> Admin {
    let uri = format!("amqp://guest:guest@{}:{}/%2f", host(), port());
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be running at {}:{}: {e}", host(), port()));
    Admin { conn }
}

pub struct Admin {
    pub conn: Connection,
}

pub fn table(args: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        t.insert((*k).into(), v.clone());
    }
    t
}

pub fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

impl Admin {
    pub async fn channel(&self) -> Channel {
        self.conn.create_channel().await.expect("channel")
    }

    /// Whether a queue exists (passive declare); returns its message count.
    pub async fn queue_messages(&self, name: &str) -> Option<u32> {
        let ch = self.channel().await;
        let r = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        r.ok().map(|q| q.message_count())
    }

    /// Consumer count of a queue.
    pub async fn consumers(&self, name: &str) -> Option<u32> {
        let ch = self.channel().await;
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.consumer_count())
    }

    /// Re-declares a queue with exactly these settings: Ok if the broker's queue is equivalent,
    /// the broker's 406 reason otherwise.
    pub async fn queue_matches(
        &self,
        name: &str,
        durable: bool,
        auto_delete: bool,
        args: &[(&str, AMQPValue)],
    ) -> Result<(), String> {
        if self.queue_messages(name).await.is_none() {
            return Err(format!("queue {name} does not exist"));
        }
        let ch = self.channel().await;
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                auto_delete,
                ..Default::default()
            },
            table(args),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Re-declares an exchange with these settings (Ok = equivalent).
    pub async fn exchange_matches(
        &self,
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
    ) -> Result<(), String> {
        let ch = self.channel().await;
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable,
                auto_delete,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    pub async fn exchange_exists(&self, name: &str) -> bool {
        let ch = self.channel().await;
        ch.exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok()
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        let ch = self.channel().await;
        ch.confirm_select(Default::default())
            .await
            .expect("confirms");
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }

    /// Gets one message (auto-ack), waiting up to `wait`.
    pub async fn get(
        &self,
        queue: &str,
        wait: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let ch = self.channel().await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if r.is_some() || tokio::time::Instant::now() >= deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn delete_queue(&self, name: &str) {
        let ch = self.channel().await;
        let _ = ch
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await;
    }

    pub async fn delete_exchange(&self, name: &str) {
        let ch = self.channel().await;
        let _ = ch
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }

    pub async fn cleanup(&self, queues: &[&str], exchanges: &[&str]) {
        for q in queues {
            self.delete_queue(q).await;
        }
        for e in exchanges {
            self.delete_exchange(e).await;
        }
    }
}

/// Header value of a raw AMQP message.
pub fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(name))
}

pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match header(props, name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

type Decide = dyn Fn(&Message<Bytes>) -> Disposition + Send + Sync;

/// An InboundHandler that records every message and answers with `decide`.
pub struct Recorder {
    pub tx: mpsc::UnboundedSender<Message<Bytes>>,
    pub decide: Box<Decide>,
    pub raw_seen: Mutex<u32>,
}

pub fn recorder(
    decide: impl Fn(&Message<Bytes>) -> Disposition + Send + Sync + 'static,
) -> (Arc<Recorder>, mpsc::UnboundedReceiver<Message<Bytes>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Recorder {
            tx,
            decide: Box::new(decide),
            raw_seen: Mutex::new(0),
        }),
        rx,
    )
}

#[async_trait]
impl InboundHandler for Recorder {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        if delivery.raw.as_ref().is_some_and(|r| {
            r.downcast_ref::<binder_rabbit::RabbitRawMessage>()
                .is_some()
        }) && let Ok(mut n) = self.raw_seen.lock()
        {
            *n += 1;
        }
        let d = (self.decide)(&delivery.message);
        let _ = self.tx.send(delivery.message);
        d
    }
}

pub async fn recv(
    rx: &mut mpsc::UnboundedReceiver<Message<Bytes>>,
    wait: Duration,
) -> Option<Message<Bytes>> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

pub fn consumer_request(binding: &str, destination: &str, group: Option<&str>) -> ConsumerRequest {
    ConsumerRequest::new(
        binding,
        destination,
        group.map(str::to_owned),
        ConsumerProperties::default(),
    )
}

pub fn consumer_request_with(
    binding: &str,
    destination: &str,
    group: Option<&str>,
    f: impl FnOnce(&mut ConsumerProperties),
) -> ConsumerRequest {
    let mut p = ConsumerProperties::default();
    f(&mut p);
    ConsumerRequest::new(binding, destination, group.map(str::to_owned), p)
}

pub fn producer_request(
    binding: &str,
    destination: &str,
    f: impl FnOnce(&mut ProducerProperties),
) -> ProducerRequest {
    let mut p = ProducerProperties::default();
    f(&mut p);
    ProducerRequest::new(binding, destination, p)
}

/// Provisions and binds a consumer in one go.
pub async fn bind(
    binder: &RabbitBinder,
    request: ConsumerRequest,
    handler: Arc<Recorder>,
) -> Box<dyn binder_rabbit::stream_core::binder::Binding> {
    let dest = binder
        .provisioner()
        .provision_consumer(&request)
        .await
        .expect("provision consumer");
    binder
        .bind_consumer(request, dest, handler)
        .await
        .expect("bind consumer")
}

pub fn props_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Connections a [`proxy`] forwards; a test can cut them by aborting the handles.
pub type Live = Arc<Mutex<Vec<tokio::task::AbortHandle>>>;

/// Forwards `listener` connections to the real broker; `live` records each, so a test can cut
/// them or count them.
pub async fn proxy(listener: tokio::net::TcpListener, live: Live) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let task = tokio::spawn(async move {
            if let Ok(mut outbound) =
                tokio::net::TcpStream::connect((host().as_str(), port())).await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        live.lock().expect("lock").push(task.abort_handle());
    }
}

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    probe.local_addr().expect("addr").port()
}
