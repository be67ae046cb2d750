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

    /// The failure headers cut so that together they take at most `budget.total` bytes on
    /// the wire, where `entry(name, len)` is what one text header of `len` bytes costs there
    /// (name, type and length prefixes included; it must grow by exactly `len`). The rule, the
    /// same for every binder: `x-exception-message` is kept first (cut to
    /// `budget.max_message`), the stack trace gets what is left (cut to
    /// `budget.max_stacktrace`, Spring's `frame_max - frame-max-headroom` on RabbitMQ), both
    /// at character boundaries. `None` when not even both headers empty fit.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use stream_core::binder::{DeadLetter, FailedMessage, HeaderBudget};
    /// use stream_core::{FunctionError, Message};
    /// let letter = DeadLetter::new(FailedMessage {
    ///     message: Message::bytes("x"),
    ///     error: Arc::new(FunctionError::msg("m".repeat(100))),
    ///     attempts: 1,
    /// });
    /// let entry = |name: &str, len: usize| name.len() + len + 2;
    /// let fixed = entry("x-exception-message", 0) + entry("x-exception-stacktrace", 0);
    /// let cut = letter.bounded_failure_headers(HeaderBudget::new(fixed + 60), entry).unwrap();
    /// assert_eq!((cut.exception_message.len(), cut.stacktrace.len()), (60, 0));
    /// assert!(cut.truncated);
    /// assert!(letter.bounded_failure_headers(HeaderBudget::new(fixed - 1), entry).is_none());
    /// ```
    pub fn bounded_failure_headers(
        &self,
        budget: HeaderBudget,
        entry: impl Fn(&str, usize) -> usize,
    ) -> Option<BoundedFailure<'_>> {
        let fixed = entry(names::EXCEPTION_MESSAGE, 0)
            .saturating_add(entry(names::EXCEPTION_STACKTRACE, 0));
        let mut room = budget.total.checked_sub(fixed)?;
        let message_max = budget.max_message.map_or(room, |m| m.min(room));
        let message = cut_at_boundary(&self.exception_message, message_max);
        room -= message.len();
        let trace_max = budget.max_stacktrace.map_or(room, |m| m.min(room));
        let stacktrace = cut_at_boundary(&self.stacktrace, trace_max);
        Some(BoundedFailure {
            truncated: message.len() < self.exception_message.len()
                || stacktrace.len() < self.stacktrace.len(),
            exception_message: Cow::Borrowed(message),
            stacktrace: Cow::Borrowed(stacktrace),
        })
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut_at_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How much room a binder's wire leaves for the failure headers of a dead letter
/// ([`DeadLetter::bounded_failure_headers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderBudget {
    /// Bytes both failure headers may take together.
    pub total: usize,
    /// At most this many bytes of `x-exception-message`.
    pub max_message: Option<usize>,
    /// At most this many bytes of `x-exception-stacktrace`.
    pub max_stacktrace: Option<usize>,
}

impl HeaderBudget {
    /// `total` bytes, no further caps.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            max_message: None,
            max_stacktrace: None,
        }
    }

    /// Caps `x-exception-message`.
    pub fn with_max_message(mut self, max: usize) -> Self {
        self.max_message = Some(max);
        self
    }

    /// Caps `x-exception-stacktrace`.
    pub fn with_max_stacktrace(mut self, max: usize) -> Self {
        self.max_stacktrace = Some(max);
        self
    }
}

/// The failure headers of a dead letter, cut to a [`HeaderBudget`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BoundedFailure<'a> {
    /// The value of `x-exception-message`.
    pub exception_message: Cow<'a, str>,
    /// The value of `x-exception-stacktrace`.
    pub stacktrace: Cow<'a, str>,
    /// Whether either was cut.
    pub truncated: bool,
}

/// Which of a dead letter's own headers to leave out so that `excess` bytes are freed when even
/// the bounded failure headers do not fit beside them: the largest first (ties by name, so
/// the choice is deterministic), as few as possible that way. `sizes` are each header's bytes
/// on the wire. `None` when dropping all of them frees less than `excess`.
///
/// ```
/// use stream_core::binder::headers_to_drop;
/// let sizes = vec![("a", 10), ("big", 500), ("b", 20)];
/// assert_eq!(headers_to_drop(sizes.clone(), 0), Some(vec![]));
/// assert_eq!(headers_to_drop(sizes.clone(), 400), Some(vec!["big"]));
/// assert_eq!(headers_to_drop(sizes.clone(), 505), Some(vec!["big", "b"]));
/// assert_eq!(headers_to_drop(sizes, 531), None);
/// ```
pub fn headers_to_drop<K: Ord>(mut sizes: Vec<(K, usize)>, excess: usize) -> Option<Vec<K>> {
    if excess == 0 {
        return Some(Vec::new());
    }
    sizes.sort_by(|(ka, a), (kb, b)| b.cmp(a).then_with(|| ka.cmp(kb)));
    let mut freed = 0usize;
    let mut dropped = Vec::new();
    for (k, size) in sizes {
        freed = freed.saturating_add(size);
        dropped.push(k);
        if freed >= excess {
            return Some(dropped);
        }
    }
    None
}
