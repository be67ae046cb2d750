//! Typed properties of the RabbitMQ binder: connection (`spring.rabbitmq.*`), binder
//! (`spring.cloud.stream.rabbit.binder.*`), consumer and producer
//! (`spring.cloud.stream.rabbit.bindings.<name>.{consumer,producer}.*`).
//!
//! These structs are the single source of defaults; `docs/rabbit-binder.md` lists them.

use std::collections::BTreeMap;
use std::time::Duration;

use stream_config::{ConfigError, Environment, NoEffect, PropertyField, PropertyKind, Secret};

use stream_core::AckMode;

stream_config::property_enum! {
    /// An exchange type.
    pub enum ExchangeType {
        /// Topic exchange (the default).
        Topic = "topic",
        /// Direct exchange.
        Direct = "direct",
        /// Fanout exchange (not allowed for partitioned destinations).
        Fanout = "fanout",
        /// Headers exchange (bindings use `queue-binding-arguments`).
        Headers = "headers",
    }


    /// AMQP delivery mode.
    pub enum DeliveryMode {
        /// Written to disk by durable queues (delivery mode 2).
        Persistent = "PERSISTENT",
        /// Kept in memory (delivery mode 1).
        NonPersistent = "NON_PERSISTENT",
    }

    /// Listener container type (Spring AMQP).
    pub enum ContainerType {
        /// One consumer task per concurrency slot (Spring's `SimpleMessageListenerContainer`).
        Simple = "simple",
        /// Spring's `DirectMessageListenerContainer` (treated like `simple`).
        Direct = "direct",
        /// RabbitMQ stream queues (not supported yet).
        Stream = "stream",
    }

    /// Publisher confirm type (`spring.rabbitmq.publisher-confirm-type`).
    pub enum ConfirmType {
        /// No publisher confirms.
        None = "none",
        /// Each send waits for its broker confirm.
        Simple = "simple",
        /// Each send waits for its broker confirm (correlation is per send).
        Correlated = "correlated",
    }
}

impl DeliveryMode {
    /// The AMQP `delivery_mode` octet (1 or 2).
    pub fn amqp_value(self) -> u8 {
        match self {
            DeliveryMode::Persistent => 2,
            DeliveryMode::NonPersistent => 1,
        }
    }
}

/// Prefix of Spring Boot's connection keys.
pub const CONNECTION_PREFIX: &str = "spring.rabbitmq";

/// A string property for which "set to nothing" differs from "not set":
/// `dlq-dead-letter-exchange=` (empty) means the default exchange, absent means no
/// dead-lettering. Read it with [`NullableString::get`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NullableString(Option<String>);

impl NullableString {
    /// Not set.
    pub const fn unset() -> Self {
        NullableString(None)
    }

    /// Set to a value (possibly empty).
    pub fn set(value: impl Into<String>) -> Self {
        NullableString(Some(value.into()))
    }

    /// The value, `Some("")` when set to empty.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl PropertyField for NullableString {
    fn type_name() -> String {
        "a string (empty allowed)".to_owned()
    }
    fn kind() -> PropertyKind {
        PropertyKind::Value
    }
    fn render_default(&self) -> String {
        self.0.clone().unwrap_or_default()
    }
    fn bind_field(&mut self, env: &Environment, key: &str) -> Result<(), ConfigError> {
        if let Some(p) = env.property(key) {
            self.0 = Some(p.value().trim().to_owned());
        }
        Ok(())
    }
}

