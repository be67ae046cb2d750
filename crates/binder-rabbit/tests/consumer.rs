//! Consumers against a real broker: header mapping, acknowledge modes, concurrency, tags,
//! exclusive consumers, missing queues, recovery.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use binder_rabbit::stream_core::binder::{BindingState, FailedMessage};
use binder_rabbit::stream_core::errors::{ErrorMessage, consumer_error_channel, error_handler};
use binder_rabbit::{FunctionError, HeaderValue, RabbitRawMessage};
use common::*;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

const WAIT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(400);

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn inbound_headers_are_mapped_like_spring() {
    let admin = raw().await;
    let dest = unique("cons-headers");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.consumer-tag-prefix=app\n{p}.header-patterns=!secret*,*\n"
    ));
    // The broker's raw message reaches error handlers: a message whose body is `fail` fails.
    let (h, mut rx) = recorder(|m| {
        if m.payload().as_ref() == b"fail" {
            Disposition::Recover(FailedMessage {
                message: m.clone(),
                error: Arc::new(FunctionError::msg("fails")),
                attempts: 1,
            })
        } else {
            Disposition::Ack
        }
    });
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel();
    b.error_channels().subscribe(
        consumer_error_channel(&dest, Some("g")),
        error_handler(move |e: ErrorMessage| {
            let raw_tx = raw_tx.clone();
            async move {
                let _ = raw_tx.send(e);
                Ok(())
            }
        }),
    );
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let mut nested = lapin::types::FieldTable::default();
    nested.insert("count".into(), AMQPValue::LongLongInt(2));
    let props = BasicProperties::default()
        .with_headers(table(&[
            ("user", s("v")),
            ("num", AMQPValue::LongInt(42)),
            ("secretToken", s("hide")),
            (
                "list",
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(nested)].into()),
            ),
        ]))
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_message_id("mid".into())
        .with_type("t1".into());
    admin.publish(&dest, "rk.1", b"body", props).await;
    let m = recv(&mut rx, WAIT).await.expect("delivered");
    let hd = m.headers();
    assert_eq!(m.payload().as_ref(), b"body");
    assert_eq!(hd.get_str("user"), Some("v"));
    assert_eq!(hd.get("num"), Some(&HeaderValue::I32(42)));
    assert!(!hd.contains("secretToken"), "negated pattern");
    match hd.get("list") {
        Some(HeaderValue::List(items)) => match &items[0] {
            HeaderValue::Map(m) => assert_eq!(m.get("count"), Some(&HeaderValue::I64(2))),
            other => panic!("expected map, got {other:?}"),
        },
        other => panic!("expected list, got {other:?}"),
    }
    assert_eq!(hd.get_str("contentType"), Some("application/octet-stream"));
    assert_eq!(hd.get_str("amqp_receivedExchange"), Some(dest.as_str()));
    assert_eq!(hd.get_str("amqp_receivedRoutingKey"), Some("rk.1"));
    assert_eq!(hd.get_str("amqp_consumerQueue"), Some(queue.as_str()));
    assert_eq!(hd.get_str("amqp_consumerTag"), Some("app#0"));
    assert_eq!(hd.get("amqp_redelivered"), Some(&HeaderValue::Bool(false)));
    assert!(
        hd.get("amqp_deliveryTag")
            .and_then(HeaderValue::as_i64)
            .is_some()
    );
    assert_eq!(hd.get_str("amqp_correlationId"), Some("corr-1"));
    assert_eq!(hd.get_str("amqp_replyTo"), Some("replies"));
    assert_eq!(hd.get_str("amqp_messageId"), Some("mid"));
    assert_eq!(hd.get_str("amqp_type"), Some("t1"));
    tokio::time::sleep(SHORT).await;
    assert_eq!(admin.queue_messages(&queue).await, Some(0), "acked");
    assert!(
        raw_rx.try_recv().is_err(),
        "a processed message reaches no error handler"
    );
    // The raw AMQP message is attached to what error handlers receive, as the broker sent it.
    let props = BasicProperties::default()
        .with_headers(table(&[("secretToken", s("raw"))]))
        .with_message_id("mid-2".into());
    admin.publish(&dest, "rk.2", b"fail", props).await;
    assert!(recv(&mut rx, WAIT).await.is_some(), "failing delivery");
    let e = tokio::time::timeout(WAIT, raw_rx.recv())
        .await
        .expect("error message in time")
        .expect("error message");
    assert_eq!(e.failed.payload().as_ref(), b"fail");
    assert_eq!(e.error.to_string(), "fails");
    assert!(!e.failed.headers().contains("secretToken"));
    let raw = e
        .raw
        .as_ref()
        .and_then(|r| r.downcast_ref::<RabbitRawMessage>())
        .expect("raw AMQP message attached");
    assert_eq!(raw.exchange, dest);
    assert_eq!(raw.routing_key, "rk.2");
    assert_eq!(raw.queue, queue);
    assert!(!raw.redelivered);
    assert_eq!(raw.body.as_ref(), b"fail");
    assert_eq!(
        raw.properties.message_id().as_ref().map(|m| m.as_str()),
        Some("mid-2")
    );
    assert_eq!(
        header_str(&raw.properties, "secretToken").as_deref(),
        Some("raw"),
        "the raw message is unfiltered by header-patterns"
    );
    assert_eq!(
        hd.get("amqp_deliveryTag").and_then(HeaderValue::as_i64),
        Some(1),
        "the first delivery on the channel"
    );
    assert_eq!(raw.delivery_tag, 2, "the second delivery on the channel");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "settled after the failure"
    );
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn reject_with_requeue_redelivers() {
    let admin = raw().await;
    let dest = unique("cons-requeue");
    let queue = format!("{dest}.g");
    let b = binder("");
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let (h, mut rx) = recorder(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Disposition::Reject { requeue: true }
        } else {
            Disposition::Ack
        }
    });
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"x", BasicProperties::default())
        .await;
    let first = recv(&mut rx, WAIT).await.expect("first");
    assert_eq!(
        first.headers().get("amqp_redelivered"),
        Some(&HeaderValue::Bool(false))
    );
    let second = recv(&mut rx, WAIT).await.expect("redelivered");
    assert_eq!(
        second.headers().get("amqp_redelivered"),
        Some(&HeaderValue::Bool(true))
    );
    tokio::time::sleep(SHORT).await;
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn manual_acknowledge_mode_lets_the_function_settle() {
    let admin = raw().await;
    let dest = unique("cons-manual");
    let queue = format!("{dest}.g");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.in.consumer.acknowledge-mode=MANUAL\nspring.cloud.stream.rabbit.bindings.in.consumer.prefetch=10",
    );
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"1", BasicProperties::default())
        .await;
    admin
        .publish(&dest, "k", b"2", BasicProperties::default())
        .await;
    let m1 = recv(&mut rx, WAIT).await.expect("m1");
    let m2 = recv(&mut rx, WAIT).await.expect("m2");
    let a1 = m1
        .acknowledgment()
        .expect("acknowledgment attached")
        .clone();
    let a2 = m2
        .acknowledgment()
        .expect("acknowledgment attached")
        .clone();
    tokio::time::sleep(SHORT).await;
    // Disposition::Ack did not settle: both unacked, nothing ready.
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    a1.ack().await.expect("ack");
    a2.reject(false).await.expect("reject");
    assert!(a1.is_settled() && a2.is_settled());
    binding.stop().await.expect("stop");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "settled by the function, not requeued on close"
    );
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn manual_mode_unsettled_messages_return_on_stop() {
    let admin = raw().await;
    let dest = unique("cons-manual2");
    let queue = format!("{dest}.g");
    let b = binder("spring.cloud.stream.rabbit.bindings.in.consumer.acknowledge-mode=MANUAL");
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"1", BasicProperties::default())
        .await;
    let _m = recv(&mut rx, WAIT).await.expect("m1");
    binding.stop().await.expect("stop");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(1),
        "nothing acknowledged is lost"
    );
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn none_acknowledge_mode_consumes_with_auto_ack() {
    let admin = raw().await;
    let dest = unique("cons-none");
    let queue = format!("{dest}.g");
    let b = binder("spring.cloud.stream.rabbit.bindings.in.consumer.acknowledge-mode=NONE");
    let (h, mut rx) = recorder(|_| Disposition::Reject { requeue: true });
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"1", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    assert!(
        recv(&mut rx, SHORT).await.is_none(),
        "a reject cannot requeue an auto-acked message"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn concurrency_opens_that_many_consumers_and_pause_resume_works() {
    let admin = raw().await;
    let dest = unique("cons-conc");
    let queue = format!("{dest}.g");
    let b = binder("spring.cloud.stream.rabbit.bindings.in.consumer.consumer-priority=5");
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let req = consumer_request_with("in", &dest, Some("g"), |p| p.concurrency = 3);
    let binding = bind(&b, req, h).await;
    tokio::time::sleep(SHORT).await;
    assert_eq!(admin.consumers(&queue).await, Some(3));
    binding.pause().await.expect("pause");
    tokio::time::sleep(SHORT).await;
    assert_eq!(binding.state(), BindingState::Paused);
    assert_eq!(admin.consumers(&queue).await, Some(0));
    admin
        .publish(&dest, "k", b"while paused", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, SHORT).await.is_none());
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(1),
        "the broker holds it while paused"
    );
    binding.resume().await.expect("resume");
    assert!(
        recv(&mut rx, WAIT).await.is_some(),
        "delivered after resume"
    );
    binding.stop().await.expect("stop");
    assert_eq!(admin.consumers(&queue).await, Some(0));
    binding.start().await.expect("restart");
    tokio::time::sleep(SHORT).await;
    assert_eq!(admin.consumers(&queue).await, Some(3));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn exclusive_consumer_has_a_hot_standby() {
    let admin = raw().await;
    let dest = unique("cons-excl");
    let queue = format!("{dest}.g");
    let cfg = "spring.cloud.stream.rabbit.bindings.in.consumer.exclusive=true\nspring.cloud.stream.rabbit.bindings.in.consumer.recovery-interval=200";
    let b1 = binder(cfg);
    let b2 = binder(cfg);
    let (h1, mut rx1) = recorder(|_| Disposition::Ack);
    let (h2, mut rx2) = recorder(|_| Disposition::Ack);
    let one = bind(&b1, consumer_request("in", &dest, Some("g")), h1).await;
    tokio::time::sleep(SHORT).await;
    let two = bind(&b2, consumer_request("in", &dest, Some("g")), h2).await;
    tokio::time::sleep(SHORT).await;
    assert_eq!(admin.consumers(&queue).await, Some(1));
    admin
        .publish(&dest, "k", b"a", BasicProperties::default())
        .await;
    assert!(recv(&mut rx1, WAIT).await.is_some());
    one.stop().await.expect("stop the active one");
    tokio::time::sleep(Duration::from_millis(800)).await;
    admin
        .publish(&dest, "k", b"b", BasicProperties::default())
        .await;
    assert!(recv(&mut rx2, WAIT).await.is_some(), "standby took over");
    two.stop().await.expect("stop");
    b1.close().await.expect("close");
    b2.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn missing_queue_fatal_fails_the_binding() {
    let _admin = raw().await;
    let dest = unique("cons-missing");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.bind-queue=false\n{p}.declare-exchange=false\n{p}.missing-queues-fatal=true\n\
         {p}.queue-declaration-retries=1\n{p}.failed-declaration-retry-interval=100\n"
    ));
    let req = consumer_request("in", &dest, Some("g"));
    let d = b
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect("nothing declared");
    let (h, _rx) = recorder(|_| Disposition::Ack);
    let err = b
        .bind_consumer(req, d, h)
        .await
        .err()
        .expect("missing queue is fatal");
    assert!(err.to_string().contains(&format!("{dest}.g")), "{err}");
    b.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn missing_queue_not_fatal_keeps_retrying_until_it_appears() {
    let admin = raw().await;
    let dest = unique("cons-late-queue");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.bind-queue=false\n{p}.declare-exchange=false\n{p}.failed-declaration-retry-interval=100\n"
    ));
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let ch = admin.channel().await;
    ch.queue_declare(
        queue.as_str().into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("declare");
    admin
        .publish("", &queue, b"late", BasicProperties::default())
        .await;
    assert!(
        recv(&mut rx, WAIT).await.is_some(),
        "consumer started once the queue existed"
    );
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[]).await;
}

