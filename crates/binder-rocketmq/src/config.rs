//! Extended properties (`spring.cloud.stream.rocketmq.*`) with the Spring Cloud Alibaba defaults,
//! and their resolution: a binding's unset common values come from the binder level.

use stream_config::Secret;

/// Type name of this binder (`spring.cloud.stream.binders.<name>.type: rocketmq`).
pub const ROCKETMQ_BINDER_TYPE: &str = "rocketmq";

stream_config::property_enum! {
    /// How a consumer group shares messages.
    pub enum MessageModel {
        /// Members of a group share the messages (each message to one member).
        Clustering = "CLUSTERING",
        /// Every member receives every message; failures are not redelivered.
        Broadcasting = "BROADCASTING",
    }

    /// Where a new consumer group starts.
    pub enum ConsumeFromWhere {
        /// From the end of each queue (new messages only).
        LastOffset = "CONSUME_FROM_LAST_OFFSET",
        /// From the beginning of each queue.
        FirstOffset = "CONSUME_FROM_FIRST_OFFSET",
        /// From `consume-timestamp` (yyyyMMddHHmmss).
        Timestamp = "CONSUME_FROM_TIMESTAMP",
    }

    /// Plain or transactional producer.
    pub enum ProducerType {
        /// An ordinary producer.
        Normal = "Normal",
        /// A transactional producer (needs `transaction-listener`).
        Trans = "Trans",
    }

    /// How a producer sends.
    pub enum SendType {
        /// Wait for the broker's result; a non-OK status is an error.
        Sync = "Sync",
        /// Send and report the result to `send-call-back` (and errors to the error channel).
        Async = "Async",
        /// Send without waiting for any result.
        OneWay = "OneWay",
    }

    /// Where the broker runs (affects the trace format).
    pub enum AccessChannel {
        /// A self-hosted broker.
        Local = "LOCAL",
        /// Alibaba Cloud.
        Cloud = "CLOUD",
    }
}

impl RocketMqBinderProperties {
    /// The properties with `namesrv-addr` (the older key) applied: it sets the name server
    /// unless `name-server` is set to something other than its default (the newer key wins).
    ///
    /// ```
    /// use binder_rocketmq::config::RocketMqBinderProperties;
    /// let mut p = RocketMqBinderProperties::default();
    /// p.namesrv_addr = Some("10.0.0.1:9876".into());
    /// assert_eq!(p.with_aliases().name_server, "10.0.0.1:9876");
    /// ```
    pub fn with_aliases(mut self) -> Self {
        if let Some(old) = non_blank(&self.namesrv_addr)
            && self.name_server == RocketMqBinderProperties::default().name_server
        {
            self.name_server = old;
        }
        self
    }
}

/// The real key for a `spring.cloud.starter.stream.rocketmq.<rest>` spelling (the guide's
/// table labels, which the Java binder never read): `binder.consumer.*` and
/// `binder.producer.*` are binding keys, other `binder.*` keys are binder keys.
pub(crate) fn starter_key_target(rest: &str) -> String {
    let base = "spring.cloud.stream.rocketmq";
    if let Some(r) = rest.strip_prefix("binder.consumer.") {
        format!("{base}.bindings.<name>.consumer.{r}")
    } else if let Some(r) = rest.strip_prefix("binder.producer.") {
        format!("{base}.bindings.<name>.producer.{r}")
    } else {
        format!("{base}.{rest}")
    }
}

