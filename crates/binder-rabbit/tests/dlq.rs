//! Dead-lettering against a real broker: republish-to-dlq headers, broker dead-lettering,
//! the TTL retry loop of the reference guide §5.1, special outcomes (spec §3, §5).

mod common;

use std::sync::Arc;
use std::time::Duration;

use binder_rabbit::stream_core::binder::FailedMessage;
use binder_rabbit::{FunctionError, HeaderValue, Message};
use bytes::Bytes;
use common::*;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

const WAIT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
struct Root;

#[derive(Debug, thiserror::Error)]
#[error("saving order failed")]
struct Outer(#[source] Root);

fn recover(m: &Message<Bytes>, error: FunctionError) -> Disposition {
    Disposition::Recover(FailedMessage {
        message: m.clone(),
        error: Arc::new(error),
        attempts: 3,
    })
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn republish_to_dlq_adds_exception_and_origin_headers_then_acks() {
    let admin = raw().await;
    let dest = unique("dlq-republish");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dead-letter-exchange={dlx}\n"
    ));
    let (h, mut rx) = recorder(|m| recover(m, FunctionError::new(Outer(Root))));
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let props = BasicProperties::default()
        .with_headers(table(&[("keep", s("me"))]))
        .with_content_type("text/plain".into())
        .with_delivery_mode(1);
    admin
        .publish(&dest, "orders.created", b"payload", props)
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin.get(&dlq, WAIT).await.expect("republished to the DLQ");
    let p = &m.delivery.properties;
    assert_eq!(m.delivery.data, b"payload");
    assert_eq!(m.delivery.exchange.as_str(), dlx);
    assert_eq!(
        m.delivery.routing_key.as_str(),
        queue,
        "routed with the queue name"
    );
    assert_eq!(
        header_str(p, "x-exception-message").as_deref(),
        Some("database unavailable")
    );
    let trace = header_str(p, "x-exception-stacktrace").expect("stacktrace");
    assert!(
        trace.contains("saving order failed") && trace.contains("caused by: database unavailable"),
        "{trace}"
    );
    assert_eq!(
        header_str(p, "x-original-exchange").as_deref(),
        Some(dest.as_str())
    );
    assert_eq!(
        header_str(p, "x-original-routingKey").as_deref(),
        Some("orders.created")
    );
    assert_eq!(
        header_str(p, "keep").as_deref(),
        Some("me"),
        "original headers kept"
    );
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        *p.delivery_mode(),
        Some(2),
        "republish-delivery-mode PERSISTENT"
    );
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "original acked"
    );
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn stacktrace_is_truncated_to_frame_max_minus_headroom() {
    let admin = raw().await;
    let dest = unique("dlq-trunc");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    // frame_max is 131072 by default: leave 72 bytes for the trace.
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.frame-max-headroom=131000\n{p}.dead-letter-exchange={dest}.DLX\n"
    ));
    let long = "x".repeat(5000);
    let (h, mut rx) = recorder(move |m| recover(m, FunctionError::msg(long.clone())));
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"p", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin.get(&dlq, WAIT).await.expect("republished");
    let trace = header_str(&m.delivery.properties, "x-exception-stacktrace").expect("trace");
    let frame_max = b.frame_max().await.expect("connected");
    assert_eq!(trace.len() as u32, frame_max - 131_000);
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin
        .cleanup(&[&queue, &dlq], &[&dest, &format!("{dest}.DLX")])
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn without_republish_the_broker_dead_letters_with_x_death() {
    let admin = raw().await;
    let dest = unique("dlq-broker");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.republish-to-dlq=false\n{p}.dead-letter-exchange={dlx}\n"
    ));
    let (h, mut rx) = recorder(|m| recover(m, FunctionError::msg("boom")));
    // max-attempts 3 (default) > 1: reject without requeue.
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "rk", b"p", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("dead-lettered by the broker");
    assert!(header(&m.delivery.properties, "x-death").is_some());
    assert!(header(&m.delivery.properties, "x-exception-message").is_none());
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn missing_dlx_disables_republish_and_rejects() {
    let admin = raw().await;
    let dest = unique("dlq-nodlx");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!("{p}.dead-letter-exchange={dest}.missing-DLX\n"));
    let (h, mut rx) = recorder(|m| recover(m, FunctionError::msg("boom")));
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "rk", b"p", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    assert!(
        recv(&mut rx, SHORT).await.is_none(),
        "rejected without requeue"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    assert!(!admin.exchange_exists(&format!("{dest}.missing-DLX")).await);
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn single_attempt_with_requeue_rejected_requeues() {
    let admin = raw().await;
    let dest = unique("dlq-requeue");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.republish-to-dlq=false\n{p}.requeue-rejected=true\n"
    ));
    let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let s2 = seen.clone();
    let (h, mut rx) = recorder(move |m| {
        if s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            recover(m, FunctionError::msg("transient"))
        } else {
            Disposition::Ack
        }
    });
    let req = consumer_request_with("in", &dest, Some("g"), |c| c.max_attempts = 1);
    let binding = bind(&b, req, h).await;
    admin
        .publish(&dest, "rk", b"p", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let again = recv(&mut rx, WAIT).await.expect("requeued and redelivered");
    assert_eq!(
        again.headers().get("amqp_redelivered"),
        Some(&HeaderValue::Bool(true))
    );
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn immediate_acknowledge_skips_the_dlq_and_reject_and_dont_requeue_dead_letters() {
    let admin = raw().await;
    let dest = unique("dlq-special");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dead-letter-exchange={dlx}\n"
    ));
    let (h, mut rx) = recorder(|m| {
        if m.payload().as_ref() == b"ack" {
            recover(m, FunctionError::immediate_acknowledge("give up"))
        } else {
            recover(m, FunctionError::reject_and_dont_requeue("poison"))
        }
    });
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "rk", b"ack", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&dlq).await,
        Some(0),
        "immediate acknowledge bypasses the DLQ"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    admin
        .publish(&dest, "rk", b"reject", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("dead-lettered by the broker");
    assert!(header(&m.delivery.properties, "x-death").is_some());
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn ttl_retry_loop_putting_it_all_together() {
    // Reference guide §5.1: max-attempts=1, auto-bind-dlq, dlq-ttl, dlq-dead-letter-exchange= .
    let admin = raw().await;
    let dest = unique("myDestination");
    let queue = format!("{dest}.consumerGroup");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.input.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dlq-ttl=300\n{p}.dlq-dead-letter-exchange=\n{p}.dead-letter-exchange={dlx}\n"
    ));
    let (h, mut rx) = recorder(|m| {
        let count = match m.headers().get("x-death") {
            Some(HeaderValue::List(items)) => match items.first() {
                Some(HeaderValue::Map(d)) => {
                    d.get("count").and_then(HeaderValue::as_i64).unwrap_or(0)
                }
                _ => 0,
            },
            _ => 0,
        };
        if count >= 2 {
            recover(
                m,
                FunctionError::immediate_acknowledge("Failed after 3 attempts"),
            )
        } else {
            recover(m, FunctionError::reject_and_dont_requeue("failed"))
        }
    });
    let req = consumer_request_with("input", &dest, Some("consumerGroup"), |c| {
        c.max_attempts = 1
    });
    let binding = bind(&b, req, h).await;
    admin
        .publish(&dest, "#", b"loop", BasicProperties::default())
        .await;
    let first = recv(&mut rx, WAIT).await.expect("1st");
    assert!(first.headers().get("x-death").is_none());
    let second = recv(&mut rx, WAIT)
        .await
        .expect("2nd, back from the DLQ after its TTL");
    let Some(HeaderValue::List(deaths)) = second.headers().get("x-death") else {
        panic!("x-death missing: {:?}", second.headers());
    };
    let rejected = deaths
        .iter()
        .find_map(|d| match d {
            HeaderValue::Map(m)
                if m.get("queue").and_then(HeaderValue::as_str) == Some(queue.as_str()) =>
            {
                Some(m)
            }
            _ => None,
        })
        .expect("an x-death entry for the main queue");
    assert_eq!(
        rejected.get("count"),
        Some(&HeaderValue::I64(1)),
        "count is a Long"
    );
    assert_eq!(
        rejected.get("reason").and_then(HeaderValue::as_str),
        Some("rejected")
    );
    let third = recv(&mut rx, WAIT).await.expect("3rd");
    assert!(third.headers().contains("x-death"));
    assert!(
        recv(&mut rx, Duration::from_millis(1000)).await.is_none(),
        "acknowledged after giving up"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    assert_eq!(admin.queue_messages(&dlq).await, Some(0));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn partitioned_republish_reaches_the_shared_dlq() {
    let admin = raw().await;
    let dest = unique("dlq-part");
    let dlq = format!("{dest}.g.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dead-letter-exchange={dlx}\n"
    ));
    let (h, mut rx) = recorder(|m| recover(m, FunctionError::msg("bad")));
    let req =
        consumer_request_with("in", &dest, Some("g"), |c| c.partitioned = true).with_instance(1, 2);
    let binding = bind(&b, req, h).await;
    admin
        .publish(
            &dest,
            &format!("{dest}-1"),
            b"p",
            BasicProperties::default(),
        )
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin.get(&dlq, WAIT).await.expect("in the shared DLQ");
    assert_eq!(
        header_str(&m.delivery.properties, "x-original-routingKey"),
        Some(format!("{dest}-1"))
    );
    assert!(matches!(
        header(&m.delivery.properties, "retry-count"),
        Some(AMQPValue::LongInt(1))
    ));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin
        .cleanup(&[&format!("{dest}.g-1"), &dlq], &[&dest, &dlx])
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn republish_of_headers_near_frame_max_fits_the_frame_and_keeps_the_publisher_up() {
    let admin = raw().await;
    let dest = unique("dlq-frame");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}.DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dead-letter-exchange={dlx}\n"
    ));
    // A long error: the failure headers alone would not fit beside the message's headers.
    let (h, mut rx) = recorder(|m| {
        if m.payload().as_ref() == b"big" {
            recover(m, FunctionError::msg("x".repeat(50_000)))
        } else {
            recover(m, FunctionError::msg("small failure"))
        }
    });
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let frame_max = admin.conn.configuration().frame_max() as usize;
    let props = BasicProperties::default().with_headers(table(&[
        ("big", s(&"y".repeat(frame_max - 400))),
        ("keep", s("me")),
    ]));
    admin.publish(&dest, "k", b"big", props).await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin.get(&dlq, WAIT).await.expect("republished to the DLQ");
    let p = &m.delivery.properties;
    assert_eq!(m.delivery.data, b"big");
    let why = header_str(p, "x-exception-message").expect("x-exception-message");
    assert!(why.starts_with("xxx"), "{why}");
    assert_eq!(
        header_str(p, "keep").as_deref(),
        Some("me"),
        "small headers kept"
    );
    assert!(header(p, "big").is_none(), "the largest header is left out");
    // The shared publisher connection is still up: the next failure is republished too.
    admin
        .publish(&dest, "k", b"small", BasicProperties::default())
        .await;
    assert!(recv(&mut rx, WAIT).await.is_some());
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("the next one republished");
    assert_eq!(
        header_str(&m.delivery.properties, "x-exception-message").as_deref(),
        Some("small failure")
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    binding.stop().await.expect("stop");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}
