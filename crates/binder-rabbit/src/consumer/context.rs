//! What a consumer binding's tasks share, fixed at bind time, and opening a consuming channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::raw::Mapping;
use super::settle::Settler;
use crate::config::RabbitConsumerProperties;
use crate::error::RabbitError;
use crate::headers::HeaderPatterns;
use crate::provisioning::{ConsumerTopology, short};
use crate::scaling::Scaler;
use crate::shared::Shared;

/// How long opening a channel and subscribing may take on a connection before it is presumed
/// dead.
pub(crate) const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything a consumer's tasks need, fixed at bind time.
pub(crate) struct ConsumerContext {
    pub(crate) binding: String,
    pub(crate) topology: Arc<ConsumerTopology>,
    pub(crate) props: RabbitConsumerProperties,
    pub(crate) patterns: HeaderPatterns,
    pub(crate) shared: Arc<Shared>,
    pub(crate) concurrency: u32,
    /// `max-concurrency` above `concurrency`: consumers are added and retired by load.
    pub(crate) scaler: Option<Scaler>,
    /// `batch-mode` with consumer-side `enable-batching`: deliveries are gathered.
    pub(crate) gather: bool,
    /// `acknowledge-mode: NONE`: the broker settles on delivery.
    pub(crate) no_ack: bool,
    pub(crate) settler: Settler,
    tag_counter: AtomicU64,
}

