//! `validate`: JSON `Order { id, amount }` in, the same order out; a negative amount fails with
//! `negative amount: <amount>` (retried, then sent back to RocketMQ's retry topic and finally to
//! `%DLQ%<group>`); malformed JSON fails in conversion.
//!
//! ```text
//! cargo run -p binder-rocketmq --example orders -- \
//!   --spring.cloud.stream.rocketmq.binder.name-server=127.0.0.1:9876 \
//!   --spring.cloud.stream.bindings.validate-in-0.destination=orders \
//!   --spring.cloud.stream.bindings.validate-in-0.group=billing \
//!   --spring.cloud.stream.bindings.validate-out-0.destination=valid-orders
//! ```
//! Logs go to stderr (`RUST_LOG`); SIGINT/SIGTERM stop it gracefully.

use binder_rocketmq::{FunctionError, RocketMqBinderFactory, StreamApp};
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
    StreamApp::builder()
        .binder(RocketMqBinderFactory::new())
        .function("validate", |o: Order| async move {
            if o.amount < 0 {
                return Err(FunctionError::msg(format!("negative amount: {}", o.amount)));
            }
            Ok(o)
        })
        .build()
        .await?
        .run_until_signal()
        .await?;
    Ok(())
}
