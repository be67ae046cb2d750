use super::TempDir;
use crate::{Environment, Origin};

const K: &str = "spring.cloud.stream.bindings.input.destination";

fn env_in(dir: &TempDir) -> crate::EnvironmentBuilder {
    Environment::builder().working_dir(&dir.0).standard_files()
}

#[test]
fn files_beat_defaults_and_config_dir_beats_cwd() {
    let dir = TempDir::new();
    let b = || env_in(&dir).defaults([(K, "from-default")]);
    assert_eq!(b().build().expect("env").get(K), Some("from-default"));

    dir.write(
        "application.yml",
        "spring.cloud.stream.bindings.input.destination: from-cwd-yml\n",
    );
    assert_eq!(b().build().expect("env").get(K), Some("from-cwd-yml"));

    dir.write(
        "application.properties",
        "spring.cloud.stream.bindings.input.destination=from-cwd-properties\n",
    );
    assert_eq!(
        b().build().expect("env").get(K),
        Some("from-cwd-properties"),
        ".properties beats .yml"
    );

    dir.write("config/application.yaml", "spring:\n  cloud:\n    stream:\n      bindings:\n        input:\n          destination: from-config\n");
    let env = b().build().expect("env");
    assert_eq!(env.get(K), Some("from-config"));
    assert_eq!(
        env.property(K).map(|p| p.origin().clone()),
        Some(Origin::File {
            name: "config/application.yaml".into(),
            line: 6
        })
    );
}

#[test]
fn profile_files_beat_plain_files_and_later_profiles_win() {
    let dir = TempDir::new();
    dir.write("config/application.yml", "spring.profiles.active: dev,prod\nspring.cloud.stream.bindings.input.destination: plain\na: plain\nb: plain\n");
    dir.write(
        "application-dev.properties",
        "spring.cloud.stream.bindings.input.destination=dev\na=dev\n",
    );
    dir.write(
        "application-prod.yml",
        "b: prod\nspring.cloud.stream.bindings.input.destination: prod\n",
    );
    let env = env_in(&dir).build().expect("env");
    assert_eq!(env.get(K), Some("prod"));
    assert_eq!(env.get("a"), Some("dev"));
    assert_eq!(env.get("b"), Some("prod"));

    // Profiles chosen by an environment variable.
    let env = env_in(&dir)
        .env_vars([("SPRING_PROFILES_ACTIVE", "dev")])
        .build()
        .expect("env");
    assert_eq!(env.get(K), Some("dev"));
    assert_eq!(env.get("b"), Some("plain"));
}

#[test]
fn env_beats_files_and_args_beat_env() {
    let dir = TempDir::new();
    dir.write(
        "application.properties",
        "spring.cloud.stream.bindings.input.destination=file\n",
    );
    let env = env_in(&dir)
        .env_vars([("SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATION", "env")])
        .build()
        .expect("env");
    assert_eq!(env.get(K), Some("env"));
    assert_eq!(
        env.property(K).map(|p| p.origin().to_string()).as_deref(),
        Some("environment variable SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATION")
    );
    let env = env_in(&dir)
        .env_vars([("SPRING_CLOUD_STREAM_BINDINGS_INPUT_DESTINATION", "env")])
        .args([
            "--spring.cloud.stream.bindings.input.destination=arg",
            "ignored",
            "--also-ignored",
        ])
        .build()
        .expect("env");
    assert_eq!(env.get(K), Some("arg"));
    assert_eq!(env.len(), 1);
}

#[test]
fn explicit_sources_and_missing_file() {
    let dir = TempDir::new();
    dir.write("extra.yml", "x: 1\n");
    let env = Environment::builder()
        .file(dir.0.join("extra.yml"))
        .map("m", [("x", "2")])
        .build()
        .expect("env");
    assert_eq!(env.get("x"), Some("2"));
    let err = super::err_text(
        Environment::builder()
            .file(dir.0.join("missing.yml"))
            .build(),
    );
    assert!(err.contains("missing.yml"), "{err}");
}

#[test]
fn yaml_lists_replace_lower_lists_as_a_whole() {
    let env = Environment::builder()
        .yaml_str(
            "application.yml",
            "spring.cloud.stream.bindings.out.producer.required-groups: [a, b, c]\n",
        )
        .env_vars([(
            "SPRING_CLOUD_STREAM_BINDINGS_OUT_PRODUCER_REQUIRED_GROUPS_0",
            "z",
        )])
        .build()
        .expect("env");
    let config = crate::StreamConfig::builder(env).build().expect("config");
    assert_eq!(
        config
            .binding("out")
            .expect("binding")
            .producer
            .required_groups,
        vec!["z"]
    );

    let env = Environment::builder()
        .yaml_str("application.yml", "spring:\n  cloud:\n    stream:\n      bindings:\n        out:\n          producer:\n            required-groups:\n              - a\n              - b\n")
        .build()
        .expect("env");
    let config = crate::StreamConfig::builder(env).build().expect("config");
    assert_eq!(
        config
            .binding("out")
            .expect("binding")
            .producer
            .required_groups,
        vec!["a", "b"]
    );
}
