//! Typed header values and the header map.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// One header value.
///
/// The variants cover every AMQP 0-9-1 field-table type (so a RabbitMQ header survives a round
/// trip unchanged) and RocketMQ's string properties (carried as [`HeaderValue::String`]).
///
/// ```
/// use stream_core::HeaderValue;
/// let v = HeaderValue::from(3_i32);
/// assert_eq!(v.as_i64(), Some(3));
/// assert_eq!(v.to_string(), "3");
/// assert_eq!(HeaderValue::from("x").as_str(), Some("x"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HeaderValue {
    /// No value (AMQP `void`).
    Null,
    /// A boolean.
    Bool(bool),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 32-bit integer (Java `Integer`).
    I32(i32),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 64-bit integer (Java `Long`).
    I64(i64),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// AMQP decimal: `unscaled / 10^scale`.
    Decimal {
        /// Number of decimal places.
        scale: u8,
        /// The unscaled value's 32 bits as on the wire; the RabbitMQ Java client (and so
        /// Spring) reads them as a signed two's-complement integer, and so does `Display`
        /// (`0xFFFF_FFF1` with scale 1 is `-1.5`).
        value: u32,
    },
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Bytes),
    /// A list of values (AMQP field array).
    List(Vec<HeaderValue>),
    /// A nested map (AMQP field table).
    Map(BTreeMap<String, HeaderValue>),
    /// A point in time with second precision on AMQP, millisecond precision elsewhere.
    Timestamp(SystemTime),
}

impl HeaderValue {
    /// The text of a [`HeaderValue::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer variant widened to `i64` (a `u64` above `i64::MAX` gives `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            HeaderValue::I8(v) => Some(v.into()),
            HeaderValue::U8(v) => Some(v.into()),
            HeaderValue::I16(v) => Some(v.into()),
            HeaderValue::U16(v) => Some(v.into()),
            HeaderValue::I32(v) => Some(v.into()),
            HeaderValue::U32(v) => Some(v.into()),
            HeaderValue::I64(v) => Some(v),
            HeaderValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a boolean: a `Bool`, or the strings `true`/`false` (any case).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            HeaderValue::Bool(b) => Some(*b),
            HeaderValue::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            HeaderValue::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// The value as an integer, also parsing a decimal string (RocketMQ properties are strings).
    pub fn to_i64_lenient(&self) -> Option<i64> {
        self.as_i64()
            .or_else(|| self.as_str().and_then(|s| s.trim().parse().ok()))
    }
}

impl fmt::Display for HeaderValue {
    /// Renders the value as text the way it travels in a string-only header system (RocketMQ
    /// user properties): numbers in decimal, bytes as lossy UTF-8, timestamps as epoch millis.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Null => Ok(()),
            HeaderValue::Bool(v) => write!(f, "{v}"),
            HeaderValue::I8(v) => write!(f, "{v}"),
            HeaderValue::U8(v) => write!(f, "{v}"),
            HeaderValue::I16(v) => write!(f, "{v}"),
            HeaderValue::U16(v) => write!(f, "{v}"),
            HeaderValue::I32(v) => write!(f, "{v}"),
            HeaderValue::U32(v) => write!(f, "{v}"),
            HeaderValue::I64(v) => write!(f, "{v}"),
            HeaderValue::U64(v) => write!(f, "{v}"),
            HeaderValue::F32(v) => write!(f, "{v}"),
            HeaderValue::F64(v) => write!(f, "{v}"),
            HeaderValue::Decimal { scale, value } => write_decimal(f, *scale, *value),
            HeaderValue::String(s) => f.write_str(s),
            HeaderValue::Bytes(b) => f.write_str(&String::from_utf8_lossy(b)),
            HeaderValue::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            HeaderValue::Map(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
            HeaderValue::Timestamp(t) => {
                let millis = t
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis();
                write!(f, "{millis}")
            }
        }
    }
}

/// Renders an AMQP decimal as Java's `BigDecimal.toPlainString()` does: the unscaled 32 bits
/// read as a signed (two's complement) integer, as the RabbitMQ Java client and so Spring read
/// them, and any scale (0 to 255) placed by moving the decimal point in the digits, so no
/// arithmetic can overflow (`10^scale` does for scales above 19).
fn write_decimal(f: &mut fmt::Formatter<'_>, scale: u8, value: u32) -> fmt::Result {
    let unscaled = i32::from_be_bytes(value.to_be_bytes());
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        write!(f, "{sign}{digits}")
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    } else {
        write!(f, "{sign}0.{digits:0>scale$}")
    }
}

macro_rules! from_impl {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for HeaderValue {
            fn from(v: $t) -> Self {
                HeaderValue::$v(v)
            }
        })*
    };
}

from_impl!(
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, u64 => U64, f32 => F32, f64 => F64, String => String, Bytes => Bytes,
    Vec<HeaderValue> => List, BTreeMap<String, HeaderValue> => Map, SystemTime => Timestamp,
);

impl From<&str> for HeaderValue {
    fn from(v: &str) -> Self {
        HeaderValue::String(v.to_owned())
    }
}

