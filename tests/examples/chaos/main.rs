//! The fault-injection suite (`cargo xtask chaos [--short] [scenario...]`): starts the
//! `chaos_app` example as a child process, streams sequence-numbered messages through it while
//! injecting a fault, and counts on the broker what came out. Each scenario prints
//! sent / processed / lost / duplicated / dead-lettered; the run fails if anything confirmed
//! was lost or a scenario's own check failed.
//!
//! Scenarios: `poison` (shared RabbitMQ), `kill9` (shared RabbitMQ), `broker-restart`,
//! `connection-close` and `cluster` (RabbitMQ nodes of the suite's own, on loopback, removed
//! afterwards; the shared node is never touched), `rocketmq` (kill -9 of the app, kill -9 and
//! restart of the broker, on a name server and broker of the suite's own). Everything is bounded
//! in time and count.

mod poison;
mod rocket;
mod support;
#[path = "../../../crates/binder-rabbit/tests/common/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use support::{App, Client, Node, Tally, free_port, relay_args};

/// The run's sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Size {
    /// Messages streamed through each fault.
    pub(crate) stream: u64,
    /// Good messages around the poison.
    pub(crate) poison_good: u64,
    /// kill -9 rounds.
    pub(crate) kill_rounds: u32,
    /// Bytes of the oversize body.
    pub(crate) oversize: usize,
    /// Bytes of the gzip bomb once inflated.
    pub(crate) bomb: usize,
}

const SHORT: Size = Size {
    stream: 400,
    poison_good: 100,
    kill_rounds: 1,
    oversize: 2 << 20,
    bomb: 160 << 20,
};

const FULL: Size = Size {
    stream: 5_000,
    poison_good: 1_000,
    kill_rounds: 3,
    oversize: 16 << 20,
    bomb: 1 << 30,
};

