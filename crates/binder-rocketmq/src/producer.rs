//! Producer bindings: Sync / Async / OneWay sends, queue selection, transactions.

use std::any::Any;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_client_rust::{
    ClientError, ClientRuntime, DefaultMQProducer, LocalTransactionState, SendResult, SendStatus,
    TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use stream_core::binder::{InFlight, Outbound, Producer, ProducerSpec};
use stream_core::{BinderError, Message};
use tokio::sync::RwLock;
use tracing::Instrument;

use crate::client::{client_config, instance_name, rpc_hook};
use crate::config::{
    ProducerType, ResolvedCommon, RocketMqBinderProperties, RocketMqProducerProperties, SendType,
};
use crate::failure::{classify, unreachable};
use crate::headers;
use crate::hooks::{
    Hooks, MessageQueueSelectorFn, SendCallbackFn, SendReceipt, TransactionHandler,
    TransactionState, known,
};
use crate::provisioning::ProducerTopic;

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
    /// The partition the runtime selected, `% queues`.
    Partition(u32),
    /// A registered selector.
    Selector(Arc<MessageQueueSelectorFn>, Message<Bytes>),
}

fn pick(route: &Route, queues: &[MessageQueue]) -> Option<MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let index = match route {
        Route::Default => 0,
        Route::Partition(p) => *p as usize % queues.len(),
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

/// A bound, enabled producer.
pub(crate) struct ActiveProducer {
    binding: String,
    topic: String,
    common: ResolvedCommon,
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

/// The producer of an output binding: Sync, Async or OneWay sends, queue selection by
/// partition or a named selector, transactional sends; a binding with `enabled=false` refuses
/// every message, naming the key.
pub struct RocketMqProducer {
    kind: Kind,
}

enum Kind {
    Active(Arc<ActiveProducer>),
    Disabled { binding: String, topic: String },
}

impl std::fmt::Debug for RocketMqProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (binding, topic, enabled) = match &self.kind {
            Kind::Active(p) => (&p.binding, &p.topic, true),
            Kind::Disabled { binding, topic } => (binding, topic, false),
        };
        f.debug_struct("RocketMqProducer")
            .field("binding", binding)
            .field("topic", topic)
            .field("enabled", &enabled)
            .finish_non_exhaustive()
    }
}

impl RocketMqProducer {
    /// A producer with `enabled=false`.
    pub(crate) fn disabled(binding: &str, topic: &str) -> Self {
        Self {
            kind: Kind::Disabled {
                binding: binding.to_owned(),
                topic: topic.to_owned(),
            },
        }
    }
}

impl From<Arc<ActiveProducer>> for RocketMqProducer {
    fn from(p: Arc<ActiveProducer>) -> Self {
        Self {
            kind: Kind::Active(p),
        }
    }
}

fn send_error(topic: &str, reason: impl std::fmt::Display) -> BinderError {
    BinderError::send(topic, reason)
}

/// A failed client send: temporary when the client says it may pass.
fn client_send_error(
    topic: &str,
    common: &ResolvedCommon,
    what: &str,
    e: ClientError,
) -> BinderError {
    classify(e, common, what, |m| BinderError::send(topic, m)).with_destination(topic)
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

/// What a producer is bound with besides its spec: the binder's properties, handlers and
/// client runtime.
pub(crate) struct ProducerContext<'a> {
    pub(crate) binder: &'a RocketMqBinderProperties,
    pub(crate) hooks: &'a Hooks,
    pub(crate) client: Arc<ClientRuntime>,
}