/// Defines a consumer or producer properties struct with the common (binder-level) keys first.
macro_rules! with_common {
    ($(#[$m:meta])* pub struct $name:ident { $($rest:tt)* }) => {
        stream_config::properties! {
            $(#[$m])*
            pub struct $name {
                /// Whether the binding is enabled (a disabled binding binds nothing).
                pub enabled: bool = true,
                /// Name server addresses (`;` or `,` separated); unset: the binder's.
                pub name_server: Option<String> = None,
                /// ACL access key; unset: the binder's.
                pub access_key: Option<String> = None,
                /// ACL secret key (never logged); unset: the binder's.
                pub secret_key: Option<Secret> = None,
                /// RocketMQ group; unset: the binder's (consumers: the binding's `group` wins).
                pub group: Option<String> = None,
                /// Namespace prefixed to topics and groups; unset: the binder's.
                pub namespace: Option<String> = None,
                /// Unit name (multi-unit deployments); unset: the binder's.
                pub unit_name: Option<String> = None,
                /// LOCAL or CLOUD; unset: the binder's.
                pub access_channel: Option<AccessChannel> = None,
                /// Route refresh period in ms; unset: the binder's.
                pub poll_name_server_interval: Option<u32> = None,
                /// Broker heartbeat period in ms; unset: the binder's.
                pub heartbeat_broker_interval: Option<u32> = None,
                /// Consumer offset persistence period in ms; unset: the binder's.
                pub persist_consumer_offset_interval: Option<u32> = None,
                /// Use the broker's VIP channel (port - 2); unset: the binder's.
                pub vip_channel_enabled: Option<bool> = None,
                /// TLS to name server and broker; unset: the binder's.
                pub use_tls: Option<bool> = None,
                /// Message trace; unset: the binder's.
                pub enable_msg_trace: Option<bool> = None,
                /// Trace topic; unset: the binder's.
                pub customized_trace_topic: Option<String> = None,
                $($rest)*
            }
        }
    };
}

stream_config::properties! {
    /// Binder-level properties (`spring.cloud.stream.rocketmq.binder.*`); the defaults of every
    /// binding's common keys.
    pub struct RocketMqBinderProperties {
        /// Name server addresses, `;` or `,` separated.
        pub name_server: String = "127.0.0.1:9876".to_owned(),
        /// The older spelling of `name-server` (the guide: "older versions use namesrv-addr"); used when `name-server` is left at its default.
        pub namesrv_addr: Option<String> = None,
        /// ACL access key (with `secret-key`).
        pub access_key: Option<String> = None,
        /// ACL secret key (never logged).
        pub secret_key: Option<Secret> = None,
        /// Default group for bindings that set none.
        pub group: Option<String> = None,
        /// Namespace prefixed to topics and groups.
        pub namespace: Option<String> = None,
        /// Unit name (multi-unit deployments).
        pub unit_name: Option<String> = None,
        /// LOCAL or CLOUD.
        pub access_channel: AccessChannel = AccessChannel::Local,
        /// Route refresh period in ms.
        pub poll_name_server_interval: u32 = 30_000,
        /// Broker heartbeat period in ms.
        pub heartbeat_broker_interval: u32 = 30_000,
        /// Consumer offset persistence period in ms.
        pub persist_consumer_offset_interval: u32 = 5_000,
        /// Use the broker's VIP channel (port - 2).
        pub vip_channel_enabled: bool = false,
        /// TLS to name server and broker.
        pub use_tls: bool = false,
        /// Message trace for producers and consumers.
        pub enable_msg_trace: bool = true,
        /// Topic the traces are written to.
        pub customized_trace_topic: String = "RMQ_SYS_TRACE_TOPIC".to_owned(),
        /// Queues of a topic the provisioner creates (at least the producer's partition-count).
        pub default_topic_queue_nums: u32 = 4,
        /// Whether a missing topic is created at bind time (else the broker's auto-create decides).
        pub auto_create_topics: bool = true,
    }

    /// Push consumer settings (`...consumer.push.*`).
    pub struct PushProperties {
        /// Orderly consumption: one message at a time per queue, queue locked on the broker.
        pub orderly: bool = false,
        /// Orderly: how long a queue is suspended after a failure (ms).
        pub suspend_current_queue_time_millis: u64 = 1_000,
        /// Broker redeliveries before `%DLQ%<group>`; unset: 16 (concurrent), unbounded (orderly).
        pub max_reconsume_times: Option<i32> = None,
        /// Concurrent: 0 = broker decides the retry delay, -1 = straight to the DLQ, >0 = level.
        pub delay_level_when_next_consume: i32 = 0,
        /// Messages handed to one listener call (the binder handles them one by one).
        pub consume_message_batch_max_size: u32 = 1,
        /// How long `stop` waits for in-flight messages on shutdown (ms).
        pub await_termination_millis_when_shutdown: u64 = 30_000,
        /// Longest a message may be processed before the client gives up on it (minutes).
        pub consume_timeout: u64 = 15,
    }

    /// Polled (lite pull) consumer settings (`...consumer.pull.*`).
    pub struct PullProperties {
        /// Longest a `poll` waits for a message (ms).
        pub poll_timeout_millis: u64 = 5_000,
        /// Pull threads.
        pub pull_thread_nums: u32 = 20,
        /// Messages cached across all queues before pulling pauses.
        pub pull_threshold_for_all: i64 = 1_000,
        /// Messages cached per queue before pulling pauses.
        pub pull_threshold_for_queue: i64 = 1_000,
        /// Size cached per queue before pulling pauses (MiB).
        pub pull_threshold_size_for_queue: i32 = 100,
        /// Largest offset span across a queue's cached messages.
        pub consume_max_span: i64 = 2_000,
        /// Topic route check period (ms).
        pub topic_metadata_check_interval_millis: u64 = 30_000,
    }
}

with_common! {
    /// Consumer properties (`spring.cloud.stream.rocketmq.{default,bindings.<name>}.consumer.*`).
    pub struct RocketMqConsumerProperties {
        /// CLUSTERING (a group shares) or BROADCASTING (every member gets all).
        pub message_model: MessageModel = MessageModel::Clustering,
        /// Tag expression (`a || b`) or `sql:<SQL92 expression>`; unset: every message.
        pub subscription: Option<String> = None,
        /// Where a new group starts.
        pub consume_from_where: ConsumeFromWhere = ConsumeFromWhere::LastOffset,
        /// Start time for CONSUME_FROM_TIMESTAMP (yyyyMMddHHmmss); unset: 30 minutes ago.
        pub consume_timestamp: Option<String> = None,
        /// Messages fetched per pull request.
        pub pull_batch_size: u32 = 10,
        /// Push consumer settings.
        pub push: PushProperties = PushProperties::default(),
        /// Polled consumer settings.
        pub pull: PullProperties = PullProperties::default(),
    }
}

with_common! {
    /// Producer properties (`spring.cloud.stream.rocketmq.{default,bindings.<name>}.producer.*`).
    pub struct RocketMqProducerProperties {
        /// Normal or Trans.
        pub producer_type: ProducerType = ProducerType::Normal,
        /// Sync, Async or OneWay.
        pub send_type: SendType = SendType::Sync,
        /// Name of a registered send callback (Async).
        pub send_call_back: Option<String> = None,
        /// Name of a registered transaction listener (Trans; required there).
        pub transaction_listener: Option<String> = None,
        /// Name of a registered message-queue selector.
        pub message_queue_selector: Option<String> = None,
        /// Send timeout (ms).
        pub send_msg_timeout: u32 = 3_000,
        /// Bodies larger than this are compressed (bytes).
        pub compress_msg_body_threshold: u32 = 4_096,
        /// Retries of a failed synchronous send.
        pub retry_times_when_send_failed: u32 = 2,
        /// Retries of a failed asynchronous send.
        pub retry_times_when_send_async_failed: u32 = 2,
        /// Retry on another broker when a store is not OK.
        pub retry_another_broker: bool = false,
        /// Largest message accepted (bytes); larger ones fail before sending.
        pub max_message_size: u32 = 4 * 1024 * 1024,
    }
}

/// The common settings of one binding after falling back to the binder level.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedCommon {
    /// Name server list, normalised to `;` separators.
    pub name_server: String,
    /// Access key and secret key, when both are set.
    pub credentials: Option<(String, Secret)>,
    /// Group (before the binding's `group` is applied).
    pub group: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Unit name.
    pub unit_name: Option<String>,
    /// Access channel.
    pub access_channel: AccessChannel,
    /// Route refresh (ms).
    pub poll_name_server_interval: u32,
    /// Heartbeat (ms).
    pub heartbeat_broker_interval: u32,
    /// Offset persistence (ms).
    pub persist_consumer_offset_interval: u32,
    /// VIP channel.
    pub vip_channel_enabled: bool,
    /// TLS.
    pub use_tls: bool,
    /// Trace.
    pub enable_msg_trace: bool,
    /// Trace topic.
    pub trace_topic: String,
}

/// `a,b;c` -> `a;b;c` (the client separates with `;`).
pub fn normalise_name_server(list: &str) -> String {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(";")
}

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

macro_rules! resolve_impl {
    ($t:ty) => {
        impl $t {
            /// The common settings, unset ones taken from the binder.
            pub fn resolve(&self, binder: &RocketMqBinderProperties) -> ResolvedCommon {
                let access_key =
                    non_blank(&self.access_key).or_else(|| non_blank(&binder.access_key));
                let secret_key = self
                    .secret_key
                    .clone()
                    .filter(|s| !s.expose().trim().is_empty())
                    .or_else(|| {
                        binder
                            .secret_key
                            .clone()
                            .filter(|s| !s.expose().trim().is_empty())
                    });
                ResolvedCommon {
                    name_server: normalise_name_server(
                        &non_blank(&self.name_server).unwrap_or_else(|| binder.name_server.clone()),
                    ),
                    credentials: access_key.zip(secret_key),
                    group: non_blank(&self.group).or_else(|| non_blank(&binder.group)),
                    namespace: non_blank(&self.namespace).or_else(|| non_blank(&binder.namespace)),
                    unit_name: non_blank(&self.unit_name).or_else(|| non_blank(&binder.unit_name)),
                    access_channel: self.access_channel.unwrap_or(binder.access_channel),
                    poll_name_server_interval: self
                        .poll_name_server_interval
                        .unwrap_or(binder.poll_name_server_interval),
                    heartbeat_broker_interval: self
                        .heartbeat_broker_interval
                        .unwrap_or(binder.heartbeat_broker_interval),
                    persist_consumer_offset_interval: self
                        .persist_consumer_offset_interval
                        .unwrap_or(binder.persist_consumer_offset_interval),
                    vip_channel_enabled: self
                        .vip_channel_enabled
                        .unwrap_or(binder.vip_channel_enabled),
                    use_tls: self.use_tls.unwrap_or(binder.use_tls),
                    enable_msg_trace: self.enable_msg_trace.unwrap_or(binder.enable_msg_trace),
                    trace_topic: non_blank(&self.customized_trace_topic)
                        .unwrap_or_else(|| binder.customized_trace_topic.clone()),
                }
            }
        }
    };
}

resolve_impl!(RocketMqConsumerProperties);
resolve_impl!(RocketMqProducerProperties);

/// A parsed `subscription`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subscription {
    /// A tag expression (`*` for all).
    Tags(String),
    /// A SQL92 property filter (needs `enablePropertyFilter=true` on the broker).
    Sql(String),
}

