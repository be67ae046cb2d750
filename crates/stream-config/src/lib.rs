#![doc = r#"
Spring Cloud Stream configuration for Rust: the same `application.yml` / `application.properties`
keys, with the same meaning.

* **Sources** ([`EnvironmentBuilder`]), lowest precedence first: built-in defaults;
  `application.{yaml,yml,properties}` in the working directory, then in `config/`; profile files
  `application-<profile>.*` for each of `spring.profiles.active`; explicit sources; environment
  variables (Spring Boot's mapping, schema-aware); command-line `--key=value`. figment merges them;
  every value keeps its origin (file and line, variable name, argument).
* **Relaxed keys** ([`canonical_key`]): `max-attempts`, `maxAttempts`, `max_attempts`,
  `MAX_ATTEMPTS` are one key; binding names are case-insensitive.
* **Placeholders**: `${key}`, `${key:default}`, `${ENV_VAR}`, nested, with cycle detection.
* **Typed properties** ([`properties!`], [`property_enum!`]) with Spring's defaults:
  [`StreamProperties`], [`BindingProperties`], [`ConsumerProperties`], [`ProducerProperties`];
  binder crates add theirs with [`ExtensionSchema`].
* **Validation** ([`StreamConfigBuilder::build`]): unknown keys with origin and "did you mean",
  wrong types with key, value, expected type and origin. Secrets never show ([`Secret`]).

```
use stream_config::{Environment, StreamConfig};

let env = Environment::builder()
    .properties_str("application.properties", "\
spring.cloud.stream.bindings.input.destination=orders
spring.cloud.stream.bindings.input.group=billing
spring.cloud.stream.bindings.input.consumer.maxAttempts=5")
    .env_vars([("SPRING_CLOUD_STREAM_BINDINGS_INPUT_CONSUMER_BACKOFF_INITIAL_INTERVAL", "2s")])
    .build()?;
let config = StreamConfig::builder(env).build()?;
let input = config.binding("Input")?;
assert_eq!(input.destination_or("input"), "orders");
assert_eq!(input.consumer.max_attempts, 5);
assert_eq!(input.consumer.back_off_initial_interval, std::time::Duration::from_secs(2));
# Ok::<(), stream_config::ConfigError>(())
```
"#]

mod descriptor;
mod duration;
mod environment;
mod error;
mod extension;
mod field;
mod key;
mod macros;
mod management;
mod origin;
mod placeholder;
mod property;
mod reference;
mod schema;
mod secret;
mod source;
mod stream;
mod validate;

#[cfg(test)]
mod tests;

pub use descriptor::{PropertyDescriptor, PropertyKind};
pub use duration::{format_duration, parse_duration};
pub use environment::{Environment, EnvironmentBuilder};
pub use error::{ConfigError, Notice, UnknownKey, UnknownKeys};
pub use extension::{ExtensionSchema, RootSchema};
pub use field::{NoEffect, Properties, PropertyField, ScalarField, parse_property};
#[doc(hidden)]
pub use key::field_key;
pub use key::{canonical_key, canonical_segment};
#[doc(hidden)]
pub use macros::{__field_path, __first_doc_line};
pub use management::{
    BindersHealthProperties, ENDPOINT_IDS, EndpointProperties, EndpointsProperties,
    ExposureProperties, HealthContributorsProperties, HealthEndpointProperties, MANAGEMENT_PREFIX,
    ManagementProperties, ManagementServerProperties, SamplingProperties, ShowDetails,
    TracingProperties, WebEndpointsProperties,
};
pub use origin::Origin;
pub use property::Property;
pub use reference::{reference_markdown, stream_reference_markdown};
pub use secret::{REDACTED, Secret, is_sensitive_key, mask_uri_credentials, redact};
pub use source::env::MAPPED_PREFIXES;
pub use stream::{
    AckMode, BinderProperties, BindingProperties, ConsumerProperties, HeaderMode, PollerProperties,
    ProducerProperties, STREAM_PREFIX, StreamConfig, StreamConfigBuilder, StreamProperties,
};
pub use validate::env_var_name;
