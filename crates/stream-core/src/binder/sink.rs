//! The sink a consumer hands its deliveries to: the runtime's per-delivery entry point, a
//! concrete type (no boxed future per delivery), and what it does with each delivery:
//! process, decide the settlement, have the binder execute it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use stream_config::AckMode;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod stream;

use super::delivery::{Body, Delivery};
use super::inflight::InFlight;
use super::{Consumer, Settle};
use crate::error::BinderError;
use crate::message::{Acknowledger, Acknowledgment};
use crate::meters::Settled;
use crate::process::pipeline::{ConsumerPipeline, ErasedRaw};
use crate::process::{DeadLetter, Outcome, Plan, Recovery, Settlement, Settler, plan};

/// What a consumer reports about its connection to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceStatus {
    /// Subscribed and receiving.
    Consuming,
    /// The connection or subscription is gone; the consumer is recovering (`reason` says why
    /// and when it tries again).
    Lost {
        /// What happened, for the binding's state.
        reason: String,
    },
}

/// Whether deliveries may pass to processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateState {
    Open,
    /// Held until resumed.
    Paused,
    /// Stopping: handed back.
    Closed,
}

/// Events a sink sends to its binding's supervisor.
#[derive(Debug)]
pub(crate) enum Event {
    /// The consumer's report.
    Status(u64, SourceStatus),
    /// A task spawned with [`Sink::spawn`] ended while the binding was running.
    TaskEnded(u64, String),
}

/// What every delivery of one started consumer shares.
pub(crate) struct SinkShared<C: Consumer> {
    pub(crate) consumer: Arc<C>,
    pub(crate) pipeline: Arc<ConsumerPipeline>,
    pub(crate) recovery: Recovery,
    pub(crate) ack_mode: AckMode,
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) gate: watch::Receiver<GateState>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    /// Which start of the binding this sink belongs to (reports of an older one are ignored).
    pub(crate) generation: u64,
    /// Cancelled when the binding stops (or restarts) this consumer.
    pub(crate) stopping: CancellationToken,
}

/// Where a [`Consumer`] hands its deliveries: [`Sink::dispatch`] processes one (conversion,
/// function, retry, error channels), decides how to settle it and has the consumer settle it;
/// it returns once that is done. Cheap to clone: give one to each fetch task.
pub struct Sink<C: Consumer> {
    shared: Arc<SinkShared<C>>,
}

impl<C: Consumer> Clone for Sink<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Consumer> fmt::Debug for Sink<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("binding", &self.shared.pipeline.id.binding)
            .field("generation", &self.shared.generation)
            .finish_non_exhaustive()
    }
}

/// Settles one delivery for `acknowledge-mode: MANUAL`, through the consumer.
struct ManualAcknowledger<S: Settle> {
    settle: Arc<S>,
    raw: Arc<S::Raw>,
}

#[async_trait]
impl<S: Settle> Acknowledger for ManualAcknowledger<S> {
    async fn ack(&self) -> Result<(), BinderError> {
        self.settle.settle(&self.raw, Settlement::Ack).await
    }

    async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
        let s = if requeue {
            Settlement::Requeue
        } else {
            Settlement::Reject
        };
        self.settle.settle(&self.raw, s).await
    }
}

/// The consume span of a delivery: the child of the span that sent it when its headers carry
/// a trace context (feature `otel`).
pub(crate) fn consume_span(pipeline: &ConsumerPipeline, body: &Body) -> tracing::Span {
    let span = pipeline.span();
    #[cfg(feature = "otel")]
    if let Some(headers) = body.first_headers() {
        crate::telemetry::adopt(&span, headers);
    }
    #[cfg(not(feature = "otel"))]
    let _ = body;
    span
}

/// Settles deliveries of one binding as the settlement table says: shared by pushed and
/// polled consumers.
pub(crate) struct Settling<'a, S: Settle> {
    pub(crate) settle: &'a Arc<S>,
    pub(crate) pipeline: &'a ConsumerPipeline,
    pub(crate) recovery: Recovery,
    pub(crate) ack_mode: AckMode,
}

