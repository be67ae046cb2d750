//! Binder factories keyed by type name, and the per-binder context they are created with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use stream_config::{Environment, ExtensionSchema};

use super::Binder;
use crate::error::BinderError;

/// What a binder is created with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BinderContext {
    /// The binder configuration's name (`spring.cloud.stream.binders.<name>`), or the type name
    /// for the implicit default binder.
    pub name: String,
    /// The binder's environment: the application's, overlaid by
    /// `spring.cloud.stream.binders.<name>.environment.*` (or only that, when
    /// `inherit-environment` is false).
    pub environment: Environment,
}

impl BinderContext {
    /// A context.
    pub fn new(name: impl Into<String>, environment: Environment) -> Self {
        Self {
            name: name.into(),
            environment,
        }
    }
}

/// Creates binders of one type. A binder crate exports one and the application registers it.
#[async_trait]
pub trait BinderFactory: Send + Sync + 'static {
    /// The type name (`rabbit`, `rocketmq`, `memory`).
    fn binder_type(&self) -> &'static str;
    /// The binder's extended property types, so `spring.cloud.stream.<type>.*` keys are
    /// validated and bound.
    fn extension_schema(&self) -> Option<ExtensionSchema>;
    /// Creates (and connects) a binder.
    async fn create(&self, context: BinderContext) -> Result<Arc<dyn Binder>, BinderError>;
}

/// Binder factories keyed by type name.
///
/// ```
/// use stream_core::binder::BinderRegistry;
/// use stream_core::memory::InMemoryBinderFactory;
/// let mut registry = BinderRegistry::new();
/// registry.register(InMemoryBinderFactory::default());
/// assert!(registry.get("memory").is_some());
/// assert_eq!(registry.types(), vec!["memory"]);
/// ```
#[derive(Clone, Default)]
pub struct BinderRegistry {
    factories: BTreeMap<&'static str, Arc<dyn BinderFactory>>,
}

impl BinderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a factory under its type name (replacing one of the same type).
    pub fn register(&mut self, factory: impl BinderFactory) -> &mut Self {
        self.factories
            .insert(factory.binder_type(), Arc::new(factory));
        self
    }

    /// Registers a shared factory.
    pub fn register_arc(&mut self, factory: Arc<dyn BinderFactory>) -> &mut Self {
        self.factories.insert(factory.binder_type(), factory);
        self
    }

    /// The factory for a type name.
    pub fn get(&self, binder_type: &str) -> Option<&Arc<dyn BinderFactory>> {
        self.factories.get(binder_type)
    }

    /// Registered type names, sorted.
    pub fn types(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Extension schemas of every registered binder.
    pub fn extension_schemas(&self) -> Vec<ExtensionSchema> {
        self.factories
            .values()
            .filter_map(|f| f.extension_schema())
            .collect()
    }
}

impl fmt::Debug for BinderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinderRegistry")
            .field("types", &self.types())
            .finish()
    }
}
