//! Waiting on the listener's thread for a future: the thread parks until the future's waker
//! unparks it.
//!
//! This is not `futures::executor::block_on`: that one marks the thread as running an
//! executor, so any code the future runs that itself blocks on a future the same way (the
//! OpenTelemetry SDK's simple span processor exports each span like that when it ends) panics
//! with "cannot execute `LocalPool` executor from within another executor". Parking the thread
//! claims nothing, so such code works inside a delivery as it does anywhere else.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Wakes the thread waiting on the future.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread, parking it while the future is pending.
///
/// What the future waits for must be driven elsewhere (the application runtime's workers, for
/// the listener): nothing here drives I/O or timers.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    // One waker per thread, made on its first wait: a listener thread waits once per message.
    thread_local! {
        static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
    }
    let waker = WAKER.with(Waker::clone);
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake between the poll and here leaves the token set: `park` returns at once.
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::block_on;

    #[test]
    fn waits_for_a_future_driven_by_another_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(7);
        });
        assert_eq!(block_on(rx).ok(), Some(7));
    }

    #[test]
    fn a_timer_of_the_entered_runtime_fires() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = rt.enter();
        let out = block_on(tokio::time::timeout(
            Duration::from_millis(30),
            std::future::pending::<()>(),
        ));
        assert!(out.is_err(), "the timeout elapsed");
    }

    /// The thread's one waker serves every wait: the second wait parks and is woken too.
    #[test]
    fn waits_one_after_another_on_the_same_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        for n in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx.send(n);
            });
            assert_eq!(block_on(rx).ok(), Some(n));
        }
    }

    /// What the OpenTelemetry SDK's simple span processor does when a span of a delivery ends.
    #[test]
    fn code_inside_may_block_on_futures_executor_itself() {
        let out = block_on(async { futures::executor::block_on(async { 3 }) });
        assert_eq!(out, 3);
    }
}
