//! Consumer bindings: long-lived channels consuming a queue, settling each delivery by the
//! runtime's [`Disposition`], republishing failures to the DLX, and recovering lost connections.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use stream_core::binder::{
    Binding, BindingState, Delivery, Disposition, FailedMessage, InboundHandler,
};
use stream_core::{Acknowledger, Acknowledgment, BinderError, Message, SpecialOutcome};
use tokio::sync::{Mutex, OnceCell, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::binder::Shared;
use crate::config::{AcknowledgeMode, RabbitConsumerProperties};
use crate::error::{RabbitError, amqp_error};
use crate::headers::{self, HeaderPatterns, InboundEnvelope};
use crate::provisioning::{ConsumerTopology, short};

/// The broker's view of a consumed message, attached to each [`Delivery`] as its raw message
/// (error handlers can downcast `Delivery::raw` to it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RabbitRawMessage {
    /// Exchange the message was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Queue it was consumed from.
    pub queue: String,
    /// Delivery tag on its channel.
    pub delivery_tag: u64,
    /// Whether the broker redelivered it.
    pub redelivered: bool,
    /// AMQP properties, headers table included, as received.
    pub properties: BasicProperties,
    /// The body.
    pub body: Bytes,
}

/// Everything a consumer task needs, fixed at bind time.
pub(crate) struct ConsumerContext {
    pub(crate) binding_name: String,
    pub(crate) topology: Arc<ConsumerTopology>,
    pub(crate) props: RabbitConsumerProperties,
    pub(crate) concurrency: u32,
    pub(crate) max_attempts: u32,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) shared: Arc<Shared>,
    pub(crate) handler: Arc<dyn InboundHandler>,
    pub(crate) tag_counter: AtomicU64,
    pub(crate) republish_ok: OnceCell<bool>,
    pub(crate) republish_channel: Mutex<Option<Channel>>,
}

enum LoopEnd {
    StateChanged,
    Lost(String),
}

impl ConsumerContext {
    fn queue(&self) -> &str {
        &self.topology.queue
    }

    fn consumer_tag(&self) -> String {
        match &self.props.consumer_tag_prefix {
            Some(p) if !p.is_empty() => {
                let n = self.tag_counter.fetch_add(1, Ordering::Relaxed);
                format!("{p}#{n}")
            }
            _ => String::new(),
        }
    }

