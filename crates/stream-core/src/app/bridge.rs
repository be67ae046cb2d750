//! StreamBridge: sends to any destination, creating producers on demand.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Mutex;

use super::StreamError;
use super::shared::AppShared;
use crate::function::FunctionOutput;
use crate::message::Message;

use super::output::OutputBinding;

/// Sends messages to output bindings or to any destination (Spring's `StreamBridge`).
///
/// A name that is a bound output binding uses that binding. Any other name is a dynamic
/// destination: a producer is bound on first use (with the properties of a binding of that
/// name, if configured) and kept in an LRU of `spring.cloud.stream.dynamic-destination-cache-size`
/// producers; the least recently used one is closed when the cache is full.
#[derive(Clone)]
pub struct StreamBridge {
    pub(crate) shared: Arc<AppShared>,
    pub(crate) outputs: Arc<HashMap<String, Arc<OutputBinding>>>,
    pub(crate) dynamic: Arc<Mutex<Lru>>,
}

impl std::fmt::Debug for StreamBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBridge")
            .field("outputs", &self.outputs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A dynamic destination being bound: the callers asking for it meanwhile wait on this cell,
/// not on the cache's lock.
type Pending = Arc<tokio::sync::OnceCell<Arc<OutputBinding>>>;

/// Least-recently-used dynamic producers, and the destinations being bound.
pub(crate) struct Lru {
    capacity: usize,
    order: VecDeque<String>,
    entries: HashMap<String, Arc<OutputBinding>>,
    pending: HashMap<String, Pending>,
}

impl Lru {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            entries: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn get(&mut self, name: &str) -> Option<Arc<OutputBinding>> {
        let found = self.entries.get(name).cloned()?;
        if let Some(n) = self
            .order
            .iter()
            .position(|n| n == name)
            .and_then(|pos| self.order.remove(pos))
        {
            self.order.push_back(n);
        }
        Some(found)
    }

    /// Inserts, returning an evicted entry.
    fn insert(&mut self, name: String, output: Arc<OutputBinding>) -> Option<Arc<OutputBinding>> {
        let mut evicted = None;
        if self.entries.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            evicted = self.entries.remove(&oldest);
        }
        self.order.push_back(name.clone());
        self.entries.insert(name, output);
        evicted
    }

    pub(crate) fn drain(&mut self) -> Vec<Arc<OutputBinding>> {
        self.order.clear();
        self.entries.drain().map(|(_, v)| v).collect()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }
}

impl StreamBridge {
    /// Sends a payload (converted by the binding's content type, default `application/json`).
    pub async fn send<T: Serialize + Send + 'static>(
        &self,
        name: &str,
        payload: T,
    ) -> Result<(), StreamError> {
        self.send_output(name, payload).await
    }

    /// Sends a message, keeping its headers (`contentType` chooses the codec).
    pub async fn send_message<T: Serialize + Send + 'static>(
        &self,
        name: &str,
        message: Message<T>,
    ) -> Result<(), StreamError> {
        self.send_output(name, message).await
    }

    async fn send_output<O: FunctionOutput>(
        &self,
        name: &str,
        output: O,
    ) -> Result<(), StreamError> {
        let binding = self.output(name).await?;
        let Some(message) = output.into_message(&binding.conversion).map_err(|cause| {
            binding.meters.conversion_failed();
            StreamError::Conversion {
                destination: name.to_owned(),
                cause,
            }
        })?
        else {
            return Ok(());
        };
        self.send_bytes_via(&binding, message).await
    }

    /// Sends an already converted message.
    pub async fn send_bytes(&self, name: &str, message: Message<Bytes>) -> Result<(), StreamError> {
        let binding = self.output(name).await?;
        self.send_bytes_via(&binding, message).await
    }

    async fn send_bytes_via(
        &self,
        binding: &OutputBinding,
        message: Message<Bytes>,
    ) -> Result<(), StreamError> {
        binding
            .send(message)
            .await
            .map_err(|cause| StreamError::Send {
                destination: binding.destination.to_string(),
                cause,
            })
    }

    /// Names of the dynamic destinations currently cached, least recently used first.
    pub async fn dynamic_destinations(&self) -> Vec<String> {
        self.dynamic.lock().await.names()
    }

    /// The output for `name`: a bound output binding, a cached dynamic destination, or a new
    /// one. The cache's lock is held only to look up and insert, never while binding, so a
    /// destination whose broker does not answer delays only its own senders.
    async fn output(&self, name: &str) -> Result<Arc<OutputBinding>, StreamError> {
        if let Some(b) = self.outputs.get(name) {
            return Ok(Arc::clone(b));
        }
        let pending = {
            let mut lru = self.dynamic.lock().await;
            if let Some(b) = lru.get(name) {
                return Ok(b);
            }
            let allowed = &self.shared.config.stream().dynamic_destinations;
            if !allowed.is_empty() && !allowed.iter().any(|d| d == name) {
                return Err(StreamError::InvalidBinding {
                    binding: name.to_owned(),
                    reason: format!(
                        "`{name}` is not an output binding and not listed in `spring.cloud.stream.dynamic-destinations` ({})",
                        allowed.join(", ")
                    ),
                });
            }
            Arc::clone(lru.pending.entry(name.to_owned()).or_default())
        };
        let bound = pending
            .get_or_try_init(|| async {
                tracing::info!(destination = name, "binding dynamic destination");
                self.shared.bind_output(name).await
            })
            .await
            .map(Arc::clone);
        let mut lru = self.dynamic.lock().await;
        if lru
            .pending
            .get(name)
            .is_some_and(|p| Arc::ptr_eq(p, &pending))
        {
            lru.pending.remove(name);
        }
        let binding = bound?;
        if let Some(cached) = lru.get(name) {
            // Bound by an earlier caller of the same cell.
            return Ok(cached);
        }
        if let Some(evicted) = lru.insert(name.to_owned(), Arc::clone(&binding)) {
            tracing::info!(destination = %evicted.destination, "dynamic destination evicted from cache; closing its producer");
            tokio::spawn(async move {
                if let Err(e) = evicted.producer.close().await {
                    tracing::warn!(destination = %evicted.destination, error = %e, "closing evicted producer failed");
                }
            });
        }
        Ok(binding)
    }
}
