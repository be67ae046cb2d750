//! Push consumers (concurrent and orderly) and the bridge from the client's synchronous
//! listeners to the runtime's [`Sink`]. See "Runtime model" in `docs/rocketmq-binder.md`.
//!
//! The runtime decides how every delivery is settled; this module only turns its
//! [`Settlement`] into what the client's listener returns:
//!
//! | settlement | concurrent | orderly |
//! |---|---|---|
//! | `Ack` | `CONSUME_SUCCESS` | `SUCCESS` |
//! | `Requeue`, `Reject` | the message is sent back (`RECONSUME_LATER`) | `SUSPEND_CURRENT_QUEUE_A_MOMENT` |
//!
//! `Reject` is never asked for with this binder's [`Recovery`] (rejected messages are
//! dead-lettered by [`Settle::dead_letter`] first, then acknowledged); should it come, it is
//! redelivered, so nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, ConsumeOrderlyContext,
    ConsumeOrderlyStatus, DefaultMQPushConsumer, MQPushConsumer, MessageSelector,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere as MqFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel as MqModel;
use stream_core::BinderError;
use stream_core::binder::{
    Consumer, ConsumerSpec, DeadLetter, DeadLetterRoute, Delivery, Recovery, Settle, Settlement,
    Sink, SourceStatus,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::allocate::PartitionAllocation;
use crate::client::{client_config, instance_name, rpc_hook};
use crate::config::{ConsumeFromWhere, MessageModel, RocketMqConsumerProperties, Subscription};
use crate::dead_letter;
use crate::delivery::{Answer, RocketMqRaw};
use crate::failure::{classify, unreachable};
use crate::headers;
use crate::provisioning::{Admin, ConsumerTopic};
use crate::runtime::{ClientDomain, DomainSize};

/// Where failed messages of a consumer binding go, from its properties (shared with the polled
/// consumer).
pub(crate) fn recovery(props: &RocketMqConsumerProperties, push: bool) -> Recovery {
    match props.message_model {
        // Every member has its own copy and the broker keeps no retry state: nowhere.
        MessageModel::Broadcasting => Recovery::new(DeadLetterRoute::Drop, DeadLetterRoute::Drop),
        MessageModel::Clustering => {
            let binder_dead_letters =
                !push || (props.push.delay_level_when_next_consume < 0 && !props.push.orderly);
            let exhausted = if binder_dead_letters {
                DeadLetterRoute::Publish
            } else {
                // The broker's schedule (%RETRY%<group>, then %DLQ%<group>), or for orderly
                // consumers the client's suspend-and-retry bounded by max-reconsume-times.
                DeadLetterRoute::Redeliver
            };
            Recovery::new(exhausted, DeadLetterRoute::Publish)
        }
    }
}

pub(crate) fn model(m: MessageModel) -> MqModel {
    match m {
        MessageModel::Clustering => MqModel::Clustering,
        MessageModel::Broadcasting => MqModel::Broadcasting,
    }
}

pub(crate) fn from_where(w: ConsumeFromWhere) -> MqFromWhere {
    match w {
        ConsumeFromWhere::LastOffset => MqFromWhere::ConsumeFromLastOffset,
        ConsumeFromWhere::FirstOffset => MqFromWhere::ConsumeFromFirstOffset,
        ConsumeFromWhere::Timestamp => MqFromWhere::ConsumeFromTimestamp,
    }
}

/// How often a running consumer checks that its broker answers.
const PROBE_INTERVAL: Duration = Duration::from_secs(3);

/// Everything a push consumer is (re)created from on `start`.
#[derive(Debug)]
struct PushSpec {
    binding: String,
    topic: ConsumerTopic,
    props: RocketMqConsumerProperties,
    threads: u32,
    /// Partitions consumed (empty: not partitioned) and the instance count.
    partitions: Vec<u32>,
    instance_count: u32,
    recovery: Recovery,
    /// The delay level a message sent back by the binder gets (0: the broker's schedule).
    redelivery_level: i32,
    /// Longest the listener waits for the runtime to settle a delivery.
    settle_timeout: Duration,
}

impl PushSpec {
    fn clustering(&self) -> bool {
        self.props.message_model == MessageModel::Clustering
    }
}

/// The consumer of a push binding: a `DefaultMQPushConsumer` (concurrent or orderly,
/// clustering or broadcasting) created on [`Consumer::start`] and shut down on
/// [`Consumer::stop`], on a client domain of its own.
pub struct RocketMqConsumer {
    spec: Arc<PushSpec>,
    admin: Arc<Admin>,
    domain: ClientDomain,
    /// The running client (also used by listeners to send failed messages back).
    client: Arc<Mutex<Option<DefaultMQPushConsumer>>>,
    /// The task watching the broker connection.
    watch: StdMutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RocketMqConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketMqConsumer")
            .field("binding", &self.spec.binding)
            .field("topic", &self.spec.topic.topic)
            .field("group", &self.spec.topic.group)
            .finish_non_exhaustive()
    }
}

