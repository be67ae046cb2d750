//! The factory, the binder and its provisioner.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rocketmq_client_rust::{AclClientRPCHook, ClientConfig, DefaultMQProducer, SessionCredentials};
use rocketmq_model::common::topic::TopicValidator;
use rocketmq_transport::api::RPCHook;
use stream_config::{Environment, ExtensionSchema};
use stream_core::BinderError;
use stream_core::binder::{
    Binder, BinderContext, BinderFactory, Binding, Capabilities, Capability, ConsumerDestination,
    ConsumerRequest, InboundHandler, PollableSource, Producer, ProducerDestination,
    ProducerRequest, Provisioner,
};
use tokio::sync::Mutex;

use crate::config::{
    AccessChannel, MessageModel, ProducerType, ResolvedCommon, RocketMqBinderProperties,
    RocketMqConsumerProperties, RocketMqProducerProperties,
};
use crate::hooks::{Hooks, MessageQueueSelectorFn, SendCallbackFn, TransactionHandler};
use crate::runtime::{ClientDomain, DomainSize};

/// Type name of this binder (`spring.cloud.stream.binders.<name>.type: rocketmq`).
pub const ROCKETMQ_BINDER_TYPE: &str = "rocketmq";

/// Creates [`RocketMqBinder`]s; holds the named handlers producers refer to.
///
/// ```
/// use binder_rocketmq::{RocketMqBinderFactory, TransactionHandler, TransactionState};
/// use binder_rocketmq::{Message, binder::BinderFactory};
///
/// struct AlwaysCommit;
/// impl TransactionHandler for AlwaysCommit {
///     fn execute(&self, _: &Message, _: Option<&str>) -> TransactionState { TransactionState::Commit }
///     fn check(&self, _: &Message) -> TransactionState { TransactionState::Commit }
/// }
/// let factory = RocketMqBinderFactory::builder()
///     .transaction_listener("orders-tx", AlwaysCommit)
///     .message_queue_selector("by-first-byte", |m: &Message, queues: usize| {
///         m.payload().first().map_or(0, |b| *b as usize) % queues
///     })
///     .send_callback("log", |outcome| println!("{outcome:?}"))
///     .build();
/// assert_eq!(factory.binder_type(), "rocketmq");
/// ```
#[derive(Clone, Debug, Default)]
pub struct RocketMqBinderFactory {
    hooks: Arc<Hooks>,
}

/// Builds a [`RocketMqBinderFactory`] with named handlers.
#[derive(Debug, Default)]
pub struct RocketMqBinderFactoryBuilder {
    hooks: Hooks,
}

impl RocketMqBinderFactoryBuilder {
    /// Registers a transaction listener that producers name in `transaction-listener`.
    pub fn transaction_listener(
        mut self,
        name: impl Into<String>,
        listener: impl TransactionHandler,
    ) -> Self {
        self.hooks
            .transaction_listeners
            .insert(name.into(), Arc::new(listener));
        self
    }

    /// Registers a message-queue selector that producers name in `message-queue-selector`:
    /// given the message and the topic's queue count, it returns a queue index.
    pub fn message_queue_selector(
        mut self,
        name: impl Into<String>,
        selector: impl Fn(&stream_core::Message, usize) -> usize + Send + Sync + 'static,
    ) -> Self {
        let selector: Arc<MessageQueueSelectorFn> = Arc::new(selector);
        self.hooks.selectors.insert(name.into(), selector);
        self
    }

    /// Registers a send callback that asynchronous producers name in `send-call-back`.
    pub fn send_callback(
        mut self,
        name: impl Into<String>,
        callback: impl Fn(&Result<crate::SendReceipt, String>) + Send + Sync + 'static,
    ) -> Self {
        let callback: Arc<SendCallbackFn> = Arc::new(callback);
        self.hooks.callbacks.insert(name.into(), callback);
        self
    }

    /// The factory.
    pub fn build(self) -> RocketMqBinderFactory {
        RocketMqBinderFactory {
            hooks: Arc::new(self.hooks),
        }
    }
}

impl RocketMqBinderFactory {
    /// A factory without named handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder to register named handlers.
    pub fn builder() -> RocketMqBinderFactoryBuilder {
        RocketMqBinderFactoryBuilder::default()
    }
}

