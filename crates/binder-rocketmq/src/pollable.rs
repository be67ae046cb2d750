//! Polled consumers over the lite pull consumer (auto-commit off): ACCEPT / REJECT commit the
//! offset, REQUEUE seeks back to the message, RECOVER dead-letters (clustering) then commits.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use rocketmq_client_rust::{DefaultLitePullConsumer, MessageSelector};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere as MqFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel as MqModel;
use stream_core::BinderError;
use stream_core::binder::{ConsumerRequest, Delivery, Disposition, InboundHandler, PollableSource};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::config::{ConsumeFromWhere, MessageModel, ResolvedCommon, Subscription};
use crate::factory::{BinderInner, ProvisionedTopic, connection_error, instance_name, rpc_hook};
use crate::headers;
use crate::runtime::{ClientDomain, DomainSize};

struct State {
    buffer: VecDeque<MessageExt>,
}

pub(crate) struct RocketMqPollable {
    binding: String,
    topic: String,
    group: String,
    clustering: bool,
    poll_timeout: u64,
    common: ResolvedCommon,
    binder: Arc<BinderInner>,
    consumer: Option<DefaultLitePullConsumer>,
    state: Mutex<State>,
    domain: ClientDomain,
}

pub(crate) async fn bind(
    inner: Arc<BinderInner>,
    request: ConsumerRequest,
    topic: ProvisionedTopic,
) -> Result<Box<dyn PollableSource>, BinderError> {
    let props = inner.consumer_properties(&request.binding_name)?;
    let common = props.resolve(&inner.properties);
    let group = topic
        .group
        .clone()
        .unwrap_or_else(|| inner.consumer_group(&request, &props).0);
    let domain = ClientDomain::new(
        &format!("rocketmq-poll-{}", request.binding_name),
        &DomainSize::consumer(2, std::time::Duration::from_secs(120)),
    )?;
    let mut b = DefaultLitePullConsumer::builder(domain.client())
        .consumer_group(group.clone())
        .name_server_addr(common.name_server.clone())
        .instance_name(instance_name("poll", &request.binding_name))
        .use_tls(common.use_tls)
        .message_model(match props.message_model {
            MessageModel::Clustering => MqModel::Clustering,
            MessageModel::Broadcasting => MqModel::Broadcasting,
        })
        .consume_from_where(match props.consume_from_where {
            ConsumeFromWhere::LastOffset => MqFromWhere::ConsumeFromLastOffset,
            ConsumeFromWhere::FirstOffset => MqFromWhere::ConsumeFromFirstOffset,
            ConsumeFromWhere::Timestamp => MqFromWhere::ConsumeFromTimestamp,
        })
        .pull_batch_size(i32::try_from(props.pull_batch_size.max(1)).unwrap_or(i32::MAX))
        .pull_thread_nums(props.pull.pull_thread_nums.max(1) as usize)
        .pull_threshold_for_all(props.pull.pull_threshold_for_all)
        .pull_threshold_for_queue(props.pull.pull_threshold_for_queue)
        .pull_threshold_size_for_queue(props.pull.pull_threshold_size_for_queue)
        .consume_max_span(props.pull.consume_max_span)
        .topic_metadata_check_interval_millis(props.pull.topic_metadata_check_interval_millis)
        .poll_timeout_millis(props.pull.poll_timeout_millis)
        .auto_commit(false);
    if let Some(ts) = &props.consume_timestamp {
        b = b.consume_timestamp(ts.clone());
    }
    if let Some(ns) = &common.namespace {
        b = b.namespace(ns.clone());
    }
    if let Some(hook) = rpc_hook(&common) {
        b = b.rpc_hook(hook);
    }
    if common.enable_msg_trace {
        b = b.enable_msg_trace_with_topic(common.trace_topic.clone());
    }
    let consumer = b.build().map_err(|e| BinderError::InvalidProperty {
        key: format!(
            "spring.cloud.stream.rocketmq.bindings.{}.consumer",
            request.binding_name
        ),
        reason: format!("the lite pull consumer rejects the configuration: {e}"),
    })?;
    match Subscription::parse(props.subscription.as_deref()) {
        Subscription::Tags(expr) => {
            consumer
                .subscribe_with_expression(&topic.topic, &expr)
                .await
        }
        Subscription::Sql(sql) => {
            consumer
                .subscribe_with_selector(&topic.topic, Some(MessageSelector::by_sql(sql)))
                .await
        }
    }
    .map_err(|e| BinderError::InvalidProperty {
        key: format!(
            "spring.cloud.stream.rocketmq.bindings.{}.consumer.subscription",
            request.binding_name
        ),
        reason: format!("cannot subscribe to `{}`: {e}", topic.topic),
    })?;
    consumer.start().await.map_err(|e| {
        connection_error(
            &common,
            format!(
                "polled consumer group `{group}` on `{}` cannot start: {e}",
                topic.topic
            ),
        )
    })?;
    tracing::info!(binding = %request.binding_name, topic = %topic.topic, group = %group, "RocketMQ polled consumer started");
    Ok(Box::new(RocketMqPollable {
        binding: request.binding_name,
        topic: topic.topic,
        group,
        clustering: props.message_model == MessageModel::Clustering,
        poll_timeout: props.pull.poll_timeout_millis,
        common,
        binder: inner,
        consumer: Some(consumer),
        state: Mutex::new(State {
            buffer: VecDeque::new(),
        }),
        domain,
    }))
}

