//! Producer-side partitioning, bit-for-bit compatible with Spring Cloud Stream's
//! `PartitionHandler` (spec §2), so Rust and Java producers put a key in the same partition.
//!
//! For each message:
//! 1. the *key* is the [`PartitionKeyExtractor`]'s result or, when there is no extractor or it
//!    returns `None`, the value of `partition-key-expression` (evaluated against the message);
//!    a missing or null key is an error;
//! 2. the *selected* value is `partition-selector-expression` evaluated **with the key as root
//!    object** (so `hashCode()` or `#root.length()` apply to the key) and converted to an `int`,
//!    or a user [`PartitionSelector`], or the [`DefaultPartitionSelector`]:
//!    `h = key.hashCode(); if h == Integer.MIN_VALUE { h = 0 }; |h|`;
//! 3. the partition is `|selected % partition-count|`.
//!
//! [`PartitionHandler::apply`] writes it into the `scst_partition` header, unless the message
//! carries `scst_partitionOverride`, which wins and is removed.
//!
//! ```
//! use stream_core::Message;
//! use stream_core::message::names;
//! use stream_core::partition::PartitionHandler;
//!
//! let handler = PartitionHandler::builder("orders-out-0", 3)
//!     .key_expression("payload.customer")
//!     .build()?;
//! let mut msg = Message::bytes(r#"{"customer":"hello"}"#)
//!     .with_header("contentType", "application/json");
//! // "hello".hashCode() = 99162322; 99162322 % 3 = 1.
//! assert_eq!(handler.apply(&mut msg)?, 1);
//! assert_eq!(msg.headers().get(names::PARTITION), Some(&stream_core::HeaderValue::I32(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use stream_config::ProducerProperties;

use crate::expression::{EvalError, Expression, ExpressionError, Value};
use crate::message::{HeaderValue, Message, names};

pub use crate::expression::java_string_hash_code;

/// The partition Spring's default selector gives `key` among `partition_count` partitions:
/// `|(h == Integer.MIN_VALUE ? 0 : |h|) % partition_count|` with `h = key.hashCode()`.
/// A `partition_count` of 0 is read as 1.
///
/// ```
/// use stream_core::expression::Value;
/// use stream_core::partition::default_partition;
/// assert_eq!(default_partition(&Value::from("hello"), 3), 1);
/// assert_eq!(default_partition(&Value::Int(-7), 4), 3);
/// ```
pub fn default_partition(key: &Value, partition_count: u32) -> u32 {
    modulo(
        DefaultPartitionSelector.select(key, partition_count),
        partition_count,
    )
}

/// `Math.abs(selected % partitionCount)`, with the count clamped to `1..=i32::MAX`.
fn modulo(selected: i32, partition_count: u32) -> u32 {
    let count = i32::try_from(partition_count.max(1)).unwrap_or(i32::MAX);
    selected.wrapping_rem(count).unsigned_abs()
}

/// Extracts the partition key from a message (Spring's `PartitionKeyExtractorStrategy`).
///
/// Returning `None` (or [`Value::Null`]) falls back to `partition-key-expression` when one is
/// set, as in Spring. Any `Fn(&Message) -> Option<Value> + Send + Sync` is an extractor.
///
/// ```
/// use std::sync::Arc;
/// use stream_core::Message;
/// use stream_core::expression::Value;
/// use stream_core::partition::PartitionKeyExtractor;
/// let by_region: Arc<dyn PartitionKeyExtractor> =
///     Arc::new(|m: &Message| m.headers().get_str("region").map(Value::from));
/// let msg = Message::bytes("x").with_header("region", "eu");
/// assert_eq!(by_region.extract(&msg), Some(Value::from("eu")));
/// ```
pub trait PartitionKeyExtractor: Send + Sync {
    /// The key of `message`, or `None` if this extractor has none for it.
    fn extract(&self, message: &Message) -> Option<Value>;
}

impl<F> PartitionKeyExtractor for F
where
    F: Fn(&Message) -> Option<Value> + Send + Sync,
{
    fn extract(&self, message: &Message) -> Option<Value> {
        self(message)
    }
}

