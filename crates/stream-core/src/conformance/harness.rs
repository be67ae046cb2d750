//! Driving one binder directly with the runtime's lifecycle, settlement and retry, for a binder
//! crate's own broker tests (no whole `StreamApp`): bind a consumer with a closure, poll a
//! pollable source, bind a producer.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::binder::erased::DynPollable;
use crate::binder::lifecycle::{ConsumerBinding, Timing};
use crate::binder::{Binder, Binding, ConsumerSpec, ProducerSpec};
use crate::error::{BinderError, FunctionError};
use crate::errors::ErrorChannels;
use crate::message::Message;
use crate::meters::Meters;
use crate::process::pipeline::{BatchInvoker, ConsumerIdentity, ConsumerPipeline, Invoker};
use crate::retry::{BackOff, RetryPolicy};

/// One binder, bound to directly.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use stream_core::binder::{ConsumerSpec, Outbound, Producer, ProducerSpec};
/// use stream_core::conformance::Harness;
/// use stream_core::memory::{InMemoryBinder, InMemoryBroker, MemoryConsumerProperties, MemoryProducerProperties};
/// use stream_core::{FunctionError, Message};
///
/// let harness = Harness::new(InMemoryBinder::new(InMemoryBroker::new()), "memory");
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let spec = ConsumerSpec::new("in", "orders", Some("g"), MemoryConsumerProperties::default());
/// let binding = harness
///     .bind_consumer(spec, move |m: Message| {
///         let _ = tx.send(m);
///         async { Ok::<_, FunctionError>(()) }
///     })
///     .await
///     .unwrap();
/// let producer = harness
///     .bind_producer(ProducerSpec::new("out", "orders", MemoryProducerProperties::default()))
///     .await
///     .unwrap();
/// producer.send(Outbound::new(Message::bytes("o-1"))).await.unwrap();
/// let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.unwrap().unwrap();
/// assert_eq!(&got.payload()[..], b"o-1");
/// binding.stop().await.unwrap();
/// # });
/// ```
pub struct Harness<B: Binder> {
    binder: Arc<B>,
    binder_type: &'static str,
    errors: ErrorChannels,
    timing: Timing,
}

impl<B: Binder> std::fmt::Debug for Harness<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("binder_type", &self.binder_type)
            .finish_non_exhaustive()
    }
}

/// The retry policy the runtime builds from a spec's common properties.
fn retry_of<C>(spec: &ConsumerSpec<C>) -> RetryPolicy {
    let c = &spec.common;
    RetryPolicy::new(
        c.max_attempts,
        BackOff::new(
            c.back_off_initial_interval,
            c.back_off_max_interval,
            c.back_off_multiplier,
        ),
        c.default_retryable,
        c.retryable_exceptions.clone(),
    )
}

impl<B: Binder> Harness<B> {
    /// A harness over `binder` of type `binder_type`.
    pub fn new(binder: B, binder_type: &'static str) -> Self {
        Self {
            binder: Arc::new(binder),
            binder_type,
            errors: ErrorChannels::default(),
            timing: Timing {
                retry_interval: std::time::Duration::from_secs(1),
                stop_timeout: std::time::Duration::from_secs(30),
            },
        }
    }

    /// The binder.
    pub fn binder(&self) -> &B {
        &self.binder
    }

    /// The error channels the harness's pipelines publish to (subscribe to observe failures).
    pub fn error_channels(&self) -> &ErrorChannels {
        &self.errors
    }

    fn pipeline(
        &self,
        spec: &ConsumerSpec<B::ConsumerProperties>,
        invoker: Invoker,
        batch_invoker: Option<BatchInvoker>,
    ) -> Arc<ConsumerPipeline> {
        Arc::new(ConsumerPipeline {
            id: ConsumerIdentity::new(
                &spec.binding,
                &spec.destination,
                spec.group_name(),
                self.binder_type,
            ),
            invoker,
            batch_invoker,
            retry: retry_of(spec),
            errors: self.errors.clone(),
            error_handler: None,
            meters: Arc::new(Meters::default().consumer(
                self.binder_type,
                &spec.binding,
                &spec.destination,
                spec.group_name(),
            )),
            stream: None,
        })
    }

    async fn bind(
        &self,
        spec: ConsumerSpec<B::ConsumerProperties>,
        pipeline: Arc<ConsumerPipeline>,
        destination: Option<B::ConsumerDestination>,
    ) -> Result<Box<dyn Binding>, BinderError> {
        let mut binding = ConsumerBinding::new(
            Arc::clone(&self.binder),
            self.binder_type.into(),
            spec,
            pipeline,
            self.timing,
        );
        if let Some(d) = destination {
            binding = binding.with_destination(d).await;
        }
        binding.bind().await?;
        Ok(Box::new(binding))
    }

