//! A complete application on the embedded in-memory binder: no broker needed.
//!
//! `cargo run -p stream-core --example in_memory` binds two functions from Spring-style
//! properties, sends messages through them, shows partitioning, retry with back-off and
//! dead-lettering, and shuts down gracefully. Any `--key=value` argument overrides the built-in
//! configuration (e.g. `--spring.cloud.stream.bindings.validate-in-0.consumer.max-attempts=1`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stream_core::memory::{
    EXCEPTION_MESSAGE_HEADER, InMemoryBinderFactory, InMemoryBroker, dead_letter_destination,
};
use stream_core::stream_config::Environment;
use stream_core::{FunctionError, Message, StreamApp};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    amount: i64,
}

const CONFIG: &str = "
spring.cloud.function.definition=uppercase;validate
spring.cloud.stream.bindings.uppercase-in-0.destination=words
spring.cloud.stream.bindings.uppercase-out-0.destination=shouts
spring.cloud.stream.bindings.validate-in-0.destination=orders
spring.cloud.stream.bindings.validate-in-0.group=billing
spring.cloud.stream.bindings.validate-in-0.consumer.back-off-initial-interval=100ms
spring.cloud.stream.bindings.validate-out-0.destination=valid-orders
spring.cloud.stream.bindings.validate-out-0.producer.partition-key-expression=payload.id
spring.cloud.stream.bindings.validate-out-0.producer.partition-count=2
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let env = Environment::builder()
        .properties_str("built-in example configuration", CONFIG)
        .command_line_args()
        .build()?;
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env)
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
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
        .await?;
    for (name, state) in app.bindings() {
        println!("bound {name:<16} {state:?}");
    }

    broker.capture("shouts");
    broker.capture("valid-orders");
    let wait = Duration::from_secs(5);

    println!("\n-- function `uppercase`: words -> shouts");
    for word in ["hello", "stream"] {
        broker.send("words", Message::bytes(word));
        if let Some(m) = broker.receive("shouts", wait).await {
            println!(
                "sent {word:?} to `words`, got {:?} on `shouts`",
                String::from_utf8_lossy(m.payload())
            );
        }
    }

    println!(
        "\n-- function `validate`: orders -> valid-orders, partitioned by payload.id over 2 partitions"
    );
    for id in ["0", "1", "foo"] {
        let body = format!(r#"{{"id":"{id}","amount":10}}"#);
        broker.send("orders", Message::bytes(body.clone()));
        if let Some((_, partition)) = broker.receive_partitioned("valid-orders", wait).await {
            println!(
                "order {id:>3}: partition {} (Java \"{id}\".hashCode() % 2)",
                partition.map_or_else(|| "none".to_owned(), |p| p.to_string())
            );
        }
    }

    println!("\n-- a failing order: 3 attempts with back-off, then the dead-letter destination");
    broker.send("orders", Message::bytes(r#"{"id":"bad","amount":-5}"#));
    let dlq = dead_letter_destination("orders", "billing");
    match broker.receive(&dlq, wait).await {
        Some(m) => println!(
            "dead-lettered to `{dlq}`: {} (x-exception-message: {:?})",
            String::from_utf8_lossy(m.payload()),
            m.headers()
                .get_str(EXCEPTION_MESSAGE_HEADER)
                .unwrap_or_default()
        ),
        None => println!("nothing reached `{dlq}`"),
    }

    println!("\n-- StreamBridge: send to any destination");
    broker.capture("audit");
    app.bridge()
        .send(
            "audit",
            Order {
                id: "a-1".into(),
                amount: 1,
            },
        )
        .await?;
    if let Some(m) = broker.receive("audit", wait).await {
        println!(
            "`audit` got {} ({})",
            String::from_utf8_lossy(m.payload()),
            m.content_type().unwrap_or("?")
        );
    }

    app.shutdown().await?;
    println!("\nshut down gracefully");
    Ok(())
}
