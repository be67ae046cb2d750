//! What processing one message came to, and the dead letter a binder publishes.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::FunctionError;
use crate::message::{HeaderValue, Message, names};

/// A message whose processing failed: as delivered (without the runtime's `deliveryAttempt`
/// header), with the last error and how many attempts were made.
#[derive(Clone, Debug)]
pub struct FailedMessage {
    /// The message as it was delivered.
    pub message: Message<Bytes>,
    /// The last error.
    pub error: Arc<FunctionError>,
    /// How many attempts were made.
    pub attempts: u32,
}

/// What processing one delivery (or one part of it) came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The function succeeded.
    Success,
    /// Settled as processed without success: immediate-acknowledge, or an
    /// `error-handler-definition` handler took the failure.
    Acknowledged,
    /// The function asked for the message to be delivered again.
    RequeueRequested,
    /// The function rejected the message without requeue.
    RejectRequested(FailedMessage),
    /// Every attempt failed (or the error was not retryable).
    Exhausted(FailedMessage),
}

impl Outcome {
    /// Whether the message was processed successfully.
    pub(crate) fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// A failed message as a binder publishes it to its dead-letter destination, with the failure
/// headers every binder writes the same way: `x-exception-message` (the root cause's message)
/// and `x-exception-stacktrace` (the error chain as text).
///
/// ```
/// use std::sync::Arc;
/// use stream_core::binder::{DeadLetter, FailedMessage};
/// use stream_core::{FunctionError, Message};
/// let letter = DeadLetter::new(FailedMessage {
///     message: Message::bytes("order-1"),
///     error: Arc::new(FunctionError::msg("negative amount: -5").with_kind("validation")),
///     attempts: 3,
/// });
/// assert_eq!(letter.exception_message(), "negative amount: -5");
/// assert_eq!(letter.stacktrace(None).0, "validation: negative amount: -5");
/// let (cut, truncated) = letter.stacktrace(Some(10));
/// assert!(truncated && cut.len() <= 10);
/// ```
#[derive(Clone, Debug)]
pub struct DeadLetter {
    failed: FailedMessage,
    exception_message: String,
    stacktrace: String,
}

impl DeadLetter {
    /// The dead letter of a failed message.
    pub fn new(failed: FailedMessage) -> Self {
        Self {
            exception_message: failed.error.root_cause_message(),
            stacktrace: failed.error.render_chain(),
            failed,
        }
    }

    /// The message as delivered (for a part of a batched delivery: that part).
    pub fn message(&self) -> &Message<Bytes> {
        &self.failed.message
    }

    /// The payload to publish.
    pub fn payload(&self) -> &Bytes {
        self.failed.message.payload()
    }

    /// The error.
    pub fn error(&self) -> &FunctionError {
        &self.failed.error
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.failed.attempts
    }

    /// The value of `x-exception-message`.
    pub fn exception_message(&self) -> &str {
        &self.exception_message
    }

    /// The value of `x-exception-stacktrace`, cut to at most `max_bytes` (at a character
    /// boundary) when given; the flag says whether it was cut. A binder whose broker limits
    /// header sizes passes its limit (RabbitMQ: `frame_max - frame-max-headroom`).
    pub fn stacktrace(&self, max_bytes: Option<usize>) -> (Cow<'_, str>, bool) {
        match max_bytes {
            Some(max) if self.stacktrace.len() > max => {
                let mut end = max;
                while end > 0 && !self.stacktrace.is_char_boundary(end) {
                    end -= 1;
                }
                (Cow::Borrowed(&self.stacktrace[..end]), true)
            }
            _ => (Cow::Borrowed(&self.stacktrace), false),
        }
    }

    /// The failure headers with their values, stacktrace cut to `max_stacktrace` bytes.
    pub fn failure_headers(
        &self,
        max_stacktrace: Option<usize>,
    ) -> [(&'static str, HeaderValue); 2] {
        [
            (
                names::EXCEPTION_MESSAGE,
                HeaderValue::from(self.exception_message.as_str()),
            ),
            (
                names::EXCEPTION_STACKTRACE,
                HeaderValue::from(self.stacktrace(max_stacktrace).0.as_ref()),
            ),
        ]
    }

    /// The message with the failure headers added: what a binder that carries message headers
    /// on the wire publishes.
    pub fn to_message(&self) -> Message<Bytes> {
        let mut m = self.failed.message.clone();
        let h = m.headers_mut();
        for (name, value) in self.failure_headers(None) {
            h.insert(name, value);
        }
        m
    }

    /// The failed message.
    pub fn failed(&self) -> &FailedMessage {
        &self.failed
    }
}
