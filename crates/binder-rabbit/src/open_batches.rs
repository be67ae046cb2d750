//! The producer's open batches (`batching-enabled`): one per routing key, each with one
//! completion that every sender of the batch awaits (publisher confirms or transactions on).
//!
//! One completion per batch, not one channel per message: the batch is published once and
//! confirmed once, so its outcome is set once and read by each of its senders.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::ShortString;
use stream_core::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::batching::Accumulator;
use crate::error::RabbitError;

/// What a batch's publish came to: `None` when the batch was dropped unsent (the producer
/// stopped with it open).
pub(crate) type BatchOutcome = Option<Result<(), Arc<RabbitError>>>;

/// One message waiting in a batch.
pub(crate) struct Pending {
    pub(crate) body: Bytes,
    /// Built when the message was sent only if it needs the message's expressions (`x-delay`);
    /// otherwise built from `message` for the one message whose properties the batch carries.
    pub(crate) props: Option<BasicProperties>,
    /// The message as sent (shares its headers): the batch's properties, the confirm-ack callback.
    pub(crate) message: Message<Bytes>,
}

/// The outcome of one batch, set once and awaited by each of its senders.
#[derive(Default)]
pub(crate) struct Completion {
    outcome: OnceLock<BatchOutcome>,
    done: Notify,
}

impl Completion {
    fn set(&self, outcome: BatchOutcome) {
        if self.outcome.set(outcome).is_ok() {
            self.done.notify_waiters();
        }
    }

    /// Waits for the batch's outcome.
    pub(crate) async fn wait(&self) -> BatchOutcome {
        loop {
            let notified = self.done.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a `set` between the check and the await still wakes.
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            notified.await;
        }
    }
}

/// The owner's side of a [`Completion`]: what it sets, and `None` if dropped unset, so no
/// sender waits for a batch that will never be published.
pub(crate) struct Completer(Arc<Completion>);

impl Completer {
    fn new() -> Self {
        Completer(Arc::new(Completion::default()))
    }

