//! `cargo xtask itest [rabbit]`: integration tests against real brokers.

use anyhow::{Result, bail};

use crate::{broker, cargo, exec, root};

/// Broker test suites: (broker name, package).
const SUITES: &[(&str, &str)] = &[("rabbit", "binder-rabbit")];

pub(crate) fn run(args: &[String]) -> Result<()> {
    let wanted: Vec<&str> = if args.is_empty() {
        SUITES.iter().map(|(b, _)| *b).collect()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in &wanted {
        let Some((_, package)) = SUITES.iter().find(|(b, _)| b == name) else {
            bail!(
                "unknown broker `{name}`; known: {}",
                SUITES
                    .iter()
                    .map(|(b, _)| *b)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !root().join("crates").join(package).exists() {
            bail!("package `{package}` is missing from crates/");
        }
        eprintln!("== {name} integration tests ==");
        let (host, port) = match *name {
            "rabbit" => broker::ensure_rabbit()?,
            _ => unreachable!("checked against SUITES above"),
        };
        let skips = match *name {
            "rabbit" => broker::rabbit_skips(),
            _ => Vec::new(),
        };
        let mut c = cargo();
        c.args([
            "test",
            "--locked",
            "-p",
            package,
            "--tests",
            "--",
            "--ignored",
        ]);
        for (test, reason) in &skips {
            eprintln!("SKIPPED {test}: {reason}");
            c.args(["--skip", test]);
        }
        c.env("SPRING_RABBITMQ_HOST", &host)
            .env("SPRING_RABBITMQ_PORT", port.to_string());
        exec(c)?;
    }
    Ok(())
}
