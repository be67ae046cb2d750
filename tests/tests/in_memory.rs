//! End-to-end behaviour of the runtime over the in-memory binder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stream_core::app::BindingCommand;
use stream_core::errors::{ErrorMessage, GLOBAL_ERROR_CHANNEL, error_handler};
use stream_core::memory::{
    EXCEPTION_MESSAGE_HEADER, InMemoryBinderFactory, InMemoryBroker, dead_letter_destination,
};
use stream_core::message::names;
use stream_core::{FunctionError, HeaderValue, Message, StreamApp};
use stream_tests::env;

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Order {
    id: String,
    amount: i64,
}

#[tokio::test]
async fn function_pipeline_converts_and_routes_to_the_output_destination() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.validate-in-0.destination",
                "orders",
            ),
            (
                "spring.cloud.stream.bindings.validate-out-0.destination",
                "valid-orders",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .function("validate", |o: Order| async move {
            if o.amount < 0 {
                return Err(FunctionError::msg(format!("negative amount: {}", o.amount)));
            }
            Ok(Order {
                amount: o.amount * 2,
                ..o
            })
        })
        .build()
        .await
        .expect("app binds");
    broker.capture("valid-orders");
    broker.send(
        "orders",
        Message::bytes(&br#"{"id":"a","amount":21}"#[..]).with_header("trace", "t-1"),
    );
    let out = broker
        .receive("valid-orders", WAIT)
        .await
        .expect("output arrives");
    let order: Order = serde_json::from_slice(out.payload()).expect("JSON output");
    assert_eq!(
        order,
        Order {
            id: "a".into(),
            amount: 42
        }
    );
    assert_eq!(out.content_type(), Some("application/json"));
    assert_eq!(out.headers().get_str("trace"), Some("t-1"));
    assert!(!out.headers().contains(names::DELIVERY_ATTEMPT));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn partitioned_producer_feeds_two_instances_by_java_hash() {
    let broker = InMemoryBroker::new();
    let producer = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.out.destination", "parts"),
            (
                "spring.cloud.stream.bindings.out.producer.partition-key-expression",
                "payload.id",
            ),
            (
                "spring.cloud.stream.bindings.out.producer.partition-count",
                "2",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("producer binds");
    let mut instances = Vec::new();
    let mut seen = Vec::new();
    for index in 0..2 {
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&got);
        let idx = index.to_string();
        let instance = index;
        let app = StreamApp::builder()
            .environment(env(&[
                (
                    "spring.cloud.stream.bindings.sink-in-0.destination",
                    "parts",
                ),
                ("spring.cloud.stream.bindings.sink-in-0.group", "g"),
                (
                    "spring.cloud.stream.bindings.sink-in-0.consumer.partitioned",
                    "true",
                ),
                ("spring.cloud.stream.instance-count", "2"),
                ("spring.cloud.stream.instance-index", &idx),
            ]))
            .binder(InMemoryBinderFactory::with_broker(broker.clone()))
            .consumer("sink", move |m: Message<Order>| {
                let sink = Arc::clone(&sink);
                async move {
                    // The partition reaches the broker as routing, never as a header.
                    let leaked = m.headers().get(names::PARTITION).is_some();
                    sink.lock()
                        .map_err(|_| FunctionError::msg("poisoned"))?
                        .push(if leaked {
                            format!("{} leaked scst_partition", m.payload().id)
                        } else {
                            format!("{}@{instance}", m.payload().id)
                        });
                    Ok::<_, FunctionError>(())
                }
            })
            .build()
            .await
            .expect("instance binds");
        instances.push(app);
        seen.push(got);
    }
    // Java: "0".hashCode() = 48 -> 0, "1" = 49 -> 1, "foo" = 101574 -> 0, "abc" = 96354 -> 0,
    // "hello" = 99162322 -> 0, "polygenelubricants" = MIN_VALUE -> 0, "😀" = 1772899 -> 1.
    let bridge = producer.bridge();
    for id in ["0", "1", "foo", "abc", "hello", "polygenelubricants", "😀"] {
        bridge
            .send(
                "out",
                Order {
                    id: id.into(),
                    amount: 1,
                },
            )
            .await
            .expect("sent");
    }
    tokio::time::timeout(WAIT, async {
        loop {
            let total: usize = seen
                .iter()
                .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
                .sum();
            if total == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all 7 delivered");
    let zero = seen[0].lock().expect("lock").clone();
    let one = seen[1].lock().expect("lock").clone();
    assert_eq!(
        zero,
        vec!["0@0", "foo@0", "abc@0", "hello@0", "polygenelubricants@0"]
    );
    assert_eq!(one, vec!["1@1", "😀@1"]);
    for app in instances {
        app.shutdown().await.expect("clean shutdown");
    }
    producer.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn retry_with_back_off_then_dead_letter() {
    let broker = InMemoryBroker::new();
    let attempts = Arc::new(Mutex::new(Vec::<(i64, tokio::time::Instant)>::new()));
    let log = Arc::clone(&attempts);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.fail-in-0.destination", "work"),
            ("spring.cloud.stream.bindings.fail-in-0.group", "workers"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("fail", move |m: Message<String>| {
            let log = Arc::clone(&log);
            async move {
                let attempt = m
                    .headers()
                    .get(names::DELIVERY_ATTEMPT)
                    .and_then(HeaderValue::as_i64)
                    .unwrap_or(0);
                log.lock()
                    .map_err(|_| FunctionError::msg("poisoned"))?
                    .push((attempt, tokio::time::Instant::now()));
                Err::<(), _>(FunctionError::msg(format!(
                    "cannot process {}",
                    m.payload()
                )))
            }
        })
        .build()
        .await
        .expect("binds");
    let dlq = dead_letter_destination("work", "workers");
    broker.send("work", Message::bytes("job-1"));
    let dead = broker
        .receive(&dlq, Duration::from_secs(60))
        .await
        .expect("dead-lettered");
    assert_eq!(&dead.payload()[..], b"job-1");
    assert_eq!(
        dead.headers().get_str(EXCEPTION_MESSAGE_HEADER),
        Some("cannot process job-1")
    );
    let attempts = attempts.lock().expect("lock").clone();
    let numbers: Vec<i64> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert_eq!(
        gaps,
        vec![Duration::from_millis(1000), Duration::from_millis(2000)]
    );
    assert_eq!(broker.queue_depth("work", "workers", None), 0);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn sendto_header_routes_to_another_destination() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.bindings.route-in-0.destination",
            "incoming",
        )]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .function("route", |o: Order| async move {
            let target = if o.amount > 100 {
                "big-orders"
            } else {
                "small-orders"
            };
            Ok::<_, FunctionError>(Message::new(o).with_header(names::SENDTO_DESTINATION, target))
        })
        .build()
        .await
        .expect("binds");
    broker.capture("big-orders");
    broker.capture("small-orders");
    broker.capture("route-out-0");
    broker.send(
        "incoming",
        Message::bytes(&br#"{"id":"x","amount":500}"#[..]),
    );
    broker.send("incoming", Message::bytes(&br#"{"id":"y","amount":5}"#[..]));
    let big = broker
        .receive("big-orders", WAIT)
        .await
        .expect("big routed");
    assert!(String::from_utf8_lossy(big.payload()).contains(r#""id":"x""#));
    assert!(!big.headers().contains(names::SENDTO_DESTINATION));
    let small = broker
        .receive("small-orders", WAIT)
        .await
        .expect("small routed");
    assert!(String::from_utf8_lossy(small.payload()).contains(r#""id":"y""#));
    assert!(
        broker
            .receive("route-out-0", Duration::from_millis(50))
            .await
            .is_none(),
        "routed messages do not also go to the default output"
    );
    let cached = app.bridge().dynamic_destinations().await;
    assert_eq!(cached, vec!["big-orders", "small-orders"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn dynamic_destination_cache_evicts_least_recently_used() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.dynamic-destination-cache-size",
            "2",
        )]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("binds");
    let bridge = app.bridge();
    for d in ["a", "b", "a", "c"] {
        bridge.send(d, d.to_owned()).await.expect("sent");
    }
    assert_eq!(bridge.dynamic_destinations().await, vec!["a", "c"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn error_channels_receive_failures_and_error_handler_replaces_dead_lettering() {
    let broker = InMemoryBroker::new();
    let global = Arc::new(AtomicUsize::new(0));
    let g = Arc::clone(&global);
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = Arc::clone(&handled);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.a-in-0.destination", "da"),
            ("spring.cloud.stream.bindings.a-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.a-in-0.consumer.max-attempts",
                "1",
            ),
            ("spring.cloud.stream.bindings.b-in-0.destination", "db"),
            ("spring.cloud.stream.bindings.b-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.b-in-0.consumer.max-attempts",
                "1",
            ),
            (
                "spring.cloud.stream.bindings.b-in-0.error-handler-definition",
                "myHandler",
            ),
            ("spring.cloud.function.definition", "a;b"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("a", |_: String| async {
            Err::<(), _>(FunctionError::msg("a failed"))
        })
        .consumer("b", |_: String| async {
            Err::<(), _>(FunctionError::msg("b failed"))
        })
        .on_error(
            GLOBAL_ERROR_CHANNEL,
            error_handler(move |m: ErrorMessage| {
                let g = Arc::clone(&g);
                async move {
                    assert_eq!(m.channel, "da.g.errors");
                    g.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
        )
        .error_handler(
            "myHandler",
            error_handler(move |m: ErrorMessage| {
                let h = Arc::clone(&h);
                async move {
                    h.lock()
                        .map_err(|_| FunctionError::msg("poisoned"))?
                        .push(format!("{}: {}", m.binding, m.error));
                    Ok(())
                }
            }),
        )
        .build()
        .await
        .expect("binds");
    broker.send("da", Message::bytes("x"));
    broker.send("db", Message::bytes("y"));
    let dead_a = broker
        .receive(&dead_letter_destination("da", "g"), WAIT)
        .await
        .expect("a dead-lettered");
    assert_eq!(&dead_a.payload()[..], b"x");
    assert!(
        broker
            .receive(
                &dead_letter_destination("db", "g"),
                Duration::from_millis(200)
            )
            .await
            .is_none(),
        "an error-handler-definition replaces dead-lettering"
    );
    assert_eq!(global.load(Ordering::SeqCst), 1);
    assert_eq!(
        *handled.lock().expect("lock"),
        vec!["b-in-0: b failed".to_string()]
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn special_outcomes_skip_retry() {
    let broker = InMemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.s-in-0.destination", "special"),
            ("spring.cloud.stream.bindings.s-in-0.group", "g"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("s", move |s: String| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if s == "drop" {
                    Err(FunctionError::immediate_acknowledge("not wanted"))
                } else {
                    Err(FunctionError::reject_and_dont_requeue("poison"))
                }
            }
        })
        .build()
        .await
        .expect("binds");
    let dlq = dead_letter_destination("special", "g");
    broker.send("special", Message::bytes("drop"));
    broker.send("special", Message::bytes("poison"));
    let dead = broker
        .receive(&dlq, WAIT)
        .await
        .expect("rejected one dead-lettered");
    assert_eq!(&dead.payload()[..], b"poison");
    assert!(
        broker
            .receive(&dlq, Duration::from_millis(100))
            .await
            .is_none()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no retries for special outcomes"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn groups_each_get_every_message_and_members_compete() {
    let broker = InMemoryBroker::new();
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut apps = Vec::new();
    // Two members of group "a", one of group "b".
    for (i, group) in ["a", "a", "b"].iter().enumerate() {
        let c = Arc::clone(&counts[i]);
        apps.push(
            StreamApp::builder()
                .environment(env(&[
                    ("spring.cloud.stream.bindings.n-in-0.destination", "news"),
                    ("spring.cloud.stream.bindings.n-in-0.group", group),
                ]))
                .binder(InMemoryBinderFactory::with_broker(broker.clone()))
                .consumer("n", move |_: Bytes| {
                    let c = Arc::clone(&c);
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, FunctionError>(())
                    }
                })
                .build()
                .await
                .expect("binds"),
        );
    }
    for i in 0..100 {
        broker.send("news", Message::bytes(format!("n{i}")));
    }
    tokio::time::timeout(WAIT, async {
        while counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst) < 100
            || counts[2].load(Ordering::SeqCst) < 100
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all delivered");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst),
        100,
        "group a gets each message once"
    );
    assert_eq!(
        counts[2].load(Ordering::SeqCst),
        100,
        "group b gets every message"
    );
    for app in apps {
        app.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn required_groups_retain_messages_until_the_consumer_binds() {
    let broker = InMemoryBroker::new();
    let producer = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.out.destination", "audit"),
            (
                "spring.cloud.stream.bindings.out.producer.required-groups",
                "auditors",
            ),
            ("spring.cloud.stream.output-bindings", "out"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("binds");
    producer
        .bridge()
        .send("out", "early".to_owned())
        .await
        .expect("sent");
    assert_eq!(broker.queue_depth("audit", "auditors", None), 1);
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&got);
    let consumer = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.c-in-0.destination", "audit"),
            ("spring.cloud.stream.bindings.c-in-0.group", "auditors"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("c", move |s: String| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| FunctionError::msg("poisoned"))?
                    .push(s);
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("binds");
    tokio::time::timeout(WAIT, async {
        while got.lock().map(|g| g.is_empty()).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("retained message delivered");
    assert_eq!(*got.lock().expect("lock"), vec!["early".to_string()]);
    consumer.shutdown().await.expect("clean shutdown");
    producer.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_messages_finish() {
    let broker = InMemoryBroker::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.slow-in-0.destination", "slow"),
            ("spring.cloud.stream.bindings.slow-in-0.group", "g"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("slow", move |_: String| {
            let (s, f) = (Arc::clone(&s), Arc::clone(&f));
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("binds");
    broker.send("slow", Message::bytes("m1"));
    broker.send("slow", Message::bytes("m2"));
    started.notified().await;
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the in-flight message finished"
    );
    assert_eq!(
        broker.queue_depth("slow", "g", None),
        1,
        "the message not yet taken stays in the queue"
    );
}

#[tokio::test]
async fn partitioned_consumer_without_group_is_rejected() {
    let err = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.bindings.p-in-0.consumer.partitioned",
            "true",
        )]))
        .binder(InMemoryBinderFactory::default())
        .consumer("p", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("must fail");
    assert!(
        err.to_string()
            .contains("A consumer group is required for a partitioned subscription"),
        "{err}"
    );
}

#[tokio::test]
async fn supplier_is_polled_per_poller_settings() {
    let broker = InMemoryBroker::new();
    broker.capture("ticks");
    let n = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&n);
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.tick-out-0.destination",
                "ticks",
            ),
            (
                "spring.cloud.stream.bindings.tick-out-0.producer.poller.fixed-delay",
                "10ms",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .supplier("tick", move || {
            let c = Arc::clone(&c);
            async move { Ok::<_, FunctionError>(c.fetch_add(1, Ordering::SeqCst)) }
        })
        .build()
        .await
        .expect("binds");
    for expected in 0..3 {
        let m = broker.receive("ticks", WAIT).await.expect("tick");
        assert_eq!(String::from_utf8_lossy(m.payload()), expected.to_string());
    }
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stopped_output_stops_its_supplier_s_poller() {
    let broker = InMemoryBroker::new();
    broker.capture("ticks");
    let n = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&n);
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.tick-out-0.destination",
                "ticks",
            ),
            (
                "spring.cloud.stream.bindings.tick-out-0.producer.poller.fixed-delay",
                "10ms",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .supplier("tick", move || {
            let c = Arc::clone(&c);
            async move { Ok::<_, FunctionError>(c.fetch_add(1, Ordering::SeqCst)) }
        })
        .build()
        .await
        .expect("binds");
    broker.receive("ticks", WAIT).await.expect("tick");
    let handle = app.handle();
    handle
        .command("tick-out-0", BindingCommand::Stop)
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let polled = n.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(n.load(Ordering::SeqCst), polled, "polled while stopped");
    handle
        .command("tick-out-0", BindingCommand::Start)
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        n.load(Ordering::SeqCst) > polled,
        "polls again once started"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn malformed_json_goes_to_the_error_path_not_a_panic() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.validate-in-0.destination",
                "orders",
            ),
            ("spring.cloud.stream.bindings.validate-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.validate-in-0.consumer.max-attempts",
                "1",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .function(
            "validate",
            |o: Order| async move { Ok::<_, FunctionError>(o) },
        )
        .build()
        .await
        .expect("binds");
    broker.send("orders", Message::bytes("{not json"));
    let dead = broker
        .receive(&dead_letter_destination("orders", "g"), WAIT)
        .await
        .expect("dead-lettered");
    let reason = dead
        .headers()
        .get_str(EXCEPTION_MESSAGE_HEADER)
        .unwrap_or_default();
    assert!(reason.contains("application/json"), "{reason}");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn batch_mode_hands_the_function_a_vec_and_dead_letters_each_failed_message() {
    let broker = InMemoryBroker::new();
    let batches = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let log = Arc::clone(&batches);
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.sum-in-0.destination",
                "numbers",
            ),
            ("spring.cloud.stream.bindings.sum-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.sum-in-0.consumer.batch-mode",
                "true",
            ),
            (
                "spring.cloud.stream.bindings.sum-in-0.consumer.max-attempts",
                "2",
            ),
            (
                "spring.cloud.stream.bindings.sum-in-0.consumer.back-off-initial-interval",
                "1ms",
            ),
            (
                "spring.cloud.stream.memory.bindings.sum-in-0.consumer.batch-size",
                "3",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .batch_consumer("sum", move |items: Vec<String>| {
            let log = Arc::clone(&log);
            async move {
                log.lock()
                    .map_err(|_| FunctionError::msg("poisoned"))?
                    .push(items.clone());
                if items.iter().any(|i| i == "bad") {
                    return Err(FunctionError::msg("bad item in batch"));
                }
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("binds");
    // The consumer is idle, so these three wait and arrive as one batch.
    app.consumer_bindings("sum-in-0")[0]
        .pause()
        .await
        .expect("paused");
    for n in ["a", "bad", "c"] {
        broker.send("numbers", Message::bytes(n));
    }
    app.consumer_bindings("sum-in-0")[0]
        .resume()
        .await
        .expect("resumed");
    let dlq = dead_letter_destination("numbers", "g");
    let mut dead = Vec::new();
    for _ in 0..3 {
        let m = broker
            .receive(&dlq, WAIT)
            .await
            .expect("each message dead-lettered");
        dead.push(String::from_utf8_lossy(m.payload()).into_owned());
    }
    assert_eq!(dead, vec!["a", "bad", "c"]);
    let batches = batches.lock().expect("lock").clone();
    assert_eq!(
        batches.len(),
        2,
        "the batch was attempted max-attempts times"
    );
    assert!(
        batches.iter().all(|b| b == &vec!["a", "bad", "c"]),
        "{batches:?}"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn batch_function_without_batch_mode_is_rejected_at_bind_time() {
    let err = StreamApp::builder()
        .environment(env(&[]))
        .binder(InMemoryBinderFactory::default())
        .batch_consumer("sum", |_: Vec<String>| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("batch-mode missing");
    assert!(err.to_string().contains("batch-mode=true"), "{err}");
}

#[tokio::test]
async fn requeue_outcome_redelivers_without_retry() {
    let broker = InMemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.r-in-0.destination", "requeue"),
            ("spring.cloud.stream.bindings.r-in-0.group", "g"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("r", move |_: String| {
            let c = Arc::clone(&c);
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(FunctionError::requeue("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .await
        .expect("binds");
    broker.send("requeue", Message::bytes("m"));
    tokio::time::timeout(WAIT, async {
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("redelivered");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one requeue, one success, no retries"
    );
    assert!(
        broker
            .receive(
                &dead_letter_destination("requeue", "g"),
                Duration::from_millis(50)
            )
            .await
            .is_none()
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn supplier_on_a_cron_schedule() {
    let broker = InMemoryBroker::new();
    broker.capture("cron-ticks");
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.tick-out-0.destination",
                "cron-ticks",
            ),
            (
                "spring.cloud.stream.bindings.tick-out-0.producer.poller.cron",
                "* * * * * *",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .supplier("tick", || async {
            Ok::<_, FunctionError>("tick".to_owned())
        })
        .build()
        .await
        .expect("binds");
    let first = broker.receive("cron-ticks", Duration::from_secs(3)).await;
    assert!(first.is_some(), "a tick within a second or so");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn malformed_cron_fails_at_bind_time_naming_the_key() {
    let err = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.bindings.tick-out-0.producer.poller.cron",
            "0 9 * * *",
        )]))
        .binder(InMemoryBinderFactory::default())
        .supplier("tick", || async { Ok::<_, FunctionError>(1) })
        .build()
        .await
        .expect_err("five fields");
    assert!(err.to_string().contains("poller.cron"), "{err}");
}

#[tokio::test]
async fn retry_template_name_selects_a_registered_policy() {
    let broker = InMemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.f-in-0.destination", "rt"),
            ("spring.cloud.stream.bindings.f-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.f-in-0.consumer.retry-template-name",
                "once",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .retry_policy("once", stream_core::retry::RetryPolicy::no_retry())
        .consumer("f", move |_: String| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(FunctionError::msg("fails"))
            }
        })
        .build()
        .await
        .expect("binds");
    broker.send("rt", Message::bytes("x"));
    broker
        .receive(&dead_letter_destination("rt", "g"), WAIT)
        .await
        .expect("dead-lettered");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the registered policy makes one attempt"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stream_bridge_only_app_runs_next_to_a_service_s_definition() {
    let broker = InMemoryBroker::new();
    broker.capture("orders");
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.function.definition", "process;audit"),
            (
                "spring.cloud.stream.bindings.process-in-0.destination",
                "orders",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("a producer-only app binds no function");
    app.bridge()
        .send("orders", "o-1".to_owned())
        .await
        .expect("send to a destination");
    let m = broker.receive("orders", WAIT).await.expect("sent");
    assert_eq!(&m.payload()[..], b"o-1");
    app.shutdown().await.expect("clean shutdown");

    // With functions registered, a definition naming an unknown one is still an error.
    let err = StreamApp::builder()
        .environment(env(&[("spring.cloud.function.definition", "uppercse")]))
        .binder(InMemoryBinderFactory::default())
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await
        .expect_err("typo");
    let text = err.to_string();
    assert!(
        text.contains("uppercse") && text.contains("uppercase"),
        "{text}"
    );
}

#[tokio::test]
async fn function_router_routes_each_message_by_the_routing_expression() {
    let broker = InMemoryBroker::new();
    let upper = Arc::new(Mutex::new(Vec::<String>::new()));
    let lower = Arc::new(Mutex::new(Vec::<String>::new()));
    let (u, l) = (upper.clone(), lower.clone());
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.function.definition", "functionRouter"),
            ("spring.cloud.function.routing-expression", "headers['to']"),
            (
                "spring.cloud.stream.bindings.functionRouter-in-0.destination",
                "routed",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("upper", move |s: String| {
            let u = u.clone();
            async move {
                u.lock().expect("lock").push(s.to_uppercase());
                Ok::<_, FunctionError>(())
            }
        })
        .consumer("lower", move |s: String| {
            let l = l.clone();
            async move {
                l.lock().expect("lock").push(s.to_lowercase());
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("app binds");
    broker.send("routed", Message::bytes("Hello").with_header("to", "upper"));
    broker.send("routed", Message::bytes("World").with_header("to", "lower"));
    // The definition header wins over the expression, as in Spring.
    broker.send(
        "routed",
        Message::bytes("Both")
            .with_header("to", "upper")
            .with_header("spring.cloud.function.definition", "lower"),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while (upper.lock().expect("lock").len() + lower.lock().expect("lock").len()) < 3
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*upper.lock().expect("lock"), ["HELLO"]);
    assert_eq!(*lower.lock().expect("lock"), ["world", "both"]);
    let names: Vec<String> = app.bindings().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["functionRouter-in-0"]);
    app.shutdown().await.expect("clean shutdown");
}