/// Chooses a partition for a key (Spring's `PartitionSelectorStrategy`).
///
/// The handler then takes `|result % partition_count|`, so a selector may return any `i32`.
/// Any `Fn(&Value, u32) -> i32 + Send + Sync` is a selector.
///
/// ```
/// use stream_core::expression::Value;
/// use stream_core::partition::PartitionSelector;
/// let first_char = |key: &Value, _count: u32| {
///     key.to_string().chars().next().map_or(0, |c| c as i32)
/// };
/// assert_eq!(first_char.select(&Value::from("a"), 4), 97);
/// ```
pub trait PartitionSelector: Send + Sync {
    /// A number whose remainder by `partition_count` is the partition.
    fn select(&self, key: &Value, partition_count: u32) -> i32;
}

impl<F> PartitionSelector for F
where
    F: Fn(&Value, u32) -> i32 + Send + Sync,
{
    fn select(&self, key: &Value, partition_count: u32) -> i32 {
        self(key, partition_count)
    }
}

/// Spring's default selector: `h = key.hashCode()` ([`Value::java_hash_code`]), 0 when `h` is
/// `Integer.MIN_VALUE`, else `|h|`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPartitionSelector;

impl PartitionSelector for DefaultPartitionSelector {
    fn select(&self, key: &Value, _partition_count: u32) -> i32 {
        let h = key.java_hash_code();
        if h == i32::MIN { 0 } else { h.abs() }
    }
}

/// A partitioning failure, naming the binding's property.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// A partition expression does not parse.
    #[error("{0}")]
    Expression(#[from] ExpressionError),
    /// `partition-count` is out of range.
    #[error("`{key}` must be between 1 and 2147483647, got {count}")]
    InvalidPartitionCount {
        /// Property key.
        key: String,
        /// Configured count.
        count: u32,
    },
    /// Partitioning was asked for without a way to get a key.
    #[error(
        "binding `{binding}` is partitioned but has no partition key: set `{key}` or a partition key extractor"
    )]
    NoKeySource {
        /// Binding name.
        binding: String,
        /// The `partition-key-expression` property key.
        key: String,
    },
    /// The key of a message is missing or null.
    #[error("partition key cannot be null (binding `{binding}`, {origin})")]
    MissingKey {
        /// Binding name.
        binding: String,
        /// Where the key came from (`` `<property>` = `<expression>` `` or the extractor).
        origin: String,
    },
    /// `partition-key-expression` failed on a message.
    #[error("`{key}` = `{expression}` failed: {error}")]
    KeyEvaluation {
        /// Property key.
        key: String,
        /// Expression text.
        expression: String,
        /// What failed.
        #[source]
        error: EvalError,
    },
    /// `partition-selector-expression` failed on a key.
    #[error("`{key}` = `{expression}` failed: {error}")]
    SelectorEvaluation {
        /// Property key.
        key: String,
        /// Expression text.
        expression: String,
        /// What failed.
        #[source]
        error: EvalError,
    },
    /// `partition-selector-expression` gave something that is not a Java `int`.
    #[error("`{key}` = `{expression}` must yield an int, got {found} `{value}`")]
    InvalidSelectorResult {
        /// Property key.
        key: String,
        /// Expression text.
        expression: String,
        /// Java type of the result.
        found: &'static str,
        /// The result as text.
        value: String,
    },
    /// `partition-key-extractor-name` / `partition-selector-name` names nothing registered.
    #[error(
        "`{key}` = `{name}`: no {what} is registered under that name (registered: {registered})"
    )]
    UnknownStrategy {
        /// Property key.
        key: String,
        /// The configured name.
        name: String,
        /// `partition key extractor` or `partition selector`.
        what: &'static str,
        /// The registered names, comma separated.
        registered: String,
    },
    /// Several extractors (or selectors) are registered and the binding does not say which.
    #[error("several {what}s are registered ({registered}); set `{key}` to choose one")]
    AmbiguousStrategy {
        /// Property key to set.
        key: String,
        /// `partition key extractor` or `partition selector`.
        what: &'static str,
        /// The registered names, comma separated.
        registered: String,
    },
    /// The `scst_partitionOverride` header is not a non-negative `int`.
    #[error("header `scst_partitionOverride` must be a non-negative int, got `{value}`")]
    InvalidOverride {
        /// The header value as text.
        value: String,
    },
}

#[derive(Clone)]
enum Selector {
    Expression(Expression),
    Strategy(Arc<dyn PartitionSelector>),
}

/// Computes and stamps the partition of outgoing messages for one producer binding.
///
/// Built once at bind time with [`PartitionHandler::builder`]; the expressions are parsed then.
/// Cheap to clone (the extractor and selector are shared).
#[derive(Clone)]
pub struct PartitionHandler {
    binding: String,
    partition_count: u32,
    extractor: Option<Arc<dyn PartitionKeyExtractor>>,
    key_expression: Option<Expression>,
    selector: Selector,
}

