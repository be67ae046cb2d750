//! Configuration sources, each parsed to flat entries that keep their origin.

pub(crate) mod args;
pub(crate) mod env;
pub(crate) mod properties;
pub(crate) mod yaml;

use crate::origin::Origin;

/// One flat property from a source.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key as written (dotted).
    pub(crate) raw_key: String,
    /// The value as written.
    pub(crate) value: String,
    /// Where it came from.
    pub(crate) origin: Origin,
}

impl Entry {
    pub(crate) fn new(
        raw_key: impl Into<String>,
        value: impl Into<String>,
        origin: Origin,
    ) -> Self {
        Entry {
            raw_key: raw_key.into(),
            value: value.into(),
            origin,
        }
    }
}
