//! A group's queue inside the in-memory broker.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::message::Message;

/// A FIFO queue that competing consumers pop from.
#[derive(Debug)]
pub(crate) struct Queue<T = Message<Bytes>> {
    pub(crate) name: String,
    /// Only messages with this `scst_partition` are routed here.
    pub(crate) partition: Option<u32>,
    items: Mutex<VecDeque<T>>,
    notify: Notify,
    delivered: AtomicU64,
}

impl<T> Queue<T> {
    pub(crate) fn new(name: String, partition: Option<u32>) -> Self {
        Self {
            name,
            partition,
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            delivered: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // A poisoned queue still holds valid messages: keep using it.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, message: T) {
        self.lock().push_back(message);
        self.notify.notify_one();
    }

    pub(crate) fn push_front(&self, message: T) {
        self.lock().push_front(message);
        self.notify.notify_one();
    }

    pub(crate) fn try_pop(&self) -> Option<T> {
        let m = self.lock().pop_front();
        if m.is_some() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        m
    }

    /// Waits for a message.
    pub(crate) async fn pop(&self) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.try_pop() {
                // Another message may be waiting for another consumer.
                if !self.lock().is_empty() {
                    self.notify.notify_one();
                }
                return m;
            }
            notified.await;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