impl RocketMqConsumer {
    /// The consumer of a provisioned topic (nothing is created until `start`).
    pub(crate) fn new(
        spec: &ConsumerSpec<RocketMqConsumerProperties>,
        topic: &ConsumerTopic,
        admin: Arc<Admin>,
    ) -> Result<Self, BinderError> {
        let props = spec.extension.clone();
        let threads = spec.common.concurrency.max(1);
        let domain = ClientDomain::new(
            &format!("rocketmq-consumer-{}", spec.binding),
            &DomainSize::consumer(
                threads as usize * props.push.consume_message_batch_max_size.max(1) as usize,
                Duration::from_secs(props.push.consume_timeout.max(1) * 60 + 60),
            ),
        )?;
        Ok(Self {
            spec: Arc::new(PushSpec {
                binding: spec.binding.to_string(),
                topic: topic.clone(),
                threads,
                partitions: spec.partitions.clone(),
                instance_count: spec.instance_count,
                recovery: recovery(&props, true),
                redelivery_level: props.push.delay_level_when_next_consume.max(0),
                settle_timeout: Duration::from_secs(props.push.consume_timeout.max(1) * 60),
                props,
            }),
            admin,
            domain,
            client: Arc::new(Mutex::new(None)),
            watch: StdMutex::new(None),
        })
    }

    async fn create(&self, sink: Sink<Self>) -> Result<DefaultMQPushConsumer, BinderError> {
        let s = &self.spec;
        let p = &s.props;
        let common = &s.topic.common;
        let instance = instance_name("consumer", &s.binding);
        let mut b = DefaultMQPushConsumer::builder(self.domain.client())
            .client_config(client_config(common, &instance)?)
            .consumer_group(s.topic.group.clone())
            .name_server_addr(common.name_server.clone())
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
            .rpc_hook(rpc_hook(common));
        if !s.partitions.is_empty() {
            b = b.allocate_message_queue_strategy(Arc::new(PartitionAllocation::new(
                s.partitions.clone(),
                s.instance_count,
            )));
        }
        if let Some(ts) = &p.consume_timestamp {
            b = b.consume_timestamp(ts.clone());
        }
        let mut consumer = b.build();
        let topic = s.topic.topic.as_str();
        match Subscription::parse(p.subscription.as_deref()) {
            Subscription::Tags(expr) => consumer.subscribe(topic, expr).await,
            Subscription::Sql(sql) => {
                consumer
                    .subscribe_with_selector(topic, Some(MessageSelector::by_sql(sql)))
                    .await
            }
        }
        .map_err(|e| {
            BinderError::invalid_property(
                format!(
                    "spring.cloud.stream.rocketmq.bindings.{}.consumer.subscription",
                    s.binding
                ),
                format!("cannot subscribe to `{topic}`"),
            )
            .with_source(e)
        })?;
        let bridge = Arc::new(Bridge {
            sink,
            app: tokio::runtime::Handle::current(),
            spec: Arc::clone(&self.spec),
            client: Arc::clone(&self.client),
            orderly_done: StdMutex::new(HashMap::new()),
        });
        if p.push.orderly {
            consumer.register_message_listener_orderly(
                move |msgs: &[&MessageExt], ctx: &mut ConsumeOrderlyContext| {
                    Ok(bridge.orderly(msgs, ctx))
                },
            );
        } else {
            consumer.register_message_listener_concurrently(
                move |msgs: &[&MessageExt], ctx: &ConsumeConcurrentlyContext| {
                    Ok(bridge.concurrently(msgs, ctx))
                },
            );
        }
        consumer.start().await.map_err(|e| {
            classify(
                e,
                common,
                format!(
                    "consumer group `{}` on `{topic}` cannot start",
                    s.topic.group
                ),
                |m| unreachable(common, m),
            )
        })?;
        Ok(consumer)
    }
}

