//! The binder and its factory: provisioning, and binding consumers, producers and pollable
//! sources from their typed properties.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use stream_config::Environment;
use stream_core::binder::{
    Binder, BinderContext, BinderFactory, BinderHealth, Capabilities, Capability, ConsumerSpec,
    Group, HealthStatus, ProducerSpec,
};
use stream_core::expression::Expression;
use stream_core::{AckMode, BinderError, Message};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::affinity::QueueLocator;
use crate::channel_slot::ChannelSlot;
use crate::config::{
    ConfirmType, ContainerType, RabbitBinderProperties, RabbitConnectionProperties,
    RabbitConsumerProperties, RabbitProducerProperties,
};
use crate::connection::{ConnectionFactory, ConnectionSlot};
use crate::consumer::{ConsumerContext, RabbitConsumer, Settler};
use crate::headers::HeaderPatterns;
use crate::open_batches::Batching;
use crate::polled::RabbitPollable;
use crate::producer::{
    ConfirmAckCallback, ProducerOptions, RabbitProducer, RabbitProducerBinding, RoutingKey,
};
use crate::provisioning::{self, ConsumerInputs, ConsumerTopology, ProducerTopology, short};
use crate::scaling::{ConsumerScaling, Scaler};
use crate::shared::{Affinity, Shared};

/// The binder type name.
pub const BINDER_TYPE: &str = "rabbit";

/// How long a health check waits for a connection.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn extension_key(binding: &str, side: &str, field: &str) -> String {
    format!("spring.cloud.stream.rabbit.bindings.{binding}.{side}.{field}")
}

/// The RabbitMQ binder: a consumer connection (also used for declarations) and a publisher
/// connection, both long-lived and reopened after loss.
pub struct RabbitBinder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBinder")
            .field("broker", &self.shared.consumer.target())
            .finish()
    }
}

impl RabbitBinder {
    /// Creates a binder from its environment (`spring.rabbitmq.*`) and binder-level properties
    /// (`spring.cloud.stream.rabbit.binder.*`). Does not connect yet.
    pub fn new(
        environment: &Environment,
        binder: RabbitBinderProperties,
        scaling: ConsumerScaling,
        confirm_acks: HashMap<String, ConfirmAckCallback>,
    ) -> Result<Self, BinderError> {
        let connection = RabbitConnectionProperties::from_environment(environment)
            .map_err(|e| BinderError::invalid_property("spring.rabbitmq", e))?;
        let factory = Arc::new(
            ConnectionFactory::new(&connection, &binder)
                .map_err(|reason| BinderError::invalid_property("spring.rabbitmq", reason))?,
        );
        let affinity = QueueLocator::new(
            &binder.admin_addresses,
            &binder.nodes,
            factory.address_count(),
            &connection.username,
            connection.password.expose(),
        )
        .map_err(|reason| {
            BinderError::invalid_property("spring.cloud.stream.rabbit.binder.nodes", reason)
        })?
        .map(|locator| Affinity {
            slots: (0..factory.address_count())
                .filter_map(|i| factory.only(i))
                .map(|f| ConnectionSlot::new(Arc::new(f), "consumer (queue affinity)"))
                .collect(),
            locator,
        });
        Ok(RabbitBinder {
            shared: Arc::new(Shared {
                affinity,
                consumer: ConnectionSlot::new(factory.clone(), "consumer"),
                publisher: ConnectionSlot::new(factory, "publisher"),
                connection,
                binder,
                shutdown: CancellationToken::new(),
                confirm_acks,
                scaling,
            }),
        })
    }

    /// The negotiated `frame_max` of the publisher connection, when connected.
    pub async fn frame_max(&self) -> Option<u32> {
        self.shared
            .publisher
            .current()
            .await
            .map(|c| c.configuration().frame_max())
    }

    /// The topology of a consumer spec.
    fn consumer_topology(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
    ) -> Result<ConsumerTopology, BinderError> {
        let props = &spec.extension;
        let (group, suffix) = match &spec.group {
            Group::Named(g) => (Some(&**g), String::new()),
            Group::Anonymous(a) => (None, a.suffix().to_owned()),
        };
        let inputs = ConsumerInputs {
            destination: &spec.destination,
            group,
            partitioned: spec.common.partitioned,
            instance_index: spec
                .partitions
                .first()
                .copied()
                .unwrap_or(spec.instance_index),
            anonymous_group_prefix: &props.anonymous_group_prefix,
            durable_subscription: props.durable_subscription,
            republish_to_dlq: props.republish_to_dlq,
            anonymous_suffix: &suffix,
        };
        provisioning::consumer_topology(&inputs, &props.queue_settings()).map_err(|reason| {
            BinderError::invalid_property(
                extension_key(&spec.binding, "consumer", "exchange-type"),
                reason,
            )
        })
    }

