//! The binder contract: what a broker crate implements to plug into the runtime.
//!
//! **The core decides, the binder executes.** The runtime owns the semantics: conversion,
//! partition selection, retry, error channels, the settlement of every delivery (acknowledge
//! mode × outcome × where failures go, see [`Settlement`] and [`Recovery`]), the binding
//! lifecycle (auto-startup, pause/resume, in-flight deliveries settled before `stop` returns,
//! truthful state, supervision of the binder's tasks), late binding and anonymous group names.
//! A binder owns only the wire: it connects, provisions, maps headers, fetches deliveries and
//! settles each one as told.
//!
//! **Typed inside, erased once.** A binder names its parts as associated types: its extended
//! consumer/producer properties (bound and validated once by the runtime and handed over typed
//! in a [`ConsumerSpec`] / [`ProducerSpec`]), what provisioning produced, its raw broker message,
//! its consumer, producer and pollable source. One adapter in this crate erases them for the
//! runtime; binder code never downcasts and never looks a property up by binding name.
//!
//! The shapes, in the order the runtime uses them:
//!
//! 1. [`BinderFactory::create`] makes a [`Binder`] from its binder-level properties.
//! 2. [`Binder::provision_consumer`] / [`Binder::provision_producer`] create the topology.
//! 3. [`Binder::bind_consumer`] makes a [`Consumer`]; the runtime wraps it in a binding and calls
//!    [`Consumer::start`] with a [`Sink`]: the binder fetches and calls [`Sink::dispatch`] per
//!    delivery; the runtime processes it and calls back [`Settle::settle`] (and
//!    [`Settle::dead_letter`] when the binding's [`Recovery`] publishes failures).
//! 4. [`Binder::bind_producer`] makes a [`Producer`]; the runtime calls [`Producer::send`] with
//!    an [`Outbound`] (converted, internal headers removed, partition selected).
//! 5. [`Binder::bind_pollable`] makes a [`Pollable`] that the runtime polls.
//!
//! The in-memory binder ([`crate::memory`]) is written against this public API only, so a
//! third-party binder crate can do everything it does; `docs/add-a-binder.md` walks through one,
//! and the conformance kit (`stream_core::conformance`, feature `conformance`) proves it.

mod capability;
mod delivery;
pub(crate) mod erased;
mod health;
mod inflight;
pub(crate) mod lifecycle;
mod registry;
mod sink;
mod spec;

use std::future::Future;

use stream_config::{AckMode, Environment, Properties};

use crate::error::BinderError;

pub use crate::process::{
    BoundedFailure, DeadLetter, DeadLetterRoute, FailedMessage, HeaderBudget, Recovery, Settlement,
    headers_to_drop,
};
pub use capability::{Capabilities, Capability};
pub use delivery::{Body, Delivery};
pub use erased::AnyBinderFactory;
pub use health::{BinderHealth, HealthStatus};
pub use inflight::{InFlight, InFlightGuard, OwnedInFlightGuard};
pub use lifecycle::{Binding, BindingState, BindingStatus};
pub use registry::BinderRegistry;
pub use sink::{Sink, SourceStatus};
pub use spec::{AnonymousName, ConsumerSpec, Group, Outbound, ProducerSpec};

/// What a binder is created with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BinderContext<P> {
    /// The binder configuration's name (`spring.cloud.stream.binders.<name>`), or the type name
    /// for the implicit default binder.
    pub name: String,
    /// The binder's environment: the application's, overlaid by
    /// `spring.cloud.stream.binders.<name>.environment.*` (or only that, when
    /// `inherit-environment` is false). Binders read their top-level connection keys from it
    /// (`spring.rabbitmq.*`).
    pub environment: Environment,
    /// The binder-level extended properties, `spring.cloud.stream.<type>.binder.*`, bound and
    /// validated.
    pub properties: P,
}

impl<P> BinderContext<P> {
    /// A context.
    pub fn new(name: impl Into<String>, environment: Environment, properties: P) -> Self {
        Self {
            name: name.into(),
            environment,
            properties,
        }
    }
}

