//! One delivery from a broker, as a binder hands it to the runtime.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::FunctionError;
use crate::message::Message;

/// One delivery: the binder's raw message `R` (what it needs to settle it, and what error
/// handlers receive) and the message(s) it carries.
///
/// The raw message is shared (`Arc`) from the start: the runtime keeps it for settling, error
/// handlers and manual acknowledgment, and a delivery moves through several futures on its
/// way there, so only a pointer is moved, not the broker's message (over 1 KB for RabbitMQ).
#[derive(Debug)]
pub struct Delivery<R> {
    /// The broker's message.
    pub raw: Arc<R>,
    /// What it carries, mapped to messages.
    pub body: Body,
}

/// What a delivery carries.
#[derive(Debug)]
#[non_exhaustive]
pub enum Body {
    /// One message (headers mapped from the broker's properties, `contentType` set).
    One(Message<Bytes>),
    /// Several messages in one broker message (a producer batch): each is processed on its
    /// own; the delivery is acknowledged when all succeeded, a failed part is dead-lettered on
    /// its own where the binding's recovery publishes, else settles the whole delivery.
    Parts(Vec<Message<Bytes>>),
    /// A delivery the binder could not turn into a message (bad batch framing, a
    /// decompression bomb, an unreadable header): it takes the error path without calling the
    /// function. `message` is as much of it as could be read.
    Undecodable {
        /// What could be read (at least the body).
        message: Message<Bytes>,
        /// Why it could not be decoded (its kind is what `retryable-exceptions` would see).
        error: FunctionError,
    },
}

#[cfg(feature = "otel")]
impl Body {
    /// The headers of the (first) message, which carry the trace context.
    pub(crate) fn first_headers(&self) -> Option<&crate::message::Headers> {
        match self {
            Body::One(m) | Body::Undecodable { message: m, .. } => Some(m.headers()),
            Body::Parts(p) => p.first().map(Message::headers),
        }
    }
}

impl<R> Delivery<R> {
    /// A delivery of one message.
    pub fn new(raw: R, message: Message<Bytes>) -> Self {
        Self {
            raw: Arc::new(raw),
            body: Body::One(message),
        }
    }

    /// A delivery carrying several messages.
    pub fn parts(raw: R, parts: Vec<Message<Bytes>>) -> Self {
        Self {
            raw: Arc::new(raw),
            body: Body::Parts(parts),
        }
    }

    /// A delivery that could not be decoded.
    pub fn undecodable(raw: R, message: Message<Bytes>, error: FunctionError) -> Self {
        Self {
            raw: Arc::new(raw),
            body: Body::Undecodable { message, error },
        }
    }
}
