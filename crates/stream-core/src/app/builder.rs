//! The application builder: binders, functions, codecs, error handlers and partitioning
//! hooks registered before [`StreamAppBuilder::build`] binds them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stream_config::Environment;

use crate::binder::{AnyBinderFactory, BinderFactory, BinderRegistry};
use crate::convert::{Codec, ConversionService};
use crate::error::FunctionError;
use crate::errors::ErrorHandler;
use crate::function::stream::{OutputHandles, StreamInputs, StreamItem};
use crate::function::{FunctionCatalog, FunctionInput, FunctionOutput};
use crate::partition::{PartitionKeyExtractor, PartitionSelector};
use crate::retry::RetryPolicy;

/// Builds a [`StreamApp`]: register binders and functions, then [`StreamAppBuilder::build`]
/// binds them from the configuration.
///
/// ```
/// use stream_core::{FunctionError, Message, StreamApp};
/// use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
/// use stream_config::Environment;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = InMemoryBroker::new();
/// let env = Environment::builder()
///     .map("test", [("spring.cloud.stream.bindings.uppercase-in-0.destination", "words")])
///     .build()
///     .unwrap();
/// let app = StreamApp::builder()
///     .environment(env)
///     .binder(InMemoryBinderFactory::with_broker(broker.clone()))
///     .function("uppercase", |s: String| async move { Ok::<_, FunctionError>(s.to_uppercase()) })
///     .build()
///     .await
///     .unwrap();
/// broker.capture("uppercase-out-0");
/// broker.send("words", Message::bytes("hello"));
/// let out = broker.receive("uppercase-out-0", std::time::Duration::from_secs(1)).await.unwrap();
/// assert_eq!(&out.payload()[..], b"HELLO");
/// app.shutdown().await.unwrap();
/// # });
/// ```
pub struct StreamAppBuilder {
    pub(super) environment: Option<Environment>,
    pub(super) registry: BinderRegistry,
    pub(super) catalog: FunctionCatalog,
    pub(super) conversion: ConversionService,
    pub(super) error_handlers: HashMap<String, ErrorHandler>,
    pub(super) error_subscriptions: Vec<(String, ErrorHandler)>,
    pub(super) extractors: HashMap<String, Arc<dyn PartitionKeyExtractor>>,
    pub(super) selectors: HashMap<String, Arc<dyn PartitionSelector>>,
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) retry_policies: HashMap<String, RetryPolicy>,
    pub(super) metrics_recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

