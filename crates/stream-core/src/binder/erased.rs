//! The one place a binder is type-erased: a blanket adapter from any [`BinderFactory`] /
//! [`Binder`] to the object-safe forms the runtime holds. Here the runtime binds and validates
//! a binder's extended properties (once per binding), resolves the acknowledge mode, checks
//! capabilities, builds the typed specs and wraps the binder's consumer, producer and pollable
//! source in the runtime's lifecycle.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use stream_config::{
    AckMode, BindingProperties, Environment, ExtensionSchema, StreamProperties, canonical_segment,
};
use tracing::Instrument;

use super::capability::{check_recovery, required_capability};
use super::lifecycle::{ConsumerBinding, Timing};
use super::sink::Settling;
use super::spec::{AnonymousName, ConsumerSpec, Group, Outbound, ProducerSpec};
use super::{
    Binder, BinderContext, BinderFactory, Binding, Capabilities, Capability, Pollable, Producer,
    Settle,
};
use crate::error::BinderError;
use crate::process::pipeline::ConsumerPipeline;

/// A consumer binding to create (one destination of an input binding).
pub(crate) struct InputRequest<'a> {
    pub(crate) binding: &'a str,
    pub(crate) destination: &'a str,
    /// One partition of `instance-index-list` (Spring binds one consumer per listed
    /// partition, each as if it were that instance).
    pub(crate) partition: Option<u32>,
    pub(crate) props: &'a BindingProperties,
    pub(crate) stream: &'a StreamProperties,
    pub(crate) pipeline: Arc<ConsumerPipeline>,
    pub(crate) timing: Timing,
}

/// An output binding to create.
pub(crate) struct OutputRequest<'a> {
    pub(crate) binding: &'a str,
    pub(crate) destination: &'a str,
    pub(crate) props: &'a BindingProperties,
    pub(crate) retry_interval: Duration,
}

/// A factory, erased.
#[async_trait]
pub(crate) trait DynFactory: Send + Sync + 'static {
    fn binder_type(&self) -> &'static str;
    fn extension_schema(&self) -> ExtensionSchema;
    async fn create(
        &self,
        name: String,
        env: Environment,
    ) -> Result<Arc<dyn DynBinder>, BinderError>;
}

/// A binder, erased.
#[async_trait]
pub(crate) trait DynBinder: Send + Sync + 'static {
    fn binder_type(&self) -> &'static str;
    fn messaging_system(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    async fn bind_input(&self, req: InputRequest<'_>) -> Result<Box<dyn Binding>, BinderError>;
    async fn bind_output(
        &self,
        req: OutputRequest<'_>,
    ) -> Result<Arc<dyn DynProducer>, BinderError>;
    async fn bind_pollable(
        &self,
        req: InputRequest<'_>,
    ) -> Result<Box<dyn DynPollable>, BinderError>;
    async fn health(&self) -> super::BinderHealth;
    async fn close(&self) -> Result<(), BinderError>;
}

/// A producer, erased.
#[async_trait]
pub(crate) trait DynProducer: Send + Sync + 'static {
    /// Why the producer is not bound yet (late binding), if it is not.
    fn pending(&self) -> Option<String>;
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError>;
    async fn flush(&self) -> Result<(), BinderError>;
    async fn close(&self) -> Result<(), BinderError>;
}

/// A pollable source, erased.
#[async_trait]
pub(crate) trait DynPollable: Send + Sync + 'static {
    /// Fetches at most one delivery, processes it with `pipeline` and settles it.
    async fn poll(&self, pipeline: &ConsumerPipeline) -> Result<bool, BinderError>;
    async fn close(&self) -> Result<(), BinderError>;
}

/// A binder factory of any type, shareable between applications.
///
/// ```
/// use stream_core::binder::AnyBinderFactory;
/// use stream_core::memory::InMemoryBinderFactory;
/// let f = AnyBinderFactory::new(InMemoryBinderFactory::default());
/// assert_eq!(f.binder_type(), "memory");
/// let g = f.clone(); // the same factory
/// assert_eq!(g.binder_type(), "memory");
/// ```
#[derive(Clone)]
pub struct AnyBinderFactory {
    pub(crate) inner: Arc<dyn DynFactory>,
}

impl AnyBinderFactory {
    /// Erases a factory.
    pub fn new<F: BinderFactory>(factory: F) -> Self {
        Self {
            inner: Arc::new(FactoryAdapter(factory)),
        }
    }

