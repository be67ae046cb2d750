use super::err_text;
use crate::{ConfigError, Environment, StreamConfig};

#[test]
fn unknown_key_from_file_names_line_and_suggestion() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring:\n  cloud:\n    stream:\n      bindings:\n        input:\n          destination: x\n          consumer:\n            max-attemps: 3\n            concurency: 2\n",
        )
        .build()
        .expect("env");
    let err = StreamConfig::builder(env).build().err();
    let Some(ConfigError::UnknownKeys(list)) = err else {
        panic!("expected unknown keys, got {err:?}")
    };
    assert_eq!(list.0.len(), 2, "all unknown keys at once");
    let text = ConfigError::UnknownKeys(list).to_string();
    assert!(text.contains("2 unknown configuration keys"), "{text}");
    assert!(
        text.contains("`spring.cloud.stream.bindings.input.consumer.max-attemps` (application.yml:8): did you mean `spring.cloud.stream.bindings.input.consumer.max-attempts`?"),
        "{text}"
    );
    assert!(
        text.contains("did you mean `spring.cloud.stream.bindings.input.consumer.concurrency`?"),
        "{text}"
    );
}

#[test]
fn unknown_key_from_env_var_names_the_variable() {
    let env = Environment::builder()
        .env_vars([("SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATON", "x")])
        .build()
        .expect("env");
    let err = err_text(StreamConfig::builder(env).build());
    assert!(
        err.contains("environment variable SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATON"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATION` (`spring.cloud.stream.bindings.input.destination`)?"),
        "{err}"
    );
}

#[test]
fn unregistered_binder_prefix_lists_registered_types() {
    let env = Environment::builder()
        .args(["--spring.cloud.stream.kafka.binder.brokers=x"])
        .build()
        .expect("env");
    let err = err_text(StreamConfig::builder(env).build());
    assert!(err.contains("`spring.cloud.stream.kafka.binder.brokers` (command-line argument --spring.cloud.stream.kafka.binder.brokers)"), "{err}");
    assert!(err.contains("none is registered"), "{err}");
}

#[test]
fn unknown_keys_in_extension_and_binder_environment() {
    use super::layering::*;
    let env = Environment::builder()
        .map(
            "m",
            [
                ("spring.cloud.stream.testmq.bindings.in.consumer.prefech", "1"),
                ("spring.cloud.stream.binders.b.environment.spring.cloud.stream.bindings.x.destnation", "d"),
                ("spring.cloud.stream.binders.b.environment.spring.rabbitmq.host", "ok"),
                ("spring.cloud.function.definitoin", "f"),
                ("spring.cloud.stream.other.binder.x", "1"),
                ("spring.datasource.url", "unchecked"),
            ],
        )
        .build()
        .expect("env");
    let err = err_text(
        StreamConfig::builder(env)
            .extension(crate::ExtensionSchema::new::<
                TestBinderProps,
                TestConsumerProps,
                TestProducerProps,
            >("testmq"))
            .build(),
    );
    assert!(err.contains("4 unknown configuration keys"), "{err}");
    assert!(
        err.contains("did you mean `spring.cloud.stream.testmq.bindings.in.consumer.prefetch`?"),
        "{err}"
    );
    assert!(err.contains("did you mean `spring.cloud.stream.binders.b.environment.spring.cloud.stream.bindings.x.destination`?"), "{err}");
    assert!(
        err.contains("did you mean `spring.cloud.function.definition`?"),
        "{err}"
    );
    assert!(err.contains("registered binder types: testmq"), "{err}");
}
