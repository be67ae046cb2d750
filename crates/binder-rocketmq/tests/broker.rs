#![recursion_limit = "256"]
//! Broker-backed tests. Run with `cargo xtask itest rocketmq` (or set ROCKETMQ_NAMESRV_ADDR and
//! `cargo test -p binder-rocketmq --test broker -- --ignored`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binder_rocketmq::binder::{BindingState, Outbound, Producer};
use binder_rocketmq::headers::{
    KEYS, ROCKET_KEYS, ROCKET_MQ_QUEUE_ID, ROCKET_MQ_RECONSUME_TIMES, ROCKET_MQ_TOPIC,
    ROCKET_MQ_TRANSACTION_ID, ROCKET_TAGS, TAGS,
};
use binder_rocketmq::message::names;
use binder_rocketmq::stream_config::ProducerProperties;
use binder_rocketmq::{
    FunctionError, HeaderValue, Message, RocketMqBinderFactory, StreamApp, TransactionHandler,
    TransactionState,
};
use bytes::Bytes;
use common::*;

fn pp() -> ProducerProperties {
    ProducerProperties::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn round_trip_keeps_tags_keys_and_headers() {
    let topic = unique("roundtrip");
    // Message trace on (the default), as Java services run it.
    let trace = [(
        "spring.cloud.stream.rocketmq.binder.enable-msg-trace",
        "true",
    )];
    let mut c = Consumers::new();
    let mut rx = c.consumer("in", &topic, Some(&unique("g")), ack_all());
    c.property(trace[0].0, trace[0].1);
    let app = c.start().await;
    let b = binder(&trace).await;
    let p = producer(&b, "out", &topic, pp()).await;
    let m = Message::bytes("hello")
        .with_header(TAGS, "tagA")
        .with_header(KEYS, "order-1")
        .with_header("contentType", "text/plain")
        .with_header("x-number", 42_i32)
        .with_header("x-blank", "");
    send(&p, m).await;
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
    let c = binding(&app, "in");
    c.stop().await.expect("stop");
    assert_eq!(c.state(), BindingState::Stopped);
    p.close().await.expect("close");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn tag_and_sql_subscriptions_filter() {
    let topic = unique("filter");
    let mut c = Consumers::new();
    let mut rt = c.consumer("tags", &topic, Some(&unique("gt")), ack_all());
    let mut rs = c.consumer("sql", &topic, Some(&unique("gs")), ack_all());
    c.property(
        "spring.cloud.stream.rocketmq.bindings.tags-in-0.consumer.subscription",
        "a || b",
    )
    .property(
        "spring.cloud.stream.rocketmq.bindings.sql-in-0.consumer.subscription",
        "sql:amount > 5",
    );
    let app = c.start().await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    for (tag, amount) in [("a", 1), ("c", 10), ("b", 7)] {
        let m = Message::bytes(format!("{tag}-{amount}"))
            .with_header(TAGS, tag)
            .with_header("amount", amount);
        send(&p, m).await;
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn broadcasting_delivers_to_every_member_clustering_shares() {
    let topic = unique("fanout");
    let bgroup = unique("bg");
    let cgroup = unique("cg");
    let mut c = Consumers::new();
    let mut r1 = c.consumer("b1", &topic, Some(&bgroup), ack_all());
    let mut r2 = c.consumer("b2", &topic, Some(&bgroup), ack_all());
    let mut r3 = c.consumer("c1", &topic, Some(&cgroup), ack_all());
    let mut r4 = c.consumer("c2", &topic, Some(&cgroup), ack_all());
    c.property(
        "spring.cloud.stream.rocketmq.bindings.b1-in-0.consumer.message-model",
        "BROADCASTING",
    )
    .property(
        "spring.cloud.stream.rocketmq.bindings.b2-in-0.consumer.message-model",
        "BROADCASTING",
    );
    let app = c.start().await;
    // Let the clustering group rebalance across its two members.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    let n = 12;
    for i in 0..n {
        send(&p, Message::bytes(format!("m{i}"))).await;
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
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
        &[(
            "spring.cloud.stream.rocketmq.bindings.out.producer.message-queue-selector",
            "first",
        )],
    )
    .await;
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let c2 = Arc::clone(&counts);
    let mut c = Consumers::new();
    let mut rx = c.consumer(
        "in",
        &topic,
        Some(&unique("og")),
        decide(move |m| {
            let b = String::from_utf8_lossy(m.payload()).into_owned();
            let mut counts = c2.lock().expect("lock");
            let n = counts.entry(b.clone()).or_insert(0);
            *n += 1;
            if (b == "3" && *n <= 2) || (b == "7" && *n <= 1) {
                Outcome::fail("transient")
            } else {
                Outcome::Ack
            }
        }),
    );
    c.property(
        "spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.push.orderly",
        "true",
    )
    .property(
        "spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.push.suspend-current-queue-time-millis",
        "200",
    )
    .property("spring.cloud.stream.bindings.in-in-0.consumer.concurrency", "4");
    let app = c.start().await;
    let p = producer(&b, "out", &topic, pp()).await;
    for i in 0..10 {
        send(&p, Message::bytes(i.to_string())).await;
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn orderly_batch_failure_does_not_run_earlier_messages_again() {
    let topic = unique("orderbatch");
    let factory = RocketMqBinderFactory::builder()
        .message_queue_selector("first", |_: &Message<Bytes>, _| 0)
        .build();
    let b = binder_with(
        factory,
        &[(
            "spring.cloud.stream.rocketmq.bindings.out.producer.message-queue-selector",
            "first",
        )],
    )
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    // Sent before the consumer exists, so the first pull brings them together.
    for i in 0..4 {
        send(&p, Message::bytes(i.to_string())).await;
    }
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let c2 = Arc::clone(&counts);
    let mut c = Consumers::new();
    let mut rx = c.consumer(
        "in",
        &topic,
        Some(&unique("obg")),
        decide(move |m| {
            let b = String::from_utf8_lossy(m.payload()).into_owned();
            let mut counts = c2.lock().expect("lock");
            let n = counts.entry(b.clone()).or_insert(0);
            *n += 1;
            if b == "2" && *n == 1 {
                Outcome::fail("transient")
            } else {
                Outcome::Ack
            }
        }),
    );
    for (k, v) in [
        ("push.orderly", "true"),
        ("push.suspend-current-queue-time-millis", "200"),
        ("push.consume-message-batch-max-size", "4"),
    ] {
        c.property(
            &format!("spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.{k}"),
            v,
        );
    }
    let app = c.start().await;
    let mut order = Vec::new();
    while order.len() < 5 {
        order.push(body(&next(&mut rx, 60).await));
    }
    nothing(&mut rx, 3).await;
    assert_eq!(order, ["0", "1", "2", "2", "3"], "{order:?}");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn batch_failure_sends_back_only_the_failed_message() {
    // consume-message-batch-max-size 4 with one poison message: the listener gets the four
    // together; only the poison one may be delivered again, the others run exactly once.
    let topic = unique("batch");
    let factory = RocketMqBinderFactory::builder()
        .message_queue_selector("first", |_: &Message<Bytes>, _| 0)
        .build();
    let b = binder_with(
        factory,
        &[(
            "spring.cloud.stream.rocketmq.bindings.out.producer.message-queue-selector",
            "first",
        )],
    )
    .await;
    let p = producer(&b, "out", &topic, pp()).await;
    // Sent before the consumer exists, on one queue, so the first pull brings them together.
    for m in ["good-1", "poison", "good-2", "good-3"] {
        send(&p, Message::bytes(m)).await;
    }
    let poisoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&poisoned);
    let mut c = Consumers::new();
    let mut rx = c.consumer(
        "batch",
        &topic,
        Some(&unique("bg")),
        decide(move |m| {
            if m.payload().as_ref() == b"poison"
                && !seen.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                Outcome::fail("poison, the first time")
            } else {
                Outcome::Ack
            }
        }),
    );
    c.property(
        "spring.cloud.stream.rocketmq.bindings.batch-in-0.consumer.push.consume-message-batch-max-size",
        "4",
    );
    let app = c.start().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    // The poison message comes back through %RETRY%<group> (delay level 3: 10 s).
    while counts.get("poison").copied().unwrap_or(0) < 2 {
        let m = next(&mut rx, 60).await;
        *counts.entry(body(&m)).or_insert(0) += 1;
    }
    // A whole batch sent back would come back on the same schedule: wait past it.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
        *counts.entry(body(&m)).or_insert(0) += 1;
    }
    for good in ["good-1", "good-2", "good-3"] {
        assert_eq!(counts.get(good), Some(&1), "{good} ran again: {counts:?}");
    }
    assert_eq!(counts.get("poison"), Some(&2), "{counts:?}");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn retry_topic_then_dlq_after_max_reconsume_times() {
    let topic = unique("retry");
    let group = unique("rg");
    let mut c = Consumers::new();
    let mut rx = c.consumer(
        "in",
        &topic,
        Some(&group),
        decide(|_| Outcome::fail("always fails")),
    );
    c.property(
        "spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.push.max-reconsume-times",
        "1",
    );
    let app = c.start().await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(
        &p,
        Message::bytes("poison")
            .with_header(KEYS, "poison-key")
            .with_header("origin", "test"),
    )
    .await;
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
    binding(&app, "in").stop().await.expect("stop");
    let dlq = read_topic(&format!("%DLQ%{group}"), 90).await;
    assert_eq!(body(&dlq), "poison");
    assert_eq!(dlq.headers().get_str(ROCKET_KEYS), Some("poison-key"));
    assert_eq!(dlq.headers().get_str("origin"), Some("test"));
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn fixed_delay_level_redelivers_on_that_schedule() {
    let topic = unique("level");
    let mut c = Consumers::new();
    let mut rx = c.consumer(
        "in",
        &topic,
        Some(&unique("lg")),
        decide(|m| {
            if m.headers().get(ROCKET_MQ_RECONSUME_TIMES) == Some(&HeaderValue::I32(0)) {
                Outcome::fail("first time")
            } else {
                Outcome::Ack
            }
        }),
    );
    // Level 1 (1 s) instead of the broker's 3 + reconsumeTimes (10 s).
    c.property(
        "spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.push.delay-level-when-next-consume",
        "1",
    );
    let app = c.start().await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("later")).await;
    next(&mut rx, 60).await;
    let failed = Instant::now();
    let again = next(&mut rx, 60).await;
    let waited = failed.elapsed();
    assert_eq!(body(&again), "later");
    assert_eq!(
        again.headers().get(ROCKET_MQ_RECONSUME_TIMES),
        Some(&HeaderValue::I32(1))
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(8),
        "level 1 is 1 s (the default schedule 10 s); redelivered after {waited:?}"
    );
    nothing(&mut rx, 3).await;
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn delay_level_minus_one_dead_letters_at_once() {
    let topic = unique("dlqnow");
    let group = unique("dg");
    let mut c = Consumers::new();
    let mut rx = c.consumer("in", &topic, Some(&group), decide(|_| Outcome::fail("bad")));
    c.property(
        "spring.cloud.stream.rocketmq.bindings.in-in-0.consumer.push.delay-level-when-next-consume",
        "-1",
    );
    let app = c.start().await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("bad").with_header("h", "v")).await;
    next(&mut rx, 60).await;
    nothing(&mut rx, 12).await;
    binding(&app, "in").stop().await.expect("stop");
    let dlq = read_topic(&format!("%DLQ%{group}"), 60).await;
    assert_eq!(body(&dlq), "bad");
    assert_eq!(dlq.headers().get_str("h"), Some("v"));
    assert_eq!(
        dlq.headers().get_str(names::EXCEPTION_MESSAGE),
        Some("bad"),
        "{:?}",
        dlq.headers()
    );
    assert!(dlq.headers().contains(names::EXCEPTION_STACKTRACE));
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn reject_without_requeue_dead_letters_at_once() {
    let topic = unique("rejectnow");
    let group = unique("rj");
    let (app, mut rx) = consumer("in", &topic, Some(&group), decide(|_| Outcome::Reject)).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("unwanted").with_header("h", "v")).await;
    next(&mut rx, 60).await;
    nothing(&mut rx, 12).await;
    let dlq = read_topic(&format!("%DLQ%{group}"), 60).await;
    assert_eq!(body(&dlq), "unwanted");
    assert_eq!(dlq.headers().get_str("h"), Some("v"));
    assert_eq!(
        dlq.headers().get_str(names::EXCEPTION_MESSAGE),
        Some("rejected")
    );
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn delay_level_delays_delivery() {
    let topic = unique("delay");
    let (app, mut rx) = consumer("in", &topic, Some(&unique("dl")), ack_all()).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    // Make sure the consumer is live before timing.
    send(&p, Message::bytes("warm")).await;
    next(&mut rx, 60).await;
    let sent = Instant::now();
    send(&p, Message::bytes("late").with_header("DELAY", 2_i32)).await;
    let m = next(&mut rx, 60).await;
    let waited = sent.elapsed();
    assert_eq!(body(&m), "late");
    assert!(
        waited >= Duration::from_millis(4500),
        "level 2 is 5 s, came after {waited:?}"
    );
    app.shutdown().await.expect("shutdown");
    b.close().await;
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
    let txp = unique("txp");
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
                &txp,
            ),
        ],
    )
    .await;
    let (app, mut rx) = consumer("in", &topic, Some(&unique("txc")), ack_all()).await;
    let p = producer(&b, "out", &topic, pp()).await;
    for what in ["commit", "rollback", "unknown"] {
        p.send(Outbound::new(
            Message::bytes(what)
                .with_header("TRANSACTIONAL_ARGS", what)
                .with_header("x", "y"),
        ))
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
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
    let (app, mut rx) = consumer("in", &topic, Some(&unique("ag")), ack_all()).await;
    let pa = producer(&b, "async", &topic, pp()).await;
    let mut ec = pp();
    ec.error_channel_enabled = true;
    let pe = producer(&b, "async", &topic, ec).await;
    let po = producer(&b, "oneway", &topic, pp()).await;
    let ps = producer(&b, "small", &topic, pp()).await;
    send(&pa, Message::bytes("a1")).await;
    for i in 0..20 {
        send(&pa, Message::bytes(format!("b{i}"))).await;
    }
    // flush returns once every asynchronous send has been answered.
    pa.flush().await.expect("flush");
    assert_eq!(
        receipts.lock().expect("lock").len(),
        21,
        "every callback ran before flush returned"
    );
    pe.send(Outbound::new(Message::bytes("a2")))
        .await
        .expect("async send awaited (error channel)");
    send(&po, Message::bytes("o1")).await;
    let err = ps
        .send(Outbound::new(Message::bytes("x".repeat(17))))
        .await
        .expect_err("oversize");
    let text = err.to_string();
    assert!(text.contains("max-message-size"), "{text}");
    assert!(text.contains(&topic), "{text}");
    let off = producer(&b, "off", &topic, pp()).await;
    let err = off
        .send(Outbound::new(Message::bytes("never")))
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

/// A pollable source `poll` on `topic` (group `group`, one attempt per message, polls of at
/// most a second).
async fn pollable_app(topic: &str, group: &str) -> StreamApp {
    StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.pollable-source", "poll"),
            ("spring.cloud.stream.bindings.poll-in-0.destination", topic),
            ("spring.cloud.stream.bindings.poll-in-0.group", group),
            (
                "spring.cloud.stream.bindings.poll-in-0.consumer.max-attempts",
                "1",
            ),
            (
                "spring.cloud.stream.rocketmq.bindings.poll-in-0.consumer.pull.poll-timeout-millis",
                "1000",
            ),
        ]))
        .binder(RocketMqBinderFactory::new())
        .build()
        .await
        .expect("pollable application")
}

/// Polls until `done` says so (at most 60 s), answering with `decide`; returns what was polled.
async fn poll_until(
    app: &StreamApp,
    decide: Decide,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let source = app.pollable("poll").expect("pollable source");
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&calls.lock().expect("lock")) {
        assert!(
            Instant::now() < deadline,
            "calls so far {:?}",
            calls.lock().expect("lock")
        );
        let (calls, decide) = (Arc::clone(&calls), Arc::clone(&decide));
        source
            .poll(move |m: Message<Bytes>| {
                calls.lock().expect("lock").push(body(&m));
                let outcome = decide(&m);
                async move {
                    match outcome {
                        Outcome::Ack => Ok(()),
                        Outcome::Fail(why) => Err(FunctionError::msg(why)),
                        Outcome::Requeue => Err(FunctionError::requeue("asked to requeue")),
                        Outcome::Reject => Err(FunctionError::reject_and_dont_requeue("rejected")),
                    }
                }
            })
            .await
            .expect("poll");
    }
    let polled = calls.lock().expect("lock").clone();
    drop(calls);
    polled
}

/// Polls `n` times; how many polls found a message.
async fn polls_finding_something(app: &StreamApp, n: usize) -> usize {
    let source = app.pollable("poll").expect("pollable source");
    let mut found = 0;
    for _ in 0..n {
        if source
            .poll(|_: Message<Bytes>| async { Ok::<_, FunctionError>(()) })
            .await
            .expect("poll")
        {
            found += 1;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn polled_consumer_requeue_seeks_back() {
    let topic = unique("poll");
    let app = pollable_app(&topic, &unique("pg")).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("p1")).await;
    send(&p, Message::bytes("p2")).await;
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls = poll_until(
        &app,
        decide(move |m| {
            if m.payload().as_ref() == b"p1"
                && first.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                Outcome::Requeue
            } else {
                Outcome::Ack
            }
        }),
        |calls| calls.iter().filter(|c| *c == "p1").count() >= 2 && calls.iter().any(|c| c == "p2"),
    )
    .await;
    // p1 and p2 may sit on different queues, so their relative order is open; p1 was requeued
    // once and came back, p2 was accepted once.
    assert_eq!(calls.iter().filter(|c| *c == "p1").count(), 2, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "p2").count(), 1, "{calls:?}");
    // Everything settled: nothing more to poll.
    assert_eq!(polls_finding_something(&app, 2).await, 0);
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn polled_consumer_recover_dead_letters_and_commits() {
    let topic = unique("polldlq");
    let group = unique("pdg");
    let app = pollable_app(&topic, &group).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(
        &p,
        Message::bytes("bad poll").with_header("origin", "polled"),
    )
    .await;
    let calls = poll_until(&app, decide(|_| Outcome::fail("cannot handle")), |c| {
        !c.is_empty()
    })
    .await;
    assert_eq!(calls, ["bad poll"]);
    // Recovered: dead-lettered and committed, so nothing comes back.
    assert_eq!(
        polls_finding_something(&app, 3).await,
        0,
        "nothing redelivered"
    );
    app.shutdown().await.expect("shutdown");
    let dlq = read_topic(&format!("%DLQ%{group}"), 90).await;
    assert_eq!(body(&dlq), "bad poll");
    assert_eq!(dlq.headers().get_str("origin"), Some("polled"));
    assert_eq!(
        dlq.headers().get_str(names::EXCEPTION_MESSAGE),
        Some("cannot handle")
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn polled_consumer_reject_dead_letters_and_commits() {
    // Reject-and-don't-requeue on a polled consumer is dead-lettered, not committed away.
    let topic = unique("pollrej");
    let group = unique("prg");
    let app = pollable_app(&topic, &group).await;
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(
        &p,
        Message::bytes("refused").with_header("origin", "polled"),
    )
    .await;
    let calls = poll_until(&app, decide(|_| Outcome::Reject), |c| !c.is_empty()).await;
    assert_eq!(calls, ["refused"]);
    assert_eq!(
        polls_finding_something(&app, 3).await,
        0,
        "nothing redelivered"
    );
    app.shutdown().await.expect("shutdown");
    let dlq = read_topic(&format!("%DLQ%{group}"), 90).await;
    assert_eq!(body(&dlq), "refused");
    assert_eq!(dlq.headers().get_str("origin"), Some("polled"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn partitioned_producer_selects_queue_from_the_partition() {
    let topic = unique("part");
    let (app, mut rx) = consumer("in", &topic, Some(&unique("pg")), ack_all()).await;
    let mut props = pp();
    props.partition_count = 4;
    props.partition_key_expression = Some("headers['k']".to_owned());
    assert!(props.is_partitioned());
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, props).await;
    for part in 0..4_u32 {
        p.send(Outbound::new(Message::bytes(format!("p{part}"))).with_partition(Some(part)))
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
        assert!(
            !m.headers().contains(names::PARTITION),
            "the partition travels as a queue, not a header: {:?}",
            m.headers()
        );
        by_queue.insert(body(&m), q);
    }
    for part in 0..4_i64 {
        assert_eq!(
            by_queue.get(&format!("p{part}")),
            Some(&part),
            "{by_queue:?}"
        );
    }
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stop_waits_for_in_flight_messages() {
    let topic = unique("graceful");
    let group = unique("gg");
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (done_tx, mut finished) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.slow-in-0.destination", &topic),
            ("spring.cloud.stream.bindings.slow-in-0.group", &group),
        ]))
        .binder(RocketMqBinderFactory::new())
        .consumer("slow", move |m: Message<Bytes>| {
            let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
            async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = done_tx.send(body(&m));
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("app");
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("slow")).await;
    tokio::time::timeout(Duration::from_secs(60), started.recv())
        .await
        .expect("handler started")
        .expect("open");
    let t = Instant::now();
    binding(&app, "slow").stop().await.expect("stop");
    assert_eq!(
        finished.try_recv().ok().as_deref(),
        Some("slow"),
        "stop returned after {:?} before the in-flight message settled",
        t.elapsed()
    );
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stream_app_uppercase_end_to_end() {
    let words = unique("words");
    let shouts = unique("shouts");
    let app = StreamApp::builder()
        .environment(env(&[
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
        ]))
        .binder(RocketMqBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await
        .expect("app");
    let (reader, mut rx) = consumer("reader", &shouts, Some(&unique("r")), ack_all()).await;
    let b = binder(&[]).await;
    let p = producer(&b, "writer", &words, pp()).await;
    send(
        &p,
        Message::bytes("hello").with_header("contentType", "text/plain"),
    )
    .await;
    let m = next(&mut rx, 60).await;
    assert_eq!(body(&m), "HELLO");
    app.shutdown().await.expect("shutdown");
    reader.shutdown().await.expect("shutdown");
    b.close().await;
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
        send(&p, Message::bytes(i.to_string())).await;
    }
    eprintln!("produced {n} in {:?}", started.elapsed());
    let mut c = Consumers::new();
    let mut rx = c.consumer("in", &topic, Some(&unique("bl")), ack_all());
    c.property(
        "spring.cloud.stream.bindings.in-in-0.consumer.concurrency",
        "8",
    );
    let app = c.start().await;
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
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn pause_holds_deliveries_until_resume() {
    let topic = unique("pause");
    let (app, mut rx) = consumer("in", &topic, Some(&unique("pz")), ack_all()).await;
    let c = binding(&app, "in");
    let b = binder(&[]).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("before")).await;
    assert_eq!(body(&next(&mut rx, 60).await), "before");
    c.pause().await.expect("pause");
    assert_eq!(c.state(), BindingState::Paused);
    send(&p, Message::bytes("while paused")).await;
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
    send(&p, Message::bytes("held")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::time::timeout(Duration::from_secs(60), c.stop())
        .await
        .expect("stop returns while paused")
        .expect("stop");
    app.shutdown().await.expect("shutdown");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn namespace_prefixes_topics_on_the_wire() {
    let topic = unique("nstopic");
    let ns = unique("ns").replace('-', "");
    let namespace = [("spring.cloud.stream.rocketmq.binder.namespace", ns.as_str())];
    let mut c = Consumers::new();
    let mut rx = c.consumer("in", &topic, Some(&unique("nsg")), ack_all());
    c.property(namespace[0].0, namespace[0].1);
    let app = c.start().await;
    // A client without a namespace sees the message only under `<namespace>%<topic>`, as the
    // Java client's NamespaceUtil names it.
    let wire_name = format!("{ns}%{topic}");
    let (plain, mut wire) = consumer("wire", &wire_name, Some(&unique("wg")), ack_all()).await;
    let b = binder(&namespace).await;
    let p = producer(&b, "out", &topic, pp()).await;
    send(&p, Message::bytes("namespaced")).await;
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
    app.shutdown().await.expect("shutdown");
    plain.shutdown().await.expect("shutdown");
    b.close().await;
}
