//! Producer bindings: Sync / Async / OneWay sends, queue selection, transactions.

use std::any::Any;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rocketmq_client_rust::{
    ClientError, DefaultMQProducer, LocalTransactionState, SendResult, SendStatus,
    TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use stream_core::binder::{Producer, ProducerRequest};
use stream_core::{BinderError, Message};
use tokio::sync::RwLock;
use tracing::Instrument;

use crate::config::{ProducerType, RocketMqProducerProperties, SendType};
use crate::consumer::InFlight;
use crate::factory::{
    BinderInner, ProvisionedTopic, client_config, connection_error, instance_name, rpc_hook,
};
use crate::headers;
use crate::hooks::{
    MessageQueueSelectorFn, SendCallbackFn, SendReceipt, TransactionHandler, TransactionState,
    known,
};

/// Asynchronous sends in flight per producer before `send` waits.
const ASYNC_IN_FLIGHT: u32 = 64;

enum Client {
    Normal(DefaultMQProducer),
    Trans(TransactionMQProducer),
}

/// How the queue of a message is chosen.
enum Route {
    /// The client's default (round robin, latency aware).
    Default,
    /// `scst_partition % queues`.
    Partition(i64),
    /// A registered selector.
    Selector(Arc<MessageQueueSelectorFn>, Message<Bytes>),
}

fn pick(route: &Route, queues: &[MessageQueue]) -> Option<MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let index = match route {
        Route::Default => 0,
        Route::Partition(p) => (p.unsigned_abs() % queues.len() as u64) as usize,
        Route::Selector(f, m) => f(m, queues.len()) % queues.len(),
    };
    queues.get(index).cloned()
}

struct TxArg {
    message: Message<Bytes>,
    args: Option<String>,
}

struct TxAdapter {
    handler: Arc<dyn TransactionHandler>,
    topic: String,
}

fn to_local(state: TransactionState) -> LocalTransactionState {
    match state {
        TransactionState::Commit => LocalTransactionState::CommitMessage,
        TransactionState::Rollback => LocalTransactionState::RollbackMessage,
        TransactionState::Unknown => LocalTransactionState::Unknown,
    }
}

impl TransactionListener for TxAdapter {
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let _span =
            tracing::debug_span!("rocketmq.transaction.execute", topic = %self.topic).entered();
        match arg.and_then(|a| a.downcast_ref::<TxArg>()) {
            Some(tx) => to_local(self.handler.execute(&tx.message, tx.args.as_deref())),
            None => {
                let body = msg.get_body().cloned().unwrap_or_default();
                to_local(self.handler.execute(&Message::new(body), None))
            }
        }
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let _span =
            tracing::debug_span!("rocketmq.transaction.check", topic = %self.topic).entered();
        to_local(self.handler.check(&headers::from_rocketmq(msg)))
    }
}

/// A bound producer.
pub(crate) struct RocketMqProducer {
    binding: String,
    topic: String,
    send_type: SendType,
    max_message_size: usize,
    error_channel: bool,
    partitioned: bool,
    selector: Option<Arc<MessageQueueSelectorFn>>,
    callback: Option<Arc<SendCallbackFn>>,
    client: RwLock<Option<Client>>,
    /// Asynchronous sends whose callback has not run yet (`flush` and `close` wait for them).
    in_flight: Arc<InFlight>,
    /// How long `flush` waits for them: twice `send-msg-timeout` (the client's own deadline).
    flush_timeout: Duration,
}

fn send_error(topic: &str, reason: impl Into<String>) -> BinderError {
    BinderError::Send {
        destination: topic.to_owned(),
        reason: reason.into(),
        source: None,
    }
}

fn receipt(topic: &str, r: &SendResult) -> SendReceipt {
    SendReceipt {
        topic: topic.to_owned(),
        message_id: r.msg_id.as_ref().map(|m| m.as_str().to_owned()),
        queue_id: r.message_queue.as_ref().map(MessageQueue::queue_id),
        queue_offset: r.queue_offset,
    }
}

fn check_status(topic: &str, r: Option<SendResult>) -> Result<SendResult, BinderError> {
    match r {
        Some(r) if r.send_status == SendStatus::SendOk => Ok(r),
        Some(r) => Err(send_error(
            topic,
            format!(
                "the broker answered {:?} (message {:?} not safely stored); check the broker's \
                 flush/replication settings",
                r.send_status, r.msg_id
            ),
        )),
        None => Err(send_error(topic, "the client returned no send result")),
    }
}

