//! `cargo xtask test`: every test, unit first, then brokers, then the short fault-injection run
//! (`cargo xtask chaos --short`) of each broker.

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
    let result = units.and_then(|()| {
        // The RabbitMQ suite needs nothing of the RocketMQ build: it runs while the build goes
        // on, and only the RocketMQ suite waits for it.
        let wanted: Vec<String> = if args.is_empty() {
            vec!["rabbit".to_owned(), "rocketmq".to_owned()]
        } else {
            args.to_vec()
        };
        let (rabbit, rest): (Vec<String>, Vec<String>) =
            wanted.into_iter().partition(|a| a == "rabbit");
        if !rabbit.is_empty() {
            crate::itest::run(&rabbit)?;
            if args.is_empty() {
                crate::chaos::run_short(&crate::chaos::RABBIT_SCENARIOS)?;
            }
        }
        Ok(rest)
    });
    if let Some(p) = prebuild {
        p.finish()?;
    }
    let rest = result?;
    if rest.is_empty() {
        return Ok(());
    }
    crate::itest::run(&rest)?;
    if args.is_empty() {
        crate::chaos::run_short(&["rocketmq"])?;
    }
    Ok(())
}
