//! One consumer task: subscribe, hand every delivery to the runtime's sink, notice a lost
//! channel or connection (also one lost right after subscribing), recover after
//! `recovery-interval`, and scale between `concurrency` and `max-concurrency`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::options::{BasicCancelOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use stream_core::binder::{Delivery, Sink, SourceStatus};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::context::ConsumerContext;
use super::raw::RabbitRawMessage;
use super::{Inner, RabbitConsumer};
use crate::error::{RabbitError, amqp_error};
use crate::scaling::{Activity, ScaleStep};
use crate::transaction::{self, TxContext};

/// How often a consumer checks that its channel and connection are still open: lapin may not
/// tell a consumer that registered after its connection died.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Bounds closing a channel (a dead connection must not hold a stopping consumer).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every this many health checks a consumer asks the broker whether its queue still has
/// consumers (a passive declare on its channel): a connection that died silently (the broker
/// dropped it, nothing reached the client: no FIN, heartbeats not yet missed) answers nothing,
/// or answers that the queue has no consumer. Either way the consumer is lost.
const PROBE_EVERY: u32 = 5;

/// How long that answer may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells `start` whether the first subscription worked (or failed for good).
pub(crate) type FirstStart = oneshot::Sender<Result<(), RabbitError>>;

enum LoopEnd {
    Stopped,
    /// The binding was paused: the subscription is cancelled until it resumes.
    Paused,
    Lost(String),
    /// Idle with more consumers than `concurrency`: this one stops (`max-concurrency`).
    Retired,
}

fn report_first(first: &mut Option<FirstStart>, r: Result<(), RabbitError>) {
    if let Some(tx) = first.take() {
        let _ = tx.send(r);
    }
}

/// Sleeps `d`; `false` when the consumer stops meanwhile.
async fn sleep_unless_stopped(
    d: Duration,
    stopped: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped => false,
    }
}

/// Waits while the binding is paused; `false` when the consumer stops meanwhile.
async fn wait_resumed(
    paused: &mut watch::Receiver<bool>,
    stopped: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    tokio::select! {
        r = paused.wait_for(|p| !*p) => r.is_ok(),
        _ = stopped => false,
    }
}

/// What one turn of a consumer hands to the runtime: one delivery (no `Vec` per message), or
/// the deliveries gathered for consumer-side batching.
enum Deliveries {
    One(Delivery<RabbitRawMessage>),
    Gathered(Vec<Delivery<RabbitRawMessage>>),
}

/// Hands deliveries to the runtime inside the consumer's transaction when transacted.
async fn dispatch(
    ctx: &ConsumerContext,
    sink: &Sink<RabbitConsumer>,
    channel: &Channel,
    deliveries: Deliveries,
) {
    // The batch and transaction paths are boxed: their state would otherwise size (and be
    // moved with) the future of every plain delivery.
    let run = async {
        match deliveries {
            Deliveries::One(d) => sink.dispatch(d).await,
            Deliveries::Gathered(batch) => Box::pin(sink.dispatch_batch(batch)).await,
        }
    };
    if ctx.props.transacted && !ctx.no_ack {
        let tx = TxContext {
            binder: ctx.shared.id(),
            channel: channel.clone(),
        };
        Box::pin(transaction::scope(tx, run)).await;
    } else {
        run.await;
    }
}