impl ConsumerContext {
    #[allow(
        clippy::too_many_arguments,
        reason = "bind-time assembly of resolved parts"
    )]
    pub(crate) fn new(
        binding: String,
        topology: Arc<ConsumerTopology>,
        props: RabbitConsumerProperties,
        shared: Arc<Shared>,
        concurrency: u32,
        scaler: Option<Scaler>,
        gather: bool,
        no_ack: bool,
        settler: Settler,
    ) -> Self {
        Self {
            patterns: HeaderPatterns::new(&props.header_patterns),
            binding,
            topology,
            props,
            shared,
            concurrency,
            scaler,
            gather,
            no_ack,
            settler,
            tag_counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn queue(&self) -> &str {
        &self.topology.queue
    }

    /// Whether the broker deletes the queue once its last consumer leaves (auto-delete, as
    /// this binding declares it).
    pub(crate) fn deleted_without_consumers(&self) -> bool {
        self.topology
            .plan
            .queues
            .iter()
            .any(|q| q.name == self.topology.queue && q.auto_delete)
    }

    pub(crate) fn mapping(&self) -> Mapping<'_> {
        Mapping {
            queue: self.queue(),
            patterns: &self.patterns,
            max_decompressed_size: self.shared.binder.max_decompressed_size,
        }
    }

    fn consumer_tag(&self) -> String {
        match &self.props.consumer_tag_prefix {
            Some(p) if !p.is_empty() => {
                let n = self.tag_counter.fetch_add(1, Ordering::Relaxed);
                format!("{p}#{n}")
            }
            _ => String::new(),
        }
    }

    /// The connection to consume on: with queue affinity, one to the node that hosts the queue
    /// (asked of the management API at each (re)connect); otherwise, or when that fails, the
    /// binder's consumer connection.
    async fn connection(&self) -> Result<Arc<lapin::Connection>, RabbitError> {
        if let Some(affinity) = &self.shared.affinity
            && !self.topology.anonymous
            && let Some(index) = affinity
                .locator
                .locate(&self.shared.connection.virtual_host, self.queue())
                .await
            && let Some(slot) = affinity.slots.get(index)
        {
            match slot.get().await {
                Ok(conn) => {
                    tracing::debug!(binding = %self.binding, queue = %self.queue(),
                        address = %slot.target(), "queue affinity: consuming on the queue's node");
                    return Ok(conn);
                }
                Err(e) => tracing::warn!(binding = %self.binding, queue = %self.queue(),
                    error = %e, "queue affinity: the queue's node is unreachable; using the default connection"),
            }
        }
        self.shared.consumer.get().await
    }

    /// Declares this binding's topology again when its queue vanished (deleted while consumed,
    /// as Spring's container re-declares on restart); `false` when the binding does not
    /// declare the queue itself or the declaration failed.
    pub(crate) async fn redeclare(&self) -> bool {
        if !self
            .topology
            .plan
            .queues
            .iter()
            .any(|q| q.name == self.topology.queue)
        {
            return false;
        }
        let declared = match self.connection().await {
            Ok(conn) => crate::provisioning::declare(&conn, &self.topology.plan).await,
            Err(e) => Err(e),
        };
        match declared {
            Ok(()) => {
                tracing::info!(binding = %self.binding, queue = %self.queue(),
                    "the queue was missing; declared it again");
                true
            }
            Err(e) => {
                tracing::warn!(binding = %self.binding, queue = %self.queue(), error = %e,
                    "the queue is missing and declaring it again failed");
                false
            }
        }
    }

    /// Opens a channel (prefetch, `tx.select` when transacted) and subscribes.
    pub(crate) async fn open(
        &self,
    ) -> Result<(Arc<lapin::Connection>, Channel, lapin::Consumer), RabbitError> {
        let conn = self.connection().await?;
        // A connection that died silently (no FIN, no heartbeat yet) never answers: bounded, and
        // dropped so the next attempt reconnects.
        match tokio::time::timeout(SETUP_TIMEOUT, self.subscribe(&conn)).await {
            Ok(Ok((channel, consumer))) => Ok((conn, channel, consumer)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.discard(&conn).await;
                Err(RabbitError::Connect {
                    target: self.shared.consumer.target().to_owned(),
                    reason: format!(
                        "the broker did not answer within {SETUP_TIMEOUT:?} while subscribing; the connection is presumed dead"
                    ),
                })
            }
        }
    }

    /// Drops `conn` from whichever of the binder's connection slots holds it.
    pub(crate) async fn discard(&self, conn: &Arc<lapin::Connection>) {
        if self.shared.consumer.discard(conn).await {
            return;
        }
        if let Some(affinity) = &self.shared.affinity {
            for slot in &affinity.slots {
                if slot.discard(conn).await {
                    return;
                }
            }
        }
    }

    async fn subscribe(
        &self,
        conn: &Arc<lapin::Connection>,
    ) -> Result<(Channel, lapin::Consumer), RabbitError> {
        let lapin_err = |context: &str| {
            let context = format!("{context} (queue `{}`)", self.queue());
            move |source| RabbitError::Lapin { context, source }
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(lapin_err("opening a consumer channel"))?;
        if !self.no_ack {
            let prefetch = if self.gather {
                self.props
                    .prefetch
                    .max(u16::try_from(self.props.batch_size).unwrap_or(u16::MAX))
            } else {
                self.props.prefetch
            };
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(lapin_err("setting prefetch"))?;
        }
        if self.props.transacted && !self.no_ack {
            channel
                .tx_select()
                .await
                .map_err(lapin_err("tx.select on the consumer channel"))?;
        }
        let mut args = FieldTable::default();
        if let Some(p) = self.props.consumer_priority {
            args.insert("x-priority".into(), AMQPValue::LongInt(p));
        }
        let consumer = channel
            .basic_consume(
                short(self.queue())?,
                short(&self.consumer_tag())?,
                BasicConsumeOptions {
                    no_ack: self.no_ack,
                    exclusive: self.props.exclusive,
                    ..BasicConsumeOptions::default()
                },
                args,
            )
            .await
            .map_err(lapin_err("starting to consume"))?;
        // A connection lost between the subscription and now is noticed at once, not never.
        if !channel.status().connected() || !conn.status().connected() {
            return Err(RabbitError::Connect {
                target: self.shared.consumer.target().to_owned(),
                reason: "the connection closed while subscribing".to_owned(),
            });
        }
        Ok((channel, consumer))
    }
}
