//! A stream function's deliveries: handed to the function's current run, and settled when
//! what was made of them is sent, dropped or failed (see [`crate::function::stream`]).

use std::sync::Arc;

use bytes::Bytes;

use super::super::Consumer;
use super::super::delivery::{Body, Delivery};
use super::Sink;
use crate::binder::OwnedInFlightGuard;
use crate::function::stream::{Intake, Release, identity};
use crate::message::{Acks, Message, Tracked, Verdict};
use crate::process::{Outcome, Settlement};

impl<C: Consumer> Sink<C> {
    /// Hands a delivery to the stream function's current run (waiting while it restarts).
    /// Returns at once when the binder settles later ([`Intake::is_deferred`]), else once the
    /// delivery is settled.
    pub(super) async fn dispatch_stream(&self, intake: &Arc<Intake>, delivery: Delivery<C::Raw>) {
        let guard = self.shared.inflight.enter_owned();
        if !self.pass().await {
            self.hand_back(&delivery.raw).await;
            return;
        }
        let Delivery { raw, body } = delivery;
        let parts = match body {
            Body::One(m) => vec![m],
            Body::Parts(p) => p,
            undecodable @ Body::Undecodable { .. } => {
                // Never reaches the function: the failure path at once.
                return self.settling().process(raw, undecodable).await;
            }
        };
        let Some(first) = parts.first() else {
            self.settling().settle(&raw, Settlement::Ack, None).await;
            return;
        };
        let open = tokio::select! {
            open = intake.opened() => open,
            () = self.stopped() => None,
        };
        let Some(open) = open else {
            self.hand_back(&raw).await;
            return;
        };
        // What the error channel and the dead-letter destination get if it fails.
        let original = first.clone();
        let key = identity(first);
        let (settled_tx, settled_rx) = tokio::sync::oneshot::channel::<()>();
        let settle = {
            let sink = self.clone();
            let run = Arc::clone(&open.run);
            let runtime = tokio::runtime::Handle::current();
            let start = self.shared.pipeline.meters.received(1);
            move |verdict: Option<Verdict>| {
                let release = run.release(verdict, key);
                runtime.spawn(async move {
                    sink.settle_stream(&raw, original, release, start).await;
                    drop::<OwnedInFlightGuard>(guard);
                    let _ = settled_tx.send(());
                });
            }
        };
        let dropped_run = Arc::clone(&open.run);
        let tracked = Tracked::new(
            key,
            settle,
            Some(Box::new(move |t: &Arc<Tracked>| {
                dropped_run.holder_dropped(t)
            })),
        );
        for mut part in parts {
            part.join_acks(Acks::one(Arc::clone(&tracked)));
            let permit = tokio::select! {
                permit = open.tx.reserve() => permit.ok(),
                () = self.stopped() => None,
            };
            match permit {
                Some(permit) => permit.send(part),
                // The run ended or the binding stops: back to the broker.
                None => part.take_acks().requeue(),
            }
        }
        drop(tracked);
        if !intake.is_deferred() {
            // The binder settles when this returns: wait for the stream.
            let _ = settled_rx.await;
        }
    }

    /// Settles a stream function's delivery as its release says.
    async fn settle_stream(
        &self,
        raw: &Arc<C::Raw>,
        original: Message<Bytes>,
        release: Release,
        start: std::time::Instant,
    ) {
        let pipeline = &self.shared.pipeline;
        let outcome = match release {
            Release::Ack => {
                pipeline.meters.processed(start, 1, None);
                Outcome::Success
            }
            Release::Requeue => Outcome::RequeueRequested,
            Release::Recover(error) => {
                pipeline.meters.processed(start, 1, Some(&error));
                let erased = super::Settling::<C>::erase(raw);
                pipeline.recover(original, &erased, error).await
            }
        };
        self.settling().finish(raw, outcome, None, false).await;
    }
}
