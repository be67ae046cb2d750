//! The guide's older and mislabelled key spellings. No broker needed.

use binder_rocketmq::RocketMqBinderFactory;
use binder_rocketmq::config::RocketMqBinderProperties;
use binder_rocketmq::stream_config::{Environment, StreamConfig};
use binder_rocketmq::stream_core::binder::AnyBinderFactory;

fn config(text: &str) -> Result<StreamConfig, binder_rocketmq::stream_config::ConfigError> {
    let env = Environment::builder()
        .properties_str("application.properties", text)
        .build()
        .expect("env");
    let schema = AnyBinderFactory::new(RocketMqBinderFactory::builder().build()).extension_schema();
    StreamConfig::builder(env).extension(schema).build()
}

#[test]
fn namesrv_addr_is_the_older_name_server() {
    let c = config("spring.cloud.stream.rocketmq.binder.namesrv-addr=10.1.1.1:9876")
        .unwrap_or_else(|e| panic!("{e}"));
    let p: RocketMqBinderProperties = c.environment().extended_binder("rocketmq").expect("bind");
    assert_eq!(p.with_aliases().name_server, "10.1.1.1:9876");
    let c = config(
        "spring.cloud.stream.rocketmq.binder.namesrvAddr=10.1.1.1:9876\n\
         spring.cloud.stream.rocketmq.binder.name-server=10.2.2.2:9876",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p: RocketMqBinderProperties = c.environment().extended_binder("rocketmq").expect("bind");
    assert_eq!(
        p.with_aliases().name_server,
        "10.2.2.2:9876",
        "the newer key wins"
    );
}

#[test]
fn starter_spellings_are_errors_naming_the_real_key() {
    let err = config(
        "spring.cloud.starter.stream.rocketmq.binder.consumer.messageModel=BROADCASTING\n\
         spring.cloud.starter.stream.rocketmq.binder.producer.group=g\n\
         spring.cloud.starter.stream.rocketmq.binder.name-server=h:9876",
    )
    .expect_err("not real keys")
    .to_string();
    assert!(err.contains("3 unknown configuration keys"), "{err}");
    for want in [
        "did you mean `spring.cloud.stream.rocketmq.bindings.<name>.consumer.message-model`?",
        "did you mean `spring.cloud.stream.rocketmq.bindings.<name>.producer.group`?",
        "did you mean `spring.cloud.stream.rocketmq.binder.name-server`?",
        "the binder (Java's too) reads `spring.cloud.stream.rocketmq.*`",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}