    /// Tells every sender of the batch the outcome of its publish.
    pub(crate) fn complete(self, result: Result<(), Arc<RabbitError>>) {
        self.0.set(Some(result));
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// A batch released for publishing.
pub(crate) struct Released {
    pub(crate) items: Vec<Pending>,
    /// Set when senders wait for the outcome (confirms or transactions on).
    pub(crate) completer: Option<Completer>,
}

/// The open batch of one routing key.
struct Open {
    messages: Accumulator<Pending>,
    completer: Option<Completer>,
}

impl Open {
    fn release(&mut self) -> Released {
        Released {
            items: self.messages.take(),
            completer: self.completer.take(),
        }
    }
}

struct State {
    /// One open batch per routing key: messages with different keys never share a batch.
    open: HashMap<ShortString, Open>,
    last_send: Instant,
}

/// Producer-side batching state (`batching-enabled`).
pub(crate) struct Batching {
    batch_size: u32,
    buffer_limit: u32,
    timeout: Duration,
    /// Whether senders await their batch's outcome (confirms or transactions on).
    awaited: bool,
    state: std::sync::Mutex<State>,
    pub(crate) wake: Arc<Notify>,
}

impl Batching {
    pub(crate) fn new(
        batch_size: u32,
        buffer_limit: u32,
        timeout: Duration,
        awaited: bool,
    ) -> Self {
        Batching {
            batch_size,
            buffer_limit,
            timeout,
            awaited,
            state: std::sync::Mutex::new(State {
                open: HashMap::new(),
                last_send: Instant::now(),
            }),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message to its key's batch. Returns the batches to publish now, in order (up to
    /// two: the full batch it did not fit in, then its own if that is full), and the
    /// completion of its own batch when senders await outcomes.
    pub(crate) fn add(
        &self,
        key: &ShortString,
        p: Pending,
    ) -> (Vec<Released>, Option<Arc<Completion>>) {
        let len = p.body.len();
        let mut state = self.lock();
        state.last_send = Instant::now();
        let was_idle = state.open.values().all(|o| o.messages.is_empty());
        if !state.open.contains_key(key.as_str()) {
            state.open.insert(
                key.clone(),
                Open {
                    messages: Accumulator::new(self.batch_size, self.buffer_limit),
                    completer: None,
                },
            );
        }
        let Some(open) = state.open.get_mut(key.as_str()) else {
            return (Vec::new(), None);
        };
        let mut released = Vec::new();
        if open.messages.overflows(len) {
            released.push(open.release());
        }
        let completion = self
            .awaited
            .then(|| Arc::clone(&open.completer.get_or_insert_with(Completer::new).0));
        open.messages.push(p, len);
        if open.messages.is_full() {
            released.push(open.release());
        }
        let now_open = !open.messages.is_empty();
        drop(state);
        // The timer re-reads the due time whenever it wakes, so it needs waking only when a
        // batch opens while none was open.
        if was_idle && now_open {
            self.wake.notify_one();
        }
        (released, completion)
    }

    /// Every open batch, emptied.
    pub(crate) fn drain(&self) -> Vec<(ShortString, Released)> {
        let mut state = self.lock();
        state
            .open
            .iter_mut()
            .filter(|(_, o)| !o.messages.is_empty())
            .map(|(k, o)| (k.clone(), o.release()))
            .collect()
    }

    /// When open batches are due (`batch-timeout` after the last send), if any.
    pub(crate) fn due(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .open
            .values()
            .any(|o| !o.messages.is_empty())
            .then_some(state.last_send + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(body: &'static [u8]) -> Pending {
        Pending {
            body: Bytes::from_static(body),
            props: None,
            message: Message::new(Bytes::from_static(body)),
        }
    }

    #[tokio::test]
    async fn every_sender_of_a_batch_gets_its_one_outcome() {
        let b = Batching::new(3, 10_000, Duration::from_secs(1), true);
        let key = ShortString::from("k");
        let (r1, c1) = b.add(&key, pending(b"a"));
        let (r2, c2) = b.add(&key, pending(b"b"));
        assert!(r1.is_empty() && r2.is_empty());
        let (mut r3, c3) = b.add(&key, pending(b"c"));
        assert_eq!(r3.len(), 1, "the third message fills the batch");
        let batch = r3.remove(0);
        assert_eq!(batch.items.len(), 3);
        let (c1, c2, c3) = (
            c1.expect("awaited"),
            c2.expect("awaited"),
            c3.expect("awaited"),
        );
        assert!(
            Arc::ptr_eq(&c1, &c2) && Arc::ptr_eq(&c2, &c3),
            "one completion per batch"
        );
        let waiters = tokio::spawn(async move { (c1.wait().await, c2.wait().await) });
        tokio::task::yield_now().await;
        batch.completer.expect("completer").complete(Ok(()));
        let (o1, o2) = waiters.await.expect("waiters");
        assert!(matches!(o1, Some(Ok(()))) && matches!(o2, Some(Ok(()))));
        assert!(
            matches!(c3.wait().await, Some(Ok(()))),
            "read after it was set"
        );
        // The next message opens a new batch with its own completion.
        let (_, c4) = b.add(&key, pending(b"d"));
        assert!(!Arc::ptr_eq(&c3, &c4.expect("awaited")));
    }

    #[tokio::test]
    async fn a_batch_dropped_unsent_tells_its_senders() {
        let b = Batching::new(10, 10_000, Duration::from_secs(1), true);
        let key = ShortString::from("k");
        let (_, c) = b.add(&key, pending(b"a"));
        let drained = b.drain();
        assert_eq!(drained.len(), 1);
        drop(drained);
        assert!(c.expect("awaited").wait().await.is_none());
    }

    #[tokio::test]
    async fn an_overflowing_message_goes_to_the_next_batch() {
        // Limit 20: 4+8 = 12 fits, the next 12 would overflow: the first batch is released
        // before the second message joins a new one.
        let b = Batching::new(100, 20, Duration::from_secs(1), true);
        let key = ShortString::from("k");
        let (r1, c1) = b.add(&key, pending(b"12345678"));
        assert!(r1.is_empty());
        let (r2, c2) = b.add(&key, pending(b"abcdefgh"));
        assert_eq!(r2.len(), 1);
        assert!(!Arc::ptr_eq(&c1.expect("awaited"), &c2.expect("awaited")));
        let (_, none) =
            Batching::new(2, 100, Duration::from_secs(1), false).add(&key, pending(b"x"));
        assert!(none.is_none(), "fire-and-forget senders await nothing");
    }
}
