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
        .expect_err("a startup error");
    let StreamError::Config(config) = &err else {
        panic!("{err}")
    };
    let ConfigError::InvalidValue { key, origin, .. } = config.as_ref() else {
        panic!("{err}")
    };
    assert_eq!(key, "spring.rabbitmq.port");
    assert_eq!(origin, "application.properties:1");
}

/// The reference guide's examples, as printed (rabbit-binder-reference, "Putting it All
/// Together", "Partitioned Destinations", and the batching properties of its producer list).
const GUIDE_DLQ: &str = "\
spring.cloud.stream.bindings.input.destination=myDestination
spring.cloud.stream.bindings.input.group=consumerGroup
#disable binder retries
spring.cloud.stream.bindings.input.consumer.max-attempts=1
#dlx/dlq setup
spring.cloud.stream.rabbit.bindings.input.consumer.auto-bind-dlq=true
spring.cloud.stream.rabbit.bindings.input.consumer.dlq-ttl=5000
spring.cloud.stream.rabbit.bindings.input.consumer.dlq-dead-letter-exchange=
";

const GUIDE_PARTITIONED_PRODUCER: &str = "
    spring:
      cloud:
        stream:
          bindings:
            output:
              destination: partitioned.destination
              producer:
                partitioned: true
                partition-key-expression: headers['partitionKey']
                partition-count: 2
                required-groups:
                - myGroup
";

const GUIDE_PARTITIONED_CONSUMER: &str = "
    spring:
      cloud:
        stream:
          bindings:
            input:
              destination: partitioned.destination
              group: myGroup
              consumer:
                partitioned: true
                instance-index: 0
";

const GUIDE_BATCHING: &str = "\
spring.cloud.stream.bindings.output.destination=batched
spring.cloud.stream.rabbit.bindings.output.producer.batchingEnabled=true
spring.cloud.stream.rabbit.bindings.output.producer.batchSize=100
spring.cloud.stream.rabbit.bindings.output.producer.batchBufferLimit=10000
spring.cloud.stream.rabbit.bindings.output.producer.batchTimeout=5000
spring.cloud.stream.bindings.input.destination=batched
spring.cloud.stream.bindings.input.group=g
spring.cloud.stream.bindings.input.consumer.batch-mode=true
spring.cloud.stream.rabbit.bindings.input.consumer.enableBatching=true
spring.cloud.stream.rabbit.bindings.input.consumer.batchSize=10
spring.rabbitmq.publisher-confirms=true
spring.rabbitmq.publisher-returns=true
";

#[test]
fn the_reference_guides_examples_load_unchanged() {
    for (name, text) in [
        ("dlq.properties", GUIDE_DLQ),
        ("partitioned-producer.yml", GUIDE_PARTITIONED_PRODUCER),
        ("partitioned-consumer.yml", GUIDE_PARTITIONED_CONSUMER),
        ("batching.properties", GUIDE_BATCHING),
    ] {
        let builder = Environment::builder();
        let builder = if name.ends_with(".yml") {
            builder.yaml_str(name, text)
        } else {
            builder.properties_str(name, text)
        };
        let c = config(builder.build().expect("env")).unwrap_or_else(|e| panic!("{name}: {e}"));
        for binding in c.binding_names() {
            c.binding(&binding)
                .unwrap_or_else(|e| panic!("{name}: {binding}: {e}"));
        }
        assert!(c.notices().is_empty(), "{name}: {:?}", c.notices());
    }
}

/// Every row of the environment-variable table in docs/configuration.md.
#[test]
fn every_documented_env_var_form_maps_to_its_key() {
    let rows = [
        (
            "SPRING_RABBITMQ_VIRTUALHOST",
            "spring.rabbitmq.virtual-host",
        ),
        (
            "SPRING_RABBITMQ_PUBLISHERCONFIRMTYPE",
            "spring.rabbitmq.publisher-confirm-type",
        ),
        (
            "SPRING_RABBITMQ_PUBLISHER_CONFIRM_TYPE",
            "spring.rabbitmq.publisher-confirm-type",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_CONSUMER_MAXATTEMPTS",
            "spring.cloud.stream.bindings.uppercase-in-0.consumer.max-attempts",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_CONSUMER_MAX_ATTEMPTS",
            "spring.cloud.stream.bindings.uppercase-in-0.consumer.max-attempts",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_DESTINATION",
            "spring.cloud.stream.bindings.uppercase-in-0.destination",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDERS_LOCAL_TYPE",
            "spring.cloud.stream.binders.local.type",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDINGS_IN_0_CONSUMER_RETRYABLE_EXCEPTIONS_PARSEINTERROR",
            "spring.cloud.stream.bindings.in-0.consumer.retryable-exceptions.parseinterror",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDINGS_OUT_PRODUCER_REQUIRED_GROUPS_0",
            "spring.cloud.stream.bindings.out.producer.required-groups[0]",
        ),
        (
            "SPRING_CLOUD_STREAM_INSTANCE_INDEX_LIST_1",
            "spring.cloud.stream.instance-index-list[1]",
        ),
        (
            "SPRING_CLOUD_STREAM_BINDERS_LOCAL_ENVIRONMENT_SPRING_RABBITMQ_HOST",
            "spring.cloud.stream.binders.local.environment.spring.rabbitmq.host",
        ),
        (
            "SPRING_CLOUD_STREAM_RABBIT_BINDINGS_IN_0_CONSUMER_AUTO_BIND_DLQ",
            "spring.cloud.stream.rabbit.bindings.in-0.consumer.auto-bind-dlq",
        ),
        ("MANAGEMENT_SERVER_PORT", "management.server.port"),
        (
            "MANAGEMENT_ENDPOINTS_WEB_EXPOSURE_INCLUDE",
            "management.endpoints.web.exposure.include",
        ),
        ("SPRING_PROFILES_ACTIVE", "spring.profiles.active"),
        ("SPRING_APPLICATION_NAME", "spring.application.name"),
    ];
    for (var, key) in rows {
        let value = if var.ends_with("PORT") || var.ends_with("_1") {
            "1"
        } else if var.contains("AUTO_BIND") || var.contains("PARSEINTERROR") {
            "true"
        } else if var.contains("CONFIRM") {
            "correlated"
        } else if var.contains("MAX") {
            "2"
        } else {
            "x"
        };
        let c = config(vars(&[(var, value)])).unwrap_or_else(|e| panic!("{var}: {e}"));
        let keys: Vec<&str> = c.environment().keys().collect();
        assert_eq!(keys, [key], "{var}");
    }
}
