//! Parsed content types.

use std::fmt;
use std::str::FromStr;

use crate::error::ConversionError;

/// A parsed MIME type: `type/subtype` plus parameters, compared case-insensitively.
///
/// ```
/// use stream_core::convert::MimeType;
/// let m: MimeType = "Application/JSON; charset=UTF-8".parse().unwrap();
/// assert_eq!(m.essence(), "application/json");
/// assert_eq!(m.param("charset"), Some("UTF-8"));
/// assert!(m.is_json());
/// assert!("application/vnd.order+json".parse::<MimeType>().unwrap().is_json());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MimeType {
    essence: String,
    slash: usize,
    params: Vec<(String, String)>,
    raw: String,
}

impl MimeType {
    /// `type/subtype`, lower-case.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    /// The top-level type (`application`).
    pub fn type_(&self) -> &str {
        &self.essence[..self.slash]
    }

    /// The subtype (`json`).
    pub fn subtype(&self) -> &str {
        &self.essence[self.slash + 1..]
    }

    /// A parameter's value (names compared case-insensitively).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `application/json` or any `+json` subtype.
    pub fn is_json(&self) -> bool {
        self.essence == "application/json" || self.subtype().ends_with("+json")
    }

    /// Any `text/*` type.
    pub fn is_text(&self) -> bool {
        self.type_() == "text"
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for MimeType {
    type Err = ConversionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let slash = essence
            .find('/')
            .filter(|&i| i > 0 && i + 1 < essence.len() && !essence.contains(' '))
            .ok_or_else(|| ConversionError::InvalidContentType(s.to_owned()))?;
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        Ok(MimeType {
            essence,
            slash,
            params,
            raw: s.trim().to_owned(),
        })
    }
}

impl fmt::Display for MimeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}
