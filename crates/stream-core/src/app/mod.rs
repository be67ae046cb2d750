//! The application: functions bound to destinations through binders.

mod binders;
mod bridge;
mod error;
mod output;
mod pipeline;
mod pollable;
mod shutdown;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use stream_config::{BindingProperties, Environment, StreamConfig};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

pub use bridge::StreamBridge;
pub use error::StreamError;
pub use pollable::PollableConsumer;

use self::binders::Binders;
use self::bridge::Lru;
use self::output::OutputBinding;
use self::pipeline::{BatchInvoker, ConsumerIdentity, ConsumerPipeline, Invoker};
use crate::binder::{
    BinderFactory, BinderRegistry, Binding, BindingState, Capability, ConsumerRequest,
    ProducerRequest,
};
use crate::convert::{Codec, ConversionService};
use crate::error::FunctionError;
use crate::errors::{ErrorChannels, ErrorHandler, consumer_error_channel, producer_error_channel};
use crate::function::{
    ConversionContext, ErasedFunction, FunctionCatalog, FunctionDefinition, FunctionInput,
    FunctionKind, FunctionOutput,
};
use crate::message::names;
use crate::partition::{PartitionHandler, PartitionKeyExtractor, PartitionSelector};
use crate::retry::{BackOff, RetryPolicy};

/// Default bound on graceful shutdown (Spring's `spring.lifecycle.timeout-per-shutdown-phase`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`StreamApp`]: register binders and functions, then [`StreamAppBuilder::build`]
/// binds them from the configuration.
///
/// ```
/// use stream_core::{FunctionError, Message, StreamApp};
/// use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
/// use stream_config::Environment;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = InMemoryBroker::new();
/// let env = Environment::builder()
///     .map("test", [("spring.cloud.stream.bindings.uppercase-in-0.destination", "words")])
///     .build()
///     .unwrap();
/// let app = StreamApp::builder()
///     .environment(env)
///     .binder(InMemoryBinderFactory::with_broker(broker.clone()))
///     .function("uppercase", |s: String| async move { Ok::<_, FunctionError>(s.to_uppercase()) })
///     .build()
///     .await
///     .unwrap();
/// broker.capture("uppercase-out-0");
/// broker.send("words", Message::bytes("hello"));
/// let out = broker.receive("uppercase-out-0", std::time::Duration::from_secs(1)).await.unwrap();
/// assert_eq!(&out.payload()[..], b"HELLO");
/// app.shutdown().await.unwrap();
/// # });
/// ```
pub struct StreamAppBuilder {
    environment: Option<Environment>,
    registry: BinderRegistry,
    catalog: FunctionCatalog,
    conversion: ConversionService,
    error_handlers: HashMap<String, ErrorHandler>,
    error_subscriptions: Vec<(String, ErrorHandler)>,
    extractors: HashMap<String, Arc<dyn PartitionKeyExtractor>>,
    selectors: HashMap<String, Arc<dyn PartitionSelector>>,
    shutdown_timeout: Option<Duration>,
    retry_policies: HashMap<String, RetryPolicy>,
}

