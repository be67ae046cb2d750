//! The in-memory binder end to end: the framework's own ceiling (no broker, no raw
//! counterpart).

use std::sync::Arc;

use anyhow::{Result, bail};
use stream_core::Message;
use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
use stream_core::stream_config::Environment;

use crate::meter::{Meter, Report, run_limit, uppercase_app};
use crate::{Mode, Params, payload};

/// `uppercase` in -> out over an `InMemoryBroker`: the bench task sends every message to
/// `words`; the function's output goes to `uppercase-out-0`, where no queue is bound (dropped).
/// Measured from the first function call to the last.
pub(crate) async fn run(p: &Params) -> Result<Report> {
    if p.mode != Mode::Binder {
        bail!("memory-e2e has no raw counterpart; run it with mode `binder`");
    }
    let broker = InMemoryBroker::new();
    let env = Environment::builder()
        .map(
            "bench",
            [
                ("spring.cloud.function.definition", "uppercase"),
                (
                    "spring.cloud.stream.bindings.uppercase-in-0.destination",
                    "words",
                ),
                ("spring.cloud.stream.bindings.uppercase-in-0.group", "bench"),
                (
                    "spring.cloud.stream.bindings.uppercase-in-0.content-type",
                    "text/plain",
                ),
                (
                    "spring.cloud.stream.bindings.uppercase-out-0.content-type",
                    "text/plain",
                ),
            ],
        )
        .build()?;
    let meter = Arc::new(Meter::new(p.messages));
    let app = uppercase_app(
        env,
        InMemoryBinderFactory::with_broker(broker.clone()),
        &meter,
    )
    .await?;
    let body = payload(p.size);
    for _ in 0..p.messages {
        broker.send("words", Message::bytes(body.clone()));
    }
    let r = meter.wait(run_limit(p.messages)).await;
    app.shutdown().await?;
    let (start, end) = r?;
    Ok(Report::of(p, p.messages - 1, start, end))
}
