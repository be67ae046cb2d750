//! A small subset of Spring Expression Language (SpEL) for the expression-valued properties
//! `partition-key-expression`, `partition-selector-expression`, `routing-key-expression` and
//! `delay-expression`.
//!
//! An expression is parsed once, at bind time, into an [`Expression`]; evaluating it against a
//! message is a walk over that tree. The payload is decoded only when the expression reads
//! `payload`, at most once per evaluation.
//!
//! # The subset
//!
//! | Syntax | Meaning |
//! |---|---|
//! | `payload` | The whole payload: its JSON value when the message's `contentType` is `application/json` or `*/*+json` (or absent, when the bytes parse as JSON), else its text (lossy UTF-8). |
//! | `payload.a.b`, `payload['a']`, `payload.items[0]` | JSON field and array element access. A missing field is `null`. |
//! | `headers['k']`, `headers.k`, `headers['k'].x` | A header ([`Value::from_header`]); a missing header is `null`. |
//! | `'text'`, `"text"` | String literals; the quote is doubled to escape it (`'it''s'`). |
//! | `42`, `42L`, `0x2A`, `1.5`, `1e3` | `int` (must fit), `long`, hex, `double` literals. |
//! | `null`, `true`, `false` | Literals. |
//! | `+ - * / %` (`div`, `mod`) | Java arithmetic: `int` unless a side is `long` (then `long`) or `double`; wrapping; `/` and `%` truncate, the remainder has the sign of the dividend. `+` concatenates if either side is a string (`null` reads `"null"`). |
//! | `-x`, `!x` (`not`) | Negation. |
//! | `== != < <= > >=` (`eq ne lt le gt ge`) | Comparison; numbers compare by value across types. |
//! | `&&`, `||` (`and`, `or`), `c ? a : b`, `a ?: b` | Boolean logic, ternary, Elvis (`b` when `a` is null or empty). |
//! | `x?.y` | Safe navigation: `null` instead of an error when `x` is null. |
//! | `(...)` | Grouping. |
//! | `#root`, `#this` | The root object: the message, or the partition key in a selector expression. |
//! | `hashCode()`, `toString()`, `length()`, `size()`, `isEmpty()`, `toUpperCase()`, `toLowerCase()`, `trim()`, `substring(b[, e])`, `equals(x)`, `startsWith(s)`, `endsWith(s)`, `contains(s)` | Java's methods of the same name; a bare call (`hashCode()`) applies to the root. |
//!
//! The root object of a message expression is the message: its properties are `payload` and
//! `headers`. The root of a `partition-selector-expression` is the partition key, as in Spring
//! (`PartitionHandler` evaluates the selector expression against the key), so
//! `hashCode() % 4` or `#root.length()` work on the key.
//!
//! Operator precedence follows SpEL, from loosest: ternary/Elvis, `or`, `and`, relational
//! (one per level), `+ -`, `* / %`, unary, then navigation (`.`, `[]`, calls).
//!
//! ```
//! use stream_core::Message;
//! use stream_core::expression::{Expression, Value};
//!
//! let expr = Expression::parse("payload.customer.id + '-' + headers['region']")?;
//! let msg = Message::bytes(r#"{"customer":{"id":42}}"#)
//!     .with_header("contentType", "application/json")
//!     .with_header("region", "eu");
//! assert_eq!(expr.evaluate(&msg)?, Value::from("42-eu"));
//!
//! let err = Expression::parse("payload.id)")
//!     .map_err(|e| e.with_key("spring.cloud.stream.bindings.out.producer.partition-key-expression"))
//!     .err();
//! assert_eq!(
//!     err.map(|e| e.to_string()).as_deref(),
//!     Some("`spring.cloud.stream.bindings.out.producer.partition-key-expression`: \
//!           unexpected token `)` at column 11 of `payload.id)`")
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod eval;
mod lexer;
mod parser;
mod value;

use std::cell::OnceCell;
use std::fmt;
use std::str::FromStr;

pub use value::{Value, java_string_hash_code};

use crate::message::Message;

/// A parsed expression, ready to be evaluated any number of times.
#[derive(Clone, Debug)]
pub struct Expression {
    source: String,
    ast: parser::Node,
    reads_payload: bool,
}

