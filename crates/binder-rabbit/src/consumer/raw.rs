//! The raw message of a RabbitMQ delivery and its mapping to the runtime's [`Delivery`]:
//! decompressed, de-batched, headers mapped.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use lapin::{BasicProperties, Channel};
use stream_core::binder::{Body, Delivery};
use stream_core::{FunctionError, Headers, Message};

use super::unpack::unpack;
use crate::headers::{self, HeaderPatterns, InboundEnvelope};

/// The broker's view of a consumed message, the raw message of each delivery: error handlers
/// receive it as `ErrorMessage::raw` (downcast it to this type).
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
    /// The body as received.
    pub body: Bytes,
    /// The parts' properties after decompression and de-batching (`None`: as received).
    pub(crate) unpacked: Option<BasicProperties>,
    /// Settles it on the broker.
    pub(crate) acker: lapin::Acker,
    /// The channel it arrived on (transactions commit there).
    pub(crate) channel: Channel,
}

impl fmt::Debug for RabbitRawMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitRawMessage")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("queue", &self.queue)
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("properties", &self.properties)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl RabbitRawMessage {
    /// The properties its parts carry (after decompression/de-batching): what a dead letter
    /// of one of them is republished with.
    pub(crate) fn part_properties(&self) -> &BasicProperties {
        self.unpacked.as_ref().unwrap_or(&self.properties)
    }
}

/// What a consumer needs to map deliveries, fixed at bind time.
pub(crate) struct Mapping<'a> {
    pub(crate) queue: &'a str,
    pub(crate) patterns: &'a HeaderPatterns,
    pub(crate) max_decompressed_size: u64,
}

impl Mapping<'_> {
    /// Maps a lapin delivery (from `basic.consume` or `basic.get`) to the runtime's delivery.
    /// A body that cannot be decompressed or de-batched becomes [`Body::Undecodable`] (the
    /// error path, no function call).
    pub(crate) fn delivery(
        &self,
        consumer_tag: &str,
        channel: &Channel,
        delivery: lapin::message::Delivery,
    ) -> Delivery<RabbitRawMessage> {
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
        let body = Bytes::from(data);
        let unreadable =
            headers::unrepresentable(&properties, exchange.as_str(), routing_key.as_str());
        let unpacked = match &unreadable {
            // Not unpacked: the error path carries the delivery as received.
            Some(_) => Ok(super::unpack::Unpacked::plain()),
            None => unpack(&properties, &body, self.max_decompressed_size),
        };
        let env = InboundEnvelope {
            exchange: exchange.as_str(),
            routing_key: routing_key.as_str(),
            delivery_tag,
            redelivered,
            queue: self.queue,
            consumer_tag,
        };
        let (unpacked_props, content) = match unpacked {
            Ok(u) if u.is_plain() => (None, Ok(None)),
            Ok(u) => (u.properties, Ok(Some((u.parts, u.batched)))),
            Err(e) => (None, Err(e)),
        };
        let headers: Headers = headers::inbound_headers(
            unpacked_props.as_ref().unwrap_or(&properties),
            &env,
            self.patterns,
        );
        let raw = RabbitRawMessage {
            exchange: exchange.as_str().to_owned(),
            routing_key: routing_key.as_str().to_owned(),
            queue: self.queue.to_owned(),
            delivery_tag,
            redelivered,
            properties,
            body: body.clone(),
            unpacked: unpacked_props,
            acker,
            channel: channel.clone(),
        };
        if let Some(reason) = unreadable {
            return Delivery::undecodable(
                raw,
                Message::from_parts(body, headers),
                FunctionError::msg(format!("delivery cannot be represented: {reason}"))
                    .with_kind("MessageConversionException"),
            );
        }
        let body = match content {
            // A plain delivery: the body and headers move into the message, nothing is copied.
            Ok(None) => Body::One(Message::from_parts(body, headers)),
            Ok(Some((mut parts, false))) if parts.len() == 1 => {
                let part = parts.pop().unwrap_or_default();
                Body::One(Message::from_parts(part, headers))
            }
            Ok(Some((parts, _))) => Body::Parts(
                parts
                    .into_iter()
                    .map(|p| Message::from_parts(p, headers.clone()))
                    .collect(),
            ),
            Err(e) => {
                return Delivery::undecodable(
                    raw,
                    Message::from_parts(body, headers),
                    FunctionError::msg(e.to_string()).with_kind("MessageConversionException"),
                );
            }
        };
        Delivery {
            raw: Arc::new(raw),
            body,
        }
    }
}
