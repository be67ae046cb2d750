//! The consumer pipeline: what happens to each message between binder and function — attempts
//! with back-off, panics caught, the error channel or error handler — and what it comes to.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::outcome::{FailedMessage, Outcome};
use crate::error::{FunctionError, SpecialOutcome};
use crate::errors::{ErrorChannels, ErrorHandler, ErrorMessage};
use crate::function::stream::Intake;
use crate::message::{HeaderValue, Message, names};
use crate::meters::ConsumerMeters;
use crate::retry::RetryPolicy;

/// The work done per attempt: convert, invoke, route the output.
pub(crate) type Invoker =
    Arc<dyn Fn(Message<Bytes>) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync>;

/// The work done per attempt on a whole batch (`batch-mode=true`).
pub(crate) type BatchInvoker =
    Arc<dyn Fn(Vec<Message<Bytes>>) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync>;

/// The broker's raw message as error handlers receive it (erased once, by the binder adapter).
pub(crate) type ErasedRaw = Option<Arc<dyn Any + Send + Sync>>;

/// Names of one consumer binding, resolved at bind time.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerIdentity {
    pub(crate) binding: Arc<str>,
    /// OpenTelemetry `messaging.system` of the binder.
    pub(crate) system: &'static str,
    /// `otel.name` of the consume span (`process <destination>`).
    pub(crate) span_name: Arc<str>,
    pub(crate) destination: Arc<str>,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) error_channel: Arc<str>,
}

impl ConsumerIdentity {
    /// The names of a consumer of `destination` (group `None`: anonymous).
    pub(crate) fn new(
        binding: &str,
        destination: &str,
        group: Option<&str>,
        system: &'static str,
    ) -> Self {
        Self {
            binding: binding.into(),
            system,
            span_name: format!("process {destination}").into(),
            destination: destination.into(),
            group: group.map(Into::into),
            error_channel: crate::errors::consumer_error_channel(destination, group).into(),
        }
    }
}

/// Retry, error channel and error handler around an [`Invoker`].
pub(crate) struct ConsumerPipeline {
    pub(crate) id: ConsumerIdentity,
    pub(crate) invoker: Invoker,
    pub(crate) batch_invoker: Option<BatchInvoker>,
    pub(crate) retry: RetryPolicy,
    pub(crate) errors: ErrorChannels,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) meters: Arc<ConsumerMeters>,
    /// A stream function's input: deliveries go to its current run instead of the invoker.
    pub(crate) stream: Option<Arc<Intake>>,
}

/// Runs a future, turning a panic inside it into a [`FunctionError`] of kind `panic`.
pub(crate) async fn caught<T>(
    f: impl Future<Output = Result<T, FunctionError>>,
) -> Result<T, FunctionError> {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => {
            let e = FunctionError::panic(&*payload);
            tracing::error!(error = %e, "panic while processing a message; counted as a failed attempt");
            Err(e)
        }
    }
}

impl ConsumerPipeline {
    /// Sets `deliveryAttempt` on the message itself and hands the function a clone: the clone
    /// shares the headers, and since the function's copy is gone before the next attempt, the
    /// next update does not copy them either.
    fn attempt_message(message: &mut Message<Bytes>, attempt: u32) -> Message<Bytes> {
        message.headers_mut().insert(
            names::DELIVERY_ATTEMPT,
            HeaderValue::I32(i32::try_from(attempt).unwrap_or(i32::MAX)),
        );
        message.clone()
    }

    /// The same binding with another handler (a pollable source's poll brings its own; no
    /// batch invoker, no error handler).
    pub(crate) fn with_invoker(&self, invoker: Invoker) -> Self {
        Self {
            id: self.id.clone(),
            invoker,
            batch_invoker: None,
            retry: self.retry.clone(),
            errors: self.errors.clone(),
            error_handler: None,
            meters: Arc::clone(&self.meters),
            stream: None,
        }
    }

