//! What the runtime asks a binder to provision and bind: every property already resolved and
//! typed (Spring's `ExtendedConsumerProperties<T>` / `ExtendedProducerProperties<T>`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use stream_config::{AckMode, ConsumerProperties, ProducerProperties};

use crate::message::Message;

/// The consumer group of a binding: named, or anonymous with a name the runtime generated
/// once for the binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// `spring.cloud.stream.bindings.<name>.group`: members share the messages, the
    /// subscription outlives them.
    Named(Arc<str>),
    /// No group: each instance gets every message, the subscription ends with it.
    Anonymous(AnonymousName),
}

impl Group {
    /// The group name (`None` when anonymous).
    pub fn name(&self) -> Option<&str> {
        match self {
            Group::Named(n) => Some(n),
            Group::Anonymous(_) => None,
        }
    }

    /// Whether the group is anonymous.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Group::Anonymous(_))
    }
}

/// The generated part of an anonymous group's name: base64url (no padding) of 16 random bytes,
/// as Spring's `AnonymousQueue.Base64UrlNamingStrategy` makes it. Binders build their names
/// from it: RabbitMQ `<destination>.anonymous.<suffix>` (with `anonymous-group-prefix`),
/// RocketMQ `anonymous_<destination>_<suffix>`.
///
/// ```
/// use stream_core::binder::AnonymousName;
/// let a = AnonymousName::generate();
/// assert_eq!(a.suffix().len(), 22);
/// assert!(a.suffix().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
/// assert_eq!(a.with_prefix("anonymous."), format!("anonymous.{}", a.suffix()));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AnonymousName(Arc<str>);

impl AnonymousName {
    /// A fresh random name.
    pub fn generate() -> Self {
        use base64::Engine;
        let bytes: [u8; 16] = rand::random();
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }

    /// The generated text.
    pub fn suffix(&self) -> &str {
        &self.0
    }

    /// `<prefix><suffix>`.
    pub fn with_prefix(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.0)
    }
}

impl fmt::Debug for AnonymousName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnonymousName({})", self.0)
    }
}

/// A consumer binding to provision and bind: the common properties (defaults and
/// `spring.cloud.stream.default.*` layering applied), the binder's own extended properties `C`
/// (bound and validated once, by the runtime), and the resolved names.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerSpec<C> {
    /// Binding name (`uppercase-in-0`), for messages and logs.
    pub binding: Arc<str>,
    /// Destination consumed (one of the binding's comma-separated destinations).
    pub destination: Arc<str>,
    /// Consumer group.
    pub group: Group,
    /// Common consumer properties.
    pub common: ConsumerProperties,
    /// The binder's extended consumer properties
    /// (`spring.cloud.stream.<type>.{default,bindings.<name>}.consumer.*`).
    pub extension: C,
    /// Who settles deliveries (the common key, else the binder's, else AUTO), checked against
    /// the binder's capabilities.
    pub acknowledge_mode: AckMode,
    /// This instance's index (the binding's value, else `spring.cloud.stream.instance-index`).
    pub instance_index: u32,
    /// Number of instances (the binding's value, else `spring.cloud.stream.instance-count`).
    pub instance_count: u32,
    /// Partitions this instance consumes when `partitioned`: `instance-index-list` (the
    /// binding's, else the global one), else `[instance_index]`. Empty when not partitioned.
    pub partitions: Vec<u32>,
}

