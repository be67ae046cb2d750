//! Transactions, polled consumers, batch-mode consumers and delayed messages against a real
//! broker.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use binder_rabbit::stream_core::binder::FailedMessage;
use binder_rabbit::{FunctionError, HeaderValue, Message, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

fn text() -> BasicProperties {
    BasicProperties::default().with_content_type("text/plain".into())
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn transacted_consumer_rolls_back_its_publishes_and_leaves_the_message() {
    let admin = raw().await;
    let input = unique("tx-in");
    let output = unique("tx-out");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.in.consumer.transacted=true\n\
         spring.cloud.stream.rabbit.bindings.out.producer.transacted=true\n",
    );
    let req = producer_request("out", &output, |p| {
        p.required_groups = vec!["cap".to_owned()]
    });
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    // A transacted producer on its own commits each send.
    producer
        .send(Message::bytes("direct"))
        .await
        .expect("committed");
    let cap = format!("{output}.cap");
    assert_eq!(
        admin.get(&cap, WAIT).await.expect("direct").delivery.data,
        b"direct"
    );
    // Publishes through a producer of the same binder while handling, then answers by
    // attempt: the first asks for a requeue, the second succeeds.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let forwarding = producer.clone();
    let request = consumer_request("in", &input, Some("g"));
    let binding = b
        .bind_with(request, move |m| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let producer = forwarding.clone();
            let seen = seen_tx.clone();
            async move {
                let redelivered =
                    m.headers().get("amqp_redelivered") == Some(&HeaderValue::Bool(true));
                let sent = producer
                    .send(Message::bytes(format!("out-{n}")))
                    .await
                    .map_err(|e| e.to_string());
                let _ = seen.send((redelivered, sent));
                match n {
                    0 => Err(FunctionError::requeue("first attempt: requeue")),
                    _ => Ok(()),
                }
            }
        })
        .await
        .expect("bind");
    admin.publish(&input, "k", b"work", text()).await;
    let (first, sent) = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("first")
        .expect("first");
    sent.expect("publish in the transaction");
    let (second, sent) = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("again")
        .expect("again");
    sent.expect("publish in the transaction");
    assert!(
        !first && second,
        "rolled back and redelivered (left in the queue)"
    );
    let got = admin.get(&cap, WAIT).await.expect("committed publish");
    assert_eq!(
        got.delivery.data, b"out-1",
        "out-0 was rolled back with the reject"
    );
    assert!(
        admin.get(&cap, Duration::from_millis(300)).await.is_none(),
        "only one publish committed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    binding.stop().await.expect("stop");
    assert_eq!(
        admin.queue_messages(&format!("{input}.g")).await,
        Some(0),
        "ack committed"
    );
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin
        .cleanup(&[&cap, &format!("{input}.g")], &[&input, &output])
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn transacted_consumer_republishes_to_the_dlq_in_its_transaction() {
    let admin = raw().await;
    let input = unique("txdlq");
    let b = binder(&format!(
        "spring.cloud.stream.rabbit.bindings.in.consumer.transacted=true\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.dead-letter-exchange={input}.DLX\n"
    ));
    let (h, mut rx) = recorder(|m| {
        Disposition::Recover(FailedMessage {
            message: m.clone(),
            error: Arc::new(FunctionError::msg("tx failure")),
            attempts: 1,
        })
    });
    let binding = bind(
        &b,
        consumer_request_with("in", &input, Some("g"), |p| p.max_attempts = 1),
        h,
    )
    .await;
    admin.publish(&input, "k", b"doomed", text()).await;
    recv(&mut rx, WAIT).await.expect("delivered");
    let dlq = format!("{input}.g.dlq");
    let m = admin
        .get(&dlq, WAIT)
        .await
        .expect("republished and committed");
    assert_eq!(m.delivery.data, b"doomed");
    assert_eq!(
        header_str(&m.delivery.properties, "x-exception-message").as_deref(),
        Some("tx failure")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(admin.queue_messages(&format!("{input}.g")).await, Some(0));
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    admin
        .cleanup(
            &[&format!("{input}.g"), &dlq],
            &[&input, &format!("{input}.DLX")],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn polled_consumer_requeues_retries_and_dead_letters() {
    init_tracing();
    let admin = raw().await;
    let dest = unique("polled");
    let env = env(&format!(
        "spring.cloud.stream.pollable-source=src\n\
         spring.cloud.stream.bindings.src-in-0.destination={dest}\n\
         spring.cloud.stream.bindings.src-in-0.group=g\n\
         spring.cloud.stream.bindings.src-in-0.consumer.max-attempts=2\n\
         spring.cloud.stream.bindings.src-in-0.consumer.back-off-initial-interval=10ms\n\
         spring.cloud.stream.rabbit.bindings.src-in-0.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.rabbit.bindings.src-in-0.consumer.dead-letter-exchange={dest}.DLX\n"
    ));
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .build()
        .await
        .expect("app");
    let source = app.pollable("src").expect("pollable");
    let ok = |_: String| async { Ok::<_, FunctionError>(()) };
    assert!(!source.poll(ok).await.expect("poll"), "nothing waiting");
    admin.publish(&dest, "k", b"p-1", text()).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let polled = source
        .poll(move |_: String| {
            a.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(FunctionError::requeue("not yet")) }
        })
        .await
        .expect("poll");
    assert!(polled);
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "requeue: no retry");
    let queue = format!("{dest}.g");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(admin.queue_messages(&queue).await, Some(1), "requeued");
    let (tx, mut rx) = mpsc::unbounded_channel();
    assert!(
        source
            .poll(move |s: String| {
                let _ = tx.send(s);
                async { Ok::<_, FunctionError>(()) }
            })
            .await
            .expect("poll")
    );
    assert_eq!(rx.recv().await.as_deref(), Some("p-1"));
    assert_eq!(admin.queue_messages(&queue).await, Some(0), "acked");
    admin.publish(&dest, "k", b"p-2", text()).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    assert!(
        source
            .poll(move |_: String| {
                a.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(FunctionError::msg("poll failure")) }
            })
            .await
            .expect("poll")
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "retried");
    let dlq = format!("{dest}.g.dlq");
    let m = admin.get(&dlq, WAIT).await.expect("dead-lettered");
    assert_eq!(m.delivery.data, b"p-2");
    assert_eq!(
        header_str(&m.delivery.properties, "x-exception-message").as_deref(),
        Some("poll failure")
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(&[&queue, &dlq], &[&dest, &format!("{dest}.DLX")])
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn batch_mode_hands_lists_to_the_function() {
    init_tracing();
    let admin = raw().await;
    let debatch = unique("bm-producer-batch");
    let collect = unique("bm-collect");
    let env = env(&format!(
        "spring.cloud.function.definition=lists;collected\n\
         spring.cloud.stream.bindings.lists-in-0.destination={debatch}\n\
         spring.cloud.stream.bindings.lists-in-0.group=g\n\
         spring.cloud.stream.bindings.lists-in-0.consumer.batch-mode=true\n\
         spring.cloud.stream.bindings.lists-in-0.consumer.max-attempts=1\n\
         spring.cloud.stream.rabbit.bindings.lists-in-0.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.rabbit.bindings.lists-in-0.consumer.dead-letter-exchange={debatch}.DLX\n\
         spring.cloud.stream.bindings.collected-in-0.destination={collect}\n\
         spring.cloud.stream.bindings.collected-in-0.group=g\n\
         spring.cloud.stream.bindings.collected-in-0.consumer.batch-mode=true\n\
         spring.cloud.stream.rabbit.bindings.collected-in-0.consumer.enable-batching=true\n\
         spring.cloud.stream.rabbit.bindings.collected-in-0.consumer.batch-size=3\n\
         spring.cloud.stream.rabbit.bindings.collected-in-0.consumer.receive-timeout=200ms\n"
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<String>)>();
    let tx2 = tx.clone();
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .batch_consumer("lists", move |v: Vec<String>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(("lists".to_owned(), v.clone()));
                if v.iter().any(|s| s == "boom") {
                    return Err(FunctionError::msg("batch failed"));
                }
                Ok::<_, FunctionError>(())
            }
        })
        .batch_consumer("collected", move |v: Vec<String>| {
            let tx = tx2.clone();
            async move {
                let _ = tx.send(("collected".to_owned(), v));
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("app");
    // A producer batch (as Spring publishes it) arrives as one list.
    let mut t = lapin::types::FieldTable::default();
    t.insert("springBatchFormat".into(), s("lengthHeader4"));
    t.insert("amqp_batchSize".into(), AMQPValue::LongInt(3));
    let props = text().with_headers(t);
    let body = binder_rabbit::batching::encode(&[b"a", b"b", b"c"]);
    admin.publish(&debatch, "k", &body, props.clone()).await;
    let (who, list) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("list")
        .expect("list");
    assert_eq!(
        (who.as_str(), list),
        (
            "lists",
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]
        )
    );
    // Separate messages collected into one call.
    for m in ["x", "y", "z", "w"] {
        admin.publish(&collect, "k", m.as_bytes(), text()).await;
    }
    let (_, first) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("batch")
        .expect("batch");
    let (_, second) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("rest")
        .expect("rest");
    assert_eq!(first, vec!["x", "y", "z"]);
    assert_eq!(second, vec!["w"], "partial batch after receive-timeout");
    // A failed batch: each message republished to the DLQ on its own.
    let body = binder_rabbit::batching::encode(&[&b"ok"[..], b"boom"]);
    admin.publish(&debatch, "k", &body, props).await;
    let _ = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("failed list");
    let dlq = format!("{debatch}.g.dlq");
    let one = admin.get(&dlq, WAIT).await.expect("first part");
    let two = admin.get(&dlq, WAIT).await.expect("second part");
    assert_eq!(one.delivery.data, b"ok");
    assert_eq!(two.delivery.data, b"boom");
    assert_eq!(
        header_str(&two.delivery.properties, "x-exception-message").as_deref(),
        Some("batch failed")
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[&format!("{debatch}.g"), &dlq, &format!("{collect}.g")],
            &[&debatch, &collect, &format!("{debatch}.DLX")],
        )
        .await;
}

fn delayed_plugin_enabled() -> bool {
    std::process::Command::new("rabbitmq-plugins")
        .args(["list", "-e"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rabbitmq_delayed_message_exchange"))
        .unwrap_or(false)
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn delay_expression_sets_x_delay_and_missing_plugin_is_explained() {
    let admin = raw().await;
    let dest = unique("delay");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.out.producer.delay-expression=headers['wait']\n\
         spring.cloud.stream.rabbit.bindings.delayed.producer.delayed-exchange=true\n",
    );
    let req = producer_request("out", &dest, |p| p.required_groups = vec!["cap".to_owned()]);
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let cap = format!("{dest}.cap");
    producer
        .send(Message::bytes("later").with_header("wait", 1500_i32))
        .await
        .expect("send");
    let got = admin
        .get(&cap, WAIT)
        .await
        .expect("plain exchange delivers at once");
    assert_eq!(
        header(&got.delivery.properties, "x-delay"),
        Some(&AMQPValue::LongInt(1500))
    );
    producer
        .send(Message::bytes("now").with_header("wait", -5_i32))
        .await
        .expect("send");
    producer.send(Message::bytes("none")).await.expect("send");
    for body in [&b"now"[..], b"none"] {
        let got = admin.get(&cap, WAIT).await.expect("no delay");
        assert_eq!(got.delivery.data, body);
        assert_eq!(
            header(&got.delivery.properties, "x-delay"),
            None,
            "negative or null: no header"
        );
    }
    let delayed = unique("delay-x");
    let req = producer_request("delayed", &delayed, |_| {});
    let result = b.provisioner().provision_producer(&req).await;
    if delayed_plugin_enabled() {
        result.expect("the plugin declares x-delayed-message");
        println!(
            "delayed message plugin present: end-to-end delay checked in delayed_exchange_end_to_end"
        );
    } else {
        let err = result.expect_err("no plugin").to_string();
        assert!(err.contains("rabbitmq_delayed_message_exchange"), "{err}");
        assert!(err.contains("x-delayed-message"), "{err}");
    }
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&cap], &[&dest, &delayed]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn delayed_exchange_end_to_end() {
    // `cargo xtask itest` skips this test, loudly, when the plugin is not enabled.
    assert!(
        delayed_plugin_enabled(),
        "the rabbitmq_delayed_message_exchange plugin is not enabled on the test broker"
    );
    let admin = raw().await;
    let dest = unique("delay-e2e");
    let b = binder(
        "spring.cloud.stream.rabbit.bindings.out.producer.delayed-exchange=true\n\
         spring.cloud.stream.rabbit.bindings.out.producer.delay-expression=1000\n",
    );
    let req = producer_request("out", &dest, |p| p.required_groups = vec!["cap".to_owned()]);
    let d = b
        .provisioner()
        .provision_producer(&req)
        .await
        .expect("provision");
    let producer = b.bind_producer(req, d).await.expect("producer");
    let started = std::time::Instant::now();
    producer.send(Message::bytes("late")).await.expect("send");
    let cap = format!("{dest}.cap");
    let got = admin
        .get(&cap, WAIT)
        .await
        .expect("delivered after the delay");
    assert_eq!(got.delivery.data, b"late");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    producer.close().await.expect("close");
    b.close().await.expect("close");
    admin.cleanup(&[&cap], &[&dest]).await;
}
