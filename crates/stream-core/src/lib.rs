#![doc = include_str!("../README.md")]

pub mod app;
pub mod binder;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod convert;
pub mod error;
pub mod errors;
pub mod expression;
pub mod function;
pub mod memory;
pub mod message;
pub mod meters;
pub mod partition;
mod process;
pub mod retry;
#[cfg(feature = "otel")]
pub mod telemetry;

pub use app::{PollableConsumer, StreamApp, StreamAppBuilder, StreamBridge, StreamError};
pub use error::{
    BinderError, BinderErrorKind, BoxError, ConversionError, ErrorStatus, FunctionError,
    PANIC_KIND, SpecialOutcome, Undelivered,
};
pub use message::{
    AckMode, Acknowledger, Acknowledgment, HeaderName, HeaderValue, Headers, Message,
};
pub use stream_config;
