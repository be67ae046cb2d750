//! What the scenarios share: private RabbitMQ nodes, the application process, an AMQP client
//! that counts what the broker holds, and the tally every scenario prints.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The RabbitMQ server scripts of the machine's package, called directly (the Debian wrapper
/// would switch user and lose the environment).
const RABBITMQ_SBIN: &str = "/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/sbin";

fn sbin(tool: &str) -> PathBuf {
    let dir = std::env::var("CHAOS_RABBITMQ_SBIN").unwrap_or_else(|_| RABBITMQ_SBIN.to_owned());
    Path::new(&dir).join(tool)
}

/// What one scenario came to.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) scenario: String,
    pub(crate) sent: u64,
    pub(crate) processed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) note: String,
    pub(crate) failures: Vec<String>,
}

impl Tally {
    pub(crate) fn new(scenario: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            ..Self::default()
        }
    }

    /// Counts the outputs seen (sequence numbers) against the confirmed inputs.
    pub(crate) fn count(&mut self, confirmed: &[u64], seen: &[u64]) {
        let mut times: BTreeMap<u64, u64> = BTreeMap::new();
        for s in seen {
            *times.entry(*s).or_default() += 1;
        }
        self.sent += confirmed.len() as u64;
        self.processed += times.len() as u64;
        self.duplicated += times.values().map(|n| n - 1).sum::<u64>();
        self.lost += confirmed.iter().filter(|s| !times.contains_key(s)).count() as u64;
    }

    pub(crate) fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{:<34} sent {:>6}  processed {:>6}  lost {:>3}  duplicated {:>4}  dead-lettered {:>3}  {}{}",
            self.scenario,
            self.sent,
            self.processed,
            self.lost,
            self.duplicated,
            self.dead_lettered,
            self.note,
            if self.failures.is_empty() {
                String::new()
            } else {
                format!("  FAILED: {}", self.failures.join("; "))
            }
        )
    }

    pub(crate) fn passed(&self) -> bool {
        self.lost == 0 && self.failures.is_empty()
    }
}