    async fn open(&self) -> Result<(Channel, lapin::Consumer), RabbitError> {
        let conn = self.shared.consumer.get().await?;
        let lapin_err = |context: &str| {
            let context = format!("{context} (queue `{}`)", self.queue());
            move |source| RabbitError::Lapin { context, source }
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(lapin_err("opening a consumer channel"))?;
        let no_ack = self.props.acknowledge_mode == AcknowledgeMode::None;
        if !no_ack {
            channel
                .basic_qos(self.props.prefetch, BasicQosOptions::default())
                .await
                .map_err(lapin_err("setting prefetch"))?;
        }
        let mut args = FieldTable::default();
        if let Some(p) = self.props.consumer_priority {
            args.insert("x-priority".into(), AMQPValue::LongInt(p));
        }
        let consumer = channel
            .basic_consume(
                short(self.queue())?,
                short(&self.consumer_tag())?,
                BasicConsumeOptions {
                    no_ack,
                    exclusive: self.props.exclusive,
                    ..BasicConsumeOptions::default()
                },
                args,
            )
            .await
            .map_err(lapin_err("starting to consume"))?;
        Ok((channel, consumer))
    }

    async fn sleep_or_state(d: Duration, state: &mut watch::Receiver<BindingState>) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = state.changed() => {}
        }
    }

    /// One consumer task: consume while Running, recover when the connection is lost.
    pub(crate) async fn run(
        self: Arc<Self>,
        index: u32,
        mut state: watch::Receiver<BindingState>,
        mut first: Option<oneshot::Sender<Result<(), RabbitError>>>,
    ) {
        let mut missing_attempts = 0u32;
        let mut attempt = 0u64;
        loop {
            loop {
                let s = *state.borrow_and_update();
                match s {
                    BindingState::Running => break,
                    BindingState::Stopped => return,
                    _ => {
                        if state.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            attempt += 1;
            match self.open().await {
                Ok((channel, consumer)) => {
                    missing_attempts = 0;
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Ok(()));
                    }
                    tracing::info!(
                        binding = %self.binding_name,
                        queue = %self.queue(),
                        consumer = index,
                        tag = %consumer.tag(),
                        "consuming"
                    );
                    let end = self.consume(&channel, consumer, &mut state).await;
                    if channel.status().connected() {
                        let _ = channel.close(200, "consumer stopped".into()).await;
                    }
                    match end {
                        LoopEnd::StateChanged => {}
                        LoopEnd::Lost(reason) => {
                            tracing::warn!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                reason = %reason,
                                retry_in = ?self.props.recovery_interval,
                                "consumer lost its channel or connection; recovering"
                            );
                            Self::sleep_or_state(self.props.recovery_interval, &mut state).await;
                        }
                    }
                }
                Err(e) => {
                    let code = match &e {
                        RabbitError::Lapin { source, .. } => amqp_error(source).map(|(c, _)| c),
                        _ => None,
                    };
                    let delay = match code {
                        Some(404) => {
                            missing_attempts += 1;
                            if self.props.missing_queues_fatal
                                && missing_attempts > self.props.queue_declaration_retries
                            {
                                tracing::error!(
                                    binding = %self.binding_name,
                                    queue = %self.queue(),
                                    error = %e,
                                    "queue is missing and missing-queues-fatal is set; consumer stopped"
                                );
                                if let Some(tx) = first.take() {
                                    let _ = tx.send(Err(e));
                                }
                                return;
                            }
                            tracing::warn!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                error = %e,
                                retry_in = ?self.props.failed_declaration_retry_interval,
                                "queue not found; will retry"
                            );
                            if !self.props.missing_queues_fatal
                                && let Some(tx) = first.take()
                            {
                                let _ = tx.send(Ok(()));
                            }
                            self.props.failed_declaration_retry_interval
                        }
                        Some(403 | 405) if self.props.exclusive => {
                            tracing::info!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                "another consumer holds the exclusive consumer; standing by"
                            );
                            if let Some(tx) = first.take() {
                                let _ = tx.send(Ok(()));
                            }
                            self.props.recovery_interval
                        }
                        _ if e.is_transient() => {
                            tracing::warn!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                attempt,
                                error = %e,
                                retry_in = ?self.props.recovery_interval,
                                "RabbitMQ not reachable; will retry"
                            );
                            if let Some(tx) = first.take() {
                                let _ = tx.send(Ok(()));
                            }
                            self.props.recovery_interval
                        }
                        _ => {
                            if let Some(tx) = first.take() {
                                let _ = tx.send(Err(e));
                                return;
                            }
                            tracing::error!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                error = %e,
                                retry_in = ?self.props.recovery_interval,
                                "consumer could not start; will retry"
                            );
                            self.props.recovery_interval
                        }
                    };
                    Self::sleep_or_state(delay, &mut state).await;
                }
            }
        }
    }

    async fn consume(
        &self,
        channel: &Channel,
        mut consumer: lapin::Consumer,
        state: &mut watch::Receiver<BindingState>,
    ) -> LoopEnd {
        let tag = consumer.tag().as_str().to_owned();
        loop {
            tokio::select! {
                biased;
                changed = state.changed() => {
                    if changed.is_err() || *state.borrow_and_update() != BindingState::Running {
                        return LoopEnd::StateChanged;
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let span = tracing::debug_span!(
                            "rabbit.consume",
                            binding = %self.binding_name,
                            queue = %self.queue(),
                            delivery_tag = delivery.delivery_tag
                        );
                        self.handle(channel, &tag, delivery).instrument(span).await;
                    }
                    Some(Err(e)) => return LoopEnd::Lost(e.to_string()),
                    None => return LoopEnd::Lost("the broker cancelled the consumer".to_owned()),
                }
            }
        }
    }

    async fn handle(&self, _channel: &Channel, tag: &str, delivery: lapin::message::Delivery) {
        let lapin::message::Delivery {
            delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let env = InboundEnvelope {
            exchange: exchange.as_str(),
            routing_key: routing_key.as_str(),
            delivery_tag,
            redelivered,
            queue: self.queue(),
            consumer_tag: tag,
        };
        let headers = headers::inbound_headers(&properties, &env, &self.patterns);
        let body = Bytes::from(data);
        let mut message = Message::from_parts(body.clone(), headers);
        let mode = self.props.acknowledge_mode;
        let manual = if mode == AcknowledgeMode::Manual {
            let ack = Acknowledgment::new(Arc::new(RabbitAcknowledger {
                acker: acker.clone(),
                queue: self.queue().to_owned(),
            }));
            message.set_acknowledgment(Some(ack.clone()));
            Some(ack)
        } else {
            None
        };
        let raw = Arc::new(RabbitRawMessage {
            exchange: exchange.as_str().to_owned(),
            routing_key: routing_key.as_str().to_owned(),
            queue: self.queue().to_owned(),
            delivery_tag,
            redelivered,
            properties,
            body,
        });
        let disposition = self
            .handler
            .handle(Delivery::new(message).with_raw(raw.clone() as Arc<dyn Any + Send + Sync>))
            .await;
        let settle = match mode {
            AcknowledgeMode::None => Settle::Nothing,
            AcknowledgeMode::Auto => Settle::Acker(&acker),
            AcknowledgeMode::Manual => match &manual {
                Some(ack) if !ack.is_settled() => Settle::Manual(ack),
                _ => Settle::Nothing,
            },
        };
        self.settle(disposition, settle, &raw).await;
    }

    async fn settle(&self, disposition: Disposition, settle: Settle<'_>, raw: &RabbitRawMessage) {
        let outcome = match disposition {
            Disposition::Ack => match settle {
                Settle::Acker(_) => settle.ack().await,
                // MANUAL: the function settles.
                _ => Ok(()),
            },
            Disposition::Reject { requeue } => settle.reject(requeue).await,
            Disposition::Recover(failed) => self.recover(failed, settle, raw).await,
            #[allow(unreachable_patterns, reason = "Disposition is #[non_exhaustive]")]
            _ => settle.reject(self.props.requeue_rejected).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(
                binding = %self.binding_name,
                queue = %self.queue(),
                delivery_tag = raw.delivery_tag,
                error = %e,
                "settling the delivery failed; the broker redelivers it after the channel closes"
            );
        }
    }

    async fn recover(
        &self,
        failed: FailedMessage,
        settle: Settle<'_>,
        raw: &RabbitRawMessage,
    ) -> Result<(), BinderError> {
        match failed.error.special() {
            Some(SpecialOutcome::ImmediateAcknowledge) => return settle.ack().await,
            Some(SpecialOutcome::RejectAndDontRequeue) => return settle.reject(false).await,
            _ => {}
        }
        if self.props.republish_to_dlq && self.republish_enabled().await {
            match self.republish(&failed, raw).await {
                Ok(()) => {
                    tracing::debug!(
                        queue = %self.queue(),
                        dlx = %self.topology.dead_letter_exchange,
                        routing_key = %self.topology.republish_routing_key,
                        "republished failed message to the dead-letter exchange"
                    );
                    return settle.ack().await;
                }
                Err(e) => {
                    tracing::error!(
                        binding = %self.binding_name,
                        queue = %self.queue(),
                        dlx = %self.topology.dead_letter_exchange,
                        error = %e,
                        "republishing a failed message to the DLX failed; rejecting it"
                    );
                    return settle.reject(self.props.requeue_rejected).await;
                }
            }
        }
        let requeue = if self.max_attempts > 1 {
            false
        } else {
            self.props.requeue_rejected
        };
        settle.reject(requeue).await
    }

    /// Whether republishing is possible: with auto-bind-dlq the DLX is declared; otherwise
    /// check once that it exists, and disable republishing with a warning if not.
    async fn republish_enabled(&self) -> bool {
        if self.topology.dead_letter_queue.is_some() {
            return true;
        }
        let result = self
            .republish_ok
            .get_or_try_init(|| async {
                let conn = self.shared.publisher.get().await?;
                let exists =
                    crate::provisioning::exchange_exists(&conn, &self.topology.dead_letter_exchange)
                        .await?;
                if !exists {
                    tracing::warn!(
                        binding = %self.binding_name,
                        dlx = %self.topology.dead_letter_exchange,
                        "republish-to-dlq is set but the dead-letter exchange does not exist and auto-bind-dlq is false; \
                         republishing is disabled for this binding (failed messages are rejected instead)"
                    );
                }
                Ok::<bool, RabbitError>(exists)
            })
            .await;
        match result {
            Ok(b) => *b,
            Err(e) => {
                tracing::warn!(error = %e, "could not check the dead-letter exchange; rejecting instead of republishing");
                false
            }
        }
    }

    async fn republish_channel(&self) -> Result<(Channel, u32), RabbitError> {
        let conn = self.shared.publisher.get().await?;
        let frame_max = conn.configuration().frame_max();
        let mut guard = self.republish_channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok((ch.clone(), frame_max));
        }
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| RabbitError::Lapin {
                context: "opening the republish channel".to_owned(),
                source: e,
            })?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| RabbitError::Lapin {
                context: "enabling publisher confirms on the republish channel".to_owned(),
                source: e,
            })?;
        *guard = Some(ch.clone());
        Ok((ch, frame_max))
    }

    async fn republish(
        &self,
        failed: &FailedMessage,
        raw: &RabbitRawMessage,
    ) -> Result<(), RabbitError> {
        let (channel, frame_max) = self.republish_channel().await?;
        let mut table: FieldTable = raw.properties.headers().clone().unwrap_or_default();
        let trace = failed.error.render_chain();
        let (trace, truncated) =
            headers::truncate_stacktrace(&trace, frame_max, self.props.frame_max_headroom);
        if truncated {
            tracing::warn!(
                queue = %self.queue(),
                frame_max,
                frame_max_headroom = self.props.frame_max_headroom,
                "stack trace in republished message header truncated due to frame_max limitations; \
                 consider increasing frame_max on the broker or reducing the error chain"
            );
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
        let retry_count = table
            .inner()
            .get("retry-count")
            .map(headers::from_amqp)
            .and_then(|v| v.to_i64_lenient())
            .unwrap_or(0);
        table.insert("x-exception-stacktrace".into(), text(&trace));
        table.insert(
            "x-exception-message".into(),
            text(&failed.error.root_cause_message()),
        );
        table.insert("x-original-exchange".into(), text(&raw.exchange));
        table.insert("x-original-routingKey".into(), text(&raw.routing_key));
        table.insert(
            "retry-count".into(),
            AMQPValue::LongInt(i32::try_from(retry_count + 1).unwrap_or(i32::MAX)),
        );
        let props = raw
            .properties
            .clone()
            .with_headers(table)
            .with_delivery_mode(self.props.republish_delivery_mode.amqp_value());
        let exchange: ShortString = short(&self.topology.dead_letter_exchange)?;
        let routing_key: ShortString = short(&self.topology.republish_routing_key)?;
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                &raw.body,
                props,
            )
            .await
            .map_err(|e| RabbitError::Lapin {
                context: format!("republishing to `{}`", self.topology.dead_letter_exchange),
                source: e,
            })?
            .await
            .map_err(|e| RabbitError::Lapin {
                context: format!(
                    "waiting for the confirm of a republish to `{}`",
                    self.topology.dead_letter_exchange
                ),
                source: e,
            })?;
        if confirm.is_nack() {
            return Err(RabbitError::Declaration {
                entity: format!(
                    "republish to exchange `{}`",
                    self.topology.dead_letter_exchange
                ),
                reason: "the broker nacked the message".to_owned(),
            });
        }
        Ok(())
    }
}

