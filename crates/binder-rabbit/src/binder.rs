//! The binder, its provisioner and its factory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use stream_config::{Environment, ExtensionSchema};
use stream_core::AckMode;
use stream_core::binder::{
    Binder, BinderContext, BinderFactory, Binding, Capabilities, Capability, ConsumerDestination,
    ConsumerRequest, InboundHandler, PollableSource, Producer, ProducerDestination,
    ProducerRequest, Provisioner,
};
use stream_core::expression::Expression;
use stream_core::{BinderError, Message};
use tokio::sync::{Mutex, OnceCell};
use tokio_util::sync::CancellationToken;

use crate::affinity::QueueLocator;
use crate::config::{
    ConfirmType, ContainerType, RabbitBinderProperties, RabbitConnectionProperties,
    RabbitConsumerProperties, RabbitProducerProperties,
};
use crate::connection::{ConnectionFactory, ConnectionSlot};
use crate::consumer::{ConsumerContext, RabbitConsumerBinding};
use crate::headers::HeaderPatterns;
use crate::polled::RabbitPollableSource;
use crate::producer::{Batching, ConfirmAckCallback, ProducerOptions, RabbitProducer, RoutingKey};
use crate::provisioning::{
    self, ConsumerInputs, ConsumerTopology, DeclarationPlan, ProducerTopology, short,
};
use crate::scaling::{ConsumerScaling, Scaler};

/// The binder type name.
pub const BINDER_TYPE: &str = "rabbit";

/// State shared by a binder's provisioner, consumers and producers.
pub(crate) struct Shared {
    /// Consuming and declaring (Spring's admin shares the consumer connection).
    pub(crate) consumer: ConnectionSlot,
    /// Publishing (and republishing to DLQs), kept apart so a blocked publisher never stalls consumers.
    pub(crate) publisher: ConnectionSlot,
    pub(crate) connection: RabbitConnectionProperties,
    pub(crate) binder: RabbitBinderProperties,
    pub(crate) environment: Environment,
    pub(crate) shutdown: CancellationToken,
    /// Confirm-ack callbacks by the name `confirm-ack-channel` gives.
    pub(crate) confirm_acks: std::sync::Mutex<HashMap<String, ConfirmAckCallback>>,
    /// Queue affinity (`nodes` + `admin-addresses`): a consumer connection per node.
    pub(crate) affinity: Option<Affinity>,
    /// Timing of `max-concurrency` scaling, read when a consumer binds.
    pub(crate) scaling: std::sync::Mutex<ConsumerScaling>,
}

/// Queue affinity: where each queue lives, and a connection to each node.
pub(crate) struct Affinity {
    pub(crate) locator: QueueLocator,
    /// One per `spring.rabbitmq.addresses` entry, in `nodes` order.
    pub(crate) slots: Vec<ConnectionSlot>,
}

fn config_error(binding: &str, kind: &str, e: stream_config::ConfigError) -> BinderError {
    BinderError::InvalidProperty {
        key: format!("spring.cloud.stream.rabbit.bindings.{binding}.{kind}"),
        reason: e.to_string(),
    }
}

impl Shared {
    fn consumer_properties(&self, binding: &str) -> Result<RabbitConsumerProperties, BinderError> {
        self.environment
            .extended_consumer::<RabbitConsumerProperties>(BINDER_TYPE, binding)
            .map_err(|e| config_error(binding, "consumer", e))
    }

    fn producer_properties(&self, binding: &str) -> Result<RabbitProducerProperties, BinderError> {
        self.environment
            .extended_producer::<RabbitProducerProperties>(BINDER_TYPE, binding)
            .map_err(|e| config_error(binding, "producer", e))
    }