/// Counts the bodies handled (to prove nothing is lost or duplicated).
type Seen = Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>>;

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn max_concurrency_adds_consumers_under_load_and_retires_them_when_idle() {
    let admin = raw().await;
    let dest = unique("cons-scale");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.max-concurrency=3\n{p}.receive-timeout=100\n{p}.consumer-tag-prefix=scale\n"
    ))
    .with_consumer_scaling(
        binder_rabbit::ConsumerScaling::default()
            .start_consumer_min_interval(Duration::from_millis(300))
            .stop_consumer_min_interval(Duration::from_millis(300))
            .consecutive_active_trigger(5)
            .consecutive_idle_trigger(3),
    );
    let seen: Seen = Arc::default();
    let counted = seen.clone();
    let req = consumer_request("in", &dest, Some("g"));
    // Handles each delivery slowly, counting bodies.
    let binding = b
        .bind_with(req, move |m| {
            let counted = counted.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                *counted
                    .lock()
                    .expect("seen")
                    .entry(m.payload().to_vec())
                    .or_default() += 1;
                Ok::<_, FunctionError>(())
            }
        })
        .await
        .expect("bind");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.consumers(&queue).await,
        Some(1),
        "starts at concurrency"
    );

    const N: usize = 300;
    for i in 0..N {
        admin
            .publish(
                &dest,
                "k",
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
    // Busy: consumers are added one at a time up to max-concurrency, never beyond.
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().expect("seen").len() < N && tokio::time::Instant::now() < deadline {
        peak = peak.max(admin.consumers(&queue).await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peak, 3, "scaled up to max-concurrency under load");
    {
        let seen = seen.lock().expect("seen");
        assert_eq!(seen.len(), N, "every message handled");
        assert!(seen.values().all(|n| *n == 1), "none handled twice");
    }
    // Idle: the added consumers retire, down to concurrency and no further.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin.consumers(&queue).await != Some(1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(admin.consumers(&queue).await, Some(1), "scaled back down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        admin.consumers(&queue).await,
        Some(1),
        "never below concurrency"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    // The remaining consumer still works.
    admin
        .publish(&dest, "k", b"after", BasicProperties::default())
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.lock().expect("seen").contains_key(&b"after"[..])
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.lock().expect("seen").contains_key(&b"after"[..]));
    binding.stop().await.expect("stop");
    assert_eq!(admin.consumers(&queue).await, Some(0));
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}
