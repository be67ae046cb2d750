//! Error types of the runtime.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// How a failure asks to be settled, overriding retry and recovery (spec §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecialOutcome {
    /// Do not retry; reject without requeue so the broker dead-letters the message
    /// (Spring's `AmqpRejectAndDontRequeueException`).
    RejectAndDontRequeue,
    /// Do not retry; acknowledge the message and skip the DLQ
    /// (Spring's `ImmediateAcknowledgeAmqpException`).
    ImmediateAcknowledge,
    /// Do not retry; return the message to the broker to be delivered again
    /// (Spring's `RequeueCurrentMessageException`, used with polled consumers).
    Requeue,
}

/// The error a user function returns.
///
/// Any `std::error::Error` converts into it with `?`; the conversion records the error's Rust
/// type name as its *kind*, which `retryable-exceptions` keys match (full path or last segment).
/// [`FunctionError::with_kind`] sets an explicit kind; [`FunctionError::with_cause_kind`] records
/// the kinds of causes, which classification walks after the error's own kind (Rust cannot name
/// the type of a `dyn Error` cause, so causes are classified only by the kinds recorded here).
///
/// ```
/// use stream_core::FunctionError;
/// let parse: Result<i32, _> = "x".parse::<i32>();
/// let err: FunctionError = parse.unwrap_err().into();
/// assert_eq!(err.kind(), "core::num::error::ParseIntError");
/// let custom = FunctionError::msg("negative amount: -5").with_kind("validation");
/// assert_eq!(custom.to_string(), "negative amount: -5");
/// assert_eq!(custom.kind(), "validation");
/// ```
pub struct FunctionError {
    kind: Cow<'static, str>,
    causes: Vec<Cow<'static, str>>,
    inner: BoxError,
    special: Option<SpecialOutcome>,
}

/// The kind of a [`FunctionError`] made from a panic ([`FunctionError::panic`]): match it in
/// `retryable-exceptions` (`panic: false` stops retrying panics).
pub const PANIC_KIND: &str = "panic";

