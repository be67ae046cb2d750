//! Producer bindings: one long-lived channel on the publishing connection, routing keys
//! resolved at bind time, publisher confirms awaited per send (many in flight), batching,
//! compression, `x-delay`, returns and nacks, transactions.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use lapin::Confirmation;
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel};
use stream_core::binder::{Outbound, Producer};
use stream_core::expression::{Expression, Value};
use stream_core::{BinderError, Message};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batching;
use crate::channel_slot::ChannelSlot;
use crate::compression;
use crate::error::RabbitError;
use crate::frame;
use crate::headers::{self, HeaderPatterns};
use crate::open_batches::{Batching, Pending, Released};
use crate::shared::Shared;
use crate::transaction;

/// How long a publisher confirm may take before the connection is presumed dead.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Maps a client error to one naming what was being done; the context is only built when
/// there is an error (nothing allocated per send).
fn lapin_err(context: &'static str) -> impl FnOnce(lapin::Error) -> RabbitError {
    move |source| RabbitError::Lapin {
        context: context.to_owned(),
        source,
    }
}

/// How the routing key of each message is found.
#[derive(Debug)]
pub(crate) enum RoutingKey {
    /// A fixed key (`routing-key`, else the destination); with partitions, the keys
    /// `<key>-<n>` are built once.
    Fixed {
        key: String,
        /// `key` as an AMQP short string, built once (`None` when longer than 255 bytes: an
        /// error per send, naming the key).
        short: Option<ShortString>,
        /// `Some` when the producer is partitioned.
        partitioned: Option<Vec<ShortString>>,
    },
    /// `routing-key-expression`, evaluated per message; `true` when partitioned.
    Expression(Expression, bool),
}

impl RoutingKey {
    pub(crate) fn fixed(key: &str, partition_count: Option<u32>) -> Self {
        let partitioned = partition_count.map(|n| {
            (0..n)
                .filter_map(|i| ShortString::try_new(format!("{key}-{i}")).ok())
                .collect()
        });
        RoutingKey::Fixed {
            key: key.to_owned(),
            short: ShortString::try_new(key).ok(),
            partitioned,
        }
    }

    /// The routing key for a message sent to `partition` (the runtime's selection, for
    /// partitioned producers).
    pub(crate) fn resolve(
        &self,
        message: &Message<Bytes>,
        partition: Option<u32>,
    ) -> Result<Cow<'_, ShortString>, String> {
        let partitioned_producer = match self {
            RoutingKey::Fixed { partitioned, .. } => partitioned.is_some(),
            RoutingKey::Expression(_, p) => *p,
        };
        let partition = partition.filter(|_| partitioned_producer);
        let base = match self {
            RoutingKey::Fixed {
                key,
                short,
                partitioned,
            } => {
                return match partition {
                    None => match short {
                        Some(k) => Ok(Cow::Borrowed(k)),
                        None => ShortString::try_new(key.as_str())
                            .map(Cow::Owned)
                            .map_err(|e| e.to_string()),
                    },
                    Some(p) => match usize::try_from(p)
                        .ok()
                        .and_then(|i| partitioned.as_ref().and_then(|keys| keys.get(i)))
                    {
                        Some(k) => Ok(Cow::Borrowed(k)),
                        None => ShortString::try_new(format!("{key}-{p}"))
                            .map(Cow::Owned)
                            .map_err(|e| e.to_string()),
                    },
                };
            }
            RoutingKey::Expression(expr, _) => match expr.evaluate(message) {
                Ok(Value::Null) => {
                    return Err(format!(
                        "routing-key-expression `{}` evaluated to null",
                        expr.source()
                    ));
                }
                Ok(v) => v.to_string(),
                Err(e) => {
                    return Err(format!(
                        "routing-key-expression `{}` failed: {e}",
                        expr.source()
                    ));
                }
            },
        };
        let key = match partition {
            Some(p) => format!("{base}-{p}"),
            None => base,
        };
        ShortString::try_new(key)
            .map(Cow::Owned)
            .map_err(|e| e.to_string())
    }
}

pub use crate::shared::ConfirmAckCallback;

