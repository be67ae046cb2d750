//! Scaling scenarios on RabbitMQ (`cargo xtask bench scale`): how the cost of consuming grows
//! with the work an application is given, the binder (a `StreamApp`) next to raw lapin.
//!
//! ```text
//! stream scale fill <destinations> <messages> <size>   declares bench-scale-0..N, spreads
//!                                                      `messages` evenly over their queues
//! stream scale run concurrency <raw|binder> <C> <messages> <size>
//!     one queue (bench-scale-0.bench), C consumers, each on its own channel with prefetch 250
//! stream scale run bindings <raw|binder> <N> <messages> <size>
//!     N queues (bench-scale-0..N), one consumer each; bound first, then all started at once
//! stream scale run bind <raw|binder> <N> 0 0
//!     time from application start until N consumer bindings consume (empty queues)
//! stream scale cleanup <destinations>                  deletes the queues and exchanges
//! ```
//!
//! Topology as in `rabbit.rs` (and as the binder provisions it): a durable topic exchange
//! `bench-scale-<i>` and a durable queue `bench-scale-<i>.bench` bound with `#`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use binder_rabbit::{FunctionError, RabbitBinderFactory, StreamApp};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use stream_core::app::BindingCommand;
use stream_core::binder::BindingState;

use crate::meter::{Meter, Report, run_limit, snapshot};
use crate::payload;
use crate::rabbit::{check, close, connect, declare_group_queue, environment};

/// `prefetch` of every consumer (channel), as in the other consume scenarios.
const PREFETCH: u16 = 250;
const GROUP: &str = "bench";
const OCTET: &str = "application/octet-stream";

const USAGE: &str = "\
stream scale fill <destinations> <messages> <size>
stream scale run <concurrency|bindings|bind> <raw|binder> <n> <messages> <size>
stream scale cleanup <destinations>";

fn destination(i: usize) -> String {
    format!("bench-scale-{i}")
}

fn queue(i: usize) -> String {
    format!("{}.{GROUP}", destination(i))
}

/// Declares exchange `bench-scale-<i>` and its group queue, as the binder provisions them.
async fn declare(ch: &Channel, i: usize) -> Result<()> {
    declare_group_queue(ch, &destination(i), &queue(i)).await
}

/// Declares and purges `destinations` queues, then publishes `messages / destinations`
/// persistent messages to each (confirmed, not measured).
async fn fill(destinations: usize, messages: u64, size: usize) -> Result<()> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let per = messages / destinations.max(1) as u64;
    let body = payload(size);
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(OCTET.into());
    let mut inflight = FuturesUnordered::new();
    for i in 0..destinations {
        declare(&ch, i).await?;
        ch.queue_purge(queue(i).as_str().into(), QueuePurgeOptions::default())
            .await?;
        let ex = destination(i);
        for _ in 0..per {
            if inflight.len() >= 1000
                && let Some(c) = inflight.next().await
            {
                check(c)?;
            }
            inflight.push(
                ch.basic_publish(
                    ex.as_str().into(),
                    ex.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props.clone(),
                )
                .await?,
            );
        }
    }
    while let Some(c) = inflight.next().await {
        check(c)?;
    }
    close(&conn, "filled").await;
    Ok(())
}

