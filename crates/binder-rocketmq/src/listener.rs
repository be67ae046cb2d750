//! The push consumer's listener: the bridge from the client's synchronous listener calls (on a
//! blocking lane) to the runtime's [`Sink`] on the application's runtime, and the translation of
//! the runtime's [`Settlement`] into what the listener returns (see `consumer.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, ConsumeOrderlyContext,
    ConsumeOrderlyStatus, DefaultMQPushConsumer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use stream_core::binder::{Body, Consumer, Delivery, Settlement, Sink};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::delivery::{Finish, RocketMqRaw};
use crate::headers;

/// The running push consumer of a binding (`None` when stopped), shared with its listener
/// (which sends failed messages back through it) and its broker watch.
pub(crate) type PushClient = Arc<Mutex<Option<DefaultMQPushConsumer>>>;

/// What a listener makes of one message's settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Consumed: acknowledged (after dead-lettering, if the runtime did).
    Done,
    /// To be delivered again.
    Again,
}

impl From<Option<Settlement>> for Verdict {
    fn from(s: Option<Settlement>) -> Self {
        match s {
            Some(Settlement::Ack) => Verdict::Done,
            // Nothing settled it (the runtime dropped it, or took too long), a requeue, or a
            // reject (never asked for with this binder's recovery): deliver it again.
            Some(Settlement::Requeue | Settlement::Reject) | None => Verdict::Again,
        }
    }
}

/// What a listener needs to know of its binding.
#[derive(Clone, Debug)]
pub(crate) struct ListenerSettings {
    pub(crate) binding: String,
    pub(crate) group: String,
    pub(crate) clustering: bool,
    /// The delay level of a message the binder sends back (0: the broker's schedule).
    pub(crate) redelivery_level: i32,
    /// Longest the listener waits for the runtime to settle a delivery.
    pub(crate) settle_timeout: Duration,
    /// Orderly: how long a queue is suspended after a failure.
    pub(crate) suspend_millis: u64,
}

/// Hands messages from the client's blocking lane to the application's runtime.
pub(crate) struct Listener<C: Consumer<Raw = RocketMqRaw>> {
    sink: Sink<C>,
    app: tokio::runtime::Handle,
    settings: ListenerSettings,
    client: PushClient,
    /// Orderly: per queue, the offset below which the messages of a batch that was suspended
    /// were already consumed (they come back with the batch and are not processed again).
    orderly_done: StdMutex<HashMap<MessageQueue, i64>>,
    /// Whether deliveries are processed on the listener's thread (see [`Self::dispatch`]).
    inline: bool,
}

