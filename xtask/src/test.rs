//! `cargo xtask test`: every test, unit first, then brokers.

use anyhow::Result;

use crate::{cargo, exec};

pub(crate) fn run_all_units() -> Result<()> {
    eprintln!("== unit, doc and in-memory end-to-end tests ==");
    let mut c = cargo();
    c.args(["test", "--workspace", "--all-targets", "--locked"]);
    exec(c)?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--doc", "--locked"]);
    exec(c)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    // On a machine that never built the RocketMQ servers, build them while the unit tests run.
    let rocketmq = args.is_empty() || args.iter().any(|a| a == "rocketmq");
    let prebuild = if rocketmq {
        crate::rocketmq::prebuild()?
    } else {
        None
    };
    let units = run_all_units();
    if let Some(p) = prebuild {
        p.finish()?;
    }
    units?;
    crate::itest::run(args)
}
