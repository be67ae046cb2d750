//! Configuration errors. Every message names the key, the (redacted) value, where it came from and
//! how to fix it.

use std::fmt;
use std::path::PathBuf;

/// An error while loading, resolving, validating or binding configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read configuration file {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (part of the message).
        cause: std::io::Error,
    },
    /// A configuration file or text is malformed.
    #[error("cannot parse {origin}: {message}")]
    Parse {
        /// File and line (`application.yml:3`).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A value does not fit the property's type.
    #[error(
        "invalid value for `{key}` = \"{value}\" ({origin}): expected {expected}{}; fix the value or remove the key to use the default",
        detail_suffix(detail)
    )]
    InvalidValue {
        /// Canonical key.
        key: String,
        /// The value as written, redacted if sensitive.
        value: String,
        /// The expected type (`an integer (u32)`).
        expected: String,
        /// Where the value came from.
        origin: String,
        /// The parser's explanation, if any.
        detail: Option<String>,
    },
    /// Keys that no property matches (all of them at once).
    #[error("{0}")]
    UnknownKeys(UnknownKeys),
    /// A placeholder refers to itself through a chain of keys.
    #[error(
        "circular placeholder reference {chain} in `{key}` ({origin}); break the cycle or give a default with `${{key:default}}`"
    )]
    PlaceholderCycle {
        /// The key whose value was being resolved.
        key: String,
        /// The chain, `a -> b -> a`.
        chain: String,
        /// Where that key's value came from.
        origin: String,
    },
    /// A placeholder names no property and no environment variable, and has no default.
    #[error(
        "could not resolve placeholder `${{{placeholder}}}` in the value of `{key}` ({origin}); define `{placeholder}` or write `${{{placeholder}:default}}`"
    )]
    UnresolvedPlaceholder {
        /// The placeholder's key.
        placeholder: String,
        /// The key whose value holds the placeholder.
        key: String,
        /// Where that value came from.
        origin: String,
    },
    /// A property combination that cannot work.
    #[error("invalid configuration `{key}` ({origin}): {message}")]
    Invalid {
        /// Canonical key.
        key: String,
        /// Where the value came from.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// One key that matches no known property.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownKey {
    /// Canonical key.
    pub key: String,
    /// Where it came from.
    pub origin: String,
    /// The closest valid key, if one is close.
    pub suggestion: Option<String>,
    /// Extra advice (e.g. which binder types are registered).
    pub note: Option<String>,
    /// The suggestion as an environment variable, when the key came from one
    /// (`SPRING_CLOUD_STREAM_BINDINGS_VALIDATE_IN_0_GROUP`).
    pub env_suggestion: Option<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown key `{}` ({})", self.key, self.origin)?;
        match (&self.env_suggestion, &self.suggestion) {
            (Some(var), Some(s)) => write!(f, ": did you mean `{var}` (`{s}`)?")?,
            (None, Some(s)) => write!(f, ": did you mean `{s}`?")?,
            _ => {}
        }
        if let Some(n) = &self.note {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// All unknown keys found by validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnknownKeys(pub Vec<UnknownKey>);

impl fmt::Display for UnknownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} unknown configuration key{} (fix the spelling or remove the key):",
            if n == 1 { "" } else { "s" }
        )?;
        for k in &self.0 {
            write!(f, "\n  - {k}")?;
        }
        Ok(())
    }
}

/// A key that is accepted, as Spring accepts it, but has no effect here. The runtime logs each
/// one once at startup ([`StreamConfig::notices`](crate::StreamConfig::notices)).
///
/// ```
/// use stream_config::{Environment, StreamConfig};
/// let env = Environment::builder()
///     .env_vars([("SPRING_CLOUD_STREAM_METRICS_KEY", "app")])
///     .build()?;
/// let config = StreamConfig::builder(env).build()?;
/// let notice = &config.notices()[0];
/// assert_eq!(notice.key, "spring.cloud.stream.metrics.key");
/// assert_eq!(notice.origin, "environment variable SPRING_CLOUD_STREAM_METRICS_KEY");
/// assert!(notice.to_string().contains("has no effect here"));
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notice {
    /// Canonical key.
    pub key: String,
    /// Where it came from.
    pub origin: String,
    /// Why it has no effect (the property's doc line).
    pub reason: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ({}) is accepted for compatibility with Spring but has no effect here: {}",
            self.key, self.origin, self.reason
        )
    }
}
