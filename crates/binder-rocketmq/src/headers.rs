//! Header mapping between stream messages and RocketMQ messages, as Spring Cloud Alibaba's
//! binder does it (`RocketMQMessageConverterSupport`).
//!
//! Outbound: `TAGS`/`ROCKET_TAGS` -> tags, `KEYS`/`ROCKET_KEYS` -> keys, `DELAY`/`ROCKET_DELAY`
//! (> 0) -> delay level, `WAIT` -> wait-store-ok, `MQ_FLAG` -> flag, `TRANSACTIONAL_ARGS` -> the
//! local transaction's argument; every other header becomes a string user property, except
//! blank values, RocketMQ's reserved property names and the inbound-only `ROCKET_MQ_*` headers.
//! (The runtime removes its internal headers before a message reaches the binder.)
//!
//! Inbound: the `ROCKET_*` headers below plus every user property.

use std::collections::HashMap;

use bytes::Bytes;
use cheetah_string::CheetahString;
use rocketmq_model::codec::{NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR};
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::STRING_HASH_SET;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message as MqMessage;
use stream_core::message::names;
use stream_core::{HeaderValue, Headers, Message};

/// Outbound: the message tags (Java `RocketMQHeaders.TAGS`).
pub const TAGS: &str = "TAGS";
/// Outbound: the message keys, space separated (`RocketMQHeaders.KEYS`).
pub const KEYS: &str = "KEYS";
/// Outbound: delay level 1-18 (`RocketMQConst.Properties.DELAY`).
pub const DELAY: &str = "DELAY";
/// Outbound: wait until the broker stored the message (`WAIT`, default true).
pub const WAIT: &str = "WAIT";
/// Outbound: the message flag (`MQ_FLAG`).
pub const MQ_FLAG: &str = "MQ_FLAG";
/// Outbound: the argument handed to the local transaction (`TRANSACTIONAL_ARGS`).
pub const TRANSACTIONAL_ARGS: &str = "TRANSACTIONAL_ARGS";
/// Inbound (and accepted outbound): the message tags.
pub const ROCKET_TAGS: &str = "ROCKET_TAGS";
/// Inbound (and accepted outbound): the message keys.
pub const ROCKET_KEYS: &str = "ROCKET_KEYS";
/// Accepted outbound: delay level.
pub const ROCKET_DELAY: &str = "ROCKET_DELAY";
/// Inbound: the topic the message was consumed from.
pub const ROCKET_MQ_TOPIC: &str = "ROCKET_MQ_TOPIC";
/// Inbound: the message id (the producer-side unique id when present).
pub const ROCKET_MQ_MESSAGE_ID: &str = "ROCKET_MQ_MESSAGE_ID";
/// Inbound: when the producer created the message (epoch ms).
pub const ROCKET_MQ_BORN_TIMESTAMP: &str = "ROCKET_MQ_BORN_TIMESTAMP";
/// Inbound: the producer's address.
pub const ROCKET_MQ_BORN_HOST: &str = "ROCKET_MQ_BORN_HOST";
/// Inbound: the message flag.
pub const ROCKET_MQ_FLAG: &str = "ROCKET_MQ_FLAG";
/// Inbound: the queue id.
pub const ROCKET_MQ_QUEUE_ID: &str = "ROCKET_MQ_QUEUE_ID";
/// Inbound: the system flag.
pub const ROCKET_MQ_SYS_FLAG: &str = "ROCKET_MQ_SYS_FLAG";
/// Inbound: the transaction id (transactional messages).
pub const ROCKET_MQ_TRANSACTION_ID: &str = "ROCKET_MQ_TRANSACTION_ID";
/// Inbound (this binder only): how many times the broker redelivered the message.
pub const ROCKET_MQ_RECONSUME_TIMES: &str = "ROCKET_MQ_RECONSUME_TIMES";
/// Inbound (this binder only): the message's offset in its queue.
pub const ROCKET_MQ_QUEUE_OFFSET: &str = "ROCKET_MQ_QUEUE_OFFSET";

/// Headers that set native fields (never sent as user properties).
const NATIVE: &[&str] = &[
    TAGS,
    KEYS,
    DELAY,
    WAIT,
    MQ_FLAG,
    TRANSACTIONAL_ARGS,
    ROCKET_TAGS,
    ROCKET_KEYS,
    ROCKET_DELAY,
];

