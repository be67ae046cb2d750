//! Settling RabbitMQ deliveries as the runtime decided: `basic.ack` / `basic.reject`, the
//! republish of a dead letter to the dead-letter exchange (Spring's `RepublishMessageRecoverer`,
//! headers bounded so the frame always fits), and the commit of a transacted consumer.

use std::sync::Arc;

use lapin::options::{
    BasicAckOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use stream_core::BinderError;
use stream_core::binder::{
    DeadLetter, DeadLetterRoute, HeaderBudget, Recovery, Settlement, headers_to_drop,
};
use stream_core::message::names;
use tokio::sync::Mutex;

use super::raw::RabbitRawMessage;
use crate::config::RabbitConsumerProperties;
use crate::error::RabbitError;
use crate::frame;
use crate::headers;
use crate::provisioning::{ConsumerTopology, short};
use crate::shared::Shared;

/// Headers the binder adds to a republished dead letter besides the runtime's
/// `x-exception-message` / `x-exception-stacktrace`.
const X_ORIGINAL_EXCHANGE: &str = "x-original-exchange";
const X_ORIGINAL_ROUTING_KEY: &str = "x-original-routingKey";
const RETRY_COUNT: &str = "retry-count";

/// How long the confirm of a republish may take (a silently dead connection never sends it);
/// then the core falls back to a settlement that keeps the message.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Used as `frame_max` when the connection's is unknown (RabbitMQ's default).
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// Bytes of `x-exception-message` a republished message keeps room for, leaving out the
/// message's own largest headers if need be.
const MIN_MESSAGE: usize = 1024;

/// Settles the deliveries of one consumer binding (pushed or polled).
pub(crate) struct Settler {
    pub(crate) binding: String,
    pub(crate) topology: Arc<ConsumerTopology>,
    pub(crate) props: RabbitConsumerProperties,
    pub(crate) shared: Arc<Shared>,
    pub(crate) recovery: Recovery,
    /// The confirm-enabled channel republishes go on (not transacted consumers).
    republish_channel: Mutex<Option<Channel>>,
}

impl Settler {
    /// A settler; `republish` says whether failed messages are republished to the DLX (else
    /// rejected so the broker dead-letters them).
    pub(crate) fn new(
        binding: String,
        topology: Arc<ConsumerTopology>,
        props: RabbitConsumerProperties,
        shared: Arc<Shared>,
        republish: bool,
    ) -> Self {
        let exhausted = if republish {
            DeadLetterRoute::Publish
        } else {
            DeadLetterRoute::Reject
        };
        let recovery = Recovery::new(exhausted, DeadLetterRoute::Reject)
            .with_requeue_rejected(props.requeue_rejected)
            .with_transactional(props.transacted);
        Self {
            binding,
            topology,
            props,
            shared,
            recovery,
            republish_channel: Mutex::new(None),
        }
    }

    fn queue(&self) -> &str {
        &self.topology.queue
    }

    fn settle_error(&self, what: &str, e: lapin::Error) -> BinderError {
        BinderError::settle(self.queue(), format!("{what} failed: {e}")).with_source(e)
    }

    /// Executes a settlement; on a transacted channel a refusal first rolls back what the
    /// processing published, and every settlement commits.
    pub(crate) async fn settle(
        &self,
        raw: &RabbitRawMessage,
        settlement: Settlement,
    ) -> Result<(), BinderError> {
        let tx = self.props.transacted.then_some(&raw.channel);
        if let Some(ch) = tx
            && settlement != Settlement::Ack
            && let Err(e) = ch.tx_rollback().await
        {
            tracing::warn!(binding = %self.binding, error = %e, "tx.rollback failed");
        }
        let result = match settlement {
            Settlement::Ack => raw
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| self.settle_error("basic.ack", e)),
            Settlement::Requeue | Settlement::Reject => raw
                .acker
                .reject(BasicRejectOptions {
                    requeue: settlement == Settlement::Requeue,
                })
                .await
                .map_err(|e| self.settle_error("basic.reject", e)),
        }
        .map(|_| ());
        if let Some(ch) = tx {
            ch.tx_commit().await.map_err(|e| {
                BinderError::settle(
                    self.queue(),
                    format!("tx.commit failed ({e}); the delivery and its publishes are rolled back and delivered again"),
                )
            })?;
        }
        result
    }

    async fn republish_channel(&self) -> Result<(Channel, u32), RabbitError> {
        let conn = self.shared.publisher.get().await?;
        let frame_max = conn.configuration().frame_max();
        let mut guard = self.republish_channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok((ch.clone(), frame_max));
        }
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| RabbitError::Lapin {
                context: "opening the republish channel".to_owned(),
                source: e,
            })?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| RabbitError::Lapin {
                context: "enabling publisher confirms on the republish channel".to_owned(),
                source: e,
            })?;
        *guard = Some(ch.clone());
        Ok((ch, frame_max))
    }

    /// The republished message's properties: the part's properties plus the failure headers,
    /// bounded so that the whole header frame fits `frame_max` (the core's rule,
    /// [`DeadLetter::bounded_failure_headers`]; the stack trace also cut to
    /// `frame_max - frame-max-headroom`, as Spring cuts it). When the message's own headers
    /// leave too little room, the largest of them are left out ([`headers_to_drop`]) and
    /// named in a WARN. `None` only when even that cannot make it fit.
    fn dead_letter_properties(
        &self,
        raw: &RabbitRawMessage,
        letter: &DeadLetter,
        frame_max: u32,
    ) -> Option<BasicProperties> {
        republish_properties(
            raw.part_properties(),
            (&raw.exchange, &raw.routing_key),
            letter,
            Limits {
                frame_max,
                headroom: self.props.frame_max_headroom,
                delivery_mode: self.props.republish_delivery_mode.amqp_value(),
            },
            self.queue(),
        )
    }

    /// Republishes a dead letter to the dead-letter exchange with routing key
    /// `dead-letter-routing-key` (else the queue's name), waiting for the broker's confirm;
    /// transacted: on the consumer's channel, inside its transaction.
    pub(crate) async fn dead_letter(
        &self,
        raw: &RabbitRawMessage,
        letter: &DeadLetter,
    ) -> Result<(), BinderError> {
        let exchange = &self.topology.dead_letter_exchange;
        let fail = |e: RabbitError| e.into_binder_error(exchange);
        let tx = self.props.transacted.then_some(&raw.channel);
        let (channel, frame_max) = match tx {
            Some(ch) => {
                if let Err(e) = ch.tx_rollback().await {
                    tracing::warn!(binding = %self.binding, error = %e, "tx.rollback failed");
                }
                let frame_max = self
                    .shared
                    .consumer
                    .current()
                    .await
                    .map_or(DEFAULT_FRAME_MAX, |c| c.configuration().frame_max());
                (ch.clone(), frame_max)
            }
            None => self.republish_channel().await.map_err(fail)?,
        };
        let Some(props) = self.dead_letter_properties(raw, letter, frame_max) else {
            return Err(BinderError::send(
                exchange.as_str(),
                format!(
                    "the failed message's headers alone exceed frame_max ({frame_max} bytes); it is rejected instead so the broker dead-letters it"
                ),
            ));
        };
        let exchange_name: ShortString = short(exchange).map_err(fail)?;
        let routing_key: ShortString = short(&self.topology.republish_routing_key).map_err(fail)?;
        let confirm = channel
            .basic_publish(
                exchange_name,
                routing_key,
                BasicPublishOptions::default(),
                letter.payload(),
                props,
            )
            .await
            .map_err(|e| {
                fail(RabbitError::Lapin {
                    context: format!("republishing to `{exchange}`"),
                    source: e,
                })
            })?;
        if tx.is_some() {
            return Ok(());
        }
        let Ok(confirm) = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await else {
            return Err(BinderError::send(
                exchange.as_str(),
                format!("no confirm of the republished message within {CONFIRM_TIMEOUT:?}"),
            ));
        };
        let confirm = confirm.map_err(|e| {
            fail(RabbitError::Lapin {
                context: format!("waiting for the confirm of a republish to `{exchange}`"),
                source: e,
            })
        })?;
        if confirm.is_nack() {
            return Err(BinderError::send(
                exchange.as_str(),
                "the broker nacked the republished message",
            ));
        }
        tracing::debug!(queue = %self.queue(), dlx = %exchange, "republished failed message to the dead-letter exchange");
        Ok(())
    }
}

