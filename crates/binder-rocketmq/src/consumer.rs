//! Push consumers (concurrent and orderly) and the bridge from the client's synchronous
//! listeners to the runtime's async [`InboundHandler`]. See "Runtime model" in the crate docs.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, ConsumeOrderlyContext,
    ConsumeOrderlyStatus, DefaultMQPushConsumer, MQPushConsumer, MessageSelector,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere as MqFromWhere;
use rocketmq_model::common::message::MessageConst;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel as MqModel;
use stream_core::BinderError;
use stream_core::binder::{
    Binding, BindingState, ConsumerRequest, Delivery, Disposition, InboundHandler,
};
use tokio::sync::{Mutex, Notify};
use tracing::Instrument;

use crate::config::{
    ConsumeFromWhere, MessageModel, ResolvedCommon, RocketMqConsumerProperties, Subscription,
};
use crate::factory::{
    BinderInner, ProvisionedTopic, client_config, connection_error, instance_name, rpc_hook,
};
use crate::headers;
use crate::runtime::{ClientDomain, DomainSize};

/// Counts deliveries handed to the handler and not yet settled.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

pub(crate) struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub(crate) fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    pub(crate) fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.current() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl InFlight {
    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Like [`InFlight::enter`], for work that outlives the caller (a send callback).
    pub(crate) fn enter_owned(self: &Arc<Self>) -> OwnedInFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        OwnedInFlightGuard(Arc::clone(self))
    }
}

/// An [`InFlight`] entry that owns its counter.
pub(crate) struct OwnedInFlightGuard(Arc<InFlight>);

impl Drop for OwnedInFlightGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What the listener tells the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Consumed (acknowledged, or dead-lettered by the binder).
    Done,
    /// Redeliver: RECONSUME_LATER (concurrent) or suspend the queue (orderly).
    Retry,
}

/// Holds deliveries while the binding is paused. The client's `suspend` stops new pulls, but a
/// long-polling pull already at the broker still returns messages and the client dispatches
/// them; the gate keeps them (unsettled, on the client's blocking lane) until `resume`.
#[derive(Default)]
pub(crate) struct Gate {
    state: StdMutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Open,
    Paused,
    /// Stopping: held deliveries go back to the broker.
    Closed,
}

impl Gate {
    fn set(&self, s: GateState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.changed.notify_all();
    }

    /// Blocks this (blocking-lane) thread while paused; `false` when the binding is stopping.
    fn pass(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while *state == GateState::Paused {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        *state == GateState::Open
    }
}

/// Hands messages from the client's blocking lane to the application's runtime.
pub(crate) struct Bridge {
    pub(crate) gate: Gate,
    pub(crate) handler: Arc<dyn InboundHandler>,
    pub(crate) app: tokio::runtime::Handle,
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) binding: String,
    pub(crate) group: String,
    pub(crate) clustering: bool,
    pub(crate) orderly: bool,
    /// `delay-level-when-next-consume`.
    pub(crate) delay_level: i32,
    pub(crate) binder: Arc<BinderInner>,
    pub(crate) common: ResolvedCommon,
}

