//! The binder conformance suite: the behaviour every binder must show, run through the real
//! runtime against a binder factory (feature `conformance`).
//!
//! A binder crate runs it in its broker tests:
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use std::sync::Arc;
//! use stream_core::conformance::Suite;
//! use stream_core::memory::InMemoryBinderFactory;
//! Suite::new(Arc::new(InMemoryBinderFactory::default()))
//!     .with_property("spring.cloud.stream.binders.x.type", "memory") // broker settings, if any
//!     .run_all()
//!     .await
//! # }
//! ```
//!
//! Every scenario uses fresh destination names, so the suite can run against a shared broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stream_config::Environment;
use tokio::sync::mpsc;

use crate::binder::{BinderFactory, Capability};
use crate::message::{HeaderValue, Message, names};
use crate::{FunctionError, StreamApp};

/// The conformance suite for one binder.
#[derive(Clone)]
pub struct Suite {
    factory: Arc<dyn BinderFactory>,
    properties: Vec<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("binder", &self.factory.binder_type())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

type Received = mpsc::UnboundedReceiver<Message<Bytes>>;

impl Suite {
    /// A suite over a binder factory (it creates one binder per simulated instance).
    pub fn new(factory: Arc<dyn BinderFactory>) -> Self {
        Self {
            factory,
            properties: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Adds a property every application of the suite gets (connection settings...).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// How long to wait for a message (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every scenario the binder's capabilities allow; the first failure is returned.
    pub async fn run_all(&self) -> Result<(), String> {
        self.round_trip().await?;
        self.anonymous_subscribers_each_receive().await?;
        self.groups_each_receive_and_members_compete().await?;
        self.retry_attempts_then_recovery().await?;
        if self.supports(Capability::Partitioning).await? {
            self.partitioned_instances().await?;
        }
        Ok(())
    }

    fn unique(&self, scenario: &str) -> String {
        let n: u64 = rand::random();
        format!("conformance.{scenario}.{n:016x}")
    }

    fn env(&self, pairs: &[(String, String)]) -> Result<Environment, String> {
        Environment::builder()
            .map(
                "conformance suite",
                self.properties.iter().cloned().chain(pairs.iter().cloned()),
            )
            .build()
            .map_err(|e| e.to_string())
    }

    /// An application with consumer `sink` on `destination`, forwarding what it gets.
    async fn sink(
        &self,
        destination: &str,
        extra: &[(&str, &str)],
    ) -> Result<(StreamApp, Received), String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pairs = vec![(
            "spring.cloud.stream.bindings.sink-in-0.destination".to_owned(),
            destination.to_owned(),
        )];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let app = StreamApp::builder()
            .environment(self.env(&pairs)?)
            .binder_arc(Arc::clone(&self.factory))
            .consumer("sink", move |m: Message<Bytes>| {
                let tx = tx.clone();
                async move {
                    tx.send(m)
                        .map_err(|_| FunctionError::msg("conformance receiver dropped"))
                }
            })
            .build()
            .await
            .map_err(|e| format!("consumer app failed to bind: {e}"))?;
        Ok((app, rx))
    }

    async fn source(&self, binding_props: &[(&str, &str)]) -> Result<StreamApp, String> {
        let pairs: Vec<(String, String)> = binding_props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        StreamApp::builder()
            .environment(self.env(&pairs)?)
            .binder_arc(Arc::clone(&self.factory))
            .build()
            .await
            .map_err(|e| format!("producer app failed to bind: {e}"))
    }

    async fn next(&self, rx: &mut Received, what: &str) -> Result<Message<Bytes>, String> {
        tokio::time::timeout(self.timeout, rx.recv())
            .await
            .map_err(|_| format!("{what}: nothing received within {:?}", self.timeout))?
            .ok_or_else(|| format!("{what}: consumer stopped"))
    }

    async fn quiet(&self, rx: &mut Received, what: &str) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(m)) => Err(format!(
                "{what}: unexpected extra message {:?}",
                String::from_utf8_lossy(m.payload())
            )),
            _ => Ok(()),
        }
    }

    async fn shutdown(apps: Vec<StreamApp>) -> Result<(), String> {
        for app in apps {
            app.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        }
        Ok(())
    }

    /// A message with a JSON payload and a user header arrives intact at a group consumer.
    pub async fn round_trip(&self) -> Result<(), String> {
        let dest = self.unique("round-trip");
        let (consumer, mut rx) = self
            .sink(
                &dest,
                &[("spring.cloud.stream.bindings.sink-in-0.group", "g")],
            )
            .await?;
        let producer = self
            .source(&[("spring.cloud.stream.output-bindings", "out")])
            .await?;
        let bridge = producer.bridge();
        let mut payload = BTreeMap::new();
        payload.insert("id", "r-1");
        bridge
            .send_message(
                &dest,
                Message::new(payload).with_header("x-conformance", "kept"),
            )
            .await
            .map_err(|e| format!("round trip: send failed: {e}"))?;
        let m = self.next(&mut rx, "round trip").await?;
        if m.payload().as_ref() != br#"{"id":"r-1"}"# {
            return Err(format!(
                "round trip: payload {:?}",
                String::from_utf8_lossy(m.payload())
            ));
        }
        if m.headers().get_str("x-conformance") != Some("kept") {
            return Err(format!("round trip: user header lost: {:?}", m.headers()));
        }
        if m.content_type().map(|c| c.starts_with("application/json")) != Some(true) {
            return Err(format!(
                "round trip: contentType {:?}, expected application/json",
                m.content_type()
            ));
        }
        Self::shutdown(vec![consumer, producer]).await
    }

    /// Two anonymous subscribers both get a message.
    pub async fn anonymous_subscribers_each_receive(&self) -> Result<(), String> {
        let dest = self.unique("anonymous");
        let (a, mut rx_a) = self.sink(&dest, &[]).await?;
        let (b, mut rx_b) = self.sink(&dest, &[]).await?;
        let producer = self.source(&[]).await?;
        producer
            .bridge()
            .send(&dest, "hello".to_owned())
            .await
            .map_err(|e| format!("anonymous: send failed: {e}"))?;
        for rx in [&mut rx_a, &mut rx_b] {
            let m = self.next(rx, "anonymous subscriber").await?;
            if m.payload().as_ref() != b"hello" {
                return Err(format!(
                    "anonymous: payload {:?}",
                    String::from_utf8_lossy(m.payload())
                ));
            }
        }
        Self::shutdown(vec![a, b, producer]).await
    }

    /// Each group gets every message; members of one group share them, each message once.
    pub async fn groups_each_receive_and_members_compete(&self) -> Result<(), String> {
        let dest = self.unique("groups");
        let group = |g: &'static str| [("spring.cloud.stream.bindings.sink-in-0.group", g)];
        let (a1, mut rx_a1) = self.sink(&dest, &group("a")).await?;
        let (a2, mut rx_a2) = self.sink(&dest, &group("a")).await?;
        let (b, mut rx_b) = self.sink(&dest, &group("b")).await?;
        let producer = self.source(&[]).await?;
        let bridge = producer.bridge();
        const N: usize = 20;
        for i in 0..N {
            bridge
                .send(&dest, format!("m{i}"))
                .await
                .map_err(|e| format!("groups: send failed: {e}"))?;
        }
        let mut in_b = Vec::new();
        for _ in 0..N {
            in_b.push(self.next(&mut rx_b, "group b").await?);
        }
        let mut in_a = Vec::new();
        while in_a.len() < N {
            tokio::select! {
                Some(m) = rx_a1.recv() => in_a.push(m),
                Some(m) = rx_a2.recv() => in_a.push(m),
                _ = tokio::time::sleep(self.timeout) => {
                    return Err(format!("groups: group a received {} of {N}", in_a.len()));
                }
            }
        }
        self.quiet(&mut rx_a1, "group a member 1").await?;
        self.quiet(&mut rx_a2, "group a member 2").await?;
        self.quiet(&mut rx_b, "group b").await?;
        let mut payloads: Vec<String> = in_a
            .iter()
            .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
            .collect();
        payloads.sort();
        payloads.dedup();
        if payloads.len() != N {
            return Err(format!(
                "groups: group a saw {} distinct of {N} messages",
                payloads.len()
            ));
        }
        Self::shutdown(vec![a1, a2, b, producer]).await
    }

    /// A failing message is attempted `max-attempts` times with increasing `deliveryAttempt`,
    /// then recovered by the binder (not redelivered).
    pub async fn retry_attempts_then_recovery(&self) -> Result<(), String> {
        let dest = self.unique("retry");
        let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
        let pairs = vec![
            (
                "spring.cloud.stream.bindings.fail-in-0.destination".to_owned(),
                dest.clone(),
            ),
            (
                "spring.cloud.stream.bindings.fail-in-0.group".to_owned(),
                "g".to_owned(),
            ),
            (
                "spring.cloud.stream.bindings.fail-in-0.consumer.back-off-initial-interval"
                    .to_owned(),
                "10ms".to_owned(),
            ),
        ];
        let consumer = StreamApp::builder()
            .environment(self.env(&pairs)?)
            .binder_arc(Arc::clone(&self.factory))
            .consumer("fail", move |m: Message<Bytes>| {
                let tx = tx.clone();
                async move {
                    let attempt = m
                        .headers()
                        .get(names::DELIVERY_ATTEMPT)
                        .and_then(HeaderValue::as_i64)
                        .unwrap_or(-1);
                    let _ = tx.send(attempt);
                    Err::<(), _>(FunctionError::msg("conformance failure"))
                }
            })
            .build()
            .await
            .map_err(|e| format!("retry: consumer failed to bind: {e}"))?;
        let producer = self.source(&[]).await?;
        producer
            .bridge()
            .send(&dest, "doomed".to_owned())
            .await
            .map_err(|e| format!("retry: send failed: {e}"))?;
        let mut attempts = Vec::new();
        for _ in 0..3 {
            let a = tokio::time::timeout(self.timeout, rx.recv())
                .await
                .map_err(|_| format!("retry: saw attempts {attempts:?}, expected [1, 2, 3]"))?
                .ok_or("retry: consumer stopped")?;
            attempts.push(a);
        }
        if attempts != [1, 2, 3] {
            return Err(format!(
                "retry: deliveryAttempt headers {attempts:?}, expected [1, 2, 3]"
            ));
        }
        if let Ok(Some(a)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            return Err(format!(
                "retry: message redelivered after exhaustion (attempt header {a})"
            ));
        }
        Self::shutdown(vec![consumer, producer]).await
    }

    /// A partitioned producer's messages reach the instance whose index is the partition
    /// (Java's `String.hashCode` selection). Skipped when the binder does not partition.
    pub async fn partitioned_instances(&self) -> Result<(), String> {
        let dest = self.unique("partitions");
        let mut instances = Vec::new();
        let mut receivers = Vec::new();
        for index in ["0", "1"] {
            let (app, rx) = self
                .sink(
                    &dest,
                    &[
                        ("spring.cloud.stream.bindings.sink-in-0.group", "g"),
                        (
                            "spring.cloud.stream.bindings.sink-in-0.consumer.partitioned",
                            "true",
                        ),
                        ("spring.cloud.stream.instance-count", "2"),
                        ("spring.cloud.stream.instance-index", index),
                    ],
                )
                .await?;
            instances.push(app);
            receivers.push(rx);
        }
        let producer = self
            .source(&[
                (
                    "spring.cloud.stream.bindings.out.destination",
                    dest.as_str(),
                ),
                (
                    "spring.cloud.stream.bindings.out.producer.partition-key-expression",
                    "headers['key']",
                ),
                (
                    "spring.cloud.stream.bindings.out.producer.partition-count",
                    "2",
                ),
            ])
            .await?;
        // "0".hashCode() = 48 -> 0; "1" = 49 -> 1; "foo" = 101574 -> 0; "😀" = 1772899 -> 1.
        for key in ["0", "1", "foo", "😀"] {
            producer
                .bridge()
                .send_message("out", Message::new(key.to_owned()).with_header("key", key))
                .await
                .map_err(|e| format!("partitions: send failed: {e}"))?;
        }
        let expected = [["0", "foo"], ["1", "😀"]];
        for (i, want) in expected.iter().enumerate() {
            for w in want {
                let m = self.next(&mut receivers[i], "partitioned instance").await?;
                let got = String::from_utf8_lossy(m.payload()).into_owned();
                if got != *w {
                    return Err(format!(
                        "partitions: instance {i} got {got:?}, expected {w:?}"
                    ));
                }
            }
            self.quiet(&mut receivers[i], "partitioned instance")
                .await?;
        }
        instances.push(producer);
        Self::shutdown(instances).await
    }
}

impl Suite {
    /// Whether the factory's binders support a capability (creates one binder to ask).
    pub async fn supports(&self, capability: Capability) -> Result<bool, String> {
        let binder = self
            .factory
            .create(crate::binder::BinderContext::new(
                self.factory.binder_type(),
                self.env(&[])?,
            ))
            .await
            .map_err(|e| e.to_string())?;
        let supported = binder.capabilities().supports(capability);
        binder.close().await.map_err(|e| e.to_string())?;
        Ok(supported)
    }
}
