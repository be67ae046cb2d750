//! The value an expression produces, with Java's `hashCode` and `String.valueOf`.

use std::fmt;

use crate::message::HeaderValue;

/// The result of evaluating an [`Expression`](super::Expression), modelled on the Java objects
/// Spring's SpEL would produce, so that [`Value::java_hash_code`] and [`Value`]'s `Display`
/// (Java's `String.valueOf`) match the Java side.
///
/// Numbers read from JSON become [`Value::Int`] when they fit a Java `int`, else
/// [`Value::Long`], else (integers above `i64::MAX`) a [`Value::Json`] number (Jackson's
/// `BigInteger`); numbers with a fraction or exponent become [`Value::Double`], as Jackson does.
/// JSON objects and arrays stay [`Value::Json`] (Java `LinkedHashMap` / `ArrayList`).
///
/// ```
/// use stream_core::expression::Value;
/// assert_eq!(Value::from("hello").java_hash_code(), 99162322);
/// assert_eq!(Value::Long(1 << 32).java_hash_code(), 1);
/// assert_eq!(Value::Double(1e7).to_string(), "1.0E7");
/// assert_eq!(Value::from(serde_json::json!({"a": 1})).to_string(), "{a=1}");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// Java `null` (a missing header or JSON field).
    Null,
    /// `java.lang.Boolean`.
    Bool(bool),
    /// `java.lang.Integer`.
    Int(i32),
    /// `java.lang.Long`.
    Long(i64),
    /// `java.lang.Double`.
    Double(f64),
    /// `java.lang.String`.
    String(String),
    /// A JSON object or array (Java `Map` / `List`), or a JSON integer beyond `i64` (Java
    /// `BigInteger`). Scalars are never stored here by this module's conversions.
    Json(serde_json::Value),
}

impl Value {
    /// The Java type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "Boolean",
            Value::Int(_) => "Integer",
            Value::Long(_) => "Long",
            Value::Double(_) => "Double",
            Value::String(_) => "String",
            Value::Json(serde_json::Value::Object(_)) => "JSON object",
            Value::Json(serde_json::Value::Array(_)) => "JSON array",
            Value::Json(_) => "JSON value",
        }
    }

    /// Whether the value is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Java's `hashCode()` of the equivalent Java object: `String.hashCode` over UTF-16 code
    /// units, an `Integer`'s value, `Long`: `(int)(v ^ (v >>> 32))`, `Double`: the same over
    /// `doubleToLongBits`, `Boolean`: 1231 / 1237, `null`: 0, a JSON object: `AbstractMap`'s sum
    /// of `key.hashCode() ^ value.hashCode()`, a JSON array: `List`'s `31 * h + e.hashCode()`
    /// from 1, and a big integer: `BigInteger.hashCode`.
    pub fn java_hash_code(&self) -> i32 {
        match self {
            Value::Null => 0,
            Value::Bool(true) => 1231,
            Value::Bool(false) => 1237,
            Value::Int(v) => *v,
            Value::Long(v) => long_hash(*v),
            Value::Double(v) => double_hash(*v),
            Value::String(s) => java_string_hash_code(s),
            Value::Json(j) => json_hash(j),
        }
    }

    /// Converts a JSON value the way Jackson reads it into Java objects (see the type docs).
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => number_value(&n).unwrap_or(Value::Json(n.into())),
            serde_json::Value::String(s) => Value::String(s),
            other => Value::Json(other),
        }
    }

    /// Like [`Value::from_json`] for a borrowed value (objects and arrays are cloned).
    pub fn from_json_ref(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                number_value(n).unwrap_or_else(|| Value::Json(json.clone()))
            }
            serde_json::Value::String(s) => Value::String(s.clone()),
            other => Value::Json(other.clone()),
        }
    }

    /// Converts a header value to the Java object Spring would see: 8/16/32-bit integers as
    /// `Integer`, unsigned 32-bit and 64-bit as `Long`, floats and AMQP decimals as `Double`,
    /// bytes as a (lossy UTF-8) `String`, a timestamp as its epoch milliseconds (`Long`, whose
    /// hash equals `java.util.Date`'s), lists and maps as JSON.
    pub fn from_header(header: &HeaderValue) -> Value {
        match header {
            HeaderValue::Null => Value::Null,
            HeaderValue::Bool(b) => Value::Bool(*b),
            HeaderValue::I8(v) => Value::Int((*v).into()),
            HeaderValue::U8(v) => Value::Int((*v).into()),
            HeaderValue::I16(v) => Value::Int((*v).into()),
            HeaderValue::U16(v) => Value::Int((*v).into()),
            HeaderValue::I32(v) => Value::Int(*v),
            HeaderValue::U32(v) => Value::Long((*v).into()),
            HeaderValue::I64(v) => Value::Long(*v),
            HeaderValue::U64(v) => match i64::try_from(*v) {
                Ok(v) => Value::Long(v),
                Err(_) => Value::Json((*v).into()),
            },
            HeaderValue::F32(v) => Value::Double((*v).into()),
            HeaderValue::F64(v) => Value::Double(*v),
            HeaderValue::String(s) => Value::String(s.clone()),
            HeaderValue::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            HeaderValue::Timestamp(_) => match header.to_string().parse::<i64>() {
                Ok(millis) => Value::Long(millis),
                Err(_) => Value::Null,
            },
            other => Value::from_json(header_to_json(other)),
        }
    }
}