impl Settle for RocketMqConsumer {
    type Raw = RocketMqRaw;

    fn recovery(&self) -> Recovery {
        self.spec.recovery
    }

    async fn settle(&self, raw: &RocketMqRaw, settlement: Settlement) -> Result<(), BinderError> {
        if raw.answer(settlement) {
            Ok(())
        } else {
            Err(BinderError::settle(
                &self.spec.topic.topic,
                "the client's listener no longer waits for this delivery (it timed out or the \
                 consumer stopped); the broker delivers it again",
            ))
        }
    }

    async fn dead_letter(&self, raw: &RocketMqRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        if !self.spec.clustering() {
            return Err(BinderError::settle(
                &self.spec.topic.topic,
                "a broadcasting consumer has no dead-letter topic",
            ));
        }
        let group = &self.spec.topic.group;
        self.admin
            .publish(
                &self.spec.topic.common,
                dead_letter::message(raw.message(), group, letter),
            )
            .await?;
        tracing::info!(
            binding = %self.spec.binding,
            dead_letter_topic = %crate::provisioning::dlq_topic(group),
            "message dead-lettered by the binder"
        );
        Ok(())
    }
}

impl Consumer for RocketMqConsumer {
    async fn start(&self, sink: Sink<Self>) -> Result<(), BinderError> {
        let s = &self.spec;
        if !s.props.enabled {
            tracing::info!(binding = %s.binding, "consumer disabled (enabled=false); nothing is consumed");
            return Ok(());
        }
        let mut slot = self.client.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let span = tracing::info_span!("rocketmq.consumer.start", binding = %s.binding, topic = %s.topic.topic, group = %s.topic.group);
        let consumer = self.create(sink.clone()).instrument(span).await?;
        *slot = Some(consumer);
        drop(slot);
        let watch = sink.spawn(
            "rocketmq-broker-watch",
            watch_broker(
                Arc::clone(&self.client),
                sink.clone(),
                Arc::clone(&self.spec),
            ),
        );
        if let Some(old) = self
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(watch)
        {
            old.abort();
        }
        tracing::info!(
            binding = %s.binding,
            topic = %s.topic.topic,
            group = %s.topic.group,
            orderly = s.props.push.orderly,
            model = %s.props.message_model,
            threads = s.threads,
            partitions = ?s.partitions,
            "RocketMQ push consumer started"
        );
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        // The runtime has signalled the sink's stop: the watch ends after its current probe.
        let watch = self.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = watch
            && let Err(e) = w.await
        {
            tracing::warn!(binding = %self.spec.binding, error = %e, "the broker watch failed");
        }
        let consumer = self.client.lock().await.take();
        if let Some(mut c) = consumer {
            // Stops pulling, waits (await-termination-millis-when-shutdown) for running
            // listener calls, persists offsets and unregisters.
            c.shutdown().await;
            tracing::info!(binding = %self.spec.binding, "RocketMQ push consumer stopped");
        }
        Ok(())
    }

    async fn pause(&self) -> Result<(), BinderError> {
        if let Some(c) = self.client.lock().await.as_ref() {
            c.suspend().await;
        }
        Ok(())
    }

    async fn resume(&self) -> Result<(), BinderError> {
        if let Some(c) = self.client.lock().await.as_ref() {
            c.resume().await;
        }
        Ok(())
    }
}

/// Watches the consumer's connection: every [`PROBE_INTERVAL`] it asks the broker for a queue's
/// offset (the queue found through the name server, kept while the name server is away) and
/// reports [`SourceStatus::Lost`] when the broker does not answer, [`SourceStatus::Consuming`]
/// once it does again. The client itself keeps reconnecting meanwhile.
async fn watch_broker(
    client: Arc<Mutex<Option<DefaultMQPushConsumer>>>,
    sink: Sink<RocketMqConsumer>,
    spec: Arc<PushSpec>,
) {
    let stopped = sink.stopped();
    tokio::pin!(stopped);
    let mut queue: Option<MessageQueue> = None;
    let mut lost = false;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let probe = {
            let mut guard = client.lock().await;
            match guard.as_mut() {
                None => return,
                Some(c) => probe(c, &spec.topic.topic, &mut queue).await,
            }
        };
        match probe {
            Ok(()) if lost => {
                lost = false;
                tracing::info!(binding = %spec.binding, "the RocketMQ broker answers again");
                sink.report(SourceStatus::Consuming);
            }
            Err(reason) if !lost => {
                lost = true;
                tracing::warn!(binding = %spec.binding, reason = %reason, "RocketMQ consumer cut off");
                sink.report(SourceStatus::Lost { reason });
            }
            _ => {}
        }
    }
}

