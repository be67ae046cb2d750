//! Helpers shared by the end-to-end tests.

/// The workspace README, compiled here so its example stays true.
#[doc = include_str!("../../README.md")]
pub mod readme {}

/// docs/functions.md, compiled here so its examples stay true.
#[doc = include_str!("../../docs/functions.md")]
pub mod functions_doc {}

use stream_config::Environment;

/// An environment from `key=value` pairs, as a test's own configuration.
pub fn env(pairs: &[(&str, &str)]) -> Environment {
    match Environment::builder()
        .map(
            "test",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .build()
    {
        Ok(e) => e,
        Err(e) => panic!("test configuration is invalid: {e}"),
    }
}