impl std::fmt::Debug for StreamAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAppBuilder")
            .field("binders", &self.registry)
            .field("functions", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl StreamAppBuilder {
    fn new() -> Self {
        Self {
            environment: None,
            registry: BinderRegistry::new(),
            catalog: FunctionCatalog::new(),
            conversion: ConversionService::default(),
            error_handlers: HashMap::new(),
            error_subscriptions: Vec::new(),
            extractors: HashMap::new(),
            selectors: HashMap::new(),
            shutdown_timeout: None,
            retry_policies: HashMap::new(),
        }
    }

    /// Registers a retry policy that bindings name in `consumer.retry-template-name`; it
    /// replaces the policy built from their `max-attempts`/`back-off-*` properties.
    pub fn retry_policy(mut self, name: &str, policy: RetryPolicy) -> Self {
        self.retry_policies.insert(name.to_owned(), policy);
        self
    }

    /// The configuration; without it, [`Environment::standard`] is loaded (application files,
    /// profiles, environment variables, command-line arguments).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Registers a binder type.
    pub fn binder(mut self, factory: impl BinderFactory) -> Self {
        self.registry.register(factory);
        self
    }

    /// Registers a shared binder factory (one factory serving several applications).
    pub fn binder_arc(mut self, factory: Arc<dyn BinderFactory>) -> Self {
        self.registry.register_arc(factory);
        self
    }

    /// Registers a function `I -> O`.
    pub fn function<I, O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.function(name, f);
        self
    }

    /// Registers a consumer of `I`.
    pub fn consumer<I, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.consumer(name, f);
        self
    }

    /// Registers a function taking a whole batch (`consumer.batch-mode=true`): `Vec<I> -> O`.
    pub fn batch_function<I, O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.batch_function(name, f);
        self
    }

    /// Registers a consumer of whole batches (`consumer.batch-mode=true`).
    pub fn batch_consumer<I, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.batch_consumer(name, f);
        self
    }

    /// Registers a supplier of `O`, polled per the output binding's `poller.*`.
    pub fn supplier<O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.supplier(name, f);
        self
    }

    /// Registers a codec for a content type.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.conversion.register(codec);
        self
    }

    /// Registers an error handler that bindings name in `error-handler-definition`; it replaces
    /// the binder's recovery (no DLQ republish) for those bindings.
    pub fn error_handler(mut self, name: &str, handler: ErrorHandler) -> Self {
        self.error_handlers.insert(name.to_owned(), handler);
        self
    }

    /// Subscribes to an error channel (`<destination>.<group>.errors`, `<destination>.errors`
    /// or [`crate::errors::GLOBAL_ERROR_CHANNEL`]). Subscribers observe; recovery still runs.
    pub fn on_error(mut self, channel: &str, handler: ErrorHandler) -> Self {
        self.error_subscriptions.push((channel.to_owned(), handler));
        self
    }

    /// Registers a partition key extractor under the name producers give in
    /// `partition-key-extractor-name`.
    pub fn partition_key_extractor(
        mut self,
        name: &str,
        extractor: impl PartitionKeyExtractor + 'static,
    ) -> Self {
        self.extractors.insert(name.to_owned(), Arc::new(extractor));
        self
    }

    /// Registers a partition selector under the name producers give in
    /// `partition-selector-name`.
    pub fn partition_selector(
        mut self,
        name: &str,
        selector: impl PartitionSelector + 'static,
    ) -> Self {
        self.selectors.insert(name.to_owned(), Arc::new(selector));
        self
    }

    /// Bounds graceful shutdown (default: `spring.lifecycle.timeout-per-shutdown-phase`, else
    /// 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Validates the configuration and binds every function of
    /// `spring.cloud.function.definition` (or the only registered one).
    pub async fn build(self) -> Result<StreamApp, StreamError> {
        let environment = match self.environment {
            Some(e) => e,
            None => Environment::standard()?,
        };
        let mut config = StreamConfig::builder(environment);
        for schema in self.registry.extension_schemas() {
            config = config.extension(schema);
        }
        let config = Arc::new(config.build()?);
        let shutdown_timeout = match self.shutdown_timeout {
            Some(t) => t,
            None => config
                .environment()
                .get("spring.lifecycle.timeout-per-shutdown-phase")
                .map(|raw| {
                    stream_config::parse_duration(raw).map_err(|reason| {
                        StreamError::InvalidBinding {
                            binding: "spring.lifecycle.timeout-per-shutdown-phase".to_owned(),
                            reason,
                        }
                    })
                })
                .transpose()?
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        };
        let errors = ErrorChannels::default();
        for (channel, handler) in self.error_subscriptions {
            errors.subscribe(channel, handler);
        }
        let shared = Arc::new(AppShared {
            binders: Binders::new(self.registry, Arc::clone(&config)),
            config: Arc::clone(&config),
            conversion: Arc::new(self.conversion),
            errors,
            extractors: self.extractors,
            selectors: self.selectors,
            retry_policies: self.retry_policies,
        });
        let definitions = select_definitions(&config, &self.catalog)?;
        let functions: Vec<(FunctionDefinition, ErasedFunction)> = definitions
            .into_iter()
            .map(|d| self.catalog.resolve(&d).map(|f| (d, f)))
            .collect::<Result<_, _>>()?;

        // Outputs first: inputs route to them.
        let mut outputs = HashMap::new();
        for (def, f) in &functions {
            if f.kind().has_output() {
                let name = def.output_binding(0);
                let output = shared.bind_output(&name).await?;
                outputs.insert(name, output);
            }
        }
        if config.stream().input_bindings.is_some() {
            return Err(StreamError::InvalidBinding {
                binding: "spring.cloud.stream.input-bindings".to_owned(),
                reason: "input bindings without a function are not supported; register a consumer function (its binding is `<name>-in-0`) or use `spring.cloud.stream.pollable-source`".to_owned(),
            });
        }
        let extra_outputs = name_list(config.stream().output_bindings.as_deref())
            .into_iter()
            .chain(
                name_list(config.stream().source.as_deref())
                    .into_iter()
                    .map(|s| format!("{s}-out-0")),
            );
        for name in extra_outputs {
            if let std::collections::hash_map::Entry::Vacant(slot) = outputs.entry(name) {
                let output = shared.bind_output(slot.key()).await?;
                slot.insert(output);
            }
        }
        let outputs = Arc::new(outputs);
        let bridge = StreamBridge {
            shared: Arc::clone(&shared),
            outputs: Arc::clone(&outputs),
            dynamic: Arc::new(Mutex::new(Lru::new(
                usize::try_from(config.stream().dynamic_destination_cache_size)
                    .unwrap_or(usize::MAX),
            ))),
        };

        let (supplier_stop, _) = watch::channel(false);
        let mut consumers: Vec<Box<dyn Binding>> = Vec::new();
        let mut suppliers = Vec::new();
        for (def, f) in functions {
            let output = outputs.get(&def.output_binding(0)).cloned();
            match f.kind() {
                FunctionKind::Supplier => {
                    let Some(output) = output else { continue };
                    let props = shared.binding(&def.output_binding(0))?;
                    suppliers.push(shutdown::spawn_supplier(
                        def.name().to_owned(),
                        f,
                        output,
                        &props,
                        supplier_stop.subscribe(),
                    )?);
                }
                _ => {
                    let in_name = def.input_binding(0);
                    let in_props = shared.binding(&in_name)?;
                    let in_ctx =
                        shared.conversion_context(&in_props, in_props.consumer.use_native_decoding);
                    let out_ctx = output
                        .as_ref()
                        .map(|o| o.conversion.clone())
                        .unwrap_or_else(|| in_ctx.clone());
                    if in_props.consumer.batch_mode != f.is_batch() {
                        return Err(StreamError::InvalidBinding {
                            binding: in_name.clone(),
                            reason: if f.is_batch() {
                                format!(
                                    "function `{}` takes batches; set `spring.cloud.stream.bindings.{in_name}.consumer.batch-mode=true`",
                                    def.name()
                                )
                            } else {
                                format!(
                                    "`consumer.batch-mode` is true but function `{}` takes single messages; register it with batch_function/batch_consumer",
                                    def.name()
                                )
                            },
                        });
                    }
                    let batch_invoker = f.is_batch().then(|| {
                        batch_function_invoker(
                            f.clone(),
                            in_ctx.clone(),
                            out_ctx.clone(),
                            output.clone(),
                            bridge.clone(),
                        )
                    });
                    let invoker = function_invoker(f, in_ctx, out_ctx, output, bridge.clone());
                    let error_handler = match &in_props.error_handler_definition {
                        Some(name) => Some(self.error_handlers.get(name).cloned().ok_or_else(|| {
                            StreamError::InvalidBinding {
                                binding: in_name.clone(),
                                reason: format!(
                                    "`error-handler-definition` names `{name}`, which is not registered with StreamAppBuilder::error_handler"
                                ),
                            }
                        })?),
                        None => None,
                    };
                    consumers.extend(
                        shared
                            .bind_input(&in_name, &in_props, invoker, batch_invoker, error_handler)
                            .await?,
                    );
                }
            }
        }
        let mut pollables = HashMap::new();
        for name in name_list(config.stream().pollable_source.as_deref()) {
            let binding = format!("{name}-in-0");
            let consumer = pollable::bind(&shared, &binding).await?;
            pollables.insert(name, Arc::new(consumer));
        }
        tracing::info!(
            consumers = consumers.len(),
            producers = outputs.len(),
            suppliers = suppliers.len(),
            pollables = pollables.len(),
            "stream application bound"
        );
        Ok(StreamApp {
            shared,
            consumers,
            outputs,
            bridge,
            suppliers,
            supplier_stop,
            pollables,
            shutdown_timeout,
        })
    }
}

