//! `cargo xtask bench [rabbit|memory|rocketmq|backlog|callgrind|all] [--scenario NAME]...
//! [--messages N] [--size BYTES] [--rounds R] [--backlog N] [--metrics] [--callgrind]`: the
//! framework against
//! the raw client on the same broker, and against a peer framework (RustStream) on RabbitMQ.
//!
//! Builds the `stream` bench binary of `stream-tests` once (release), then runs every
//! measurement in a fresh child process (so peak RSS is per run), interleaved raw, binder, peer,
//! raw, binder, peer... for R rounds, and prints the medians with the binder/raw and binder/peer
//! ratios. Every run and the summary go to `target/bench/bench-<unix time>.json` and
//! `target/bench/latest.json`.
//!
//! `--callgrind` (or the target `callgrind`) counts instructions instead: each RabbitMQ scenario
//! (publish, consume, e2e) and mode runs under `valgrind --tool=callgrind` at two message counts,
//! and the table gives (Ir(N) - Ir(N/5)) / (N - N/5) per mode: the instructions of the whole
//! process per message, with start-up and shut-down cancelled out.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::{broker, cargo, describe, rocketmq, root};

const USAGE: &str = "cargo xtask bench [rabbit|memory|rocketmq|backlog|callgrind|all] \
                     [--scenario NAME]... [--messages N] [--size BYTES] [--rounds R] [--backlog N] [--metrics] \
                     [--callgrind]";

/// What `--metrics` adds to the binder's properties: the admin endpoint with the Prometheus
/// exporter as the application's metrics recorder.
const PROMETHEUS_ON: &str =
    "management.server.port=0;management.endpoints.web.exposure.include=prometheus";

/// What the table says about the peer's settings.
const PEER_NOTE: &str = "peer: RustStream (ruststream + ruststream-lapin from crates.io) over ONE \
AMQP connection (consume, replies and confirms on channels of it); raw and binder use two in \
rabbit-e2e. Same exchanges, queues, prefetch 250, persistent messages, 250 confirms in flight.";

/// Messages of a `--callgrind` run unless `--messages` says otherwise; the base run has a fifth.
const CALLGRIND_MESSAGES: u64 = 10_000;

/// The scenarios `--callgrind` counts: the ones every mode runs.
const CALLGRIND_SCENARIOS: [&str; 3] = ["rabbit-publish", "rabbit-consume", "rabbit-e2e"];

/// What to run.
struct Settings {
    target: String,
    messages: u64,
    sizes: Vec<usize>,
    rounds: usize,
    backlog: Option<u64>,
    /// Also run the binder with the Prometheus recorder on.
    metrics: bool,
    /// Count instructions under callgrind instead of measuring time.
    callgrind: bool,
    /// Only these scenarios of the target (`--scenario`, repeatable); all when empty.
    only: Vec<String>,
}

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        target: "all".to_owned(),
        messages: 100_000,
        sizes: vec![256, 4096],
        rounds: 3,
        backlog: None,
        metrics: false,
        callgrind: false,
        only: Vec::new(),
    };
    let (mut messages, mut size) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name} must be a number\n{USAGE}"))
        };
        match a.as_str() {
            "--messages" => messages = Some(value("--messages")?.max(2)),
            "--size" => size = Some(usize::try_from(value("--size")?)?),
            "--rounds" => s.rounds = usize::try_from(value("--rounds")?)?.max(1),
            "--backlog" => s.backlog = Some(value("--backlog")?.max(2)),
            "--metrics" => s.metrics = true,
            "--callgrind" => s.callgrind = true,
            "--scenario" => s.only.push(
                it.next()
                    .with_context(|| format!("--scenario needs a name\n{USAGE}"))?
                    .clone(),
            ),
            "callgrind" => {
                s.callgrind = true;
                "rabbit".clone_into(&mut s.target);
            }
            "rabbit" | "memory" | "rocketmq" | "all" | "backlog" => a.clone_into(&mut s.target),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    // Under callgrind a run is ~50x slower: 10 000 messages of 256 B unless told otherwise.
    if s.callgrind {
        s.messages = CALLGRIND_MESSAGES;
        s.sizes = vec![256];
    }
    if let Some(m) = messages {
        s.messages = m;
    }
    if let Some(z) = size {
        s.sizes = vec![z];
    }
    let known: Vec<&str> = scenarios(&s.target).iter().map(|c| c.name).collect();
    if let Some(unknown) = s.only.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--scenario `{unknown}` is not a scenario of target `{}`; it has: {}\n{USAGE}",
            s.target,
            known.join(", ")
        );
    }
    if s.target == "backlog" && s.backlog.is_none() {
        s.backlog = Some(1_000_000);
    }
    Ok(s)
}