enum Settle<'a> {
    Nothing,
    Acker(&'a lapin::Acker),
    Manual(&'a Acknowledgment),
}

impl Settle<'_> {
    async fn ack(&self) -> Result<(), BinderError> {
        match self {
            Settle::Nothing => Ok(()),
            Settle::Acker(a) => a
                .ack(BasicAckOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| BinderError::Other(Box::new(e))),
            Settle::Manual(a) => a.ack().await,
        }
    }

    async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
        match self {
            Settle::Nothing => Ok(()),
            Settle::Acker(a) => a
                .reject(BasicRejectOptions { requeue })
                .await
                .map(|_| ())
                .map_err(|e| BinderError::Other(Box::new(e))),
            Settle::Manual(a) => a.reject(requeue).await,
        }
    }
}

/// Settles one delivery for `acknowledge-mode: MANUAL`.
struct RabbitAcknowledger {
    acker: lapin::Acker,
    queue: String,
}

#[async_trait]
impl Acknowledger for RabbitAcknowledger {
    async fn ack(&self) -> Result<(), BinderError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| BinderError::Send {
                destination: self.queue.clone(),
                reason: "basic.ack failed".to_owned(),
                source: Some(Box::new(e)),
            })
    }

    async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
        self.acker
            .reject(BasicRejectOptions { requeue })
            .await
            .map(|_| ())
            .map_err(|e| BinderError::Send {
                destination: self.queue.clone(),
                reason: "basic.reject failed".to_owned(),
                source: Some(Box::new(e)),
            })
    }
}

