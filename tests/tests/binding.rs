//! Binding-time behaviour: late binding, capabilities, dynamic-destination rules, binder choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use stream_core::binder::{
    Binder, BinderContext, BinderFactory, BindingState, Capabilities, Capability, ConsumerSpec,
    ProducerSpec,
};
use stream_core::memory::{
    InMemoryBinder, InMemoryBinderFactory, InMemoryBroker, MemoryBinderProperties, MemoryConsumer,
    MemoryConsumerProperties, MemoryDestination, MemoryPollable, MemoryProducer,
    MemoryProducerProperties,
};
use stream_core::{BinderError, FunctionError, Message, StreamApp};
use stream_tests::env;

/// A third-party-style binder wrapping the in-memory one: fails provisioning with a connection
/// error a number of times, and declares chosen capabilities.
struct Flaky {
    inner: InMemoryBinder,
    failures_left: AtomicU32,
    caps: Capabilities,
    /// A destination whose producer provisioning never answers (a broker that does not reply).
    hang_on: Option<&'static str>,
}

impl Binder for Flaky {
    type ConsumerProperties = MemoryConsumerProperties;
    type ProducerProperties = MemoryProducerProperties;
    type ConsumerDestination = MemoryDestination;
    type ProducerDestination = String;
    type Consumer = MemoryConsumer;
    type Producer = MemoryProducer;
    type Pollable = MemoryPollable;

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn provision_consumer(
        &self,
        spec: &ConsumerSpec<MemoryConsumerProperties>,
    ) -> Result<MemoryDestination, BinderError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BinderError::connection("flaky:1", "connection refused"));
        }
        self.inner.provision_consumer(spec).await
    }

    async fn provision_producer(
        &self,
        spec: &ProducerSpec<MemoryProducerProperties>,
    ) -> Result<String, BinderError> {
        if self.hang_on == Some(&*spec.destination) {
            std::future::pending::<()>().await;
        }
        self.inner.provision_producer(spec).await
    }

    async fn bind_consumer(
        &self,
        spec: &ConsumerSpec<MemoryConsumerProperties>,
        d: &MemoryDestination,
    ) -> Result<MemoryConsumer, BinderError> {
        self.inner.bind_consumer(spec, d).await
    }

    async fn bind_producer(
        &self,
        spec: &ProducerSpec<MemoryProducerProperties>,
        d: &String,
    ) -> Result<MemoryProducer, BinderError> {
        self.inner.bind_producer(spec, d).await
    }

    async fn bind_pollable(
        &self,
        spec: &ConsumerSpec<MemoryConsumerProperties>,
        d: &MemoryDestination,
    ) -> Result<MemoryPollable, BinderError> {
        self.inner.bind_pollable(spec, d).await
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

struct FlakyFactory {
    broker: InMemoryBroker,
    failures: u32,
    caps: Capabilities,
    hang_on: Option<&'static str>,
}

stream_config::properties! {
    /// The flaky broker's own top-level keys, `spring.flaky.*` (as `spring.rabbitmq.*`).
    pub struct FlakyConnection {
        /// Broker host.
        pub host: String = "localhost".to_owned(),
        /// Broker port.
        pub port: u16 = 1234,
        /// No effect: the flaky broker keeps no connection cache.
        pub cache: stream_config::NoEffect = stream_config::NoEffect,
    }
}

impl BinderFactory for FlakyFactory {
    type Binder = Flaky;
    type Properties = MemoryBinderProperties;

    fn binder_type(&self) -> &'static str {
        "flaky"
    }

    fn root_schemas(&self) -> Vec<stream_config::RootSchema> {
        vec![stream_config::RootSchema::new::<FlakyConnection>(
            "spring.flaky",
        )]
    }

    async fn create(
        &self,
        _ctx: BinderContext<MemoryBinderProperties>,
    ) -> Result<Flaky, BinderError> {
        Ok(Flaky {
            inner: InMemoryBinder::new(self.broker.clone()),
            failures_left: AtomicU32::new(self.failures),
            caps: self.caps,
            hang_on: self.hang_on,
        })
    }
}

