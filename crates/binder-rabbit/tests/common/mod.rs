//! Helpers shared by the broker tests: a raw lapin client to inspect what the broker holds,
//! unique names, and a binder driven directly through the runtime's `Harness` (its lifecycle,
//! settlement and retry) with a recording handler.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different subset"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binder_rabbit::stream_config::{ConsumerProperties, Environment, ProducerProperties};
use binder_rabbit::stream_core::binder::{
    Binder, Binding, ConsumerSpec, FailedMessage, Outbound, Producer, ProducerSpec,
};
use binder_rabbit::stream_core::conformance::{Harness, PolledSource};
use binder_rabbit::stream_core::errors::ErrorChannels;
use binder_rabbit::stream_core::message::names;
use binder_rabbit::{
    BinderError, ConfirmAckCallback, ConsumerScaling, ConsumerTopology, FunctionError, Message,
    ProducerTopology, RabbitBinder, RabbitBinderProperties, RabbitConsumerProperties,
    RabbitProducerBinding, RabbitProducerProperties,
};
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

pub fn binder(extra: &str) -> TestBinder {
    binder_with_env(env(extra))
}

/// A binder over an environment of the test's own (another broker address, a proxy).
pub fn binder_with_env(env: Environment) -> TestBinder {
    init_tracing();
    TestBinder::new(env, ConsumerScaling::default(), HashMap::new())
}

/// A RabbitMQ binder driven through the runtime's [`Harness`], with the request shapes the
/// tests use (properties of a binding read from the test environment, as the runtime does).
pub struct TestBinder {
    env: Environment,
    harness: Harness<RabbitBinder>,
    scaling: ConsumerScaling,
    confirm_acks: HashMap<String, ConfirmAckCallback>,
}

/// A consumer binding to create.
#[derive(Clone, Debug)]
pub struct ConsumerRequest {
    pub binding_name: String,
    pub destination: String,
    pub group: Option<String>,
    pub properties: ConsumerProperties,
}

impl ConsumerRequest {
    /// This instance's index and the instance count (partitioned consumers).
    pub fn with_instance(mut self, index: u32, count: u32) -> Self {
        self.properties.instance_index = Some(index);
        self.properties.instance_count = Some(count);
        self
    }
}

/// A producer binding to create.
#[derive(Clone, Debug)]
pub struct ProducerRequest {
    pub binding_name: String,
    pub destination: String,
    pub properties: ProducerProperties,
}

impl TestBinder {
    fn new(
        env: Environment,
        scaling: ConsumerScaling,
        confirm_acks: HashMap<String, ConfirmAckCallback>,
    ) -> Self {
        let props: RabbitBinderProperties =
            env.extended_binder("rabbit").expect("binder properties");
        let binder =
            RabbitBinder::new(&env, props, scaling.clone(), confirm_acks.clone()).expect("binder");
        Self {
            env,
            harness: Harness::new(binder, "rabbit"),
            scaling,
            confirm_acks,
        }
    }

    /// The binder with these scaling settings.
    pub fn with_consumer_scaling(self, scaling: ConsumerScaling) -> Self {
        Self::new(self.env, scaling, self.confirm_acks)
    }

    /// The binder with a confirm-ack callback registered.
    pub fn with_confirm_ack_callback(
        self,
        name: &str,
        callback: impl Fn(Message<Bytes>) + Send + Sync + 'static,
    ) -> Self {
        let mut acks = self.confirm_acks;
        acks.insert(name.to_owned(), Arc::new(callback));
        Self::new(self.env, self.scaling, acks)
    }

    pub fn binder(&self) -> &RabbitBinder {
        self.harness.binder()
    }

    /// The error channels the bindings' pipelines publish failures to (with the broker's raw
    /// message, `ErrorMessage::raw`).
    pub fn error_channels(&self) -> &ErrorChannels {
        self.harness.error_channels()
    }

    /// The old provisioner shape: provisioning lives on the binder itself.
    pub fn provisioner(&self) -> &Self {
        self
    }

