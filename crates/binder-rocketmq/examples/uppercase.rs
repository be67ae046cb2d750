//! `uppercase`: String -> upper-cased String over RocketMQ.
//!
//! ```text
//! cargo run -p binder-rocketmq --example uppercase -- \
//!   --spring.cloud.stream.rocketmq.binder.name-server=127.0.0.1:9876 \
//!   --spring.cloud.stream.bindings.uppercase-in-0.destination=words \
//!   --spring.cloud.stream.bindings.uppercase-in-0.group=uppercase \
//!   --spring.cloud.stream.bindings.uppercase-out-0.destination=shouts
//! ```
//! Bindings `uppercase-in-0` / `uppercase-out-0`; every standard source works (application.yml,
//! environment variables, `--key=value`). Logs go to stderr (`RUST_LOG`); SIGINT/SIGTERM stop it
//! gracefully.

use binder_rocketmq::{FunctionError, RocketMqBinderFactory, StreamApp};

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
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await?
        .run_until_signal()
        .await?;
    Ok(())
}
