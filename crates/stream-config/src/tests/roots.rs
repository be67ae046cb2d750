//! Top-level roots declared by binders (`spring.<broker>.*`), keys accepted without effect,
//! moved keys, misspelt environment variables, and Spring's `@Min` checks.

use std::time::Duration;

use super::err_text;
use crate::{ConfigError, Environment, ExtensionSchema, NoEffect, RootSchema, StreamConfig};

crate::properties! {
    /// `spring.testmq.*`.
    pub(crate) struct TestConnection {
        /// Host.
        pub(crate) host: String = "localhost".to_owned(),
        /// Port.
        pub(crate) port: u16 = 1000,
        /// Virtual host.
        pub(crate) virtual_host: String = "/".to_owned(),
        /// Confirm type.
        pub(crate) publisher_confirm_type: String = "none".to_owned(),
        /// TLS.
        pub(crate) ssl: TestSsl = TestSsl::default(),
        /// No effect: there is no channel cache here.
        pub(crate) cache: NoEffect = NoEffect,
    }
    /// `spring.testmq.ssl.*`.
    pub(crate) struct TestSsl {
        /// On.
        pub(crate) enabled: bool = false,
        /// CA file.
        pub(crate) trust_store: Option<String> = None,
    }
    /// Nothing.
    pub(crate) struct Nothing {}
}

fn schema() -> ExtensionSchema {
    ExtensionSchema::new::<Nothing, Nothing, Nothing>("testmq")
        .with_root(RootSchema::new::<TestConnection>("spring.testmq"))
        .with_root(RootSchema::moved(
            "spring.cloud.starter.stream.testmq",
            |rest| format!("spring.cloud.stream.testmq.{rest}"),
            "the guide's label, not a key",
        ))
}

fn config(env: Environment) -> Result<StreamConfig, ConfigError> {
    StreamConfig::builder(env).extension(schema()).build()
}

fn from_vars(vars: &[(&str, &str)]) -> Result<StreamConfig, ConfigError> {
    config(
        Environment::builder()
            .env_vars(vars.iter().copied())
            .build()
            .expect("env"),
    )
}

