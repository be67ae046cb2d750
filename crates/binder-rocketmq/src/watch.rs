//! Whether a running push consumer still reaches its broker: the client retries its pulls
//! silently, so the binder asks the broker itself and reports what it finds to the runtime.

use std::time::Duration;

use rocketmq_client_rust::DefaultMQPushConsumer;
use rocketmq_model::common::message::message_queue::MessageQueue;
use stream_core::binder::{Consumer, Sink, SourceStatus};

use crate::listener::PushClient;

/// How often a running consumer checks that its broker answers.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(3);

/// Watches the consumer's connection: every [`PROBE_INTERVAL`] it asks the broker for a queue's
/// offset (the queue found through the name server, kept while the name server is away) and
/// reports [`SourceStatus::Lost`] when the broker does not answer, [`SourceStatus::Consuming`]
/// once it does again. The client itself keeps reconnecting meanwhile.
pub(crate) async fn watch_broker<C: Consumer>(
    client: PushClient,
    sink: Sink<C>,
    binding: String,
    topic: String,
) {
    let stopped = sink.stopped();
    tokio::pin!(stopped);
    let mut queue: Option<MessageQueue> = None;
    let mut lost = false;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let probe = {
            let mut guard = client.lock().await;
            match guard.as_mut() {
                None => return,
                Some(c) => probe(c, &topic, &mut queue).await,
            }
        };
        match probe {
            Ok(()) if lost => {
                lost = false;
                tracing::info!(binding = %binding, "the RocketMQ broker answers again");
                sink.report(SourceStatus::Consuming);
            }
            Err(reason) if !lost => {
                lost = true;
                tracing::warn!(binding = %binding, reason = %reason, "RocketMQ consumer cut off");
                sink.report(SourceStatus::Lost { reason });
            }
            _ => {}
        }
    }
}

/// One probe: `Err` says why the broker cannot be reached.
async fn probe(
    consumer: &mut DefaultMQPushConsumer,
    topic: &str,
    queue: &mut Option<MessageQueue>,
) -> Result<(), String> {
    if queue.is_none() {
        match consumer.fetch_subscribe_message_queues(topic).await {
            Ok(found) => *queue = found.into_iter().next(),
            Err(e) => {
                return Err(format!(
                    "the name server does not answer ({e}); the client keeps trying"
                ));
            }
        }
    }
    let Some(q) = queue.as_ref() else {
        return Err(format!(
            "topic `{topic}` has no queue (no broker serves it)"
        ));
    };
    match consumer.max_offset(q).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // Look the route up again next time: the broker may come back elsewhere.
            *queue = None;
            Err(format!(
                "the broker does not answer ({e}); the client reconnects when it is back"
            ))
        }
    }
}