impl fmt::Debug for PartitionHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionHandler")
            .field("binding", &self.binding)
            .field("partition_count", &self.partition_count)
            .field("extractor", &self.extractor.is_some())
            .field(
                "key_expression",
                &self.key_expression.as_ref().map(Expression::source),
            )
            .field(
                "selector",
                &match &self.selector {
                    Selector::Expression(e) => e.source(),
                    Selector::Strategy(_) => "<selector>",
                },
            )
            .finish()
    }
}

/// The full property key of a producer property of `binding`.
fn producer_key(binding: &str, property: &str) -> String {
    format!("spring.cloud.stream.bindings.{binding}.producer.{property}")
}

const KEY_EXPRESSION: &str = "partition-key-expression";
const SELECTOR_EXPRESSION: &str = "partition-selector-expression";

impl PartitionHandler {
    /// Starts a handler for producer binding `binding` (used in error messages, e.g.
    /// `orders-out-0`) with `partition_count` partitions.
    pub fn builder(binding: impl Into<String>, partition_count: u32) -> PartitionHandlerBuilder {
        PartitionHandlerBuilder {
            binding: binding.into(),
            partition_count,
            key_expression: None,
            extractor: None,
            selector_expression: None,
            selector: None,
        }
    }

    /// Builds the handler of producer binding `binding` from its properties, the way Spring's
    /// `PartitionHandler` does: `partition-key-extractor-name` / `partition-selector-name` pick
    /// a registered extractor / selector by name; when no name is set and exactly one is
    /// registered, that one is used (several without a name is an error); the selector
    /// defaults to [`DefaultPartitionSelector`]. The expressions are parsed here.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use stream_config::ProducerProperties;
    /// use stream_core::Message;
    /// use stream_core::partition::PartitionHandler;
    /// let mut props = ProducerProperties::default();
    /// props.partition_key_expression = Some("headers['customer']".to_owned());
    /// props.partition_count = 2;
    /// let handler = PartitionHandler::from_properties("out", &props, &HashMap::new(), &HashMap::new())?;
    /// let msg = Message::bytes("").with_header("customer", "1");
    /// assert_eq!(handler.determine_partition(&msg)?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_properties(
        binding: &str,
        properties: &ProducerProperties,
        extractors: &HashMap<String, Arc<dyn PartitionKeyExtractor>>,
        selectors: &HashMap<String, Arc<dyn PartitionSelector>>,
    ) -> Result<PartitionHandler, PartitionError> {
        let mut builder = PartitionHandler::builder(binding, properties.partition_count);
        if let Some(source) = &properties.partition_key_expression {
            builder = builder.key_expression(source.clone());
        }
        if let Some(source) = &properties.partition_selector_expression {
            builder = builder.selector_expression(source.clone());
        }
        let extractor = lookup(
            extractors,
            properties.partition_key_extractor_name.as_deref(),
            producer_key(binding, "partition-key-extractor-name"),
            "partition key extractor",
        )?;
        if let Some(extractor) = extractor {
            builder = builder.key_extractor_arc(extractor);
        }
        let selector = lookup(
            selectors,
            properties.partition_selector_name.as_deref(),
            producer_key(binding, "partition-selector-name"),
            "partition selector",
        )?;
        if let Some(selector) = selector {
            builder = builder.selector_arc(selector);
        }
        builder.build()
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partition_count
    }

    /// The partition for `message` (ignoring `scst_partitionOverride`).
    ///
    /// ```
    /// use stream_core::Message;
    /// use stream_core::partition::PartitionHandler;
    /// let handler = PartitionHandler::builder("out", 2)
    ///     .key_expression("headers['customer']")
    ///     .selector_expression("hashCode() + 1")
    ///     .build()?;
    /// let msg = Message::bytes("").with_header("customer", "foo");
    /// // ("foo".hashCode() + 1) % 2 = 101575 % 2 = 1
    /// assert_eq!(handler.determine_partition(&msg)?, 1);
    /// let err = handler.determine_partition(&Message::bytes("")).err();
    /// assert!(err.is_some_and(|e| e.to_string().contains("partition key cannot be null")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn determine_partition(&self, message: &Message) -> Result<u32, PartitionError> {
        let key = self.extract_key(message)?;
        let selected = match &self.selector {
            Selector::Strategy(selector) => selector.select(&key, self.partition_count),
            Selector::Expression(expr) => {
                let value = expr.evaluate_with_root(&key).map_err(|error| {
                    PartitionError::SelectorEvaluation {
                        key: producer_key(&self.binding, SELECTOR_EXPRESSION),
                        expression: expr.source().to_owned(),
                        error,
                    }
                })?;
                to_java_int(&value).ok_or_else(|| PartitionError::InvalidSelectorResult {
                    key: producer_key(&self.binding, SELECTOR_EXPRESSION),
                    expression: expr.source().to_owned(),
                    found: value.type_name(),
                    value: value.to_string(),
                })?
            }
        };
        Ok(modulo(selected, self.partition_count))
    }

    /// Sets the `scst_partition` header ([`HeaderValue::I32`]) and returns the partition.
    ///
    /// A `scst_partitionOverride` header (an integer, or a string of digits) wins and is
    /// removed; like Spring, the override is not reduced modulo the partition count.
    ///
    /// ```
    /// use stream_core::{HeaderValue, Message};
    /// use stream_core::message::names;
    /// use stream_core::partition::PartitionHandler;
    /// let handler = PartitionHandler::builder("out", 4).key_expression("payload").build()?;
    /// let mut msg = Message::bytes("k").with_header(names::PARTITION_OVERRIDE, 2_i32);
    /// assert_eq!(handler.apply(&mut msg)?, 2);
    /// assert_eq!(msg.headers().get(names::PARTITION), Some(&HeaderValue::I32(2)));
    /// assert!(!msg.headers().contains(names::PARTITION_OVERRIDE));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, message: &mut Message) -> Result<u32, PartitionError> {
        let partition = self.select(message)?;
        // `partition` <= i32::MAX: an override is checked, a computed one is < count.
        let header = i32::try_from(partition).unwrap_or(i32::MAX);
        message
            .headers_mut()
            .insert(names::PARTITION, HeaderValue::I32(header));
        Ok(partition)
    }

    /// The partition of a message, without setting `scst_partition` (the runtime hands the
    /// partition to the binder as a field): a `scst_partitionOverride` header wins and is
    /// removed, else the key and selector decide.
    pub fn select(&self, message: &mut Message) -> Result<u32, PartitionError> {
        let partition = match message.headers().get(names::PARTITION_OVERRIDE) {
            Some(value) => {
                let partition = value
                    .to_i64_lenient()
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| PartitionError::InvalidOverride {
                        value: value.to_string(),
                    })?;
                message.headers_mut().remove(names::PARTITION_OVERRIDE);
                partition
            }
            None => self.determine_partition(message)?,
        };
        Ok(partition)
    }

    fn extract_key(&self, message: &Message) -> Result<Value, PartitionError> {
        if let Some(extractor) = &self.extractor
            && let Some(key) = extractor.extract(message).filter(|k| !k.is_null())
        {
            return Ok(key);
        }
        if let Some(expr) = &self.key_expression {
            let key = expr
                .evaluate(message)
                .map_err(|error| PartitionError::KeyEvaluation {
                    key: producer_key(&self.binding, KEY_EXPRESSION),
                    expression: expr.source().to_owned(),
                    error,
                })?;
            if !key.is_null() {
                return Ok(key);
            }
            return Err(PartitionError::MissingKey {
                binding: self.binding.clone(),
                origin: format!(
                    "`{}` = `{}`",
                    producer_key(&self.binding, KEY_EXPRESSION),
                    expr.source()
                ),
            });
        }
        Err(PartitionError::MissingKey {
            binding: self.binding.clone(),
            origin: "the partition key extractor returned none".to_owned(),
        })
    }
}

