//! Functions: typed consumers, functions and suppliers registered by name, and their
//! composition.

mod definition;
mod io;
pub mod stream;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use definition::{DefinitionError, FunctionDefinition};
pub use io::{ConversionContext, FunctionInput, FunctionOutput};

use crate::error::FunctionError;
use crate::message::{Headers, Message, names};

/// The shape of a registered (or composed) function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FunctionKind {
    /// Takes an input and produces an output (`<name>-in-0` and `<name>-out-0`).
    Function,
    /// Takes an input only (`<name>-in-0`).
    Consumer,
    /// Produces outputs when polled (`<name>-out-0`).
    Supplier,
}

impl FunctionKind {
    /// Whether the function has an input binding.
    pub fn has_input(self) -> bool {
        !matches!(self, FunctionKind::Supplier)
    }

    /// Whether the function has an output binding.
    pub fn has_output(self) -> bool {
        !matches!(self, FunctionKind::Consumer)
    }
}

type Invoke = dyn Fn(
        Option<Message<Bytes>>,
        &ConversionContext,
        &ConversionContext,
    ) -> BoxFuture<'static, Result<Option<Message<Bytes>>, FunctionError>>
    + Send
    + Sync;

type InvokeBatch = dyn Fn(
        Vec<Message<Bytes>>,
        &ConversionContext,
        &ConversionContext,
    ) -> BoxFuture<'static, Result<Option<Message<Bytes>>, FunctionError>>
    + Send
    + Sync;

/// A type-erased function: message in (none for suppliers), message out (none for consumers or
/// when the function produced nothing). A batch function takes all the messages of a batch at
/// once (`batch-mode=true`).
#[derive(Clone)]
pub struct ErasedFunction {
    kind: FunctionKind,
    invoke: Arc<Invoke>,
    batch: Option<Arc<InvokeBatch>>,
    /// A stream function: the whole input as a stream (no per-message call).
    stream: Option<stream::StreamRun>,
}

impl fmt::Debug for ErasedFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedFunction")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Headers an input gives to the output of a function that returns a plain value: every header
/// except those describing the input message itself.
fn propagated(mut out: Headers) -> Headers {
    out.retain(|k, _| {
        !names::is_internal(k)
            && k != names::CONTENT_TYPE
            && k != names::ID
            && k != names::TIMESTAMP
            && k != names::PARTITION_OVERRIDE
    });
    out
}

impl ErasedFunction {
    /// The function's shape.
    pub fn kind(&self) -> FunctionKind {
        self.kind
    }

    /// Whether it is a stream function (see [`stream`]).
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    pub(crate) fn stream_run(&self) -> Option<&stream::StreamRun> {
        self.stream.as_ref()
    }

    /// A stream function, erased: its kind follows from its bindings; it is never called per
    /// message.
    pub(crate) fn from_stream(run: stream::StreamRun) -> Self {
        let kind = match (run.shape.inputs, run.shape.outputs) {
            (0, _) => FunctionKind::Supplier,
            (_, 0) => FunctionKind::Consumer,
            _ => FunctionKind::Function,
        };
        Self {
            kind,
            batch: None,
            stream: Some(run),
            invoke: Arc::new(|_, _, _| {
                Box::pin(async {
                    Err(FunctionError::msg(
                        "a stream function takes its input as a stream, not one message at a time",
                    ))
                })
            }),
        }
    }

