//! Poison messages on a real RabbitMQ, written frame by frame (`common/wire.rs`) where a client
//! refuses to encode them: short strings that are not UTF-8, timestamps past `i64::MAX`
//! seconds, decimals of any scale, header tables nested without bound. None may wedge the
//! queue or the connection: each ends in the DLQ with `x-exception-message` (or is processed,
//! where it is representable), the next good message is processed, the consumer stays
//! registered, and another binding on the same connection keeps flowing.

mod common;
#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use binder_rabbit::stream_core::binder::BindingState;
use binder_rabbit::{FunctionError, Message, RabbitBinderFactory, StreamApp};
use bytes::Bytes;
use common::*;
use wire::{Props, RawPublisher, Value};

const WAIT: Duration = Duration::from_secs(15);

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

/// Two functions on one binder (so one consumer connection): `first` on `a` (DLQ, output
/// captured in `<a>-out.capture`) and `second` on `b` (output in `<b>-out.capture`). Both echo
/// the payload and copy the input's `amqp_correlationId` and `ts` headers to the output.
async fn two_bindings(a: &str, b: &str) -> StreamApp {
    init_tracing();
    let mut props = String::from("spring.cloud.function.definition=first;second\n");
    for (f, d) in [("first", a), ("second", b)] {
        props.push_str(&format!(
            "spring.cloud.stream.bindings.{f}-in-0.destination={d}\n\
             spring.cloud.stream.bindings.{f}-in-0.group=g\n\
             spring.cloud.stream.bindings.{f}-in-0.consumer.max-attempts=1\n\
             spring.cloud.stream.bindings.{f}-out-0.destination={d}-out\n\
             spring.cloud.stream.bindings.{f}-out-0.producer.required-groups=capture\n\
             spring.cloud.stream.rabbit.bindings.{f}-in-0.consumer.auto-bind-dlq=true\n\
             spring.cloud.stream.rabbit.bindings.{f}-in-0.consumer.recovery-interval=500ms\n"
        ));
    }
    let echo = |m: Message<Bytes>| async move { Ok::<_, FunctionError>(m) };
    StreamApp::builder()
        .environment(env(&props))
        .binder(RabbitBinderFactory::new())
        .function("first", echo)
        .function("second", echo)
        .build()
        .await
        .expect("app")
}

async fn cleanup(admin: &Admin, dests: &[&str]) {
    for d in dests {
        let queues = [
            format!("{d}.g"),
            format!("{d}.g.dlq"),
            format!("{d}-out.capture"),
        ];
        let exchanges = [d.to_string(), format!("{d}-out")];
        let q: Vec<&str> = queues.iter().map(String::as_str).collect();
        let e: Vec<&str> = exchanges.iter().map(String::as_str).collect();
        admin.cleanup(&q, &e).await;
    }
}

