//! The binding lifecycle, owned by the runtime for every binder: one state machine
//! (starting, running, paused, stopped, failed), auto-startup, late binding, pause/resume,
//! in-flight deliveries settled before `stop` returns (bounded by a deadline), truthful state,
//! and supervision of the consumer's tasks (restarted with back-off when one dies).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::capability::check_recovery;
use super::inflight::InFlight;
use super::sink::{Event, GateState, Sink, SinkShared, SourceStatus};
use super::spec::ConsumerSpec;
use super::{Binder, Consumer, Settle};
use crate::error::BinderError;
use crate::process::pipeline::ConsumerPipeline;

/// The state of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BindingState {
    /// Being bound: the broker was not reachable yet (late binding) or the consumer is
    /// starting.
    Starting,
    /// Bound and moving messages.
    Running,
    /// Consuming suspended; resumable.
    Paused,
    /// Stopped; may be started again.
    Stopped,
    /// Not moving messages although it should: the consumer lost its connection or its task
    /// died; the runtime or the binder is recovering it (the status says why).
    Failed,
}

impl BindingState {
    /// The lower-case name (`running`, `paused`, ...), as Spring's bindings endpoint shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::Starting => "starting",
            BindingState::Running => "running",
            BindingState::Paused => "paused",
            BindingState::Stopped => "stopped",
            BindingState::Failed => "failed",
        }
    }
}

impl fmt::Display for BindingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A binding's state and, when it is not what was asked for, why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindingStatus {
    /// The state.
    pub state: BindingState,
    /// Why it is starting or failed (a connection error, a dead task).
    pub reason: Option<String>,
}

impl BindingStatus {
    /// A status without a reason.
    pub fn new(state: BindingState) -> Self {
        Self {
            state,
            reason: None,
        }
    }

    /// A status with a reason.
    pub fn because(state: BindingState, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: Some(reason.into()),
        }
    }
}

/// A consumer or producer binding, as the application (and its admin endpoint) sees it.
///
/// `stop` stops taking new deliveries and returns once every delivery already handed out has
/// been settled on the broker (bounded by the application's shutdown timeout).
#[async_trait]
pub trait Binding: Send + Sync + 'static {
    /// Binding name (e.g. `uppercase-in-0`).
    fn name(&self) -> &str;
    /// Whether it is an input (consumer) binding.
    fn is_input(&self) -> bool;
    /// The destination it consumes from or sends to.
    fn destination(&self) -> &str;
    /// The consumer group (`None` for anonymous consumers and producers).
    fn group(&self) -> Option<&str>;
    /// The binder type serving it.
    fn binder_type(&self) -> &str;
    /// State and reason.
    fn status(&self) -> BindingStatus;
    /// The state.
    fn state(&self) -> BindingState {
        self.status().state
    }
    /// Whether `pause`/`resume` have an effect.
    fn is_pausable(&self) -> bool {
        self.is_input()
    }
    /// Starts (or restarts) the binding.
    async fn start(&self) -> Result<(), BinderError>;
    /// Stops it; in-flight deliveries are settled before this returns.
    async fn stop(&self) -> Result<(), BinderError>;
    /// Pauses consumption without releasing the binding.
    async fn pause(&self) -> Result<(), BinderError>;
    /// Resumes a paused binding.
    async fn resume(&self) -> Result<(), BinderError>;
}

/// What the user asked the binding to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    Running,
    Paused,
    Stopped,
}

/// One start of the consumer.
struct Started {
    generation: u64,
    stopping: CancellationToken,
    supervisor: JoinHandle<()>,
}

struct Control<B: Binder> {
    destination: Option<B::ConsumerDestination>,
    consumer: Option<Arc<B::Consumer>>,
    started: Option<Started>,
    generation: u64,
    wanted: Wanted,
    retry: Option<JoinHandle<()>>,
    /// Consecutive restarts after a task died (back-off grows with it).
    restarts: u32,
}

