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
use stream_core::binder::{DeadLetter, DeadLetterRoute, Recovery, Settlement};
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

/// Used as `frame_max` when the connection's is unknown (RabbitMQ's default).
const DEFAULT_FRAME_MAX: u32 = 131_072;

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
    /// the stack trace cut so that the whole header frame fits `frame_max` (and to
    /// `frame_max - frame-max-headroom`, as Spring cuts it). `None` when even without a stack
    /// trace the headers exceed the frame.
    fn dead_letter_properties(
        &self,
        raw: &RabbitRawMessage,
        letter: &DeadLetter,
        frame_max: u32,
    ) -> Option<BasicProperties> {
        let part = raw.part_properties();
        let mut table: FieldTable = part.headers().clone().unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
        let retry_count = table
            .inner()
            .get(RETRY_COUNT)
            .map(headers::from_amqp)
            .and_then(|v| v.to_i64_lenient())
            .unwrap_or(0);
        table.insert(
            stream_core::message::names::EXCEPTION_MESSAGE.into(),
            text(letter.exception_message()),
        );
        table.insert(X_ORIGINAL_EXCHANGE.into(), text(&raw.exchange));
        table.insert(X_ORIGINAL_ROUTING_KEY.into(), text(&raw.routing_key));
        table.insert(
            RETRY_COUNT.into(),
            AMQPValue::LongInt(i32::try_from(retry_count.saturating_add(1)).unwrap_or(i32::MAX)),
        );
        let props = part
            .clone()
            .with_headers(table.clone())
            .with_delivery_mode(self.props.republish_delivery_mode.amqp_value());
        let name = stream_core::message::names::EXCEPTION_STACKTRACE;
        let without_trace = frame::header_frame_len(&props) + frame::long_string_entry_len(name, 0);
        let budget = stacktrace_budget(frame_max, self.props.frame_max_headroom, without_trace)?;
        let (trace, truncated) = letter.stacktrace(Some(budget));
        if truncated {
            tracing::warn!(
                queue = %self.queue(),
                frame_max,
                frame_max_headroom = self.props.frame_max_headroom,
                kept = trace.len(),
                "stack trace in the republished message's header truncated to fit frame_max; \
                 consider increasing frame_max on the broker or reducing the error chain"
            );
        }
        table.insert(name.into(), text(&trace));
        Some(props.with_headers(table))
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
        let confirm = confirm.await.map_err(|e| {
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

/// How many bytes of stack trace a republished message may carry: what is left of
/// `frame_max` (the connection's, or RabbitMQ's default when unknown) once the other headers
/// (`without_trace` bytes of header frame) are counted, and at most `frame_max - headroom`
/// as Spring cuts it. `None` when nothing is left.
fn stacktrace_budget(frame_max: u32, headroom: u32, without_trace: usize) -> Option<usize> {
    let frame_max = if frame_max == 0 {
        DEFAULT_FRAME_MAX
    } else {
        frame_max
    } as usize;
    let fits = frame_max.checked_sub(without_trace)?;
    match frame_max.checked_sub(headroom as usize) {
        Some(spring) if spring > 0 => Some(fits.min(spring)),
        _ => Some(fits),
    }
}

#[cfg(test)]
mod tests {
    use super::stacktrace_budget;

    #[test]
    fn the_stack_trace_always_fits_the_frame() {
        // Spring's cut applies when it is the smaller one.
        assert_eq!(stacktrace_budget(131_072, 20_000, 1_000), Some(111_072));
        // Large headers leave less than Spring's cut: the frame wins.
        assert_eq!(stacktrace_budget(131_072, 20_000, 125_000), Some(6_072));
        // A headroom larger than frame_max (Spring would not cut): the frame still bounds it.
        assert_eq!(stacktrace_budget(4_096, 20_000, 1_000), Some(3_096));
        // Unknown frame_max: RabbitMQ's default.
        assert_eq!(stacktrace_budget(0, 20_000, 1_000), Some(111_072));
        // The headers alone do not fit: no republish.
        assert_eq!(stacktrace_budget(4_096, 20_000, 5_000), None);
    }
}
