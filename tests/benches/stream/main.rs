//! Throughput benchmarks: the framework against the raw broker client on the same broker.
//!
//! Run them with `cargo xtask bench` (see docs/benchmarks.md); it builds this binary once in
//! release and runs each measurement in a fresh process:
//!
//! ```text
//! stream run <scenario> <raw|binder|peer> <messages> <size>   one measured run: one JSON line
//! stream fill <scenario> <messages> <size>               pre-fills the scenario's queue
//! ```
//!
//! Scenarios: `rabbit-publish`, `rabbit-consume`, `rabbit-e2e`, `rabbit-batch`,
//! `rabbit-backlog`, `rocketmq-sync`, `rocketmq-async`, `rocketmq-consume`, `rocketmq-e2e`,
//! `memory-e2e`. Without arguments (as `cargo test --all-targets` and
//! `cargo bench` run it) it prints this usage and exits 0.

mod memory;
mod meter;
mod peer;
mod rabbit;
mod rocketmq;
mod scale;

use std::alloc::System;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use stats_alloc::StatsAlloc;

/// Counts every allocation of the process (allocations per message are a delta of it).
#[global_allocator]
pub(crate) static GLOBAL: StatsAlloc<System> = StatsAlloc::system();

const USAGE: &str = "\
stream run <scenario> <raw|binder|peer> <messages> <size>
stream fill <scenario> <messages> <size>
scenarios: rabbit-publish rabbit-consume rabbit-e2e rabbit-batch rabbit-backlog
           rocketmq-sync rocketmq-async rocketmq-consume rocketmq-e2e memory-e2e
RocketMQ: ROCKETMQ_NAMESRV_ADDR names the name server (default 127.0.0.1:9876); fill prints
STREAM_BENCH_RUN_ID=<id>, which run needs in its environment to find the filled topic.
Run through `cargo xtask bench` (docs/benchmarks.md).";

/// One run's parameters.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub(crate) scenario: String,
    pub(crate) mode: Mode,
    pub(crate) messages: u64,
    pub(crate) size: usize,
}

/// The raw client or the framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Raw,
    Binder,
    /// RustStream (`ruststream-lapin`), another framework on the same client: RabbitMQ only.
    Peer,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Binder => "binder",
            Mode::Peer => "peer",
        }
    }
}

/// A payload of `size` ASCII lower-case letters (valid UTF-8 for the `String` functions).
pub(crate) fn payload(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn number<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .with_context(|| format!("missing {what}\n{USAGE}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{what} must be a number\n{USAGE}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().map(String::as_str) else {
        println!("{USAGE}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match command {
        "run" => {
            let scenario = args.get(1).cloned().unwrap_or_default();
            let mode = match args.get(2).map(String::as_str) {
                Some("raw") => Mode::Raw,
                Some("binder") => Mode::Binder,
                Some("peer") => Mode::Peer,
                _ => bail!("mode must be raw, binder or peer\n{USAGE}"),
            };
            let params = Params {
                scenario,
                mode,
                messages: number(&args, 3, "messages")?,
                size: number(&args, 4, "size")?,
            };
            // A run that hangs (a client future that never resolves) must not wedge the whole
            // bench: past twice its time limit plus two minutes it fails, and the process
            // exits without waiting for what is still running.
            let limit = meter::run_limit(params.messages) * 2 + Duration::from_secs(120);
            let report = runtime.block_on(async {
                let run = async {
                    match params.scenario.as_str() {
                        "memory-e2e" => memory::run(&params).await,
                        s if s.starts_with("rabbit-") => rabbit::run(&params).await,
                        s if s.starts_with("rocketmq-") => rocketmq::run(&params).await,
                        other => bail!("unknown scenario `{other}`\n{USAGE}"),
                    }
                };
                tokio::time::timeout(limit, run).await
            });
            let report = match report {
                Ok(report) => report?,
                Err(_) => {
                    eprintln!(
                        "{} {} did not end within {limit:?}; giving up",
                        params.scenario,
                        params.mode.name()
                    );
                    std::process::exit(3);
                }
            };
            println!("{}", report.json());
            Ok(())
        }
        "fill" => {
            let scenario = args.get(1).cloned().unwrap_or_default();
            let messages = number(&args, 2, "messages")?;
            let size = number(&args, 3, "size")?;
            if scenario.starts_with("rocketmq-") {
                runtime.block_on(rocketmq::fill(&scenario, messages, size))
            } else {
                runtime.block_on(rabbit::fill(&scenario, messages, size))
            }
        }
        "scale" => runtime.block_on(scale::main(&args[1..])),
        // `cargo bench` passes `--bench`; `cargo test --all-targets` passes nothing or filters.
        _ => {
            println!("{USAGE}");
            Ok(())
        }
    }
}