/// What bounds a republished message's header frame.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// The connection's `frame_max` (0: unknown, RabbitMQ's default).
    frame_max: u32,
    /// `frame-max-headroom`.
    headroom: u32,
    /// `republish-delivery-mode`.
    delivery_mode: u8,
}

/// The properties a dead letter of a message with properties `part` (received through
/// `(exchange, routing_key)`) is republished with; see `Settler::dead_letter_properties`.
fn republish_properties(
    part: &BasicProperties,
    (exchange, routing_key): (&str, &str),
    letter: &DeadLetter,
    limits: Limits,
    queue: &str,
) -> Option<BasicProperties> {
    let frame_max = effective_frame_max(limits.frame_max);
    let mut table: FieldTable = part.headers().clone().unwrap_or_default();
    let retry_count = table
        .inner()
        .get(RETRY_COUNT)
        .map(headers::from_amqp)
        .and_then(|v| v.to_i64_lenient())
        .unwrap_or(0);
    // A message dead-lettered before carries the old failure headers: replaced, not counted.
    let mut inner = table.inner().clone();
    inner.remove(names::EXCEPTION_MESSAGE);
    inner.remove(names::EXCEPTION_STACKTRACE);
    table = FieldTable::from(inner);
    let added = [
        (X_ORIGINAL_EXCHANGE, text(exchange)),
        (X_ORIGINAL_ROUTING_KEY, text(routing_key)),
        (
            RETRY_COUNT,
            AMQPValue::LongInt(i32::try_from(retry_count.saturating_add(1)).unwrap_or(i32::MAX)),
        ),
    ];
    for (name, value) in &added {
        table.insert((*name).into(), value.clone());
    }
    let base = |table: &FieldTable| {
        part.clone()
            .with_headers(table.clone())
            .with_delivery_mode(limits.delivery_mode)
    };
    let entry = |name: &str, len: usize| frame::long_string_entry_len(name, len);
    // Room for at least the start of the exception message beside the other headers.
    let wanted = entry(
        names::EXCEPTION_MESSAGE,
        letter.exception_message().len().min(MIN_MESSAGE),
    ) + entry(names::EXCEPTION_STACKTRACE, 0);
    let mut props = base(&table);
    let used = frame::header_frame_len(&props);
    if used + wanted > frame_max {
        let ours = |k: &str| added.iter().any(|(n, _)| *n == k);
        let sizes: Vec<(String, usize)> = table
            .inner()
            .iter()
            .filter(|(k, _)| !ours(k.as_str()))
            .map(|(k, v)| (k.as_str().to_owned(), frame::entry_len(k, v)))
            .collect();
        let dropped = headers_to_drop(sizes, used + wanted - frame_max)?;
        let mut inner = table.inner().clone();
        for name in &dropped {
            inner.remove(name.as_str());
        }
        table = FieldTable::from(inner);
        props = base(&table);
        tracing::warn!(
            queue = %queue,
            frame_max,
            dropped = ?dropped,
            "the failed message's headers leave no room for the failure headers within frame_max: \
             the largest are left out of the republished message"
        );
    }
    let room = frame_max.checked_sub(frame::header_frame_len(&props))?;
    let mut budget = HeaderBudget::new(room);
    if let Some(spring) = frame_max.checked_sub(limits.headroom as usize)
        && spring > 0
    {
        budget = budget.with_max_stacktrace(spring);
    }
    let bounded = letter.bounded_failure_headers(budget, entry)?;
    if bounded.truncated {
        tracing::warn!(
            queue = %queue,
            frame_max,
            frame_max_headroom = limits.headroom,
            kept_message = bounded.exception_message.len(),
            kept_stacktrace = bounded.stacktrace.len(),
            "failure headers of the republished message truncated to fit frame_max; \
             consider increasing frame_max on the broker or reducing the error chain"
        );
    }
    table.insert(
        names::EXCEPTION_MESSAGE.into(),
        text(&bounded.exception_message),
    );
    table.insert(
        names::EXCEPTION_STACKTRACE.into(),
        text(&bounded.stacktrace),
    );
    Some(props.with_headers(table))
}

