//! [`StreamAppBuilder::build`]: configuration, then output bindings, suppliers, input bindings
//! and pollable sources, in that order (inputs route to outputs).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use stream_config::{Environment, StreamConfig};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::binders::Binders;
use super::bridge::{Lru, StreamBridge};
use super::builder::StreamAppBuilder;
use super::invoke::{batch_function_invoker, function_invoker};
use super::output::OutputBinding;
use super::pollable::{self, PollableConsumer};
use super::shared::{AppShared, InputHandlers};
use super::streams;
use super::{DEFAULT_SHUTDOWN_TIMEOUT, StreamApp, StreamError, shutdown};
use crate::binder::Binding;
use crate::errors::{ErrorChannels, ErrorHandler};
use crate::expression::Expression;
use crate::function::{
    ErasedFunction, FUNCTION_ROUTER, FunctionCatalog, FunctionDefinition, FunctionKind,
};
use crate::meters::Meters;

type Outputs = HashMap<String, Arc<OutputBinding>>;

impl StreamAppBuilder {
    /// Validates the configuration and binds every function of
    /// `spring.cloud.function.definition` (or the only registered one).
    ///
    /// A broker that cannot be reached does not fail the build: the bindings are retried every
    /// `spring.cloud.stream.binding-retry-interval` in the background (late binding) and show
    /// state `starting` meanwhile. Set the interval to zero to make it fatal.
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
        for notice in config.notices() {
            tracing::warn!(key = %notice.key, origin = %notice.origin, "{notice}");
        }
        let shutdown_timeout = match self.shutdown_timeout {
            Some(t) => t,
            None => shutdown_timeout(&config)?,
        };
        let errors = ErrorChannels::default();
        for (channel, handler) in self.error_subscriptions {
            errors.subscribe(channel, handler);
        }
        #[cfg(feature = "admin")]
        let (recorder, prometheus) =
            crate::app::admin::metrics_recorder(config.management(), self.metrics_recorder);
        #[cfg(not(feature = "admin"))]
        let recorder = self.metrics_recorder;
        let meters = Meters::new(recorder);
        meters.describe();
        let shared = Arc::new(AppShared {
            binders: Binders::new(self.registry, Arc::clone(&config)),
            config: Arc::clone(&config),
            conversion: Arc::new(self.conversion),
            errors,
            extractors: self.extractors,
            selectors: self.selectors,
            retry_policies: self.retry_policies,
            shutdown_timeout,
            meters,
        });
        let functions = resolve_functions(&config, &self.catalog)?;
        let outputs = Arc::new(bind_outputs(&shared, &functions).await?);
        let bridge = StreamBridge {
            shared: Arc::clone(&shared),
            outputs: Arc::clone(&outputs),
            dynamic: Arc::new(Mutex::new(Lru::new(
                usize::try_from(config.stream().dynamic_destination_cache_size)
                    .unwrap_or(usize::MAX),
            ))),
        };
        let (supplier_stop, _) = watch::channel(false);
        let mut consumers: Vec<std::sync::Arc<dyn Binding>> = Vec::new();
        let mut suppliers: Vec<JoinHandle<()>> = Vec::new();
        let mut runners = Vec::new();
        for (def, f) in functions {
            if let Some(run) = f.stream_run() {
                let (runner, bound) =
                    streams::bind(&shared, &self.error_handlers, &def, run, &outputs, &bridge)
                        .await?;
                runners.push(runner);
                consumers.extend(bound.into_iter().map(std::sync::Arc::from));
                continue;
            }
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
                _ => consumers.extend(
                    bind_function_input(&shared, &self.error_handlers, &def, f, output, &bridge)
                        .await?
                        .into_iter()
                        .map(std::sync::Arc::from),
                ),
            }
        }
        let pollables = bind_pollables(&shared, &config).await?;
        tracing::info!(
            consumers = consumers.len(),
            producers = outputs.len(),
            suppliers = suppliers.len(),
            pollables = pollables.len(),
            "stream application bound"
        );
        #[allow(unused_mut)]
        let mut app = StreamApp {
            shared,
            consumers,
            outputs,
            bridge,
            suppliers,
            supplier_stop,
            streams: runners,
            pollables,
            shutdown_timeout,
            #[cfg(feature = "admin")]
            admin: None,
        };
        #[cfg(feature = "admin")]
        {
            let management = app.shared.config.management().clone();
            match crate::app::admin::AdminServer::start(&management, app.handle(), prometheus).await
            {
                Ok(server) => app.admin = server,
                Err(e) => {
                    // Nothing may stay bound behind a refused start.
                    if let Err(close) = app.shutdown().await {
                        tracing::warn!(error = %close, "shutdown after a failed start");
                    }
                    return Err(e);
                }
            }
        }
        Ok(app)
    }
}

fn shutdown_timeout(config: &StreamConfig) -> Result<std::time::Duration, StreamError> {
    let key = "spring.lifecycle.timeout-per-shutdown-phase";
    Ok(config
        .environment()
        .get(key)
        .map(|raw| {
            stream_config::parse_duration(raw).map_err(|reason| StreamError::InvalidBinding {
                binding: key.to_owned(),
                reason,
            })
        })
        .transpose()?
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT))
}

