//! Stream functions erased once: a run takes the input sources and output sinks and drives
//! the user's function until its inputs end; the typed shapes and their compositions.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::inbound::StreamInputs;
use super::output::{Output, OutputHandles, StreamItem};
use crate::error::FunctionError;
use crate::function::{ConversionContext, ErasedFunction, FunctionKind};
use crate::message::Message;

/// The messages of one input binding, as the runtime hands them to a stream function.
pub struct InboundSource {
    pub(crate) stream: BoxStream<'static, Message<Bytes>>,
    pub(crate) ctx: ConversionContext,
    pub(crate) binding: Arc<str>,
}

impl std::fmt::Debug for InboundSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSource")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl InboundSource {
    pub(crate) fn new(
        binding: impl Into<Arc<str>>,
        ctx: ConversionContext,
        stream: impl Stream<Item = Message<Bytes>> + Send + 'static,
    ) -> Self {
        Self {
            stream: stream.boxed(),
            ctx,
            binding: binding.into(),
        }
    }
}

type SendFn = dyn Fn(Message<Bytes>) -> BoxFuture<'static, Result<(), FunctionError>> + Send + Sync;

/// Where a stream function's output goes: the output binding (or the next part of a
/// composition). A sink settles the deliveries of what it is given.
#[derive(Clone)]
pub struct OutputSink {
    send: Arc<SendFn>,
    pub(crate) ctx: ConversionContext,
    pub(crate) binding: Arc<str>,
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSink")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl OutputSink {
    pub(crate) fn new<F, Fut>(binding: impl Into<Arc<str>>, ctx: ConversionContext, send: F) -> Self
    where
        F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FunctionError>> + Send + 'static,
    {
        Self {
            send: Arc::new(move |m| Box::pin(send(m))),
            ctx,
            binding: binding.into(),
        }
    }

    pub(crate) fn send(&self, m: Message<Bytes>) -> BoxFuture<'static, Result<(), FunctionError>> {
        (self.send)(m)
    }
}

/// How many input and output bindings a stream function has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamShape {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
}

type RunFn = dyn Fn(Vec<InboundSource>, Vec<OutputSink>) -> BoxFuture<'static, Result<(), FunctionError>>
    + Send
    + Sync;

/// A stream function, erased: one call is one run, which lasts until its inputs end.
#[derive(Clone)]
pub(crate) struct StreamRun {
    pub(crate) shape: StreamShape,
    run: Arc<RunFn>,
}

impl std::fmt::Debug for StreamRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRun")
            .field("shape", &self.shape)
            .finish()
    }
}

fn wiring(what: &str) -> FunctionError {
    FunctionError::msg(format!("stream function wired without its {what}")).with_kind("wiring")
}

/// Drives `stream` into `out`: each message is sent (and so acknowledged), each failure logged.
async fn drive<S>(stream: S, out: OutputSink) -> Result<(), FunctionError>
where
    S: Stream + Send + 'static,
    S::Item: StreamItem,
{
    let out: Output<<S::Item as StreamItem>::Payload> = Output::new(out);
    let mut stream = Box::pin(stream);
    while let Some(item) = stream.next().await {
        match item.into_result() {
            Ok(m) => {
                if let Err(e) = out.send(m).await {
                    tracing::warn!(binding = %out.binding(), error = %e,
                        "a stream function's output could not be sent; its inputs take the binding's recovery");
                }
            }
            Err(failed) => {
                tracing::warn!(error = %failed.error, "a stream function gave up on a message; its inputs take the binding's recovery");
            }
        }
    }
    Ok(())
}

impl StreamRun {
    fn new(shape: StreamShape, run: Arc<RunFn>) -> Self {
        Self { shape, run }
    }

