//! Health of a binder: whether it reaches its broker, and what it knows of it.

use std::collections::BTreeMap;
use std::fmt;

/// Whether a binder reaches its broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Connected.
    Up,
    /// Not connected yet, or reconnecting.
    Connecting,
    /// Unreachable or refusing.
    Down,
    /// The binder cannot tell.
    Unknown,
}

impl HealthStatus {
    /// Spring Boot's spelling (`UP`, `DOWN`, `UNKNOWN`); connecting reads `DOWN` there, since
    /// the broker is not usable yet.
    pub fn spring_status(self) -> &'static str {
        match self {
            HealthStatus::Up => "UP",
            HealthStatus::Connecting | HealthStatus::Down => "DOWN",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }

    /// Lower-case name (`up`, `connecting`, `down`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Connecting => "connecting",
            HealthStatus::Down => "down",
            HealthStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A binder's health: status plus details (broker address, version, last error).
///
/// ```
/// use stream_core::binder::{BinderHealth, HealthStatus};
/// let h = BinderHealth::up().with_detail("address", "127.0.0.1:5672").with_detail("version", "3.12.1");
/// assert_eq!(h.status, HealthStatus::Up);
/// assert_eq!(h.details["version"], "3.12.1");
/// let d = BinderHealth::down("connection refused");
/// assert_eq!(d.details["error"], "connection refused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BinderHealth {
    /// The status.
    pub status: HealthStatus,
    /// What the binder knows: `address`, `version`, `error`...
    pub details: BTreeMap<String, String>,
}

impl BinderHealth {
    /// A status without details.
    pub fn new(status: HealthStatus) -> Self {
        Self {
            status,
            details: BTreeMap::new(),
        }
    }

    /// Connected.
    pub fn up() -> Self {
        Self::new(HealthStatus::Up)
    }

    /// Connecting; `reason` says why it is not connected yet.
    pub fn connecting(reason: impl Into<String>) -> Self {
        Self::new(HealthStatus::Connecting).with_detail("error", reason)
    }

    /// Down, with the error.
    pub fn down(error: impl Into<String>) -> Self {
        Self::new(HealthStatus::Down).with_detail("error", error)
    }

    /// Unknown (the binder does not track its connection).
    pub fn unknown() -> Self {
        Self::new(HealthStatus::Unknown)
    }

    /// Adds a detail.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}