/// One probe: `Err` says why the broker cannot be reached.
async fn probe(
    consumer: &mut DefaultMQPushConsumer,
    topic: &str,
    queue: &mut Option<MessageQueue>,
) -> Result<(), String> {
    if queue.is_none() {
        match consumer.fetch_subscribe_message_queues(topic).await {
            Ok(found) => *queue = found.into_iter().next(),
            Err(e) => {
                return Err(format!(
                    "the name server does not answer ({e}); the client keeps trying"
                ));
            }
        }
    }
    let Some(q) = queue.as_ref() else {
        return Err(format!(
            "topic `{topic}` has no queue (no broker serves it)"
        ));
    };
    match consumer.max_offset(q).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // Look the route up again next time: the broker may come back elsewhere.
            *queue = None;
            Err(format!(
                "the broker does not answer ({e}); the client reconnects when it is back"
            ))
        }
    }
}

/// What a listener makes of one message's settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Consumed: acknowledged (after dead-lettering, if the runtime did).
    Done,
    /// To be delivered again.
    Again,
}

impl From<Option<Settlement>> for Verdict {
    fn from(s: Option<Settlement>) -> Self {
        match s {
            Some(Settlement::Ack) => Verdict::Done,
            // Nothing settled it (the runtime dropped it, or took too long), a requeue, or a
            // reject (never asked for with this binder's recovery): deliver it again.
            Some(Settlement::Requeue | Settlement::Reject) | None => Verdict::Again,
        }
    }
}

/// Hands messages from the client's blocking lane to the application's runtime.
struct Bridge {
    sink: Sink<RocketMqConsumer>,
    app: tokio::runtime::Handle,
    spec: Arc<PushSpec>,
    client: Arc<Mutex<Option<DefaultMQPushConsumer>>>,
    /// Orderly: per queue, the offset below which the messages of a batch that was suspended
    /// were already consumed (they come back with the batch and are not processed again).
    orderly_done: StdMutex<HashMap<MessageQueue, i64>>,
}

impl Bridge {
    /// Has the runtime process one message and waits (on this blocking-lane thread, never on a
    /// tokio worker) for its settlement.
    fn dispatch(&self, ext: &MessageExt) -> Verdict {
        let span = tracing::debug_span!(
            "rocketmq.consume",
            messaging.system = "rocketmq",
            messaging.destination.name = %ext.topic(),
            messaging.consumer.group.name = %self.spec.topic.group,
            binding = %self.spec.binding,
            queue_id = ext.queue_id(),
            queue_offset = ext.queue_offset(),
            reconsume_times = ext.reconsume_times(),
        );
        // The listener only borrows the message: one copy, shared from here on.
        let ext = Arc::new(ext.clone());
        let message = headers::from_rocketmq(&ext);
        let (raw, done, waiter) = RocketMqRaw::pushed(ext);
        let sink = self.sink.clone();
        drop(
            self.app.spawn(
                async move {
                    sink.dispatch(Delivery::new(raw, message)).await;
                    let _ = done.try_send(Answer::Finished);
                }
                .instrument(span.clone()),
            ),
        );
        let _entered = span.enter();
        let settlement = waiter.settlement(self.spec.settle_timeout);
        if settlement.is_none() {
            tracing::warn!(
                "the delivery was not settled (the application runtime dropped it or it took \
                 longer than push.consume-timeout); it is delivered again"
            );
        }
        Verdict::from(settlement)
    }