/// Timing of the lifecycle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// `spring.cloud.stream.binding-retry-interval` (zero: a broker unreachable at bind time
    /// is fatal).
    pub(crate) retry_interval: Duration,
    /// How long `stop` waits for in-flight deliveries.
    pub(crate) stop_timeout: Duration,
}

struct Inner<B: Binder> {
    binder: Arc<B>,
    binder_type: Arc<str>,
    spec: ConsumerSpec<B::ConsumerProperties>,
    pipeline: Arc<ConsumerPipeline>,
    timing: Timing,
    inflight: Arc<InFlight>,
    gate: watch::Sender<GateState>,
    status: watch::Sender<BindingStatus>,
    control: Mutex<Control<B>>,
    /// Restart requests from supervisors (a task of a generation died).
    restarts: mpsc::UnboundedSender<(u64, String)>,
    me: Weak<Inner<B>>,
}

/// A consumer binding: the runtime's lifecycle around a binder's [`Consumer`].
pub(crate) struct ConsumerBinding<B: Binder> {
    inner: Arc<Inner<B>>,
}

const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

fn restart_backoff(restarts: u32) -> Duration {
    Duration::from_secs(1u64 << restarts.min(5)).min(MAX_RESTART_BACKOFF)
}

impl<B: Binder> ConsumerBinding<B> {
    /// A binding in state `Stopped`; [`ConsumerBinding::bind`] provisions it.
    pub(crate) fn new(
        binder: Arc<B>,
        binder_type: Arc<str>,
        spec: ConsumerSpec<B::ConsumerProperties>,
        pipeline: Arc<ConsumerPipeline>,
        timing: Timing,
    ) -> Self {
        let (gate, _) = watch::channel(GateState::Closed);
        let (status, _) = watch::channel(BindingStatus::new(BindingState::Stopped));
        let (restarts, mut restart_rx) = mpsc::unbounded_channel::<(u64, String)>();
        let inner = Arc::new_cyclic(|me| Inner {
            restarts,
            binder,
            binder_type,
            spec,
            pipeline,
            timing,
            inflight: Arc::new(InFlight::default()),
            gate,
            status,
            control: Mutex::new(Control {
                destination: None,
                consumer: None,
                started: None,
                generation: 0,
                wanted: Wanted::Stopped,
                retry: None,
                restarts: 0,
            }),
            me: me.clone(),
        });
        let me = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some((generation, reason)) = restart_rx.recv().await {
                let Some(inner) = me.upgrade() else { return };
                inner.task_ended(generation, reason).await;
            }
        });
        Self { inner }
    }

    /// Uses an already provisioned destination (the binding skips provisioning).
    #[cfg(feature = "conformance")]
    pub(crate) async fn with_destination(self, destination: B::ConsumerDestination) -> Self {
        self.inner.control.lock().await.destination = Some(destination);
        self
    }

    /// Provisions and binds (starting it when `auto-startup`). A broker that cannot be reached
    /// is retried in the background every `binding-retry-interval` (late binding), unless the
    /// interval is zero; other errors are returned.
    pub(crate) async fn bind(&self) -> Result<(), BinderError> {
        let auto = self.inner.spec.common.auto_startup;
        let mut c = self.inner.control.lock().await;
        c.wanted = if auto {
            Wanted::Running
        } else {
            Wanted::Stopped
        };
        self.inner.bring_up(&mut c).await
    }
}

