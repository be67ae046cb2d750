//! RabbitMQ scenarios: raw lapin against the binder, same broker, same settings.
//!
//! Topology (declared the way the binder provisions it, so both modes use the same queues):
//! a durable topic exchange `<name>` and a durable queue `<name>.bench` bound with `#`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use binder_rabbit::stream_config::Environment;
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::meter::{Meter, Report, current_rss_kib, run_limit, snapshot, uppercase_app};
use crate::{Mode, Params, payload};

/// Publisher confirms in flight at once, in both modes (binder: concurrent `send`s).
pub(crate) const IN_FLIGHT: usize = 250;
/// `prefetch` of every consumer.
pub(crate) const PREFETCH: u16 = 250;
/// Messages per producer batch in `rabbit-batch`.
pub(crate) const BATCH: usize = 100;

const GROUP: &str = "bench";
const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain";

pub(crate) fn host() -> String {
    std::env::var("SPRING_RABBITMQ_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned())
}

pub(crate) fn port() -> u16 {
    std::env::var("SPRING_RABBITMQ_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

pub(crate) async fn connect() -> Result<Connection> {
    let uri = format!("amqp://guest:guest@{}:{}/%2f", host(), port());
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("RabbitMQ at {}:{}", host(), port()))
}

/// Closes `conn`, waiting at most 5 s: lapin's close can stay pending for good when its I/O
/// loop ends before the broker's close-ok arrives (seen once in a full bench run: the run sat
/// idle with no socket), and a bench run must end by itself.
pub(crate) async fn close(conn: &Connection, reason: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, reason.into())).await;
}

/// The exchange (destination) a scenario uses.
fn exchange(scenario: &str) -> &'static str {
    match scenario {
        "rabbit-publish" => "bench-publish",
        "rabbit-consume" => "bench-consume",
        "rabbit-e2e" => "bench-e2e",
        "rabbit-batch" => "bench-batch",
        "rabbit-backlog" => "bench-backlog",
        _ => "bench-other",
    }
}

const E2E_OUT: &str = "bench-e2e-out";

fn queue(exchange: &str) -> String {
    format!("{exchange}.{GROUP}")
}

/// Declares `<exchange>` (durable topic) and its group queue `queue` (durable, bound with
/// `#`), as the binder provisions a group queue.
pub(crate) async fn declare_group_queue(ch: &Channel, exchange: &str, queue: &str) -> Result<()> {
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares `<exchange>` and `<exchange>.bench` ([`declare_group_queue`]) and purges the queue.
async fn topology(ch: &Channel, exchange: &str) -> Result<()> {
    let q = queue(exchange);
    declare_group_queue(ch, exchange, &q).await?;
    ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

fn persistent(content_type: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(content_type.into())
}

/// A publisher confirm as a result: only a plain ack (or no confirm asked for) is success.
pub(crate) fn check(c: lapin::Result<Confirmation>) -> Result<()> {
    match c? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        other => bail!("publish not confirmed: {other:?}"),
    }
}

/// Pre-fills a scenario's input queue with `messages` persistent messages (not measured).
pub(crate) async fn fill(scenario: &str, messages: u64, size: usize) -> Result<()> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    let ex = exchange(scenario);
    topology(&ch, ex).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = payload(size);
    let content_type = if scenario == "rabbit-e2e" {
        TEXT
    } else {
        OCTET
    };
    let mut inflight = FuturesUnordered::new();
    for _ in 0..messages {
        if inflight.len() >= 1000
            && let Some(c) = inflight.next().await
        {
            check(c)?;
        }
        inflight.push(
            ch.basic_publish(
                ex.into(),
                ex.into(),
                BasicPublishOptions::default(),
                &body,
                persistent(content_type),
            )
            .await?,
        );
    }
    while let Some(c) = inflight.next().await {
        check(c)?;
    }
    if scenario == "rabbit-e2e" {
        topology(&ch, E2E_OUT).await?;
    }
    close(&conn, "filled").await;
    Ok(())
}

