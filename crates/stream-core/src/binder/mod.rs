//! The binder trait: the extension point a broker crate implements.
//!
//! A binder connects bindings to a broker. The runtime drives it in two separate steps:
//! [`Provisioner`] creates the broker's topology (exchanges, queues, topics) and names the
//! destination; then [`Binder::bind_consumer`] / [`Binder::bind_producer`] start moving messages.
//! The runtime owns conversion, partition selection, retry and error channels; the binder owns
//! the wire (mapping headers, settling deliveries) and its recovery after retries are exhausted
//! ([`Disposition::Recover`]).
//!
//! Everything the in-memory binder does goes through this public API, so a third-party binder
//! crate can do all it does.

mod capability;
mod handler;
mod registry;
mod request;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BinderError;
use crate::message::Message;

pub use capability::{Capabilities, Capability};
pub use handler::{Delivery, Disposition, FailedMessage, InboundHandler};
pub use registry::{BinderContext, BinderFactory, BinderRegistry};
pub use request::{ConsumerDestination, ConsumerRequest, ProducerDestination, ProducerRequest};

/// Lifecycle state of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingState {
    /// Bound and moving messages.
    Running,
    /// Temporarily not consuming; resumable.
    Paused,
    /// Stopped; may be started again.
    Stopped,
}

/// A consumer or producer endpoint created by a binder.
///
/// `stop` stops taking new deliveries and returns once every delivery already handed to the
/// [`InboundHandler`] has been settled on the broker. The runtime bounds it with the
/// application's shutdown timeout.
#[async_trait]
pub trait Binding: Send + Sync + 'static {
    /// Binding name (e.g. `uppercase-in-0`).
    fn name(&self) -> &str;
    /// Current state.
    fn state(&self) -> BindingState;
    /// Starts (or restarts) the binding.
    async fn start(&self) -> Result<(), BinderError>;
    /// Stops consuming; in-flight deliveries are settled before this returns.
    async fn stop(&self) -> Result<(), BinderError>;
    /// Pauses consumption without releasing the binding.
    async fn pause(&self) -> Result<(), BinderError>;
    /// Resumes a paused binding.
    async fn resume(&self) -> Result<(), BinderError>;
}

/// The sending side of a producer binding. Messages arrive converted to bytes, with
/// `scst_partition` set when the producer is partitioned.
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Sends one message; returns when the binder considers it sent (confirmed, when the binder
    /// and its configuration confirm).
    async fn send(&self, message: Message<Bytes>) -> Result<(), BinderError>;
    /// Sends anything buffered (batches). Binders without buffering return at once.
    async fn flush(&self) -> Result<(), BinderError>;
    /// Flushes and releases the producer's resources.
    async fn close(&self) -> Result<(), BinderError>;
}

/// A consumer the application polls instead of being pushed to
/// (`spring.cloud.stream.pollable-source`).
#[async_trait]
pub trait PollableSource: Send + Sync + 'static {
    /// Fetches at most one message and hands it to `handler`, then settles it according to the
    /// disposition. Returns `false` when no message was available.
    async fn poll(&self, handler: &dyn InboundHandler) -> Result<bool, BinderError>;
    /// Releases the source.
    async fn close(&self) -> Result<(), BinderError>;
}

/// Creates a broker's topology for bindings (exchanges, queues, topics, DLQs).
#[async_trait]
pub trait Provisioner: Send + Sync + 'static {
    /// Declares what a producer needs (and its `required-groups`) and names the destination.
    async fn provision_producer(
        &self,
        request: &ProducerRequest,
    ) -> Result<ProducerDestination, BinderError>;
    /// Declares what a consumer needs (queue, bindings, DLQ) and names what it consumes from.
    async fn provision_consumer(
        &self,
        request: &ConsumerRequest,
    ) -> Result<ConsumerDestination, BinderError>;
}

/// A connection to one broker, able to bind consumers and producers.
///
/// Implementations declare what they support in [`Binder::capabilities`]; the runtime checks a
/// binding's needs against it at bind time and fails with [`BinderError::Unsupported`] naming the
/// binding and the feature, so nothing fails later per message.
#[async_trait]
pub trait Binder: Send + Sync + 'static {
    /// The binder's type name (`rabbit`, `rocketmq`, `memory`), as used in
    /// `spring.cloud.stream.binders.<name>.type`.
    fn binder_type(&self) -> &str;

    /// What the binder supports.
    fn capabilities(&self) -> Capabilities;

    /// The binder's provisioner.
    fn provisioner(&self) -> &dyn Provisioner;

    /// Starts consuming from a provisioned destination, handing each delivery to `handler`.
    async fn bind_consumer(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Box<dyn Binding>, BinderError>;

    /// Creates a producer for a provisioned destination.
    async fn bind_producer(
        &self,
        request: ProducerRequest,
        destination: ProducerDestination,
    ) -> Result<Arc<dyn Producer>, BinderError>;

    /// Creates a pollable consumer. Binders without [`Capability::PollableConsumer`] return
    /// [`BinderError::Unsupported`].
    async fn bind_pollable(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
    ) -> Result<Box<dyn PollableSource>, BinderError> {
        let _ = destination;
        Err(BinderError::Unsupported {
            binder: self.binder_type().to_owned(),
            binding: request.binding_name,
            feature: "pollable consumers".to_owned(),
        })
    }

    /// Closes connections. Called once, after every binding has stopped.
    async fn close(&self) -> Result<(), BinderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binder_traits_stay_object_safe() {
        fn takes(
            _: Option<Arc<dyn Binder>>,
            _: Option<Box<dyn Binding>>,
            _: Option<Arc<dyn Producer>>,
            _: Option<Box<dyn PollableSource>>,
            _: Option<Arc<dyn InboundHandler>>,
            _: Option<Arc<dyn BinderFactory>>,
        ) {
        }
        takes(None, None, None, None, None, None);
    }
}
