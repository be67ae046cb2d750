//! The application the fault-injection suite (`cargo xtask chaos`) starts, kills with SIGKILL
//! and restarts. Two functions: `relay` (JSON `{"seq": n}` in, the same out) and `text`
//! (text in, upper-cased text out); bindings, brokers and confirm modes come from the
//! `--spring.*` arguments the suite passes. `CHAOS_BINDER=rocketmq` binds to RocketMQ instead of
//! RabbitMQ. SIGTERM / SIGINT shut it down gracefully.

use serde::{Deserialize, Serialize};
use stream_core::{FunctionError, StreamApp};

/// What the suite sends: a sequence number it tracks end to end, and optional padding.
#[derive(Debug, Deserialize, Serialize)]
struct Item {
    seq: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pad: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(false)
        .init();
    let rocketmq = std::env::var("CHAOS_BINDER").is_ok_and(|b| b == "rocketmq");
    let builder = StreamApp::builder();
    let builder = if rocketmq {
        builder.binder(binder_rocketmq::RocketMqBinderFactory::new())
    } else {
        builder.binder(binder_rabbit::RabbitBinderFactory::new())
    };
    let app = builder
        .function(
            "relay",
            |item: Item| async move { Ok::<_, FunctionError>(item) },
        )
        .function("text", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await?;
    eprintln!("chaos-app: bound");
    Ok(app.run_until_signal().await?)
}
