//! Named handlers a producer refers to by property: transaction listeners
//! (`transaction-listener`), message-queue selectors (`message-queue-selector`) and send
//! callbacks (`send-call-back`). They are resolved once, at bind time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use stream_core::Message;

/// The outcome of a local transaction, or of a check-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionState {
    /// Make the half message visible to consumers.
    Commit,
    /// Discard the half message.
    Rollback,
    /// Not decided yet: the broker asks again later (check-back).
    Unknown,
}

/// A transactional producer's listener (Java `TransactionListener`).
///
/// Both methods are synchronous, as in the client: `execute` runs inside `send` (keep it
/// short, or move the work elsewhere and answer `Unknown`); `check` runs on the client's own
/// runtime when the broker asks about an undecided transaction.
pub trait TransactionHandler: Send + Sync + 'static {
    /// Runs the local transaction for a half message that the broker has stored. `args` is the
    /// message's `TRANSACTIONAL_ARGS` header.
    fn execute(&self, message: &Message<Bytes>, args: Option<&str>) -> TransactionState;
    /// Answers the broker's check-back for an undecided transaction. The message carries the
    /// inbound headers (`ROCKET_MQ_TRANSACTION_ID`, keys, user properties).
    fn check(&self, message: &Message<Bytes>) -> TransactionState;
}

/// Picks a queue index in `0..queue_count` for a message (Java `MessageQueueSelector`).
pub type MessageQueueSelectorFn = dyn Fn(&Message<Bytes>, usize) -> usize + Send + Sync;

/// What an asynchronous send reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReceipt {
    /// The topic sent to.
    pub topic: String,
    /// The message id the broker returned.
    pub message_id: Option<String>,
    /// The queue the message went to.
    pub queue_id: Option<i32>,
    /// Its offset in that queue.
    pub queue_offset: u64,
}

/// Receives the outcome of every asynchronous send of a producer (Java `SendCallback`).
pub type SendCallbackFn = dyn Fn(&Result<SendReceipt, String>) + Send + Sync;

/// The registered handlers, by name.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) transaction_listeners: HashMap<String, Arc<dyn TransactionHandler>>,
    pub(crate) selectors: HashMap<String, Arc<MessageQueueSelectorFn>>,
    pub(crate) callbacks: HashMap<String, Arc<SendCallbackFn>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |m: Vec<&String>| m.into_iter().cloned().collect::<Vec<_>>();
        f.debug_struct("Hooks")
            .field(
                "transaction_listeners",
                &names(self.transaction_listeners.keys().collect()),
            )
            .field("selectors", &names(self.selectors.keys().collect()))
            .field("callbacks", &names(self.callbacks.keys().collect()))
            .finish()
    }
}

/// Names of a map's entries, for error messages.
pub(crate) fn known<V>(map: &HashMap<String, V>) -> String {
    let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        "none is registered".to_owned()
    } else {
        format!("registered: {}", names.join(", "))
    }
}