pub(crate) async fn bind(
    inner: &Arc<BinderInner>,
    request: &ProducerRequest,
    props: &RocketMqProducerProperties,
    topic: ProvisionedTopic,
) -> Result<Arc<dyn stream_core::binder::Producer>, BinderError> {
    let binding = &request.binding_name;
    let key = |k: &str| format!("spring.cloud.stream.rocketmq.bindings.{binding}.producer.{k}");
    let common = props.resolve(&inner.properties);
    let group = common
        .group
        .clone()
        .unwrap_or_else(|| "anonymous".to_owned());
    let selector = match &props.message_queue_selector {
        None => None,
        Some(name) => Some(Arc::clone(inner.hooks.selectors.get(name).ok_or_else(
            || BinderError::InvalidProperty {
                key: key("message-queue-selector"),
                reason: format!(
                    "no message-queue selector named `{name}` ({}); register it with \
                     RocketMqBinderFactory::builder().message_queue_selector(..)",
                    known(&inner.hooks.selectors)
                ),
            },
        )?)),
    };
    let callback = match &props.send_call_back {
        None => None,
        Some(name) => Some(Arc::clone(inner.hooks.callbacks.get(name).ok_or_else(
            || BinderError::InvalidProperty {
                key: key("send-call-back"),
                reason: format!(
                    "no send callback named `{name}` ({}); register it with \
                     RocketMqBinderFactory::builder().send_callback(..)",
                    known(&inner.hooks.callbacks)
                ),
            },
        )?)),
    };
    if callback.is_some() && props.send_type != SendType::Async {
        tracing::warn!(binding = %binding, "send-call-back is only called for send-type Async");
    }
    let instance = instance_name("producer", binding);
    let config = client_config(&common, &instance)?;
    let client = match props.producer_type {
        ProducerType::Normal => {
            let mut b = DefaultMQProducer::builder(inner.domain.client())
                .client_config(config)
                .producer_group(group.clone())
                .name_server_addr(common.name_server.clone())
                .use_tls(common.use_tls)
                .send_msg_timeout(props.send_msg_timeout)
                .compress_msg_body_over_howmuch(props.compress_msg_body_threshold)
                .retry_times_when_send_failed(props.retry_times_when_send_failed)
                .retry_times_when_send_async_failed(props.retry_times_when_send_async_failed)
                .retry_another_broker_when_not_store_ok(props.retry_another_broker)
                .max_message_size(props.max_message_size)
                .default_topic_queue_nums(inner.properties.default_topic_queue_nums)
                // Without backpressure a burst of asynchronous sends overflows the client's
                // transport admission queue (`transport.admission.queue_saturated`); with it,
                // `send` waits for a slot instead.
                .enable_backpressure_for_async_mode(props.send_type == SendType::Async)
                .back_pressure_for_async_send_num(ASYNC_IN_FLIGHT);
            if let Some(hook) = rpc_hook(&common) {
                b = b.rpc_hook(hook);
            }
            let mut p = b.build();
            p.start().await.map_err(|e| {
                connection_error(
                    &common,
                    format!("producer group `{group}` cannot start: {e}"),
                )
            })?;
            Client::Normal(p)
        }
        ProducerType::Trans => {
            let name = props.transaction_listener.clone().unwrap_or_default();
            let handler = inner
                .hooks
                .transaction_listeners
                .get(&name)
                .ok_or_else(|| BinderError::InvalidProperty {
                    key: key("transaction-listener"),
                    reason: format!(
                        "no transaction listener named `{name}` ({}); register it with \
                         RocketMqBinderFactory::builder().transaction_listener(..)",
                        known(&inner.hooks.transaction_listeners)
                    ),
                })?;
            if selector.is_some() || request.properties.is_partitioned() {
                tracing::warn!(binding = %binding, "transactional sends ignore queue selection");
            }
            let mut b = TransactionMQProducer::builder(inner.domain.client())
                .client_config(config)
                .producer_group(group.clone())
                .name_server_addr(common.name_server.clone())
                .use_tls(common.use_tls)
                .send_msg_timeout(props.send_msg_timeout)
                .compress_msg_body_over_howmuch(props.compress_msg_body_threshold)
                .retry_times_when_send_failed(props.retry_times_when_send_failed)
                .retry_times_when_send_async_failed(props.retry_times_when_send_async_failed)
                .retry_another_broker_when_not_store_ok(props.retry_another_broker)
                .max_message_size(props.max_message_size)
                .default_topic_queue_nums(inner.properties.default_topic_queue_nums)
                .transaction_listener(TxAdapter {
                    handler: Arc::clone(handler),
                    topic: topic.topic.clone(),
                });
            if let Some(hook) = rpc_hook(&common) {
                b = b.rpc_hook(hook);
            }
            let mut p = b.build();
            p.start().await.map_err(|e| {
                connection_error(
                    &common,
                    format!("transactional producer group `{group}` cannot start: {e}"),
                )
            })?;
            Client::Trans(p)
        }
    };
    tracing::info!(binding = %binding, topic = %topic.topic, group = %group, send_type = %props.send_type, producer_type = %props.producer_type, queues = topic.queues, "RocketMQ producer started");
    Ok(Arc::new(RocketMqProducer {
        binding: binding.clone(),
        topic: topic.topic,
        send_type: props.send_type,
        max_message_size: props.max_message_size as usize,
        error_channel: request.properties.error_channel_enabled,
        partitioned: request.properties.is_partitioned(),
        selector,
        callback,
        client: RwLock::new(Some(client)),
        in_flight: Arc::new(InFlight::default()),
        flush_timeout: Duration::from_millis(
            u64::from(props.send_msg_timeout)
                .saturating_mul(2)
                .max(1_000),
        ),
    }))
}

