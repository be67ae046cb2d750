//! Consumer transactions (`transacted=true` on a consumer): while a transacted consumer hands a
//! delivery to the runtime, its channel is in a task-local so that producers of the same binder
//! publishing from that task (the function's outputs, `StreamBridge` sends awaited in the
//! function) publish on the consumer's channel. The ack (or the DLQ republish) and those
//! publishes then commit or roll back together, as with Spring's `ConsumerChannelRegistry`.

use std::future::Future;

use lapin::Channel;

/// The consumer channel in a transaction, and which binder owns it.
#[derive(Clone)]
pub(crate) struct TxContext {
    /// Identity of the binder's shared state (producers of other binders do not join).
    pub(crate) binder: usize,
    pub(crate) channel: Channel,
}

tokio::task_local! {
    static CONSUMER_TX: TxContext;
}

/// Runs `f` with `ctx` as the current consumer transaction.
pub(crate) async fn scope<F: Future>(ctx: TxContext, f: F) -> F::Output {
    CONSUMER_TX.scope(ctx, f).await
}

/// The channel of the consumer transaction this task runs in, if it belongs to `binder`.
pub(crate) fn current(binder: usize) -> Option<Channel> {
    CONSUMER_TX
        .try_with(|c| (c.binder == binder).then(|| c.channel.clone()))
        .ok()
        .flatten()
}
