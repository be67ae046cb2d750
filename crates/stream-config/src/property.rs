//! One property of an environment: value, key as written, origin.

use std::fmt;

use crate::origin::Origin;
use crate::secret;

/// One property of an [`Environment`](crate::Environment): its value (placeholders resolved), the key as written and
/// where it came from. `Debug` redacts sensitive values.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    pub(crate) raw_key: String,
    pub(crate) value: String,
    pub(crate) origin: Origin,
    pub(crate) sensitive: bool,
    pub(crate) rank: usize,
}

impl Property {
    /// The key as written in its source (for environment variables: the mapped dotted key).
    pub fn raw_key(&self) -> &str {
        &self.raw_key
    }
    /// The value, placeholders resolved.
    pub fn value(&self) -> &str {
        &self.value
    }
    /// Where the value came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    /// Whether the value is secret (by its key, see [`is_sensitive_key`](crate::is_sensitive_key)).
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
    /// The value as it may be shown (redacted if sensitive, URI credentials masked).
    pub fn display_value(&self) -> String {
        if self.sensitive {
            secret::REDACTED.to_owned()
        } else {
            secret::mask_uri_credentials(&self.value)
        }
    }
    /// Precedence of the source (higher wins).
    pub(crate) fn rank(&self) -> usize {
        self.rank
    }
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.display_value(), self.origin)
    }
}