fn number_value(n: &serde_json::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        Some(match i32::try_from(i) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Long(i),
        })
    } else if n.is_u64() {
        None
    } else {
        n.as_f64().map(Value::Double)
    }
}

fn header_to_json(header: &HeaderValue) -> serde_json::Value {
    use serde_json::Value as J;
    match header {
        HeaderValue::List(items) => J::Array(items.iter().map(header_to_json).collect()),
        HeaderValue::Map(map) => J::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), header_to_json(v)))
                .collect(),
        ),
        HeaderValue::Decimal { .. } => header
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(J::Null, J::Number),
        other => match Value::from_header(other) {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(b),
            Value::Int(v) => v.into(),
            Value::Long(v) => v.into(),
            Value::Double(v) => serde_json::Number::from_f64(v).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s),
            Value::Json(j) => j,
        },
    }
}

fn long_hash(v: i64) -> i32 {
    (v ^ ((v as u64) >> 32) as i64) as i32
}

fn double_hash(v: f64) -> i32 {
    // Double.doubleToLongBits collapses every NaN to the canonical one.
    let bits = if v.is_nan() {
        0x7ff8_0000_0000_0000_i64
    } else {
        v.to_bits() as i64
    };
    long_hash(bits)
}

fn json_hash(json: &serde_json::Value) -> i32 {
    match json {
        serde_json::Value::Object(map) => map.iter().fold(0_i32, |h, (k, v)| {
            h.wrapping_add(java_string_hash_code(k) ^ json_hash(v))
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .fold(1_i32, |h, e| h.wrapping_mul(31).wrapping_add(json_hash(e))),
        serde_json::Value::Number(n) => match number_value(n) {
            Some(v) => v.java_hash_code(),
            None => n.as_u64().map_or(0, big_integer_hash),
        },
        other => Value::from_json_ref(other).java_hash_code(),
    }
}

/// `BigInteger.hashCode` of a positive value: `31 * h + word` over its big-endian 32-bit words.
fn big_integer_hash(v: u64) -> i32 {
    let hi = (v >> 32) as u32;
    let lo = v as u32;
    let words: &[u32] = if hi == 0 { &[lo] } else { &[hi, lo] };
    words
        .iter()
        .fold(0_i32, |h, w| h.wrapping_mul(31).wrapping_add(*w as i32))
}

/// Java's `Double.toString` (JDK 19+, shortest representation that round-trips).
pub(super) fn java_double_to_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let abs = v.abs();
    if (1e-3..1e7).contains(&abs) {
        let s = format!("{v}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        if mantissa.contains('.') {
            format!("{mantissa}E{exponent}")
        } else {
            format!("{mantissa}.0E{exponent}")
        }
    }
}

fn write_json_java(f: &mut fmt::Formatter<'_>, json: &serde_json::Value) -> fmt::Result {
    match json {
        serde_json::Value::Object(map) => {
            f.write_str("{")?;
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}=")?;
                write_json_java(f, v)?;
            }
            f.write_str("}")
        }
        serde_json::Value::Array(items) => {
            f.write_str("[")?;
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_json_java(f, v)?;
            }
            f.write_str("]")
        }
        serde_json::Value::Number(n) if n.is_u64() && n.as_i64().is_none() => write!(f, "{n}"),
        other => write!(f, "{}", Value::from_json_ref(other)),
    }
}

