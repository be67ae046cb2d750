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
    run_all_units()?;
    crate::itest::run(args)
}