impl<C> ConsumerSpec<C> {
    /// A spec with default common properties, named group or anonymous, for tests and tools.
    pub fn new(
        binding: impl Into<Arc<str>>,
        destination: impl Into<Arc<str>>,
        group: Option<&str>,
        extension: C,
    ) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            group: match group.filter(|g| !g.trim().is_empty()) {
                Some(g) => Group::Named(g.into()),
                None => Group::Anonymous(AnonymousName::generate()),
            },
            common: ConsumerProperties::default(),
            extension,
            acknowledge_mode: AckMode::Auto,
            instance_index: 0,
            instance_count: 1,
            partitions: Vec::new(),
        }
    }

    /// Replaces the common properties (partitions are derived again from them).
    pub fn with_common(mut self, common: ConsumerProperties) -> Self {
        self.common = common;
        self.partitions = self.derive_partitions(&[]);
        self
    }

    /// Sets the acknowledge mode.
    pub fn with_acknowledge_mode(mut self, mode: AckMode) -> Self {
        self.acknowledge_mode = mode;
        self
    }

    /// Sets instance index and count (partitions are derived again).
    pub fn with_instance(mut self, index: u32, count: u32) -> Self {
        self.instance_index = index;
        self.instance_count = count;
        self.partitions = self.derive_partitions(&[]);
        self
    }

    /// The group name, if named.
    pub fn group_name(&self) -> Option<&str> {
        self.group.name()
    }

    /// The partitions consumed: `instance-index-list` (this binding's, else `global_list`),
    /// else the instance index; none when not partitioned.
    pub(crate) fn derive_partitions(&self, global_list: &[u32]) -> Vec<u32> {
        if !self.common.partitioned {
            return Vec::new();
        }
        let list = if self.common.instance_index_list.is_empty() {
            global_list
        } else {
            &self.common.instance_index_list
        };
        if list.is_empty() {
            vec![self.instance_index]
        } else {
            let mut v = list.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        }
    }

    /// The full key of one of the binder's extended consumer properties of this binding, for
    /// error messages: `spring.cloud.stream.<type>.bindings.<binding>.consumer.<field>`.
    pub fn extension_key(&self, binder_type: &str, field: &str) -> String {
        format!(
            "spring.cloud.stream.{binder_type}.bindings.{}.consumer.{field}",
            self.binding
        )
    }

    /// The full key of a common consumer property of this binding.
    pub fn common_key(&self, field: &str) -> String {
        format!(
            "spring.cloud.stream.bindings.{}.consumer.{field}",
            self.binding
        )
    }
}

/// A producer binding to provision and bind.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerSpec<P> {
    /// Binding name (`uppercase-out-0`), or the destination for a dynamic destination.
    pub binding: Arc<str>,
    /// Destination sent to.
    pub destination: Arc<str>,
    /// Common producer properties.
    pub common: ProducerProperties,
    /// The binder's extended producer properties.
    pub extension: P,
    /// `Some(n)` when the producer partitions into `n` partitions (`partition-count`).
    pub partition_count: Option<u32>,
}

impl<P> ProducerSpec<P> {
    /// A spec with default common properties.
    pub fn new(
        binding: impl Into<Arc<str>>,
        destination: impl Into<Arc<str>>,
        extension: P,
    ) -> Self {
        Self {
            binding: binding.into(),
            destination: destination.into(),
            common: ProducerProperties::default(),
            extension,
            partition_count: None,
        }
    }

    /// Replaces the common properties (the partition count follows them).
    pub fn with_common(mut self, common: ProducerProperties) -> Self {
        self.partition_count = common
            .is_partitioned()
            .then_some(common.partition_count.max(1));
        self.common = common;
        self
    }

    /// The full key of one of the binder's extended producer properties of this binding.
    pub fn extension_key(&self, binder_type: &str, field: &str) -> String {
        format!(
            "spring.cloud.stream.{binder_type}.bindings.{}.producer.{field}",
            self.binding
        )
    }

    /// The full key of a common producer property of this binding.
    pub fn common_key(&self, field: &str) -> String {
        format!(
            "spring.cloud.stream.bindings.{}.producer.{field}",
            self.binding
        )
    }
}

/// One message to send: converted to bytes, internal headers removed, and the partition the
/// runtime selected (for partitioned producers) as a field, never as a header.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outbound {
    /// The message (no `deliveryAttempt`, `scst_partition`, `sendto` or other internal header).
    pub message: Message<Bytes>,
    /// The partition, for partitioned producers.
    pub partition: Option<u32>,
}

impl Outbound {
    /// An outbound message without a partition.
    pub fn new(message: Message<Bytes>) -> Self {
        Self {
            message,
            partition: None,
        }
    }

    /// Sets the partition.
    pub fn with_partition(mut self, partition: Option<u32>) -> Self {
        self.partition = partition;
        self
    }
}
