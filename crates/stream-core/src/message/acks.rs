//! The deliveries a message of a stream function was made from, and their settlement: each
//! delivery is settled once the last message carrying it is sent, dropped or failed.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::FunctionError;

/// What becomes of a tracked delivery when the last message carrying it goes away.
#[derive(Clone, Debug)]
pub(crate) enum Verdict {
    /// Handled: sent. (A message dropped by a healthy stream, filtered or aggregated into one
    /// that was sent, records nothing and counts as handled too.)
    Done,
    /// Failed ([`Message::fail`](super::Message::fail)): the binding's recovery (error channel,
    /// dead-letter destination).
    Failed(Arc<FunctionError>),
    /// Not handled (the stream failed or stopped before it got there): back to the broker.
    Requeue,
}

impl Verdict {
    /// Which of two verdicts stands: a failure over a requeue over a send (a delivery is
    /// acknowledged only when every message carrying it was handled).
    fn rank(&self) -> u8 {
        match self {
            Verdict::Done => 0,
            Verdict::Requeue => 1,
            Verdict::Failed(_) => 2,
        }
    }
}

/// Called once with the standing verdict when the last holder lets go (`None`: every holder
/// was dropped by a healthy stream: handled).
type Settle = Box<dyn FnOnce(Option<Verdict>) + Send>;

/// Told when a message carrying the delivery is dropped without being sent or failed (the
/// stream's run decides whether that counts as handled).
type HolderDropped = Box<dyn Fn(&Arc<Tracked>) + Send + Sync>;

/// One delivery in a stream, settled by its `settle` when the last holder drops it.
pub(crate) struct Tracked {
    /// The delivery's identity across redeliveries.
    pub(crate) key: u64,
    verdict: Mutex<Option<Verdict>>,
    settle: Mutex<Option<Settle>>,
    dropped: Option<HolderDropped>,
}

impl Tracked {
    /// A delivery that `settle` settles, once; `dropped` hears of each holder dropped unsent.
    pub(crate) fn new(
        key: u64,
        settle: impl FnOnce(Option<Verdict>) + Send + 'static,
        dropped: Option<HolderDropped>,
    ) -> Arc<Self> {
        Arc::new(Self {
            key,
            verdict: Mutex::new(None),
            settle: Mutex::new(Some(Box::new(settle))),
            dropped,
        })
    }

    /// Records a verdict; the graver one stands.
    pub(crate) fn record(&self, verdict: Verdict) {
        let mut v = self.verdict.lock().unwrap_or_else(PoisonError::into_inner);
        if v.as_ref().is_none_or(|old| verdict.rank() > old.rank()) {
            *v = Some(verdict);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let verdict = self
            .verdict
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(settle) = self
            .settle
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            settle(verdict);
        }
    }
}

/// The deliveries a message was made from. A message a stream function receives carries its
/// own delivery; messages derived from it (`map`, [`derive`](super::Message::derive), clones)
/// share it, and an aggregate ([`Message::merge`](super::Message::merge)) carries all of its
/// inputs'. A delivery is acknowledged once every message carrying it was sent or dropped by
/// the stream, and recovered (error channel, dead-letter destination) when one of them
/// [failed](super::Message::fail). A message dropped while its stream fails sends the delivery
/// back to the broker.
///
/// Messages outside stream functions carry none.
///
/// ```
/// use stream_core::Message;
/// let m = Message::new(1);
/// assert!(m.acks().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Acks(Vec<Arc<Tracked>>);

impl Acks {
    /// No delivery.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn one(tracked: Arc<Tracked>) -> Self {
        Self(vec![tracked])
    }

    /// How many deliveries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The identity of the first delivery.
    pub(crate) fn first_key(&self) -> Option<u64> {
        self.0.first().map(|t| t.key)
    }

    /// Adds another message's deliveries (an aggregate carries all its inputs').
    pub fn join(&mut self, mut other: Acks) {
        for t in std::mem::take(&mut other.0) {
            if !self.0.iter().any(|mine| Arc::ptr_eq(mine, &t)) {
                self.0.push(t);
            }
        }
    }

    /// Records `verdict` on every delivery and lets go of them (not a drop: no holder-dropped
    /// notice).
    fn settle(&mut self, verdict: &Verdict) {
        for t in std::mem::take(&mut self.0) {
            t.record(verdict.clone());
        }
    }

    /// Every delivery fails: each goes to the binding's recovery when released.
    pub fn fail(mut self, error: Arc<FunctionError>) {
        self.settle(&Verdict::Failed(error));
    }

    /// Every delivery was handled (its message was sent).
    pub(crate) fn done(mut self) {
        self.settle(&Verdict::Done);
    }

    /// Every delivery goes back to the broker when released.
    pub(crate) fn requeue(mut self) {
        self.settle(&Verdict::Requeue);
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        for t in &self.0 {
            if let Some(dropped) = &t.dropped {
                dropped(t);
            }
        }
    }
}

impl FromIterator<Acks> for Acks {
    fn from_iter<I: IntoIterator<Item = Acks>>(iter: I) -> Self {
        let mut all = Acks::new();
        for a in iter {
            all.join(a);
        }
        all
    }
}

impl fmt::Debug for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Acks({})", self.0.len())
    }
}

/// A message a stream function gave up on: its deliveries go to the binding's recovery (error
/// channel, then dead-letter destination), and the stream goes on. Made by
/// [`Message::fail`](super::Message::fail).
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: Arc<FunctionError>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message failed: {}", self.error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn tracked() -> (Acks, mpsc::Receiver<Option<Verdict>>) {
        let (tx, rx) = mpsc::channel();
        (
            Acks::one(Tracked::new(
                0,
                move |v| {
                    let _ = tx.send(v);
                },
                None,
            )),
            rx,
        )
    }

    #[test]
    fn settled_once_when_the_last_holder_drops() {
        let (a, rx) = tracked();
        let copy = a.clone();
        drop(a);
        assert!(rx.try_recv().is_err(), "a copy still holds it");
        drop(copy);
        assert!(
            matches!(rx.try_recv(), Ok(None)),
            "released without a verdict"
        );
        assert!(rx.try_recv().is_err(), "once");
    }

    #[test]
    fn the_gravest_verdict_stands_and_joins_share() {
        let (a, rx_a) = tracked();
        let (b, rx_b) = tracked();
        let mut window: Acks = [a.clone(), b].into_iter().collect();
        window.join(a.clone());
        assert_eq!(window.len(), 2, "joined without duplicates");
        a.clone().fail(Arc::new(FunctionError::msg("bad")));
        window.clone().done();
        window.requeue();
        drop(a);
        assert!(matches!(rx_a.try_recv(), Ok(Some(Verdict::Failed(_)))));
        assert!(matches!(rx_b.try_recv(), Ok(Some(Verdict::Requeue))));
    }

    #[test]
    fn a_dropped_holder_is_reported_a_settled_one_is_not() {
        let (tx, rx) = mpsc::channel();
        let t = Tracked::new(
            0,
            |_| {},
            Some(Box::new(move |_: &Arc<Tracked>| {
                let _ = tx.send(());
            })),
        );
        let a = Acks::one(t);
        a.clone().done();
        assert!(rx.try_recv().is_err());
        drop(a);
        assert!(rx.try_recv().is_ok());
    }
}
