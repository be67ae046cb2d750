//! `spring.cloud.function.definition`: `;` separates functions, `|` composes them.

use std::fmt;

/// One entry of a function definition: a function or a composition `a|b|c`.
///
/// ```
/// use stream_core::function::FunctionDefinition;
/// let defs = FunctionDefinition::parse_list("uppercase; toUpper|wrap").unwrap();
/// assert_eq!(defs.len(), 2);
/// assert_eq!(defs[1].name(), "toUpper|wrap");
/// assert_eq!(defs[1].input_binding(0), "toUpper|wrap-in-0");
/// assert_eq!(defs[0].output_binding(0), "uppercase-out-0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionDefinition {
    parts: Vec<String>,
    name: String,
}

/// A malformed function definition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid `spring.cloud.function.definition` `{definition}`: {reason}")]
pub struct DefinitionError {
    /// The definition text.
    pub definition: String,
    /// What is wrong.
    pub reason: String,
}

impl FunctionDefinition {
    /// Parses one composition (`a|b`).
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        let parts: Vec<String> = text.split('|').map(|p| p.trim().to_owned()).collect();
        if parts.iter().any(String::is_empty) {
            return Err(DefinitionError {
                definition: text.to_owned(),
                reason: "empty function name".to_owned(),
            });
        }
        let name = parts.join("|");
        Ok(Self { parts, name })
    }

    /// Parses a `;`-separated list (empty entries are skipped).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, DefinitionError> {
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Self::parse(s).map_err(|e| DefinitionError {
                    definition: text.to_owned(),
                    reason: e.reason,
                })
            })
            .collect()
    }

    /// The composed name (`a|b`), the prefix of the binding names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function names in composition order.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// `<name>-in-<index>`.
    pub fn input_binding(&self, index: usize) -> String {
        format!("{}-in-{index}", self.name)
    }

    /// `<name>-out-<index>`.
    pub fn output_binding(&self, index: usize) -> String {
        format!("{}-out-{index}", self.name)
    }
}

impl fmt::Display for FunctionDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_naming() {
        let d = FunctionDefinition::parse(" a | b |c ").unwrap();
        assert_eq!(d.parts(), ["a", "b", "c"]);
        assert_eq!(d.input_binding(0), "a|b|c-in-0");
        assert_eq!(d.output_binding(1), "a|b|c-out-1");
    }

    #[test]
    fn empty_part_is_an_error() {
        let e = FunctionDefinition::parse_list("a;b||c").unwrap_err();
        assert!(e.to_string().contains("b||c") || e.to_string().contains("a;b||c"));
        assert!(FunctionDefinition::parse_list(";;").unwrap().is_empty());
    }
}
