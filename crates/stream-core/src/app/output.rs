//! Output bindings: partition selection and sending through the binder's producer.

use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use crate::binder::Producer;
use crate::error::{BinderError, FunctionError};
use crate::errors::{ErrorChannels, ErrorMessage};
use crate::function::ConversionContext;
use crate::message::{Message, names};
use crate::partition::PartitionHandler;

/// One bound output: a producer plus what is applied before each send.
pub(crate) struct OutputBinding {
    pub(crate) binding: String,
    pub(crate) destination: String,
    pub(crate) binder_type: String,
    pub(crate) producer: Arc<dyn Producer>,
    pub(crate) partition: Option<PartitionHandler>,
    /// Converts payloads for this binding (its content type, native encoding).
    pub(crate) conversion: ConversionContext,
    /// Producer error channel (`<destination>.errors`) when `error-channel-enabled`.
    pub(crate) error_channel: Option<(ErrorChannels, String)>,
}

impl OutputBinding {
    /// Applies partitioning and sends.
    pub(crate) async fn send(&self, mut message: Message<Bytes>) -> Result<(), BinderError> {
        let span = tracing::debug_span!(
            "stream.publish",
            messaging.system = %self.binder_type,
            messaging.destination.name = %self.destination,
            messaging.operation.name = "publish",
            binding = %self.binding,
        );
        async move {
            message.headers_mut().remove(names::DELIVERY_ATTEMPT);
            if let Some(partition) = &self.partition {
                partition
                    .apply(&mut message)
                    .map_err(|e| BinderError::Send {
                        destination: self.destination.clone(),
                        reason: e.to_string(),
                        source: Some(Box::new(e)),
                    })?;
            }
            match &self.error_channel {
                None => self.producer.send(message).await,
                Some((channels, channel)) => {
                    let copy = message.clone();
                    let result = self.producer.send(message).await;
                    if let Err(e) = &result {
                        channels
                            .publish(ErrorMessage {
                                failed: copy,
                                error: Arc::new(
                                    FunctionError::msg(e.to_string()).with_kind("send"),
                                ),
                                raw: None,
                                binding: self.binding.clone(),
                                channel: channel.clone(),
                            })
                            .await;
                    }
                    result
                }
            }
        }
        .instrument(span)
        .await
    }
}
