//! End to end through the runtime's `StreamApp` with the RabbitMQ binder.

mod common;

use std::time::Duration;

use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use common::*;
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    amount: i64,
}

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn uppercase_and_validate_through_stream_app() {
    init_tracing();
    let admin = raw().await;
    let words = unique("app-words");
    let shouts = unique("app-shouts");
    let orders = unique("app-orders");
    let valid = unique("app-valid");
    let env = env(&format!(
        "spring.cloud.function.definition=uppercase;validate\n\
         spring.cloud.stream.bindings.uppercase-in-0.destination={words}\n\
         spring.cloud.stream.bindings.uppercase-in-0.group=g\n\
         spring.cloud.stream.bindings.uppercase-out-0.destination={shouts}\n\
         spring.cloud.stream.bindings.uppercase-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.bindings.validate-in-0.destination={orders}\n\
         spring.cloud.stream.bindings.validate-in-0.group=billing\n\
         spring.cloud.stream.bindings.validate-in-0.consumer.max-attempts=2\n\
         spring.cloud.stream.bindings.validate-in-0.consumer.back-off-initial-interval=10ms\n\
         spring.cloud.stream.bindings.validate-out-0.destination={valid}\n\
         spring.cloud.stream.bindings.validate-out-0.producer.required-groups=capture\n\
         spring.cloud.stream.rabbit.bindings.validate-in-0.consumer.auto-bind-dlq=true\n\
         spring.cloud.stream.rabbit.bindings.validate-in-0.consumer.dead-letter-exchange={orders}.DLX\n"
    ));
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .function("validate", |o: Order| async move {
            if o.amount < 0 {
                return Err(FunctionError::msg(format!("negative amount: {}", o.amount)));
            }
            Ok(o)
        })
        .build()
        .await
        .expect("app");
    let text = BasicProperties::default().with_content_type("text/plain".into());
    admin.publish(&words, "k", b"hello", text).await;
    let m = admin
        .get(&format!("{shouts}.capture"), Duration::from_secs(5))
        .await
        .expect("uppercased");
    assert!(String::from_utf8_lossy(&m.delivery.data).contains("HELLO"));
    let json = BasicProperties::default().with_content_type("application/json".into());
    admin
        .publish(&orders, "k", br#"{"id":"1","amount":5}"#, json.clone())
        .await;
    let m = admin
        .get(&format!("{valid}.capture"), Duration::from_secs(5))
        .await
        .expect("valid order");
    let o: Order = serde_json::from_slice(&m.delivery.data).expect("json");
    assert_eq!((o.id.as_str(), o.amount), ("1", 5));
    admin
        .publish(&orders, "k", br#"{"id":"2","amount":-5}"#, json)
        .await;
    let dlq = format!("{orders}.billing.dlq");
    let m = admin
        .get(&dlq, Duration::from_secs(5))
        .await
        .expect("dead-lettered");
    assert_eq!(
        header_str(&m.delivery.properties, "x-exception-message").as_deref(),
        Some("negative amount: -5")
    );
    app.shutdown().await.expect("shutdown");
    admin
        .cleanup(
            &[
                &format!("{words}.g"),
                &format!("{shouts}.capture"),
                &format!("{orders}.billing"),
                &dlq,
                &format!("{valid}.capture"),
            ],
            &[&words, &shouts, &orders, &valid, &format!("{orders}.DLX")],
        )
        .await;
}
