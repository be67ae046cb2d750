//! A local RocketMQ (name server + broker) for the `binder-rocketmq` integration tests.
//!
//! * [`install`] builds the pinned Rust name server and broker once
//!   (`cargo install --locked --version 1.0.0 rocketmq-namesrv rocketmq-broker`) into
//!   `$XDG_CACHE_HOME/stream-rs/rocketmq-1.0.0-o1` (else `~/.cache/...`), reused by later runs and CI.
//! * [`ensure_rocketmq`] uses the name server named by
//!   `SPRING_CLOUD_STREAM_ROCKETMQ_BINDER_NAME_SERVER` or `ROCKETMQ_NAMESRV_ADDR` when one answers
//!   there, or an already running local pair on 127.0.0.1:9876/10911; otherwise it writes a
//!   loopback-only configuration, starts both servers and waits until the broker has registered.
//!   The returned [`RocketMqGuard`] stops what it started (SIGTERM, then waits) when dropped.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Version of the RocketMQ servers used by the tests.
pub(crate) const ROCKETMQ_VERSION: &str = "1.0.0";
const NAMESRV_BIN: &str = "rocketmq-namesrv-rust";
const BROKER_BIN: &str = "rocketmq-broker-rust";
const NAMESRV_PORT: u16 = 9876;
const BROKER_PORT: u16 = 10911;
/// Names the build settings below in the cache path, so a cache built otherwise is not reused.
const BUILD_TAG: &str = "o1";
/// Release profile overrides for the server build. The published crates declare no profile, so
/// cargo's default release profile (opt-level 3) applies; opt-level 1 without debug info compiles
/// in well under half the time and the servers stay far faster than the tests need.
const BUILD_PROFILE: [(&str, &str); 5] = [
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_INCREMENTAL", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
];

/// `$XDG_CACHE_HOME/stream-rs/rocketmq-<version>-<tag>` (or `~/.cache/...`).
pub(crate) fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join("cache"));
    base.join("stream-rs")
        .join(format!("rocketmq-{ROCKETMQ_VERSION}-{BUILD_TAG}"))
}

/// Where the built servers are (see [`installed`]).
pub(crate) fn bin_dir() -> PathBuf {
    cache_dir().join("bin-root").join("bin")
}

/// Whether both server binaries are in the cache.
pub(crate) fn installed() -> bool {
    let bin = bin_dir();
    bin.join(NAMESRV_BIN).is_file() && bin.join(BROKER_BIN).is_file()
}

/// Whether the tests would use a name server that is already there (configured, or a local pair
/// running), so nothing needs building.
pub(crate) fn servers_provided() -> bool {
    configured_name_server().is_some()
        || (reachable(&format!("127.0.0.1:{NAMESRV_PORT}"))
            && reachable(&format!("127.0.0.1:{BROKER_PORT}")))
}

/// Builds the pinned name server and broker into the cache unless both binaries exist.
/// Returns the directory holding them. Took 21 minutes on 2 busy cores the first time.
pub(crate) fn install() -> Result<PathBuf> {
    install_logged(None)
}

/// [`install`], with cargo's output written to `log` instead of the terminal (for a build
/// running in the background while other work goes on).
pub(crate) fn install_logged(log: Option<&Path>) -> Result<PathBuf> {
    let bin = bin_dir();
    if installed() {
        return Ok(bin);
    }
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    eprintln!(
        "building the RocketMQ {ROCKETMQ_VERSION} name server and broker into {} \
         (once; 15-25 minutes on 2 cores; {})",
        cache.display(),
        match log {
            Some(l) => format!("cargo's output goes to {}", l.display()),
            None => "cargo's progress follows".to_owned(),
        }
    );
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.args([
        "install",
        "--locked",
        "--version",
        ROCKETMQ_VERSION,
        "rocketmq-namesrv",
        "rocketmq-broker",
        "--root",
    ])
    .arg(cache.join("bin-root"))
    .arg("--target-dir")
    .arg(cache.join("target"))
    .envs(BUILD_PROFILE);
    let started = Instant::now();
    match log {
        None => crate::exec(c)?,
        Some(path) => {
            let out =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let err = out.try_clone()?;
            c.stdout(Stdio::from(out)).stderr(Stdio::from(err));
            let status = c.status().context("cannot start cargo install")?;
            if !status.success() {
                bail!(
                    "building the RocketMQ servers failed ({status}); see {}",
                    path.display()
                );
            }
        }
    }
    eprintln!(
        "RocketMQ servers built in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    if !installed() {
        bail!(
            "cargo install finished but {} or {} is missing in {}",
            NAMESRV_BIN,
            BROKER_BIN,
            bin.display()
        );
    }
    Ok(bin)
}

