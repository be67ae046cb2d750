//! Header mapping between [`stream_core::Message`] headers and AMQP properties/headers, named as
//! Spring AMQP's `DefaultAmqpHeaderMapper` names them, plus header patterns and the DLQ
//! stack-trace truncation.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use stream_core::message::names;
use stream_core::{HeaderValue, Headers};

/// Spring AMQP header names (`AmqpHeaders`).
pub mod amqp {
    /// `app_id`.
    pub const APP_ID: &str = "amqp_appId";
    /// `cluster_id`.
    pub const CLUSTER_ID: &str = "amqp_clusterId";
    /// `content_encoding`.
    pub const CONTENT_ENCODING: &str = "amqp_contentEncoding";
    /// `correlation_id`.
    pub const CORRELATION_ID: &str = "amqp_correlationId";
    /// Outbound `delivery_mode`.
    pub const DELIVERY_MODE: &str = "amqp_deliveryMode";
    /// Inbound `delivery_mode`.
    pub const RECEIVED_DELIVERY_MODE: &str = "amqp_receivedDeliveryMode";
    /// Delivery tag of an inbound message.
    pub const DELIVERY_TAG: &str = "amqp_deliveryTag";
    /// `expiration`.
    pub const EXPIRATION: &str = "amqp_expiration";
    /// `message_id`.
    pub const MESSAGE_ID: &str = "amqp_messageId";
    /// Exchange an inbound message was published to.
    pub const RECEIVED_EXCHANGE: &str = "amqp_receivedExchange";
    /// Routing key an inbound message was published with.
    pub const RECEIVED_ROUTING_KEY: &str = "amqp_receivedRoutingKey";
    /// Inbound `user_id`.
    pub const RECEIVED_USER_ID: &str = "amqp_receivedUserId";
    /// Whether an inbound message is redelivered.
    pub const REDELIVERED: &str = "amqp_redelivered";
    /// `reply_to`.
    pub const REPLY_TO: &str = "amqp_replyTo";
    /// `timestamp`.
    pub const TIMESTAMP: &str = "amqp_timestamp";
    /// `type`.
    pub const TYPE: &str = "amqp_type";
    /// Outbound `user_id`.
    pub const USER_ID: &str = "amqp_userId";
    /// Queue an inbound message was consumed from.
    pub const CONSUMER_QUEUE: &str = "amqp_consumerQueue";
    /// Consumer tag of the consumer that received an inbound message.
    pub const CONSUMER_TAG: &str = "amqp_consumerTag";
    /// `priority` (Spring Integration's priority header; `amqp_priority` is accepted outbound).
    pub const PRIORITY: &str = "priority";
    /// Outbound alias of [`PRIORITY`].
    pub const AMQP_PRIORITY: &str = "amqp_priority";
    /// Prefix of every Spring AMQP header.
    pub const PREFIX: &str = "amqp_";
}

/// Header-name patterns (`header-patterns`): `*` matches any run of characters, a leading `!`
/// negates, the first matching pattern decides, no match means not mapped. Case-insensitive, as
/// in Spring's `AbstractHeaderMapper`.
#[derive(Clone, Debug)]
pub struct HeaderPatterns {
    patterns: Vec<(bool, String)>,
    all: bool,
}

impl HeaderPatterns {
    /// Compiles patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let patterns: Vec<(bool, String)> = patterns
            .iter()
            .map(|p| p.as_ref().trim())
            .filter(|p| !p.is_empty())
            .map(|p| match p.strip_prefix('!') {
                Some(rest) => (true, rest.to_ascii_lowercase()),
                None => (false, p.to_ascii_lowercase()),
            })
            .collect();
        let all = patterns.first().is_some_and(|(neg, p)| !neg && p == "*");
        HeaderPatterns { patterns, all }
    }

    /// Whether `name` is mapped.
    pub fn matches(&self, name: &str) -> bool {
        if self.all {
            return true;
        }
        let lower = name.to_ascii_lowercase();
        for (negated, pattern) in &self.patterns {
            if simple_match(pattern, &lower) {
                return !negated;
            }
        }
        false
    }
}