/// The extension schema: `spring.cloud.stream.rocketmq.{binder,default,bindings}.*`.
pub fn extension_schema() -> ExtensionSchema {
    ExtensionSchema::new::<
        RocketMqBinderProperties,
        RocketMqConsumerProperties,
        RocketMqProducerProperties,
    >(ROCKETMQ_BINDER_TYPE)
}

#[async_trait]
impl BinderFactory for RocketMqBinderFactory {
    fn binder_type(&self) -> &'static str {
        ROCKETMQ_BINDER_TYPE
    }

    fn extension_schema(&self) -> Option<ExtensionSchema> {
        Some(extension_schema())
    }

    async fn create(&self, context: BinderContext) -> Result<Arc<dyn Binder>, BinderError> {
        let binder =
            RocketMqBinder::new(context.name, context.environment, Arc::clone(&self.hooks))?;
        Ok(Arc::new(binder))
    }
}

/// A binder over one set of RocketMQ name servers.
pub struct RocketMqBinder {
    pub(crate) inner: Arc<BinderInner>,
}

impl std::fmt::Debug for RocketMqBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketMqBinder")
            .field("name", &self.inner.name)
            .field("properties", &self.inner.properties)
            .finish_non_exhaustive()
    }
}

pub(crate) struct BinderInner {
    pub(crate) name: String,
    pub(crate) environment: Environment,
    pub(crate) properties: RocketMqBinderProperties,
    pub(crate) hooks: Arc<Hooks>,
    /// Producers and admin clients run here.
    pub(crate) domain: ClientDomain,
    /// Admin producers by connection key, for topic lookups and creation.
    admins: Mutex<HashMap<String, DefaultMQProducer>>,
    /// Producers created (closed on binder close).
    pub(crate) producers: Mutex<Vec<Arc<dyn Producer>>>,
}

