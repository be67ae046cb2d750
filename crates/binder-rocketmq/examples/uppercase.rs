//! `uppercase`: String -> upper-cased String over RocketMQ.
//!
//! ```text
//! cargo run -p binder-rocketmq --example uppercase -- \
//!   --spring.cloud.stream.rocketmq.binder.name-server=127.0.0.1:9876 \
//!   --spring.cloud.stream.bindings.uppercase-in-0.destination=words \
//!   --spring.cloud.stream.bindings.uppercase-in-0.group=uppercase \
//!   --spring.cloud.stream.bindings.uppercase-out-0.destination=shouts \
//!   --management.server.port=8081
//! ```
//!
//! Bindings `uppercase-in-0` / `uppercase-out-0`; every standard source works (application.yml,
//! environment variables, `--key=value`).
//!
//! Operations, with Spring's keys: `--management.server.port=8081` serves
//! `http://127.0.0.1:8081/actuator/{health,bindings,prometheus}` (the example exposes all three;
//! `curl -d '{"state":"STOPPED"}' -H 'Content-Type: application/json'
//! localhost:8081/actuator/bindings/<name>` stops a binding). Trace context goes out in the
//! `traceparent` header of every message and is taken from incoming ones; spans are sampled by
//! `--management.tracing.sampling.probability=1.0` (default 0.1) and printed on stderr as `span
//! trace_id=...` lines; `--management.tracing.enabled=false` turns that off. Logs go to stderr
//! (`RUST_LOG` filters them). SIGINT/SIGTERM stop it gracefully: consuming stops, in-flight
//! messages settle, connections close.

use binder_rocketmq::stream_config::{Environment, ManagementProperties};
use binder_rocketmq::stream_core::telemetry::{self, LogSpanExporter};
use binder_rocketmq::{FunctionError, RocketMqBinderFactory, StreamApp};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Environment::builder()
        .defaults([
            ("spring.cloud.function.definition", "uppercase"),
            (
                "management.endpoints.web.exposure.include",
                "health,bindings,prometheus",
            ),
        ])
        .standard_files()
        .system_env()
        .command_line_args()
        .build()?;
    let management = ManagementProperties::from_environment(&env)?;
    let tracer = telemetry::install(&management, LogSpanExporter)?;
    let app = StreamApp::builder()
        .environment(env)
        .binder(RocketMqBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        })
        .build()
        .await?;
    for (name, state) in app.bindings() {
        tracing::info!(binding = %name, ?state, "bound");
    }
    app.run_until_signal().await?;
    if let Some(t) = tracer {
        t.shutdown()?;
    }
    Ok(())
}