/// Spring's bean lookup: by name when one is configured, else the only registered one.
fn lookup<T: ?Sized>(
    registry: &HashMap<String, Arc<T>>,
    name: Option<&str>,
    key: String,
    what: &'static str,
) -> Result<Option<Arc<T>>, PartitionError> {
    let registered = || {
        let mut names: Vec<&str> = registry.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            registry
                .get(name)
                .cloned()
                .map(Some)
                .ok_or_else(|| PartitionError::UnknownStrategy {
                    key,
                    name: name.to_owned(),
                    what,
                    registered: registered(),
                })
        }
        None if registry.len() > 1 => Err(PartitionError::AmbiguousStrategy {
            key,
            what,
            registered: registered(),
        }),
        None => Ok(registry.values().next().cloned()),
    }
}

/// Spring's conversion of a selector result to `Integer`: integers in range, doubles truncated,
/// decimal or `0x` hex strings parsed.
fn to_java_int(value: &Value) -> Option<i32> {
    match value {
        Value::Int(v) => Some(*v),
        Value::Long(v) => i32::try_from(*v).ok(),
        Value::Double(v) if v.is_finite() => {
            let t = v.trunc();
            (t >= f64::from(i32::MIN) && t <= f64::from(i32::MAX)).then_some(t as i32)
        }
        Value::String(s) => {
            let s = s.trim();
            let (negative, digits) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s),
            };
            let magnitude = match digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
                .or_else(|| digits.strip_prefix('#'))
            {
                Some(hex) => i64::from_str_radix(hex, 16).ok()?,
                None => digits.parse::<i64>().ok()?,
            };
            i32::try_from(if negative { -magnitude } else { magnitude }).ok()
        }
        _ => None,
    }
}

