//! Finding (or starting) the brokers integration tests need.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where RabbitMQ is expected: SPRING_RABBITMQ_HOST / SPRING_RABBITMQ_PORT, else 127.0.0.1:5672.
pub(crate) fn rabbit_address() -> (String, u16) {
    let host = std::env::var("SPRING_RABBITMQ_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("SPRING_RABBITMQ_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672);
    (host, port)
}

fn reachable(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .collect::<Vec<SocketAddr>>()
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

fn wait_until_reachable(host: &str, port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if reachable(host, port) {
            return true;
        }
        eprint!(".");
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!();
    false
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Makes sure RabbitMQ answers, starting one if possible.
pub(crate) fn ensure_rabbit() -> Result<(String, u16)> {
    let (host, port) = rabbit_address();
    if reachable(&host, port) {
        eprintln!("RabbitMQ answers at {host}:{port}");
        return Ok((host, port));
    }
    eprintln!("RabbitMQ does not answer at {host}:{port}");
    if installed("rabbitmq-server") {
        eprintln!("starting the local rabbitmq-server (rabbitmq-server -detached)");
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .status()
            .context("cannot start rabbitmq-server")?;
        if status.success() && wait_until_reachable(&host, port, Duration::from_secs(90)) {
            eprintln!("RabbitMQ is up at {host}:{port}");
            return Ok((host, port));
        }
        eprintln!("rabbitmq-server did not come up");
    }
    let docker_engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if docker_engine {
        eprintln!("starting RabbitMQ with docker compose");
        let status = Command::new("docker")
            .args(["compose", "up", "-d", "rabbitmq"])
            .current_dir(crate::root())
            .status()
            .context("cannot run docker compose")?;
        if status.success() && wait_until_reachable(&host, port, Duration::from_secs(120)) {
            return Ok((host, port));
        }
    }
    bail!(
        "no RabbitMQ broker at {host}:{port}, and none could be started.\n\
         Start one (`rabbitmq-server -detached`, `apt-get install rabbitmq-server`, or \
         `docker compose up -d rabbitmq` with a Docker engine), or point \
         SPRING_RABBITMQ_HOST / SPRING_RABBITMQ_PORT at one."
    )
}

/// Broker tests that need something the RabbitMQ under test lacks: (test name, reason).
pub(crate) fn rabbit_skips() -> Vec<(&'static str, String)> {
    let plugins = Command::new("rabbitmq-plugins")
        .args(["list", "-e", "-m"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match plugins {
        Ok(list) if list.contains("rabbitmq_delayed_message_exchange") => Vec::new(),
        Ok(_) => vec![(
            "delayed_exchange_end_to_end",
            "the rabbitmq_delayed_message_exchange plugin is not enabled on this broker".to_owned(),
        )],
        Err(_) => vec![(
            "delayed_exchange_end_to_end",
            "rabbitmq-plugins is not available to tell whether the delayed message plugin is enabled"
                .to_owned(),
        )],
    }
}