/// Inbound-only headers: dropped when a consumed message is forwarded.
const INBOUND_ONLY: &[&str] = &[
    ROCKET_MQ_TOPIC,
    ROCKET_MQ_MESSAGE_ID,
    ROCKET_MQ_BORN_TIMESTAMP,
    ROCKET_MQ_BORN_HOST,
    ROCKET_MQ_FLAG,
    ROCKET_MQ_QUEUE_ID,
    ROCKET_MQ_SYS_FLAG,
    ROCKET_MQ_TRANSACTION_ID,
    ROCKET_MQ_RECONSUME_TIMES,
    ROCKET_MQ_QUEUE_OFFSET,
];

/// Whether `name` is a RocketMQ reserved (system) property name.
pub fn is_reserved(name: &str) -> bool {
    STRING_HASH_SET.contains(name)
}

/// What an outbound message carries besides its RocketMQ form.
#[derive(Debug)]
pub struct Outbound {
    /// The RocketMQ message.
    pub message: MqMessage,
    /// `TRANSACTIONAL_ARGS`, rendered as text.
    pub transactional_args: Option<String>,
    /// Delay level requested (0 = none).
    pub delay_level: i32,
}

fn text(headers: &Headers, names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| headers.get(n))
        .map(|v| property_text(v.to_string().trim()).into_owned())
        .find(|s| !s.is_empty())
}

/// RocketMQ stores properties as one string, `name\u{1}value\u{2}` per property: text holding
/// either separator would split into other properties (even reserved ones) on the broker.
fn has_separator(s: &str) -> bool {
    s.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR])
}

