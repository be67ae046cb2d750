//! The admin endpoint over real HTTP (a hyper client on a TCP socket), on the in-memory binder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
use stream_core::stream_config::Environment;
use stream_core::{FunctionError, Message, StreamApp, StreamError};

/// One request: status, content type, body.
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    let r = stream_core::conformance::http::request(address, method, path, body)
        .await
        .expect("HTTP request");
    (r.status, r.content_type, r.body)
}

async fn get_json(address: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(address, "GET", path, None).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

struct App {
    app: StreamApp,
    broker: InMemoryBroker,
    address: SocketAddr,
    seen: Arc<AtomicUsize>,
}

async fn app(args: &[&str]) -> App {
    let broker = InMemoryBroker::new();
    let mut all = vec![
        "--management.server.port=0".to_owned(),
        "--spring.cloud.function.definition=uppercase".to_owned(),
        "--spring.cloud.stream.bindings.uppercase-in-0.destination=words".to_owned(),
        "--spring.cloud.stream.bindings.uppercase-in-0.group=g".to_owned(),
        "--spring.cloud.stream.bindings.uppercase-out-0.destination=shouts".to_owned(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let env = Environment::builder().args(all).build().expect("env");
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let app = StreamApp::builder()
        .environment(env)
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .function("uppercase", move |text: String| {
            let s = Arc::clone(&s);
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                if text == "bad" {
                    return Err(FunctionError::msg("bad word").with_kind("validation"));
                }
                Ok::<_, FunctionError>(text.to_uppercase())
            }
        })
        .build()
        .await
        .expect("app");
    let address = app.admin_address().expect("admin endpoint");
    broker.capture("shouts");
    App {
        app,
        broker,
        address,
        seen,
    }
}

const ALL: &str = "--management.endpoints.web.exposure.include=*";

#[tokio::test]
async fn by_default_only_health_is_served_on_loopback() {
    let a = app(&[]).await;
    assert!(a.address.ip().is_loopback(), "{}", a.address);
    let (status, health) = get_json(a.address, "/actuator/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "UP", "{health}");
    assert_eq!(
        health["components"]["binders"]["components"]["memory"]["status"], "UP",
        "{health}"
    );
    let (status, err) = get_json(a.address, "/actuator/bindings").await;
    assert_eq!(status, 404, "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("exposure.include")),
        "{err}"
    );
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bindings_are_listed_in_spring_s_shape() {
    let a = app(&[ALL]).await;
    let (status, list) = get_json(a.address, "/actuator/bindings").await;
    assert_eq!(status, 200);
    let list = list.as_array().expect("a list").clone();
    let input = list
        .iter()
        .find(|b| b["bindingName"] == "uppercase-in-0")
        .expect("input binding");
    assert_eq!(input["name"], "words");
    assert_eq!(input["group"], "g");
    assert_eq!(input["state"], "running");
    assert_eq!(input["input"], true);
    assert_eq!(input["pausable"], true);
    assert_eq!(input["paused"], false);
    assert_eq!(input["binderType"], "memory");
    assert_eq!(input["extendedInfo"]["bindingDestination"], "words");
    let output = list
        .iter()
        .find(|b| b["bindingName"] == "uppercase-out-0")
        .expect("output binding");
    assert_eq!(output["input"], false);
    assert!(output.get("group").is_none(), "no group key: {output}");
    let (status, one) = get_json(a.address, "/actuator/bindings/uppercase-in-0").await;
    assert_eq!(status, 200);
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    let (status, content_type, _) = http(a.address, "GET", "/actuator/bindings", None).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/vnd.spring-boot.actuator.v3+json");
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn posting_a_state_stops_and_starts_consumption() {
    let a = app(&[ALL]).await;
    let (status, _, body) = http(
        a.address,
        "POST",
        "/actuator/bindings/uppercase-in-0",
        Some(r#"{"state":"STOPPED"}"#),
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (_, one) = get_json(a.address, "/actuator/bindings/uppercase-in-0").await;
    assert_eq!(one[0]["state"], "stopped", "{one}");
    a.broker.send("words", Message::bytes("quiet"));
    assert!(
        a.broker
            .receive("shouts", Duration::from_millis(300))
            .await
            .is_none(),
        "a stopped binding consumed"
    );
    let (status, _, _) = http(
        a.address,
        "POST",
        "/actuator/bindings/uppercase-in-0",
        Some(r#"{"state":"STARTED"}"#),
    )
    .await;
    assert_eq!(status, 204);
    let out = a
        .broker
        .receive("shouts", Duration::from_secs(5))
        .await
        .expect("consumed after STARTED");
    assert_eq!(&out.payload()[..], b"QUIET");
    let (status, _, _) = http(
        a.address,
        "POST",
        "/actuator/bindings/uppercase-in-0",
        Some(r#"{"state":"PAUSED"}"#),
    )
    .await;
    assert_eq!(status, 204);
    let (_, one) = get_json(a.address, "/actuator/bindings/uppercase-in-0").await;
    assert_eq!(
        (&one[0]["state"], &one[0]["paused"]),
        (&"paused".into(), &true.into())
    );
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_requests_say_what_is_accepted() {
    let a = app(&[ALL]).await;
    for body in [r#"{"state":"FOO"}"#, r#"{"x":1}"#, "not json"] {
        let (status, _, text) = http(
            a.address,
            "POST",
            "/actuator/bindings/uppercase-in-0",
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(
            text.contains("STARTED") && text.contains("RESUMED"),
            "{text}"
        );
    }
    let (status, err) = get_json(a.address, "/actuator/bindings/nope").await;
    assert_eq!(status, 404);
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope") && m.contains("uppercase-in-0")),
        "{err}"
    );
    let (status, _, _) = http(
        a.address,
        "POST",
        "/actuator/bindings/nope",
        Some(r#"{"state":"STOPPED"}"#),
    )
    .await;
    assert_eq!(status, 404);
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn health_is_down_with_503_while_the_broker_is_cut() {
    let a = app(&[]).await;
    a.broker.cut();
    let (status, health) = get_json(a.address, "/actuator/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "DOWN");
    assert_eq!(
        health["components"]["binders"]["components"]["memory"]["status"],
        "DOWN"
    );
    let (status, one) = get_json(a.address, "/actuator/health/binders/memory").await;
    assert_eq!((status, &one["status"]), (503, &"DOWN".into()), "{one}");
    a.broker.restore();
    let (status, health) = get_json(a.address, "/actuator/health").await;
    assert_eq!((status, &health["status"]), (200, &"UP".into()), "{health}");
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn show_details_never_gives_the_status_alone() {
    let a = app(&["--management.endpoint.health.show-details=never"]).await;
    let (status, health) = get_json(a.address, "/actuator/health").await;
    assert_eq!(status, 200);
    assert_eq!(health, serde_json::json!({"status": "UP"}));
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn prometheus_shows_the_messaging_metrics() {
    let a = app(&[
        ALL,
        "--spring.cloud.stream.bindings.uppercase-in-0.consumer.max-attempts=2",
        "--spring.cloud.stream.bindings.uppercase-in-0.consumer.back-off-initial-interval=1ms",
    ])
    .await;
    a.broker.send("words", Message::bytes("hello"));
    a.broker
        .receive("shouts", Duration::from_secs(5))
        .await
        .expect("processed");
    a.broker.send("words", Message::bytes("bad"));
    for _ in 0..100 {
        if a.seen.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, content_type, text) = http(a.address, "GET", "/actuator/prometheus", None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    if std::env::var_os("SHOW_METRICS").is_some() {
        eprintln!("{text}");
    }
    for expected in [
        r#"messaging_client_consumed_messages_total{messaging_system="memory",messaging_destination_name="words",messaging_consumer_group_name="g",messaging_operation_name="process",messaging_operation_type="process"} 2"#,
        r#"messaging_client_sent_messages_total{messaging_system="memory",messaging_destination_name="shouts",messaging_operation_name="send",messaging_operation_type="send"} 1"#,
        r#"stream_consumer_retries_total{messaging_system="memory",messaging_destination_name="words",messaging_consumer_group_name="g",stream_binding_name="uppercase-in-0"} 1"#,
        "# TYPE messaging_process_duration_seconds histogram",
        r#"error_type="validation""#,
        "stream_consumer_in_flight{",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn base_path_and_links() {
    let a = app(&[ALL, "--management.endpoints.web.base-path=/manage"]).await;
    let (status, links) = get_json(a.address, "/manage").await;
    assert_eq!(status, 200);
    let href = links["_links"]["bindings"]["href"].as_str().expect("href");
    assert!(href.ends_with("/manage/bindings"), "{href}");
    let (status, _) = get_json(a.address, "/manage/health").await;
    assert_eq!(status, 200);
    let (status, _) = get_json(a.address, "/actuator/health").await;
    assert_eq!(status, 404);
    a.app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_taken_port_fails_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = taken.local_addr().expect("addr").port();
    let env = Environment::builder()
        .args([format!("--management.server.port={port}")])
        .build()
        .expect("env");
    let err = StreamApp::builder()
        .environment(env)
        .binder(InMemoryBinderFactory::default())
        .consumer("log", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("port in use");
    assert!(matches!(err, StreamError::Admin { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("management.server.port") && text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn the_server_stops_with_the_application() {
    let a = app(&[]).await;
    let address = a.address;
    a.app.shutdown().await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening"
    );
}