impl std::fmt::Debug for StreamAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAppBuilder")
            .field("binders", &self.registry)
            .field("functions", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl StreamAppBuilder {
    pub(super) fn new() -> Self {
        Self {
            environment: None,
            registry: BinderRegistry::new(),
            catalog: FunctionCatalog::new(),
            conversion: ConversionService::default(),
            error_handlers: HashMap::new(),
            error_subscriptions: Vec::new(),
            extractors: HashMap::new(),
            selectors: HashMap::new(),
            shutdown_timeout: None,
            retry_policies: HashMap::new(),
            metrics_recorder: None,
        }
    }

    /// The recorder the application's metrics go to (see [`crate::meters`]); without it they
    /// go to the global `metrics` recorder, if one is installed when the application is
    /// built.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// let recorder = Arc::new(metrics::NoopRecorder);
    /// let app = stream_core::StreamApp::builder()
    ///     .environment(stream_core::stream_config::Environment::empty())
    ///     .binder(stream_core::memory::InMemoryBinderFactory::default())
    ///     .metrics_recorder(recorder)
    ///     .build()
    ///     .await
    ///     .unwrap();
    /// app.shutdown().await.unwrap();
    /// # });
    /// ```
    pub fn metrics_recorder(mut self, recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        self.metrics_recorder = Some(recorder);
        self
    }

    /// Registers a retry policy that bindings name in `consumer.retry-template-name`; it
    /// replaces the policy built from their `max-attempts`/`back-off-*` properties.
    pub fn retry_policy(mut self, name: &str, policy: RetryPolicy) -> Self {
        self.retry_policies.insert(name.to_owned(), policy);
        self
    }

    /// The configuration; without it, [`Environment::standard`] is loaded (application files,
    /// profiles, environment variables, command-line arguments).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Registers a binder type.
    pub fn binder(mut self, factory: impl BinderFactory) -> Self {
        self.registry.register(factory);
        self
    }

    /// Registers a shared, erased binder factory (one factory serving several applications).
    pub fn binder_any(mut self, factory: AnyBinderFactory) -> Self {
        self.registry.register_any(factory);
        self
    }

    /// Registers a function `I -> O`.
    pub fn function<I, O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.function(name, f);
        self
    }

    /// Registers a consumer of `I`.
    pub fn consumer<I, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.consumer(name, f);
        self
    }

    /// Registers a function taking a whole batch (`consumer.batch-mode=true`): `Vec<I> -> O`.
    pub fn batch_function<I, O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.batch_function(name, f);
        self
    }

    /// Registers a consumer of whole batches (`consumer.batch-mode=true`).
    pub fn batch_consumer<I, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.batch_consumer(name, f);
        self
    }

    /// Registers a supplier of `O`, polled per the output binding's `poller.*`.
    pub fn supplier<O, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.catalog.supplier(name, f);
        self
    }

    /// Registers a stream function: the input binding(s) as [`Inbound`](crate::function::stream::Inbound) streams in, the
    /// returned stream sent to `<name>-out-0`. Inputs are acknowledged when what was made of
    /// them is sent (see [`stream`](crate::function::stream)).
    ///
    /// ```
    /// use futures::StreamExt;
    /// use stream_core::StreamApp;
    /// use stream_core::function::stream::Inbound;
    /// let builder = StreamApp::builder()
    ///     .stream_function("upper", |input: Inbound<String>| input.map(|m| m.map(|s| s.to_uppercase())));
    /// ```
    pub fn stream_function<In, S, F>(mut self, name: &str, f: F) -> Self
    where
        In: StreamInputs,
        S: futures::Stream + Send + 'static,
        S::Item: StreamItem,
        F: Fn(In) -> S + Send + Sync + 'static,
    {
        self.catalog.stream_function(name, f);
        self
    }

    /// Registers a stream consumer: it consumes the input stream(s); a message is acknowledged
    /// when it is dropped.
    pub fn stream_consumer<In, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        In: StreamInputs,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.stream_consumer(name, f);
        self
    }

    /// Registers a stream function that sends to numbered [`Output`](crate::function::stream::Output)s itself
    /// (`<name>-out-0`, `-out-1`, ...): routers and fan-outs.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use stream_core::{FunctionError, StreamApp};
    /// use stream_core::function::stream::{Inbound, Output};
    /// let builder = StreamApp::builder().stream_process(
    ///     "route",
    ///     |input: Inbound<i64>, (even, odd): (Output<i64>, Output<i64>)| async move {
    ///         let mut input = input;
    ///         while let Some(m) = input.next().await {
    ///             let out = if *m.payload() % 2 == 0 { &even } else { &odd };
    ///             let _ = out.send(m).await;
    ///         }
    ///         Ok::<_, FunctionError>(())
    ///     },
    /// );
    /// ```
    pub fn stream_process<In, Outs, E, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        In: StreamInputs,
        Outs: OutputHandles,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(In, Outs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.catalog.stream_process(name, f);
        self
    }

    /// Registers a stream supplier: `f()` is a stream sent to `<name>-out-0` from start-up
    /// (no poller); called again after it fails.
    pub fn stream_supplier<S, F>(mut self, name: &str, f: F) -> Self
    where
        S: futures::Stream + Send + 'static,
        S::Item: StreamItem,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.catalog.stream_supplier(name, f);
        self
    }

    /// Registers a codec for a content type.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.conversion.register(codec);
        self
    }

    /// Registers an error handler that bindings name in `error-handler-definition`; it replaces
    /// the binder's recovery (no DLQ republish) for those bindings.
    pub fn error_handler(mut self, name: &str, handler: ErrorHandler) -> Self {
        self.error_handlers.insert(name.to_owned(), handler);
        self
    }

    /// Subscribes to an error channel (`<destination>.<group>.errors`, `<destination>.errors`
    /// or [`crate::errors::GLOBAL_ERROR_CHANNEL`]). Subscribers observe; recovery still runs.
    pub fn on_error(mut self, channel: &str, handler: ErrorHandler) -> Self {
        self.error_subscriptions.push((channel.to_owned(), handler));
        self
    }

    /// Registers a partition key extractor under the name producers give in
    /// `partition-key-extractor-name`.
    pub fn partition_key_extractor(
        mut self,
        name: &str,
        extractor: impl PartitionKeyExtractor + 'static,
    ) -> Self {
        self.extractors.insert(name.to_owned(), Arc::new(extractor));
        self
    }

    /// Registers a partition selector under the name producers give in
    /// `partition-selector-name`.
    pub fn partition_selector(
        mut self,
        name: &str,
        selector: impl PartitionSelector + 'static,
    ) -> Self {
        self.selectors.insert(name.to_owned(), Arc::new(selector));
        self
    }

    /// Bounds graceful shutdown (default: `spring.lifecycle.timeout-per-shutdown-phase`, else
    /// 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }
}
