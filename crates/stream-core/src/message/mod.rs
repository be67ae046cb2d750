//! The message model: a payload plus typed headers.

mod ack;
mod header;
pub mod names;

use bytes::Bytes;

pub use ack::{AckMode, Acknowledger, Acknowledgment};
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
}

impl<P> Message<P> {
    /// A message with no headers.
    pub fn new(payload: P) -> Self {
        Self {
            payload,
            headers: Headers::new(),
            ack: None,
        }
    }

    /// A message from its parts.
    pub fn from_parts(payload: P, headers: Headers) -> Self {
        Self {
            payload,
            headers,
            ack: None,
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

    /// Splits the message into payload and headers (the acknowledgment handle is dropped).
    pub fn into_parts(self) -> (P, Headers) {
        (self.payload, self.headers)
    }

    /// Replaces the payload, keeping headers and acknowledgment handle.
    pub fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> Message<Q> {
        Message {
            payload: f(self.payload),
            headers: self.headers,
            ack: self.ack,
        }
    }

    /// The `contentType` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get_str(names::CONTENT_TYPE)
    }
}

impl Message<Bytes> {
    /// A byte message from anything convertible to [`Bytes`].
    pub fn bytes(payload: impl Into<Bytes>) -> Self {
        Message::new(payload.into())
    }
}
