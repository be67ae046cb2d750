//! Spring Cloud Stream's own properties (`spring.cloud.stream.*`, `spring.cloud.function.*`) and
//! [`StreamConfig`], the validated view of them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::environment::{Environment, EnvironmentBuilder};
use crate::error::{ConfigError, Notice, UnknownKeys};
use crate::extension::ExtensionSchema;
use crate::field::{Properties, PropertyField};
use crate::key::canonical_segment;
use crate::schema::Node;

/// Prefix of Spring Cloud Stream's keys.
pub const STREAM_PREFIX: &str = "spring.cloud.stream";

crate::property_enum! {
    /// How headers travel with a message.
    pub enum HeaderMode {
        /// No headers are sent or parsed.
        None = "none",
        /// The middleware's native headers.
        Headers = "headers",
        /// Headers embedded in the payload (legacy).
        EmbeddedHeaders = "embedded-headers",
    }
}

/// Who settles a consumed message (`acknowledge-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// The runtime settles when the function returns (after retry and recovery).
    #[default]
    Auto,
    /// The function settles the message through its [`Acknowledgment`] handle.
    Manual,
    /// The broker considers the message settled on delivery (auto-ack).
    None,
}

impl std::str::FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "AUTO" => Ok(AckMode::Auto),
            "MANUAL" => Ok(AckMode::Manual),
            "NONE" => Ok(AckMode::None),
            other => Err(format!(
                "unknown acknowledge mode `{other}`; expected AUTO, MANUAL or NONE"
            )),
        }
    }
}

impl std::fmt::Display for AckMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AckMode {
    /// Spring's spelling: `AUTO`, `MANUAL`, `NONE`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "AUTO",
            AckMode::Manual => "MANUAL",
            AckMode::None => "NONE",
        }
    }
}

/// `acknowledge-mode`: a common consumer property, also read from binders' extensions.
impl crate::ScalarField for AckMode {
    fn type_name() -> String {
        "AUTO, MANUAL or NONE".to_owned()
    }

    fn parse_value(text: &str) -> Result<Self, String> {
        text.parse()
    }

    fn render(&self) -> String {
        self.as_str().to_owned()
    }
}
crate::__scalar_property_field!(AckMode);