stream_config::properties! {
    /// TLS settings (`spring.rabbitmq.ssl.*`, Spring Boot's keys).
    pub struct RabbitSslProperties {
        /// Whether to connect with TLS (`amqps`); the port defaults to 5671 then. Also on when `addresses` use `amqps://`.
        pub enabled: bool = false,
        /// Trusted CA certificates (added to the system's roots): a PEM file, or a PKCS12 trust store as keytool writes it; JKS is not readable here (convert it with `keytool -importkeystore -deststoretype PKCS12`). A `file:` prefix is accepted.
        pub trust_store: Option<String> = None,
        /// Type of the trust store: JKS (Boot's default; a PEM or PKCS12 file given with it is recognised by its content), PKCS12 or PEM.
        pub trust_store_type: String = "JKS".to_owned(),
        /// Password of a PKCS12 trust store.
        pub trust_store_password: Option<Secret> = None,
        /// Client certificate and key presented to the broker: a PKCS12 file, or a PEM file holding the certificate chain and the PKCS8 private key (`key-store-type` PEM).
        pub key_store: Option<String> = None,
        /// Type of the key store: PKCS12 (Boot's default) or PEM.
        pub key_store_type: String = "PKCS12".to_owned(),
        /// Password of a PKCS12 key store.
        pub key_store_password: Option<Secret> = None,
        /// Whether the server's certificate is validated; false is refused here (an unverified TLS connection is not offered).
        pub validate_server_certificate: bool = true,
        /// Whether the server's host name is checked against its certificate; false is refused here, as above.
        pub verify_hostname: bool = true,
        /// No effect: the TLS protocol version is negotiated by rustls (TLS 1.2 or 1.3).
        pub algorithm: NoEffect = NoEffect,
        /// No effect: Java key manager algorithm (SunX509).
        pub key_store_algorithm: NoEffect = NoEffect,
        /// No effect: Java trust manager algorithm (SunX509).
        pub trust_store_algorithm: NoEffect = NoEffect,
        /// No effect: SSL bundles (`spring.ssl.bundle.*`) are not read; use trust-store / key-store.
        pub bundle: NoEffect = NoEffect,
    }

    /// Connection settings read from `spring.rabbitmq.*` (Spring Boot's keys and defaults).
    pub struct RabbitConnectionProperties {
        /// Broker host.
        pub host: String = "localhost".to_owned(),
        /// Broker port (5672, or 5671 with TLS).
        pub port: Option<u16> = None,
        /// Login user.
        pub username: String = "guest".to_owned(),
        /// Login password.
        pub password: Secret = Secret::new("guest"),
        /// Virtual host.
        pub virtual_host: String = "/".to_owned(),
        /// Comma-separated `host[:port]` list (or `amqp://user:pass@host:port/vhost` URIs) tried in order; wins over host/port.
        pub addresses: Vec<String> = Vec::new(),
        /// TLS settings.
        pub ssl: RabbitSslProperties = RabbitSslProperties::default(),
        /// Connection (TCP + handshake) timeout; 60 s when not set.
        pub connection_timeout: Option<Duration> = None,
        /// Requested heartbeat; a bare number is seconds (Spring Boot); 60 s when not set.
        pub requested_heartbeat: Option<String> = None,
        /// Largest number of channels per connection asked of the broker (0: no limit).
        pub requested_channel_max: u16 = 2047,
        /// Publisher confirms: none (fire-and-forget), simple or correlated (each send waits for its own confirm; many in flight).
        pub publisher_confirm_type: ConfirmType = ConfirmType::None,
        /// Legacy Spring Boot key (before 2.2): true means publisher-confirm-type correlated, as Boot mapped it.
        pub publisher_confirms: Option<bool> = None,
        /// Whether publisher returns are enabled: producers with `error-channel-enabled` then publish mandatory and report returned messages.
        pub publisher_returns: bool = false,
        /// No effect: addresses are tried in the order given.
        pub address_shuffle_mode: NoEffect = NoEffect,
        /// No effect: channel RPCs are bounded by the connection timeout and the broker.
        pub channel_rpc_timeout: NoEffect = NoEffect,
        /// No effect: inbound bodies are bounded by the broker's max message size (and `max-decompressed-size`).
        pub max_inbound_message_body_size: NoEffect = NoEffect,
        /// No effect: the binder keeps one consumer and one publisher connection, channels are not cached.
        pub cache: NoEffect = NoEffect,
        /// No effect: Spring AMQP listener containers; consumers are set with `spring.cloud.stream.rabbit.bindings.<name>.consumer.*`.
        pub listener: NoEffect = NoEffect,
        /// No effect: `RabbitTemplate` settings; producers are set with `spring.cloud.stream.rabbit.bindings.<name>.producer.*`.
        pub template: NoEffect = NoEffect,
        /// No effect: `RabbitAdmin` auto-declaration; the binder always declares its topology.
        pub dynamic: NoEffect = NoEffect,
        /// No effect: RabbitMQ stream queues (the stream plugin) are not supported yet.
        pub stream: NoEffect = NoEffect,
    }

    /// Binder-wide settings (`spring.cloud.stream.rabbit.binder.*`).
    pub struct RabbitBinderProperties {
        /// Management plugin URLs (http://host:port), one per node: with `nodes`, consumers connect to the node hosting their queue.
        pub admin_addresses: Vec<String> = Vec::new(),
        /// Cluster node names, in `spring.rabbitmq.addresses` order, for queue affinity (used when more than one).
        pub nodes: Vec<String> = Vec::new(),
        /// Gzip level for `compress=true` producers (0-9; 1 = fastest).
        pub compression_level: u32 = 1,
        /// Largest body a consumer inflates from a gzip/zip/deflate message (bytes); a larger one is a failed message (bomb guard).
        pub max_decompressed_size: u64 = 100 * 1024 * 1024,
        /// Connection name prefix; connections are named `<prefix>#<n>`.
        pub connection_name_prefix: Option<String> = None,
    }

    /// Quorum queue settings.
    pub struct QuorumProperties {
        /// Declare a quorum queue (`x-queue-type=quorum`).
        pub enabled: bool = false,
        /// Redeliveries before a message is dropped or dead-lettered (`x-delivery-limit`).
        pub delivery_limit: Option<u32> = None,
        /// Initial number of quorum members (`x-quorum-initial-group-size`).
        pub initial_group_size: Option<u32> = None,
    }

    /// RabbitMQ consumer properties (`spring.cloud.stream.rabbit.bindings.<name>.consumer.*`).
    pub struct RabbitConsumerProperties {
        /// Who settles messages: AUTO, MANUAL or NONE.
        pub acknowledge_mode: AckMode = AckMode::Auto,
        /// Prefix of anonymous queue names (`<destination>.<prefix><random>`).
        pub anonymous_group_prefix: String = "anonymous.".to_owned(),
        /// Declare a DLQ and bind it to the DLX.
        pub auto_bind_dlq: bool = false,
        /// Routing key binding the queue to the exchange; `#` (or `<destination>-<index>` when partitioned) when not set.
        pub binding_routing_key: Option<String> = None,
        /// Delimiter splitting `binding-routing-key` into several bindings.
        pub binding_routing_key_delimiter: Option<String> = None,
        /// Declare the queue and bind it to the exchange.
        pub bind_queue: bool = true,
        /// Consumer tag prefix; tags are `<prefix>#<n>` (broker-generated when not set).
        pub consumer_tag_prefix: Option<String> = None,
        /// Consumer priority (`x-priority` consumer argument).
        pub consumer_priority: Option<i32> = None,
        /// Listener container type (simple, direct; stream is not supported yet).
        pub container_type: ContainerType = ContainerType::Simple,
        /// DLQ name; `<prefix><destination>.<group>.dlq` when not set.
        pub dead_letter_queue_name: Option<String> = None,
        /// DLX assigned to the queue; `<prefix>DLX` when not set.
        pub dead_letter_exchange: Option<String> = None,
        /// DLX type.
        pub dead_letter_exchange_type: ExchangeType = ExchangeType::Direct,
        /// Dead-letter routing key; the queue name when not set.
        pub dead_letter_routing_key: Option<String> = None,
        /// Declare the DLX.
        pub declare_dlx: bool = true,
        /// Declare the destination exchange.
        pub declare_exchange: bool = true,
        /// Declare the exchange as `x-delayed-message` (delayed message plugin).
        pub delayed_exchange: bool = false,
        /// Arguments of the DLQ's binding to the DLX.
        pub dlq_binding_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// DLX of the DLQ; set to empty for the default exchange (TTL retry loops).
        pub dlq_dead_letter_exchange: NullableString = NullableString::unset(),
        /// Dead-letter routing key of the DLQ.
        pub dlq_dead_letter_routing_key: Option<String> = None,
        /// DLQ `x-expires` (ms).
        pub dlq_expires: Option<u32> = None,
        /// DLQ `x-queue-mode=lazy`.
        pub dlq_lazy: bool = false,
        /// DLQ `x-max-length`.
        pub dlq_max_length: Option<u32> = None,
        /// DLQ `x-max-length-bytes`.
        pub dlq_max_length_bytes: Option<u64> = None,
        /// DLQ `x-max-priority`.
        pub dlq_max_priority: Option<u8> = None,
        /// DLQ `x-overflow` (drop-head, reject-publish, reject-publish-dlx).
        pub dlq_overflow_behavior: Option<String> = None,
        /// DLQ quorum settings.
        pub dlq_quorum: QuorumProperties = QuorumProperties::default(),
        /// DLQ `x-single-active-consumer`.
        pub dlq_single_active_consumer: bool = false,
        /// DLQ `x-message-ttl` (ms).
        pub dlq_ttl: Option<u32> = None,
        /// Durable group queue (else auto-delete and no DLQ).
        pub durable_subscription: bool = true,
        /// Exchange arguments (extra `x-*` arguments of the destination exchange).
        pub exchange_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// Auto-delete the exchange.
        pub exchange_auto_delete: bool = false,
        /// Durable exchange.
        pub exchange_durable: bool = true,
        /// Exchange type.
        pub exchange_type: ExchangeType = ExchangeType::Topic,
        /// Exclusive consumer (hot standby retries every recovery-interval).
        pub exclusive: bool = false,
        /// Queue `x-expires` (ms).
        pub expires: Option<u32> = None,
        /// Interval between attempts to consume from a missing queue.
        pub failed_declaration_retry_interval: Duration = Duration::from_millis(5000),
        /// Bytes reserved for other headers when adding `x-exception-stacktrace`.
        pub frame_max_headroom: u32 = 20000,
        /// Patterns of inbound headers to map (`*` wildcard, `!` negates; first match wins).
        pub header_patterns: Vec<String> = vec!["*".to_owned()],
        /// Queue `x-queue-mode=lazy`.
        pub lazy: bool = false,
        /// Maximum consumers: above `concurrency`, consumers are added under load and retired when idle (timing: `ConsumerScaling`).
        pub max_concurrency: u32 = 1,
        /// Queue `x-max-length`.
        pub max_length: Option<u32> = None,
        /// Queue `x-max-length-bytes`.
        pub max_length_bytes: Option<u64> = None,
        /// Queue `x-max-priority`.
        pub max_priority: Option<u8> = None,
        /// A missing queue stops the consumer after queue-declaration-retries attempts.
        pub missing_queues_fatal: bool = false,
        /// Queue `x-overflow` (drop-head, reject-publish, reject-publish-dlx).
        pub overflow_behavior: Option<String> = None,
        /// Prefetch count (basic.qos) per consumer.
        pub prefetch: u16 = 1,
        /// Prefix of exchange and queue names.
        pub prefix: String = String::new(),
        /// Arguments of the queue's binding (headers exchanges: the headers to match; `x-match` defaults to all).
        pub queue_binding_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// Attempts to consume from a missing queue when missing-queues-fatal is true.
        pub queue_declaration_retries: u32 = 3,
        /// Queue name is the group alone (not `<destination>.<group>`).
        pub queue_name_group_only: bool = false,
        /// Quorum queue settings.
        pub quorum: QuorumProperties = QuorumProperties::default(),
        /// Interval between connection recovery attempts.
        pub recovery_interval: Duration = Duration::from_millis(5000),
        /// Requeue rejected deliveries when retries are exhausted and republish is off.
        pub requeue_rejected: bool = false,
        /// Delivery mode of messages republished to the DLQ.
        pub republish_delivery_mode: DeliveryMode = DeliveryMode::Persistent,
        /// Republish failed messages to the DLX with exception headers (when a DLX exists).
        pub republish_to_dlq: bool = true,
        /// Queue `x-single-active-consumer`.
        pub single_active_consumer: bool = false,
        /// Transacted channel: the ack, the DLQ republish and the function's publishes (same binder, same task) commit together.
        pub transacted: bool = false,
        /// Queue `x-message-ttl` (ms).
        pub ttl: Option<u32> = None,
        /// Deliveries between acks (deprecated; acks are per message).
        pub tx_size: u32 = 1,
        /// Deliveries collected into one batch-mode call when `enable-batching` is set (prefetch is raised to it).
        pub batch_size: u32 = 1,
        /// With batch-mode, collect consecutive deliveries (up to `batch-size`) into one call.
        pub enable_batching: bool = false,
        /// With `enable-batching`, how long to wait for a batch to fill before handing over a partial one.
        pub receive_timeout: Duration = Duration::from_millis(1000),
    }

    /// RabbitMQ producer properties (`spring.cloud.stream.rabbit.bindings.<name>.producer.*`).
    pub struct RabbitProducerProperties {
        /// Declare DLQs for the required groups and bind them to the DLX.
        pub auto_bind_dlq: bool = false,
        /// Batch messages in Spring's `lengthHeader4` format (one batch per routing key).
        pub batching_enabled: bool = false,
        /// Messages per batch.
        pub batch_size: u32 = 100,
        /// Maximum batch body in bytes (4 bytes of length per message included).
        pub batch_buffer_limit: u32 = 10000,
        /// Idle time since the last send after which partial batches are sent.
        pub batch_timeout: Duration = Duration::from_millis(5000),
        /// Routing key binding required-group queues; `#` (or `<destination>-<n>` when partitioned) when not set.
        pub binding_routing_key: Option<String> = None,
        /// Delimiter splitting `binding-routing-key` into several bindings.
        pub binding_routing_key_delimiter: Option<String> = None,
        /// Declare and bind the required groups' queues.
        pub bind_queue: bool = true,
        /// Gzip message bodies (after batching) at the binder's `compression-level`.
        pub compress: bool = false,
        /// Name of a confirm-ack callback registered on `RabbitBinderFactory`/`RabbitBinder`; it receives each confirmed message (needs confirms).
        pub confirm_ack_channel: Option<String> = None,
        /// DLQ name for required groups; `<prefix><destination>.<group>.dlq` when not set.
        pub dead_letter_queue_name: Option<String> = None,
        /// DLX assigned to required-group queues; `<prefix>DLX` when not set.
        pub dead_letter_exchange: Option<String> = None,
        /// DLX type.
        pub dead_letter_exchange_type: ExchangeType = ExchangeType::Direct,
        /// Dead-letter routing key; the queue name when not set.
        pub dead_letter_routing_key: Option<String> = None,
        /// Declare the DLX.
        pub declare_dlx: bool = true,
        /// Declare the destination exchange.
        pub declare_exchange: bool = true,
        /// Expression evaluated per message giving the `x-delay` header (ms, a 32-bit integer; null or negative: no header).
        pub delay_expression: Option<String> = None,
        /// Declare the exchange as `x-delayed-message` (delayed message plugin).
        pub delayed_exchange: bool = false,
        /// Delivery mode of sent messages.
        pub delivery_mode: DeliveryMode = DeliveryMode::Persistent,
        /// Arguments of the DLQ's binding to the DLX.
        pub dlq_binding_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// DLX of the DLQ; set to empty for the default exchange.
        pub dlq_dead_letter_exchange: NullableString = NullableString::unset(),
        /// Dead-letter routing key of the DLQ.
        pub dlq_dead_letter_routing_key: Option<String> = None,
        /// DLQ `x-expires` (ms).
        pub dlq_expires: Option<u32> = None,
        /// DLQ `x-queue-mode=lazy`.
        pub dlq_lazy: bool = false,
        /// DLQ `x-max-length`.
        pub dlq_max_length: Option<u32> = None,
        /// DLQ `x-max-length-bytes`.
        pub dlq_max_length_bytes: Option<u64> = None,
        /// DLQ `x-max-priority`.
        pub dlq_max_priority: Option<u8> = None,
        /// DLQ `x-overflow`.
        pub dlq_overflow_behavior: Option<String> = None,
        /// DLQ quorum settings.
        pub dlq_quorum: QuorumProperties = QuorumProperties::default(),
        /// DLQ `x-single-active-consumer`.
        pub dlq_single_active_consumer: bool = false,
        /// DLQ `x-message-ttl` (ms).
        pub dlq_ttl: Option<u32> = None,
        /// Exchange arguments.
        pub exchange_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// Auto-delete the exchange.
        pub exchange_auto_delete: bool = false,
        /// Durable exchange.
        pub exchange_durable: bool = true,
        /// Exchange type.
        pub exchange_type: ExchangeType = ExchangeType::Topic,
        /// Queue `x-expires` (ms) of required-group queues.
        pub expires: Option<u32> = None,
        /// Patterns of outbound headers to map (`*` wildcard, `!` negates; first match wins).
        pub header_patterns: Vec<String> = vec!["*".to_owned()],
        /// Queue `x-queue-mode=lazy` of required-group queues.
        pub lazy: bool = false,
        /// Queue `x-max-length` of required-group queues.
        pub max_length: Option<u32> = None,
        /// Queue `x-max-length-bytes` of required-group queues.
        pub max_length_bytes: Option<u64> = None,
        /// Queue `x-max-priority` of required-group queues.
        pub max_priority: Option<u8> = None,
        /// Queue `x-overflow` of required-group queues.
        pub overflow_behavior: Option<String> = None,
        /// Prefix of the exchange (and required-group queue) names.
        pub prefix: String = String::new(),
        /// Arguments of required-group queue bindings (headers exchanges).
        pub queue_binding_arguments: BTreeMap<String, String> = BTreeMap::new(),
        /// Required-group queue name is the group alone.
        pub queue_name_group_only: bool = false,
        /// Quorum settings of required-group queues.
        pub quorum: QuorumProperties = QuorumProperties::default(),
        /// Fixed routing key (instead of the destination).
        pub routing_key: Option<String> = None,
        /// Expression evaluated per message for the routing key.
        pub routing_key_expression: Option<String> = None,
        /// Queue `x-single-active-consumer` of required-group queues.
        pub single_active_consumer: bool = false,
        /// Transacted channel: tx.commit after each send or batch (publisher confirms are not used then).
        pub transacted: bool = false,
        /// Queue `x-message-ttl` (ms) of required-group queues.
        pub ttl: Option<u32> = None,
        /// Put a confirm correlation header on messages (accepted; correlation is per send without a header).
        pub use_confirm_header: bool = false,
    }
}

