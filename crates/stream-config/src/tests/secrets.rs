use crate::{ConfigError, Environment, Secret, StreamConfig};

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "spring.rabbitmq.password=hunter2\nspring.rabbitmq.addresses=amqp://guest:letmein@host:5672/vh\nx.secretKey=sk-123\nx.accessKey=ak-456\nx.token=tok-789\n",
        )
        .build()
        .expect("env");
    let dbg = format!("{env:?}");
    for s in ["hunter2", "letmein", "sk-123", "ak-456", "tok-789"] {
        assert!(!dbg.contains(s), "{s} leaked in {dbg}");
    }
    assert!(dbg.contains("amqp://guest:******@host:5672/vh"), "{dbg}");
    let p = env.property("spring.rabbitmq.password").expect("p");
    assert!(p.is_sensitive());
    assert_eq!(p.value(), "hunter2");
    assert!(!format!("{p:?}").contains("hunter2"));
    assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
}

#[test]
fn secrets_are_redacted_in_type_errors() {
    use super::layering::*;
    crate::properties! {
        /// Typed secret-ish settings.
        pub(crate) struct Creds {
            /// A numeric token (odd, but tests redaction of a non-Secret field with a secret name).
            pub(crate) token: u32 = 0,
        }
    }
    let env = Environment::builder()
        .map("m", [("a.token", "s3cr3t-value")])
        .build()
        .expect("env");
    let err = env.bind("a", &mut Creds::default()).err();
    let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(
        matches!(err, Some(ConfigError::InvalidValue { .. })),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("******"), "{text}");

    // Unknown-key errors never print values; a URI with credentials in a wrong-type error is masked.
    let env = Environment::builder()
        .map(
            "m",
            [(
                "spring.cloud.stream.bindings.in.consumer.concurrency",
                "amqp://u:pw123@h",
            )],
        )
        .build()
        .expect("env");
    let text = super::err_text(StreamConfig::builder(env).build());
    assert!(!text.contains("pw123"), "{text}");
    let b: TestBinderProps = Environment::builder()
        .map("m", [("spring.cloud.stream.testmq.binder.password", "pw")])
        .build()
        .expect("env")
        .extended_binder("testmq")
        .expect("b");
    assert_eq!(b.password.expose(), "pw");
    assert!(!format!("{b:?}").contains("\"pw\""));
}
