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
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use stream_core::binder::{
    Binding, BindingState, Delivery, Disposition, FailedMessage, InboundHandler,
};
use stream_core::{
    Acknowledger, Acknowledgment, BinderError, FunctionError, Message, SpecialOutcome,
};
use tokio::sync::{Mutex, OnceCell, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::batching;
use crate::binder::Shared;
use crate::compression;
use crate::config::RabbitConsumerProperties;
use crate::error::{RabbitError, amqp_error};
use crate::headers::{self, HeaderPatterns, InboundEnvelope};
use crate::provisioning::{ConsumerTopology, short};
use crate::scaling::{Activity, ScaleStep, Scaler};
use crate::transaction::{self, TxContext};
use stream_core::AckMode;

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
    /// `max-concurrency` above `concurrency`: consumers are added and retired by load.
    pub(crate) scaler: Option<Scaler>,
    /// Consumer tasks the scaler added (joined with the binding's own).
    pub(crate) scaled_tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    pub(crate) max_attempts: u32,
    /// `batch-mode`: the function takes a `Vec`.
    pub(crate) batch_mode: bool,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) shared: Arc<Shared>,
    /// The runtime's handler (`None` for polled consumers: each poll brings its own).
    pub(crate) handler: Option<Arc<dyn InboundHandler>>,
    pub(crate) tag_counter: AtomicU64,
    pub(crate) republish_ok: OnceCell<bool>,
    pub(crate) republish_channel: Mutex<Option<Channel>>,
}

enum LoopEnd {
    StateChanged,
    Lost(String),
    /// Idle with more consumers than `concurrency`: this one stops (`max-concurrency`).
    Retired,
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

    /// The connection to consume on: with queue affinity, one to the node that hosts the queue
    /// (asked of the management API at each (re)connect); otherwise, or when that fails, the
    /// binder's consumer connection.
    async fn connection(&self) -> Result<Arc<lapin::Connection>, RabbitError> {
        if let Some(affinity) = &self.shared.affinity
            && !self.topology.anonymous
            && let Some(index) = affinity
                .locator
                .locate(&self.shared.connection.virtual_host, self.queue())
                .await
            && let Some(slot) = affinity.slots.get(index)
        {
            match slot.get().await {
                Ok(conn) => {
                    tracing::debug!(binding = %self.binding_name, queue = %self.queue(),
                        address = %slot.target(), "queue affinity: consuming on the queue's node");
                    return Ok(conn);
                }
                Err(e) => tracing::warn!(binding = %self.binding_name, queue = %self.queue(),
                    error = %e, "queue affinity: the queue's node is unreachable; using the default connection"),
            }
        }
        self.shared.consumer.get().await
    }