    /// Whether failed messages can be republished: with auto-bind-dlq the DLX is declared;
    /// otherwise it must exist (checked once, at bind time), else republishing is off for the
    /// binding with a warning and failures are rejected instead.
    async fn republishes(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
        topology: &ConsumerTopology,
    ) -> Result<bool, BinderError> {
        if !spec.extension.republish_to_dlq {
            return Ok(false);
        }
        if topology.dead_letter_queue.is_some() {
            return Ok(true);
        }
        let dlx = &topology.dead_letter_exchange;
        let conn = self
            .shared
            .publisher
            .get()
            .await
            .map_err(|e| e.into_binder_error(dlx))?;
        let exists = provisioning::exchange_exists(&conn, dlx)
            .await
            .map_err(|e| e.into_binder_error(dlx))?;
        if !exists {
            tracing::warn!(
                binding = %spec.binding,
                dlx = %dlx,
                "republish-to-dlq is set but the dead-letter exchange does not exist and auto-bind-dlq is false; \
                 republishing is disabled for this binding (failed messages are rejected instead)"
            );
        }
        Ok(exists)
    }

    async fn settler(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
        topology: &ConsumerTopology,
    ) -> Result<Settler, BinderError> {
        if spec.extension.container_type == ContainerType::Stream {
            return Err(BinderError::unsupported(
                BINDER_TYPE,
                &spec.binding,
                "container-type stream (it needs the RabbitMQ stream protocol client)",
            ));
        }
        short(&topology.queue).map_err(|e| e.into_binder_error(&topology.queue))?;
        let republish = self.republishes(spec, topology).await?;
        Ok(Settler::new(
            spec.binding.to_string(),
            Arc::new(topology.clone()),
            spec.extension.clone(),
            Arc::clone(&self.shared),
            republish,
        ))
    }
}

impl Binder for RabbitBinder {
    type ConsumerProperties = RabbitConsumerProperties;
    type ProducerProperties = RabbitProducerProperties;
    type ConsumerDestination = ConsumerTopology;
    type ProducerDestination = ProducerTopology;
    type Consumer = RabbitConsumer;
    type Producer = RabbitProducerBinding;
    type Pollable = RabbitPollable;

    fn capabilities(&self) -> Capabilities {
        [
            Capability::ManualAck,
            Capability::NoAck,
            Capability::Partitioning,
            Capability::ConsumerGroups,
            Capability::DeadLetter,
            Capability::RequiredGroups,
            Capability::PollableConsumer,
            Capability::Transactions,
            Capability::BatchConsumer,
            Capability::TypedHeaders,
        ]
        .into_iter()
        .collect()
    }

    fn acknowledge_mode(&self, extension: &RabbitConsumerProperties) -> Option<AckMode> {
        Some(extension.acknowledge_mode)
    }

    async fn provision_consumer(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
    ) -> Result<ConsumerTopology, BinderError> {
        let topology = self.consumer_topology(spec)?;
        self.shared
            .declare(&topology.queue, topology.plan.clone())
            .await?;
        Ok(topology)
    }

    async fn provision_producer(
        &self,
        spec: &ProducerSpec<RabbitProducerProperties>,
    ) -> Result<ProducerTopology, BinderError> {
        let topology = provisioning::producer_topology(
            &spec.destination,
            &spec.common.required_groups,
            spec.partition_count,
            &spec.extension.queue_settings(),
        )
        .map_err(|reason| {
            BinderError::invalid_property(
                extension_key(&spec.binding, "producer", "exchange-type"),
                reason,
            )
        })?;
        self.shared
            .declare(&topology.exchange, topology.plan.clone())
            .await?;
        Ok(topology)
    }

