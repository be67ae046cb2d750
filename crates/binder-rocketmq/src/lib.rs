#![recursion_limit = "256"]
#![doc = include_str!("../README.md")]

pub mod config;
mod consumer;
mod factory;
pub mod headers;
mod hooks;
mod pollable;
mod producer;
mod runtime;

pub use factory::{
    ROCKETMQ_BINDER_TYPE, RocketMqBinder, RocketMqBinderFactory, RocketMqBinderFactoryBuilder,
    extension_schema,
};
pub use hooks::{
    MessageQueueSelectorFn, SendCallbackFn, SendReceipt, TransactionHandler, TransactionState,
};
pub use stream_core::*;