async fn purge(exchange: &str) {
    if let Ok(conn) = connect().await {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_purge(
                    queue(exchange).as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await;
        }
        close(&conn, "purged").await;
    }
}

/// The binder's configuration: the broker, the scenario's properties, then
/// `STREAM_BENCH_PROPERTIES` (`key=value` pairs separated by `;`, for experiments; later keys
/// win).
pub(crate) fn environment(text: &str) -> Result<Environment> {
    let extra = std::env::var("STREAM_BENCH_PROPERTIES")
        .unwrap_or_default()
        .replace(';', "\n");
    let text = format!(
        "spring.rabbitmq.host={}\nspring.rabbitmq.port={}\n{text}\n{extra}\n",
        host(),
        port()
    );
    Ok(Environment::builder()
        .properties_str("bench.properties", text)
        .build()?)
}

pub(crate) async fn run(p: &Params) -> Result<Report> {
    let ex = exchange(&p.scenario);
    let report = match p.scenario.as_str() {
        "rabbit-publish" | "rabbit-batch" => {
            let conn = connect().await?;
            topology(&conn.create_channel().await?, ex).await?;
            close(&conn, "ready").await;
            let r = match p.mode {
                Mode::Raw if p.scenario == "rabbit-batch" => raw_batch_publish(p, ex).await,
                Mode::Raw => raw_publish(p, ex).await,
                Mode::Binder => binder_publish(p, ex).await,
                Mode::Peer if p.scenario == "rabbit-batch" => Err(anyhow::anyhow!(
                    "peer cannot batch (no producer batching in RustStream)"
                )),
                Mode::Peer => crate::peer::publish(p, ex).await,
            };
            purge(ex).await;
            r?
        }
        "rabbit-consume" | "rabbit-e2e" if p.mode == Mode::Peer => {
            let r = crate::peer::consume(p).await;
            if p.scenario == "rabbit-e2e" {
                purge(E2E_OUT).await;
            }
            r?
        }
        "rabbit-consume" | "rabbit-backlog" => consume(p, ex).await?,
        "rabbit-e2e" => {
            let r = e2e(p, ex).await;
            purge(E2E_OUT).await;
            r?
        }
        other => bail!("unknown RabbitMQ scenario `{other}`"),
    };
    Ok(report)
}

/// Raw lapin: confirm.select, publish, keep `IN_FLIGHT` confirms pipelined.
async fn raw_publish(p: &Params, ex: &str) -> Result<Report> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = payload(p.size);
    let mut inflight = FuturesUnordered::new();
    let start = snapshot();
    for _ in 0..p.messages {
        if inflight.len() >= IN_FLIGHT
            && let Some(c) = inflight.next().await
        {
            check(c)?;
        }
        inflight.push(async {
            let confirm = ch
                .basic_publish(
                    ex.into(),
                    ex.into(),
                    BasicPublishOptions::default(),
                    &body,
                    persistent(OCTET),
                )
                .await?;
            confirm.await
        });
    }
    while let Some(c) = inflight.next().await {
        check(c)?;
    }
    let end = snapshot();
    close(&conn, "done").await;
    Ok(Report::of(p, p.messages, start, end))
}

