//! Which binder serves a binding, and the binders created so far.

use std::collections::HashMap;
use std::sync::Arc;

use stream_config::StreamConfig;
use tokio::sync::Mutex;

use super::StreamError;
use crate::binder::BinderRegistry;
use crate::binder::erased::DynBinder;

/// Binders by configuration name, created on first use.
pub(crate) struct Binders {
    registry: BinderRegistry,
    config: Arc<StreamConfig>,
    created: Mutex<HashMap<String, Arc<dyn DynBinder>>>,
}

impl Binders {
    pub(crate) fn new(registry: BinderRegistry, config: Arc<StreamConfig>) -> Self {
        Self {
            registry,
            config,
            created: Mutex::new(HashMap::new()),
        }
    }

    /// The binder for a binding whose `binder` property is `requested`.
    pub(crate) async fn resolve(
        &self,
        binding: &str,
        requested: Option<&str>,
    ) -> Result<Arc<dyn DynBinder>, StreamError> {
        let name = self.binder_name(binding, requested)?;
        let mut created = self.created.lock().await;
        if let Some(b) = created.get(&name) {
            return Ok(Arc::clone(b));
        }
        let (binder_type, environment) = match self.config.binders().get(&name) {
            Some(cfg) => (
                cfg.binder_type.clone(),
                self.config.binder_environment(&name),
            ),
            None => (name.clone(), self.config.environment().clone()),
        };
        let factory =
            self.registry
                .get(&binder_type)
                .ok_or_else(|| StreamError::UnknownBinderType {
                    binder: name.clone(),
                    binder_type: binder_type.clone(),
                    registered: self.registry.types().join(", "),
                })?;
        tracing::info!(binder = %name, binder_type = %binder_type, "creating binder");
        let binder = factory
            .inner
            .create(name.clone(), environment)
            .await
            .map_err(|cause| StreamError::Binder {
                binding: binding.to_owned(),
                cause,
            })?;
        created.insert(name, Arc::clone(&binder));
        Ok(binder)
    }

    fn binder_name(&self, binding: &str, requested: Option<&str>) -> Result<String, StreamError> {
        let requested = requested
            .map(str::to_owned)
            .or_else(|| self.config.stream().default_binder.clone());
        if let Some(name) = requested {
            if self.config.binders().contains_key(&name) || self.registry.get(&name).is_some() {
                return Ok(name);
            }
            return Err(StreamError::UnknownBinder {
                binding: binding.to_owned(),
                binder: name,
                configured: self
                    .config
                    .binders()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                registered: self.registry.types().join(", "),
            });
        }
        let candidates: Vec<&String> = self
            .config
            .binders()
            .iter()
            .filter(|(_, b)| b.default_candidate)
            .map(|(n, _)| n)
            .collect();
        match candidates.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                return Err(StreamError::AmbiguousBinder {
                    binding: binding.to_owned(),
                    candidates: many
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        match self.registry.types().as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(StreamError::NoBinder),
            many => Err(StreamError::AmbiguousBinder {
                binding: binding.to_owned(),
                candidates: many.join(", "),
            }),
        }
    }

    /// Every binder created so far.
    pub(crate) async fn all(&self) -> Vec<(String, Arc<dyn DynBinder>)> {
        self.created
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}