/// Header added to messages handed to a confirm-ack callback (Spring Integration's
/// `AmqpHeaders.PUBLISH_CONFIRM`).
pub const PUBLISH_CONFIRM: &str = "amqp_publishConfirm";

/// What a producer does per send, fixed at bind time.
pub(crate) struct ProducerOptions {
    pub(crate) delivery_mode: u8,
    /// Publisher confirms on (`publisher-confirm-type` simple or correlated).
    pub(crate) confirms: bool,
    /// Publish mandatory (error channel and publisher returns on).
    pub(crate) mandatory: bool,
    pub(crate) transacted: bool,
    /// Gzip level when `compress` is set.
    pub(crate) compress: Option<u32>,
    pub(crate) delay: Option<Expression>,
    pub(crate) confirm_ack: Option<ConfirmAckCallback>,
}

/// A producer binding.
pub(crate) struct RabbitProducer {
    pub(crate) binding_name: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) exchange: ShortString,
    pub(crate) routing: RoutingKey,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) options: ProducerOptions,
    pub(crate) batching: Option<Batching>,
    pub(crate) channel: ChannelSlot,
    /// Serializes publish + tx.commit on a transacted producer's channel.
    pub(crate) tx_lock: Mutex<()>,
    pub(crate) closed: AtomicBool,
    pub(crate) stop: CancellationToken,
}

impl RabbitProducer {
    fn exchange_name(&self) -> &str {
        self.exchange.as_str()
    }

    fn binder_id(&self) -> usize {
        self.shared.id()
    }

    /// The publishing channel, opened (with confirms or tx.select when configured) on first use
    /// or after loss.
    pub(crate) async fn channel(&self) -> Result<Arc<Channel>, RabbitError> {
        self.channel
            .get_or_open(|| async {
                let conn = self.shared.publisher.get().await?;
                let ch = conn
                    .create_channel()
                    .await
                    .map_err(|source| RabbitError::Lapin {
                        context: format!(
                            "opening a publishing channel for exchange `{}`",
                            self.exchange_name()
                        ),
                        source,
                    })?;
                if self.options.transacted {
                    ch.tx_select()
                        .await
                        .map_err(lapin_err("tx.select on the publishing channel"))?;
                } else if self.options.confirms {
                    ch.confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(lapin_err("enabling publisher confirms"))?;
                }
                Ok(ch)
            })
            .await
    }

    fn send_error(&self, routing_key: &str, e: Arc<RabbitError>) -> BinderError {
        let mut err = BinderError::send(
            self.exchange_name(),
            format!("routing key `{routing_key}`: {e}"),
        );
        if let Some(u) = e.undelivered() {
            err = err.with_undelivered(u);
        }
        if e.is_transient() {
            err.temporary()
        } else {
            err
        }
    }

    /// Builds the AMQP properties of a message (with `x-delay`).
    fn properties(&self, message: &Message<Bytes>) -> Result<BasicProperties, String> {
        let mut props = headers::outbound_properties(
            message.headers(),
            &self.patterns,
            self.options.delivery_mode,
        );
        if let Some(expr) = &self.options.delay {
            let delay = match expr.evaluate(message) {
                Ok(Value::Null) => None,
                Ok(Value::Int(n)) => Some(i64::from(n)),
                Ok(Value::Long(n)) => Some(n),
                Ok(Value::Double(f)) => Some(f as i64),
                Ok(Value::String(s)) => s.trim().parse::<i64>().ok(),
                Ok(other) => {
                    return Err(format!(
                        "delay-expression `{}` gave a {}, not a number",
                        expr.source(),
                        other.type_name()
                    ));
                }
                Err(e) => return Err(format!("delay-expression `{}` failed: {e}", expr.source())),
            };
            // Spring's MessageProperties.setDelay(Integer): a negative delay sets no header.
            if let Some(d) = delay.filter(|d| *d >= 0) {
                let mut table = props.headers().clone().unwrap_or_default();
                table.insert(
                    X_DELAY.into(),
                    AMQPValue::LongInt(i32::try_from(d).unwrap_or(i32::MAX)),
                );
                props = props.with_headers(table);
            }
        }
        Ok(props)
    }

