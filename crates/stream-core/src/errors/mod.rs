//! Error channels: every binding has one, bridged to the application's global error channel.
//!
//! When a consumed message fails after its retries, the runtime publishes an [`ErrorMessage`]
//! to the binding's channel (`<destination>.<group>.errors`) and to the global one
//! (`errorChannel`). Subscribers observe; the binder's own recovery (DLQ) runs afterwards unless
//! the binding names an `error-handler-definition`, which replaces it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::FunctionError;
use crate::message::Message;

/// Name of the global error channel.
pub const GLOBAL_ERROR_CHANNEL: &str = "errorChannel";

/// A failed message with its error, as error handlers receive it.
#[derive(Clone)]
pub struct ErrorMessage {
    /// The message that failed, as delivered (or as sent, for producer errors).
    pub failed: Message<Bytes>,
    /// The error and its cause chain.
    pub error: Arc<FunctionError>,
    /// The broker's raw message, when the binder gave one.
    pub raw: Option<Arc<dyn Any + Send + Sync>>,
    /// Binding the failure happened on.
    pub binding: String,
    /// Error channel name (`<destination>.<group>.errors`, or `<destination>.errors` for
    /// producers).
    pub channel: String,
    /// For a producer error: the broker returned or refused the message (reply code and text,
    /// exchange, routing key), as Spring's `ReturnedAmqpMessageException` /
    /// `NackedAmqpMessageException` carry them; `failed` is the original message.
    pub undelivered: Option<crate::error::Undelivered>,
}

impl fmt::Debug for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorMessage")
            .field("binding", &self.binding)
            .field("channel", &self.channel)
            .field("error", &self.error)
            .field("undelivered", &self.undelivered)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// An error handler: observes [`ErrorMessage`]s. Returning an error from a handler named by
/// `error-handler-definition` makes the failure go to the binder's recovery after all.
pub type ErrorHandler =
    Arc<dyn Fn(ErrorMessage) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync>;

/// Wraps an async closure as an [`ErrorHandler`].
pub fn error_handler<F, Fut>(f: F) -> ErrorHandler
where
    F: Fn(ErrorMessage) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), FunctionError>> + Send + 'static,
{
    Arc::new(move |m| Box::pin(f(m)))
}

/// Subscribers of error channels, by channel name.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use stream_core::errors::{ErrorChannels, ErrorMessage, error_handler, GLOBAL_ERROR_CHANNEL};
/// use stream_core::{FunctionError, Message};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let channels = ErrorChannels::default();
/// let count = Arc::new(AtomicUsize::new(0));
/// let c = count.clone();
/// channels.subscribe(GLOBAL_ERROR_CHANNEL, error_handler(move |_m: ErrorMessage| {
///     let c = c.clone();
///     async move { c.fetch_add(1, Ordering::SeqCst); Ok(()) }
/// }));
/// channels.publish(ErrorMessage {
///     failed: Message::bytes("x"),
///     error: Arc::new(FunctionError::msg("boom")),
///     raw: None,
///     binding: "in-0".into(),
///     channel: "orders.audit.errors".into(),
///     undelivered: None,
/// }).await;
/// assert_eq!(count.load(Ordering::SeqCst), 1); // bridged to the global channel
/// # });
/// ```
#[derive(Clone, Default)]
pub struct ErrorChannels {
    subscribers: Arc<RwLock<HashMap<String, Vec<ErrorHandler>>>>,
}

impl fmt::Debug for ErrorChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .subscribers
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ErrorChannels")
            .field("channels", &names)
            .finish()
    }
}

impl ErrorChannels {
    /// Subscribes a handler to a channel (a binding's `<destination>.<group>.errors`, or
    /// [`GLOBAL_ERROR_CHANNEL`]).
    pub fn subscribe(&self, channel: impl Into<String>, handler: ErrorHandler) {
        if let Ok(mut subs) = self.subscribers.write() {
            subs.entry(channel.into()).or_default().push(handler);
        }
    }

    fn handlers(&self, channel: &str) -> Vec<ErrorHandler> {
        self.subscribers
            .read()
            .ok()
            .and_then(|s| s.get(channel).cloned())
            .unwrap_or_default()
    }

    /// Whether anyone listens on the channel or the global one.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribers
            .read()
            .map(|s| s.contains_key(channel) || s.contains_key(GLOBAL_ERROR_CHANNEL))
            .unwrap_or(false)
    }

    /// Delivers the message to the channel's subscribers, then to the global channel's. A
    /// subscriber's own failure is logged, never propagated.
    pub async fn publish(&self, message: ErrorMessage) {
        let mut handlers = self.handlers(&message.channel);
        if message.channel != GLOBAL_ERROR_CHANNEL {
            handlers.extend(self.handlers(GLOBAL_ERROR_CHANNEL));
        }
        for handler in handlers {
            if let Err(e) = handler(message.clone()).await {
                tracing::warn!(channel = %message.channel, error = %e, "error channel subscriber failed");
            }
        }
    }
}

/// The error channel name of a consumer binding: `<destination>.<group>.errors`
/// (`anonymous` stands in for a missing group).
pub fn consumer_error_channel(destination: &str, group: Option<&str>) -> String {
    format!("{destination}.{}.errors", group.unwrap_or("anonymous"))
}

/// The error channel name of a producer binding: `<destination>.errors`.
pub fn producer_error_channel(destination: &str) -> String {
    format!("{destination}.errors")
}