/// Creates binders of one type. A binder crate exports one; the application registers it with
/// `StreamApp::builder().binder(factory)`.
pub trait BinderFactory: Send + Sync + 'static {
    /// The binder it creates.
    type Binder: Binder;
    /// Binder-level extended properties (`spring.cloud.stream.<type>.binder.*`).
    type Properties: Properties;

    /// The type name (`rabbit`, `rocketmq`, `memory`), the value of
    /// `spring.cloud.stream.binders.<name>.type`.
    fn binder_type(&self) -> &'static str;

    /// The broker as OpenTelemetry names it (`messaging.system`: `rabbitmq`, `rocketmq`,
    /// `kafka`), for metrics and spans; the binder type unless the factory says otherwise.
    fn messaging_system(&self) -> &'static str {
        self.binder_type()
    }

    /// Top-level key trees the binder reads besides `spring.cloud.stream.<type>.*`, such as
    /// Spring Boot's connection keys (`spring.<broker>.*`). The runtime validates them with the
    /// rest (a typo is an error with a suggestion), maps environment variables through them,
    /// binds them once at startup (a wrong type is an error naming the key) and logs each set
    /// [`NoEffect`](stream_config::NoEffect) key once. None by default.
    ///
    /// ```
    /// use stream_config::{Properties, RootSchema};
    /// stream_config::properties! {
    ///     /// `spring.mybroker.*`.
    ///     pub struct MyConnection { /// Host.
    ///         pub host: String = "localhost".to_owned() }
    /// }
    /// // in `impl BinderFactory for MyFactory`:
    /// fn root_schemas() -> Vec<RootSchema> {
    ///     vec![RootSchema::new::<MyConnection>("spring.mybroker")]
    /// }
    /// assert_eq!(root_schemas()[0].descriptors()[0].name, "host");
    /// ```
    fn root_schemas(&self) -> Vec<stream_config::RootSchema> {
        Vec::new()
    }

    /// Creates (and connects, or prepares to connect) a binder. A broker that cannot be reached
    /// yet is not an error here: binders connect lazily and report it when binding (late
    /// binding).
    fn create(
        &self,
        context: BinderContext<Self::Properties>,
    ) -> impl Future<Output = Result<Self::Binder, BinderError>> + Send;
}

/// A connection to one broker: provisions topology and binds consumers, producers and
/// pollable sources.
///
/// A binding's needs are checked against [`Binder::capabilities`] at bind time (partitioning,
/// groups, acknowledge modes, batch mode, required groups, pollable consumers), so nothing
/// unsupported fails later per message. Errors that may pass (the broker is unreachable) are
/// [temporary](BinderError::is_temporary): the runtime retries them every
/// `spring.cloud.stream.binding-retry-interval` (late binding).
pub trait Binder: Send + Sync + Sized + 'static {
    /// Extended consumer properties
    /// (`spring.cloud.stream.<type>.{default,bindings.<name>}.consumer.*`).
    type ConsumerProperties: Properties;
    /// Extended producer properties.
    type ProducerProperties: Properties;
    /// What provisioning a consumer produced (queue names, DLQ, ...), handed to
    /// [`Binder::bind_consumer`] / [`Binder::bind_pollable`].
    type ConsumerDestination: Send + Sync + 'static;
    /// What provisioning a producer produced, handed to [`Binder::bind_producer`].
    type ProducerDestination: Send + Sync + 'static;
    /// The consumer of a push binding.
    type Consumer: Consumer;
    /// The producer of an output binding.
    type Producer: Producer;
    /// The source of a pollable binding; [`Unsupported`] when the binder has no
    /// [`Capability::PollableConsumer`].
    type Pollable: Pollable;

    /// What the binder supports.
    fn capabilities(&self) -> Capabilities;

    /// The acknowledge mode the binder's own properties ask for (RabbitMQ's
    /// `spring.cloud.stream.rabbit.bindings.<name>.consumer.acknowledge-mode`), used when the
    /// common key `spring.cloud.stream.bindings.<name>.consumer.acknowledge-mode` is not set.
    fn acknowledge_mode(&self, extension: &Self::ConsumerProperties) -> Option<AckMode> {
        let _ = extension;
        None
    }

    /// Declares what a consumer needs (queue, bindings, DLQ, topic).
    fn provision_consumer(
        &self,
        spec: &ConsumerSpec<Self::ConsumerProperties>,
    ) -> impl Future<Output = Result<Self::ConsumerDestination, BinderError>> + Send;

    /// Declares what a producer needs (exchange, topic, the queues of `required-groups`).
    fn provision_producer(
        &self,
        spec: &ProducerSpec<Self::ProducerProperties>,
    ) -> impl Future<Output = Result<Self::ProducerDestination, BinderError>> + Send;

    /// Makes the consumer of a provisioned destination. It fetches nothing until the runtime
    /// calls [`Consumer::start`].
    fn bind_consumer(
        &self,
        spec: &ConsumerSpec<Self::ConsumerProperties>,
        destination: &Self::ConsumerDestination,
    ) -> impl Future<Output = Result<Self::Consumer, BinderError>> + Send;

    /// Makes the producer of a provisioned destination.
    fn bind_producer(
        &self,
        spec: &ProducerSpec<Self::ProducerProperties>,
        destination: &Self::ProducerDestination,
    ) -> impl Future<Output = Result<Self::Producer, BinderError>> + Send;

    /// Makes a pollable source. Binders without [`Capability::PollableConsumer`] return
    /// [`BinderError::unsupported`] (the runtime does not call it for them).
    fn bind_pollable(
        &self,
        spec: &ConsumerSpec<Self::ConsumerProperties>,
        destination: &Self::ConsumerDestination,
    ) -> impl Future<Output = Result<Self::Pollable, BinderError>> + Send;

    /// Whether the binder reaches its broker (address, version, last error as details), for
    /// the application's health. The default does not know.
    fn health(&self) -> impl Future<Output = BinderHealth> + Send {
        async { BinderHealth::unknown() }
    }

    /// Closes connections. Called once, after every binding has stopped.
    fn close(&self) -> impl Future<Output = Result<(), BinderError>> + Send;
}

