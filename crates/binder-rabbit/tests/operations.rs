//! Production operations on a real RabbitMQ: panicking functions are failed attempts (retried,
//! dead-lettered) and never kill a consumer, a consumer whose queue vanishes comes back, and the
//! admin endpoint (over real HTTP) steers bindings and reports health that follows the broker
//! connection (cut through a TCP proxy).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use binder_rabbit::stream_core::binder::BindingState;
use binder_rabbit::stream_core::conformance::{BrokerControl, TcpProxy, http};
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::BasicProperties;

fn text() -> BasicProperties {
    BasicProperties::default().with_content_type("text/plain".into())
}

/// Waits until `check` holds, up to `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Properties of a `parse` function (String -> number) on `input` (group `g`, concurrency 2,
/// two attempts, a DLQ) whose output has a `capture` queue.
fn parse_env(input: &str, output: &str, extra: &str) -> binder_rabbit::stream_config::Environment {
    env(&format!(
        "spring.cloud.function.definition=parse\n\
         spring.cloud.stream.bindings.parse-in-0.destination={input}\n\
         spring.cloud.stream.bindings.parse-in-0.group=g\n\
         spring.cloud.stream.bindings.parse-in-0.consumer.concurrency=2\n\
         spring.cloud.stream.bindings.parse-in-0.consumer.max-attempts=2\n\
         spring.cloud.stream.bindings.parse-in-0.consumer.back-off-initial-interval=10ms\n\
         spring.cloud.stream.bindings.parse-out-0.destination={output}\n\
         spring.cloud.stream.bindings.parse-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.rabbit.bindings.parse-in-0.consumer.auto-bind-dlq=true\n\
         {extra}"
    ))
}