/// `*`-wildcard match (Spring's `PatternMatchUtils.simpleMatch`).
pub fn simple_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

/// How deep header tables and arrays may nest: a delivery whose headers nest deeper is
/// undecodable ([`unrepresentable`]); [`from_amqp`] stops there, so no conversion recurses
/// without bound on broker data.
pub const MAX_HEADER_DEPTH: usize = 64;

/// A timestamp of `secs` seconds since the epoch: [`HeaderValue::Timestamp`] when the platform's
/// `SystemTime` can hold it, else the seconds as [`HeaderValue::U64`] (AMQP timestamps are
/// 64-bit unsigned; `SystemTime` ends at `i64::MAX` seconds on Unix). Total.
pub fn timestamp_value(secs: u64) -> HeaderValue {
    match UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(t) => HeaderValue::Timestamp(t),
        None => HeaderValue::U64(secs),
    }
}

/// Converts an AMQP field value to a header value, losslessly (timestamps past what
/// `SystemTime` holds become their seconds, see [`timestamp_value`]). Total: tables and arrays
/// nested deeper than [`MAX_HEADER_DEPTH`] end in [`HeaderValue::Null`].
pub fn from_amqp(v: &AMQPValue) -> HeaderValue {
    from_amqp_at(v, 0)
}

fn from_amqp_at(v: &AMQPValue, depth: usize) -> HeaderValue {
    if depth >= MAX_HEADER_DEPTH && matches!(v, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_))
    {
        return HeaderValue::Null;
    }
    match v {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(n) => HeaderValue::I8(*n),
        AMQPValue::ShortShortUInt(n) => HeaderValue::U8(*n),
        AMQPValue::ShortInt(n) => HeaderValue::I16(*n),
        AMQPValue::ShortUInt(n) => HeaderValue::U16(*n),
        AMQPValue::LongInt(n) => HeaderValue::I32(*n),
        AMQPValue::LongUInt(n) => HeaderValue::U32(*n),
        AMQPValue::LongLongInt(n) => HeaderValue::I64(*n),
        AMQPValue::Float(f) => HeaderValue::F32(*f),
        AMQPValue::Double(f) => HeaderValue::F64(*f),
        AMQPValue::DecimalValue(d) => HeaderValue::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => HeaderValue::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => HeaderValue::String(text.to_owned()),
            Err(_) => HeaderValue::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(a) => HeaderValue::List(
            a.as_slice()
                .iter()
                .map(|v| from_amqp_at(v, depth + 1))
                .collect(),
        ),
        AMQPValue::Timestamp(secs) => timestamp_value(*secs),
        AMQPValue::FieldTable(t) => HeaderValue::Map(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), from_amqp_at(v, depth + 1)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => HeaderValue::Null,
    }
}

fn epoch_secs(t: &SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Converts a header value to an AMQP field value.
pub fn to_amqp(v: &HeaderValue) -> AMQPValue {
    match v {
        HeaderValue::Null => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::I8(n) => AMQPValue::ShortShortInt(*n),
        HeaderValue::U8(n) => AMQPValue::ShortShortUInt(*n),
        HeaderValue::I16(n) => AMQPValue::ShortInt(*n),
        HeaderValue::U16(n) => AMQPValue::ShortUInt(*n),
        HeaderValue::I32(n) => AMQPValue::LongInt(*n),
        HeaderValue::U32(n) => AMQPValue::LongUInt(*n),
        HeaderValue::I64(n) => AMQPValue::LongLongInt(*n),
        HeaderValue::U64(n) => match i64::try_from(*n) {
            Ok(i) => AMQPValue::LongLongInt(i),
            Err(_) => AMQPValue::LongString(LongString::from(n.to_string())),
        },
        HeaderValue::F32(f) => AMQPValue::Float(*f),
        HeaderValue::F64(f) => AMQPValue::Double(*f),
        HeaderValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        HeaderValue::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.as_ref())),
        HeaderValue::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(to_amqp).collect::<Vec<_>>(),
        )),
        HeaderValue::Map(m) => AMQPValue::FieldTable(map_table(m)),
        HeaderValue::Timestamp(t) => AMQPValue::Timestamp(epoch_secs(t)),
        // HeaderValue is non-exhaustive: anything new travels as text.
        #[allow(unreachable_patterns, reason = "HeaderValue is #[non_exhaustive]")]
        other => AMQPValue::LongString(LongString::from(other.to_string())),
    }
}