/// Builds a [`PartitionHandler`]; see [`PartitionHandler::builder`].
#[must_use]
pub struct PartitionHandlerBuilder {
    binding: String,
    partition_count: u32,
    key_expression: Option<String>,
    extractor: Option<Arc<dyn PartitionKeyExtractor>>,
    selector_expression: Option<String>,
    selector: Option<Arc<dyn PartitionSelector>>,
}

impl fmt::Debug for PartitionHandlerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionHandlerBuilder")
            .field("binding", &self.binding)
            .field("partition_count", &self.partition_count)
            .field("key_expression", &self.key_expression)
            .field("extractor", &self.extractor.is_some())
            .field("selector_expression", &self.selector_expression)
            .field("selector", &self.selector.is_some())
            .finish()
    }
}

impl PartitionHandlerBuilder {
    /// `partition-key-expression`, evaluated against the message; parsed by
    /// [`build`](Self::build).
    pub fn key_expression(mut self, source: impl Into<String>) -> Self {
        self.key_expression = Some(source.into());
        self
    }

    /// A key extractor (`partition-key-extractor-name`); tried before the key expression.
    pub fn key_extractor(mut self, extractor: impl PartitionKeyExtractor + 'static) -> Self {
        self.extractor = Some(Arc::new(extractor));
        self
    }

    /// A shared key extractor.
    pub fn key_extractor_arc(mut self, extractor: Arc<dyn PartitionKeyExtractor>) -> Self {
        self.extractor = Some(extractor);
        self
    }

    /// `partition-selector-expression`, evaluated with the key as root; wins over a selector.
    pub fn selector_expression(mut self, source: impl Into<String>) -> Self {
        self.selector_expression = Some(source.into());
        self
    }

    /// A user selector (`partition-selector-name`); the default is [`DefaultPartitionSelector`].
    pub fn selector(mut self, selector: impl PartitionSelector + 'static) -> Self {
        self.selector = Some(Arc::new(selector));
        self
    }