async fn parse_app(env: binder_rabbit::stream_config::Environment) -> StreamApp {
    StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("parse", |s: String| async move {
            // An `expect` on bad data: the panic a service would hit in production.
            let n: i64 = s.trim().parse().expect("a number");
            Ok::<_, FunctionError>((n * 2).to_string())
        })
        .build()
        .await
        .expect("app")
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn a_panicking_function_is_retried_then_dead_lettered_and_the_consumer_lives() {
    init_tracing();
    let admin = raw().await;
    let input = unique("ops-panic-in");
    let output = unique("ops-panic-out");
    let app = parse_app(parse_env(&input, &output, "")).await;
    let queue = format!("{input}.g");
    let dlq = format!("{queue}.dlq");
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.consumers(&queue).await == Some(2)
        })
        .await,
        "two consumers before"
    );
    admin.publish(&input, "k", b"poison", text()).await;
    admin.publish(&input, "k", b"21", text()).await;
    let dead = admin
        .get(&dlq, Duration::from_secs(10))
        .await
        .expect("the poison message in the DLQ");
    assert_eq!(&dead.delivery.data[..], b"poison");
    let message = header_str(&dead.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(
        message.contains("a number") && message.contains("InvalidDigit"),
        "x-exception-message: {message}"
    );
    let trace = header_str(&dead.delivery.properties, "x-exception-stacktrace").unwrap_or_default();
    assert!(
        trace.starts_with("panic"),
        "x-exception-stacktrace: {trace}"
    );
    let good = admin
        .get(&format!("{output}.capture"), Duration::from_secs(10))
        .await
        .expect("the next good message is processed");
    assert_eq!(&good.delivery.data[..], b"42");
    assert_eq!(admin.consumers(&queue).await, Some(2), "no consumer died");
    assert!(
        app.bindings()
            .iter()
            .any(|(n, s)| n == "parse-in-0" && *s == BindingState::Running)
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[&queue, &dlq, &format!("{output}.capture")],
            &[&input, &output],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn a_panic_in_batch_mode_or_a_poll_is_a_failed_attempt_too() {
    init_tracing();
    let admin = raw().await;
    let batch_in = unique("ops-panic-batch");
    let polled = unique("ops-panic-poll");
    let env = env(&format!(
        "spring.cloud.function.definition=total\n\
         spring.cloud.stream.bindings.total-in-0.destination={batch_in}\n\
         spring.cloud.stream.bindings.total-in-0.group=g\n\
         spring.cloud.stream.bindings.total-in-0.consumer.batch-mode=true\n\
         spring.cloud.stream.bindings.total-in-0.consumer.max-attempts=1\n\
         spring.cloud.stream.rabbit.bindings.total-in-0.consumer.enable-batching=true\n\
         spring.cloud.stream.rabbit.bindings.total-in-0.consumer.batch-size=2\n\
         spring.cloud.stream.rabbit.bindings.total-in-0.consumer.receive-timeout=200ms\n\
         spring.cloud.stream.rabbit.bindings.total-in-0.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.pollable-source=src\n\
         spring.cloud.stream.bindings.src-in-0.destination={polled}\n\
         spring.cloud.stream.bindings.src-in-0.group=g\n\
         spring.cloud.stream.bindings.src-in-0.consumer.max-attempts=1\n\
         spring.cloud.stream.rabbit.bindings.src-in-0.consumer.auto-bind-dlq=true\n"
    ));
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .batch_consumer("total", |items: Vec<String>| async move {
            let _sum: i64 = items
                .iter()
                .map(|s| s.parse::<i64>().expect("numbers only"))
                .sum();
            Ok::<_, FunctionError>(())
        })
        .build()
        .await
        .expect("app");
    admin.publish(&batch_in, "k", b"x", text()).await;
    let dead = admin
        .get(&format!("{batch_in}.g.dlq"), Duration::from_secs(10))
        .await
        .expect("the batch's poison message dead-lettered");
    let message = header_str(&dead.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(message.contains("numbers only"), "{message}");

    admin.publish(&polled, "k", b"y", text()).await;
    let source = app.pollable("src").expect("pollable");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = source
            .poll(|s: String| async move {
                let _n: i64 = s.parse().expect("a polled number");
                Ok(())
            })
            .await
            .expect("a panic is not a poll error");
        if got || tokio::time::Instant::now() >= deadline {
            assert!(got, "nothing to poll");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = admin
        .get(&format!("{polled}.g.dlq"), Duration::from_secs(10))
        .await
        .expect("the polled poison message dead-lettered");
    let message = header_str(&dead.delivery.properties, "x-exception-message").unwrap_or_default();
    assert!(message.contains("a polled number"), "{message}");
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[
                &format!("{batch_in}.g"),
                &format!("{batch_in}.g.dlq"),
                &format!("{polled}.g"),
                &format!("{polled}.g.dlq"),
            ],
            &[&batch_in, &polled],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn consumers_whose_queue_is_deleted_come_back() {
    init_tracing();
    let admin = raw().await;
    let input = unique("ops-vanish-in");
    let output = unique("ops-vanish-out");
    let app = parse_app(parse_env(&input, &output, "")).await;
    let queue = format!("{input}.g");
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.consumers(&queue).await == Some(2)
        })
        .await
    );
    admin.delete_queue(&queue).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            admin.consumers(&queue).await == Some(2)
        })
        .await,
        "the queue is declared again and both consumers are back: {:?}",
        admin.consumers(&queue).await
    );
    admin.publish(&input, "k", b"5", text()).await;
    let out = admin
        .get(&format!("{output}.capture"), Duration::from_secs(10))
        .await
        .expect("consumed after coming back");
    assert_eq!(&out.delivery.data[..], b"10");
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[
                &queue,
                &format!("{queue}.dlq"),
                &format!("{output}.capture"),
            ],
            &[&input, &output],
        )
        .await;
}

/// `management.*` keys that start the admin endpoint on a free port with every endpoint.
const ADMIN: &str = "management.server.port=0\nmanagement.endpoints.web.exposure.include=*\n";

