//! Validation of keys against the known properties.

use crate::environment::Environment;
use crate::error::UnknownKey;
use crate::schema::{self, Node};

/// Every key of `env` that the tree does not know, with origin and suggestion. Keys outside
/// `spring.cloud.stream.*` / `spring.cloud.function.*` (and a binder's `environment.*` copies of
/// them) are not checked.
pub(crate) fn unknown_keys(
    env: &Environment,
    root: &Node,
    binder_types: &[&str],
) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    for (key, prop) in env.iter() {
        let Err(unknown) = schema::validate(root, key, !prop.value().trim().is_empty()) else {
            continue;
        };
        let note = unknown.parent.ends_with("spring.cloud.stream").then(|| {
            if binder_types.is_empty() {
                "binder-specific keys `spring.cloud.stream.<binder-type>.*` need a registered binder extension; none is registered".to_owned()
            } else {
                format!(
                    "binder-specific keys `spring.cloud.stream.<binder-type>.*` need a registered binder extension; registered binder types: {}",
                    binder_types.join(", ")
                )
            }
        });
        out.push(UnknownKey {
            key: key.to_owned(),
            origin: prop.origin().to_string(),
            suggestion: unknown.suggestion.filter(|s| s != key),
            note,
        });
    }
    out
}