/// Creates and starts the producer of a provisioned topic.
pub(crate) async fn bind(
    cx: ProducerContext<'_>,
    spec: &ProducerSpec<RocketMqProducerProperties>,
    topic: &ProducerTopic,
) -> Result<Arc<ActiveProducer>, BinderError> {
    let binding = &*spec.binding;
    let props = &spec.extension;
    let key = |k: &str| spec.extension_key(crate::config::ROCKETMQ_BINDER_TYPE, k);
    let common = props.resolve(cx.binder);
    let group = common
        .group
        .clone()
        .unwrap_or_else(|| "anonymous".to_owned());
    let selector = match &props.message_queue_selector {
        None => None,
        Some(name) => Some(Arc::clone(cx.hooks.selectors.get(name).ok_or_else(
            || {
                BinderError::invalid_property(
                    key("message-queue-selector"),
                    format!(
                        "no message-queue selector named `{name}` ({}); register it with \
                     RocketMqBinderFactory::builder().message_queue_selector(..)",
                        known(&cx.hooks.selectors)
                    ),
                )
            },
        )?)),
    };
    let callback = match &props.send_call_back {
        None => None,
        Some(name) => Some(Arc::clone(cx.hooks.callbacks.get(name).ok_or_else(
            || {
                BinderError::invalid_property(
                    key("send-call-back"),
                    format!(
                        "no send callback named `{name}` ({}); register it with \
                     RocketMqBinderFactory::builder().send_callback(..)",
                        known(&cx.hooks.callbacks)
                    ),
                )
            },
        )?)),
    };
    if callback.is_some() && props.send_type != SendType::Async {
        tracing::warn!(binding = %binding, "send-call-back is only called for send-type Async");
    }
    let instance = instance_name("producer", binding);
    let config = client_config(&common, &instance)?;
    let partitioned = spec.partition_count.is_some();
    let client = match props.producer_type {
        ProducerType::Normal => {
            let mut b = DefaultMQProducer::builder(Arc::clone(&cx.client))
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
                .default_topic_queue_nums(cx.binder.default_topic_queue_nums)
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
                unreachable(&common, format!("producer group `{group}` cannot start"))
                    .with_source(e)
            })?;
            Client::Normal(p)
        }
        ProducerType::Trans => {
            let name = props.transaction_listener.clone().unwrap_or_default();
            let handler = cx.hooks.transaction_listeners.get(&name).ok_or_else(|| {
                BinderError::invalid_property(
                    key("transaction-listener"),
                    format!(
                        "no transaction listener named `{name}` ({}); register it with \
                         RocketMqBinderFactory::builder().transaction_listener(..)",
                        known(&cx.hooks.transaction_listeners)
                    ),
                )
            })?;
            if selector.is_some() || partitioned {
                tracing::warn!(binding = %binding, "transactional sends ignore queue selection");
            }
            let mut b = TransactionMQProducer::builder(Arc::clone(&cx.client))
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
                .default_topic_queue_nums(cx.binder.default_topic_queue_nums)
                .transaction_listener(TxAdapter {
                    handler: Arc::clone(handler),
                    topic: topic.topic.clone(),
                });
            if let Some(hook) = rpc_hook(&common) {
                b = b.rpc_hook(hook);
            }
            let mut p = b.build();
            p.start().await.map_err(|e| {
                unreachable(
                    &common,
                    format!("transactional producer group `{group}` cannot start"),
                )
                .with_source(e)
            })?;
            Client::Trans(p)
        }
    };
    tracing::info!(binding = %binding, topic = %topic.topic, group = %group, send_type = %props.send_type, producer_type = %props.producer_type, queues = topic.queues, "RocketMQ producer started");
    Ok(Arc::new(ActiveProducer {
        binding: binding.to_owned(),
        topic: topic.topic.clone(),
        common,
        send_type: props.send_type,
        max_message_size: props.max_message_size as usize,
        error_channel: spec.common.error_channel_enabled,
        partitioned,
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

impl ActiveProducer {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        let topic = self.topic.as_str();
        let message = outbound.message;
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
            .ok_or_else(|| BinderError::closed(&self.binding))?;
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
                    .map_err(|e| {
                        client_send_error(topic, &self.common, "the transactional send failed", e)
                    })?;
                check_status(topic, r.send_result)?;
                tracing::debug!(state = ?r.local_transaction_state, "transactional message sent");
                return Ok(());
            }
            Client::Normal(p) => p,
        };
        let route = if let Some(s) = &self.selector {
            Route::Selector(Arc::clone(s), message)
        } else if let Some(partition) = outbound.partition.filter(|_| self.partitioned) {
            Route::Partition(partition)
        } else {
            Route::Default
        };
        let selector = |mqs: &[MessageQueue], _m: &_, r: &Route| pick(r, mqs);
        let failed = |e: ClientError| client_send_error(topic, &self.common, "the send failed", e);
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
                .map_err(failed)?;
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
            .map_err(failed),
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
                dispatched.map_err(failed)?;
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

    /// Waits until every asynchronous send has been answered (its callback ran), at most twice
    /// `send-msg-timeout`. Sync and one-way sends are complete when `send` returns.
    async fn flush(&self) -> Result<(), BinderError> {
        if !self.in_flight.wait_idle_for(self.flush_timeout).await {
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

    /// Flushes, then shuts the client down. Idempotent.
    pub(crate) async fn close(&self) -> Result<(), BinderError> {
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

impl Producer for RocketMqProducer {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        match &self.kind {
            Kind::Active(p) => {
                let span = tracing::debug_span!(
                    "rocketmq.send",
                    messaging.system = "rocketmq",
                    messaging.destination.name = %p.topic,
                    binding = %p.binding,
                );
                p.send(outbound).instrument(span).await
            }
            // As the Java binder: a disabled producer binding refuses every message, clearly.
            Kind::Disabled { binding, topic } => Err(send_error(
                topic,
                format!(
                    "binding `{binding}` is disabled \
                     (spring.cloud.stream.rocketmq.bindings.{binding}.producer.enabled=false); \
                     the message was not delivered"
                ),
            )),
        }
    }

    async fn flush(&self) -> Result<(), BinderError> {
        match &self.kind {
            Kind::Active(p) => p.flush().await,
            Kind::Disabled { .. } => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), BinderError> {
        match &self.kind {
            Kind::Active(p) => p.close().await,
            Kind::Disabled { .. } => Ok(()),
        }
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
            pick(&Route::Partition(7), &qs).map(|q| q.queue_id()),
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
