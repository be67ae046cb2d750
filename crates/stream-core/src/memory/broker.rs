//! The in-memory broker: destinations, group queues, partitions, captures for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::queue::Queue;
use crate::message::{Message, names};

/// A message as published, with its partition.
type Captured = (Message<Bytes>, Option<u32>);

#[derive(Debug, Default)]
struct Destination {
    queues: Vec<Arc<Queue>>,
    /// What was published, with the partition it was published to.
    capture: Option<Arc<Queue<Captured>>>,
}

/// An in-process broker shared by in-memory binders.
///
/// Each destination delivers every message to every group queue bound to it (members of a
/// group compete for its queue); partitioned queues take only their partition's messages.
/// Share one broker between two applications to run two instances of a service in a test.
///
/// ```
/// use std::time::Duration;
/// use stream_core::memory::InMemoryBroker;
/// use stream_core::Message;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let broker = InMemoryBroker::new();
/// broker.capture("orders");
/// broker.send("orders", Message::bytes("o-1"));
/// let m = broker.receive("orders", Duration::from_millis(100)).await.unwrap();
/// assert_eq!(&m.payload()[..], b"o-1");
/// assert!(broker.receive("orders", Duration::from_millis(10)).await.is_none());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct InMemoryBroker {
    destinations: Arc<Mutex<HashMap<String, Destination>>>,
    /// `true` while the broker is "down" ([`InMemoryBroker::cut`]).
    down: Arc<watch::Sender<bool>>,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        Self {
            destinations: Arc::default(),
            down: Arc::new(watch::channel(false).0),
        }
    }
}

impl InMemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates an outage: binders cannot provision, bind or send (a temporary connection
    /// error), consumers stop receiving and report their connection lost, until
    /// [`InMemoryBroker::restore`]. Messages already queued stay.
    pub fn cut(&self) {
        self.down.send_replace(true);
    }

    /// Ends an outage started by [`InMemoryBroker::cut`].
    pub fn restore(&self) {
        self.down.send_replace(false);
    }

    /// Whether the broker is reachable.
    pub fn is_available(&self) -> bool {
        !*self.down.borrow()
    }

    /// The availability, to wait on.
    pub(crate) fn availability(&self) -> watch::Receiver<bool> {
        self.down.subscribe()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Destination>) -> R) -> R {
        let mut guard = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Publishes a message to every queue of the destination (and its capture), as a client
    /// outside the framework would: a `scst_partition` header, if present, routes it to that
    /// partition's queues.
    pub fn send(&self, destination: &str, message: Message<Bytes>) {
        let partition = message
            .headers()
            .get(names::PARTITION)
            .and_then(|v| v.to_i64_lenient())
            .and_then(|p| u32::try_from(p).ok());
        self.publish(destination, message, partition);
    }

    /// Publishes a message for `partition` (partitioned queues take only theirs).
    pub fn publish(&self, destination: &str, message: Message<Bytes>, partition: Option<u32>) {
        let (targets, capture) = self.with(|d| {
            d.get(destination)
                .map(|dest| {
                    let queues: Vec<Arc<Queue>> = dest
                        .queues
                        .iter()
                        .filter(|q| match q.partition {
                            Some(p) => partition == Some(p),
                            None => true,
                        })
                        .cloned()
                        .collect();
                    (queues, dest.capture.clone())
                })
                .unwrap_or_default()
        });
        if targets.is_empty() && capture.is_none() {
            tracing::debug!(destination, "no queue bound; message dropped");
        }
        if let Some(c) = capture {
            c.push((message.clone(), partition));
        }
        let mut message = Some(message);
        let last = targets.len().saturating_sub(1);
        for (i, q) in targets.iter().enumerate() {
            let m = if i == last {
                message.take()
            } else {
                message.clone()
            };
            if let Some(m) = m {
                q.push(m);
            }
        }
    }

    /// Starts recording every message sent to `destination` from now on, for
    /// [`InMemoryBroker::receive`].
    pub fn capture(&self, destination: &str) {
        self.with(|d| {
            let dest = d.entry(destination.to_owned()).or_default();
            if dest.capture.is_none() {
                dest.capture = Some(Arc::new(Queue::new(format!("{destination}.capture"), None)));
            }
        });
    }

    /// Takes the next recorded message of `destination`, waiting up to `timeout`. Recording
    /// starts with the first call to [`InMemoryBroker::capture`] (or this method).
    pub async fn receive(&self, destination: &str, timeout: Duration) -> Option<Message<Bytes>> {
        self.receive_partitioned(destination, timeout)
            .await
            .map(|(m, _)| m)
    }

    /// Like [`InMemoryBroker::receive`], with the partition the message was published to.
    pub async fn receive_partitioned(
        &self,
        destination: &str,
        timeout: Duration,
    ) -> Option<(Message<Bytes>, Option<u32>)> {
        self.capture(destination);
        let capture = self.with(|d| d.get(destination).and_then(|x| x.capture.clone()))?;
        tokio::time::timeout(timeout, capture.pop()).await.ok()
    }

    /// Messages waiting in a group's queue (`partition` for partitioned queues).
    pub fn queue_depth(&self, destination: &str, group: &str, partition: Option<u32>) -> usize {
        let name = queue_name(destination, group, partition);
        self.with(|d| {
            d.get(destination)
                .and_then(|dest| dest.queues.iter().find(|q| q.name == name))
                .map(|q| q.len())
                .unwrap_or(0)
        })
    }

    /// Names of the queues bound to a destination.
    pub fn queues(&self, destination: &str) -> Vec<String> {
        self.with(|d| {
            d.get(destination)
                .map(|dest| dest.queues.iter().map(|q| q.name.clone()).collect())
                .unwrap_or_default()
        })
    }

    /// The queue with this name, created and bound if missing.
    pub(crate) fn declare(
        &self,
        destination: &str,
        name: String,
        partition: Option<u32>,
    ) -> Arc<Queue> {
        self.with(|d| {
            let dest = d.entry(destination.to_owned()).or_default();
            if let Some(q) = dest.queues.iter().find(|q| q.name == name) {
                return Arc::clone(q);
            }
            let q = Arc::new(Queue::new(name, partition));
            dest.queues.push(Arc::clone(&q));
            q
        })
    }

    pub(crate) fn delete(&self, destination: &str, name: &str) {
        self.with(|d| {
            if let Some(dest) = d.get_mut(destination) {
                dest.queues.retain(|q| q.name != name);
            }
        });
    }
}

/// `<destination>.<group>` or `<destination>.<group>-<partition>`.
pub(crate) fn queue_name(destination: &str, group: &str, partition: Option<u32>) -> String {
    match partition {
        Some(p) => format!("{destination}.{group}-{p}"),
        None => format!("{destination}.{group}"),
    }
}
