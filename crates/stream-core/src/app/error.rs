//! Errors of building and running an application.

use stream_config::ConfigError;

use crate::error::{BinderError, ConversionError};
use crate::function::{DefinitionError, ResolveError};
use crate::partition::PartitionError;

impl From<ConfigError> for StreamError {
    fn from(e: ConfigError) -> Self {
        StreamError::Config(Box::new(e))
    }
}

/// Why an application could not bind or run.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Configuration is invalid.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The function definition is malformed.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The function definition names something unknown or composes badly.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Several functions are registered and none is selected.
    #[error(
        "several functions are registered ({names}) and `spring.cloud.function.definition` is not set; set it to the ones to bind, separated by `;`"
    )]
    NoDefinition {
        /// Registered names.
        names: String,
    },
    /// A producer's partitioning settings are invalid (an expression that does not parse
    /// names the key and column).
    #[error("binding `{binding}`: {cause}")]
    Partition {
        /// Binding name.
        binding: String,
        /// Why (part of the message).
        cause: Box<PartitionError>,
    },
    /// A binding is configured in a way that cannot work.
    #[error("binding `{binding}`: {reason}")]
    InvalidBinding {
        /// Binding name.
        binding: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A binder failed to bind.
    #[error("binding `{binding}`: {cause}")]
    Binder {
        /// Binding name.
        binding: String,
        /// The binder's error (part of the message).
        cause: BinderError,
    },
    /// No binder is registered.
    #[error(
        "no binder is registered; add one to the application (e.g. the in-memory binder or a broker binder crate)"
    )]
    NoBinder,
    /// The binding names a binder that is neither configured nor registered.
    #[error(
        "binding `{binding}` uses binder `{binder}`, which is neither configured under `spring.cloud.stream.binders` (configured: [{configured}]) nor a registered binder type (registered: [{registered}])"
    )]
    UnknownBinder {
        /// Binding name.
        binding: String,
        /// Requested binder.
        binder: String,
        /// Configured binder names.
        configured: String,
        /// Registered types.
        registered: String,
    },
    /// A configured binder's type is not registered.
    #[error(
        "binder `{binder}` has type `{binder_type}`, which is not registered (registered: [{registered}]); enable that binder's crate or feature"
    )]
    UnknownBinderType {
        /// Binder configuration name.
        binder: String,
        /// Its type.
        binder_type: String,
        /// Registered types.
        registered: String,
    },
    /// Several binders could serve a binding.
    #[error(
        "binding `{binding}` could use any of the binders [{candidates}]; set `spring.cloud.stream.default-binder` or `spring.cloud.stream.bindings.{binding}.binder`"
    )]
    AmbiguousBinder {
        /// Binding name.
        binding: String,
        /// Candidates.
        candidates: String,
    },
    /// Sending failed.
    #[error("send to `{destination}` failed: {cause}")]
    Send {
        /// Destination or binding.
        destination: String,
        /// Why (part of the message).
        cause: BinderError,
    },
    /// A payload could not be converted for sending.
    #[error("send to `{destination}`: {cause}")]
    Conversion {
        /// Destination or binding.
        destination: String,
        /// Why (part of the message).
        cause: ConversionError,
    },
    /// The admin endpoint cannot listen where `management.server.port` and
    /// `management.server.address` say.
    #[error(
        "the admin endpoint (`management.server.port`, `management.server.address`) cannot listen on {address}: {cause}; choose a free port, 0 for any, or -1 to turn it off"
    )]
    Admin {
        /// The address asked for.
        address: String,
        /// Why (part of the message).
        cause: std::io::Error,
    },
    /// No binding with that name.
    #[error("no binding named `{0}`")]
    NoSuchBinding(String),
    /// Shutdown did not complete in time or failed.
    #[error("shutdown: {0}")]
    Shutdown(String),
}

/// Reads as the message and its causes, each once: what `fn main() -> Result<(), StreamError>`
/// prints when the application cannot start.
impl std::fmt::Debug for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::error::ErrorChain(self))
    }
}
