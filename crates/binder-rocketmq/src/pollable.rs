//! Polled consumers over the lite pull consumer (auto-commit off). `fetch` hands out one
//! message at a time from what the last pull returned; the runtime settles it: `Ack` and
//! `Reject` commit the queue's offset (once no other polled message of that queue is
//! unsettled), `Requeue` seeks the queue back to the message. Failed messages are
//! dead-lettered to `%DLQ%<group>` (clustering) by [`Settle::dead_letter`] before the runtime
//! acknowledges them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rocketmq_client_rust::{DefaultLitePullConsumer, MessageSelector};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use stream_core::BinderError;
use stream_core::binder::{
    ConsumerSpec, DeadLetter, Delivery, Pollable, Recovery, Settle, Settlement,
};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::allocate::PartitionAllocation;
use crate::client::{instance_name, rpc_hook};
use crate::config::{MessageModel, RocketMqConsumerProperties, Subscription};
use crate::consumer::{from_where, model, recovery};
use crate::dead_letter;
use crate::delivery::RocketMqRaw;
use crate::failure::{classify, unreachable};
use crate::headers;
use crate::provisioning::{Admin, ConsumerTopic};
use crate::runtime::{ClientDomain, DomainSize};

/// A queue, as the polled messages name it.
type QueueKey = (String, String, i32);

fn key(ext: &MessageExt) -> QueueKey {
    (
        ext.topic().as_str().to_owned(),
        ext.broker_name().to_owned(),
        ext.queue_id(),
    )
}

#[derive(Default)]
struct State {
    /// Polled, not handed out yet.
    buffer: VecDeque<Arc<MessageExt>>,
    /// Handed out and not settled yet, per queue.
    outstanding: HashMap<QueueKey, usize>,
}

impl State {
    /// Whether another message of `queue` is buffered or handed out (besides the one settling).
    fn others_pending(&self, queue: &QueueKey) -> bool {
        self.outstanding.get(queue).copied().unwrap_or(0) > 1
            || self.buffer.iter().any(|m| key(m) == *queue)
    }

    fn settled(&mut self, queue: &QueueKey) {
        if let Some(n) = self.outstanding.get_mut(queue) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(queue);
            }
        }
    }
}

/// The pollable source of a binding: a lite pull consumer on a client domain of its own.
pub struct RocketMqPollable {
    binding: String,
    topic: ConsumerTopic,
    clustering: bool,
    poll_timeout: u64,
    recovery: Recovery,
    admin: Arc<Admin>,
    consumer: DefaultLitePullConsumer,
    state: Mutex<State>,
    domain: ClientDomain,
}

impl std::fmt::Debug for RocketMqPollable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketMqPollable")
            .field("binding", &self.binding)
            .field("topic", &self.topic.topic)
            .field("group", &self.topic.group)
            .finish_non_exhaustive()
    }
}

impl RocketMqPollable {
    /// Creates and starts the lite pull consumer of a provisioned topic.
    pub(crate) async fn bind(
        spec: &ConsumerSpec<RocketMqConsumerProperties>,
        topic: &ConsumerTopic,
        admin: Arc<Admin>,
    ) -> Result<Self, BinderError> {
        let props = &spec.extension;
        let common = &topic.common;
        let binding = spec.binding.to_string();
        let domain = ClientDomain::new(
            &format!("rocketmq-poll-{binding}"),
            &DomainSize::consumer(2, std::time::Duration::from_secs(120)),
        )?;
        let mut b = DefaultLitePullConsumer::builder(domain.client())
            .consumer_group(topic.group.clone())
            .name_server_addr(common.name_server.clone())
            .instance_name(instance_name("poll", &binding))
            .use_tls(common.use_tls)
            .message_model(model(props.message_model))
            .consume_from_where(from_where(props.consume_from_where))
            .pull_batch_size(i32::try_from(props.pull_batch_size.max(1)).unwrap_or(i32::MAX))
            .pull_thread_nums(props.pull.pull_thread_nums.max(1) as usize)
            .pull_threshold_for_all(props.pull.pull_threshold_for_all)
            .pull_threshold_for_queue(props.pull.pull_threshold_for_queue)
            .pull_threshold_size_for_queue(props.pull.pull_threshold_size_for_queue)
            .consume_max_span(props.pull.consume_max_span)
            .topic_metadata_check_interval_millis(props.pull.topic_metadata_check_interval_millis)
            .poll_timeout_millis(props.pull.poll_timeout_millis)
            .auto_commit(false);
        if !spec.partitions.is_empty() {
            b = b.allocate_message_queue_strategy(Arc::new(PartitionAllocation::new(
                spec.partitions.clone(),
                spec.instance_count,
            )));
        }
        if let Some(ts) = &props.consume_timestamp {
            b = b.consume_timestamp(ts.clone());
        }
        if let Some(ns) = &common.namespace {
            b = b.namespace(ns.clone());
        }
        if let Some(hook) = rpc_hook(common) {
            b = b.rpc_hook(hook);
        }
        if common.enable_msg_trace {
            b = b.enable_msg_trace_with_topic(common.trace_topic.clone());
        }
        let consumer = b.build().map_err(|e| {
            BinderError::invalid_property(
                spec.extension_key(crate::config::ROCKETMQ_BINDER_TYPE, "pull"),
                "the lite pull consumer rejects the configuration",
            )
            .with_source(e)
        })?;
        let name = topic.topic.as_str();
        match Subscription::parse(props.subscription.as_deref()) {
            Subscription::Tags(expr) => consumer.subscribe_with_expression(name, &expr).await,
            Subscription::Sql(sql) => {
                consumer
                    .subscribe_with_selector(name, Some(MessageSelector::by_sql(sql)))
                    .await
            }
        }
        .map_err(|e| {
            BinderError::invalid_property(
                spec.extension_key(crate::config::ROCKETMQ_BINDER_TYPE, "subscription"),
                format!("cannot subscribe to `{name}`"),
            )
            .with_source(e)
        })?;
        consumer.start().await.map_err(|e| {
            classify(
                e,
                common,
                format!(
                    "polled consumer group `{}` on `{name}` cannot start",
                    topic.group
                ),
                |m| unreachable(common, m),
            )
        })?;
        tracing::info!(binding = %binding, topic = %name, group = %topic.group, "RocketMQ polled consumer started");
        Ok(Self {
            binding,
            topic: topic.clone(),
            clustering: props.message_model == MessageModel::Clustering,
            poll_timeout: props.pull.poll_timeout_millis,
            recovery: recovery(props, false),
            admin,
            consumer,
            state: Mutex::new(State::default()),
            domain,
        })
    }

