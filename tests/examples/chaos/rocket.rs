//! RocketMQ: kill -9 of the application mid-stream, and a kill -9 and restart of the broker
//! mid-stream, on a name server and broker of the suite's own (free loopback ports, removed
//! afterwards), built by `cargo xtask` into `~/.cache/stream-rs`. Inputs are sent with sync sends
//! (`SEND_OK` = confirmed) through a `StreamBridge` of the driver's own; outputs are counted by a
//! consumer group of the driver's own on the output topic.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stream_config::Environment;
use stream_core::{FunctionError, StreamApp};

use crate::support::{App, Tally, free_port};
use crate::{Size, unique};

fn servers_dir() -> PathBuf {
    std::env::var_os("ROCKETMQ_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/stream-rs/rocketmq-1.0.0-o1/bin-root/bin")
        })
}

fn reachable(a: SocketAddr) -> bool {
    TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok()
}

/// A broker port `p` with `p - 2` (the broker's "fast" port) free as well.
fn free_broker_port() -> Result<u16> {
    for _ in 0..50 {
        let p = free_port()?;
        if p > 1026 && TcpListener::bind(("127.0.0.1", p - 2)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free pair of loopback ports")
}

/// The suite's own name server and broker.
struct Rocket {
    bin: PathBuf,
    home: PathBuf,
    name_server: SocketAddr,
    broker: SocketAddr,
    namesrv: Option<Child>,
    broker_child: Option<Child>,
}

impl Rocket {
    fn new(base: &Path) -> Result<Self> {
        let bin = servers_dir();
        for b in ["rocketmq-namesrv-rust", "rocketmq-broker-rust"] {
            if !bin.join(b).is_file() {
                bail!(
                    "{} is missing: build the RocketMQ servers once with `cargo xtask broker rocketmq`",
                    bin.join(b).display()
                );
            }
        }
        let home = base.join("rocketmq");
        std::fs::create_dir_all(home.join("logs"))?;
        let name_server: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let broker: SocketAddr = ([127, 0, 0, 1], free_broker_port()?).into();
        let store = home.join("store");
        std::fs::write(
            home.join("broker.toml"),
            format!(
                "[broker]\nbrokerIp1 = \"127.0.0.1\"\nlistenPort = {}\nnamesrvAddr = \"{name_server}\"\n\
                 storePathRootDir = \"{store}\"\nautoCreateTopicEnable = true\n\n\
                 [broker.brokerServerConfig]\nbindAddress = \"127.0.0.1\"\n\n\
                 [store]\nstorePathRootDir = \"{store}\"\nhaListenAddress = \"127.0.0.1\"\nhaListenPort = {}\n",
                broker.port(),
                free_port()?,
                store = store.display(),
            ),
        )?;
        Ok(Self {
            bin,
            home,
            name_server,
            broker,
            namesrv: None,
            broker_child: None,
        })
    }

    fn spawn(&self, name: &str, bin: &str, args: &[&str]) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("logs").join(format!("{name}.log")))?;
        Command::new(self.bin.join(bin))
            .args(args)
            .env("ROCKETMQ_HOME", &self.home)
            .env("ROCKETMQ_SECURITY_PROFILE", "development-insecure-loopback")
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin}"))
    }

    fn wait(what: &str, limit: Duration, ready: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !ready() {
            if Instant::now() > deadline {
                bail!("{what} did not come up within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        let port = self.name_server.port().to_string();
        let kv = self.home.join("kv.json").to_string_lossy().into_owned();
        self.namesrv = Some(self.spawn(
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
        )?);
        let ns = self.name_server;
        Self::wait("the name server", Duration::from_secs(60), || reachable(ns))?;
        self.start_broker()
    }

    fn start_broker(&mut self) -> Result<()> {
        let config = self.home.join("broker.toml").to_string_lossy().into_owned();
        let ns = self.name_server.to_string();
        self.broker_child = Some(self.spawn(
            "broker",
            "rocketmq-broker-rust",
            &["-c", &config, "-n", &ns],
        )?);
        let b = self.broker;
        Self::wait("the broker", Duration::from_secs(120), || reachable(b))?;
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    }

    fn kill_broker(&mut self) {
        if let Some(mut c) = self.broker_child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rocket {
    fn drop(&mut self) {
        self.kill_broker();
        if let Some(mut c) = self.namesrv.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The driver's own application: a bridge to send inputs, a consumer that records outputs.
async fn observer(
    name_server: SocketAddr,
    output: &str,
    seen: Arc<Mutex<Vec<u64>>>,
) -> Result<StreamApp> {
    let group = unique("capture");
    let props = format!(
        "spring.cloud.stream.rocketmq.binder.name-server={name_server}\n\
         spring.cloud.stream.rocketmq.binder.heartbeat-broker-interval=10000\n\
         spring.cloud.function.definition=count\n\
         spring.cloud.stream.bindings.count-in-0.destination={output}\n\
         spring.cloud.stream.bindings.count-in-0.group={group}\n\
         spring.cloud.stream.rocketmq.bindings.count-in-0.consumer.consume-from-where=CONSUME_FROM_FIRST_OFFSET\n"
    );
    let env = Environment::builder()
        .properties_str("chaos-observer.properties", props)
        .build()?;
    Ok(StreamApp::builder()
        .environment(env)
        .binder(binder_rocketmq::RocketMqBinderFactory::new())
        .consumer("count", move |v: serde_json::Value| {
            let seen = Arc::clone(&seen);
            async move {
                if let Some(s) = v.get("seq").and_then(serde_json::Value::as_u64) {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
                Ok::<_, FunctionError>(())
            }
        })
        .build()
        .await?)
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    KillApp,
    RestartBroker,
}

pub(crate) async fn run(bin: &Path, base: &Path, size: Size) -> Result<Vec<Tally>> {
    let mut rocket = Rocket::new(base)?;
    tokio::task::block_in_place(|| rocket.start())?;
    let mut out = Vec::new();
    for fault in [Fault::KillApp, Fault::RestartBroker] {
        let mut t = Tally::new(match fault {
            Fault::KillApp => "rocketmq kill -9 of the app",
            Fault::RestartBroker => "rocketmq broker kill -9 + restart",
        });
        let input = unique("rin");
        let output = format!("{input}-out");
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let obs = observer(rocket.name_server, &output, Arc::clone(&seen)).await?;
        let bridge = obs.bridge();
        let mut app = App::new(
            bin,
            vec![
                format!("--spring.cloud.stream.rocketmq.binder.name-server={}", rocket.name_server),
                "--spring.cloud.stream.rocketmq.binder.heartbeat-broker-interval=10000".to_owned(),
                "--spring.cloud.function.definition=relay".to_owned(),
                format!("--spring.cloud.stream.bindings.relay-in-0.destination={input}"),
                "--spring.cloud.stream.bindings.relay-in-0.group=g".to_owned(),
                format!("--spring.cloud.stream.bindings.relay-out-0.destination={output}"),
                "--spring.cloud.stream.rocketmq.bindings.relay-in-0.consumer.consume-from-where=CONSUME_FROM_FIRST_OFFSET".to_owned(),
            ],
            vec![("CHAOS_BINDER".to_owned(), "rocketmq".to_owned())],
            base.join(format!("{input}.log")),
        );
        app.start()?;
        let n = size.stream / 2;
        let mut confirmed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut back: Option<Instant> = None;
        let mut first_after = None;
        for seq in 0..n {
            if seq == n / 2 {
                match fault {
                    Fault::KillApp => {
                        app.kill9();
                        app.start()?;
                    }
                    Fault::RestartBroker => {
                        rocket.kill_broker();
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        tokio::task::block_in_place(|| rocket.start_broker())?;
                    }
                }
                back = Some(Instant::now());
            }
            loop {
                let item = serde_json::json!({ "seq": seq });
                if bridge.send(&input, item).await.is_ok() {
                    confirmed.push(seq);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("could not send seq {seq} for 240 s");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if first_after.is_none()
                && let Some(at) = back
            {
                let before = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
                let limit = Instant::now() + Duration::from_secs(90);
                while Instant::now() < limit {
                    if seen.lock().unwrap_or_else(|p| p.into_inner()).len() > before {
                        first_after = Some(at.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            let got: std::collections::BTreeSet<u64> = seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            if confirmed.iter().all(|s| got.contains(s)) || Instant::now() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen_now = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        t.count(&confirmed, &seen_now);
        t.note = format!(
            "sync sends; first output {:.1} s after the fault; duplicates: offsets committed every 5 s are consumed again",
            first_after.map_or(f64::NAN, |d| d.as_secs_f64())
        );
        t.check(app.alive(), "the app stayed up (reconnected by itself)");
        let exit = app.stop();
        t.check(
            exit == Some(0),
            format!("graceful exit after the run ({exit:?})"),
        );
        let _ = obs.shutdown().await;
        out.push(t);
    }
    Ok(out)
}