/// Deletes the queues and exchanges `bench-scale-0..destinations` (missing ones are fine).
async fn cleanup(destinations: usize) -> Result<()> {
    let conn = connect().await?;
    let mut ch = conn.create_channel().await?;
    for i in 0..destinations {
        // A delete of something missing closes the channel (404): open a new one then.
        if ch
            .queue_delete(queue(i).as_str().into(), QueueDeleteOptions::default())
            .await
            .is_err()
        {
            ch = conn.create_channel().await?;
        }
        if ch
            .exchange_delete(
                destination(i).as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .is_err()
        {
            ch = conn.create_channel().await?;
        }
    }
    close(&conn, "cleaned").await;
    Ok(())
}

/// Consumer `sink<i>` on destination `bench-scale-<i>` (group `bench`, prefetch 250, AUTO ack).
fn binding_props(i: usize, concurrency: usize, auto_startup: bool) -> String {
    let b = format!("sink{i}-in-0");
    let d = destination(i);
    format!(
        "spring.cloud.stream.bindings.{b}.destination={d}\n\
         spring.cloud.stream.bindings.{b}.group={GROUP}\n\
         spring.cloud.stream.bindings.{b}.content-type={OCTET}\n\
         spring.cloud.stream.bindings.{b}.consumer.concurrency={concurrency}\n\
         spring.cloud.stream.bindings.{b}.consumer.auto-startup={auto_startup}\n\
         spring.cloud.stream.rabbit.bindings.{b}.consumer.prefetch={PREFETCH}\n\
         spring.cloud.stream.rabbit.bindings.{b}.consumer.acknowledge-mode=AUTO\n"
    )
}

/// A `StreamApp` with `bindings` consumer functions `sink0..` (each its own destination),
/// ticking `meter` per message.
async fn binder_app(
    bindings: usize,
    concurrency: usize,
    auto_startup: bool,
    meter: &Arc<Meter>,
) -> Result<StreamApp> {
    let names: Vec<String> = (0..bindings).map(|i| format!("sink{i}")).collect();
    let mut props = format!("spring.cloud.function.definition={}\n", names.join(";"));
    for i in 0..bindings {
        props.push_str(&binding_props(i, concurrency, auto_startup));
    }
    let mut builder = StreamApp::builder()
        .environment(environment(&props)?)
        .binder(RabbitBinderFactory::new());
    for name in &names {
        let m = Arc::clone(meter);
        builder = builder.consumer(name, move |_body: Bytes| {
            m.tick();
            std::future::ready(Ok::<(), FunctionError>(()))
        });
    }
    Ok(builder.build().await?)
}

/// Opens a channel with prefetch 250 and subscribes it to queue `i`.
async fn raw_subscribe(conn: &Connection, i: usize) -> Result<(Channel, lapin::Consumer)> {
    subscribe(conn.create_channel().await?, i).await
}

/// Sets prefetch 250 on `ch` and subscribes it to queue `i`.
async fn subscribe(ch: Channel, i: usize) -> Result<(Channel, lapin::Consumer)> {
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            queue(i).as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

/// One task per raw consumer: tick, ack each delivery.
fn raw_drain(consumer: lapin::Consumer, meter: &Arc<Meter>) -> tokio::task::JoinHandle<Result<()>> {
    let m = Arc::clone(meter);
    let mut consumer = consumer;
    tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let d = d?;
            m.tick();
            d.acker.ack(BasicAckOptions::default()).await?;
        }
        anyhow::Ok(())
    })
}

