//! The settlement table: how a delivery is settled, given what happened to it, who settles
//! (the acknowledge mode) and where the binding's failed messages go. Pure functions, decided
//! here once for every binder; a binder only executes the result.

use super::outcome::Outcome;

/// What a binder does to one delivery on the broker: the runtime's final decision.
///
/// Exhaustive on purpose: a binder maps each variant to its broker and has no fallback arm to
/// guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settlement {
    /// Acknowledge: the broker forgets the message.
    Ack,
    /// Hand it back to be delivered again (at once, or on the broker's redelivery schedule).
    Requeue,
    /// Refuse it without requeue: the broker drops it, or routes it to the dead-letter
    /// destination its topology names (a RabbitMQ queue's dead-letter exchange).
    Reject,
}

/// Where a consumer binding's failed messages go: what its binder can do, from the binding's
/// properties, given to the runtime when the consumer is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterRoute {
    /// The binder publishes the message to its dead-letter destination (with the failure
    /// headers) and the runtime then acknowledges it (RabbitMQ `republish-to-dlq`, RocketMQ's
    /// binder-side `%DLQ%`, the in-memory `<destination>.<group>.dlq`).
    Publish,
    /// Rejecting it without requeue dead-letters it: the broker routes it (RabbitMQ's
    /// `x-dead-letter-exchange`), or drops it when nothing is configured there.
    Reject,
    /// The broker's redelivery schedule retries it and dead-letters it after its own limit
    /// (RocketMQ's `%RETRY%<group>` then `%DLQ%<group>`): the runtime requeues it.
    Redeliver,
    /// Nowhere: it is dropped (acknowledged) with a warning (an anonymous in-memory
    /// subscription, a broadcasting RocketMQ consumer).
    Drop,
}

/// How failures of one consumer binding are recovered, given by the binder at bind time.
///
/// ```
/// use stream_core::binder::{DeadLetterRoute, Recovery};
/// let r = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Reject).with_requeue_rejected(true);
/// assert_eq!(r.exhausted(), DeadLetterRoute::Publish);
/// assert!(r.requeue_rejected());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recovery {
    exhausted: DeadLetterRoute,
    rejected: DeadLetterRoute,
    requeue_rejected: bool,
    transactional: bool,
}

impl Recovery {
    /// Where messages go whose retries are exhausted (`exhausted`) and messages the function
    /// rejects without requeue (`rejected`, [`crate::FunctionError::reject_and_dont_requeue`]).
    pub const fn new(exhausted: DeadLetterRoute, rejected: DeadLetterRoute) -> Self {
        Self {
            exhausted,
            rejected,
            requeue_rejected: false,
            transactional: false,
        }
    }

    /// Whether a failed message that is rejected rather than dead-lettered goes back to the
    /// queue (RabbitMQ's `requeue-rejected`, applied when `max-attempts` is 1 or a dead-letter
    /// publish fails).
    pub const fn with_requeue_rejected(mut self, requeue: bool) -> Self {
        self.requeue_rejected = requeue;
        self
    }

    /// Whether a delivery is settled atomically with what its processing published (a
    /// transacted consumer): a delivery carrying several parts then succeeds or fails whole.
    pub const fn with_transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Route of exhausted failures.
    pub const fn exhausted(&self) -> DeadLetterRoute {
        self.exhausted
    }

    /// Route of messages rejected without requeue.
    pub const fn rejected(&self) -> DeadLetterRoute {
        self.rejected
    }

    /// See [`Recovery::with_requeue_rejected`].
    pub const fn requeue_rejected(&self) -> bool {
        self.requeue_rejected
    }

    /// See [`Recovery::with_transactional`].
    pub const fn transactional(&self) -> bool {
        self.transactional
    }

    /// The settlement that loses nothing when a dead-letter publish failed: reject when the
    /// broker dead-letters rejected messages (unless `requeue-rejected`), else requeue.
    const fn fallback(&self) -> Settlement {
        match self.rejected {
            DeadLetterRoute::Reject if !self.requeue_rejected => Settlement::Reject,
            _ => Settlement::Requeue,
        }
    }

