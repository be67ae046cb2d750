//! Pollable consumers (`spring.cloud.stream.pollable-source`).

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::pipeline::{ConsumerIdentity, ConsumerPipeline, Invoker};
use super::{AppShared, StreamError};
use crate::binder::{Capability, PollableSource};
use crate::error::{BinderError, FunctionError};
use crate::errors::{ErrorChannels, consumer_error_channel};
use crate::function::{ConversionContext, FunctionInput};
use crate::retry::RetryPolicy;

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
    identity: ConsumerIdentity,
    source: Box<dyn PollableSource>,
    ctx: ConversionContext,
    retry: RetryPolicy,
    errors: ErrorChannels,
}

impl std::fmt::Debug for PollableConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollableConsumer")
            .field("binding", &self.identity.binding)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn bind(
    shared: &AppShared,
    binding: &str,
) -> Result<PollableConsumer, StreamError> {
    let props = shared.binding(binding)?;
    let binder = shared
        .binders
        .resolve(binding, props.binder.as_deref())
        .await?;
    super::require(&*binder, binding, Capability::PollableConsumer)?;
    let destination = props.destination_or(binding).to_owned();
    let request = shared.consumer_request(binding, &props, &destination)?;
    let bind_err = |source| StreamError::Binder {
        binding: binding.to_owned(),
        source,
    };
    let provisioned = binder
        .provisioner()
        .provision_consumer(&request)
        .await
        .map_err(bind_err)?;
    let source = binder
        .bind_pollable(request, provisioned)
        .await
        .map_err(bind_err)?;
    Ok(PollableConsumer {
        identity: ConsumerIdentity {
            binding: binding.to_owned(),
            destination: destination.clone(),
            group: props.group.clone(),
            binder_type: binder.binder_type().to_owned(),
            error_channel: consumer_error_channel(&destination, props.group.as_deref()),
        },
        source,
        ctx: shared.conversion_context(&props, props.consumer.use_native_decoding),
        retry: shared.retry_policy(binding, &props)?,
        errors: shared.errors.clone(),
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
        let pipeline = ConsumerPipeline {
            id: self.identity.clone(),
            invoker,
            batch_invoker: None,
            retry: self.retry.clone(),
            errors: self.errors.clone(),
            error_handler: None,
        };
        self.source
            .poll(&pipeline)
            .await
            .map_err(|source| StreamError::Binder {
                binding: self.identity.binding.clone(),
                source,
            })
    }

    pub(crate) async fn close(&self) -> Result<(), BinderError> {
        self.source.close().await
    }
}