    /// Whether the function takes batches (`Vec` of inputs).
    pub fn is_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Invokes a batch function with every message of a batch. A function registered for single
    /// messages fails with an error saying so.
    pub fn call_batch(
        &self,
        inputs: Vec<Message<Bytes>>,
        input_ctx: &ConversionContext,
        output_ctx: &ConversionContext,
    ) -> BoxFuture<'static, Result<Option<Message<Bytes>>, FunctionError>> {
        match &self.batch {
            Some(batch) => batch(inputs, input_ctx, output_ctx),
            None => Box::pin(async {
                Err(FunctionError::msg(
                    "a batch was delivered to a function that takes single messages; register it with batch_function/batch_consumer or set batch-mode=false",
                ))
            }),
        }
    }

    fn batch<I, O, E, F, Fut>(kind: FunctionKind, f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        let batch: Arc<InvokeBatch> = Arc::new(move |inputs, in_ctx, out_ctx| {
            let f = Arc::clone(&f);
            let out_ctx = out_ctx.clone();
            let prepared: Result<Vec<I>, FunctionError> = inputs
                .into_iter()
                .map(|m| I::from_message(m, in_ctx).map_err(FunctionError::new))
                .collect();
            Box::pin(async move {
                let output = f(prepared?).await.map_err(Into::into)?;
                if kind == FunctionKind::Consumer {
                    return Ok(None);
                }
                output.into_message(&out_ctx).map_err(FunctionError::new)
            })
        });
        Self {
            kind,
            invoke: Arc::new(|_, _, _| {
                Box::pin(async {
                    Err(FunctionError::msg(
                        "a single message was delivered to a batch function; set the binding's consumer.batch-mode=true",
                    ))
                })
            }),
            batch: Some(batch),
            stream: None,
        }
    }

    /// Invokes the function. `input_ctx` converts the input, `output_ctx` the output.
    pub fn call(
        &self,
        input: Option<Message<Bytes>>,
        input_ctx: &ConversionContext,
        output_ctx: &ConversionContext,
    ) -> BoxFuture<'static, Result<Option<Message<Bytes>>, FunctionError>> {
        (self.invoke)(input, input_ctx, output_ctx)
    }

    fn function<I, O, E, F, Fut>(f: F) -> Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        Self {
            kind: FunctionKind::Function,
            batch: None,
            stream: None,
            invoke: Arc::new(move |input, in_ctx, out_ctx| {
                let f = Arc::clone(&f);
                let out_ctx = out_ctx.clone();
                let prepared = input
                    .ok_or_else(|| FunctionError::msg("function invoked without an input"))
                    .and_then(|m| {
                        let converted = if I::KEEPS_HEADERS {
                            let headers = propagated(m.headers().clone());
                            I::from_message(m, in_ctx).map(|i| (i, headers))
                        } else {
                            // Plain-typed inputs never see the headers: move them, don't copy.
                            let (payload, headers) = m.into_parts();
                            I::from_payload(payload, &headers, in_ctx)
                                .map(|i| (i, propagated(headers)))
                        };
                        converted.map_err(FunctionError::new)
                    });
                Box::pin(async move {
                    let (input, headers) = prepared?;
                    let output = f(input).await.map_err(Into::into)?;
                    let message = output.into_message(&out_ctx).map_err(FunctionError::new)?;
                    // The input's headers carry over under the output's own (which win): the
                    // propagated map is reused, not copied entry by entry.
                    Ok(message.map(|mut m| {
                        let own = std::mem::take(m.headers_mut());
                        let mut merged = headers;
                        merged.extend_from(&own);
                        *m.headers_mut() = merged;
                        m
                    }))
                })
            }),
        }
    }

    fn consumer<I, E, F, Fut>(f: F) -> Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let f = Arc::new(f);
        Self {
            kind: FunctionKind::Consumer,
            batch: None,
            stream: None,
            invoke: Arc::new(move |input, in_ctx, _| {
                let f = Arc::clone(&f);
                let prepared = input
                    .ok_or_else(|| FunctionError::msg("consumer invoked without an input"))
                    .and_then(|m| I::from_message(m, in_ctx).map_err(FunctionError::new));
                Box::pin(async move {
                    f(prepared?).await.map_err(Into::into)?;
                    Ok(None)
                })
            }),
        }
    }

    fn supplier<O, E, F, Fut>(f: F) -> Self
    where
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        Self {
            kind: FunctionKind::Supplier,
            batch: None,
            stream: None,
            invoke: Arc::new(move |_, _, out_ctx| {
                let f = Arc::clone(&f);
                let out_ctx = out_ctx.clone();
                Box::pin(async move {
                    let output = f().await.map_err(Into::into)?;
                    output.into_message(&out_ctx).map_err(FunctionError::new)
                })
            }),
        }
    }

    /// Composes `self | next`: the output of `self` (as a message) becomes the input of `next`.
    fn then(self, next: ErasedFunction) -> Result<ErasedFunction, String> {
        if self.stream.is_some() || next.stream.is_some() {
            return stream::compose(&self, &next);
        }
        if self.is_batch() || next.is_batch() {
            return Err("batch functions cannot be composed".into());
        }
        let kind = match (self.kind, next.kind) {
            (FunctionKind::Consumer, _) => {
                return Err("a consumer can only be the last part of a composition".into());
            }
            (_, FunctionKind::Supplier) => {
                return Err("a supplier can only be the first part of a composition".into());
            }
            (FunctionKind::Supplier, FunctionKind::Function) => FunctionKind::Supplier,
            (FunctionKind::Supplier, FunctionKind::Consumer) => {
                return Err("a supplier composed with a consumer has no binding left".into());
            }
            (FunctionKind::Function, k) => k,
        };
        let first = self.invoke;
        let second = next.invoke;
        Ok(ErasedFunction {
            kind,
            batch: None,
            stream: None,
            invoke: Arc::new(move |input, in_ctx, out_ctx| {
                // Between parts, payloads travel as JSON unless a part says otherwise.
                let mid = ConversionContext {
                    conversion: Arc::clone(&in_ctx.conversion),
                    content_type: crate::convert::DEFAULT_CONTENT_TYPE.into(),
                    native: false,
                };
                let first_fut = first(input, in_ctx, &mid);
                let second = Arc::clone(&second);
                let out_ctx = out_ctx.clone();
                Box::pin(async move {
                    match first_fut.await? {
                        Some(m) => second(Some(m), &mid, &out_ctx).await,
                        None => Ok(None),
                    }
                })
            }),
        })
    }
}

