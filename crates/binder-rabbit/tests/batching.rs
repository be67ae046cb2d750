//! Producer batching, compression and consumer de-batching/decompression against a real broker,
//! checked byte for byte against Spring AMQP's wire formats.

mod common;

use std::io::Read;
use std::time::Duration;

use binder_rabbit::Message;
use binder_rabbit::stream_core::FunctionError;
use binder_rabbit::stream_core::binder::FailedMessage;
use common::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

const WAIT: Duration = Duration::from_secs(5);

async fn queue_on(admin: &Admin, exchange: &str, key: &str) -> String {
    let q = unique("batch-q");
    let ch = admin.channel().await;
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await
        .expect("queue");
    ch.queue_bind(
        q.as_str().into(),
        exchange.into(),
        key.into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind");
    q
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a plain gzip decoder reads it");
    out
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn batches_have_spring_wire_format_and_plain_single_messages() {
    let admin = raw().await;
    let dest = unique("batch-wire");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.out.producer.batching-enabled=true\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-size=3\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-timeout=300ms\n",
    );
    let req = producer_request("out", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let q = queue_on(&admin, &dest, "#").await;
    let producer = b.bind_producer(req, d).await.expect("producer");
    for (i, body) in ["foo", "bar", "baz"].iter().enumerate() {
        producer
            .send(
                Message::bytes(*body)
                    .with_header("contentType", "text/plain")
                    .with_header("n", i as i32),
            )
            .await
            .expect("send");
    }
    let got = admin.get(&q, WAIT).await.expect("batch");
    assert_eq!(
        got.delivery.data, b"\0\0\0\x03foo\0\0\0\x03bar\0\0\0\x03baz",
        "lengthHeader4 body"
    );
    let p = &got.delivery.properties;
    assert_eq!(
        header(p, "springBatchFormat"),
        Some(&AMQPValue::LongString(LongString::from("lengthHeader4")))
    );
    assert_eq!(
        header(p, "amqp_batchSize"),
        Some(&AMQPValue::LongInt(3)),
        "an Integer header"
    );
    assert_eq!(
        header(p, "n"),
        Some(&AMQPValue::LongInt(0)),
        "first message's headers"
    );
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("text/plain")
    );
    // A lone message goes out plain after the idle timeout.
    producer.send(Message::bytes("one")).await.expect("send");
    assert!(
        admin.get(&q, Duration::from_millis(100)).await.is_none(),
        "still batched"
    );
    let got = admin.get(&q, WAIT).await.expect("released by timeout");
    assert_eq!(got.delivery.data, b"one");
    assert_eq!(header(&got.delivery.properties, "springBatchFormat"), None);
    assert_eq!(header(&got.delivery.properties, "amqp_batchSize"), None);
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&q], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn routing_keys_never_share_a_batch_and_close_flushes() {
    let admin = raw().await;
    let dest = unique("batch-keys");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.out.producer.batching-enabled=true\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-size=2\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-timeout=60s\n\
         spring.cloud.stream.rabbit.bindings.out.producer.routing-key-expression=headers['rk']\n",
    );
    let req = producer_request("out", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let qx = queue_on(&admin, &dest, "x").await;
    let qy = queue_on(&admin, &dest, "y").await;
    let producer = b.bind_producer(req, d).await.expect("producer");
    for (body, rk) in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "y"), ("e", "x")] {
        producer
            .send(Message::bytes(body).with_header("rk", rk))
            .await
            .expect("send");
    }
    let x = admin.get(&qx, WAIT).await.expect("x batch");
    assert_eq!(x.delivery.data, b"\0\0\0\x01a\0\0\0\x01c");
    assert_eq!(x.delivery.routing_key.as_str(), "x");
    let y = admin.get(&qy, WAIT).await.expect("y batch");
    assert_eq!(y.delivery.data, b"\0\0\0\x01b\0\0\0\x01d");
    assert!(
        admin.get(&qx, Duration::from_millis(200)).await.is_none(),
        "e pending"
    );
    producer.close().await.expect("close flushes");
    let e = admin.get(&qx, WAIT).await.expect("flushed on close");
    assert_eq!(e.delivery.data, b"e");
    b.close().await.expect("close");
    admin.cleanup(&[&qx, &qy], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn batched_sends_complete_when_their_batch_is_confirmed() {
    let admin = raw().await;
    let dest = unique("batch-confirm");
    let b = binder(
        "spring.rabbitmq.publisher-confirm-type=correlated\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batching-enabled=true\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-size=4\n\
         spring.cloud.stream.rabbit.bindings.out.producer.batch-timeout=200ms\n",
    );
    let req = producer_request("out", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let q = queue_on(&admin, &dest, "#").await;
    let producer = b.bind_producer(req, d).await.expect("producer");
    let sends = (0..4).map(|i| {
        let p = producer.clone();
        tokio::spawn(async move { p.send(Message::bytes(format!("m{i}"))).await })
    });
    for s in futures::future::join_all(sends).await {
        s.expect("task").expect("confirmed");
    }
    let got = admin.get(&q, WAIT).await.expect("batch");
    assert_eq!(
        header(&got.delivery.properties, "amqp_batchSize"),
        Some(&AMQPValue::LongInt(4))
    );
    // A lone send returns once the timer released and the broker confirmed it.
    let started = std::time::Instant::now();
    producer
        .send(Message::bytes("late"))
        .await
        .expect("confirmed");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        admin.get(&q, WAIT).await.expect("late").delivery.data,
        b"late"
    );
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&q], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn compress_gzips_after_batching() {
    let admin = raw().await;
    let dest = unique("gzip");
    let b = binder(
        "spring.cloud.stream.rabbit.binder.compression-level=9\n\
         spring.cloud.stream.rabbit.bindings.out.producer.compress=true\n\
         spring.cloud.stream.rabbit.bindings.batched.producer.compress=true\n\
         spring.cloud.stream.rabbit.bindings.batched.producer.batching-enabled=true\n\
         spring.cloud.stream.rabbit.bindings.batched.producer.batch-size=2\n",
    );
    let mut producers = Vec::new();
    for binding in ["out", "batched"] {
        let req = producer_request(binding, &dest, |p| {
            p.required_groups = vec!["cap".to_owned()];
        });
        let d = b
            .provisioner()
            .provision_producer(&req)
            .await
            .expect("provision");
        producers.push(b.bind_producer(req, d).await.expect("producer"));
    }
    let q = format!("{dest}.cap");
    let body = "hello hello hello hello hello".repeat(20);
    producers[0]
        .send(Message::bytes(body.clone()).with_header("amqp_contentEncoding", "utf-8"))
        .await
        .expect("send");
    let got = admin.get(&q, WAIT).await.expect("gzipped");
    let p = &got.delivery.properties;
    assert_eq!(
        p.content_encoding().as_ref().map(|c| c.as_str()),
        Some("gzip, utf-8")
    );
    assert_eq!(
        header(p, "springAutoDecompress"),
        Some(&AMQPValue::Boolean(true))
    );
    assert!(got.delivery.data.len() < body.len());
    assert_eq!(gunzip(&got.delivery.data), body.as_bytes());
    producers[1]
        .send(Message::bytes("foo"))
        .await
        .expect("send");
    producers[1]
        .send(Message::bytes("bar"))
        .await
        .expect("send");
    let got = admin.get(&q, WAIT).await.expect("gzipped batch");
    let p = &got.delivery.properties;
    assert_eq!(
        p.content_encoding().as_ref().map(|c| c.as_str()),
        Some("gzip")
    );
    assert_eq!(gunzip(&got.delivery.data), b"\0\0\0\x03foo\0\0\0\x03bar");
    assert_eq!(header(p, "amqp_batchSize"), Some(&AMQPValue::LongInt(2)));
    for p in producers {
        p.close().await.expect("close");
    }
    b.close().await.expect("close");
    admin.cleanup(&[&q], &[&dest]).await;
}

fn batch_props(extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut t = FieldTable::default();
    t.insert("springBatchFormat".into(), s("lengthHeader4"));
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(t)
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn consumer_debatches_and_decompresses_what_a_java_producer_sends() {
    let admin = raw().await;
    let dest = unique("debatch");
    let b = binder("");
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let queue = format!("{dest}.g");
    // A batch as Spring's BatchingRabbitTemplate publishes it.
    let body = [&b"\0\0\0\x05hello"[..], b"\0\0\0\x05world"].concat();
    admin
        .publish(
            &dest,
            "k",
            &body,
            batch_props(&[("amqp_batchSize", AMQPValue::LongInt(2)), ("user", s("u"))]),
        )
        .await;
    let first = recv(&mut rx, WAIT).await.expect("first part");
    let second = recv(&mut rx, WAIT).await.expect("second part");
    assert_eq!(first.payload().as_ref(), b"hello");
    assert_eq!(second.payload().as_ref(), b"world");
    assert_eq!(
        first.headers().get_str("user"),
        Some("u"),
        "batch headers on each part"
    );
    assert!(!first.headers().contains("springBatchFormat"));
    assert_eq!(first.headers().get_str("contentType"), Some("text/plain"));
    // Gzip as GZipPostProcessor writes it, of a batch.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &body).expect("gzip");
    let zipped = z.finish().expect("gzip");
    let mut t = FieldTable::default();
    t.insert("springBatchFormat".into(), s("lengthHeader4"));
    t.insert("springAutoDecompress".into(), AMQPValue::Boolean(true));
    let props = BasicProperties::default()
        .with_content_encoding("gzip, utf-8".into())
        .with_headers(t);
    admin.publish(&dest, "k", &zipped, props).await;
    let a = recv(&mut rx, WAIT).await.expect("decompressed part");
    let _ = recv(&mut rx, WAIT).await.expect("decompressed part");
    assert_eq!(a.payload().as_ref(), b"hello");
    assert_eq!(a.headers().get_str("amqp_contentEncoding"), Some("utf-8"));
    assert!(!a.headers().contains("springAutoDecompress"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(admin.queue_messages(&queue).await, Some(0), "acked once");
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn bad_batches_and_bombs_go_to_the_dlq_and_failed_parts_alone() {
    let admin = raw().await;
    let dest = unique("badbatch");
    let b = binder(&format!(
        "spring.cloud.stream.rabbit.binder.max-decompressed-size=65536\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.dead-letter-exchange={dest}.DLX\n"
    ));
    let (h, mut rx) = recorder(|m| {
        if m.payload().as_ref() == b"bad" {
            Disposition::Recover(FailedMessage {
                message: m.clone(),
                error: std::sync::Arc::new(FunctionError::msg("bad part")),
                attempts: 1,
            })
        } else {
            Disposition::Ack
        }
    });
    let binding = bind(
        &b,
        consumer_request_with("in", &dest, Some("g"), |p| p.max_attempts = 1),
        h,
    )
    .await;
    let queue = format!("{dest}.g");
    let dlq = format!("{dest}.g.dlq");
    // Length past the end.
    admin
        .publish(&dest, "k", b"\0\0\0\x03foo\0\0\0\x09bar", batch_props(&[]))
        .await;
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("bad batch dead-lettered");
    let msg = header_str(&m.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(msg.contains("Bad batched message received"), "{msg}");
    // Negative length.
    admin
        .publish(&dest, "k", b"\xff\xff\xff\xff", batch_props(&[]))
        .await;
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("negative length dead-lettered");
    let msg = header_str(&m.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(
        msg.contains("Bad batched message received") && msg.contains("negative"),
        "{msg}"
    );
    assert!(
        recv(&mut rx, Duration::from_millis(200)).await.is_none(),
        "function never called"
    );
    // A bomb: 2 MiB of zeros, a few KiB compressed, above the 64 KiB cap.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 2 << 20]).expect("gzip");
    let bomb = z.finish().expect("gzip");
    admin
        .publish(
            &dest,
            "k",
            &bomb,
            BasicProperties::default().with_content_encoding("gzip".into()),
        )
        .await;
    let m = admin.get(&dlq, WAIT).await.expect("bomb dead-lettered");
    let msg = header_str(&m.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(msg.contains("exceeds the limit of 65536 bytes"), "{msg}");
    // One failing part of a batch is republished alone; the others are processed.
    let body = [&b"\0\0\0\x03ok1"[..], b"\0\0\0\x03bad", b"\0\0\0\x03ok2"].concat();
    admin.publish(&dest, "k", &body, batch_props(&[])).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(recv(&mut rx, WAIT).await.expect("part").payload().clone());
    }
    assert_eq!(seen, vec!["ok1", "bad", "ok2"]);
    let m = admin.get(&dlq, WAIT).await.expect("failed part");
    assert_eq!(m.delivery.data, b"bad");
    assert_eq!(
        header_str(&m.delivery.properties, "x-exception-message").as_deref(),
        Some("bad part")
    );
    assert!(
        admin.get(&dlq, Duration::from_millis(200)).await.is_none(),
        "only the bad part"
    );
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin
        .cleanup(&[&queue, &dlq], &[&dest, &format!("{dest}.DLX")])
        .await;
}
