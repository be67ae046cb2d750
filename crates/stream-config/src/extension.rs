//! Binder extensions: the binder-specific property structs a binder crate registers under its type.

use crate::descriptor::PropertyDescriptor;
use crate::environment::Environment;
use crate::error::ConfigError;
use crate::field::Properties;
use crate::key::canonical_segment;

type DescriptorsFn = fn() -> Vec<PropertyDescriptor>;

/// A binder type's extended properties: `spring.cloud.stream.<type>.binder.*` (B),
/// `spring.cloud.stream.<type>.{default,bindings.<name>}.consumer.*` (C) and `.producer.*` (P).
///
/// ```
/// use stream_config::{Environment, ExtensionSchema, StreamConfig};
/// stream_config::properties! {
///     /// Binder-level settings.
///     pub struct MyBinder { /// Broker address.
///         pub address: String = "localhost:1234".to_owned() }
///     /// Consumer settings.
///     pub struct MyConsumer { /// Prefetch.
///         pub prefetch: u32 = 1 }
///     /// Producer settings.
///     pub struct MyProducer { /// Compress.
///         pub compress: bool = false }
/// }
/// let env = Environment::builder()
///     .map("test", [
///         ("spring.cloud.stream.mybroker.default.consumer.prefetch", "5"),
///         ("spring.cloud.stream.mybroker.bindings.input.consumer.prefetch", "9"),
///     ])
///     .build()?;
/// let config = StreamConfig::builder(env)
///     .extension(ExtensionSchema::new::<MyBinder, MyConsumer, MyProducer>("mybroker"))
///     .build()?;
/// let c: MyConsumer = config.environment().extended_consumer("mybroker", "input")?;
/// assert_eq!(c.prefetch, 9);
/// let c: MyConsumer = config.environment().extended_consumer("mybroker", "other")?;
/// assert_eq!(c.prefetch, 5);
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ExtensionSchema {
    binder_type: String,
    binder: fn() -> Vec<PropertyDescriptor>,
    consumer: fn() -> Vec<PropertyDescriptor>,
    producer: fn() -> Vec<PropertyDescriptor>,
    check: fn(&Environment, &str, &[String]) -> Result<(), ConfigError>,
}

impl std::fmt::Debug for ExtensionSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionSchema")
            .field("binder_type", &self.binder_type)
            .finish_non_exhaustive()
    }
}

fn check<B: Properties, C: Properties, P: Properties>(
    env: &Environment,
    binder_type: &str,
    bindings: &[String],
) -> Result<(), ConfigError> {
    env.extended_binder::<B>(binder_type)?;
    let t = canonical_segment(binder_type);
    env.bind(
        &format!("spring.cloud.stream.{t}.default.consumer"),
        &mut C::default(),
    )?;
    env.bind(
        &format!("spring.cloud.stream.{t}.default.producer"),
        &mut P::default(),
    )?;
    for b in bindings {
        env.extended_consumer::<C>(binder_type, b)?;
        env.extended_producer::<P>(binder_type, b)?;
    }
    Ok(())
}

impl ExtensionSchema {
    /// The schema of binder type `binder_type` (the value of `binders.<name>.type`).
    pub fn new<B: Properties, C: Properties, P: Properties>(binder_type: &str) -> Self {
        ExtensionSchema {
            binder_type: canonical_segment(binder_type),
            binder: B::descriptors,
            consumer: C::descriptors,
            producer: P::descriptors,
            check: check::<B, C, P>,
        }
    }
    /// The binder type (canonical).
    pub fn binder_type(&self) -> &str {
        &self.binder_type
    }
    /// Descriptors of the binder-level properties.
    pub fn binder_descriptors(&self) -> Vec<PropertyDescriptor> {
        (self.binder)()
    }
    /// Descriptors of the consumer properties.
    pub fn consumer_descriptors(&self) -> Vec<PropertyDescriptor> {
        (self.consumer)()
    }
    /// Descriptors of the producer properties.
    pub fn producer_descriptors(&self) -> Vec<PropertyDescriptor> {
        (self.producer)()
    }
    pub(crate) fn descriptor_fns(&self) -> (DescriptorsFn, DescriptorsFn, DescriptorsFn) {
        (self.binder, self.consumer, self.producer)
    }
    /// Binds every struct of this extension once (binder level, and each binding) so type errors
    /// show at startup.
    pub(crate) fn check(&self, env: &Environment, bindings: &[String]) -> Result<(), ConfigError> {
        (self.check)(env, &self.binder_type, bindings)
    }
}