    /// Runs once over `inputs`, sending to `outputs`.
    pub(crate) fn run(
        &self,
        inputs: Vec<InboundSource>,
        outputs: Vec<OutputSink>,
    ) -> BoxFuture<'static, Result<(), FunctionError>> {
        (self.run)(inputs, outputs)
    }

    /// `f(inputs)` is a stream sent to `<name>-out-0`.
    pub(crate) fn function<In, S, F>(f: F) -> Self
    where
        In: StreamInputs,
        S: Stream + Send + 'static,
        S::Item: StreamItem,
        F: Fn(In) -> S + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Self::new(
            StreamShape {
                inputs: In::COUNT,
                outputs: 1,
            },
            Arc::new(move |ins, outs| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let inputs = In::from_sources(ins).ok_or_else(|| wiring("inputs"))?;
                    let out = outs.into_iter().next().ok_or_else(|| wiring("output"))?;
                    drive(f(inputs), out).await
                })
            }),
        )
    }

    /// `f(inputs)` consumes the inputs; its messages are acknowledged as it drops them.
    pub(crate) fn consumer<In, E, Fut, F>(f: F) -> Self
    where
        In: StreamInputs,
        E: Into<FunctionError> + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        F: Fn(In) -> Fut + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Self::new(
            StreamShape {
                inputs: In::COUNT,
                outputs: 0,
            },
            Arc::new(move |ins, _| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let inputs = In::from_sources(ins).ok_or_else(|| wiring("inputs"))?;
                    f(inputs).await.map_err(Into::into)
                })
            }),
        )
    }

    /// `f(inputs, outputs)` sends to numbered outputs itself.
    pub(crate) fn process<In, Outs, E, Fut, F>(f: F) -> Self
    where
        In: StreamInputs,
        Outs: OutputHandles,
        E: Into<FunctionError> + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        F: Fn(In, Outs) -> Fut + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Self::new(
            StreamShape {
                inputs: In::COUNT,
                outputs: Outs::COUNT,
            },
            Arc::new(move |ins, outs| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let inputs = In::from_sources(ins).ok_or_else(|| wiring("inputs"))?;
                    let outputs = Outs::from_sinks(outs).ok_or_else(|| wiring("outputs"))?;
                    f(inputs, outputs).await.map_err(Into::into)
                })
            }),
        )
    }

    /// `f()` is an (infinite) stream sent to `<name>-out-0`; called again after it fails.
    pub(crate) fn supplier<S, F>(f: F) -> Self
    where
        S: Stream + Send + 'static,
        S::Item: StreamItem,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Self::new(
            StreamShape {
                inputs: 0,
                outputs: 1,
            },
            Arc::new(move |_, outs| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let out = outs.into_iter().next().ok_or_else(|| wiring("output"))?;
                    drive(f(), out).await
                })
            }),
        )
    }

    /// Whether it can be a part of a composition (one input at most, one output at most).
    fn single(&self) -> bool {
        self.shape.inputs <= 1 && self.shape.outputs <= 1
    }
}

/// Between the parts of a composition payloads travel as JSON, as between imperative parts.
fn middle(ctx: &ConversionContext) -> ConversionContext {
    ConversionContext {
        conversion: Arc::clone(&ctx.conversion),
        content_type: crate::convert::DEFAULT_CONTENT_TYPE.into(),
        native: false,
    }
}

/// The conversion context of the first input or output, for the middle of a composition.
fn any_ctx(ins: &[InboundSource], outs: &[OutputSink]) -> ConversionContext {
    ins.first()
        .map(|i| middle(&i.ctx))
        .or_else(|| outs.first().map(|o| middle(&o.ctx)))
        .unwrap_or_else(|| ConversionContext::new(crate::convert::DEFAULT_CONTENT_TYPE))
}

/// Calls an imperative function on one message of a stream, carrying its deliveries to the
/// output (or settling them: nothing produced is handled, an error takes the recovery).
async fn call_tracked(
    f: &ErasedFunction,
    mut m: Message<Bytes>,
    in_ctx: &ConversionContext,
    out_ctx: &ConversionContext,
) -> Result<Option<Message<Bytes>>, FunctionError> {
    let acks = m.take_acks();
    match f.call(Some(m), in_ctx, out_ctx).await {
        Ok(Some(mut out)) => {
            out.join_acks(acks);
            Ok(Some(out))
        }
        Ok(None) => {
            acks.done();
            Ok(None)
        }
        Err(e) => {
            let e = Arc::new(e);
            acks.fail(Arc::clone(&e));
            Err(FunctionError::msg(e.to_string()).with_kind(e.kind().to_owned()))
        }
    }
}

/// Why a composition with a stream function is refused, if it is.
fn refuse(a_multi: bool, b_multi: bool) -> Result<(), String> {
    if a_multi || b_multi {
        return Err("functions with several inputs or outputs cannot be composed (as in Spring: 'Composition of functions with multiple arguments is not supported')".into());
    }
    Ok(())
}

