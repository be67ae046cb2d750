//! `cargo xtask chaos [--short] [scenario...]`: the fault-injection suite. Builds the
//! `chaos` driver and the `chaos_app` application (examples of `stream-tests`), makes sure the
//! shared RabbitMQ answers (poison and kill -9 scenarios use queues of their own on it), then
//! runs the driver, which starts RabbitMQ nodes of its own for the broker faults (never touching
//! the shared one) and a RocketMQ name server and broker of its own (from the servers
//! `cargo xtask test` builds), and prints sent / processed / lost / duplicated / dead-lettered
//! per scenario.
//! `--short` streams fewer messages and one kill round: a few minutes. `cargo xtask test` runs
//! it: the RabbitMQ scenarios right after the RabbitMQ suite (while the RocketMQ servers may
//! still be building), the RocketMQ one after the RocketMQ suite.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{broker, cargo, exec, rocketmq, root};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The RabbitMQ scenarios (the shared node and nodes of the suite's own).
pub(crate) const RABBIT_SCENARIOS: [&str; 5] = [
    "poison",
    "kill9",
    "broker-restart",
    "connection-close",
    "cluster",
];

/// `--short` of `scenarios`, as `cargo xtask test` runs them.
pub(crate) fn run_short(scenarios: &[&str]) -> Result<()> {
    eprintln!("== cargo xtask chaos --short {} ==", scenarios.join(" "));
    let mut args = vec!["--short".to_owned()];
    args.extend(scenarios.iter().map(|s| (*s).to_owned()));
    run(&args)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--locked",
        "-p",
        "stream-tests",
        "--example",
        "chaos",
        "--example",
        "chaos_app",
    ]);
    exec(build)?;
    let (host, port) = broker::ensure_rabbit()?;
    if (host.as_str(), port) != ("127.0.0.1", 5672) && host != "localhost" {
        eprintln!("note: the chaos scenarios on the shared broker use 127.0.0.1:5672");
    }
    let mut driver = Command::new(target_dir().join("debug/examples/chaos"));
    driver.current_dir(root()).args(args);
    // The RocketMQ scenarios start a name server and broker of their own from the servers
    // `cargo xtask test` built (the build itself is not started here: it takes half an hour).
    if rocketmq::installed() {
        driver.env("ROCKETMQ_SERVERS_DIR", rocketmq::bin_dir());
    } else {
        eprintln!(
            "the RocketMQ servers are not built here (`cargo xtask broker rocketmq` builds them): \
             the rocketmq scenario will fail"
        );
    }
    exec(driver)
}
