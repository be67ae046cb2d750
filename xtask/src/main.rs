//! Project automation. Run `cargo xtask help`.

mod bench;
mod bench_scale;
mod broker;
mod chaos;
mod itest;
mod rocketmq;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <command>

Commands:
  test            Every test: unit, doc and in-memory end-to-end tests, then broker integration
                  tests (`itest`). This is the command CI runs.
  itest [rabbit] [rocketmq]
                  Broker integration tests (default: both). RabbitMQ: SPRING_RABBITMQ_HOST /
                  SPRING_RABBITMQ_PORT (default 127.0.0.1:5672); starts a local rabbitmq-server
                  or `docker compose` if none answers. RocketMQ: ROCKETMQ_NAMESRV_ADDR if set,
                  else builds (once, into ~/.cache/stream-rs) and starts the rocketmq-rust name
                  server and broker on loopback, stopping them afterwards. Fails if a broker
                  cannot be reached.
  bench [rabbit|memory|rocketmq|backlog|callgrind|all] [--messages N] [--size BYTES]
        [--rounds R] [--backlog N] [--callgrind]
                  Throughput, CPU, peak RSS and allocations of the framework against the raw
                  client and the peer framework (RustStream) on the same broker (default: all,
                  100000 messages, 256 B and 4 KiB, 3 rounds); `callgrind`: instructions per
                  message under valgrind. Not part of `test`. See docs/benchmarks.md.
  bench scale [--messages N] [--size BYTES] [--rounds R] [--plot PATH] [--replot FILE]
                  How cost grows: consumer concurrency 1-8, 1/10/100 bindings in one app, bind
                  time; tables and a PNG plot (docs/bench-scale.png).
  chaos [--short] [poison|kill9|broker-restart|connection-close|cluster|rocketmq]...
                  Fault-injection suite on real brokers (default: every scenario): poison
                  messages, kill -9 of the application, broker restarts, forced connection
                  closes, a three-node cluster with quorum queues losing its leader, RocketMQ
                  kill -9 of the app and of the broker. Prints
                  sent / processed / lost / duplicated / dead-lettered; fails if anything
                  confirmed is lost. Broker faults run on RabbitMQ nodes the suite starts on
                  loopback and removes. `--short`: fewer messages (CI). See docs/reliability.md.
  broker rocketmq Builds (once) and starts the rocketmq-rust name server and broker on loopback
                  for running the examples by hand; Ctrl-C stops them.
  help            This text.
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "test" => test::run(&rest),
        "itest" => itest::run(&rest),
        "broker" => broker_up(&rest),
        "bench" if rest.first().is_some_and(|a| a == "scale") => bench_scale::run(&rest[1..]),
        "bench" => bench::run(&rest),
        "chaos" => chaos::run(&rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// `cargo xtask broker rocketmq`: a local broker for running examples by hand.
fn broker_up(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("rocketmq") => {
            let guard = rocketmq::ensure_rocketmq()?;
            eprintln!(
                "RocketMQ name server at {} (spring.cloud.stream.rocketmq.binder.name-server); Ctrl-C stops it",
                guard.name_server()
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some("rabbit") => {
            let (host, port) = broker::ensure_rabbit()?;
            eprintln!("RabbitMQ at {host}:{port}");
            Ok(())
        }
        _ => bail!("usage: cargo xtask broker rocketmq|rabbit"),
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo` as the toolchain running xtask, without the package variables `cargo run -p xtask`
/// exported: build scripts that watch them (ring's: `rerun-if-env-changed=CARGO_PKG_NAME`, ...)
/// would otherwise rerun and rebuild everything above them, so what the xtask builds is what a
/// plain `cargo test` or `cargo bench` builds, and each reuses the other's artifacts.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(root());
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(&key);
        }
    }
    c
}

/// Runs a command, echoing it, failing on a non-zero exit.
fn exec(mut command: Command) -> Result<()> {
    eprintln!("$ {}", describe(&command));
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", describe(&command)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(&command));
    }
    Ok(())
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program().to_string_lossy().into_owned())
        .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