impl RabbitConnectionProperties {
    /// Reads `spring.rabbitmq.*` from an environment.
    /// `publisher-confirms=true` (Spring Boot's legacy key) means `publisher-confirm-type`
    /// correlated unless that is set too, as Boot mapped it.
    pub fn from_environment(env: &Environment) -> Result<Self, ConfigError> {
        let mut props = RabbitConnectionProperties::default();
        env.bind(CONNECTION_PREFIX, &mut props)?;
        if props.publisher_confirms == Some(true)
            && props.publisher_confirm_type == ConfirmType::None
        {
            props.publisher_confirm_type = ConfirmType::Correlated;
        }
        Ok(props)
    }

    /// The requested heartbeat, parsed (a bare number is seconds).
    pub fn heartbeat(&self) -> Result<Option<Duration>, String> {
        let Some(text) = self.requested_heartbeat.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Some(Duration::from_secs(secs)));
        }
        <Duration as stream_config::ScalarField>::parse_value(text).map(Some)
    }
}

/// Queue and DLQ settings shared by consumer and producer (required-groups) provisioning.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueueSettings {
    pub(crate) prefix: String,
    pub(crate) exchange_type: ExchangeType,
    pub(crate) exchange_durable: bool,
    pub(crate) exchange_auto_delete: bool,
    pub(crate) exchange_arguments: BTreeMap<String, String>,
    pub(crate) declare_exchange: bool,
    pub(crate) delayed_exchange: bool,
    pub(crate) bind_queue: bool,
    pub(crate) binding_routing_key: Option<String>,
    pub(crate) binding_routing_key_delimiter: Option<String>,
    pub(crate) queue_binding_arguments: BTreeMap<String, String>,
    pub(crate) queue_name_group_only: bool,
    pub(crate) main: QueueArgs,
    pub(crate) auto_bind_dlq: bool,
    pub(crate) dead_letter_queue_name: Option<String>,
    pub(crate) dead_letter_exchange: Option<String>,
    pub(crate) dead_letter_exchange_type: ExchangeType,
    pub(crate) dead_letter_routing_key: Option<String>,
    pub(crate) declare_dlx: bool,
    pub(crate) dlq: QueueArgs,
    pub(crate) dlq_binding_arguments: BTreeMap<String, String>,
    pub(crate) dlq_dead_letter_exchange: Option<String>,
    pub(crate) dlq_dead_letter_routing_key: Option<String>,
}

