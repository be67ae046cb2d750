//! The in-memory binder: the embedded default and the test binder.
//!
//! Destinations, consumer groups (each group gets every message, members of a group compete),
//! anonymous subscriptions, partitions, `required-groups` retention, a dead-letter destination
//! `<destination>.<group>.dlq` after retries are exhausted, and test helpers on
//! [`InMemoryBroker`] to send to and receive from destinations. Time is tokio's, so tests under a
//! paused clock take no wall time for back-off.

mod binder;
mod broker;
mod properties;
mod queue;

pub use binder::{
    EXCEPTION_MESSAGE_HEADER, EXCEPTION_STACKTRACE_HEADER, InMemoryBinder, InMemoryBinderFactory,
    MEMORY_BINDER_TYPE, MemoryConsumer, MemoryDestination, MemoryPollable, MemoryProducer,
    MemoryRaw, ORIGINAL_DESTINATION_HEADER, dead_letter_destination,
};
pub use broker::InMemoryBroker;
pub use properties::{MemoryBinderProperties, MemoryConsumerProperties, MemoryProducerProperties};
