//! `${key}`, `${key:default}`, `${ENV_VAR}` and nested placeholders, resolved against the merged
//! properties and then the raw environment variables.

use std::collections::{BTreeMap, HashMap};

use crate::error::ConfigError;
use crate::key::canonical_key;
use crate::property::Property;

/// Resolves every placeholder in `props` (in place).
pub(crate) fn resolve_all(
    props: &mut BTreeMap<String, Property>,
    raw_env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let mut done: HashMap<String, String> = HashMap::new();
    let keys: Vec<String> = props
        .iter()
        .filter(|(_, p)| p.value.contains("${"))
        .map(|(k, _)| k.clone())
        .collect();
    let mut resolved = Vec::with_capacity(keys.len());
    {
        let mut r = Resolver {
            props,
            raw_env,
            done: &mut done,
            stack: Vec::new(),
        };
        for k in keys {
            r.stack.clear();
            let v = r.resolve_key(&k)?;
            resolved.push((k, v));
        }
    }
    for (k, v) in resolved {
        if let Some(p) = props.get_mut(&k) {
            p.value = v;
        }
    }
    Ok(())
}

struct Resolver<'a> {
    props: &'a BTreeMap<String, Property>,
    raw_env: &'a BTreeMap<String, String>,
    done: &'a mut HashMap<String, String>,
    stack: Vec<String>,
}

impl Resolver<'_> {
    fn resolve_key(&mut self, key: &str) -> Result<String, ConfigError> {
        if let Some(v) = self.done.get(key) {
            return Ok(v.clone());
        }
        let Some(p) = self.props.get(key) else {
            return Ok(String::new());
        };
        self.stack.push(key.to_owned());
        let v = self.resolve_text(&p.value, key)?;
        self.stack.pop();
        self.done.insert(key.to_owned(), v.clone());
        Ok(v)
    }

    /// Resolves placeholders in `text`, the value (or part of it) of property `owner`.
    fn resolve_text(&mut self, text: &str, owner: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find("${") {
            // `\${` is a literal `${`.
            if rest[..pos].ends_with('\\') {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let body_start = pos + 2;
            let Some(end) = matching_brace(&rest[body_start..]) else {
                out.push_str(&rest[pos..]);
                return Ok(out);
            };
            let body = &rest[body_start..body_start + end];
            out.push_str(&self.resolve_placeholder(body, owner)?);
            rest = &rest[body_start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn resolve_placeholder(&mut self, body: &str, owner: &str) -> Result<String, ConfigError> {
        let (name_part, default) = split_default(body);
        let name = self.resolve_text(name_part, owner)?;
        let canonical = canonical_key(&name);
        if self.props.contains_key(&canonical) {
            if let Some(start) = self.stack.iter().position(|k| *k == canonical) {
                let mut chain: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
                chain.push(&canonical);
                let first = &self.stack[0];
                return Err(ConfigError::PlaceholderCycle {
                    key: first.clone(),
                    chain: chain.join(" -> "),
                    origin: self.origin_of(first),
                });
            }
            return self.resolve_key(&canonical);
        }
        if let Some(v) = self.raw_env.get(name.trim()) {
            return Ok(v.clone());
        }
        let env_form: String = name
            .trim()
            .chars()
            .map(|c| {
                if c == '.' || c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        if let Some(v) = self.raw_env.get(&env_form) {
            return Ok(v.clone());
        }
        match default {
            Some(d) => self.resolve_text(d, owner),
            None => Err(ConfigError::UnresolvedPlaceholder {
                placeholder: name.trim().to_owned(),
                key: owner.to_owned(),
                origin: self.origin_of(owner),
            }),
        }
    }

    fn origin_of(&self, key: &str) -> String {
        self.props
            .get(key)
            .map(|p| p.origin.to_string())
            .unwrap_or_else(|| "unknown source".to_owned())
    }
}

/// Index of the `}` closing a placeholder body, counting nested `${`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
        i += 1;
    }
    None
}

/// Splits `key:default` at the first `:` outside nested placeholders.
fn split_default(body: &str) -> (&str, Option<&str>) {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => depth = depth.saturating_sub(1),
            b':' if depth == 0 => return (&body[..i], Some(&body[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (body, None)
}
