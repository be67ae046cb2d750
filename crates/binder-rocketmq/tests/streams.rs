#![recursion_limit = "256"]
//! Stream functions on a real RocketMQ: a two-input join, a two-output router, and a windowed
//! aggregation whose inputs survive a `kill -9` of the application mid-window (the test runs
//! the application as a child process of its own binary and kills it).
//!
//! Run with `cargo xtask itest rocketmq`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
use std::time::Duration;

use binder_rocketmq::stream_config::ProducerProperties;
use binder_rocketmq::stream_core::function::stream::{Inbound, MessageStreamExt, Output};
use binder_rocketmq::{FunctionError, Message, RocketMqBinderFactory, StreamApp};
use common::*;
use futures::StreamExt;

/// The age of `name=age`.
fn age_of(pair: &str) -> &str {
    pair.split('=').nth(1).unwrap_or_default()
}

fn text(body: &str) -> Message<bytes::Bytes> {
    Message::bytes(body.to_owned()).with_header("contentType", "text/plain")
}

fn pairs(list: &[(String, String)]) -> Vec<(&str, &str)> {
    list.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn bindings(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (format!("spring.cloud.stream.bindings.{k}"), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stream_join_of_two_inputs_and_router_to_two_outputs() {
    let (names, ages, people) = (unique("st-names"), unique("st-ages"), unique("st-people"));
    let (adults, minors) = (unique("st-adults"), unique("st-minors"));
    // A RocketMQ consumer group subscribes to one topic here: one group per input binding.
    let g = unique("st-g");
    let mut props = bindings(&[
        ("join-in-0.destination", &names),
        ("join-in-0.group", &format!("{g}-0")),
        ("join-in-1.destination", &ages),
        ("join-in-1.group", &format!("{g}-1")),
        // Each consume thread waits for its message's settlement, and a join holds a message
        // until its partner arrives: enough threads for what it may hold.
        ("join-in-0.consumer.concurrency", "4"),
        ("join-in-1.consumer.concurrency", "4"),
        ("join-out-0.destination", &people),
        ("join-out-0.content-type", "text/plain"),
        ("route-in-0.destination", &people),
        ("route-in-0.group", &format!("{g}-r")),
        ("route-out-0.destination", &adults),
        ("route-out-0.content-type", "text/plain"),
        ("route-out-1.destination", &minors),
        ("route-out-1.content-type", "text/plain"),
    ]);
    props.push((
        "spring.cloud.function.definition".into(),
        "join;route".into(),
    ));
    let app =
        StreamApp::builder()
            .environment(env(&pairs(&props)))
            .binder(RocketMqBinderFactory::new())
            // A keyed join: RocketMQ spreads a topic over several queues, so arrival order across
            // two topics says nothing; each side waits for its partner by key.
            .stream_function(
                "join",
                |(names, ages): (Inbound<String>, Inbound<String>)| {
                    let mut names_waiting: HashMap<String, Message<String>> = HashMap::new();
                    let mut ages_waiting: HashMap<String, Message<String>> = HashMap::new();
                    futures::stream::select(names.map(|m| (true, m)), ages.map(|m| (false, m)))
                        .filter_map(move |(is_name, m)| {
                            let joined = if is_name {
                                let key = m.payload().clone();
                                match ages_waiting.remove(&key) {
                                    Some(age) => {
                                        Some(m.join(age, |n, a| format!("{n}:{}", age_of(&a))))
                                    }
                                    None => {
                                        names_waiting.insert(key, m);
                                        None
                                    }
                                }
                            } else {
                                let key =
                                    m.payload().split('=').next().unwrap_or_default().to_owned();
                                match names_waiting.remove(&key) {
                                    Some(name) => {
                                        Some(name.join(m, |n, a| format!("{n}:{}", age_of(&a))))
                                    }
                                    None => {
                                        ages_waiting.insert(key, m);
                                        None
                                    }
                                }
                            };
                            futures::future::ready(joined)
                        })
                },
            )
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
    let (reader, mut adults_rx) = consumer("adults", &adults, Some(&unique("r")), ack_all()).await;
    let (reader2, mut minors_rx) = consumer("minors", &minors, Some(&unique("r")), ack_all()).await;
    let b = binder(&[]).await;
    let pn = producer(&b, "names", &names, ProducerProperties::default()).await;
    let pa = producer(&b, "ages", &ages, ProducerProperties::default()).await;
    for (name, age) in [("ann", "31"), ("bob", "12"), ("cy", "18")] {
        send(&pn, text(name)).await;
        send(&pa, text(&format!("{name}={age}"))).await;
    }
    let mut got = vec![
        body(&next(&mut adults_rx, 120).await),
        body(&next(&mut adults_rx, 60).await),
    ];
    got.sort();
    assert_eq!(got, ["ann:31", "cy:18"]);
    assert_eq!(body(&next(&mut minors_rx, 60).await), "bob:12");
    app.shutdown().await.expect("shutdown");
    reader.shutdown().await.expect("reader");
    reader2.shutdown().await.expect("reader");
    b.close().await;
}

const CHILD: &str = "STREAM_WINDOW_CHILD";

/// Per window of 4 numbers (or 30 s), their list, sent as one message that acknowledges them.
async fn window_app(input: &str, group: &str, output: &str) -> StreamApp {
    let props = bindings(&[
        ("window-in-0.destination", input),
        ("window-in-0.group", group),
        // Each consume thread waits for its message's settlement: the window needs 4 at once.
        ("window-in-0.consumer.concurrency", "8"),
        ("window-out-0.destination", output),
        ("window-out-0.content-type", "text/plain"),
    ]);
    StreamApp::builder()
        .environment(env(&pairs(&props)))
        .binder(RocketMqBinderFactory::new())
        .stream_function("window", |numbers: Inbound<String>| {
            numbers
                .windows(4, Duration::from_secs(30))
                .map(|w| Message::merge(w, |xs| xs.join(",")))
        })
        .build()
        .await
        .expect("app binds")
}

fn spawn_child(input: &str, group: &str, output: &str) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([
            "--exact",
            "stream_window_survives_a_kill",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, format!("{input} {group} {output}"))
        .spawn()
        .expect("child process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RocketMQ; run with cargo xtask itest rocketmq"]
async fn stream_window_survives_a_kill() {
    if let Ok(names) = std::env::var(CHILD) {
        let v: Vec<&str> = names.split(' ').collect();
        let (input, group, output) = (v[0], v[1], v[2]);
        let _app = window_app(input, group, output).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let (input, output, group) = (
        unique("st-win-in"),
        unique("st-win-out"),
        unique("st-win-g"),
    );
    let b = binder(&[]).await;
    let p = producer(&b, "numbers", &input, ProducerProperties::default()).await;
    let (reader, mut rx) = consumer("reader", &output, Some(&unique("r")), ack_all()).await;
    let mut child = spawn_child(&input, &group, &output);
    for n in 1..=10 {
        send(&p, text(&n.to_string())).await;
    }
    let mut windows = vec![
        body(&next(&mut rx, 120).await),
        body(&next(&mut rx, 60).await),
    ];
    // Two numbers wait in the third window, unacknowledged. Kill -9 mid-window.
    child.kill().expect("kill -9");
    let _ = child.wait();
    let mut child = spawn_child(&input, &group, &output);
    for n in 11..=12 {
        send(&p, text(&n.to_string())).await;
    }
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let count = |windows: &[String], seen: &mut BTreeMap<u32, u32>| {
        seen.clear();
        for w in windows {
            for n in w.split(',') {
                *seen.entry(n.parse().expect("a number")).or_default() += 1;
            }
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    loop {
        count(&windows, &mut seen);
        if (1..=12).all(|n| seen.contains_key(&n)) || tokio::time::Instant::now() >= deadline {
            break;
        }
        windows.push(body(&next(&mut rx, 150).await));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let missing: Vec<u32> = (1..=12).filter(|n| !seen.contains_key(n)).collect();
    let duplicated: Vec<u32> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    println!("windows {windows:?}; duplicated {duplicated:?}");
    assert!(missing.is_empty(), "lost {missing:?}; windows {windows:?}");
    reader.shutdown().await.expect("reader");
    b.close().await;
}