    fn invoker<F, Fut>(handler: F) -> Invoker
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Arc::new(move |m| {
            let h = Arc::clone(&handler);
            Box::pin(async move { h(m).await }) as BoxFuture<'static, Result<(), FunctionError>>
        })
    }

    /// Like [`Harness::bind_consumer`], consuming a destination provisioned already.
    pub async fn bind_consumer_provisioned<F, Fut>(
        &self,
        spec: ConsumerSpec<B::ConsumerProperties>,
        destination: B::ConsumerDestination,
        handler: F,
    ) -> Result<Box<dyn Binding>, BinderError>
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let pipeline = self.pipeline(&spec, Self::invoker(handler), None);
        self.bind(spec, pipeline, Some(destination)).await
    }

    /// Provisions and binds a consumer (started unless the spec's `auto-startup` is false)
    /// whose deliveries `handler` processes, with the spec's retry settings and the
    /// runtime's settlement.
    pub async fn bind_consumer<F, Fut>(
        &self,
        spec: ConsumerSpec<B::ConsumerProperties>,
        handler: F,
    ) -> Result<Box<dyn Binding>, BinderError>
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let pipeline = self.pipeline(&spec, Self::invoker(handler), None);
        self.bind(spec, pipeline, None).await
    }

    /// Like [`Harness::bind_consumer`] for `batch-mode`: `handler` receives whole batches.
    pub async fn bind_batch_consumer<F, Fut>(
        &self,
        spec: ConsumerSpec<B::ConsumerProperties>,
        handler: F,
    ) -> Result<Box<dyn Binding>, BinderError>
    where
        F: Fn(Vec<Message<Bytes>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let batch: BatchInvoker = Arc::new(move |ms| {
            let h = Arc::clone(&handler);
            Box::pin(async move { h(ms).await }) as BoxFuture<'static, Result<(), FunctionError>>
        });
        let single: Invoker = Arc::new(|_| {
            Box::pin(async { Err(FunctionError::msg("a batch consumer got a single message")) })
                as BoxFuture<'static, Result<(), FunctionError>>
        });
        let pipeline = self.pipeline(&spec, single, Some(batch));
        self.bind(spec, pipeline, None).await
    }

    /// Provisions and binds a pollable source.
    pub async fn bind_pollable(
        &self,
        spec: ConsumerSpec<B::ConsumerProperties>,
    ) -> Result<PolledSource<B>, BinderError> {
        let destination = self.binder.provision_consumer(&spec).await?;
        let source = self.binder.bind_pollable(&spec, &destination).await?;
        let recovery = crate::binder::Settle::recovery(&source);
        let placeholder: Invoker = Arc::new(|_| {
            Box::pin(async { Err(FunctionError::msg("polled without a handler")) })
                as BoxFuture<'static, Result<(), FunctionError>>
        });
        let base = self.pipeline(&spec, placeholder, None);
        Ok(PolledSource {
            source: Box::new(crate::binder::erased::PollableAdapter::new(
                source,
                recovery,
                spec.acknowledge_mode,
            )),
            base,
            _binder: std::marker::PhantomData,
        })
    }

    /// Provisions and binds a producer.
    pub async fn bind_producer(
        &self,
        spec: ProducerSpec<B::ProducerProperties>,
    ) -> Result<B::Producer, BinderError> {
        let destination = self.binder.provision_producer(&spec).await?;
        self.binder.bind_producer(&spec, &destination).await
    }
}

/// A pollable source bound through a [`Harness`].
pub struct PolledSource<B: Binder> {
    source: Box<dyn DynPollable>,
    base: Arc<ConsumerPipeline>,
    _binder: std::marker::PhantomData<fn() -> B>,
}

impl<B: Binder> std::fmt::Debug for PolledSource<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledSource")
            .field("binding", &self.base.id.binding)
            .finish_non_exhaustive()
    }
}

impl<B: Binder> PolledSource<B> {
    /// Fetches at most one message, processes it with `handler` (with the spec's retry) and
    /// settles it; `false` when nothing was waiting.
    pub async fn poll<F, Fut>(&self, handler: F) -> Result<bool, BinderError>
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let invoker: Invoker = Arc::new(move |m| {
            let h = Arc::clone(&handler);
            Box::pin(async move { h(m).await }) as BoxFuture<'static, Result<(), FunctionError>>
        });
        let pipeline = self.base.with_invoker(invoker);
        self.source.poll(&pipeline).await
    }

    /// Releases the source.
    pub async fn close(&self) -> Result<(), BinderError> {
        self.source.close().await
    }
}
