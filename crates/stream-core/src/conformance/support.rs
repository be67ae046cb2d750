//! Building a trial's applications and waiting for what they receive.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Kit, TrialFailure, TrialResult};
use crate::binder::{Binding, BindingState};
use crate::message::Message;
use crate::{FunctionError, StreamApp, StreamAppBuilder};

/// What a sink application received.
pub(super) type Received = mpsc::UnboundedReceiver<Message<Bytes>>;

/// `(key, value)` pairs from string slices.
pub(super) fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `spring.cloud.stream.bindings.<binding>.<key>`.
pub(super) fn binding_key(binding: &str, key: &str) -> String {
    format!("spring.cloud.stream.bindings.{binding}.{key}")
}

/// Fails the trial with `what` unless `ok`.
pub(super) fn check(ok: bool, what: impl FnOnce() -> String) -> TrialResult {
    if ok {
        Ok(())
    } else {
        Err(TrialFailure(what()))
    }
}

impl Kit {
    /// A fresh destination name for a scenario: `[a-z0-9_-]` only, which every broker accepts.
    pub(super) fn unique(&self, scenario: &str) -> String {
        let n: u64 = rand::random();
        format!("kit-{scenario}-{n:016x}")
    }

    /// A consumer group of a trial, unique to its destination (groups are broker-wide on some
    /// brokers, so trials must not share them).
    pub(super) fn group(&self, destination: &str, name: &str) -> String {
        let tail = &destination[destination.len().saturating_sub(8)..];
        format!("{name}-{tail}")
    }

    /// A builder with the trial environment and the binder.
    pub(super) fn builder(
        &self,
        pairs: &[(String, String)],
    ) -> Result<StreamAppBuilder, TrialFailure> {
        Ok(StreamApp::builder()
            .environment(self.env(pairs)?)
            .binder_any(self.factory.clone()))
    }

    /// Builds an application, naming `what` in the failure.
    pub(super) async fn build(
        &self,
        builder: StreamAppBuilder,
        what: &str,
    ) -> Result<StreamApp, TrialFailure> {
        builder
            .build()
            .await
            .map_err(|e| TrialFailure(format!("{what} failed to bind: {e}")))
    }

    /// An application with consumer `sink` on `destination` forwarding what it receives.
    pub(super) async fn sink(
        &self,
        destination: &str,
        extra: &[(String, String)],
    ) -> Result<(StreamApp, Received), TrialFailure> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pairs = vec![(
            binding_key("sink-in-0", "destination"),
            destination.to_owned(),
        )];
        pairs.extend(extra.iter().cloned());
        let builder = self
            .builder(&pairs)?
            .consumer("sink", move |m: Message<Bytes>| {
                let tx = tx.clone();
                async move {
                    tx.send(m)
                        .map_err(|_| FunctionError::msg("conformance receiver dropped"))
                }
            });
        let app = self.build(builder, "consumer application").await?;
        Ok((app, rx))
    }

    /// A producer-only application (use its bridge).
    pub(super) async fn source(
        &self,
        pairs: &[(String, String)],
    ) -> Result<StreamApp, TrialFailure> {
        self.build(self.builder(pairs)?, "producer application")
            .await
    }

    /// A reader of the dead letters of `(destination, group)`.
    pub(super) async fn dead_letter_reader(
        &self,
        destination: &str,
        group: &str,
    ) -> Result<(StreamApp, Received), TrialFailure> {
        let reader = self
            .dead_letters
            .as_ref()
            .ok_or("no dead-letter reader configured")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pairs = reader(destination, group);
        if !pairs
            .iter()
            .any(|(k, _)| k == &binding_key("dlq-in-0", "destination"))
        {
            return Err(TrialFailure(
                "the dead-letter reader's properties must set spring.cloud.stream.bindings.dlq-in-0.destination".into(),
            ));
        }
        pairs.push((
            binding_key("dlq-in-0", "consumer.max-attempts"),
            "1".to_owned(),
        ));
        let builder = self
            .builder(&pairs)?
            .consumer("dlq", move |m: Message<Bytes>| {
                let tx = tx.clone();
                async move {
                    tx.send(m)
                        .map_err(|_| FunctionError::msg("dlq reader dropped"))
                }
            });
        let app = self.build(builder, "dead-letter reader").await?;
        Ok((app, rx))
    }

    /// The next message, or a failure naming `what`.
    pub(super) async fn next(
        &self,
        rx: &mut Received,
        what: &str,
    ) -> Result<Message<Bytes>, TrialFailure> {
        match tokio::time::timeout(self.timeout, rx.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(TrialFailure(format!("{what}: the consumer stopped"))),
            Err(_) => Err(TrialFailure(format!(
                "{what}: nothing received within {:?}",
                self.timeout
            ))),
        }
    }

    /// Nothing more arrives within the quiet period.
    pub(super) async fn quiet(&self, rx: &mut Received, what: &str) -> TrialResult {
        match tokio::time::timeout(self.quiet, rx.recv()).await {
            Ok(Some(m)) => Err(TrialFailure(format!(
                "{what}: unexpected message {:?}",
                String::from_utf8_lossy(m.payload())
            ))),
            _ => Ok(()),
        }
    }

    /// Waits until `binding`'s state satisfies `ok`.
    pub(super) async fn wait_state(
        &self,
        binding: &dyn Binding,
        what: &str,
        ok: impl Fn(BindingState) -> bool,
    ) -> TrialResult {
        let deadline = tokio::time::Instant::now() + self.timeout * 3;
        loop {
            let status = binding.status();
            if ok(status.state) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TrialFailure(format!(
                    "{what}: binding `{}` stayed {} ({:?})",
                    binding.name(),
                    status.state,
                    status.reason
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts applications down.
    pub(super) async fn shutdown(apps: Vec<StreamApp>) -> TrialResult {
        for app in apps {
            app.shutdown()
                .await
                .map_err(|e| TrialFailure(format!("shutdown: {e}")))?;
        }
        Ok(())
    }
}

/// A payload as text.
pub(super) fn text(m: &Message<Bytes>) -> String {
    String::from_utf8_lossy(m.payload()).into_owned()
}

/// Runs `f`, failing after `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = T>,
) -> Result<T, TrialFailure> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| TrialFailure(format!("{what}: did not finish within {limit:?}")))
}