/// Functions registered by name.
///
/// ```
/// use stream_core::function::{ConversionContext, FunctionCatalog, FunctionDefinition, FunctionKind};
/// use stream_core::{FunctionError, Message};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut catalog = FunctionCatalog::new();
/// catalog.function("uppercase", |s: String| async move { Ok::<_, FunctionError>(s.to_uppercase()) });
/// catalog.function("exclaim", |s: String| async move { Ok::<_, FunctionError>(format!("{s}!")) });
/// let def = FunctionDefinition::parse("uppercase|exclaim").unwrap();
/// let f = catalog.resolve(&def).unwrap();
/// assert_eq!(f.kind(), FunctionKind::Function);
/// let ctx = ConversionContext::new("text/plain");
/// let out = f.call(Some(Message::bytes("hi")), &ctx, &ctx).await.unwrap().unwrap();
/// assert_eq!(&out.payload()[..], b"HI!");
/// # });
/// ```
#[derive(Clone, Default)]
pub struct FunctionCatalog {
    functions: BTreeMap<String, ErasedFunction>,
}

impl fmt::Debug for FunctionCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.functions.iter().map(|(k, v)| (k, v.kind)))
            .finish()
    }
}

/// A definition naming a function that is not registered, or composing incompatible shapes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No function with that name.
    #[error(
        "function `{name}` in `spring.cloud.function.definition` is not registered; registered: {known}"
    )]
    Unknown {
        /// The missing name.
        name: String,
        /// Registered names, comma-separated.
        known: String,
    },
    /// The composition is not valid.
    #[error("cannot compose `{definition}`: {reason}")]
    Composition {
        /// The composition.
        definition: String,
        /// Why.
        reason: String,
    },
}