    pub fn consumer_spec(&self, req: &ConsumerRequest) -> ConsumerSpec<RabbitConsumerProperties> {
        let ext: RabbitConsumerProperties = self
            .env
            .extended_consumer("rabbit", &req.binding_name)
            .expect("consumer properties");
        let ack = req
            .properties
            .acknowledge_mode
            .unwrap_or(ext.acknowledge_mode);
        let spec = ConsumerSpec::new(
            req.binding_name.as_str(),
            req.destination.as_str(),
            req.group.as_deref(),
            ext,
        );
        let index = req.properties.instance_index.unwrap_or(0);
        let count = req.properties.instance_count.unwrap_or(1);
        spec.with_common(req.properties.clone())
            .with_instance(index, count)
            .with_acknowledge_mode(ack)
    }

    pub fn producer_spec(&self, req: &ProducerRequest) -> ProducerSpec<RabbitProducerProperties> {
        let ext: RabbitProducerProperties = self
            .env
            .extended_producer("rabbit", &req.binding_name)
            .expect("producer properties");
        ProducerSpec::new(req.binding_name.as_str(), req.destination.as_str(), ext)
            .with_common(req.properties.clone())
    }

    pub async fn provision_consumer(
        &self,
        req: &ConsumerRequest,
    ) -> Result<ConsumerTopology, BinderError> {
        self.binder()
            .provision_consumer(&self.consumer_spec(req))
            .await
    }

    pub async fn provision_producer(
        &self,
        req: &ProducerRequest,
    ) -> Result<ProducerTopology, BinderError> {
        self.binder()
            .provision_producer(&self.producer_spec(req))
            .await
    }

    /// Binds a consumer of an already provisioned destination.
    pub async fn bind_consumer(
        &self,
        req: ConsumerRequest,
        topology: ConsumerTopology,
        handler: Arc<Recorder>,
    ) -> Result<Box<dyn Binding>, BinderError> {
        let spec = self.consumer_spec(&req);
        self.harness
            .bind_consumer_provisioned(spec, topology, move |m| {
                let h = Arc::clone(&handler);
                async move { h.handle(m) }
            })
            .await
    }

    /// Binds a batch consumer; `decide` answers for each batch.
    pub async fn bind_batch_consumer<F, Fut>(
        &self,
        req: ConsumerRequest,
        handler: F,
    ) -> Result<Box<dyn Binding>, BinderError>
    where
        F: Fn(Vec<Message<Bytes>>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let spec = self.consumer_spec(&req);
        self.harness.bind_batch_consumer(spec, handler).await
    }

    /// Binds a consumer whose handler is a closure.
    pub async fn bind_with<F, Fut>(
        &self,
        req: ConsumerRequest,
        handler: F,
    ) -> Result<Box<dyn Binding>, BinderError>
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let spec = self.consumer_spec(&req);
        self.harness.bind_consumer(spec, handler).await
    }

    pub async fn bind_pollable(
        &self,
        req: ConsumerRequest,
        _topology: ConsumerTopology,
    ) -> Result<PolledSource<RabbitBinder>, BinderError> {
        self.harness.bind_pollable(self.consumer_spec(&req)).await
    }

    pub async fn bind_producer(
        &self,
        req: ProducerRequest,
        topology: ProducerTopology,
    ) -> Result<TestProducer, BinderError> {
        let spec = self.producer_spec(&req);
        let p = self.binder().bind_producer(&spec, &topology).await?;
        Ok(TestProducer(Arc::new(p)))
    }

    pub async fn frame_max(&self) -> Option<u32> {
        self.binder().frame_max().await
    }

    pub async fn close(&self) -> Result<(), BinderError> {
        self.binder().close().await
    }
}

/// A producer; a `scst_partition` header on a test's message becomes the outbound partition
/// (the runtime hands the binder the partition as a field). Clones share the producer.
#[derive(Clone)]
pub struct TestProducer(pub Arc<RabbitProducerBinding>);

