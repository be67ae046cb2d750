//! Helpers for the broker-backed tests. The name server comes from `ROCKETMQ_NAMESRV_ADDR`
//! (`cargo xtask itest rocketmq` sets it); a missing or unreachable one fails the test.
//!
//! Consumers run inside a `StreamApp` (the runtime settles what they receive, as in
//! production): a consumer function records every message and answers as its [`Decide`]
//! says. Producers are bound on a binder directly, so a test can flush and close them.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use binder_rocketmq::binder::{
    Binder, BinderContext, BinderFactory, Binding, Outbound, Producer, ProducerSpec,
};
use binder_rocketmq::stream_config::{Environment, ProducerProperties};
use binder_rocketmq::{
    FunctionError, Message, RocketMqBinder, RocketMqBinderFactory, RocketMqProducer, StreamApp,
};
use bytes::Bytes;
use tokio::sync::mpsc;

pub(crate) fn name_server() -> String {
    let ns = std::env::var("ROCKETMQ_NAMESRV_ADDR").expect(
        "ROCKETMQ_NAMESRV_ADDR must name a RocketMQ name server (run `cargo xtask itest rocketmq`)",
    );
    let first = ns
        .split([';', ','])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let addrs: Vec<_> = first
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("bad name server address {first}: {e}"))
        .collect();
    assert!(
        addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok()),
        "RocketMQ name server {ns} is unreachable"
    );
    ns
}

static SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{prefix}-{millis}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,binder_rocketmq=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// An environment with the name server set, trace off and new groups reading from the first
/// offset (every test topic is new), then `extra`.
pub(crate) fn env(extra: &[(&str, &str)]) -> Environment {
    init_tracing();
    let ns = name_server();
    let mut pairs: Vec<(String, String)> = vec![
        ("spring.cloud.stream.rocketmq.binder.name-server".into(), ns),
        (
            "spring.cloud.stream.rocketmq.binder.enable-msg-trace".into(),
            "false".into(),
        ),
        (
            "spring.cloud.stream.rocketmq.default.consumer.consume-from-where".into(),
            "CONSUME_FROM_FIRST_OFFSET".into(),
        ),
    ];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Environment::builder()
        .map("test", pairs)
        .build()
        .expect("environment")
}

/// A binder created as the runtime creates it, with the environment its producers read.
pub(crate) struct TestBinder {
    pub(crate) binder: RocketMqBinder,
    pub(crate) env: Environment,
}

impl TestBinder {
    pub(crate) async fn close(self) {
        self.binder.close().await.expect("close binder");
    }
}

pub(crate) async fn binder_with(
    factory: RocketMqBinderFactory,
    extra: &[(&str, &str)],
) -> TestBinder {
    let env = env(extra);
    let properties = env.extended_binder("rocketmq").expect("binder properties");
    let binder = factory
        .create(BinderContext::new("rocketmq", env.clone(), properties))
        .await
        .expect("binder");
    TestBinder { binder, env }
}

pub(crate) async fn binder(extra: &[(&str, &str)]) -> TestBinder {
    binder_with(RocketMqBinderFactory::new(), extra).await
}

/// A producer of output binding `binding` on `topic` (its extended properties read from the
/// binder's environment, as the runtime reads them).
pub(crate) async fn producer(
    b: &TestBinder,
    binding: &str,
    topic: &str,
    common: ProducerProperties,
) -> RocketMqProducer {
    let extension = b
        .env
        .extended_producer("rocketmq", binding)
        .expect("producer properties");
    let spec = ProducerSpec::new(binding, topic, extension).with_common(common);
    let dest = b
        .binder
        .provision_producer(&spec)
        .await
        .expect("provision producer");
    b.binder
        .bind_producer(&spec, &dest)
        .await
        .expect("bind producer")
}

/// Sends one message (no partition).
pub(crate) async fn send(p: &RocketMqProducer, m: Message<Bytes>) {
    p.send(Outbound::new(m)).await.expect("send");
}

/// What a consumer function answers for a message.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Succeeds.
    Ack,
    /// Fails (with `max-attempts: 1` the runtime hands it to the binder's recovery at once).
    Fail(String),
    /// Asks for redelivery (`FunctionError::requeue`).
    Requeue,
    /// Rejects it without requeue (`FunctionError::reject_and_dont_requeue`).
    Reject,
}

impl Outcome {
    pub(crate) fn fail(why: &str) -> Self {
        Outcome::Fail(why.to_owned())
    }

    fn into_result(self) -> Result<(), FunctionError> {
        match self {
            Outcome::Ack => Ok(()),
            Outcome::Fail(why) => Err(FunctionError::msg(why)),
            Outcome::Requeue => Err(FunctionError::requeue("asked to requeue")),
            Outcome::Reject => Err(FunctionError::reject_and_dont_requeue("rejected")),
        }
    }
}

