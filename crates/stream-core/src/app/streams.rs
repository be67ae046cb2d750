//! Stream functions in the running application: their input bindings hand deliveries to an
//! intake, a runner task calls the function once per run over the intakes' streams, restarts
//! it after a failure, and on shutdown closes the intakes so the function finishes what it
//! holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stream_config::AckMode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::StreamError;
use super::bridge::StreamBridge;
use super::invoke::route_output;
use super::output::OutputBinding;
use super::shared::{AppShared, InputHandlers};
use crate::binder::Binding;
use crate::errors::ErrorHandler;
use crate::function::stream::{
    Crashes, InboundSource, Intake, OutputSink, RunEnd, RunState, StreamRun, Supervised,
};
use crate::function::{ConversionContext, FunctionDefinition};
use crate::process::pipeline::Invoker;
use crate::retry::BackOff;

/// A stream function's runner: stopped before the consumers on shutdown.
pub(crate) struct StreamRunner {
    name: String,
    intakes: Vec<Arc<Intake>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What one runner needs, resolved at bind time.
struct Wiring {
    name: String,
    run: StreamRun,
    intakes: Vec<(Arc<Intake>, ConversionContext)>,
    sinks: Vec<OutputSink>,
    back_off: BackOff,
    max_attempts: u32,
    /// A supplier whose stream ended is done, not restarted.
    finite_ok: bool,
}

/// Binds a stream function's input bindings (`-in-0`, `-in-1`, ...) and starts its runner;
/// its outputs are bound already.
pub(crate) async fn bind(
    shared: &AppShared,
    error_handlers: &HashMap<String, ErrorHandler>,
    def: &FunctionDefinition,
    run: &StreamRun,
    outputs: &HashMap<String, Arc<OutputBinding>>,
    bridge: &StreamBridge,
) -> Result<(StreamRunner, Vec<Box<dyn Binding>>), StreamError> {
    let mut consumers = Vec::new();
    let mut intakes = Vec::new();
    let mut back_off = BackOff::new(Duration::from_secs(1), Duration::from_secs(10), 2.0);
    let mut max_attempts = 3;
    for i in 0..run.shape.inputs {
        let name = def.input_binding(i);
        let props = shared.binding(&name)?;
        let c = &props.consumer;
        if c.batch_mode {
            return Err(StreamError::InvalidBinding {
                binding: name,
                reason: format!(
                    "`consumer.batch-mode` is true but `{}` is a stream function, which sees every message of its input as a stream; window it (MessageStreamExt::windows) instead",
                    def.name()
                ),
            });
        }
        if c.acknowledge_mode == Some(AckMode::Manual) {
            return Err(StreamError::InvalidBinding {
                binding: name,
                reason: format!(
                    "`consumer.acknowledge-mode: MANUAL` does not apply to stream function `{}`: its messages are acknowledged when what was made of them is sent (see docs/functions.md); remove the key",
                    def.name()
                ),
            });
        }
        if i == 0 {
            back_off = BackOff::new(
                c.back_off_initial_interval,
                c.back_off_max_interval,
                c.back_off_multiplier,
            );
            max_attempts = c.max_attempts;
        }
        let intake = Intake::new(&name);
        let ctx = shared.conversion_context(&props, c.use_native_decoding);
        let never: Invoker = Arc::new(|_| {
            Box::pin(async {
                Err(crate::FunctionError::msg(
                    "a stream function's input is not invoked per message",
                ))
            })
        });
        let error_handler = super::build::error_handler_of(error_handlers, &name, &props)?;
        consumers.extend(
            shared
                .bind_input(
                    &name,
                    &props,
                    InputHandlers {
                        invoker: never,
                        batch_invoker: None,
                        error_handler,
                        stream: Some(Arc::clone(&intake)),
                    },
                )
                .await?,
        );
        intakes.push((intake, ctx));
    }
    let mut sinks = Vec::new();
    for j in 0..run.shape.outputs {
        let name = def.output_binding(j);
        let Some(output) = outputs.get(&name).cloned() else {
            return Err(StreamError::InvalidBinding {
                binding: name,
                reason: "the stream function's output binding was not bound".to_owned(),
            });
        };
        sinks.push(output_sink(output, bridge.clone()));
    }
    let wiring = Wiring {
        name: def.name().to_owned(),
        run: run.clone(),
        intakes,
        sinks,
        back_off,
        max_attempts,
        finite_ok: run.shape.inputs == 0,
    };
    Ok((StreamRunner::start(wiring), consumers))
}

/// Sends to an output binding (or the `sendto.destination` the message names); the messages'
/// deliveries are handled once it is sent, recovered when it cannot be.
fn output_sink(output: Arc<OutputBinding>, bridge: StreamBridge) -> OutputSink {
    let binding = Arc::clone(&output.binding);
    let ctx = output.conversion.clone();
    OutputSink::new(binding, ctx, move |mut m: crate::Message<bytes::Bytes>| {
        let acks = m.take_acks();
        let (output, bridge) = (Arc::clone(&output), bridge.clone());
        async move {
            match route_output(Some(m), Some(output), bridge).await {
                Ok(()) => {
                    acks.done();
                    Ok(())
                }
                Err(e) => {
                    let e = Arc::new(e);
                    acks.fail(Arc::clone(&e));
                    Err(crate::FunctionError::msg(e.to_string()).with_kind(e.kind().to_owned()))
                }
            }
        }
    })
}

impl StreamRunner {
    fn start(w: Wiring) -> Self {
        let (stop, stopped) = watch::channel(false);
        let intakes: Vec<Arc<Intake>> = w.intakes.iter().map(|(i, _)| Arc::clone(i)).collect();
        let name = w.name.clone();
        let span = tracing::info_span!("stream.function", function = %name);
        let task = tokio::spawn(supervise(w, stopped).instrument(span));
        Self {
            name,
            intakes,
            stop,
            task,
        }
    }