/// The connection's `frame_max`, or RabbitMQ's default when unknown (0).
fn effective_frame_max(frame_max: u32) -> usize {
    if frame_max == 0 {
        DEFAULT_FRAME_MAX as usize
    } else {
        frame_max as usize
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lapin::types::{FieldArray, ShortString};
    use proptest::prelude::*;
    use stream_core::binder::FailedMessage;
    use stream_core::{FunctionError, Message};

    use super::*;

    fn letter(message: &str) -> DeadLetter {
        DeadLetter::new(FailedMessage {
            message: Message::bytes("body"),
            error: Arc::new(FunctionError::msg(message.to_owned())),
            attempts: 1,
        })
    }

    fn limits(frame_max: u32) -> Limits {
        Limits {
            frame_max,
            headroom: 20_000,
            delivery_mode: 2,
        }
    }

    fn with_header(name: &str, len: usize) -> BasicProperties {
        let mut t = FieldTable::default();
        t.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(vec![b'x'; len])),
        );
        t.insert("small".into(), AMQPValue::LongInt(1));
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(t)
    }

    fn header_of<'a>(p: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
        p.headers().as_ref().and_then(|t| t.inner().get(name))
    }

    #[test]
    fn headers_near_frame_max_leave_room_for_the_failure_headers() {
        // The message's headers alone take nearly the whole frame (as in the issue).
        let part = with_header("big", 131_072 - 200);
        let l = letter(&"boom ".repeat(2_000));
        let p = republish_properties(&part, ("ex", "rk"), &l, limits(131_072), "q")
            .expect("fits once the largest header is left out");
        assert!(frame::header_frame_len(&p) <= 131_072);
        assert!(
            header_of(&p, "big").is_none(),
            "the largest header is dropped"
        );
        assert!(header_of(&p, "small").is_some(), "the others are kept");
        match header_of(&p, names::EXCEPTION_MESSAGE) {
            Some(AMQPValue::LongString(s)) => assert!(s.as_bytes().starts_with(b"boom")),
            other => panic!("x-exception-message: {other:?}"),
        }
    }

    #[test]
    fn a_huge_exception_message_is_cut_to_the_frame() {
        let part = with_header("h", 10);
        let l = letter(&"m".repeat(500_000));
        let p = republish_properties(&part, ("ex", "rk"), &l, limits(131_072), "q").expect("fits");
        assert!(frame::header_frame_len(&p) <= 131_072);
        assert!(header_of(&p, "h").is_some());
    }

    #[test]
    fn the_stack_trace_keeps_springs_cut() {
        let part = with_header("h", 10);
        let long = letter(&"z".repeat(200_000));
        let lim = Limits {
            frame_max: 131_072,
            headroom: 131_000,
            delivery_mode: 2,
        };
        let p = republish_properties(&part, ("ex", "rk"), &long, lim, "q").expect("fits");
        match header_of(&p, names::EXCEPTION_STACKTRACE) {
            Some(AMQPValue::LongString(s)) => assert!(s.as_bytes().len() <= 72),
            other => panic!("x-exception-stacktrace: {other:?}"),
        }
        assert!(frame::header_frame_len(&p) <= 131_072);
    }

    fn value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| AMQPValue::DecimalValue(
                lapin::types::DecimalValue { scale, value }
            )),
            proptest::collection::vec(any::<u8>(), 0..3000)
                .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8)
                    .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
                proptest::collection::btree_map("[a-z]{1,8}", inner, 0..8).prop_map(|m| {
                    let mut t = FieldTable::default();
                    for (k, v) in m {
                        t.insert(ShortString::from(k), v);
                    }
                    AMQPValue::FieldTable(t)
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the message's headers and the error, the republished header frame fits
        /// `frame_max` (or there is no republish, and the message is rejected instead).
        #[test]
        fn the_republished_frame_always_fits(
            headers in proptest::collection::btree_map("[a-z-]{1,20}", value(), 0..40),
            message_len in 0usize..300_000,
            frame_max in prop_oneof![Just(4096u32), Just(16_384u32), Just(131_072u32)],
            headroom in 0u32..40_000,
        ) {
            let mut t = FieldTable::default();
            for (k, v) in headers {
                t.insert(ShortString::from(k), v);
            }
            let part = BasicProperties::default().with_headers(t).with_message_id("id".into());
            let l = letter(&"e".repeat(message_len));
            let lim = Limits { frame_max, headroom, delivery_mode: 2 };
            if let Some(p) = republish_properties(&part, ("ex", "rk"), &l, lim, "q") {
                prop_assert!(frame::header_frame_len(&p) <= frame_max as usize);
                prop_assert!(header_of(&p, names::EXCEPTION_MESSAGE).is_some());
            }
        }
    }
}