impl RocketMqPollable {
    fn consumer(&self) -> Result<&DefaultLitePullConsumer, BinderError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| BinderError::Closed(self.binding.clone()))
    }

    async fn queue_of(&self, ext: &MessageExt) -> Result<MessageQueue, BinderError> {
        let assigned = self
            .consumer()?
            .assignment()
            .await
            .map_err(|e| BinderError::Other(e.to_string().into()))?;
        assigned
            .into_iter()
            .find(|q| q.queue_id() == ext.queue_id() && q.topic().as_str() == ext.topic().as_str())
            .ok_or_else(|| {
                BinderError::Other(
                    format!(
                        "queue {} of `{}` is no longer assigned to this consumer (rebalanced)",
                        ext.queue_id(),
                        ext.topic()
                    )
                    .into(),
                )
            })
    }

    async fn commit(&self, state: &State, ext: &MessageExt) -> Result<(), BinderError> {
        // Commit only when no earlier-polled message of the same queue is still unsettled:
        // the client commits the queue's consumed offset, which is past all polled messages.
        let pending = state
            .buffer
            .iter()
            .any(|m| m.queue_id() == ext.queue_id() && m.topic() == ext.topic());
        if pending {
            return Ok(());
        }
        let mq = self.queue_of(ext).await?;
        self.consumer()?
            .commit_with_set(HashSet::from([mq]), true)
            .await;
        Ok(())
    }

    async fn settle(
        &self,
        state: &mut State,
        ext: &MessageExt,
        disposition: Disposition,
    ) -> Result<(), BinderError> {
        match disposition {
            Disposition::Reject { requeue: true } => {
                let mq = self.queue_of(ext).await?;
                state
                    .buffer
                    .retain(|m| !(m.queue_id() == ext.queue_id() && m.topic() == ext.topic()));
                self.consumer()?
                    .seek(&mq, ext.queue_offset())
                    .await
                    .map_err(|e| BinderError::Other(format!("cannot seek back: {e}").into()))?;
                Ok(())
            }
            Disposition::Recover(failed) if self.clustering => {
                let mut m = ext.message_inner().clone();
                m.set_topic(cheetah_string::CheetahString::from_string(format!(
                    "%DLQ%{}",
                    self.group
                )));
                self.binder.publish_direct(&self.common, m).await?;
                tracing::info!(error = %failed.error, group = %self.group, "polled message dead-lettered");
                self.commit(state, ext).await
            }
            _ => self.commit(state, ext).await,
        }
    }
}

#[async_trait]
impl PollableSource for RocketMqPollable {
    async fn poll(&self, handler: &dyn InboundHandler) -> Result<bool, BinderError> {
        let mut state = self.state.lock().await;
        if state.buffer.is_empty() {
            let msgs = self.consumer()?.poll_with_timeout(self.poll_timeout).await;
            state.buffer.extend(msgs);
        }
        let Some(ext) = state.buffer.pop_front() else {
            return Ok(false);
        };
        let span = tracing::debug_span!(
            "rocketmq.poll",
            messaging.system = "rocketmq",
            messaging.destination.name = %self.topic,
            binding = %self.binding,
            queue_id = ext.queue_id(),
            queue_offset = ext.queue_offset(),
        );
        let raw: Arc<dyn Any + Send + Sync> = Arc::new(ext.clone());
        let delivery = Delivery::new(headers::from_rocketmq(&ext)).with_raw(raw);
        let disposition = handler.handle(delivery).instrument(span.clone()).await;
        self.settle(&mut state, &ext, disposition)
            .instrument(span)
            .await?;
        Ok(true)
    }

    async fn close(&self) -> Result<(), BinderError> {
        if let Some(c) = &self.consumer {
            c.shutdown().await;
        }
        self.domain.shutdown().await;
        Ok(())
    }
}
