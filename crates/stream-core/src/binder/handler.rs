//! What a binder hands to the runtime per delivery, and what it gets back.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::FunctionError;
use crate::message::Message;

/// One delivery from a broker: the message (headers already mapped from the broker's
/// properties) and, optionally, the broker's raw message, which error handlers receive.
pub struct Delivery {
    /// The message as the function pipeline sees it.
    pub message: Message<Bytes>,
    /// The broker's own representation (e.g. an AMQP delivery), for error handlers.
    pub raw: Option<Arc<dyn Any + Send + Sync>>,
}

impl Delivery {
    /// A delivery without a raw broker message.
    pub fn new(message: Message<Bytes>) -> Self {
        Self { message, raw: None }
    }

    /// Attaches the raw broker message.
    pub fn with_raw(mut self, raw: Arc<dyn Any + Send + Sync>) -> Self {
        self.raw = Some(raw);
        self
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("raw", &self.raw.is_some())
            .finish()
    }
}

/// A message whose processing failed after every retry.
#[derive(Clone, Debug)]
pub struct FailedMessage {
    /// The message as it was delivered (without the runtime's `deliveryAttempt` header).
    pub message: Message<Bytes>,
    /// The last error.
    pub error: Arc<FunctionError>,
    /// How many attempts were made.
    pub attempts: u32,
}

/// How the binder must settle a delivery after the runtime handled it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Disposition {
    /// Processed (or deliberately dropped): acknowledge.
    Ack,
    /// Reject; `requeue` asks the broker to deliver it again.
    Reject {
        /// Whether to requeue.
        requeue: bool,
    },
    /// Retries are exhausted and no user error handler took the failure: apply the binder's
    /// recovery (republish to a DLQ, reject so the broker dead-letters, ...) following the
    /// binding's properties.
    Recover(FailedMessage),
}

/// The runtime's per-delivery entry point, given to [`super::Binder::bind_consumer`].
///
/// A binder may call `handle` concurrently (up to the binding's concurrency); it settles the
/// delivery by the returned [`Disposition`] unless the acknowledge mode says otherwise.
///
/// With `batch-mode=true` (binders declaring [`super::Capability::BatchConsumer`]), the binder
/// hands a batch to `handle_batch` instead and settles each delivery by its own disposition;
/// the function receives the whole batch as a `Vec`.
#[async_trait]
pub trait InboundHandler: Send + Sync + 'static {
    /// Converts, invokes the function with retry, routes errors, and says how to settle.
    async fn handle(&self, delivery: Delivery) -> Disposition;

    /// Handles a batch: one disposition per delivery, in order. The default handles the
    /// deliveries one by one.
    async fn handle_batch(&self, deliveries: Vec<Delivery>) -> Vec<Disposition> {
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            out.push(self.handle(d).await);
        }
        out
    }

    /// A delivery the binder could not turn into a message for the function (bad batch
    /// framing, a decompression bomb...). Nothing is retried: the runtime publishes the failure
    /// to the binding's error channel (or its `error-handler-definition` handler) and answers
    /// how to settle — [`Disposition::Recover`] unless an error handler took it.
    async fn handle_failure(&self, delivery: Delivery, error: FunctionError) -> Disposition {
        Disposition::Recover(FailedMessage {
            message: delivery.message,
            error: Arc::new(error),
            attempts: 1,
        })
    }
}