    /// The type name.
    pub fn binder_type(&self) -> &'static str {
        self.inner.binder_type()
    }

    /// The extension schema of its binders' properties.
    pub fn extension_schema(&self) -> ExtensionSchema {
        self.inner.extension_schema()
    }

    /// Creates a binder to ask its capabilities (the conformance kit gates trials on them).
    pub async fn capabilities(
        &self,
        environment: Environment,
    ) -> Result<Capabilities, BinderError> {
        let binder = self
            .inner
            .create(self.binder_type().to_owned(), environment)
            .await?;
        let caps = binder.capabilities();
        binder.close().await?;
        Ok(caps)
    }
}

impl fmt::Debug for AnyBinderFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyBinderFactory")
            .field("binder_type", &self.binder_type())
            .finish()
    }
}

impl<F: BinderFactory> From<F> for AnyBinderFactory {
    fn from(factory: F) -> Self {
        Self::new(factory)
    }
}

struct FactoryAdapter<F>(F);

fn config_error(key: String) -> impl FnOnce(stream_config::ConfigError) -> BinderError {
    move |e| BinderError::invalid_property(key, e)
}

#[async_trait]
impl<F: BinderFactory> DynFactory for FactoryAdapter<F> {
    fn binder_type(&self) -> &'static str {
        self.0.binder_type()
    }

    fn extension_schema(&self) -> ExtensionSchema {
        self.0.root_schemas().into_iter().fold(
            ExtensionSchema::new::<
                F::Properties,
                <F::Binder as Binder>::ConsumerProperties,
                <F::Binder as Binder>::ProducerProperties,
            >(self.0.binder_type()),
            ExtensionSchema::with_root,
        )
    }

    async fn create(
        &self,
        name: String,
        env: Environment,
    ) -> Result<Arc<dyn DynBinder>, BinderError> {
        let binder_type = self.0.binder_type();
        let properties: F::Properties =
            env.extended_binder(binder_type)
                .map_err(config_error(format!(
                    "spring.cloud.stream.{}.binder",
                    canonical_segment(binder_type)
                )))?;
        let binder = self
            .0
            .create(BinderContext::new(name, env.clone(), properties))
            .await?;
        Ok(Arc::new(BinderAdapter {
            binder: Arc::new(binder),
            binder_type,
            system: self.0.messaging_system(),
            env,
        }))
    }
}

struct BinderAdapter<B> {
    binder: Arc<B>,
    binder_type: &'static str,
    system: &'static str,
    env: Environment,
}

impl<B: Binder> BinderAdapter<B> {
    fn require(&self, binding: &str, capability: Capability) -> Result<(), BinderError> {
        if self.binder.capabilities().supports(capability) {
            Ok(())
        } else {
            Err(BinderError::unsupported(
                self.binder_type,
                binding,
                capability,
            ))
        }
    }

    /// The typed consumer spec: extended properties bound once, names resolved, the binding's
    /// needs checked against the capabilities.
    fn consumer_spec(
        &self,
        req: &InputRequest<'_>,
    ) -> Result<ConsumerSpec<B::ConsumerProperties>, BinderError> {
        let t = canonical_segment(self.binder_type);
        let extension: B::ConsumerProperties = self
            .env
            .extended_consumer(self.binder_type, req.binding)
            .map_err(config_error(format!(
                "spring.cloud.stream.{t}.bindings.{}.consumer",
                req.binding
            )))?;
        let common = req.props.consumer.clone();
        let acknowledge_mode = common
            .acknowledge_mode
            .or_else(|| self.binder.acknowledge_mode(&extension))
            .unwrap_or(AckMode::Auto);
        let group = match req.props.group.as_deref().filter(|g| !g.trim().is_empty()) {
            Some(g) => Group::Named(g.into()),
            None => Group::Anonymous(AnonymousName::generate()),
        };
        if common.partitioned && group.is_anonymous() {
            return Err(BinderError::invalid_property(
                format!("spring.cloud.stream.bindings.{}.group", req.binding),
                "A consumer group is required for a partitioned subscription",
            ));
        }
        if common.partitioned {
            self.require(req.binding, Capability::Partitioning)?;
        }
        if !group.is_anonymous() {
            self.require(req.binding, Capability::ConsumerGroups)?;
        }
        if common.batch_mode {
            self.require(req.binding, Capability::BatchConsumer)?;
        }
        if let Some(cap) = required_capability(acknowledge_mode) {
            self.require(req.binding, cap)?;
        }
        let instance_index = req
            .partition
            .or(common.instance_index)
            .unwrap_or(req.stream.instance_index);
        let instance_count = common.instance_count.unwrap_or(req.stream.instance_count);
        let mut spec = ConsumerSpec {
            binding: req.binding.into(),
            destination: req.destination.into(),
            group,
            common,
            extension,
            acknowledge_mode,
            instance_index,
            instance_count,
            partitions: Vec::new(),
        };
        spec.partitions = match req.partition {
            Some(p) if spec.common.partitioned => vec![p],
            _ => spec.derive_partitions(&req.stream.instance_index_list),
        };
        if let Some(&p) = spec
            .partitions
            .iter()
            .find(|&&p| instance_count > 0 && p >= instance_count)
        {
            tracing::warn!(
                binding = req.binding,
                partition = p,
                instance_count,
                "a consumed partition is not below instance-count"
            );
        }
        Ok(spec)
    }

