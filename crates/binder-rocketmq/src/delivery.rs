//! The raw message of a RocketMQ delivery, and the way a push consumer's settlement gets back
//! to the listener thread that waits for it.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use rocketmq_model::common::message::message_ext::MessageExt;
use stream_core::binder::Settlement;

/// The broker's message behind a delivery: the consumed `MessageExt` (what an error handler
/// finds in `ErrorMessage::raw`, downcast to `RocketMqRaw`) and, for a push consumer, the reply
/// channel to the client's listener waiting for the settlement.
#[derive(Debug)]
pub struct RocketMqRaw {
    ext: Arc<MessageExt>,
    reply: Option<SyncSender<Answer>>,
}

impl RocketMqRaw {
    /// A polled message (settled by the polled consumer itself).
    pub(crate) fn polled(ext: Arc<MessageExt>) -> Self {
        Self { ext, reply: None }
    }

    /// A pushed message, and the listener's end of its reply channel.
    pub(crate) fn pushed(ext: Arc<MessageExt>) -> (Self, SyncSender<Answer>, Waiter) {
        // Room for both answers, so neither sender ever blocks.
        let (tx, rx) = sync_channel(2);
        (
            Self {
                ext,
                reply: Some(tx.clone()),
            },
            tx,
            Waiter(rx),
        )
    }

    /// The consumed message.
    pub fn message(&self) -> &MessageExt {
        &self.ext
    }

    /// Hands the settlement to the waiting listener; `false` when nobody waits any more (it
    /// gave up, the consumer stopped) or this is not a pushed delivery.
    pub(crate) fn answer(&self, settlement: Settlement) -> bool {
        self.reply
            .as_ref()
            .is_some_and(|tx| tx.try_send(Answer::Settled(settlement)).is_ok())
    }
}

/// What reaches the listener waiting for a pushed delivery.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The runtime settled it.
    Settled(Settlement),
    /// The runtime finished with it (after settling it, or without: then nothing settled it).
    Finished,
}

/// The listener's end of a pushed delivery's reply channel.
#[derive(Debug)]
pub(crate) struct Waiter(Receiver<Answer>);

impl Waiter {
    /// Blocks this (blocking-lane) thread for the settlement, at most `limit`. `None` when the
    /// runtime finished without settling, dropped the delivery (its runtime is shutting down)
    /// or took longer than `limit`.
    pub(crate) fn settlement(&self, limit: Duration) -> Option<Settlement> {
        match self.0.recv_timeout(limit) {
            Ok(Answer::Settled(s)) => Some(s),
            Ok(Answer::Finished) => None,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_settlement_reaches_the_listener() {
        let (raw, done, waiter) = RocketMqRaw::pushed(Arc::new(MessageExt::default()));
        assert!(raw.answer(Settlement::Requeue));
        let _ = done.try_send(Answer::Finished);
        assert_eq!(
            waiter.settlement(Duration::from_millis(10)),
            Some(Settlement::Requeue)
        );
    }

    #[test]
    fn finished_or_dropped_without_settlement_means_nothing_settled() {
        let (raw, done, waiter) = RocketMqRaw::pushed(Arc::new(MessageExt::default()));
        let _ = done.try_send(Answer::Finished);
        assert_eq!(waiter.settlement(Duration::from_millis(10)), None);
        drop(raw);
        let (raw, done, waiter) = RocketMqRaw::pushed(Arc::new(MessageExt::default()));
        drop((raw, done));
        assert_eq!(waiter.settlement(Duration::from_secs(5)), None);
    }

    #[test]
    fn nobody_waits_for_a_polled_message() {
        let raw = RocketMqRaw::polled(Arc::new(MessageExt::default()));
        assert!(!raw.answer(Settlement::Ack));
    }
}