    /// The properties a batch's first message gives the whole batch.
    fn batch_properties(&self, p: &Pending) -> BasicProperties {
        p.props.clone().unwrap_or_else(|| {
            headers::outbound_properties(
                p.message.headers(),
                &self.patterns,
                self.options.delivery_mode,
            )
        })
    }

    /// Gzips the body (after batching) when `compress` is set.
    fn compress(&self, body: Bytes, props: BasicProperties) -> (Bytes, BasicProperties) {
        let Some(level) = self.options.compress else {
            return (body, props);
        };
        let zipped = compression::gzip(&body, level);
        let encoding =
            compression::gzip_encoding(props.content_encoding().as_ref().map(|e| e.as_str()));
        let mut table = props.headers().clone().unwrap_or_default();
        table.insert(
            compression::SPRING_AUTO_DECOMPRESS.into(),
            AMQPValue::Boolean(true),
        );
        let props = props
            .with_headers(table)
            .with_content_encoding(ShortString::from(encoding));
        (Bytes::from(zipped), props)
    }

    /// Refuses a message whose content header frame exceeds the publisher connection's
    /// `frame_max`: lapin would send it and the broker would close the connection with 501.
    async fn check_frame(&self, props: &BasicProperties) -> Result<(), RabbitError> {
        let size = frame::header_frame_len(props);
        // No frame is smaller than RabbitMQ's minimum frame_max: skip the lookup.
        if size <= 4096 {
            return Ok(());
        }
        let frame_max = self
            .shared
            .publisher
            .get()
            .await?
            .configuration()
            .frame_max();
        if frame_max > 0 && size > frame_max as usize {
            tracing::error!(
                exchange = %self.exchange_name(),
                size,
                frame_max,
                "message not sent: its header frame exceeds frame_max"
            );
            return Err(RabbitError::HeadersTooLarge {
                exchange: self.exchange_name().to_owned(),
                size,
                frame_max,
            });
        }
        Ok(())
    }