/// Consumes the pre-filled `bench-scale-0.bench` with `concurrency` consumers. Measured from
/// the first delivery to the last.
async fn concurrency(raw: bool, concurrency: usize, messages: u64) -> Result<(u64, Report)> {
    let meter = Arc::new(Meter::new(messages));
    let (start, end) = if raw {
        let conn = connect().await?;
        let (mut channels, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..concurrency {
            let (ch, consumer) = raw_subscribe(&conn, 0).await?;
            channels.push(ch);
            tasks.push(raw_drain(consumer, &meter));
        }
        let r = meter.wait(run_limit(messages)).await;
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        close(&conn, "done").await;
        r?
    } else {
        let app = binder_app(1, concurrency, true, &meter).await?;
        let r = meter.wait(run_limit(messages)).await;
        app.shutdown().await?;
        r?
    };
    Ok((
        messages,
        Report::between(
            "scale-concurrency",
            if raw { "raw" } else { "binder" },
            messages,
            0,
            messages - 1,
            start,
            end,
        ),
    ))
}

/// Consumes `bindings` pre-filled queues, one consumer each. Everything is bound first (the
/// binder: `auto-startup=false`; raw: channels opened with their prefetch), then every
/// consumer is started at once; measured from the first delivery to the last.
async fn bindings(raw: bool, bindings: usize, total: u64) -> Result<(u64, Report)> {
    let meter = Arc::new(Meter::new(total));
    let (start, end) = if raw {
        let conn = connect().await?;
        let mut channels = Vec::new();
        for _ in 0..bindings {
            let ch = conn.create_channel().await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            channels.push(ch);
        }
        let subscribed =
            futures::future::try_join_all(channels.iter().enumerate().map(|(i, ch)| async move {
                ch.basic_consume(
                    queue(i).as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            }))
            .await?;
        let tasks: Vec<_> = subscribed
            .into_iter()
            .map(|c| raw_drain(c, &meter))
            .collect();
        let r = meter.wait(run_limit(total)).await;
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        close(&conn, "done").await;
        r?
    } else {
        let app = binder_app(bindings, 1, false, &meter).await?;
        let handle = app.handle();
        futures::future::try_join_all((0..bindings).map(|i| {
            let handle = handle.clone();
            async move {
                handle
                    .command(&format!("sink{i}-in-0"), BindingCommand::Start)
                    .await
            }
        }))
        .await?;
        let r = meter.wait(run_limit(total)).await;
        app.shutdown().await?;
        r?
    };
    Ok((
        total,
        Report::between(
            "scale-bindings",
            if raw { "raw" } else { "binder" },
            total,
            0,
            total - 1,
            start,
            end,
        ),
    ))
}

/// Time from application start until `n` consumer bindings consume (empty queues, declared):
/// the binder from `StreamApp::builder()` until `build()` returned and every binding is
/// `Running`; raw lapin connecting, then per binding declaring the exchange, queue and binding
/// (as the binder provisions) and subscribing a channel with prefetch 250, one after another.
async fn bind(raw: bool, n: usize) -> Result<String> {
    let meter = Arc::new(Meter::new(u64::MAX));
    let t0 = Instant::now();
    let s0 = snapshot();
    let (build_secs, s1, t1) = if raw {
        let conn = connect().await?;
        let mut consumers = Vec::new();
        for i in 0..n {
            let ch = conn.create_channel().await?;
            declare(&ch, i).await?;
            consumers.push(subscribe(ch, i).await?);
        }
        let (s1, t1) = (snapshot(), Instant::now());
        close(&conn, "done").await;
        (t1.duration_since(t0).as_secs_f64(), s1, t1)
    } else {
        let app = binder_app(n, 1, true, &meter).await?;
        let built = t0.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !app
            .bindings()
            .iter()
            .all(|(_, s)| *s == BindingState::Running)
        {
            if Instant::now() > deadline {
                bail!("bindings not running after 120 s: {:?}", app.bindings());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (s1, t1) = (snapshot(), Instant::now());
        app.shutdown().await?;
        (built, s1, t1)
    };
    let r = Report::between(
        "scale-bind",
        if raw { "raw" } else { "binder" },
        0,
        0,
        1,
        s0,
        s1,
    );
    Ok(format!(
        "{{\"scenario\":\"scale-bind\",\"mode\":\"{}\",\"bindings\":{n},\"bind_secs\":{:.6},\
         \"build_secs\":{build_secs:.6},\"cpu_s\":{:.6},\"peak_rss_kib\":{}}}",
        r.mode,
        t1.duration_since(t0).as_secs_f64(),
        r.cpu_user + r.cpu_sys,
        r.peak_rss_kib
    ))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .with_context(|| format!("missing {what}\n{USAGE}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{what} must be a number\n{USAGE}"))
}

/// `stream scale ...` (the arguments after `scale`); prints a JSON line for `run`.
pub(crate) async fn main(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("fill") => {
            fill(
                arg(args, 1, "destinations")?,
                arg(args, 2, "messages")?,
                arg(args, 3, "size")?,
            )
            .await
        }
        Some("cleanup") => cleanup(arg(args, 1, "destinations")?).await,
        Some("run") => {
            let kind = args.get(1).map(String::as_str).unwrap_or_default();
            let raw = match args.get(2).map(String::as_str) {
                Some("raw") => true,
                Some("binder") => false,
                _ => bail!("mode must be raw or binder\n{USAGE}"),
            };
            let n: usize = arg(args, 3, "n")?;
            let n = n.max(1);
            let messages: u64 = arg(args, 4, "messages")?;
            let size: usize = arg(args, 5, "size")?;
            let line = match kind {
                "concurrency" => {
                    let (m, mut r) = concurrency(raw, n, messages.max(2)).await?;
                    r.messages = m;
                    r.size = size;
                    r.extra = vec![("concurrency", n as u64)];
                    r.json()
                }
                "bindings" => {
                    let total = (messages / n as u64).max(1) * n as u64;
                    let (m, mut r) = bindings(raw, n, total.max(2)).await?;
                    r.messages = m;
                    r.size = size;
                    r.extra = vec![("bindings", n as u64)];
                    r.json()
                }
                "bind" => bind(raw, n).await?,
                other => bail!("unknown scale scenario `{other}`\n{USAGE}"),
            };
            println!("{line}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
