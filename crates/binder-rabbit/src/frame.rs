//! Sizes of AMQP 0-9-1 content header frames, so a republished message's headers always fit
//! the connection's `frame_max` (lapin splits bodies into frames but sends the properties as
//! one frame; a frame above `frame_max` makes the broker close the connection with 501).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// Frame header (type, channel, size) and frame end.
const FRAME_OVERHEAD: usize = 7 + 1;
/// Class id, weight, body size and property flags of a content header.
const CONTENT_HEADER_FIXED: usize = 2 + 2 + 8 + 2;

fn short_len(s: &ShortString) -> usize {
    1 + s.as_str().len()
}

fn opt_short(s: &Option<ShortString>) -> usize {
    s.as_ref().map_or(0, short_len)
}

/// Encoded size of a field value (without its type octet).
pub(crate) fn value_len(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::ShortString(s) => short_len(s),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::FieldArray(a) => {
            4 + a.as_slice().iter().map(|v| 1 + value_len(v)).sum::<usize>()
        }
        AMQPValue::FieldTable(t) => 4 + table_len(t),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::Void => 0,
    }
}

/// Encoded size of a field table's entries (without its 4-byte length).
pub(crate) fn table_len(t: &FieldTable) -> usize {
    t.inner().iter().map(|(k, v)| entry_len(k, v)).sum()
}

/// Encoded size of one table entry (name, type octet, value).
pub(crate) fn entry_len(name: &ShortString, v: &AMQPValue) -> usize {
    short_len(name) + 1 + value_len(v)
}

/// Encoded size of a header table entry `name` holding a long string of `value_len` bytes.
pub(crate) fn long_string_entry_len(name: &str, value_len: usize) -> usize {
    1 + name.len() + 1 + 4 + value_len
}

/// Size of the content header frame that carries `p`.
pub(crate) fn header_frame_len(p: &BasicProperties) -> usize {
    let props = opt_short(p.content_type())
        + opt_short(p.content_encoding())
        + p.headers().as_ref().map_or(0, |t| 4 + table_len(t))
        + usize::from(p.delivery_mode().is_some())
        + usize::from(p.priority().is_some())
        + opt_short(p.correlation_id())
        + opt_short(p.reply_to())
        + opt_short(p.expiration())
        + opt_short(p.message_id())
        + p.timestamp().map_or(0, |_| 8)
        + opt_short(p.kind())
        + opt_short(p.user_id())
        + opt_short(p.app_id())
        + opt_short(p.cluster_id());
    FRAME_OVERHEAD + CONTENT_HEADER_FIXED + props
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString};
    use proptest::prelude::*;

    use super::*;

    /// The content header frame lapin writes for `p`, measured: frame overhead, class, weight,
    /// body size, then `gen_properties` (flags and properties).
    fn encoded_len(p: &BasicProperties) -> usize {
        let (buf, _) = cookie_factory::r#gen(lapin::protocol::basic::gen_properties(p), Vec::new())
            .expect("encodes");
        FRAME_OVERHEAD + 2 + 2 + 8 + buf.len()
    }

    fn value() -> impl Strategy<Value = AMQPValue> {
        crate::strategies::amqp_value(200, 8)
    }

    fn short() -> impl Strategy<Value = Option<ShortString>> {
        proptest::option::of(
            "\\PC{0,60}".prop_filter_map("short", |s| ShortString::try_new(s).ok()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The computed size is what lapin encodes, for any properties and header tables.
        #[test]
        fn computed_size_is_the_encoded_size(
            headers in proptest::option::of(proptest::collection::btree_map("\\PC{1,30}", value(), 0..12)),
            content_type in short(),
            message_id in short(),
            kind in short(),
            app_id in short(),
            timestamp in proptest::option::of(any::<u64>()),
            priority in proptest::option::of(any::<u8>()),
        ) {
            let mut p = BasicProperties::default().with_delivery_mode(2);
            if let Some(h) = headers {
                let mut t = FieldTable::default();
                for (k, v) in h {
                    if let Ok(k) = ShortString::try_new(k) {
                        t.insert(k, v);
                    }
                }
                p = p.with_headers(t);
            }
            if let Some(v) = content_type { p = p.with_content_type(v); }
            if let Some(v) = message_id { p = p.with_message_id(v); }
            if let Some(v) = kind { p = p.with_type(v); }
            if let Some(v) = app_id { p = p.with_app_id(v); }
            if let Some(v) = timestamp { p = p.with_timestamp(v); }
            if let Some(v) = priority { p = p.with_priority(v); }
            prop_assert_eq!(header_frame_len(&p), encoded_len(&p));
        }
    }

    #[test]
    fn sizes_follow_the_wire_format() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongInt(1)); // 1+1 key, 1 type, 4
        t.insert("bb".into(), AMQPValue::LongString(LongString::from("xyz"))); // 1+2, 1, 4+3
        t.insert(
            "c".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
        ); // 1+1, 1, 4+(1+1)
        assert_eq!(table_len(&t), 7 + 11 + 9);
        let p = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_headers(t);
        assert_eq!(header_frame_len(&p), 8 + 14 + (1 + 10) + 1 + (4 + 27));
        assert_eq!(
            long_string_entry_len("x-exception-message", 5),
            1 + 19 + 1 + 4 + 5
        );
    }
}
