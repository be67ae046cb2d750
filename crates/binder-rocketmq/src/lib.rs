#![recursion_limit = "256"]
#![doc = include_str!("../README.md")]

mod allocate;
mod bind;
mod client;
pub mod config;
mod consumer;
mod dead_letter;
mod delivery;
mod factory;
mod failure;
pub mod headers;
mod hooks;
mod listener;
mod park;
mod pollable;
mod producer;
mod provisioning;
mod runtime;
mod watch;

pub use bind::RocketMqBinder;
pub use config::ROCKETMQ_BINDER_TYPE;
pub use consumer::RocketMqConsumer;
pub use delivery::RocketMqRaw;
pub use factory::{RocketMqBinderFactory, RocketMqBinderFactoryBuilder};
pub use hooks::{
    MessageQueueSelectorFn, SendCallbackFn, SendReceipt, TransactionHandler, TransactionState,
};
pub use pollable::RocketMqPollable;
pub use producer::RocketMqProducer;
pub use provisioning::{ConsumerTopic, ProducerTopic};
pub use stream_core;
pub use stream_core::*;