    /// Publishes one AMQP message and, with confirms, waits for its confirm; a returned
    /// (mandatory, unroutable) or nacked message is an error.
    async fn publish_raw(
        &self,
        routing_key: &ShortString,
        body: Bytes,
        props: BasicProperties,
    ) -> Result<(), RabbitError> {
        let (body, props) = self.compress(body, props);
        self.check_frame(&props).await?;
        let options = BasicPublishOptions {
            mandatory: self.options.mandatory && !self.options.transacted,
            ..BasicPublishOptions::default()
        };
        if self.options.transacted {
            let _serial = self.tx_lock.lock().await;
            let ch = self.channel().await?;
            ch.basic_publish(
                self.exchange.clone(),
                routing_key.clone(),
                options,
                &body,
                props,
            )
            .await
            .map_err(lapin_err("basic.publish"))?;
            return ch.tx_commit().await.map_err(lapin_err("tx.commit"));
        }
        let ch = self.channel().await?;
        let confirm = ch
            .basic_publish(
                self.exchange.clone(),
                routing_key.clone(),
                options,
                &body,
                props,
            )
            .await
            .map_err(lapin_err("basic.publish"))?;
        if !self.options.confirms {
            return Ok(());
        }
        let returned = |r: BasicReturnMessage| RabbitError::Returned {
            exchange: r.delivery.exchange.to_string(),
            routing_key: r.delivery.routing_key.to_string(),
            reply_code: r.reply_code,
            reply_text: r.reply_text.to_string(),
        };
        let confirm = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(c) => c.map_err(lapin_err("waiting for the publisher confirm"))?,
            Err(_) => {
                // Not blocked by a resource alarm yet silent: the connection died without the
                // client noticing. Drop it so the retry reconnects (the message may then be
                // published twice: at least once).
                if let Some(conn) = self.shared.publisher.current().await
                    && !conn.status().blocked()
                {
                    self.shared.publisher.discard(&conn).await;
                }
                return Err(RabbitError::Connect {
                    target: self.shared.publisher.target().to_owned(),
                    reason: format!(
                        "no publisher confirm within {CONFIRM_TIMEOUT:?} (exchange `{}`); the connection is presumed dead",
                        self.exchange_name()
                    ),
                });
            }
        };
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(r)) => Err(returned(r)),
            Confirmation::Nack(r) => Err(RabbitError::Nacked {
                exchange: self.exchange_name().to_owned(),
                routing_key: routing_key.to_string(),
                reason: match r {
                    Some(r) => format!("returned: {} {}", r.reply_code, r.reply_text),
                    None => "negative publisher confirm (queue full, rejected or internal error)"
                        .to_owned(),
                },
            }),
        }
    }

    fn confirmed(&self, original: Option<Message<Bytes>>) {
        if let (Some(cb), Some(m)) = (&self.options.confirm_ack, original) {
            cb(m.with_header(PUBLISH_CONFIRM, true));
        }
    }

    /// Publishes a released batch (a batch of one as a plain message) and tells its waiters.
    async fn publish_batch(
        &self,
        key: &ShortString,
        released: Released,
    ) -> Result<(), Arc<RabbitError>> {
        let Released {
            items: batch,
            completer,
        } = released;
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let first_props = self.batch_properties(first);
        let (body, props) = match batch.len() {
            1 => (first.body.clone(), first_props),
            n => {
                let body = batching::encode(&batch.iter().map(|p| &p.body[..]).collect::<Vec<_>>());
                let mut table = first_props.headers().clone().unwrap_or_default();
                table.insert(
                    batching::SPRING_BATCH_FORMAT.into(),
                    AMQPValue::LongString(batching::BATCH_FORMAT_LENGTH_HEADER4.into()),
                );
                table.insert(
                    batching::BATCH_SIZE.into(),
                    AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX)),
                );
                (Bytes::from(body), first_props.with_headers(table))
            }
        };
        let result = self.publish_raw(key, body, props).await.map_err(Arc::new);
        if let Err(e) = &result {
            tracing::warn!(binding = %self.binding_name, exchange = %self.exchange_name(), routing_key = %key, messages = batch.len(), error = %e, "publishing a batch failed");
        }
        if result.is_ok() && self.options.confirm_ack.is_some() {
            for p in batch {
                self.confirmed(Some(p.message));
            }
        }
        if let Some(c) = completer {
            c.complete(result.clone());
        }
        result
    }

    async fn publish(
        &self,
        message: Message<Bytes>,
        partition: Option<u32>,
    ) -> Result<(), BinderError> {
        let refused = |reason: String| BinderError::send(self.exchange_name(), reason);
        let routing_key = self.routing.resolve(&message, partition).map_err(refused)?;
        // Batched messages share the first one's properties: build them when the batch is sent,
        // unless they depend on this message's expressions.
        let props = if self.batching.is_none() || self.options.delay.is_some() {
            Some(self.properties(&message).map_err(refused)?)
        } else {
            None
        };
        // Inside a transacted consumer of this binder: join its transaction.
        if let Some(tx) = transaction::current(self.binder_id()) {
            let props = match props {
                Some(p) => p,
                None => self.properties(&message).map_err(refused)?,
            };
            let (body, props) = self.compress(message.payload().clone(), props);
            return tx
                .basic_publish(
                    self.exchange.clone(),
                    routing_key.clone().into_owned(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
                .map(|_| ())
                .map_err(|e| {
                    self.send_error(
                        routing_key.as_str(),
                        Arc::new(RabbitError::Lapin {
                            context: "basic.publish in the consumer's transaction".to_owned(),
                            source: e,
                        }),
                    )
                });
        }
        let track = self.options.confirm_ack.is_some();
        let Some(batching) = &self.batching else {
            let original = track.then(|| message.clone());
            let props = match props {
                Some(p) => p,
                None => self.properties(&message).map_err(refused)?,
            };
            self.publish_raw(&routing_key, message.payload().clone(), props)
                .await
                .map_err(|e| self.send_error(routing_key.as_str(), Arc::new(e)))?;
            self.confirmed(original);
            return Ok(());
        };
        let pending = Pending {
            body: message.payload().clone(),
            props,
            message,
        };
        let (released, completion) = batching.add(&routing_key, pending);
        let mut first_error = None;
        for batch in released {
            if let Err(e) = self.publish_batch(&routing_key, batch).await {
                first_error.get_or_insert(e);
            }
        }
        match completion {
            // Reported once its batch is confirmed (or committed).
            Some(c) => match c.wait().await {
                Some(r) => r.map_err(|e| self.send_error(routing_key.as_str(), e)),
                None => Err(BinderError::closed(&self.binding_name)),
            },
            // Fire-and-forget: buffered, or sent with this call.
            None => match first_error {
                Some(e) => Err(self.send_error(routing_key.as_str(), e)),
                None => Ok(()),
            },
        }
    }

    /// Sends every open batch.
    async fn flush_batches(&self) -> Result<(), BinderError> {
        let Some(batching) = &self.batching else {
            return Ok(());
        };
        let mut first = None;
        for (key, batch) in batching.drain() {
            if let Err(e) = self.publish_batch(&key, batch).await {
                first.get_or_insert(self.send_error(key.as_str(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Sends partial batches `batch-timeout` after the last send (Spring's scheduled release).
    pub(crate) fn spawn_batch_timer(self: &Arc<Self>) {
        if self.batching.is_none() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let Some(batching) = this.batching.as_ref() else {
                    return;
                };
                match batching.due() {
                    None => {
                        let wake = batching.wake.clone();
                        drop(this);
                        tokio::select! {
                            _ = wake.notified() => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    Some(due) if Instant::now() >= due => {
                        if let Err(e) = this.flush_batches().await {
                            tracing::debug!(error = %e, "timed batch release failed");
                        }
                    }
                    Some(due) => {
                        drop(this);
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
        });
    }
}

/// The delayed-message plugin's header (`MessageProperties.X_DELAY`).
pub const X_DELAY: &str = "x-delay";

/// The producer of a RabbitMQ output binding.
pub struct RabbitProducerBinding(pub(crate) Arc<RabbitProducer>);

impl std::fmt::Debug for RabbitProducerBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitProducer")
            .field("binding", &self.0.binding_name)
            .field("exchange", &self.0.exchange_name())
            .finish_non_exhaustive()
    }
}

impl Producer for RabbitProducerBinding {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        self.0.send(outbound).await
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.0.flush_batches().await
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.0.close().await
    }
}

impl RabbitProducer {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BinderError::closed(&self.binding_name));
        }
        let span = tracing::debug_span!(
            "rabbit.send",
            binding = %self.binding_name,
            exchange = %self.exchange_name()
        );
        self.publish(outbound.message, outbound.partition)
            .instrument(span)
            .await
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.closed.store(true, Ordering::Release);
        let flushed = self.flush_batches().await;
        self.stop.cancel();
        let ch = self.channel.take();
        if let Some(ch) = ch
            && ch.status().connected()
        {
            if self.options.confirms && !self.options.transacted {
                let _ = ch.wait_for_confirms().await;
            }
            let _ = ch.close(200, "producer closed".into()).await;
        }
        flushed
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_partitioned_keys() {
        let r = RoutingKey::fixed("orders", Some(3));
        let m = Message::bytes("x");
        assert_eq!(r.resolve(&m, None).expect("key").as_str(), "orders");
        assert_eq!(r.resolve(&m, Some(2)).expect("key").as_str(), "orders-2");
        assert_eq!(r.resolve(&m, Some(7)).expect("key").as_str(), "orders-7");
        let plain = RoutingKey::fixed("orders", None);
        assert_eq!(
            plain.resolve(&m, Some(7)).expect("key").as_str(),
            "orders",
            "not partitioned: partition ignored"
        );
    }

    #[test]
    fn expression_keys() {
        let r = RoutingKey::Expression(Expression::parse("headers['kind']").expect("parse"), true);
        let m = Message::bytes("x").with_header("kind", "a.b");
        assert_eq!(r.resolve(&m, None).expect("key").as_str(), "a.b");
        assert_eq!(r.resolve(&m, Some(1)).expect("key").as_str(), "a.b-1");
        let err = r.resolve(&Message::bytes("x"), None).expect_err("null");
        assert!(err.contains("headers['kind']"), "{err}");
        let lit =
            RoutingKey::Expression(Expression::parse("'my.routingKey'").expect("parse"), false);
        assert_eq!(
            lit.resolve(&Message::bytes("x"), None)
                .expect("key")
                .as_str(),
            "my.routingKey"
        );
    }
}