impl RocketMqProducer {
    async fn send_inner(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        let topic = self.topic.as_str();
        if message.payload().len() > self.max_message_size {
            return Err(send_error(
                topic,
                format!(
                    "the message body has {} bytes, more than max-message-size {} \
                     (spring.cloud.stream.rocketmq.bindings.{}.producer.max-message-size); \
                     send smaller messages or raise the limit (the broker's maxMessageSize too)",
                    message.payload().len(),
                    self.max_message_size,
                    self.binding
                ),
            ));
        }
        let out = headers::to_rocketmq(topic, &message);
        let guard = self.client.read().await;
        let client = guard
            .as_ref()
            .ok_or_else(|| BinderError::Closed(self.binding.clone()))?;
        let producer = match client {
            Client::Trans(p) => {
                if out.delay_level > 0 {
                    return Err(send_error(
                        topic,
                        "a transactional message cannot carry a DELAY; remove the header or use \
                         a Normal producer",
                    ));
                }
                let arg = TxArg {
                    message,
                    args: out.transactional_args,
                };
                let r = p
                    .send_message_in_transaction(out.message, Some(arg))
                    .await
                    .map_err(|e| send_error(topic, format!("transactional send failed: {e}")))?;
                check_status(topic, r.send_result)?;
                tracing::debug!(state = ?r.local_transaction_state, "transactional message sent");
                return Ok(());
            }
            Client::Normal(p) => p,
        };
        let route = if let Some(s) = &self.selector {
            Route::Selector(Arc::clone(s), message)
        } else if let Some(partition) = out.partition.filter(|_| self.partitioned) {
            Route::Partition(partition)
        } else {
            Route::Default
        };
        let selector = |mqs: &[MessageQueue], _m: &_, r: &Route| pick(r, mqs);
        match self.send_type {
            SendType::Sync => {
                let r = match route {
                    Route::Default => producer.send(out.message).await,
                    route => {
                        producer
                            .send_with_selector(out.message, selector, route)
                            .await
                    }
                }
                .map_err(|e| send_error(topic, e.to_string()))?;
                let r = check_status(topic, r)?;
                tracing::debug!(message_id = ?r.msg_id, queue = ?r.message_queue, "sent");
                Ok(())
            }
            SendType::OneWay => match route {
                Route::Default => producer.send_oneway(out.message).await,
                route => {
                    producer
                        .send_oneway_with_selector(out.message, selector, route)
                        .await
                }
            }
            .map_err(|e| send_error(topic, e.to_string())),
            SendType::Async => {
                let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
                let waiter = self.error_channel.then_some(rx);
                let tx = Arc::new(StdMutex::new(Some(tx)));
                let user = self.callback.clone();
                let t = topic.to_owned();
                let in_flight = StdMutex::new(Some(self.in_flight.enter_owned()));
                let cb = move |r: Option<&SendResult>, e: Option<&ClientError>| {
                    let _done = in_flight.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let outcome: Result<SendReceipt, String> = match (r, e) {
                        (Some(r), _) if r.send_status == SendStatus::SendOk => Ok(receipt(&t, r)),
                        (Some(r), _) => Err(format!("the broker answered {:?}", r.send_status)),
                        (None, Some(e)) => Err(e.to_string()),
                        (None, None) => Err("no send result".to_owned()),
                    };
                    if let Err(e) = &outcome {
                        tracing::warn!(topic = %t, error = %e, "asynchronous send failed");
                    }
                    if let Some(user) = &user {
                        user(&outcome);
                    }
                    if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(outcome.map(|_| ()));
                    }
                };
                let dispatched = match route {
                    Route::Default => producer.send_with_callback(out.message, cb).await,
                    route => {
                        let cb: rocketmq_client_rust::ArcSendCallback = Arc::new(cb);
                        producer
                            .send_with_selector_callback(out.message, selector, route, Some(cb))
                            .await
                    }
                };
                dispatched.map_err(|e| send_error(topic, e.to_string()))?;
                match waiter {
                    None => Ok(()),
                    Some(rx) => match rx.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => {
                            Err(send_error(topic, format!("asynchronous send failed: {e}")))
                        }
                        Err(_) => Err(send_error(topic, "the send callback was never called")),
                    },
                }
            }
        }
    }
}

