#![recursion_limit = "256"]
//! Production operations on a real RocketMQ: a panicking function is a failed attempt (retried,
//! then dead-lettered to `%DLQ%<group>` by the binder) and never kills its consumer, and the
//! admin endpoint (over real HTTP) steers bindings and reports health that follows the name
//! server. What the broker holds is read with a plain RocketMQ client (no binder code), so the
//! properties checked are the ones on the wire.
//!
//! Run with `cargo xtask itest rocketmq` (or set ROCKETMQ_NAMESRV_ADDR and
//! `cargo test -p binder-rocketmq --test operations -- --ignored`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binder_rocketmq::binder::{BindingState, Producer};
use binder_rocketmq::stream_config::{Environment, ProducerProperties};
use binder_rocketmq::stream_core::conformance::{BrokerControl, TcpProxy, http};
use binder_rocketmq::{FunctionError, Message, RocketMqBinderFactory, StreamApp};
use common::*;
use rocketmq_client_rust::{
    ClientConfig, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_runtime::RuntimeOwner;
use tokio::sync::mpsc;

/// A message as the broker holds it: topic, body and properties, unmapped.
#[derive(Debug)]
struct Wire {
    topic: String,
    body: String,
    properties: HashMap<String, String>,
}

impl Wire {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

/// A plain RocketMQ client (no binder code) reading one topic from its first offset with a
/// group of its own.
struct RawReader {
    topic: String,
    rx: mpsc::UnboundedReceiver<Wire>,
    consumer: DefaultMQPushConsumer,
    producer: DefaultMQProducer,
    runtime: Arc<ClientRuntime>,
    owner: RuntimeOwner,
}

impl RawReader {
    /// Waits (up to 90 s) until the name server has a route for `topic`, then subscribes.
    async fn start(topic: &str) -> Self {
        let owner = RuntimeOwner::new().expect("runtime owner");
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("raw-reader"),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .expect("client runtime");
        let config = |kind: &str| {
            ClientConfig::builder()
                .namesrv_addr(name_server())
                .instance_name(unique(kind))
                .build()
                .expect("client config")
        };
        let mut producer = DefaultMQProducer::builder(Arc::clone(&runtime))
            .client_config(config("raw-route"))
            .producer_group(unique("raw-route"))
            .build();
        producer.start().await.expect("start the route client");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match producer.fetch_publish_message_queues(topic).await {
                Ok(queues) if !queues.is_empty() => break,
                other => assert!(
                    Instant::now() < deadline,
                    "the name server has no route for {topic}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut consumer = DefaultMQPushConsumer::builder(Arc::clone(&runtime))
            .client_config(config("raw-reader"))
            .consumer_group(unique("raw-reader"))
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .build();
        consumer
            .subscribe(topic.to_owned(), "*")
            .await
            .expect("subscribe");
        consumer.register_message_listener_concurrently(
            move |msgs: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
                for m in msgs {
                    let _ = tx.send(Wire {
                        topic: m.topic().as_str().to_owned(),
                        body: String::from_utf8_lossy(&m.body().unwrap_or_default()).into_owned(),
                        properties: m
                            .properties()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                            .collect(),
                    });
                }
                Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
            },
        );
        consumer.start().await.expect("start the raw reader");
        Self {
            topic: topic.to_owned(),
            rx,
            consumer,
            producer,
            runtime,
            owner,
        }
    }

    /// The next message on the topic, or a panic after `secs` seconds.
    async fn next(&mut self, secs: u64) -> Wire {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing on {} within {secs} s", self.topic))
            .expect("reader open")
    }

    /// Asserts nothing arrives for `secs` seconds.
    async fn nothing(&mut self, secs: u64) {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(secs), self.rx.recv()).await {
            panic!("unexpected message on {}: {m:?}", self.topic);
        }
    }

    async fn shutdown(mut self) {
        self.consumer.shutdown().await;
        self.producer.shutdown().await;
        let _ = self.runtime.shutdown().await;
        let _ = self.owner.shutdown_background();
    }
}

/// Waits until `check` holds, up to `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `management.*` keys that start the admin endpoint on a free port with every endpoint.
const ADMIN: [(&str, &str); 2] = [
    ("management.server.port", "0"),
    ("management.endpoints.web.exposure.include", "*"),
];

/// Properties of a `parse` function (String -> number) on `input` (group `group`,
/// concurrency 2, two attempts, exhausted messages dead-lettered by the binder) sending to
/// `output`.
fn parse_properties(input: &str, group: &str, output: &str) -> Vec<(String, String)> {
    [
        ("spring.cloud.function.definition", "parse"),
        ("spring.cloud.stream.bindings.parse-in-0.destination", input),
        ("spring.cloud.stream.bindings.parse-in-0.group", group),
        (
            "spring.cloud.stream.bindings.parse-in-0.consumer.concurrency",
            "2",
        ),
        (
            "spring.cloud.stream.bindings.parse-in-0.consumer.max-attempts",
            "2",
        ),
        (
            "spring.cloud.stream.bindings.parse-in-0.consumer.back-off-initial-interval",
            "10ms",
        ),
        (
            "spring.cloud.stream.bindings.parse-out-0.destination",
            output,
        ),
        (
            "spring.cloud.stream.rocketmq.default.consumer.push.delay-level-when-next-consume",
            "-1",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// What the `parse` function was called with, in order.
type Calls = Arc<Mutex<Vec<String>>>;

fn calls_of(calls: &Calls, what: &str) -> usize {
    calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| *c == what)
        .count()
}

async fn parse_app(env: Environment, calls: Calls) -> StreamApp {
    StreamApp::builder()
        .environment(env)
        .binder(RocketMqBinderFactory::new())
        .function("parse", move |s: String| {
            calls.lock().expect("lock").push(s.clone());
            async move {
                // An `expect` on bad data: the panic a service would hit in production.
                let n: i64 = s.trim().parse().expect("a number");
                Ok::<_, FunctionError>((n * 2).to_string())
            }
        })
        .build()
        .await
        .expect("app")
}

fn environment(pairs: &[(String, String)]) -> Environment {
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env(&refs)
}

/// An environment of `pairs` whose name server is `name_server` (not the suite's), with
/// message trace off.
fn with_name_server(mut pairs: Vec<(String, String)>, name_server: &str) -> Environment {
    init_tracing();
    pairs.extend([
        (
            "spring.cloud.stream.rocketmq.binder.name-server".to_owned(),
            name_server.to_owned(),
        ),
        (
            "spring.cloud.stream.rocketmq.binder.enable-msg-trace".to_owned(),
            "false".to_owned(),
        ),
        (
            "spring.cloud.stream.rocketmq.default.consumer.consume-from-where".to_owned(),
            "CONSUME_FROM_FIRST_OFFSET".to_owned(),
        ),
    ]);
    Environment::builder()
        .map("test", pairs)
        .build()
        .expect("environment")
}

fn text(body: &str) -> Message<bytes::Bytes> {
    Message::bytes(body.to_owned()).with_header("contentType", "text/plain")
}

fn state_of(app: &StreamApp, name: &str) -> Option<BindingState> {
    app.bindings()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn a_panicking_function_is_retried_then_dead_lettered_and_the_consumer_lives() {
    let input = unique("ops-panic-in");
    let output = unique("ops-panic-out");
    let group = unique("ops-panic-g");
    let calls = Calls::default();
    let app = parse_app(
        environment(&parse_properties(&input, &group, &output)),
        Arc::clone(&calls),
    )
    .await;
    let b = binder(&[]).await;
    let p = producer(&b, "writer", &input, ProducerProperties::default()).await;
    let mut out = RawReader::start(&output).await;

    send(&p, text("poison").with_header("origin", "ops-test")).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            calls_of(&calls, "poison") >= 2
        })
        .await,
        "the poison message is tried twice (max-attempts 2): {:?}",
        calls.lock().expect("lock")
    );
    let mut dlq = RawReader::start(&format!("%DLQ%{group}")).await;
    let dead = dlq.next(60).await;
    assert_eq!(dead.body, "poison");
    assert_eq!(dead.property("origin"), Some("ops-test"), "{dead:?}");
    assert_eq!(
        dead.property("RETRY_TOPIC"),
        Some(input.as_str()),
        "{dead:?}"
    );
    let message = dead.property("x-exception-message").unwrap_or_default();
    assert!(
        message.contains("a number") && message.contains("InvalidDigit"),
        "x-exception-message: {dead:?}"
    );
    let trace = dead.property("x-exception-stacktrace").unwrap_or_default();
    assert!(
        trace.starts_with("panic"),
        "x-exception-stacktrace: {dead:?}"
    );

    // The consumer outlived the panic: the next good message is processed.
    send(&p, text("21")).await;
    let good = out.next(60).await;
    assert_eq!(good.body, "42", "{good:?}");
    assert_eq!(good.topic, output);
    assert_eq!(
        calls_of(&calls, "poison"),
        2,
        "tried exactly twice, not redelivered by the broker"
    );
    dlq.nothing(2).await;
    assert_eq!(state_of(&app, "parse-in-0"), Some(BindingState::Running));

    dlq.shutdown().await;
    out.shutdown().await;
    p.close().await.expect("close");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn the_admin_endpoint_stops_and_starts_consumers_and_reports_health() {
    let input = unique("ops-http-in");
    let output = unique("ops-http-out");
    let group = unique("ops-http-g");
    let mut pairs = parse_properties(&input, &group, &output);
    pairs.extend(
        ADMIN
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let calls = Calls::default();
    let app = parse_app(environment(&pairs), Arc::clone(&calls)).await;
    let at: SocketAddr = app.admin_address().expect("admin endpoint");
    let b = binder(&[]).await;
    let p = producer(&b, "writer", &input, ProducerProperties::default()).await;
    let mut out = RawReader::start(&output).await;

    send(&p, text("1")).await;
    assert_eq!(out.next(60).await.body, "2", "running before the stop");

    let r = http::post(
        at,
        "/actuator/bindings/parse-in-0",
        r#"{"state":"STOPPED"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http::get(at, "/actuator/bindings/parse-in-0")
        .await
        .expect("GET");
    assert_eq!(r.json()[0]["state"], "stopped", "{}", r.body);
    assert_eq!(state_of(&app, "parse-in-0"), Some(BindingState::Stopped));
    send(&p, text("4")).await;
    out.nothing(8).await;
    assert_eq!(calls_of(&calls, "4"), 0, "consumed while stopped");

    let r = http::post(
        at,
        "/actuator/bindings/parse-in-0",
        r#"{"state":"STARTED"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http::get(at, "/actuator/bindings/parse-in-0")
        .await
        .expect("GET");
    assert_eq!(r.json()[0]["state"], "running", "{}", r.body);
    let late = out.next(60).await;
    assert_eq!(late.body, "8", "the message sent while stopped is consumed");
    out.nothing(3).await;
    assert_eq!(
        calls_of(&calls, "1"),
        1,
        "the message consumed before the stop is not consumed again: {:?}",
        calls.lock().expect("lock")
    );

    let r = http::get(at, "/actuator/bindings").await.expect("GET");
    let list = r.json();
    let binding = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["bindingName"] == "parse-in-0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(binding["binderType"], "rocketmq", "{}", r.body);
    assert_eq!(binding["name"], input.as_str(), "{}", r.body);
    assert_eq!(binding["group"], group.as_str(), "{}", r.body);

    let r = http::get(at, "/actuator/health").await.expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    let health = r.json();
    assert_eq!(health["status"], "UP", "{}", r.body);
    let rocketmq = &health["components"]["binders"]["components"]["rocketmq"];
    assert_eq!(rocketmq["status"], "UP", "{}", r.body);
    assert_eq!(
        rocketmq["details"]["nameServer"],
        name_server().as_str(),
        "{}",
        r.body
    );

    let r = http::get(at, "/actuator/prometheus").await.expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains("messaging_client_consumed_messages_total{messaging_system=\"rocketmq\""),
        "{}",
        r.body
    );

    out.shutdown().await;
    p.close().await.expect("close");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn health_is_down_while_the_name_server_does_not_answer() {
    // Like the other tests, fail early when no RocketMQ is configured.
    let _ = name_server();
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("address")
    };
    let dead = dead.to_string();
    let input = unique("ops-down-in");
    let output = unique("ops-down-out");
    let mut pairs = parse_properties(&input, &unique("ops-down-g"), &output);
    pairs.extend(
        ADMIN
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let env = with_name_server(pairs, &dead);
    let started = Instant::now();
    let app = tokio::time::timeout(Duration::from_secs(60), parse_app(env, Calls::default()))
        .await
        .expect("the app starts (late binding) although the name server does not answer");
    eprintln!("built in {:?}", started.elapsed());
    let at = app.admin_address().expect("admin endpoint");

    let r = http::get(at, "/actuator/health").await.expect("GET");
    eprintln!("health without a name server: {}", r.body);
    assert_eq!(r.status, 503, "{}", r.body);
    let health = r.json();
    assert_eq!(health["status"], "DOWN", "{}", r.body);
    let rocketmq = &health["components"]["binders"]["components"]["rocketmq"];
    assert_eq!(rocketmq["status"], "DOWN", "{}", r.body);
    assert!(
        rocketmq["details"]["error"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty()),
        "an error detail: {}",
        r.body
    );
    assert_eq!(
        rocketmq["details"]["nameServer"],
        dead.as_str(),
        "{}",
        r.body
    );
    let state = &health["components"]["bindings"]["components"]["parse-in-0"]["details"]["state"];
    assert!(
        state.is_string() && state != "running",
        "a consumer without a name server is not running: {}",
        r.body
    );
    assert_ne!(state_of(&app, "parse-in-0"), Some(BindingState::Running));
    let r = http::get(at, "/actuator/bindings/parse-in-0")
        .await
        .expect("GET");
    assert_ne!(r.json()[0]["state"], "running", "{}", r.body);

    tokio::time::timeout(Duration::from_secs(60), app.shutdown())
        .await
        .expect("shutdown returns")
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn health_follows_the_name_server_down_and_up_again() {
    // The probe asks the name server for a route each time, so a proxy in front of it is
    // enough to take health down; the consumers keep the broker address they already have.
    let upstream: SocketAddr = name_server()
        .split([';', ','])
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("the name server as ip:port");
    let proxy = Arc::new(
        TcpProxy::start(upstream, |_| Vec::new())
            .await
            .expect("proxy"),
    );
    let input = unique("ops-flap-in");
    let output = unique("ops-flap-out");
    let mut pairs = parse_properties(&input, &unique("ops-flap-g"), &output);
    pairs.extend(
        ADMIN
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let through_proxy = proxy.address().to_string();
    let app = parse_app(with_name_server(pairs, &through_proxy), Calls::default()).await;
    let at = app.admin_address().expect("admin endpoint");
    let r = http::get(at, "/actuator/health").await.expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    let rocketmq = &r.json()["components"]["binders"]["components"]["rocketmq"];
    assert_eq!(rocketmq["status"], "UP", "{}", r.body);
    assert_eq!(
        rocketmq["details"]["nameServer"],
        through_proxy.as_str(),
        "{}",
        r.body
    );

    proxy.cut().await;
    let last = Arc::new(Mutex::new(String::new()));
    let down = eventually(Duration::from_secs(30), || {
        let last = Arc::clone(&last);
        async move {
            let r = http::get(at, "/actuator/health").await.expect("GET");
            *last.lock().expect("lock") = r.body.clone();
            r.status == 503 && r.json()["status"] == "DOWN"
        }
    })
    .await;
    let last = last.lock().expect("lock").clone();
    assert!(down, "health while the name server is cut off: {last}");
    let json: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
    let rocketmq = &json["components"]["binders"]["components"]["rocketmq"];
    assert_eq!(rocketmq["status"], "DOWN", "{last}");
    assert!(
        rocketmq["details"]["error"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty()),
        "an error detail: {last}"
    );

    proxy.restore().await;
    let up = eventually(Duration::from_secs(30), || async {
        let r = http::get(at, "/actuator/health").await.expect("GET");
        r.status == 200 && r.json()["status"] == "UP"
    })
    .await;
    assert!(up, "health after the name server is back");
    // Still moving messages after the outage.
    let b = binder(&[]).await;
    let p = producer(&b, "writer", &input, ProducerProperties::default()).await;
    let mut out = RawReader::start(&output).await;
    send(&p, text("5")).await;
    assert_eq!(out.next(60).await.body, "10");
    assert_eq!(state_of(&app, "parse-in-0"), Some(BindingState::Running));

    out.shutdown().await;
    p.close().await.expect("close");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}