    /// `requeue_instead`: reject means requeue here (one attempt and `requeue-rejected`).
    fn route(
        &self,
        route: DeadLetterRoute,
        requeue_instead: bool,
        then: Option<Settlement>,
    ) -> Plan {
        match route {
            DeadLetterRoute::Publish => Plan::DeadLetter {
                then,
                fallback: then.map(|_| self.fallback()),
            },
            DeadLetterRoute::Reject if then.is_none() => Plan::Nothing,
            DeadLetterRoute::Reject if requeue_instead => Plan::Settle(Settlement::Requeue),
            DeadLetterRoute::Reject => Plan::Settle(Settlement::Reject),
            DeadLetterRoute::Redeliver if then.is_none() => Plan::Nothing,
            DeadLetterRoute::Redeliver => Plan::Settle(Settlement::Requeue),
            DeadLetterRoute::Drop if then.is_none() => Plan::Nothing,
            DeadLetterRoute::Drop => Plan::Dropped,
        }
    }
}

/// Who settles a delivery, and whether it is settled already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settler {
    /// The runtime (`acknowledge-mode: AUTO`).
    Runtime,
    /// The function, through the message's acknowledgment (`MANUAL`); `settled` says whether
    /// it did.
    Function {
        /// Whether the function settled the delivery.
        settled: bool,
    },
    /// The broker, on delivery (`NONE`): nothing can be acknowledged, rejected or requeued.
    Broker,
}

/// What the runtime does with one delivery after processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing: settled already (by the broker, or by the function).
    Nothing,
    /// Settle.
    Settle(Settlement),
    /// Publish to the dead-letter destination, then settle with `then` (`None`: the broker
    /// settled already); if publishing fails, settle with `fallback`.
    DeadLetter {
        /// After a successful publish.
        then: Option<Settlement>,
        /// After a failed publish.
        fallback: Option<Settlement>,
    },
    /// Dropped on purpose (no dead-letter destination): acknowledge, with a warning.
    Dropped,
}

