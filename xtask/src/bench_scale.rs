//! `cargo xtask bench scale [--messages N] [--size BYTES] [--rounds R] [--plot PATH]`: how the
//! cost of consuming from RabbitMQ grows with the work, the binder next to raw lapin.
//!
//! Three curves, each point measured in a fresh process of the `stream` bench binary
//! (`stream scale ...`, tests/benches/stream/scale.rs), raw and binder interleaved per round:
//! - consumer `concurrency` 1, 2, 4, 8 on one pre-filled queue (N messages);
//! - 1, 10, 100 consumer bindings in one application, each its own destination, the N messages
//!   spread evenly over them;
//! - bind time of 1, 10, 100 bindings (application start until every binding consumes).
//!
//! Prints Markdown tables, writes every run and the medians to
//! `target/bench/scale-<unix time>.json`, and plots the curves to `docs/bench-scale.png`
//! (`--plot PATH` elsewhere). The queues and exchanges (`bench-scale-*`) are deleted at the end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use crate::bench::{build, json_line, load, median, number_field, stdout_of, string_field};
use crate::{broker, root};

const USAGE: &str = "cargo xtask bench scale [--messages N] [--size BYTES] [--rounds R] \
                     [--plot PATH] [--replot RESULTS.json]";

const CONCURRENCY: [usize; 4] = [1, 2, 4, 8];
const BINDINGS: [usize; 3] = [1, 10, 100];
const BIND: [usize; 3] = [1, 10, 100];
/// Destinations the runs may create (`bench-scale-0..MAX_DESTINATIONS`), for the cleanup.
const MAX_DESTINATIONS: usize = 100;

struct Settings {
    messages: u64,
    size: usize,
    rounds: usize,
    plot: PathBuf,
    /// Re-draw the tables and the plot from this results file instead of measuring.
    replot: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        messages: 50_000,
        size: 256,
        rounds: 1,
        plot: root().join("docs").join("bench-scale.png"),
        replot: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| -> Result<u64> {
            v.replace('_', "")
                .parse()
                .with_context(|| format!("{name} must be a number\n{USAGE}"))
        };
        match a.as_str() {
            // At least 2 messages per binding of the largest point.
            "--messages" => {
                s.messages = number("--messages", value("--messages")?)?.max(2 * 100);
            }
            "--size" => s.size = usize::try_from(number("--size", value("--size")?)?)?,
            "--rounds" => {
                s.rounds = usize::try_from(number("--rounds", value("--rounds")?)?)?.max(1);
            }
            "--plot" => s.plot = PathBuf::from(value("--plot")?),
            "--replot" => s.replot = Some(PathBuf::from(value("--replot")?)),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(s)
}

/// Runs `stream scale <args>`; its stdout.
fn child(bin: &Path, args: &[String], env: &[(String, String)]) -> Result<String> {
    let mut c = Command::new(bin);
    c.arg("scale")
        .args(args)
        .current_dir(root())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    stdout_of(c)
}

/// Deletes the bench's queues and exchanges when dropped (also after a failure).
struct Cleanup<'a> {
    bin: &'a Path,
    env: &'a [(String, String)],
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        eprintln!("== cleanup: deleting bench-scale-0..{MAX_DESTINATIONS} queues and exchanges");
        if let Err(e) = child(
            self.bin,
            &["cleanup".to_owned(), MAX_DESTINATIONS.to_string()],
            self.env,
        ) {
            eprintln!("   cleanup failed: {e:#}");
        }
    }
}

/// One point of a curve.
#[derive(Clone, Copy)]
struct Point {
    /// `concurrency`, `bindings` or `bind`.
    kind: &'static str,
    n: usize,
}

/// Fills what the point consumes, then runs it; the JSON line.
fn measure(
    bin: &Path,
    env: &[(String, String)],
    p: Point,
    mode: &str,
    s: &Settings,
) -> Result<String> {
    let (destinations, messages) = match p.kind {
        "concurrency" => (1, s.messages),
        "bindings" => (p.n, s.messages),
        // Declared and empty: bind time only.
        _ => (p.n, 0),
    };
    child(
        bin,
        &[
            "fill".to_owned(),
            destinations.to_string(),
            messages.to_string(),
            s.size.to_string(),
        ],
        env,
    )?;
    let out = child(
        bin,
        &[
            "run".to_owned(),
            p.kind.to_owned(),
            mode.to_owned(),
            p.n.to_string(),
            messages.to_string(),
            s.size.to_string(),
        ],
        env,
    )?;
    json_line(&out)
}

/// The medians of one point: (raw, binder) per metric key.
struct Measured {
    point: Point,
    raw: Vec<String>,
    binder: Vec<String>,
    failed: Option<String>,
}