/// Raw lapin publishing Spring's `lengthHeader4` batches of `BATCH` bodies (what the binder's
/// producer batching sends), `IN_FLIGHT / BATCH` batches pipelined.
async fn raw_batch_publish(p: &Params, ex: &str) -> Result<Report> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = payload(p.size);
    let window = (IN_FLIGHT / BATCH).max(1);
    let mut inflight = FuturesUnordered::new();
    let start = snapshot();
    let mut left = p.messages;
    while left > 0 {
        let n = usize::try_from(left.min(BATCH as u64)).unwrap_or(BATCH);
        left -= n as u64;
        if inflight.len() >= window
            && let Some(c) = inflight.next().await
        {
            check(c)?;
        }
        let mut batch = Vec::with_capacity(n * (4 + body.len()));
        for _ in 0..n {
            batch.extend_from_slice(&i32::try_from(body.len()).unwrap_or(i32::MAX).to_be_bytes());
            batch.extend_from_slice(&body);
        }
        let mut headers = FieldTable::default();
        headers.insert(
            "springBatchFormat".into(),
            AMQPValue::LongString(LongString::from("lengthHeader4")),
        );
        headers.insert(
            "amqp_batchSize".into(),
            AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX)),
        );
        inflight.push(
            ch.basic_publish(
                ex.into(),
                ex.into(),
                BasicPublishOptions::default(),
                &batch,
                persistent(OCTET).with_headers(headers),
            )
            .await?,
        );
    }
    while let Some(c) = inflight.next().await {
        check(c)?;
    }
    let end = snapshot();
    close(&conn, "done").await;
    Ok(Report::of(p, p.messages, start, end))
}

/// The framework path: `StreamBridge::send` to output binding `out` (conversion, partition
/// check, the binder's producer), `IN_FLIGHT` sends awaiting their confirms at once.
async fn binder_publish(p: &Params, ex: &str) -> Result<Report> {
    let mut props = format!(
        "spring.rabbitmq.publisher-confirm-type=correlated\n\
         spring.cloud.stream.output-bindings=out\n\
         spring.cloud.stream.bindings.out.destination={ex}\n\
         spring.cloud.stream.bindings.out.content-type={OCTET}\n\
         spring.cloud.stream.bindings.out.producer.required-groups={GROUP}\n"
    );
    if p.scenario == "rabbit-batch" {
        props.push_str(&format!(
            "spring.cloud.stream.rabbit.bindings.out.producer.batching-enabled=true\n\
             spring.cloud.stream.rabbit.bindings.out.producer.batch-size={BATCH}\n\
             spring.cloud.stream.rabbit.bindings.out.producer.batch-buffer-limit={}\n",
            BATCH * (4 + p.size)
        ));
    }
    let app = StreamApp::builder()
        .environment(environment(&props)?)
        .binder(RabbitBinderFactory::new())
        .build()
        .await?;
    let bridge = app.bridge();
    let body = payload(p.size);
    let mut inflight = FuturesUnordered::new();
    let start = snapshot();
    for _ in 0..p.messages {
        if inflight.len() >= IN_FLIGHT
            && let Some(r) = inflight.next().await
        {
            r?;
        }
        inflight.push(bridge.send("out", body.clone()));
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let end = snapshot();
    drop(inflight);
    drop(bridge);
    app.shutdown().await?;
    Ok(Report::of(p, p.messages, start, end))
}

/// Samples RSS every 100 ms until stopped: (first, peak, last) in KiB.
fn sample_rss(
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, u64)> {
    std::thread::spawn(move || {
        let first = current_rss_kib();
        let (mut peak, mut last) = (first, first);
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            last = current_rss_kib();
            peak = peak.max(last);
        }
        (first, peak, last)
    })
}

