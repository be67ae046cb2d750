//! The consumer pipeline: what happens to each delivery between binder and function.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::Instrument;

use crate::binder::{Delivery, Disposition, FailedMessage, InboundHandler};
use crate::error::{FunctionError, SpecialOutcome};
use crate::errors::{ErrorChannels, ErrorHandler, ErrorMessage};
use crate::message::{HeaderValue, Message, names};
use crate::retry::RetryPolicy;

/// The work done per attempt: convert, invoke, route the output.
pub(crate) type Invoker =
    Arc<dyn Fn(Message<Bytes>) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync>;

/// The work done per attempt on a whole batch (`batch-mode=true`).
pub(crate) type BatchInvoker =
    Arc<dyn Fn(Vec<Message<Bytes>>) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync>;

/// Names of one consumer binding, resolved at bind time.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerIdentity {
    pub(crate) binding: String,
    pub(crate) destination: String,
    pub(crate) group: Option<String>,
    pub(crate) binder_type: String,
    pub(crate) error_channel: String,
}

/// Retry, error channel and disposition around an [`Invoker`].
pub(crate) struct ConsumerPipeline {
    pub(crate) id: ConsumerIdentity,
    pub(crate) invoker: Invoker,
    pub(crate) batch_invoker: Option<BatchInvoker>,
    pub(crate) retry: RetryPolicy,
    pub(crate) errors: ErrorChannels,
    pub(crate) error_handler: Option<ErrorHandler>,
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

    async fn process(&self, delivery: Delivery) -> Disposition {
        let Delivery { mut message, raw } = delivery;
        let invoker = &self.invoker;
        let outcome = self
            .retry
            .run(|attempt| invoker(Self::attempt_message(&mut message, attempt)))
            .await;
        match outcome {
            Ok(()) => Disposition::Ack,
            Err(e) => {
                // The failed message is the one delivered, without the runtime's header.
                message.headers_mut().remove(names::DELIVERY_ATTEMPT);
                self.failure(message, raw, Arc::new(e.error), e.attempts)
                    .await
            }
        }
    }

    async fn process_batch(
        &self,
        invoker: &BatchInvoker,
        deliveries: Vec<Delivery>,
    ) -> Vec<Disposition> {
        let (mut messages, raws): (Vec<_>, Vec<_>) =
            deliveries.into_iter().map(|d| (d.message, d.raw)).unzip();
        let outcome = self
            .retry
            .run(|attempt| {
                invoker(
                    messages
                        .iter_mut()
                        .map(|m| Self::attempt_message(m, attempt))
                        .collect(),
                )
            })
            .await;
        match outcome {
            Ok(()) => messages.iter().map(|_| Disposition::Ack).collect(),
            Err(e) => {
                let error = Arc::new(e.error);
                let mut out = Vec::with_capacity(messages.len());
                for (mut message, raw) in messages.into_iter().zip(raws) {
                    message.headers_mut().remove(names::DELIVERY_ATTEMPT);
                    out.push(
                        self.failure(message, raw, Arc::clone(&error), e.attempts)
                            .await,
                    );
                }
                out
            }
        }
    }

    /// After the last attempt: special outcomes, error channel or error handler, recovery.
    async fn failure(
        &self,
        message: Message<Bytes>,
        raw: Option<Arc<dyn std::any::Any + Send + Sync>>,
        error: Arc<FunctionError>,
        attempts: u32,
    ) -> Disposition {
        match error.special() {
            Some(SpecialOutcome::ImmediateAcknowledge) => {
                tracing::debug!(error = %error, "immediate acknowledge requested; message dropped");
                return Disposition::Ack;
            }
            Some(SpecialOutcome::RejectAndDontRequeue) => {
                tracing::warn!(error = %error, "reject-and-don't-requeue requested");
                return Disposition::Reject { requeue: false };
            }
            Some(SpecialOutcome::Requeue) => {
                tracing::debug!(error = %error, "requeue requested");
                return Disposition::Reject { requeue: true };
            }
            _ => {}
        }
        tracing::warn!(attempts, error = %error, "message failed after all attempts");
        let error_message = ErrorMessage {
            failed: message.clone(),
            error: Arc::clone(&error),
            raw,
            binding: self.id.binding.clone(),
            channel: self.id.error_channel.clone(),
        };
        if let Some(handler) = &self.error_handler {
            match handler(error_message).await {
                Ok(()) => return Disposition::Ack,
                Err(e) => {
                    tracing::error!(error = %e, "error-handler-definition handler failed; applying the binder's recovery");
                }
            }
        } else {
            self.errors.publish(error_message).await;
        }
        Disposition::Recover(FailedMessage {
            message,
            error,
            attempts,
        })
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "stream.consume",
            messaging.system = %self.id.binder_type,
            messaging.destination.name = %self.id.destination,
            messaging.consumer.group.name = self.id.group.as_deref().unwrap_or(""),
            messaging.operation.name = operation,
            binding = %self.id.binding,
            messaging.batch.message_count = tracing::field::Empty,
        )
    }
}

#[async_trait]
impl InboundHandler for ConsumerPipeline {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        self.process(delivery)
            .instrument(self.span("process"))
            .await
    }

    async fn handle_failure(&self, delivery: Delivery, error: FunctionError) -> Disposition {
        let Delivery { message, raw } = delivery;
        self.failure(message, raw, Arc::new(error), 1)
            .instrument(self.span("process"))
            .await
    }

    async fn handle_batch(&self, deliveries: Vec<Delivery>) -> Vec<Disposition> {
        match &self.batch_invoker {
            Some(invoker) => {
                let span = self.span("process");
                span.record("messaging.batch.message_count", deliveries.len());
                self.process_batch(invoker, deliveries)
                    .instrument(span)
                    .await
            }
            None => {
                let mut out = Vec::with_capacity(deliveries.len());
                for d in deliveries {
                    out.push(self.handle(d).await);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::errors::error_handler;

    fn pipeline(errors: ErrorChannels, handler: Option<ErrorHandler>) -> ConsumerPipeline {
        ConsumerPipeline {
            id: ConsumerIdentity {
                binding: "in-0".into(),
                destination: "orders".into(),
                group: Some("g".into()),
                binder_type: "test".into(),
                error_channel: "orders.g.errors".into(),
            },
            invoker: Arc::new(|_| Box::pin(async { Ok(()) })),
            batch_invoker: None,
            retry: RetryPolicy::default(),
            errors,
            error_handler: handler,
        }
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
        let p = pipeline(errors, None);
        let d = p
            .handle_failure(
                Delivery::new(Message::bytes("x")),
                FunctionError::msg("Bad batched message received"),
            )
            .await;
        assert!(
            matches!(d, Disposition::Recover(ref f) if f.attempts == 1),
            "{d:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_error_handler_takes_binder_side_failures() {
        let handled = error_handler(|_m: ErrorMessage| async { Ok(()) });
        let p = pipeline(ErrorChannels::default(), Some(handled));
        let d = p
            .handle_failure(
                Delivery::new(Message::bytes("x")),
                FunctionError::msg("bomb"),
            )
            .await;
        assert!(matches!(d, Disposition::Ack), "{d:?}");
    }
}