/// Whether the peer framework (RustStream, mode `peer`) runs a scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Runs,
    /// It has no counterpart of what the scenario measures: the text of its cells.
    Cannot(&'static str),
    /// Not a broker the peer speaks to (its cells print `n/a`).
    NotApplicable,
}

/// One scenario of the table.
struct Scenario {
    name: &'static str,
    /// Runs a raw-client counterpart.
    raw: bool,
    /// Whether and how the peer runs it.
    peer: Peer,
    /// Pre-fills the input queue before each run.
    fill: bool,
    /// Why it is not run, if it is not.
    skipped: Option<&'static str>,
}

fn scenarios(target: &str) -> Vec<Scenario> {
    let rabbit = matches!(target, "rabbit" | "all");
    let mut v = Vec::new();
    if rabbit {
        for (name, fill, peer) in [
            ("rabbit-publish", false, Peer::Runs),
            ("rabbit-consume", true, Peer::Runs),
            ("rabbit-e2e", true, Peer::Runs),
            ("rabbit-batch", false, Peer::Cannot("peer cannot batch")),
        ] {
            v.push(Scenario {
                name,
                raw: true,
                peer,
                fill,
                skipped: None,
            });
        }
    }
    if matches!(target, "rocketmq" | "all") {
        for (name, fill) in [
            ("rocketmq-sync", false),
            ("rocketmq-async", false),
            ("rocketmq-consume", true),
            ("rocketmq-e2e", true),
        ] {
            v.push(Scenario {
                name,
                raw: true,
                peer: Peer::NotApplicable,
                fill,
                skipped: None,
            });
        }
    }
    if matches!(target, "memory" | "all") {
        v.push(Scenario {
            name: "memory-e2e",
            raw: false,
            peer: Peer::NotApplicable,
            fill: false,
            skipped: None,
        });
    }
    v
}

/// Builds the bench binary in release; its path.
pub(crate) fn build() -> Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "bench",
        "-p",
        "stream-tests",
        "--bench",
        "stream",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    c.stdout(Stdio::piped());
    eprintln!("$ {}", describe(&c));
    let out = c.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the bench binary failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("\"kind\":[\"bench\"]") && l.contains("\"name\":\"stream\""))
        .find_map(|l| string_field(l, "executable"))
        .map(PathBuf::from)
        .context("cargo did not report the bench executable")
}

/// A string field of a flat JSON object (no escapes in our values).
pub(crate) fn string_field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

/// A numeric field of a flat JSON object.
pub(crate) fn number_field(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat)? + pat.len();
    let end = json[start..]
        .find([',', '}'])
        .map_or(json.len(), |e| start + e);
    json[start..end].trim().parse().ok()
}

/// Runs the bench binary with `args` (under `wrap`, a program and its arguments, if not empty);
/// its stdout.
fn child(
    bin: &PathBuf,
    wrap: &[String],
    args: &[String],
    env: &[(String, String)],
    run_id: &str,
) -> Result<String> {
    let mut c = match wrap.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args).current_dir(root()).stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    // Names the broker resources of one measurement (RocketMQ topics and groups), so its fill
    // and run agree and no two runs share them.
    c.env("STREAM_BENCH_RUN_ID", run_id);
    stdout_of(c)
}