    /// Declares a plan now; if the broker is unreachable, keeps retrying in the background
    /// (one log line per attempt) and re-declares on every new connection.
    async fn declare(
        self: &Arc<Self>,
        what: &str,
        plan: DeclarationPlan,
        retry_interval: Duration,
    ) -> Result<(), BinderError> {
        let plan = Arc::new(plan);
        if plan.is_empty() {
            return Ok(());
        }
        let first = match self.consumer.get().await {
            Ok(conn) => provisioning::declare(&conn, &plan).await,
            Err(e) => Err(e),
        };
        match first {
            Ok(()) => {
                self.consumer.register(plan);
                Ok(())
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    target_address = %self.consumer.target(),
                    destination = what,
                    error = %e,
                    retry_in = ?retry_interval,
                    "RabbitMQ not reachable; declarations deferred until it is"
                );
                self.consumer.register(plan.clone());
                let shared = self.clone();
                let what = what.to_owned();
                tokio::spawn(async move {
                    let mut attempt = 1u64;
                    loop {
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(retry_interval) => {}
                        }
                        attempt += 1;
                        let r = match shared.consumer.get().await {
                            Ok(conn) => provisioning::declare(&conn, &plan).await,
                            Err(e) => Err(e),
                        };
                        match r {
                            Ok(()) => {
                                tracing::info!(destination = %what, attempt, "deferred declarations done");
                                return;
                            }
                            Err(e) if e.is_transient() => tracing::warn!(
                                destination = %what,
                                attempt,
                                error = %e,
                                retry_in = ?retry_interval,
                                "RabbitMQ still not reachable; declarations deferred"
                            ),
                            Err(e) => {
                                tracing::error!(destination = %what, error = %e, "deferred declaration failed");
                                return;
                            }
                        }
                    }
                });
                Ok(())
            }
            Err(e) => Err(e.into_binder_error(what)),
        }
    }
}

/// Declares exchanges, queues, bindings and DLQs (Spring's `RabbitExchangeQueueProvisioner`).
pub struct RabbitProvisioner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitProvisioner")
            .field("broker", &self.shared.consumer.target())
            .finish()
    }
}

#[async_trait]
impl Provisioner for RabbitProvisioner {
    async fn provision_producer(
        &self,
        request: &ProducerRequest,
    ) -> Result<ProducerDestination, BinderError> {
        let props = self.shared.producer_properties(&request.binding_name)?;
        let partitions = request
            .properties
            .is_partitioned()
            .then_some(request.properties.partition_count.max(1));
        let topology = provisioning::producer_topology(
            &request.destination,
            &request.properties.required_groups,
            partitions,
            &props.queue_settings(),
        )
        .map_err(|reason| BinderError::InvalidProperty {
            key: format!(
                "spring.cloud.stream.rabbit.bindings.{}.producer.exchange-type",
                request.binding_name
            ),
            reason,
        })?;
        self.shared
            .declare(
                &topology.exchange,
                topology.plan.clone(),
                Duration::from_secs(5),
            )
            .await?;
        Ok(ProducerDestination {
            name: topology.exchange.clone(),
            extra: Some(Arc::new(topology)),
        })
    }

    async fn provision_consumer(
        &self,
        request: &ConsumerRequest,
    ) -> Result<ConsumerDestination, BinderError> {
        let props = self.shared.consumer_properties(&request.binding_name)?;
        let anonymous = request.group.as_deref().is_none_or(|g| g.trim().is_empty());
        if anonymous && request.properties.partitioned {
            return Err(BinderError::InvalidProperty {
                key: format!(
                    "spring.cloud.stream.bindings.{}.group",
                    request.binding_name
                ),
                reason: "A consumer group is required for a partitioned subscription".to_owned(),
            });
        }
        let suffix = provisioning::random_base64url();
        let inputs = ConsumerInputs {
            destination: &request.destination,
            group: request.group.as_deref(),
            partitioned: request.properties.partitioned,
            instance_index: request.instance_index,
            anonymous_group_prefix: &props.anonymous_group_prefix,
            durable_subscription: props.durable_subscription,
            republish_to_dlq: props.republish_to_dlq,
            anonymous_suffix: &suffix,
        };
        let topology = provisioning::consumer_topology(&inputs, &props.queue_settings()).map_err(
            |reason| BinderError::InvalidProperty {
                key: format!(
                    "spring.cloud.stream.rabbit.bindings.{}.consumer.exchange-type",
                    request.binding_name
                ),
                reason,
            },
        )?;
        self.shared
            .declare(
                &topology.queue,
                topology.plan.clone(),
                props.recovery_interval,
            )
            .await?;
        Ok(ConsumerDestination {
            name: topology.queue.clone(),
            extra: Some(Arc::new(topology)),
        })
    }
}

/// The RabbitMQ binder: a consumer connection (also used for declarations) and a publisher
/// connection, both long-lived and reopened after loss.
pub struct RabbitBinder {
    shared: Arc<Shared>,
    provisioner: RabbitProvisioner,
}