crate::properties! {
    /// Global properties, `spring.cloud.stream.*`.
    pub struct StreamProperties {
        /// Index of this instance, 0 to instance-count - 1.
        pub instance_index: u32 = 0,
        /// Number of deployed instances of the application.
        pub instance_count: u32 = 1,
        /// Partition indexes this instance consumes (overrides instance-index when set).
        pub instance_index_list: Vec<u32> = Vec::new(),
        /// Destinations that may be bound dynamically (empty = any).
        pub dynamic_destinations: Vec<String> = Vec::new(),
        /// Number of dynamic destinations kept bound.
        pub dynamic_destination_cache_size: u32 = 10,
        /// Delay before retrying a failed binding; a plain number means seconds, as in Spring.
        pub binding_retry_interval: Duration = Duration::from_secs(30),
        /// Binder used by bindings that name none, when several binders are configured.
        pub default_binder: Option<String> = None,
        /// Names of pollable input bindings (`;`-separated).
        pub pollable_source: Option<String> = None,
        /// Extra input binding names to create (`;`-separated).
        pub input_bindings: Option<String> = None,
        /// Extra output binding names to create (`;`-separated).
        pub output_bindings: Option<String> = None,
        /// Output binding names for suppliers triggered from outside (`;`-separated).
        pub source: Option<String> = None,
    }

    /// Poller of a polled producer (a supplier), `...producer.poller.*`.
    pub struct PollerProperties {
        /// Delay between polls.
        pub fixed_delay: Duration = Duration::from_millis(1000),
        /// Messages emitted per poll.
        pub max_messages_per_poll: i64 = 1,
        /// Delay before the first poll.
        pub initial_delay: Duration = Duration::ZERO,
        /// Cron expression; replaces fixed-delay when set.
        pub cron: Option<String> = None,
    }

    /// Common consumer properties, `spring.cloud.stream.bindings.<name>.consumer.*`.
    pub struct ConsumerProperties {
        /// Start the consumer automatically.
        pub auto_startup: bool = true,
        /// Concurrent consumers.
        pub concurrency: u32 = 1,
        /// Whether the consumer receives partitioned data.
        pub partitioned: bool = false,
        /// Instance count for this binding; none = the global `instance-count`.
        pub instance_count: Option<u32> = None,
        /// Instance index for this binding; none = the global `instance-index`.
        pub instance_index: Option<u32> = None,
        /// Partition indexes consumed by this binding; empty = the global list.
        pub instance_index_list: Vec<u32> = Vec::new(),
        /// Attempts to process a message, the first included (1 = no retry).
        pub max_attempts: u32 = 3,
        /// First back-off between attempts.
        pub back_off_initial_interval: Duration = Duration::from_millis(1000),
        /// Largest back-off.
        pub back_off_max_interval: Duration = Duration::from_millis(10000),
        /// Back-off multiplier.
        pub back_off_multiplier: f64 = 2.0,
        /// Whether errors not listed in retryable-exceptions are retried.
        pub default_retryable: bool = true,
        /// Error kinds mapped to whether they are retried.
        pub retryable_exceptions: BTreeMap<String, bool> = BTreeMap::new(),
        /// Header mode.
        pub header_mode: Option<HeaderMode> = None,
        /// Hand the raw payload to the function, skipping message conversion.
        pub use_native_decoding: bool = false,
        /// Consume several comma-separated destinations with one binding.
        pub multiplex: bool = false,
        /// Deliver batches of messages to the function.
        pub batch_mode: bool = false,
        /// Name of a custom retry policy to use.
        pub retry_template_name: Option<String> = None,
        /// Who settles a message: AUTO (the runtime, by the function's result), MANUAL (the
        /// function, through the message's acknowledgment) or NONE (the broker, on delivery).
        /// Unset: the binder's own key (`spring.cloud.stream.<binder>.bindings.<name>.consumer.acknowledge-mode`), else AUTO.
        pub acknowledge_mode: Option<AckMode> = None,
    }

    /// Common producer properties, `spring.cloud.stream.bindings.<name>.producer.*`.
    pub struct ProducerProperties {
        /// Start the producer automatically; false: sends fail until the binding is started (`AppHandle::start_binding`).
        pub auto_startup: bool = true,
        /// Read-only in Spring (a producer partitions when partition-key-expression or partition-key-extractor-name is set); accepted, a warning when set without either.
        pub partitioned: bool = false,
        /// Expression computing the partition key of a message.
        pub partition_key_expression: Option<String> = None,
        /// Name of a registered partition key extractor.
        pub partition_key_extractor_name: Option<String> = None,
        /// Name of a registered partition selector.
        pub partition_selector_name: Option<String> = None,
        /// Expression selecting the partition from the key.
        pub partition_selector_expression: Option<String> = None,
        /// Number of partitions.
        pub partition_count: u32 = 1,
        /// Consumer groups whose queues are created when the producer binds.
        pub required_groups: Vec<String> = Vec::new(),
        /// Header mode.
        pub header_mode: Option<HeaderMode> = None,
        /// Send the function's output as is, skipping message conversion.
        pub use_native_encoding: bool = false,
        /// Send send failures to the binding's error channel.
        pub error_channel_enabled: bool = false,
        /// Let the binder update the partition count at runtime.
        pub dynamic_partition_updates_enabled: bool = false,
        /// Poller of a supplier bound to this output; unset keys fall back to `spring.cloud.stream.poller.*`.
        pub poller: PollerProperties = PollerProperties::default(),
    }

    /// Properties of one binding, `spring.cloud.stream.bindings.<name>.*` over
    /// `spring.cloud.stream.default.*`.
    pub struct BindingProperties {
        /// Destination (exchange, topic); none = the binding name.
        pub destination: Option<String> = None,
        /// Consumer group; none = an anonymous subscription.
        pub group: Option<String> = None,
        /// Content type of the messages.
        pub content_type: String = "application/json".to_owned(),
        /// Name of the binder to use.
        pub binder: Option<String> = None,
        /// Name of a function handling this binding's errors.
        pub error_handler_definition: Option<String> = None,
        /// Consumer properties.
        pub consumer: ConsumerProperties = ConsumerProperties::default(),
        /// Producer properties.
        pub producer: ProducerProperties = ProducerProperties::default(),
    }
}

