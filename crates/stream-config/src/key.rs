//! Canonical property keys (Spring Boot's relaxed binding).
//!
//! The canonical form of a key is dot-separated, each segment in kebab-case and lower-case:
//! `spring.cloud.stream.bindings.input.consumer.maxAttempts`, `..._max_attempts` and
//! `...MAX-ATTEMPTS` are all `...max-attempts`. List indexes stay in brackets (`required-groups[0]`);
//! a non-numeric bracket (`retryable-exceptions[java.lang.Error]`, Spring's way to keep dots in a map
//! key) becomes ordinary segments.

/// Canonicalises one key segment: camelCase is split to kebab-case, `_` becomes `-`, everything is
/// lower-cased.
///
/// ```
/// use stream_config::canonical_segment;
/// assert_eq!(canonical_segment("maxAttempts"), "max-attempts");
/// assert_eq!(canonical_segment("max_attempts"), "max-attempts");
/// assert_eq!(canonical_segment("MAX-ATTEMPTS"), "max-attempts");
/// assert_eq!(canonical_segment("Input"), "input");
/// ```
pub fn canonical_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() + 4);
    let mut prev: Option<char> = None;
    for c in segment.trim().chars() {
        if c == '_' {
            out.push('-');
        } else if c.is_uppercase() {
            if prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// Canonicalises a whole key (see the module docs).
///
/// ```
/// use stream_config::canonical_key;
/// assert_eq!(
///     canonical_key("spring.cloud.stream.bindings.Input.consumer.maxAttempts"),
///     "spring.cloud.stream.bindings.input.consumer.max-attempts"
/// );
/// assert_eq!(canonical_key("a.requiredGroups[0]"), "a.required-groups[0]");
/// ```
pub fn canonical_key(key: &str) -> String {
    raw_segments(key)
        .iter()
        .map(|s| match s {
            RawSegment::Name(n) => canonical_segment(n),
            RawSegment::Index(i) => format!("[{i}]"),
            RawSegment::Bracketed(b) => b.to_lowercase(),
        })
        .fold(String::with_capacity(key.len()), |mut acc, seg| {
            if !acc.is_empty() && !seg.starts_with('[') {
                acc.push('.');
            }
            acc.push_str(&seg);
            acc
        })
}

/// One segment of a key as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSegment {
    /// A plain name.
    Name(String),
    /// A numeric list index `[n]`.
    Index(usize),
    /// A bracketed map key `[a.b]`, kept verbatim.
    Bracketed(String),
}

/// Splits a key as written into segments, keeping bracketed parts whole.
pub(crate) fn raw_segments(key: &str) -> Vec<RawSegment> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = key.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    out.push(RawSegment::Name(std::mem::take(&mut cur)));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(RawSegment::Name(std::mem::take(&mut cur)));
                }
                let mut inner = String::new();
                let mut closed = false;
                for c2 in chars.by_ref() {
                    if c2 == ']' {
                        closed = true;
                        break;
                    }
                    inner.push(c2);
                }
                if !closed {
                    // Not a bracket after all: keep it as text.
                    cur.push('[');
                    cur.push_str(&inner);
                    continue;
                }
                match inner.trim().parse::<usize>() {
                    Ok(i) if !inner.trim().is_empty() => out.push(RawSegment::Index(i)),
                    _ => out.push(RawSegment::Bracketed(inner)),
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(RawSegment::Name(cur));
    }
    out
}

/// The raw text of a segment, for map keys (case kept).
pub(crate) fn raw_segment_text(s: &RawSegment) -> String {
    match s {
        RawSegment::Name(n) | RawSegment::Bracketed(n) => n.clone(),
        RawSegment::Index(i) => format!("[{i}]"),
    }
}

/// Joins a canonical prefix and a (field) name.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else if name.starts_with('[') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}.{name}")
    }
}

/// Splits a canonical key into `(name, indexes)` segments: `a.b[0]` -> `[("a", []), ("b", [0])]`.
pub(crate) fn split_canonical(key: &str) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for seg in raw_segments(key) {
        match seg {
            RawSegment::Name(n) | RawSegment::Bracketed(n) => out.push((n, Vec::new())),
            RawSegment::Index(i) => match out.last_mut() {
                Some(last) => last.1.push(i),
                None => out.push((String::new(), vec![i])),
            },
        }
    }
    out
}

/// The kebab key of a struct field name (`max_attempts` -> `max-attempts`, `r#type` -> `type`).
#[doc(hidden)]
pub fn field_key(field: &str) -> String {
    canonical_segment(field.trim_start_matches("r#"))
}

/// The part of `raw` (a key as written) after the segments whose canonical form is `prefix`.
pub(crate) fn map_key_from_raw(raw: &str, prefix: &str) -> Option<String> {
    let segs = raw_segments(raw);
    let mut acc = String::new();
    for (i, s) in segs.iter().enumerate() {
        let c = match s {
            RawSegment::Name(n) => canonical_segment(n),
            RawSegment::Index(n) => format!("[{n}]"),
            RawSegment::Bracketed(b) => b.to_lowercase(),
        };
        acc = join(&acc, &c);
        if acc == prefix {
            let rest: Vec<String> = segs[i + 1..].iter().map(raw_segment_text).collect();
            return if rest.is_empty() {
                None
            } else {
                Some(rest.join("."))
            };
        }
        if !prefix.starts_with(&acc) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for k in [
            "maxAttempts",
            "max_attempts",
            "MAX-ATTEMPTS",
            "max-attempts",
            "MAX_ATTEMPTS",
        ] {
            assert_eq!(canonical_segment(k), "max-attempts", "{k}");
        }
        assert_eq!(
            canonical_key("x.retryableExceptions[java.lang.IllegalStateException]"),
            "x.retryable-exceptions.java.lang.illegalstateexception"
        );
        assert_eq!(canonical_key("a.b[0][1].c"), "a.b[0][1].c");
        assert_eq!(
            split_canonical("a.b[0]"),
            vec![("a".into(), vec![]), ("b".into(), vec![0])]
        );
        assert_eq!(field_key("r#type"), "type");
    }
}