impl Expression {
    /// Parses `source`. The error carries the 1-based column (in characters) of the problem;
    /// add the property key with [`ExpressionError::with_key`].
    ///
    /// ```
    /// use stream_core::expression::Expression;
    /// let err = Expression::parse("headers['id'] +").err();
    /// assert_eq!(err.map(|e| e.column), Some(16));
    /// ```
    pub fn parse(source: &str) -> Result<Expression, ExpressionError> {
        let ast = lexer::tokenize(source)
            .and_then(parser::parse)
            .map_err(|e| e.with_expression(source))?;
        Ok(Expression {
            source: source.to_owned(),
            reads_payload: ast.reads_root_property("payload"),
            ast,
        })
    }

    /// The expression text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether evaluating against a message reads its payload (decided at parse time); when it
    /// does not, the payload is never decoded.
    pub fn references_payload(&self) -> bool {
        self.reads_payload
    }

    /// Evaluates the expression with the message as root object (`payload`, `headers`).
    ///
    /// ```
    /// use stream_core::Message;
    /// use stream_core::expression::{Expression, Value};
    /// let expr = Expression::parse("payload.length() % 3")?;
    /// let msg = Message::bytes("hello").with_header("contentType", "text/plain");
    /// assert_eq!(expr.evaluate(&msg)?, Value::Int(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evaluate<P: AsRef<[u8]>>(&self, message: &Message<P>) -> Result<Value, EvalError> {
        let ctx = eval::Ctx {
            root: eval::Root::Message {
                payload: message.payload().as_ref(),
                headers: message.headers(),
            },
            payload: OnceCell::new(),
        };
        ctx.eval(&self.ast)
    }

    /// Evaluates the expression with `root` as root object; a selector expression is evaluated
    /// this way against the partition key.
    ///
    /// ```
    /// use stream_core::expression::{Expression, Value};
    /// let expr = Expression::parse("hashCode() % 5")?;
    /// assert_eq!(expr.evaluate_with_root(&Value::from("foo"))?, Value::Int(101574 % 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evaluate_with_root(&self, root: &Value) -> Result<Value, EvalError> {
        let ctx = eval::Ctx {
            root: eval::Root::Value(root),
            payload: OnceCell::new(),
        };
        ctx.eval(&self.ast)
    }
}

impl FromStr for Expression {
    type Err = ExpressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::parse(s)
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// An expression that does not parse.
///
/// Displays as `` `<key>`: <message> at column <n> of `<expression>` `` (the key part only when
/// set with [`ExpressionError::with_key`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpressionError {
    /// The property key holding the expression, when known.
    pub key: Option<String>,
    /// 1-based column (in characters) where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The expression text.
    pub expression: String,
}

impl ExpressionError {
    pub(crate) fn at(column: usize, message: impl Into<String>) -> Self {
        Self {
            key: None,
            column,
            message: message.into(),
            expression: String::new(),
        }
    }

    fn with_expression(mut self, expression: &str) -> Self {
        expression.clone_into(&mut self.expression);
        self
    }

    /// Names the property key that holds the expression.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

impl fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{} at column {}", self.message, self.column)?;
        if !self.expression.is_empty() {
            write!(f, " of `{}`", self.expression)?;
        }
        Ok(())
    }
}

impl std::error::Error for ExpressionError {}