/// A server build running in the background (see [`prebuild`]).
pub(crate) struct Prebuild {
    handle: std::thread::JoinHandle<Result<PathBuf>>,
    log: PathBuf,
    started: Instant,
}

/// Starts building the servers in the background when the tests will need them and they are
/// not built yet, so the build overlaps the unit tests on a machine that never built them.
pub(crate) fn prebuild() -> Result<Option<Prebuild>> {
    if installed() || servers_provided() {
        return Ok(None);
    }
    fs::create_dir_all(cache_dir())
        .with_context(|| format!("cannot create {}", cache_dir().display()))?;
    let log = cache_dir().join("build.log");
    let path = log.clone();
    let handle = std::thread::spawn(move || install_logged(Some(&path)));
    Ok(Some(Prebuild {
        handle,
        log,
        started: Instant::now(),
    }))
}

impl Prebuild {
    /// Waits for the build, printing progress every minute; on failure, the log's tail.
    pub(crate) fn finish(self) -> Result<()> {
        while !self.handle.is_finished() {
            let compiled = fs::read_to_string(&self.log)
                .map(|t| t.lines().filter(|l| l.contains("Compiling")).count())
                .unwrap_or(0);
            eprintln!(
                "waiting for the RocketMQ server build: {compiled} crates compiled in {:.0} min \
                 (log: {})",
                self.started.elapsed().as_secs_f64() / 60.0,
                self.log.display()
            );
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && !self.handle.is_finished() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let result = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the RocketMQ server build thread panicked"))?;
        if let Err(e) = result {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            for line in tail.into_iter().rev() {
                eprintln!("  | {line}");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The broker configuration: everything on loopback, state under `home`.
///
/// `broker.brokerServerConfig.listenPort` must not be set (the port is `broker.listenPort`): the
/// 1.0.0 broker then exits 70 printing only `core.service.failed`, as it does for any rejected
/// configuration, and with the loopback security profile a bind address other than loopback is
/// rejected the same way.
pub(crate) fn broker_config(home: &Path, name_server: &str) -> String {
    let store = home.join("store");
    let store = store.display();
    format!(
        "[broker]\n\
         brokerIp1 = \"127.0.0.1\"\n\
         listenPort = {BROKER_PORT}\n\
         namesrvAddr = \"{name_server}\"\n\
         storePathRootDir = \"{store}\"\n\
         enablePropertyFilter = true\n\
         autoCreateTopicEnable = true\n\
         transactionCheckInterval = 5000\n\
         transactionTimeout = 3000\n\
         \n\
         [broker.brokerServerConfig]\n\
         bindAddress = \"127.0.0.1\"\n\
         \n\
         [store]\n\
         storePathRootDir = \"{store}\"\n\
         haListenAddress = \"127.0.0.1\"\n"
    )
}

/// A running (or borrowed) RocketMQ. Dropping it stops the servers it started.
#[derive(Debug)]
pub(crate) struct RocketMqGuard {
    name_server: String,
    children: Vec<(&'static str, Child)>,
}

impl RocketMqGuard {
    /// The name server address for clients (`host:port`).
    pub(crate) fn name_server(&self) -> String {
        self.name_server.clone()
    }

    /// Whether this guard started the servers (and stops them on drop).
    #[allow(dead_code, reason = "used by itest wiring")]
    pub(crate) fn owns_servers(&self) -> bool {
        !self.children.is_empty()
    }
}

impl Drop for RocketMqGuard {
    fn drop(&mut self) {
        // Broker first, so it can unregister from the name server.
        while let Some((name, mut child)) = self.children.pop() {
            let pid = child.id();
            eprintln!("stopping {name} (pid {pid})");
            // Not through the `kill` program (procps-ng 4.0.2 misreads negative pids; see
            // tests/examples/chaos/support.rs): the signal itself, to this child only.
            if let Ok(pid) = i32::try_from(pid)
                && pid > 1
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    _ => {
                        eprintln!("{name} (pid {pid}) did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn reachable(address: &str) -> bool {
    let Ok(addrs) = address.to_socket_addrs() else {
        return false;
    };
    addrs
        .collect::<Vec<SocketAddr>>()
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

/// The configured name server, if any (`;` or `,` separate several; the first is probed).
fn configured_name_server() -> Option<String> {
    [
        "SPRING_CLOUD_STREAM_ROCKETMQ_BINDER_NAME_SERVER",
        "ROCKETMQ_NAMESRV_ADDR",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .map(|v| v.trim().to_owned())
    .find(|v| !v.is_empty())
}

/// Makes sure a RocketMQ name server with a registered broker answers, starting a local pair
/// when none is configured or running.
pub(crate) fn ensure_rocketmq() -> Result<RocketMqGuard> {
    if let Some(configured) = configured_name_server() {
        let first = configured
            .split([';', ','])
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_owned();
        if reachable(&first) {
            eprintln!("RocketMQ name server answers at {configured} (configured)");
            return Ok(RocketMqGuard {
                name_server: configured,
                children: Vec::new(),
            });
        }
        bail!(
            "the configured RocketMQ name server {configured} does not answer.\n\
             Start it, or unset SPRING_CLOUD_STREAM_ROCKETMQ_BINDER_NAME_SERVER / \
             ROCKETMQ_NAMESRV_ADDR to let xtask start a local name server and broker."
        );
    }
    let local = format!("127.0.0.1:{NAMESRV_PORT}");
    if reachable(&local) && reachable(&format!("127.0.0.1:{BROKER_PORT}")) {
        eprintln!("RocketMQ answers at {local} (already running)");
        return Ok(RocketMqGuard {
            name_server: local,
            children: Vec::new(),
        });
    }
    if reachable(&local) {
        bail!(
            "something listens on {local} but no broker on 127.0.0.1:{BROKER_PORT}; stop it or \
             point ROCKETMQ_NAMESRV_ADDR at a complete RocketMQ"
        );
    }
    let bin = install()?;
    start_local(&bin, &local)
}

fn start_local(bin: &Path, name_server: &str) -> Result<RocketMqGuard> {
    // The broker refuses a store it reaches through a symbolic link
    // ("storage.state.corrupted"), so the cache (which may be a link) is resolved first.
    let cache = cache_dir();
    let cache = fs::canonicalize(&cache).unwrap_or(cache);
    let home = cache.join("home");
    let logs = home.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Every start gets an empty store: nothing is carried over from an earlier run (a broker
    // stopped hard, a cancelled CI run), and every suite creates its own topics per run.
    let store = home.join("store");
    if store.exists() {
        fs::remove_dir_all(&store)
            .with_context(|| format!("cannot remove the old broker store {}", store.display()))?;
    }
    let config = home.join("broker.toml");
    fs::write(&config, broker_config(&home, name_server))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let mut guard = RocketMqGuard {
        name_server: name_server.to_owned(),
        children: Vec::new(),
    };

    let namesrv_log = logs.join("namesrv.log");
    let mut namesrv = Command::new(bin.join(NAMESRV_BIN));
    namesrv
        .args(["--bindAddress", "127.0.0.1", "--listenPort"])
        .arg(NAMESRV_PORT.to_string())
        .arg("--kvConfigPath")
        .arg(home.join("kv.json"));
    let child = spawn(namesrv, &home, &namesrv_log)?;
    guard.children.push(("rocketmq name server", child));
    wait_for(Duration::from_secs(60), &namesrv_log, &mut guard, |_| {
        reachable(name_server)
    })
    .context("the RocketMQ name server did not start")?;
    eprintln!("RocketMQ name server up at {name_server}");

    let broker_log = logs.join("broker.log");
    let mut broker = Command::new(bin.join(BROKER_BIN));
    broker.arg("-c").arg(&config).arg("-n").arg(name_server);
    let child = spawn(broker, &home, &broker_log)?;
    guard.children.push(("rocketmq broker", child));
    wait_for(Duration::from_secs(120), &broker_log, &mut guard, |log| {
        log.contains("started successfully") && reachable(&format!("127.0.0.1:{BROKER_PORT}"))
    })
    .context("the RocketMQ broker did not start")?;
    // Registration with the name server follows the start; give it a moment.
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("RocketMQ broker registered (logs in {})", logs.display());
    Ok(guard)
}

fn spawn(mut command: Command, home: &Path, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    command
        .env("ROCKETMQ_HOME", home)
        .env("ROCKETMQ_SECURITY_PROFILE", "development-insecure-loopback")
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    eprintln!("$ {} (log: {})", crate::describe(&command), log.display());
    command
        .spawn()
        .with_context(|| format!("cannot start `{}`", crate::describe(&command)))
}

/// Waits until `ready(log text)`; fails early when the last started process exits.
fn wait_for(
    limit: Duration,
    log: &Path,
    guard: &mut RocketMqGuard,
    ready: impl Fn(&str) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if ready(&text) {
            return Ok(());
        }
        if let Some((name, child)) = guard.children.last_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let tail: String = text
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            let name = *name;
            guard.children.pop();
            bail!("{name} exited with {status}; last log lines:\n{tail}");
        }
        if start.elapsed() > limit {
            bail!(
                "not ready after {} s; see {}",
                limit.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