impl fmt::Display for Value {
    /// Java's `String.valueOf`: `null`, `true`, integers in decimal, doubles as
    /// `Double.toString` (`1.0`, `1.0E7`), strings as they are, JSON objects and arrays as
    /// Java's `Map`/`List` `toString` (`{a=1, b=x}`, `[1, 2]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Double(v) => f.write_str(&java_double_to_string(*v)),
            Value::String(s) => f.write_str(s),
            Value::Json(j) => write_json_java(f, j),
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Long(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::from_json(v)
    }
}

impl From<&HeaderValue> for Value {
    fn from(v: &HeaderValue) -> Self {
        Value::from_header(v)
    }
}

/// Java's `String.hashCode()`: `h = 31 * h + c` over the UTF-16 code units, wrapping, from 0.
///
/// ```
/// use stream_core::expression::java_string_hash_code;
/// assert_eq!(java_string_hash_code("foo"), 101574);
/// assert_eq!(java_string_hash_code("😀"), 1772899);
/// assert_eq!(java_string_hash_code("polygenelubricants"), i32::MIN);
/// ```
pub fn java_string_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0_i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expression_value_java_hash_codes() {
        assert_eq!(Value::Bool(true).java_hash_code(), 1231);
        assert_eq!(Value::Bool(false).java_hash_code(), 1237);
        assert_eq!(Value::Int(-7).java_hash_code(), -7);
        // Long.hashCode: (int)(v ^ (v >>> 32)).
        assert_eq!(Value::Long(-1).java_hash_code(), 0);
        assert_eq!(Value::Long(1 << 32).java_hash_code(), 1);
        assert_eq!(Value::Long(3_000_000_000).java_hash_code(), -1_294_967_296);
        // Double.hashCode(1.0): bits 0x3FF0000000000000 -> 0x3FF00000.
        assert_eq!(Value::Double(1.0).java_hash_code(), 1_072_693_248);
        assert_eq!(Value::Double(f64::NAN).java_hash_code(), 2_146_959_360);
        assert_eq!(Value::Null.java_hash_code(), 0);
        // new ArrayList<>(List.of(1, 2)).hashCode() = 31 * (31 * 1 + 1) + 2 = 994.
        assert_eq!(Value::from(json!([1, 2])).java_hash_code(), 994);
        // Map.of("a", 1).hashCode() = "a".hashCode() ^ 1 = 97 ^ 1 = 96.
        assert_eq!(Value::from(json!({"a": 1})).java_hash_code(), 96);
        // new BigInteger("18446744073709551615").hashCode(): 31 * -1 + -1 = -32.
        assert_eq!(Value::from(json!(u64::MAX)).java_hash_code(), -32);
    }

    #[test]
    fn expression_value_json_numbers_like_jackson() {
        assert_eq!(Value::from(json!(5)), Value::Int(5));
        assert_eq!(
            Value::from(json!(2_147_483_648_i64)),
            Value::Long(2_147_483_648)
        );
        assert_eq!(Value::from(json!(-2_147_483_648_i64)), Value::Int(i32::MIN));
        assert_eq!(Value::from(json!(1.5)), Value::Double(1.5));
        assert!(matches!(Value::from(json!(u64::MAX)), Value::Json(_)));
    }

    #[test]
    fn expression_value_java_to_string() {
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1234567.5, "1234567.5"),
            (1e7, "1.0E7"),
            (1.5e-5, "1.5E-5"),
            (0.001, "0.001"),
            (1e-4, "1.0E-4"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (v, expected) in cases {
            assert_eq!(Value::Double(v).to_string(), expected);
        }
        assert_eq!(Value::Null.to_string(), "null");
        assert_eq!(Value::Long(-5).to_string(), "-5");
        assert_eq!(
            Value::from(json!({"a": [1, "x", null], "b": 2.0})).to_string(),
            "{a=[1, x, null], b=2.0}"
        );
    }

    #[test]
    fn expression_value_from_headers() {
        assert_eq!(Value::from_header(&HeaderValue::I16(-3)), Value::Int(-3));
        assert_eq!(Value::from_header(&HeaderValue::I64(3)), Value::Long(3));
        assert_eq!(
            Value::from_header(&HeaderValue::from("x")),
            Value::from("x")
        );
        let list = HeaderValue::List(vec![1_i32.into(), "a".into()]);
        assert_eq!(Value::from_header(&list), Value::Json(json!([1, "a"])));
        let dec = HeaderValue::Decimal {
            scale: 2,
            value: 150,
        };
        assert_eq!(Value::from_header(&dec), Value::Double(1.5));
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1234);
        assert_eq!(
            Value::from_header(&HeaderValue::Timestamp(t)),
            Value::Long(1234)
        );
    }
}