pub(crate) type Decide = Arc<dyn Fn(&Message<Bytes>) -> Outcome + Send + Sync>;

pub(crate) fn decide(f: impl Fn(&Message<Bytes>) -> Outcome + Send + Sync + 'static) -> Decide {
    Arc::new(f)
}

pub(crate) fn ack_all() -> Decide {
    decide(|_| Outcome::Ack)
}

pub(crate) type Received = mpsc::UnboundedReceiver<Message<Bytes>>;

/// One consumer function of an application.
struct ConsumerDef {
    name: String,
    topic: String,
    group: Option<String>,
    decide: Decide,
    delay: Duration,
    tx: mpsc::UnboundedSender<Message<Bytes>>,
}

/// An application of consumer functions, each on binding `<name>-in-0` with `max-attempts: 1`
/// (so a failure goes to the binder's recovery at once, as the old handler tests did).
#[derive(Default)]
pub(crate) struct Consumers {
    defs: Vec<ConsumerDef>,
    extra: Vec<(String, String)>,
}

impl Consumers {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds consumer `name` of `topic` (group `None`: anonymous), recording what it receives.
    pub(crate) fn consumer(
        &mut self,
        name: &str,
        topic: &str,
        group: Option<&str>,
        decide: Decide,
    ) -> Received {
        self.slow_consumer(name, topic, group, decide, Duration::ZERO)
    }

    /// [`Consumers::consumer`], sleeping `delay` before answering.
    pub(crate) fn slow_consumer(
        &mut self,
        name: &str,
        topic: &str,
        group: Option<&str>,
        decide: Decide,
        delay: Duration,
    ) -> Received {
        let (tx, rx) = mpsc::unbounded_channel();
        self.defs.push(ConsumerDef {
            name: name.to_owned(),
            topic: topic.to_owned(),
            group: group.map(str::to_owned),
            decide,
            delay,
            tx,
        });
        rx
    }

    /// Adds a property (`spring.cloud.stream.rocketmq.bindings.<name>-in-0.consumer.*` and
    /// the like).
    pub(crate) fn property(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Builds and binds the application.
    pub(crate) async fn start(self) -> StreamApp {
        self.start_with(RocketMqBinderFactory::new()).await
    }

    pub(crate) async fn start_with(self, factory: RocketMqBinderFactory) -> StreamApp {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let names: Vec<&str> = self.defs.iter().map(|d| d.name.as_str()).collect();
        pairs.push(("spring.cloud.function.definition".into(), names.join(";")));
        for d in &self.defs {
            let b = |k: &str| format!("spring.cloud.stream.bindings.{}-in-0.{k}", d.name);
            pairs.push((b("destination"), d.topic.clone()));
            if let Some(g) = &d.group {
                pairs.push((b("group"), g.clone()));
            }
            pairs.push((b("consumer.max-attempts"), "1".into()));
        }
        pairs.extend(self.extra);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut builder = StreamApp::builder().environment(env(&refs)).binder(factory);
        for d in self.defs {
            let ConsumerDef {
                name,
                decide,
                delay,
                tx,
                ..
            } = d;
            builder = builder.consumer(&name, move |m: Message<Bytes>| {
                let decide = Arc::clone(&decide);
                let tx = tx.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let outcome = decide(&m);
                    let _ = tx.send(m);
                    outcome.into_result()
                }
            });
        }
        builder.build().await.expect("consumer application")
    }
}

/// An application with one consumer `name` of `topic`.
pub(crate) async fn consumer(
    name: &str,
    topic: &str,
    group: Option<&str>,
    decide: Decide,
) -> (StreamApp, Received) {
    let mut c = Consumers::new();
    let rx = c.consumer(name, topic, group, decide);
    (c.start().await, rx)
}

/// The consumer binding of function `name`.
pub(crate) fn binding<'a>(app: &'a StreamApp, name: &str) -> &'a dyn Binding {
    app.consumer_bindings(&format!("{name}-in-0"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no binding {name}-in-0"))
}

/// Reads `topic` with a fresh group from the first offset.
pub(crate) async fn read_topic(topic: &str, secs: u64) -> Message<Bytes> {
    let (app, mut rx) = consumer("reader", topic, Some(&unique("reader")), ack_all()).await;
    let m = next(&mut rx, secs).await;
    app.shutdown().await.expect("shutdown reader");
    m
}

/// The next message, or a panic after `secs` seconds.
pub(crate) async fn next(rx: &mut Received, secs: u64) -> Message<Bytes> {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no message within {secs} s"))
        .expect("channel open")
}

/// Asserts nothing arrives for `secs` seconds.
pub(crate) async fn nothing(rx: &mut Received, secs: u64) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        panic!("unexpected message {:?}", m);
    }
}

pub(crate) fn body(m: &Message<Bytes>) -> String {
    String::from_utf8_lossy(m.payload()).into_owned()
}