impl FunctionCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a function `I -> O` (bindings `<name>-in-0`, `<name>-out-0`).
    pub fn function<I, O, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.functions
            .insert(name.into(), ErasedFunction::function(f));
        self
    }

    /// Registers a consumer of `I` (binding `<name>-in-0`).
    pub fn consumer<I, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.functions
            .insert(name.into(), ErasedFunction::consumer(f));
        self
    }

    /// Registers a supplier of `O` (binding `<name>-out-0`), polled per `poller.*`.
    pub fn supplier<O, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.functions
            .insert(name.into(), ErasedFunction::supplier(f));
        self
    }

    /// Registers a function taking a whole batch (`batch-mode=true`): `Vec<I> -> O`.
    pub fn batch_function<I, O, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        I: FunctionInput,
        O: FunctionOutput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::batch(FunctionKind::Function, f),
        );
        self
    }

    /// Registers a consumer of whole batches (`batch-mode=true`).
    pub fn batch_consumer<I, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        I: FunctionInput,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::batch(FunctionKind::Consumer, f),
        );
        self
    }

    /// Registers a stream function: `f` gets the input binding(s) (`<name>-in-0`, a tuple for
    /// `-in-0`, `-in-1`, ...) as [`Inbound`](stream::Inbound) streams and returns the stream
    /// sent to `<name>-out-0`. See [`stream`] for when inputs are acknowledged.
    pub fn stream_function<In, S, F>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        In: stream::StreamInputs,
        S: futures::Stream + Send + 'static,
        S::Item: stream::StreamItem,
        F: Fn(In) -> S + Send + Sync + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::from_stream(stream::StreamRun::function(f)),
        );
        self
    }

    /// Registers a stream consumer: `f` consumes the input stream(s) until they end; a message
    /// is acknowledged when `f` drops it.
    pub fn stream_consumer<In, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        In: stream::StreamInputs,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::from_stream(stream::StreamRun::consumer(f)),
        );
        self
    }

    /// Registers a stream function that sends to numbered outputs itself (`<name>-out-0`,
    /// `-out-1`, ... as [`Output`](stream::Output) handles): a router or a fan-out.
    pub fn stream_process<In, Outs, E, F, Fut>(
        &mut self,
        name: impl Into<String>,
        f: F,
    ) -> &mut Self
    where
        In: stream::StreamInputs,
        Outs: stream::OutputHandles,
        E: Into<FunctionError> + Send + 'static,
        F: Fn(In, Outs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::from_stream(stream::StreamRun::process(f)),
        );
        self
    }

    /// Registers a stream supplier: `f()` is a (usually infinite) stream sent to
    /// `<name>-out-0`, started when the application starts (no poller).
    pub fn stream_supplier<S, F>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        S: futures::Stream + Send + 'static,
        S::Item: stream::StreamItem,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.functions.insert(
            name.into(),
            ErasedFunction::from_stream(stream::StreamRun::supplier(f)),
        );
        self
    }

    /// Registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// Number of registered functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Resolves a definition (a single function or a composition) to one callable function.
    pub fn resolve(&self, definition: &FunctionDefinition) -> Result<ErasedFunction, ResolveError> {
        let mut parts = definition.parts().iter().map(|name| {
            self.functions
                .get(name)
                .cloned()
                .ok_or_else(|| ResolveError::Unknown {
                    name: name.clone(),
                    known: self.names().collect::<Vec<_>>().join(", "),
                })
        });
        let first = parts.next().ok_or_else(|| ResolveError::Composition {
            definition: definition.name().to_owned(),
            reason: "empty".to_owned(),
        })??;
        parts.try_fold(first, |acc, next| {
            acc.then(next?).map_err(|reason| ResolveError::Composition {
                definition: definition.name().to_owned(),
                reason,
            })
        })
    }
}

/// Name of Spring Cloud Function's routing function: with
/// `spring.cloud.function.definition=functionRouter` (and no function registered under that name),
/// each message of `functionRouter-in-0` goes to the function its
/// [`ROUTE_DEFINITION_HEADER`] names, else the one `spring.cloud.function.routing-expression`
/// evaluates to.
pub const FUNCTION_ROUTER: &str = "functionRouter";

/// The message header naming the function a message is routed to (it wins over the routing
/// expression, as in Spring).
pub const ROUTE_DEFINITION_HEADER: &str = "spring.cloud.function.definition";

