//! Errors of the RabbitMQ binder, and their mapping to [`stream_core::BinderError`].

use stream_core::{BinderError, Undelivered};

/// A failure of the RabbitMQ binder. Converted to [`BinderError`] at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// A declaration conflicts with what the broker holds (PRECONDITION_FAILED, 406).
    #[error(
        "{entity} already exists on the broker with different settings: {broker}; this binding asked for {attempted}. \
         Delete the existing entity or change the binding's properties to match it"
    )]
    Conflict {
        /// What was declared (`queue `orders.billing``).
        entity: String,
        /// What the binder asked for.
        attempted: String,
        /// The broker's reply text, naming the argument (`inequivalent arg 'x-message-ttl' ...`).
        broker: String,
    },
    /// The broker refused a declaration for another reason (access refused, not found, ...).
    #[error("declaring {entity} failed: {reason}")]
    Declaration {
        /// What was declared.
        entity: String,
        /// The broker's reply.
        reason: String,
    },
    /// A name longer than AMQP's 255-byte limit.
    #[error(
        "name `{0}` is longer than 255 bytes, AMQP's limit for exchange, queue and routing key names"
    )]
    NameTooLong(String),
    /// A lapin (client) failure.
    #[error("{context}: {source}")]
    Lapin {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: lapin::Error,
    },
    /// A mandatory message the broker could not route (`basic.return`).
    #[error(
        "message returned by the broker: {reply_code} {reply_text} (exchange `{exchange}`, routing key `{routing_key}`)"
    )]
    Returned {
        /// Exchange it was published to.
        exchange: String,
        /// Routing key it was published with.
        routing_key: String,
        /// AMQP reply code (312 NO_ROUTE, 313 NO_CONSUMERS).
        reply_code: u16,
        /// AMQP reply text.
        reply_text: String,
    },
    /// The broker refused a message with a negative publisher confirm (`basic.nack`).
    #[error(
        "the broker nacked the message (exchange `{exchange}`, routing key `{routing_key}`): {reason}"
    )]
    Nacked {
        /// Exchange it was published to.
        exchange: String,
        /// Routing key it was published with.
        routing_key: String,
        /// Why, as far as known (AMQP nacks carry no text).
        reason: String,
    },
    /// A message whose properties and headers do not fit one frame: sent, it would make the
    /// broker close the connection every producer shares (501 FRAME_ERROR).
    #[error(
        "the message's headers and properties take {size} bytes, more than the connection's frame_max of {frame_max} (exchange `{exchange}`); it is not sent. Send fewer or smaller headers, or raise frame_max on the broker"
    )]
    HeadersTooLarge {
        /// Exchange it was to be published to.
        exchange: String,
        /// Size of its content header frame.
        size: usize,
        /// The connection's negotiated `frame_max`.
        frame_max: u32,
    },
    /// A body that could not be decompressed or de-batched.
    #[error("{0}")]
    Payload(String),
    /// The broker could not be reached at any address.
    #[error("cannot connect to RabbitMQ at {target}: {reason}")]
    Connect {
        /// Addresses tried (no credentials).
        target: String,
        /// Last failure.
        reason: String,
    },
}

impl RabbitError {
    /// Whether retrying later may succeed (the broker is unreachable or the connection dropped),
    /// as opposed to a refusal that will repeat (conflict, access refused).
    pub fn is_transient(&self) -> bool {
        match self {
            RabbitError::Connect { .. } => true,
            RabbitError::Lapin { source, .. } => match amqp_error(source) {
                Some((code, _)) => code == 320 || code == 541 || code == 504,
                None => true,
            },
            RabbitError::Conflict { .. }
            | RabbitError::Declaration { .. }
            | RabbitError::NameTooLong(_)
            | RabbitError::Returned { .. }
            | RabbitError::Nacked { .. }
            | RabbitError::HeadersTooLarge { .. }
            | RabbitError::Payload(_) => false,
        }
    }

    /// A returned or nacked message as the core's typed fields.
    pub(crate) fn undelivered(&self) -> Option<Undelivered> {
        match self {
            RabbitError::Returned {
                exchange,
                routing_key,
                reply_code,
                reply_text,
            } => Some(Undelivered::Returned {
                reply_code: *reply_code,
                reply_text: reply_text.clone(),
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
            }),
            RabbitError::Nacked {
                exchange,
                routing_key,
                reason,
            } => Some(Undelivered::Nacked {
                reason: reason.clone(),
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
            }),
            _ => None,
        }
    }

    /// Converts to a [`BinderError`] about `destination`: temporary when retrying may
    /// succeed ([`RabbitError::is_transient`]), so the runtime's late binding retries it.
    pub fn into_binder_error(self, destination: &str) -> BinderError {
        let transient = self.is_transient();
        let e = match &self {
            RabbitError::Connect { target, reason } => {
                BinderError::connection(target, reason).with_destination(destination)
            }
            RabbitError::Conflict { .. }
            | RabbitError::Declaration { .. }
            | RabbitError::NameTooLong(_) => BinderError::provisioning(destination, &self),
            RabbitError::Returned { .. } | RabbitError::Nacked { .. } => {
                let mut e = BinderError::send(destination, &self);
                if let Some(u) = self.undelivered() {
                    e = e.with_undelivered(u);
                }
                e
            }
            RabbitError::HeadersTooLarge { .. } | RabbitError::Payload(_) => {
                BinderError::send(destination, &self)
            }
            RabbitError::Lapin { context, source } if transient => {
                BinderError::connection(format!("RabbitMQ ({context})"), source)
                    .with_destination(destination)
            }
            RabbitError::Lapin { .. } => {
                BinderError::other(self.to_string()).with_destination(destination)
            }
        };
        // The message renders the whole error; keeping it as the source too would print it twice.
        if transient {
            e.temporary()
        } else {
            e.permanent()
        }
    }
}

/// The AMQP reply code and text of a protocol error (channel or connection close).
pub(crate) fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => {
            Some((err.get_id(), err.get_message().as_str().to_owned()))
        }
        lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Error, _) => None,
        _ => None,
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_entity_and_argument() {
        let e = RabbitError::Conflict {
            entity: "queue `q`".into(),
            attempted: "arguments {x-message-ttl=1000}".into(),
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q'".into(),
        };
        assert!(!e.is_transient());
        let b = e.into_binder_error("q");
        let text = b.to_string();
        assert!(text.contains("queue `q`"), "{text}");
        assert!(text.contains("x-message-ttl"), "{text}");
        assert!(text.contains("Delete the existing"), "{text}");
    }
}