/// One consumer task: consume while the binding runs, recover when the connection is lost.
pub(crate) async fn run(
    ctx: Arc<ConsumerContext>,
    consumer: Arc<Inner>,
    index: u32,
    sink: Sink<RabbitConsumer>,
    mut first: Option<FirstStart>,
) {
    let mut stopped = Box::pin(sink.stopped());
    let mut paused = consumer.paused.subscribe();
    let mut missing_attempts = 0u32;
    let mut attempt = 0u64;
    loop {
        if !wait_resumed(&mut paused, &mut stopped).await {
            return;
        }
        attempt += 1;
        let open = ctx.open();
        tokio::pin!(open);
        let opened = tokio::select! {
            _ = &mut stopped => {
                // Let a subscription under way finish (bounded) and cancel it: dropped midway
                // it would stay registered on the broker, and what it received unsettled.
                if let Ok(Ok((_, channel, _))) = tokio::time::timeout(CLOSE_TIMEOUT, open).await {
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        channel.close(200, "consumer stopped".into()),
                    )
                    .await;
                }
                return;
            }
            r = &mut open => r,
        };
        match opened {
            Ok((conn, channel, subscription)) => {
                missing_attempts = 0;
                report_first(&mut first, Ok(()));
                sink.report(SourceStatus::Consuming);
                tracing::info!(
                    binding = %ctx.binding,
                    queue = %ctx.queue(),
                    consumer = index,
                    tag = %subscription.tag(),
                    "consuming"
                );
                let end = consume(
                    &ctx,
                    &consumer,
                    &conn,
                    &channel,
                    subscription,
                    &sink,
                    &mut stopped,
                    &mut paused,
                )
                .await;
                if channel.status().connected() {
                    let channel = channel.clone();
                    let close = async move {
                        let _ = tokio::time::timeout(
                            CLOSE_TIMEOUT,
                            channel.close(200, "consumer stopped".into()),
                        )
                        .await;
                    };
                    if matches!(end, LoopEnd::Lost(_)) {
                        // Perhaps on a dead connection: do not hold the recovery for it.
                        tokio::spawn(close);
                    } else {
                        close.await;
                    }
                }
                match end {
                    LoopEnd::Stopped => return,
                    LoopEnd::Paused => {
                        tracing::info!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            consumer = index,
                            "paused: subscription cancelled until resumed"
                        );
                    }
                    LoopEnd::Retired => {
                        tracing::info!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            consumer = index,
                            consumers = ctx.scaler.as_ref().map_or(0, |s| s.running()),
                            "idle consumer stopped (scaling down toward concurrency)"
                        );
                        return;
                    }
                    LoopEnd::Lost(reason) => {
                        tracing::warn!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            reason = %reason,
                            retry_in = ?ctx.props.recovery_interval,
                            "consumer lost its channel or connection; recovering"
                        );
                        sink.report(SourceStatus::Lost {
                            reason: format!(
                                "consumer of queue `{}` lost its channel or connection ({reason}); recovering every {:?} (recovery-interval)",
                                ctx.queue(),
                                ctx.props.recovery_interval
                            ),
                        });
                        if !sleep_unless_stopped(ctx.props.recovery_interval, &mut stopped).await {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                let code = match &e {
                    RabbitError::Lapin { source, .. } => amqp_error(source).map(|(c, _)| c),
                    _ => None,
                };
                let delay = match code {
                    Some(404) if missing_attempts == 0 && ctx.redeclare().await => {
                        // Deleted under the consumer: declared again, subscribe at once.
                        missing_attempts += 1;
                        std::time::Duration::ZERO
                    }
                    Some(404) => {
                        missing_attempts += 1;
                        if ctx.props.missing_queues_fatal
                            && missing_attempts > ctx.props.queue_declaration_retries
                        {
                            tracing::error!(
                                binding = %ctx.binding,
                                queue = %ctx.queue(),
                                error = %e,
                                "queue is missing and missing-queues-fatal is set; consumer stopped"
                            );
                            let reason = format!(
                                "queue `{}` is missing and missing-queues-fatal is set; the consumer stopped: {e}",
                                ctx.queue()
                            );
                            if first.is_some() {
                                report_first(&mut first, Err(e));
                                return;
                            }
                            // Stopped for good: the binding shows why until it is restarted.
                            sink.report(SourceStatus::Lost { reason });
                            stopped.as_mut().await;
                            return;
                        }
                        tracing::warn!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            error = %e,
                            retry_in = ?ctx.props.failed_declaration_retry_interval,
                            "queue not found; will retry"
                        );
                        if !ctx.props.missing_queues_fatal {
                            report_first(&mut first, Ok(()));
                        }
                        sink.report(SourceStatus::Lost {
                            reason: format!("queue `{}` not found; retrying: {e}", ctx.queue()),
                        });
                        ctx.props.failed_declaration_retry_interval
                    }
                    Some(403 | 405) if ctx.props.exclusive => {
                        tracing::info!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            "another consumer holds the exclusive consumer; standing by"
                        );
                        report_first(&mut first, Ok(()));
                        ctx.props.recovery_interval
                    }
                    _ if e.is_transient() => {
                        tracing::warn!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            attempt,
                            error = %e,
                            retry_in = ?ctx.props.recovery_interval,
                            "RabbitMQ not reachable; will retry"
                        );
                        report_first(&mut first, Ok(()));
                        sink.report(SourceStatus::Lost {
                            reason: format!(
                                "RabbitMQ not reachable ({e}); retrying every {:?} (recovery-interval)",
                                ctx.props.recovery_interval
                            ),
                        });
                        ctx.props.recovery_interval
                    }
                    _ => {
                        if first.is_some() {
                            report_first(&mut first, Err(e));
                            return;
                        }
                        tracing::error!(
                            binding = %ctx.binding,
                            queue = %ctx.queue(),
                            error = %e,
                            retry_in = ?ctx.props.recovery_interval,
                            "consumer could not start; will retry"
                        );
                        sink.report(SourceStatus::Lost {
                            reason: format!("consumer could not start ({e}); retrying"),
                        });
                        ctx.props.recovery_interval
                    }
                };
                if !sleep_unless_stopped(delay, &mut stopped).await {
                    return;
                }
            }
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the consume loop's state, borrowed from run"
)]
async fn consume(
    ctx: &Arc<ConsumerContext>,
    consumer: &Arc<Inner>,
    conn: &Arc<lapin::Connection>,
    channel: &Channel,
    mut subscription: lapin::Consumer,
    sink: &Sink<RabbitConsumer>,
    stopped: &mut (impl Future<Output = ()> + Unpin),
    paused: &mut watch::Receiver<bool>,
) -> LoopEnd {
    let tag = subscription.tag().as_str().to_owned();
    let mut activity = Activity::default();
    let scaling = ctx.scaler.is_some();
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(ctx.props.receive_timeout);
    tokio::pin!(idle);
    let mapping = ctx.mapping();
    let mut ticks = 0u32;
    let mut unknown_to_broker = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut *stopped => return LoopEnd::Stopped,
            changed = paused.changed() => {
                if changed.is_err() || *paused.borrow_and_update() {
                    return LoopEnd::Paused;
                }
            }
            next = subscription.next() => match next {
                Some(Ok(delivery)) => {
                    let span = tracing::debug_span!(
                        "rabbit.consume",
                        binding = %ctx.binding,
                        queue = %ctx.queue(),
                        delivery_tag = delivery.delivery_tag
                    );
                    let first = mapping.delivery(&tag, channel, delivery);
                    let deliveries = if ctx.gather {
                        // Spring's consumer-side batching: up to batch-size deliveries, each
                        // waited for at most receive-timeout.
                        let mut batch = vec![first];
                        while batch.len() < ctx.props.batch_size as usize {
                            match tokio::time::timeout(ctx.props.receive_timeout, subscription.next()).await {
                                Ok(Some(Ok(d))) => batch.push(mapping.delivery(&tag, channel, d)),
                                Ok(Some(Err(e))) => {
                                    dispatch(ctx, sink, channel, Deliveries::Gathered(batch)).instrument(span).await;
                                    return LoopEnd::Lost(e.to_string());
                                }
                                Ok(None) => {
                                    dispatch(ctx, sink, channel, Deliveries::Gathered(batch)).instrument(span).await;
                                    return LoopEnd::Lost("the broker cancelled the consumer".to_owned());
                                }
                                Err(_) => break,
                            }
                        }
                        Deliveries::Gathered(batch)
                    } else {
                        Deliveries::One(first)
                    };
                    dispatch(ctx, sink, channel, deliveries).instrument(span).await;
                    // The idle timer only serves consumer scaling: no timer reset per delivery
                    // without it.
                    if scaling {
                        idle.as_mut().reset(tokio::time::Instant::now() + ctx.props.receive_timeout);
                    }
                    if let Some(scaler) = &ctx.scaler
                        && scaler.on_message(&mut activity) == ScaleStep::Add
                    {
                        consumer.add_consumer(sink);
                    }
                }
                Some(Err(e)) => return LoopEnd::Lost(e.to_string()),
                None => return LoopEnd::Lost("the broker cancelled the consumer".to_owned()),
            },
            _ = health.tick() => {
                if !channel.status().connected() || !conn.status().connected() {
                    return LoopEnd::Lost("the channel or its connection closed".to_owned());
                }
                ticks += 1;
                if ticks.is_multiple_of(PROBE_EVERY) {
                    match probe(ctx, conn, channel).await {
                        Err(lost) => return LoopEnd::Lost(lost),
                        // Twice in a row, so a count the broker has not caught up with yet
                        // does not cost a reconnect.
                        Ok(0) if unknown_to_broker => {
                            return LoopEnd::Lost(
                                "the broker holds no consumer on the queue any more".to_owned(),
                            );
                        }
                        Ok(count) => unknown_to_broker = count == 0,
                    }
                }
            }
            _ = &mut idle, if scaling => {
                idle.as_mut().reset(tokio::time::Instant::now() + ctx.props.receive_timeout);
                if let Some(scaler) = &ctx.scaler
                    && scaler.on_idle(&mut activity) == ScaleStep::Retire
                {
                    if let Err(e) = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
                        tracing::debug!(binding = %ctx.binding, error = %e, "basic.cancel failed");
                    }
                    // Handle what the broker sent before it stopped, so nothing is redelivered.
                    while let Ok(Some(Ok(d))) =
                        tokio::time::timeout(ctx.props.receive_timeout, subscription.next()).await
                    {
                        dispatch(ctx, sink, channel, Deliveries::One(mapping.delivery(&tag, channel, d))).await;
                    }
                    return LoopEnd::Retired;
                }
            }
        }
    }
}

/// Asks the broker how many consumers the consumer's queue has; why the consumer is lost when
/// the broker does not answer.
async fn probe(
    ctx: &ConsumerContext,
    conn: &Arc<lapin::Connection>,
    channel: &Channel,
) -> Result<u32, String> {
    let Ok(queue) = crate::provisioning::short(ctx.queue()) else {
        return Ok(1);
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        channel.queue_declare(queue, passive, FieldTable::default()),
    )
    .await
    {
        Err(_) => {
            // The client still believes the connection open: drop it so recovery reconnects.
            ctx.discard(conn).await;
            Err(format!(
                "the broker did not answer a passive declare within {PROBE_TIMEOUT:?}; the connection is presumed dead"
            ))
        }
        Ok(Err(e)) => Err(format!("passive declare of the queue failed: {e}")),
        Ok(Ok(q)) => Ok(q.consumer_count()),
    }
}