impl<B: Binder> Inner<B> {
    fn set_status(&self, status: BindingStatus) {
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    /// Provisions and binds when not done yet, then starts when wanted. Temporary failures
    /// schedule a retry.
    async fn bring_up(&self, c: &mut Control<B>) -> Result<(), BinderError> {
        match self.try_bring_up(c).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_temporary() && !self.timing.retry_interval.is_zero() => {
                tracing::warn!(
                    binding = %self.spec.binding,
                    destination = %self.spec.destination,
                    retry_in = ?self.timing.retry_interval,
                    error = %e,
                    "cannot bind yet; retrying (spring.cloud.stream.binding-retry-interval)"
                );
                self.set_status(BindingStatus::because(
                    BindingState::Starting,
                    format!(
                        "{e}; retrying every {:?} (spring.cloud.stream.binding-retry-interval)",
                        self.timing.retry_interval
                    ),
                ));
                self.schedule_retry(c);
                Ok(())
            }
            Err(e) => {
                if c.started.is_none() {
                    self.set_status(BindingStatus::because(BindingState::Stopped, e.to_string()));
                }
                Err(e)
            }
        }
    }

    async fn try_bring_up(&self, c: &mut Control<B>) -> Result<(), BinderError> {
        if c.destination.is_none() {
            let d = self.binder.provision_consumer(&self.spec).await?;
            tracing::info!(binding = %self.spec.binding, destination = %self.spec.destination, "consumer provisioned");
            c.destination = Some(d);
        }
        if c.consumer.is_none()
            && let Some(d) = &c.destination
        {
            let consumer = self.binder.bind_consumer(&self.spec, d).await?;
            check_recovery(
                &self.binder_type,
                self.binder.capabilities(),
                &self.spec.binding,
                &consumer.recovery(),
            )?;
            c.consumer = Some(Arc::new(consumer));
        }
        match c.wanted {
            Wanted::Stopped => {
                self.set_status(BindingStatus::new(BindingState::Stopped));
                Ok(())
            }
            Wanted::Running | Wanted::Paused => self.launch(c).await,
        }
    }

    fn schedule_retry(&self, c: &mut Control<B>) {
        if c.retry.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let me = self.me.clone();
        let interval = self.timing.retry_interval;
        c.retry = Some(tokio::spawn(async move {
            tokio::time::sleep(interval).await;
            let Some(inner) = me.upgrade() else { return };
            let mut c = inner.control.lock().await;
            c.retry = None;
            if c.started.is_none()
                && let Err(e) = inner.bring_up(&mut c).await
            {
                tracing::error!(binding = %inner.spec.binding, error = %e, "binding failed");
                crate::error::unheard("binding failed", &inner.spec.binding, &e);
            }
        }));
    }

    /// Starts the consumer (a new generation) with a fresh sink and its supervisor.
    async fn launch(&self, c: &mut Control<B>) -> Result<(), BinderError> {
        if c.started.is_some() {
            return Ok(());
        }
        let Some(consumer) = c.consumer.clone() else {
            return Err(BinderError::closed(&self.spec.binding));
        };
        c.generation += 1;
        let generation = c.generation;
        let stopping = CancellationToken::new();
        let (events, rx) = mpsc::unbounded_channel();
        let recovery = consumer.recovery();
        let sink = Sink::new(SinkShared {
            consumer: Arc::clone(&consumer),
            pipeline: Arc::clone(&self.pipeline),
            recovery,
            ack_mode: self.spec.acknowledge_mode,
            inflight: Arc::clone(&self.inflight),
            gate: self.gate.subscribe(),
            events,
            generation,
            stopping: stopping.clone(),
        });
        let paused = c.wanted == Wanted::Paused;
        self.gate.send_replace(if paused {
            GateState::Paused
        } else {
            GateState::Open
        });
        self.set_status(BindingStatus::new(BindingState::Starting));
        if let Err(e) = consumer.start(sink).await {
            stopping.cancel();
            self.gate.send_replace(GateState::Closed);
            let _ = consumer.stop().await;
            return Err(e);
        }
        if paused && let Err(e) = consumer.pause().await {
            tracing::warn!(binding = %self.spec.binding, error = %e, "pausing the consumer failed; deliveries are held");
        }
        let supervisor = tokio::spawn(supervise(self.me.clone(), generation, rx, stopping.clone()));
        c.started = Some(Started {
            generation,
            stopping,
            supervisor,
        });
        self.set_status(BindingStatus::new(if paused {
            BindingState::Paused
        } else {
            BindingState::Running
        }));
        tracing::info!(
            binding = %self.spec.binding,
            destination = %self.spec.destination,
            group = self.spec.group_name().unwrap_or("(anonymous)"),
            acknowledge_mode = %self.spec.acknowledge_mode,
            "consumer started"
        );
        Ok(())
    }

