//! Manual acknowledgment: the handle a binder attaches to a message in `MANUAL` mode.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::error::BinderError;

pub use stream_config::AckMode;

/// The binder side of a manual acknowledgment: settles one delivery on the broker.
#[async_trait]
pub trait Acknowledger: Send + Sync + 'static {
    /// Acknowledges the delivery.
    async fn ack(&self) -> Result<(), BinderError>;
    /// Rejects the delivery; `requeue` asks the broker to deliver it again.
    async fn reject(&self, requeue: bool) -> Result<(), BinderError>;
}

/// A handle that settles one consumed message exactly once.
///
/// ```
/// # tokio_test_block(async {
/// use std::sync::{Arc, Mutex};
/// use stream_core::{Acknowledger, Acknowledgment, BinderError};
///
/// struct Log(Mutex<Vec<String>>);
/// #[async_trait::async_trait]
/// impl Acknowledger for Log {
///     async fn ack(&self) -> Result<(), BinderError> { self.0.lock().unwrap().push("ack".into()); Ok(()) }
///     async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
///         self.0.lock().unwrap().push(format!("reject requeue={requeue}")); Ok(())
///     }
/// }
/// let log = Arc::new(Log(Mutex::new(vec![])));
/// let ack = Acknowledgment::new(log.clone());
/// ack.ack().await.unwrap();
/// ack.reject(true).await.unwrap(); // second settle is ignored
/// assert_eq!(*log.0.lock().unwrap(), vec!["ack".to_string()]);
/// assert!(ack.is_settled());
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct Acknowledgment {
    inner: Arc<AckInner>,
}

struct AckInner {
    settled: AtomicBool,
    acknowledger: Arc<dyn Acknowledger>,
}

impl Acknowledgment {
    /// A handle over a binder's acknowledger.
    pub fn new(acknowledger: Arc<dyn Acknowledger>) -> Self {
        Self {
            inner: Arc::new(AckInner {
                settled: AtomicBool::new(false),
                acknowledger,
            }),
        }
    }

    /// Acknowledges the message (no-op if already settled).
    pub async fn ack(&self) -> Result<(), BinderError> {
        if self.claim() {
            self.inner.acknowledger.ack().await
        } else {
            Ok(())
        }
    }

    /// Rejects the message (no-op if already settled).
    pub async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
        if self.claim() {
            self.inner.acknowledger.reject(requeue).await
        } else {
            Ok(())
        }
    }

    /// Whether `ack` or `reject` was called.
    pub fn is_settled(&self) -> bool {
        self.inner.settled.load(Ordering::Acquire)
    }

    /// Marks the handle settled; `false` when it already was (the caller must not settle).
    pub(crate) fn claim(&self) -> bool {
        !self.inner.settled.swap(true, Ordering::AcqRel)
    }
}

impl fmt::Debug for Acknowledgment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acknowledgment")
            .field("settled", &self.is_settled())
            .finish()
    }
}
