//! Secrets: the [`Secret`] type and the redaction rules for sensitive keys and URI credentials.

use std::fmt;

/// What a redacted value is shown as.
pub const REDACTED: &str = "******";

/// A string that never shows in `Debug`/`Display` output, logs or errors.
///
/// ```
/// use stream_config::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(s.expose(), "hunter2");
/// assert!(!format!("{s:?} {s}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value itself; use it only where it is needed (e.g. to log in).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

const SENSITIVE_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "access-key",
    "accesskey",
    "private-key",
    "api-key",
    "sasl-jaas-config",
];

/// Whether a key (any relaxed form) names a sensitive value: its last segment contains `password`,
/// `secret` (also `secret-key`), `token`, `credential(s)`, `access-key`, `private-key` or `api-key`.
///
/// ```
/// use stream_config::is_sensitive_key;
/// assert!(is_sensitive_key("spring.example.password"));
/// assert!(is_sensitive_key("x.secretKey"));
/// assert!(!is_sensitive_key("x.partition-key-expression"));
/// ```
pub fn is_sensitive_key(key: &str) -> bool {
    let canonical = crate::key::canonical_key(key);
    let last = canonical.rsplit('.').next().unwrap_or(&canonical);
    SENSITIVE_WORDS.iter().any(|w| last.contains(w))
}

/// Masks the password of credentials in URIs inside `value`: `amqp://user:pass@host` ->
/// `amqp://user:******@host`.
///
/// ```
/// use stream_config::mask_uri_credentials;
/// assert_eq!(mask_uri_credentials("amqp://guest:pw@h:5672"), "amqp://guest:******@h:5672");
/// assert_eq!(mask_uri_credentials("plain"), "plain");
/// ```
pub fn mask_uri_credentials(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '?', '#', ' ', ',', ';'])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// The value as it may be shown: [`REDACTED`] for a sensitive key, else with URI credentials masked.
pub fn redact(key: &str, value: &str) -> String {
    if is_sensitive_key(key) {
        REDACTED.to_owned()
    } else {
        mask_uri_credentials(value)
    }
}