impl<S: Settle> Settling<'_, S> {
    /// The raw message shared with error handlers (the one place it is erased).
    pub(crate) fn erase(raw: &Arc<S::Raw>) -> ErasedRaw {
        Some(Arc::clone(raw) as Arc<dyn Any + Send + Sync>)
    }

    /// The acknowledgment handle of a delivery in MANUAL mode.
    pub(crate) fn acknowledgment(&self, raw: &Arc<S::Raw>) -> Option<Acknowledgment> {
        (self.ack_mode == AckMode::Manual).then(|| {
            Acknowledgment::new(Arc::new(ManualAcknowledger {
                settle: Arc::clone(self.settle),
                raw: Arc::clone(raw),
            }))
        })
    }

    fn settler(&self, ack: Option<&Acknowledgment>, ran: bool) -> Settler {
        match self.ack_mode {
            AckMode::None => Settler::Broker,
            AckMode::Manual if ran => Settler::Function {
                settled: ack.is_some_and(Acknowledgment::is_settled),
            },
            _ => Settler::Runtime,
        }
    }

    /// The plan for an outcome (`ran`: the function was called, so in MANUAL mode it may
    /// have settled).
    pub(crate) fn plan(&self, outcome: &Outcome, ack: Option<&Acknowledgment>, ran: bool) -> Plan {
        plan(
            outcome,
            self.settler(ack, ran),
            &self.recovery,
            self.pipeline.retry().max_attempts(),
        )
    }

    /// Settles, claiming the manual acknowledgment first so a later call by the function is a
    /// no-op; a failure is logged (the broker redelivers what was not settled).
    pub(crate) async fn settle(
        &self,
        raw: &S::Raw,
        settlement: Settlement,
        ack: Option<&Acknowledgment>,
    ) {
        if let Some(a) = ack
            && !a.claim()
        {
            return;
        }
        let start = std::time::Instant::now();
        let result = self.settle.settle(raw, settlement).await;
        let settled = match settlement {
            Settlement::Ack => Settled::Ack,
            Settlement::Requeue => Settled::Nack,
            Settlement::Reject => Settled::Reject,
        };
        self.pipeline.meters.settled(settled, start);
        if let Err(e) = result {
            tracing::warn!(
                binding = %self.pipeline.id.binding,
                destination = %self.pipeline.id.destination,
                ?settlement,
                error = %e,
                "settling the delivery failed; the broker delivers it again"
            );
        }
    }

    /// Publishes a dead letter; whether it was published.
    async fn dead_letter(&self, raw: &S::Raw, outcome: Outcome) -> bool {
        let (Outcome::Exhausted(failed) | Outcome::RejectRequested(failed)) = outcome else {
            return true;
        };
        let letter = DeadLetter::new(failed);
        match self.settle.dead_letter(raw, &letter).await {
            Ok(()) => {
                self.pipeline.meters.dead_lettered();
                tracing::debug!(binding = %self.pipeline.id.binding, "message dead-lettered");
                true
            }
            Err(e) => {
                tracing::error!(
                    binding = %self.pipeline.id.binding,
                    destination = %self.pipeline.id.destination,
                    error = %e,
                    "publishing a failed message to the dead-letter destination failed; settling it so nothing is lost"
                );
                false
            }
        }
    }

    fn dropped(&self) {
        tracing::warn!(
            binding = %self.pipeline.id.binding,
            destination = %self.pipeline.id.destination,
            "failed message dropped: the binding has no dead-letter destination"
        );
    }

    /// Carries out the plan for a whole delivery.
    pub(crate) async fn finish(
        &self,
        raw: &S::Raw,
        outcome: Outcome,
        ack: Option<&Acknowledgment>,
        ran: bool,
    ) {
        match self.plan(&outcome, ack, ran) {
            Plan::Nothing => {}
            Plan::Settle(s) => self.settle(raw, s, ack).await,
            Plan::Dropped => {
                self.dropped();
                self.settle(raw, Settlement::Ack, ack).await;
            }
            Plan::DeadLetter { then, fallback } => {
                // Out of line (boxed): the publish's state would otherwise make every
                // delivery's future as large as the dead-letter path needs, moved per poll.
                let next = if Box::pin(self.dead_letter(raw, outcome)).await {
                    then
                } else {
                    fallback
                };
                if let Some(s) = next {
                    self.settle(raw, s, ack).await;
                }
            }
        }
    }

    /// One part of a multi-part delivery failed: dead-letter it alone where the recovery
    /// publishes (and go on), or return the settlement of the whole delivery.
    async fn part_failed(
        &self,
        raw: &S::Raw,
        outcome: Outcome,
        ack: Option<&Acknowledgment>,
    ) -> Option<Plan> {
        match self.plan(&outcome, ack, true) {
            Plan::Nothing | Plan::Settle(Settlement::Ack) => None,
            Plan::Dropped => {
                self.dropped();
                None
            }
            Plan::DeadLetter { fallback, .. } => {
                if self.dead_letter(raw, outcome).await {
                    None
                } else {
                    Some(fallback.map_or(Plan::Nothing, Plan::Settle))
                }
            }
            settle @ Plan::Settle(_) => Some(settle),
        }
    }

    /// Processes a delivery's body and settles it.
    pub(crate) async fn process(&self, raw: Arc<S::Raw>, body: Body) {
        let _in_flight = self.pipeline.meters.in_flight(1);
        let erased = Self::erase(&raw);
        let pipeline = self.pipeline;
        match body {
            Body::One(mut message) => {
                let ack = self.acknowledgment(&raw);
                message.set_acknowledgment(ack.clone());
                let outcome = pipeline.process(message, &erased).await;
                self.finish(&raw, outcome, ack.as_ref(), true).await;
            }
            // The rarer shapes run out of line (boxed), so their state does not size the
            // future of every plain delivery.
            Body::Parts(parts) => Box::pin(self.process_parts(&raw, &erased, parts)).await,
            Body::Undecodable { message, error } => {
                tracing::error!(
                    binding = %pipeline.id.binding,
                    destination = %pipeline.id.destination,
                    error = %error,
                    "delivery cannot be decoded; it takes the error path without calling the function"
                );
                let outcome = Box::pin(pipeline.undecodable(message, &erased, error)).await;
                // Nothing ran, so even in MANUAL mode the runtime settles it.
                self.finish(&raw, outcome, None, false).await;
            }
        }
    }

    /// A producer batch: each part alone; the delivery is acknowledged once every part
    /// succeeded. A failed part is dead-lettered alone where the recovery publishes; otherwise
    /// its settlement settles the whole delivery and the remaining parts are not processed
    /// (Spring's de-batching). Transactional recovery: any failure settles the whole delivery.
    async fn process_parts(
        &self,
        raw: &Arc<S::Raw>,
        erased: &ErasedRaw,
        parts: Vec<crate::Message>,
    ) {
        let ack = self.acknowledgment(raw);
        for mut part in parts {
            part.set_acknowledgment(ack.clone());
            let outcome = self.pipeline.process(part, erased).await;
            if outcome.is_success() {
                continue;
            }
            if self.recovery.transactional() {
                self.finish(raw, outcome, ack.as_ref(), true).await;
                return;
            }
            if let Some(plan) = self.part_failed(raw, outcome, ack.as_ref()).await {
                if let Plan::Settle(s) = plan {
                    self.settle(raw, s, ack.as_ref()).await;
                }
                return;
            }
        }
        self.finish(raw, Outcome::Success, ack.as_ref(), true).await;
    }

    /// `batch-mode`: every part of every delivery goes to the function in one call; each
    /// delivery is then settled by its parts' outcomes, each failed part dead-lettered alone.
    pub(crate) async fn process_batch(&self, deliveries: Vec<Delivery<S::Raw>>) {
        let Some(invoker) = &self.pipeline.batch_invoker else {
            for d in deliveries {
                self.process(d.raw, d.body).await;
            }
            return;
        };
        let _in_flight = self.pipeline.meters.in_flight(deliveries.len());
        let mut owners: Vec<(Arc<S::Raw>, Option<Acknowledgment>)> = Vec::new();
        let mut messages = Vec::new();
        let mut raws = Vec::new();
        let mut owner_of = Vec::new();
        for d in deliveries {
            let raw = d.raw;
            let parts = match d.body {
                Body::One(m) => vec![m],
                Body::Parts(p) => p,
                Body::Undecodable { message, error } => {
                    let erased = Self::erase(&raw);
                    let outcome = self.pipeline.undecodable(message, &erased, error).await;
                    self.finish(&raw, outcome, None, false).await;
                    continue;
                }
            };
            let ack = self.acknowledgment(&raw);
            let index = owners.len();
            for mut m in parts {
                m.set_acknowledgment(ack.clone());
                messages.push(m);
                raws.push(Self::erase(&raw));
                owner_of.push(index);
            }
            owners.push((raw, ack));
        }
        if owners.is_empty() {
            return;
        }
        if messages.is_empty() {
            for (raw, ack) in &owners {
                self.finish(raw, Outcome::Success, ack.as_ref(), true).await;
            }
            return;
        }
        let span = self.pipeline.span();
        #[cfg(feature = "otel")]
        if let Some(first) = messages.first() {
            crate::telemetry::adopt(&span, first.headers());
        }
        span.record("messaging.batch.message_count", messages.len());
        let outcomes = self
            .pipeline
            .process_batch(invoker, messages, &raws)
            .instrument(span)
            .await;
        let mut verdict: Vec<Option<Plan>> = owners.iter().map(|_| None).collect();
        let transactional = self.recovery.transactional();
        let mut first_failure: Option<Outcome> = None;
        for (outcome, index) in outcomes.into_iter().zip(owner_of) {
            if outcome.is_success() {
                continue;
            }
            if transactional {
                first_failure.get_or_insert(outcome);
                continue;
            }
            if verdict[index].is_some() {
                continue;
            }
            let (raw, ack) = &owners[index];
            verdict[index] = self.part_failed(raw, outcome, ack.as_ref()).await;
        }
        if let Some(failure) = first_failure {
            // All or nothing: every delivery of the batch settles as the failure says.
            for (raw, ack) in &owners {
                let outcome = match &failure {
                    Outcome::Exhausted(f) => Outcome::Exhausted(f.clone()),
                    Outcome::RejectRequested(f) => Outcome::RejectRequested(f.clone()),
                    Outcome::RequeueRequested => Outcome::RequeueRequested,
                    Outcome::Acknowledged => Outcome::Acknowledged,
                    Outcome::Success => Outcome::Success,
                };
                self.finish(raw, outcome, ack.as_ref(), true).await;
            }
            return;
        }
        for ((raw, ack), v) in owners.iter().zip(verdict) {
            match v {
                None => self.finish(raw, Outcome::Success, ack.as_ref(), true).await,
                Some(Plan::Settle(s)) => self.settle(raw, s, ack.as_ref()).await,
                Some(_) => {}
            }
        }
    }
}

