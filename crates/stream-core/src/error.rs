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
/// [`FunctionError::with_kind`] sets an explicit kind.
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
    inner: BoxError,
    special: Option<SpecialOutcome>,
}

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
            inner: Box::new(error),
            special: None,
        }
    }

    /// An error from a message, of kind `message`.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Borrowed("message"),
            inner: Box::new(MessageError(message.into())),
            special: None,
        }
    }

    /// Wraps an already boxed error with an explicit kind.
    pub fn from_boxed(kind: impl Into<Cow<'static, str>>, error: BoxError) -> Self {
        Self {
            kind: kind.into(),
            inner: error,
            special: None,
        }
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

    /// Marks the error with a special outcome.
    pub fn with_special(mut self, special: SpecialOutcome) -> Self {
        self.special = Some(special);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> &str {
        &self.kind
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

/// A failure of a binder: connecting, provisioning, sending or settling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinderError {
    /// The binder cannot do what the binding asks (checked at bind time).
    #[error("binder `{binder}` does not support {feature} (binding `{binding}`)")]
    Unsupported {
        /// Binder type.
        binder: String,
        /// Binding name.
        binding: String,
        /// What was asked for.
        feature: String,
    },
    /// Invalid configuration for a binding, naming the property key.
    #[error("invalid value for `{key}`: {reason}")]
    InvalidProperty {
        /// Full property key.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The broker refused or failed a provisioning step.
    #[error("provisioning `{destination}` failed: {reason}")]
    Provisioning {
        /// Destination (exchange, queue, topic).
        destination: String,
        /// What failed.
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The broker could not be reached or the connection failed.
    #[error("connection to {target} failed: {reason}")]
    Connection {
        /// Broker address (credentials removed).
        target: String,
        /// What failed.
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Sending to a destination failed.
    #[error("send to `{destination}` failed: {reason}")]
    Send {
        /// Destination.
        destination: String,
        /// What failed.
        reason: String,
        /// Underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The binding is closed.
    #[error("binding `{0}` is closed")]
    Closed(String),
    /// Any other binder failure.
    #[error("{0}")]
    Other(#[source] BoxError),
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
}