impl FunctionCatalog {
    /// Spring Cloud Function's `functionRouter` over the registered functions: per message, the
    /// function named by the [`ROUTE_DEFINITION_HEADER`] header, else by `routing_expression`
    /// (a SpEL expression over the message, parsed once). The routes are resolved here, once;
    /// a message naming no registered function fails like any other error. The router has an
    /// output when any registered function has one.
    ///
    /// ```
    /// use stream_core::expression::Expression;
    /// use stream_core::function::{ConversionContext, FunctionCatalog};
    /// use stream_core::{FunctionError, Message};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut catalog = FunctionCatalog::new();
    /// catalog.function("upper", |s: String| async move { Ok::<_, FunctionError>(s.to_uppercase()) });
    /// catalog.function("lower", |s: String| async move { Ok::<_, FunctionError>(s.to_lowercase()) });
    /// let router = catalog.router(Some(Expression::parse("headers['to']").unwrap()));
    /// let ctx = ConversionContext::new("text/plain");
    /// let out = router
    ///     .call(Some(Message::bytes("Hi").with_header("to", "upper")), &ctx, &ctx)
    ///     .await
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(&out.payload()[..], b"HI");
    /// let err = router.call(Some(Message::bytes("Hi").with_header("to", "none")), &ctx, &ctx).await;
    /// assert!(err.unwrap_err().to_string().contains("no function `none`"));
    /// # });
    /// ```
    pub fn router(
        &self,
        routing_expression: Option<crate::expression::Expression>,
    ) -> ErasedFunction {
        let routes: Arc<BTreeMap<String, ErasedFunction>> = Arc::new(
            self.functions
                .iter()
                .filter(|(_, f)| f.kind.has_input() && f.batch.is_none() && f.stream.is_none())
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect(),
        );
        let kind = if routes.values().any(|f| f.kind.has_output()) {
            FunctionKind::Function
        } else {
            FunctionKind::Consumer
        };
        let expression = routing_expression.map(Arc::new);
        let invoke =
            move |input: Option<Message<Bytes>>,
                  input_ctx: &ConversionContext,
                  output_ctx: &ConversionContext|
                  -> BoxFuture<'static, Result<Option<Message<Bytes>>, FunctionError>> {
                let routed = input
                    .as_ref()
                    .ok_or_else(|| FunctionError::msg("functionRouter needs an input message"))
                    .and_then(|m| route(m, &routes, expression.as_deref()));
                match routed {
                    Ok(f) => f.call(input, input_ctx, output_ctx),
                    Err(e) => Box::pin(async move { Err(e) }),
                }
            };
        ErasedFunction {
            kind,
            invoke: Arc::new(invoke),
            batch: None,
            stream: None,
        }
    }
}

