//! Where a property value came from.

use std::fmt;

/// The source of one property value, shown in every error about it.
///
/// ```
/// use stream_config::Origin;
/// let o = Origin::File { name: "application.yml".into(), line: 12 };
/// assert_eq!(o.to_string(), "application.yml:12");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A line of a file (or of a named text source).
    File {
        /// The file as shown (relative to the working directory for the standard files).
        name: String,
        /// 1-based line number.
        line: usize,
    },
    /// An environment variable, by name.
    EnvVar(String),
    /// A command-line argument `--key=value`; holds the key as written (never the value).
    Argument(String),
    /// A built-in default given to [`EnvironmentBuilder::defaults`](crate::EnvironmentBuilder::defaults).
    Default,
    /// An explicit map source, by its name.
    Map(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { name, line } => write!(f, "{name}:{line}"),
            Origin::EnvVar(n) => write!(f, "environment variable {n}"),
            Origin::Argument(k) => write!(f, "command-line argument --{k}"),
            Origin::Default => f.write_str("built-in default"),
            Origin::Map(n) => write!(f, "<{n}>"),
        }
    }
}