fn select_definitions(
    config: &StreamConfig,
    catalog: &FunctionCatalog,
) -> Result<Vec<FunctionDefinition>, StreamError> {
    if let Some(text) = config.function_definition() {
        return Ok(FunctionDefinition::parse_list(text)?);
    }
    let names: Vec<&str> = catalog.names().collect();
    match names.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(vec![FunctionDefinition::parse(one)?]),
        many => Err(StreamError::NoDefinition {
            names: many.join(", "),
        }),
    }
}

/// Sends a function's output: to the `sendto` destination if the header names one, else to the
/// function's output binding.
async fn route_output(
    out: Option<crate::Message<bytes::Bytes>>,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> Result<(), FunctionError> {
    let Some(mut out) = out else {
        return Ok(());
    };
    let routed = out
        .headers_mut()
        .remove(names::SENDTO_DESTINATION)
        .map(|v| v.to_string());
    match (routed, output) {
        (Some(destination), _) => bridge
            .send_bytes(&destination, out)
            .await
            .map_err(FunctionError::new),
        (None, Some(output)) => output.send(out).await.map_err(FunctionError::new),
        (None, None) => Ok(()),
    }
}

fn function_invoker(
    f: ErasedFunction,
    in_ctx: ConversionContext,
    out_ctx: ConversionContext,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> Invoker {
    Arc::new(move |message| {
        let call = f.call(Some(message), &in_ctx, &out_ctx);
        let (output, bridge) = (output.clone(), bridge.clone());
        Box::pin(async move { route_output(call.await?, output, bridge).await })
            as BoxFuture<'static, Result<(), FunctionError>>
    })
}

fn batch_function_invoker(
    f: ErasedFunction,
    in_ctx: ConversionContext,
    out_ctx: ConversionContext,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> BatchInvoker {
    Arc::new(move |messages| {
        let call = f.call_batch(messages, &in_ctx, &out_ctx);
        let (output, bridge) = (output.clone(), bridge.clone());
        Box::pin(async move { route_output(call.await?, output, bridge).await })
            as BoxFuture<'static, Result<(), FunctionError>>
    })
}

/// What every binding of an application shares.
pub(crate) struct AppShared {
    pub(crate) config: Arc<StreamConfig>,
    pub(crate) binders: Binders,
    pub(crate) conversion: Arc<ConversionService>,
    pub(crate) errors: ErrorChannels,
    pub(crate) extractors: HashMap<String, Arc<dyn PartitionKeyExtractor>>,
    pub(crate) selectors: HashMap<String, Arc<dyn PartitionSelector>>,
    pub(crate) retry_policies: HashMap<String, RetryPolicy>,
}

fn require(
    binder: &dyn crate::binder::Binder,
    binding: &str,
    capability: Capability,
) -> Result<(), StreamError> {
    if binder.capabilities().supports(capability) {
        Ok(())
    } else {
        Err(StreamError::Binder {
            binding: binding.to_owned(),
            source: crate::error::BinderError::Unsupported {
                binder: binder.binder_type().to_owned(),
                binding: binding.to_owned(),
                feature: capability.to_string(),
            },
        })
    }
}

impl AppShared {
    pub(crate) fn binding(&self, name: &str) -> Result<BindingProperties, StreamError> {
        let props = self.config.binding(name)?;
        let embedded = Some(stream_config::HeaderMode::EmbeddedHeaders);
        if props.consumer.header_mode == embedded || props.producer.header_mode == embedded {
            return Err(StreamError::InvalidBinding {
                binding: name.to_owned(),
                reason: "`header-mode: embedded-headers` (Spring Cloud Stream 1.x payload format) is not supported; binders carry headers natively, so remove the key".to_owned(),
            });
        }
        Ok(props)
    }

    pub(crate) fn conversion_context(
        &self,
        props: &BindingProperties,
        native: bool,
    ) -> ConversionContext {
        ConversionContext {
            conversion: Arc::clone(&self.conversion),
            content_type: props.content_type.as_str().into(),
            native,
        }
    }

    pub(crate) fn retry_policy(
        &self,
        binding: &str,
        props: &BindingProperties,
    ) -> Result<RetryPolicy, StreamError> {
        let c = &props.consumer;
        if let Some(name) = &c.retry_template_name {
            return self.retry_policies.get(name).cloned().ok_or_else(|| {
                StreamError::InvalidBinding {
                    binding: binding.to_owned(),
                    reason: format!(
                        "`consumer.retry-template-name` names `{name}`, which is not registered with StreamAppBuilder::retry_policy"
                    ),
                }
            });
        }
        Ok(RetryPolicy::new(
            c.max_attempts,
            BackOff::new(
                c.back_off_initial_interval,
                c.back_off_max_interval,
                c.back_off_multiplier,
            ),
            c.default_retryable,
            c.retryable_exceptions.clone(),
        ))
    }

    /// Builds the consumer request for one destination of an input binding.
    pub(crate) fn consumer_request(
        &self,
        binding: &str,
        props: &BindingProperties,
        destination: &str,
    ) -> Result<ConsumerRequest, StreamError> {
        let c = &props.consumer;
        if c.partitioned && props.group.is_none() {
            return Err(StreamError::InvalidBinding {
                binding: binding.to_owned(),
                reason: "A consumer group is required for a partitioned subscription; set `spring.cloud.stream.bindings.<binding>.group`".to_owned(),
            });
        }
        let global = self.config.stream();
        let index = c.instance_index.unwrap_or(global.instance_index);
        let count = c.instance_count.unwrap_or(global.instance_count);
        let mut properties = c.clone();
        if properties.instance_index_list.is_empty() {
            properties.instance_index_list = global.instance_index_list.clone();
        }
        Ok(
            ConsumerRequest::new(binding, destination, props.group.clone(), properties)
                .with_instance(index, count),
        )
    }

    fn check_consumer(
        &self,
        binder: &dyn crate::binder::Binder,
        req: &ConsumerRequest,
    ) -> Result<(), StreamError> {
        if req.properties.partitioned {
            require(binder, &req.binding_name, Capability::Partitioning)?;
        }
        if req.group.is_some() {
            require(binder, &req.binding_name, Capability::ConsumerGroups)?;
        }
        if req.properties.batch_mode {
            require(binder, &req.binding_name, Capability::BatchConsumer)?;
        }
        Ok(())
    }

    /// Provisions and binds every destination of an input binding.
    pub(crate) async fn bind_input(
        &self,
        binding: &str,
        props: &BindingProperties,
        invoker: Invoker,
        batch_invoker: Option<BatchInvoker>,
        error_handler: Option<ErrorHandler>,
    ) -> Result<Vec<Box<dyn Binding>>, StreamError> {
        let binder = self
            .binders
            .resolve(binding, props.binder.as_deref())
            .await?;
        let retry = self.retry_policy(binding, props)?;
        let mut bound = Vec::new();
        for destination in split_destinations(props.destination_or(binding)) {
            let request = self.consumer_request(binding, props, &destination)?;
            self.check_consumer(&*binder, &request)?;
            let identity = ConsumerIdentity {
                binding: binding.to_owned(),
                destination: destination.clone(),
                group: props.group.clone(),
                binder_type: binder.binder_type().to_owned(),
                error_channel: consumer_error_channel(&destination, props.group.as_deref()),
            };
            let handler = Arc::new(ConsumerPipeline {
                id: identity,
                invoker: Arc::clone(&invoker),
                batch_invoker: batch_invoker.clone(),
                retry: retry.clone(),
                errors: self.errors.clone(),
                error_handler: error_handler.clone(),
            });
            let bind_err = |source| StreamError::Binder {
                binding: binding.to_owned(),
                source,
            };
            let interval = self.config.stream().binding_retry_interval;
            let provisioned = late_binding(binding, interval, || {
                binder.provisioner().provision_consumer(&request)
            })
            .await
            .map_err(bind_err)?;
            tracing::info!(binding, destination = %destination, consumes = %provisioned.name, "binding consumer");
            let b = late_binding(binding, interval, || {
                binder.bind_consumer(
                    request.clone(),
                    provisioned.clone(),
                    Arc::clone(&handler) as Arc<dyn crate::binder::InboundHandler>,
                )
            })
            .await
            .map_err(bind_err)?;
            bound.push(b);
        }
        Ok(bound)
    }

    /// Provisions and binds an output binding (or a dynamic destination).
    pub(crate) async fn bind_output(&self, name: &str) -> Result<Arc<OutputBinding>, StreamError> {
        let props = self.binding(name)?;
        let binder = self.binders.resolve(name, props.binder.as_deref()).await?;
        let destination = props.destination_or(name).to_owned();
        let p = &props.producer;
        let partition = if p.is_partitioned() {
            require(&*binder, name, Capability::Partitioning)?;
            Some(
                PartitionHandler::from_properties(name, p, &self.extractors, &self.selectors)
                    .map_err(|source| StreamError::Partition {
                        binding: name.to_owned(),
                        source: Box::new(source),
                    })?,
            )
        } else {
            None
        };
        if !p.required_groups.is_empty() {
            require(&*binder, name, Capability::RequiredGroups)?;
        }
        let request = ProducerRequest::new(name, destination.clone(), p.clone());
        let bind_err = |source| StreamError::Binder {
            binding: name.to_owned(),
            source,
        };
        let interval = self.config.stream().binding_retry_interval;
        let provisioned = late_binding(name, interval, || {
            binder.provisioner().provision_producer(&request)
        })
        .await
        .map_err(bind_err)?;
        tracing::info!(binding = name, destination = %destination, "binding producer");
        let producer = late_binding(name, interval, || {
            binder.bind_producer(request.clone(), provisioned.clone())
        })
        .await
        .map_err(bind_err)?;
        Ok(Arc::new(OutputBinding {
            binding: name.to_owned(),
            destination: destination.clone(),
            binder_type: binder.binder_type().to_owned(),
            producer,
            partition,
            conversion: self.conversion_context(&props, p.use_native_encoding),
            error_channel: p
                .error_channel_enabled
                .then(|| (self.errors.clone(), producer_error_channel(&destination))),
        }))
    }
}

/// Runs a bind step, retrying every `binding-retry-interval` while the broker cannot be reached
/// (late binding); any other error is returned at once.
async fn late_binding<T, F, Fut>(
    binding: &str,
    interval: Duration,
    mut step: F,
) -> Result<T, crate::error::BinderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::error::BinderError>>,
{
    let mut attempt = 1u32;
    loop {
        match step().await {
            Err(e @ crate::error::BinderError::Connection { .. }) => {
                tracing::warn!(
                    binding,
                    attempt,
                    retry_in = ?interval,
                    error = %e,
                    "broker unreachable at bind time; retrying (spring.cloud.stream.binding-retry-interval)"
                );
                tokio::time::sleep(interval).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `;`- or `,`-separated names (`output-bindings`, `pollable-source`).
fn name_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Consumer destinations may list several, comma-separated.
fn split_destinations(destination: &str) -> Vec<String> {
    destination
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A running application.
pub struct StreamApp {
    shared: Arc<AppShared>,
    consumers: Vec<Box<dyn Binding>>,
    outputs: Arc<HashMap<String, Arc<OutputBinding>>>,
    bridge: StreamBridge,
    suppliers: Vec<JoinHandle<()>>,
    supplier_stop: watch::Sender<bool>,
    pollables: HashMap<String, Arc<PollableConsumer>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for StreamApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamApp")
            .field("bindings", &self.bindings())
            .finish_non_exhaustive()
    }
}

impl StreamApp {
    /// A builder.
    pub fn builder() -> StreamAppBuilder {
        StreamAppBuilder::new()
    }

    /// Sends to bindings and destinations.
    pub fn bridge(&self) -> StreamBridge {
        self.bridge.clone()
    }

    /// The resolved configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.shared.config
    }

    /// Consumer bindings and their states, then output bindings (always running).
    pub fn bindings(&self) -> Vec<(String, BindingState)> {
        self.consumers
            .iter()
            .map(|b| (b.name().to_owned(), b.state()))
            .chain(
                self.outputs
                    .keys()
                    .map(|k| (k.clone(), BindingState::Running)),
            )
            .collect()
    }

    /// The consumer bindings with this name (a binding with several destinations has several).
    pub fn consumer_bindings(&self, name: &str) -> Vec<&dyn Binding> {
        self.consumers
            .iter()
            .filter(|b| b.name() == name)
            .map(|b| &**b)
            .collect()
    }

    /// A pollable consumer configured in `spring.cloud.stream.pollable-source`.
    pub fn pollable(&self, name: &str) -> Option<Arc<PollableConsumer>> {
        self.pollables.get(name).cloned()
    }

    /// Stops suppliers, stops consumers (letting in-flight messages settle, bounded by the
    /// shutdown timeout), flushes and closes producers, then closes the binders.
    pub async fn shutdown(self) -> Result<(), StreamError> {
        shutdown::graceful(self).await
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), StreamError> {
        shutdown::wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await
    }
}
