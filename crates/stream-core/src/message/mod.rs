//! The message model: a payload plus typed headers.

mod ack;
mod acks;
mod header;
pub mod names;

use bytes::Bytes;

pub use ack::{AckMode, Acknowledger, Acknowledgment};
pub use acks::{Acks, Failed};
pub(crate) use acks::{Tracked, Verdict};
pub use header::{HeaderName, HeaderValue, Headers};

/// A message: a payload and its headers.
///
/// On the wire the payload is [`Bytes`]; functions see it converted to their own type
/// (`Message<Order>`). A message consumed in `MANUAL` acknowledge mode also carries the
/// [`Acknowledgment`] handle its binder attached.
///
/// ```
/// use stream_core::Message;
/// let m = Message::new("hello".to_owned()).with_header("kind", "greeting");
/// assert_eq!(m.payload(), "hello");
/// assert_eq!(m.headers().get_str("kind"), Some("greeting"));
/// let (payload, headers) = m.into_parts();
/// assert_eq!(payload.len(), 5);
/// assert_eq!(headers.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Message<P = Bytes> {
    payload: P,
    headers: Headers,
    ack: Option<Acknowledgment>,
    /// The deliveries it settles (stream functions only).
    acks: Acks,
}

impl<P> Message<P> {
    /// A message with no headers.
    pub fn new(payload: P) -> Self {
        Self {
            payload,
            headers: Headers::new(),
            ack: None,
            acks: Acks::new(),
        }
    }

    /// A message from its parts.
    pub fn from_parts(payload: P, headers: Headers) -> Self {
        Self {
            payload,
            headers,
            ack: None,
            acks: Acks::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(
        mut self,
        name: impl Into<HeaderName>,
        value: impl Into<HeaderValue>,
    ) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut P {
        &mut self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The acknowledgment handle (present when the binding's acknowledge mode is `MANUAL`).
    pub fn acknowledgment(&self) -> Option<&Acknowledgment> {
        self.ack.as_ref()
    }

    /// Attaches an acknowledgment handle; binders call this for `MANUAL` acknowledge mode.
    pub fn set_acknowledgment(&mut self, ack: Option<Acknowledgment>) {
        self.ack = ack;
    }

    /// Takes the acknowledgment handle out of the message.
    pub fn take_acknowledgment(&mut self) -> Option<Acknowledgment> {
        self.ack.take()
    }

    /// Splits the message into payload and headers. The acknowledgment handle is dropped, and
    /// so are the [`Acks`] of a stream function's message (which acknowledges its deliveries
    /// now: use [`Message::take_acks`] first to keep them).
    pub fn into_parts(self) -> (P, Headers) {
        (self.payload, self.headers)
    }

    /// Replaces the payload, keeping headers, acknowledgment handle and [`Acks`].
    pub fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> Message<Q> {
        Message {
            payload: f(self.payload),
            headers: self.headers,
            ack: self.ack,
            acks: self.acks,
        }
    }

    /// [`Message::map_payload`], the short name stream functions use:
    /// `input.map(|m| m.map(|s| s.to_uppercase()))`.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Message<Q> {
        self.map_payload(f)
    }

    /// A new message with this one's headers that settles the same deliveries (a fan-out: both
    /// must be sent or dropped before they are acknowledged).
    pub fn derive<Q>(&self, payload: Q) -> Message<Q> {
        Message {
            payload,
            headers: self.headers.clone(),
            ack: None,
            acks: self.acks.clone(),
        }
    }

    /// The deliveries this message settles (stream functions).
    pub fn acks(&self) -> &Acks {
        &self.acks
    }

    /// Takes the deliveries out (the message then settles none; dropping the returned
    /// [`Acks`] acknowledges them).
    pub fn take_acks(&mut self) -> Acks {
        std::mem::take(&mut self.acks)
    }

    /// Adds deliveries for this message to settle.
    pub fn join_acks(&mut self, acks: Acks) {
        self.acks.join(acks);
    }

    /// Gives up on this message in a stream function: the deliveries it carries go to the
    /// binding's recovery (error channel, dead-letter destination with the error's message)
    /// instead of being acknowledged. The stream goes on.
    ///
    /// ```
    /// use stream_core::{FunctionError, Message};
    /// let m = Message::new("x".to_owned());
    /// let failed = m.fail(FunctionError::msg("not a number"));
    /// assert_eq!(failed.error.to_string(), "not a number");
    /// ```
    pub fn fail(self, error: impl Into<crate::error::FunctionError>) -> Failed {
        let error = std::sync::Arc::new(error.into());
        let mut me = self;
        me.take_acks().fail(std::sync::Arc::clone(&error));
        Failed { error }
    }

    /// The `contentType` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get_str(names::CONTENT_TYPE)
    }
}

impl<P> Message<P> {
    /// One message made of several (a window's aggregate): `payload` with no headers, settling
    /// every delivery the parts settle, acknowledged when it is sent.
    ///
    /// ```
    /// use stream_core::Message;
    /// let window = vec![Message::new(2), Message::new(3)];
    /// let total = Message::merge(window, |xs| xs.into_iter().sum::<i32>());
    /// assert_eq!(*total.payload(), 5);
    /// ```
    pub fn merge<Q>(parts: Vec<Message<P>>, payload: impl FnOnce(Vec<P>) -> Q) -> Message<Q> {
        let mut acks = Acks::new();
        let mut payloads = Vec::with_capacity(parts.len());
        for mut m in parts {
            acks.join(m.take_acks());
            payloads.push(m.payload);
        }
        let mut out = Message::new(payload(payloads));
        out.acks = acks;
        out
    }
}

impl<P> Message<P> {
    /// Two messages made one (a join of two inputs): `f` of both payloads, with this message's
    /// headers, settling both messages' deliveries when it is sent.
    ///
    /// ```
    /// use stream_core::Message;
    /// let order = Message::new("o-1".to_owned()).with_header("k", "v");
    /// let joined = order.join(Message::new(42), |o, amount| format!("{o}:{amount}"));
    /// assert_eq!(joined.payload(), "o-1:42");
    /// assert_eq!(joined.headers().get_str("k"), Some("v"));
    /// ```
    pub fn join<Q, R>(mut self, mut other: Message<Q>, f: impl FnOnce(P, Q) -> R) -> Message<R> {
        let mut acks = self.take_acks();
        acks.join(other.take_acks());
        Message {
            payload: f(self.payload, other.payload),
            headers: self.headers,
            ack: None,
            acks,
        }
    }
}

impl Message<Bytes> {
    /// A byte message from anything convertible to [`Bytes`].
    pub fn bytes(payload: impl Into<Bytes>) -> Self {
        Message::new(payload.into())
    }
}