impl<C: Consumer> Sink<C> {
    pub(crate) fn new(shared: SinkShared<C>) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    fn settling(&self) -> Settling<'_, C> {
        Settling {
            settle: &self.shared.consumer,
            pipeline: &self.shared.pipeline,
            recovery: self.shared.recovery,
            ack_mode: self.shared.ack_mode,
        }
    }

    /// Waits while the binding is paused; `false` when it is stopping.
    async fn pass(&self) -> bool {
        let mut gate = self.shared.gate.clone();
        matches!(
            gate.wait_for(|g| *g != GateState::Paused).await.map(|g| *g),
            Ok(GateState::Open)
        )
    }

    /// A delivery that arrived while the binding stops goes back to the broker.
    async fn hand_back(&self, raw: &C::Raw) {
        if self.shared.ack_mode != AckMode::None {
            self.settling().settle(raw, Settlement::Requeue, None).await;
        }
    }

    /// Processes one delivery and settles it; returns when it is settled. Held while the
    /// binding is paused; handed back ([`Settlement::Requeue`]) when it is stopping.
    pub async fn dispatch(&self, delivery: Delivery<C::Raw>) {
        // Stream and batch functions are boxed, out of line: their state would otherwise size
        // (and be moved with) the future of every plain delivery.
        if let Some(intake) = &self.shared.pipeline.stream {
            return Box::pin(self.dispatch_stream(intake, delivery)).await;
        }
        if self.shared.pipeline.batch_invoker.is_some() {
            // A batch function takes even a single delivery as a batch.
            return Box::pin(self.dispatch_batch(vec![delivery])).await;
        }
        let _inflight = self.shared.inflight.enter();
        if !self.pass().await {
            self.hand_back(&delivery.raw).await;
            return;
        }
        let settling = self.settling();
        let span = consume_span(&self.shared.pipeline, &delivery.body);
        settling
            .process(delivery.raw, delivery.body)
            .instrument(span)
            .await;
    }

    /// Processes deliveries as one batch (`batch-mode=true`: the function receives them in
    /// one `Vec`), then settles each by its own outcome. Without batch mode, one by one.
    pub async fn dispatch_batch(&self, deliveries: Vec<Delivery<C::Raw>>) {
        if let Some(intake) = &self.shared.pipeline.stream {
            for d in deliveries {
                self.dispatch_stream(intake, d).await;
            }
            return;
        }
        let _inflight = self.shared.inflight.enter();
        if !self.pass().await {
            for d in &deliveries {
                self.hand_back(&d.raw).await;
            }
            return;
        }
        self.settling().process_batch(deliveries).await;
    }

    /// Reports the consumer's connection status; the binding's state follows it (a lost
    /// consumer is not `Running`).
    pub fn report(&self, status: SourceStatus) {
        // The binding may be gone already; then nobody needs the report.
        let _ = self
            .shared
            .events
            .send(Event::Status(self.shared.generation, status));
    }

    /// Spawns a fetch task the runtime supervises: if it ends (or panics) while the binding is
    /// running, the runtime logs it at ERROR, marks the binding failed and restarts the
    /// consumer with back-off. Join the handle in [`Consumer::stop`].
    pub fn spawn<F>(&self, name: &str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let events = self.shared.events.clone();
        let stopping = self.shared.stopping.clone();
        let generation = self.shared.generation;
        let name = name.to_owned();
        tokio::spawn(async move {
            let ended = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(()) => format!("consumer task `{name}` ended"),
                Err(payload) => format!(
                    "consumer task `{name}` panicked: {}",
                    crate::FunctionError::panic(&*payload)
                ),
            };
            if !stopping.is_cancelled() {
                let _ = events.send(Event::TaskEnded(generation, ended));
            }
        })
    }

    /// Resolves when the runtime stops this consumer: fetch loops select on it.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.stopping.clone().cancelled_owned()
    }

    /// Whether the runtime is stopping this consumer.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.is_cancelled()
    }

    /// The binding's name, for the consumer's logs.
    pub fn binding(&self) -> &str {
        &self.shared.pipeline.id.binding
    }

    /// The acknowledge mode the runtime applies (the consumer subscribes with broker-side
    /// auto-ack when it is `NONE`).
    pub fn acknowledge_mode(&self) -> AckMode {
        self.shared.ack_mode
    }
}
