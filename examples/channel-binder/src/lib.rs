//! A binder over an in-process, log-based broker ([`LogBroker`]), written from
//! `docs/add-a-binder.md` against stream-core's published API only — what a third party's
//! binder crate looks like. Its tests run the conformance kit, and inject the faults of
//! [`Fault`] to show that the kit catches each one.
//!
//! ```
//! use channel_binder::{ChannelBinderFactory, LogBroker};
//! use stream_core::{FunctionError, StreamApp};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let broker = LogBroker::new();
//! let app = StreamApp::builder()
//!     .environment(stream_core::stream_config::Environment::empty())
//!     .binder(ChannelBinderFactory::new(broker.clone()))
//!     .function("upper", |s: String| async move { Ok::<_, FunctionError>(s.to_uppercase()) })
//!     .build()
//!     .await
//!     .unwrap();
//! app.shutdown().await.unwrap();
//! # });
//! ```

mod broker;
mod endpoints;

use stream_core::BinderError;
use stream_core::binder::{
    Binder, BinderContext, BinderFactory, Capabilities, Capability, ConsumerSpec, Group,
    ProducerSpec,
};
use stream_core::stream_config::AckMode;

pub use broker::{LogBroker, Offset, Record};
pub use endpoints::{
    ChannelConsumer, ChannelDestination, ChannelPollable, ChannelProducer, ChannelRaw,
};

/// The type name: `spring.cloud.stream.binders.<name>.type: channel`.
pub const CHANNEL_BINDER_TYPE: &str = "channel";

stream_core::stream_config::properties! {
    /// Binder-level properties (`spring.cloud.stream.channel.binder.*`): none.
    pub struct ChannelBinderProperties {}

    /// Consumer properties (`spring.cloud.stream.channel.bindings.<name>.consumer.*`).
    pub struct ChannelConsumerProperties {
        /// With `batch-mode`: the most records handed to the function at once.
        pub batch_size: u32 = 10,
    }

    /// Producer properties (`spring.cloud.stream.channel.bindings.<name>.producer.*`): none.
    pub struct ChannelProducerProperties {}
}

/// A defect to build into the binder on purpose, to prove the conformance kit catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `dead_letter` reports success but publishes nothing.
    NoDeadLetter,
    /// `provision_producer` ignores `required-groups`.
    IgnoreRequiredGroups,
    /// The producer writes the partition as a `scst_partition` header on the wire.
    LeakInternalHeaders,
    /// `stop` aborts the consumer tasks instead of waiting for them.
    AbortInFlightOnStop,
    /// Acknowledgments are not kept: what was acknowledged is delivered again.
    RedeliverAfterAck,
}

/// Creates [`ChannelBinder`]s over one [`LogBroker`].
#[derive(Clone, Debug, Default)]
pub struct ChannelBinderFactory {
    broker: LogBroker,
    fault: Option<Fault>,
}

impl ChannelBinderFactory {
    /// A factory whose binders use `broker`.
    pub fn new(broker: LogBroker) -> Self {
        Self {
            broker,
            fault: None,
        }
    }

    /// The same factory with a fault built in.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The broker.
    pub fn broker(&self) -> &LogBroker {
        &self.broker
    }
}

impl BinderFactory for ChannelBinderFactory {
    type Binder = ChannelBinder;
    type Properties = ChannelBinderProperties;

    fn binder_type(&self) -> &'static str {
        CHANNEL_BINDER_TYPE
    }

    async fn create(
        &self,
        _context: BinderContext<ChannelBinderProperties>,
    ) -> Result<ChannelBinder, BinderError> {
        Ok(ChannelBinder {
            broker: self.broker.clone(),
            fault: self.fault,
        })
    }
}

/// The binder.
#[derive(Clone, Debug)]
pub struct ChannelBinder {
    broker: LogBroker,
    fault: Option<Fault>,
}