impl Subscription {
    /// Parses `sql:<expr>` or a tag expression; blank means `*`.
    pub fn parse(text: Option<&str>) -> Subscription {
        let text = text.map(str::trim).unwrap_or_default();
        if let Some(sql) = text
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("sql:"))
            .and_then(|_| text.get(4..))
        {
            Subscription::Sql(sql.trim().to_owned())
        } else if text.is_empty() {
            Subscription::Tags("*".to_owned())
        } else {
            // `a || b` -> `a||b`: rocketmq-protocol 1.0.0 hashes each tag *untrimmed* for the
            // broker's tag-code filter, so spaces around `||` would match nothing.
            let tags: Vec<&str> = text
                .split("||")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            Subscription::Tags(if tags.is_empty() {
                "*".to_owned()
            } else {
                tags.join("||")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stream_config::{Environment, Properties};

    #[test]
    fn defaults_match_the_java_binder() {
        let b = RocketMqBinderProperties::default();
        assert_eq!(b.name_server, "127.0.0.1:9876");
        assert!(b.enable_msg_trace);
        assert_eq!(b.customized_trace_topic, "RMQ_SYS_TRACE_TOPIC");
        assert_eq!(b.poll_name_server_interval, 30_000);
        assert_eq!(b.heartbeat_broker_interval, 30_000);
        assert_eq!(b.persist_consumer_offset_interval, 5_000);
        assert_eq!(b.access_channel, AccessChannel::Local);
        let c = RocketMqConsumerProperties::default();
        assert_eq!(c.message_model, MessageModel::Clustering);
        assert_eq!(c.consume_from_where, ConsumeFromWhere::LastOffset);
        assert_eq!(c.pull_batch_size, 10);
        assert!(!c.push.orderly);
        assert_eq!(c.push.suspend_current_queue_time_millis, 1000);
        assert_eq!(c.push.delay_level_when_next_consume, 0);
        assert_eq!(c.push.consume_message_batch_max_size, 1);
        assert_eq!(c.pull.poll_timeout_millis, 5000);
        assert_eq!(c.pull.pull_thread_nums, 20);
        assert_eq!(c.pull.pull_threshold_for_all, 1000);
        let p = RocketMqProducerProperties::default();
        assert_eq!(p.producer_type, ProducerType::Normal);
        assert_eq!(p.send_type, SendType::Sync);
        assert_eq!(p.send_msg_timeout, 3000);
        assert_eq!(p.compress_msg_body_threshold, 4096);
        assert_eq!(p.retry_times_when_send_failed, 2);
        assert_eq!(p.retry_times_when_send_async_failed, 2);
        assert!(!p.retry_another_broker);
        assert_eq!(p.max_message_size, 4 * 1024 * 1024);
    }

    #[test]
    fn java_spellings_bind() {
        let env = Environment::builder()
            .properties_str(
                "application.properties",
                "spring.cloud.stream.rocketmq.binder.name-server=a:1,b:2\n\
                 spring.cloud.stream.rocketmq.binder.secretKey=s3cr3t\n\
                 spring.cloud.stream.rocketmq.binder.accessKey=ak\n\
                 spring.cloud.stream.rocketmq.bindings.in.consumer.push.orderly=true\n\
                 spring.cloud.stream.rocketmq.bindings.in.consumer.push.delayLevelWhenNextConsume=-1\n\
                 spring.cloud.stream.rocketmq.bindings.in.consumer.messageModel=BROADCASTING\n\
                 spring.cloud.stream.rocketmq.bindings.out.producer.sendType=OneWay\n\
                 spring.cloud.stream.rocketmq.bindings.out.producer.producerType=Trans\n\
                 spring.cloud.stream.rocketmq.bindings.out.producer.sendCallBack=cb\n\
                 spring.cloud.stream.rocketmq.bindings.out.producer.name-server=c:3\n",
            )
            .build()
            .expect("env");
        let b: RocketMqBinderProperties = env.extended_binder("rocketmq").expect("binder");
        let c: RocketMqConsumerProperties = env.extended_consumer("rocketmq", "in").expect("c");
        let p: RocketMqProducerProperties = env.extended_producer("rocketmq", "out").expect("p");
        assert!(c.push.orderly);
        assert_eq!(c.push.delay_level_when_next_consume, -1);
        assert_eq!(c.message_model, MessageModel::Broadcasting);
        assert_eq!(p.send_type, SendType::OneWay);
        assert_eq!(p.producer_type, ProducerType::Trans);
        assert_eq!(p.send_call_back.as_deref(), Some("cb"));
        let rc = c.resolve(&b);
        assert_eq!(rc.name_server, "a:1;b:2");
        let (ak, sk) = rc.credentials.clone().expect("credentials");
        assert_eq!(ak, "ak");
        assert_eq!(sk.expose(), "s3cr3t");
        assert!(!format!("{rc:?}").contains("s3cr3t"));
        assert_eq!(p.resolve(&b).name_server, "c:3");
    }

    #[test]
    fn every_key_is_documented() {
        for d in RocketMqConsumerProperties::descriptors()
            .into_iter()
            .chain(RocketMqProducerProperties::descriptors())
            .chain(RocketMqBinderProperties::descriptors())
        {
            assert!(!d.description.is_empty(), "{} has no description", d.name);
        }
    }

    #[test]
    fn subscriptions_parse() {
        assert_eq!(Subscription::parse(None), Subscription::Tags("*".into()));
        assert_eq!(
            Subscription::parse(Some(" a || b ")),
            Subscription::Tags("a||b".into()),
            "spaces around || would break the client's tag hash codes"
        );
        assert_eq!(
            Subscription::parse(Some("||")),
            Subscription::Tags("*".into())
        );
        assert_eq!(
            Subscription::parse(Some("SQL: a > 5")),
            Subscription::Sql("a > 5".into())
        );
    }
}

/// The property reference of this binder (Markdown tables), as in `docs/rocketmq-binder.md`.
pub fn reference_markdown() -> String {
    use stream_config::Properties;
    let mut out = stream_config::reference_markdown(
        "Binder properties",
        "spring.cloud.stream.rocketmq.binder",
        &RocketMqBinderProperties::descriptors(),
    );
    out.push('\n');
    out.push_str(&stream_config::reference_markdown(
        "Consumer properties (also under `spring.cloud.stream.rocketmq.default.consumer`)",
        "spring.cloud.stream.rocketmq.bindings.<name>.consumer",
        &RocketMqConsumerProperties::descriptors(),
    ));
    out.push('\n');
    out.push_str(&stream_config::reference_markdown(
        "Producer properties (also under `spring.cloud.stream.rocketmq.default.producer`)",
        "spring.cloud.stream.rocketmq.bindings.<name>.producer",
        &RocketMqProducerProperties::descriptors(),
    ));
    out
}

#[cfg(test)]
mod docs_tests {
    /// `docs/rocketmq-binder.md` carries the generated reference; regenerate with
    /// `UPDATE_DOCS=1 cargo test -p binder-rocketmq docs_reference`.
    #[test]
    fn docs_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rocketmq-binder.md");
        let generated = super::reference_markdown();
        let begin = "<!-- BEGIN GENERATED REFERENCE -->\n";
        let end = "<!-- END GENERATED REFERENCE -->";
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else {
            panic!("{path} lacks the generated reference markers");
        };
        let current = &doc[a + begin.len()..b];
        if current != generated {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let updated = format!("{}{generated}{}", &doc[..a + begin.len()], &doc[b..]);
                std::fs::write(path, updated).expect("write docs");
            } else {
                panic!(
                    "{path} is stale; run UPDATE_DOCS=1 cargo test -p binder-rocketmq docs_reference"
                );
            }
        }
    }
}
