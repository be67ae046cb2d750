//! The outputs of a stream function: numbered handles to send to, and what an output stream
//! may yield.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use super::erased::OutputSink;
use crate::error::FunctionError;
use crate::function::FunctionOutput;
use crate::message::{Failed, Message};

/// One output binding (`<name>-out-<j>`) of a stream function: [`Output::send`] converts the
/// payload by the binding's content type and sends it; when it returns `Ok`, the deliveries the
/// message carries are acknowledged.
pub struct Output<T> {
    sink: OutputSink,
    _payload: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("binding", &self.sink.binding)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        Self {
            sink: self.sink.clone(),
            _payload: PhantomData,
        }
    }
}

impl<T: Serialize + Send + 'static> Output<T> {
    pub(crate) fn new(sink: OutputSink) -> Self {
        Self {
            sink,
            _payload: PhantomData,
        }
    }

    /// The output binding's name.
    pub fn binding(&self) -> &str {
        &self.sink.binding
    }

    /// Converts and sends a message. Its deliveries are acknowledged once it is sent; when
    /// converting or sending fails they take the binding's recovery and the error is returned
    /// (the stream may go on).
    pub async fn send(&self, mut message: Message<T>) -> Result<(), FunctionError> {
        let acks = message.take_acks();
        match message.into_message(&self.sink.ctx) {
            Ok(Some(mut bytes)) => {
                bytes.join_acks(acks);
                self.sink.send(bytes).await
            }
            // A JSON `null` payload: nothing to send, the inputs are handled.
            Ok(None) => {
                acks.done();
                Ok(())
            }
            Err(e) => {
                let e = Arc::new(FunctionError::new(e));
                acks.fail(Arc::clone(&e));
                Err(FunctionError::msg(e.to_string()).with_kind(e.kind().to_owned()))
            }
        }
    }
}

/// The outputs a [`stream_process`](crate::StreamAppBuilder::stream_process) function sends
/// to: one [`Output`] (`<name>-out-0`) or a tuple of them (`<name>-out-0`, `<name>-out-1`,
/// ... up to four), each of its own payload type.
pub trait OutputHandles: Send + Sized + 'static {
    /// How many output bindings.
    const COUNT: usize;
    /// Builds the handles from the runtime's sinks, in binding order.
    #[doc(hidden)]
    fn from_sinks(sinks: Vec<OutputSink>) -> Option<Self>;
}

impl<A: Serialize + Send + 'static> OutputHandles for Output<A> {
    const COUNT: usize = 1;
    fn from_sinks(sinks: Vec<OutputSink>) -> Option<Self> {
        let mut it = sinks.into_iter();
        Some(Output::new(it.next()?))
    }
}

macro_rules! tuple_outputs {
    ($count:expr; $($t:ident),+) => {
        impl<$($t: Serialize + Send + 'static),+> OutputHandles for ($(Output<$t>,)+) {
            const COUNT: usize = $count;
            fn from_sinks(sinks: Vec<OutputSink>) -> Option<Self> {
                let mut it = sinks.into_iter();
                Some(($(Output::<$t>::new(it.next()?),)+))
            }
        }
    };
}

tuple_outputs!(2; A, B);
tuple_outputs!(3; A, B, C);
tuple_outputs!(4; A, B, C, D);

/// What the stream of a [`stream_function`](crate::StreamAppBuilder::stream_function) yields:
/// a [`Message`] to send to `<name>-out-0`, or a `Result` whose `Err` ([`Message::fail`])
/// reports a message given up on (its deliveries already take the binding's recovery).
pub trait StreamItem: Send + 'static {
    /// The payload sent.
    type Payload: Serialize + Send + 'static;
    /// The message to send, or the failure.
    fn into_result(self) -> Result<Message<Self::Payload>, Failed>;
}

impl<T: Serialize + Send + 'static> StreamItem for Message<T> {
    type Payload = T;
    fn into_result(self) -> Result<Message<T>, Failed> {
        Ok(self)
    }
}

impl<T: Serialize + Send + 'static> StreamItem for Result<Message<T>, Failed> {
    type Payload = T;
    fn into_result(self) -> Result<Message<T>, Failed> {
        self
    }
}
