//! What every binding of an application shares, and binding one input or output through the
//! binder that serves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stream_config::{BindingProperties, StreamConfig};

use super::StreamError;
use super::binders::Binders;
use super::output::OutputBinding;
use crate::binder::Binding;
use crate::binder::erased::{DynBinder, DynPollable, InputRequest, OutputRequest};
use crate::binder::lifecycle::Timing;
use crate::convert::ConversionService;
use crate::errors::{ErrorChannels, ErrorHandler, producer_error_channel};
use crate::function::ConversionContext;
use crate::function::stream::Intake;
use crate::meters::Meters;
use crate::partition::{PartitionHandler, PartitionKeyExtractor, PartitionSelector};
use crate::process::pipeline::{BatchInvoker, ConsumerIdentity, ConsumerPipeline, Invoker};
use crate::retry::{BackOff, RetryPolicy};

/// What every binding of an application shares.
pub(crate) struct AppShared {
    pub(crate) config: Arc<StreamConfig>,
    pub(crate) binders: Binders,
    pub(crate) conversion: Arc<ConversionService>,
    pub(crate) errors: ErrorChannels,
    pub(crate) extractors: HashMap<String, Arc<dyn PartitionKeyExtractor>>,
    pub(crate) selectors: HashMap<String, Arc<dyn PartitionSelector>>,
    pub(crate) retry_policies: HashMap<String, RetryPolicy>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) meters: Meters,
}

/// What an input binding's deliveries are handed to.
pub(crate) struct InputHandlers {
    pub(crate) invoker: Invoker,
    pub(crate) batch_invoker: Option<BatchInvoker>,
    pub(crate) error_handler: Option<ErrorHandler>,
    /// A stream function's input.
    pub(crate) stream: Option<Arc<Intake>>,
}

impl AppShared {
    /// A binding's properties, refusing what cannot work.
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

    fn timing(&self) -> Timing {
        Timing {
            retry_interval: self.config.stream().binding_retry_interval,
            stop_timeout: self.shutdown_timeout,
        }
    }

    fn pipeline(
        &self,
        binding: &str,
        destination: &str,
        binder: &dyn DynBinder,
        props: &BindingProperties,
        retry: &RetryPolicy,
        handlers: &InputHandlers,
    ) -> Arc<ConsumerPipeline> {
        let group = props.group.as_deref().filter(|g| !g.trim().is_empty());
        let system = binder.messaging_system();
        Arc::new(ConsumerPipeline {
            id: ConsumerIdentity::new(binding, destination, group, system),
            invoker: Arc::clone(&handlers.invoker),
            batch_invoker: handlers.batch_invoker.clone(),
            retry: retry.clone(),
            errors: self.errors.clone(),
            error_handler: handlers.error_handler.clone(),
            meters: Arc::new(self.meters.consumer(system, binding, destination, group)),
            stream: handlers.stream.clone(),
        })
    }

    /// Provisions and binds every destination of an input binding (late binding: a broker
    /// that is down is retried in the background).
    pub(crate) async fn bind_input(
        &self,
        binding: &str,
        props: &BindingProperties,
        handlers: InputHandlers,
    ) -> Result<Vec<Box<dyn Binding>>, StreamError> {
        let binder = self
            .binders
            .resolve(binding, props.binder.as_deref())
            .await?;
        let retry = self.retry_policy(binding, props)?;
        // Spring's BindingService: a partitioned binding with an `instance-index-list` binds one
        // consumer per listed partition, each as if it were that instance.
        let list = if props.consumer.instance_index_list.is_empty() {
            &self.config.stream().instance_index_list
        } else {
            &props.consumer.instance_index_list
        };
        let partitions: Vec<Option<u32>> = if props.consumer.partitioned && !list.is_empty() {
            let mut l = list.clone();
            l.sort_unstable();
            l.dedup();
            l.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut bound = Vec::new();
        for destination in split_destinations(props.destination_or(binding)) {
            let pipeline = self.pipeline(
                binding,
                &destination,
                binder.as_ref(),
                props,
                &retry,
                &handlers,
            );
            for &partition in &partitions {
                tracing::info!(binding, destination = %destination, ?partition, "binding consumer");
                let b = binder
                    .bind_input(InputRequest {
                        binding,
                        destination: &destination,
                        partition,
                        props,
                        stream: self.config.stream(),
                        pipeline: Arc::clone(&pipeline),
                        timing: self.timing(),
                    })
                    .await
                    .map_err(|cause| StreamError::Binder {
                        binding: binding.to_owned(),
                        cause,
                    })?;
                bound.push(b);
            }
        }
        Ok(bound)
    }

    /// Provisions and binds a pollable source.
    pub(crate) async fn bind_pollable(
        &self,
        binding: &str,
        props: &BindingProperties,
        handlers: InputHandlers,
    ) -> Result<(Box<dyn DynPollable>, Arc<ConsumerPipeline>), StreamError> {
        let binder = self
            .binders
            .resolve(binding, props.binder.as_deref())
            .await?;
        let retry = self.retry_policy(binding, props)?;
        let destination = props.destination_or(binding).to_owned();
        let pipeline = self.pipeline(
            binding,
            &destination,
            binder.as_ref(),
            props,
            &retry,
            &handlers,
        );
        let source = binder
            .bind_pollable(InputRequest {
                binding,
                destination: &destination,
                partition: None,
                props,
                stream: self.config.stream(),
                pipeline: Arc::clone(&pipeline),
                timing: self.timing(),
            })
            .await
            .map_err(|cause| StreamError::Binder {
                binding: binding.to_owned(),
                cause,
            })?;
        Ok((source, pipeline))
    }

    /// Provisions and binds an output binding (or a dynamic destination).
    pub(crate) async fn bind_output(&self, name: &str) -> Result<Arc<OutputBinding>, StreamError> {
        let props = self.binding(name)?;
        let binder = self.binders.resolve(name, props.binder.as_deref()).await?;
        let destination = props.destination_or(name).to_owned();
        let p = &props.producer;
        let partition = if p.is_partitioned() {
            Some(
                PartitionHandler::from_properties(name, p, &self.extractors, &self.selectors)
                    .map_err(|cause| StreamError::Partition {
                        binding: name.to_owned(),
                        cause: Box::new(cause),
                    })?,
            )
        } else {
            None
        };
        tracing::info!(binding = name, destination = %destination, "binding producer");
        let producer = binder
            .bind_output(OutputRequest {
                binding: name,
                destination: &destination,
                props: &props,
                retry_interval: self.config.stream().binding_retry_interval,
            })
            .await
            .map_err(|cause| StreamError::Binder {
                binding: name.to_owned(),
                cause,
            })?;
        let system = binder.messaging_system();
        Ok(Arc::new(OutputBinding {
            binding: name.into(),
            span_name: format!("send {destination}").into(),
            meters: self.meters.producer(system, name, &destination),
            system,
            destination: destination.as_str().into(),
            binder_type: binder.binder_type(),
            producer,
            partition,
            conversion: self.conversion_context(&props, p.use_native_encoding),
            error_channel: p
                .error_channel_enabled
                .then(|| (self.errors.clone(), producer_error_channel(&destination))),
            running: std::sync::atomic::AtomicBool::new(p.auto_startup),
        }))
    }
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