#[test]
fn env_vars_map_through_a_binder_root() {
    for var in ["SPRING_TESTMQ_VIRTUALHOST", "SPRING_TESTMQ_VIRTUAL_HOST"] {
        let c = from_vars(&[(var, "v1")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.environment().get("spring.testmq.virtual-host"),
            Some("v1"),
            "{var}"
        );
    }
    let c = from_vars(&[
        ("SPRING_TESTMQ_PUBLISHERCONFIRMTYPE", "correlated"),
        ("SPRING_TESTMQ_SSL_TRUST_STORE", "/ca.pem"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut conn = TestConnection::default();
    c.environment()
        .bind("spring.testmq", &mut conn)
        .expect("bind");
    assert_eq!(conn.publisher_confirm_type, "correlated");
    assert_eq!(conn.ssl.trust_store.as_deref(), Some("/ca.pem"));
}

#[test]
fn typos_under_a_root_are_errors_with_suggestions() {
    let env = Environment::builder()
        .yaml_str("application.yml", "spring:\n  testmq:\n    hots: broker\n")
        .build()
        .expect("env");
    let err = err_text(config(env));
    assert!(
        err.contains("unknown key `spring.testmq.hots` (application.yml:3): did you mean `spring.testmq.host`?"),
        "{err}"
    );
    let err = err_text(from_vars(&[("SPRING_TESTMQ_HOTS", "broker")]));
    assert!(
        err.contains("did you mean `SPRING_TESTMQ_HOST` (`spring.testmq.host`)?"),
        "{err}"
    );
    // Without the binder's schema the root is not checked (other `spring.*` keys never are).
    let env = Environment::builder()
        .map(
            "m",
            [("spring.testmq.hots", "x"), ("spring.datasource.url", "y")],
        )
        .build()
        .expect("env");
    StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_wrong_type_under_a_root_fails_at_startup_naming_the_key() {
    let err = from_vars(&[("SPRING_TESTMQ_PORT", "fifty")]).expect_err("wrong type");
    let ConfigError::InvalidValue { key, origin, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "spring.testmq.port");
    assert_eq!(origin, "environment variable SPRING_TESTMQ_PORT");
    // In a binder's own environment too.
    let env = Environment::builder()
        .map(
            "m",
            [
                ("spring.cloud.stream.binders.b1.type", "testmq"),
                (
                    "spring.cloud.stream.binders.b1.environment.spring.testmq.port",
                    "x",
                ),
            ],
        )
        .build()
        .expect("env");
    let err = err_text(config(env));
    assert!(err.contains("`spring.testmq.port`"), "{err}");
}

#[test]
fn no_effect_keys_are_accepted_and_reported_once_each() {
    let c = from_vars(&[
        ("SPRING_TESTMQ_CACHE_CHANNEL_SIZE", "25"),
        ("SPRING_TESTMQ_CACHE_CONNECTION_MODE", "connection"),
        ("SPRING_CLOUD_STREAM_METRICS_KEY", "app"),
        ("SPRING_CLOUD_FUNCTION_ROUTING_EXPRESSION", "headers['to']"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = c.notices().iter().map(|n| n.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "spring.cloud.function.routing-expression",
            "spring.cloud.stream.metrics.key",
            "spring.testmq.cache.channel.size",
            "spring.testmq.cache.connection.mode",
        ]
    );
    let text = c.notices()[2].to_string();
    assert!(
        text.contains("(environment variable SPRING_TESTMQ_CACHE_CHANNEL_SIZE) is accepted")
            && text.contains("no channel cache"),
        "{text}"
    );
}

#[test]
fn moved_keys_name_the_real_key() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "spring.cloud.starter.stream.testmq.binder.consumer.enable=true",
        )
        .build()
        .expect("env");
    let err = err_text(config(env));
    assert!(
        err.contains("did you mean `spring.cloud.stream.testmq.binder.consumer.enable`?")
            && err.contains("the guide's label, not a key"),
        "{err}"
    );
}

#[test]
fn misspelt_env_vars_keep_binding_names_and_suggest_in_env_form() {
    let err = err_text(from_vars(&[(
        "SPRING_CLOUD_STREAM_BINDINGS_VALIDATE_IN_0_GRUOP",
        "g",
    )]));
    assert!(
        err.contains("unknown key `spring.cloud.stream.bindings.validate-in-0.gruop`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `SPRING_CLOUD_STREAM_BINDINGS_VALIDATE_IN_0_GROUP`"),
        "{err}"
    );
    let err = err_text(from_vars(&[(
        "SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_CONSUMER_MAX_ATTEMTPS",
        "2",
    )]));
    assert!(
        err.contains(
            "did you mean `SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_CONSUMER_MAX_ATTEMPTS`"
        ),
        "{err}"
    );
}

#[test]
fn unknown_env_var_trees_keep_spring_s_plain_mapping() {
    let err = err_text(from_vars(&[(
        "SPRING_CLOUD_STREAM_KAFKA_BINDER_BROKERS",
        "b:9092",
    )]));
    assert!(
        err.contains("unknown key `spring.cloud.stream.kafka.binder.brokers`")
            && err.contains("registered binder types: testmq"),
        "{err}"
    );
}

#[test]
fn zero_attempts_concurrency_and_partition_count_are_rejected() {
    for (key, want) in [
        (
            "spring.cloud.stream.bindings.in.consumer.max-attempts",
            "Max attempts",
        ),
        (
            "spring.cloud.stream.default.consumer.concurrency",
            "Concurrency",
        ),
        (
            "spring.cloud.stream.bindings.in.producer.partition-count",
            "Partition count",
        ),
    ] {
        let env = Environment::builder()
            .map(
                "m",
                [
                    (key, "0"),
                    ("spring.cloud.stream.bindings.in.destination", "d"),
                ],
            )
            .build()
            .expect("env");
        let err = StreamConfig::builder(env).build().expect_err(key);
        let ConfigError::Invalid {
            key: named,
            message,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(named, key);
        assert!(message.contains(want), "{message}");
    }
}

#[test]
fn global_poller_is_the_default_of_every_producer_poller() {
    let env = Environment::builder()
        .map(
            "m",
            [
                ("spring.cloud.stream.poller.fixed-delay", "250"),
                ("spring.cloud.stream.poller.max-messages-per-poll", "4"),
                (
                    "spring.cloud.stream.bindings.b-out-0.producer.poller.fixed-delay",
                    "5s",
                ),
            ],
        )
        .build()
        .expect("env");
    let c = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let a = c.binding("a-out-0").expect("a").producer.poller;
    assert_eq!(
        (a.fixed_delay, a.max_messages_per_poll),
        (Duration::from_millis(250), 4)
    );
    let b = c.binding("b-out-0").expect("b").producer.poller;
    assert_eq!(
        (b.fixed_delay, b.max_messages_per_poll),
        (Duration::from_secs(5), 4)
    );
}

#[test]
fn producer_partitioned_is_accepted() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring.cloud.stream.bindings.out:\n  destination: d\n  producer:\n    partitioned: true\n    partition-key-expression: headers['k']\n    partition-count: 2\n",
        )
        .build()
        .expect("env");
    let c = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.binding("out").expect("out").producer.is_partitioned());
    assert!(c.notices().is_empty(), "{:?}", c.notices());
}
