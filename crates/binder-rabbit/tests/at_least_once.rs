//! End-to-end at-least-once with publisher confirms: a function's input is acknowledged only
//! after its output is confirmed by the broker, or else dead-lettered; never acknowledged with
//! its output lost.

mod common;

use std::time::Duration;

use binder_rabbit::{FunctionError, Message, RabbitBinderFactory, StreamApp};
use bytes::Bytes;
use common::*;
use lapin::BasicProperties;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::AMQPValue;

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn the_input_is_acknowledged_only_after_its_output_is_confirmed() {
    init_tracing();
    let admin = raw().await;
    let input = unique("alo-in");
    let output = format!("{input}-out");
    let props = format!(
        "spring.rabbitmq.publisher-confirm-type=correlated\n\
         spring.cloud.function.definition=echo\n\
         spring.cloud.stream.bindings.echo-in-0.destination={input}\n\
         spring.cloud.stream.bindings.echo-in-0.group=g\n\
         spring.cloud.stream.bindings.echo-in-0.consumer.max-attempts=2\n\
         spring.cloud.stream.bindings.echo-in-0.consumer.back-off-initial-interval=10ms\n\
         spring.cloud.stream.bindings.echo-out-0.destination={output}\n\
         spring.cloud.stream.bindings.echo-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.rabbit.bindings.echo-in-0.consumer.auto-bind-dlq=true\n"
    );
    let app = StreamApp::builder()
        .environment(env(&props))
        .binder(RabbitBinderFactory::new())
        .function("echo", |m: Message<Bytes>| async move {
            Ok::<_, FunctionError>(m)
        })
        .build()
        .await
        .expect("app");
    let queue = format!("{input}.g");
    let dlq = format!("{queue}.dlq");
    let capture = format!("{output}.capture");
    // A full queue that refuses publishes: every output routed to it is nacked.
    let full = format!("{output}.full");
    let ch = admin.channel().await;
    ch.queue_declare(
        full.as_str().into(),
        QueueDeclareOptions::default(),
        table(&[
            ("x-max-length", AMQPValue::LongInt(0)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await
    .expect("declare the full queue");
    ch.queue_bind(
        full.as_str().into(),
        output.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .expect("bind");

    admin
        .publish(&input, "k", b"refused", BasicProperties::default())
        .await;
    let dead = admin
        .get(&dlq, Duration::from_secs(15))
        .await
        .expect("the input whose output was nacked is dead-lettered, not acknowledged");
    assert_eq!(dead.delivery.data, b"refused");
    let why = header_str(&dead.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(why.contains("nacked"), "x-exception-message: {why}");
    assert_eq!(admin.queue_messages(&queue).await, Some(0));

    // Once the output can be confirmed, the input is acknowledged and its output is there.
    ch.queue_unbind(
        full.as_str().into(),
        output.as_str().into(),
        "#".into(),
        Default::default(),
    )
    .await
    .expect("unbind");
    admin
        .publish(&input, "k", b"confirmed", BasicProperties::default())
        .await;
    // RabbitMQ nacks a publish when any queue it routes to refuses it, yet keeps the copies
    // the other queues took: the refused input's attempts may sit in `capture` too (at least
    // once: a duplicate, never a loss).
    let mut refused_copies = 0;
    loop {
        let out = admin
            .get(&capture, Duration::from_secs(15))
            .await
            .expect("output confirmed");
        if out.delivery.data == b"confirmed" {
            break;
        }
        assert_eq!(out.delivery.data, b"refused");
        refused_copies += 1;
        assert!(refused_copies <= 2, "one copy per attempt at most");
    }
    assert!(admin.get(&dlq, Duration::from_millis(500)).await.is_none());
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(&[&queue, &dlq, &capture, &full], &[&input, &output])
        .await;
}