fn all_caps() -> Capabilities {
    [
        Capability::ConsumerGroups,
        Capability::Partitioning,
        Capability::DeadLetter,
    ]
    .into_iter()
    .collect()
}

#[tokio::test(start_paused = true)]
async fn unreachable_broker_at_bind_time_is_retried_every_binding_retry_interval() {
    let broker = InMemoryBroker::new();
    let start = tokio::time::Instant::now();
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.binding-retry-interval", "7"),
            ("spring.cloud.stream.bindings.c-in-0.group", "g"),
        ]))
        .binder(FlakyFactory {
            hang_on: None,
            broker: broker.clone(),
            failures: 2,
            caps: all_caps(),
        })
        .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect("the application starts while the broker is unreachable (late binding)");
    assert_eq!(start.elapsed(), Duration::ZERO, "build does not wait");
    let binding = app.consumer_bindings("c-in-0")[0];
    let status = binding.status();
    assert_eq!(status.state, BindingState::Starting);
    assert!(
        status.reason.as_deref().is_some_and(
            |r| r.contains("connection refused") && r.contains("binding-retry-interval")
        ),
        "{status:?}"
    );
    assert!(broker.queues("c-in-0").is_empty());
    // The first retry (7 s) fails, the second (14 s) binds.
    tokio::time::sleep_until(start + Duration::from_millis(13_900)).await;
    assert_eq!(
        binding.state(),
        BindingState::Starting,
        "still retrying at 13.9 s"
    );
    tokio::time::sleep_until(start + Duration::from_millis(14_100)).await;
    assert_eq!(
        binding.state(),
        BindingState::Running,
        "bound by the second retry, 7 s after the first"
    );
    assert_eq!(broker.queues("c-in-0"), vec!["c-in-0.g"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_zero_binding_retry_interval_makes_an_unreachable_broker_fatal() {
    let err = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.binding-retry-interval", "0"),
            ("spring.cloud.stream.bindings.c-in-0.group", "g"),
        ]))
        .binder(FlakyFactory {
            hang_on: None,
            broker: InMemoryBroker::new(),
            failures: 1,
            caps: all_caps(),
        })
        .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("fatal");
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[tokio::test]
async fn a_feature_the_binder_lacks_fails_at_bind_time_naming_it() {
    let err = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.c-in-0.group", "g"),
            (
                "spring.cloud.stream.bindings.c-in-0.consumer.partitioned",
                "true",
            ),
        ]))
        .binder(FlakyFactory {
            hang_on: None,
            broker: InMemoryBroker::new(),
            failures: 0,
            caps: Capabilities::none().with(Capability::ConsumerGroups),
        })
        .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("partitioning is not supported");
    let text = err.to_string();
    assert!(text.contains("does not support partitioning"), "{text}");
    assert!(text.contains("c-in-0"), "{text}");
}

