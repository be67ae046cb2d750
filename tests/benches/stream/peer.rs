//! The peer: the RabbitMQ scenarios on RustStream (`ruststream` + `ruststream-lapin`, another
//! Rust messaging framework on lapin), written the way its documentation shows a service.
//!
//! Same broker objects and settings as raw and binder (`rabbit.rs`): the exchange `bench-<name>`
//! and queue `bench-<name>.bench` (the descriptors below state the same durable topic exchange,
//! durable queue and `#` binding, and the broker declares them with `declare_topology(true)`),
//! persistent messages (the publish policies' default), prefetch 250 (`LapinBroker::prefetch`),
//! 250 confirmed publishes in flight. Payloads ride RustStream's byte lanes (`Serialized` /
//! `Deserialized` newtypes), so no codec runs, as the binder's `Bytes` and raw `&[u8]` do.
//!
//! What differs, and cannot be set: RustStream speaks over ONE connection per broker (the
//! subscription channel, the shared publish channel and the confirm channel all on it), where
//! raw and binder consume and publish on two in `rabbit-e2e`; it has no producer batching (AMQP
//! has no wire batch, and the crate sends one frame per message), so `rabbit-batch` is not run.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ruststream_lapin::prelude::*;

use crate::Params;
use crate::meter::{Meter, Report, run_limit, snapshot};

/// The queue descriptor of `rabbit-consume`: `bench-consume.bench`, bound with `#` to the
/// durable topic exchange `bench-consume`.
const CONSUME_EXCHANGE: &str = "bench-consume";
/// The input of `rabbit-e2e`, and the exchange (and routing key) its replies go to.
const E2E_EXCHANGE: &str = "bench-e2e";
const E2E_OUT: &str = "bench-e2e-out";

/// The delivery's bytes, borrowed from the broker's buffer (RustStream's input byte lane).
#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

/// Bytes that leave as they are (the output byte lane); the destination is named per publish.
#[derive(Outgoing, Serialized)]
struct Body(Vec<u8>);

/// The application state the handlers read: the run's meter.
#[derive(Clone, FromRef)]
struct Bench {
    meter: Arc<Meter>,
}

/// `rabbit-consume`: count the delivery, acknowledge it.
#[subscriber(RabbitQueue::new("bench-consume.bench")
    .durable(true)
    .bind(RabbitExchange::topic(CONSUME_EXCHANGE).durable(true), "#"))]
async fn sink(_body: &Frame<'_>, State(meter): State<Arc<Meter>>) -> HandlerOutcome {
    meter.tick();
    HandlerOutcome::ack()
}

/// `rabbit-e2e`: the body upper-cased (UTF-8 checked, as the binder's `String` input is), replied
/// to `bench-e2e-out` through the reply policy's exchange.
#[subscriber(RabbitQueue::new("bench-e2e.bench")
    .durable(true)
    .bind(RabbitExchange::topic(E2E_EXCHANGE).durable(true), "#"),
    reply("bench-e2e-out"))]
async fn uppercase(body: &Frame<'_>, State(meter): State<Arc<Meter>>) -> Body {
    let upper = std::str::from_utf8(body.0)
        .map(str::to_uppercase)
        .unwrap_or_default();
    meter.tick();
    Body(upper.into_bytes())
}

fn uri() -> String {
    format!(
        "amqp://guest:guest@{}:{}/%2f",
        super::rabbit::host(),
        super::rabbit::port()
    )
}

fn broker() -> LapinBroker {
    LapinBroker::new(uri())
        .prefetch(nonzero!(250))
        .declare_topology(true)
}

fn info() -> AppInfo {
    AppInfo::new("stream-bench-peer", "0.1.0")
}

/// `rabbit-publish`: a confirms publisher (`TransactionalPublish`, i.e. `ConfirmsPublish`) on
/// exchange `ex`, handed out by an `after_startup` hook; every `publish` resolves once the broker
/// confirmed it, `IN_FLIGHT` of them at once. Routing key `ex`, as in the other modes.
pub(crate) async fn publish(p: &Params, ex: &str) -> Result<Report> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = RustStream::new(info()).with_broker(broker(), |b| {
        b.after_startup(
            TransactionalPublish::default().exchange(ex),
            async move |publisher| {
                let _ = tx.send(publisher);
                Ok::<_, Infallible>(())
            },
        );
    });
    let running = app.start().await?;
    let publisher = rx
        .await
        .context("the startup hook handed out no publisher")?;
    let body = Body(crate::payload(p.size).to_vec());
    let mut inflight = FuturesUnordered::new();
    let start = snapshot();
    for _ in 0..p.messages {
        if inflight.len() >= super::rabbit::IN_FLIGHT
            && let Some(r) = inflight.next().await
        {
            r?;
        }
        inflight.push(publisher.message(&body).to(ex).publish());
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let end = snapshot();
    drop(inflight);
    drop(publisher);
    running.shutdown().await?;
    Ok(Report::of(p, p.messages, start, end))
}

/// `rabbit-consume` (handler `sink`) or `rabbit-e2e` (handler `uppercase`, replies published
/// fire-and-forget, persistent, to exchange `bench-e2e-out`) over the pre-filled queue, from the
/// first delivery to the last.
pub(crate) async fn consume(p: &Params) -> Result<Report> {
    let meter = Arc::new(Meter::new(p.messages));
    let state = Bench {
        meter: Arc::clone(&meter),
    };
    let e2e = p.scenario == "rabbit-e2e";
    let app = RustStream::new(info())
        .on_startup(async move |()| Ok::<_, Infallible>(state))
        .with_broker(broker(), |b| {
            if e2e {
                b.include(uppercase)
                    .out_reply(Publish::default().exchange(E2E_OUT));
            } else {
                b.include(sink);
            }
        });
    let running = app.start().await?;
    let r = meter.wait(run_limit(p.messages)).await;
    running.shutdown().await?;
    let (start, end) = r?;
    Ok(Report::of(p, p.messages - 1, start, end))
}