/// Runs a bench binary's command to its end; what it printed on stdout, or an error naming the
/// command if it failed.
pub(crate) fn stdout_of(mut c: Command) -> Result<String> {
    let out = c
        .output()
        .with_context(|| format!("cannot start {}", describe(&c)))?;
    if !out.status.success() {
        bail!("`{}` failed with {}", describe(&c), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The measurement a bench binary printed: its last JSON line.
pub(crate) fn json_line(out: &str) -> Result<String> {
    out.lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(|l| l.trim().to_owned())
        .context("the bench binary printed no JSON line")
}

/// One measured run: the JSON line the bench binary printed. The fill runs as it is; the run
/// under `wrap` (see [`child`]).
fn measure(
    bin: &PathBuf,
    wrap: &[String],
    env: &[(String, String)],
    scenario: &Scenario,
    mode: &str,
    messages: u64,
    size: usize,
) -> Result<String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    if scenario.fill {
        child(
            bin,
            &[],
            &[
                "fill".to_owned(),
                scenario.name.to_owned(),
                messages.to_string(),
                size.to_string(),
            ],
            env,
            &run_id,
        )?;
    }
    let out = child(
        bin,
        wrap,
        &[
            "run".to_owned(),
            scenario.name.to_owned(),
            mode.to_owned(),
            messages.to_string(),
            size.to_string(),
        ],
        env,
        &run_id,
    )?;
    json_line(&out)
}

/// The run environment with the Prometheus recorder turned on (after any properties the caller
/// set in `STREAM_BENCH_PROPERTIES`).
fn prometheus_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env.to_vec();
    let props = match std::env::var("STREAM_BENCH_PROPERTIES") {
        Ok(p) if !p.trim().is_empty() => format!("{p};{PROMETHEUS_ON}"),
        _ => PROMETHEUS_ON.to_owned(),
    };
    out.push(("STREAM_BENCH_PROPERTIES".to_owned(), props));
    out
}

/// A ratio as the tables print it.
fn fmt_ratio(v: f64) -> String {
    format!("{v:.3}")
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The metrics of the table: (JSON key, column title, scale, decimals).
const METRICS: [(&str, &str, f64, usize); 4] = [
    ("msgs_per_sec", "msg/s", 1.0, 0),
    ("cpu_s_per_100k", "CPU s/100k", 1.0, 3),
    ("peak_rss_kib", "peak RSS MiB", 1.0 / 1024.0, 1),
    ("allocs_per_msg", "allocs/msg", 1.0, 1),
];

/// Median of a metric over the runs of one mode.
fn med(runs: &[String], key: &str) -> Option<f64> {
    median(runs.iter().filter_map(|r| number_field(r, key)).collect())
}

/// The 1, 5 and 15 minute load averages, as `uptime` prints them.
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let settings = parse(args)?;
    let mut list = scenarios(&settings.target);
    if !settings.only.is_empty() {
        list.retain(|s| settings.only.iter().any(|n| n == s.name));
    }
    let needs_rabbit =
        settings.backlog.is_some() || list.iter().any(|s| s.name.starts_with("rabbit"));
    let mut env = Vec::new();
    if needs_rabbit {
        let (host, port) = broker::ensure_rabbit()?;
        env.push(("SPRING_RABBITMQ_HOST".to_owned(), host));
        env.push(("SPRING_RABBITMQ_PORT".to_owned(), port.to_string()));
    }
    // Keeps a RocketMQ this run started alive until the end, then stops it.
    let mut _rocketmq = None;
    if list.iter().any(|s| s.name.starts_with("rocketmq")) {
        let guard = rocketmq::ensure_rocketmq()?;
        env.push(("ROCKETMQ_NAMESRV_ADDR".to_owned(), guard.name_server()));
        _rocketmq = Some(guard);
    }
    let bin = build()?;
    let load_before = load();
    eprintln!(
        "bench: {} messages, sizes {:?}, {} rounds, load average {load_before}",
        settings.messages, settings.sizes, settings.rounds
    );

    if settings.callgrind {
        return callgrind(&settings, &list, &bin, &env);
    }

    let mut table = String::new();
    let mut summary = Vec::new();
    let mut all_runs = Vec::new();
    let _ = write!(table, "| scenario | size |");
    for (_, title, _, _) in METRICS {
        let _ = write!(
            table,
            " raw {title} | binder {title} | peer {title} | binder/raw | binder/peer |"
        );
    }
    table.push('\n');
    table.push_str(&"|---".repeat(2 + 5 * METRICS.len()));
    table.push_str("|\n");
    let mut metrics_table = String::from("| scenario | size |");
    for (_, title, _, _) in METRICS {
        let _ = write!(
            metrics_table,
            " binder {title} | +prometheus {title} | ratio |"
        );
    }
    metrics_table.push('\n');
    metrics_table.push_str(&"|---".repeat(2 + 3 * METRICS.len()));
    metrics_table.push_str("|\n");

    for size in &settings.sizes {
        for scenario in &list {
            if let Some(reason) = scenario.skipped {
                let _ = writeln!(table, "| {} | {size} | {reason} |", scenario.name);
                summary.push(format!(
                    "{{\"scenario\":\"{}\",\"size\":{size},\"skipped\":\"{reason}\"}}",
                    scenario.name
                ));
                continue;
            }
            let (mut raw, mut binder, mut peer, mut prom) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut failure = None;
            // A failed peer run costs the peer its cells, not the row.
            let mut peer_failure: Option<String> = None;
            let with_metrics = settings.metrics && !scenario.name.starts_with("memory");
            'rounds: for round in 1..=settings.rounds {
                let mut modes: Vec<&str> = Vec::new();
                if scenario.raw {
                    modes.push("raw");
                }
                modes.push("binder");
                if scenario.peer == Peer::Runs && peer_failure.is_none() {
                    modes.push("peer");
                }
                if with_metrics {
                    modes.push("binder+prometheus");
                }
                for mode in modes {
                    eprintln!(
                        "== {} {mode} size {size} round {round}/{}",
                        scenario.name, settings.rounds
                    );
                    let (run_mode, run_env) = if mode == "binder+prometheus" {
                        ("binder", prometheus_env(&env))
                    } else {
                        (mode, env.clone())
                    };
                    match measure(
                        &bin,
                        &[],
                        &run_env,
                        scenario,
                        run_mode,
                        settings.messages,
                        *size,
                    ) {
                        Ok(line) => {
                            eprintln!("   {line}");
                            all_runs.push(line.clone());
                            match mode {
                                "raw" => raw.push(line),
                                "binder" => binder.push(line),
                                "peer" => peer.push(line),
                                _ => prom.push(line),
                            }
                        }
                        Err(e) if mode == "peer" => {
                            eprintln!("   peer failed: {e:#}");
                            peer_failure =
                                Some(format!("peer failed: {e:#}").replace(['|', '"'], "'"));
                        }
                        Err(e) => {
                            eprintln!("   failed: {e:#}");
                            failure = Some(format!("failed: {e:#}").replace(['|', '"'], "'"));
                            break 'rounds;
                        }
                    }
                }
            }
            if let Some(f) = failure {
                let _ = writeln!(table, "| {} | {size} | {f} |", scenario.name);
                summary.push(format!(
                    "{{\"scenario\":\"{}\",\"size\":{size},\"failed\":\"{f}\"}}",
                    scenario.name
                ));
                continue;
            }
            // What the peer cells say when there is no peer figure.
            let no_peer = match (&peer_failure, scenario.peer) {
                (Some(f), _) => f.clone(),
                (None, Peer::Cannot(why)) => why.to_owned(),
                _ => "n/a".to_owned(),
            };
            let _ = write!(table, "| {} | {size} |", scenario.name);
            let mut json = format!(
                "{{\"scenario\":\"{}\",\"size\":{size},\"rounds\":{}",
                scenario.name, settings.rounds
            );
            if no_peer != "n/a" {
                let _ = write!(json, ",\"peer_missing\":\"{no_peer}\"");
            }
            for (key, _, scale, decimals) in METRICS {
                let r = med(&raw, key);
                let b = med(&binder, key);
                let p = med(&peer, key);
                let cell = |v: Option<f64>| {
                    v.map_or_else(
                        || "n/a".to_owned(),
                        |v| format!("{:.*}", decimals, v * scale),
                    )
                };
                let peer_cell = p.map_or_else(|| no_peer.clone(), |_| cell(p));
                let ratio_of = |b: Option<f64>, over: Option<f64>| match (b, over) {
                    (Some(b), Some(o)) if o > 0.0 => Some(b / o),
                    _ => None,
                };
                let ratio = ratio_of(b, r);
                let ratio_peer = ratio_of(b, p);
                let ratio_cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), fmt_ratio);
                let _ = write!(
                    table,
                    " {} | {} | {peer_cell} | {} | {} |",
                    cell(r),
                    cell(b),
                    ratio_cell(ratio),
                    ratio_cell(ratio_peer)
                );
                let num = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
                let _ = write!(
                    json,
                    ",\"{key}\":{{\"raw\":{},\"binder\":{},\"peer\":{},\"ratio\":{},\"ratio_peer\":{}}}",
                    num(r),
                    num(b),
                    num(p),
                    ratio.map_or_else(|| "null".to_owned(), fmt_ratio),
                    ratio_peer.map_or_else(|| "null".to_owned(), fmt_ratio),
                );
            }
            if with_metrics {
                let _ = write!(metrics_table, "| {} | {size} |", scenario.name);
                for (key, _, scale, decimals) in METRICS {
                    let b = med(&binder, key);
                    let p = med(&prom, key);
                    let cell = |v: Option<f64>| {
                        v.map_or_else(
                            || "n/a".to_owned(),
                            |v| format!("{:.*}", decimals, v * scale),
                        )
                    };
                    let ratio = match (b, p) {
                        (Some(b), Some(p)) if b > 0.0 => format!("{:.3}", p / b),
                        _ => "n/a".to_owned(),
                    };
                    let _ = write!(metrics_table, " {} | {} | {ratio} |", cell(b), cell(p));
                    if let Some(p) = p {
                        let _ = write!(json, ",\"{key}_with_prometheus\":{p}");
                    }
                }
                metrics_table.push('\n');
            }
            json.push('}');
            summary.push(json);
            table.push('\n');
        }
    }

    let mut backlog_line = None;
    if let Some(n) = settings.backlog {
        let scenario = Scenario {
            name: "rabbit-backlog",
            raw: false,
            peer: Peer::NotApplicable,
            fill: true,
            skipped: None,
        };
        eprintln!("== rabbit-backlog binder, {n} messages of 256 B (fill, then consume)");
        match measure(&bin, &[], &env, &scenario, "binder", n, 256) {
            Ok(line) => {
                eprintln!("   {line}");
                let kib = |k: &str| number_field(&line, k).unwrap_or(0.0) / 1024.0;
                backlog_line = Some(format!(
                    "rabbit-backlog (binder, {n} x 256 B, prefetch 250): {:.0} msg/s, RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB",
                    number_field(&line, "msgs_per_sec").unwrap_or(0.0),
                    kib("rss_start_kib"),
                    kib("rss_peak_kib"),
                    kib("rss_end_kib"),
                ));
                all_runs.push(line);
            }
            Err(e) => backlog_line = Some(format!("rabbit-backlog failed: {e:#}")),
        }
    }

    let load_after = load();
    println!();
    print!("{table}");
    if list.iter().any(|s| s.peer == Peer::Runs) {
        println!("\n{PEER_NOTE}");
    }
    if settings.metrics {
        println!(
            "\nMetrics cost: the binder without a recorder, and with the admin endpoint's Prometheus recorder ({PROMETHEUS_ON}):\n"
        );
        print!("{metrics_table}");
    }
    if let Some(l) = &backlog_line {
        println!("\n{l}");
    }
    println!(
        "\n{} messages per run, median of {} rounds (interleaved raw/binder/peer, one process per run); load average before {load_before}, after {load_after}",
        settings.messages, settings.rounds
    );

    let dir = root().join("target").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let json = format!(
        "{{\"unix_time\":{stamp},\"messages\":{},\"sizes\":{:?},\"rounds\":{},\"load_before\":\"{load_before}\",\"load_after\":\"{load_after}\",\n\"summary\":[\n{}\n],\n\"runs\":[\n{}\n]}}\n",
        settings.messages,
        settings.sizes,
        settings.rounds,
        summary.join(",\n"),
        all_runs.join(",\n"),
    );
    let file = dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&file, &json).with_context(|| format!("cannot write {}", file.display()))?;
    std::fs::write(dir.join("latest.json"), &json)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    println!("results: {}", file.display());
    Ok(())
}