    async fn bind_consumer(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
        topology: &ConsumerTopology,
    ) -> Result<RabbitConsumer, BinderError> {
        let settler = self.settler(spec, topology).await?;
        let concurrency = spec.common.concurrency.max(1);
        let scaler = Scaler::new(
            self.shared.scaling.clone(),
            concurrency,
            spec.extension.max_concurrency,
        );
        Ok(RabbitConsumer::new(ConsumerContext::new(
            spec.binding.to_string(),
            Arc::new(topology.clone()),
            spec.extension.clone(),
            Arc::clone(&self.shared),
            concurrency,
            scaler,
            spec.common.batch_mode && spec.extension.enable_batching,
            spec.acknowledge_mode == AckMode::None,
            settler,
        )))
    }

    async fn bind_pollable(
        &self,
        spec: &ConsumerSpec<RabbitConsumerProperties>,
        topology: &ConsumerTopology,
    ) -> Result<RabbitPollable, BinderError> {
        Ok(RabbitPollable {
            settler: self.settler(spec, topology).await?,
            patterns: HeaderPatterns::new(&spec.extension.header_patterns),
            no_ack: spec.acknowledge_mode == AckMode::None,
            channel: Mutex::new(None),
        })
    }

    async fn bind_producer(
        &self,
        spec: &ProducerSpec<RabbitProducerProperties>,
        topology: &ProducerTopology,
    ) -> Result<RabbitProducerBinding, BinderError> {
        let props = &spec.extension;
        let key = |k: &str| extension_key(&spec.binding, "producer", k);
        let partitions = spec.partition_count;
        let routing = match (&props.routing_key_expression, &props.routing_key) {
            (Some(expr), _) => RoutingKey::Expression(
                Expression::parse(expr)
                    .map_err(|e| BinderError::invalid_property(key("routing-key-expression"), e))?,
                partitions.is_some(),
            ),
            (None, Some(rk)) => RoutingKey::fixed(rk, partitions),
            (None, None) => RoutingKey::fixed(&topology.destination, partitions),
        };
        let delay = props
            .delay_expression
            .as_deref()
            .map(|e| {
                Expression::parse(e)
                    .map_err(|e| BinderError::invalid_property(key("delay-expression"), e))
            })
            .transpose()?;
        let confirms = self.shared.connection.publisher_confirm_type != ConfirmType::None;
        let confirm_ack = match &props.confirm_ack_channel {
            None => None,
            Some(name) => {
                let cb = self.shared.confirm_acks.get(name).cloned();
                if cb.is_none() {
                    tracing::warn!(binding = %spec.binding, confirm_ack_channel = %name,
                        "no confirm-ack callback is registered under this name (RabbitBinderFactory::with_confirm_ack_callback); acks are not reported");
                }
                if !confirms {
                    tracing::warn!(binding = %spec.binding,
                        "confirm-ack-channel needs spring.rabbitmq.publisher-confirm-type=correlated; acks are not reported");
                }
                cb.filter(|_| confirms)
            }
        };
        if props.transacted && confirms {
            tracing::info!(binding = %spec.binding, "transacted producer: tx.commit replaces publisher confirms on its channel");
        }
        let error_channel = spec.common.error_channel_enabled;
        let mandatory = error_channel && self.shared.connection.publisher_returns;
        if error_channel && !confirms {
            tracing::warn!(binding = %spec.binding,
                "error-channel-enabled without publisher confirms: returns and nacks are not reported (set spring.rabbitmq.publisher-confirm-type=correlated and publisher-returns=true)");
        }
        let exchange = &topology.exchange;
        let producer = Arc::new(RabbitProducer {
            binding_name: spec.binding.to_string(),
            shared: self.shared.clone(),
            exchange: short(exchange).map_err(|e| e.into_binder_error(exchange))?,
            routing,
            patterns: HeaderPatterns::new(&props.header_patterns),
            options: ProducerOptions {
                delivery_mode: props.delivery_mode.amqp_value(),
                confirms,
                mandatory,
                transacted: props.transacted,
                compress: props
                    .compress
                    .then_some(self.shared.binder.compression_level),
                delay,
                confirm_ack,
            },
            batching: props.batching_enabled.then(|| {
                Batching::new(
                    props.batch_size,
                    props.batch_buffer_limit,
                    props.batch_timeout,
                    confirms || props.transacted,
                )
            }),
            channel: ChannelSlot::default(),
            tx_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            stop: self.shared.shutdown.child_token(),
        });
        producer.spawn_batch_timer();
        // Open the channel now when the broker is there; a later send reconnects otherwise.
        if let Err(e) = producer.channel().await {
            if !e.is_transient() {
                return Err(e.into_binder_error(exchange));
            }
            tracing::warn!(binding = %spec.binding, error = %e, "publishing channel not open yet; sends retry connecting");
        }
        Ok(RabbitProducerBinding(producer))
    }

