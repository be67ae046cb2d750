//! What a binder supports, declared so unsupported features fail at bind time.

use std::fmt;

use stream_config::AckMode;

use crate::error::BinderError;
use crate::process::{DeadLetterRoute, Recovery};

/// A feature a binding may need from its binder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Consumers the application polls (`spring.cloud.stream.pollable-source`).
    PollableConsumer,
    /// `acknowledge-mode: MANUAL`: the function settles the message.
    ManualAck,
    /// `acknowledge-mode: NONE`: the broker settles on delivery.
    NoAck,
    /// Partitioned producers and consumers.
    Partitioning,
    /// Consumer groups with competing members and anonymous subscriptions.
    ConsumerGroups,
    /// Messages that fail after retries go to a dead-letter destination.
    DeadLetter,
    /// Producer `required-groups` retained before any consumer exists.
    RequiredGroups,
    /// Consumers receiving several messages per call (`batch-mode`).
    BatchConsumer,
    /// Transactional producers or consumers.
    Transactions,
    /// Headers keep their types on the wire (an `i32` arrives as an `i32`); without it they
    /// arrive as strings (RocketMQ user properties).
    TypedHeaders,
}

impl Capability {
    const ALL: [Capability; 10] = [
        Capability::PollableConsumer,
        Capability::ManualAck,
        Capability::NoAck,
        Capability::Partitioning,
        Capability::ConsumerGroups,
        Capability::DeadLetter,
        Capability::RequiredGroups,
        Capability::BatchConsumer,
        Capability::Transactions,
        Capability::TypedHeaders,
    ];

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::PollableConsumer => "pollable consumers",
            Capability::ManualAck => "acknowledge-mode MANUAL",
            Capability::NoAck => "acknowledge-mode NONE",
            Capability::Partitioning => "partitioning",
            Capability::ConsumerGroups => "consumer groups",
            Capability::DeadLetter => "dead-letter destinations",
            Capability::RequiredGroups => "required-groups",
            Capability::BatchConsumer => "batch-mode consumers",
            Capability::Transactions => "transactions",
            Capability::TypedHeaders => "typed headers",
        })
    }
}

/// The set of [`Capability`] values a binder declares.
///
/// ```
/// use stream_core::binder::{Capabilities, Capability};
/// let caps = Capabilities::none().with(Capability::Partitioning).with(Capability::DeadLetter);
/// assert!(caps.supports(Capability::Partitioning));
/// assert!(!caps.supports(Capability::PollableConsumer));
/// assert_eq!(caps.iter().count(), 2);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u32);

impl Capabilities {
    /// No capabilities.
    pub const fn none() -> Self {
        Capabilities(0)
    }

    /// Adds a capability.
    pub fn with(self, capability: Capability) -> Self {
        Capabilities(self.0 | capability.bit())
    }

    /// Whether the capability is declared.
    pub fn supports(&self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The declared capabilities.
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL.into_iter().filter(|c| self.supports(*c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::none(), Capabilities::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The capability an acknowledge mode needs, if any.
pub(crate) fn required_capability(mode: AckMode) -> Option<Capability> {
    match mode {
        AckMode::Manual => Some(Capability::ManualAck),
        AckMode::None => Some(Capability::NoAck),
        AckMode::Auto => None,
    }
}

/// Checks what a consumer's recovery asks of the binder against its declared capabilities.
pub(crate) fn check_recovery(
    binder_type: &str,
    capabilities: Capabilities,
    binding: &str,
    recovery: &Recovery,
) -> Result<(), BinderError> {
    let needs = [
        (recovery.transactional(), Capability::Transactions),
        (
            recovery.exhausted() == DeadLetterRoute::Publish
                || recovery.rejected() == DeadLetterRoute::Publish,
            Capability::DeadLetter,
        ),
    ];
    for (needed, capability) in needs {
        if needed && !capabilities.supports(capability) {
            return Err(BinderError::unsupported(
                binder_type,
                binding,
                format!(
                    "{capability} (its consumer's recovery needs it but the binder does not declare it)"
                ),
            ));
        }
    }
    Ok(())
}
