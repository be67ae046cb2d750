//! What the runtime asks a binder to bind, and the destinations its provisioner names.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use stream_config::{ConsumerProperties, ProducerProperties};

/// A consumer binding to create.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerRequest {
    /// Binding name (`uppercase-in-0`); binders read their extended properties under it.
    pub binding_name: String,
    /// Destination name (exchange, topic).
    pub destination: String,
    /// Consumer group; `None` for an anonymous subscription.
    pub group: Option<String>,
    /// Common consumer properties, with defaults and layering applied.
    pub properties: ConsumerProperties,
    /// This instance's index (the binding's value, else `spring.cloud.stream.instance-index`).
    pub instance_index: u32,
    /// Number of instances (the binding's value, else `spring.cloud.stream.instance-count`).
    pub instance_count: u32,
}

impl ConsumerRequest {
    /// A request with default properties (used by tests and by the runtime's builder).
    pub fn new(
        binding_name: impl Into<String>,
        destination: impl Into<String>,
        group: Option<String>,
        properties: ConsumerProperties,
    ) -> Self {
        Self {
            binding_name: binding_name.into(),
            destination: destination.into(),
            group,
            properties,
            instance_index: 0,
            instance_count: 1,
        }
    }

    /// Sets instance index and count.
    pub fn with_instance(mut self, index: u32, count: u32) -> Self {
        self.instance_index = index;
        self.instance_count = count;
        self
    }
}

/// A producer binding to create.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerRequest {
    /// Binding name (`uppercase-out-0`), or the destination for dynamic destinations.
    pub binding_name: String,
    /// Destination name.
    pub destination: String,
    /// Common producer properties, with defaults and layering applied.
    pub properties: ProducerProperties,
}

impl ProducerRequest {
    /// A request.
    pub fn new(
        binding_name: impl Into<String>,
        destination: impl Into<String>,
        properties: ProducerProperties,
    ) -> Self {
        Self {
            binding_name: binding_name.into(),
            destination: destination.into(),
            properties,
        }
    }
}

/// What a provisioner created for a consumer: the name it consumes from (a queue, a topic) and
/// anything binder-specific the binder needs to bind it.
#[derive(Clone)]
pub struct ConsumerDestination {
    /// Name of what is consumed from (e.g. the queue).
    pub name: String,
    /// Binder-specific provisioning result, read back by the same binder.
    pub extra: Option<Arc<dyn Any + Send + Sync>>,
}

/// What a provisioner created for a producer.
#[derive(Clone)]
pub struct ProducerDestination {
    /// Name of what is sent to (e.g. the exchange).
    pub name: String,
    /// Binder-specific provisioning result, read back by the same binder.
    pub extra: Option<Arc<dyn Any + Send + Sync>>,
}

impl ConsumerDestination {
    /// A destination with no binder-specific data.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            extra: None,
        }
    }

    /// The binder-specific data, if it is of type `T`.
    pub fn extra<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extra.as_deref().and_then(|e| e.downcast_ref())
    }
}

impl ProducerDestination {
    /// A destination with no binder-specific data.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            extra: None,
        }
    }

    /// The binder-specific data, if it is of type `T`.
    pub fn extra<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extra.as_deref().and_then(|e| e.downcast_ref())
    }
}

impl fmt::Debug for ConsumerDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerDestination")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ProducerDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerDestination")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