/// An expression failed against a particular message or value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A property, index or method was applied to `null`.
    #[error("cannot read {access} of null at column {column} (use `?.` for null-safe navigation)")]
    NullTarget {
        /// What was read (`property `x``, `method `hashCode()``, ...).
        access: String,
        /// 1-based column.
        column: usize,
    },
    /// The target has no such property.
    #[error("property `{property}` not found on {target} at column {column}")]
    UnknownProperty {
        /// Property name.
        property: String,
        /// Java type name of the target (or `message` / `headers`).
        target: &'static str,
        /// 1-based column.
        column: usize,
    },
    /// The method does not apply to this type or argument.
    #[error("method `{method}()` cannot be applied to {target} at column {column}")]
    MethodNotApplicable {
        /// Method name.
        method: &'static str,
        /// Java type name of the target or offending argument.
        target: &'static str,
        /// 1-based column.
        column: usize,
    },
    /// An operator applied to operand types it does not support.
    #[error("operator `{op}` cannot be applied to {left}{}{right} at column {column}", if right.is_empty() { "" } else { " and " })]
    Operator {
        /// The operator.
        op: &'static str,
        /// Left (or only) operand type.
        left: &'static str,
        /// Right operand type (empty for a unary operator).
        right: &'static str,
        /// 1-based column.
        column: usize,
    },
    /// Integer division or remainder by zero (Java's `ArithmeticException`).
    #[error("division by zero at column {column}")]
    DivisionByZero {
        /// 1-based column.
        column: usize,
    },
    /// An index that is out of bounds or of the wrong type.
    #[error("invalid index {index} into {target} at column {column}")]
    Index {
        /// The index as text.
        index: String,
        /// Java type name of the target.
        target: &'static str,
        /// 1-based column.
        column: usize,
    },
    /// The message itself was used as a value (`#root` of a message expression).
    #[error("the message itself is not a value; use `payload` or `headers`")]
    MessageAsValue,
    /// A boolean was required.
    #[error("expected a boolean but found {found} at column {column}")]
    NotBoolean {
        /// Java type name found.
        found: &'static str,
        /// 1-based column.
        column: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn json_msg(body: &str) -> Message {
        Message::bytes(body.to_owned()).with_header("contentType", "application/json")
    }

    fn eval(src: &str, msg: &Message) -> Result<Value, String> {
        Expression::parse(src)
            .map_err(|e| e.to_string())?
            .evaluate(msg)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn expression_json_payload_fields() {
        let msg = json_msg(
            r#"{"id": 7, "big": 3000000000, "customer": {"name": "ann"}, "items": [1.5, "x"], "n": null}"#,
        );
        assert_eq!(eval("payload.id", &msg), Ok(Value::Int(7)));
        assert_eq!(eval("payload['id']", &msg), Ok(Value::Int(7)));
        assert_eq!(eval("payload.big", &msg), Ok(Value::Long(3_000_000_000)));
        assert_eq!(eval("payload.customer.name", &msg), Ok(Value::from("ann")));
        assert_eq!(
            eval("payload['customer']['name']", &msg),
            Ok(Value::from("ann"))
        );
        assert_eq!(eval("payload.items[0]", &msg), Ok(Value::Double(1.5)));
        assert_eq!(eval("payload.items[1]", &msg), Ok(Value::from("x")));
        assert_eq!(eval("payload.items.size()", &msg), Ok(Value::Int(2)));
        assert_eq!(eval("payload.missing", &msg), Ok(Value::Null));
        assert_eq!(eval("payload.n?.x", &msg), Ok(Value::Null));
        assert_eq!(
            eval("payload.customer", &msg),
            Ok(Value::Json(json!({"name": "ann"})))
        );
        assert!(
            eval("payload.n.x", &msg)
                .is_err_and(|e| e.contains("cannot read property `x` of null at column 11"))
        );
        assert!(
            eval("payload.items[5]", &msg).is_err_and(|e| e.contains("invalid index 5 (size 2)"))
        );
        assert!(
            eval("payload.id.x", &msg)
                .is_err_and(|e| e.contains("property `x` not found on Integer"))
        );
    }

    #[test]
    fn expression_payload_decoding_by_content_type() {
        // Text content type: always a string, even when it looks like JSON.
        let text = Message::bytes("123").with_header("contentType", "text/plain");
        assert_eq!(eval("payload", &text), Ok(Value::from("123")));
        // No content type: JSON if it parses, else text.
        assert_eq!(eval("payload", &Message::bytes("123")), Ok(Value::Int(123)));
        assert_eq!(
            eval("payload", &Message::bytes("hello")),
            Ok(Value::from("hello"))
        );
        // JSON content type with a raw (unquoted) string, as Spring sends a String payload.
        assert_eq!(
            eval("payload", &json_msg("hello")),
            Ok(Value::from("hello"))
        );
        assert_eq!(
            eval("payload", &json_msg("\"hello\"")),
            Ok(Value::from("hello"))
        );
        let vendor = Message::bytes(r#"{"a":1}"#)
            .with_header("contentType", "application/vnd.order+json; charset=utf-8");
        assert_eq!(eval("payload.a", &vendor), Ok(Value::Int(1)));
        assert_eq!(eval("payload.hashCode()", &text), Ok(Value::Int(48690)));
        // Generic payload types work too.
        let owned: Message<Vec<u8>> = Message::new(b"abc".to_vec());
        let expr = Expression::parse("payload.length()");
        assert_eq!(
            expr.ok().and_then(|e| e.evaluate(&owned).ok()),
            Some(Value::Int(3))
        );
    }

    #[test]
    fn expression_headers() {
        let msg = Message::bytes(Bytes::new())
            .with_header("region", "eu")
            .with_header("count", 3_i32)
            .with_header("big", 5_i64)
            .with_header("flag", true)
            .with_header(
                "map",
                crate::HeaderValue::Map([("x".to_owned(), "y".into())].into()),
            );
        assert_eq!(eval("headers['region']", &msg), Ok(Value::from("eu")));
        assert_eq!(eval("headers.region", &msg), Ok(Value::from("eu")));
        assert_eq!(eval("headers['count']", &msg), Ok(Value::Int(3)));
        assert_eq!(eval("headers.big", &msg), Ok(Value::Long(5)));
        assert_eq!(eval("headers['map'].x", &msg), Ok(Value::from("y")));
        assert_eq!(eval("headers['missing']", &msg), Ok(Value::Null));
        assert_eq!(eval("headers.flag ? 'a' : 'b'", &msg), Ok(Value::from("a")));
        assert_eq!(
            eval("headers.missing ?: 'dflt'", &msg),
            Ok(Value::from("dflt"))
        );
        assert_eq!(
            eval("headers['count'] + headers.big", &msg),
            Ok(Value::Long(8))
        );
        assert!(eval("headers.x.y", &msg).is_err());
        let expr = Expression::parse("headers['region'] + 1").ok();
        assert_eq!(expr.map(|e| e.references_payload()), Some(false));
    }

    #[test]
    fn expression_payload_not_decoded_without_reference() {
        // Invalid UTF-8 and invalid JSON: never touched when only headers are read.
        let msg = Message::bytes(vec![0xff, 0xfe]).with_header("k", "v");
        assert_eq!(eval("headers.k", &msg), Ok(Value::from("v")));
    }

    #[test]
    fn expression_operators_and_precedence() {
        let msg = Message::bytes(Bytes::new());
        let cases: &[(&str, Value)] = &[
            ("1 + 2 * 3", Value::Int(7)),
            ("(1 + 2) * 3", Value::Int(9)),
            ("10 - 4 - 3", Value::Int(3)),
            ("-7 % 3", Value::Int(-1)),
            ("7 % -3", Value::Int(1)),
            ("-7 / 2", Value::Int(-3)),
            ("7 div 2 + 7 mod 2", Value::Int(4)),
            ("2147483647 + 1", Value::Int(i32::MIN)),
            ("-2147483647 - 1", Value::Int(i32::MIN)),
            ("(-2147483647 - 1) / -1", Value::Int(i32::MIN)),
            ("(-2147483647 - 1) % -1", Value::Int(0)),
            ("2147483647L + 1", Value::Long(2_147_483_648)),
            ("7 / 2.0", Value::Double(3.5)),
            ("5.5 % 2", Value::Double(1.5)),
            ("'a' + 1 + 2", Value::String("a12".into())),
            ("1 + 2 + 'a'", Value::String("3a".into())),
            ("'a' + null", Value::String("anull".into())),
            ("'x' + 1.0", Value::String("x1.0".into())),
            ("'it''s' + \"\"\"q\"\"\"", Value::String("it's\"q\"".into())),
            ("1 == 1L", Value::Bool(true)),
            ("1 == 1.0", Value::Bool(true)),
            ("'a' != 'b'", Value::Bool(true)),
            ("'a' < 'b' and 2 >= 2", Value::Bool(true)),
            ("1 > 2 or !false", Value::Bool(true)),
            ("null == null", Value::Bool(true)),
            ("1 + 1 == 2 ? 'y' : 'n'", Value::String("y".into())),
            ("- -3", Value::Int(3)),
            ("0x7FFFFFFF", Value::Int(i32::MAX)),
            ("'hello'.hashCode()", Value::Int(99_162_322)),
            ("'hello'.length()", Value::Int(5)),
            ("'😀'.length()", Value::Int(2)),
            ("123.toString() + 1", Value::String("1231".into())),
            ("true.hashCode()", Value::Int(1231)),
            ("'  Ab '.trim().toUpperCase()", Value::String("AB".into())),
            ("'hello'.substring(1, 3)", Value::String("el".into())),
            ("'hello'.startsWith('he')", Value::Bool(true)),
            ("'a'.equals('a')", Value::Bool(true)),
            ("1.0E7.toString()", Value::String("1.0E7".into())),
            ("#root['headers'] == null", Value::Bool(false)),
        ];
        for (src, expected) in cases {
            assert_eq!(eval(src, &msg).as_ref(), Ok(expected), "{src}");
        }
    }

    #[test]
    fn expression_evaluation_errors() {
        let msg = Message::bytes(Bytes::new());
        let cases = [
            ("1 / 0", "division by zero at column 3"),
            ("1 % 0L", "division by zero at column 3"),
            (
                "true + 1",
                "operator `+` cannot be applied to Boolean and Integer at column 6",
            ),
            (
                "-'a'",
                "operator `-` cannot be applied to String at column 1",
            ),
            (
                "1 && true",
                "expected a boolean but found Integer at column 3",
            ),
            ("foo", "property `foo` not found on message at column 1"),
            ("#root", "the message itself is not a value"),
            (
                "1.length()",
                "method `length()` cannot be applied to Integer at column 3",
            ),
            (
                "null.hashCode()",
                "cannot read method `hashCode()` of null at column 6",
            ),
            (
                "'abc'.substring(2, 1)",
                "invalid index 2..1 (length 3) into String",
            ),
        ];
        for (src, expected) in cases {
            let got = eval(src, &msg);
            assert!(
                got.as_ref().is_err_and(|e| e.starts_with(expected)),
                "{src}: {got:?}"
            );
        }
        // Divisions by zero on doubles follow IEEE, as in Java.
        assert_eq!(eval("1.0 / 0", &msg), Ok(Value::Double(f64::INFINITY)));
    }

    #[test]
    fn expression_root_value_for_selectors() {
        let key = Value::from("foo");
        let eval_root = |src: &str, root: &Value| {
            Expression::parse(src)
                .map_err(|e| e.to_string())?
                .evaluate_with_root(root)
                .map_err(|e| e.to_string())
        };
        assert_eq!(eval_root("hashCode()", &key), Ok(Value::Int(101_574)));
        assert_eq!(eval_root("#root.length() * 2", &key), Ok(Value::Int(6)));
        assert_eq!(eval_root("#this + '!'", &key), Ok(Value::from("foo!")));
        let obj = Value::from(json!({"region": "eu"}));
        assert_eq!(eval_root("region", &obj), Ok(Value::from("eu")));
        assert_eq!(eval_root("['region']", &obj), Ok(Value::from("eu")));
        assert!(eval_root("payload", &key).is_err_and(|e| e.contains("not found on String")));
    }

    #[test]
    fn expression_error_display_with_key() {
        let err = Expression::parse("payload.id )")
            .map_err(|e| {
                e.with_key("spring.cloud.stream.bindings.out.producer.partition-key-expression")
            })
            .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                "`spring.cloud.stream.bindings.out.producer.partition-key-expression`: \
                 unexpected token `)` at column 12 of `payload.id )`"
                    .to_owned()
            )
        );
        let err = Expression::parse("'abc").err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("unterminated string literal at column 1 of `'abc`".to_owned())
        );
        // Columns count characters, not bytes.
        assert_eq!(
            Expression::parse("'😀' + )").err().map(|e| e.column),
            Some(7)
        );
    }
}
