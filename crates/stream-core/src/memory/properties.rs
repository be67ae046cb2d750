//! Extended properties of the in-memory binder (`spring.cloud.stream.memory.*`).

use crate::message::AckMode;

stream_config::properties! {
    /// Binder-level properties of the in-memory binder (none yet).
    pub struct MemoryBinderProperties {}

    /// Consumer properties of the in-memory binder
    /// (`spring.cloud.stream.memory.bindings.<name>.consumer.*`).
    pub struct MemoryConsumerProperties {
        /// Who settles a message: AUTO (by the function's result), MANUAL (the function, through
        /// the message's acknowledgment) or NONE (settled on delivery).
        pub acknowledge_mode: AckMode = AckMode::Auto,
        /// With `batch-mode=true`: the most messages handed to the function at once (what is
        /// waiting, up to this many).
        pub batch_size: u32 = 10,
    }

    /// Producer properties of the in-memory binder (none yet).
    pub struct MemoryProducerProperties {}
}
