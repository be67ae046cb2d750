//! The binder: provisions topics (and dead-letter topics) and binds push consumers, polled
//! consumers and producers, everything typed from the runtime's specs.

use std::sync::Arc;

use stream_core::BinderError;
use stream_core::binder::{
    Binder, BinderHealth, Capabilities, Capability, ConsumerSpec, ProducerSpec,
};
use tokio::sync::Mutex;

use crate::config::{
    MessageModel, ProducerType, RocketMqBinderProperties, RocketMqConsumerProperties,
    RocketMqProducerProperties,
};
use crate::consumer::RocketMqConsumer;
use crate::hooks::Hooks;
use crate::pollable::RocketMqPollable;
use crate::producer::{self, ActiveProducer, ProducerContext, RocketMqProducer};
use crate::provisioning::{Admin, ConsumerTopic, ProducerTopic, consumer_group, dlq_topic};
use crate::runtime::{ClientDomain, DomainSize};

/// How long a health check waits for the name server and broker.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A binder over one set of RocketMQ name servers.
pub struct RocketMqBinder {
    name: String,
    properties: RocketMqBinderProperties,
    hooks: Arc<Hooks>,
    /// Producers and admin clients run here.
    domain: ClientDomain,
    admin: Arc<Admin>,
    /// Producers bound (closed on binder close).
    producers: Mutex<Vec<Arc<ActiveProducer>>>,
}

impl std::fmt::Debug for RocketMqBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketMqBinder")
            .field("name", &self.name)
            .field("properties", &self.properties)
            .finish_non_exhaustive()
    }
}

impl RocketMqBinder {
    /// A binder with its binder-level properties; it connects when it first provisions.
    pub(crate) fn new(
        name: &str,
        properties: RocketMqBinderProperties,
        hooks: Arc<Hooks>,
    ) -> Result<Self, BinderError> {
        let domain = ClientDomain::new(&format!("rocketmq-{name}"), &DomainSize::producers())?;
        let admin = Arc::new(Admin::new(
            name,
            properties.auto_create_topics,
            domain.client(),
        ));
        Ok(Self {
            name: name.to_owned(),
            properties,
            hooks,
            domain,
            admin,
            producers: Mutex::new(Vec::new()),
        })
    }
}

impl Binder for RocketMqBinder {
    type ConsumerProperties = RocketMqConsumerProperties;
    type ProducerProperties = RocketMqProducerProperties;
    type ConsumerDestination = ConsumerTopic;
    type ProducerDestination = ProducerTopic;
    type Consumer = RocketMqConsumer;
    type Producer = RocketMqProducer;
    type Pollable = RocketMqPollable;

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

    async fn provision_consumer(
        &self,
        spec: &ConsumerSpec<RocketMqConsumerProperties>,
    ) -> Result<ConsumerTopic, BinderError> {
        let common = spec.extension.resolve(&self.properties);
        let topic = spec.destination.to_string();
        let queues = self
            .admin
            .ensure_topic(&common, &topic, self.properties.default_topic_queue_nums)
            .await?;
        let (group, anonymous) = consumer_group(spec, &common);
        if spec.extension.message_model == MessageModel::Clustering && !anonymous {
            // The binder dead-letters rejected messages (and, with
            // delay-level-when-next-consume=-1, exhausted ones) itself: the DLQ must exist.
            self.admin
                .ensure_topic(&common, &dlq_topic(&group), 1)
                .await?;
        }
        Ok(ConsumerTopic {
            topic,
            queues,
            group,
            anonymous,
            common,
        })
    }

    async fn provision_producer(
        &self,
        spec: &ProducerSpec<RocketMqProducerProperties>,
    ) -> Result<ProducerTopic, BinderError> {
        let common = spec.extension.resolve(&self.properties);
        let partition_count = spec.partition_count.unwrap_or(0);
        let wanted = self
            .properties
            .default_topic_queue_nums
            .max(partition_count);
        let topic = spec.destination.to_string();
        let queues = self.admin.ensure_topic(&common, &topic, wanted).await?;
        if partition_count > 0 && queues > 0 && queues < partition_count as usize {
            tracing::warn!(
                topic = %topic,
                queues,
                partition_count,
                "the topic has fewer queues than partition-count; partitions wrap around (partition % queues)"
            );
        }
        Ok(ProducerTopic { topic, queues })
    }

    async fn bind_consumer(
        &self,
        spec: &ConsumerSpec<RocketMqConsumerProperties>,
        destination: &ConsumerTopic,
    ) -> Result<RocketMqConsumer, BinderError> {
        warn_about_partitions(spec, destination);
        RocketMqConsumer::new(spec, destination, Arc::clone(&self.admin))
    }

    async fn bind_producer(
        &self,
        spec: &ProducerSpec<RocketMqProducerProperties>,
        destination: &ProducerTopic,
    ) -> Result<RocketMqProducer, BinderError> {
        let props = &spec.extension;
        if props.producer_type == ProducerType::Trans && props.transaction_listener.is_none() {
            return Err(BinderError::invalid_property(
                spec.extension_key(crate::config::ROCKETMQ_BINDER_TYPE, "transaction-listener"),
                "producer-type is Trans but no transaction listener is named; register one with \
                 RocketMqBinderFactory::builder().transaction_listener(name, ..) and set this key \
                 to its name",
            ));
        }
        if !props.enabled {
            tracing::info!(binding = %spec.binding, "producer disabled (enabled=false)");
            return Ok(RocketMqProducer::disabled(
                &spec.binding,
                &destination.topic,
            ));
        }
        let active = producer::bind(
            ProducerContext {
                binder: &self.properties,
                hooks: &self.hooks,
                client: self.domain.client(),
            },
            spec,
            destination,
        )
        .await?;
        self.producers.lock().await.push(Arc::clone(&active));
        Ok(RocketMqProducer::from(active))
    }

    async fn bind_pollable(
        &self,
        spec: &ConsumerSpec<RocketMqConsumerProperties>,
        destination: &ConsumerTopic,
    ) -> Result<RocketMqPollable, BinderError> {
        warn_about_partitions(spec, destination);
        RocketMqPollable::bind(spec, destination, Arc::clone(&self.admin)).await
    }

    /// Up when the name server gives a route and the broker holding it answers; details: the
    /// name server, the broker and the topic asked about.
    async fn health(&self) -> BinderHealth {
        let common = RocketMqProducerProperties::default().resolve(&self.properties);
        self.admin.health(&common, HEALTH_TIMEOUT).await
    }

    async fn close(&self) -> Result<(), BinderError> {
        let producers: Vec<Arc<ActiveProducer>> = std::mem::take(&mut *self.producers.lock().await);
        for p in producers {
            if let Err(e) = p.close().await {
                tracing::warn!(error = %e, "closing a RocketMQ producer failed");
            }
        }
        self.admin.shutdown().await;
        self.domain.shutdown().await;
        Ok(())
    }
}

/// A partitioned consumer reads the queues of its partitions: partitions the topic has no
/// queue for are never consumed.
fn warn_about_partitions(spec: &ConsumerSpec<RocketMqConsumerProperties>, topic: &ConsumerTopic) {
    if topic.queues > 0
        && let Some(&p) = spec
            .partitions
            .iter()
            .find(|&&p| p as usize >= topic.queues)
    {
        tracing::warn!(
            binding = %spec.binding,
            topic = %topic.topic,
            partition = p,
            queues = topic.queues,
            "the topic has no queue for this partition; raise default-topic-queue-nums or partition-count"
        );
    }
}
