//! Broker unreachable at bind time: the runtime's late binding retries provisioning every
//! `binding-retry-interval` until the broker is reachable; a cut connection is recovered.

mod common;

use std::time::Duration;

use binder_rabbit::stream_core::binder::BindingState;
use binder_rabbit::{FunctionError, Message, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::BasicProperties;

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn declarations_and_consumers_wait_for_the_broker() {
    init_tracing();
    let admin = raw().await;
    // A port nobody listens on (yet).
    let late_port = free_port();
    let dest = unique("late");
    let queue = format!("{dest}.g");
    // The app starts although the broker is unreachable (late binding).
    let app_env = env_at(
        "127.0.0.1",
        late_port,
        &format!(
            "spring.cloud.function.definition=sink\n\
             spring.cloud.stream.binding-retry-interval=200ms\n\
             spring.cloud.stream.bindings.sink-in-0.destination={dest}\n\
             spring.cloud.stream.bindings.sink-in-0.group=g\n\
             spring.cloud.stream.rabbit.bindings.sink-in-0.consumer.recovery-interval=200\n"
        ),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = StreamApp::builder()
        .environment(app_env)
        .binder(RabbitBinderFactory::new())
        .consumer("sink", move |m: Message<bytes::Bytes>| {
            let _ = tx.send(m);
            async { Ok::<_, FunctionError>(()) }
        })
        .build()
        .await
        .expect("app starts while the broker is unreachable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        admin.queue_messages(&queue).await,
        None,
        "nothing declared while unreachable"
    );
    assert_eq!(
        app.bindings(),
        vec![("sink-in-0".to_owned(), BindingState::Starting)],
        "not bound yet"
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", late_port))
        .await
        .expect("listen");
    let proxy = tokio::spawn(proxy(listener, Live::default()));
    // Running comes after the whole topology (exchange, queue, then the queue's binding): a
    // publish as soon as the queue exists could beat the binding and be dropped unrouted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.bindings() != vec![("sink-in-0".to_owned(), BindingState::Running)] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bound once the broker is reachable: {:?}",
            app.bindings()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        admin.queue_messages(&queue).await.is_some(),
        "queue declared once the broker is reachable"
    );
    admin
        .publish(&dest, "k", b"late", BasicProperties::default())
        .await;
    let m = recv(&mut rx, Duration::from_secs(10))
        .await
        .expect("consumer started late");
    assert_eq!(m.payload().as_ref(), b"late");
    assert_eq!(
        app.bindings(),
        vec![("sink-in-0".to_owned(), BindingState::Running)]
    );
    app.shutdown().await.expect("shutdown");
    proxy.abort();
    admin.cleanup(&[&queue], &[&dest]).await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn consumers_recover_after_the_connection_is_cut_and_nothing_unacked_is_lost() {
    init_tracing();
    let admin = raw().await;
    let p = free_port();
    let live = Live::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", p))
        .await
        .expect("listen");
    let proxy = tokio::spawn(proxy(listener, live.clone()));
    let dest = unique("recover");
    let queue = format!("{dest}.g");
    let b = binder_with_env(env_at(
        "127.0.0.1",
        p,
        "spring.cloud.stream.rabbit.bindings.in.consumer.recovery-interval=200\n\
         spring.cloud.stream.rabbit.bindings.in.consumer.acknowledge-mode=MANUAL",
    ));
    let (h, mut rx) = recorder(|_| Disposition::Ack);
    let binding = bind(&b, consumer_request("in", &dest, Some("g")), h).await;
    admin
        .publish(&dest, "k", b"unacked", BasicProperties::default())
        .await;
    let first = recv(&mut rx, Duration::from_secs(5))
        .await
        .expect("delivered");
    assert_eq!(first.payload().as_ref(), b"unacked");
    // Cut every connection of the binder (the function never acknowledged the message).
    for t in live.lock().expect("lock").drain(..) {
        t.abort();
    }
    let again = recv(&mut rx, Duration::from_secs(10))
        .await
        .expect("redelivered after recovery");
    assert_eq!(again.payload().as_ref(), b"unacked");
    assert_eq!(
        again.headers().get("amqp_redelivered"),
        Some(&binder_rabbit::HeaderValue::Bool(true))
    );
    again
        .acknowledgment()
        .expect("manual")
        .ack()
        .await
        .expect("ack");
    admin
        .publish(&dest, "k", b"after", BasicProperties::default())
        .await;
    let m = recv(&mut rx, Duration::from_secs(5))
        .await
        .expect("consuming again");
    m.acknowledgment()
        .expect("manual")
        .ack()
        .await
        .expect("ack");
    binding.stop().await.expect("stop");
    b.close().await.expect("close");
    proxy.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(admin.queue_messages(&queue).await, Some(0));
    admin.cleanup(&[&queue], &[&dest]).await;
}
