//! Helpers for the broker-backed tests. The name server comes from `ROCKETMQ_NAMESRV_ADDR`
//! (`cargo xtask itest rocketmq` sets it); a missing or unreachable one fails the test.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use binder_rocketmq::binder::{
    Binder, BinderContext, BinderFactory, Binding, ConsumerRequest, Delivery, Disposition,
    FailedMessage, InboundHandler, Producer, ProducerRequest,
};
use binder_rocketmq::stream_config::{ConsumerProperties, Environment, ProducerProperties};
use binder_rocketmq::{FunctionError, Message, RocketMqBinderFactory};
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

/// A binder with the name server set, trace off unless `extra` says otherwise.
pub(crate) async fn binder_with(
    factory: RocketMqBinderFactory,
    extra: &[(&str, &str)],
) -> Arc<dyn Binder> {
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
    let env = Environment::builder()
        .map("test", pairs)
        .build()
        .expect("environment");
    factory
        .create(BinderContext::new("rocketmq", env))
        .await
        .expect("binder")
}

pub(crate) async fn binder(extra: &[(&str, &str)]) -> Arc<dyn Binder> {
    binder_with(RocketMqBinderFactory::new(), extra).await
}

pub(crate) type Decide = Box<dyn Fn(&Message<Bytes>) -> Disposition + Send + Sync>;

/// Records every delivery and settles it as `decide` says.
pub(crate) struct Recorder {
    pub(crate) tx: mpsc::UnboundedSender<Message<Bytes>>,
    pub(crate) decide: Decide,
    pub(crate) delay: Duration,
}

#[async_trait]
impl InboundHandler for Recorder {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let d = (self.decide)(&delivery.message);
        let _ = self.tx.send(delivery.message);
        d
    }
}

pub(crate) fn recorder(decide: Decide) -> (Arc<Recorder>, mpsc::UnboundedReceiver<Message<Bytes>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Recorder {
            tx,
            decide,
            delay: Duration::ZERO,
        }),
        rx,
    )
}

pub(crate) fn ack_all() -> Decide {
    Box::new(|_| Disposition::Ack)
}

pub(crate) fn failed(m: &Message<Bytes>, why: &str) -> Disposition {
    Disposition::Recover(FailedMessage {
        message: m.clone(),
        error: Arc::new(FunctionError::msg(why.to_owned())),
        attempts: 1,
    })
}

pub(crate) async fn consumer(
    binder: &Arc<dyn Binder>,
    binding: &str,
    topic: &str,
    group: Option<&str>,
    props: ConsumerProperties,
    handler: Arc<dyn InboundHandler>,
) -> Box<dyn Binding> {
    let req = ConsumerRequest::new(binding, topic, group.map(str::to_owned), props);
    let dest = binder
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect("provision consumer");
    binder
        .bind_consumer(req, dest, handler)
        .await
        .expect("bind consumer")
}

pub(crate) async fn producer(
    binder: &Arc<dyn Binder>,
    binding: &str,
    topic: &str,
    props: ProducerProperties,
) -> Arc<dyn Producer> {
    let req = ProducerRequest::new(binding, topic, props);
    let dest = binder
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision producer");
    binder
        .bind_producer(req, dest)
        .await
        .expect("bind producer")
}

/// The next message, or a panic after `secs` seconds.
pub(crate) async fn next(
    rx: &mut mpsc::UnboundedReceiver<Message<Bytes>>,
    secs: u64,
) -> Message<Bytes> {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no message within {secs} s"))
        .expect("channel open")
}

/// Asserts nothing arrives for `secs` seconds.
pub(crate) async fn nothing(rx: &mut mpsc::UnboundedReceiver<Message<Bytes>>, secs: u64) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        panic!("unexpected message {:?}", m);
    }
}

pub(crate) fn body(m: &Message<Bytes>) -> String {
    String::from_utf8_lossy(m.payload()).into_owned()
}