fn map_table(m: &BTreeMap<String, HeaderValue>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in m {
        if let Ok(k) = ShortString::try_new(k.as_str()) {
            t.insert(k, to_amqp(v));
        }
    }
    t
}

/// Where an inbound delivery came from.
#[derive(Debug)]
pub(crate) struct InboundEnvelope<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) queue: &'a str,
    pub(crate) consumer_tag: &'a str,
}

fn put_str(h: &mut Headers, name: &'static str, v: &Option<ShortString>) {
    if let Some(v) = v {
        h.insert(name, v.as_str());
    }
}

/// Maps an inbound AMQP message to headers: the AMQP headers table (filtered by `patterns`),
/// then the properties and envelope as `amqp_*` headers.
pub(crate) fn inbound_headers(
    props: &BasicProperties,
    env: &InboundEnvelope<'_>,
    patterns: &HeaderPatterns,
) -> Headers {
    let mut h = Headers::new();
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            if patterns.matches(k.as_str()) {
                h.insert(names::header_name(k.as_str()), from_amqp(v));
            }
        }
    }
    h.insert(
        names::CONTENT_TYPE,
        props
            .content_type()
            .as_ref()
            .map(|c| c.as_str())
            .unwrap_or("application/octet-stream"),
    );
    put_str(&mut h, amqp::CONTENT_ENCODING, props.content_encoding());
    put_str(&mut h, amqp::CORRELATION_ID, props.correlation_id());
    put_str(&mut h, amqp::REPLY_TO, props.reply_to());
    put_str(&mut h, amqp::EXPIRATION, props.expiration());
    put_str(&mut h, amqp::MESSAGE_ID, props.message_id());
    put_str(&mut h, amqp::TYPE, props.kind());
    put_str(&mut h, amqp::RECEIVED_USER_ID, props.user_id());
    put_str(&mut h, amqp::APP_ID, props.app_id());
    put_str(&mut h, amqp::CLUSTER_ID, props.cluster_id());
    if let Some(mode) = props.delivery_mode() {
        h.insert(
            amqp::RECEIVED_DELIVERY_MODE,
            if *mode == 2 {
                "PERSISTENT"
            } else {
                "NON_PERSISTENT"
            },
        );
    }
    if let Some(p) = props.priority() {
        h.insert(amqp::PRIORITY, i32::from(*p));
    }
    if let Some(ts) = props.timestamp() {
        h.insert(amqp::TIMESTAMP, timestamp_value(*ts));
    }
    h.insert(amqp::RECEIVED_EXCHANGE, env.exchange);
    h.insert(amqp::RECEIVED_ROUTING_KEY, env.routing_key);
    h.insert(
        amqp::DELIVERY_TAG,
        i64::try_from(env.delivery_tag).unwrap_or(i64::MAX),
    );
    h.insert(amqp::REDELIVERED, env.redelivered);
    h.insert(amqp::CONSUMER_QUEUE, env.queue);
    h.insert(amqp::CONSUMER_TAG, env.consumer_tag);
    h
}

