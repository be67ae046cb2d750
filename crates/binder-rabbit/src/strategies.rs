//! Property-test strategies shared by the converters' and the frame-size tests.

use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use proptest::prelude::*;

/// Any AMQP field value, timestamps at the extremes included: strings and byte arrays up to
/// `bytes` long, nested arrays and tables up to `width` entries.
pub(crate) fn amqp_value(bytes: usize, width: usize) -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<u8>().prop_map(AMQPValue::ShortShortUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<u16>().prop_map(AMQPValue::ShortUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<f32>().prop_map(AMQPValue::Float),
        any::<f64>().prop_map(AMQPValue::Double),
        prop_oneof![
            any::<u64>(),
            Just(0u64),
            Just(i64::MAX as u64),
            Just(1 << 63),
            Just(u64::MAX)
        ]
        .prop_map(AMQPValue::Timestamp),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
        // At most 4 bytes a char: 60 chars always fit a short string.
        "\\PC{0,60}".prop_filter_map("short", |s| ShortString::try_new(s)
            .ok()
            .map(AMQPValue::ShortString)),
        proptest::collection::vec(any::<u8>(), 0..bytes)
            .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        proptest::collection::vec(any::<u8>(), 0..bytes)
            .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(4, 64, width as u32, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..width)
                .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            proptest::collection::btree_map("\\PC{1,20}", inner, 0..width).prop_map(|m| {
                let mut t = FieldTable::default();
                for (k, v) in m {
                    if let Ok(k) = ShortString::try_new(k) {
                        t.insert(k, v);
                    }
                }
                AMQPValue::FieldTable(t)
            }),
        ]
    })
}