impl ProducerProperties {
    /// Whether the producer partitions: a key expression or key extractor is set.
    pub fn is_partitioned(&self) -> bool {
        self.partition_key_expression.is_some() || self.partition_key_extractor_name.is_some()
    }
}

impl BindingProperties {
    /// The destination, or `binding_name` when none is set (Spring's default).
    pub fn destination_or<'a>(&'a self, binding_name: &'a str) -> &'a str {
        self.destination.as_deref().unwrap_or(binding_name)
    }
}

/// One entry of `spring.cloud.stream.binders.<name>`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BinderProperties {
    /// The binder type (`binders.<name>.type`), the name a binder crate registers under.
    pub binder_type: String,
    /// Properties given to this binder only (`binders.<name>.environment.*`, keys relative).
    pub environment: Environment,
    /// Whether the binder also sees the application's properties.
    pub inherit_environment: bool,
    /// Whether the binder may be chosen when a binding names none.
    pub default_candidate: bool,
}

/// The tree of known keys, with the registered binder extensions.
impl EnvironmentBuilder {
    /// Reads and merges every source (environment variables mapped through the schema of
    /// Spring Cloud Stream's keys).
    pub fn build(self) -> Result<Environment, ConfigError> {
        self.build_with_schema(&schema_root(&[]))
    }
}

pub(crate) fn schema_root(extensions: &[ExtensionSchema]) -> Node {
    let binding = || Node::props(BindingProperties::descriptors);
    let binder = Node::group(vec![
        ("type", Node::Leaf),
        ("inherit-environment", Node::Leaf),
        ("default-candidate", Node::Leaf),
        ("environment", Node::Root),
    ]);
    let function = Node::group(vec![
        ("definition", Node::Leaf),
        ("bindings", Node::Map),
        ("routing-expression", Node::Leaf),
        ("ineligible-definitions", Node::List),
    ]);
    let mut extras: Vec<(String, Node)> = vec![
        ("bindings".to_owned(), Node::free(binding())),
        ("default".to_owned(), binding()),
        ("binders".to_owned(), Node::free(binder)),
        ("function".to_owned(), function),
        ("integration".to_owned(), Node::Map),
        (
            "metrics".to_owned(),
            Node::NoEffect(METRICS_NO_EFFECT.to_owned()),
        ),
        (
            "poller".to_owned(),
            Node::props(PollerProperties::descriptors),
        ),
    ];
    for ext in extensions {
        let (b, c, p) = ext.descriptor_fns();
        let sides = || {
            Node::group(vec![
                ("consumer", Node::props(c)),
                ("producer", Node::props(p)),
            ])
        };
        extras.push((
            ext.binder_type().to_owned(),
            Node::group(vec![
                ("binder", Node::props(b)),
                ("default", sides()),
                ("bindings", Node::free(sides())),
            ]),
        ));
    }
    let cloud_function = Node::group(vec![
        ("definition", Node::Leaf),
        ("routing-expression", Node::Leaf),
        ("ineligible-definitions", Node::List),
        ("expected-content-type", Node::Leaf),
        ("scan", Node::Map),
        ("configuration", Node::Map),
        ("web", Node::Map),
        ("rsocket", Node::Map),
        ("grpc", Node::Map),
        ("cloudevent", Node::Map),
    ]);
    let stream = Node::Props(StreamProperties::descriptors, extras);
    let mut root = Node::open(vec![
        (
            "spring",
            Node::open(vec![(
                "cloud",
                Node::open(vec![("stream", stream), ("function", cloud_function)]),
            )]),
        ),
        (crate::MANAGEMENT_PREFIX, crate::management::schema()),
    ]);
    for ext in extensions {
        for r in ext.roots() {
            let path: Vec<String> = r.prefix().split('.').map(str::to_owned).collect();
            root.graft(&path, r.node());
        }
    }
    root
}