    async fn open(&self) -> Result<(Channel, lapin::Consumer), RabbitError> {
        let conn = self.connection().await?;
        let lapin_err = |context: &str| {
            let context = format!("{context} (queue `{}`)", self.queue());
            move |source| RabbitError::Lapin { context, source }
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(lapin_err("opening a consumer channel"))?;
        let no_ack = self.props.acknowledge_mode == AckMode::None;
        if !no_ack {
            let prefetch = if self.batch_mode && self.props.enable_batching {
                self.props
                    .prefetch
                    .max(u16::try_from(self.props.batch_size).unwrap_or(u16::MAX))
            } else {
                self.props.prefetch
            };
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(lapin_err("setting prefetch"))?;
        }
        if self.props.transacted && !no_ack {
            channel
                .tx_select()
                .await
                .map_err(lapin_err("tx.select on the consumer channel"))?;
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
                        LoopEnd::Retired => {
                            tracing::info!(
                                binding = %self.binding_name,
                                queue = %self.queue(),
                                consumer = index,
                                consumers = self.scaler.as_ref().map_or(0, Scaler::running),
                                "idle consumer stopped (scaling down toward concurrency)"
                            );
                            return;
                        }
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
        self: &Arc<Self>,
        channel: &Channel,
        mut consumer: lapin::Consumer,
        state: &mut watch::Receiver<BindingState>,
    ) -> LoopEnd {
        let tag = consumer.tag().as_str().to_owned();
        let mut activity = Activity::default();
        let scaling = self.scaler.is_some();
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
                        let Some(handler) = &self.handler else { continue };
                        if self.batch_mode && self.props.enable_batching {
                            // Spring's consumer-side batching: up to batch-size deliveries, each
                            // waited for at most receive-timeout.
                            let mut batch = vec![delivery];
                            while batch.len() < self.props.batch_size as usize {
                                match tokio::time::timeout(self.props.receive_timeout, consumer.next()).await {
                                    Ok(Some(Ok(d))) => batch.push(d),
                                    Ok(Some(Err(e))) => return LoopEnd::Lost(e.to_string()),
                                    Ok(None) => return LoopEnd::Lost("the broker cancelled the consumer".to_owned()),
                                    Err(_) => break,
                                }
                            }
                            self.handle_batch(&**handler, channel, &tag, batch).instrument(span).await;
                        } else {
                            self.handle(&**handler, channel, &tag, delivery).instrument(span).await;
                        }
                        if let Some(scaler) = &self.scaler
                            && scaler.on_message(&mut activity) == ScaleStep::Add
                        {
                            self.add_consumer(state.clone());
                        }
                    }
                    Some(Err(e)) => return LoopEnd::Lost(e.to_string()),
                    None => return LoopEnd::Lost("the broker cancelled the consumer".to_owned()),
                },
                _ = tokio::time::sleep(self.props.receive_timeout), if scaling => {
                    if let Some(scaler) = &self.scaler
                        && scaler.on_idle(&mut activity) == ScaleStep::Retire
                    {
                        if let Err(e) = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
                            tracing::debug!(binding = %self.binding_name, error = %e, "basic.cancel failed");
                        }
                        self.drain(channel, &tag, &mut consumer).await;
                        return LoopEnd::Retired;
                    }
                }
            }
        }
    }

    /// Starts one more consumer task (the scaler already counted it).
    fn add_consumer(self: &Arc<Self>, state: watch::Receiver<BindingState>) {
        let index = self
            .scaler
            .as_ref()
            .map_or(0, Scaler::running)
            .saturating_sub(1);
        tracing::info!(
            binding = %self.binding_name,
            queue = %self.queue(),
            consumers = index + 1,
            max = self.props.max_concurrency,
            "busy: starting another consumer (max-concurrency)"
        );
        let task = tokio::spawn(Arc::clone(self).run(index, state, None));
        let mut tasks = match self.scaled_tasks.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// After `basic.cancel`: handles the deliveries the broker sent before it stopped, so that
    /// a retiring consumer leaves nothing to redeliver.
    async fn drain(&self, channel: &Channel, tag: &str, consumer: &mut lapin::Consumer) {
        let Some(handler) = &self.handler else { return };
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(self.props.receive_timeout, consumer.next()).await
        {
            self.handle(&**handler, channel, tag, delivery).await;
        }
    }

    /// Maps a delivery: raw message, `Acknowledgment` for MANUAL, decompression and de-batching.
    fn prepare(&self, tag: &str, delivery: lapin::message::Delivery) -> Prepared {
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
        let raw = RabbitRawMessage {
            exchange: exchange.as_str().to_owned(),
            routing_key: routing_key.as_str().to_owned(),
            queue: self.queue().to_owned(),
            delivery_tag,
            redelivered,
            properties,
            body: Bytes::from(data),
        };
        let manual = (self.props.acknowledge_mode == AckMode::Manual).then(|| {
            Acknowledgment::new(Arc::new(RabbitAcknowledger {
                acker: acker.clone(),
                queue: self.queue().to_owned(),
            }))
        });
        let env = InboundEnvelope {
            exchange: exchange.as_str(),
            routing_key: routing_key.as_str(),
            delivery_tag,
            redelivered,
            queue: self.queue(),
            consumer_tag: tag,
        };
        let unpacked = unpack(&raw, self.shared.binder.max_decompressed_size);
        let props = match &unpacked {
            Ok(u) => u.properties(&raw),
            Err(_) => &raw.properties,
        };
        let headers = headers::inbound_headers(props, &env, &self.patterns);
        Prepared {
            raw: Arc::new(raw),
            acker,
            manual,
            headers,
            unpacked,
        }
    }

    fn settle_for<'a>(&self, p: &'a Prepared) -> Settle<'a> {
        match self.props.acknowledge_mode {
            AckMode::None => Settle::Nothing,
            AckMode::Auto => Settle::Acker(&p.acker),
            AckMode::Manual => match &p.manual {
                Some(ack) if !ack.is_settled() => Settle::Manual(ack),
                _ => Settle::Nothing,
            },
            // AckMode is #[non_exhaustive]; a future mode settles like AUTO.
            _ => Settle::Acker(&p.acker),
        }
    }

    /// The delivery as the runtime sees it when it is the raw message unchanged: the headers
    /// move into the message and the raw message is shared, nothing is copied.
    fn whole(&self, p: &mut Prepared) -> (Delivery, Arc<RabbitRawMessage>) {
        let headers = std::mem::take(&mut p.headers);
        let mut message = Message::from_parts(p.raw.body.clone(), headers);
        message.set_acknowledgment(p.manual.clone());
        let raw = Arc::clone(&p.raw);
        (
            Delivery::new(message).with_raw(Arc::clone(&raw) as Arc<dyn Any + Send + Sync>),
            raw,
        )
    }

    /// A part of a delivery as the runtime sees it, and its raw message (for republishing).
    fn part(
        &self,
        p: &Prepared,
        props: &BasicProperties,
        body: Bytes,
    ) -> (Delivery, Arc<RabbitRawMessage>) {
        let mut message = Message::from_parts(body.clone(), p.headers.clone());
        message.set_acknowledgment(p.manual.clone());
        let mut raw = RabbitRawMessage::clone(&p.raw);
        raw.properties = props.clone();
        raw.body = body;
        let raw = Arc::new(raw);
        (
            Delivery::new(message).with_raw(raw.clone() as Arc<dyn Any + Send + Sync>),
            raw,
        )
    }

    /// Every part of a delivery (one for a plain or decompressed delivery).
    fn parts(&self, p: &mut Prepared) -> Vec<(Delivery, Arc<RabbitRawMessage>)> {
        let Ok(u) = &p.unpacked else {
            return Vec::new();
        };
        if u.is_plain() {
            return vec![self.whole(p)];
        }
        let props = u.properties(&p.raw);
        u.parts
            .iter()
            .map(|body| self.part(p, props, body.clone()))
            .collect()
    }

    /// A delivery that cannot be decompressed or de-batched: no function call; Spring's
    /// `ListenerExecutionFailedException` path (republish to the DLQ, or reject).
    async fn undecodable(
        &self,
        handler: &dyn InboundHandler,
        p: &Prepared,
        error: &RabbitError,
        tx: Option<&Channel>,
    ) {
        tracing::error!(
            binding = %self.binding_name,
            queue = %self.queue(),
            delivery_tag = p.raw.delivery_tag,
            error = %error,
            "message cannot be decoded; sending it to the error path"
        );
        let delivery = Delivery::new(Message::from_parts(p.raw.body.clone(), p.headers.clone()))
            .with_raw(Arc::clone(&p.raw) as Arc<dyn Any + Send + Sync>);
        let error = FunctionError::msg(error.to_string()).with_kind("MessageConversionException");
        // The error channel sees it; the disposition (DLQ unless an error handler took it)
        // settles it. Nothing ran, so even in MANUAL mode the binder settles.
        let verdict = match handler.handle_failure(delivery, error).await {
            Disposition::Ack => Some(Verdict::Ack),
            other => self.verdict(other, &p.raw, tx).await,
        };
        self.apply(verdict, self.settle_for(p), &p.raw, tx).await;
    }

    /// Runs the handler inside the consumer's transaction when transacted.
    async fn in_tx<F: std::future::Future>(&self, tx: Option<&Channel>, f: F) -> F::Output {
        match tx {
            Some(ch) => {
                let ctx = TxContext {
                    binder: Arc::as_ptr(&self.shared) as usize,
                    channel: ch.clone(),
                };
                transaction::scope(ctx, f).await
            }
            None => f.await,
        }
    }

    /// Handles one delivery from `basic.consume` or `basic.get`: decompresses, de-batches,
    /// hands the message(s) to `handler` (inside the consumer's transaction when transacted),
    /// then settles.
    pub(crate) async fn handle(
        &self,
        handler: &dyn InboundHandler,
        channel: &Channel,
        tag: &str,
        delivery: lapin::message::Delivery,
    ) {
        if self.batch_mode {
            return self
                .handle_batch(handler, channel, tag, vec![delivery])
                .await;
        }
        let tx = self.props.transacted.then_some(channel);
        let mut p = self.prepare(tag, delivery);
        let unpacked = match &p.unpacked {
            Ok(u) => u,
            Err(e) => return self.undecodable(handler, &p, e, tx).await,
        };
        if !unpacked.batched {
            let (delivery, part) = if unpacked.is_plain() {
                self.whole(&mut p)
            } else {
                let body = unpacked.parts.first().cloned().unwrap_or_default();
                self.part(&p, unpacked.properties(&p.raw), body)
            };
            let disposition = self.in_tx(tx, handler.handle(delivery)).await;
            self.rollback_unless_ack(&disposition, tx).await;
            let verdict = self.verdict(disposition, &part, tx).await;
            self.apply(verdict, self.settle_for(&p), &part, tx).await;
            return;
        }
        // A producer batch: each part alone; the message is acked once every part succeeded.
        // A failed part is republished alone when it can be; otherwise its outcome settles the
        // whole message and the remaining parts are not processed (Spring's de-batching loop).
        for body in unpacked.parts.iter().cloned() {
            let (delivery, part) = self.part(&p, unpacked.properties(&p.raw), body);
            let disposition = self.in_tx(tx, handler.handle(delivery)).await;
            if matches!(disposition, Disposition::Ack) {
                continue;
            }
            if tx.is_some() {
                // Transacted: all or nothing. Roll back, then recover the whole message.
                self.rollback_unless_ack(&disposition, tx).await;
                let verdict = self.verdict(disposition, &p.raw, tx).await;
                self.apply(verdict, self.settle_for(&p), &p.raw, tx).await;
                return;
            }
            match self.verdict(disposition, &part, tx).await {
                Some(Verdict::Ack) | None => continue,
                verdict => {
                    self.apply(verdict, self.settle_for(&p), &part, tx).await;
                    return;
                }
            }
        }
        let verdict = (self.props.acknowledge_mode != AckMode::Manual).then_some(Verdict::Ack);
        self.apply(verdict, self.settle_for(&p), &p.raw, tx).await;
    }

    /// `batch-mode`: every part of every delivery (a producer batch's parts, or with
    /// `enable-batching` several deliveries) goes to the function in one `Vec`; each delivery is
    /// then settled by its parts' dispositions, each failed part republished to the DLQ alone.
    pub(crate) async fn handle_batch(
        &self,
        handler: &dyn InboundHandler,
        channel: &Channel,
        tag: &str,
        deliveries: Vec<lapin::message::Delivery>,
    ) {
        let tx = self.props.transacted.then_some(channel);
        let mut prepared = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let p = self.prepare(tag, d);
            if let Err(e) = &p.unpacked {
                self.undecodable(handler, &p, e, tx).await;
                continue;
            }
            prepared.push(p);
        }
        let mut batch = Vec::new();
        let mut owners = Vec::new();
        for (i, p) in prepared.iter_mut().enumerate() {
            for (delivery, raw) in self.parts(p) {
                batch.push(delivery);
                owners.push((i, raw));
            }
        }
        if batch.is_empty() {
            for p in &prepared {
                self.apply(Some(Verdict::Ack), self.settle_for(p), &p.raw, tx)
                    .await;
            }
            return;
        }
        let dispositions = self.in_tx(tx, handler.handle_batch(batch)).await;
        if tx.is_some() && dispositions.iter().any(|d| !matches!(d, Disposition::Ack)) {
            self.rollback_unless_ack(&Disposition::Reject { requeue: false }, tx)
                .await;
        }
        let mut verdicts: Vec<Option<Verdict>> = prepared
            .iter()
            .map(|_| (self.props.acknowledge_mode != AckMode::Manual).then_some(Verdict::Ack))
            .collect();
        let mut dispositions = dispositions.into_iter();
        for (i, raw) in owners {
            // A missing disposition (a handler breaking the contract) requeues per the rules.
            let d = dispositions.next().unwrap_or(Disposition::Reject {
                requeue: self.props.requeue_rejected,
            });
            if matches!(verdicts[i], Some(Verdict::Reject(_))) {
                continue;
            }
            match self.verdict(d, &raw, tx).await {
                Some(Verdict::Ack) | None => {}
                reject => verdicts[i] = reject,
            }
        }
        for (p, verdict) in prepared.iter().zip(verdicts) {
            self.apply_settle(verdict, self.settle_for(p), &p.raw).await;
        }
        if let Some(ch) = tx {
            self.commit(ch).await;
        }
    }

    /// Transacted: a failed delivery's publishes are discarded before it is settled.
    async fn rollback_unless_ack(&self, disposition: &Disposition, tx: Option<&Channel>) {
        if let Some(ch) = tx
            && !matches!(disposition, Disposition::Ack)
            && let Err(e) = ch.tx_rollback().await
        {
            tracing::warn!(binding = %self.binding_name, error = %e, "tx.rollback failed");
        }
    }

    /// How to settle after the runtime's disposition (`None`: the function settles, MANUAL).
    async fn verdict(
        &self,
        disposition: Disposition,
        raw: &RabbitRawMessage,
        tx: Option<&Channel>,
    ) -> Option<Verdict> {
        match disposition {
            Disposition::Ack => {
                (self.props.acknowledge_mode != AckMode::Manual).then_some(Verdict::Ack)
            }
            Disposition::Reject { requeue } => Some(Verdict::Reject(requeue)),
            Disposition::Recover(failed) => Some(self.recover(failed, raw, tx).await),
            #[allow(unreachable_patterns, reason = "Disposition is #[non_exhaustive]")]
            _ => Some(Verdict::Reject(self.props.requeue_rejected)),
        }
    }

    /// Settles (and commits, when transacted).
    async fn apply(
        &self,
        verdict: Option<Verdict>,
        settle: Settle<'_>,
        raw: &RabbitRawMessage,
        tx: Option<&Channel>,
    ) {
        self.apply_settle(verdict, settle, raw).await;
        if let Some(ch) = tx {
            self.commit(ch).await;
        }
    }

    async fn apply_settle(
        &self,
        verdict: Option<Verdict>,
        settle: Settle<'_>,
        raw: &RabbitRawMessage,
    ) {
        let outcome = match verdict {
            Some(Verdict::Ack) => settle.ack().await,
            Some(Verdict::Reject(requeue)) => settle.reject(requeue).await,
            None => Ok(()),
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

    async fn commit(&self, ch: &Channel) {
        if let Err(e) = ch.tx_commit().await {
            tracing::warn!(
                binding = %self.binding_name,
                queue = %self.queue(),
                error = %e,
                "tx.commit failed; the delivery and its publishes are rolled back"
            );
        }
    }

    /// Retries are exhausted: republish to the DLX, or reject.
    async fn recover(
        &self,
        failed: FailedMessage,
        raw: &RabbitRawMessage,
        tx: Option<&Channel>,
    ) -> Verdict {
        match failed.error.special() {
            Some(SpecialOutcome::ImmediateAcknowledge) => return Verdict::Ack,
            Some(SpecialOutcome::RejectAndDontRequeue) => return Verdict::Reject(false),
            Some(SpecialOutcome::Requeue) => return Verdict::Reject(true),
            _ => {}
        }
        if self.props.republish_to_dlq && self.republish_enabled().await {
            match self.republish(&failed, raw, tx).await {
                Ok(()) => {
                    tracing::debug!(
                        queue = %self.queue(),
                        dlx = %self.topology.dead_letter_exchange,
                        routing_key = %self.topology.republish_routing_key,
                        "republished failed message to the dead-letter exchange"
                    );
                    return Verdict::Ack;
                }
                Err(e) => {
                    tracing::error!(
                        binding = %self.binding_name,
                        queue = %self.queue(),
                        dlx = %self.topology.dead_letter_exchange,
                        error = %e,
                        "republishing a failed message to the DLX failed; rejecting it"
                    );
                    return Verdict::Reject(self.props.requeue_rejected);
                }
            }
        }
        let requeue = if self.max_attempts > 1 {
            false
        } else {
            self.props.requeue_rejected
        };
        Verdict::Reject(requeue)
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
        tx: Option<&Channel>,
    ) -> Result<(), RabbitError> {
        // Transacted: the republish joins the consumer's transaction (committed with the ack).
        let (channel, frame_max) = match tx {
            Some(ch) => (
                ch.clone(),
                self.shared
                    .consumer
                    .current()
                    .await
                    .map_or(0, |c| c.configuration().frame_max()),
            ),
            None => self.republish_channel().await?,
        };
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
            })?;
        if tx.is_some() {
            return Ok(());
        }
        let confirm = confirm.await.map_err(|e| RabbitError::Lapin {
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

/// A delivery mapped for the runtime.
struct Prepared {
    raw: Arc<RabbitRawMessage>,
    acker: lapin::Acker,
    manual: Option<Acknowledgment>,
    headers: stream_core::Headers,
    unpacked: Result<Unpacked, RabbitError>,
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ack,
    Reject(bool),
}

/// A delivery's body after decompression and de-batching.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// Properties with the compression and batch markers removed; `None` when nothing was
    /// removed (the usual plain delivery: the raw message's properties, not copied).
    pub(crate) properties: Option<BasicProperties>,
    /// A producer batch's parts, or the decompressed body; empty for a plain delivery (its
    /// body is the raw message's, not copied).
    pub(crate) parts: Vec<Bytes>,
    /// Whether the body was a `lengthHeader4` batch.
    pub(crate) batched: bool,
}

impl Unpacked {
    /// The properties the parts carry.
    fn properties<'a>(&'a self, raw: &'a RabbitRawMessage) -> &'a BasicProperties {
        self.properties.as_ref().unwrap_or(&raw.properties)
    }

    /// Whether the delivery is the raw message unchanged (one part, as received).
    fn is_plain(&self) -> bool {
        self.properties.is_none() && self.parts.is_empty()
    }
}

/// Decompresses (per `contentEncoding`) and de-batches (Spring's `lengthHeader4`) a delivery.
pub(crate) fn unpack(raw: &RabbitRawMessage, limit: u64) -> Result<Unpacked, RabbitError> {
    let encoding = raw
        .properties
        .content_encoding()
        .as_ref()
        .and_then(|e| compression::compression_of(e.as_str()).map(|c| (e.as_str(), c)));
    let is_batch = |props: &BasicProperties| {
        props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(batching::SPRING_BATCH_FORMAT))
            .is_some_and(|v| {
                headers::from_amqp(v).as_str() == Some(batching::BATCH_FORMAT_LENGTH_HEADER4)
            })
    };
    if encoding.is_none() && !is_batch(&raw.properties) {
        return Ok(Unpacked {
            properties: None,
            parts: Vec::new(),
            batched: false,
        });
    }
    let mut properties = raw.properties.clone();
    let mut body = raw.body.clone();
    if let Some((encoding, c)) = encoding {
        body = Bytes::from(
            compression::decompress(&body, c, limit)
                .map_err(|e| RabbitError::Payload(e.to_string()))?,
        );
        properties = with_content_encoding(&properties, compression::remaining_encoding(encoding));
        properties = without_header(properties, compression::SPRING_AUTO_DECOMPRESS);
    }
    if !is_batch(&properties) {
        return Ok(Unpacked {
            properties: Some(properties),
            parts: vec![body],
            batched: false,
        });
    }
    let parts = batching::decode(&body).map_err(|e| RabbitError::Payload(e.to_string()))?;
    Ok(Unpacked {
        properties: Some(without_header(properties, batching::SPRING_BATCH_FORMAT)),
        parts,
        batched: true,
    })
}

fn without_header(props: BasicProperties, name: &str) -> BasicProperties {
    match props.headers().clone() {
        Some(mut table) if table.inner().contains_key(name) => {
            let mut inner = table.inner().clone();
            inner.remove(name);
            table = FieldTable::from(inner);
            props.with_headers(table)
        }
        _ => props,
    }
}

/// The properties with `content_encoding` replaced (lapin's builder cannot unset a field).
fn with_content_encoding(p: &BasicProperties, encoding: Option<String>) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = encoding.filter(|e| !e.is_empty()) {
        out = out.with_content_encoding(ShortString::from(v));
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.expiration() {
        out = out.with_expiration(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
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
        if let Some(scaler) = &self.ctx.scaler {
            scaler.reset();
        }
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
        let mut tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().await);
        // Tasks a busy consumer added; they may add more while stopping, so drain until empty.
        loop {
            for t in tasks {
                let _ = t.await;
            }
            tasks = match self.ctx.scaled_tasks.lock() {
                Ok(mut g) => std::mem::take(&mut *g),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            if tasks.is_empty() {
                return;
            }
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
