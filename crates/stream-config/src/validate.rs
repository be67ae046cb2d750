//! Validation of keys against the known properties.

use crate::environment::Environment;
use crate::error::{Notice, UnknownKey};
use crate::origin::Origin;
use crate::schema::{self, Known, Node};

/// What validation found: the unknown keys, and the keys accepted without effect.
pub(crate) struct Findings {
    pub(crate) unknown: Vec<UnknownKey>,
    pub(crate) notices: Vec<Notice>,
}

/// Every key of `env` that the tree does not know, with origin and suggestion (in the form of an
/// environment variable when the key came from one), and every key accepted without effect.
/// Keys outside the known roots (`spring.cloud.stream.*`, `spring.cloud.function.*`,
/// `management.*`, the binders' roots) are not checked.
pub(crate) fn check_keys(env: &Environment, root: &Node, binder_types: &[&str]) -> Findings {
    let mut unknown_keys = Vec::new();
    let mut notices = Vec::new();
    for (key, prop) in env.iter() {
        let unknown = match schema::validate(root, key, !prop.value().trim().is_empty()) {
            Ok(Known::Read) => continue,
            Ok(Known::NoEffect(reason)) => {
                notices.push(Notice {
                    key: key.to_owned(),
                    origin: prop.origin().to_string(),
                    reason,
                });
                continue;
            }
            Err(unknown) => unknown,
        };
        let note = unknown.note.clone().or_else(|| {
            unknown.parent.ends_with("spring.cloud.stream").then(|| {
                if binder_types.is_empty() {
                    "binder-specific keys `spring.cloud.stream.<binder-type>.*` need a registered binder extension; none is registered".to_owned()
                } else {
                    format!(
                        "binder-specific keys `spring.cloud.stream.<binder-type>.*` need a registered binder extension; registered binder types: {}",
                        binder_types.join(", ")
                    )
                }
            })
        });
        let suggestion = unknown.suggestion.filter(|s| s != key);
        let env_suggestion = match prop.origin() {
            Origin::EnvVar(_) => suggestion.as_deref().map(env_var_name),
            _ => None,
        };
        unknown_keys.push(UnknownKey {
            key: key.to_owned(),
            origin: prop.origin().to_string(),
            suggestion,
            note,
            env_suggestion,
        });
    }
    Findings {
        unknown: unknown_keys,
        notices,
    }
}

/// The environment variable that maps to a canonical key: upper case, `.`, `-` and list brackets
/// become `_` (`spring.cloud.stream.bindings.validate-in-0.group` ->
/// `SPRING_CLOUD_STREAM_BINDINGS_VALIDATE_IN_0_GROUP`).
///
/// ```
/// use stream_config::env_var_name;
/// assert_eq!(env_var_name("spring.mybroker.virtual-host"), "SPRING_MYBROKER_VIRTUAL_HOST");
/// assert_eq!(env_var_name("a.required-groups[1]"), "A_REQUIRED_GROUPS_1");
/// ```
pub fn env_var_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '.' | '-' | '[' => out.push('_'),
            ']' => {}
            c => out.extend(c.to_uppercase()),
        }
    }
    out
}