    fn producer_spec(
        &self,
        req: &OutputRequest<'_>,
    ) -> Result<ProducerSpec<B::ProducerProperties>, BinderError> {
        let t = canonical_segment(self.binder_type);
        let extension: B::ProducerProperties = self
            .env
            .extended_producer(self.binder_type, req.binding)
            .map_err(config_error(format!(
                "spring.cloud.stream.{t}.bindings.{}.producer",
                req.binding
            )))?;
        let common = req.props.producer.clone();
        if common.is_partitioned() {
            self.require(req.binding, Capability::Partitioning)?;
        }
        if !common.required_groups.is_empty() {
            self.require(req.binding, Capability::RequiredGroups)?;
        }
        Ok(ProducerSpec::new(req.binding, req.destination, extension).with_common(common))
    }
}

#[async_trait]
impl<B: Binder> DynBinder for BinderAdapter<B> {
    fn binder_type(&self) -> &'static str {
        self.binder_type
    }

    fn messaging_system(&self) -> &'static str {
        self.system
    }

    fn capabilities(&self) -> Capabilities {
        self.binder.capabilities()
    }

    async fn bind_input(&self, req: InputRequest<'_>) -> Result<Box<dyn Binding>, BinderError> {
        let spec = self.consumer_spec(&req)?;
        if let Some(intake) = &req.pipeline.stream {
            // A binder that settles after the hand-off returned lets a stream function hold
            // many deliveries (up to the prefetch); others wait for each settlement.
            intake.deferred.store(
                self.binder.capabilities().supports(Capability::ManualAck),
                std::sync::atomic::Ordering::Release,
            );
        }
        let binding = ConsumerBinding::new(
            Arc::clone(&self.binder),
            self.binder_type.into(),
            spec,
            req.pipeline,
            req.timing,
        );
        binding.bind().await?;
        Ok(Box::new(binding))
    }

    async fn bind_output(
        &self,
        req: OutputRequest<'_>,
    ) -> Result<Arc<dyn DynProducer>, BinderError> {
        let spec = self.producer_spec(&req)?;
        let slot = Arc::new(ProducerSlot::<B> {
            binding: req.binding.to_owned(),
            producer: OnceLock::new(),
            pending: std::sync::Mutex::new(None),
        });
        match bind_producer(&*self.binder, &spec).await {
            Ok(p) => {
                let _ = slot.producer.set(p);
            }
            Err(e) if e.is_temporary() && !req.retry_interval.is_zero() => {
                tracing::warn!(
                    binding = req.binding,
                    destination = req.destination,
                    retry_in = ?req.retry_interval,
                    error = %e,
                    "cannot bind the producer yet; sends fail until it is bound (spring.cloud.stream.binding-retry-interval)"
                );
                if let Ok(mut p) = slot.pending.lock() {
                    *p = Some(e.to_string());
                }
                let weak = Arc::downgrade(&slot);
                let binder = Arc::clone(&self.binder);
                let interval = req.retry_interval;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(interval).await;
                        let Some(slot) = weak.upgrade() else { return };
                        match bind_producer(&*binder, &spec).await {
                            Ok(p) => {
                                tracing::info!(binding = %slot.binding, "producer bound");
                                let _ = slot.producer.set(p);
                                return;
                            }
                            Err(e) if e.is_temporary() => {
                                tracing::warn!(binding = %slot.binding, error = %e, "cannot bind the producer yet; retrying");
                                if let Ok(mut p) = slot.pending.lock() {
                                    *p = Some(e.to_string());
                                }
                            }
                            Err(e) => {
                                tracing::error!(binding = %slot.binding, error = %e, "binding the producer failed");
                                crate::error::unheard(
                                    "binding the producer failed",
                                    &slot.binding,
                                    &e,
                                );
                                if let Ok(mut p) = slot.pending.lock() {
                                    *p = Some(e.to_string());
                                }
                                return;
                            }
                        }
                    }
                });
            }
            Err(e) => return Err(e),
        }
        Ok(slot)
    }

    async fn bind_pollable(
        &self,
        req: InputRequest<'_>,
    ) -> Result<Box<dyn DynPollable>, BinderError> {
        self.require(req.binding, Capability::PollableConsumer)?;
        let spec = self.consumer_spec(&req)?;
        let destination = self.binder.provision_consumer(&spec).await?;
        let source = self.binder.bind_pollable(&spec, &destination).await?;
        check_recovery(
            self.binder_type,
            self.binder.capabilities(),
            req.binding,
            &source.recovery(),
        )?;
        let recovery = source.recovery();
        Ok(Box::new(PollableAdapter::new(
            source,
            recovery,
            spec.acknowledge_mode,
        )))
    }

    async fn health(&self) -> super::BinderHealth {
        self.binder.health().await
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.binder.close().await
    }
}

