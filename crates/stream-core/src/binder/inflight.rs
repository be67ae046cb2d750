//! Counting work handed out and not yet finished, so a stop can wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts deliveries (or sends) in flight and wakes waiters when none is left.
///
/// ```
/// use std::time::Duration;
/// use stream_core::binder::InFlight;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let inflight = InFlight::default();
/// let guard = inflight.enter();
/// assert_eq!(inflight.current(), 1);
/// assert!(!inflight.wait_idle_for(Duration::from_millis(10)).await);
/// drop(guard);
/// assert!(inflight.wait_idle_for(Duration::from_millis(10)).await);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One unit of work in flight; leaving it (dropping) counts it finished.
#[derive(Debug)]
#[must_use = "the work counts as finished when the guard is dropped"]
pub struct InFlightGuard<'a>(&'a InFlight);

/// An [`InFlightGuard`] that owns its counter, for work that outlives the caller.
#[derive(Debug)]
#[must_use = "the work counts as finished when the guard is dropped"]
pub struct OwnedInFlightGuard(Arc<InFlight>);

impl InFlight {
    /// Counts one more unit of work.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    /// [`InFlight::enter`] for work that outlives the caller (a send callback).
    pub fn enter_owned(self: &Arc<Self>) -> OwnedInFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        OwnedInFlightGuard(Arc::clone(self))
    }

    /// Units in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.current() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits at most `timeout` until nothing is in flight; whether it got there.
    pub async fn wait_idle_for(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.wait_idle())
            .await
            .is_ok()
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Drop for OwnedInFlightGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}