fn admin_of(app: &StreamApp) -> SocketAddr {
    app.admin_address().expect("admin endpoint")
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn the_admin_endpoint_stops_and_starts_consumers_on_the_broker() {
    init_tracing();
    let admin = raw().await;
    let input = unique("ops-http-in");
    let output = unique("ops-http-out");
    let app = parse_app(parse_env(&input, &output, ADMIN)).await;
    let at = admin_of(&app);
    let queue = format!("{input}.g");
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.consumers(&queue).await == Some(2)
        })
        .await
    );
    let r = http::post(
        at,
        "/actuator/bindings/parse-in-0",
        r#"{"state":"STOPPED"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        admin.consumers(&queue).await,
        Some(0),
        "stopped on the broker"
    );
    let r = http::get(at, "/actuator/bindings/parse-in-0")
        .await
        .expect("GET");
    assert_eq!(r.json()[0]["state"], "stopped", "{}", r.body);
    admin.publish(&input, "k", b"4", text()).await;
    let r = http::post(
        at,
        "/actuator/bindings/parse-in-0",
        r#"{"state":"STARTED"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(r.status, 204);
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.consumers(&queue).await == Some(2)
        })
        .await,
        "started again on the broker"
    );
    let out = admin
        .get(&format!("{output}.capture"), Duration::from_secs(10))
        .await
        .expect("the message sent while stopped is consumed");
    assert_eq!(&out.delivery.data[..], b"8");
    let r = http::get(at, "/actuator/bindings").await.expect("GET");
    let list = r.json();
    let input_binding = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["bindingName"] == "parse-in-0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(input_binding["binderType"], "rabbit", "{}", r.body);
    assert_eq!(input_binding["name"], input.as_str());
    let r = http::get(at, "/actuator/prometheus").await.expect("GET");
    assert!(
        r.body
            .contains("messaging_client_consumed_messages_total{messaging_system=\"rabbitmq\""),
        "{}",
        r.body
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[
                &queue,
                &format!("{queue}.dlq"),
                &format!("{output}.capture"),
            ],
            &[&input, &output],
        )
        .await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn health_goes_down_when_the_connection_is_cut_and_up_again() {
    init_tracing();
    let admin = raw().await;
    let upstream: SocketAddr = format!("{}:{}", host(), port())
        .parse()
        .expect("broker address");
    let proxy = Arc::new(
        TcpProxy::start(upstream, |a| {
            vec![
                ("spring.rabbitmq.host".into(), a.ip().to_string()),
                ("spring.rabbitmq.port".into(), a.port().to_string()),
            ]
        })
        .await
        .expect("proxy"),
    );
    let input = unique("ops-health-in");
    let output = unique("ops-health-out");
    let through_proxy: String = proxy
        .properties()
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let app = parse_app(parse_env(
        &input,
        &output,
        &format!(
            "{ADMIN}{through_proxy}spring.cloud.stream.rabbit.bindings.parse-in-0.consumer.recovery-interval=500ms\n"
        ),
    ))
    .await;
    let at = admin_of(&app);
    let r = http::get(at, "/actuator/health").await.expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    let rabbit = &r.json()["components"]["binders"]["components"]["rabbit"];
    assert_eq!(rabbit["status"], "UP", "{}", r.body);
    assert_eq!(
        rabbit["details"]["address"],
        proxy.address().to_string().as_str(),
        "{}",
        r.body
    );

    proxy.cut().await;
    let last = Arc::new(std::sync::Mutex::new(String::new()));
    let down = eventually(Duration::from_secs(20), || {
        let last = Arc::clone(&last);
        async move {
            let r = http::get(at, "/actuator/health").await.expect("GET");
            *last.lock().expect("lock") = r.body.clone();
            r.status == 503 && r.json()["status"] == "DOWN"
        }
    })
    .await;
    let last = last.lock().expect("lock").clone();
    assert!(down, "health while cut: {last}");
    let json: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
    let state = &json["components"]["bindings"]["components"]["parse-in-0"]["details"]["state"];
    assert_ne!(
        state, "running",
        "a cut-off consumer is not running: {last}"
    );

    proxy.restore().await;
    let up = eventually(Duration::from_secs(30), || async {
        let r = http::get(at, "/actuator/health").await.expect("GET");
        r.status == 200 && r.json()["status"] == "UP"
    })
    .await;
    assert!(up, "health after restore");
    assert!(
        eventually(Duration::from_secs(20), || async {
            admin.consumers(&format!("{input}.g")).await == Some(2)
        })
        .await,
        "consumers back after restore"
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[
                &format!("{input}.g"),
                &format!("{input}.g.dlq"),
                &format!("{output}.capture"),
            ],
            &[&input, &output],
        )
        .await;
}