impl ChannelBinder {
    fn up(&self) -> Result<(), BinderError> {
        if self.broker.is_up() {
            Ok(())
        } else {
            Err(BinderError::connection(
                "the channel broker",
                "it is cut off",
            ))
        }
    }
}

/// `<destination>.<group>.dlq`.
pub fn dead_letter_destination(destination: &str, group: &str) -> String {
    format!("{destination}.{group}.dlq")
}

impl Binder for ChannelBinder {
    type ConsumerProperties = ChannelConsumerProperties;
    type ProducerProperties = ChannelProducerProperties;
    type ConsumerDestination = ChannelDestination;
    type ProducerDestination = String;
    type Consumer = ChannelConsumer;
    type Producer = ChannelProducer;
    type Pollable = ChannelPollable;

    fn capabilities(&self) -> Capabilities {
        [
            Capability::ConsumerGroups,
            Capability::Partitioning,
            Capability::RequiredGroups,
            Capability::DeadLetter,
            Capability::ManualAck,
            Capability::NoAck,
            Capability::PollableConsumer,
            Capability::BatchConsumer,
            Capability::TypedHeaders,
        ]
        .into_iter()
        .collect()
    }

    async fn provision_consumer(
        &self,
        spec: &ConsumerSpec<ChannelConsumerProperties>,
    ) -> Result<ChannelDestination, BinderError> {
        self.up()?;
        let (group, anonymous) = match &spec.group {
            Group::Named(g) => (g.to_string(), false),
            Group::Anonymous(a) => (a.with_prefix("anonymous."), true),
        };
        let key = match spec.partitions.as_slice() {
            [] => group.clone(),
            parts => format!(
                "{group}-{}",
                parts
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("_")
            ),
        };
        self.broker
            .subscribe(&spec.destination, &key, &spec.partitions);
        Ok(ChannelDestination {
            destination: spec.destination.to_string(),
            key,
            partitions: spec.partitions.clone(),
            anonymous,
            dead_letter: (!anonymous).then(|| dead_letter_destination(&spec.destination, &group)),
        })
    }

    async fn provision_producer(
        &self,
        spec: &ProducerSpec<ChannelProducerProperties>,
    ) -> Result<String, BinderError> {
        self.up()?;
        if self.fault != Some(Fault::IgnoreRequiredGroups) {
            for group in &spec.common.required_groups {
                match spec.partition_count {
                    None => self.broker.subscribe(&spec.destination, group, &[]),
                    Some(n) => {
                        for p in 0..n {
                            self.broker
                                .subscribe(&spec.destination, &format!("{group}-{p}"), &[p]);
                        }
                    }
                }
            }
        }
        Ok(spec.destination.to_string())
    }

    async fn bind_consumer(
        &self,
        spec: &ConsumerSpec<ChannelConsumerProperties>,
        destination: &ChannelDestination,
    ) -> Result<ChannelConsumer, BinderError> {
        self.up()?;
        Ok(ChannelConsumer::new(
            self.broker.clone(),
            destination.clone(),
            spec.common.concurrency.max(1),
            spec.common
                .batch_mode
                .then_some(spec.extension.batch_size.max(1) as usize),
            spec.acknowledge_mode == AckMode::None,
            self.fault,
        ))
    }

    async fn bind_producer(
        &self,
        _spec: &ProducerSpec<ChannelProducerProperties>,
        destination: &String,
    ) -> Result<ChannelProducer, BinderError> {
        self.up()?;
        Ok(ChannelProducer::new(
            self.broker.clone(),
            destination.clone(),
            self.fault,
        ))
    }

    async fn bind_pollable(
        &self,
        spec: &ConsumerSpec<ChannelConsumerProperties>,
        destination: &ChannelDestination,
    ) -> Result<ChannelPollable, BinderError> {
        self.up()?;
        Ok(ChannelPollable::new(
            self.broker.clone(),
            destination.clone(),
            spec.acknowledge_mode == AckMode::None,
            self.fault,
        ))
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}