/// Marks what the AMQP client decoded lossily: short strings (header names, `type`,
/// `message-id`, routing keys...) are octets on the wire and the client (patched, see
/// docs/rabbit-binder.md) turns octets that are not UTF-8 into U+FFFD instead of failing the
/// connection.
const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Why a delivery cannot be represented faithfully as a message, if it cannot: a short string
/// that was not UTF-8 (decoded lossily, so its name or value is not what was sent), or headers
/// nested deeper than [`MAX_HEADER_DEPTH`]. Such a delivery is undecodable: it takes the error
/// path (dead letter, or reject) without calling the function. Walks the headers without
/// recursion.
pub(crate) fn unrepresentable(
    props: &BasicProperties,
    exchange: &str,
    routing_key: &str,
) -> Option<String> {
    const NOT_UTF8: &str =
        "is not valid UTF-8 (AMQP short strings must be; the client decoded it lossily)";
    let lossy = |s: &str| s.contains(REPLACEMENT);
    if lossy(routing_key) {
        return Some(format!("the routing key `{routing_key}` {NOT_UTF8}"));
    }
    if lossy(exchange) {
        return Some(format!("the exchange name `{exchange}` {NOT_UTF8}"));
    }
    let shorts = [
        ("content-type", props.content_type()),
        ("content-encoding", props.content_encoding()),
        ("correlation-id", props.correlation_id()),
        ("reply-to", props.reply_to()),
        ("expiration", props.expiration()),
        ("message-id", props.message_id()),
        ("type", props.kind()),
        ("user-id", props.user_id()),
        ("app-id", props.app_id()),
        ("cluster-id", props.cluster_id()),
    ];
    for (name, value) in shorts {
        if let Some(v) = value
            && lossy(v.as_str())
        {
            return Some(format!("the `{name}` property `{v}` {NOT_UTF8}"));
        }
    }
    let table = props.headers().as_ref()?;
    // (value, depth, the top-level header it is in)
    let mut stack: Vec<(&AMQPValue, usize, &str)> = Vec::new();
    for (k, v) in table.inner() {
        if lossy(k.as_str()) {
            return Some(format!("the header name `{k}` {NOT_UTF8}"));
        }
        stack.push((v, 1, k.as_str()));
    }
    while let Some((v, depth, top)) = stack.pop() {
        match v {
            AMQPValue::ShortString(s) if lossy(s.as_str()) => {
                return Some(format!("a short string in header `{top}` {NOT_UTF8}"));
            }
            AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) if depth >= MAX_HEADER_DEPTH => {
                return Some(format!(
                    "header `{top}` nests tables or arrays deeper than {MAX_HEADER_DEPTH} levels"
                ));
            }
            AMQPValue::FieldTable(t) => {
                for (k, v) in t.inner() {
                    if lossy(k.as_str()) {
                        return Some(format!(
                            "the name `{k}` in the table of header `{top}` {NOT_UTF8}"
                        ));
                    }
                    stack.push((v, depth + 1, top));
                }
            }
            AMQPValue::FieldArray(a) => {
                stack.extend(a.as_slice().iter().map(|v| (v, depth + 1, top)));
            }
            _ => {}
        }
    }
    None
}

fn short_of(v: &HeaderValue) -> Option<ShortString> {
    let text: Cow<'_, str> = match v {
        HeaderValue::String(s) => Cow::Borrowed(s.as_str()),
        HeaderValue::Null => return None,
        other => Cow::Owned(other.to_string()),
    };
    ShortString::try_new(text.into_owned()).ok()
}

fn timestamp_secs(v: &HeaderValue, millis: bool) -> Option<u64> {
    match v {
        HeaderValue::Timestamp(t) => Some(epoch_secs(t)),
        other => other
            .to_i64_lenient()
            .and_then(|n| u64::try_from(n).ok())
            .map(|n| if millis { n / 1000 } else { n }),
    }
}

