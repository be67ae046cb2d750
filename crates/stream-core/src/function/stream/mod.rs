//! Stream functions: a function that takes each input binding as an async [`Stream`] of
//! messages ([`Inbound`]) and emits a stream (or sends to numbered [`Output`]s), for windows,
//! aggregation, joins of several inputs, routing to several outputs, stateful filters and
//! infinite suppliers. Spring Cloud Stream's reactive functions (`Function<Flux<A>, Flux<B>>`,
//! `Function<Tuple2<Flux<A>, Flux<B>>, Flux<C>>`), with what Spring gives up kept:
//!
//! * **Each input is settled by what became of it.** A message is acknowledged when the last
//!   message carrying its delivery ([`Acks`]) is sent, or dropped by the stream (a filter, an
//!   aggregate that was sent); [`Message::fail`] sends it to the binding's recovery (error
//!   channel, then dead-letter destination) and the stream goes on. Nothing is acknowledged on
//!   hand-off, so a service killed mid-window loses nothing: the broker delivers the window's
//!   messages again.
//! * **A failing stream is restarted.** A panic, an error returned by the function, or a stream
//!   that ends while the application runs: the messages the run held go back to the broker and
//!   the function is called again with fresh inputs after a back-off. A message in flight during
//!   `max-attempts` crashes is dead-lettered instead, so a poison message cannot loop.
//! * **Back-pressure.** The broker's prefetch bounds what is in flight; the input hand-off is a
//!   small bounded buffer.
//!
//! Messages that fail to convert to the input type never reach the stream: they take the
//! binding's recovery at once.
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use stream_core::function::stream::{Inbound, MessageStreamExt};
//! use stream_core::{Message, StreamApp};
//!
//! let builder = StreamApp::builder()
//!     // `upper-in-0` -> `upper-out-0`
//!     .stream_function("upper", |input: Inbound<String>| input.map(|m| m.map(|s| s.to_uppercase())))
//!     // one total per 100 orders (or per 5 s): the total acknowledges the 100 inputs
//!     .stream_function("totals", |input: Inbound<i64>| {
//!         input
//!             .windows(100, Duration::from_secs(5))
//!             .map(|window| Message::merge(window, |xs| xs.into_iter().sum::<i64>()))
//!     });
//! ```

mod erased;
mod inbound;
mod intake;
mod output;
mod window;

pub use erased::{InboundSource, OutputSink};
pub(crate) use erased::{StreamRun, compose};
pub use inbound::{Inbound, StreamInputs};
pub(crate) use intake::Release;
pub(crate) use intake::{Crashes, Intake, RunEnd, RunState, Supervised, identity};
pub use output::{Output, OutputHandles, StreamItem};
pub use window::MessageStreamExt;

#[doc(no_inline)]
pub use crate::message::Message;
pub use crate::message::{Acks, Failed};
#[doc(no_inline)]
pub use futures::Stream;