/// The keys of Spring Cloud Stream and Spring Cloud Function accepted without effect, and why
/// (for the generated reference).
pub(crate) fn no_effect_keys() -> [(&'static str, &'static str); 1] {
    [("spring.cloud.stream.metrics.*", METRICS_NO_EFFECT)]
}

/// Why a routing expression without the routing function has no effect.
const ROUTING_UNUSED: &str = "read only by the `functionRouter` function, as in Spring; set `spring.cloud.function.definition=functionRouter` to route each message to the function it names";

/// Why `spring.cloud.stream.metrics.*` has no effect.
const METRICS_NO_EFFECT: &str = "Spring's metrics emitter binding is not implemented; meters are exposed through the admin endpoint (`management.*`, /actuator/prometheus)";

/// Spring Cloud Stream's configuration, validated: global properties, binders, bindings.
///
/// ```
/// use stream_config::{Environment, StreamConfig};
/// let env = Environment::builder()
///     .yaml_str("application.yml", "
/// spring:
///   cloud:
///     function:
///       definition: uppercase
///     stream:
///       default:
///         group: app
///         consumer:
///           max-attempts: 5
///       bindings:
///         uppercase-in-0:
///           destination: words
///           consumer:
///             concurrency: 2
/// ")
///     .build()?;
/// let config = StreamConfig::builder(env).build()?;
/// assert_eq!(config.function_definition(), Some("uppercase"));
/// let b = config.binding("uppercase-in-0")?;
/// assert_eq!(b.destination.as_deref(), Some("words"));
/// assert_eq!(b.group.as_deref(), Some("app"));
/// assert_eq!((b.consumer.max_attempts, b.consumer.concurrency), (5, 2));
/// assert_eq!(b.content_type, "application/json");
/// assert_eq!(config.binding("other")?.destination_or("other"), "other");
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamConfig {
    env: Environment,
    stream: StreamProperties,
    management: crate::ManagementProperties,
    poller: PollerProperties,
    notices: Vec<Notice>,
    function_definition: Option<String>,
    binders: BTreeMap<String, BinderProperties>,
    extensions: Vec<ExtensionSchema>,
}

/// Builds a [`StreamConfig`]: register binder extensions, then [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct StreamConfigBuilder {
    env: Environment,
    extensions: Vec<ExtensionSchema>,
}

impl StreamConfigBuilder {
    /// Registers a binder type's extended properties (its keys become valid).
    pub fn extension(mut self, schema: ExtensionSchema) -> Self {
        self.extensions
            .retain(|e| e.binder_type() != schema.binder_type());
        self.extensions.push(schema);
        self
    }