/// `a|b` where at least one part is a stream function.
pub(crate) fn compose(a: &ErasedFunction, b: &ErasedFunction) -> Result<ErasedFunction, String> {
    if a.is_batch() || b.is_batch() {
        return Err("batch functions cannot be composed".into());
    }
    match (a.stream_run(), b.stream_run()) {
        (Some(sa), Some(sb)) => {
            refuse(!sa.single(), !sb.single())?;
            if sa.shape.outputs == 0 {
                return Err("a stream consumer can only be the last part of a composition".into());
            }
            if sb.shape.inputs == 0 {
                return Err("a stream supplier can only be the first part of a composition".into());
            }
            Ok(ErasedFunction::from_stream(stream_then_stream(
                sa.clone(),
                sb.clone(),
            )))
        }
        (Some(sa), None) => {
            refuse(!sa.single(), false)?;
            match (sa.shape.outputs, b.kind()) {
                (0, _) => {
                    Err("a stream consumer can only be the last part of a composition".into())
                }
                (_, FunctionKind::Supplier) => {
                    Err("a supplier can only be the first part of a composition".into())
                }
                _ => Ok(ErasedFunction::from_stream(stream_then_imperative(
                    sa.clone(),
                    b.clone(),
                ))),
            }
        }
        (None, Some(sb)) => {
            refuse(false, !sb.single())?;
            match (a.kind(), sb.shape.inputs) {
                (_, 0) => Err("a stream supplier can only be the first part of a composition".into()),
                (FunctionKind::Consumer, _) => {
                    Err("a consumer can only be the last part of a composition".into())
                }
                (FunctionKind::Supplier, _) => Err(
                    "an imperative supplier (polled) cannot feed a stream function; register it with stream_supplier".into(),
                ),
                _ => Ok(ErasedFunction::from_stream(imperative_then_stream(
                    a.clone(),
                    sb.clone(),
                ))),
            }
        }
        (None, None) => Err("no stream function in the composition".into()),
    }
}

/// The output of `a` becomes the input of `b` through a small bounded hand-off.
fn stream_then_stream(a: StreamRun, b: StreamRun) -> StreamRun {
    let shape = StreamShape {
        inputs: a.shape.inputs,
        outputs: b.shape.outputs,
    };
    StreamRun::new(
        shape,
        Arc::new(move |ins, outs| {
            let mid = any_ctx(&ins, &outs);
            let (tx, rx) = tokio::sync::mpsc::channel::<Message<Bytes>>(16);
            let hand_off = OutputSink::new("composition", mid.clone(), move |m: Message<Bytes>| {
                let tx = tx.clone();
                async move {
                    tx.send(m).await.map_err(|unsent| {
                        // The next part is gone: what it did not take goes back to the broker.
                        let mut m = unsent.0;
                        m.take_acks().requeue();
                        FunctionError::msg("the next part of the composition stopped")
                    })
                }
            });
            let middle_in = InboundSource::new(
                "composition",
                mid,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            );
            let first = a.run(ins, vec![hand_off]);
            let second = b.run(vec![middle_in], outs);
            Box::pin(async move {
                let (x, y) = futures::future::join(first, second).await;
                x.and(y)
            })
        }),
    )
}

/// Each output of `a` goes through the imperative `f`, then to the output.
fn stream_then_imperative(a: StreamRun, f: ErasedFunction) -> StreamRun {
    let outputs = usize::from(f.kind().has_output());
    StreamRun::new(
        StreamShape {
            inputs: a.shape.inputs,
            outputs,
        },
        Arc::new(move |ins, outs| {
            let mid = any_ctx(&ins, &outs);
            let next = outs.into_iter().next();
            let f = f.clone();
            let out_ctx = next.as_ref().map_or_else(|| mid.clone(), |o| o.ctx.clone());
            let mid_for_sink = mid.clone();
            let sink = OutputSink::new("composition", mid, move |m: Message<Bytes>| {
                let (f, next, in_ctx, out_ctx) = (
                    f.clone(),
                    next.clone(),
                    mid_for_sink.clone(),
                    out_ctx.clone(),
                );
                async move {
                    match call_tracked(&f, m, &in_ctx, &out_ctx).await? {
                        Some(out) => match &next {
                            Some(n) => n.send(out).await,
                            None => Ok(()),
                        },
                        None => Ok(()),
                    }
                }
            });
            a.run(ins, vec![sink])
        }),
    )
}

/// Each input goes through the imperative `f` before `b` sees it.
fn imperative_then_stream(f: ErasedFunction, b: StreamRun) -> StreamRun {
    StreamRun::new(
        StreamShape {
            inputs: 1,
            outputs: b.shape.outputs,
        },
        Arc::new(move |ins, outs| {
            let f = f.clone();
            let mut ins = ins.into_iter();
            let Some(first) = ins.next() else {
                return Box::pin(async { Err(wiring("inputs")) });
            };
            let mid = middle(&first.ctx);
            let in_ctx = first.ctx.clone();
            let out_ctx = mid.clone();
            let binding = Arc::clone(&first.binding);
            let mapped = first
                .stream
                .then(move |m| {
                    let (f, in_ctx, out_ctx) = (f.clone(), in_ctx.clone(), out_ctx.clone());
                    async move { call_tracked(&f, m, &in_ctx, &out_ctx).await.ok().flatten() }
                })
                .filter_map(futures::future::ready);
            b.run(vec![InboundSource::new(binding, mid, mapped)], outs)
        }),
    )
}
