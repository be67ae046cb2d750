//! Pollable consumers (`spring.cloud.stream.pollable-source`).

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::StreamError;
use super::shared::{AppShared, InputHandlers};
use crate::binder::erased::DynPollable;
use crate::error::{BinderError, FunctionError};
use crate::function::{ConversionContext, FunctionInput};
use crate::process::pipeline::{ConsumerPipeline, Invoker};

/// A consumer the application polls: `poll` takes at most one message and hands it to the
/// handler with the binding's retry and error handling.
///
/// ```
/// use stream_core::{FunctionError, Message, StreamApp};
/// use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
/// use stream_config::Environment;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = InMemoryBroker::new();
/// let env = Environment::builder()
///     .map("test", [
///         ("spring.cloud.stream.pollable-source", "orders"),
///         ("spring.cloud.stream.bindings.orders-in-0.group", "g"),
///     ])
///     .build().unwrap();
/// let app = StreamApp::builder()
///     .environment(env)
///     .binder(InMemoryBinderFactory::with_broker(broker.clone()))
///     .build().await.unwrap();
/// let source = app.pollable("orders").unwrap();
/// assert!(!source.poll(|_: String| async { Ok::<_, FunctionError>(()) }).await.unwrap());
/// broker.send("orders-in-0", Message::bytes("o-1"));
/// assert!(source.poll(|s: String| async move { assert_eq!(s, "o-1"); Ok::<_, FunctionError>(()) }).await.unwrap());
/// app.shutdown().await.unwrap();
/// # });
/// ```
pub struct PollableConsumer {
    source: Box<dyn DynPollable>,
    /// The binding's pipeline (identity, retry, error channels); each poll brings its handler.
    base: Arc<ConsumerPipeline>,
    ctx: ConversionContext,
}

impl std::fmt::Debug for PollableConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollableConsumer")
            .field("binding", &self.base.id.binding)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn bind(
    shared: &AppShared,
    binding: &str,
) -> Result<PollableConsumer, StreamError> {
    let props = shared.binding(binding)?;
    let no_handler: Invoker = Arc::new(|_| {
        Box::pin(async { Err(FunctionError::msg("polled without a handler")) })
            as BoxFuture<'static, Result<(), FunctionError>>
    });
    let (source, base) = shared
        .bind_pollable(
            binding,
            &props,
            InputHandlers {
                invoker: no_handler,
                batch_invoker: None,
                error_handler: None,
                stream: None,
            },
        )
        .await?;
    Ok(PollableConsumer {
        source,
        base,
        ctx: shared.conversion_context(&props, props.consumer.use_native_decoding),
    })
}

impl PollableConsumer {
    /// Polls once. Returns `false` when no message was waiting.
    pub async fn poll<I, F, Fut>(&self, handler: F) -> Result<bool, StreamError>
    where
        I: FunctionInput,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let handler = Arc::new(handler);
        let invoker: Invoker = Arc::new(move |message| {
            let input = I::from_message(message, &ctx);
            let handler = Arc::clone(&handler);
            Box::pin(async move { handler(input.map_err(FunctionError::new)?).await })
                as BoxFuture<'static, Result<(), FunctionError>>
        });
        let pipeline = self.base.with_invoker(invoker);
        self.source
            .poll(&pipeline)
            .await
            .map_err(|cause| StreamError::Binder {
                binding: self.base.id.binding.to_string(),
                cause,
            })
    }

    pub(crate) async fn close(&self) -> Result<(), BinderError> {
        self.source.close().await
    }
}