impl TestProducer {
    pub async fn send(&self, mut message: Message<Bytes>) -> Result<(), BinderError> {
        let partition = message
            .headers_mut()
            .remove(names::PARTITION)
            .and_then(|v| v.to_i64_lenient())
            .and_then(|p| u32::try_from(p).ok());
        self.0
            .send(Outbound::new(message).with_partition(partition))
            .await
    }

    /// Sends an outbound message as given: its headers untouched, its partition as set.
    pub async fn send_outbound(&self, outbound: Outbound) -> Result<(), BinderError> {
        self.0.send(outbound).await
    }

    pub async fn flush(&self) -> Result<(), BinderError> {
        self.0.flush().await
    }

    pub async fn close(&self) -> Result<(), BinderError> {
        self.0.close().await
    }
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

/// How a recording handler answers (the shapes of the binder's old `Disposition`): mapped to
/// what a function returns, so the runtime settles as it would.
#[derive(Debug)]
pub enum Disposition {
    /// Processed.
    Ack,
    /// Reject; `requeue` asks for redelivery.
    Reject {
        /// Whether to requeue.
        requeue: bool,
    },
    /// Failed for good (retries are off in these requests: `default-retryable=false`).
    Recover(FailedMessage),
}

type Decide = dyn Fn(&Message<Bytes>) -> Disposition + Send + Sync;

/// A handler that records every message and answers with `decide`.
pub struct Recorder {
    pub tx: mpsc::UnboundedSender<Message<Bytes>>,
    pub decide: Box<Decide>,
}

impl Recorder {
    fn handle(&self, m: Message<Bytes>) -> Result<(), FunctionError> {
        let d = (self.decide)(&m);
        let _ = self.tx.send(m);
        match d {
            Disposition::Ack => Ok(()),
            Disposition::Reject { requeue: true } => Err(FunctionError::requeue("requeue")),
            Disposition::Reject { requeue: false } => {
                Err(FunctionError::reject_and_dont_requeue("rejected"))
            }
            Disposition::Recover(failed) => Err(Arc::try_unwrap(failed.error)
                .unwrap_or_else(|shared| FunctionError::msg(shared.to_string()))),
        }
    }
}

pub fn recorder(
    decide: impl Fn(&Message<Bytes>) -> Disposition + Send + Sync + 'static,
) -> (Arc<Recorder>, mpsc::UnboundedReceiver<Message<Bytes>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Recorder {
            tx,
            decide: Box::new(decide),
        }),
        rx,
    )
}

pub async fn recv(
    rx: &mut mpsc::UnboundedReceiver<Message<Bytes>>,
    wait: Duration,
) -> Option<Message<Bytes>> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

/// Common properties of the tests' consumers: no retry by the runtime (a failing handler
/// fails once; `max-attempts` still drives the settlement rules).
fn test_consumer_properties() -> ConsumerProperties {
    let mut p = ConsumerProperties::default();
    p.default_retryable = false;
    p
}

pub fn consumer_request(binding: &str, destination: &str, group: Option<&str>) -> ConsumerRequest {
    consumer_request_with(binding, destination, group, |_| {})
}

pub fn consumer_request_with(
    binding: &str,
    destination: &str,
    group: Option<&str>,
    f: impl FnOnce(&mut ConsumerProperties),
) -> ConsumerRequest {
    let mut p = test_consumer_properties();
    f(&mut p);
    ConsumerRequest {
        binding_name: binding.to_owned(),
        destination: destination.to_owned(),
        group: group.map(str::to_owned),
        properties: p,
    }
}

pub fn producer_request(
    binding: &str,
    destination: &str,
    f: impl FnOnce(&mut ProducerProperties),
) -> ProducerRequest {
    let mut p = ProducerProperties::default();
    f(&mut p);
    ProducerRequest {
        binding_name: binding.to_owned(),
        destination: destination.to_owned(),
        properties: p,
    }
}

/// Provisions and binds a consumer in one go.
pub async fn bind(
    binder: &TestBinder,
    request: ConsumerRequest,
    handler: Arc<Recorder>,
) -> Box<dyn Binding> {
    let dest = binder
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
