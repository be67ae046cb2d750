//! Stream functions over the in-memory binder: several inputs and outputs, windows, and when
//! each input is acknowledged, failed or sent back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use stream_core::function::stream::{Inbound, MessageStreamExt, Output};
use stream_core::memory::{
    EXCEPTION_MESSAGE_HEADER, InMemoryBinderFactory, InMemoryBroker, dead_letter_destination,
};
use stream_core::{FunctionError, Message, StreamApp};
use stream_tests::env;

const WAIT: Duration = Duration::from_secs(5);

fn text(m: &Message) -> String {
    String::from_utf8_lossy(m.payload()).into_owned()
}

async fn received(broker: &InMemoryBroker, destination: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        match broker.receive(destination, WAIT).await {
            Some(m) => out.push(text(&m)),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn a_stream_function_maps_its_input_stream_to_its_output() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.upper-in-0.destination",
                "words",
            ),
            (
                "spring.cloud.stream.bindings.upper-out-0.destination",
                "upper",
            ),
            (
                "spring.cloud.stream.bindings.upper-out-0.content-type",
                "text/plain",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_function("upper", |input: Inbound<String>| {
            input.map(|m| m.map(|s| s.to_uppercase()))
        })
        .build()
        .await
        .expect("app binds");
    broker.capture("upper");
    for w in ["a", "b", "c"] {
        broker.send(
            "words",
            Message::bytes(w).with_header("contentType", "text/plain"),
        );
    }
    assert_eq!(received(&broker, "upper", 3).await, ["A", "B", "C"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_window_is_sent_as_one_aggregate_and_a_partial_one_is_flushed_on_shutdown() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.total-in-0.destination",
                "amounts",
            ),
            ("spring.cloud.stream.bindings.total-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.total-out-0.destination",
                "totals",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_function("total", |input: Inbound<i64>| {
            input
                .windows(3, Duration::from_secs(60))
                .map(|w| Message::merge(w, |xs| xs.into_iter().sum::<i64>()))
        })
        .build()
        .await
        .expect("app binds");
    broker.capture("totals");
    for n in [1, 2, 3, 10, 20] {
        broker.send("amounts", Message::bytes(n.to_string()));
    }
    assert_eq!(received(&broker, "totals", 1).await, ["6"]);
    assert!(
        broker
            .receive("totals", Duration::from_millis(300))
            .await
            .is_none(),
        "the second window is not full and its time is not up"
    );
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(
        received(&broker, "totals", 1).await,
        ["30"],
        "shutdown ends the input; the partial window is sent"
    );
    assert_eq!(
        broker.queue_depth("amounts", "g", None),
        0,
        "all acknowledged"
    );
}

#[tokio::test]
async fn a_failed_message_goes_to_the_dead_letter_queue_and_the_stream_goes_on() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.check-in-0.destination",
                "orders",
            ),
            ("spring.cloud.stream.bindings.check-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.check-out-0.destination",
                "checked",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_function("check", |input: Inbound<i64>| {
            input.map(|m| {
                if *m.payload() < 0 {
                    Err(m.fail(FunctionError::msg("negative amount")))
                } else {
                    Ok(m)
                }
            })
        })
        .build()
        .await
        .expect("app binds");
    let dlq = dead_letter_destination("orders", "g");
    broker.capture("checked");
    broker.capture(&dlq);
    for n in ["1", "-5", "2"] {
        broker.send("orders", Message::bytes(n));
    }
    assert_eq!(received(&broker, "checked", 2).await, ["1", "2"]);
    let dead = broker.receive(&dlq, WAIT).await.expect("dead letter");
    assert_eq!(text(&dead), "-5");
    assert_eq!(
        dead.headers().get_str(EXCEPTION_MESSAGE_HEADER),
        Some("negative amount")
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_panicking_stream_is_restarted_its_inputs_redelivered_and_a_poison_dead_lettered() {
    let broker = InMemoryBroker::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let app = StreamApp::builder()
        .environment(env(&[
            (
                "spring.cloud.stream.bindings.sum-in-0.destination",
                "numbers",
            ),
            ("spring.cloud.stream.bindings.sum-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.sum-in-0.consumer.max-attempts",
                "2",
            ),
            (
                "spring.cloud.stream.bindings.sum-in-0.consumer.back-off-initial-interval",
                "10",
            ),
            ("spring.cloud.stream.bindings.sum-out-0.destination", "sums"),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_function("sum", move |input: Inbound<String>| {
            counted.fetch_add(1, Ordering::SeqCst);
            input.windows(3, Duration::from_secs(60)).map(|w| {
                Message::merge(w, |xs| {
                    xs.iter()
                        .map(|x| x.parse::<i64>().expect("a number"))
                        .sum::<i64>()
                })
            })
        })
        .build()
        .await
        .expect("app binds");
    let dlq = dead_letter_destination("numbers", "g");
    broker.capture("sums");
    broker.capture(&dlq);
    for n in ["1", "2", "boom", "3", "4", "5"] {
        broker.send("numbers", Message::bytes(n));
    }
    let dead = broker
        .receive(&dlq, WAIT)
        .await
        .expect("the poison is dead-lettered");
    assert_eq!(text(&dead), "boom");
    let why = dead
        .headers()
        .get_str(EXCEPTION_MESSAGE_HEADER)
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("a number"), "{why}");
    // Every other number is summed exactly once, whatever the windows came to.
    let mut total = 0;
    while total < 15 {
        let Some(m) = broker.receive("sums", WAIT).await else {
            break;
        };
        total += text(&m).parse::<i64>().expect("a sum");
    }
    app.shutdown().await.expect("clean shutdown");
    while let Some(m) = broker.receive("sums", Duration::from_millis(200)).await {
        total += text(&m).parse::<i64>().expect("a sum");
    }
    assert_eq!(total, 15, "nothing lost, nothing counted twice");
    assert!(
        runs.load(Ordering::SeqCst) >= 3,
        "restarted after each crash"
    );
    assert_eq!(broker.queue_depth("numbers", "g", None), 0);
}

#[tokio::test]
async fn two_inputs_are_joined_and_one_input_is_routed_to_two_outputs() {
    let broker = InMemoryBroker::new();
    let app =
        StreamApp::builder()
            .environment(env(&[
                ("spring.cloud.function.definition", "join;route"),
                (
                    "spring.cloud.stream.bindings.join-in-0.destination",
                    "names",
                ),
                ("spring.cloud.stream.bindings.join-in-1.destination", "ages"),
                (
                    "spring.cloud.stream.bindings.join-out-0.destination",
                    "people",
                ),
                (
                    "spring.cloud.stream.bindings.route-in-0.destination",
                    "people",
                ),
                (
                    "spring.cloud.stream.bindings.route-out-0.destination",
                    "adults",
                ),
                (
                    "spring.cloud.stream.bindings.route-out-1.destination",
                    "minors",
                ),
            ]))
            .binder(InMemoryBinderFactory::with_broker(broker.clone()))
            .stream_function("join", |(names, ages): (Inbound<String>, Inbound<u32>)| {
                names
                    .zip(ages)
                    .map(|(n, a)| n.join(a, |name, age| format!("{name}:{age}")))
            })
            .stream_process(
                "route",
                |mut people: Inbound<String>,
                 (adults, minors): (Output<String>, Output<String>)| async move {
                    while let Some(p) = people.next().await {
                        let age: u32 = p
                            .payload()
                            .rsplit(':')
                            .next()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(0);
                        let out = if age >= 18 { &adults } else { &minors };
                        out.send(p).await?;
                    }
                    Ok::<_, FunctionError>(())
                },
            )
            .build()
            .await
            .expect("app binds");
    broker.capture("adults");
    broker.capture("minors");
    for (name, age) in [("ann", "31"), ("bob", "12"), ("cy", "18")] {
        broker.send("names", Message::bytes(name));
        broker.send("ages", Message::bytes(age));
    }
    assert_eq!(received(&broker, "adults", 2).await, ["ann:31", "cy:18"]);
    assert_eq!(received(&broker, "minors", 1).await, ["bob:12"]);
    let names: Vec<String> = app.bindings().into_iter().map(|(n, _)| n).collect();
    for b in [
        "join-in-0",
        "join-in-1",
        "join-out-0",
        "route-out-0",
        "route-out-1",
    ] {
        assert!(names.iter().any(|n| n == b), "{b} in {names:?}");
    }
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stream_supplier_emits_until_shutdown() {
    let broker = InMemoryBroker::new();
    // Recording starts before the app: the supplier sends as soon as it is bound.
    broker.capture("ticks");
    let app = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.bindings.ticks-out-0.destination",
            "ticks",
        )]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_supplier("ticks", || {
            futures::stream::iter(0..).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Message::new(i)
            })
        })
        .build()
        .await
        .expect("app binds");
    assert_eq!(received(&broker, "ticks", 3).await, ["0", "1", "2"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stream_function_composes_with_an_imperative_one_and_bad_shapes_are_refused() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.function.definition", "upper|exclaim"),
            (
                "spring.cloud.stream.bindings.upper|exclaim-in-0.destination",
                "in",
            ),
            (
                "spring.cloud.stream.bindings.upper|exclaim-out-0.destination",
                "out",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .stream_function("upper", |input: Inbound<String>| {
            input.map(|m| m.map(|s| s.to_uppercase()))
        })
        .function("exclaim", |s: String| async move {
            Ok::<_, FunctionError>(format!("{s}!"))
        })
        .build()
        .await
        .expect("app binds");
    broker.capture("out");
    broker.send("in", Message::bytes("hi"));
    assert_eq!(received(&broker, "out", 1).await, ["HI!"]);
    app.shutdown().await.expect("clean shutdown");

    let refused = StreamApp::builder()
        .environment(env(&[("spring.cloud.function.definition", "join|exclaim")]))
        .binder(InMemoryBinderFactory::default())
        .stream_function("join", |(a, b): (Inbound<String>, Inbound<String>)| {
            futures::stream::select(a, b)
        })
        .function("exclaim", |s: String| async move {
            Ok::<_, FunctionError>(format!("{s}!"))
        })
        .build()
        .await
        .expect_err("a two-input function cannot be composed");
    assert!(refused.to_string().contains("several inputs"), "{refused}");
}

#[tokio::test]
async fn batch_mode_and_manual_acknowledgment_are_refused_for_stream_functions() {
    for (key, value, says) in [
        ("consumer.batch-mode", "true", "batch-mode"),
        ("consumer.acknowledge-mode", "MANUAL", "MANUAL"),
    ] {
        let key = format!("spring.cloud.stream.bindings.upper-in-0.{key}");
        let err = StreamApp::builder()
            .environment(env(&[(key.as_str(), value)]))
            .binder(InMemoryBinderFactory::default())
            .stream_function("upper", |input: Inbound<String>| input)
            .build()
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("upper-in-0") && text.contains(says), "{text}");
    }
}