/// A header name: borrowed for the well-known `'static` names, so that setting them allocates
/// nothing; owned for names read off the wire.
pub type HeaderName = Cow<'static, str>;

type HeaderMap = BTreeMap<HeaderName, HeaderValue>;

/// Message headers: an ordered map from name to [`HeaderValue`].
///
/// Names are case-sensitive, as in Spring's `MessageHeaders`. The map is copy-on-write: cloning
/// `Headers` (and so a [`Message`](crate::Message)) shares it, and the first change to a shared
/// copy copies it. Well-known names (`&'static str`) are stored without allocating.
///
/// ```
/// use stream_core::{HeaderValue, Headers};
/// let mut h = Headers::new();
/// h.insert("contentType", "text/plain");
/// h.insert("scst_partition", 1_i32);
/// assert_eq!(h.get_str("contentType"), Some("text/plain"));
/// assert_eq!(h.get("scst_partition"), Some(&HeaderValue::I32(1)));
/// assert_eq!(h.len(), 2);
///
/// let shared = h.clone(); // no copy yet
/// h.insert(String::from("custom"), true); // names read at run time are owned
/// assert_eq!((h.len(), shared.len()), (3, 2));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Headers {
    /// `None` while empty, so a message without headers allocates nothing for them.
    map: Option<Arc<HeaderMap>>,
}

static EMPTY: HeaderMap = BTreeMap::new();

impl Headers {
    /// An empty header map.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> &HeaderMap {
        self.map.as_deref().unwrap_or(&EMPTY)
    }

    fn map_mut(&mut self) -> &mut HeaderMap {
        Arc::make_mut(self.map.get_or_insert_with(Default::default))
    }

    /// Sets a header, returning the previous value.
    pub fn insert(
        &mut self,
        name: impl Into<HeaderName>,
        value: impl Into<HeaderValue>,
    ) -> Option<HeaderValue> {
        self.map_mut().insert(name.into(), value.into())
    }

    /// The value of a header.
    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.map().get(name)
    }

    /// The value of a string header.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(HeaderValue::as_str)
    }

    /// Removes a header, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<HeaderValue> {
        if !self.contains(name) {
            return None;
        }
        self.map_mut().remove(name)
    }

    /// Whether the header is present.
    pub fn contains(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HeaderValue)> {
        self.map().iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Keeps only the headers for which `keep` returns true (copies a shared map only when
    /// something is removed).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &HeaderValue) -> bool) {
        if self.iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        self.map_mut().retain(|k, v| keep(k, v));
    }

    /// Copies every header of `other` into `self`, replacing existing names.
    pub fn extend_from(&mut self, other: &Headers) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.map.clone_from(&other.map);
            return;
        }
        let map = self.map_mut();
        for (k, v) in other.map() {
            map.insert(k.clone(), v.clone());
        }
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

impl<K: Into<HeaderName>, V: Into<HeaderValue>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: HeaderMap = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            map: (!map.is_empty()).then(|| Arc::new(map)),
        }
    }
}

impl IntoIterator for Headers {
    type Item = (HeaderName, HeaderValue);
    type IntoIter = std::collections::btree_map::IntoIter<HeaderName, HeaderValue>;
    fn into_iter(self) -> Self::IntoIter {
        match self.map {
            Some(map) => Arc::unwrap_or_clone(map).into_iter(),
            None => HeaderMap::new().into_iter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_renders_with_scale() {
        let d = HeaderValue::Decimal {
            scale: 2,
            value: 12345,
        };
        assert_eq!(d.to_string(), "123.45");
        let d = HeaderValue::Decimal { scale: 3, value: 5 };
        assert_eq!(d.to_string(), "0.005");
    }

    #[test]
    fn decimal_renders_as_java_reads_it() {
        let d = |scale, value| HeaderValue::Decimal { scale, value }.to_string();
        // Java's BigDecimal("-1.5") travels as scale 1, unscaled -15 (two's complement).
        assert_eq!(d(1, (-15_i32).cast_unsigned()), "-1.5");
        assert_eq!(d(0, u32::MAX), "-1");
        assert_eq!(d(0, 0x8000_0000), "-2147483648");
        assert_eq!(d(2, 5), "0.05");
        assert_eq!(d(3, 12345), "12.345");
        // Scales past 10^19 used to overflow u64 (a panic in debug builds).
        assert_eq!(d(25, 7), format!("0.{}7", "0".repeat(24)));
        assert_eq!(d(255, 1).len(), 2 + 255);
        assert_eq!(d(255, i32::MIN.cast_unsigned()).len(), 3 + 255);
    }

    #[test]
    fn lenient_integer_reads_string_properties() {
        assert_eq!(HeaderValue::from(" 42 ").to_i64_lenient(), Some(42));
        assert_eq!(HeaderValue::from(u64::MAX).as_i64(), None);
        assert_eq!(HeaderValue::from("x").to_i64_lenient(), None);
    }

    #[test]
    fn nested_values_render() {
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_owned(),
            HeaderValue::from(vec![1_i32.into(), true.into()]),
        );
        assert_eq!(HeaderValue::Map(m).to_string(), "{a=[1, true]}");
    }
}