impl Measured {
    fn med(&self, raw: bool, key: &str) -> Option<f64> {
        let runs = if raw { &self.raw } else { &self.binder };
        median(runs.iter().filter_map(|r| number_field(r, key)).collect())
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio(r: Option<f64>, b: Option<f64>) -> String {
    match (r, b) {
        (Some(r), Some(b)) if r > 0.0 => format!("{:.3}", b / r),
        _ => "n/a".to_owned(),
    }
}

/// The throughput table of one curve (`concurrency` or `bindings`).
fn throughput_table(title: &str, rows: &[&Measured]) -> String {
    let mut t = format!(
        "| {title} | raw msg/s | binder msg/s | ratio | raw CPU s/100k | binder CPU s/100k | ratio | \
         binder CPU vs first row | raw allocs/msg | binder allocs/msg | binder peak RSS MiB |\n"
    );
    t.push_str(&"|---".repeat(11));
    t.push_str("|\n");
    let first_cpu = rows.first().and_then(|m| m.med(false, "cpu_s_per_100k"));
    for m in rows {
        if let Some(f) = &m.failed {
            let _ = writeln!(t, "| {} | {f} |", m.point.n);
            continue;
        }
        let (rt, bt) = (m.med(true, "msgs_per_sec"), m.med(false, "msgs_per_sec"));
        let (rc, bc) = (
            m.med(true, "cpu_s_per_100k"),
            m.med(false, "cpu_s_per_100k"),
        );
        let growth = match (first_cpu, bc) {
            (Some(f), Some(b)) if f > 0.0 => format!("{:.2}×", b / f),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {growth} | {} | {} | {} |",
            m.point.n,
            cell(rt, 0),
            cell(bt, 0),
            ratio(rt, bt),
            cell(rc, 3),
            cell(bc, 3),
            ratio(rc, bc),
            cell(m.med(true, "allocs_per_msg"), 1),
            cell(m.med(false, "allocs_per_msg"), 1),
            cell(m.med(false, "peak_rss_kib").map(|k| k / 1024.0), 1),
        );
    }
    t
}

fn bind_table(rows: &[&Measured]) -> String {
    let mut t = String::from(
        "| bindings | raw bind ms | binder bind ms | ratio | binder `build()` ms | raw CPU ms | binder CPU ms | binder bind ms per binding |\n",
    );
    t.push_str(&"|---".repeat(8));
    t.push_str("|\n");
    for m in rows {
        if let Some(f) = &m.failed {
            let _ = writeln!(t, "| {} | {f} |", m.point.n);
            continue;
        }
        let ms = |v: Option<f64>| v.map(|v| v * 1000.0);
        let (r, b) = (ms(m.med(true, "bind_secs")), ms(m.med(false, "bind_secs")));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.point.n,
            cell(r, 1),
            cell(b, 1),
            ratio(r, b),
            cell(ms(m.med(false, "build_secs")), 1),
            cell(ms(m.med(true, "cpu_s")), 1),
            cell(ms(m.med(false, "cpu_s")), 1),
            cell(b.map(|b| b / m.point.n as f64), 2),
        );
    }
    t
}

/// Every point of the three curves, in the order they run.
fn points() -> Vec<Point> {
    CONCURRENCY
        .iter()
        .map(|&n| Point {
            kind: "concurrency",
            n,
        })
        .chain(BINDINGS.iter().map(|&n| Point {
            kind: "bindings",
            n,
        }))
        .chain(BIND.iter().map(|&n| Point { kind: "bind", n }))
        .collect()
}

/// The scenario name a point's runs report.
fn scenario(kind: &str) -> &'static str {
    match kind {
        "concurrency" => "scale-concurrency",
        "bindings" => "scale-bindings",
        _ => "scale-bind",
    }
}

/// The points rebuilt from the run lines of a results file.
fn from_runs(runs: &[String]) -> Vec<Measured> {
    points()
        .into_iter()
        .map(|p| {
            let key = if p.kind == "concurrency" {
                "concurrency"
            } else {
                "bindings"
            };
            let of = |mode: &str| -> Vec<String> {
                runs.iter()
                    .filter(|r| {
                        string_field(r, "scenario").as_deref() == Some(scenario(p.kind))
                            && string_field(r, "mode").as_deref() == Some(mode)
                            && number_field(r, key) == Some(p.n as f64)
                    })
                    .cloned()
                    .collect()
            };
            let (raw, binder) = (of("raw"), of("binder"));
            let failed = (raw.is_empty() || binder.is_empty()).then(|| "not measured".to_owned());
            Measured {
                point: p,
                raw,
                binder,
                failed,
            }
        })
        .collect()
}

