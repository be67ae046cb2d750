use std::time::Duration;

use crate::{ConfigError, Environment, ExtensionSchema, Secret, StreamConfig};

crate::properties! {
    /// Test binder settings.
    pub(crate) struct TestBinderProps {
        /// Address.
        pub(crate) address: String = "localhost".to_owned(),
        /// Password.
        pub(crate) password: Secret = Secret::default(),
    }
    /// Test consumer settings.
    pub(crate) struct TestConsumerProps {
        /// Prefetch.
        pub(crate) prefetch: u16 = 1,
        /// Durable.
        pub(crate) durable: bool = true,
        /// Recovery.
        pub(crate) recovery_interval: Duration = Duration::from_millis(5000),
    }
    /// Test producer settings.
    pub(crate) struct TestProducerProps {
        /// Batch size.
        pub(crate) batch_size: u32 = 100,
    }
}

fn schema() -> ExtensionSchema {
    ExtensionSchema::new::<TestBinderProps, TestConsumerProps, TestProducerProps>("testmq")
}

#[test]
fn defaults_when_nothing_is_configured() {
    let config = StreamConfig::builder(Environment::empty())
        .build()
        .expect("config");
    let s = config.stream();
    assert_eq!(
        (
            s.instance_index,
            s.instance_count,
            s.dynamic_destination_cache_size
        ),
        (0, 1, 10)
    );
    assert_eq!(s.binding_retry_interval, Duration::from_secs(30));
    let b = config.binding("anything").expect("b");
    assert_eq!(b.content_type, "application/json");
    assert_eq!(b.destination_or("anything"), "anything");
    let c = &b.consumer;
    assert!(c.auto_startup && c.default_retryable && !c.partitioned && !c.batch_mode);
    assert_eq!(
        (c.concurrency, c.max_attempts, c.back_off_multiplier),
        (1, 3, 2.0)
    );
    assert_eq!(
        (c.back_off_initial_interval, c.back_off_max_interval),
        (Duration::from_secs(1), Duration::from_secs(10))
    );
    assert_eq!((c.instance_count, c.instance_index), (Some(1), Some(0)));
    let p = &b.producer;
    assert_eq!(
        (
            p.partition_count,
            p.poller.fixed_delay,
            p.poller.max_messages_per_poll
        ),
        (1, Duration::from_secs(1), 1)
    );
    assert!(!p.is_partitioned());
}

#[test]
fn default_layering_for_common_properties() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring:\n  cloud:\n    stream:\n      instance-count: 3\n      instance-index: 2\n      binding-retry-interval: 5\n      default:\n        group: shared\n        content-type: text/plain\n        consumer:\n          max-attempts: 4\n          concurrency: 2\n        producer:\n          partition-key-expression: headers.id\n      bindings:\n        input:\n          consumer:\n            concurrency: 8\n            instance-index: 0\n          group: own\n",
        )
        .build()
        .expect("env");
    let config = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.stream().binding_retry_interval,
        Duration::from_secs(5)
    );
    let input = config.binding("input").expect("b");
    assert_eq!(input.group.as_deref(), Some("own"));
    assert_eq!(input.content_type, "text/plain");
    assert_eq!(
        (input.consumer.max_attempts, input.consumer.concurrency),
        (4, 8)
    );
    assert_eq!(
        (input.consumer.instance_count, input.consumer.instance_index),
        (Some(3), Some(0))
    );
    assert!(input.producer.is_partitioned());
    let other = config.binding("other").expect("b");
    assert_eq!(
        (other.group.as_deref(), other.consumer.concurrency),
        (Some("shared"), 2)
    );
}

#[test]
fn binder_extension_default_and_binding_layering() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "spring.cloud.stream.testmq.binder.address=broker:1\nspring.cloud.stream.testmq.default.consumer.prefetch=5\nspring.cloud.stream.testmq.default.consumer.recovery-interval=2s\nspring.cloud.stream.testmq.bindings.input.consumer.prefetch=9\nspring.cloud.stream.testmq.bindings.output.producer.batchSize=7\n",
        )
        .env_vars([("SPRING_CLOUD_STREAM_TESTMQ_BINDINGS_INPUT_CONSUMER_RECOVERY_INTERVAL", "PT3S")])
        .build()
        .expect("env");
    let config = StreamConfig::builder(env)
        .extension(schema())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let env = config.environment();
    let b: TestBinderProps = env.extended_binder("testmq").expect("binder");
    assert_eq!(b.address, "broker:1");
    let c: TestConsumerProps = env.extended_consumer("testmq", "Input").expect("c");
    assert_eq!(
        (c.prefetch, c.durable, c.recovery_interval),
        (9, true, Duration::from_secs(3))
    );
    let c: TestConsumerProps = env.extended_consumer("testmq", "other").expect("c");
    assert_eq!(
        (c.prefetch, c.recovery_interval),
        (5, Duration::from_secs(2))
    );
    let p: TestProducerProps = env.extended_producer("testmq", "output").expect("p");
    assert_eq!(p.batch_size, 7);
}

