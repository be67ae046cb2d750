//! Stream functions on a real RabbitMQ: a two-input join, a two-output router, and a windowed
//! aggregation whose inputs survive a `kill -9` of the application mid-window (the test runs
//! the application as a child process of its own binary and kills it).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use binder_rabbit::stream_core::Message;
use binder_rabbit::stream_core::function::stream::{Inbound, MessageStreamExt, Output};
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use common::*;
use futures::StreamExt;
use lapin::BasicProperties;

fn text() -> BasicProperties {
    BasicProperties::default().with_content_type("text/plain".into())
}

fn body(m: &lapin::message::BasicGetMessage) -> String {
    String::from_utf8_lossy(&m.delivery.data).into_owned()
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn stream_join_of_two_inputs_and_router_to_two_outputs() {
    init_tracing();
    let admin = raw().await;
    let (names, ages) = (unique("st-names"), unique("st-ages"));
    let people = unique("st-people");
    let (adults, minors) = (unique("st-adults"), unique("st-minors"));
    let env = env(&format!(
        "spring.cloud.function.definition=join;route\n\
         spring.cloud.stream.bindings.join-in-0.destination={names}\n\
         spring.cloud.stream.bindings.join-in-0.group=g\n\
         spring.cloud.stream.bindings.join-in-1.destination={ages}\n\
         spring.cloud.stream.bindings.join-in-1.group=g\n\
         spring.cloud.stream.bindings.join-out-0.destination={people}\n\
         spring.cloud.stream.bindings.join-out-0.content-type=text/plain\n\
         spring.cloud.stream.bindings.route-in-0.destination={people}\n\
         spring.cloud.stream.bindings.route-in-0.group=g\n\
         spring.cloud.stream.bindings.route-out-0.destination={adults}\n\
         spring.cloud.stream.bindings.route-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.bindings.route-out-0.content-type=text/plain\n\
         spring.cloud.stream.bindings.route-out-1.destination={minors}\n\
         spring.cloud.stream.bindings.route-out-1.producer.required-groups=capture\n\
         spring.cloud.stream.bindings.route-out-1.content-type=text/plain\n"
    ));
    let app =
        StreamApp::builder()
            .environment(env)
            .binder(RabbitBinderFactory::new())
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
                        if age >= 18 {
                            adults.send(p).await?;
                        } else {
                            minors.send(p).await?;
                        }
                    }
                    Ok::<_, FunctionError>(())
                },
            )
            .build()
            .await
            .expect("app binds");
    for (name, age) in [("ann", "31"), ("bob", "12"), ("cy", "18")] {
        admin.publish(&names, "k", name.as_bytes(), text()).await;
        admin.publish(&ages, "k", age.as_bytes(), text()).await;
    }
    let adults_q = format!("{adults}.capture");
    let minors_q = format!("{minors}.capture");
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = admin
            .get(&adults_q, Duration::from_secs(10))
            .await
            .expect("an adult");
        got.push(body(&m));
    }
    assert_eq!(got, ["ann:31", "cy:18"]);
    let minor = admin
        .get(&minors_q, Duration::from_secs(10))
        .await
        .expect("a minor");
    assert_eq!(body(&minor), "bob:12");
    app.shutdown().await.expect("shutdown");
    for q in [
        format!("{names}.g"),
        format!("{ages}.g"),
        format!("{people}.g"),
    ] {
        assert_eq!(
            admin.queue_messages(&q).await,
            Some(0),
            "{q} drained and acknowledged"
        );
    }
    admin
        .cleanup(
            &[
                &format!("{names}.g"),
                &format!("{ages}.g"),
                &format!("{people}.g"),
                &adults_q,
                &minors_q,
            ],
            &[&names, &ages, &people, &adults, &minors],
        )
        .await;
}

const CHILD: &str = "STREAM_WINDOW_CHILD";

/// The application under test: per window of 4 numbers (or 60 s), their list, sent as one
/// message that acknowledges the 4 inputs.
async fn window_app(input: &str, output: &str) -> StreamApp {
    let env = env(&format!(
        "spring.cloud.stream.bindings.window-in-0.destination={input}\n\
         spring.cloud.stream.bindings.window-in-0.group=g\n\
         spring.cloud.stream.rabbit.bindings.window-in-0.consumer.prefetch=10\n\
         spring.cloud.stream.bindings.window-out-0.destination={output}\n\
         spring.cloud.stream.bindings.window-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.bindings.window-out-0.content-type=text/plain\n"
    ));
    StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .stream_function("window", |numbers: Inbound<String>| {
            numbers
                .windows(4, Duration::from_secs(60))
                .map(|w| Message::merge(w, |xs| xs.join(",")))
        })
        .build()
        .await
        .expect("app binds")
}

/// Starts this test binary again as the application (the same test, in child mode).
fn spawn_child(input: &str, output: &str) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([
            "--exact",
            "stream_window_survives_a_kill",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, format!("{input} {output}"))
        .spawn()
        .expect("child process")
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn stream_window_survives_a_kill() {
    if let Ok(names) = std::env::var(CHILD) {
        // Child mode: run the application until killed.
        init_tracing();
        let mut it = names.split(' ');
        let (input, output) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
        let _app = window_app(input, output).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let admin = raw().await;
    let (input, output) = (unique("st-win-in"), unique("st-win-out"));
    let (queue, capture) = (format!("{input}.g"), format!("{output}.capture"));
    let mut child = spawn_child(&input, &output);
    // Wait until the application consumes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while admin.consumers(&queue).await != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never consumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 1..=10 {
        admin
            .publish(&input, "k", n.to_string().as_bytes(), text())
            .await;
    }
    let mut windows = Vec::new();
    for _ in 0..2 {
        let m = admin
            .get(&capture, Duration::from_secs(20))
            .await
            .expect("a full window");
        windows.push(body(&m));
    }
    // 9 and 10 wait in the third window, unacknowledged. Kill -9 mid-window.
    child.kill().expect("kill -9");
    let _ = child.wait();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while admin.queue_messages(&queue).await != Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window's two messages are back in the queue: {:?}",
            admin.queue_messages(&queue).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut child = spawn_child(&input, &output);
    for n in 11..=12 {
        admin
            .publish(&input, "k", n.to_string().as_bytes(), text())
            .await;
    }
    let last = admin
        .get(&capture, Duration::from_secs(60))
        .await
        .expect("the window after the restart");
    windows.push(body(&last));
    child.kill().expect("kill");
    let _ = child.wait();
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    for w in &windows {
        for n in w.split(',') {
            *seen.entry(n.parse().expect("a number")).or_default() += 1;
        }
    }
    let missing: Vec<u32> = (1..=12).filter(|n| !seen.contains_key(n)).collect();
    assert!(missing.is_empty(), "lost {missing:?}; windows {windows:?}");
    let duplicated: Vec<u32> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    println!("windows {windows:?}; duplicated {duplicated:?}");
    assert_eq!(
        windows[2], "9,10,11,12",
        "the killed window is redelivered whole"
    );
    admin.cleanup(&[&queue, &capture], &[&input, &output]).await;
}
