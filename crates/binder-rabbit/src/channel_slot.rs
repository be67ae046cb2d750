//! The channel a producer publishes on: opened on first use or after loss, then read by every
//! send without waiting.

use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use lapin::Channel;
use tokio::sync::Mutex;

/// One lazily opened channel shared by the sends of a binding.
///
/// A send reads the open channel under an uncontended lock held for a reference-count
/// increment (no `.await`, no clone of the channel's internals); only opening a channel is
/// serialized, so concurrent sends after a loss open it once.
#[derive(Debug, Default)]
pub(crate) struct ChannelSlot {
    open: StdMutex<Option<Arc<Channel>>>,
    opening: Mutex<()>,
}

impl ChannelSlot {
    /// The open channel, when there is one and it is still connected.
    pub(crate) fn current(&self) -> Option<Arc<Channel>> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|ch| ch.status().connected())
            .cloned()
    }

    /// The open channel, or the one `open` makes (once, whatever the number of callers).
    pub(crate) async fn get_or_open<E, F, Fut>(&self, open: F) -> Result<Arc<Channel>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Channel, E>>,
    {
        if let Some(ch) = self.current() {
            return Ok(ch);
        }
        let _opening = self.opening.lock().await;
        // Another caller may have opened it while this one waited.
        if let Some(ch) = self.current() {
            return Ok(ch);
        }
        let ch = Arc::new(open().await?);
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&ch));
        Ok(ch)
    }

    /// Takes the channel out (to close it); the next send opens a new one.
    pub(crate) fn take(&self) -> Option<Arc<Channel>> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
