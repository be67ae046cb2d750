#![doc = include_str!("../README.md")]

mod affinity;
pub mod batching;
mod binder;
mod channel_slot;
pub mod compression;
pub mod config;
mod connection;
mod consumer;
pub mod error;
mod frame;
pub mod headers;
mod open_batches;
mod polled;
mod producer;
pub mod provisioning;
mod scaling;
mod shared;
#[cfg(test)]
mod strategies;
mod tls;
mod transaction;

pub use binder::{BINDER_TYPE, RabbitBinder, RabbitBinderFactory};
pub use config::{
    ConfirmType, ContainerType, DeliveryMode, ExchangeType, NullableString, QuorumProperties,
    RabbitBinderProperties, RabbitConnectionProperties, RabbitConsumerProperties,
    RabbitProducerProperties, RabbitSslProperties,
};
pub use consumer::{RabbitConsumer, RabbitRawMessage};
pub use error::RabbitError;
pub use polled::RabbitPollable;
pub use producer::{ConfirmAckCallback, PUBLISH_CONFIRM, RabbitProducerBinding, X_DELAY};
pub use provisioning::{ConsumerTopology, ProducerTopology};
pub use scaling::ConsumerScaling;

/// The runtime this binder plugs into, re-exported so applications depend on this crate only.
pub use stream_core;
pub use stream_core::stream_config;
pub use stream_core::{
    AckMode, Acknowledger, Acknowledgment, BinderError, BoxError, ConversionError, FunctionError,
    HeaderValue, Headers, Message, PollableConsumer, SpecialOutcome, StreamApp, StreamAppBuilder,
    StreamBridge, StreamError, Undelivered,
};
