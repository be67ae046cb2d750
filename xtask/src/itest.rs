//! `cargo xtask itest [rabbit] [rocketmq]`: integration tests against real brokers.

use anyhow::{Result, bail};

use crate::{broker, cargo, exec, rocketmq, root};

/// Broker test suites: (broker name, package).
const SUITES: &[(&str, &str)] = &[("rabbit", "binder-rabbit"), ("rocketmq", "binder-rocketmq")];

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
        // Keeps a broker this run started alive until the suite ends, then stops it.
        let mut _guard = None;
        match *name {
            "rabbit" => {
                let (host, port) = broker::ensure_rabbit()?;
                for (test, reason) in &broker::rabbit_skips() {
                    eprintln!("SKIPPED {test}: {reason}");
                    c.args(["--skip", test]);
                }
                c.env("SPRING_RABBITMQ_HOST", &host)
                    .env("SPRING_RABBITMQ_PORT", port.to_string());
            }
            "rocketmq" => {
                let guard = rocketmq::ensure_rocketmq()?;
                eprintln!("RocketMQ name server at {}", guard.name_server());
                c.env("ROCKETMQ_NAMESRV_ADDR", guard.name_server());
                // The conformance kit runs a name server and broker of its own from these to
                // take them down (late binding, dead consumer); without them those trials are
                // absent.
                if rocketmq::installed() {
                    c.env("ROCKETMQ_SERVERS_DIR", rocketmq::bin_dir());
                } else {
                    eprintln!(
                        "the RocketMQ servers are not built here: the conformance kit's \
                         late-binding and dead-consumer trials will be absent"
                    );
                }
                _guard = Some(guard);
            }
            _ => unreachable!("checked against SUITES above"),
        }
        exec(c)?;
    }
    Ok(())
}
