//! An in-process, log-based broker: every destination is an append-only log; every consumer
//! group has a cursor into it, a set of records handed out and not settled, and a redelivery
//! queue. Like a log broker (and unlike a queue broker) a record stays in the log; settling
//! moves only the group's cursor state.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use stream_core::Headers;
use tokio::sync::{Notify, watch};

/// One record of a log.
#[derive(Clone, Debug)]
pub struct Record {
    /// The payload.
    pub payload: Bytes,
    /// The headers, as sent.
    pub headers: Headers,
    /// The partition the producer chose, if any.
    pub partition: Option<u32>,
}

/// A group's position in a destination's log.
#[derive(Debug, Default)]
struct Cursor {
    next: usize,
    /// Only records of these partitions (empty: all).
    partitions: Vec<u32>,
    redeliver: VecDeque<usize>,
    in_flight: BTreeSet<usize>,
}

#[derive(Debug, Default)]
struct State {
    logs: HashMap<String, Vec<Record>>,
    cursors: HashMap<(String, String), Cursor>,
}

/// The broker; clone it to share it between binders (applications).
#[derive(Clone, Debug)]
pub struct LogBroker {
    state: Arc<Mutex<State>>,
    appended: Arc<Notify>,
    down: Arc<watch::Sender<bool>>,
}

impl Default for LogBroker {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            appended: Arc::default(),
            down: Arc::new(watch::channel(false).0),
        }
    }
}

/// Where a record sits: the index in its log.
pub type Offset = usize;

impl LogBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Makes the broker unreachable until [`LogBroker::restore`].
    pub fn cut(&self) {
        self.down.send_replace(true);
    }

    /// Ends an outage.
    pub fn restore(&self) {
        self.down.send_replace(false);
    }

    /// Whether the broker is reachable.
    pub fn is_up(&self) -> bool {
        !*self.down.borrow()
    }

    /// Outage changes, to wait on.
    pub(crate) fn outages(&self) -> watch::Receiver<bool> {
        self.down.subscribe()
    }

    /// Appends a record.
    pub fn append(&self, destination: &str, record: Record) {
        self.with(|s| {
            s.logs
                .entry(destination.to_owned())
                .or_default()
                .push(record)
        });
        self.appended.notify_waiters();
    }

    /// Creates a group's cursor at the end of the log unless it exists (a group keeps its
    /// position across restarts).
    pub fn subscribe(&self, destination: &str, group: &str, partitions: &[u32]) {
        self.with(|s| {
            let end = s.logs.get(destination).map_or(0, Vec::len);
            s.cursors
                .entry((destination.to_owned(), group.to_owned()))
                .or_insert_with(|| Cursor {
                    next: end,
                    partitions: partitions.to_vec(),
                    ..Cursor::default()
                });
        });
    }

    /// Removes a group's cursor (anonymous subscriptions end with their consumer).
    pub fn unsubscribe(&self, destination: &str, group: &str) {
        self.with(|s| {
            s.cursors
                .remove(&(destination.to_owned(), group.to_owned()))
        });
    }

    /// The next record for a group, marked in flight (`settled`: handed out already settled,
    /// as with broker-side auto-ack).
    pub fn next(&self, destination: &str, group: &str, settled: bool) -> Option<(Offset, Record)> {
        self.with(|s| {
            let State { logs, cursors } = s;
            let log = logs.get(destination)?;
            let c = cursors.get_mut(&(destination.to_owned(), group.to_owned()))?;
            let offset = match c.redeliver.pop_front() {
                Some(o) => o,
                None => loop {
                    let o = c.next;
                    let record = log.get(o)?;
                    c.next += 1;
                    let wanted = c.partitions.is_empty()
                        || record.partition.is_some_and(|p| c.partitions.contains(&p));
                    if wanted {
                        break o;
                    }
                },
            };
            if !settled {
                c.in_flight.insert(offset);
            }
            log.get(offset).cloned().map(|r| (offset, r))
        })
    }

    fn cursor<R>(
        &self,
        destination: &str,
        group: &str,
        f: impl FnOnce(&mut Cursor) -> R,
    ) -> Option<R> {
        self.with(|s| {
            s.cursors
                .get_mut(&(destination.to_owned(), group.to_owned()))
                .map(f)
        })
    }

    /// Settles a record: forgotten.
    pub fn ack(&self, destination: &str, group: &str, offset: Offset) {
        self.cursor(destination, group, |c| c.in_flight.remove(&offset));
    }

    /// Hands a record back for redelivery.
    pub fn requeue(&self, destination: &str, group: &str, offset: Offset) {
        self.cursor(destination, group, |c| {
            if c.in_flight.remove(&offset) {
                c.redeliver.push_front(offset);
            }
        });
        self.appended.notify_waiters();
    }

    /// A consumer went away: what it had in flight is delivered again (like a closed channel).
    pub fn release(&self, destination: &str, group: &str) {
        self.cursor(destination, group, |c| {
            let held: Vec<Offset> = std::mem::take(&mut c.in_flight).into_iter().collect();
            for o in held.into_iter().rev() {
                c.redeliver.push_front(o);
            }
        });
        self.appended.notify_waiters();
    }

    /// Waits until something is appended or requeued.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// A notification future created now (so nothing appended after this call is missed).
    pub(crate) fn notified(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.appended).notified_owned()
    }

    /// Every record of a destination's log (for tests looking at the wire).
    pub fn records(&self, destination: &str) -> Vec<Record> {
        self.with(|s| s.logs.get(destination).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(p: &'static str) -> Record {
        Record {
            payload: Bytes::from_static(p.as_bytes()),
            headers: Headers::new(),
            partition: None,
        }
    }

    #[test]
    fn groups_have_their_own_cursor_and_redelivery() {
        let b = LogBroker::new();
        b.subscribe("d", "g", &[]);
        b.append("d", record("one"));
        b.append("d", record("two"));
        let (o1, r1) = b.next("d", "g", false).expect("one");
        assert_eq!(&r1.payload[..], b"one");
        b.requeue("d", "g", o1);
        let (o1b, _) = b.next("d", "g", false).expect("redelivered");
        assert_eq!(o1b, o1);
        b.ack("d", "g", o1b);
        let (o2, _) = b.next("d", "g", false).expect("two");
        assert!(b.next("d", "g", false).is_none());
        b.release("d", "g");
        assert_eq!(b.next("d", "g", false).map(|(o, _)| o), Some(o2));
        // A group subscribing later starts at the end.
        b.subscribe("d", "late", &[]);
        assert!(b.next("d", "late", false).is_none());
    }
}
