//! The client-owned runtime ("client domain") each group of RocketMQ clients runs on.
//!
//! rocketmq-client-rust never uses the caller's tokio runtime: the application owns a
//! `RuntimeOwner` (a separate multi-thread tokio runtime plus bounded blocking lanes) and a
//! `ClientRuntime` derived from it; synchronous listeners run on the owner's `metadata-io`
//! blocking lane. A domain bundles the two and shuts them down in the documented order
//! (clients, then the client runtime, then the owner, in the background so it is safe from
//! async code).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig, TelemetryHandle};
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeConfig, RuntimeOwner};
use stream_core::{BinderError, BinderErrorKind};

/// How a domain's runtime is sized.
#[derive(Clone, Debug)]
pub(crate) struct DomainSize {
    /// Tokio worker threads of the owner runtime.
    pub(crate) workers: usize,
    /// Listener calls that may block at once on the metadata-io lane.
    pub(crate) lane_concurrency: usize,
    /// Listener calls that may wait for a lane slot.
    pub(crate) lane_queue: usize,
    /// Longest one listener call may run before the client abandons it.
    pub(crate) task_timeout: Duration,
}

impl DomainSize {
    /// For producers and admin work: small.
    pub(crate) fn producers() -> Self {
        Self {
            workers: 2,
            lane_concurrency: 4,
            lane_queue: 64,
            task_timeout: Duration::from_secs(60),
        }
    }

    /// For one push consumer with `threads` consume threads: a lane slot per consume thread
    /// plus room for the client's own metadata work, so admission never rejects a listener.
    pub(crate) fn consumer(threads: usize, consume_timeout: Duration) -> Self {
        let threads = threads.max(1);
        Self {
            workers: 2,
            lane_concurrency: threads + 4,
            lane_queue: threads * 4 + 64,
            task_timeout: consume_timeout,
        }
    }
}

/// A `RuntimeOwner` + `ClientRuntime` pair.
pub(crate) struct ClientDomain {
    name: String,
    client: Arc<ClientRuntime>,
    owner: Mutex<Option<RuntimeOwner>>,
}

impl std::fmt::Debug for ClientDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDomain")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn runtime_error(name: &str, what: impl std::fmt::Display) -> BinderError {
    BinderError::new(
        BinderErrorKind::Unexpected,
        format!("cannot create the RocketMQ client runtime `{name}`: {what}"),
    )
}

impl ClientDomain {
    /// Starts a domain (a tokio runtime with `size.workers` threads).
    pub(crate) fn new(name: &str, size: &DomainSize) -> Result<Self, BinderError> {
        let mut config = RuntimeConfig::for_parallelism(name, size.workers.max(1));
        config.blocking_lane_policies.metadata_io = BlockingPoolPolicy {
            name: format!("{name}.metadata-io"),
            max_concurrency: size.lane_concurrency.max(1),
            max_queue_depth: size.lane_queue.max(1),
            queue_timeout: Duration::from_secs(300),
            task_timeout: size.task_timeout,
            warn_after: size.task_timeout.min(Duration::from_secs(60)),
        };
        let global = (size.lane_concurrency + 16).clamp(8, 512);
        let config = config
            .with_max_blocking_threads(global)
            .map_err(|e| runtime_error(name, format!("{e:?}")))?;
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| runtime_error(name, format!("{e:?}")))?
            .build()
            .map_err(|e| runtime_error(name, e))?;
        let client = ClientRuntime::try_new(
            owner.root_context().component(
                rocketmq_runtime::ScopeId::try_new(name.to_owned())
                    .map_err(|e| runtime_error(name, format!("{e:?}")))?,
            ),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .map_err(|e| runtime_error(name, e))?;
        Ok(Self {
            name: name.to_owned(),
            client,
            owner: Mutex::new(Some(owner)),
        })
    }

    /// The client runtime every builder takes.
    pub(crate) fn client(&self) -> Arc<ClientRuntime> {
        Arc::clone(&self.client)
    }

    /// Shuts the client runtime down, then the owner (in the background). Call after the
    /// domain's clients have shut down. Idempotent.
    pub(crate) async fn shutdown(&self) {
        let _report = self.client.shutdown().await;
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(owner) = owner {
            let _report = owner.shutdown_background();
        }
        tracing::debug!(domain = %self.name, "RocketMQ client runtime stopped");
    }
}

impl Drop for ClientDomain {
    fn drop(&mut self) {
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(owner) = owner {
            let _report = owner.shutdown_background();
        }
    }
}