impl std::fmt::Debug for RabbitBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBinder")
            .field("broker", &self.shared.consumer.target())
            .finish()
    }
}

impl RabbitBinder {
    /// Creates a binder from a binder environment (reads `spring.rabbitmq.*` and
    /// `spring.cloud.stream.rabbit.binder.*`). Does not connect yet.
    pub fn new(environment: Environment) -> Result<Self, BinderError> {
        let connection =
            RabbitConnectionProperties::from_environment(&environment).map_err(|e| {
                BinderError::InvalidProperty {
                    key: "spring.rabbitmq".to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let binder = environment
            .extended_binder::<RabbitBinderProperties>(BINDER_TYPE)
            .map_err(|e| BinderError::InvalidProperty {
                key: "spring.cloud.stream.rabbit.binder".to_owned(),
                reason: e.to_string(),
            })?;
        let factory = Arc::new(
            ConnectionFactory::new(&connection, &binder).map_err(|reason| {
                BinderError::InvalidProperty {
                    key: "spring.rabbitmq".to_owned(),
                    reason,
                }
            })?,
        );
        let affinity = QueueLocator::new(
            &binder.admin_addresses,
            &binder.nodes,
            factory.address_count(),
            &connection.username,
            connection.password.expose(),
        )
        .map_err(|reason| BinderError::InvalidProperty {
            key: "spring.cloud.stream.rabbit.binder.nodes".to_owned(),
            reason,
        })?
        .map(|locator| Affinity {
            slots: (0..factory.address_count())
                .filter_map(|i| factory.only(i))
                .map(|f| ConnectionSlot::new(Arc::new(f), "consumer (queue affinity)"))
                .collect(),
            locator,
        });
        let shared = Arc::new(Shared {
            affinity,
            consumer: ConnectionSlot::new(factory.clone(), "consumer"),
            publisher: ConnectionSlot::new(factory, "publisher"),
            connection,
            binder,
            environment,
            shutdown: CancellationToken::new(),
            confirm_acks: std::sync::Mutex::new(HashMap::new()),
            scaling: std::sync::Mutex::new(ConsumerScaling::default()),
        });
        Ok(RabbitBinder {
            provisioner: RabbitProvisioner {
                shared: shared.clone(),
            },
            shared,
        })
    }

    /// Sets the timing of dynamic consumer scaling for bindings whose `max-concurrency` exceeds
    /// their `concurrency` (Spring AMQP's defaults otherwise; see [`ConsumerScaling`]).
    pub fn with_consumer_scaling(self, scaling: ConsumerScaling) -> Self {
        match self.shared.scaling.lock() {
            Ok(mut g) => *g = scaling,
            Err(poisoned) => *poisoned.into_inner() = scaling,
        }
        self
    }

    /// Registers the callback a producer's `confirm-ack-channel=<name>` names: it receives each
    /// message the broker confirmed (with header `amqp_publishConfirm=true`). Spring sends these
    /// to a message channel of that name; this binder has no binder-to-application channel, so
    /// the application registers a callback instead (e.g. one forwarding to a Tokio channel).
    pub fn with_confirm_ack_callback(
        self,
        name: impl Into<String>,
        callback: impl Fn(Message<Bytes>) + Send + Sync + 'static,
    ) -> Self {
        self.register_confirm_ack(name.into(), Arc::new(callback));
        self
    }

    fn register_confirm_ack(&self, name: String, callback: ConfirmAckCallback) {
        self.shared
            .confirm_acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, callback);
    }

    /// The negotiated `frame_max` of the publisher connection, when connected.
    pub async fn frame_max(&self) -> Option<u32> {
        self.shared
            .publisher
            .current()
            .await
            .map(|c| c.configuration().frame_max())
    }
}

impl RabbitBinder {
    /// What a consumer (pushed or polled) needs, resolved at bind time.
    fn consumer_context(
        &self,
        request: &ConsumerRequest,
        destination: &ConsumerDestination,
        handler: Option<Arc<dyn InboundHandler>>,
    ) -> Result<Arc<ConsumerContext>, BinderError> {
        let props = self.shared.consumer_properties(&request.binding_name)?;
        if props.container_type == ContainerType::Stream {
            return Err(BinderError::Unsupported {
                binder: BINDER_TYPE.to_owned(),
                binding: request.binding_name.clone(),
                feature: "container-type stream".to_owned(),
            });
        }
        let topology = match destination.extra::<ConsumerTopology>() {
            Some(t) => t.clone(),
            None => {
                let mut t = provisioning::consumer_topology(
                    &ConsumerInputs {
                        destination: &request.destination,
                        group: Some(&destination.name),
                        partitioned: false,
                        instance_index: 0,
                        anonymous_group_prefix: "",
                        durable_subscription: true,
                        republish_to_dlq: props.republish_to_dlq,
                        anonymous_suffix: "",
                    },
                    &props.queue_settings(),
                )
                .map_err(|reason| BinderError::InvalidProperty {
                    key: format!(
                        "spring.cloud.stream.rabbit.bindings.{}.consumer",
                        request.binding_name
                    ),
                    reason,
                })?;
                t.queue = destination.name.clone();
                t
            }
        };
        short(&topology.queue).map_err(|e| e.into_binder_error(&topology.queue))?;
        if props.acknowledge_mode == AckMode::Manual {
            tracing::debug!(binding = %request.binding_name, "acknowledge-mode MANUAL: the function settles messages");
        }
        let concurrency = request.properties.concurrency.max(1);
        let scaler = handler.as_ref().and_then(|_| {
            let settings = match self.shared.scaling.lock() {
                Ok(g) => g.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            Scaler::new(settings, concurrency, props.max_concurrency)
        });
        let ctx = Arc::new(ConsumerContext {
            binding_name: request.binding_name.clone(),
            topology: Arc::new(topology),
            patterns: HeaderPatterns::new(&props.header_patterns),
            concurrency,
            scaler,
            scaled_tasks: std::sync::Mutex::new(Vec::new()),
            max_attempts: request.properties.max_attempts,
            batch_mode: request.properties.batch_mode,
            props,
            shared: self.shared.clone(),
            handler,
            tag_counter: AtomicU64::new(0),
            republish_ok: OnceCell::new(),
            republish_channel: Mutex::new(None),
        });
        Ok(ctx)
    }
}

#[async_trait]
impl Binder for RabbitBinder {
    fn binder_type(&self) -> &str {
        BINDER_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::ManualAck)
            .with(Capability::NoAck)
            .with(Capability::Partitioning)
            .with(Capability::ConsumerGroups)
            .with(Capability::DeadLetter)
            .with(Capability::RequiredGroups)
            .with(Capability::PollableConsumer)
            .with(Capability::Transactions)
            .with(Capability::BatchConsumer)
    }

    fn provisioner(&self) -> &dyn Provisioner {
        &self.provisioner
    }

    async fn bind_consumer(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Box<dyn Binding>, BinderError> {
        let ctx = self.consumer_context(&request, &destination, Some(handler))?;
        let binding = RabbitConsumerBinding::start_new(ctx).await?;
        Ok(Box::new(binding))
    }

    async fn bind_pollable(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
    ) -> Result<Box<dyn PollableSource>, BinderError> {
        let ctx = self.consumer_context(&request, &destination, None)?;
        Ok(Box::new(RabbitPollableSource {
            ctx,
            channel: Mutex::new(None),
        }))
    }

    async fn bind_producer(
        &self,
        request: ProducerRequest,
        destination: ProducerDestination,
    ) -> Result<Arc<dyn Producer>, BinderError> {
        let props = self.shared.producer_properties(&request.binding_name)?;
        let key = |k: &str| {
            format!(
                "spring.cloud.stream.rabbit.bindings.{}.producer.{k}",
                request.binding_name
            )
        };
        let (exchange, dest) = match destination.extra::<ProducerTopology>() {
            Some(t) => (t.exchange.clone(), t.destination.clone()),
            None => (destination.name.clone(), request.destination.clone()),
        };
        let partitions = request
            .properties
            .is_partitioned()
            .then_some(request.properties.partition_count.max(1));
        let routing = match (&props.routing_key_expression, &props.routing_key) {
            (Some(expr), _) => RoutingKey::Expression(
                Expression::parse(expr).map_err(|e| BinderError::InvalidProperty {
                    key: key("routing-key-expression"),
                    reason: e.to_string(),
                })?,
                partitions.is_some(),
            ),
            (None, Some(rk)) => RoutingKey::fixed(rk, partitions),
            (None, None) => RoutingKey::fixed(&dest, partitions),
        };
        let delay = props
            .delay_expression
            .as_deref()
            .map(|e| {
                Expression::parse(e).map_err(|e| BinderError::InvalidProperty {
                    key: key("delay-expression"),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let confirms = self.shared.connection.publisher_confirm_type != ConfirmType::None;
        let confirm_ack = match &props.confirm_ack_channel {
            None => None,
            Some(name) => {
                let cb = self
                    .shared
                    .confirm_acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned();
                if cb.is_none() {
                    tracing::warn!(binding = %request.binding_name, confirm_ack_channel = %name,
                        "no confirm-ack callback is registered under this name (RabbitBinderFactory::with_confirm_ack_callback); acks are not reported");
                }
                if !confirms {
                    tracing::warn!(binding = %request.binding_name,
                        "confirm-ack-channel needs spring.rabbitmq.publisher-confirm-type=correlated; acks are not reported");
                }
                cb.filter(|_| confirms)
            }
        };
        if props.transacted && confirms {
            tracing::info!(binding = %request.binding_name, "transacted producer: tx.commit replaces publisher confirms on its channel");
        }
        let mandatory =
            request.properties.error_channel_enabled && self.shared.connection.publisher_returns;
        if request.properties.error_channel_enabled && !confirms {
            tracing::warn!(binding = %request.binding_name,
                "error-channel-enabled without publisher confirms: returns and nacks are not reported (set spring.rabbitmq.publisher-confirm-type=correlated and publisher-returns=true)");
        }
        let producer = Arc::new(RabbitProducer {
            binding_name: request.binding_name.clone(),
            shared: self.shared.clone(),
            exchange: short(&exchange).map_err(|e| e.into_binder_error(&exchange))?,
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
                )
            }),
            channel: Mutex::new(None),
            tx_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            stop: self.shared.shutdown.child_token(),
        });
        producer.spawn_batch_timer();
        // Open the channel now when the broker is there; later otherwise.
        if let Err(e) = producer.channel().await {
            if !e.is_transient() {
                return Err(e.into_binder_error(&exchange));
            }
            tracing::warn!(binding = %request.binding_name, error = %e, "publishing channel not open yet; sends retry connecting");
        }
        Ok(producer)
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
    confirm_acks: Vec<(String, ConfirmAckCallback)>,
    scaling: Option<ConsumerScaling>,
}

impl std::fmt::Debug for RabbitBinderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBinderFactory")
            .field(
                "confirm_ack_callbacks",
                &self.confirm_acks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
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
    /// confirmed message to (see [`RabbitBinder::with_confirm_ack_callback`]).
    pub fn with_confirm_ack_callback(
        mut self,
        name: impl Into<String>,
        callback: impl Fn(Message<Bytes>) + Send + Sync + 'static,
    ) -> Self {
        self.confirm_acks.push((name.into(), Arc::new(callback)));
        self
    }

    /// Sets the timing of dynamic consumer scaling (`max-concurrency`) for the binders it
    /// creates (see [`ConsumerScaling`]).
    pub fn with_consumer_scaling(mut self, scaling: ConsumerScaling) -> Self {
        self.scaling = Some(scaling);
        self
    }
}

#[async_trait]
impl BinderFactory for RabbitBinderFactory {
    fn binder_type(&self) -> &'static str {
        BINDER_TYPE
    }

    fn extension_schema(&self) -> Option<ExtensionSchema> {
        Some(ExtensionSchema::new::<
            RabbitBinderProperties,
            RabbitConsumerProperties,
            RabbitProducerProperties,
        >(BINDER_TYPE))
    }

    async fn create(&self, context: BinderContext) -> Result<Arc<dyn Binder>, BinderError> {
        tracing::debug!(binder = %context.name, "creating RabbitMQ binder");
        let mut binder = RabbitBinder::new(context.environment)?;
        if let Some(s) = &self.scaling {
            binder = binder.with_consumer_scaling(s.clone());
        }
        for (name, cb) in &self.confirm_acks {
            binder.register_confirm_ack(name.clone(), cb.clone());
        }
        Ok(Arc::new(binder))
    }
}
