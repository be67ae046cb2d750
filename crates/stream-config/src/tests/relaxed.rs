use crate::{Environment, StreamConfig};

fn max_attempts_from(env: Environment) -> u32 {
    let config = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    config
        .binding("input")
        .unwrap_or_else(|e| panic!("{e}"))
        .consumer
        .max_attempts
}

#[test]
fn four_forms_of_one_key() {
    for key in [
        "spring.cloud.stream.bindings.input.consumer.max-attempts",
        "spring.cloud.stream.bindings.input.consumer.maxAttempts",
        "spring.cloud.stream.bindings.input.consumer.max_attempts",
        "SPRING.CLOUD.STREAM.BINDINGS.INPUT.CONSUMER.MAX-ATTEMPTS",
    ] {
        let env = Environment::builder()
            .properties_str("a.properties", format!("{key}=7"))
            .build()
            .expect("env");
        assert_eq!(max_attempts_from(env), 7, "{key}");
    }
}

#[test]
fn env_var_forms_with_and_without_word_breaks() {
    for var in [
        "SPRING_CLOUD_STREAM_BINDINGS_INPUT_CONSUMER_MAXATTEMPTS",
        "SPRING_CLOUD_STREAM_BINDINGS_INPUT_CONSUMER_MAX_ATTEMPTS",
    ] {
        let env = Environment::builder()
            .env_vars([(var, "9")])
            .build()
            .expect("env");
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            vec!["spring.cloud.stream.bindings.input.consumer.max-attempts"],
            "{var}"
        );
        assert_eq!(max_attempts_from(env), 9, "{var}");
    }
}

#[test]
fn env_var_binding_names_absorb_words_and_list_indexes() {
    let env = Environment::builder()
        .env_vars([
            (
                "SPRING_CLOUD_STREAM_BINDINGS_UPPERCASE_IN_0_DESTINATION",
                "words",
            ),
            (
                "SPRING_CLOUD_STREAM_BINDINGS_OUT_PRODUCER_REQUIRED_GROUPS_0_",
                "g0",
            ),
            (
                "SPRING_CLOUD_STREAM_BINDINGS_OUT_PRODUCER_REQUIREDGROUPS_1",
                "g1",
            ),
            ("SPRING_CLOUD_STREAM_INSTANCE_INDEX_LIST_0", "3"),
            ("SPRING_CLOUD_STREAM_DEFAULT_BINDER", "local"),
            (
                "SPRING_CLOUD_STREAM_BINDERS_LOCAL_ENVIRONMENT_SPRING_MAIN_BANNER_MODE",
                "off",
            ),
            ("SPRING_RABBITMQ_HOST", "h"),
            ("HOME_DIR", "/home/x"),
        ])
        .build()
        .expect("env");
    let keys: Vec<&str> = env.keys().collect();
    assert_eq!(
        keys,
        vec![
            "spring.cloud.stream.binders.local.environment.spring.main.banner.mode",
            "spring.cloud.stream.bindings.out.producer.required-groups[0]",
            "spring.cloud.stream.bindings.out.producer.required-groups[1]",
            "spring.cloud.stream.bindings.uppercase-in-0.destination",
            "spring.cloud.stream.default-binder",
            "spring.cloud.stream.instance-index-list[0]",
            "spring.rabbitmq.host",
        ]
    );
    assert_eq!(env.env_var("HOME_DIR"), Some("/home/x"));
    let config = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config
            .binding("uppercase-in-0")
            .expect("b")
            .destination
            .as_deref(),
        Some("words")
    );
    assert_eq!(
        config.binding("out").expect("b").producer.required_groups,
        vec!["g0", "g1"]
    );
    assert_eq!(config.stream().instance_index_list, vec![3]);
    assert_eq!(config.stream().default_binder.as_deref(), Some("local"));
}

#[test]
fn binding_names_are_case_insensitive() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring.cloud.stream.bindings.MyInput.group: g\n",
        )
        .build()
        .expect("env");
    let config = StreamConfig::builder(env).build().expect("config");
    assert_eq!(config.binding_names(), vec!["my-input"]);
    for name in ["MyInput", "myInput", "my-input", "MY_INPUT"] {
        assert_eq!(
            config.binding(name).expect("b").group.as_deref(),
            Some("g"),
            "{name}"
        );
    }
}

#[test]
fn map_keys_keep_their_case() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring.cloud.stream.bindings.input.consumer.retryable-exceptions:\n  std::io::Error: false\n  \"[java.lang.IllegalStateException]\": true\n",
        )
        .build()
        .expect("env");
    let config = StreamConfig::builder(env)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let m = config
        .binding("input")
        .expect("b")
        .consumer
        .retryable_exceptions;
    assert_eq!(m.get("std::io::Error"), Some(&false));
    assert_eq!(m.get("java.lang.IllegalStateException"), Some(&true));
}
