//! The dead letter a consumer publishes to `%DLQ%<group>` when the runtime's recovery says so
//! (retries exhausted with `delay-level-when-next-consume = -1`, reject-and-don't-requeue,
//! a polled consumer's failures): the original message with its properties and body, the
//! properties the broker's own send-back sets (`RETRY_TOPIC`, `ORIGIN_MESSAGE_ID`,
//! `RECONSUME_TIME`) and the failure headers `x-exception-message` / `x-exception-stacktrace`
//! as user properties.

use cheetah_string::CheetahString;
use rocketmq_model::common::message::MessageConst;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message as MqMessage;
use stream_core::binder::{DeadLetter, HeaderBudget};
use stream_core::message::names;

use crate::provisioning::dlq_topic;

/// RocketMQ stores a message's properties with a 16-bit length: what the failure headers may
/// add at most, leaving room for the rest.
const PROPERTIES_BUDGET: usize = 30_000;
/// The longest `x-exception-stacktrace` written.
const MAX_STACKTRACE: usize = 16 * 1024;
/// The longest `x-exception-message` written.
const MAX_EXCEPTION_MESSAGE: usize = 4 * 1024;

fn properties_len(m: &MqMessage) -> usize {
    m.properties()
        .as_map()
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum()
}

/// The dead letter of `ext` (consumed by `group`) for `%DLQ%<group>`.
pub(crate) fn message(ext: &MessageExt, group: &str, letter: &DeadLetter) -> MqMessage {
    let mut m = ext.message_inner().clone();
    m.clear_property(MessageConst::PROPERTY_DELAY_TIME_LEVEL);
    m.set_topic(CheetahString::from_string(dlq_topic(group)));
    let origin_topic = m
        .get_property(&CheetahString::from_static_str(
            MessageConst::PROPERTY_RETRY_TOPIC,
        ))
        .unwrap_or_else(|| ext.topic().clone());
    m.put_property(
        CheetahString::from_static_str(MessageConst::PROPERTY_RETRY_TOPIC),
        origin_topic,
    );
    m.put_property(
        CheetahString::from_static_str(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
        ext.msg_id().clone(),
    );
    m.put_property(
        CheetahString::from_static_str(MessageConst::PROPERTY_RECONSUME_TIME),
        CheetahString::from_string(ext.reconsume_times().to_string()),
    );
    // The core's rule for bounding the failure headers; a property costs its name, its value
    // and two separators.
    let entry = |name: &str, len: usize| name.len() + len + 2;
    let budget = HeaderBudget::new(PROPERTIES_BUDGET.saturating_sub(properties_len(&m)))
        .with_max_message(MAX_EXCEPTION_MESSAGE)
        .with_max_stacktrace(MAX_STACKTRACE);
    let Some(bounded) = letter.bounded_failure_headers(budget, entry) else {
        tracing::warn!(
            group,
            "the failed message's properties leave no room for the failure headers; dead-lettered without them"
        );
        return m;
    };
    for (name, value) in [
        (names::EXCEPTION_MESSAGE, bounded.exception_message),
        (names::EXCEPTION_STACKTRACE, bounded.stacktrace),
    ] {
        let value = crate::headers::property_text(&value);
        if value.trim().is_empty() {
            continue;
        }
        // Neither name is reserved and the value is not blank: this cannot fail.
        let _ = m.put_user_property(
            CheetahString::from_static_str(name),
            CheetahString::from_string(value.into_owned()),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use stream_core::binder::FailedMessage;
    use stream_core::{FunctionError, Message};

    use super::*;

    fn ext(topic: &str) -> MessageExt {
        let out = crate::headers::to_rocketmq(
            topic,
            &Message::bytes("body")
                .with_header("KEYS", "k1")
                .with_header("h", "v"),
        );
        let mut ext = MessageExt::default();
        ext.set_message_inner(out.message);
        ext.set_msg_id(CheetahString::from_slice("MSG1"));
        ext.set_reconsume_times(2);
        ext
    }

    fn letter(error: FunctionError) -> DeadLetter {
        DeadLetter::new(FailedMessage {
            message: Message::new(Bytes::from_static(b"body")),
            error: Arc::new(error),
            attempts: 3,
        })
    }

    #[test]
    fn the_dead_letter_keeps_the_message_and_names_the_failure() {
        let m = message(
            &ext("orders"),
            "billing",
            &letter(FunctionError::msg("negative amount").with_kind("validation")),
        );
        assert_eq!(m.topic().as_str(), "%DLQ%billing");
        assert_eq!(m.get_body().map(|b| &b[..]), Some(&b"body"[..]));
        assert_eq!(m.property("KEYS"), Some("k1"));
        assert_eq!(m.property("h"), Some("v"));
        assert_eq!(
            m.property(MessageConst::PROPERTY_RETRY_TOPIC),
            Some("orders")
        );
        assert_eq!(
            m.property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some("MSG1")
        );
        assert_eq!(m.property(MessageConst::PROPERTY_RECONSUME_TIME), Some("2"));
        assert_eq!(
            m.property(names::EXCEPTION_MESSAGE),
            Some("negative amount")
        );
        assert_eq!(
            m.property(names::EXCEPTION_STACKTRACE),
            Some("validation: negative amount")
        );
    }

    #[test]
    fn a_huge_stacktrace_is_cut_to_fit_the_properties() {
        let m = message(
            &ext("orders"),
            "g",
            &letter(FunctionError::msg("x".repeat(100_000))),
        );
        let total = properties_len(&m);
        assert!(m.property(names::EXCEPTION_MESSAGE).is_some());
        assert!(total < i16::MAX as usize, "properties take {total} bytes");
    }
}
