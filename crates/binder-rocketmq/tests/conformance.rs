//! The RocketMQ binder against the conformance kit, on a real broker: one trial per scenario
//! (`cargo xtask itest rocketmq` runs them; a plain `cargo test` lists them as ignored).
//!
//! The name server comes from `ROCKETMQ_NAMESRV_ADDR` (as for the other broker tests), else the
//! binder's default `127.0.0.1:9876`.
//!
//! Names: the kit's destinations (`kit-<scenario>-<hex>`) and groups (`<name>-<hex tail>`) are
//! RocketMQ-legal and unique per trial, so the broker-wide `%RETRY%<group>` and `%DLQ%<group>`
//! of one trial are never read by another, and each dead-letter reader has a group of its own.
//!
//! Broker control: a proxy in front of the name server would not cut an application off (the
//! client talks to the broker directly once it has the route), so [`OwnBroker`] runs a name
//! server and broker of its own on free loopback ports, from the servers `cargo xtask` built
//! (`ROCKETMQ_SERVERS_DIR`, set by `cargo xtask itest rocketmq`): `cut` kills both, `restore`
//! starts them again on the same store. Without the directory the late-binding and
//! dead-consumer trials are absent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use binder_rocketmq::RocketMqBinderFactory;
use binder_rocketmq::conformance::{BrokerControl, Kit};

/// A name server and broker of the kit's own, which it can take down and bring back.
struct OwnBroker(Arc<Servers>);

struct Servers {
    bin: PathBuf,
    home: PathBuf,
    name_server: SocketAddr,
    broker: SocketAddr,
    running: Mutex<Vec<(&'static str, Child)>>,
    /// Whether the pair was started once (it starts when a trial first needs it).
    started: Mutex<bool>,
}

/// A loopback port nothing listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A broker port `p` with `p - 2` (the broker's "fast" port) free as well.
fn free_broker_port() -> std::io::Result<u16> {
    for _ in 0..50 {
        let p = free_port()?;
        if p > 1026 && TcpListener::bind(("127.0.0.1", p - 2)).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no free pair of loopback ports"))
}

fn reachable(a: SocketAddr) -> bool {
    TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok()
}

impl OwnBroker {
    /// Prepares (does not start) a pair from the servers in `bin`.
    fn new(bin: PathBuf) -> std::io::Result<Self> {
        let home =
            std::env::temp_dir().join(format!("stream-rs-kit-rocketmq-{}", std::process::id()));
        std::fs::create_dir_all(home.join("logs"))?;
        let name_server: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let broker: SocketAddr = ([127, 0, 0, 1], free_broker_port()?).into();
        let store = home.join("store");
        // As xtask/src/rocketmq.rs configures the suite's broker, on other ports.
        std::fs::write(
            home.join("broker.toml"),
            format!(
                "[broker]\n\
                 brokerIp1 = \"127.0.0.1\"\n\
                 listenPort = {}\n\
                 namesrvAddr = \"{name_server}\"\n\
                 storePathRootDir = \"{store}\"\n\
                 autoCreateTopicEnable = true\n\
                 \n\
                 [broker.brokerServerConfig]\n\
                 bindAddress = \"127.0.0.1\"\n\
                 \n\
                 [store]\n\
                 storePathRootDir = \"{store}\"\n\
                 haListenAddress = \"127.0.0.1\"\n\
                 haListenPort = {}\n",
                broker.port(),
                free_port()?,
                store = store.display(),
            ),
        )?;
        Ok(Self(Arc::new(Servers {
            bin,
            home,
            name_server,
            broker,
            running: Mutex::new(Vec::new()),
            started: Mutex::new(false),
        })))
    }
}

impl Servers {
    fn spawn(&self, name: &'static str, bin: &str, args: &[&str]) -> Result<(), String> {
        let log_path = self.home.join("logs").join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.bin.join(bin))
            .args(args)
            .env("ROCKETMQ_HOME", &self.home)
            .env("ROCKETMQ_SECURITY_PROFILE", "development-insecure-loopback")
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, child));
        Ok(())
    }

    fn wait(&self, what: &str, limit: Duration, ready: impl Fn() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ready() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} did not come up within {limit:?} (logs in {})",
                    self.home.join("logs").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Starts the name server, then the broker, and waits until the broker has registered.
    fn start(&self) -> Result<(), String> {
        let port = self.name_server.port().to_string();
        let kv = self.home.join("kv.json");
        let kv = kv.to_string_lossy();
        self.spawn(
            "namesrv",
            "rocketmq-namesrv-rust",
            &[
                "--bindAddress",
                "127.0.0.1",
                "--listenPort",
                &port,
                "--kvConfigPath",
                &kv,
            ],
        )?;
        self.wait("the kit's name server", Duration::from_secs(60), || {
            reachable(self.name_server)
        })?;
        let config = self.home.join("broker.toml");
        let ns = self.name_server.to_string();
        self.spawn(
            "broker",
            "rocketmq-broker-rust",
            &["-c", &config.to_string_lossy(), "-n", &ns],
        )?;
        self.wait("the kit's broker", Duration::from_secs(120), || {
            reachable(self.broker)
        })?;
        // Registration with the name server follows the start.
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    }

    /// Kills the broker, then the name server.
    fn kill(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, mut child)) = running.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ensure_started(&self) -> Result<(), String> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            self.start()?;
            *started = true;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[async_trait]
