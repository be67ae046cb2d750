//! `validate`: JSON `Order { id, amount }` in, the same order out; a negative amount fails with
//! `negative amount: <amount>` (retried, then republished to the DLQ with `x-exception-message`);
//! malformed JSON fails in conversion.
//!
//! ```text
//! cargo run -p binder-rabbit --example orders -- \
//!     --spring.cloud.stream.bindings.validate-in-0.consumer.max-attempts=1 \
//!     --management.server.port=8082
//! ```
//!
//! Built-in defaults (overridable from any standard source, `--key=value` included):
//! `validate-in-0` consumes `orders` as group `validate` with a DLQ (`orders.validate.dlq`),
//! `validate-out-0` publishes to `valid-orders`.
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

use binder_rabbit::stream_config::{Environment, ManagementProperties};
use binder_rabbit::stream_core::telemetry::{self, LogSpanExporter};
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
    if let Some(t) = tracer {
        t.shutdown()?;
    }
    Ok(())
}