#[derive(Debug)]
struct MessageError(String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for MessageError {}

impl FunctionError {
    /// Wraps an error, taking its type name as kind.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        Self {
            kind: Cow::Borrowed(std::any::type_name::<E>()),
            causes: Vec::new(),
            inner: Box::new(error),
            special: None,
        }
    }

    /// An error from a message, of kind `message`.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Borrowed("message"),
            causes: Vec::new(),
            inner: Box::new(MessageError(message.into())),
            special: None,
        }
    }

    /// Wraps an already boxed error with an explicit kind.
    pub fn from_boxed(kind: impl Into<Cow<'static, str>>, error: BoxError) -> Self {
        Self {
            kind: kind.into(),
            causes: Vec::new(),
            inner: error,
            special: None,
        }
    }

    /// A panic caught while processing a message, of kind [`PANIC_KIND`]: its message is the
    /// panic's payload when it is a string.
    pub fn panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&'static str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-string payload".to_owned());
        Self::msg(format!("panicked: {text}")).with_kind(PANIC_KIND)
    }

    /// Reject without requeue: no retry, the broker dead-letters the message.
    pub fn reject_and_dont_requeue(message: impl Into<String>) -> Self {
        Self::msg(message)
            .with_kind("reject-and-dont-requeue")
            .with_special(SpecialOutcome::RejectAndDontRequeue)
    }

    /// Acknowledge immediately: no retry, no DLQ; the message is dropped.
    pub fn immediate_acknowledge(message: impl Into<String>) -> Self {
        Self::msg(message)
            .with_kind("immediate-acknowledge")
            .with_special(SpecialOutcome::ImmediateAcknowledge)
    }

    /// Requeue: no retry, the broker delivers the message again.
    pub fn requeue(message: impl Into<String>) -> Self {
        Self::msg(message)
            .with_kind("requeue-current-message")
            .with_special(SpecialOutcome::Requeue)
    }

    /// Sets the kind that `retryable-exceptions` matches.
    pub fn with_kind(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Records the kind of a cause (outermost first), which `retryable-exceptions` matches when
    /// the error's own kind has no entry.
    pub fn with_cause_kind(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.causes.push(kind.into());
        self
    }

    /// Wraps this error as the cause of a new one of kind `kind`: the old kind and its causes
    /// become the new error's cause kinds, the message is kept.
    pub fn rekinded_as(self, kind: impl Into<Cow<'static, str>>) -> Self {
        let mut causes = Vec::with_capacity(self.causes.len() + 1);
        causes.push(self.kind);
        causes.extend(self.causes);
        Self {
            kind: kind.into(),
            causes,
            inner: self.inner,
            special: self.special,
        }
    }

    /// Marks the error with a special outcome.
    pub fn with_special(mut self, special: SpecialOutcome) -> Self {
        self.special = Some(special);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The recorded kinds of its causes, outermost first.
    pub fn cause_kinds(&self) -> impl Iterator<Item = &str> {
        self.causes.iter().map(|c| c.as_ref())
    }

    /// The special outcome, if the error carries one.
    pub fn special(&self) -> Option<SpecialOutcome> {
        self.special
    }

    /// The wrapped error.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// The message of the deepest error in the cause chain (Spring's "root cause" message).
    pub fn root_cause_message(&self) -> String {
        let mut current: &(dyn StdError + 'static) = &*self.inner;
        while let Some(next) = current.source() {
            current = next;
        }
        current.to_string()
    }

    /// The whole cause chain rendered as text, one `caused by:` line per level, the way a
    /// `x-exception-stacktrace` header carries it.
    pub fn render_chain(&self) -> String {
        let mut out = format!("{}: {}", self.kind, self.inner);
        let mut current: Option<&(dyn StdError + 'static)> = self.inner.source();
        while let Some(err) = current {
            out.push_str("\ncaused by: ");
            out.push_str(&err.to_string());
            current = err.source();
        }
        out
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionError")
            .field("kind", &self.kind)
            .field("causes", &self.causes)
            .field("error", &self.inner)
            .field("special", &self.special)
            .finish()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for FunctionError {
    fn from(error: E) -> Self {
        FunctionError::new(error)
    }
}

/// What kind of failure a [`BinderError`] is. Copyable, so callers can match on it cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BinderErrorKind {
    /// The binder cannot do what the binding asks (checked at bind time).
    Unsupported,
    /// A binding or binder property has a value that cannot work; the error names the key.
    InvalidProperty,
    /// The broker refused or failed a provisioning step (declaring a queue, creating a topic).
    Provisioning,
    /// The broker could not be reached or the connection failed.
    Connection,
    /// Sending a message failed (refused, returned, not confirmed).
    Send,
    /// Settling a delivery (ack, reject, dead-letter) failed.
    Settle,
    /// The binding or binder is closed.
    Closed,
    /// Anything else.
    Unexpected,
}

impl BinderErrorKind {
    /// A short lower-case name (`connection`, `invalid-property`, ...), as logs and metrics
    /// (`error.type`) show it.
    pub fn as_str(self) -> &'static str {
        match self {
            BinderErrorKind::Unsupported => "unsupported",
            BinderErrorKind::InvalidProperty => "invalid-property",
            BinderErrorKind::Provisioning => "provisioning",
            BinderErrorKind::Connection => "connection",
            BinderErrorKind::Send => "send",
            BinderErrorKind::Settle => "settle",
            BinderErrorKind::Closed => "closed",
            BinderErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for BinderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether trying again may succeed: what late binding, reconnection and send retries ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorStatus {
    /// Trying again will fail the same way (a refused declaration, a bad property).
    Permanent,
    /// Trying again later may succeed (the broker is unreachable, the connection dropped).
    Temporary,
}

/// A failure of a binder: connecting, provisioning, sending or settling.
///
/// One type for every binder, with a [`kind`](Self::kind) saying what happened and a
/// [`status`](Self::status) saying whether to retry (the runtime's late binding and
/// reconnection ask [`is_temporary`](Self::is_temporary) and nothing else). The message names
/// the property key, destination or broker address and says how to fix it; the underlying
/// error, if any, is the [`source`](std::error::Error::source), never repeated in the message.
///
/// ```
/// use stream_core::{BinderError, BinderErrorKind};
/// let e = BinderError::connection("amqp://localhost:5672/", "connection refused");
/// assert_eq!(e.kind(), BinderErrorKind::Connection);
/// assert!(e.is_temporary());
/// assert_eq!(e.to_string(), "connection to amqp://localhost:5672/ failed: connection refused");
///
/// let e = BinderError::invalid_property("spring.cloud.stream.rabbit.bindings.in.consumer.prefetch", "must be positive");
/// assert!(!e.is_temporary());
/// assert_eq!(e.key(), Some("spring.cloud.stream.rabbit.bindings.in.consumer.prefetch"));
/// ```
pub struct BinderError {
    kind: BinderErrorKind,
    status: ErrorStatus,
    message: String,
    // Boxed strings keep the error (and `StreamError`) small; these are read, never grown.
    key: Option<Box<str>>,
    destination: Option<Box<str>>,
    source: Option<BoxError>,
    undelivered: Option<Box<Undelivered>>,
}

/// Why the broker did not take a sent message, as fields (Spring's
/// `ReturnedAmqpMessageException` and `NackedAmqpMessageException`): carried by the send's
/// [`BinderError::undelivered`] and by the producer error channel's
/// [`ErrorMessage::undelivered`](crate::errors::ErrorMessage::undelivered), whose `failed` is the
/// original message.
///
/// ```
/// use stream_core::{BinderError, Undelivered};
/// let returned = Undelivered::Returned {
///     reply_code: 312,
///     reply_text: "NO_ROUTE".into(),
///     exchange: "orders".into(),
///     routing_key: "eu".into(),
/// };
/// let e = BinderError::send("orders", "returned").with_undelivered(returned.clone());
/// assert_eq!(e.undelivered(), Some(&returned));
/// assert_eq!(returned.routing_key(), "eu");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Undelivered {
    /// Returned to the producer: a mandatory message that no queue took.
    Returned {
        /// The broker's reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
        /// Where it was published (exchange or topic).
        exchange: String,
        /// The routing key it was published with.
        routing_key: String,
    },
    /// Refused with a negative publisher confirm.
    Nacked {
        /// Why, as far as known (a nack usually carries no text).
        reason: String,
        /// Where it was published.
        exchange: String,
        /// The routing key it was published with.
        routing_key: String,
    },
}

impl Undelivered {
    /// Where it was published.
    pub fn exchange(&self) -> &str {
        match self {
            Undelivered::Returned { exchange, .. } | Undelivered::Nacked { exchange, .. } => {
                exchange
            }
        }
    }

    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        match self {
            Undelivered::Returned { routing_key, .. } | Undelivered::Nacked { routing_key, .. } => {
                routing_key
            }
        }
    }
}

impl BinderError {
    /// An error of `kind` with a message; permanent unless the kind is
    /// [`BinderErrorKind::Connection`].
    pub fn new(kind: BinderErrorKind, message: impl Into<String>) -> Self {
        let status = if kind == BinderErrorKind::Connection {
            ErrorStatus::Temporary
        } else {
            ErrorStatus::Permanent
        };
        Self {
            kind,
            status,
            message: message.into(),
            key: None,
            destination: None,
            source: None,
            undelivered: None,
        }
    }

    /// The binder cannot do `feature` for `binding` (a bind-time refusal).
    pub fn unsupported(binder: &str, binding: &str, feature: impl fmt::Display) -> Self {
        Self::new(
            BinderErrorKind::Unsupported,
            format!("binder `{binder}` does not support {feature} (binding `{binding}`)"),
        )
    }

    /// A property value that cannot work: names the full key and says what is wrong.
    pub fn invalid_property(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        let key = key.into();
        let mut e = Self::new(
            BinderErrorKind::InvalidProperty,
            format!("invalid value for `{key}`: {reason}"),
        );
        e.key = Some(key.into());
        e
    }

    /// Provisioning `destination` failed (permanent: the broker refused).
    pub fn provisioning(destination: impl Into<String>, reason: impl fmt::Display) -> Self {
        let destination = destination.into();
        let mut e = Self::new(
            BinderErrorKind::Provisioning,
            format!("provisioning `{destination}` failed: {reason}"),
        );
        e.destination = Some(destination.into());
        e
    }

    /// The broker at `target` (an address without credentials) could not be reached
    /// (temporary).
    pub fn connection(target: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::new(
            BinderErrorKind::Connection,
            format!("connection to {target} failed: {reason}"),
        )
    }

    /// Sending to `destination` failed.
    pub fn send(destination: impl Into<String>, reason: impl fmt::Display) -> Self {
        let destination = destination.into();
        let mut e = Self::new(
            BinderErrorKind::Send,
            format!("send to `{destination}` failed: {reason}"),
        );
        e.destination = Some(destination.into());
        e
    }

    /// Settling a delivery from `destination` failed.
    pub fn settle(destination: impl Into<String>, reason: impl fmt::Display) -> Self {
        let destination = destination.into();
        let mut e = Self::new(
            BinderErrorKind::Settle,
            format!("settling a delivery from `{destination}` failed: {reason}"),
        );
        e.destination = Some(destination.into());
        e
    }

    /// The binding (or binder) `name` is closed.
    pub fn closed(name: impl fmt::Display) -> Self {
        Self::new(
            BinderErrorKind::Closed,
            format!("binding `{name}` is closed"),
        )
    }

    /// Any other failure, described by `error`'s message (and kept as the source).
    pub fn other(error: impl Into<BoxError>) -> Self {
        let error = error.into();
        Self::new(BinderErrorKind::Unexpected, error.to_string()).with_source(error)
    }

    /// Keeps `source` as the underlying error (shown by [`std::error::Error::source`], not in
    /// the message).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marks the error as worth retrying later.
    pub fn temporary(mut self) -> Self {
        self.status = ErrorStatus::Temporary;
        self
    }

    /// Marks the error as final.
    pub fn permanent(mut self) -> Self {
        self.status = ErrorStatus::Permanent;
        self
    }

    /// Says the broker returned or refused the message, as fields.
    pub fn with_undelivered(mut self, undelivered: Undelivered) -> Self {
        self.undelivered = Some(Box::new(undelivered));
        self
    }

    /// Why the broker did not take the message, when it returned or refused it.
    pub fn undelivered(&self) -> Option<&Undelivered> {
        self.undelivered.as_deref()
    }

    /// Names the destination concerned.
    pub fn with_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into().into());
        self
    }

    /// Names the property key concerned.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into().into());
        self
    }

    /// What happened.
    pub fn kind(&self) -> BinderErrorKind {
        self.kind
    }

    /// Whether trying again may succeed.
    pub fn status(&self) -> ErrorStatus {
        self.status
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.status == ErrorStatus::Temporary
    }

    /// The property key concerned, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The destination concerned, if the error is about one.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// The message, without the source's.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BinderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for BinderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BinderError");
        d.field("kind", &self.kind)
            .field("status", &self.status)
            .field("message", &self.message);
        if let Some(k) = &self.key {
            d.field("key", k);
        }
        if let Some(dest) = &self.destination {
            d.field("destination", dest);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl StdError for BinderError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// A payload could not be converted to or from bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// No codec handles the content type.
    #[error(
        "no message converter for content type `{content_type}` (target `{target}`); register a codec for it or set use-native-decoding/encoding"
    )]
    NoCodec {
        /// Content type.
        content_type: String,
        /// Rust type asked for.
        target: &'static str,
    },
    /// The codec failed.
    #[error("cannot convert payload with content type `{content_type}` to `{target}`: {reason}")]
    Decode {
        /// Content type.
        content_type: String,
        /// Rust type asked for.
        target: &'static str,
        /// What failed.
        reason: String,
    },
    /// The codec could not encode a value.
    #[error("cannot encode `{source_type}` as `{content_type}`: {reason}")]
    Encode {
        /// Content type.
        content_type: String,
        /// Rust type encoded.
        source_type: &'static str,
        /// What failed.
        reason: String,
    },
    /// A content type header that is not a MIME type.
    #[error("invalid content type `{0}`")]
    InvalidContentType(String),
    /// A message without a content type, converted as the binding's `content-type` (as Spring
    /// does; `application/json` unless configured), failed.
    #[error(
        "the message had no content type (or only application/octet-stream), so the binding's content-type `{assumed}` was assumed: {cause}"
    )]
    NoContentType {
        /// The binding's content type that was assumed.
        assumed: String,
        /// The failure with that content type (part of the message).
        cause: Box<ConversionError>,
    },
}

/// An error and its causes on one line, each cause once (`outer: cause: root`), for logs and
/// reports; a cause whose text the previous level already shows is skipped.
///
/// ```
/// use stream_core::error::ErrorChain;
/// let e = std::io::Error::other("disk full");
/// assert_eq!(ErrorChain(&e).to_string(), "disk full");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes a fatal runtime error (a binding that failed for good, a consumer that died) on
/// standard error when the application installed no `tracing` subscriber, so a service run
/// without logging set up still says why it stopped working. With a subscriber the error is
/// logged at ERROR where it happens and this prints nothing.
pub(crate) fn unheard(what: &str, binding: &str, detail: &dyn fmt::Display) {
    if !tracing::dispatcher::has_been_set() {
        eprintln!(
            "stream: {what} (binding `{binding}`): {detail} [no tracing subscriber is installed; set one up, e.g. tracing_subscriber::fmt().init(), to see the runtime's logs]"
        );
    }
}