impl BrokerControl for OwnBroker {
    fn properties(&self) -> Vec<(String, String)> {
        if let Err(e) = self.0.ensure_started() {
            eprintln!("broker control: {e}");
        }
        vec![
            (
                "spring.cloud.stream.rocketmq.binder.name-server".into(),
                self.0.name_server.to_string(),
            ),
            // A restarted broker knows a consumer again at its next heartbeat: the client's
            // shortest interval.
            (
                "spring.cloud.stream.rocketmq.binder.heartbeat-broker-interval".into(),
                "10000".into(),
            ),
        ]
    }

    async fn cut(&self) {
        let servers = Arc::clone(&self.0);
        let _ = tokio::task::spawn_blocking(move || {
            // Started already, or now: a trial may cut before any application used it.
            let _ = servers.ensure_started();
            servers.kill();
        })
        .await;
    }

    async fn restore(&self) {
        let servers = Arc::clone(&self.0);
        let started = tokio::task::spawn_blocking(move || servers.start()).await;
        match started {
            Ok(Err(e)) => eprintln!("broker control: {e}"),
            Err(e) => eprintln!("broker control: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// The directory of the RocketMQ servers `cargo xtask` built, when it says so.
fn servers_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("ROCKETMQ_SERVERS_DIR")?);
    let both = ["rocketmq-namesrv-rust", "rocketmq-broker-rust"]
        .iter()
        .all(|b| Path::new(&dir).join(b).is_file());
    both.then_some(dir)
}

fn main() -> std::process::ExitCode {
    let name_server = std::env::var("ROCKETMQ_NAMESRV_ADDR")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:9876".to_owned());
    let mut kit = Kit::new(RocketMqBinderFactory::new())
        .ignored_unless_asked("needs RocketMQ; run with cargo xtask itest rocketmq")
        .with_property(
            "spring.cloud.stream.rocketmq.binder.name-server",
            name_server,
        )
        .with_property(
            "spring.cloud.stream.rocketmq.binder.enable-msg-trace",
            "false",
        )
        // Every trial's topic is new: a new group reads it from its start, so nothing sent
        // between a consumer's start and its first rebalance is skipped.
        .with_property(
            "spring.cloud.stream.rocketmq.default.consumer.consume-from-where",
            "CONSUME_FROM_FIRST_OFFSET",
        )
        // Exhausted messages are dead-lettered by the binder (with the failure headers) rather
        // than through the broker's 16 redeliveries.
        .with_property(
            "spring.cloud.stream.rocketmq.default.consumer.push.delay-level-when-next-consume",
            "-1",
        )
        .with_dead_letters(|_destination, g| {
            vec![
                (
                    "spring.cloud.stream.bindings.dlq-in-0.destination".into(),
                    format!("%DLQ%{g}"),
                ),
                (
                    "spring.cloud.stream.bindings.dlq-in-0.group".into(),
                    format!("reader-{g}"),
                ),
            ]
        })
        // A requeued message comes back through %RETRY%<group> after 10 s (delay level 3), so
        // "nothing more arrives" must be watched longer than that.
        .with_timeout(Duration::from_secs(40))
        .with_quiet_period(Duration::from_secs(12));
    match servers_dir().map(OwnBroker::new) {
        Some(Ok(control)) => kit = kit.with_broker_control(control),
        Some(Err(e)) => eprintln!("no broker control: cannot prepare the kit's own broker: {e}"),
        None => eprintln!(
            "no broker control: ROCKETMQ_SERVERS_DIR does not name the RocketMQ servers \
             (cargo xtask itest rocketmq sets it)"
        ),
    }
    kit.run()
}
