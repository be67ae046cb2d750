//! A connection that dies silently: the broker drops it, the client hears nothing (no FIN, and
//! heartbeats would take two intervals, 2 minutes by default). Simulated by a proxy that closes
//! its upstream side and keeps the client's socket open without a byte more. The consumer must
//! notice (not stay "consuming" with 0 consumers on the broker), reconnect and resubscribe, the
//! producer must not wait for a confirm forever, and shutdown must not hang.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binder_rabbit::stream_core::binder::BindingState;
use binder_rabbit::{FunctionError, Message, RabbitBinderFactory, StreamApp};
use bytes::Bytes;
use common::*;
use lapin::BasicProperties;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards to the broker; `kill` turns every current connection into a black hole.
struct BlackHole {
    port: u16,
    kill: watch::Sender<u64>,
    zombies: Arc<Mutex<Vec<TcpStream>>>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listen_port = listener.local_addr().expect("addr").port();
        let (kill, rx) = watch::channel(0u64);
        let zombies: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let z = Arc::clone(&zombies);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                rx.mark_unchanged();
                let z = Arc::clone(&z);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect((host().as_str(), port())).await else {
                        return;
                    };
                    let mut client = client;
                    let mut server = server;
                    let killed = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = rx.changed() => true,
                    };
                    if killed {
                        // The broker sees the connection close; the client sees nothing.
                        let _ = server.shutdown().await;
                        drop(server);
                        z.lock().expect("lock").push(client);
                    }
                });
            }
        });
        Self {
            port: listen_port,
            kill,
            zombies,
        }
    }

    fn kill(&self) {
        self.kill.send_modify(|g| *g += 1);
    }
}

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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn a_silently_dead_connection_is_noticed_resubscribed_and_shutdown_does_not_hang() {
    init_tracing();
    let admin = raw().await;
    let proxy = BlackHole::start().await;
    let input = unique("silent-in");
    let output = format!("{input}-out");
    let props = format!(
        "spring.rabbitmq.host=127.0.0.1\nspring.rabbitmq.port={port}\n\
         spring.cloud.function.definition=echo\n\
         spring.cloud.stream.bindings.echo-in-0.destination={input}\n\
         spring.cloud.stream.bindings.echo-in-0.group=g\n\
         spring.cloud.stream.bindings.echo-out-0.destination={output}\n\
         spring.cloud.stream.bindings.echo-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.rabbit.bindings.echo-in-0.consumer.recovery-interval=500ms\n\
         spring.rabbitmq.publisher-confirm-type=correlated\n\
         spring.lifecycle.timeout-per-shutdown-phase=30s\n",
        port = proxy.port
    );
    let seen: Arc<Mutex<Vec<BindingState>>> = Arc::default();
    let app = StreamApp::builder()
        .environment(env_at("127.0.0.1", proxy.port, &props))
        .binder(RabbitBinderFactory::new())
        .function("echo", |m: Message<Bytes>| async move {
            Ok::<_, FunctionError>(m)
        })
        .build()
        .await
        .expect("app");
    let queue = format!("{input}.g");
    let capture = format!("{output}.capture");
    assert!(
        eventually(Duration::from_secs(15), || async {
            admin.consumers(&queue).await == Some(1)
        })
        .await,
        "subscribed"
    );
    // Both connections (consumer and publisher) die silently, right after subscribing.
    proxy.kill();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.consumers(&queue).await == Some(0)
        })
        .await,
        "the broker dropped the consumer"
    );
    let killed = Instant::now();
    // Noticed: the binding is not running for a while, then subscribed again.
    let back = eventually(Duration::from_secs(40), || {
        let seen = Arc::clone(&seen);
        let states: Vec<BindingState> = app
            .bindings()
            .into_iter()
            .filter(|(n, _)| n == "echo-in-0")
            .map(|(_, s)| s)
            .collect();
        let admin = &admin;
        let queue = &queue;
        async move {
            seen.lock().expect("lock").extend(states);
            admin.consumers(queue).await == Some(1)
        }
    })
    .await;
    assert!(back, "resubscribed after {:?}", killed.elapsed());
    let noticed_in = killed.elapsed();
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|s| *s != BindingState::Running),
        "the binding showed it was cut off: {:?}",
        seen.lock().expect("lock")
    );
    // And it works: a message in, its output out (through a fresh publisher connection).
    admin
        .publish(&input, "k", b"after", BasicProperties::default())
        .await;
    let out = admin
        .get(&capture, Duration::from_secs(40))
        .await
        .expect("processed after the loss");
    assert_eq!(out.delivery.data, b"after");
    let started = Instant::now();
    app.shutdown().await.expect("graceful shutdown");
    let shutdown = started.elapsed();
    assert!(
        shutdown < Duration::from_secs(15),
        "shutdown took {shutdown:?}"
    );
    eprintln!(
        "silent loss: resubscribed {noticed_in:?} after the kill; shutdown {shutdown:?}; {} zombie sockets",
        proxy.zombies.lock().expect("lock").len()
    );
    admin.cleanup(&[&queue, &capture], &[&input, &output]).await;
}