    /// The retry policy (its `max-attempts` feeds the settlement table).
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Processes one message: every attempt, then the failure path.
    pub(crate) async fn process(&self, mut message: Message<Bytes>, raw: &ErasedRaw) -> Outcome {
        let invoker = &self.invoker;
        let start = self.meters.received(1);
        let mut attempts = 0;
        let result = self
            .retry
            .run(|attempt| {
                attempts = attempt;
                caught(invoker(Self::attempt_message(&mut message, attempt)))
            })
            .await;
        match result {
            Ok(()) => {
                self.meters.processed(start, attempts, None);
                Outcome::Success
            }
            Err(e) => {
                self.meters.processed(start, e.attempts, Some(&e.error));
                // The failed message is the one delivered, without the runtime's header.
                message.headers_mut().remove(names::DELIVERY_ATTEMPT);
                // Out of line (boxed): the error channel's publish would otherwise size the
                // future of every delivery, which is moved on each poll.
                Box::pin(self.failure(message, raw, Arc::new(e.error), e.attempts)).await
            }
        }
    }

    /// Processes a batch as one call of the function; on failure every message gets its own
    /// outcome (each reaches the dead-letter destination on its own).
    pub(crate) async fn process_batch(
        &self,
        invoker: &BatchInvoker,
        mut messages: Vec<Message<Bytes>>,
        raws: &[ErasedRaw],
    ) -> Vec<Outcome> {
        let start = self.meters.received(messages.len());
        let mut attempts = 0;
        let result = self
            .retry
            .run(|attempt| {
                attempts = attempt;
                caught(invoker(
                    messages
                        .iter_mut()
                        .map(|m| Self::attempt_message(m, attempt))
                        .collect(),
                ))
            })
            .await;
        match result {
            Ok(()) => {
                self.meters.processed(start, attempts, None);
                messages.iter().map(|_| Outcome::Success).collect()
            }
            Err(e) => {
                self.meters.processed(start, e.attempts, Some(&e.error));
                let error = Arc::new(e.error);
                let mut out = Vec::with_capacity(messages.len());
                for (i, mut message) in messages.into_iter().enumerate() {
                    message.headers_mut().remove(names::DELIVERY_ATTEMPT);
                    let raw = raws.get(i).cloned().flatten();
                    out.push(
                        self.failure(message, &raw, Arc::clone(&error), e.attempts)
                            .await,
                    );
                }
                out
            }
        }
    }

    /// A delivery the binder could not turn into a message for the function (bad batch
    /// framing, a decompression bomb...): no attempt; the failure path at once.
    pub(crate) async fn undecodable(
        &self,
        message: Message<Bytes>,
        raw: &ErasedRaw,
        error: FunctionError,
    ) -> Outcome {
        let start = self.meters.received(1);
        self.meters.processed(start, 1, Some(&error));
        self.failure(message, raw, Arc::new(error), 1).await
    }

    /// A stream function's message that failed (no attempts of the runtime's): the error
    /// channel or error handler, then the binding's recovery.
    pub(crate) async fn recover(
        &self,
        message: Message<Bytes>,
        raw: &ErasedRaw,
        error: Arc<FunctionError>,
    ) -> Outcome {
        self.failure(message, raw, error, 1).await
    }

    /// After the last attempt: special outcomes, then the error channel or error handler.
    async fn failure(
        &self,
        message: Message<Bytes>,
        raw: &ErasedRaw,
        error: Arc<FunctionError>,
        attempts: u32,
    ) -> Outcome {
        match error.special() {
            Some(SpecialOutcome::ImmediateAcknowledge) => {
                tracing::debug!(error = %error, "immediate acknowledge requested; message dropped");
                return Outcome::Acknowledged;
            }
            Some(SpecialOutcome::RejectAndDontRequeue) => {
                tracing::warn!(error = %error, "reject-and-don't-requeue requested");
                return Outcome::RejectRequested(FailedMessage {
                    message,
                    error,
                    attempts,
                });
            }
            Some(SpecialOutcome::Requeue) => {
                tracing::debug!(error = %error, "requeue requested");
                return Outcome::RequeueRequested;
            }
            None => {}
        }
        tracing::warn!(attempts, kind = error.kind(), error = %error, "message failed after all attempts");
        let error_message = ErrorMessage {
            failed: message.clone(),
            error: Arc::clone(&error),
            raw: raw.clone(),
            binding: self.id.binding.to_string(),
            channel: self.id.error_channel.to_string(),
            undelivered: None,
        };
        if let Some(handler) = &self.error_handler {
            match caught(handler(error_message)).await {
                Ok(()) => return Outcome::Acknowledged,
                Err(e) => {
                    tracing::error!(error = %e, "error-handler-definition handler failed; applying the binder's recovery");
                }
            }
        } else {
            self.errors.publish(error_message).await;
        }
        Outcome::Exhausted(FailedMessage {
            message,
            error,
            attempts,
        })
    }

