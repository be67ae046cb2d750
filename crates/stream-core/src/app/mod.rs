//! The application: functions bound to destinations through binders.

#[cfg(feature = "admin")]
pub mod admin;
mod binders;
mod bridge;
mod build;
mod builder;
mod error;
mod handle;
mod invoke;
mod output;
mod pollable;
mod shared;
mod shutdown;
mod streams;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stream_config::StreamConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bridge::StreamBridge;
pub use builder::StreamAppBuilder;
pub use error::StreamError;
pub use handle::{AppHandle, AppHealth, BindingCommand, BindingHealth};
pub use pollable::PollableConsumer;

use self::output::OutputBinding;
use self::shared::AppShared;
use crate::binder::{Binding, BindingState};

/// Default bound on graceful shutdown (Spring's `spring.lifecycle.timeout-per-shutdown-phase`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running application.
pub struct StreamApp {
    pub(crate) shared: Arc<AppShared>,
    pub(crate) consumers: Vec<Arc<dyn Binding>>,
    pub(crate) outputs: Arc<HashMap<String, Arc<OutputBinding>>>,
    pub(crate) bridge: StreamBridge,
    pub(crate) suppliers: Vec<JoinHandle<()>>,
    pub(crate) supplier_stop: watch::Sender<bool>,
    pub(crate) streams: Vec<streams::StreamRunner>,
    pub(crate) pollables: HashMap<String, Arc<PollableConsumer>>,
    pub(crate) shutdown_timeout: Duration,
    #[cfg(feature = "admin")]
    pub(crate) admin: Option<crate::app::admin::AdminServer>,
}

impl std::fmt::Debug for StreamApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamApp")
            .field("bindings", &self.bindings())
            .finish_non_exhaustive()
    }
}

impl StreamApp {
    /// A builder.
    pub fn builder() -> StreamAppBuilder {
        StreamAppBuilder::new()
    }

    /// Sends to bindings and destinations.
    pub fn bridge(&self) -> StreamBridge {
        self.bridge.clone()
    }

    /// The resolved configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.shared.config
    }

    /// Consumer bindings and their states, then output bindings.
    pub fn bindings(&self) -> Vec<(String, BindingState)> {
        self.consumers
            .iter()
            .map(|b| (b.name().to_owned(), b.state()))
            .chain(self.outputs.iter().map(|(k, o)| (k.clone(), o.state())))
            .collect()
    }

    /// The consumer bindings with this name (a binding with several destinations has several).
    pub fn consumer_bindings(&self, name: &str) -> Vec<&dyn Binding> {
        self.consumers
            .iter()
            .filter(|b| b.name() == name)
            .map(|b| &**b)
            .collect()
    }

    /// A handle for admin code: the bindings (inputs and outputs), their state changes, the
    /// binders' health. It stays usable while the application runs.
    pub fn handle(&self) -> AppHandle {
        let mut all: Vec<Arc<dyn Binding>> = self.consumers.clone();
        all.extend(
            self.outputs
                .values()
                .map(|o| Arc::clone(o) as Arc<dyn Binding>),
        );
        AppHandle {
            bindings: Arc::new(all),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Where the admin endpoint listens (feature `admin`, when `management.server.port` is
    /// set; with port `0` this is the port picked).
    #[cfg(feature = "admin")]
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.admin
            .as_ref()
            .map(crate::app::admin::AdminServer::address)
    }

    /// A pollable consumer configured in `spring.cloud.stream.pollable-source`.
    pub fn pollable(&self, name: &str) -> Option<Arc<PollableConsumer>> {
        self.pollables.get(name).cloned()
    }

    /// Stops suppliers, stops consumers (letting in-flight messages settle, bounded by the
    /// shutdown timeout), flushes and closes producers, then closes the binders.
    pub async fn shutdown(self) -> Result<(), StreamError> {
        shutdown::graceful(self).await
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), StreamError> {
        shutdown::wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await
    }
}