impl<C: Consumer<Raw = RocketMqRaw>> Listener<C> {
    /// A listener dispatching to `sink` on the current (the application's) runtime.
    pub(crate) fn new(sink: Sink<C>, settings: ListenerSettings, client: PushClient) -> Self {
        let app = tokio::runtime::Handle::current();
        let inline = matches!(
            app.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        Self {
            sink,
            inline,
            app,
            settings,
            client,
            orderly_done: StdMutex::new(HashMap::new()),
        }
    }

    /// Has the runtime process one message and waits (on this blocking-lane thread, never on a
    /// tokio worker) for its settlement.
    ///
    /// On a multi-threaded application runtime the delivery is processed right here, on the
    /// listener's thread inside the application runtime's context: no task spawned and no
    /// hand-off between threads per message (what made consuming cost twice the raw client's
    /// CPU). If it is not finished within `push.consume-timeout`, the rest of it goes on as a
    /// task of the application runtime and the message is delivered again. On a
    /// current-thread runtime (whose drivers only its own thread runs) it is spawned there.
    fn dispatch(&self, ext: &MessageExt) -> Verdict {
        let span = tracing::debug_span!(
            "rocketmq.consume",
            messaging.system = "rocketmq",
            messaging.destination.name = %ext.topic(),
            messaging.consumer.group.name = %self.settings.group,
            binding = %self.settings.binding,
            queue_id = ext.queue_id(),
            queue_offset = ext.queue_offset(),
            reconsume_times = ext.reconsume_times(),
        );
        // The listener only borrows the message: one copy, shared (in the delivery's `Arc`)
        // from here on.
        let message = headers::from_rocketmq(ext);
        let raw = RocketMqRaw::pushed(ext.clone());
        let finish = Finish(Arc::clone(&raw));
        let sink = self.sink.clone();
        let work = async move {
            // Dropped when the work ends or is dropped: the wait below ends then at the latest.
            let finish = finish;
            sink.dispatch(Delivery {
                raw: Arc::clone(&finish.0),
                body: Body::One(message),
            })
            .await;
        }
        .instrument(span.clone());
        let limit = self.settings.settle_timeout;
        let started = Instant::now();
        if self.inline {
            let mut work = Box::pin(work);
            let finished = {
                let _runtime = self.app.enter();
                crate::park::block_on(tokio::time::timeout(limit, &mut work)).is_ok()
            };
            if !finished {
                drop(self.app.spawn(work));
            }
        } else {
            drop(self.app.spawn(work));
        }
        let _entered = span.enter();
        // Processed inline, the answer is already there unless the settlement was deferred
        // (a stream function holding the message): then wait for what is left of the limit.
        let settlement = raw.settlement(limit.saturating_sub(started.elapsed()));
        if settlement.is_none() {
            tracing::warn!(
                "the delivery was not settled (the application runtime dropped it or it took \
                 longer than push.consume-timeout); it is delivered again"
            );
        }
        Verdict::from(settlement)
    }

    /// The concurrent listener: each message is processed and settled on its own. Messages
    /// to deliver again are sent back one by one (the broker's `%RETRY%<group>` schedule), so
    /// the others of a batch are not run again; if a send-back fails, the whole batch is
    /// handed back (`RECONSUME_LATER`), which may run some messages twice but loses none.
    pub(crate) fn concurrently(
        &self,
        msgs: &[&MessageExt],
        ctx: &ConsumeConcurrentlyContext,
    ) -> ConsumeConcurrentlyStatus {
        let again: Vec<&MessageExt> = msgs
            .iter()
            .copied()
            .filter(|m| self.dispatch(m) == Verdict::Again)
            .collect();
        if again.is_empty() {
            return ConsumeConcurrentlyStatus::ConsumeSuccess;
        }
        // Broadcasting: the client logs and drops it (nothing is redelivered there). One message
        // on the broker's own schedule: the client's send-back is the same as ours.
        if !self.settings.clustering || (msgs.len() == 1 && self.settings.redelivery_level == 0) {
            return ConsumeConcurrentlyStatus::ReconsumeLater;
        }
        if self.send_back(&again, ctx.get_message_queue().broker_name().as_str()) {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        } else {
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }

    /// Sends messages back to the broker for redelivery (as the client does for
    /// `RECONSUME_LATER`, with the binding's delay level); whether all of them were.
    fn send_back(&self, msgs: &[&MessageExt], broker: &str) -> bool {
        let msgs: Vec<MessageExt> = msgs.iter().map(|m| (*m).clone()).collect();
        let count = msgs.len();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = Arc::clone(&self.client);
        let level = self.settings.redelivery_level;
        let broker = broker.to_owned();
        let binding = self.settings.binding.clone();
        drop(self.app.spawn(async move {
            let mut guard = client.lock().await;
            let sent = match guard.as_mut() {
                None => false,
                Some(c) => {
                    let mut sent = true;
                    for m in msgs {
                        if let Err(e) = c.send_message_back(m, level, &broker).await {
                            tracing::warn!(binding = %binding, error = %e, "sending a failed message back failed; the batch is handed back whole");
                            sent = false;
                            break;
                        }
                    }
                    sent
                }
            };
            let _ = tx.send(sent);
        }));
        let sent = rx.recv().unwrap_or(false);
        if sent {
            tracing::debug!(count, level, "messages sent back for redelivery");
        }
        sent
    }

    /// The orderly listener: in queue order; the first message to deliver again suspends the
    /// queue (`suspend-current-queue-time-millis`) and the batch comes back, without running
    /// the messages before it again.
    pub(crate) fn orderly(
        &self,
        msgs: &[&MessageExt],
        ctx: &mut ConsumeOrderlyContext,
    ) -> ConsumeOrderlyStatus {
        let queue = ctx.get_message_queue().clone();
        let done_below = self
            .orderly_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&queue)
            .copied();
        for m in msgs {
            if done_below.is_some_and(|below| m.queue_offset() < below) {
                continue;
            }
            if self.dispatch(m) == Verdict::Again {
                self.orderly_done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue, m.queue_offset());
                ctx.set_suspend_current_queue_time_millis(
                    i64::try_from(self.settings.suspend_millis).unwrap_or(i64::MAX),
                );
                return ConsumeOrderlyStatus::SuspendCurrentQueueAMoment;
            }
        }
        if done_below.is_some() {
            self.orderly_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&queue);
        }
        ConsumeOrderlyStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ack_consumes() {
        assert_eq!(Verdict::from(Some(Settlement::Ack)), Verdict::Done);
        assert_eq!(Verdict::from(Some(Settlement::Requeue)), Verdict::Again);
        assert_eq!(Verdict::from(Some(Settlement::Reject)), Verdict::Again);
        assert_eq!(Verdict::from(None), Verdict::Again);
    }
}
