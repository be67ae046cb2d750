//! `validate`: JSON `Order { id, amount }` in, the same order out; a negative amount fails with
//! `negative amount: <amount>` (retried, then republished to the DLQ with `x-exception-message`);
//! malformed JSON fails in conversion.
//!
//! ```text
//! cargo run -p binder-rabbit --example orders -- \
//!     --spring.cloud.stream.bindings.validate-in-0.consumer.max-attempts=1
//! ```
//!
//! Built-in defaults (overridable from any standard source, `--key=value` included):
//! `validate-in-0` consumes `orders` as group `validate` with a DLQ (`orders.validate.dlq`),
//! `validate-out-0` publishes to `valid-orders`.

use binder_rabbit::stream_config::Environment;
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use serde::{Deserialize, Serialize};

/// An order.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    amount: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = Environment::builder()
        .defaults([
            ("spring.cloud.function.definition", "validate"),
            (
                "spring.cloud.stream.bindings.validate-in-0.destination",
                "orders",
            ),
            (
                "spring.cloud.stream.bindings.validate-in-0.group",
                "validate",
            ),
            (
                "spring.cloud.stream.bindings.validate-out-0.destination",
                "valid-orders",
            ),
            (
                "spring.cloud.stream.rabbit.bindings.validate-in-0.consumer.auto-bind-dlq",
                "true",
            ),
        ])
        .standard_files()
        .system_env()
        .command_line_args()
        .build()?;
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("validate", |o: Order| async move {
            if o.amount < 0 {
                return Err(FunctionError::msg(format!("negative amount: {}", o.amount)));
            }
            Ok(o)
        })
        .build()
        .await?;
    for (name, state) in app.bindings() {
        tracing::info!(binding = %name, ?state, "bound");
    }
    app.run_until_signal().await?;
    Ok(())
}
