//! What a binder's provisioning, consumers and producers share: its connections and settings.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use stream_core::Message;

use stream_core::BinderError;
use tokio_util::sync::CancellationToken;

use crate::affinity::QueueLocator;
use crate::config::{RabbitBinderProperties, RabbitConnectionProperties};
use crate::connection::ConnectionSlot;
use crate::provisioning::{self, DeclarationPlan};
use crate::scaling::ConsumerScaling;

/// Receives each message the broker confirmed for a producer whose `confirm-ack-channel` names it
/// (the message as sent, plus header `amqp_publishConfirm=true`).
pub type ConfirmAckCallback = Arc<dyn Fn(Message<Bytes>) + Send + Sync>;

/// State shared by a binder's provisioner, consumers and producers.
pub(crate) struct Shared {
    /// Consuming and declaring (Spring's admin shares the consumer connection).
    pub(crate) consumer: ConnectionSlot,
    /// Publishing (and republishing to DLQs), kept apart so a blocked publisher never stalls consumers.
    pub(crate) publisher: ConnectionSlot,
    pub(crate) connection: RabbitConnectionProperties,
    pub(crate) binder: RabbitBinderProperties,
    pub(crate) shutdown: CancellationToken,
    /// Confirm-ack callbacks by the name `confirm-ack-channel` gives.
    pub(crate) confirm_acks: HashMap<String, ConfirmAckCallback>,
    /// Queue affinity (`nodes` + `admin-addresses`): a consumer connection per node.
    pub(crate) affinity: Option<Affinity>,
    /// Timing of `max-concurrency` scaling.
    pub(crate) scaling: ConsumerScaling,
}

/// Queue affinity: where each queue lives, and a connection to each node.
pub(crate) struct Affinity {
    pub(crate) locator: QueueLocator,
    /// One per `spring.rabbitmq.addresses` entry, in `nodes` order.
    pub(crate) slots: Vec<ConnectionSlot>,
}

impl Shared {
    /// Declares a plan on the consumer connection and registers it to be declared again on
    /// every new connection (as Spring's `RabbitAdmin` does). An unreachable broker is a
    /// temporary error: the runtime retries the binding (late binding).
    pub(crate) async fn declare(
        self: &Arc<Self>,
        what: &str,
        plan: DeclarationPlan,
    ) -> Result<(), BinderError> {
        if plan.is_empty() {
            return Ok(());
        }
        let conn = self
            .consumer
            .get()
            .await
            .map_err(|e| e.into_binder_error(what))?;
        provisioning::declare(&conn, &plan)
            .await
            .map_err(|e| e.into_binder_error(what))?;
        self.consumer.register(Arc::new(plan));
        Ok(())
    }

    /// Identity of this binder's state (a transacted consumer's producers join its
    /// transaction only within the same binder).
    pub(crate) fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }
}
