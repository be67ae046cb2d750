//! Header names with a meaning to the framework, spelled as Spring spells them on the wire.

use std::borrow::Cow;

use super::HeaderName;

/// Content type of the payload (`contentType`).
pub const CONTENT_TYPE: &str = "contentType";
/// Partition chosen by the producer (`scst_partition`).
pub const PARTITION: &str = "scst_partition";
/// A partition forced by the user; wins over the computed one and is removed (`scst_partitionOverride`).
pub const PARTITION_OVERRIDE: &str = "scst_partitionOverride";
/// Attempt number of the current delivery, starting at 1 (`deliveryAttempt`). Never sent.
pub const DELIVERY_ATTEMPT: &str = "deliveryAttempt";
/// Routes a function's output to another destination (`spring.cloud.stream.sendto.destination`).
pub const SENDTO_DESTINATION: &str = "spring.cloud.stream.sendto.destination";
/// Message id (`id`), mapped to the broker's message id where it has one.
pub const ID: &str = "id";
/// Creation time in epoch milliseconds (`timestamp`).
pub const TIMESTAMP: &str = "timestamp";
/// Raw inbound message placeholder name used by Spring (`sourceData`); never sent.
pub const SOURCE_DATA: &str = "sourceData";

/// Root-cause message of the failure of a dead-lettered message (`x-exception-message`).
pub const EXCEPTION_MESSAGE: &str = "x-exception-message";
/// The failure's error chain as text, on a dead-lettered message (`x-exception-stacktrace`).
pub const EXCEPTION_STACKTRACE: &str = "x-exception-stacktrace";
/// W3C trace context of the producing span (`traceparent`).
pub const TRACEPARENT: &str = "traceparent";
/// W3C vendor trace state (`tracestate`).
pub const TRACESTATE: &str = "tracestate";

/// Headers the framework uses internally and never maps to an outbound broker message.
pub const INTERNAL: &[&str] = &[PARTITION, SOURCE_DATA, DELIVERY_ATTEMPT, SENDTO_DESTINATION];

/// Whether a header is internal to the framework (see [`INTERNAL`]).
pub fn is_internal(name: &str) -> bool {
    INTERNAL.contains(&name)
}

/// The names [`header_name`] hands out without allocating: the framework's own, which a Spring
/// service (or this framework) puts on most messages.
const WELL_KNOWN: &[&str] = &[
    CONTENT_TYPE,
    ID,
    TIMESTAMP,
    TRACEPARENT,
    TRACESTATE,
    PARTITION,
    PARTITION_OVERRIDE,
    DELIVERY_ATTEMPT,
    SENDTO_DESTINATION,
    SOURCE_DATA,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
];

/// The header name for a name read off the wire: a framework name borrows its constant (no
/// allocation per message), any other is copied.
///
/// For binders mapping broker headers or properties to [`Headers`](super::Headers).
///
/// ```
/// use std::borrow::Cow;
/// use stream_core::message::names::{self, header_name};
/// let wire = String::from("contentType");
/// assert!(matches!(header_name(&wire), Cow::Borrowed(n) if n == names::CONTENT_TYPE));
/// assert!(matches!(header_name("x-custom"), Cow::Owned(n) if n == "x-custom"));
/// ```
pub fn header_name(name: &str) -> HeaderName {
    match WELL_KNOWN.iter().find(|known| **known == name) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(name.to_owned()),
    }
}
