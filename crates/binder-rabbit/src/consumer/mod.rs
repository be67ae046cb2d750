//! Consumer bindings: `concurrency` tasks (scaled up to `max-concurrency`), each consuming the
//! queue on its own channel and handing deliveries to the runtime, which decides how each is
//! settled; this module settles as told and republishes dead letters.

mod context;
mod fetch;
mod raw;
mod settle;
mod unpack;

use std::sync::{Arc, Mutex};

use stream_core::BinderError;
use stream_core::binder::{Consumer, DeadLetter, Recovery, Settle, Settlement, Sink};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub(crate) use context::ConsumerContext;
pub(crate) use raw::Mapping;
pub use raw::RabbitRawMessage;
pub(crate) use settle::Settler;

/// The consumer of a RabbitMQ binding.
pub struct RabbitConsumer {
    inner: Arc<Inner>,
}

/// What the consumer's tasks share.
pub(crate) struct Inner {
    ctx: Arc<ConsumerContext>,
    /// The consumer tasks (the scaler's too).
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Paused: the tasks cancel their subscriptions until resumed (Spring stops the container).
    paused: watch::Sender<bool>,
}

impl std::fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("binding", &self.inner.ctx.binding)
            .field("queue", &self.inner.ctx.queue())
            .finish_non_exhaustive()
    }
}

impl RabbitConsumer {
    pub(crate) fn new(ctx: ConsumerContext) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                tasks: Mutex::new(Vec::new()),
                paused: watch::Sender::new(false),
            }),
        }
    }
}

impl Inner {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one more consumer task (the scaler already counted it).
    pub(crate) fn add_consumer(self: &Arc<Self>, sink: &Sink<RabbitConsumer>) {
        let ctx = &self.ctx;
        let index = ctx
            .scaler
            .as_ref()
            .map_or(0, |s| s.running())
            .saturating_sub(1);
        tracing::info!(
            binding = %ctx.binding,
            queue = %ctx.queue(),
            consumers = index + 1,
            max = ctx.props.max_concurrency,
            "busy: starting another consumer (max-concurrency)"
        );
        let task = sink.spawn(
            "rabbit-consumer",
            fetch::run(Arc::clone(ctx), Arc::clone(self), index, sink.clone(), None),
        );
        let mut tasks = self.tasks();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

impl Settle for RabbitConsumer {
    type Raw = RabbitRawMessage;

    fn recovery(&self) -> Recovery {
        self.inner.ctx.settler.recovery
    }

    async fn settle(
        &self,
        raw: &RabbitRawMessage,
        settlement: Settlement,
    ) -> Result<(), BinderError> {
        self.inner.ctx.settler.settle(raw, settlement).await
    }

    async fn dead_letter(
        &self,
        raw: &RabbitRawMessage,
        letter: &DeadLetter,
    ) -> Result<(), BinderError> {
        self.inner.ctx.settler.dead_letter(raw, letter).await
    }
}

impl Consumer for RabbitConsumer {
    /// Starts `concurrency` tasks; returns once the first subscribed, or failed for good.
    async fn start(&self, sink: Sink<Self>) -> Result<(), BinderError> {
        let inner = &self.inner;
        let ctx = &inner.ctx;
        // A (re)start consumes; the runtime pauses afterwards when the binding is paused.
        inner.paused.send_replace(false);
        if let Some(scaler) = &ctx.scaler {
            scaler.reset();
        }
        let (tx, rx) = oneshot::channel();
        let mut first = Some(tx);
        {
            let mut tasks = inner.tasks();
            for i in 0..ctx.concurrency.max(1) {
                let report = if i == 0 { first.take() } else { None };
                tasks.push(sink.spawn(
                    "rabbit-consumer",
                    fetch::run(Arc::clone(ctx), Arc::clone(inner), i, sink.clone(), report),
                ));
            }
        }
        match rx.await {
            Ok(Err(e)) => Err(e.into_binder_error(ctx.queue())),
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    }

    /// The runtime signalled the tasks to stop (through the sink); waits until they ended.
    async fn stop(&self) -> Result<(), BinderError> {
        loop {
            let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks());
            if tasks.is_empty() {
                return Ok(());
            }
            for t in tasks {
                if let Err(e) = t.await {
                    tracing::error!(binding = %self.inner.ctx.binding, error = %e, "consumer task failed");
                }
            }
        }
    }

    /// Cancels the subscriptions (the broker stops sending; what it sent and nobody took yet
    /// is requeued with the channel); deliveries being processed finish first. An auto-delete
    /// queue (anonymous, or `durable-subscription=false`) would go with its last consumer, and
    /// what is published meanwhile with it: its subscriptions stay and the runtime holds what
    /// arrives.
    async fn pause(&self) -> Result<(), BinderError> {
        if self.inner.ctx.deleted_without_consumers() {
            return Ok(());
        }
        self.inner.paused.send_replace(true);
        Ok(())
    }

    /// Subscribes again.
    async fn resume(&self) -> Result<(), BinderError> {
        self.inner.paused.send_replace(false);
        Ok(())
    }
}