/// `text` as a property value can carry it: each separator replaced by U+FFFD.
pub(crate) fn property_text(text: &str) -> std::borrow::Cow<'_, str> {
    if has_separator(text) {
        std::borrow::Cow::Owned(
            text.replace([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR], "\u{FFFD}"),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Maps a stream message to a RocketMQ message for `topic`. Total: a header whose name holds
/// a property separator is left out (with a warning), separators in values are replaced.
pub fn to_rocketmq(topic: &str, message: &Message<Bytes>) -> Outbound {
    let headers = message.headers();
    let mut mq = MqMessage::builder()
        .topic(topic)
        .body(message.payload().clone())
        .build_unchecked();
    if let Some(tags) = text(headers, &[TAGS, ROCKET_TAGS]) {
        mq.set_tags(CheetahString::from_string(tags));
    }
    if let Some(keys) = text(headers, &[KEYS, ROCKET_KEYS]) {
        mq.set_keys(CheetahString::from_string(keys));
    }
    let delay_level = [DELAY, ROCKET_DELAY]
        .iter()
        .filter_map(|n| headers.get(n))
        .find_map(HeaderValue::to_i64_lenient)
        .and_then(|d| i32::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(0);
    if delay_level > 0 {
        mq.set_delay_time_level(delay_level);
    }
    if let Some(wait) = headers.get(WAIT).and_then(HeaderValue::as_bool) {
        mq.set_wait_store_msg_ok(wait);
    }
    if let Some(flag) = headers
        .get(MQ_FLAG)
        .and_then(HeaderValue::to_i64_lenient)
        .and_then(|f| i32::try_from(f).ok())
    {
        mq.set_flag(flag);
    }
    for (name, value) in headers.iter() {
        if name.trim().is_empty()
            || NATIVE.contains(&name)
            || INBOUND_ONLY.contains(&name)
            || is_reserved(name)
        {
            continue;
        }
        if has_separator(name) {
            tracing::warn!(header = %name.escape_debug(), "header not sent: its name holds a RocketMQ property separator (\\u0001 or \\u0002)");
            continue;
        }
        let rendered = value.to_string();
        if rendered.trim().is_empty() {
            continue;
        }
        let rendered = match property_text(&rendered) {
            std::borrow::Cow::Borrowed(_) => rendered,
            std::borrow::Cow::Owned(clean) => clean,
        };
        // Not reserved and not blank: put_user_property cannot fail here.
        let _ = mq.put_user_property(
            CheetahString::from_slice(name),
            CheetahString::from_string(rendered),
        );
    }
    Outbound {
        message: mq,
        transactional_args: text(headers, &[TRANSACTIONAL_ARGS]),
        delay_level,
    }
}

/// `host:port` in one allocation (`to_string` grows its buffer as the parts are written).
fn socket_text(addr: std::net::SocketAddr) -> String {
    use std::fmt::Write as _;
    // "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535" is the longest.
    let mut text = String::with_capacity(if addr.is_ipv4() { 21 } else { 58 });
    let _ = write!(text, "{addr}");
    text
}

/// Maps a consumed RocketMQ message to a stream message.
pub fn from_rocketmq(ext: &MessageExt) -> Message<Bytes> {
    let props: &HashMap<CheetahString, CheetahString> = ext.properties();
    let mut headers = Headers::new();
    for (k, v) in props {
        if !is_reserved(k.as_str()) && !v.as_str().is_empty() {
            headers.insert(names::header_name(k.as_str()), v.as_str());
        }
    }
    let prop = |name: &str| props.get(name).map(|v| v.as_str().to_owned());
    if let Some(keys) = prop(rocketmq_model::common::message::MessageConst::PROPERTY_KEYS) {
        headers.insert(ROCKET_KEYS, keys);
    }
    if let Some(tags) = prop(rocketmq_model::common::message::MessageConst::PROPERTY_TAGS) {
        headers.insert(ROCKET_TAGS, tags);
    }
    let id =
        prop(rocketmq_model::common::message::MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .unwrap_or_else(|| ext.msg_id().as_str().to_owned());
    headers.insert(ROCKET_MQ_TOPIC, ext.topic().as_str());
    headers.insert(ROCKET_MQ_MESSAGE_ID, id);
    headers.insert(ROCKET_MQ_BORN_TIMESTAMP, ext.born_timestamp());
    headers.insert(ROCKET_MQ_BORN_HOST, socket_text(ext.born_host()));
    headers.insert(ROCKET_MQ_FLAG, ext.flag());
    headers.insert(ROCKET_MQ_QUEUE_ID, ext.queue_id());
    headers.insert(ROCKET_MQ_SYS_FLAG, ext.sys_flag());
    if let Some(tx) = prop(rocketmq_model::common::message::MessageConst::PROPERTY_TRANSACTION_ID)
        .or_else(|| {
            ext.get_transaction_id()
                .map(|t| t.as_str().to_owned())
                .filter(|t| !t.is_empty())
        })
    {
        headers.insert(ROCKET_MQ_TRANSACTION_ID, tx);
    }
    headers.insert(ROCKET_MQ_RECONSUME_TIMES, ext.reconsume_times());
    headers.insert(ROCKET_MQ_QUEUE_OFFSET, ext.queue_offset());
    Message::from_parts(ext.body().unwrap_or_default(), headers)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        let leaf = prop_oneof![
            Just(HeaderValue::Null),
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<i64>().prop_map(HeaderValue::I64),
            any::<u64>().prop_map(HeaderValue::U64),
            any::<f64>().prop_map(HeaderValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| HeaderValue::Decimal { scale, value }),
            "\\PC{0,40}|[\\x01\\x02a-z]{0,10}".prop_map(HeaderValue::String),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| HeaderValue::Bytes(Bytes::from(b))),
            any::<u64>().prop_map(|s| HeaderValue::Timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s % (1 << 40))
            )),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(HeaderValue::List),
                proptest::collection::btree_map("[a-z]{0,5}", inner, 0..4)
                    .prop_map(HeaderValue::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any headers map to properties without a panic, and what the broker would store
        /// parses back to exactly the user properties that were set: no separator can split a
        /// header into others.
        #[test]
        fn outbound_mapping_is_total_and_cannot_inject_properties(
            headers in proptest::collection::btree_map("[a-zA-Z_]{1,12}|[\\x01\\x02a-z]{1,6}|\\PC{1,12}", header_value(), 0..10),
        ) {
            let mut m = Message::bytes("b");
            for (k, v) in &headers {
                m.headers_mut().insert(k.clone(), v.clone());
            }
            let out = to_rocketmq("t", &m);
            let wire = rocketmq_model::codec::message_properties_to_string(out.message.properties().as_map());
            let back = rocketmq_model::codec::string_to_message_properties(Some(&wire));
            prop_assert_eq!(back.len(), out.message.properties().as_map().len());
            for (k, _) in back.iter() {
                prop_assert!(!has_separator(k.as_str()));
            }
            let mut ext = MessageExt::default();
            ext.set_message_inner(out.message);
            let _ = from_rocketmq(&ext);
        }
    }

    fn user(m: &MqMessage, name: &str) -> Option<String> {
        m.get_user_property(CheetahString::from_slice(name))
            .map(|v| v.as_str().to_owned())
    }

    #[test]
    fn native_headers_set_native_fields() {
        let msg = Message::bytes("x")
            .with_header(TAGS, "t1")
            .with_header(KEYS, "k1 k2")
            .with_header(DELAY, 3_i32)
            .with_header(WAIT, "false")
            .with_header(MQ_FLAG, 7_i32)
            .with_header(TRANSACTIONAL_ARGS, "arg");
        let out = to_rocketmq("orders", &msg);
        assert_eq!(out.message.topic().as_str(), "orders");
        assert_eq!(out.message.tags(), Some("t1"));
        assert_eq!(out.message.property("KEYS"), Some("k1 k2"));
        assert_eq!(out.message.delay_level(), 3);
        assert_eq!(out.delay_level, 3);
        assert!(!out.message.wait_store_msg_ok());
        assert_eq!(out.message.flag(), 7);
        assert_eq!(out.transactional_args.as_deref(), Some("arg"));
        for n in [TAGS, KEYS, DELAY, WAIT, MQ_FLAG, TRANSACTIONAL_ARGS] {
            // Reserved or native names never travel as user properties.
            assert!(
                is_reserved(n) || user(&out.message, n).is_none(),
                "{n} leaked as a user property"
            );
        }
        assert!(user(&out.message, TRANSACTIONAL_ARGS).is_none());
    }

    #[test]
    fn rocket_prefixed_aliases_and_defaults() {
        let msg = Message::bytes("x")
            .with_header(ROCKET_TAGS, "t")
            .with_header(ROCKET_KEYS, "k")
            .with_header(ROCKET_DELAY, "2");
        let out = to_rocketmq("t", &msg);
        assert_eq!(out.message.tags(), Some("t"));
        assert_eq!(out.message.property("KEYS"), Some("k"));
        assert_eq!(out.message.delay_level(), 2);
        assert!(out.message.wait_store_msg_ok(), "WAIT defaults to true");
        let plain = to_rocketmq("t", &Message::bytes("x").with_header(DELAY, 0_i32));
        assert_eq!(plain.delay_level, 0);
    }

    #[test]
    fn user_headers_become_string_properties() {
        let msg = Message::bytes("x")
            .with_header("contentType", "application/json")
            .with_header("n", 42_i64)
            .with_header("b", true)
            .with_header("blank", "  ")
            .with_header("", "v")
            .with_header("UNIQ_KEY", "forged")
            .with_header(ROCKET_MQ_QUEUE_ID, 1_i32);
        let out = to_rocketmq("t", &msg);
        let m = &out.message;
        assert_eq!(user(m, "contentType").as_deref(), Some("application/json"));
        assert_eq!(user(m, "n").as_deref(), Some("42"));
        assert_eq!(user(m, "b").as_deref(), Some("true"));
        assert!(user(m, "blank").is_none());
        assert!(m.property("UNIQ_KEY").is_none(), "reserved name was sent");
        assert!(user(m, ROCKET_MQ_QUEUE_ID).is_none());
    }

    #[test]
    fn inbound_maps_properties_and_metadata() {
        let out = to_rocketmq(
            "orders",
            &Message::bytes("body")
                .with_header(TAGS, "t")
                .with_header(KEYS, "k")
                .with_header("h", "v"),
        );
        let mut ext = MessageExt::default();
        ext.set_message_inner(out.message);
        ext.set_queue_id(3);
        ext.set_queue_offset(17);
        ext.set_reconsume_times(2);
        ext.set_born_timestamp(1234);
        ext.set_msg_id(CheetahString::from_slice("ID1"));
        let m = from_rocketmq(&ext);
        let h = m.headers();
        assert_eq!(&m.payload()[..], b"body");
        assert_eq!(h.get_str("h"), Some("v"));
        assert_eq!(h.get_str(ROCKET_TAGS), Some("t"));
        assert_eq!(h.get_str(ROCKET_KEYS), Some("k"));
        assert_eq!(h.get_str(ROCKET_MQ_TOPIC), Some("orders"));
        assert_eq!(h.get_str(ROCKET_MQ_MESSAGE_ID), Some("ID1"));
        assert_eq!(h.get(ROCKET_MQ_QUEUE_ID), Some(&HeaderValue::I32(3)));
        assert_eq!(h.get(ROCKET_MQ_QUEUE_OFFSET), Some(&HeaderValue::I64(17)));
        assert_eq!(h.get(ROCKET_MQ_RECONSUME_TIMES), Some(&HeaderValue::I32(2)));
        assert_eq!(
            h.get(ROCKET_MQ_BORN_TIMESTAMP),
            Some(&HeaderValue::I64(1234))
        );
        assert!(
            !h.contains("TAGS"),
            "reserved properties stay out of the headers"
        );
        assert!(!h.contains("WAIT"));
    }

    #[test]
    fn inbound_born_host_is_host_and_port_for_both_families() {
        for (addr, text) in [
            ("10.1.2.3:10911", "10.1.2.3:10911"),
            ("[fe80::1]:9876", "[fe80::1]:9876"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            ),
        ] {
            let mut ext = MessageExt::default();
            ext.set_born_host(addr.parse().expect("a socket address"));
            let m = from_rocketmq(&ext);
            assert_eq!(m.headers().get_str(ROCKET_MQ_BORN_HOST), Some(text));
        }
    }
}