    /// Stops the current generation: no new deliveries, the consumer's tasks end, in-flight
    /// deliveries settle (bounded by the stop timeout).
    async fn halt(&self, c: &mut Control<B>) -> Result<(), BinderError> {
        let Some(started) = c.started.take() else {
            return Ok(());
        };
        self.gate.send_replace(GateState::Closed);
        started.stopping.cancel();
        let stopped = match &c.consumer {
            Some(consumer) => consumer.stop().await,
            None => Ok(()),
        };
        let idle = self.inflight.wait_idle_for(self.timing.stop_timeout).await;
        started.supervisor.abort();
        if let Err(e) = stopped {
            tracing::warn!(binding = %self.spec.binding, error = %e, "stopping the consumer failed");
        }
        if idle {
            Ok(())
        } else {
            Err(BinderError::new(
                crate::error::BinderErrorKind::Closed,
                format!(
                    "binding `{}`: {} deliveries were still being processed {:?} after stop; they were not settled and the broker delivers them again",
                    self.spec.binding,
                    self.inflight.current(),
                    self.timing.stop_timeout
                ),
            ))
        }
    }

    /// A supervised task of generation `generation` ended: mark failed, restart with back-off.
    async fn task_ended(&self, generation: u64, reason: String) {
        tracing::error!(binding = %self.spec.binding, destination = %self.spec.destination, reason = %reason, "consumer task ended unexpectedly; restarting the consumer");
        crate::error::unheard(
            "consumer task ended unexpectedly; restarting it",
            &self.spec.binding,
            &reason,
        );
        let backoff = {
            let mut c = self.control.lock().await;
            if c.started.as_ref().map(|s| s.generation) != Some(generation) {
                return;
            }
            c.restarts = c.restarts.saturating_add(1);
            let backoff = restart_backoff(c.restarts - 1);
            self.set_status(BindingStatus::because(
                BindingState::Failed,
                format!("{reason}; restarting in {backoff:?}"),
            ));
            if let Err(e) = self.halt(&mut c).await {
                tracing::warn!(binding = %self.spec.binding, error = %e, "stopping the failed consumer");
            }
            self.set_status(BindingStatus::because(
                BindingState::Failed,
                format!("{reason}; restarting in {backoff:?}"),
            ));
            backoff
        };
        tokio::time::sleep(backoff).await;
        let mut c = self.control.lock().await;
        if c.wanted == Wanted::Stopped || c.started.is_some() || c.generation != generation {
            return;
        }
        if let Err(e) = self.bring_up(&mut c).await {
            tracing::error!(binding = %self.spec.binding, error = %e, "restarting the consumer failed");
            crate::error::unheard("restarting the consumer failed", &self.spec.binding, &e);
            self.set_status(BindingStatus::because(BindingState::Failed, e.to_string()));
            self.schedule_retry(&mut c);
        }
    }
}

/// Follows one generation's events: status reports and dead tasks.
async fn supervise<B: Binder>(
    me: Weak<Inner<B>>,
    generation: u64,
    mut events: mpsc::UnboundedReceiver<Event>,
    stopping: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stopping.cancelled() => return,
            e = events.recv() => match e { Some(e) => e, None => return },
        };
        let Some(inner) = me.upgrade() else { return };
        match event {
            Event::Status(g, status) if g == generation => {
                let paused = *inner.gate.borrow() == GateState::Paused;
                match status {
                    SourceStatus::Consuming => {
                        inner.set_status(BindingStatus::new(if paused {
                            BindingState::Paused
                        } else {
                            BindingState::Running
                        }));
                        if let Ok(mut c) = inner.control.try_lock() {
                            c.restarts = 0;
                        }
                    }
                    SourceStatus::Lost { reason } => {
                        inner.set_status(BindingStatus::because(BindingState::Failed, reason));
                    }
                }
            }
            Event::TaskEnded(g, reason) if g == generation => {
                let _ = inner.restarts.send((generation, reason));
                return;
            }
            _ => {}
        }
    }
}