#[tokio::test]
async fn a_dynamic_destination_that_never_binds_does_not_block_the_others() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[]))
        .binder(FlakyFactory {
            broker: broker.clone(),
            failures: 0,
            caps: all_caps(),
            hang_on: Some("stuck"),
        })
        .build()
        .await
        .expect("binds");
    let bridge = app.bridge();
    bridge
        .send("bound", "first".to_owned())
        .await
        .expect("bound");
    let stuck = {
        let bridge = bridge.clone();
        tokio::spawn(async move { bridge.send("stuck", "x".to_owned()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = async {
        bridge.send("bound", "second".to_owned()).await?;
        bridge.send("fresh", "third".to_owned()).await
    };
    tokio::time::timeout(Duration::from_secs(5), quick)
        .await
        .expect("sends to other destinations do not wait for the stuck one")
        .expect("sent");
    assert!(
        !stuck.is_finished(),
        "the stuck destination is still binding"
    );
    assert_eq!(bridge.dynamic_destinations().await, ["bound", "fresh"]);
    stuck.abort();
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn dynamic_destinations_allow_list_is_enforced() {
    let app = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.dynamic-destinations",
            "allowed",
        )]))
        .binder(InMemoryBinderFactory::default())
        .build()
        .await
        .expect("binds");
    app.bridge()
        .send("allowed", "x".to_owned())
        .await
        .expect("listed destination");
    let err = app
        .bridge()
        .send("other", "x".to_owned())
        .await
        .expect_err("unlisted destination");
    assert!(
        err.to_string()
            .contains("spring.cloud.stream.dynamic-destinations"),
        "{err}"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn source_and_output_bindings_are_bound_up_front_with_their_properties() {
    let broker = InMemoryBroker::new();
    broker.capture("ticks");
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.source", "tick"),
            (
                "spring.cloud.stream.bindings.tick-out-0.destination",
                "ticks",
            ),
            (
                "spring.cloud.stream.bindings.tick-out-0.content-type",
                "text/plain",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("binds");
    assert!(app.bindings().iter().any(|(n, _)| n == "tick-out-0"));
    app.bridge().send("tick-out-0", 42_u32).await.expect("sent");
    let m = broker
        .receive("ticks", Duration::from_secs(1))
        .await
        .expect("received");
    assert_eq!(&m.payload()[..], b"42");
    assert_eq!(m.content_type(), Some("text/plain"));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn binder_choice_follows_binders_config_and_default_binder() {
    let broker = InMemoryBroker::new();
    let build = |pairs: Vec<(&'static str, &'static str)>| {
        let broker = broker.clone();
        async move {
            StreamApp::builder()
                .environment(env(&pairs))
                .binder(InMemoryBinderFactory::with_broker(broker.clone()))
                .binder(FlakyFactory {
                    hang_on: None,
                    broker,
                    failures: 0,
                    caps: all_caps(),
                })
                .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
                .build()
                .await
        }
    };
    let err = build(vec![])
        .await
        .expect_err("two binder types, none chosen");
    assert!(
        err.to_string()
            .contains("spring.cloud.stream.default-binder"),
        "{err}"
    );
    let app = build(vec![("spring.cloud.stream.default-binder", "memory")])
        .await
        .expect("default-binder picks memory");
    app.shutdown().await.expect("clean shutdown");
    let app = build(vec![
        ("spring.cloud.stream.binders.local.type", "memory"),
        ("spring.cloud.stream.bindings.c-in-0.binder", "local"),
    ])
    .await
    .expect("named binder configuration");
    app.shutdown().await.expect("clean shutdown");
    let err = build(vec![(
        "spring.cloud.stream.bindings.c-in-0.binder",
        "kafka",
    )])
    .await
    .expect_err("unknown binder");
    assert!(err.to_string().contains("registered binder type"), "{err}");
}

#[tokio::test]
async fn input_bindings_without_functions_are_rejected_clearly() {
    let err = StreamApp::builder()
        .environment(env(&[("spring.cloud.stream.input-bindings", "raw")]))
        .binder(InMemoryBinderFactory::default())
        .build()
        .await
        .expect_err("not supported");
    assert!(err.to_string().contains("input-bindings"), "{err}");
}

#[tokio::test]
async fn manual_acknowledge_mode_hands_the_function_an_ack_handle() {
    let broker = InMemoryBroker::new();
    let deliveries = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&deliveries);
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.bindings.m-in-0.destination", "manual"),
            ("spring.cloud.stream.bindings.m-in-0.group", "g"),
            (
                "spring.cloud.stream.memory.bindings.m-in-0.consumer.acknowledge-mode",
                "MANUAL",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .consumer("m", move |m: Message<String>| {
            let seen = Arc::clone(&seen);
            async move {
                let ack = m
                    .acknowledgment()
                    .ok_or_else(|| FunctionError::msg("no ack handle in MANUAL mode"))?;
                // Requeue the first delivery, accept the redelivery.
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    ack.reject(true).await?;
                } else {
                    ack.ack().await?;
                }
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await
        .expect("binds");
    broker.send("manual", Message::bytes("only"));
    tokio::time::timeout(Duration::from_secs(5), async {
        while deliveries.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("redelivered after the manual requeue");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        deliveries.load(Ordering::SeqCst),
        2,
        "acked on the second delivery"
    );
    assert_eq!(broker.queue_depth("manual", "g", None), 0);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn embedded_headers_are_refused_with_a_reason() {
    let err = StreamApp::builder()
        .environment(env(&[(
            "spring.cloud.stream.bindings.c-in-0.consumer.header-mode",
            "embeddedHeaders",
        )]))
        .binder(InMemoryBinderFactory::default())
        .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("embedded headers");
    assert!(err.to_string().contains("embedded-headers"), "{err}");
}

#[tokio::test]
async fn a_recovery_needing_an_undeclared_capability_is_refused_at_bind_time() {
    // The in-memory consumer of a group dead-letters by publishing; a binder that does not
    // declare dead-letter destinations cannot bind it.
    let err = StreamApp::builder()
        .environment(env(&[("spring.cloud.stream.bindings.c-in-0.group", "g")]))
        .binder(FlakyFactory {
            hang_on: None,
            broker: InMemoryBroker::new(),
            failures: 0,
            caps: Capabilities::none().with(Capability::ConsumerGroups),
        })
        .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
        .build()
        .await
        .expect_err("dead-lettering is not declared");
    let text = err.to_string();
    assert!(text.contains("dead-letter destinations"), "{text}");
    assert!(text.contains("c-in-0"), "{text}");
}

#[tokio::test]
async fn acknowledge_modes_need_their_capabilities() {
    for (mode, feature) in [
        ("MANUAL", "acknowledge-mode MANUAL"),
        ("NONE", "acknowledge-mode NONE"),
    ] {
        let err = StreamApp::builder()
            .environment(env(&[(
                "spring.cloud.stream.bindings.c-in-0.consumer.acknowledge-mode",
                mode,
            )]))
            .binder(FlakyFactory {
                hang_on: None,
                broker: InMemoryBroker::new(),
                failures: 0,
                caps: all_caps(),
            })
            .consumer("c", |_: String| async { Ok::<_, FunctionError>(()) })
            .build()
            .await
            .expect_err("not declared");
        assert!(err.to_string().contains(feature), "{err}");
    }
}

#[tokio::test]
async fn an_output_with_auto_startup_false_sends_only_once_started() {
    let broker = InMemoryBroker::new();
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.cloud.stream.output-bindings", "out"),
            ("spring.cloud.stream.bindings.out.destination", "later"),
            (
                "spring.cloud.stream.bindings.out.producer.auto-startup",
                "false",
            ),
        ]))
        .binder(InMemoryBinderFactory::with_broker(broker.clone()))
        .build()
        .await
        .expect("binds");
    broker.capture("later");
    let err = app
        .bridge()
        .send("out", "early".to_owned())
        .await
        .expect_err("not started");
    assert!(err.to_string().contains("is stopped"), "{err}");
    let handle = app.handle();
    handle
        .command("out", stream_core::app::BindingCommand::Start)
        .await
        .expect("start");
    app.bridge()
        .send("out", "late".to_owned())
        .await
        .expect("started");
    let got = broker
        .receive("later", Duration::from_secs(2))
        .await
        .expect("the message sent after start");
    assert_eq!(&got.payload()[..], b"late");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_third_party_binder_declares_its_top_level_keys() {
    let flaky = || FlakyFactory {
        hang_on: None,
        broker: InMemoryBroker::new(),
        failures: 0,
        caps: all_caps(),
    };
    // A misspelt key under the binder's root fails the build with a suggestion...
    let err = StreamApp::builder()
        .environment(env(&[("spring.flaky.hots", "broker")]))
        .binder(flaky())
        .build()
        .await
        .expect_err("typo");
    assert!(
        err.to_string()
            .contains("did you mean `spring.flaky.host`?"),
        "{err}"
    );
    // ...a wrong type names the key at start-up...
    let err = StreamApp::builder()
        .environment(env(&[("spring.flaky.port", "many")]))
        .binder(flaky())
        .build()
        .await
        .expect_err("wrong type");
    assert!(err.to_string().contains("`spring.flaky.port`"), "{err}");
    // ...and keys without effect are accepted.
    let app = StreamApp::builder()
        .environment(env(&[
            ("spring.flaky.host", "broker"),
            ("spring.flaky.cache.size", "5"),
        ]))
        .binder(flaky())
        .build()
        .await
        .expect("accepted");
    app.shutdown().await.expect("clean shutdown");
}