/// Measures every point; the points and every run's JSON line.
fn measure_all(
    bin: &Path,
    env: &[(String, String)],
    settings: &Settings,
) -> (Vec<Measured>, Vec<String>) {
    let mut measured = Vec::new();
    let mut all_runs = Vec::new();
    let _cleanup = Cleanup { bin, env };
    for p in points() {
        let mut m = Measured {
            point: p,
            raw: Vec::new(),
            binder: Vec::new(),
            failed: None,
        };
        'rounds: for round in 1..=settings.rounds {
            for mode in ["raw", "binder"] {
                eprintln!(
                    "== scale {} {} {mode} round {round}/{}",
                    p.kind, p.n, settings.rounds
                );
                match measure(bin, env, p, mode, settings) {
                    Ok(line) => {
                        eprintln!("   {line}");
                        all_runs.push(line.clone());
                        if mode == "raw" {
                            m.raw.push(line);
                        } else {
                            m.binder.push(line);
                        }
                    }
                    Err(e) => {
                        eprintln!("   failed: {e:#}");
                        m.failed = Some(format!("failed: {e:#}").replace(['|', '"'], "'"));
                        break 'rounds;
                    }
                }
            }
        }
        measured.push(m);
    }
    (measured, all_runs)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut settings = parse(args)?;
    let started = std::time::Instant::now();
    let (measured, load_before, load_after) = if let Some(file) = &settings.replot {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let head = text.lines().next().unwrap_or_default();
        let field = |k: &str| number_field(head, k).unwrap_or(0.0) as u64;
        settings.messages = field("messages");
        settings.size = usize::try_from(field("size"))?;
        settings.rounds = usize::try_from(field("rounds"))?;
        let runs: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("{\"scenario\""))
            .map(|l| l.trim_end_matches(',').to_owned())
            .collect();
        (
            from_runs(&runs),
            string_field(head, "load_before").unwrap_or_default(),
            string_field(head, "load_after").unwrap_or_default(),
        )
    } else {
        let (host, port) = broker::ensure_rabbit()?;
        let env = vec![
            ("SPRING_RABBITMQ_HOST".to_owned(), host),
            ("SPRING_RABBITMQ_PORT".to_owned(), port.to_string()),
        ];
        // STREAM_BENCH_BIN: a bench binary built already (`cargo bench -p stream-tests --bench
        // stream --no-run` prints its path), when cargo would rebuild it for a changed environment.
        let bin = match std::env::var_os("STREAM_BENCH_BIN") {
            Some(b) => PathBuf::from(b),
            None => build()?,
        };
        let load_before = load();
        eprintln!(
            "bench scale: {} messages of {} B per point, {} round(s), load average {load_before}",
            settings.messages, settings.size, settings.rounds
        );
        let (measured, all_runs) = measure_all(&bin, &env, &settings);
        let load_after = load();
        let dir = root().join("target").join("bench");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let json = format!(
            "{{\"unix_time\":{stamp},\"messages\":{},\"size\":{},\"rounds\":{},\"load_before\":\"{load_before}\",\"load_after\":\"{load_after}\",\n\"runs\":[\n{}\n]}}\n",
            settings.messages,
            settings.size,
            settings.rounds,
            all_runs.join(",\n"),
        );
        let file = dir.join(format!("scale-{stamp}.json"));
        std::fs::write(&file, &json).with_context(|| format!("cannot write {}", file.display()))?;
        println!("results: {}", file.display());
        (measured, load_before, load_after)
    };

    let of = |kind: &str| -> Vec<&Measured> {
        measured.iter().filter(|m| m.point.kind == kind).collect()
    };
    println!();
    println!(
        "Consumer concurrency (one queue, {} messages of {} B):\n",
        settings.messages, settings.size
    );
    print!("{}", throughput_table("concurrency", &of("concurrency")));
    println!(
        "\nConsumer bindings in one application (each its own queue, {} messages in all):\n",
        settings.messages
    );
    print!("{}", throughput_table("bindings", &of("bindings")));
    println!("\nBind time (application start until every binding consumes, empty queues):\n");
    print!("{}", bind_table(&of("bind")));
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "\n{} messages of {} B per point, median of {} round(s), raw and binder interleaved, one \
         process per run; load average before {load_before}, after {load_after}; {minutes:.1} min",
        settings.messages, settings.size, settings.rounds
    );

    let caption = format!(
        "RabbitMQ scaling: the binder against raw lapin\n{} messages x {} B per point, median of {} round(s), one process per run; load average {load_before} -> {load_after}",
        settings.messages, settings.size, settings.rounds
    );
    match plot(&settings.plot, &caption, &measured) {
        Ok(()) => println!("plot: {}", settings.plot.display()),
        Err(e) => eprintln!("no plot: {e:#}"),
    }
    if measured.iter().any(|m| m.failed.is_some()) {
        bail!("some points failed (see the tables)");
    }
    Ok(())
}

