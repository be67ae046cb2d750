//! Where a stream function's input binding hands its deliveries (the current run's channel),
//! and the state of one run, which decides what a released delivery comes to.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, watch};

use crate::error::FunctionError;
use crate::message::{Message, Tracked, Verdict};

/// What a released delivery comes to.
#[derive(Clone, Debug)]
pub(crate) enum Release {
    /// Acknowledge.
    Ack,
    /// The binding's recovery (error channel, dead-letter destination).
    Recover(Arc<FunctionError>),
    /// Back to the broker.
    Requeue,
}

/// How often each delivery was in flight when a run of one stream function failed, and how
/// often it was the one the run received last (the one blamed), by identity.
#[derive(Default)]
pub(crate) struct Crashes(Mutex<HashMap<u64, (u32, u32)>>);

impl Crashes {
    /// One more failed run with this delivery in flight; (times blamed, times in flight).
    fn count(&self, key: u64, blamed: bool) -> (u32, u32) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 100_000 {
            // Bounded: forgetting old counts only delays a poison message's dead-lettering.
            map.clear();
        }
        let n = map.entry(key).or_insert((0, 0));
        n.0 += u32::from(blamed);
        n.1 += 1;
        *n
    }
}

/// One run of a stream function: live while the function runs. A message dropped unsent
/// while it polls counts by how the poll ends (a function that returns an error or panics did
/// not handle what it dropped on the way out); one dropped after the run ended was not
/// handled.
pub(crate) struct RunState {
    dead: AtomicBool,
    polling: AtomicBool,
    /// Why the run failed, when it did.
    crash: Mutex<Option<Arc<FunctionError>>>,
    /// Deliveries dropped during the current poll: requeued if the poll fails.
    dropped: Mutex<Vec<Arc<Tracked>>>,
    /// The delivery the run received last: blamed when the run fails.
    last: Mutex<Option<u64>>,
    crashes: Arc<Crashes>,
    max_attempts: u32,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("dead", &self.dead.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl RunState {
    pub(crate) fn new(crashes: Arc<Crashes>, max_attempts: u32) -> Arc<Self> {
        Arc::new(Self {
            dead: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            crash: Mutex::new(None),
            dropped: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            crashes,
            max_attempts: max_attempts.max(1),
        })
    }

    /// A message carrying `tracked` was dropped unsent.
    pub(crate) fn holder_dropped(&self, tracked: &Arc<Tracked>) {
        if self.dead.load(Ordering::Acquire) {
            tracked.record(Verdict::Requeue);
        } else if self.polling.load(Ordering::Acquire) {
            self.dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(tracked));
        }
    }

    /// What a released delivery comes to. `key` identifies it across redeliveries.
    pub(crate) fn release(&self, verdict: Option<Verdict>, key: u64) -> Release {
        match verdict {
            None | Some(Verdict::Done) => Release::Ack,
            Some(Verdict::Failed(e)) => Release::Recover(e),
            Some(Verdict::Requeue) => self.unhandled(key),
        }
    }

    /// The run received a delivery.
    fn received(&self, key: Option<u64>) {
        if key.is_some() {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = key;
        }
    }

    /// A delivery the run did not handle: back to the broker, unless it is a poison message:
    /// blamed for `max-attempts` failed runs (it was the last one received when the run
    /// failed), or in flight during `2 × max-attempts + 1` of them (a failure that is never
    /// the last message's), then the recovery.
    fn unhandled(&self, key: u64) -> Release {
        let crash = self
            .crash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(e) = crash else {
            return Release::Requeue;
        };
        let blamed = *self.last.lock().unwrap_or_else(PoisonError::into_inner) == Some(key);
        let (times_blamed, in_flight) = self.crashes.count(key, blamed);
        if times_blamed >= self.max_attempts || in_flight > 2 * self.max_attempts {
            Release::Recover(Arc::new(
                FunctionError::msg(format!(
                    "the stream function failed {in_flight} times with this message in flight: {e}"
                ))
                .with_kind(e.kind().to_owned()),
            ))
        } else {
            Release::Requeue
        }
    }

    /// After a poll: what was dropped during it was handled, or (a failed poll) not.
    fn flush(&self, handled: bool) {
        let dropped =
            std::mem::take(&mut *self.dropped.lock().unwrap_or_else(PoisonError::into_inner));
        if !handled {
            for t in &dropped {
                t.record(Verdict::Requeue);
            }
        }
    }

    /// Ends the run: what is dropped from now on was not handled.
    pub(crate) fn kill(&self, crash: Option<Arc<FunctionError>>) {
        if let Some(c) = crash {
            *self.crash.lock().unwrap_or_else(PoisonError::into_inner) = Some(c);
        }
        self.dead.store(true, Ordering::Release);
    }
}

/// How a supervised run ended.
#[derive(Debug)]
pub(crate) enum RunEnd {
    /// The function returned `Ok` (its inputs ended).
    Completed,
    /// It returned an error or panicked.
    Failed(Arc<FunctionError>),
}

/// Polls a run inside its [`RunState`]: marks the polls, catches panics, and settles what the
/// run released by how each poll ended. On a failure the run is killed before its state is
/// dropped, so the deliveries it held go back to the broker.
pub(crate) struct Supervised<F> {
    inner: Option<Pin<Box<F>>>,
    run: Arc<RunState>,
}

impl<F> Supervised<F> {
    pub(crate) fn new(inner: F, run: Arc<RunState>) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
            run,
        }
    }
}

