//! Push consumers (concurrent and orderly, clustering and broadcasting): the client's push
//! consumer started with a listener (`listener.rs`) that hands every message to the runtime's
//! [`Sink`], and the binding's [`Recovery`]. See "Runtime model" in `docs/rocketmq-binder.md`.
//!
//! The runtime decides how every delivery is settled; the binder only turns its
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

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeOrderlyContext, DefaultMQPushConsumer, MQPushConsumer,
    MessageSelector,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere as MqFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel as MqModel;
use stream_core::BinderError;
use stream_core::binder::{
    Consumer, ConsumerSpec, DeadLetter, DeadLetterRoute, Recovery, Settle, Settlement, Sink,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::allocate::PartitionAllocation;
use crate::client::{client_config, instance_name, rpc_hook};
use crate::config::{ConsumeFromWhere, MessageModel, RocketMqConsumerProperties, Subscription};
use crate::dead_letter;
use crate::delivery::RocketMqRaw;
use crate::failure::{classify, unreachable};
use crate::listener::{Listener, ListenerSettings, PushClient};
use crate::provisioning::{Admin, ConsumerTopic};
use crate::runtime::{ClientDomain, DomainSize};
use crate::watch::watch_broker;

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
    client: PushClient,
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
        let bridge = Arc::new(Listener::new(
            sink,
            ListenerSettings {
                binding: s.binding.clone(),
                group: s.topic.group.clone(),
                clustering: s.clustering(),
                redelivery_level: s.redelivery_level,
                settle_timeout: s.settle_timeout,
                suspend_millis: p.push.suspend_current_queue_time_millis,
            },
            Arc::clone(&self.client),
        ));
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
                s.binding.clone(),
                s.topic.topic.clone(),
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
}