/// Drains `queue`: the bodies, as text.
async fn drain(admin: &Admin, queue: &str, settle: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = admin.get(queue, settle).await {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

fn text_props() -> Props {
    Props {
        content_type: Some(b"text/plain".to_vec()),
        ..Props::default()
    }
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn non_utf8_short_strings_end_in_the_dlq_and_other_bindings_keep_flowing() {
    let admin = raw().await;
    let a = unique("poison-utf8-a");
    let b = unique("poison-utf8-b");
    let app = two_bindings(&a, &b).await;
    let queue = format!("{a}.g");
    assert!(
        eventually(WAIT, || async {
            admin.consumers(&queue).await == Some(1)
                && admin.consumers(&format!("{b}.g")).await == Some(1)
        })
        .await,
        "both consumers registered"
    );
    let mut raw = RawPublisher::connect(&host(), port())
        .await
        .expect("raw publisher");
    let header_name = Props {
        headers: Some(wire::encode_table(&[(
            b"bad\xffname".to_vec(),
            Value::LongString(b"v".to_vec()),
        )])),
        ..text_props()
    };
    let kind = Props {
        kind: Some(b"\xfe\xfftype".to_vec()),
        ..text_props()
    };
    let message_id = Props {
        message_id: Some(vec![0xc3, 0x28]),
        ..text_props()
    };
    let nested_name = Props {
        headers: Some(wire::encode_table(&[(
            b"outer".to_vec(),
            Value::Table(vec![(vec![0x80], Value::Int(1))]),
        )])),
        ..text_props()
    };
    for (i, p) in [&header_name, &kind, &message_id, &nested_name]
        .into_iter()
        .enumerate()
    {
        raw.publish(&a, b"k", p, format!("poison-{i}").as_bytes())
            .await
            .expect("publish poison");
    }
    raw.publish(&a, b"k\xff", &text_props(), b"poison-rk")
        .await
        .expect("publish poison routing key");
    raw.publish(&a, b"k", &text_props(), b"good-a")
        .await
        .expect("publish good");
    for i in 0..50 {
        raw.publish(&b, b"k", &text_props(), format!("b-{i}").as_bytes())
            .await
            .expect("publish to b");
    }
    raw.close().await.expect("close");

    let dlq = format!("{queue}.dlq");
    assert!(
        eventually(WAIT, || async {
            admin.queue_messages(&dlq).await == Some(5)
        })
        .await,
        "the five poison messages in the DLQ (it holds {:?})",
        admin.queue_messages(&dlq).await
    );
    let mut dead = Vec::new();
    while let Some(m) = admin.get(&dlq, Duration::from_millis(200)).await {
        let why = header_str(&m.delivery.properties, "x-exception-message").unwrap_or_default();
        assert!(
            why.contains("not valid UTF-8"),
            "x-exception-message: {why}"
        );
        dead.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    dead.sort();
    assert_eq!(
        dead,
        ["poison-0", "poison-1", "poison-2", "poison-3", "poison-rk"]
    );
    let good = drain(&admin, &format!("{a}-out.capture"), WAIT).await;
    assert_eq!(good, ["good-a"], "the next good message, once");
    assert!(
        eventually(WAIT, || async {
            admin.queue_messages(&format!("{b}-out.capture")).await == Some(50)
        })
        .await,
        "the other binding got its 50"
    );
    let mut other = drain(
        &admin,
        &format!("{b}-out.capture"),
        Duration::from_millis(500),
    )
    .await;
    other.sort();
    other.dedup();
    assert_eq!(other.len(), 50, "no duplicates on the other binding");
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "nothing looping"
    );
    assert_eq!(admin.consumers(&queue).await, Some(1), "the consumer lives");
    assert!(
        app.bindings()
            .iter()
            .all(|(_, s)| *s == BindingState::Running),
        "{:?}",
        app.bindings()
    );
    app.shutdown().await.expect("shutdown");
    cleanup(&admin, &[&a, &b]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn extreme_timestamps_and_decimals_are_processed_and_the_consumer_lives() {
    let admin = raw().await;
    let a = unique("poison-ts-a");
    let b = unique("poison-ts-b");
    let app = two_bindings(&a, &b).await;
    let queue = format!("{a}.g");
    assert!(
        eventually(WAIT, || async { admin.consumers(&queue).await == Some(1) }).await,
        "consumer registered"
    );
    let mut raw = RawPublisher::connect(&host(), port())
        .await
        .expect("raw publisher");
    let cases: Vec<(&str, Props)> = vec![
        (
            "ts-prop-max",
            Props {
                timestamp: Some(u64::MAX),
                ..text_props()
            },
        ),
        (
            "ts-prop-2^63",
            Props {
                timestamp: Some(1 << 63),
                ..text_props()
            },
        ),
        (
            "ts-header-max",
            Props {
                headers: Some(wire::encode_table(&[(
                    b"ts".to_vec(),
                    Value::Timestamp(u64::MAX),
                )])),
                ..text_props()
            },
        ),
        (
            "decimal-scale-255",
            Props {
                // Rendered into the output's correlation-id property (a short string).
                headers: Some(wire::encode_table(&[(
                    b"amqp_correlationId".to_vec(),
                    Value::Decimal(30, (-15_i32).cast_unsigned()),
                )])),
                ..text_props()
            },
        ),
    ];
    for (body, p) in &cases {
        raw.publish(&a, b"k", p, body.as_bytes())
            .await
            .expect("publish");
    }
    raw.publish(&a, b"k", &text_props(), b"good")
        .await
        .expect("publish good");
    raw.close().await.expect("close");
    let capture = format!("{a}-out.capture");
    assert!(
        eventually(WAIT, || async {
            admin.queue_messages(&capture).await == Some(5)
        })
        .await,
        "every message processed (capture holds {:?}, DLQ {:?})",
        admin.queue_messages(&capture).await,
        admin.queue_messages(&format!("{queue}.dlq")).await
    );
    let mut bodies = Vec::new();
    while let Some(m) = admin.get(&capture, Duration::from_millis(200)).await {
        let body = String::from_utf8_lossy(&m.delivery.data).into_owned();
        if body == "decimal-scale-255" {
            let corr = m.delivery.properties.correlation_id().clone();
            assert_eq!(
                corr.as_ref().map(|c| c.as_str().to_owned()),
                Some(format!("-0.{}15", "0".repeat(28))),
                "a decimal renders as Java reads it"
            );
        }
        bodies.push(body);
    }
    assert_eq!(bodies.len(), 5, "{bodies:?}");
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "nothing looping"
    );
    assert_eq!(admin.consumers(&queue).await, Some(1), "the consumer lives");
    app.shutdown().await.expect("shutdown");
    cleanup(&admin, &[&a, &b]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn deep_and_huge_header_tables_do_not_take_the_consumer_down() {
    let admin = raw().await;
    let a = unique("poison-deep-a");
    let b = unique("poison-deep-b");
    let app = two_bindings(&a, &b).await;
    let queue = format!("{a}.g");
    assert!(
        eventually(WAIT, || async { admin.consumers(&queue).await == Some(1) }).await,
        "consumer registered"
    );
    let mut raw = RawPublisher::connect(&host(), port())
        .await
        .expect("raw publisher");
    let room = raw.frame_max() as usize - 200;
    // As deep as the frame allows (7 bytes a level).
    let mut deep = Vec::new();
    deep.extend_from_slice(&[1, b'd', b'F']);
    let inner = wire::deep_table_bytes(room / 7 - 1);
    deep.extend_from_slice(&u32::try_from(inner.len()).expect("len").to_be_bytes());
    deep.extend_from_slice(&inner);
    let deep = Props {
        headers: Some(deep),
        ..text_props()
    };
    raw.publish(&a, b"k", &deep, b"deep")
        .await
        .expect("publish deep");
    // Many small headers filling the frame.
    let many: Vec<(Vec<u8>, Value)> = (0..room / 16)
        .map(|i| (format!("h{i:06}").into_bytes(), Value::Int(1)))
        .collect();
    let many = Props {
        headers: Some(wire::encode_table(&many)),
        ..text_props()
    };
    raw.publish(&a, b"k", &many, b"many")
        .await
        .expect("publish many");
    // One header value as large as the frame allows.
    let huge = Props {
        headers: Some(wire::encode_table(&[(
            b"big".to_vec(),
            Value::LongString(vec![b'x'; room - 100]),
        )])),
        ..text_props()
    };
    raw.publish(&a, b"k", &huge, b"huge")
        .await
        .expect("publish huge");
    raw.publish(&a, b"k", &text_props(), b"good")
        .await
        .expect("publish good");
    raw.close().await.expect("close");
    let dlq = format!("{queue}.dlq");
    let capture = format!("{a}-out.capture");
    assert!(
        eventually(WAIT, || async {
            let processed = admin.queue_messages(&capture).await.unwrap_or(0);
            let dead = admin.queue_messages(&dlq).await.unwrap_or(0);
            processed >= 1 && processed + dead == 4
        })
        .await,
        "every message processed or dead-lettered (capture {:?}, DLQ {:?})",
        admin.queue_messages(&capture).await,
        admin.queue_messages(&dlq).await
    );
    let dead = drain(&admin, &dlq, Duration::from_millis(300)).await;
    assert!(
        dead.contains(&"deep".to_owned()),
        "too deep: dead-lettered; {dead:?}"
    );
    let processed = drain(&admin, &capture, Duration::from_millis(300)).await;
    assert!(processed.contains(&"good".to_owned()), "{processed:?}");
    assert_eq!(
        admin.queue_messages(&queue).await,
        Some(0),
        "nothing looping"
    );
    assert_eq!(admin.consumers(&queue).await, Some(1), "the consumer lives");
    app.shutdown().await.expect("shutdown");
    cleanup(&admin, &[&a, &b]).await;
}
