//! One input binding of a stream function as a stream of typed messages.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use serde::de::DeserializeOwned;

use super::erased::InboundSource;
use crate::error::FunctionError;
use crate::function::FunctionInput;
use crate::message::Message;

/// The messages of one input binding (`<name>-in-<i>`), converted to `T` by content type. It
/// ends when the application stops. Each message carries its delivery ([`Message::acks`]):
/// see [the module](super) for when it is acknowledged.
///
/// A message whose payload cannot be converted to `T` is not yielded: it goes to the binding's
/// recovery (error channel, dead-letter destination) at once.
pub struct Inbound<T> {
    source: InboundSource,
    _payload: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Inbound<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("binding", &self.source.binding)
            .finish_non_exhaustive()
    }
}

impl<T> Inbound<T> {
    /// The input binding's name.
    pub fn binding(&self) -> &str {
        &self.source.binding
    }

    pub(crate) fn new(source: InboundSource) -> Self {
        Self {
            source,
            _payload: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Stream for Inbound<T> {
    type Item = Message<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message<T>>> {
        let this = self.get_mut();
        loop {
            let Some(mut m) = futures::ready!(this.source.stream.as_mut().poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let acks = m.take_acks();
            let (payload, headers) = m.into_parts();
            match <T as FunctionInput>::from_payload(payload, &headers, &this.source.ctx) {
                Ok(value) => {
                    let mut out = Message::from_parts(value, headers);
                    out.join_acks(acks);
                    return Poll::Ready(Some(out));
                }
                Err(e) => {
                    tracing::warn!(binding = %this.source.binding, error = %e,
                        "a message cannot be converted for the stream function; it takes the binding's recovery");
                    acks.fail(Arc::new(FunctionError::new(e)));
                }
            }
        }
    }
}

/// The inputs of a stream function: one [`Inbound`] (`<name>-in-0`) or a tuple of them
/// (`<name>-in-0`, `<name>-in-1`, ... up to four), Spring's `Tuple2<Flux<A>, Flux<B>>`.
pub trait StreamInputs: Send + Sized + 'static {
    /// How many input bindings.
    const COUNT: usize;
    /// Builds the inputs from the runtime's sources, in binding order.
    #[doc(hidden)]
    fn from_sources(sources: Vec<InboundSource>) -> Option<Self>;
}

impl<A: DeserializeOwned + Send + 'static> StreamInputs for Inbound<A> {
    const COUNT: usize = 1;
    fn from_sources(sources: Vec<InboundSource>) -> Option<Self> {
        let mut it = sources.into_iter();
        Some(Inbound::new(it.next()?))
    }
}

macro_rules! tuple_inputs {
    ($count:expr; $($t:ident),+) => {
        impl<$($t: DeserializeOwned + Send + 'static),+> StreamInputs for ($(Inbound<$t>,)+) {
            const COUNT: usize = $count;
            fn from_sources(sources: Vec<InboundSource>) -> Option<Self> {
                let mut it = sources.into_iter();
                Some(($(Inbound::<$t>::new(it.next()?),)+))
            }
        }
    };
}

tuple_inputs!(2; A, B);
tuple_inputs!(3; A, B, C);
tuple_inputs!(4; A, B, C, D);