/// A consumer binding: `concurrency` consumer tasks, each with its own channel.
pub(crate) struct RabbitConsumerBinding {
    ctx: Arc<ConsumerContext>,
    state: watch::Sender<BindingState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RabbitConsumerBinding {
    /// Starts the tasks; returns once the first consumer started, or failed fatally.
    pub(crate) async fn start_new(ctx: Arc<ConsumerContext>) -> Result<Self, BinderError> {
        let (state, _) = watch::channel(BindingState::Running);
        let binding = RabbitConsumerBinding {
            ctx,
            state,
            tasks: Mutex::new(Vec::new()),
        };
        binding.spawn_tasks().await?;
        Ok(binding)
    }

    async fn spawn_tasks(&self) -> Result<(), BinderError> {
        let mut tasks = self.tasks.lock().await;
        let (tx, rx) = oneshot::channel();
        let mut first = Some(tx);
        for i in 0..self.ctx.concurrency.max(1) {
            let ctx = self.ctx.clone();
            let rx_state = self.state.subscribe();
            let report = if i == 0 { first.take() } else { None };
            tasks.push(tokio::spawn(ctx.run(i, rx_state, report)));
        }
        drop(tasks);
        match rx.await {
            Ok(Err(e)) => {
                self.state.send_replace(BindingState::Stopped);
                self.join().await;
                Err(e.into_binder_error(&self.ctx.topology.queue))
            }
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    }

    async fn join(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[async_trait]
impl Binding for RabbitConsumerBinding {
    fn name(&self) -> &str {
        &self.ctx.binding_name
    }

    fn state(&self) -> BindingState {
        *self.state.borrow()
    }

    async fn start(&self) -> Result<(), BinderError> {
        match self.state() {
            BindingState::Running => Ok(()),
            BindingState::Paused => {
                self.state.send_replace(BindingState::Running);
                Ok(())
            }
            _ => {
                self.join().await;
                self.state.send_replace(BindingState::Running);
                self.spawn_tasks().await
            }
        }
    }

    async fn stop(&self) -> Result<(), BinderError> {
        self.state.send_replace(BindingState::Stopped);
        self.join().await;
        Ok(())
    }

    async fn pause(&self) -> Result<(), BinderError> {
        if self.state() == BindingState::Running {
            self.state.send_replace(BindingState::Paused);
        }
        Ok(())
    }

    async fn resume(&self) -> Result<(), BinderError> {
        if self.state() == BindingState::Paused {
            self.state.send_replace(BindingState::Running);
        }
        Ok(())
    }
}