/// Consumes the pre-filled queue (prefetch 250, AUTO ack): raw lapin acking each delivery,
/// or a `StreamApp` consumer function returning `Ok`. Measured from the first delivery to the
/// last. `rabbit-backlog` also samples RSS while consuming.
async fn consume(p: &Params, ex: &str) -> Result<Report> {
    let meter = Arc::new(Meter::new(p.messages));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = (p.scenario == "rabbit-backlog").then(|| sample_rss(Arc::clone(&stop)));
    let (start, end) = match p.mode {
        Mode::Peer => bail!("{} has no peer run", p.scenario),
        Mode::Raw => {
            let conn = connect().await?;
            let ch = conn.create_channel().await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    queue(ex).as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let m = Arc::clone(&meter);
            let task = tokio::spawn(async move {
                while let Some(d) = consumer.next().await {
                    let d = d?;
                    m.tick();
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                anyhow::Ok(())
            });
            let r = meter.wait(run_limit(p.messages)).await;
            task.abort();
            close(&conn, "done").await;
            r?
        }
        Mode::Binder => {
            let props = format!(
                "spring.cloud.function.definition=sink\n\
                 spring.cloud.stream.bindings.sink-in-0.destination={ex}\n\
                 spring.cloud.stream.bindings.sink-in-0.group={GROUP}\n\
                 spring.cloud.stream.bindings.sink-in-0.content-type={OCTET}\n\
                 spring.cloud.stream.rabbit.bindings.sink-in-0.consumer.prefetch={PREFETCH}\n\
                 spring.cloud.stream.rabbit.bindings.sink-in-0.consumer.acknowledge-mode=AUTO\n"
            );
            let m = Arc::clone(&meter);
            let app = StreamApp::builder()
                .environment(environment(&props)?)
                .binder(RabbitBinderFactory::new())
                .consumer("sink", move |_body: Bytes| {
                    m.tick();
                    std::future::ready(Ok::<(), FunctionError>(()))
                })
                .build()
                .await?;
            let r = meter.wait(run_limit(p.messages)).await;
            app.shutdown().await?;
            r?
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut report = Report::of(p, p.messages - 1, start, end);
    if let Some(s) = sampler {
        let (first, peak, last) = s
            .join()
            .map_err(|_| anyhow::anyhow!("RSS sampler panicked"))?;
        report.extra = vec![
            ("rss_start_kib", first),
            ("rss_peak_kib", peak),
            ("rss_end_kib", last),
        ];
    }
    Ok(report)
}

/// `uppercase` in -> out over the pre-filled `bench-e2e.bench`: raw lapin (a consumer that
/// publishes the upper-cased body on a second connection, then acks) or a `StreamApp`
/// function. Both: prefetch 250, AUTO ack, persistent output, no publisher confirms (the
/// binder's default), consume and publish on separate connections (as the binder does).
async fn e2e(p: &Params, ex: &str) -> Result<Report> {
    let meter = Arc::new(Meter::new(p.messages));
    let (start, end) = match p.mode {
        Mode::Peer => bail!("{} has no peer run", p.scenario),
        Mode::Raw => {
            let conn = connect().await?;
            let out_conn = connect().await?;
            let ch = conn.create_channel().await?;
            let out = out_conn.create_channel().await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    queue(ex).as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let m = Arc::clone(&meter);
            let task = tokio::spawn(async move {
                while let Some(d) = consumer.next().await {
                    let d = d?;
                    let upper = std::str::from_utf8(&d.data)?.to_uppercase();
                    m.tick();
                    out.basic_publish(
                        E2E_OUT.into(),
                        E2E_OUT.into(),
                        BasicPublishOptions::default(),
                        upper.as_bytes(),
                        persistent(TEXT),
                    )
                    .await?;
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                anyhow::Ok(())
            });
            let r = meter.wait(run_limit(p.messages)).await;
            task.abort();
            close(&conn, "done").await;
            close(&out_conn, "done").await;
            r?
        }
        Mode::Binder => {
            let props = format!(
                "spring.cloud.function.definition=uppercase\n\
                 spring.cloud.stream.bindings.uppercase-in-0.destination={ex}\n\
                 spring.cloud.stream.bindings.uppercase-in-0.group={GROUP}\n\
                 spring.cloud.stream.bindings.uppercase-in-0.content-type={TEXT}\n\
                 spring.cloud.stream.rabbit.bindings.uppercase-in-0.consumer.prefetch={PREFETCH}\n\
                 spring.cloud.stream.bindings.uppercase-out-0.destination={E2E_OUT}\n\
                 spring.cloud.stream.bindings.uppercase-out-0.content-type={TEXT}\n\
                 spring.cloud.stream.bindings.uppercase-out-0.producer.required-groups={GROUP}\n"
            );
            let app =
                uppercase_app(environment(&props)?, RabbitBinderFactory::new(), &meter).await?;
            let r = meter.wait(run_limit(p.messages)).await;
            app.shutdown().await?;
            r?
        }
    };
    Ok(Report::of(p, p.messages - 1, start, end))
}
