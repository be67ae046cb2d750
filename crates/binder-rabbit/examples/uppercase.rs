//! `uppercase`: String -> upper-cased String over RabbitMQ.
//!
//! ```text
//! cargo run -p binder-rabbit --example uppercase -- \
//!     --spring.cloud.stream.bindings.uppercase-in-0.group=workers
//! ```
//!
//! Reads every standard configuration source (application.yml/properties, profiles,
//! environment variables, `--key=value` arguments); bindings `uppercase-in-0` (destination
//! `uppercase-in-0` unless configured) and `uppercase-out-0`. Logs go to stderr (`RUST_LOG`
//! filters them). Runs until SIGINT/SIGTERM, then stops consuming, settles in-flight messages
//! and closes the connections.

use binder_rabbit::stream_config::Environment;
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = Environment::builder()
        .defaults([("spring.cloud.function.definition", "uppercase")])
        .standard_files()
        .system_env()
        .command_line_args()
        .build()?;
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await?;
    for (name, state) in app.bindings() {
        tracing::info!(binding = %name, ?state, "bound");
    }
    app.run_until_signal().await?;
    Ok(())
}
