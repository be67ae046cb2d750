//! Processing a consumed message: the pipeline (attempts, back-off, caught panics, error
//! channels), what it comes to, and the settlement table that turns that into what the binder
//! does on the broker. Decided here once for every binder.

mod outcome;
pub(crate) mod pipeline;
mod settle;

pub(crate) use outcome::Outcome;
pub use outcome::{BoundedFailure, DeadLetter, FailedMessage, HeaderBudget, headers_to_drop};
pub use settle::{DeadLetterRoute, Recovery, Settlement};
pub(crate) use settle::{Plan, Settler, plan};