/// The settlement table.
///
/// | outcome | runtime settles | function settled | function did not | broker settled |
/// |---|---|---|---|---|
/// | success | ack | nothing | nothing | nothing |
/// | acknowledged (immediate-acknowledge, error handler took it) | ack | nothing | ack | nothing |
/// | requeue requested | requeue | nothing | requeue | nothing |
/// | reject requested | `rejected` route | nothing | `rejected` route | publish if `Publish` |
/// | exhausted | `exhausted` route | nothing | `exhausted` route | publish if `Publish` |
///
/// Routes: `Publish` → dead-letter then ack (fallback: reject if the broker dead-letters
/// rejects, else requeue); `Reject` → reject (requeue instead when `max-attempts` is 1 and
/// `requeue-rejected`); `Redeliver` → requeue; `Drop` → ack with a warning.
pub(crate) fn plan(
    outcome: &Outcome,
    settler: Settler,
    recovery: &Recovery,
    max_attempts: u32,
) -> Plan {
    let then = match settler {
        Settler::Function { settled: true } => return Plan::Nothing,
        Settler::Broker => None,
        Settler::Runtime | Settler::Function { settled: false } => Some(Settlement::Ack),
    };
    match outcome {
        Outcome::Success if settler == Settler::Runtime => Plan::Settle(Settlement::Ack),
        Outcome::Success => Plan::Nothing,
        Outcome::Acknowledged => match then {
            Some(s) => Plan::Settle(s),
            None => Plan::Nothing,
        },
        Outcome::RequeueRequested => match then {
            Some(_) => Plan::Settle(Settlement::Requeue),
            None => Plan::Nothing,
        },
        // Reject-and-don't-requeue is never requeued.
        Outcome::RejectRequested(_) => recovery.route(recovery.rejected, false, then),
        // Spring: with retries (max-attempts > 1) an exhausted failure is rejected so the broker
        // dead-letters it; without, it is requeued only if requeue-rejected says so.
        Outcome::Exhausted(_) => recovery.route(
            recovery.exhausted,
            max_attempts <= 1 && recovery.requeue_rejected,
            then,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::error::FunctionError;
    use crate::message::Message;
    use crate::process::outcome::FailedMessage;

    fn failed() -> FailedMessage {
        FailedMessage {
            message: Message::new(Bytes::from_static(b"x")),
            error: Arc::new(FunctionError::msg("boom")),
            attempts: 3,
        }
    }

    const AUTO: Settler = Settler::Runtime;
    const MANUAL_DONE: Settler = Settler::Function { settled: true };
    const MANUAL_OPEN: Settler = Settler::Function { settled: false };
    const NONE: Settler = Settler::Broker;

    fn ack() -> Plan {
        Plan::Settle(Settlement::Ack)
    }

    #[test]
    fn success_is_acked_only_by_the_runtime() {
        let r = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Reject);
        assert_eq!(plan(&Outcome::Success, AUTO, &r, 3), ack());
        assert_eq!(plan(&Outcome::Success, MANUAL_OPEN, &r, 3), Plan::Nothing);
        assert_eq!(plan(&Outcome::Success, MANUAL_DONE, &r, 3), Plan::Nothing);
        assert_eq!(plan(&Outcome::Success, NONE, &r, 3), Plan::Nothing);
    }

    #[test]
    fn special_outcomes() {
        let r = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Reject);
        assert_eq!(plan(&Outcome::Acknowledged, AUTO, &r, 3), ack());
        assert_eq!(plan(&Outcome::Acknowledged, MANUAL_OPEN, &r, 3), ack());
        assert_eq!(plan(&Outcome::Acknowledged, NONE, &r, 3), Plan::Nothing);
        assert_eq!(
            plan(&Outcome::RequeueRequested, AUTO, &r, 3),
            Plan::Settle(Settlement::Requeue)
        );
        assert_eq!(
            plan(&Outcome::RequeueRequested, MANUAL_DONE, &r, 3),
            Plan::Nothing
        );
        assert_eq!(plan(&Outcome::RequeueRequested, NONE, &r, 3), Plan::Nothing);
        // Reject-and-don't-requeue follows the `rejected` route, whatever max-attempts is.
        for attempts in [1, 3] {
            assert_eq!(
                plan(&Outcome::RejectRequested(failed()), AUTO, &r, attempts),
                Plan::Settle(Settlement::Reject)
            );
        }
        let publish = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Publish)
            .with_requeue_rejected(true);
        assert_eq!(
            plan(&Outcome::RejectRequested(failed()), AUTO, &publish, 1),
            Plan::DeadLetter {
                then: Some(Settlement::Ack),
                fallback: Some(Settlement::Requeue)
            }
        );
    }

    #[test]
    fn exhausted_follows_the_route() {
        let o = Outcome::Exhausted(failed());
        let publish = Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Reject);
        assert_eq!(
            plan(&o, AUTO, &publish, 3),
            Plan::DeadLetter {
                then: Some(Settlement::Ack),
                fallback: Some(Settlement::Reject)
            }
        );
        // NONE: the broker settled it; the dead letter is still published, nothing settled.
        assert_eq!(
            plan(&o, NONE, &publish, 3),
            Plan::DeadLetter {
                then: None,
                fallback: None
            }
        );
        assert_eq!(plan(&o, MANUAL_DONE, &publish, 3), Plan::Nothing);
        // requeue-rejected turns the fallback into a requeue.
        let requeue = publish.with_requeue_rejected(true);
        assert_eq!(
            plan(&o, AUTO, &requeue, 3),
            Plan::DeadLetter {
                then: Some(Settlement::Ack),
                fallback: Some(Settlement::Requeue)
            }
        );
        // A broker that dead-letters rejects: reject; with one attempt, requeue-rejected decides.
        let reject = Recovery::new(DeadLetterRoute::Reject, DeadLetterRoute::Reject);
        assert_eq!(plan(&o, AUTO, &reject, 3), Plan::Settle(Settlement::Reject));
        assert_eq!(plan(&o, AUTO, &reject, 1), Plan::Settle(Settlement::Reject));
        assert_eq!(
            plan(&o, AUTO, &reject.with_requeue_rejected(true), 1),
            Plan::Settle(Settlement::Requeue)
        );
        assert_eq!(
            plan(&o, AUTO, &reject.with_requeue_rejected(true), 3),
            Plan::Settle(Settlement::Reject)
        );
        assert_eq!(plan(&o, NONE, &reject, 3), Plan::Nothing);
        // The broker's own redelivery schedule, or nowhere.
        let redeliver = Recovery::new(DeadLetterRoute::Redeliver, DeadLetterRoute::Publish);
        assert_eq!(
            plan(&o, AUTO, &redeliver, 3),
            Plan::Settle(Settlement::Requeue)
        );
        let drop = Recovery::new(DeadLetterRoute::Drop, DeadLetterRoute::Drop);
        assert_eq!(plan(&o, AUTO, &drop, 3), Plan::Dropped);
        assert_eq!(plan(&o, MANUAL_OPEN, &drop, 3), Plan::Dropped);
        assert_eq!(plan(&o, NONE, &drop, 3), Plan::Nothing);
    }
}
