//! A handle on a running application for admin code: list the bindings, start, stop, pause and
//! resume them, read the health of the binders.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::StreamError;
use super::shared::AppShared;
use crate::binder::{BinderHealth, Binding, BindingState, BindingStatus, HealthStatus};

/// What can be asked of a binding (Spring's `POST /actuator/bindings/{name}` states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BindingCommand {
    /// Start (or restart) it.
    Start,
    /// Stop it; in-flight deliveries settle first.
    Stop,
    /// Pause consuming.
    Pause,
    /// Resume a paused binding.
    Resume,
}

impl std::str::FromStr for BindingCommand {
    type Err = String;

    /// Spring's spellings: `STARTED`, `STOPPED`, `PAUSED`, `RESUMED` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "STARTED" | "START" => Ok(Self::Start),
            "STOPPED" | "STOP" => Ok(Self::Stop),
            "PAUSED" | "PAUSE" => Ok(Self::Pause),
            "RESUMED" | "RESUME" => Ok(Self::Resume),
            other => Err(format!(
                "unknown binding state `{other}`; accepted: STARTED, STOPPED, PAUSED, RESUMED"
            )),
        }
    }
}

/// The application's health: every binder's and every binding's, and the overall status:
/// `Down` as soon as a binder is down or connecting or a binding has failed, `Unknown` when a
/// binder cannot tell, else `Up`. A binding an operator stopped or paused is not a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppHealth {
    /// Overall status.
    pub status: HealthStatus,
    /// Each binder created so far, by configuration name.
    pub binders: BTreeMap<String, BinderHealth>,
    /// Each binding (a binding with several destinations or partitions appears once per
    /// consumer).
    pub bindings: Vec<BindingHealth>,
}

/// One binding's part of [`AppHealth`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindingHealth {
    /// Binding name.
    pub name: String,
    /// Its destination.
    pub destination: String,
    /// Whether it is an input binding.
    pub input: bool,
    /// State and reason.
    pub status: BindingStatus,
}

/// The worse of two statuses: down (or connecting), then unknown, then up.
fn worse(a: HealthStatus, b: HealthStatus) -> HealthStatus {
    match (a, b) {
        (HealthStatus::Down, _)
        | (_, HealthStatus::Down)
        | (HealthStatus::Connecting, _)
        | (_, HealthStatus::Connecting) => HealthStatus::Down,
        (HealthStatus::Unknown, _) | (_, HealthStatus::Unknown) => HealthStatus::Unknown,
        _ => HealthStatus::Up,
    }
}

impl AppHealth {
    /// The status of the binders alone.
    pub fn binders_status(&self) -> HealthStatus {
        self.binders
            .values()
            .map(|h| h.status)
            .fold(HealthStatus::Up, worse)
    }

    /// The status of the bindings alone: down when one has failed.
    pub fn bindings_status(&self) -> HealthStatus {
        if self
            .bindings
            .iter()
            .any(|b| b.status.state == BindingState::Failed)
        {
            HealthStatus::Down
        } else {
            HealthStatus::Up
        }
    }
}

/// A handle on a running application, cheap to clone and usable while the application runs
/// (`run_until_signal` consumes the application; take a handle first).
///
/// ```
/// use stream_core::app::BindingCommand;
/// use stream_core::binder::BindingState;
/// use stream_core::memory::InMemoryBinderFactory;
/// use stream_core::{FunctionError, StreamApp};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let app = StreamApp::builder()
///     .environment(stream_core::stream_config::Environment::empty())
///     .binder(InMemoryBinderFactory::default())
///     .consumer("log", |s: String| async move { Ok::<_, FunctionError>(()) })
///     .build()
///     .await
///     .unwrap();
/// let handle = app.handle();
/// handle.command("log-in-0", BindingCommand::Pause).await.unwrap();
/// assert_eq!(handle.binding("log-in-0")[0].state(), BindingState::Paused);
/// assert_eq!(handle.health().await.status, stream_core::binder::HealthStatus::Up);
/// app.shutdown().await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct AppHandle {
    pub(crate) bindings: Arc<Vec<Arc<dyn Binding>>>,
    pub(crate) shared: Arc<AppShared>,
}

impl std::fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHandle")
            .field(
                "bindings",
                &self.bindings.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AppHandle {
    /// Every binding: inputs first (a binding with several destinations or partitions appears
    /// once per consumer), then outputs.
    pub fn bindings(&self) -> Vec<Arc<dyn Binding>> {
        self.bindings.iter().cloned().collect()
    }

    /// The bindings with this name (empty when there is none).
    pub fn binding(&self, name: &str) -> Vec<Arc<dyn Binding>> {
        self.bindings
            .iter()
            .filter(|b| b.name() == name)
            .cloned()
            .collect()
    }

    /// Applies a command to every binding with this name.
    pub async fn command(&self, name: &str, command: BindingCommand) -> Result<(), StreamError> {
        let targets = self.binding(name);
        if targets.is_empty() {
            return Err(StreamError::NoSuchBinding(name.to_owned()));
        }
        for b in targets {
            let result = match command {
                BindingCommand::Start => b.start().await,
                BindingCommand::Stop => b.stop().await,
                BindingCommand::Pause => b.pause().await,
                BindingCommand::Resume => b.resume().await,
            };
            result.map_err(|cause| StreamError::Binder {
                binding: name.to_owned(),
                cause,
            })?;
        }
        tracing::info!(binding = name, ?command, "binding state changed on request");
        Ok(())
    }

    /// The health of every binder created so far.
    pub async fn health(&self) -> AppHealth {
        let mut binders = BTreeMap::new();
        for (name, binder) in self.shared.binders.all().await {
            binders.insert(name, binder.health().await);
        }
        let bindings = self
            .bindings
            .iter()
            .map(|b| BindingHealth {
                name: b.name().to_owned(),
                destination: b.destination().to_owned(),
                input: b.is_input(),
                status: b.status(),
            })
            .collect();
        let mut health = AppHealth {
            status: HealthStatus::Up,
            binders,
            bindings,
        };
        health.status = worse(health.binders_status(), health.bindings_status());
        health
    }
}