    async fn queue_of(&self, ext: &MessageExt) -> Result<MessageQueue, BinderError> {
        let assigned = self.consumer.assignment().await.map_err(|e| {
            BinderError::settle(&self.topic.topic, "cannot read the consumer's queues")
                .with_source(e)
        })?;
        assigned
            .into_iter()
            .find(|q| q.queue_id() == ext.queue_id() && q.topic().as_str() == ext.topic().as_str())
            .ok_or_else(|| {
                BinderError::settle(
                    &self.topic.topic,
                    format!(
                        "queue {} is no longer assigned to this consumer (rebalanced); the broker \
                         delivers its unsettled messages again",
                        ext.queue_id()
                    ),
                )
            })
    }

    /// Commits the queue of `ext`, unless another message of it is still unsettled: the client
    /// commits the queue's consumed offset, which is past every polled message.
    async fn commit(&self, state: &State, ext: &MessageExt) -> Result<(), BinderError> {
        if state.others_pending(&key(ext)) {
            return Ok(());
        }
        let mq = self.queue_of(ext).await?;
        self.consumer
            .commit_with_set(HashSet::from([mq]), true)
            .await;
        Ok(())
    }

    /// Seeks the queue of `ext` back to it; later messages of the queue are fetched again.
    async fn seek_back(&self, state: &mut State, ext: &MessageExt) -> Result<(), BinderError> {
        let queue = key(ext);
        state.buffer.retain(|m| key(m) != queue);
        let mq = self.queue_of(ext).await?;
        self.consumer
            .seek(&mq, ext.queue_offset())
            .await
            .map_err(|e| {
                BinderError::settle(
                    &self.topic.topic,
                    "cannot seek the queue back to the message",
                )
                .with_source(e)
            })
    }
}

impl Settle for RocketMqPollable {
    type Raw = RocketMqRaw;

    fn recovery(&self) -> Recovery {
        self.recovery
    }

    async fn settle(&self, raw: &RocketMqRaw, settlement: Settlement) -> Result<(), BinderError> {
        let ext = raw.message();
        let mut state = self.state.lock().await;
        let result = match settlement {
            Settlement::Ack | Settlement::Reject => self.commit(&state, ext).await,
            Settlement::Requeue => self.seek_back(&mut state, ext).await,
        };
        state.settled(&key(ext));
        result
    }

    async fn dead_letter(&self, raw: &RocketMqRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        if !self.clustering {
            return Err(BinderError::settle(
                &self.topic.topic,
                "a broadcasting consumer has no dead-letter topic",
            ));
        }
        self.admin
            .publish(
                &self.topic.common,
                dead_letter::message(raw.message(), &self.topic.group, letter),
            )
            .await?;
        tracing::info!(binding = %self.binding, group = %self.topic.group, "polled message dead-lettered");
        Ok(())
    }
}

impl Pollable for RocketMqPollable {
    async fn fetch(&self) -> Result<Option<Delivery<RocketMqRaw>>, BinderError> {
        let mut state = self.state.lock().await;
        if state.buffer.is_empty() {
            let msgs = self
                .consumer
                .poll_with_timeout_zero_copy(self.poll_timeout)
                .instrument(tracing::debug_span!("rocketmq.poll", binding = %self.binding))
                .await;
            state.buffer.extend(msgs);
        }
        let Some(ext) = state.buffer.pop_front() else {
            return Ok(None);
        };
        *state.outstanding.entry(key(&ext)).or_insert(0) += 1;
        tracing::debug!(
            messaging.system = "rocketmq",
            messaging.destination.name = %self.topic.topic,
            binding = %self.binding,
            queue_id = ext.queue_id(),
            queue_offset = ext.queue_offset(),
            "polled"
        );
        let message = headers::from_rocketmq(&ext);
        Ok(Some(Delivery::new(RocketMqRaw::polled(ext), message)))
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.consumer.shutdown().await;
        self.domain.shutdown().await;
        Ok(())
    }
}
