//! Producer bindings: one long-lived channel on the publishing connection, routing keys
//! resolved at bind time, publisher confirms awaited per send (many in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use stream_core::binder::Producer;
use stream_core::expression::{Expression, Value};
use stream_core::message::names;
use stream_core::{BinderError, Message};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::binder::Shared;
use crate::error::RabbitError;
use crate::headers::{self, HeaderPatterns};

/// How the routing key of each message is found.
#[derive(Debug)]
pub(crate) enum RoutingKey {
    /// A fixed key (`routing-key`, else the destination); with partitions, the keys
    /// `<key>-<n>` are built once.
    Fixed {
        key: String,
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
            partitioned,
        }
    }

    /// The routing key for a message.
    pub(crate) fn resolve(&self, message: &Message<Bytes>) -> Result<ShortString, String> {
        let partitioned_producer = match self {
            RoutingKey::Fixed { partitioned, .. } => partitioned.is_some(),
            RoutingKey::Expression(_, p) => *p,
        };
        let partition = if partitioned_producer {
            message
                .headers()
                .get(names::PARTITION)
                .and_then(|v| v.to_i64_lenient())
        } else {
            None
        };
        let base = match self {
            RoutingKey::Fixed { key, partitioned } => {
                return match partition {
                    None => ShortString::try_new(key.as_str()).map_err(|e| e.to_string()),
                    Some(p) => match usize::try_from(p)
                        .ok()
                        .and_then(|i| partitioned.as_ref().and_then(|keys| keys.get(i)))
                    {
                        Some(k) => Ok(k.clone()),
                        None => {
                            ShortString::try_new(format!("{key}-{p}")).map_err(|e| e.to_string())
                        }
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
        ShortString::try_new(key).map_err(|e| e.to_string())
    }
}

/// A producer binding.
pub(crate) struct RabbitProducer {
    pub(crate) binding_name: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) exchange: ShortString,
    pub(crate) routing: RoutingKey,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) delivery_mode: u8,
    pub(crate) confirms: bool,
    pub(crate) channel: Mutex<Option<Channel>>,
    pub(crate) closed: AtomicBool,
}

impl RabbitProducer {
    fn exchange_name(&self) -> &str {
        self.exchange.as_str()
    }

    /// The publishing channel, opened (with confirms when configured) on first use or after loss.
    pub(crate) async fn channel(&self) -> Result<Channel, RabbitError> {
        let mut guard = self.channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *guard = None;
        let conn = self.shared.publisher.get().await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| RabbitError::Lapin {
                context: format!(
                    "opening a publishing channel for exchange `{}`",
                    self.exchange_name()
                ),
                source: e,
            })?;
        if self.confirms {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| RabbitError::Lapin {
                    context: "enabling publisher confirms".to_owned(),
                    source: e,
                })?;
        }
        *guard = Some(ch.clone());
        Ok(ch)
    }

    fn send_error(
        &self,
        routing_key: &str,
        reason: String,
        source: Option<RabbitError>,
    ) -> BinderError {
        BinderError::Send {
            destination: self.exchange_name().to_owned(),
            reason: format!("routing key `{routing_key}`: {reason}"),
            source: source.map(|e| Box::new(e) as _),
        }
    }

    async fn publish(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        let routing_key = self
            .routing
            .resolve(&message)
            .map_err(|reason| BinderError::Send {
                destination: self.exchange_name().to_owned(),
                reason,
                source: None,
            })?;
        let props =
            headers::outbound_properties(message.headers(), &self.patterns, self.delivery_mode);
        let channel = self.channel().await.map_err(|e| {
            let reason = e.to_string();
            self.send_error(routing_key.as_str(), reason, Some(e))
        })?;
        let confirm = channel
            .basic_publish(
                self.exchange.clone(),
                routing_key.clone(),
                BasicPublishOptions::default(),
                message.payload(),
                props,
            )
            .await
            .map_err(|e| {
                self.send_error(
                    routing_key.as_str(),
                    format!("publish failed: {e}"),
                    Some(RabbitError::Lapin {
                        context: "basic.publish".to_owned(),
                        source: e,
                    }),
                )
            })?;
        if self.confirms {
            let c = confirm.await.map_err(|e| {
                self.send_error(
                    routing_key.as_str(),
                    format!("no publisher confirm: {e}"),
                    Some(RabbitError::Lapin {
                        context: "waiting for the publisher confirm".to_owned(),
                        source: e,
                    }),
                )
            })?;
            if c.is_nack() {
                return Err(self.send_error(
                    routing_key.as_str(),
                    "the broker nacked the message".to_owned(),
                    None,
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Producer for RabbitProducer {
    async fn send(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BinderError::Closed(self.binding_name.clone()));
        }
        let span = tracing::debug_span!(
            "rabbit.send",
            binding = %self.binding_name,
            exchange = %self.exchange_name()
        );
        self.publish(message).instrument(span).await
    }

    async fn flush(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.closed.store(true, Ordering::Release);
        let ch = self.channel.lock().await.take();
        if let Some(ch) = ch
            && ch.status().connected()
        {
            if self.confirms {
                let _ = ch.wait_for_confirms().await;
            }
            let _ = ch.close(200, "producer closed".into()).await;
        }
        Ok(())
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
        assert_eq!(r.resolve(&m).expect("key").as_str(), "orders");
        let m = Message::bytes("x").with_header("scst_partition", 2_i32);
        assert_eq!(r.resolve(&m).expect("key").as_str(), "orders-2");
        let m = Message::bytes("x").with_header("scst_partition", 7_i32);
        assert_eq!(r.resolve(&m).expect("key").as_str(), "orders-7");
        let plain = RoutingKey::fixed("orders", None);
        assert_eq!(
            plain.resolve(&m).expect("key").as_str(),
            "orders",
            "not partitioned: header ignored"
        );
    }

    #[test]
    fn expression_keys() {
        let r = RoutingKey::Expression(Expression::parse("headers['kind']").expect("parse"), true);
        let m = Message::bytes("x").with_header("kind", "a.b");
        assert_eq!(r.resolve(&m).expect("key").as_str(), "a.b");
        let m = Message::bytes("x")
            .with_header("kind", "a.b")
            .with_header("scst_partition", 1_i32);
        assert_eq!(r.resolve(&m).expect("key").as_str(), "a.b-1");
        let err = r.resolve(&Message::bytes("x")).expect_err("null");
        assert!(err.contains("headers['kind']"), "{err}");
        let lit =
            RoutingKey::Expression(Expression::parse("'my.routingKey'").expect("parse"), false);
        assert_eq!(
            lit.resolve(&Message::bytes("x")).expect("key").as_str(),
            "my.routingKey"
        );
    }
}
