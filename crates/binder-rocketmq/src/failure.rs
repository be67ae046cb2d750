//! RocketMQ client errors as the core's [`BinderError`], with a retry status: what may pass
//! (the name server or broker unreachable, a timeout, a route not there yet) is temporary, so
//! the runtime's late binding retries it every `binding-retry-interval`; the rest is permanent.

use std::fmt;

use rocketmq_client_rust::ClientError;
use stream_core::BinderError;

use crate::config::ResolvedCommon;

/// Whether a client error may pass by itself: the canonical condition says the service is
/// unavailable or a deadline passed, or the client's own hint is to back off or refresh.
pub(crate) fn is_transient(e: &ClientError) -> bool {
    let d = e.descriptor();
    matches!(
        d.condition().as_str(),
        "unavailable" | "deadline_exceeded" | "aborted" | "resource_exhausted" | "cancelled"
    ) || matches!(
        d.recovery_hint().as_str(),
        "backoff" | "switch_broker" | "refresh_leader"
    )
}

/// The name server (or the broker behind it) cannot be reached: temporary.
pub(crate) fn unreachable(common: &ResolvedCommon, what: impl fmt::Display) -> BinderError {
    BinderError::connection(
        format_args!("RocketMQ name server {}", common.name_server),
        format_args!(
            "{what}; check spring.cloud.stream.rocketmq.binder.name-server and that the broker \
             has registered with it"
        ),
    )
}

/// A client that could not start or an operation that failed: temporary (as
/// [`unreachable`]) when the client says it may pass, else `permanent`; the client's error is
/// the source either way.
pub(crate) fn classify(
    e: ClientError,
    common: &ResolvedCommon,
    what: impl fmt::Display,
    permanent: impl FnOnce(String) -> BinderError,
) -> BinderError {
    if is_transient(&e) {
        unreachable(common, what).with_source(e)
    } else {
        permanent(what.to_string()).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_unavailable_services_are_temporary() {
        assert!(is_transient(&ClientError::timeout("send", 3000)));
        assert!(!is_transient(&ClientError::illegal_argument("bad topic")));
        assert!(!is_transient(&ClientError::config_missing("group")));
    }

    #[test]
    fn classified_errors_keep_the_source_out_of_the_message() {
        let common = crate::config::RocketMqConsumerProperties::default()
            .resolve(&crate::config::RocketMqBinderProperties::default());
        let e = classify(
            ClientError::timeout("start", 3000),
            &common,
            "the consumer cannot start",
            |m| BinderError::provisioning("t", m),
        );
        assert!(e.is_temporary());
        assert!(e.to_string().contains("127.0.0.1:9876"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = classify(
            ClientError::illegal_argument("x"),
            &common,
            "the topic is refused",
            |m| BinderError::provisioning("t", m),
        );
        assert!(!e.is_temporary());
        assert_eq!(
            e.to_string(),
            "provisioning `t` failed: the topic is refused"
        );
    }
}
