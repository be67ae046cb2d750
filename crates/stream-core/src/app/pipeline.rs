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
    pub(crate) retry: RetryPolicy,
    pub(crate) errors: ErrorChannels,
    pub(crate) error_handler: Option<ErrorHandler>,
}

impl ConsumerPipeline {
    async fn process(&self, delivery: Delivery) -> Disposition {
        let Delivery { message, raw } = delivery;
        let invoker = &self.invoker;
        let outcome = self
            .retry
            .run(|attempt| {
                let mut m = message.clone();
                m.headers_mut().insert(
                    names::DELIVERY_ATTEMPT,
                    HeaderValue::I32(i32::try_from(attempt).unwrap_or(i32::MAX)),
                );
                invoker(m)
            })
            .await;
        let exhausted = match outcome {
            Ok(()) => return Disposition::Ack,
            Err(e) => e,
        };
        let attempts = exhausted.attempts;
        let error = Arc::new(exhausted.error);
        match error.special() {
            Some(SpecialOutcome::ImmediateAcknowledge) => {
                tracing::debug!(error = %error, "immediate acknowledge requested; message dropped");
                return Disposition::Ack;
            }
            Some(SpecialOutcome::RejectAndDontRequeue) => {
                tracing::warn!(error = %error, "reject-and-don't-requeue requested");
                return Disposition::Reject { requeue: false };
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
}

#[async_trait]
impl InboundHandler for ConsumerPipeline {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let span = tracing::info_span!(
            "stream.consume",
            messaging.system = %self.id.binder_type,
            messaging.destination.name = %self.id.destination,
            messaging.consumer.group.name = self.id.group.as_deref().unwrap_or(""),
            messaging.operation.name = "process",
            binding = %self.id.binding,
        );
        self.process(delivery).instrument(span).await
    }
}
