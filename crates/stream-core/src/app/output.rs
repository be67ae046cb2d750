//! Output bindings: partition selection and sending through the binder's producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use crate::binder::erased::DynProducer;
use crate::binder::{Binding, BindingState, BindingStatus, Outbound};
use crate::error::{BinderError, FunctionError};
use crate::errors::{ErrorChannels, ErrorMessage};
use crate::function::ConversionContext;
use crate::message::{Message, names};
use crate::meters::ProducerMeters;
use crate::partition::PartitionHandler;

/// One bound output: a producer plus what is applied before each send.
pub(crate) struct OutputBinding {
    pub(crate) binding: Arc<str>,
    pub(crate) destination: Arc<str>,
    pub(crate) binder_type: &'static str,
    /// OpenTelemetry `messaging.system` of the binder.
    pub(crate) system: &'static str,
    /// `otel.name` of the send span (`send <destination>`).
    pub(crate) span_name: Arc<str>,
    pub(crate) meters: ProducerMeters,
    pub(crate) producer: Arc<dyn DynProducer>,
    pub(crate) partition: Option<PartitionHandler>,
    /// Converts payloads for this binding (its content type, native encoding).
    pub(crate) conversion: ConversionContext,
    /// Producer error channel (`<destination>.errors`) when `error-channel-enabled`.
    pub(crate) error_channel: Option<(ErrorChannels, String)>,
    /// Started (`producer.auto-startup`, or `start`): a stopped output refuses to send.
    pub(crate) running: AtomicBool,
}

impl OutputBinding {
    /// Removes the framework's internal headers and selects the partition: what the binder
    /// receives.
    fn outbound(&self, mut message: Message<Bytes>) -> Result<Outbound, BinderError> {
        message.headers_mut().retain(|k, _| !names::is_internal(k));
        let partition = match &self.partition {
            Some(handler) => Some(
                handler
                    .select(&mut message)
                    .map_err(|e| BinderError::send(&*self.destination, &e).with_source(e))?,
            ),
            None => None,
        };
        Ok(Outbound::new(message).with_partition(partition))
    }

    /// Applies partitioning and sends.
    pub(crate) async fn send(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        if !self.running.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        let span = tracing::info_span!(
            "stream.send",
            otel.name = %self.span_name,
            otel.kind = "producer",
            messaging.system = self.system,
            messaging.destination.name = %self.destination,
            messaging.operation.name = "send",
            messaging.operation.type = "send",
            binding = %self.binding,
        );
        #[cfg(feature = "otel")]
        let message = {
            let mut message = message;
            crate::telemetry::inject(&span, message.headers_mut());
            message
        };
        let start = std::time::Instant::now();
        let result = self.send_traced(message).instrument(span).await;
        self.meters.sent(start, &result);
        result
    }

    async fn send_traced(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        {
            let outbound = self.outbound(message)?;
            match &self.error_channel {
                None => self.producer.send(outbound).await,
                Some((channels, channel)) => {
                    let copy = outbound.message.clone();
                    let result = self.producer.send(outbound).await;
                    if let Err(e) = &result {
                        channels
                            .publish(ErrorMessage {
                                failed: copy,
                                error: Arc::new(
                                    FunctionError::msg(e.to_string()).with_kind("send"),
                                ),
                                raw: None,
                                binding: self.binding.to_string(),
                                channel: channel.clone(),
                                undelivered: e.undelivered().cloned(),
                            })
                            .await;
                    }
                    result
                }
            }
        }
    }
}

impl OutputBinding {
    /// Whether the binding is started.
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    #[cold]
    fn stopped(&self) -> BinderError {
        BinderError::new(
            crate::error::BinderErrorKind::Closed,
            format!(
                "output binding `{}` is stopped (producer.auto-startup=false, or stopped); start it before sending",
                self.binding
            ),
        )
        .with_destination(&*self.destination)
    }
}

#[async_trait]
impl Binding for OutputBinding {
    fn name(&self) -> &str {
        &self.binding
    }

    fn is_input(&self) -> bool {
        false
    }

    fn destination(&self) -> &str {
        &self.destination
    }

    fn group(&self) -> Option<&str> {
        None
    }

    fn binder_type(&self) -> &str {
        self.binder_type
    }

    fn status(&self) -> BindingStatus {
        if !self.running.load(Ordering::Acquire) {
            return BindingStatus::new(BindingState::Stopped);
        }
        match self.producer.pending() {
            Some(reason) => BindingStatus::because(BindingState::Starting, reason),
            None => BindingStatus::new(BindingState::Running),
        }
    }

    async fn start(&self) -> Result<(), BinderError> {
        self.running.store(true, Ordering::Release);
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        self.running.store(false, Ordering::Release);
        self.producer.flush().await
    }

    async fn pause(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn resume(&self) -> Result<(), BinderError> {
        Ok(())
    }
}