/// The total instruction count (`Ir`) of a callgrind output file: its `summary:` line (or
/// `totals:` if there is none).
fn callgrind_total(file: &std::path::Path) -> Result<u64> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read callgrind output {}", file.display()))?;
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    line("summary:")
        .or_else(|| line("totals:"))
        .with_context(|| format!("no summary line in {}", file.display()))
}

/// `--callgrind`: instructions per message of raw, binder and peer. Each (scenario, size, mode)
/// runs twice under callgrind, with `N/5` and `N` messages (the fill runs natively, outside
/// valgrind); the table gives `(Ir(N) - Ir(N/5)) / (N - N/5)`, the instructions of the whole
/// process per additional message (every thread, user space only; set-up and shut-down cancel).
fn callgrind(
    settings: &Settings,
    list: &[Scenario],
    bin: &PathBuf,
    env: &[(String, String)],
) -> Result<()> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    let version = match valgrind {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => bail!("--callgrind needs valgrind on PATH (apt-get install valgrind)"),
    };
    let dir = root().join("target").join("bench").join("callgrind");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (n2, n1) = (settings.messages, (settings.messages / 5).max(1));
    if n2 <= n1 {
        bail!("--callgrind needs --messages of at least 2");
    }
    // Valgrind runs the client ~50x slower: the runs' time limit stretches to match.
    let mut env = env.to_vec();
    env.push(("STREAM_BENCH_LIMIT_FACTOR".to_owned(), "50".to_owned()));
    let load_before = load();
    eprintln!(
        "bench --callgrind ({version}): {n1} and {n2} messages, sizes {:?}, load average {load_before}",
        settings.sizes
    );
    let mut table = String::from(
        "| scenario | size | raw Ir/msg | binder Ir/msg | peer Ir/msg | binder/raw | binder/peer |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut summary = Vec::new();
    for size in &settings.sizes {
        for scenario in list
            .iter()
            .filter(|s| CALLGRIND_SCENARIOS.contains(&s.name))
        {
            let mut per_msg: Vec<Option<f64>> = Vec::new();
            let mut cells = Vec::new();
            for mode in ["raw", "binder", "peer"] {
                let mut totals = Vec::new();
                let mut failed = None;
                for n in [n1, n2] {
                    let out = dir.join(format!("{}-{mode}-{size}-{n}.out", scenario.name));
                    let _ = std::fs::remove_file(&out);
                    let wrap = [
                        "valgrind".to_owned(),
                        "--tool=callgrind".to_owned(),
                        format!("--callgrind-out-file={}", out.display()),
                    ];
                    eprintln!(
                        "== callgrind {} {mode} size {size}, {n} messages",
                        scenario.name
                    );
                    match measure(bin, &wrap, &env, scenario, mode, n, *size)
                        .and_then(|line| Ok((line, callgrind_total(&out)?)))
                    {
                        Ok((line, ir)) => {
                            eprintln!("   Ir {ir}; {line}");
                            totals.push((n, ir));
                        }
                        Err(e) => {
                            eprintln!("   failed: {e:#}");
                            failed = Some(format!("failed: {e:#}").replace(['|', '"'], "'"));
                            break;
                        }
                    }
                }
                let v = match (failed, totals.as_slice()) {
                    (None, [(a, ir_a), (b, ir_b)]) => {
                        // Exact below 2^53 instructions, far beyond any run here.
                        let v = (*ir_b as f64 - *ir_a as f64) / (b - a) as f64;
                        cells.push(format!("{v:.0}"));
                        summary.push(format!(
                            "{{\"scenario\":\"{}\",\"size\":{size},\"mode\":\"{mode}\",\"n1\":{a},\"ir1\":{ir_a},\"n2\":{b},\"ir2\":{ir_b},\"ir_per_msg\":{v:.1}}}",
                            scenario.name
                        ));
                        Some(v)
                    }
                    (f, _) => {
                        cells.push(f.unwrap_or_else(|| "n/a".to_owned()));
                        None
                    }
                };
                per_msg.push(v);
            }
            let ratio = |b: Option<f64>, o: Option<f64>| match (b, o) {
                (Some(b), Some(o)) if o > 0.0 => fmt_ratio(b / o),
                _ => "n/a".to_owned(),
            };
            let _ = writeln!(
                table,
                "| {} | {size} | {} | {} | {} | {} | {} |",
                scenario.name,
                cells[0],
                cells[1],
                cells[2],
                ratio(per_msg[1], per_msg[0]),
                ratio(per_msg[1], per_msg[2]),
            );
        }
    }
    let load_after = load();
    println!();
    print!("{table}");
    println!(
        "\nIr/msg = (Ir({n2}) - Ir({n1})) / {} of the whole process (all threads, user space), one \
         run each under {version}; {PEER_NOTE}\nload average before {load_before}, after {load_after}",
        n2 - n1
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let file = root()
        .join("target")
        .join("bench")
        .join(format!("callgrind-{stamp}.json"));
    let json = format!(
        "{{\"unix_time\":{stamp},\"valgrind\":\"{version}\",\"n1\":{n1},\"n2\":{n2},\"sizes\":{:?},\"load_before\":\"{load_before}\",\"load_after\":\"{load_after}\",\n\"runs\":[\n{}\n]}}\n",
        settings.sizes,
        summary.join(",\n"),
    );
    std::fs::write(&file, json).with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "results: {}, callgrind files in {}",
        file.display(),
        dir.display()
    );
    Ok(())
}