static INSTANCE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A client instance name unique in this process, so clients never share registrations.
pub(crate) fn instance_name(kind: &str, binding: &str) -> String {
    format!(
        "stream-rs-{kind}-{binding}-{}-{}",
        std::process::id(),
        INSTANCE_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The client configuration for a binding's common settings.
pub(crate) fn client_config(
    common: &ResolvedCommon,
    instance: &str,
) -> Result<ClientConfig, BinderError> {
    let mut b = ClientConfig::builder()
        .namesrv_addr(common.name_server.clone())
        .instance_name(instance.to_owned())
        .poll_name_server_interval(common.poll_name_server_interval)
        .heartbeat_broker_interval(common.heartbeat_broker_interval)
        .persist_consumer_offset_interval(common.persist_consumer_offset_interval)
        .enable_vip_channel(common.vip_channel_enabled)
        .enable_tls(common.use_tls)
        .enable_trace(common.enable_msg_trace)
        .trace_topic(common.trace_topic.clone());
    if let Some(ns) = &common.namespace {
        b = b.namespace(ns.clone());
    }
    if let Some(unit) = &common.unit_name {
        b = b.unit_name(unit.clone());
    }
    if common.access_channel == AccessChannel::Cloud {
        let cloud =
            serde_json::from_str("\"CLOUD\"").map_err(|e| BinderError::InvalidProperty {
                key: "spring.cloud.stream.rocketmq.binder.access-channel".to_owned(),
                reason: e.to_string(),
            })?;
        b = b.access_channel(cloud);
    }
    b.build().map_err(|e| BinderError::InvalidProperty {
        key: "spring.cloud.stream.rocketmq.binder".to_owned(),
        reason: format!("the RocketMQ client rejects the configuration: {e}"),
    })
}

/// The ACL hook, when access and secret key are set.
pub(crate) fn rpc_hook(common: &ResolvedCommon) -> Option<Arc<dyn RPCHook>> {
    common.credentials.as_ref().map(|(ak, sk)| {
        let hook: Arc<dyn RPCHook> = Arc::new(AclClientRPCHook::new(
            SessionCredentials::with_keys(ak.clone(), sk.expose().to_owned()),
        ));
        hook
    })
}

pub(crate) fn connection_error(
    common: &ResolvedCommon,
    reason: impl std::fmt::Display,
) -> BinderError {
    BinderError::Connection {
        target: format!("RocketMQ name server {}", common.name_server),
        reason: format!(
            "{reason}; check spring.cloud.stream.rocketmq.binder.name-server and that the broker \
             has registered with it"
        ),
        source: None,
    }
}

/// What provisioning found or created for a topic.
#[derive(Clone, Debug)]
pub(crate) struct ProvisionedTopic {
    /// The topic.
    pub(crate) topic: String,
    /// Its write queue count (0 when unknown).
    pub(crate) queues: usize,
    /// The RocketMQ group (consumers).
    pub(crate) group: Option<String>,
}

impl RocketMqBinder {
    /// A binder reading its properties from `environment`.
    pub(crate) fn new(
        name: impl Into<String>,
        environment: Environment,
        hooks: Arc<Hooks>,
    ) -> Result<Self, BinderError> {
        let name = name.into();
        let properties: RocketMqBinderProperties = environment
            .extended_binder(ROCKETMQ_BINDER_TYPE)
            .map_err(|e| BinderError::InvalidProperty {
                key: "spring.cloud.stream.rocketmq.binder".to_owned(),
                reason: e.to_string(),
            })?;
        let domain = ClientDomain::new(&format!("rocketmq-{name}"), &DomainSize::producers())?;
        Ok(Self {
            inner: Arc::new(BinderInner {
                name,
                environment,
                properties,
                hooks,
                domain,
                admins: Mutex::new(HashMap::new()),
                producers: Mutex::new(Vec::new()),
            }),
        })
    }
}

impl BinderInner {
    pub(crate) fn consumer_properties(
        &self,
        binding: &str,
    ) -> Result<RocketMqConsumerProperties, BinderError> {
        self.environment
            .extended_consumer(ROCKETMQ_BINDER_TYPE, binding)
            .map_err(|e| BinderError::InvalidProperty {
                key: format!("spring.cloud.stream.rocketmq.bindings.{binding}.consumer"),
                reason: e.to_string(),
            })
    }

    pub(crate) fn producer_properties(
        &self,
        binding: &str,
    ) -> Result<RocketMqProducerProperties, BinderError> {
        self.environment
            .extended_producer(ROCKETMQ_BINDER_TYPE, binding)
            .map_err(|e| BinderError::InvalidProperty {
                key: format!("spring.cloud.stream.rocketmq.bindings.{binding}.producer"),
                reason: e.to_string(),
            })
    }

    /// The admin producer for a connection, created on first use.
    async fn admin<'a>(
        &self,
        admins: &'a mut HashMap<String, DefaultMQProducer>,
        common: &ResolvedCommon,
    ) -> Result<&'a mut DefaultMQProducer, BinderError> {
        let key = format!(
            "{}|{}|{}",
            common.name_server,
            common
                .credentials
                .as_ref()
                .map(|c| c.0.as_str())
                .unwrap_or(""),
            common.namespace.as_deref().unwrap_or("")
        );
        if !admins.contains_key(&key) {
            let instance = instance_name("admin", &self.name);
            let mut builder = DefaultMQProducer::builder(self.domain.client())
                .client_config(client_config(common, &instance)?)
                .producer_group(format!("stream-rs-admin-{}", std::process::id()))
                .name_server_addr(common.name_server.clone())
                .send_msg_timeout(5_000);
            if let Some(hook) = rpc_hook(common) {
                builder = builder.rpc_hook(hook);
            }
            let mut admin = builder.build();
            admin.start().await.map_err(|e| {
                connection_error(common, format!("cannot start the admin client: {e}"))
            })?;
            admins.insert(key.clone(), admin);
        }
        admins
            .get_mut(&key)
            .ok_or_else(|| connection_error(common, "admin client missing"))
    }

    /// Sends a prepared RocketMQ message as is (DLQ publishing), synchronously.
    pub(crate) async fn publish_direct(
        &self,
        common: &ResolvedCommon,
        message: rocketmq_model::common::message::message_single::Message,
    ) -> Result<(), BinderError> {
        let topic = message.topic().as_str().to_owned();
        let mut admins = self.admins.lock().await;
        let admin = self.admin(&mut admins, common).await?;
        match admin.send(message).await {
            Ok(Some(r)) if r.send_status == rocketmq_client_rust::SendStatus::SendOk => Ok(()),
            Ok(r) => Err(BinderError::Send {
                destination: topic,
                reason: format!("unexpected send result {r:?}"),
                source: None,
            }),
            Err(e) => Err(BinderError::Send {
                destination: topic,
                reason: e.to_string(),
                source: None,
            }),
        }
    }

    /// Looks the topic up and, when missing (and `auto-create-topics`), creates it with
    /// `queues` queues. Returns the queue count.
    pub(crate) async fn ensure_topic(
        &self,
        common: &ResolvedCommon,
        topic: &str,
        queues: u32,
    ) -> Result<usize, BinderError> {
        let mut admins = self.admins.lock().await;
        let admin = self.admin(&mut admins, common).await?;
        if let Ok(found) = admin.fetch_publish_message_queues(topic).await
            && !found.is_empty()
        {
            return Ok(found.len());
        }
        if !self.properties.auto_create_topics {
            tracing::warn!(
                topic,
                "topic not found and auto-create-topics is off; relying on the broker"
            );
            return Ok(0);
        }
        admin
            .create_topic(
                TopicValidator::AUTO_CREATE_TOPIC_KEY_TOPIC,
                topic,
                i32::try_from(queues.max(1)).unwrap_or(i32::MAX),
                HashMap::new(),
            )
            .await
            .map_err(|e| BinderError::Provisioning {
                destination: topic.to_owned(),
                reason: format!(
                    "cannot create the topic with {queues} queues: {e}; create it with \
                     `mqadmin updateTopic -t {topic} -r {queues} -w {queues}` or allow the client \
                     to (broker autoCreateTopicEnable)"
                ),
                source: None,
            })?;
        tracing::info!(topic, queues, "created RocketMQ topic");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match admin.fetch_publish_message_queues(topic).await {
                Ok(found) if !found.is_empty() => return Ok(found.len()),
                Ok(_) => {}
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(BinderError::Provisioning {
                        destination: topic.to_owned(),
                        reason: format!("created the topic but no route appeared: {e}"),
                        source: None,
                    });
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(queues as usize);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The RocketMQ consumer group of a consumer binding: the binding's `group`, else the
    /// RocketMQ `group` property, else a unique anonymous group.
    pub(crate) fn consumer_group(
        &self,
        request: &ConsumerRequest,
        props: &RocketMqConsumerProperties,
    ) -> (String, bool) {
        if let Some(g) = request.group.as_deref().filter(|g| !g.trim().is_empty()) {
            return (g.to_owned(), false);
        }
        if let Some(g) = props.resolve(&self.properties).group {
            return (g, false);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let suffix = format!(
            "{:x}{:x}",
            nanos & 0xffff_ffff_ffff,
            INSTANCE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        (
            format!(
                "anonymous_{}_{suffix}",
                request.destination.replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                    "_"
                )
            ),
            true,
        )
    }
}

#[async_trait]
impl Provisioner for RocketMqBinder {
    async fn provision_producer(
        &self,
        request: &ProducerRequest,
    ) -> Result<ProducerDestination, BinderError> {
        let props = self.inner.producer_properties(&request.binding_name)?;
        let common = props.resolve(&self.inner.properties);
        let wanted = self
            .inner
            .properties
            .default_topic_queue_nums
            .max(request.properties.partition_count);
        let queues = self
            .inner
            .ensure_topic(&common, &request.destination, wanted)
            .await?;
        if request.properties.is_partitioned()
            && queues > 0
            && queues < request.properties.partition_count as usize
        {
            tracing::warn!(
                topic = %request.destination,
                queues,
                partition_count = request.properties.partition_count,
                "the topic has fewer queues than partition-count; partitions wrap around (partition % queues)"
            );
        }
        Ok(ProducerDestination {
            name: request.destination.clone(),
            extra: Some(Arc::new(ProvisionedTopic {
                topic: request.destination.clone(),
                queues,
                group: None,
            })),
        })
    }

    async fn provision_consumer(
        &self,
        request: &ConsumerRequest,
    ) -> Result<ConsumerDestination, BinderError> {
        let props = self.inner.consumer_properties(&request.binding_name)?;
        let common = props.resolve(&self.inner.properties);
        let queues = self
            .inner
            .ensure_topic(
                &common,
                &request.destination,
                self.inner.properties.default_topic_queue_nums,
            )
            .await?;
        let (group, _anonymous) = self.inner.consumer_group(request, &props);
        let delay = props.push.delay_level_when_next_consume;
        if props.message_model == MessageModel::Clustering && delay < 0 && !props.push.orderly {
            // The binder dead-letters failed messages itself: make sure the DLQ exists.
            self.inner
                .ensure_topic(&common, &format!("%DLQ%{group}"), 1)
                .await?;
        }
        Ok(ConsumerDestination {
            name: format!("{}@{group}", request.destination),
            extra: Some(Arc::new(ProvisionedTopic {
                topic: request.destination.clone(),
                queues,
                group: Some(group),
            })),
        })
    }
}

pub(crate) fn provisioned_topic<'a>(
    extra: Option<&'a ProvisionedTopic>,
    name: &str,
) -> Result<&'a ProvisionedTopic, BinderError> {
    extra.ok_or_else(|| BinderError::Provisioning {
        destination: name.to_owned(),
        reason: "not provisioned by the RocketMQ binder".to_owned(),
        source: None,
    })
}

#[async_trait]
impl Binder for RocketMqBinder {
    fn binder_type(&self) -> &str {
        ROCKETMQ_BINDER_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        [
            Capability::PollableConsumer,
            Capability::Partitioning,
            Capability::ConsumerGroups,
            Capability::DeadLetter,
            Capability::Transactions,
        ]
        .into_iter()
        .collect()
    }

    fn provisioner(&self) -> &dyn Provisioner {
        self
    }

    async fn bind_consumer(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Box<dyn Binding>, BinderError> {
        let topic = provisioned_topic(destination.extra(), &destination.name)?.clone();
        crate::consumer::bind(Arc::clone(&self.inner), request, topic, handler).await
    }

    async fn bind_producer(
        &self,
        request: ProducerRequest,
        destination: ProducerDestination,
    ) -> Result<Arc<dyn Producer>, BinderError> {
        let topic = provisioned_topic(destination.extra(), &destination.name)?.clone();
        let props = self.inner.producer_properties(&request.binding_name)?;
        if props.producer_type == ProducerType::Trans && props.transaction_listener.is_none() {
            return Err(BinderError::InvalidProperty {
                key: format!(
                    "spring.cloud.stream.rocketmq.bindings.{}.producer.transaction-listener",
                    request.binding_name
                ),
                reason:
                    "producer-type is Trans but no transaction listener is named; register one \
                         with RocketMqBinderFactory::builder().transaction_listener(name, ..) and \
                         set this key to its name"
                        .to_owned(),
            });
        }
        if !props.enabled {
            // As the Java binder: a disabled producer binding refuses every message, clearly.
            tracing::info!(binding = %request.binding_name, "producer disabled (enabled=false)");
            return Ok(Arc::new(DisabledProducer {
                binding: request.binding_name.clone(),
                topic: destination.name.clone(),
            }));
        }
        let producer = crate::producer::bind(&self.inner, &request, &props, topic).await?;
        self.inner
            .producers
            .lock()
            .await
            .push(Arc::clone(&producer));
        Ok(producer)
    }

    async fn bind_pollable(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
    ) -> Result<Box<dyn PollableSource>, BinderError> {
        let topic = provisioned_topic(destination.extra(), &destination.name)?.clone();
        crate::pollable::bind(Arc::clone(&self.inner), request, topic).await
    }

    async fn close(&self) -> Result<(), BinderError> {
        let producers: Vec<Arc<dyn Producer>> =
            std::mem::take(&mut *self.inner.producers.lock().await);
        for p in producers {
            if let Err(e) = p.close().await {
                tracing::warn!(error = %e, "closing a RocketMQ producer failed");
            }
        }
        let admins: Vec<DefaultMQProducer> = self
            .inner
            .admins
            .lock()
            .await
            .drain()
            .map(|(_, v)| v)
            .collect();
        for mut a in admins {
            a.shutdown().await;
        }
        self.inner.domain.shutdown().await;
        Ok(())
    }
}

/// A producer binding with `enabled=false`: every send fails, naming the key to change.
struct DisabledProducer {
    binding: String,
    topic: String,
}

#[async_trait]
impl Producer for DisabledProducer {
    async fn send(&self, _message: stream_core::Message<bytes::Bytes>) -> Result<(), BinderError> {
        Err(BinderError::Send {
            destination: self.topic.clone(),
            reason: format!(
                "binding `{}` is disabled (spring.cloud.stream.rocketmq.bindings.{}.producer.enabled=false); the message was not delivered",
                self.binding, self.binding
            ),
            source: None,
        })
    }

    async fn flush(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}
