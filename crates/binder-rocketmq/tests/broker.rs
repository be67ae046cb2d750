//! Broker-backed tests. Run with `cargo xtask itest rocketmq` (or set ROCKETMQ_NAMESRV_ADDR and
//! `cargo test -p binder-rocketmq --test broker -- --ignored`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binder_rocketmq::binder::{BindingState, ConsumerRequest, Disposition, InboundHandler};
use binder_rocketmq::headers::{
    KEYS, ROCKET_KEYS, ROCKET_MQ_QUEUE_ID, ROCKET_MQ_RECONSUME_TIMES, ROCKET_MQ_TOPIC,
    ROCKET_MQ_TRANSACTION_ID, ROCKET_TAGS, TAGS,
};
use binder_rocketmq::message::names;
use binder_rocketmq::stream_config::{ConsumerProperties, Environment, ProducerProperties};
use binder_rocketmq::{
    HeaderValue, Message, RocketMqBinderFactory, StreamApp, TransactionHandler, TransactionState,
};
use bytes::Bytes;
use common::*;

const IGNORE: &str = "needs RocketMQ; run with cargo xtask itest rocketmq";

fn cp() -> ConsumerProperties {
    ConsumerProperties::default()
}

fn pp() -> ProducerProperties {
    ProducerProperties::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn round_trip_keeps_tags_keys_and_headers() {
    let _ = IGNORE;
    let topic = unique("roundtrip");
    // Message trace on (the default), as Java services run it.
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.binder.enable-msg-trace",
        "true",
    )])
    .await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("g")), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    let m = Message::bytes("hello")
        .with_header(TAGS, "tagA")
        .with_header(KEYS, "order-1")
        .with_header("contentType", "text/plain")
        .with_header("x-number", 42_i32)
        .with_header("x-blank", "");
    p.send(m).await.expect("send");
    let got = next(&mut rx, 60).await;
    let h = got.headers();
    assert_eq!(body(&got), "hello");
    assert_eq!(h.get_str(ROCKET_TAGS), Some("tagA"));
    assert_eq!(h.get_str(ROCKET_KEYS), Some("order-1"));
    assert_eq!(h.get_str("contentType"), Some("text/plain"));
    assert_eq!(h.get_str("x-number"), Some("42"));
    assert!(!h.contains("x-blank"));
    assert_eq!(h.get_str(ROCKET_MQ_TOPIC), Some(topic.as_str()));
    assert_eq!(h.get(ROCKET_MQ_RECONSUME_TIMES), Some(&HeaderValue::I32(0)));
    c.stop().await.expect("stop");
    assert_eq!(c.state(), BindingState::Stopped);
    p.close().await.expect("close");
    b.close().await.expect("close binder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn tag_and_sql_subscriptions_filter() {
    let topic = unique("filter");
    let b = binder(&[
        (
            "spring.cloud.stream.rocketmq.bindings.tags.consumer.subscription",
            "a || b",
        ),
        (
            "spring.cloud.stream.rocketmq.bindings.sql.consumer.subscription",
            "sql:amount > 5",
        ),
    ])
    .await;
    let (ht, mut rt) = recorder(ack_all());
    let (hs, mut rs) = recorder(ack_all());
    let ct = consumer(&b, "tags", &topic, Some(&unique("gt")), cp(), ht).await;
    let cs = consumer(&b, "sql", &topic, Some(&unique("gs")), cp(), hs).await;
    let p = producer(&b, "out", &topic, pp()).await;
    for (tag, amount) in [("a", 1), ("c", 10), ("b", 7)] {
        let m = Message::bytes(format!("{tag}-{amount}"))
            .with_header(TAGS, tag)
            .with_header("amount", amount);
        p.send(m).await.expect("send");
    }
    let mut tags = BTreeSet::new();
    tags.insert(body(&next(&mut rt, 60).await));
    tags.insert(body(&next(&mut rt, 30).await));
    assert_eq!(tags, BTreeSet::from(["a-1".to_owned(), "b-7".to_owned()]));
    nothing(&mut rt, 3).await;
    // SQL92: rocketmq-rust 1.0.0 delivers nothing to SQL92 subscriptions (see
    // tests/client_repro.rs and docs/rocketmq-binder.md, known issues). The binder subscribes with
    // the SQL92 selector; what it must never do is deliver a non-matching message.
    let mut sql = BTreeSet::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), rs.recv()).await {
        sql.insert(body(&m));
    }
    assert!(
        sql.is_subset(&BTreeSet::from(["c-10".to_owned(), "b-7".to_owned()])),
        "SQL filter let through {sql:?}"
    );
    if sql.is_empty() {
        eprintln!("KNOWN ISSUE: the broker delivered nothing to the SQL92 subscription");
    }
    ct.stop().await.expect("stop");
    cs.stop().await.expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn broadcasting_delivers_to_every_member_clustering_shares() {
    let topic = unique("fanout");
    let b = binder(&[
        (
            "spring.cloud.stream.rocketmq.bindings.b1.consumer.message-model",
            "BROADCASTING",
        ),
        (
            "spring.cloud.stream.rocketmq.bindings.b2.consumer.message-model",
            "BROADCASTING",
        ),
    ])
    .await;
    let bgroup = unique("bg");
    let cgroup = unique("cg");
    let (h1, mut r1) = recorder(ack_all());
    let (h2, mut r2) = recorder(ack_all());
    let (h3, mut r3) = recorder(ack_all());
    let (h4, mut r4) = recorder(ack_all());
    let b1 = consumer(&b, "b1", &topic, Some(&bgroup), cp(), h1).await;
    let b2 = consumer(&b, "b2", &topic, Some(&bgroup), cp(), h2).await;
    let c1 = consumer(&b, "c1", &topic, Some(&cgroup), cp(), h3).await;
    let c2 = consumer(&b, "c2", &topic, Some(&cgroup), cp(), h4).await;
    // Let the clustering group rebalance across its two members.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let p = producer(&b, "out", &topic, pp()).await;
    let n = 12;
    for i in 0..n {
        p.send(Message::bytes(format!("m{i}"))).await.expect("send");
    }
    for r in [&mut r1, &mut r2] {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            seen.insert(body(&next(r, 60).await));
        }
        assert_eq!(seen.len(), n, "a broadcasting member missed messages");
    }
    let mut shared: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut a, mut bb) = (0, 0);
    while shared.len() < n && Instant::now() < deadline {
        tokio::select! {
            Some(m) = r3.recv() => { a += 1; shared.push(body(&m)); }
            Some(m) = r4.recv() => { bb += 1; shared.push(body(&m)); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let distinct: BTreeSet<_> = shared.iter().cloned().collect();
    assert_eq!(
        shared.len(),
        n,
        "clustering group lost or duplicated messages"
    );
    assert_eq!(distinct.len(), n);
    eprintln!("clustering split: {a} / {bb}");
    nothing(&mut r3, 2).await;
    for c in [b1, b2, c1, c2] {
        c.stop().await.expect("stop");
    }
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn orderly_keeps_queue_order_under_failures() {
    let topic = unique("orderly");
    let factory = RocketMqBinderFactory::builder()
        .message_queue_selector("first", |_: &Message<Bytes>, _| 0)
        .build();
    let b = binder_with(
        factory,
        &[
            ("spring.cloud.stream.rocketmq.bindings.in.consumer.push.orderly", "true"),
            (
                "spring.cloud.stream.rocketmq.bindings.in.consumer.push.suspend-current-queue-time-millis",
                "200",
            ),
            ("spring.cloud.stream.rocketmq.bindings.out.producer.message-queue-selector", "first"),
        ],
    )
    .await;
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let c2 = Arc::clone(&counts);
    let (h, mut rx) = recorder(Box::new(move |m| {
        let b = String::from_utf8_lossy(m.payload()).into_owned();
        let mut counts = c2.lock().expect("lock");
        let n = counts.entry(b.clone()).or_insert(0);
        *n += 1;
        if (b == "3" && *n <= 2) || (b == "7" && *n <= 1) {
            failed(m, "transient")
        } else {
            Disposition::Ack
        }
    }));
    let mut props = cp();
    props.concurrency = 4;
    let c = consumer(&b, "in", &topic, Some(&unique("og")), props, h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    for i in 0..10 {
        p.send(Message::bytes(i.to_string())).await.expect("send");
    }
    let mut order: Vec<String> = Vec::new();
    while order.last().map(String::as_str) != Some("9") && order.len() < 40 {
        let m = next(&mut rx, 60).await;
        let q = m
            .headers()
            .get(ROCKET_MQ_QUEUE_ID)
            .and_then(HeaderValue::as_i64)
            .unwrap_or(-1);
        assert_eq!(q, 0, "the selector put every message on queue 0");
        order.push(body(&m));
    }
    // A failed message is redelivered (after the suspension) before any later one.
    let mut dedup: Vec<String> = Vec::new();
    for s in &order {
        if dedup.last() != Some(s) {
            dedup.push(s.clone());
        }
    }
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(dedup, expected, "deliveries in order {order:?}");
    let counts = counts.lock().expect("lock").clone();
    assert_eq!(counts.get("3"), Some(&3), "{order:?}");
    assert_eq!(counts.get("7"), Some(&2), "{order:?}");
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

/// Reads `topic` with a fresh group from the first offset.
async fn read_topic(topic: &str, secs: u64) -> Message<Bytes> {
    let b = binder(&[]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "reader", topic, Some(&unique("reader")), cp(), h).await;
    let m = next(&mut rx, secs).await;
    c.stop().await.expect("stop");
    b.close().await.expect("close");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn retry_topic_then_dlq_after_max_reconsume_times() {
    let topic = unique("retry");
    let group = unique("rg");
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.bindings.in.consumer.push.max-reconsume-times",
        "1",
    )])
    .await;
    let (h, mut rx) = recorder(Box::new(|m| failed(m, "always fails")));
    let c = consumer(&b, "in", &topic, Some(&group), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    p.send(
        Message::bytes("poison")
            .with_header(KEYS, "poison-key")
            .with_header("origin", "test"),
    )
    .await
    .expect("send");
    let first = next(&mut rx, 60).await;
    assert_eq!(
        first.headers().get(ROCKET_MQ_RECONSUME_TIMES),
        Some(&HeaderValue::I32(0))
    );
    // Broker redelivery through %RETRY%<group> (delay level 3 = 10 s).
    let second = next(&mut rx, 60).await;
    assert_eq!(body(&second), "poison");
    assert_eq!(
        second.headers().get(ROCKET_MQ_RECONSUME_TIMES),
        Some(&HeaderValue::I32(1))
    );
    assert_eq!(
        second.headers().get_str(ROCKET_MQ_TOPIC),
        Some(topic.as_str())
    );
    c.stop().await.expect("stop");
    let dlq = read_topic(&format!("%DLQ%{group}"), 90).await;
    assert_eq!(body(&dlq), "poison");
    assert_eq!(dlq.headers().get_str(ROCKET_KEYS), Some("poison-key"));
    assert_eq!(dlq.headers().get_str("origin"), Some("test"));
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn delay_level_minus_one_dead_letters_at_once() {
    let topic = unique("dlqnow");
    let group = unique("dg");
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.bindings.in.consumer.push.delay-level-when-next-consume",
        "-1",
    )])
    .await;
    let (h, mut rx) = recorder(Box::new(|m| failed(m, "bad")));
    let c = consumer(&b, "in", &topic, Some(&group), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    p.send(Message::bytes("bad").with_header("h", "v"))
        .await
        .expect("send");
    next(&mut rx, 60).await;
    nothing(&mut rx, 12).await;
    c.stop().await.expect("stop");
    let dlq = read_topic(&format!("%DLQ%{group}"), 60).await;
    assert_eq!(body(&dlq), "bad");
    assert_eq!(dlq.headers().get_str("h"), Some("v"));
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn delay_level_delays_delivery() {
    let topic = unique("delay");
    let b = binder(&[]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("dl")), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    // Make sure the consumer is live before timing.
    p.send(Message::bytes("warm")).await.expect("send");
    next(&mut rx, 60).await;
    let sent = Instant::now();
    p.send(Message::bytes("late").with_header("DELAY", 2_i32))
        .await
        .expect("send");
    let m = next(&mut rx, 60).await;
    let waited = sent.elapsed();
    assert_eq!(body(&m), "late");
    assert!(
        waited >= Duration::from_millis(4500),
        "level 2 is 5 s, came after {waited:?}"
    );
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

struct ByArgs {
    checks: Arc<Mutex<Vec<String>>>,
}

impl TransactionHandler for ByArgs {
    fn execute(&self, _m: &Message<Bytes>, args: Option<&str>) -> TransactionState {
        match args {
            Some("commit") => TransactionState::Commit,
            Some("rollback") => TransactionState::Rollback,
            _ => TransactionState::Unknown,
        }
    }
    /// Answers from the "local state" (the body), as a real listener consults its database.
    fn check(&self, m: &Message<Bytes>) -> TransactionState {
        assert!(
            m.headers().contains(ROCKET_MQ_TRANSACTION_ID),
            "{:?}",
            m.headers()
        );
        let body = String::from_utf8_lossy(m.payload()).into_owned();
        self.checks.lock().expect("lock").push(body.clone());
        match body.as_str() {
            "rollback" => TransactionState::Rollback,
            _ => TransactionState::Commit,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn transactions_commit_rollback_and_check_back() {
    let topic = unique("tx");
    let checks = Arc::new(Mutex::new(Vec::new()));
    let factory = RocketMqBinderFactory::builder()
        .transaction_listener(
            "by-args",
            ByArgs {
                checks: Arc::clone(&checks),
            },
        )
        .build();
    let b = binder_with(
        factory,
        &[
            (
                "spring.cloud.stream.rocketmq.bindings.out.producer.producer-type",
                "Trans",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.out.producer.transaction-listener",
                "by-args",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.out.producer.group",
                &unique("txp"),
            ),
        ],
    )
    .await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("txc")), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    for what in ["commit", "rollback", "unknown"] {
        p.send(
            Message::bytes(what)
                .with_header("TRANSACTIONAL_ARGS", what)
                .with_header("x", "y"),
        )
        .await
        .expect("transactional send");
    }
    let first = next(&mut rx, 60).await;
    assert_eq!(body(&first), "commit");
    assert!(first.headers().get_str("TRANSACTIONAL_ARGS").is_none());
    // Undecided: the broker checks back (transactionCheckInterval), the listener commits.
    // The 1.0.0 broker sometimes checks an already committed message back again and delivers
    // it twice (see docs/rocketmq-binder.md, known issues): delivery is at-least-once, so a
    // repeated "commit" is tolerated; "rollback" must never show.
    let mut repeats = 0;
    loop {
        let m = next(&mut rx, 150).await;
        match body(&m).as_str() {
            "unknown" => break,
            "commit" => repeats += 1,
            other => panic!("unexpected transactional message {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            assert_ne!(body(&m), "rollback", "a rolled-back message was delivered");
            repeats += 1;
        }
    }
    if repeats > 0 {
        eprintln!("broker delivered {repeats} repeated committed message(s) after check-back");
    }
    let checks = checks.lock().expect("lock").clone();
    assert!(
        checks.contains(&"unknown".to_owned()),
        "checked back: {checks:?}"
    );
    eprintln!("checked back: {checks:?}");
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn async_callbacks_one_way_and_size_limit() {
    let topic = unique("async");
    let receipts: Arc<Mutex<Vec<Result<binder_rocketmq::SendReceipt, String>>>> =
        Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&receipts);
    let factory = RocketMqBinderFactory::builder()
        .send_callback("collect", move |r| {
            r2.lock().expect("lock").push(r.clone());
        })
        .build();
    let b = binder_with(
        factory,
        &[
            (
                "spring.cloud.stream.rocketmq.bindings.async.producer.send-type",
                "Async",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.async.producer.send-call-back",
                "collect",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.oneway.producer.send-type",
                "OneWay",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.small.producer.max-message-size",
                "16",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.off.producer.enabled",
                "false",
            ),
        ],
    )
    .await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("ag")), cp(), h).await;
    let pa = producer(&b, "async", &topic, pp()).await;
    let mut ec = pp();
    ec.error_channel_enabled = true;
    let pe = producer(&b, "async", &topic, ec).await;
    let po = producer(&b, "oneway", &topic, pp()).await;
    let ps = producer(&b, "small", &topic, pp()).await;
    pa.send(Message::bytes("a1")).await.expect("async send");
    for i in 0..20 {
        pa.send(Message::bytes(format!("b{i}")))
            .await
            .expect("async send");
    }
    // flush returns once every asynchronous send has been answered.
    pa.flush().await.expect("flush");
    assert_eq!(
        receipts.lock().expect("lock").len(),
        21,
        "every callback ran before flush returned"
    );
    pe.send(Message::bytes("a2"))
        .await
        .expect("async send awaited (error channel)");
    po.send(Message::bytes("o1")).await.expect("one-way send");
    let err = ps
        .send(Message::bytes("x".repeat(17)))
        .await
        .expect_err("oversize");
    let text = err.to_string();
    assert!(text.contains("max-message-size"), "{text}");
    assert!(text.contains(&topic), "{text}");
    let off = producer(&b, "off", &topic, pp()).await;
    let err = off
        .send(Message::bytes("never"))
        .await
        .expect_err("disabled producer");
    assert!(err.to_string().contains("producer.enabled=false"), "{err}");
    let mut got = BTreeSet::new();
    for _ in 0..23 {
        got.insert(body(&next(&mut rx, 60).await));
    }
    let mut want: BTreeSet<String> = (0..20).map(|i| format!("b{i}")).collect();
    want.extend(["a1".to_owned(), "a2".to_owned(), "o1".to_owned()]);
    assert_eq!(got, want);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receipts.lock().expect("lock").len() < 22 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipts = receipts.lock().expect("lock").clone();
    assert_eq!(receipts.len(), 22, "{receipts:?}");
    for r in receipts {
        let r = r.expect("callback reports success");
        assert_eq!(r.topic, topic);
        assert!(r.message_id.is_some());
    }
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn polled_consumer_requeue_seeks_back() {
    let topic = unique("poll");
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.bindings.poll.consumer.pull.poll-timeout-millis",
        "1000",
    )])
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    let req = ConsumerRequest::new("poll", &topic, Some(unique("pg")), cp());
    let dest = b
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect("provision");
    let src = b.bind_pollable(req, dest).await.expect("pollable");
    p.send(Message::bytes("p1")).await.expect("send");
    p.send(Message::bytes("p2")).await.expect("send");
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let c2 = Arc::clone(&calls);
    let (h, _rx) = recorder(Box::new(move |m| {
        let b = String::from_utf8_lossy(m.payload()).into_owned();
        let mut calls = c2.lock().expect("lock");
        let first_time = !calls.contains(&b);
        calls.push(b.clone());
        if b == "p1" && first_time {
            Disposition::Reject { requeue: true }
        } else {
            Disposition::Ack
        }
    }));
    let handler: Arc<dyn InboundHandler> = h;
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| *c == "p1")
        .count()
        < 2
        || !calls.lock().expect("lock").contains(&"p2".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "calls so far {:?}",
            calls.lock().expect("lock")
        );
        src.poll(&*handler).await.expect("poll");
    }
    let calls = calls.lock().expect("lock").clone();
    // p1 and p2 may sit on different queues, so their relative order is open; p1 was requeued
    // once and came back, p2 was accepted once.
    assert_eq!(calls.iter().filter(|c| *c == "p1").count(), 2, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "p2").count(), 1, "{calls:?}");
    // Everything settled: nothing more to poll.
    let mut extra = 0;
    for _ in 0..2 {
        if src.poll(&*handler).await.expect("poll") {
            extra += 1;
        }
    }
    assert_eq!(extra, 0);
    src.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn partitioned_producer_selects_queue_from_scst_partition() {
    let topic = unique("part");
    let b = binder(&[]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("pg")), cp(), h).await;
    let mut props = pp();
    props.partition_count = 4;
    props.partition_key_expression = Some("headers['k']".to_owned());
    assert!(props.is_partitioned());
    let p = producer(&b, "out", &topic, props).await;
    for part in 0..4_i32 {
        p.send(Message::bytes(format!("p{part}")).with_header(names::PARTITION, part))
            .await
            .expect("send");
    }
    let mut by_queue = HashMap::new();
    for _ in 0..4 {
        let m = next(&mut rx, 60).await;
        let q = m
            .headers()
            .get(ROCKET_MQ_QUEUE_ID)
            .and_then(HeaderValue::as_i64)
            .expect("queue id");
        by_queue.insert(body(&m), q);
    }
    for part in 0..4_i64 {
        assert_eq!(
            by_queue.get(&format!("p{part}")),
            Some(&part),
            "{by_queue:?}"
        );
    }
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

struct Slow {
    started: tokio::sync::mpsc::UnboundedSender<()>,
    done: tokio::sync::mpsc::UnboundedSender<String>,
}

#[async_trait::async_trait]
impl InboundHandler for Slow {
    async fn handle(&self, d: binder_rocketmq::binder::Delivery) -> Disposition {
        let _ = self.started.send(());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = self.done.send(body(&d.message));
        Disposition::Ack
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stop_waits_for_in_flight_messages() {
    let topic = unique("graceful");
    let b = binder(&[]).await;
    let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel();
    let (dtx, mut drx) = tokio::sync::mpsc::unbounded_channel();
    let c = consumer(
        &b,
        "in",
        &topic,
        Some(&unique("gg")),
        cp(),
        Arc::new(Slow {
            started: stx,
            done: dtx,
        }),
    )
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    p.send(Message::bytes("slow")).await.expect("send");
    tokio::time::timeout(Duration::from_secs(60), srx.recv())
        .await
        .expect("handler started")
        .expect("open");
    let t = Instant::now();
    c.stop().await.expect("stop");
    assert_eq!(
        drx.try_recv().ok().as_deref(),
        Some("slow"),
        "stop returned after {:?} before the in-flight message settled",
        t.elapsed()
    );
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stream_app_uppercase_end_to_end() {
    init_tracing();
    let ns = name_server();
    let words = unique("words");
    let shouts = unique("shouts");
    let env = Environment::builder()
        .map(
            "test",
            [
                (
                    "spring.cloud.stream.rocketmq.binder.name-server",
                    ns.as_str(),
                ),
                (
                    "spring.cloud.stream.rocketmq.binder.enable-msg-trace",
                    "false",
                ),
                (
                    "spring.cloud.stream.rocketmq.default.consumer.consume-from-where",
                    "CONSUME_FROM_FIRST_OFFSET",
                ),
                (
                    "spring.cloud.stream.bindings.uppercase-in-0.destination",
                    words.as_str(),
                ),
                (
                    "spring.cloud.stream.bindings.uppercase-in-0.group",
                    "uppercase",
                ),
                (
                    "spring.cloud.stream.bindings.uppercase-out-0.destination",
                    shouts.as_str(),
                ),
            ],
        )
        .build()
        .expect("env");
    let app = StreamApp::builder()
        .environment(env)
        .binder(RocketMqBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, binder_rocketmq::FunctionError>(s.to_uppercase())
        })
        .build()
        .await
        .expect("app");
    let b = binder(&[]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "reader", &shouts, Some(&unique("r")), cp(), h).await;
    let p = producer(&b, "writer", &words, pp()).await;
    p.send(Message::bytes("hello").with_header("contentType", "text/plain"))
        .await
        .expect("send");
    let m = next(&mut rx, 60).await;
    assert_eq!(body(&m), "HELLO");
    app.shutdown().await.expect("shutdown");
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn backlog_is_consumed_exactly_once_without_failures() {
    let topic = unique("backlog");
    let n: usize = std::env::var("ROCKETMQ_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.bindings.out.producer.send-type",
        "Async",
    )])
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    let started = Instant::now();
    for i in 0..n {
        p.send(Message::bytes(i.to_string())).await.expect("send");
    }
    eprintln!("produced {n} in {:?}", started.elapsed());
    let (h, mut rx) = recorder(ack_all());
    let mut props = cp();
    props.concurrency = 8;
    let c = consumer(&b, "in", &topic, Some(&unique("bl")), props, h).await;
    let consumed = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    while seen.len() < n {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await else {
            panic!(
                "stalled after {} of {n} messages ({duplicates} duplicates)",
                seen.len()
            );
        };
        if !seen.insert(body(&m)) {
            duplicates += 1;
        }
    }
    eprintln!(
        "consumed {n} in {:?} with concurrency 8, {duplicates} duplicates",
        consumed.elapsed()
    );
    nothing(&mut rx, 3).await;
    assert_eq!(duplicates, 0);
    c.stop().await.expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn pause_holds_deliveries_until_resume() {
    let topic = unique("pause");
    let b = binder(&[]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("pz")), cp(), h).await;
    let p = producer(&b, "out", &topic, pp()).await;
    p.send(Message::bytes("before")).await.expect("send");
    assert_eq!(body(&next(&mut rx, 60).await), "before");
    c.pause().await.expect("pause");
    assert_eq!(c.state(), BindingState::Paused);
    p.send(Message::bytes("while paused")).await.expect("send");
    let early = tokio::time::timeout(Duration::from_secs(8), rx.recv()).await;
    assert!(
        early.is_err(),
        "nothing is delivered while paused: {:?}",
        early.ok().flatten().map(|m| body(&m))
    );
    c.resume().await.expect("resume");
    assert_eq!(c.state(), BindingState::Running);
    assert_eq!(body(&next(&mut rx, 60).await), "while paused");
    // Stopping a paused binding returns held deliveries to the broker instead of hanging.
    c.pause().await.expect("pause");
    p.send(Message::bytes("held")).await.expect("send");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::time::timeout(Duration::from_secs(60), c.stop())
        .await
        .expect("stop returns while paused")
        .expect("stop");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn polled_consumer_recover_dead_letters_and_commits() {
    let topic = unique("polldlq");
    let group = unique("pdg");
    let b = binder(&[(
        "spring.cloud.stream.rocketmq.bindings.poll.consumer.pull.poll-timeout-millis",
        "1000",
    )])
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    let req = ConsumerRequest::new("poll", &topic, Some(group.clone()), cp());
    let dest = b
        .provisioner()
        .provision_consumer(&req)
        .await
        .expect("provision");
    let src = b.bind_pollable(req, dest).await.expect("pollable");
    p.send(Message::bytes("bad poll").with_header("origin", "polled"))
        .await
        .expect("send");
    let (h, mut rx) = recorder(Box::new(|m| failed(m, "cannot handle")));
    let handler: Arc<dyn InboundHandler> = h;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !src.poll(&*handler).await.expect("poll") {
        assert!(Instant::now() < deadline, "the message was never polled");
    }
    assert_eq!(body(&next(&mut rx, 5).await), "bad poll");
    // Recovered: dead-lettered and committed, so nothing comes back.
    for _ in 0..3 {
        assert!(
            !src.poll(&*handler).await.expect("poll"),
            "nothing redelivered"
        );
    }
    src.close().await.expect("close");
    let dlq = read_topic(&format!("%DLQ%{group}"), 90).await;
    assert_eq!(body(&dlq), "bad poll");
    assert_eq!(dlq.headers().get_str("origin"), Some("polled"));
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn namespace_prefixes_topics_on_the_wire() {
    let topic = unique("nstopic");
    let ns = unique("ns").replace('-', "");
    let b = binder(&[("spring.cloud.stream.rocketmq.binder.namespace", ns.as_str())]).await;
    let (h, mut rx) = recorder(ack_all());
    let c = consumer(&b, "in", &topic, Some(&unique("nsg")), cp(), h).await;
    // A client without a namespace sees the message only under `<namespace>%<topic>`, as the
    // Java client's NamespaceUtil names it.
    let plain = binder(&[]).await;
    let (wh, mut wire) = recorder(ack_all());
    let wire_name = format!("{ns}%{topic}");
    let w = consumer(&plain, "wire", &wire_name, Some(&unique("wg")), cp(), wh).await;
    let p = producer(&b, "out", &topic, pp()).await;
    p.send(Message::bytes("namespaced")).await.expect("send");
    let m = next(&mut rx, 60).await;
    assert_eq!(body(&m), "namespaced");
    assert_eq!(
        m.headers().get_str(ROCKET_MQ_TOPIC),
        Some(topic.as_str()),
        "the application sees its topic without the namespace"
    );
    let on_wire = next(&mut wire, 60).await;
    assert_eq!(body(&on_wire), "namespaced");
    assert_eq!(
        on_wire.headers().get_str(ROCKET_MQ_TOPIC),
        Some(wire_name.as_str())
    );
    c.stop().await.expect("stop");
    w.stop().await.expect("stop");
    b.close().await.expect("close");
    plain.close().await.expect("close");
}
