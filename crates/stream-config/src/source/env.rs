//! Environment variables, mapped to keys as Spring Boot does, but schema-aware.
//!
//! `SPRING_CLOUD_STREAM_BINDINGS_INPUT_CONSUMER_MAX_ATTEMPTS` and `..._MAXATTEMPTS` both become
//! `spring.cloud.stream.bindings.input.consumer.max-attempts`: the name is split on `_` and the
//! words are matched against the known keys (dashes removed, longest match first); free segments
//! (binding and binder names, map keys) absorb as few words as needed for the rest to match a known
//! key, so `..._BINDINGS_UPPERCASE_IN_0_DESTINATION` is binding `uppercase-in-0`. Names that fit no
//! known key (a misspelt variable) are matched as far as the known keys go and the unknown rest
//! becomes one segment (`..._BINDINGS_VALIDATE_IN_0_GRUOP` -> `...bindings.validate-in-0.gruop`),
//! so validation reports them with a suggestion, shown in the variable's own form.
//!
//! Only variables whose first word is one of [`MAPPED_PREFIXES`] become properties (all others
//! would only clutter the key space); every variable stays available to `${NAME}` placeholders.

use super::Entry;
use crate::origin::Origin;
use crate::schema::{self, Node};

/// First words of the environment variables that become properties (`SPRING_...`, `SERVER_...`,
/// `LOGGING_...`, `MANAGEMENT_...`).
pub const MAPPED_PREFIXES: &[&str] = &["spring", "server", "logging", "management"];

/// Maps the variables that fall under [`MAPPED_PREFIXES`] to entries.
pub(crate) fn map(vars: &[(String, String)], root: &Node) -> Vec<Entry> {
    vars.iter()
        .filter_map(|(name, value)| {
            let words: Vec<String> = name
                .split('_')
                .filter(|w| !w.is_empty())
                .map(|w| w.to_ascii_lowercase())
                .collect();
            if !words
                .first()
                .is_some_and(|w| MAPPED_PREFIXES.contains(&w.as_str()))
            {
                return None;
            }
            let key = schema::map_env_words(root, &words);
            Some(Entry::new(key, value.clone(), Origin::EnvVar(name.clone())))
        })
        .collect()
}
