//! Spring Boot's `spring.rabbitmq.*` through the binder's declared root: typos, environment
//! variables, legacy keys, wrong types and keys without effect. No broker needed: configuration
//! is validated before anything connects.

use binder_rabbit::stream_config::{ConfigError, Environment, StreamConfig};
use binder_rabbit::stream_core::binder::AnyBinderFactory;
use binder_rabbit::{
    ConfirmType, RabbitBinderFactory, RabbitConnectionProperties, StreamApp, StreamError,
};

fn config(env: Environment) -> Result<StreamConfig, ConfigError> {
    let schema = AnyBinderFactory::new(RabbitBinderFactory::new()).extension_schema();
    StreamConfig::builder(env).extension(schema).build()
}

fn vars(vars: &[(&str, &str)]) -> Environment {
    Environment::builder()
        .env_vars(vars.iter().copied())
        .build()
        .expect("env")
}

fn connection(c: &StreamConfig) -> RabbitConnectionProperties {
    RabbitConnectionProperties::from_environment(c.environment()).expect("bind")
}

#[test]
fn boot_env_var_forms_reach_the_keys_the_binder_reads() {
    for var in [
        "SPRING_RABBITMQ_VIRTUALHOST",
        "SPRING_RABBITMQ_VIRTUAL_HOST",
    ] {
        let c = config(vars(&[(var, "orders")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(connection(&c).virtual_host, "orders", "{var}");
    }
    let c = config(vars(&[
        ("SPRING_RABBITMQ_PUBLISHERCONFIRMTYPE", "correlated"),
        ("SPRING_RABBITMQ_PUBLISHER_RETURNS", "true"),
        ("SPRING_RABBITMQ_SSL_TRUSTSTORE", "/etc/ca.pem"),
        ("SPRING_RABBITMQ_REQUESTED_CHANNEL_MAX", "100"),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let conn = connection(&c);
    assert_eq!(conn.publisher_confirm_type, ConfirmType::Correlated);
    assert!(conn.publisher_returns);
    assert_eq!(conn.ssl.trust_store.as_deref(), Some("/etc/ca.pem"));
    assert_eq!(conn.requested_channel_max, 100);
}

#[test]
fn the_reference_guides_publisher_confirms_gives_confirms() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "spring.rabbitmq.publisher-confirms=true\nspring.rabbitmq.publisher-returns=true",
        )
        .build()
        .expect("env");
    let c = config(env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        connection(&c).publisher_confirm_type,
        ConfirmType::Correlated
    );
    assert!(c.notices().is_empty(), "{:?}", c.notices());
}

#[test]
fn a_misspelt_key_is_an_error_with_a_suggestion() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring:\n  rabbitmq:\n    hots: broker\n    ssl:\n      enabeld: true\n",
        )
        .build()
        .expect("env");
    let err = config(env).expect_err("typos").to_string();
    assert!(
        err.contains(
            "`spring.rabbitmq.hots` (application.yml:3): did you mean `spring.rabbitmq.host`?"
        ),
        "{err}"
    );
    assert!(
        err.contains("did you mean `spring.rabbitmq.ssl.enabled`?"),
        "{err}"
    );
    let err = config(vars(&[("SPRING_RABBITMQ_HOTS", "broker")]))
        .expect_err("env typo")
        .to_string();
    assert!(
        err.contains("did you mean `SPRING_RABBITMQ_HOST` (`spring.rabbitmq.host`)?"),
        "{err}"
    );
}

#[test]
fn keys_without_effect_are_accepted_and_noticed_once_each() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring:\n  rabbitmq:\n    cache:\n      channel:\n        size: 50\n    listener:\n      simple:\n        prefetch: 10\n    template:\n      mandatory: true\n    ssl:\n      algorithm: TLSv1.2\n",
        )
        .build()
        .expect("env");
    let c = config(env).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = c.notices().iter().map(|n| n.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "spring.rabbitmq.cache.channel.size",
            "spring.rabbitmq.listener.simple.prefetch",
            "spring.rabbitmq.ssl.algorithm",
            "spring.rabbitmq.template.mandatory",
        ]
    );
}

#[tokio::test]
async fn a_wrong_port_type_fails_the_build_naming_the_key() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "spring.rabbitmq.port=five-six-seven-two\n\
             spring.cloud.stream.bindings.uppercase-in-0.destination=words",
        )
        .build()
        .expect("env");
    let err = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .function("uppercase", |s: String| async move {
            Ok::<_, binder_rabbit::FunctionError>(s.to_uppercase())
        })
        .build()
        .await
        .err()
        .expect("a startup error");
    let StreamError::Config(config) = &err else {
        panic!("{err}")
    };
    let ConfigError::InvalidValue { key, origin, .. } = config.as_ref() else {
        panic!("{err}")
    };
    assert_eq!(key, "spring.rabbitmq.port");
    assert_eq!(origin, "application.properties:1");
}
