//! Binder factories keyed by type name.

use std::collections::BTreeMap;
use std::fmt;

use stream_config::ExtensionSchema;

use super::BinderFactory;
use super::erased::AnyBinderFactory;

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
    factories: BTreeMap<&'static str, AnyBinderFactory>,
}

impl BinderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a factory under its type name (replacing one of the same type).
    pub fn register(&mut self, factory: impl BinderFactory) -> &mut Self {
        self.register_any(AnyBinderFactory::new(factory))
    }

    /// Registers an erased (shared) factory.
    pub fn register_any(&mut self, factory: AnyBinderFactory) -> &mut Self {
        self.factories.insert(factory.binder_type(), factory);
        self
    }

    /// The factory for a type name.
    pub fn get(&self, binder_type: &str) -> Option<&AnyBinderFactory> {
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
            .map(AnyBinderFactory::extension_schema)
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