    /// The `stream.consume` span of one delivery, with the OpenTelemetry messaging attributes.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "stream.consume",
            otel.name = %self.id.span_name,
            otel.kind = "consumer",
            messaging.system = self.id.system,
            messaging.destination.name = %self.id.destination,
            messaging.consumer.group.name = self.id.group.as_deref().unwrap_or(""),
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            binding = %self.id.binding,
            messaging.batch.message_count = tracing::field::Empty,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::errors::error_handler;

    fn pipeline(
        errors: ErrorChannels,
        handler: Option<ErrorHandler>,
        invoker: Invoker,
    ) -> ConsumerPipeline {
        ConsumerPipeline {
            id: ConsumerIdentity::new("in-0", "orders", Some("g"), "test"),
            invoker,
            batch_invoker: None,
            retry: RetryPolicy::no_retry(),
            errors,
            error_handler: handler,
            meters: Arc::new(ConsumerMeters::detached()),
            stream: None,
        }
    }

    fn ok() -> Invoker {
        Arc::new(|_| Box::pin(async { Ok(()) }))
    }

    #[tokio::test]
    async fn binder_side_failures_reach_the_error_channel_then_recovery() {
        let errors = ErrorChannels::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&seen);
        errors.subscribe(
            "orders.g.errors",
            error_handler(move |m: ErrorMessage| {
                let s = Arc::clone(&s);
                async move {
                    assert_eq!(m.error.to_string(), "Bad batched message received");
                    s.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
        );
        let p = pipeline(errors, None, ok());
        let o = p
            .undecodable(
                Message::bytes("x"),
                &None,
                FunctionError::msg("Bad batched message received"),
            )
            .await;
        assert!(
            matches!(o, Outcome::Exhausted(ref f) if f.attempts == 1),
            "{o:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_error_handler_takes_binder_side_failures() {
        let handled = error_handler(|_m: ErrorMessage| async { Ok(()) });
        let p = pipeline(ErrorChannels::default(), Some(handled), ok());
        let o = p
            .undecodable(Message::bytes("x"), &None, FunctionError::msg("bomb"))
            .await;
        assert!(matches!(o, Outcome::Acknowledged), "{o:?}");
    }

    #[tokio::test]
    async fn a_panicking_function_is_a_failed_attempt_with_its_message() {
        let panics: Invoker = Arc::new(|m: Message<Bytes>| {
            Box::pin(async move {
                if m.payload().as_ref() == b"bad" {
                    panic!("index out of bounds: the len is 0 but the index is 3");
                }
                Ok(())
            })
        });
        let p = pipeline(ErrorChannels::default(), None, panics);
        let o = p.process(Message::bytes("bad"), &None).await;
        let Outcome::Exhausted(failed) = o else {
            panic!("expected exhausted, got {o:?}");
        };
        assert_eq!(failed.error.kind(), crate::error::PANIC_KIND);
        assert!(
            failed.error.to_string().contains("index out of bounds"),
            "{}",
            failed.error
        );
        assert!(
            failed
                .message
                .headers()
                .get(names::DELIVERY_ATTEMPT)
                .is_none()
        );
        // The pipeline still works afterwards.
        assert!(p.process(Message::bytes("good"), &None).await.is_success());
    }

    #[tokio::test]
    async fn a_panicking_error_handler_falls_back_to_recovery() {
        let handler = error_handler(|_m: ErrorMessage| async { panic!("handler broke") });
        let failing: Invoker = Arc::new(|_| Box::pin(async { Err(FunctionError::msg("no")) }));
        let p = pipeline(ErrorChannels::default(), Some(handler), failing);
        let o = p.process(Message::bytes("x"), &None).await;
        assert!(matches!(o, Outcome::Exhausted(_)), "{o:?}");
    }
}