/// The function a message is routed to.
fn route(
    message: &Message<Bytes>,
    routes: &BTreeMap<String, ErasedFunction>,
    expression: Option<&crate::expression::Expression>,
) -> Result<ErasedFunction, FunctionError> {
    let name = match (
        message.headers().get_str(ROUTE_DEFINITION_HEADER),
        expression,
    ) {
        (Some(name), _) => name.trim().to_owned(),
        (None, Some(expr)) => match expr.evaluate(message) {
            Ok(crate::expression::Value::Null) => {
                return Err(FunctionError::msg(format!(
                    "functionRouter: `spring.cloud.function.routing-expression` `{expr}` evaluated to null"
                ))
                .with_kind("routing"));
            }
            Ok(v) => v.to_string(),
            Err(e) => {
                return Err(FunctionError::msg(format!(
                    "functionRouter: `spring.cloud.function.routing-expression` `{expr}` failed: {e}"
                ))
                .with_kind("routing"));
            }
        },
        (None, None) => {
            return Err(FunctionError::msg(format!(
                "functionRouter: the message has no `{ROUTE_DEFINITION_HEADER}` header and `spring.cloud.function.routing-expression` is not set"
            ))
            .with_kind("routing"));
        }
    };
    routes.get(&name).cloned().ok_or_else(|| {
        FunctionError::msg(format!(
            "functionRouter: no function `{name}` to route to (registered: {})",
            routes.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .with_kind("routing")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ConversionContext {
        ConversionContext::new("application/json")
    }

    #[tokio::test]
    async fn composition_of_function_and_consumer_is_a_consumer() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut c = FunctionCatalog::new();
        c.function("up", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        });
        c.consumer("log", move |s: String| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .map_err(|_| FunctionError::msg("poisoned"))?
                    .push(s);
                Ok::<_, FunctionError>(())
            }
        });
        let f = c
            .resolve(&FunctionDefinition::parse("up|log").unwrap())
            .unwrap();
        assert_eq!(f.kind(), FunctionKind::Consumer);
        let out = f
            .call(Some(Message::bytes("abc")), &ctx(), &ctx())
            .await
            .unwrap();
        assert!(out.is_none());
        assert_eq!(*seen.lock().unwrap(), vec!["ABC".to_string()]);
    }

    #[tokio::test]
    async fn supplier_then_function_is_a_supplier() {
        let mut c = FunctionCatalog::new();
        c.supplier("tick", || async { Ok::<_, FunctionError>("t".to_owned()) });
        c.function("up", |s: String| async move {
            Ok::<_, FunctionError>(s.to_uppercase())
        });
        let f = c
            .resolve(&FunctionDefinition::parse("tick|up").unwrap())
            .unwrap();
        assert_eq!(f.kind(), FunctionKind::Supplier);
        let out = f.call(None, &ctx(), &ctx()).await.unwrap().unwrap();
        assert_eq!(&out.payload()[..], b"T");
    }

    #[test]
    fn invalid_compositions_and_unknown_names_are_errors() {
        let mut c = FunctionCatalog::new();
        c.consumer("log", |_: String| async { Ok::<_, FunctionError>(()) });
        c.supplier("tick", || async { Ok::<_, FunctionError>(1) });
        let err = c
            .resolve(&FunctionDefinition::parse("log|tick").unwrap())
            .unwrap_err();
        assert!(matches!(err, ResolveError::Composition { .. }), "{err}");
        let err = c
            .resolve(&FunctionDefinition::parse("nope").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        assert!(err.to_string().contains("log, tick"), "{err}");
    }

    #[tokio::test]
    async fn input_headers_propagate_to_plain_outputs_but_not_internal_ones() {
        let mut c = FunctionCatalog::new();
        c.function("id", |s: String| async move { Ok::<_, FunctionError>(s) });
        let f = c
            .resolve(&FunctionDefinition::parse("id").unwrap())
            .unwrap();
        let input = Message::bytes("x")
            .with_header("correlation", "c1")
            .with_header(names::DELIVERY_ATTEMPT, 2_i32)
            .with_header(names::CONTENT_TYPE, "text/plain");
        let out = f.call(Some(input), &ctx(), &ctx()).await.unwrap().unwrap();
        assert_eq!(out.headers().get_str("correlation"), Some("c1"));
        assert!(!out.headers().contains(names::DELIVERY_ATTEMPT));
        assert_eq!(out.content_type(), Some("application/json"));
    }

    #[tokio::test]
    async fn decode_failure_is_a_function_error_not_a_panic() {
        #[derive(serde::Deserialize)]
        struct Order {
            #[allow(dead_code, reason = "only decoded")]
            amount: i64,
        }
        let mut c = FunctionCatalog::new();
        c.consumer("take", |_: Order| async { Ok::<_, FunctionError>(()) });
        let f = c
            .resolve(&FunctionDefinition::parse("take").unwrap())
            .unwrap();
        let err = f
            .call(Some(Message::bytes("{oops")), &ctx(), &ctx())
            .await
            .unwrap_err();
        assert!(err.kind().contains("ConversionError"), "{}", err.kind());
    }

    #[tokio::test]
    async fn json_without_a_content_type_is_decoded_as_the_bindings_content_type() {
        #[derive(serde::Deserialize)]
        struct Order {
            amount: i64,
        }
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let s = seen.clone();
        let mut c = FunctionCatalog::new();
        c.consumer("take", move |o: Order| {
            let s = s.clone();
            async move {
                s.store(o.amount, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, FunctionError>(())
            }
        });
        let f = c
            .resolve(&FunctionDefinition::parse("take").unwrap())
            .unwrap();
        // No contentType header (a producer that is not Spring): JSON, the binding's default.
        f.call(Some(Message::bytes(r#"{"amount":7}"#)), &ctx(), &ctx())
            .await
            .unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 7);
        // What a broker reports when none was set.
        let octet = Message::bytes(r#"{"amount":8}"#)
            .with_header(names::CONTENT_TYPE, "application/octet-stream");
        f.call(Some(octet), &ctx(), &ctx()).await.unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 8);
        // A failure says the content type was assumed.
        let err = f
            .call(Some(Message::bytes("not json")), &ctx(), &ctx())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the message had no content type")
                && text.contains("`application/json` was assumed"),
            "{text}"
        );
    }
}