fn delivery_mode_of(v: &HeaderValue) -> Option<u8> {
    match v.to_i64_lenient() {
        Some(1) => Some(1),
        Some(2) => Some(2),
        _ => match v.as_str().map(|s| s.trim().to_ascii_uppercase()) {
            Some(s) if s == "PERSISTENT" => Some(2),
            Some(s) if s == "NON_PERSISTENT" || s == "NON-PERSISTENT" => Some(1),
            _ => None,
        },
    }
}

/// Builds the AMQP properties of an outbound message: `contentType`, `id`, `timestamp` and the
/// `amqp_*` headers become properties; other headers matching `patterns` (and not internal)
/// go to the headers table.
pub(crate) fn outbound_properties(
    headers: &Headers,
    patterns: &HeaderPatterns,
    default_delivery_mode: u8,
) -> BasicProperties {
    let mut props = BasicProperties::default();
    let mut table = FieldTable::default();
    let mut delivery_mode = default_delivery_mode;
    for (name, value) in headers.iter() {
        match name {
            names::CONTENT_TYPE => {
                if let Some(v) = short_of(value) {
                    props = props.with_content_type(v);
                }
            }
            names::ID | amqp::MESSAGE_ID => {
                if let Some(v) = short_of(value) {
                    props = props.with_message_id(v);
                }
            }
            names::TIMESTAMP => {
                if let Some(v) = timestamp_secs(value, true) {
                    props = props.with_timestamp(v);
                }
            }
            amqp::TIMESTAMP => {
                if let Some(v) = timestamp_secs(value, true) {
                    props = props.with_timestamp(v);
                }
            }
            amqp::CORRELATION_ID => {
                if let Some(v) = short_of(value) {
                    props = props.with_correlation_id(v);
                }
            }
            amqp::REPLY_TO => {
                if let Some(v) = short_of(value) {
                    props = props.with_reply_to(v);
                }
            }
            amqp::EXPIRATION => {
                if let Some(v) = short_of(value) {
                    props = props.with_expiration(v);
                }
            }
            amqp::PRIORITY | amqp::AMQP_PRIORITY => {
                if let Some(p) = value.to_i64_lenient().and_then(|p| u8::try_from(p).ok()) {
                    props = props.with_priority(p);
                }
            }
            amqp::TYPE => {
                if let Some(v) = short_of(value) {
                    props = props.with_type(v);
                }
            }
            amqp::APP_ID => {
                if let Some(v) = short_of(value) {
                    props = props.with_app_id(v);
                }
            }
            amqp::USER_ID => {
                if let Some(v) = short_of(value) {
                    props = props.with_user_id(v);
                }
            }
            amqp::CLUSTER_ID => {
                if let Some(v) = short_of(value) {
                    props = props.with_cluster_id(v);
                }
            }
            amqp::CONTENT_ENCODING => {
                if let Some(v) = short_of(value) {
                    props = props.with_content_encoding(v);
                }
            }
            amqp::DELIVERY_MODE => {
                if let Some(m) = delivery_mode_of(value) {
                    delivery_mode = m;
                }
            }
            n if n.starts_with(amqp::PREFIX) || names::is_internal(n) => {}
            n if n == names::PARTITION_OVERRIDE => {}
            n => {
                if patterns.matches(n)
                    && let Ok(k) = ShortString::try_new(n)
                {
                    table.insert(k, to_amqp(value));
                }
            }
        }
    }
    props.with_delivery_mode(delivery_mode).with_headers(table)
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn amqp_value() -> impl Strategy<Value = AMQPValue> {
        crate::strategies::amqp_value(40, 6)
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        let leaf = prop_oneof![
            Just(HeaderValue::Null),
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<i64>().prop_map(HeaderValue::I64),
            any::<u64>().prop_map(HeaderValue::U64),
            any::<f64>().prop_map(HeaderValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| HeaderValue::Decimal { scale, value }),
            "\\PC{0,300}".prop_map(HeaderValue::String),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| HeaderValue::Bytes(Bytes::from(b))),
            any::<u64>().prop_map(|s| HeaderValue::Timestamp(
                UNIX_EPOCH + Duration::from_secs(s % (1 << 40))
            )),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(HeaderValue::List),
                proptest::collection::btree_map("\\PC{0,300}", inner, 0..6)
                    .prop_map(HeaderValue::Map),
            ]
        })
    }

    fn envelope() -> InboundEnvelope<'static> {
        InboundEnvelope {
            exchange: "ex",
            routing_key: "rk",
            delivery_tag: u64::MAX,
            redelivered: false,
            queue: "q",
            consumer_tag: "t",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every AMQP value converts, and back: no panic on any broker data.
        #[test]
        fn inbound_conversion_is_total(
            table in proptest::collection::btree_map("\\PC{1,12}", amqp_value(), 0..10),
            timestamp in proptest::option::of(any::<u64>()),
            priority in proptest::option::of(any::<u8>()),
            mode in proptest::option::of(any::<u8>()),
        ) {
            let mut t = FieldTable::default();
            for (k, v) in table {
                t.insert(ShortString::from(k), v);
            }
            let mut p = BasicProperties::default().with_headers(t);
            if let Some(ts) = timestamp { p = p.with_timestamp(ts); }
            if let Some(v) = priority { p = p.with_priority(v); }
            if let Some(v) = mode { p = p.with_delivery_mode(v); }
            let _ = unrepresentable(&p, "ex", "rk");
            let h = inbound_headers(&p, &envelope(), &HeaderPatterns::new(&["*"]));
            for (_, v) in h.iter() {
                let _ = to_amqp(v);
                let _ = v.to_string();
            }
            // And back out again, as a function that forwards its input would.
            let _ = outbound_properties(&h, &HeaderPatterns::new(&["*"]), 2);
        }

        /// Any headers a function sets map to AMQP properties without a panic; names that are no
        /// short strings (over 255 bytes) are left out.
        #[test]
        fn outbound_conversion_is_total(
            headers in proptest::collection::btree_map("(amqp_[a-zA-Z]{2,14}|contentType|id|timestamp|priority|\\PC{0,300})", header_value(), 0..12),
        ) {
            let mut h = Headers::new();
            for (k, v) in headers {
                h.insert(k, v);
            }
            let p = outbound_properties(&h, &HeaderPatterns::new(&["*"]), 2);
            let _ = crate::frame::header_frame_len(&p);
        }

        /// What is representable survives the round trip (timestamps at second precision).
        #[test]
        fn values_round_trip(v in header_value()) {
            let back = from_amqp(&to_amqp(&v));
            match (&v, &back) {
                (HeaderValue::U64(n), HeaderValue::I64(m)) => prop_assert_eq!(*n as i64, *m),
                (HeaderValue::U64(n), HeaderValue::String(s)) => prop_assert_eq!(n.to_string(), s.clone()),
                (HeaderValue::Map(_) | HeaderValue::List(_), _) => {}
                _ => prop_assert_eq!(&v, &back),
            }
        }
    }

    #[test]
    fn timestamps_past_system_time_become_seconds() {
        assert_eq!(timestamp_value(u64::MAX), HeaderValue::U64(u64::MAX));
        assert_eq!(timestamp_value(1 << 63), HeaderValue::U64(1 << 63));
        assert!(matches!(
            timestamp_value(i64::MAX as u64),
            HeaderValue::Timestamp(_)
        ));
        let p = BasicProperties::default().with_timestamp(u64::MAX);
        let h = inbound_headers(&p, &envelope(), &HeaderPatterns::new(&["*"]));
        assert_eq!(h.get(amqp::TIMESTAMP), Some(&HeaderValue::U64(u64::MAX)));
    }

    #[test]
    fn lossy_short_strings_and_deep_tables_are_unrepresentable() {
        let mut t = FieldTable::default();
        t.insert("ok\u{FFFD}".into(), AMQPValue::LongInt(1));
        let p = BasicProperties::default().with_headers(t);
        let why = unrepresentable(&p, "ex", "rk").expect("lossy header name");
        assert!(why.contains("header name"), "{why}");
        let p = BasicProperties::default().with_type("\u{FFFD}".into());
        assert!(
            unrepresentable(&p, "ex", "rk")
                .expect("type")
                .contains("`type`")
        );
        assert!(unrepresentable(&BasicProperties::default(), "ex", "k\u{FFFD}").is_some());
        let mut v = AMQPValue::Void;
        for _ in 0..MAX_HEADER_DEPTH {
            let mut t = FieldTable::default();
            t.insert("d".into(), v);
            v = AMQPValue::FieldTable(t);
        }
        let mut t = FieldTable::default();
        t.insert("deep".into(), v.clone());
        let p = BasicProperties::default().with_headers(t);
        assert!(
            unrepresentable(&p, "ex", "rk")
                .expect("deep")
                .contains("deeper")
        );
        // Converting stops at the bound instead of recursing.
        let mut depth = 0;
        let mut cur = from_amqp(&v);
        while let HeaderValue::Map(m) = cur {
            depth += 1;
            cur = m.into_values().next().unwrap_or(HeaderValue::Null);
        }
        assert_eq!(depth, MAX_HEADER_DEPTH);
        assert!(unrepresentable(&props_with_headers(), "ex", "rk").is_none());
    }

    #[test]
    fn patterns_first_match_wins() {
        let all = HeaderPatterns::new(&["*"]);
        assert!(all.matches("anything"));
        let p = HeaderPatterns::new(&["!secret*", "*"]);
        assert!(!p.matches("secretKey"));
        assert!(!p.matches("SECRET"));
        assert!(p.matches("public"));
        let p = HeaderPatterns::new(&["foo", "bar*"]);
        assert!(p.matches("FOO"));
        assert!(p.matches("barrel"));
        assert!(!p.matches("baz"));
        let none: [&str; 0] = [];
        assert!(!HeaderPatterns::new(&none).matches("x"));
        assert!(simple_match("a*b*c", "axxbyyc"));
        assert!(!simple_match("a*b*c", "axxc"));
        assert!(simple_match("*", ""));
        assert!(!simple_match("ab*ba", "aba"));
        assert!(simple_match("*x*", "yxy"));
    }

    #[test]
    fn amqp_values_round_trip() {
        let mut death = BTreeMap::new();
        death.insert("count".to_owned(), HeaderValue::I64(3));
        death.insert("queue".to_owned(), HeaderValue::from("q"));
        death.insert(
            "routing-keys".to_owned(),
            HeaderValue::List(vec![HeaderValue::from("rk")]),
        );
        let values = vec![
            HeaderValue::Null,
            HeaderValue::Bool(true),
            HeaderValue::I8(-1),
            HeaderValue::U8(1),
            HeaderValue::I16(-2),
            HeaderValue::U16(2),
            HeaderValue::I32(-3),
            HeaderValue::U32(3),
            HeaderValue::I64(-4),
            HeaderValue::F32(1.5),
            HeaderValue::F64(2.5),
            HeaderValue::Decimal {
                scale: 2,
                value: 123,
            },
            HeaderValue::from("text"),
            HeaderValue::Bytes(Bytes::from_static(b"\xff\x00")),
            HeaderValue::List(vec![HeaderValue::Map(death)]),
            HeaderValue::Timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        ];
        for v in values {
            assert_eq!(from_amqp(&to_amqp(&v)), v);
        }
        assert_eq!(to_amqp(&HeaderValue::U64(7)), AMQPValue::LongLongInt(7));
    }

    fn props_with_headers() -> BasicProperties {
        let mut t = FieldTable::default();
        t.insert("user".into(), AMQPValue::LongString("v".into()));
        t.insert("skip-me".into(), AMQPValue::LongInt(1));
        BasicProperties::default()
            .with_headers(t)
            .with_correlation_id("c1".into())
            .with_reply_to("r".into())
            .with_message_id("m1".into())
            .with_delivery_mode(2)
            .with_priority(4)
            .with_timestamp(1_700_000_000)
    }

    #[test]
    fn inbound_mapping() {
        let env = InboundEnvelope {
            exchange: "ex",
            routing_key: "rk",
            delivery_tag: 7,
            redelivered: true,
            queue: "q",
            consumer_tag: "tag#0",
        };
        let h = inbound_headers(
            &props_with_headers(),
            &env,
            &HeaderPatterns::new(&["!skip*", "*"]),
        );
        assert_eq!(h.get_str("user"), Some("v"));
        assert!(!h.contains("skip-me"));
        assert_eq!(h.get_str("contentType"), Some("application/octet-stream"));
        assert_eq!(h.get_str(amqp::CORRELATION_ID), Some("c1"));
        assert_eq!(h.get_str(amqp::REPLY_TO), Some("r"));
        assert_eq!(h.get_str(amqp::MESSAGE_ID), Some("m1"));
        assert_eq!(h.get_str(amqp::RECEIVED_DELIVERY_MODE), Some("PERSISTENT"));
        assert_eq!(h.get(amqp::PRIORITY), Some(&HeaderValue::I32(4)));
        assert_eq!(h.get_str(amqp::RECEIVED_EXCHANGE), Some("ex"));
        assert_eq!(h.get_str(amqp::RECEIVED_ROUTING_KEY), Some("rk"));
        assert_eq!(h.get(amqp::DELIVERY_TAG), Some(&HeaderValue::I64(7)));
        assert_eq!(h.get(amqp::REDELIVERED), Some(&HeaderValue::Bool(true)));
        assert_eq!(h.get_str(amqp::CONSUMER_QUEUE), Some("q"));
        assert_eq!(h.get_str(amqp::CONSUMER_TAG), Some("tag#0"));
        assert!(h.contains(amqp::TIMESTAMP));
    }

    #[test]
    fn outbound_mapping() {
        let mut h = Headers::new();
        h.insert("contentType", "application/json");
        h.insert("id", "abc");
        h.insert("timestamp", 1_700_000_000_123_i64);
        h.insert("scst_partition", 1_i32);
        h.insert("deliveryAttempt", 2_i32);
        h.insert("sourceData", "x");
        h.insert("amqp_correlationId", "corr");
        h.insert("amqp_replyTo", "replies");
        h.insert("amqp_expiration", "5000");
        h.insert("amqp_priority", 3_i32);
        h.insert("amqp_type", "t");
        h.insert("amqp_appId", "app");
        h.insert("amqp_userId", "guest");
        h.insert("amqp_contentEncoding", "utf-8");
        h.insert("amqp_deliveryMode", "NON_PERSISTENT");
        h.insert("amqp_receivedRoutingKey", "old");
        h.insert("custom", 5_i32);
        h.insert("hidden", "no");
        let p = outbound_properties(&h, &HeaderPatterns::new(&["!hidden", "*"]), 2);
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("abc"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some("corr")
        );
        assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), Some("replies"));
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("5000"));
        assert_eq!(*p.priority(), Some(3));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("t"));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("app"));
        assert_eq!(p.user_id().as_ref().map(|s| s.as_str()), Some("guest"));
        assert_eq!(
            p.content_encoding().as_ref().map(|s| s.as_str()),
            Some("utf-8")
        );
        assert_eq!(*p.delivery_mode(), Some(1));
        let t = p.headers().as_ref().expect("headers");
        let keys: Vec<&str> = t.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, vec!["custom"]);
        let p = outbound_properties(&Headers::new(), &HeaderPatterns::new(&["*"]), 2);
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.content_type(), None);
    }
}
