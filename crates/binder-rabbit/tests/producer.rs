//! Producers against a real broker: routing keys, AMQP properties from headers, confirms.

mod common;

use std::time::Duration;

use binder_rabbit::Message;
use binder_rabbit::stream_core::binder::Outbound;
use common::*;
use lapin::types::AMQPValue;

const WAIT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

async fn queue_on(admin: &Admin, exchange: &str, key: &str) -> String {
    let q = unique("prod-q");
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

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn default_routing_key_is_the_destination_and_headers_map_to_properties() {
    let admin = raw().await;
    let dest = unique("prod-default");
    let b = binder("spring.cloud.stream.rabbit.bindings.out.producer.header-patterns=!hidden*,*");
    let req = producer_request("out", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let q = queue_on(&admin, &dest, &dest).await;
    let producer = b.bind_producer(req, d).await.expect("producer");
    let m = Message::bytes("{\"a\":1}")
        .with_header("contentType", "application/json")
        .with_header("id", "msg-1")
        .with_header("timestamp", 1_700_000_000_000_i64)
        .with_header("custom", 7_i32)
        .with_header("hiddenThing", "no")
        .with_header("scst_partition", 0_i32)
        .with_header("deliveryAttempt", 2_i32)
        .with_header("sourceData", "no")
        .with_header("amqp_correlationId", "c-1")
        .with_header("amqp_replyTo", "replies")
        .with_header("amqp_expiration", "60000")
        .with_header("amqp_priority", 4_i32)
        .with_header("amqp_type", "Order")
        .with_header("amqp_appId", "rust-app")
        .with_header("amqp_contentEncoding", "identity")
        .with_header("amqp_receivedRoutingKey", "stale");
    // Sent as given (internal headers still on it) with a partition: the binder drops both.
    producer
        .send_outbound(Outbound::new(m).with_partition(Some(0)))
        .await
        .expect("send");
    let got = admin
        .get(&q, WAIT)
        .await
        .expect("routed with the destination as key");
    let p = &got.delivery.properties;
    assert_eq!(
        got.delivery.routing_key.as_str(),
        dest,
        "partition ignored: not partitioned"
    );
    assert_eq!(got.delivery.data, b"{\"a\":1}");
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(p.message_id().as_ref().map(|c| c.as_str()), Some("msg-1"));
    assert_eq!(*p.timestamp(), Some(1_700_000_000));
    assert_eq!(p.correlation_id().as_ref().map(|c| c.as_str()), Some("c-1"));
    assert_eq!(p.reply_to().as_ref().map(|c| c.as_str()), Some("replies"));
    assert_eq!(p.expiration().as_ref().map(|c| c.as_str()), Some("60000"));
    assert_eq!(*p.priority(), Some(4));
    assert_eq!(p.kind().as_ref().map(|c| c.as_str()), Some("Order"));
    assert_eq!(p.app_id().as_ref().map(|c| c.as_str()), Some("rust-app"));
    assert_eq!(
        p.content_encoding().as_ref().map(|c| c.as_str()),
        Some("identity")
    );
    assert_eq!(*p.delivery_mode(), Some(2), "PERSISTENT by default");
    let names: Vec<String> = p
        .headers()
        .as_ref()
        .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        vec!["custom".to_owned()],
        "internal, amqp_* and filtered headers are not sent"
    );
    assert_eq!(header(p, "custom"), Some(&AMQPValue::LongInt(7)));
    producer.close().await.expect("close");
    assert!(producer.send(Message::bytes("x")).await.is_err(), "closed");
    b.close().await.expect("close");
    admin.cleanup(&[&q], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn routing_key_expression_and_fixed_routing_key() {
    let admin = raw().await;
    let dest = unique("prod-rk");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.expr.producer.routing-key-expression=headers['kind']\n\
         spring.cloud.stream.rabbit.bindings.lit.producer.routing-key-expression='my.routingKey'\n\
         spring.cloud.stream.rabbit.bindings.fixed.producer.routing-key=fixed.key\n\
         spring.cloud.stream.rabbit.bindings.np.producer.delivery-mode=NON_PERSISTENT\n",
    );
    let pre = producer_request("expr", &dest, |_| {});
    b.provisioner()
        .provision_producer(&pre)
        .await
        .expect("provision");
    let q_kind = queue_on(&admin, &dest, "order.created").await;
    let q_lit = queue_on(&admin, &dest, "my.routingKey").await;
    let q_fixed = queue_on(&admin, &dest, "fixed.key").await;
    let q_np = queue_on(&admin, &dest, &dest).await;
    for (binding, msg, q) in [
        (
            "expr",
            Message::bytes("e").with_header("kind", "order.created"),
            &q_kind,
        ),
        ("lit", Message::bytes("l"), &q_lit),
        ("fixed", Message::bytes("f"), &q_fixed),
        ("np", Message::bytes("n"), &q_np),
    ] {
        let req = producer_request(binding, &dest, |_| {});
        let d = b
            .provisioner()
            .provision_producer(&req)
            .await
            .expect("provision");
        let producer = b.bind_producer(req, d).await.expect("producer");
        producer.send(msg).await.expect("send");
        let got = admin
            .get(q, WAIT)
            .await
            .unwrap_or_else(|| panic!("{binding} routed"));
        if binding == "np" {
            assert_eq!(*got.delivery.properties.delivery_mode(), Some(1));
        }
        producer.close().await.expect("close");
    }
    let req = producer_request("expr", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let err = producer
        .send(Message::bytes("no kind"))
        .await
        .expect_err("null routing key");
    assert!(err.to_string().contains("headers['kind']"), "{err}");
    b.close().await.expect("close");
    admin
        .cleanup(&[&q_kind, &q_lit, &q_fixed, &q_np], &[&dest])
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn partitioned_producer_routes_to_destination_dash_partition() {
    let admin = raw().await;
    let dest = unique("prod-part");
    let b = binder("");
    let req = producer_request("out", &dest, |p| {
        p.partition_key_expression = Some("payload".into());
        p.partition_count = 3;
        p.required_groups = vec!["g".into()];
    });
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    for i in 0..3_i32 {
        producer
            .send(Message::bytes(format!("m{i}")).with_header("scst_partition", i))
            .await
            .expect("send");
    }
    for i in 0..3 {
        let q = format!("{dest}.g-{i}");
        let got = admin.get(&q, WAIT).await.expect("in its partition queue");
        assert_eq!(got.delivery.data, format!("m{i}").as_bytes());
        assert_eq!(got.delivery.routing_key.as_str(), format!("{dest}-{i}"));
        assert!(admin.get(&q, SHORT).await.is_none());
    }
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin
        .cleanup(
            &[
                &format!("{dest}.g-0"),
                &format!("{dest}.g-1"),
                &format!("{dest}.g-2"),
            ],
            &[&dest],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn publisher_confirms_many_sends_in_flight() {
    let admin = raw().await;
    let dest = unique("prod-confirm");
    let b = binder("spring.rabbitmq.publisher-confirm-type=correlated");
    let req = producer_request("out", &dest, |p| p.required_groups = vec!["g".into()]);
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let sends = (0..500).map(|i| {
        let p = producer.clone();
        async move { p.send(Message::bytes(format!("m{i}"))).await }
    });
    let started = std::time::Instant::now();
    for r in futures::future::join_all(sends).await {
        r.expect("confirmed");
    }
    tracing::info!(elapsed = ?started.elapsed(), "500 confirmed sends");
    assert_eq!(
        admin.queue_messages(&format!("{dest}.g")).await,
        Some(500),
        "all confirmed sends are in the queue"
    );
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&format!("{dest}.g")], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn round_trip_between_producer_and_consumer_keeps_headers() {
    let admin = raw().await;
    let dest = unique("prod-roundtrip");
    let b = binder("");
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    let req = producer_request("out", &dest, |_| {});
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let mut nested = std::collections::BTreeMap::new();
    nested.insert("n".to_owned(), binder_rabbit::HeaderValue::I64(5));
    let sent = Message::bytes("hi")
        .with_header("contentType", "text/plain")
        .with_header("long", 9_i64)
        .with_header("flag", true)
        .with_header("map", binder_rabbit::HeaderValue::Map(nested.clone()));
    producer.send(sent).await.expect("send");
    let got = recv(&mut rx, WAIT).await.expect("received");
    assert_eq!(got.headers().get_str("contentType"), Some("text/plain"));
    assert_eq!(
        got.headers().get("long"),
        Some(&binder_rabbit::HeaderValue::I64(9))
    );
    assert_eq!(
        got.headers().get("flag"),
        Some(&binder_rabbit::HeaderValue::Bool(true))
    );
    assert_eq!(
        got.headers().get("map"),
        Some(&binder_rabbit::HeaderValue::Map(nested))
    );
    binding.stop().await.expect("stop");
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&format!("{dest}.g")], &[&dest]).await;
}