const ALL: &[&str] = &[
    "poison",
    "kill9",
    "broker-restart",
    "connection-close",
    "cluster",
    "rocketmq",
];

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--short") {
        SHORT
    } else {
        FULL
    };
    let mut wanted: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if wanted.is_empty() {
        wanted = ALL.to_vec();
    }
    for w in &wanted {
        if !ALL.contains(w) {
            bail!("unknown scenario `{w}`; known: {}", ALL.join(", "));
        }
    }
    let bin = std::env::current_exe()?
        .parent()
        .context("examples directory")?
        .join("chaos_app");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p stream-tests --examples`",
            bin.display()
        );
    }
    let base = std::env::temp_dir().join(format!("stream-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let started = Instant::now();
    let mut tallies = Vec::new();
    for w in wanted {
        let t0 = Instant::now();
        let run = match w {
            "poison" => poison::run(&bin, &base, size).await,
            "kill9" => kill9(&bin, &base, size).await,
            "broker-restart" => broker_restart(&bin, &base, size).await,
            "connection-close" => connection_close(&bin, &base, size).await,
            "cluster" => cluster(&bin, &base, size).await,
            "rocketmq" => rocket::run(&bin, &base, size).await,
            _ => unreachable!("checked above"),
        };
        let ts = match run {
            Ok(ts) => ts,
            Err(e) => {
                let mut t = Tally::new(w);
                t.failures.push(format!("{e:#}"));
                vec![t]
            }
        };
        for t in ts {
            println!("{}  ({:.0} s)", t.line(), t0.elapsed().as_secs_f64());
            tallies.push(t);
        }
    }
    let failed: Vec<&Tally> = tallies.iter().filter(|t| !t.passed()).collect();
    println!(
        "chaos: {} scenarios in {:.0} s, {} failed (logs in {})",
        tallies.len(),
        started.elapsed().as_secs_f64(),
        failed.len(),
        base.display()
    );
    if failed.is_empty() {
        let _ = std::fs::remove_dir_all(&base);
        Ok(())
    } else {
        bail!("{} chaos scenario(s) failed", failed.len())
    }
}

/// A unique destination name.
fn unique(prefix: &str) -> String {
    format!("chaos-{prefix}-{:x}", support::rand_u64() & 0xffff_ffff)
}

/// Streams `n` sequence numbers into `input` while `fault` runs once, halfway; waits until the
/// broker holds an output for every confirmed input (bounded), then counts. `after` is told
/// when the fault ended, for the time to the first output after it.
async fn stream_through<F, Fut>(
    client: &mut Client,
    input: &str,
    n: u64,
    tally: &mut Tally,
    fault: F,
) -> Result<Option<Duration>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let capture = format!("{input}-out.capture");
    let mut confirmed = Vec::new();
    let mut fault = Some(fault);
    let mut back_at: Option<(Instant, u32)> = None;
    let mut first_after: Option<Duration> = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    for seq in 0..n {
        if seq == n / 2
            && let Some(f) = fault.take()
        {
            f().await?;
            let depth = client.depth(&capture).await.unwrap_or(0);
            back_at = Some((Instant::now(), depth));
        }
        // Retry until confirmed while the broker is away (bounded).
        loop {
            if client.publish_seq(input, seq).await {
                confirmed.push(seq);
                break;
            }
            if Instant::now() > deadline {
                bail!("could not publish seq {seq} for 240 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Right after the fault: how long until the first output (one input is there now).
        if first_after.is_none()
            && let Some((at, depth)) = back_at
        {
            let limit = Instant::now() + Duration::from_secs(60);
            while Instant::now() < limit {
                if client.depth(&capture).await.unwrap_or(0) > depth {
                    first_after = Some(at.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let want = confirmed.len() as u32;
    let done = wait_outputs(client, &capture, &format!("{input}.g"), want).await;
    if first_after.is_none()
        && let Some((at, _)) = back_at
    {
        first_after = Some(at.elapsed());
    }
    tally.check(
        done,
        "not every confirmed input produced an output within 120 s",
    );
    let seen = client.drain_seqs(&capture).await?;
    tally.count(&confirmed, &seen);
    tally.dead_lettered += u64::from(client.depth(&format!("{input}.g.dlq")).await.unwrap_or(0));
    Ok(first_after)
}

/// Waits until `capture` holds at least `want` messages and `queue` is empty.
async fn wait_outputs(client: &mut Client, capture: &str, queue: &str, want: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let out = client.depth(capture).await.unwrap_or(0);
        let backlog = client.depth(queue).await.unwrap_or(u32::MAX);
        if out >= want && backlog == 0 {
            // Let in-flight redeliveries land.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

async fn wait_subscribed(client: &mut Client, queue: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.consumers(queue).await.unwrap_or(0) >= 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn cleanup(client: &mut Client, input: &str) {
    client
        .delete_queues(&[
            format!("{input}.g"),
            format!("{input}.g.dlq"),
            format!("{input}-out.capture"),
        ])
        .await;
    client
        .delete_exchanges(&[input.to_owned(), format!("{input}-out")])
        .await;
}

/// Starts the relay application with `args` and a client on the broker at `ports`; checks that
/// the application subscribed to `<input>.g`.
async fn start_relay(
    bin: &std::path::Path,
    base: &std::path::Path,
    ports: &[u16],
    args: Vec<String>,
    input: &str,
    t: &mut Tally,
) -> Result<(Client, App)> {
    let mut client = Client::new(ports);
    let mut app = App::new(bin, args, Vec::new(), base.join(format!("{input}.log")));
    app.start()?;
    t.check(
        wait_subscribed(&mut client, &format!("{input}.g")).await,
        "app subscribed",
    );
    Ok((client, app))
}

/// kill -9 of the application mid-stream, restarted (shared node): every confirmed input
/// produces its output at least once.
async fn kill9(bin: &std::path::Path, base: &std::path::Path, size: Size) -> Result<Vec<Tally>> {
    let mut out = Vec::new();
    for round in 0..size.kill_rounds {
        let mut t = Tally::new(format!("rabbit kill -9 (round {})", round + 1));
        let input = unique("kill9");
        let (mut client, mut app) = start_relay(
            bin,
            base,
            &[5672],
            relay_args(&[5672], &input, true, &[]),
            &input,
            &mut t,
        )
        .await?;
        let app_ref = &mut app;
        stream_through(&mut client, &input, size.stream, &mut t, || async move {
            app_ref.kill9();
            app_ref.start()
        })
        .await?;
        t.note = "outputs confirmed; duplicates are redeliveries of unacked inputs".to_owned();
        t.check(app.stop() == Some(0), "graceful exit after the run");
        cleanup(&mut client, &input).await;
        out.push(t);
    }
    Ok(out)
}

/// The suite's own single node.
fn own_node(base: &std::path::Path, name: &str) -> Result<Node> {
    Node::start(base, name, free_port()?, free_port()?)
}

/// The broker restarts mid-stream (its RabbitMQ application stopped and started), with and
/// without publisher confirms on the app's output.
async fn broker_restart(
    bin: &std::path::Path,
    base: &std::path::Path,
    size: Size,
) -> Result<Vec<Tally>> {
    let node = own_node(base, &format!("chaos-restart-{}", std::process::id()))?;
    let mut out = Vec::new();
    for confirms in [true, false] {
        let mut t = Tally::new(format!(
            "rabbit broker restart ({})",
            if confirms { "confirms" } else { "no confirms" }
        ));
        let input = unique("restart");
        let (mut client, mut app) = start_relay(
            bin,
            base,
            &[node.port],
            relay_args(&[node.port], &input, confirms, &[]),
            &input,
            &mut t,
        )
        .await?;
        let node_ref = &node;
        let first = stream_through(&mut client, &input, size.stream, &mut t, || async move {
            node_ref.stop_app()?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            node_ref.start_app()
        })
        .await?;
        t.note = format!(
            "first output {:.1} s after the broker was back{}",
            first.map_or(f64::NAN, |d| d.as_secs_f64()),
            if confirms {
                ""
            } else {
                "; without confirms an output in flight may be lost"
            }
        );
        t.check(app.alive(), "the app reconnected by itself and stayed up");
        t.check(app.stop() == Some(0), "graceful exit after the run");
        cleanup(&mut client, &input).await;
        out.push(t);
    }
    Ok(out)
}

/// The broker closes every connection mid-stream (`rabbitmqctl close_all_connections` on the
/// suite's own node).
async fn connection_close(
    bin: &std::path::Path,
    base: &std::path::Path,
    size: Size,
) -> Result<Vec<Tally>> {
    let node = own_node(base, &format!("chaos-close-{}", std::process::id()))?;
    let mut t = Tally::new("rabbit forced connection close");
    let input = unique("close");
    let (mut client, mut app) = start_relay(
        bin,
        base,
        &[node.port],
        relay_args(&[node.port], &input, true, &[]),
        &input,
        &mut t,
    )
    .await?;
    let node_ref = &node;
    let first = stream_through(&mut client, &input, size.stream, &mut t, || async move {
        node_ref
            .ctl(&["close_all_connections", "chaos: forced close"])
            .map(|_| ())
    })
    .await?;
    t.note = format!(
        "first output {:.1} s after the close",
        first.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    t.check(app.alive(), "the app reconnected by itself and stayed up");
    t.check(app.stop() == Some(0), "graceful exit after the run");
    cleanup(&mut client, &input).await;
    Ok(vec![t])
}

/// Three nodes on loopback clustered, quorum queues; the node leading the input queue stops
/// mid-stream and the app fails over through `spring.rabbitmq.addresses`.
async fn cluster(bin: &std::path::Path, base: &std::path::Path, size: Size) -> Result<Vec<Tally>> {
    let pid = std::process::id();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(own_node(base, &format!("chaos-c{i}-{pid}"))?);
    }
    for n in &nodes[1..] {
        n.join(&nodes[0])?;
    }
    let status = nodes[0].ctl(&["cluster_status"])?;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let mut t = Tally::new("rabbit 3-node cluster, leader stop");
    let input = unique("cluster");
    let quorum = [
        "--spring.cloud.stream.rabbit.bindings.relay-in-0.consumer.quorum.enabled=true".to_owned(),
        "--spring.cloud.stream.rabbit.bindings.relay-in-0.consumer.dlq-quorum.enabled=true"
            .to_owned(),
        "--spring.cloud.stream.rabbit.bindings.relay-out-0.producer.quorum.enabled=true".to_owned(),
    ];
    let (mut client, mut app) = start_relay(
        bin,
        base,
        &ports,
        relay_args(&ports, &input, true, &quorum),
        &input,
        &mut t,
    )
    .await?;
    t.check(
        ["chaos-c1", "chaos-c2", "chaos-c3"]
            .iter()
            .all(|n| status.contains(n)),
        "three nodes clustered",
    );
    let queue = format!("{input}.g");
    let listing = nodes[0].ctl(&["list_queues", "name", "type", "leader", "--quiet"])?;
    let leader = listing
        .lines()
        .find(|l| l.starts_with(&queue))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_owned)
        .unwrap_or_default();
    t.check(
        listing.contains("quorum"),
        "the input queue is a quorum queue",
    );
    let leader_index = nodes.iter().position(|n| n.name == leader);
    t.check(
        leader_index.is_some(),
        format!("leader of {queue} found ({leader})"),
    );
    let index = leader_index.unwrap_or(0);
    let stopped = &nodes[index];
    let first = stream_through(&mut client, &input, size.stream, &mut t, || async move {
        stopped.stop_app()
    })
    .await?;
    t.note = format!(
        "leader {leader} stopped; first output {:.1} s after",
        first.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    t.check(app.alive(), "the app failed over and stayed up");
    t.check(app.stop() == Some(0), "graceful exit after the run");
    let _ = nodes[index].start_app();
    cleanup(&mut client, &input).await;
    drop(nodes);
    Ok(vec![t])
}