/// Where a TrueType sans-serif font may be (Debian's fonts-dejavu-core first);
/// `STREAM_BENCH_FONT` names another.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system TTF as plotters' `sans-serif` (ab_glyph renders it, no font-config).
fn register_font() -> Result<()> {
    let candidates: Vec<String> = std::env::var("STREAM_BENCH_FONT")
        .into_iter()
        .chain(FONTS.iter().map(|s| (*s).to_owned()))
        .collect();
    let path = candidates
        .iter()
        .find(|p| Path::new(p).is_file())
        .with_context(|| {
            format!(
                "no TrueType font found (tried {}; install fonts-dejavu-core or set STREAM_BENCH_FONT)",
                candidates.join(", ")
            )
        })?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

/// One panel: x categories, and (label, y per category) series.
struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    xs: Vec<usize>,
    series: Vec<(&'static str, Vec<Option<f64>>)>,
}

fn panels(measured: &[Measured]) -> Vec<Panel> {
    let curve =
        |kind: &str, key: &str, scale: f64| -> (Vec<usize>, Vec<Option<f64>>, Vec<Option<f64>>) {
            let rows: Vec<&Measured> = measured.iter().filter(|m| m.point.kind == kind).collect();
            (
                rows.iter().map(|m| m.point.n).collect(),
                rows.iter()
                    .map(|m| m.med(true, key).map(|v| v * scale))
                    .collect(),
                rows.iter()
                    .map(|m| m.med(false, key).map(|v| v * scale))
                    .collect(),
            )
        };
    let mut out = Vec::new();
    for (kind, x_desc, what) in [
        (
            "concurrency",
            "consumer concurrency (one queue)",
            "concurrency",
        ),
        (
            "bindings",
            "consumer bindings in one app (one queue each)",
            "bindings",
        ),
    ] {
        for (key, y_desc, title) in [
            ("msgs_per_sec", "msg/s", "throughput"),
            ("cpu_s_per_100k", "CPU s per 100k msgs", "CPU per message"),
        ] {
            let (xs, raw, binder) = curve(kind, key, 1.0);
            out.push(Panel {
                title: format!("{title} vs {what}"),
                x_desc,
                y_desc,
                xs,
                series: vec![("raw lapin", raw), ("binder", binder)],
            });
        }
    }
    let (xs, raw, binder) = curve("bind", "bind_secs", 1000.0);
    out.push(Panel {
        title: "bind time (start until all consume)".to_owned(),
        x_desc: "consumer bindings (empty queues)",
        y_desc: "ms",
        xs,
        series: vec![("raw lapin", raw), ("binder", binder)],
    });
    let (xs, raw, binder) = curve("bind", "cpu_s", 1000.0);
    out.push(Panel {
        title: "CPU while binding".to_owned(),
        x_desc: "consumer bindings (empty queues)",
        y_desc: "CPU ms",
        xs,
        series: vec![("raw lapin", raw), ("binder", binder)],
    });
    out
}

/// Draws the six panels (3 rows x 2) into a PNG.
fn plot(path: &Path, caption: &str, measured: &[Measured]) -> Result<()> {
    use plotters::prelude::*;

    register_font()?;
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting: {e}");
    let root_area = BitMapBackend::new(path, (1400, 1500)).into_drawing_area();
    root_area.fill(&WHITE).map_err(|x| e(&x))?;
    let (head, body) = root_area.split_vertically(70);
    for (i, line) in caption.lines().enumerate() {
        let size = if i == 0 { 24 } else { 17 };
        head.draw(&Text::new(
            line.to_owned(),
            (20, 10 + 30 * i32::try_from(i).unwrap_or(0)),
            ("sans-serif", size).into_font(),
        ))
        .map_err(|x| e(&x))?;
    }
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
    for (area, panel) in body.split_evenly((3, 2)).iter().zip(panels(measured)) {
        let len = panel.xs.len().max(1);
        let ymax = panel
            .series
            .iter()
            .flat_map(|(_, ys)| ys.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        let ymax = if ymax > 0.0 { ymax * 1.2 } else { 1.0 };
        let xs = panel.xs.clone();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(-0.3f64..(len as f64 - 0.7), 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(len)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    xs.get(i as usize)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if ymax >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .x_desc(panel.x_desc)
            .y_desc(panel.y_desc)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(|x| e(&x))?;
        for ((label, ys), color) in panel.series.iter().zip(colors) {
            let pts: Vec<(f64, f64)> = ys
                .iter()
                .enumerate()
                .filter_map(|(i, y)| y.map(|y| (i as f64, y)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
                .map_err(|x| e(&x))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root_area.present().map_err(|x| e(&x))?;
    Ok(())
}
