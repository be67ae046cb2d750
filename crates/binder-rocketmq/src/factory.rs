//! The factory: creates [`RocketMqBinder`]s and holds the named handlers producers refer to.

use std::sync::Arc;

use stream_core::BinderError;
use stream_core::binder::{BinderContext, BinderFactory};

use crate::bind::RocketMqBinder;
use crate::config::{ROCKETMQ_BINDER_TYPE, RocketMqBinderProperties};
use crate::hooks::{Hooks, MessageQueueSelectorFn, SendCallbackFn, TransactionHandler};

/// Creates [`RocketMqBinder`]s; holds the named handlers producers refer to.
///
/// ```
/// use binder_rocketmq::{RocketMqBinderFactory, TransactionHandler, TransactionState};
/// use binder_rocketmq::{Message, binder::BinderFactory};
///
/// struct AlwaysCommit;
/// impl TransactionHandler for AlwaysCommit {
///     fn execute(&self, _: &Message, _: Option<&str>) -> TransactionState { TransactionState::Commit }
///     fn check(&self, _: &Message) -> TransactionState { TransactionState::Commit }
/// }
/// let factory = RocketMqBinderFactory::builder()
///     .transaction_listener("orders-tx", AlwaysCommit)
///     .message_queue_selector("by-first-byte", |m: &Message, queues: usize| {
///         m.payload().first().map_or(0, |b| *b as usize) % queues
///     })
///     .send_callback("log", |outcome| println!("{outcome:?}"))
///     .build();
/// assert_eq!(factory.binder_type(), "rocketmq");
/// ```
#[derive(Clone, Debug, Default)]
pub struct RocketMqBinderFactory {
    hooks: Arc<Hooks>,
}

/// Builds a [`RocketMqBinderFactory`] with named handlers.
#[derive(Debug, Default)]
pub struct RocketMqBinderFactoryBuilder {
    hooks: Hooks,
}

impl RocketMqBinderFactoryBuilder {
    /// Registers a transaction listener that producers name in `transaction-listener`.
    pub fn transaction_listener(
        mut self,
        name: impl Into<String>,
        listener: impl TransactionHandler,
    ) -> Self {
        self.hooks
            .transaction_listeners
            .insert(name.into(), Arc::new(listener));
        self
    }

    /// Registers a message-queue selector that producers name in `message-queue-selector`:
    /// given the message and the topic's queue count, it returns a queue index.
    pub fn message_queue_selector(
        mut self,
        name: impl Into<String>,
        selector: impl Fn(&stream_core::Message, usize) -> usize + Send + Sync + 'static,
    ) -> Self {
        let selector: Arc<MessageQueueSelectorFn> = Arc::new(selector);
        self.hooks.selectors.insert(name.into(), selector);
        self
    }

    /// Registers a send callback that asynchronous producers name in `send-call-back`.
    pub fn send_callback(
        mut self,
        name: impl Into<String>,
        callback: impl Fn(&Result<crate::hooks::SendReceipt, String>) + Send + Sync + 'static,
    ) -> Self {
        let callback: Arc<SendCallbackFn> = Arc::new(callback);
        self.hooks.callbacks.insert(name.into(), callback);
        self
    }

    /// The factory.
    pub fn build(self) -> RocketMqBinderFactory {
        RocketMqBinderFactory {
            hooks: Arc::new(self.hooks),
        }
    }
}

impl RocketMqBinderFactory {
    /// A factory without named handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder to register named handlers.
    pub fn builder() -> RocketMqBinderFactoryBuilder {
        RocketMqBinderFactoryBuilder::default()
    }
}

impl BinderFactory for RocketMqBinderFactory {
    type Binder = RocketMqBinder;
    type Properties = RocketMqBinderProperties;

    fn binder_type(&self) -> &'static str {
        ROCKETMQ_BINDER_TYPE
    }

    /// `spring.cloud.starter.stream.rocketmq.*` (the guide's table labels): an error naming the
    /// real key, not silence.
    fn root_schemas(&self) -> Vec<stream_core::stream_config::RootSchema> {
        vec![stream_core::stream_config::RootSchema::moved(
            "spring.cloud.starter.stream.rocketmq",
            crate::config::starter_key_target,
            "`spring.cloud.starter.stream.rocketmq.*` is how the guide's tables label the keys; the binder (Java's too) reads `spring.cloud.stream.rocketmq.*`",
        )]
    }

    async fn create(
        &self,
        context: BinderContext<RocketMqBinderProperties>,
    ) -> Result<RocketMqBinder, BinderError> {
        RocketMqBinder::new(
            &context.name,
            context.properties.with_aliases(),
            Arc::clone(&self.hooks),
        )
    }
}