impl Bridge {
    /// Runs the handler for one message and waits (on this blocking-lane thread, never on a
    /// tokio worker) for its disposition.
    pub(crate) fn dispatch(&self, ext: &MessageExt) -> Settle {
        let _guard = self.inflight.enter();
        if !self.gate.pass() {
            return Settle::Retry;
        }
        let span = tracing::debug_span!(
            "rocketmq.consume",
            messaging.system = "rocketmq",
            messaging.destination.name = %ext.topic(),
            messaging.consumer.group.name = %self.group,
            binding = %self.binding,
            queue_id = ext.queue_id(),
            queue_offset = ext.queue_offset(),
            reconsume_times = ext.reconsume_times(),
        );
        let message = headers::from_rocketmq(ext);
        let raw: Arc<dyn Any + Send + Sync> = Arc::new(ext.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Disposition>(1);
        let handler = Arc::clone(&self.handler);
        drop(
            self.app.spawn(
                async move {
                    let d = handler.handle(Delivery::new(message).with_raw(raw)).await;
                    let _ = tx.send(d);
                }
                .instrument(span.clone()),
            ),
        );
        let _entered = span.enter();
        match rx.recv() {
            Ok(Disposition::Ack) => Settle::Done,
            Ok(Disposition::Reject { requeue: true }) => Settle::Retry,
            Ok(Disposition::Reject { requeue: false }) => self.dead_letter(ext, "rejected"),
            Ok(Disposition::Recover(failed)) => {
                if self.delay_level < 0 && !self.orderly {
                    self.dead_letter(ext, &failed.error.to_string())
                } else {
                    tracing::debug!(error = %failed.error, "retries exhausted; handing the message back to the broker");
                    Settle::Retry
                }
            }
            Ok(other) => {
                tracing::warn!(disposition = ?other, "unknown disposition; redelivering");
                Settle::Retry
            }
            Err(_) => {
                tracing::warn!(
                    "the application runtime dropped the delivery (shutting down?); redelivering"
                );
                Settle::Retry
            }
        }
    }

    /// Publishes the message to `%DLQ%<group>` and reports it consumed; without a group that
    /// shares a DLQ (broadcasting) the message is dropped with a warning.
    fn dead_letter(&self, ext: &MessageExt, reason: &str) -> Settle {
        if !self.clustering {
            tracing::warn!(
                reason,
                "broadcasting consumer: failed message dropped (no DLQ)"
            );
            return Settle::Done;
        }
        let mut m = ext.message_inner().clone();
        m.clear_property(MessageConst::PROPERTY_DELAY_TIME_LEVEL);
        let extra = vec![(
            MessageConst::PROPERTY_RECONSUME_TIME,
            ext.reconsume_times().to_string(),
        )];
        self.republish(ext, m, format!("%DLQ%{}", self.group), extra, reason)
    }

    /// Sends `m` to `target` through the binder's admin producer (waiting on this lane thread),
    /// keeping its properties plus `RETRY_TOPIC`, `ORIGIN_MESSAGE_ID` and `extra`.
    fn republish(
        &self,
        ext: &MessageExt,
        mut m: rocketmq_model::common::message::message_single::Message,
        target: String,
        extra: Vec<(&'static str, String)>,
        reason: &str,
    ) -> Settle {
        m.set_topic(CheetahString::from_string(target.clone()));
        let origin_topic = m
            .get_property(&CheetahString::from_static_str(
                MessageConst::PROPERTY_RETRY_TOPIC,
            ))
            .unwrap_or_else(|| ext.topic().clone());
        m.put_property(
            CheetahString::from_static_str(MessageConst::PROPERTY_RETRY_TOPIC),
            origin_topic,
        );
        m.put_property(
            CheetahString::from_static_str(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            ext.msg_id().clone(),
        );
        for (k, v) in extra {
            m.put_property(
                CheetahString::from_static_str(k),
                CheetahString::from_string(v),
            );
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let binder = Arc::clone(&self.binder);
        let common = self.common.clone();
        drop(self.app.spawn(async move {
            let _ = tx.send(binder.publish_direct(&common, m).await);
        }));
        match rx.recv() {
            Ok(Ok(())) => {
                tracing::info!(target_topic = %target, reason, "message republished by the binder");
                Settle::Done
            }
            Ok(Err(e)) => {
                tracing::error!(target_topic = %target, error = %e, "cannot republish; redelivering");
                Settle::Retry
            }
            Err(_) => Settle::Retry,
        }
    }
}

/// Everything needed to (re)create the push consumer on `start`.
struct Spec {
    binding: String,
    topic: String,
    group: String,
    props: RocketMqConsumerProperties,
    common: ResolvedCommon,
    threads: u32,
    bridge: Arc<Bridge>,
}

pub(crate) struct PushBinding {
    spec: Spec,
    domain: ClientDomain,
    consumer: Mutex<Option<DefaultMQPushConsumer>>,
    state: StdMutex<BindingState>,
}

pub(crate) async fn bind(
    inner: Arc<BinderInner>,
    request: ConsumerRequest,
    topic: ProvisionedTopic,
    handler: Arc<dyn InboundHandler>,
) -> Result<Box<dyn Binding>, BinderError> {
    let props = inner.consumer_properties(&request.binding_name)?;
    let common = props.resolve(&inner.properties);
    let group = topic
        .group
        .clone()
        .unwrap_or_else(|| inner.consumer_group(&request, &props).0);
    let threads = request.properties.concurrency.max(1);
    if props.push.delay_level_when_next_consume > 0 && !props.push.orderly {
        tracing::warn!(
            binding = %request.binding_name,
            key = %format!("spring.cloud.stream.rocketmq.bindings.{}.consumer.push.delay-level-when-next-consume", request.binding_name),
            "a fixed redelivery delay level is not supported with rocketmq-client-rust 1.0.0 \
             (see docs/rocketmq-binder.md, known issues); the broker's schedule applies"
        );
    }
    let domain = ClientDomain::new(
        &format!("rocketmq-consumer-{}", request.binding_name),
        &DomainSize::consumer(
            threads as usize * props.push.consume_message_batch_max_size.max(1) as usize,
            Duration::from_secs(props.push.consume_timeout.max(1) * 60 + 60),
        ),
    )?;
    let bridge = Arc::new(Bridge {
        gate: Gate::default(),
        handler,
        app: tokio::runtime::Handle::current(),
        inflight: Arc::new(InFlight::default()),
        binding: request.binding_name.clone(),
        group: group.clone(),
        clustering: props.message_model == MessageModel::Clustering,
        orderly: props.push.orderly,
        delay_level: props.push.delay_level_when_next_consume,
        binder: Arc::clone(&inner),
        common: common.clone(),
    });
    let binding = PushBinding {
        spec: Spec {
            binding: request.binding_name.clone(),
            topic: topic.topic,
            group,
            props,
            common,
            threads,
            bridge,
        },
        domain,
        consumer: Mutex::new(None),
        state: StdMutex::new(BindingState::Stopped),
    };
    if !binding.spec.props.enabled {
        tracing::info!(binding = %binding.spec.binding, "consumer disabled (enabled=false); not started");
    } else if request.properties.auto_startup {
        binding.start().await?;
    }
    Ok(Box::new(binding))
}

fn model(m: MessageModel) -> MqModel {
    match m {
        MessageModel::Clustering => MqModel::Clustering,
        MessageModel::Broadcasting => MqModel::Broadcasting,
    }
}

fn from_where(w: ConsumeFromWhere) -> MqFromWhere {
    match w {
        ConsumeFromWhere::LastOffset => MqFromWhere::ConsumeFromLastOffset,
        ConsumeFromWhere::FirstOffset => MqFromWhere::ConsumeFromFirstOffset,
        ConsumeFromWhere::Timestamp => MqFromWhere::ConsumeFromTimestamp,
    }
}

impl PushBinding {
    fn set_state(&self, s: BindingState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    async fn create(&self) -> Result<DefaultMQPushConsumer, BinderError> {
        let s = &self.spec;
        let p = &s.props;
        let instance = instance_name("consumer", &s.binding);
        let mut b = DefaultMQPushConsumer::builder(self.domain.client())
            .client_config(client_config(&s.common, &instance)?)
            .consumer_group(s.group.clone())
            .name_server_addr(s.common.name_server.clone())
            .message_model(model(p.message_model))
            .consume_from_where(from_where(p.consume_from_where))
            .consume_thread_min(s.threads)
            .consume_thread_max(s.threads)
            .consume_message_batch_max_size(p.push.consume_message_batch_max_size.max(1))
            .pull_batch_size(p.pull_batch_size.max(1))
            .max_reconsume_times(p.push.max_reconsume_times.unwrap_or(-1))
            .suspend_current_queue_time_millis(p.push.suspend_current_queue_time_millis)
            .consume_timeout(p.push.consume_timeout.max(1))
            .await_termination_millis_when_shutdown(p.push.await_termination_millis_when_shutdown)
            .rpc_hook(rpc_hook(&s.common));
        if let Some(ts) = &p.consume_timestamp {
            b = b.consume_timestamp(ts.clone());
        }
        let mut consumer = b.build();
        match Subscription::parse(p.subscription.as_deref()) {
            Subscription::Tags(expr) => consumer.subscribe(s.topic.clone(), expr).await,
            Subscription::Sql(sql) => {
                consumer
                    .subscribe_with_selector(&s.topic, Some(MessageSelector::by_sql(sql)))
                    .await
            }
        }
        .map_err(|e| BinderError::InvalidProperty {
            key: format!(
                "spring.cloud.stream.rocketmq.bindings.{}.consumer.subscription",
                s.binding
            ),
            reason: format!("cannot subscribe to `{}`: {e}", s.topic),
        })?;
        let bridge = Arc::clone(&s.bridge);
        if p.push.orderly {
            let suspend =
                i64::try_from(p.push.suspend_current_queue_time_millis).unwrap_or(i64::MAX);
            consumer.register_message_listener_orderly(
                move |msgs: &[&MessageExt], ctx: &mut ConsumeOrderlyContext| {
                    for m in msgs {
                        if bridge.dispatch(m) == Settle::Retry {
                            ctx.set_suspend_current_queue_time_millis(suspend);
                            return Ok(ConsumeOrderlyStatus::SuspendCurrentQueueAMoment);
                        }
                    }
                    Ok(ConsumeOrderlyStatus::Success)
                },
            );
        } else {
            consumer.register_message_listener_concurrently(
                move |msgs: &[&MessageExt], _ctx: &ConsumeConcurrentlyContext| {
                    for m in msgs {
                        if bridge.dispatch(m) == Settle::Retry {
                            return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
                        }
                    }
                    Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
                },
            );
        }
        consumer.start().await.map_err(|e| {
            connection_error(
                &s.common,
                format!(
                    "consumer group `{}` on `{}` cannot start: {e}",
                    s.group, s.topic
                ),
            )
        })?;
        Ok(consumer)
    }
}

#[async_trait]
impl Binding for PushBinding {
    fn name(&self) -> &str {
        &self.spec.binding
    }

    fn state(&self) -> BindingState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start(&self) -> Result<(), BinderError> {
        let mut slot = self.consumer.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let span = tracing::info_span!("rocketmq.consumer.start", binding = %self.spec.binding, topic = %self.spec.topic, group = %self.spec.group);
        self.spec.bridge.gate.set(GateState::Open);
        let consumer = self.create().instrument(span).await?;
        *slot = Some(consumer);
        self.set_state(BindingState::Running);
        tracing::info!(
            binding = %self.spec.binding,
            topic = %self.spec.topic,
            group = %self.spec.group,
            orderly = self.spec.props.push.orderly,
            model = %self.spec.props.message_model,
            threads = self.spec.threads,
            "RocketMQ push consumer started"
        );
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        // Deliveries held by a pause go back to the broker.
        self.spec.bridge.gate.set(GateState::Closed);
        let consumer = self.consumer.lock().await.take();
        if let Some(mut c) = consumer {
            // Stops pulling, waits (await-termination-millis-when-shutdown) for running
            // listener calls, persists offsets and unregisters.
            c.shutdown().await;
        }
        // Listener calls the client gave up waiting for still settle before we return.
        self.spec.bridge.inflight.wait_idle().await;
        self.set_state(BindingState::Stopped);
        tracing::info!(binding = %self.spec.binding, "RocketMQ push consumer stopped");
        Ok(())
    }

    async fn pause(&self) -> Result<(), BinderError> {
        if let Some(c) = self.consumer.lock().await.as_ref() {
            self.spec.bridge.gate.set(GateState::Paused);
            c.suspend().await;
            self.set_state(BindingState::Paused);
        }
        Ok(())
    }

    async fn resume(&self) -> Result<(), BinderError> {
        let resumed = match self.consumer.lock().await.as_ref() {
            Some(c) => {
                c.resume().await;
                self.spec.bridge.gate.set(GateState::Open);
                true
            }
            None => false,
        };
        if resumed {
            self.set_state(BindingState::Running);
            Ok(())
        } else {
            self.start().await
        }
    }
}

impl Drop for PushBinding {
    fn drop(&mut self) {
        tracing::debug!(binding = %self.spec.binding, "push binding dropped");
    }
}
