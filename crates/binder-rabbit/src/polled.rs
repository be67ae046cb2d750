//! Polled consumers (`spring.cloud.stream.pollable-source`): `basic.get` on a channel of the
//! consumer connection, mapped and settled like a pushed delivery.

use lapin::Channel;
use lapin::options::BasicGetOptions;
use stream_core::BinderError;
use stream_core::binder::{DeadLetter, Delivery, Pollable, Recovery, Settle, Settlement};
use tokio::sync::Mutex;

use crate::consumer::{Mapping, RabbitRawMessage, Settler};
use crate::error::RabbitError;
use crate::headers::HeaderPatterns;
use crate::provisioning::short;

/// A pollable source on one queue.
pub struct RabbitPollable {
    pub(crate) settler: Settler,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) no_ack: bool,
    pub(crate) channel: Mutex<Option<Channel>>,
}

impl std::fmt::Debug for RabbitPollable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPollable")
            .field("queue", &self.queue())
            .finish_non_exhaustive()
    }
}

impl RabbitPollable {
    fn queue(&self) -> &str {
        &self.settler.topology.queue
    }

    async fn channel(&self) -> Result<Channel, RabbitError> {
        let mut guard = self.channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *guard = None;
        let conn = self.settler.shared.consumer.get().await?;
        let lapin_err = |context: &str| {
            let context = format!("{context} (queue `{}`)", self.queue());
            move |source| RabbitError::Lapin { context, source }
        };
        let ch = conn
            .create_channel()
            .await
            .map_err(lapin_err("opening a polling channel"))?;
        if self.settler.props.transacted {
            ch.tx_select()
                .await
                .map_err(lapin_err("tx.select on the polling channel"))?;
        }
        *guard = Some(ch.clone());
        Ok(ch)
    }
}

impl Settle for RabbitPollable {
    type Raw = RabbitRawMessage;

    fn recovery(&self) -> Recovery {
        self.settler.recovery
    }

    async fn settle(
        &self,
        raw: &RabbitRawMessage,
        settlement: Settlement,
    ) -> Result<(), BinderError> {
        self.settler.settle(raw, settlement).await
    }

    async fn dead_letter(
        &self,
        raw: &RabbitRawMessage,
        letter: &DeadLetter,
    ) -> Result<(), BinderError> {
        self.settler.dead_letter(raw, letter).await
    }
}

impl Pollable for RabbitPollable {
    async fn fetch(&self) -> Result<Option<Delivery<RabbitRawMessage>>, BinderError> {
        let queue = self.queue();
        let ch = self
            .channel()
            .await
            .map_err(|e| e.into_binder_error(queue))?;
        let got = ch
            .basic_get(
                short(queue).map_err(|e| e.into_binder_error(queue))?,
                BasicGetOptions {
                    no_ack: self.no_ack,
                },
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
            return Ok(None);
        };
        let mapping = Mapping {
            queue,
            patterns: &self.patterns,
            max_decompressed_size: self.settler.shared.binder.max_decompressed_size,
        };
        Ok(Some(mapping.delivery("", &ch, message.delivery)))
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