async fn bind_producer<B: Binder>(
    binder: &B,
    spec: &ProducerSpec<B::ProducerProperties>,
) -> Result<B::Producer, BinderError> {
    let destination = binder.provision_producer(spec).await?;
    binder.bind_producer(spec, &destination).await
}

/// A producer, bound now or later (late binding).
struct ProducerSlot<B: Binder> {
    binding: String,
    producer: OnceLock<B::Producer>,
    /// Why it is not bound yet.
    pending: std::sync::Mutex<Option<String>>,
}

impl<B: Binder> ProducerSlot<B> {
    fn not_bound(&self) -> BinderError {
        let why = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| "binding failed".to_owned());
        BinderError::new(
            crate::error::BinderErrorKind::Connection,
            format!(
                "output binding `{}` is not bound yet ({why}); the runtime keeps trying every spring.cloud.stream.binding-retry-interval",
                self.binding
            ),
        )
    }
}

#[async_trait]
impl<B: Binder> DynProducer for ProducerSlot<B> {
    fn pending(&self) -> Option<String> {
        if self.producer.get().is_some() {
            return None;
        }
        Some(
            self.pending
                .lock()
                .ok()
                .and_then(|p| p.clone())
                .unwrap_or_else(|| "not bound yet".to_owned()),
        )
    }

    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        match self.producer.get() {
            Some(p) => p.send(outbound).await,
            None => Err(self.not_bound()),
        }
    }

    async fn flush(&self) -> Result<(), BinderError> {
        match self.producer.get() {
            Some(p) => p.flush().await,
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), BinderError> {
        match self.producer.get() {
            Some(p) => p.close().await,
            None => Ok(()),
        }
    }
}

pub(crate) struct PollableAdapter<P: Pollable> {
    source: Arc<P>,
    recovery: super::Recovery,
    ack_mode: AckMode,
}

impl<P: Pollable> PollableAdapter<P> {
    pub(crate) fn new(source: P, recovery: super::Recovery, ack_mode: AckMode) -> Self {
        Self {
            source: Arc::new(source),
            recovery,
            ack_mode,
        }
    }
}

#[async_trait]
impl<P: Pollable> DynPollable for PollableAdapter<P> {
    async fn poll(&self, pipeline: &ConsumerPipeline) -> Result<bool, BinderError> {
        let Some(delivery) = self.source.fetch().await? else {
            return Ok(false);
        };
        let settling = Settling {
            settle: &self.source,
            pipeline,
            recovery: self.recovery,
            ack_mode: self.ack_mode,
        };
        let span = super::sink::consume_span(pipeline, &delivery.body);
        settling
            .process(delivery.raw, delivery.body)
            .instrument(span)
            .await;
        Ok(true)
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.source.close().await
    }
}