#[test]
fn binders_and_binder_environment() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "app.x: outer\nspring:\n  cloud:\n    stream:\n      default-binder: one\n      binders:\n        one:\n          type: testmq\n          environment:\n            app.y: inner\n            spring.cloud.stream.testmq.binder.address: b1\n        two:\n          type: testmq\n          inherit-environment: false\n          default-candidate: false\n",
        )
        .build()
        .expect("env");
    let config = StreamConfig::builder(env)
        .extension(schema())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let binders = config.binders();
    assert_eq!(binders.keys().collect::<Vec<_>>(), vec!["one", "two"]);
    assert_eq!(binders["one"].binder_type, "testmq");
    assert!(binders["one"].inherit_environment && binders["one"].default_candidate);
    assert!(!binders["two"].inherit_environment && !binders["two"].default_candidate);
    let one = config.binder_environment("one");
    assert_eq!(
        (one.get("app.x"), one.get("app.y")),
        (Some("outer"), Some("inner"))
    );
    let b: TestBinderProps = one.extended_binder("testmq").expect("b");
    assert_eq!(b.address, "b1");
    assert_eq!(config.binder_environment("two").get("app.x"), None);
}

#[test]
fn function_definition_and_old_alias() {
    let env = Environment::builder()
        .map("m", [("spring.cloud.stream.function.definition", "a;b|c")])
        .build()
        .expect("env");
    assert_eq!(
        StreamConfig::builder(env)
            .build()
            .expect("c")
            .function_definition(),
        Some("a;b|c")
    );
    let env = Environment::builder()
        .map(
            "m",
            [
                ("spring.cloud.stream.function.definition", "old"),
                ("spring.cloud.function.definition", "new"),
            ],
        )
        .build()
        .expect("env");
    assert_eq!(
        StreamConfig::builder(env)
            .build()
            .expect("c")
            .function_definition(),
        Some("new")
    );
}

#[test]
fn wrong_type_names_key_value_type_and_origin() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring:\n  cloud:\n    stream:\n      bindings:\n        input:\n          consumer:\n            max-attempts: three\n",
        )
        .build()
        .expect("env");
    let err = super::err_text(StreamConfig::builder(env).build());
    assert!(
        err.contains("`spring.cloud.stream.bindings.input.consumer.max-attempts` = \"three\" (application.yml:7): expected an integer (u32)"),
        "{err}"
    );

    let env = Environment::builder()
        .env_vars([(
            "SPRING_CLOUD_STREAM_TESTMQ_BINDINGS_IN_CONSUMER_DURABLE",
            "maybe",
        )])
        .build()
        .expect("env");
    let err = StreamConfig::builder(env).extension(schema()).build().err();
    match err {
        Some(ConfigError::InvalidValue {
            key,
            value,
            expected,
            origin,
            ..
        }) => {
            assert_eq!(
                key,
                "spring.cloud.stream.testmq.bindings.in.consumer.durable"
            );
            assert_eq!(value, "maybe");
            assert!(expected.contains("boolean"));
            assert_eq!(
                origin,
                "environment variable SPRING_CLOUD_STREAM_TESTMQ_BINDINGS_IN_CONSUMER_DURABLE"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let env = Environment::builder()
        .map(
            "m",
            [("spring.cloud.stream.binding-retry-interval", "soon")],
        )
        .build()
        .expect("env");
    let err = super::err_text(StreamConfig::builder(env).build());
    assert!(err.contains("expected a duration"), "{err}");
}

#[test]
fn header_mode_enum_and_reference_docs() {
    let env = Environment::builder()
        .map(
            "m",
            [(
                "spring.cloud.stream.bindings.x.consumer.header-mode",
                "embeddedHeaders",
            )],
        )
        .build()
        .expect("env");
    let b = StreamConfig::builder(env)
        .build()
        .expect("c")
        .binding("x")
        .expect("b");
    assert_eq!(
        b.consumer.header_mode,
        Some(crate::HeaderMode::EmbeddedHeaders)
    );
    let md = crate::stream_reference_markdown();
    assert!(
        md.contains(
            "| `spring.cloud.stream.bindings.<name>.producer.poller.fixed-delay` | a duration"
        ),
        "{md}"
    );
    assert!(md.contains("retryable-exceptions.<key>"), "{md}");
    let md = crate::reference_markdown(
        "T",
        "p",
        &<TestBinderProps as crate::Properties>::descriptors(),
    );
    assert!(
        md.contains("| `p.password` | a secret string |  | Password. |"),
        "{md}"
    );
}
