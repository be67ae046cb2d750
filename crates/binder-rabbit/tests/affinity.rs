//! Queue affinity (`nodes` + `admin-addresses`): the consumer connects to the address of the
//! node the management API names for its queue, and falls back to the default connection when
//! the lookup fails. Two loopback proxies stand for two cluster nodes (both reach the test
//! broker) and a small HTTP responder stands for the management API, so the test sees which
//! address each connection went to and what the management API was asked.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binder_rabbit::{ConsumerScaling, RabbitBinder, RabbitBinderProperties};
use common::*;
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `GET /api/queues/%2F/<queue>` with `{"node": <node>}` for the queues it knows, 404
/// otherwise; records each request's head.
async fn management(
    listener: tokio::net::TcpListener,
    nodes: Vec<(String, String)>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        seen.lock().expect("seen").push(head);
        let found = nodes
            .iter()
            .find(|(q, _)| path == format!("/api/queues/%2F/{q}"));
        let response = match found {
            Some((q, node)) => {
                let body = format!("{{\"name\":\"{q}\",\"vhost\":\"/\",\"node\":\"{node}\"}}");
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
        };
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

async fn listen() -> (tokio::net::TcpListener, u16) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn consumers_connect_to_the_node_hosting_their_queue() {
    init_tracing();
    let admin = raw().await;
    let (node_a, port_a) = listen().await;
    let (node_b, port_b) = listen().await;
    let (mgmt, port_m) = listen().await;
    let (live_a, live_b) = (Live::default(), Live::default());
    let proxies = [
        tokio::spawn(proxy(node_a, live_a.clone())),
        tokio::spawn(proxy(node_b, live_b.clone())),
    ];
    let local = unique("affinity-local");
    let elsewhere = unique("affinity-unknown");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let responder = tokio::spawn(management(
        mgmt,
        vec![(format!("{local}.g"), "rabbit@b".to_owned())],
        seen.clone(),
    ));
    let b = binder(&format!(
        "spring.rabbitmq.addresses=127.0.0.1:{port_a},127.0.0.1:{port_b}\n\
         spring.cloud.stream.rabbit.binder.nodes=rabbit@a,rabbit@b\n\
         spring.cloud.stream.rabbit.binder.admin-addresses=http://127.0.0.1:{port_m},http://127.0.0.1:{port_m}\n"
    ));

    // The management API puts the queue on rabbit@b: the consumer connects to the second address.
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let one = bind(&b, consumer_request("in", &local, Some("g")), h).await;
    admin
        .publish(&local, "k", b"on b", BasicProperties::default())
        .await;
    let m = recv(&mut rx, Duration::from_secs(10))
        .await
        .expect("consumed through the queue's node");
    assert_eq!(m.payload().as_ref(), b"on b");
    assert_eq!(
        live_b.lock().expect("b").len(),
        1,
        "one connection to the node hosting the queue"
    );
    let a_before = live_a.lock().expect("a").len();
    assert!(a_before >= 1, "declarations use the default connection");
    {
        let seen = seen.lock().expect("seen");
        let first = seen.first().expect("the management API was asked");
        assert!(
            first.starts_with(&format!("GET /api/queues/%2F/{local}.g HTTP/1.1")),
            "{first}"
        );
        assert!(
            first.contains("Authorization: Basic Z3Vlc3Q6Z3Vlc3Q="),
            "spring.rabbitmq credentials: {first}"
        );
    }

    // An unknown queue (404 from every admin address): the default connection serves it.
    let (h2, mut rx2) = recorder(|_| Disposition::Ack);
    let two = bind(&b, consumer_request("in2", &elsewhere, Some("g")), h2).await;
    admin
        .publish(&elsewhere, "k", b"default", BasicProperties::default())
        .await;
    let m = recv(&mut rx2, Duration::from_secs(10))
        .await
        .expect("consumed on the default connection");
    assert_eq!(m.payload().as_ref(), b"default");
    assert_eq!(
        live_b.lock().expect("b").len(),
        1,
        "no new connection to the other node"
    );
    assert_eq!(
        seen.lock().expect("seen").len(),
        3,
        "one lookup for the first queue, both admin addresses for the unknown one"
    );

    one.stop().await.expect("stop");
    two.stop().await.expect("stop");
    b.close().await.expect("close");
    responder.abort();
    for p in proxies {
        p.abort();
    }
    admin
        .cleanup(
            &[&format!("{local}.g"), &format!("{elsewhere}.g")],
            &[&local, &elsewhere],
        )
        .await;
}

#[test]
fn mismatched_affinity_lists_are_a_config_error() {
    let env = env("spring.rabbitmq.addresses=127.0.0.1:5672\n\
         spring.cloud.stream.rabbit.binder.nodes=rabbit@a,rabbit@b\n\
         spring.cloud.stream.rabbit.binder.admin-addresses=http://a:15672\n");
    let props: RabbitBinderProperties = env.extended_binder("rabbit").expect("binder properties");
    let err = RabbitBinder::new(&env, props, ConsumerScaling::default(), HashMap::new())
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("spring.cloud.stream.rabbit.binder.nodes"),
        "{text}"
    );
}
