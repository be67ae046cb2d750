//! `cargo xtask bench [rabbit|memory|rocketmq|backlog|all] [--messages N] [--size BYTES]
//! [--rounds R] [--backlog N]`: the framework against the raw client on the same broker.
//!
//! Builds the `stream` bench binary of `stream-tests` once (release), then runs every
//! measurement in a fresh child process (so peak RSS is per run), interleaved raw, binder,
//! raw, binder... for R rounds, and prints the medians with the binder/raw ratio. Every run
//! and the summary go to `target/bench/bench-<unix time>.json` and `target/bench/latest.json`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::{broker, cargo, describe, rocketmq, root};

const USAGE: &str = "cargo xtask bench [rabbit|memory|rocketmq|backlog|all] [--messages N] \
                     [--size BYTES] [--rounds R] [--backlog N] [--metrics]";

/// What `--metrics` adds to the binder's properties: the admin endpoint with the Prometheus
/// exporter as the application's metrics recorder.
const PROMETHEUS_ON: &str =
    "management.server.port=0;management.endpoints.web.exposure.include=prometheus";

/// What to run.
struct Settings {
    target: String,
    messages: u64,
    sizes: Vec<usize>,
    rounds: usize,
    backlog: Option<u64>,
    /// Also run the binder with the Prometheus recorder on.
    metrics: bool,
}

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        target: "all".to_owned(),
        messages: 100_000,
        sizes: vec![256, 4096],
        rounds: 3,
        backlog: None,
        metrics: false,
    };
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
            "--messages" => s.messages = value("--messages")?.max(2),
            "--size" => s.sizes = vec![usize::try_from(value("--size")?)?],
            "--rounds" => s.rounds = usize::try_from(value("--rounds")?)?.max(1),
            "--backlog" => s.backlog = Some(value("--backlog")?.max(2)),
            "--metrics" => s.metrics = true,
            "rabbit" | "memory" | "rocketmq" | "all" | "backlog" => a.clone_into(&mut s.target),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if s.target == "backlog" && s.backlog.is_none() {
        s.backlog = Some(1_000_000);
    }
    Ok(s)
}

/// One scenario of the table.
struct Scenario {
    name: &'static str,
    /// Runs a raw-client counterpart.
    raw: bool,
    /// Pre-fills the input queue before each run.
    fill: bool,
    /// Why it is not run, if it is not.
    skipped: Option<&'static str>,
}

fn scenarios(target: &str) -> Vec<Scenario> {
    let rabbit = matches!(target, "rabbit" | "all");
    let mut v = Vec::new();
    if rabbit {
        for (name, fill) in [
            ("rabbit-publish", false),
            ("rabbit-consume", true),
            ("rabbit-e2e", true),
            ("rabbit-batch", false),
        ] {
            v.push(Scenario {
                name,
                raw: true,
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
                fill,
                skipped: None,
            });
        }
    }
    if matches!(target, "memory" | "all") {
        v.push(Scenario {
            name: "memory-e2e",
            raw: false,
            fill: false,
            skipped: None,
        });
    }
    v
}

/// Builds the bench binary in release; its path.
fn build() -> Result<PathBuf> {
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
fn string_field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

/// A numeric field of a flat JSON object.
fn number_field(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat)? + pat.len();
    let end = json[start..]
        .find([',', '}'])
        .map_or(json.len(), |e| start + e);
    json[start..end].trim().parse().ok()
}

fn child(bin: &PathBuf, args: &[String], env: &[(String, String)], run_id: &str) -> Result<String> {
    let mut c = Command::new(bin);
    c.args(args).current_dir(root()).stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    // Names the broker resources of one measurement (RocketMQ topics and groups), so its fill
    // and run agree and no two runs share them.
    c.env("STREAM_BENCH_RUN_ID", run_id);
    let out = c
        .output()
        .with_context(|| format!("cannot start {}", describe(&c)))?;
    if !out.status.success() {
        bail!("`{}` failed with {}", describe(&c), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One measured run: the JSON line the bench binary printed.
fn measure(
    bin: &PathBuf,
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
    out.lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(|l| l.trim().to_owned())
        .context("the bench binary printed no JSON line")
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

fn median(mut v: Vec<f64>) -> Option<f64> {
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

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let settings = parse(args)?;
    let list = scenarios(&settings.target);
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

    let mut table = String::new();
    let mut summary = Vec::new();
    let mut all_runs = Vec::new();
    let _ = write!(table, "| scenario | size |");
    for (_, title, _, _) in METRICS {
        let _ = write!(table, " raw {title} | binder {title} | ratio |");
    }
    table.push('\n');
    table.push_str(&"|---".repeat(2 + 3 * METRICS.len()));
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
            let (mut raw, mut binder, mut prom) = (Vec::new(), Vec::new(), Vec::new());
            let mut failure = None;
            let with_metrics = settings.metrics && !scenario.name.starts_with("memory");
            'rounds: for round in 1..=settings.rounds {
                let mut modes: Vec<&str> = Vec::new();
                if scenario.raw {
                    modes.push("raw");
                }
                modes.push("binder");
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
                    match measure(&bin, &run_env, scenario, run_mode, settings.messages, *size) {
                        Ok(line) => {
                            eprintln!("   {line}");
                            all_runs.push(line.clone());
                            match mode {
                                "raw" => raw.push(line),
                                "binder" => binder.push(line),
                                _ => prom.push(line),
                            }
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
            let _ = write!(table, "| {} | {size} |", scenario.name);
            let mut json = format!(
                "{{\"scenario\":\"{}\",\"size\":{size},\"rounds\":{}",
                scenario.name, settings.rounds
            );
            for (key, _, scale, decimals) in METRICS {
                let r = med(&raw, key);
                let b = med(&binder, key);
                let cell = |v: Option<f64>| {
                    v.map_or_else(
                        || "n/a".to_owned(),
                        |v| format!("{:.*}", decimals, v * scale),
                    )
                };
                let ratio = match (r, b) {
                    (Some(r), Some(b)) if r > 0.0 => format!("{:.3}", b / r),
                    _ => "n/a".to_owned(),
                };
                let _ = write!(table, " {} | {} | {ratio} |", cell(r), cell(b));
                let num = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
                let _ = write!(
                    json,
                    ",\"{key}\":{{\"raw\":{},\"binder\":{},\"ratio\":{}}}",
                    num(r),
                    num(b),
                    if ratio == "n/a" {
                        "null".to_owned()
                    } else {
                        ratio.clone()
                    }
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
            fill: true,
            skipped: None,
        };
        eprintln!("== rabbit-backlog binder, {n} messages of 256 B (fill, then consume)");
        match measure(&bin, &env, &scenario, "binder", n, 256) {
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
        "\n{} messages per run, median of {} rounds (interleaved raw/binder, one process per run); load average before {load_before}, after {load_after}",
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
