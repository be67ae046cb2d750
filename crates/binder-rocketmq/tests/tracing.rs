#![recursion_limit = "256"]
//! Trace context across a real RocketMQ: a message sent by one application and processed by
//! another gives two spans of one trace, the consume span the child of the send span, and the
//! message on the broker carries the W3C `traceparent` as a user property (what Micrometer
//! Tracing reads), read here with a plain RocketMQ client. Its own test binary: the
//! OpenTelemetry subscriber is process-wide.
//!
//! Run with `cargo xtask itest rocketmq` (or set ROCKETMQ_NAMESRV_ADDR and
//! `cargo test -p binder-rocketmq --test tracing -- --ignored`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binder_rocketmq::stream_config::ManagementProperties;
use binder_rocketmq::stream_core::telemetry;
use binder_rocketmq::{FunctionError, RocketMqBinderFactory, StreamApp};
use common::*;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use rocketmq_client_rust::{
    ClientConfig, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_runtime::RuntimeOwner;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

/// The first message on `topic` as the broker holds it (body and properties), read with a
/// plain RocketMQ client and a group of its own from the first offset, once the name server
/// has a route for the topic.
async fn read_raw(topic: &str, secs: u64) -> (String, HashMap<String, String>) {
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
    let deadline = Instant::now() + Duration::from_secs(secs);
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
    let (tx, mut rx) = mpsc::unbounded_channel();
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
                let properties: HashMap<String, String> = m
                    .properties()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                    .collect();
                let body = String::from_utf8_lossy(&m.body().unwrap_or_default()).into_owned();
                let _ = tx.send((body, properties));
            }
            Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
        },
    );
    consumer.start().await.expect("start the raw reader");
    let got = tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing on {topic} within {secs} s"))
        .expect("reader open");
    consumer.shutdown().await;
    producer.shutdown().await;
    let _ = runtime.shutdown().await;
    let _ = owner.shutdown_background();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn the_consume_span_in_the_next_service_is_the_child_of_the_send_span() {
    let exporter = InMemorySpanExporter::default();
    let mut management = ManagementProperties::default();
    management.tracing.sampling.probability = 1.0;
    let provider = telemetry::tracer_provider(&management, exporter.clone()).expect("enabled");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let destination = unique("trace-orders");
    let group = unique("trace-g");
    let sender = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.output-bindings", "orders"),
            (
                "spring.cloud.stream.bindings.orders.destination",
                &destination,
            ),
        ]))
        .binder(RocketMqBinderFactory::new())
        .build()
        .await
        .expect("sending app");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.audit-in-0.destination",
                &destination,
            ),
            ("spring.cloud.stream.bindings.audit-in-0.group", &group),
        ]))
        .binder(RocketMqBinderFactory::new())
        .consumer("audit", move |s: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(s);
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("receiving app");
    sender
        .bridge()
        .send("orders", "order-1".to_owned())
        .await
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("consumed in time");
    assert_eq!(got.as_deref(), Some("order-1"));

    let (body, properties) = read_raw(&destination, 60).await;
    assert_eq!(body, "order-1");
    let traceparent = properties
        .get("traceparent")
        .cloned()
        .unwrap_or_else(|| panic!("a traceparent user property among {properties:?}"));
    assert!(
        traceparent.starts_with("00-") && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    assert!(
        !properties.contains_key("tracestate"),
        "an empty tracestate is not sent: {properties:?}"
    );

    receiver.shutdown().await.expect("shutdown");
    sender.shutdown().await.expect("shutdown");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let send = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer && s.name == format!("send {destination}"))
        .unwrap_or_else(|| panic!("a send span among {spans:#?}"));
    let consume = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer && s.name == format!("process {destination}"))
        .unwrap_or_else(|| panic!("a consume span among {spans:#?}"));
    assert_eq!(
        consume.span_context.trace_id(),
        send.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(consume.parent_span_id, send.span_context.span_id());
    assert!(
        traceparent.contains(&send.span_context.trace_id().to_string())
            && traceparent.contains(&send.span_context.span_id().to_string()),
        "the wire carries the send span: {traceparent}"
    );
}