/// Settles deliveries on the broker as the runtime decided: the part of the contract shared by
/// [`Consumer`] and [`Pollable`].
pub trait Settle: Send + Sync + 'static {
    /// The broker's raw message: what settling needs (a delivery tag, a reply channel) and what
    /// error handlers receive (`ErrorMessage::raw`).
    type Raw: Send + Sync + 'static;

    /// Where this binding's failed messages go, from its properties; asked once when the
    /// consumer starts.
    fn recovery(&self) -> Recovery;

    /// Acknowledges, requeues or rejects one delivery. Never called in `acknowledge-mode:
    /// NONE` (the broker settled on delivery).
    fn settle(
        &self,
        raw: &Self::Raw,
        settlement: Settlement,
    ) -> impl Future<Output = Result<(), BinderError>> + Send;

    /// Publishes a failed message to the binding's dead-letter destination, with the failure
    /// headers of [`DeadLetter`] (and the binder's own, such as the original exchange). Called
    /// only when the [`Recovery`] says [`DeadLetterRoute::Publish`]; the runtime settles the
    /// delivery afterwards, or falls back to a settlement that loses nothing if this fails.
    fn dead_letter(
        &self,
        raw: &Self::Raw,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), BinderError>> + Send;
}

/// The consumer of a push binding: fetches deliveries and hands them to the runtime.
///
/// The runtime owns the lifecycle: it calls `start` (at bind time unless `auto-startup` is
/// false, on restart and after a supervised task ended unexpectedly), `stop`, `pause` and
/// `resume`, and keeps the state. A consumer only moves messages:
/// * `start` begins fetching (tasks spawned with [`Sink::spawn`], so the runtime notices when
///   one ends), each delivery passed to [`Sink::dispatch`] (up to the binding's concurrency at
///   a time); it reports connection losses and recoveries with [`Sink::report`];
/// * `stop` stops fetching and returns when its tasks ended; the runtime waits for deliveries
///   still being processed and settles them, bounded by the shutdown timeout. A delivery
///   dispatched after `stop` began is handed back by the runtime ([`Settlement::Requeue`]).
pub trait Consumer: Settle + Sized {
    /// Starts fetching into `sink`; returns once consuming has started (or failed).
    fn start(&self, sink: Sink<Self>) -> impl Future<Output = Result<(), BinderError>> + Send;

    /// Stops fetching; returns when the fetch tasks ended.
    fn stop(&self) -> impl Future<Output = Result<(), BinderError>> + Send;

    /// Asks the broker to stop sending for a while. The runtime holds what still arrives
    /// until `resume` either way; the default does nothing more.
    fn pause(&self) -> impl Future<Output = Result<(), BinderError>> + Send {
        async { Ok(()) }
    }

    /// Undoes [`Consumer::pause`].
    fn resume(&self) -> impl Future<Output = Result<(), BinderError>> + Send {
        async { Ok(()) }
    }
}

/// The source of a pollable binding (`spring.cloud.stream.pollable-source`).
pub trait Pollable: Settle {
    /// Fetches at most one delivery (`None`: nothing waiting).
    fn fetch(
        &self,
    ) -> impl Future<Output = Result<Option<Delivery<Self::Raw>>, BinderError>> + Send;

    /// Releases the source.
    fn close(&self) -> impl Future<Output = Result<(), BinderError>> + Send;
}

/// The sending side of an output binding.
pub trait Producer: Send + Sync + 'static {
    /// Sends one message; returns when the binder considers it sent (confirmed by the broker,
    /// when the binder and its configuration confirm).
    fn send(&self, outbound: Outbound) -> impl Future<Output = Result<(), BinderError>> + Send;

    /// Sends anything buffered (batches). Binders without buffering return at once.
    fn flush(&self) -> impl Future<Output = Result<(), BinderError>> + Send {
        async { Ok(()) }
    }

    /// Flushes and releases the producer's resources.
    fn close(&self) -> impl Future<Output = Result<(), BinderError>> + Send;
}

/// The [`Binder::Pollable`] of a binder without pollable consumers: it cannot be made.
#[derive(Debug)]
pub enum Unsupported {}

impl Settle for Unsupported {
    type Raw = ();

    fn recovery(&self) -> Recovery {
        match *self {}
    }

    async fn settle(&self, _raw: &(), _settlement: Settlement) -> Result<(), BinderError> {
        match *self {}
    }

    async fn dead_letter(&self, _raw: &(), _letter: &DeadLetter) -> Result<(), BinderError> {
        match *self {}
    }
}

impl Pollable for Unsupported {
    async fn fetch(&self) -> Result<Option<Delivery<()>>, BinderError> {
        match *self {}
    }

    async fn close(&self) -> Result<(), BinderError> {
        match *self {}
    }
}
