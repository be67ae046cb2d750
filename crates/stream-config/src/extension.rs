//! Binder extensions: the binder-specific property structs a binder crate registers under its type.

use crate::descriptor::PropertyDescriptor;
use crate::environment::Environment;
use crate::error::ConfigError;
use crate::field::Properties;
use crate::key::{canonical_key, canonical_segment};
use crate::schema::Node;

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
    roots: Vec<RootSchema>,
}

impl std::fmt::Debug for ExtensionSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionSchema")
            .field("binder_type", &self.binder_type)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// A top-level key tree a binder reads besides `spring.cloud.stream.<type>.*`, such as Spring
/// Boot's connection keys of a broker (`spring.<broker>.*`), registered with
/// [`ExtensionSchema::with_root`]. Its keys are validated like Spring Cloud Stream's (a typo is an
/// error with a suggestion), environment variables map through it
/// (`SPRING_MYBROKER_VIRTUALHOST` -> `spring.mybroker.virtual-host`), its values are bound once
/// at startup so a wrong type names the key there, and its [`NoEffect`](crate::NoEffect) keys are
/// reported once each ([`StreamConfig::notices`](crate::StreamConfig::notices)).
///
/// ```
/// use stream_config::{ConfigError, Environment, ExtensionSchema, NoEffect, RootSchema, StreamConfig};
/// stream_config::properties! {
///     /// `spring.mybroker.*`.
///     pub struct MyConnection {
///         /// Broker host.
///         pub host: String = "localhost".to_owned(),
///         /// Broker port.
///         pub port: u16 = 1234,
///         /// No effect here: there is no connection cache.
///         pub cache: NoEffect = NoEffect,
///     }
///     /// Binder-level settings.
///     pub struct MyBinder {}
/// }
/// let schema = || {
///     ExtensionSchema::new::<MyBinder, MyBinder, MyBinder>("mybroker")
///         .with_root(RootSchema::new::<MyConnection>("spring.mybroker"))
/// };
/// let config = |vars: &[(&str, &str)]| {
///     let env = Environment::builder().env_vars(vars.iter().copied()).build()?;
///     StreamConfig::builder(env).extension(schema()).build()
/// };
/// let ok = config(&[("SPRING_MYBROKER_HOST", "broker"), ("SPRING_MYBROKER_CACHE_SIZE", "5")])?;
/// assert_eq!(ok.environment().get("spring.mybroker.host"), Some("broker"));
/// assert_eq!(ok.notices().len(), 1); // cache.size: accepted, no effect, reported once
///
/// let typo = config(&[("SPRING_MYBROKER_HOTS", "broker")]).unwrap_err().to_string();
/// assert!(typo.contains("did you mean `SPRING_MYBROKER_HOST` (`spring.mybroker.host`)?"), "{typo}");
/// let wrong = config(&[("SPRING_MYBROKER_PORT", "high")]).unwrap_err();
/// assert!(matches!(wrong, ConfigError::InvalidValue { ref key, .. } if key == "spring.mybroker.port"));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RootSchema {
    prefix: String,
    kind: RootKind,
}

#[derive(Clone)]
enum RootKind {
    Props {
        descriptors: DescriptorsFn,
        check: fn(&Environment, &str) -> Result<(), ConfigError>,
    },
    Moved {
        target: fn(&str) -> String,
        note: String,
    },
}

impl std::fmt::Debug for RootSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootSchema")
            .field("prefix", &self.prefix)
            .field("moved", &matches!(self.kind, RootKind::Moved { .. }))
            .finish()
    }
}

fn check_root<R: Properties>(env: &Environment, prefix: &str) -> Result<(), ConfigError> {
    env.bind(prefix, &mut R::default())
}

impl RootSchema {
    /// The keys of `R` under `prefix` (any relaxed form; kept canonical).
    pub fn new<R: Properties>(prefix: &str) -> Self {
        RootSchema {
            prefix: canonical_key(prefix),
            kind: RootKind::Props {
                descriptors: R::descriptors,
                check: check_root::<R>,
            },
        }
    }

    /// Keys that look plausible but that nothing reads (a guide's mislabelled spelling): every
    /// key under `prefix` is an error naming the real key, `target(rest)` for the rest of the key
    /// below `prefix`, with `note` saying why.
    ///
    /// ```
    /// use stream_config::{Environment, ExtensionSchema, RootSchema, StreamConfig};
    /// stream_config::properties! { /// None.
    ///     pub struct Nothing {} }
    /// let schema = ExtensionSchema::new::<Nothing, Nothing, Nothing>("mybroker").with_root(
    ///     RootSchema::moved("spring.cloud.starter.mybroker", |rest| format!("spring.cloud.stream.mybroker.{rest}"), "not a key"),
    /// );
    /// let env = Environment::builder().map("t", [("spring.cloud.starter.mybroker.binder.x", "1")]).build()?;
    /// let err = StreamConfig::builder(env).extension(schema).build().unwrap_err().to_string();
    /// assert!(err.contains("did you mean `spring.cloud.stream.mybroker.binder.x`?"), "{err}");
    /// # Ok::<(), stream_config::ConfigError>(())
    /// ```
    pub fn moved(prefix: &str, target: fn(&str) -> String, note: impl Into<String>) -> Self {
        RootSchema {
            prefix: canonical_key(prefix),
            kind: RootKind::Moved {
                target,
                note: note.into(),
            },
        }
    }

    /// The prefix (canonical).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// For a [moved](Self::moved) prefix: why its keys are errors.
    pub fn moved_note(&self) -> Option<&str> {
        match &self.kind {
            RootKind::Props { .. } => None,
            RootKind::Moved { note, .. } => Some(note),
        }
    }

    /// Descriptors of its properties (none for a moved prefix), for generated docs.
    pub fn descriptors(&self) -> Vec<PropertyDescriptor> {
        match &self.kind {
            RootKind::Props { descriptors, .. } => descriptors(),
            RootKind::Moved { .. } => Vec::new(),
        }
    }

    pub(crate) fn node(&self) -> Node {
        match &self.kind {
            RootKind::Props { descriptors, .. } => Node::props(*descriptors),
            RootKind::Moved { target, note } => Node::Moved {
                target: *target,
                note: note.clone(),
            },
        }
    }

    /// Binds the properties once from `env` so a wrong type is reported at startup.
    pub(crate) fn check(&self, env: &Environment) -> Result<(), ConfigError> {
        match &self.kind {
            RootKind::Props { check, .. } => check(env, &self.prefix),
            RootKind::Moved { .. } => Ok(()),
        }
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
            roots: Vec::new(),
        }
    }

    /// Adds a top-level key tree the binder reads (`spring.<broker>.*`); see [`RootSchema`].
    pub fn with_root(mut self, root: RootSchema) -> Self {
        self.roots.retain(|r| r.prefix != root.prefix);
        self.roots.push(root);
        self
    }

    /// The top-level key trees registered with [`with_root`](Self::with_root).
    pub fn roots(&self) -> &[RootSchema] {
        &self.roots
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