impl<F: Future<Output = Result<(), FunctionError>>> Future for Supervised<F> {
    type Output = RunEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RunEnd> {
        let run = Arc::clone(&self.run);
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(RunEnd::Completed);
        };
        run.polling.store(true, Ordering::Release);
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        run.polling.store(false, Ordering::Release);
        match polled {
            Ok(Poll::Pending) => {
                run.flush(true);
                Poll::Pending
            }
            Ok(Poll::Ready(Ok(()))) => {
                run.flush(true);
                self.inner = None;
                Poll::Ready(RunEnd::Completed)
            }
            Ok(Poll::Ready(Err(e))) => {
                let e = Arc::new(e);
                run.kill(Some(Arc::clone(&e)));
                run.flush(false);
                self.inner = None;
                Poll::Ready(RunEnd::Failed(e))
            }
            Err(payload) => {
                let e = Arc::new(FunctionError::panic(&*payload));
                run.kill(Some(Arc::clone(&e)));
                run.flush(false);
                // Dropping the run's state now releases what it held, unhandled.
                self.inner = None;
                Poll::Ready(RunEnd::Failed(e))
            }
        }
    }
}

/// The current run's end of an open intake.
#[derive(Clone)]
pub(crate) struct Open {
    pub(crate) tx: mpsc::Sender<Message<Bytes>>,
    pub(crate) run: Arc<RunState>,
}

/// Where one input binding of a stream function hands its deliveries: the current run's
/// channel (none while the function restarts or the application stops).
pub(crate) struct Intake {
    pub(crate) binding: Arc<str>,
    current: watch::Sender<Option<Open>>,
    /// The binder settles deliveries after `dispatch` returned (it supports manual
    /// acknowledgment): the hand-off returns at once, and the broker's prefetch bounds what is
    /// in flight. Otherwise `dispatch` returns once the delivery is settled.
    pub(crate) deferred: AtomicBool,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

/// How many deliveries wait between a binding and its stream function.
pub(crate) const HAND_OFF: usize = 16;

impl Intake {
    pub(crate) fn new(binding: &str) -> Arc<Self> {
        Arc::new(Self {
            binding: binding.into(),
            current: watch::Sender::new(None),
            deferred: AtomicBool::new(false),
        })
    }

    /// Opens the intake for a new run; returns the run's end of the channel.
    pub(crate) fn open(&self, run: &Arc<RunState>) -> IntakeStream {
        let (tx, rx) = mpsc::channel(HAND_OFF);
        self.current.send_replace(Some(Open {
            tx,
            run: Arc::clone(run),
        }));
        IntakeStream {
            rx,
            run: Arc::clone(run),
        }
    }

    /// Closes the intake: deliveries wait until it opens again; the run's input ends once the
    /// hand-offs under way are done.
    pub(crate) fn close(&self) {
        self.current.send_replace(None);
    }

    /// Waits until the intake is open; the current run's end.
    pub(crate) async fn opened(&self) -> Option<Open> {
        let mut rx = self.current.subscribe();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|o| o.clone())
    }

    /// Whether the binder settles after the hand-off returned.
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }
}

/// The run's end of an intake. Dropped before it was drained (the run ended), what it still
/// holds was never seen by the function: back to the broker.
pub(crate) struct IntakeStream {
    rx: mpsc::Receiver<Message<Bytes>>,
    run: Arc<RunState>,
}

impl Stream for IntakeStream {
    type Item = Message<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(m)) = &polled {
            self.run.received(m.acks().first_key());
        }
        polled
    }
}

impl Drop for IntakeStream {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(mut m) = self.rx.try_recv() {
            m.take_acks().requeue();
        }
    }
}

/// The identity of a delivery across redeliveries, for counting crashes: its `id` header, else
/// its payload.
pub(crate) fn identity(message: &Message<Bytes>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match message.headers().get(crate::message::names::ID) {
        Some(id) => id.to_string().hash(&mut h),
        None => message.payload().hash(&mut h),
    }
    h.finish()
}
