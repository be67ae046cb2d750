//! Publisher confirms, returns and nacks, the confirm-ack callback, and the producer error
//! channel, against a real broker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use binder_rabbit::stream_core::errors::error_handler;
use binder_rabbit::{FunctionError, Message, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

const WAIT: Duration = Duration::from_secs(5);
const CONFIRMS: &str =
    "spring.rabbitmq.publisher-confirm-type=correlated\nspring.rabbitmq.publisher-returns=true\n";

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn unroutable_mandatory_message_is_returned_to_the_sender() {
    let admin = raw().await;
    let dest = unique("returns");
    let b = binder(CONFIRMS);
    let req = producer_request("out", &dest, |p| p.error_channel_enabled = true);
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let err = producer
        .send(Message::bytes("lost"))
        .await
        .expect_err("returned");
    let text = err.to_string();
    assert!(text.contains("312 NO_ROUTE"), "{text}");
    assert!(text.contains(&format!("exchange `{dest}`")), "{text}");
    assert!(text.contains(&format!("routing key `{dest}`")), "{text}");
    let Some(binder_rabbit::Undelivered::Returned {
        reply_code,
        reply_text,
        ..
    }) = err.undelivered()
    else {
        panic!("typed return: {err:?}")
    };
    assert_eq!((*reply_code, reply_text.as_str()), (312, "NO_ROUTE"));
    // Without error-channel-enabled the publish is not mandatory: dropped silently, as in Spring.
    let req = producer_request("plain", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let plain = b.bind_producer(req, d).await.expect("producer");
    plain
        .send(Message::bytes("dropped"))
        .await
        .expect("not mandatory");
    // Pipelined confirms: many sends in flight at once all complete.
    let q = unique("returns-q");
    let ch = admin.channel().await;
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await
        .expect("queue");
    ch.queue_bind(
        q.as_str().into(),
        dest.as_str().into(),
        "#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind");
    let started = std::time::Instant::now();
    let sends = (0..500).map(|i| {
        let p = producer.clone();
        tokio::spawn(async move { p.send(Message::bytes(format!("m{i}"))).await })
    });
    for s in futures::future::join_all(sends).await {
        s.expect("task").expect("confirmed");
    }
    tracing::info!(elapsed = ?started.elapsed(), "500 confirmed sends");
    assert_eq!(admin.queue_messages(&q).await, Some(500));
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&q], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn nacked_message_is_an_error_and_acks_reach_the_confirm_ack_callback() {
    let admin = raw().await;
    let dest = unique("nacks");
    let acks: Arc<Mutex<Vec<Message<bytes::Bytes>>>> = Arc::default();
    let sink = acks.clone();
    // Routed by a header so one producer reaches both queues.
    let b = binder(&format!(
        "{CONFIRMS}spring.cloud.stream.rabbit.bindings.out.producer.confirm-ack-channel=acks\n\
         spring.cloud.stream.rabbit.bindings.out.producer.routing-key-expression=headers['to']\n"
    ))
    .with_confirm_ack_callback("acks", move |m| {
        if let Ok(mut v) = sink.lock() {
            v.push(m);
        }
    });
    let req = producer_request("out", &dest, |p| p.error_channel_enabled = true);
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let ok = unique("nacks-ok");
    let full = unique("nacks-full");
    let ch = admin.channel().await;
    ch.queue_declare(ok.as_str().into(), Default::default(), Default::default())
        .await
        .expect("queue");
    ch.queue_declare(
        full.as_str().into(),
        Default::default(),
        table(&[
            ("x-max-length", AMQPValue::LongInt(0)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await
    .expect("queue");
    for (q, key) in [(&ok, "ok"), (&full, "full")] {
        ch.queue_bind(
            q.as_str().into(),
            dest.as_str().into(),
            key.into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("bind");
    }
    producer
        .send(Message::bytes("fine").with_header("to", "ok"))
        .await
        .expect("acked");
    let got = acks.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(got.len(), 1, "one ack");
    assert_eq!(got[0].payload().as_ref(), b"fine");
    assert_eq!(
        got[0].headers().get("amqp_publishConfirm"),
        Some(&binder_rabbit::HeaderValue::Bool(true))
    );
    let err = producer
        .send(Message::bytes("refused").with_header("to", "full"))
        .await
        .expect_err("nacked");
    assert!(err.to_string().contains("nacked"), "{err}");
    let Some(binder_rabbit::Undelivered::Nacked {
        exchange,
        routing_key,
        ..
    }) = err.undelivered()
    else {
        panic!("typed nack: {err:?}")
    };
    assert_eq!(
        (exchange.as_str(), routing_key.as_str()),
        (dest.as_str(), "full")
    );
    assert_eq!(
        acks.lock().map(|v| v.len()).unwrap_or_default(),
        1,
        "no ack for a nack"
    );
    assert_eq!(admin.queue_messages(&full).await, Some(0));
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&ok, &full], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn returns_reach_the_producer_error_channel_through_stream_app() {
    init_tracing();
    let admin = raw().await;
    let input = unique("errch-in");
    let output = unique("errch-out");
    let env = env(&format!(
        "{CONFIRMS}spring.cloud.function.definition=fwd\n\
         spring.cloud.stream.bindings.fwd-in-0.destination={input}\n\
         spring.cloud.stream.bindings.fwd-in-0.group=g\n\
         spring.cloud.stream.bindings.fwd-in-0.consumer.max-attempts=1\n\
         spring.cloud.stream.bindings.fwd-out-0.destination={output}\n\
         spring.cloud.stream.bindings.fwd-out-0.producer.error-channel-enabled=true\n"
    ));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("fwd", |s: String| async move { Ok::<_, FunctionError>(s) })
        .on_error(
            &format!("{output}.errors"),
            error_handler(move |m| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((
                        m.error.to_string(),
                        m.failed.payload().clone(),
                        m.undelivered.clone(),
                    ));
                    Ok(())
                }
            }),
        )
        .build()
        .await
        .expect("app");
    admin
        .publish(
            &input,
            "k",
            b"orphan",
            BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    let (error, payload, undelivered) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("error message in time")
        .expect("error message");
    assert!(error.contains("312 NO_ROUTE"), "{error}");
    assert!(error.contains(&format!("exchange `{output}`")), "{error}");
    assert!(String::from_utf8_lossy(&payload).contains("orphan"));
    // Spring's ReturnedAmqpMessageException fields, typed.
    assert_eq!(
        undelivered,
        Some(binder_rabbit::Undelivered::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".to_owned(),
            exchange: output.clone(),
            routing_key: output.clone(),
        })
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(&[&format!("{input}.g")], &[&input, &output])
        .await;
}