    /// Validates every key under `spring.cloud.stream.*` and `spring.cloud.function.*` (all unknown
    /// keys are reported at once, with their origin and the closest valid key) and binds the
    /// global, binder and binding properties once so wrong types are reported now.
    pub fn build(self) -> Result<StreamConfig, ConfigError> {
        let root = schema_root(&self.extensions);
        let env = self.env.with_schema(&root)?;
        let types: Vec<&str> = self
            .extensions
            .iter()
            .map(ExtensionSchema::binder_type)
            .collect();
        let findings = crate::validate::check_keys(&env, &root, &types);
        if !findings.unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(UnknownKeys(findings.unknown)));
        }
        let mut notices = findings.notices;

        let mut stream = StreamProperties::default();
        env.bind(STREAM_PREFIX, &mut stream)?;
        let retry_key = format!("{STREAM_PREFIX}.binding-retry-interval");
        if let Some(secs) = env
            .get(&retry_key)
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            stream.binding_retry_interval = Duration::from_secs(secs);
        }

        let function_definition = env
            .get("spring.cloud.function.definition")
            .or_else(|| env.get("spring.cloud.stream.function.definition"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned);

        for key in [
            "spring.cloud.function.routing-expression",
            "spring.cloud.stream.function.routing-expression",
        ] {
            let routed = function_definition
                .as_deref()
                .is_some_and(|d| d.split(';').any(|f| f.trim() == "functionRouter"));
            if let Some(p) = env.property(key)
                && !routed
            {
                notices.push(Notice {
                    key: key.to_owned(),
                    origin: p.origin().to_string(),
                    reason: ROUTING_UNUSED.to_owned(),
                });
            }
        }

        let mut binders = BTreeMap::new();
        for name in env.child_names(&format!("{STREAM_PREFIX}.binders")) {
            let prefix = format!("{STREAM_PREFIX}.binders.{name}");
            let mut binder = BinderProperties {
                binder_type: String::new(),
                environment: env.subset(&format!("{prefix}.environment")),
                inherit_environment: true,
                default_candidate: true,
            };
            if let Some(p) = env.property(&format!("{prefix}.type")) {
                binder.binder_type = canonical_segment(p.value());
            }
            binder
                .inherit_environment
                .bind_field(&env, &format!("{prefix}.inherit-environment"))?;
            binder
                .default_candidate
                .bind_field(&env, &format!("{prefix}.default-candidate"))?;
            binders.insert(name, binder);
        }

        let management = crate::ManagementProperties::from_environment(&env)?;
        let mut poller = PollerProperties::default();
        env.bind(&format!("{STREAM_PREFIX}.poller"), &mut poller)?;
        let mut config = StreamConfig {
            env,
            stream,
            management,
            poller,
            function_definition,
            binders,
            extensions: self.extensions,
            notices: Vec::new(),
        };
        for ext in &config.extensions {
            for r in ext.roots() {
                r.check(&config.env)?;
                for (name, b) in &config.binders {
                    if b.binder_type == ext.binder_type() {
                        r.check(&config.binder_environment(name))?;
                    }
                }
            }
        }
        let mut names = config.binding_names();
        for ext in &config.extensions {
            names.extend(
                config
                    .env
                    .child_names(&format!("{STREAM_PREFIX}.{}.bindings", ext.binder_type())),
            );
        }
        names.sort();
        names.dedup();
        for name in &names {
            let b = config.binding(name)?;
            config.check_binding(name, &b, &mut notices)?;
        }
        for ext in &config.extensions {
            ext.check(&config.env, &names)?;
        }
        notices.sort_by(|a, b| a.key.cmp(&b.key));
        config.notices = notices;
        Ok(config)
    }
}

impl StreamConfig {
    /// Starts from a merged environment.
    pub fn builder(env: Environment) -> StreamConfigBuilder {
        StreamConfigBuilder {
            env,
            extensions: Vec::new(),
        }
    }

    /// The `management.*` properties (admin endpoint, tracing).
    pub fn management(&self) -> &crate::ManagementProperties {
        &self.management
    }

    /// The environment (environment variables re-mapped with the registered extensions' keys).
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// Global properties.
    pub fn stream(&self) -> &StreamProperties {
        &self.stream
    }

    /// `spring.cloud.function.definition` (or the older `spring.cloud.stream.function.definition`).
    pub fn function_definition(&self) -> Option<&str> {
        self.function_definition.as_deref()
    }

    /// The properties of binding `name` (case-insensitive): built-in defaults, then
    /// `spring.cloud.stream.default.*`, then `spring.cloud.stream.bindings.<name>.*`. The consumer's
    /// instance count, index and index list fall back to the global ones.
    pub fn binding(&self, name: &str) -> Result<BindingProperties, ConfigError> {
        let mut b = BindingProperties::default();
        b.producer.poller = self.poller.clone();
        self.env.bind(&format!("{STREAM_PREFIX}.default"), &mut b)?;
        self.env.bind(
            &format!("{STREAM_PREFIX}.bindings.{}", canonical_segment(name)),
            &mut b,
        )?;
        let c = &mut b.consumer;
        c.instance_count.get_or_insert(self.stream.instance_count);
        c.instance_index.get_or_insert(self.stream.instance_index);
        if c.instance_index_list.is_empty() {
            c.instance_index_list = self.stream.instance_index_list.clone();
        }
        Ok(b)
    }

