//! Provisioning against a real broker: what the broker holds after binding (spec §4).

mod common;

use std::time::Duration;

use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, ExchangeKind};

const WAIT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn group_queue_on_topic_exchange_with_wildcard_binding() {
    let admin = raw().await;
    let dest = unique("prov-group");
    let queue = format!("{dest}.grp");
    let b = binder("");
    let d = b
        .provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("grp")))
        .await
        .expect("provision");
    assert_eq!(d.queue, queue);
    admin
        .exchange_matches(&dest, ExchangeKind::Topic, true, false)
        .await
        .expect("topic, durable, not auto-delete");
    assert!(
        admin
            .exchange_matches(&dest, ExchangeKind::Direct, true, false)
            .await
            .is_err()
    );
    admin
        .queue_matches(&queue, true, false, &[])
        .await
        .expect("durable queue without arguments");
    admin
        .publish(&dest, "any.key.at.all", b"x", BasicProperties::default())
        .await;
    assert!(admin.get(&queue, WAIT).await.is_some(), "bound with #");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn anonymous_queue_is_exclusive_auto_delete_and_named_like_spring() {
    let admin = raw().await;
    let dest = unique("prov-anon");
    let b =
        binder("spring.cloud.stream.rabbit.bindings.in2.consumer.anonymous-group-prefix=custom.");
    let d = b
        .provisioner()
        .provision_consumer(&consumer_request("in", &dest, None))
        .await
        .expect("provision");
    let prefix = format!("{dest}.anonymous.");
    assert!(d.queue.starts_with(&prefix), "{}", d.queue);
    let suffix = &d.queue[prefix.len()..];
    assert_eq!(suffix.len(), 22);
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    // Exclusive: another connection cannot even look at it.
    let err = admin
        .channel()
        .await
        .queue_declare(
            d.queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect_err("exclusive")
        .to_string();
    assert!(
        err.contains("RESOURCE_LOCKED") || err.contains("405") || err.contains("exclusive"),
        "{err}"
    );
    let d2 = b
        .provisioner()
        .provision_consumer(&consumer_request("in2", &dest, None))
        .await
        .expect("provision");
    assert!(
        d2.queue.starts_with(&format!("{dest}.custom.")),
        "{}",
        d2.queue
    );
    admin
        .publish(&dest, "k", b"x", BasicProperties::default())
        .await;
    b.close().await.expect("close");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&d.queue).await,
        None,
        "gone with its connection"
    );
    admin.cleanup(&[], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn partitioned_consumer_queue_bound_with_destination_and_index() {
    let admin = raw().await;
    let dest = unique("prov-part");
    let b = binder("");
    let req =
        consumer_request_with("in", &dest, Some("g"), |p| p.partitioned = true).with_instance(1, 2);
    let d = b
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect("provision");
    assert_eq!(d.queue, format!("{dest}.g-1"));
    admin
        .publish(
            &dest,
            &format!("{dest}-0"),
            b"zero",
            BasicProperties::default(),
        )
        .await;
    admin
        .publish(
            &dest,
            &format!("{dest}-1"),
            b"one",
            BasicProperties::default(),
        )
        .await;
    let m = admin
        .get(&d.queue, WAIT)
        .await
        .expect("partition 1 message");
    assert_eq!(m.delivery.data, b"one");
    assert!(admin.get(&d.queue, SHORT).await.is_none());
    b.close().await.expect("close");
    admin.cleanup(&[&d.queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn partitioned_consumer_without_group_is_an_error() {
    // The runtime checks a binding's group before it asks the binder to provision anything.
    let dest = unique("prov-part-nogroup");
    let env = env(&format!(
        "spring.cloud.function.definition=sink\n\
         spring.cloud.stream.bindings.sink-in-0.destination={dest}\n\
         spring.cloud.stream.bindings.sink-in-0.consumer.partitioned=true\n"
    ));
    let err = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .consumer("sink", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("no group");
    let text = err.to_string();
    assert!(text.contains("consumer group is required"), "{text}");
    assert!(
        text.contains("spring.cloud.stream.bindings.sink-in-0.group"),
        "{text}"
    );
    let admin = raw().await;
    assert!(!admin.exchange_exists(&dest).await, "nothing provisioned");
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn binding_routing_key_with_delimiter_makes_several_bindings() {
    let admin = raw().await;
    let dest = unique("prov-keys");
    let queue = format!("{dest}.g");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.in.consumer.binding-routing-key=a.*;b.#\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.binding-routing-key-delimiter=;\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.exchange-type=topic",
    );
    b.provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect("provision");
    admin
        .publish(&dest, "a.x", b"1", BasicProperties::default())
        .await;
    admin
        .publish(&dest, "b.x.y", b"2", BasicProperties::default())
        .await;
    admin
        .publish(&dest, "c.x", b"3", BasicProperties::default())
        .await;
    assert_eq!(
        admin.get(&queue, WAIT).await.expect("a.x").delivery.data,
        b"1"
    );
    assert_eq!(
        admin.get(&queue, WAIT).await.expect("b.x.y").delivery.data,
        b"2"
    );
    assert!(admin.get(&queue, SHORT).await.is_none(), "c.x is not bound");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn direct_fanout_and_headers_exchanges() {
    let admin = raw().await;
    let d_direct = unique("prov-direct");
    let d_fanout = unique("prov-fanout");
    let d_headers = unique("prov-headers");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.d.consumer.exchange-type=direct\n\
         spring.cloud.stream.rabbit.bindings.d.consumer.binding-routing-key=red\n\
         spring.cloud.stream.rabbit.bindings.f.consumer.exchange-type=fanout\n\
         spring.cloud.stream.rabbit.bindings.h.consumer.exchange-type=headers\n\
         spring.cloud.stream.rabbit.bindings.h.consumer.queue-binding-arguments.kind=order\n",
    );
    for (binding, dest) in [("d", &d_direct), ("f", &d_fanout), ("h", &d_headers)] {
        b.provisioner()
            .provision_consumer(&consumer_request(binding, dest, Some("g")))
            .await
            .expect("provision");
    }
    admin
        .exchange_matches(&d_direct, ExchangeKind::Direct, true, false)
        .await
        .expect("direct");
    admin
        .exchange_matches(&d_fanout, ExchangeKind::Fanout, true, false)
        .await
        .expect("fanout");
    admin
        .exchange_matches(&d_headers, ExchangeKind::Headers, true, false)
        .await
        .expect("headers");
    admin
        .publish(&d_direct, "blue", b"no", BasicProperties::default())
        .await;
    admin
        .publish(&d_direct, "red", b"yes", BasicProperties::default())
        .await;
    assert_eq!(
        admin
            .get(&format!("{d_direct}.g"), WAIT)
            .await
            .expect("red")
            .delivery
            .data,
        b"yes"
    );
    admin
        .publish(&d_fanout, "whatever", b"f", BasicProperties::default())
        .await;
    assert!(admin.get(&format!("{d_fanout}.g"), WAIT).await.is_some());
    admin
        .publish(
            &d_headers,
            "",
            b"no",
            BasicProperties::default().with_headers(table(&[("kind", s("other"))])),
        )
        .await;
    admin
        .publish(
            &d_headers,
            "",
            b"yes",
            BasicProperties::default().with_headers(table(&[("kind", s("order"))])),
        )
        .await;
    assert_eq!(
        admin
            .get(&format!("{d_headers}.g"), WAIT)
            .await
            .expect("order")
            .delivery
            .data,
        b"yes"
    );
    assert!(admin.get(&format!("{d_headers}.g"), SHORT).await.is_none());
    // A partitioned fanout is refused.
    let b2 = binder("spring.cloud.stream.rabbit.bindings.pf.consumer.exchange-type=fanout");
    let req = consumer_request_with("pf", &d_fanout, Some("p"), |p| p.partitioned = true);
    let err = b2
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect_err("fanout partitioned");
    assert!(err.to_string().contains("fanout"), "{err}");
    b.close().await.expect("close");
    b2.close().await.expect("close");
    for d in [&d_direct, &d_fanout, &d_headers] {
        admin.cleanup(&[&format!("{d}.g")], &[d]).await;
    }
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn queue_arguments_reach_the_broker_with_rabbitmq_types() {
    let admin = raw().await;
    let dest = unique("prov-args");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.ttl=60000\n{p}.expires=600000\n{p}.max-length=100\n{p}.max-length-bytes=100000\n\
         {p}.max-priority=5\n{p}.overflow-behavior=reject-publish\n{p}.single-active-consumer=true\n{p}.lazy=true\n\
         {p}.exchange-durable=false\n{p}.exchange-auto-delete=true\n"
    ));
    b.provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect("provision");
    let expected = |ttl: i32| {
        vec![
            ("x-message-ttl", AMQPValue::LongInt(ttl)),
            ("x-expires", AMQPValue::LongInt(600000)),
            ("x-max-length", AMQPValue::LongInt(100)),
            ("x-max-length-bytes", AMQPValue::LongInt(100000)),
            ("x-max-priority", AMQPValue::LongInt(5)),
            ("x-overflow", s("reject-publish")),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-queue-mode", s("lazy")),
        ]
    };
    admin
        .queue_matches(&queue, true, false, &expected(60000))
        .await
        .expect("same arguments");
    let err = admin
        .queue_matches(&queue, true, false, &expected(1))
        .await
        .expect_err("different ttl must conflict");
    assert!(err.contains("x-message-ttl"), "{err}");
    admin
        .exchange_matches(&dest, ExchangeKind::Topic, false, true)
        .await
        .expect("non-durable auto-delete exchange");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn quorum_queue() {
    let admin = raw().await;
    let dest = unique("prov-quorum");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.quorum.enabled=true\n{p}.quorum.delivery-limit=3\n{p}.quorum.initial-group-size=1\n"
    ));
    b.provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect("provision");
    admin
        .queue_matches(
            &queue,
            true,
            false,
            &[
                ("x-queue-type", s("quorum")),
                ("x-delivery-limit", AMQPValue::LongInt(3)),
                ("x-quorum-initial-group-size", AMQPValue::LongInt(1)),
            ],
        )
        .await
        .expect("quorum queue");
    assert!(
        admin
            .queue_matches(&queue, true, false, &[("x-queue-type", s("classic"))])
            .await
            .is_err()
    );
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn auto_bind_dlq_declares_dlx_dlq_and_dead_letter_arguments() {
    let admin = raw().await;
    let dest = unique("prov-dlq");
    let queue = format!("{dest}.g");
    let dlq = format!("{queue}.dlq");
    let dlx = format!("{dest}-DLX");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.auto-bind-dlq=true\n{p}.dead-letter-exchange={dlx}\n{p}.dlq-ttl=5000\n{p}.dlq-max-length=10\n\
         {p}.dlq-dead-letter-exchange=\n{p}.dlq-lazy=true\n"
    ));
    b.provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect("provision");
    admin
        .queue_matches(
            &queue,
            true,
            false,
            &[
                ("x-dead-letter-exchange", s(&dlx)),
                ("x-dead-letter-routing-key", s(&queue)),
            ],
        )
        .await
        .expect("main queue dead-letters to the DLX with its own name");
    admin
        .queue_matches(
            &dlq,
            true,
            false,
            &[
                ("x-message-ttl", AMQPValue::LongInt(5000)),
                ("x-max-length", AMQPValue::LongInt(10)),
                ("x-dead-letter-exchange", s("")),
                ("x-queue-mode", s("lazy")),
            ],
        )
        .await
        .expect("DLQ with dlq-* arguments");
    admin
        .exchange_matches(&dlx, ExchangeKind::Direct, true, false)
        .await
        .expect("direct durable DLX");
    admin
        .publish(&dlx, &queue, b"dead", BasicProperties::default())
        .await;
    assert!(
        admin.get(&dlq, WAIT).await.is_some(),
        "DLQ bound to the DLX with the queue name"
    );
    b.close().await.expect("close");
    admin.cleanup(&[&queue, &dlq], &[&dest, &dlx]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn conflicting_declaration_is_a_fatal_error_naming_queue_and_argument() {
    let admin = raw().await;
    let dest = unique("prov-conflict");
    let queue = format!("{dest}.g");
    let ch = admin.channel().await;
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table(&[("x-message-ttl", AMQPValue::LongInt(1000))]),
    )
    .await
    .expect("pre-existing queue");
    let b = binder("spring.cloud.stream.rabbit.bindings.in.consumer.ttl=2000");
    let err = b
        .provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect_err("conflict");
    let text = err.to_string();
    assert!(text.contains(&queue), "{text}");
    assert!(text.contains("x-message-ttl"), "{text}");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn using_existing_queues_and_exchanges_declares_nothing() {
    // Reference guide §4: bindQueue=false, declareExchange=false, queueNameGroupOnly=true.
    let admin = raw().await;
    let exchange = unique("myExchange");
    let queue = unique("myQueue");
    let ch = admin.channel().await;
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await
    .expect("exchange");
    ch.queue_declare(
        queue.as_str().into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "k".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.bind-queue=false\n{p}.declare-exchange=false\n{p}.queue-name-group-only=true\n"
    ));
    let req = consumer_request("in", &exchange, Some(&queue));
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, req, h).await;
    // The existing exchange is untouched (still direct, non-durable).
    admin
        .exchange_matches(&exchange, ExchangeKind::Direct, false, false)
        .await
        .expect("unchanged");
    admin
        .queue_matches(&queue, false, false, &[])
        .await
        .expect("unchanged queue");
    admin
        .publish(&exchange, "k", b"hello", BasicProperties::default())
        .await;
    let m = recv(&mut rx, WAIT).await.expect("consumed from myQueue");
    assert_eq!(m.payload().as_ref(), b"hello");
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin.cleanup(&[&queue], &[&exchange]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn durable_subscription_false_gives_auto_delete_queue_without_dlq() {
    let admin = raw().await;
    let dest = unique("prov-nondurable");
    let queue = format!("{dest}.g");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let b = binder(&format!(
        "{p}.durable-subscription=false\n{p}.auto-bind-dlq=true\n"
    ));
    let (h, _rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    // Like Spring, the dead-letter arguments are still set; only the DLQ is not declared.
    admin
        .queue_matches(
            &queue,
            false,
            true,
            &[
                ("x-dead-letter-exchange", s("DLX")),
                ("x-dead-letter-routing-key", s(&queue)),
            ],
        )
        .await
        .expect("non-durable, auto-delete");
    assert_eq!(
        admin.queue_messages(&format!("{queue}.dlq")).await,
        None,
        "no DLQ"
    );
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        admin.queue_messages(&queue).await,
        None,
        "auto-deleted after its consumer left"
    );
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn producer_required_groups_including_partitions() {
    // Reference guide §8: partitioned destination with required group myGroup, 2 partitions.
    let admin = raw().await;
    let dest = unique("partitioned.destination");
    let b = binder("spring.cloud.stream.rabbit.bindings.out.producer.auto-bind-dlq=true");
    let req = producer_request("out", &dest, |p| {
        p.partition_key_expression = Some("headers['partitionKey']".into());
        p.partition_count = 2;
        p.required_groups = vec!["myGroup".into()];
    });
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    assert_eq!(d.exchange, dest);
    let q0 = format!("{dest}.myGroup-0");
    let q1 = format!("{dest}.myGroup-1");
    let dlq = format!("{dest}.myGroup.dlq");
    admin
        .queue_matches(
            &q0,
            true,
            false,
            &[
                ("x-dead-letter-exchange", s("DLX")),
                ("x-dead-letter-routing-key", s(&q0)),
            ],
        )
        .await
        .expect("q0");
    admin
        .queue_matches(
            &q1,
            true,
            false,
            &[
                ("x-dead-letter-exchange", s("DLX")),
                ("x-dead-letter-routing-key", s(&q1)),
            ],
        )
        .await
        .expect("q1");
    assert!(admin.queue_messages(&dlq).await.is_some(), "one shared DLQ");
    let producer = b.bind_producer(req, d).await.expect("bind producer");
    producer
        .send(binder_rabbit::Message::bytes("p1").with_header("scst_partition", 1_i32))
        .await
        .expect("send");
    assert_eq!(
        admin
            .get(&q1, WAIT)
            .await
            .expect("partition 1")
            .delivery
            .data,
        b"p1"
    );
    assert!(admin.get(&q0, SHORT).await.is_none());
    // Non-partitioned required groups.
    let dest2 = unique("prov-required");
    let req2 = producer_request("out2", &dest2, |p| {
        p.required_groups = vec!["a".into(), "b".into()]
    });
    b.provisioner()
        .provision_producer(&req2)
        .await
        .expect("provision");
    admin
        .publish(&dest2, "x", b"m", BasicProperties::default())
        .await;
    assert!(admin.get(&format!("{dest2}.a"), WAIT).await.is_some());
    assert!(admin.get(&format!("{dest2}.b"), WAIT).await.is_some());
    producer.close().await.expect("close producer");
    b.close().await.expect("close");
    admin
        .cleanup(
            &[&q0, &q1, &dlq, &format!("{dest2}.a"), &format!("{dest2}.b")],
            &[&dest, &dest2],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn prefix_applies_to_exchange_queue_and_dlx() {
    let admin = raw().await;
    let dest = unique("prov-prefix");
    let p = "spring.cloud.stream.rabbit.bindings.in.consumer";
    let prefix = unique("pre") + ".";
    let b = binder(&format!("{p}.prefix={prefix}\n{p}.auto-bind-dlq=true\n"));
    let d = b
        .provisioner()
        .provision_consumer(&consumer_request("in", &dest, Some("g")))
        .await
        .expect("provision");
    let queue = format!("{prefix}{dest}.g");
    assert_eq!(d.queue, queue);
    assert!(admin.exchange_exists(&format!("{prefix}{dest}")).await);
    assert!(admin.exchange_exists(&format!("{prefix}DLX")).await);
    assert!(
        admin
            .queue_messages(&format!("{queue}.dlq"))
            .await
            .is_some()
    );
    b.close().await.expect("close");
    admin
        .cleanup(
            &[&queue, &format!("{queue}.dlq")],
            &[&format!("{prefix}{dest}"), &format!("{prefix}DLX")],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn instance_index_list_declares_and_consumes_every_listed_partition() {
    use std::sync::{Arc, Mutex};
    let admin = raw().await;
    let dest = unique("iil");
    let env = env(&format!(
        "spring.cloud.function.definition=sink\n\
         spring.cloud.stream.instance-count=3\n\
         spring.cloud.stream.bindings.sink-in-0.destination={dest}\n\
         spring.cloud.stream.bindings.sink-in-0.group=g\n\
         spring.cloud.stream.bindings.sink-in-0.consumer.partitioned=true\n\
         spring.cloud.stream.bindings.sink-in-0.consumer.instance-index-list=0,2\n"
    ));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&seen);
    let app = binder_rabbit::StreamApp::builder()
        .environment(env)
        .binder(binder_rabbit::RabbitBinderFactory::new())
        .consumer("sink", move |s: String| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().expect("lock").push(s);
                Ok::<_, binder_rabbit::FunctionError>(())
            }
        })
        .build()
        .await
        .expect("app");
    // What the broker holds: a queue per listed partition, each with its consumer; none for 1.
    for p in [0, 2] {
        let q = format!("{dest}.g-{p}");
        assert_eq!(admin.consumers(&q).await, Some(1), "{q}");
    }
    assert_eq!(admin.queue_messages(&format!("{dest}.g-1")).await, None);
    let text = lapin::BasicProperties::default().with_content_type("text/plain".into());
    for p in [0, 2] {
        admin
            .publish(
                &dest,
                &format!("{dest}-{p}"),
                format!("p{p}").as_bytes(),
                text.clone(),
            )
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().expect("lock").len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = seen.lock().expect("lock").clone();
    got.sort();
    assert_eq!(got, ["p0", "p2"]);
    for p in [0, 2] {
        assert_eq!(
            admin.queue_messages(&format!("{dest}.g-{p}")).await,
            Some(0)
        );
    }
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(&[&format!("{dest}.g-0"), &format!("{dest}.g-2")], &[&dest])
        .await;
}