/// The `x-*` arguments of one queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct QueueArgs {
    pub(crate) ttl: Option<u32>,
    pub(crate) expires: Option<u32>,
    pub(crate) max_length: Option<u32>,
    pub(crate) max_length_bytes: Option<u64>,
    pub(crate) max_priority: Option<u8>,
    pub(crate) lazy: bool,
    pub(crate) overflow: Option<String>,
    pub(crate) quorum: QuorumProperties,
    pub(crate) single_active_consumer: bool,
}

macro_rules! queue_settings {
    ($p:expr) => {{
        let p = $p;
        QueueSettings {
            prefix: p.prefix.clone(),
            exchange_type: p.exchange_type,
            exchange_durable: p.exchange_durable,
            exchange_auto_delete: p.exchange_auto_delete,
            exchange_arguments: p.exchange_arguments.clone(),
            declare_exchange: p.declare_exchange,
            delayed_exchange: p.delayed_exchange,
            bind_queue: p.bind_queue,
            binding_routing_key: p.binding_routing_key.clone(),
            binding_routing_key_delimiter: p.binding_routing_key_delimiter.clone(),
            queue_binding_arguments: p.queue_binding_arguments.clone(),
            queue_name_group_only: p.queue_name_group_only,
            main: QueueArgs {
                ttl: p.ttl,
                expires: p.expires,
                max_length: p.max_length,
                max_length_bytes: p.max_length_bytes,
                max_priority: p.max_priority,
                lazy: p.lazy,
                overflow: p.overflow_behavior.clone(),
                quorum: p.quorum.clone(),
                single_active_consumer: p.single_active_consumer,
            },
            auto_bind_dlq: p.auto_bind_dlq,
            dead_letter_queue_name: p.dead_letter_queue_name.clone(),
            dead_letter_exchange: p.dead_letter_exchange.clone(),
            dead_letter_exchange_type: p.dead_letter_exchange_type,
            dead_letter_routing_key: p.dead_letter_routing_key.clone(),
            declare_dlx: p.declare_dlx,
            dlq: QueueArgs {
                ttl: p.dlq_ttl,
                expires: p.dlq_expires,
                max_length: p.dlq_max_length,
                max_length_bytes: p.dlq_max_length_bytes,
                max_priority: p.dlq_max_priority,
                lazy: p.dlq_lazy,
                overflow: p.dlq_overflow_behavior.clone(),
                quorum: p.dlq_quorum.clone(),
                single_active_consumer: p.dlq_single_active_consumer,
            },
            dlq_binding_arguments: p.dlq_binding_arguments.clone(),
            dlq_dead_letter_exchange: p.dlq_dead_letter_exchange.get().map(str::to_owned),
            dlq_dead_letter_routing_key: p.dlq_dead_letter_routing_key.clone(),
        }
    }};
}