#[async_trait]
impl Producer for RocketMqProducer {
    async fn send(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        let span = tracing::debug_span!(
            "rocketmq.send",
            messaging.system = "rocketmq",
            messaging.destination.name = %self.topic,
            binding = %self.binding,
        );
        self.send_inner(message).instrument(span).await
    }

    /// Waits until every asynchronous send has been answered (its callback ran), at most twice
    /// `send-msg-timeout`. Sync and one-way sends are complete when `send` returns.
    async fn flush(&self) -> Result<(), BinderError> {
        if tokio::time::timeout(self.flush_timeout, self.in_flight.wait_idle())
            .await
            .is_err()
        {
            return Err(send_error(
                &self.topic,
                format!(
                    "{} asynchronous sends still unanswered after {:?}; the broker may be \
                     unreachable (see the send errors logged for topic `{}`)",
                    self.in_flight.current(),
                    self.flush_timeout,
                    self.topic
                ),
            ));
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        // Answers to asynchronous sends arrive through the client: keep it until they did.
        let flushed = self.flush().await;
        let client = self.client.write().await.take();
        match client {
            Some(Client::Normal(mut p)) => p.shutdown().await,
            Some(Client::Trans(mut p)) => p.shutdown().await,
            None => {}
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cheetah_string::CheetahString;

    fn queues(n: i32) -> Vec<MessageQueue> {
        (0..n)
            .map(|i| {
                MessageQueue::from_parts(
                    CheetahString::from_slice("t"),
                    CheetahString::from_slice("b"),
                    i,
                )
            })
            .collect()
    }

    #[test]
    fn partitions_select_queues_modulo_count() {
        let qs = queues(4);
        assert_eq!(
            pick(&Route::Partition(1), &qs).map(|q| q.queue_id()),
            Some(1)
        );
        assert_eq!(
            pick(&Route::Partition(6), &qs).map(|q| q.queue_id()),
            Some(2)
        );
        assert_eq!(
            pick(&Route::Partition(-3), &qs).map(|q| q.queue_id()),
            Some(3)
        );
        assert!(pick(&Route::Partition(1), &[]).is_none());
    }

    #[test]
    fn selectors_see_message_and_queue_count() {
        let f: Arc<MessageQueueSelectorFn> =
            Arc::new(|m: &Message<Bytes>, n: usize| m.payload().len() % n);
        let qs = queues(3);
        let r = Route::Selector(f, Message::bytes("abcde"));
        assert_eq!(pick(&r, &qs).map(|q| q.queue_id()), Some(2));
        let wild: Arc<MessageQueueSelectorFn> = Arc::new(|_: &Message<Bytes>, _| 99);
        let r = Route::Selector(wild, Message::bytes(""));
        assert_eq!(
            pick(&r, &qs).map(|q| q.queue_id()),
            Some(0),
            "out-of-range index wraps"
        );
    }
}