/// A loopback port nobody listens on.
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A RabbitMQ node of the suite's own: its own name, ports and data directory under `base`,
/// loopback only, no plugins; stopped and removed on drop.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) port: u16,
    dir: PathBuf,
    home: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `name@localhost` on `port` (distribution on `dist_port`), sharing the Erlang
    /// cookie in `home` with the other nodes of the run.
    pub(crate) fn start(base: &Path, short: &str, port: u16, dist_port: u16) -> Result<Self> {
        let name = format!("{short}@localhost");
        let dir = base.join(short);
        let home = base.join("home");
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        if !cookie.exists() {
            let n: u64 = rand_u64();
            std::fs::write(&cookie, format!("CHAOS{n:016X}"))?;
            let mut perm = std::fs::metadata(&cookie)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o400);
            std::fs::set_permissions(&cookie, perm)?;
        }
        std::fs::write(dir.join("plugins"), "[].\n")?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        let log = std::fs::File::create(dir.join("server.out"))?;
        let child = Command::new(sbin("rabbitmq-server"))
            // Its own process group: the script starts the Erlang VM as a child, and a stop
            // that fails must still take the whole group down.
            .process_group(0)
            .current_dir(&dir)
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rabbitmq-server (is the rabbitmq-server package installed?)")?;
        let node = Self {
            name,
            port,
            dir,
            home,
            child: Some(child),
        };
        node.await_startup()?;
        Ok(node)
    }

    /// `rabbitmqctl -n <node> args...`.
    pub(crate) fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(sbin("rabbitmqctl"))
            .env("HOME", &self.home)
            .args(["-n", &self.name])
            .args(args)
            .output()
            .context("running rabbitmqctl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "rabbitmqctl -n {} {}: {}{}",
                self.name,
                args.join(" "),
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// Waits until the node runs (it registers with epmd a moment after its start).
    pub(crate) fn await_startup(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.ctl(&["await_startup", "--timeout", "30"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Stops the RabbitMQ application (connections dropped, queues' data kept).
    pub(crate) fn stop_app(&self) -> Result<()> {
        self.ctl(&["stop_app"]).map(|_| ())
    }

    pub(crate) fn start_app(&self) -> Result<()> {
        self.ctl(&["start_app"]).map(|_| ())?;
        self.await_startup()
    }

    /// Stops the whole node (the Erlang VM) for good.
    pub(crate) fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = self.ctl(&["stop"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Whatever is left of the group (the VM, epmd is not in it).
        signal(-group_id(&c), Signal::SIGKILL);
        let _ = c.wait();
    }

    /// Joins the cluster of `seed`.
    pub(crate) fn join(&self, seed: &Node) -> Result<()> {
        self.stop_app()?;
        self.ctl(&["join_cluster", &seed.name])?;
        self.start_app()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid of a child, which is also the id of its process group when it was started with
/// `process_group(0)`.
fn group_id(c: &Child) -> i32 {
    i32::try_from(c.id()).unwrap_or(0)
}

/// Sends `sig` to the process `target` (to the process group `-target` when negative).
///
/// Never through the `kill` program: procps-ng 4.0.2's `kill -KILL -12345` reads only the
/// first digit of a negative pid and calls kill(-1, SIGKILL), which stops every process of the
/// machine (it did, whenever a node's group id began with 1). Targets 0, 1 and -1 (the caller's
/// group, init, everything) are refused.
fn signal(target: i32, sig: Signal) {
    if matches!(target, -1..=1) {
        return;
    }
    let pid = Pid::from_raw(target.abs());
    let _ = if target < 0 {
        nix::sys::signal::killpg(pid, sig)
    } else {
        nix::sys::signal::kill(pid, sig)
    };
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The application under test, as a child process (its output in `log`).
pub(crate) struct App {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub(crate) starts: u32,
}

impl App {
    pub(crate) fn new(
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Self {
            bin: bin.to_path_buf(),
            args,
            env,
            log,
            child: None,
            starts: 0,
        }
    }

    pub(crate) fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_APP_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL: no shutdown, nothing flushed.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits (bounded) for a graceful exit; its exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(group_id(&c), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An AMQP client of the suite: publishes with confirms, counts and drains queues.
pub(crate) struct Client {
    ports: Vec<u16>,
    conn: Option<Connection>,
    publish: Option<Channel>,
}

impl Client {
    pub(crate) fn new(ports: &[u16]) -> Self {
        Self {
            ports: ports.to_vec(),
            conn: None,
            publish: None,
        }
    }

    async fn connection(&mut self) -> Result<&Connection> {
        if !self.conn.as_ref().is_some_and(|c| c.status().connected()) {
            self.conn = None;
            self.publish = None;
            let mut last = None;
            for p in &self.ports {
                let uri = format!("amqp://guest:guest@127.0.0.1:{p}/%2f?heartbeat=10");
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    Connection::connect(&uri, ConnectionProperties::default()),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        self.conn = Some(c);
                        break;
                    }
                    Ok(Err(e)) => last = Some(e.to_string()),
                    Err(_) => last = Some("timed out".into()),
                }
            }
            if self.conn.is_none() {
                bail!(
                    "no broker at ports {:?}: {}",
                    self.ports,
                    last.unwrap_or_default()
                );
            }
        }
        self.conn.as_ref().context("connected")
    }

    pub(crate) async fn channel(&mut self) -> Result<Channel> {
        Ok(self.connection().await?.create_channel().await?)
    }

    /// Publishes one message and waits for the broker's confirm (persistent).
    pub(crate) async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        if !self
            .publish
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            let ch = self.channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            self.publish = Some(ch);
        }
        let ch = self.publish.as_ref().context("channel")?;
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await?;
        match tokio::time::timeout(Duration::from_secs(10), confirm).await {
            Ok(Ok(c)) if c.is_ack() => Ok(()),
            Ok(Ok(_)) => bail!("nacked"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.publish = None;
                self.conn = None;
                bail!("no confirm within 10 s")
            }
        }
    }

    /// Publishes `{"seq": n}` as JSON; `true` once confirmed, `false` if it could not be.
    pub(crate) async fn publish_seq(&mut self, exchange: &str, seq: u64) -> bool {
        let body = format!("{{\"seq\":{seq}}}");
        let props = BasicProperties::default().with_content_type("application/json".into());
        self.publish(exchange, "k", body.as_bytes(), props)
            .await
            .is_ok()
    }

    /// Messages ready in a queue (`None`: no such queue or no broker).
    pub(crate) async fn depth(&mut self, queue: &str) -> Option<u32> {
        let ch = self.channel().await.ok()?;
        let r = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()
            .map(|q| q.message_count());
        let _ = ch.close(200, "".into()).await;
        r
    }

    pub(crate) async fn consumers(&mut self, queue: &str) -> Option<u32> {
        let ch = self.channel().await.ok()?;
        let r = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()
            .map(|q| q.consumer_count());
        let _ = ch.close(200, "".into()).await;
        r
    }

    /// Takes every message off `queue` (acknowledged): their bodies.
    pub(crate) async fn drain(&mut self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            out.push(m.delivery.data);
        }
        let _ = ch.close(200, "".into()).await;
        Ok(out)
    }

    /// Takes every message off `queue`: bodies and properties.
    pub(crate) async fn drain_full(
        &mut self,
        queue: &str,
    ) -> Result<Vec<(Vec<u8>, BasicProperties)>> {
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            out.push((m.delivery.data, m.delivery.properties));
        }
        let _ = ch.close(200, "".into()).await;
        Ok(out)
    }

    /// The sequence numbers of the JSON bodies on `queue`, drained.
    pub(crate) async fn drain_seqs(&mut self, queue: &str) -> Result<Vec<u64>> {
        Ok(self
            .drain(queue)
            .await?
            .iter()
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .filter_map(|v| v.get("seq").and_then(serde_json::Value::as_u64))
            .collect())
    }

    pub(crate) async fn delete_queues(&mut self, queues: &[String]) {
        if let Ok(ch) = self.channel().await {
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }

    pub(crate) async fn delete_exchanges(&mut self, exchanges: &[String]) {
        if let Ok(ch) = self.channel().await {
            for e in exchanges {
                let _ = ch
                    .exchange_delete(e.as_str().into(), Default::default())
                    .await;
            }
        }
    }
}

/// The `--spring.*` arguments of a `relay` app on `input` (group `g`, DLQ) whose output has a
/// durable `capture` queue.
pub(crate) fn relay_args(
    ports: &[u16],
    input: &str,
    confirms: bool,
    extra: &[String],
) -> Vec<String> {
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut a = vec![
        format!("--spring.rabbitmq.addresses={}", addresses.join(",")),
        "--spring.cloud.function.definition=relay".to_owned(),
        format!("--spring.cloud.stream.bindings.relay-in-0.destination={input}"),
        "--spring.cloud.stream.bindings.relay-in-0.group=g".to_owned(),
        format!("--spring.cloud.stream.bindings.relay-out-0.destination={input}-out"),
        "--spring.cloud.stream.bindings.relay-out-0.producer.required-groups=capture".to_owned(),
        "--spring.cloud.stream.rabbit.bindings.relay-in-0.consumer.auto-bind-dlq=true".to_owned(),
        "--spring.cloud.stream.rabbit.bindings.relay-in-0.consumer.recovery-interval=500ms"
            .to_owned(),
        "--spring.cloud.stream.binding-retry-interval=1s".to_owned(),
    ];
    if confirms {
        a.push("--spring.rabbitmq.publisher-confirm-type=correlated".to_owned());
    }
    a.extend(extra.iter().cloned());
    a
}