    /// The concurrent listener: each message is processed and settled on its own. Messages
    /// to deliver again are sent back one by one (the broker's `%RETRY%<group>` schedule), so
    /// the others of a batch are not run again; if a send-back fails, the whole batch is
    /// handed back (`RECONSUME_LATER`), which may run some messages twice but loses none.
    fn concurrently(
        &self,
        msgs: &[&MessageExt],
        ctx: &ConsumeConcurrentlyContext,
    ) -> ConsumeConcurrentlyStatus {
        let again: Vec<&MessageExt> = msgs
            .iter()
            .copied()
            .filter(|m| self.dispatch(m) == Verdict::Again)
            .collect();
        if again.is_empty() {
            return ConsumeConcurrentlyStatus::ConsumeSuccess;
        }
        // Broadcasting: the client logs and drops it (nothing is redelivered there). One message
        // on the broker's own schedule: the client's send-back is the same as ours.
        if !self.spec.clustering() || (msgs.len() == 1 && self.spec.redelivery_level == 0) {
            return ConsumeConcurrentlyStatus::ReconsumeLater;
        }
        if self.send_back(&again, ctx.get_message_queue().broker_name().as_str()) {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        } else {
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }

    /// Sends messages back to the broker for redelivery (as the client does for
    /// `RECONSUME_LATER`, with the binding's delay level); whether all of them were.
    fn send_back(&self, msgs: &[&MessageExt], broker: &str) -> bool {
        let msgs: Vec<MessageExt> = msgs.iter().map(|m| (*m).clone()).collect();
        let count = msgs.len();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = Arc::clone(&self.client);
        let level = self.spec.redelivery_level;
        let broker = broker.to_owned();
        let binding = self.spec.binding.clone();
        drop(self.app.spawn(async move {
            let mut guard = client.lock().await;
            let sent = match guard.as_mut() {
                None => false,
                Some(c) => {
                    let mut sent = true;
                    for m in msgs {
                        if let Err(e) = c.send_message_back(m, level, &broker).await {
                            tracing::warn!(binding = %binding, error = %e, "sending a failed message back failed; the batch is handed back whole");
                            sent = false;
                            break;
                        }
                    }
                    sent
                }
            };
            let _ = tx.send(sent);
        }));
        let sent = rx.recv().unwrap_or(false);
        if sent {
            tracing::debug!(count, level, "messages sent back for redelivery");
        }
        sent
    }

    /// The orderly listener: in queue order; the first message to deliver again suspends the
    /// queue (`suspend-current-queue-time-millis`) and the batch comes back, without running
    /// the messages before it again.
    fn orderly(
        &self,
        msgs: &[&MessageExt],
        ctx: &mut ConsumeOrderlyContext,
    ) -> ConsumeOrderlyStatus {
        let queue = ctx.get_message_queue().clone();
        let done_below = self
            .orderly_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&queue)
            .copied();
        for m in msgs {
            if done_below.is_some_and(|below| m.queue_offset() < below) {
                continue;
            }
            if self.dispatch(m) == Verdict::Again {
                self.orderly_done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue, m.queue_offset());
                ctx.set_suspend_current_queue_time_millis(
                    i64::try_from(self.spec.props.push.suspend_current_queue_time_millis)
                        .unwrap_or(i64::MAX),
                );
                return ConsumeOrderlyStatus::SuspendCurrentQueueAMoment;
            }
        }
        if done_below.is_some() {
            self.orderly_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&queue);
        }
        ConsumeOrderlyStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_follows_the_properties() {
        let mut p = RocketMqConsumerProperties::default();
        let redeliver = Recovery::new(DeadLetterRoute::Redeliver, DeadLetterRoute::Publish);
        let publish = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Publish);
        assert_eq!(recovery(&p, true), redeliver);
        assert_eq!(
            recovery(&p, false),
            publish,
            "polled: the binder dead-letters"
        );
        p.push.delay_level_when_next_consume = -1;
        assert_eq!(recovery(&p, true), publish);
        p.push.orderly = true;
        assert_eq!(
            recovery(&p, true),
            redeliver,
            "orderly: the client bounds redeliveries, then dead-letters"
        );
        p.message_model = MessageModel::Broadcasting;
        let drop = Recovery::new(DeadLetterRoute::Drop, DeadLetterRoute::Drop);
        assert_eq!(recovery(&p, true), drop);
        assert_eq!(recovery(&p, false), drop);
    }

    #[test]
    fn only_an_ack_consumes() {
        assert_eq!(Verdict::from(Some(Settlement::Ack)), Verdict::Done);
        assert_eq!(Verdict::from(Some(Settlement::Requeue)), Verdict::Again);
        assert_eq!(Verdict::from(Some(Settlement::Reject)), Verdict::Again);
        assert_eq!(Verdict::from(None), Verdict::Again);
    }
}