#[async_trait]
impl<B: Binder> Binding for ConsumerBinding<B> {
    fn name(&self) -> &str {
        &self.inner.spec.binding
    }

    fn is_input(&self) -> bool {
        true
    }

    fn destination(&self) -> &str {
        &self.inner.spec.destination
    }

    fn group(&self) -> Option<&str> {
        self.inner.spec.group_name()
    }

    fn binder_type(&self) -> &str {
        &self.inner.binder_type
    }

    fn status(&self) -> BindingStatus {
        self.inner.status.borrow().clone()
    }

    async fn start(&self) -> Result<(), BinderError> {
        let mut c = self.inner.control.lock().await;
        if c.started.is_some() {
            if c.wanted == Wanted::Paused {
                drop(c);
                return self.resume().await;
            }
            return Ok(());
        }
        c.wanted = Wanted::Running;
        c.restarts = 0;
        self.inner.bring_up(&mut c).await
    }

    async fn stop(&self) -> Result<(), BinderError> {
        let mut c = self.inner.control.lock().await;
        c.wanted = Wanted::Stopped;
        if let Some(retry) = c.retry.take() {
            retry.abort();
        }
        let result = self.inner.halt(&mut c).await;
        self.inner
            .set_status(BindingStatus::new(BindingState::Stopped));
        if result.is_ok() {
            tracing::info!(binding = %self.inner.spec.binding, "consumer stopped; in-flight deliveries settled");
        }
        result
    }

    async fn pause(&self) -> Result<(), BinderError> {
        let mut c = self.inner.control.lock().await;
        if c.started.is_none() || c.wanted != Wanted::Running {
            return Ok(());
        }
        c.wanted = Wanted::Paused;
        self.inner.gate.send_replace(GateState::Paused);
        if let Some(consumer) = &c.consumer
            && let Err(e) = consumer.pause().await
        {
            tracing::warn!(binding = %self.inner.spec.binding, error = %e, "pausing the consumer failed; deliveries are held until resumed");
        }
        self.inner
            .set_status(BindingStatus::new(BindingState::Paused));
        Ok(())
    }

    async fn resume(&self) -> Result<(), BinderError> {
        let mut c = self.inner.control.lock().await;
        if c.wanted != Wanted::Paused {
            return Ok(());
        }
        c.wanted = Wanted::Running;
        if c.started.is_none() {
            return Ok(());
        }
        if let Some(consumer) = &c.consumer
            && let Err(e) = consumer.resume().await
        {
            tracing::warn!(binding = %self.inner.spec.binding, error = %e, "resuming the consumer failed");
        }
        self.inner.gate.send_replace(GateState::Open);
        self.inner
            .set_status(BindingStatus::new(BindingState::Running));
        Ok(())
    }
}

impl<B: Binder> Drop for ConsumerBinding<B> {
    fn drop(&mut self) {
        // A binding dropped without stop: end its tasks' supervision; the consumer's own tasks
        // end with the binder.
        if let Ok(mut c) = self.inner.control.try_lock() {
            if let Some(retry) = c.retry.take() {
                retry.abort();
            }
            if let Some(s) = c.started.take() {
                s.stopping.cancel();
                s.supervisor.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_to_a_cap() {
        let v: Vec<u64> = (0..8).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(v, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn states_read_as_spring_spells_them() {
        assert_eq!(BindingState::Running.to_string(), "running");
        assert_eq!(BindingState::Paused.as_str(), "paused");
    }
}