fn resolve_functions(
    config: &StreamConfig,
    catalog: &FunctionCatalog,
) -> Result<Vec<(FunctionDefinition, ErasedFunction)>, StreamError> {
    if config.stream().input_bindings.is_some() {
        return Err(StreamError::InvalidBinding {
            binding: "spring.cloud.stream.input-bindings".to_owned(),
            reason: "input bindings without a function are not supported; register a consumer function (its binding is `<name>-in-0`) or use `spring.cloud.stream.pollable-source`".to_owned(),
        });
    }
    let mut out = Vec::new();
    for d in select_definitions(config, catalog)? {
        if d.name() == FUNCTION_ROUTER && !catalog.names().any(|n| n == FUNCTION_ROUTER) {
            let router = catalog.router(routing_expression(config)?);
            out.push((d, router));
            continue;
        }
        let f = catalog.resolve(&d)?;
        out.push((d, f));
    }
    Ok(out)
}

/// `spring.cloud.function.routing-expression` (or Spring Cloud Stream's older
/// `spring.cloud.stream.function.routing-expression`), parsed once.
fn routing_expression(config: &StreamConfig) -> Result<Option<Expression>, StreamError> {
    for key in [
        "spring.cloud.function.routing-expression",
        "spring.cloud.stream.function.routing-expression",
    ] {
        if let Some(text) = config.environment().get(key) {
            return Expression::parse(text)
                .map(Some)
                .map_err(|e| StreamError::InvalidBinding {
                    binding: key.to_owned(),
                    reason: e.with_key(key).to_string(),
                });
        }
    }
    Ok(None)
}

fn select_definitions(
    config: &StreamConfig,
    catalog: &FunctionCatalog,
) -> Result<Vec<FunctionDefinition>, StreamError> {
    if let Some(text) = config.function_definition() {
        if catalog.names().next().is_none() {
            // A producer-only (StreamBridge) application next to a service's configuration:
            // the definition is the service's, not this program's.
            tracing::warn!(
                definition = text,
                "spring.cloud.function.definition names functions but none is registered; \
                 binding no function (a StreamBridge-only application)"
            );
            return Ok(Vec::new());
        }
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

/// The functions' outputs, `output-bindings` and `source`.
async fn bind_outputs(
    shared: &AppShared,
    functions: &[(FunctionDefinition, ErasedFunction)],
) -> Result<Outputs, StreamError> {
    let mut outputs = HashMap::new();
    for (def, f) in functions {
        // A stream function may have several outputs (`-out-0`, `-out-1`, ...).
        let count = match f.stream_run() {
            Some(run) => run.shape.outputs,
            None => usize::from(f.kind().has_output()),
        };
        for j in 0..count {
            let name = def.output_binding(j);
            let output = shared.bind_output(&name).await?;
            outputs.insert(name, output);
        }
    }
    let stream = shared.config.stream();
    let extra = name_list(stream.output_bindings.as_deref())
        .into_iter()
        .chain(
            name_list(stream.source.as_deref())
                .into_iter()
                .map(|s| format!("{s}-out-0")),
        );
    for name in extra {
        if let Entry::Vacant(slot) = outputs.entry(name) {
            let output = shared.bind_output(slot.key()).await?;
            slot.insert(output);
        }
    }
    Ok(outputs)
}

/// Binds the input of a function or consumer.
async fn bind_function_input(
    shared: &AppShared,
    error_handlers: &HashMap<String, ErrorHandler>,
    def: &FunctionDefinition,
    f: ErasedFunction,
    output: Option<Arc<OutputBinding>>,
    bridge: &StreamBridge,
) -> Result<Vec<Box<dyn Binding>>, StreamError> {
    let in_name = def.input_binding(0);
    let in_props = shared.binding(&in_name)?;
    let in_ctx = shared.conversion_context(&in_props, in_props.consumer.use_native_decoding);
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
    let error_handler = error_handler_of(error_handlers, &in_name, &in_props)?;
    shared
        .bind_input(
            &in_name,
            &in_props,
            InputHandlers {
                invoker,
                batch_invoker,
                error_handler,
                stream: None,
            },
        )
        .await
}

/// The handler `error-handler-definition` names, if any.
pub(crate) fn error_handler_of(
    error_handlers: &HashMap<String, ErrorHandler>,
    binding: &str,
    props: &stream_config::BindingProperties,
) -> Result<Option<ErrorHandler>, StreamError> {
    match &props.error_handler_definition {
        Some(name) => error_handlers.get(name).cloned().map(Some).ok_or_else(|| {
            StreamError::InvalidBinding {
                binding: binding.to_owned(),
                reason: format!(
                    "`error-handler-definition` names `{name}`, which is not registered with StreamAppBuilder::error_handler"
                ),
            }
        }),
        None => Ok(None),
    }
}

async fn bind_pollables(
    shared: &Arc<AppShared>,
    config: &StreamConfig,
) -> Result<HashMap<String, Arc<PollableConsumer>>, StreamError> {
    let mut pollables = HashMap::new();
    for name in name_list(config.stream().pollable_source.as_deref()) {
        let binding = format!("{name}-in-0");
        let consumer = pollable::bind(shared, &binding).await?;
        pollables.insert(name, Arc::new(consumer));
    }
    Ok(pollables)
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