impl RabbitConsumerProperties {
    pub(crate) fn queue_settings(&self) -> QueueSettings {
        queue_settings!(self)
    }
}

impl RabbitProducerProperties {
    pub(crate) fn queue_settings(&self) -> QueueSettings {
        queue_settings!(self)
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;

    fn env(text: &str) -> Environment {
        Environment::builder()
            .properties_str("test.properties", text)
            .build()
            .expect("environment")
    }

    #[test]
    fn consumer_defaults_match_spring() {
        let c = RabbitConsumerProperties::default();
        assert_eq!(c.acknowledge_mode, AckMode::Auto);
        assert_eq!(c.prefetch, 1);
        assert_eq!(c.max_concurrency, 1);
        assert!(c.durable_subscription);
        assert!(c.republish_to_dlq);
        assert!(!c.requeue_rejected);
        assert_eq!(c.header_patterns, vec!["*".to_owned()]);
        assert_eq!(c.recovery_interval, Duration::from_millis(5000));
        assert_eq!(c.frame_max_headroom, 20000);
        assert_eq!(c.anonymous_group_prefix, "anonymous.");
        assert_eq!(c.exchange_type, ExchangeType::Topic);
        assert!(c.exchange_durable && !c.exchange_auto_delete);
        assert_eq!(c.dead_letter_exchange_type, ExchangeType::Direct);
        let p = RabbitProducerProperties::default();
        assert_eq!(p.delivery_mode, DeliveryMode::Persistent);
        assert_eq!(p.batch_size, 100);
        assert_eq!(p.batch_buffer_limit, 10000);
        assert_eq!(p.batch_timeout, Duration::from_millis(5000));
    }

    #[test]
    fn empty_dlq_dead_letter_exchange_means_default_exchange() {
        let e = env(
            "c.dlq-dead-letter-exchange=\nc.dlqTtl=5000\nc.quorum.enabled=true\nc.acknowledge-mode=manual",
        );
        let mut c = RabbitConsumerProperties::default();
        e.bind("c", &mut c).expect("bind");
        assert_eq!(c.dlq_dead_letter_exchange.get(), Some(""));
        assert_eq!(c.dlq_ttl, Some(5000));
        assert!(c.quorum.enabled);
        assert_eq!(c.acknowledge_mode, AckMode::Manual);
        let s = c.queue_settings();
        assert_eq!(s.dlq_dead_letter_exchange.as_deref(), Some(""));
        let mut unset = RabbitConsumerProperties::default();
        env("c.prefetch=3").bind("c", &mut unset).expect("bind");
        assert_eq!(unset.dlq_dead_letter_exchange.get(), None);
        assert_eq!(unset.prefetch, 3);
    }

    #[test]
    fn connection_defaults_and_heartbeat() {
        let c = RabbitConnectionProperties::default();
        assert_eq!(c.host, "localhost");
        assert_eq!(c.username, "guest");
        assert_eq!(c.password.expose(), "guest");
        assert_eq!(c.virtual_host, "/");
        assert!(
            !format!("{c:?}").contains("\"guest\"")
                || !format!("{:?}", c.password).contains("guest")
        );
        let e = env(
            "spring.rabbitmq.requested-heartbeat=30\nspring.rabbitmq.port=5673\nspring.rabbitmq.publisher-confirm-type=correlated",
        );
        let c = RabbitConnectionProperties::from_environment(&e).expect("bind");
        assert_eq!(c.heartbeat(), Ok(Some(Duration::from_secs(30))));
        assert_eq!(c.port, Some(5673));
        assert_eq!(c.publisher_confirm_type, ConfirmType::Correlated);
    }

    #[test]
    fn legacy_publisher_confirms_means_correlated() {
        let c = RabbitConnectionProperties::from_environment(&env(
            "spring.rabbitmq.publisher-confirms=true",
        ))
        .expect("bind");
        assert_eq!(c.publisher_confirm_type, ConfirmType::Correlated);
        let c = RabbitConnectionProperties::from_environment(&env(
            "spring.rabbitmq.publisher-confirms=true\nspring.rabbitmq.publisher-confirm-type=simple",
        ))
        .expect("bind");
        assert_eq!(c.publisher_confirm_type, ConfirmType::Simple);
        let c = RabbitConnectionProperties::from_environment(&env(
            "spring.rabbitmq.publisher-confirms=false",
        ))
        .expect("bind");
        assert_eq!(c.publisher_confirm_type, ConfirmType::None);
    }
}
