//! Polled consumers (`spring.cloud.stream.pollable-source`): `basic.get` on a channel of the
//! consumer connection, then the same decompression, de-batching, settling, retry/DLQ handling
//! and transactions as a pushed consumer.

use std::sync::Arc;

use async_trait::async_trait;
use lapin::Channel;
use lapin::options::BasicGetOptions;
use stream_core::BinderError;
use stream_core::binder::{InboundHandler, PollableSource};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::consumer::ConsumerContext;
use crate::error::RabbitError;
use crate::provisioning::short;
use stream_core::AckMode;

/// A pollable source on one queue.
pub(crate) struct RabbitPollableSource {
    pub(crate) ctx: Arc<ConsumerContext>,
    pub(crate) channel: Mutex<Option<Channel>>,
}

impl RabbitPollableSource {
    async fn channel(&self) -> Result<Channel, RabbitError> {
        let mut guard = self.channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *guard = None;
        let conn = self.ctx.shared.consumer.get().await?;
        let lapin_err = |context: &str| {
            let context = format!("{context} (queue `{}`)", self.ctx.topology.queue);
            move |source| RabbitError::Lapin { context, source }
        };
        let ch = conn
            .create_channel()
            .await
            .map_err(lapin_err("opening a polling channel"))?;
        if self.ctx.props.transacted {
            ch.tx_select()
                .await
                .map_err(lapin_err("tx.select on the polling channel"))?;
        }
        *guard = Some(ch.clone());
        Ok(ch)
    }
}

#[async_trait]
impl PollableSource for RabbitPollableSource {
    async fn poll(&self, handler: &dyn InboundHandler) -> Result<bool, BinderError> {
        let queue = &self.ctx.topology.queue;
        let ch = self
            .channel()
            .await
            .map_err(|e| e.into_binder_error(queue))?;
        let no_ack = self.ctx.props.acknowledge_mode == AckMode::None;
        let got = ch
            .basic_get(
                short(queue).map_err(|e| e.into_binder_error(queue))?,
                BasicGetOptions { no_ack },
            )
            .await
            .map_err(|e| {
                RabbitError::Lapin {
                    context: format!("basic.get from queue `{queue}`"),
                    source: e,
                }
                .into_binder_error(queue)
            })?;
        let Some(message) = got else {
            return Ok(false);
        };
        let span = tracing::debug_span!(
            "rabbit.poll",
            binding = %self.ctx.binding_name,
            queue = %queue,
            delivery_tag = message.delivery.delivery_tag
        );
        self.ctx
            .handle(handler, &ch, "", message.delivery)
            .instrument(span)
            .await;
        Ok(true)
    }

    async fn close(&self) -> Result<(), BinderError> {
        if let Some(ch) = self.channel.lock().await.take()
            && ch.status().connected()
        {
            let _ = ch.close(200, "pollable source closed".into()).await;
        }
        Ok(())
    }
}