    /// Up when the binder's connection is open (it connects first if it has none, as Spring's
    /// RabbitMQ health indicator does) and the broker has not blocked a connection; down with
    /// the reason otherwise. Details: the address connected to, virtual host, negotiated
    /// frame-max and heartbeat. (lapin does not expose the broker's version.)
    async fn health(&self) -> BinderHealth {
        if self.shared.shutdown.is_cancelled() {
            return BinderHealth::down("the binder is closed");
        }
        let health = self.shared.consumer.health(HEALTH_TIMEOUT).await;
        if health.status == HealthStatus::Up
            && let Some(p) = self.shared.publisher.current().await
            && p.status().blocked()
        {
            return BinderHealth::down(
                "the broker blocked the publisher connection (resource alarm)",
            )
            .with_detail("address", self.shared.publisher.target());
        }
        health
    }

    async fn close(&self) -> Result<(), BinderError> {
        self.shared.shutdown.cancel();
        self.shared.consumer.close().await;
        if let Some(a) = &self.shared.affinity {
            for slot in &a.slots {
                slot.close().await;
            }
        }
        self.shared.publisher.close().await;
        Ok(())
    }
}

/// Creates [`RabbitBinder`]s; register it with the application under type `rabbit`.
#[derive(Default, Clone)]
pub struct RabbitBinderFactory {
    confirm_acks: HashMap<String, ConfirmAckCallback>,
    scaling: ConsumerScaling,
}

impl std::fmt::Debug for RabbitBinderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBinderFactory")
            .field(
                "confirm_ack_callbacks",
                &self.confirm_acks.keys().collect::<Vec<_>>(),
            )
            .field("scaling", &self.scaling)
            .finish()
    }
}

impl RabbitBinderFactory {
    /// A factory.
    pub fn new() -> Self {
        RabbitBinderFactory::default()
    }

    /// Registers the callback that producers with `confirm-ack-channel=<name>` hand each
    /// confirmed message to (with header `amqp_publishConfirm=true`). Spring sends these to a
    /// message channel of that name; this binder has no binder-to-application channel, so the
    /// application registers a callback instead (e.g. one forwarding to a Tokio channel).
    pub fn with_confirm_ack_callback(
        mut self,
        name: impl Into<String>,
        callback: impl Fn(Message<Bytes>) + Send + Sync + 'static,
    ) -> Self {
        self.confirm_acks.insert(name.into(), Arc::new(callback));
        self
    }

    /// Sets the timing of dynamic consumer scaling for bindings whose `max-concurrency` exceeds
    /// their `concurrency` (Spring AMQP's defaults otherwise; see [`ConsumerScaling`]).
    pub fn with_consumer_scaling(mut self, scaling: ConsumerScaling) -> Self {
        self.scaling = scaling;
        self
    }
}

impl BinderFactory for RabbitBinderFactory {
    type Binder = RabbitBinder;
    type Properties = RabbitBinderProperties;

    fn binder_type(&self) -> &'static str {
        BINDER_TYPE
    }

    fn messaging_system(&self) -> &'static str {
        "rabbitmq"
    }

    /// Spring Boot's `spring.rabbitmq.*`: validated, mapped from environment variables and
    /// type-checked at startup with the rest of the configuration.
    fn root_schemas(&self) -> Vec<stream_core::stream_config::RootSchema> {
        vec![stream_core::stream_config::RootSchema::new::<
            RabbitConnectionProperties,
        >(crate::config::CONNECTION_PREFIX)]
    }

    async fn create(
        &self,
        context: BinderContext<RabbitBinderProperties>,
    ) -> Result<RabbitBinder, BinderError> {
        tracing::debug!(binder = %context.name, "creating RabbitMQ binder");
        RabbitBinder::new(
            &context.environment,
            context.properties,
            self.scaling.clone(),
            self.confirm_acks.clone(),
        )
    }
}
