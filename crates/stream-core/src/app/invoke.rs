//! What a consumer binding runs per attempt: the function, its output conversion, and the
//! send to the output binding (or to a `sendto` destination).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::bridge::StreamBridge;
use super::output::OutputBinding;
use crate::error::FunctionError;
use crate::function::{ConversionContext, ErasedFunction};
use crate::message::names;
use crate::process::pipeline::{BatchInvoker, Invoker};

/// Sends a function's output: to the `sendto` destination if the header names one, else to the
/// function's output binding.
pub(crate) async fn route_output(
    out: Option<crate::Message<bytes::Bytes>>,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> Result<(), FunctionError> {
    let Some(mut out) = out else {
        return Ok(());
    };
    let routed = out
        .headers_mut()
        .remove(names::SENDTO_DESTINATION)
        .map(|v| v.to_string());
    match (routed, output) {
        (Some(destination), _) => bridge
            .send_bytes(&destination, out)
            .await
            .map_err(FunctionError::new),
        (None, Some(output)) => output.send(out).await.map_err(FunctionError::new),
        (None, None) => Ok(()),
    }
}

pub(crate) fn function_invoker(
    f: ErasedFunction,
    in_ctx: ConversionContext,
    out_ctx: ConversionContext,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> Invoker {
    Arc::new(move |message| {
        let call = f.call(Some(message), &in_ctx, &out_ctx);
        let (output, bridge) = (output.clone(), bridge.clone());
        Box::pin(async move { route_output(call.await?, output, bridge).await })
            as BoxFuture<'static, Result<(), FunctionError>>
    })
}

pub(crate) fn batch_function_invoker(
    f: ErasedFunction,
    in_ctx: ConversionContext,
    out_ctx: ConversionContext,
    output: Option<Arc<OutputBinding>>,
    bridge: StreamBridge,
) -> BatchInvoker {
    Arc::new(move |messages| {
        let call = f.call_batch(messages, &in_ctx, &out_ctx);
        let (output, bridge) = (output.clone(), bridge.clone());
        Box::pin(async move { route_output(call.await?, output, bridge).await })
            as BoxFuture<'static, Result<(), FunctionError>>
    })
}