    /// Ends the function: closes its intakes so its inputs end and it sends what it holds
    /// (a window's aggregate), waits up to `timeout`, then ends the run (what it still holds
    /// goes back to the broker).
    pub(crate) async fn stop(self, timeout: Duration) -> Result<(), String> {
        for i in &self.intakes {
            i.close();
        }
        self.stop.send_replace(true);
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("stream function `{}`: {e}", self.name)),
            Err(_) => {
                task.abort();
                Err(format!(
                    "stream function `{}` did not finish within {timeout:?}; what it held goes back to the broker",
                    self.name
                ))
            }
        }
    }
}

/// Runs the function until stopped: one run per start, restarted with back-off after a
/// failure (or after its stream ended while the application runs).
async fn supervise(w: Wiring, mut stopped: watch::Receiver<bool>) {
    let crashes = Arc::new(Crashes::default());
    let mut delays = w.back_off.delays();
    loop {
        if *stopped.borrow() {
            return;
        }
        let run = RunState::new(Arc::clone(&crashes), w.max_attempts);
        let sources = w
            .intakes
            .iter()
            .map(|(intake, ctx)| {
                InboundSource::new(Arc::clone(&intake.binding), ctx.clone(), intake.open(&run))
            })
            .collect();
        tracing::debug!(function = %w.name, "stream function run starts");
        let supervised = Supervised::new(w.run.run(sources, w.sinks.clone()), Arc::clone(&run));
        let started = std::time::Instant::now();
        let end = if w.intakes.is_empty() {
            // A supplier has no input to end: stopping ends its run.
            tokio::select! {
                end = supervised => end,
                _ = stopped.wait_for(|s| *s) => RunEnd::Completed,
            }
        } else {
            supervised.await
        };
        // What is dropped from now on was not handled.
        run.kill(None);
        for (intake, _) in &w.intakes {
            intake.close();
        }
        if *stopped.borrow() {
            if let RunEnd::Failed(e) = end {
                tracing::error!(function = %w.name, error = %e, "stream function failed while stopping");
            }
            return;
        }
        match end {
            RunEnd::Completed if w.finite_ok => {
                tracing::info!(function = %w.name, "stream supplier completed");
                return;
            }
            RunEnd::Completed => {
                tracing::warn!(function = %w.name,
                    "stream function's output ended while its inputs are open; restarting it");
            }
            RunEnd::Failed(e) => {
                tracing::error!(function = %w.name, error = %e, kind = e.kind(),
                    "stream function failed; what it held goes back to the broker, restarting it");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            // It ran well for a while: start the back-off over.
            delays = w.back_off.delays();
        }
        let wait = delays.next().unwrap_or(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
