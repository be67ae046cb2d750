//! The raw message of a RocketMQ delivery, and the way a push consumer's settlement gets back
//! to the listener thread that waits for it.
//!
//! The reply slot lives in the raw message itself, which the delivery's `Arc` shares with the
//! listener: handing a settlement back costs no allocation and no channel per message.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rocketmq_model::common::message::message_ext::MessageExt;
use stream_core::binder::Settlement;

/// The broker's message behind a delivery: the consumed `MessageExt` (what an error handler
/// finds in `ErrorMessage::raw`, downcast to `RocketMqRaw`) and, for a push consumer, the slot
/// the client's listener waits on for the settlement.
#[derive(Debug)]
pub struct RocketMqRaw {
    ext: Ext,
    reply: Option<Reply>,
}

/// The consumed message: the pull consumer's shared one, or the push listener's own copy (the
/// delivery's `Arc` already shares it, so it is not put in a second one).
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "it lives in the delivery's `Arc`: boxing the large variant would add the allocation this saves"
)]
enum Ext {
    Shared(Arc<MessageExt>),
    Owned(MessageExt),
}

/// Where a pushed delivery's answer waits for the listener.
#[derive(Debug, Default)]
struct Reply {
    state: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Debug, Default)]
enum Slot {
    /// The listener waits; nothing answered yet.
    #[default]
    Waiting,
    /// The first answer; later ones change nothing.
    Answered(Answer),
    /// The listener stopped waiting (it took the answer or gave up).
    Gone,
}

/// What reaches the listener waiting for a pushed delivery.
#[derive(Debug)]
enum Answer {
    /// The runtime settled it.
    Settled(Settlement),
    /// The runtime finished with it, or dropped it, without settling it.
    Finished,
}

impl RocketMqRaw {
    /// A polled message (settled by the polled consumer itself).
    pub(crate) fn polled(ext: Arc<MessageExt>) -> Self {
        Self {
            ext: Ext::Shared(ext),
            reply: None,
        }
    }

    /// A pushed message, shared with the listener that waits for its settlement
    /// ([`RocketMqRaw::settlement`]).
    pub(crate) fn pushed(ext: MessageExt) -> Arc<Self> {
        Arc::new(Self {
            ext: Ext::Owned(ext),
            reply: Some(Reply::default()),
        })
    }

    /// The consumed message.
    pub fn message(&self) -> &MessageExt {
        match &self.ext {
            Ext::Shared(ext) => ext,
            Ext::Owned(ext) => ext,
        }
    }

    /// Hands the settlement to the waiting listener; `false` when nobody waits any more (it
    /// gave up, the consumer stopped) or this is not a pushed delivery.
    pub(crate) fn answer(&self, settlement: Settlement) -> bool {
        self.reply
            .as_ref()
            .is_some_and(|r| r.put(Answer::Settled(settlement)))
    }

    /// Tells the listener the runtime is done with the delivery (settled or not).
    fn finish(&self) {
        if let Some(r) = &self.reply {
            r.put(Answer::Finished);
        }
    }

    /// Blocks this (blocking-lane) thread for the settlement, at most `limit`. `None` when the
    /// runtime finished without settling, dropped the delivery (its runtime is shutting down)
    /// or took longer than `limit`. Afterwards nobody waits: a later answer is refused.
    pub(crate) fn settlement(&self, limit: Duration) -> Option<Settlement> {
        let reply = self.reply.as_ref()?;
        let (mut state, _) = reply
            .ready
            .wait_timeout_while(reply.lock(), limit, |s| matches!(s, Slot::Waiting))
            .unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, Slot::Gone) {
            Slot::Answered(Answer::Settled(s)) => Some(s),
            Slot::Answered(Answer::Finished) | Slot::Waiting | Slot::Gone => None,
        }
    }
}

impl Reply {
    /// The slot, also after a panic of a thread holding it (it holds plain data).
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the first answer; whether the listener still waits for (or has) one.
    fn put(&self, answer: Answer) -> bool {
        let mut state = self.lock();
        match *state {
            Slot::Waiting => {
                *state = Slot::Answered(answer);
                drop(state);
                self.ready.notify_one();
                true
            }
            Slot::Answered(_) => true,
            Slot::Gone => false,
        }
    }
}

/// Held by the work processing a pushed delivery: when it ends (finished, or dropped by a
/// runtime shutting down) the listener stops waiting.
#[derive(Debug)]
pub(crate) struct Finish(pub(crate) Arc<RocketMqRaw>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_settlement_reaches_the_listener() {
        let raw = RocketMqRaw::pushed(MessageExt::default());
        assert!(raw.answer(Settlement::Requeue));
        assert!(
            raw.answer(Settlement::Ack),
            "a second answer is taken, not used"
        );
        drop(Finish(Arc::clone(&raw)));
        assert_eq!(
            raw.settlement(Duration::from_millis(10)),
            Some(Settlement::Requeue)
        );
        assert!(!raw.answer(Settlement::Ack), "nobody waits any more");
    }

    #[test]
    fn finished_or_dropped_without_settlement_means_nothing_settled() {
        let raw = RocketMqRaw::pushed(MessageExt::default());
        drop(Finish(Arc::clone(&raw)));
        assert_eq!(raw.settlement(Duration::from_secs(5)), None);
    }

    #[test]
    fn the_listener_waits_for_an_answer_from_another_thread() {
        let raw = RocketMqRaw::pushed(MessageExt::default());
        let finish = Finish(Arc::clone(&raw));
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            assert!(finish.0.answer(Settlement::Reject));
            drop(finish);
        });
        assert_eq!(
            raw.settlement(Duration::from_secs(5)),
            Some(Settlement::Reject)
        );
        worker.join().expect("the worker");
    }

    #[test]
    fn a_listener_that_gave_up_refuses_later_answers() {
        let raw = RocketMqRaw::pushed(MessageExt::default());
        assert_eq!(raw.settlement(Duration::from_millis(5)), None);
        assert!(!raw.answer(Settlement::Ack));
        assert_eq!(raw.settlement(Duration::ZERO), None);
    }

    #[test]
    fn nobody_waits_for_a_polled_message() {
        let raw = RocketMqRaw::polled(Arc::new(MessageExt::default()));
        assert!(!raw.answer(Settlement::Ack));
        assert_eq!(raw.settlement(Duration::ZERO), None);
    }
}