    /// A shared user selector.
    pub fn selector_arc(mut self, selector: Arc<dyn PartitionSelector>) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Parses the expressions and checks the configuration.
    pub fn build(self) -> Result<PartitionHandler, PartitionError> {
        let binding = self.binding;
        if self.partition_count == 0 || i32::try_from(self.partition_count).is_err() {
            return Err(PartitionError::InvalidPartitionCount {
                key: producer_key(&binding, "partition-count"),
                count: self.partition_count,
            });
        }
        let parse = |source: &str, property: &str| {
            Expression::parse(source).map_err(|e| e.with_key(producer_key(&binding, property)))
        };
        let key_expression = self
            .key_expression
            .as_deref()
            .map(|s| parse(s, KEY_EXPRESSION))
            .transpose()?;
        if key_expression.is_none() && self.extractor.is_none() {
            return Err(PartitionError::NoKeySource {
                key: producer_key(&binding, KEY_EXPRESSION),
                binding,
            });
        }
        let selector = match (&self.selector_expression, self.selector) {
            (Some(source), _) => Selector::Expression(parse(source, SELECTOR_EXPRESSION)?),
            (None, Some(selector)) => Selector::Strategy(selector),
            (None, None) => Selector::Strategy(Arc::new(DefaultPartitionSelector)),
        };
        Ok(PartitionHandler {
            binding,
            partition_count: self.partition_count,
            extractor: self.extractor,
            key_expression,
            selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §2 vectors: (string, Java hashCode, partition of 2, partition of 3).
    const VECTORS: &[(&str, i32, u32, u32)] = &[
        ("0", 48, 0, 0),
        ("1", 49, 1, 1),
        ("2", 50, 0, 2),
        ("foo", 101_574, 0, 0),
        ("abc", 96_354, 0, 0),
        ("hello", 99_162_322, 0, 1),
        ("", 0, 0, 0),
        ("😀", 1_772_899, 1, 1),
        ("polygenelubricants", i32::MIN, 0, 0),
    ];

    fn handler(count: u32) -> Result<PartitionHandler, PartitionError> {
        PartitionHandler::builder("out", count)
            .key_expression("payload")
            .build()
    }

    fn text(payload: &str) -> Message {
        Message::bytes(payload.to_owned()).with_header("contentType", "text/plain")
    }

    #[test]
    fn partition_java_string_hash_vectors() {
        for (s, hash, _, _) in VECTORS {
            assert_eq!(java_string_hash_code(s), *hash, "{s}");
            assert_eq!(Value::from(*s).java_hash_code(), *hash, "{s}");
        }
    }

    #[test]
    fn partition_vectors_with_two_and_three_partitions() -> Result<(), PartitionError> {
        let (two, three) = (handler(2)?, handler(3)?);
        for (s, _, p2, p3) in VECTORS {
            assert_eq!(default_partition(&Value::from(*s), 2), *p2, "{s}");
            assert_eq!(default_partition(&Value::from(*s), 3), *p3, "{s}");
            assert_eq!(two.determine_partition(&text(s))?, *p2, "{s}");
            assert_eq!(three.determine_partition(&text(s))?, *p3, "{s}");
        }
        Ok(())
    }

    /// Cross-check vectors from the Java definitions, computed independently (a separate
    /// UTF-16 `31 * h + c` implementation in Python, and by hand for the numeric keys):
    /// - strings: (value, `hashCode()`, partitions for counts 2, 3, 5, 7, 10); `"customer-42"`
    ///   has a negative hash, made positive before the modulo (`Math.abs(h) % n`); the last
    ///   two use non-ASCII and a surrogate pair (U+1D11E).
    /// - `Integer(-7)`: |−7| % 4 = 3. `Long(3000000000L)`: hash = (int) 3000000000 =
    ///   −1294967296, |h| = 1294967296, % 3 = 1 (digit sum 55). `Long(-1L)`: hash 0 -> 0.
    /// - `Long(1L << 32)`: hash = 1 -> 1 % 2 = 1. `Boolean.TRUE`: 1231 % 4 = 3.
    /// - `Double(1.0)`: hash 0x3FF00000 = 1072693248, % 3 = 0 (digit sum 42).
    #[test]
    fn partition_java_cross_check_vectors() {
        let strings: &[(&str, i32, [u32; 5])] = &[
            ("customer-42", -1_772_111_155, [1, 1, 0, 3, 5]),
            ("order-1001", 708_180_863, [1, 2, 3, 5, 3]),
            ("hello world", 1_794_106_052, [0, 2, 2, 4, 2]),
            ("Ünïcödé", 1_055_431_381, [1, 1, 1, 4, 1]),
            ("𝄞music", 1_496_085_755, [1, 2, 0, 3, 5]),
        ];
        for (s, hash, partitions) in strings {
            assert_eq!(java_string_hash_code(s), *hash, "{s}");
            for (count, expected) in [2, 3, 5, 7, 10].into_iter().zip(partitions) {
                assert_eq!(
                    default_partition(&Value::from(*s), count),
                    *expected,
                    "{s} % {count}"
                );
            }
        }
        assert_eq!(default_partition(&Value::Int(-7), 4), 3);
        assert_eq!(default_partition(&Value::Int(i32::MIN), 3), 0);
        assert_eq!(default_partition(&Value::Long(3_000_000_000), 3), 1);
        assert_eq!(default_partition(&Value::Long(-1), 3), 0);
        assert_eq!(default_partition(&Value::Long(1 << 32), 2), 1);
        assert_eq!(default_partition(&Value::Bool(true), 4), 3);
        assert_eq!(default_partition(&Value::Double(1.0), 3), 0);
    }

    #[test]
    fn partition_integer_and_long_keys_from_payload_and_headers() -> Result<(), PartitionError> {
        let by_header = PartitionHandler::builder("out", 3)
            .key_expression("headers['k']")
            .build()?;
        let int_msg = Message::bytes("").with_header("k", -7_i32);
        assert_eq!(by_header.determine_partition(&int_msg)?, 1);
        let long_msg = Message::bytes("").with_header("k", 3_000_000_000_i64);
        assert_eq!(by_header.determine_partition(&long_msg)?, 1);
        // JSON numbers: 5 is an Integer, 3000000000 a Long, like Jackson.
        let by_field = PartitionHandler::builder("out", 3)
            .key_expression("payload.id")
            .build()?;
        let json = |body: &str| {
            Message::bytes(body.to_owned()).with_header("contentType", "application/json")
        };
        assert_eq!(by_field.determine_partition(&json(r#"{"id":5}"#))?, 2);
        assert_eq!(
            by_field.determine_partition(&json(r#"{"id":3000000000}"#))?,
            1
        );
        assert_eq!(by_field.determine_partition(&json(r#"{"id":"foo"}"#))?, 0);
        Ok(())
    }

    #[test]
    fn partition_selector_expression_has_key_as_root() -> Result<(), PartitionError> {
        let h = PartitionHandler::builder("out", 3)
            .key_expression("payload")
            .selector_expression("hashCode()")
            .build()?;
        // Unlike the default selector, the expression result is not made positive before the
        // modulo: Math.abs(Integer.MIN_VALUE % 3) = |-2| = 2.
        assert_eq!(h.determine_partition(&text("polygenelubricants"))?, 2);
        assert_eq!(h.determine_partition(&text("hello"))?, 1);
        let by_length = PartitionHandler::builder("out", 4)
            .key_expression("payload")
            .selector_expression("#root.length()")
            .build()?;
        assert_eq!(by_length.determine_partition(&text("hello"))?, 1);
        // Strings and longs convert to int like Spring's conversion service.
        let as_string = PartitionHandler::builder("out", 4)
            .key_expression("payload")
            .selector_expression("'1' + '0'")
            .build()?;
        assert_eq!(as_string.determine_partition(&text("x"))?, 2);
        let bad = PartitionHandler::builder("out", 4)
            .key_expression("payload")
            .selector_expression("#root + 'x'")
            .build()?;
        let err = bad
            .determine_partition(&text("a"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "`spring.cloud.stream.bindings.out.producer.partition-selector-expression` = \
                 `#root + 'x'` must yield an int, got String `ax`"
            )
        );
        Ok(())
    }

    #[test]
    fn partition_override_header_wins_and_is_removed() -> Result<(), PartitionError> {
        let h = handler(2)?;
        let mut msg = text("foo").with_header(names::PARTITION_OVERRIDE, "7");
        assert_eq!(h.apply(&mut msg)?, 7);
        assert_eq!(
            msg.headers().get(names::PARTITION),
            Some(&HeaderValue::I32(7))
        );
        assert!(!msg.headers().contains(names::PARTITION_OVERRIDE));

        let mut msg = text("1");
        assert_eq!(h.apply(&mut msg)?, 1);
        assert_eq!(
            msg.headers().get(names::PARTITION),
            Some(&HeaderValue::I32(1))
        );

        let mut bad = text("foo").with_header(names::PARTITION_OVERRIDE, -1_i32);
        assert!(matches!(
            h.apply(&mut bad),
            Err(PartitionError::InvalidOverride { .. })
        ));
        assert!(bad.headers().contains(names::PARTITION_OVERRIDE));
        Ok(())
    }

    #[test]
    fn partition_missing_key_is_an_error() -> Result<(), PartitionError> {
        let h = PartitionHandler::builder("orders-out-0", 2)
            .key_expression("payload.customer")
            .build()?;
        let msg = Message::bytes("{}").with_header("contentType", "application/json");
        let err = h.determine_partition(&msg).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "partition key cannot be null (binding `orders-out-0`, \
                 `spring.cloud.stream.bindings.orders-out-0.producer.partition-key-expression` = `payload.customer`)"
            )
        );
        let msg = Message::bytes("[1]").with_header("contentType", "application/json");
        assert!(matches!(
            h.determine_partition(&msg),
            Err(PartitionError::KeyEvaluation { .. })
        ));
        Ok(())
    }

    #[test]
    fn partition_closure_extractor_and_selector() -> Result<(), PartitionError> {
        let h = PartitionHandler::builder("out", 4)
            .key_extractor(|m: &Message| m.headers().get_str("region").map(Value::from))
            .selector(|key: &Value, count: u32| key.to_string().len() as i32 + count as i32)
            .build()?;
        // len("eu") + 4 = 6; 6 % 4 = 2
        let msg = Message::bytes("").with_header("region", "eu");
        assert_eq!(h.determine_partition(&msg)?, 2);
        assert!(matches!(
            h.determine_partition(&Message::bytes("")),
            Err(PartitionError::MissingKey { .. })
        ));
        // A negative selector result is made positive after the modulo.
        let negative = PartitionHandler::builder("out", 3)
            .key_extractor(|_: &Message| Some(Value::Int(0)))
            .selector(|_: &Value, _: u32| -5)
            .build()?;
        assert_eq!(negative.determine_partition(&Message::bytes(""))?, 2);
        Ok(())
    }

    #[test]
    fn partition_extractor_falls_back_to_expression() -> Result<(), PartitionError> {
        let h = PartitionHandler::builder("out", 3)
            .key_extractor(|m: &Message| m.headers().get_str("k").map(Value::from))
            .key_expression("'hello'")
            .build()?;
        assert_eq!(
            h.determine_partition(&Message::bytes("").with_header("k", "foo"))?,
            0
        );
        assert_eq!(h.determine_partition(&Message::bytes(""))?, 1);
        Ok(())
    }

    #[test]
    fn partition_builder_errors_name_the_property() {
        let err = PartitionHandler::builder("out", 2)
            .key_expression("payload.")
            .build()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "`spring.cloud.stream.bindings.out.producer.partition-key-expression`: \
                 expected a property or method name after `.` but found end of expression at column 9 of `payload.`"
            )
        );
        let err = PartitionHandler::builder("out", 0)
            .key_expression("payload")
            .build()
            .err();
        assert!(err.is_some_and(|e| e.to_string().contains("partition-count")));
        let err = PartitionHandler::builder("out", 2).build().err();
        assert!(matches!(err, Some(PartitionError::NoKeySource { .. })));
    }

    #[test]
    fn partition_from_properties_resolves_named_strategies() -> Result<(), PartitionError> {
        let mut extractors: HashMap<String, Arc<dyn PartitionKeyExtractor>> = HashMap::new();
        extractors.insert(
            "byRegion".to_owned(),
            Arc::new(|m: &Message| m.headers().get_str("region").map(Value::from)),
        );
        let mut selectors: HashMap<String, Arc<dyn PartitionSelector>> = HashMap::new();
        selectors.insert("always1".to_owned(), Arc::new(|_: &Value, _: u32| 1));
        let mut props = ProducerProperties::default();
        props.partition_count = 3;
        props.partition_key_extractor_name = Some("byRegion".to_owned());

        // The only registered selector is used without a name.
        let h = PartitionHandler::from_properties("out", &props, &extractors, &selectors)?;
        let msg = Message::bytes("").with_header("region", "eu");
        assert_eq!(h.determine_partition(&msg)?, 1);

        // Unknown name.
        props.partition_selector_name = Some("nope".to_owned());
        let err = PartitionHandler::from_properties("out", &props, &extractors, &selectors)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "`spring.cloud.stream.bindings.out.producer.partition-selector-name` = `nope`: \
                 no partition selector is registered under that name (registered: always1)"
            )
        );

        // Several selectors without a name; the selector expression is parsed with its key.
        props.partition_selector_name = None;
        selectors.insert("other".to_owned(), Arc::new(|_: &Value, _: u32| 2));
        assert!(matches!(
            PartitionHandler::from_properties("out", &props, &extractors, &selectors),
            Err(PartitionError::AmbiguousStrategy { .. })
        ));
        props.partition_selector_expression = Some("hashCode(".to_owned());
        let err = PartitionHandler::from_properties("out", &props, &extractors, &HashMap::new());
        assert!(matches!(
            err,
            Err(PartitionError::Expression(ExpressionError { key: Some(ref k), .. }))
                if k.ends_with("partition-selector-expression")
        ));
        Ok(())
    }

    #[test]
    fn partition_traits_are_object_safe() {
        let extractor: Arc<dyn PartitionKeyExtractor> = Arc::new(|_: &Message| None);
        let selector: Box<dyn PartitionSelector> = Box::new(DefaultPartitionSelector);
        assert_eq!(extractor.extract(&Message::bytes("")), None);
        assert_eq!(selector.select(&Value::from("foo"), 2), 101_574);
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PartitionHandler>();
    }
}
