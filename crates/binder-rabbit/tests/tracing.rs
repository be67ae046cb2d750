//! Trace context across a real RabbitMQ: a message sent by one application and processed by
//! another gives two spans of one trace, the consume span the child of the send span, and the
//! wire carries the W3C `traceparent` as an AMQP long string (what Micrometer Tracing reads).
//! Its own test binary: the OpenTelemetry subscriber is process-wide.

mod common;

use std::time::Duration;

use binder_rabbit::stream_config::ManagementProperties;
use binder_rabbit::stream_core::telemetry;
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::types::AMQPValue;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn the_consume_span_in_the_next_service_is_the_child_of_the_send_span() {
    let exporter = InMemorySpanExporter::default();
    let mut management = ManagementProperties::default();
    management.tracing.sampling.probability = 1.0;
    let provider = telemetry::tracer_provider(&management, exporter.clone()).expect("enabled");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let admin = raw().await;
    let destination = unique("trace-orders");
    let sender = StreamApp::builder()
        .environment(env(&format!(
            "spring.cloud.stream.output-bindings=orders\n\
             spring.cloud.stream.bindings.orders.destination={destination}\n\
             spring.cloud.stream.bindings.orders.producer.required-groups=capture\n"
        )))
        .binder(RabbitBinderFactory::new())
        .build()
        .await
        .expect("sending app");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver = StreamApp::builder()
        .environment(env(&format!(
            "spring.cloud.stream.bindings.audit-in-0.destination={destination}\n\
             spring.cloud.stream.bindings.audit-in-0.group=g\n"
        )))
        .binder(RabbitBinderFactory::new())
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
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("consumed in time");
    assert_eq!(got.as_deref(), Some("order-1"));

    let wire = admin
        .get(&format!("{destination}.capture"), Duration::from_secs(5))
        .await
        .expect("a copy on the broker");
    let traceparent = match header(&wire.delivery.properties, "traceparent") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("traceparent must be an AMQP long string, got {other:?}"),
    };
    assert!(
        traceparent.starts_with("00-") && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    assert!(
        header(&wire.delivery.properties, "tracestate").is_none(),
        "an empty tracestate is not sent"
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
        traceparent.contains(&send.span_context.span_id().to_string()),
        "the wire carries the send span: {traceparent}"
    );
    admin
        .cleanup(
            &[
                &format!("{destination}.g"),
                &format!("{destination}.capture"),
            ],
            &[&destination],
        )
        .await;
}