    /// Names (canonical) of the bindings configured under `spring.cloud.stream.bindings`.
    pub fn binding_names(&self) -> Vec<String> {
        self.env.child_names(&format!("{STREAM_PREFIX}.bindings"))
    }

    /// Binders configured under `spring.cloud.stream.binders`, by name.
    pub fn binders(&self) -> &BTreeMap<String, BinderProperties> {
        &self.binders
    }

    /// The environment a binder sees: its `environment.*` over the application's properties
    /// (unless `inherit-environment` is false). Unknown binder names get the application's.
    pub fn binder_environment(&self, binder_name: &str) -> Environment {
        match self.binders.get(&canonical_segment(binder_name)) {
            Some(b) if b.inherit_environment => self.env.overlay(&b.environment),
            Some(b) => b.environment.clone(),
            None => self.env.clone(),
        }
    }

    /// The registered binder extensions.
    pub fn extensions(&self) -> &[ExtensionSchema] {
        &self.extensions
    }

    /// Keys that are accepted, as Spring accepts them, but have no effect here, each once with
    /// its origin and why, sorted by key. The runtime logs each at startup (WARN).
    ///
    /// ```
    /// use stream_config::{Environment, StreamConfig};
    /// let env = Environment::builder()
    ///     .map("t", [("spring.cloud.stream.metrics.key", "app"),
    ///                ("spring.cloud.stream.bindings.out.producer.partitioned", "true")])
    ///     .build()?;
    /// let config = StreamConfig::builder(env).build()?;
    /// let keys: Vec<&str> = config.notices().iter().map(|n| n.key.as_str()).collect();
    /// assert_eq!(keys, ["spring.cloud.stream.bindings.out.producer.partitioned", "spring.cloud.stream.metrics.key"]);
    /// # Ok::<(), stream_config::ConfigError>(())
    /// ```
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// The global poller, `spring.cloud.stream.poller.*`: the defaults of every supplier's
    /// `producer.poller.*`.
    pub fn poller(&self) -> &PollerProperties {
        &self.poller
    }

    /// Where the binding's `field` (`consumer.max-attempts`) was set: the binding's own key, else
    /// `spring.cloud.stream.default.*`.
    fn origin_of(&self, binding: &str, field: &str) -> (String, String) {
        let own = format!(
            "{STREAM_PREFIX}.bindings.{}.{field}",
            canonical_segment(binding)
        );
        let default = format!("{STREAM_PREFIX}.default.{field}");
        for key in [own.clone(), default] {
            if let Some(p) = self.env.property(&key) {
                return (key, p.origin().to_string());
            }
        }
        (own, "built-in default".to_owned())
    }

    /// Spring's `@Min` checks of the common properties, and notices for `producer.partitioned`.
    fn check_binding(
        &self,
        name: &str,
        b: &BindingProperties,
        notices: &mut Vec<Notice>,
    ) -> Result<(), ConfigError> {
        let at_least_one = [
            (
                "consumer.max-attempts",
                b.consumer.max_attempts,
                "Max attempts should be greater than zero (1 = no retry)",
            ),
            (
                "consumer.concurrency",
                b.consumer.concurrency,
                "Concurrency should be greater than zero",
            ),
            (
                "producer.partition-count",
                b.producer.partition_count,
                "Partition count should be greater than zero",
            ),
        ];
        for (field, value, message) in at_least_one {
            if value == 0 {
                let (key, origin) = self.origin_of(name, field);
                return Err(ConfigError::Invalid {
                    key,
                    origin,
                    message: format!("{message}; got 0"),
                });
            }
        }
        if b.producer.partitioned && !b.producer.is_partitioned() {
            let (key, origin) = self.origin_of(name, "producer.partitioned");
            notices.push(Notice {
                key,
                origin,
                reason: "a producer partitions when `partition-key-expression` or `partition-key-extractor-name` is set (as in Spring, where `partitioned` is derived); neither is, so this producer does not partition".to_owned(),
            });
        }
        Ok(())
    }
}
