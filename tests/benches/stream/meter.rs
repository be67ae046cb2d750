//! What one measured run reports: wall time, CPU time (getrusage), allocations (the counting
//! global allocator) and peak RSS, as deltas over the measured section.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use tokio::sync::Notify;

use crate::GLOBAL;

/// Counters at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    cpu_user: Duration,
    cpu_sys: Duration,
    /// Allocator calls that hand out a block: `alloc` + `realloc`.
    allocs: u64,
    bytes: u64,
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u32::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// The process's counters now.
pub(crate) fn snapshot() -> Snapshot {
    let stats = GLOBAL.stats();
    let (cpu_user, cpu_sys) = match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => (timeval(u.user_time()), timeval(u.system_time())),
        Err(_) => (Duration::ZERO, Duration::ZERO),
    };
    Snapshot {
        at: Instant::now(),
        cpu_user,
        cpu_sys,
        allocs: (stats.allocations + stats.reallocations) as u64,
        bytes: stats.bytes_allocated as u64,
    }
}

/// Peak resident set size of this process so far, KiB (`ru_maxrss`).
pub(crate) fn peak_rss_kib() -> u64 {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| u64::try_from(u.max_rss()).unwrap_or(0))
        .unwrap_or(0)
}

/// Current resident set size, KiB (`/proc/self/statm`, second field, in pages of 4 KiB).
pub(crate) fn current_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4)
        .unwrap_or(0)
}

/// The result of one measured run: one JSON line on stdout.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) mode: String,
    pub(crate) messages: u64,
    pub(crate) size: usize,
    /// Messages inside the measured section.
    pub(crate) measured: u64,
    pub(crate) secs: f64,
    pub(crate) cpu_user: f64,
    pub(crate) cpu_sys: f64,
    pub(crate) allocs: u64,
    pub(crate) alloc_bytes: u64,
    pub(crate) peak_rss_kib: u64,
    /// Extra numeric fields (backlog RSS samples).
    pub(crate) extra: Vec<(&'static str, u64)>,
}

impl Report {
    /// The report of run `p`: `measured` messages between `start` and `end`.
    pub(crate) fn of(p: &crate::Params, measured: u64, start: Snapshot, end: Snapshot) -> Self {
        Self::between(
            &p.scenario,
            p.mode.name(),
            p.messages,
            p.size,
            measured,
            start,
            end,
        )
    }

    pub(crate) fn between(
        scenario: &str,
        mode: &str,
        messages: u64,
        size: usize,
        measured: u64,
        start: Snapshot,
        end: Snapshot,
    ) -> Self {
        Report {
            scenario: scenario.to_owned(),
            mode: mode.to_owned(),
            messages,
            size,
            measured,
            secs: end.at.duration_since(start.at).as_secs_f64(),
            cpu_user: end.cpu_user.saturating_sub(start.cpu_user).as_secs_f64(),
            cpu_sys: end.cpu_sys.saturating_sub(start.cpu_sys).as_secs_f64(),
            allocs: end.allocs.saturating_sub(start.allocs),
            alloc_bytes: end.bytes.saturating_sub(start.bytes),
            peak_rss_kib: peak_rss_kib(),
            extra: Vec::new(),
        }
    }

    pub(crate) fn json(&self) -> String {
        let n = self.measured.max(1) as f64;
        let mut s = format!(
            "{{\"scenario\":\"{}\",\"mode\":\"{}\",\"messages\":{},\"size\":{},\"measured\":{},\
             \"secs\":{:.6},\"msgs_per_sec\":{:.1},\"cpu_user_s\":{:.6},\"cpu_sys_s\":{:.6},\
             \"cpu_s_per_100k\":{:.6},\"allocs\":{},\"allocs_per_msg\":{:.3},\
             \"alloc_bytes_per_msg\":{:.1},\"peak_rss_kib\":{}",
            self.scenario,
            self.mode,
            self.messages,
            self.size,
            self.measured,
            self.secs,
            n / self.secs.max(1e-9),
            self.cpu_user,
            self.cpu_sys,
            (self.cpu_user + self.cpu_sys) / n * 100_000.0,
            self.allocs,
            self.allocs as f64 / n,
            self.alloc_bytes as f64 / n,
            self.peak_rss_kib,
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(",\"{k}\":{v}"));
        }
        s.push('}');
        s
    }
}

/// Counts processed messages; snapshots at the first and at the last one.
pub(crate) struct Meter {
    target: u64,
    count: AtomicU64,
    start: Mutex<Option<Snapshot>>,
    end: Mutex<Option<Snapshot>>,
    done: Notify,
}

impl Meter {
    pub(crate) fn new(target: u64) -> Self {
        Meter {
            target,
            count: AtomicU64::new(0),
            start: Mutex::new(None),
            end: Mutex::new(None),
            done: Notify::new(),
        }
    }

    /// One message processed.
    pub(crate) fn tick(&self) {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == 1 {
            *self.start.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot());
        }
        if n == self.target {
            *self.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot());
            self.done.notify_one();
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits for the last message; the snapshots of the first and last message.
    pub(crate) async fn wait(&self, limit: Duration) -> anyhow::Result<(Snapshot, Snapshot)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let (Some(s), Some(e)) = (
                *self.start.lock().unwrap_or_else(|e| e.into_inner()),
                *self.end.lock().unwrap_or_else(|e| e.into_inner()),
            ) {
                return Ok((s, e));
            }
            if tokio::time::timeout_at(deadline, self.done.notified())
                .await
                .is_err()
            {
                anyhow::bail!(
                    "timed out after {limit:?}: {} of {} messages processed",
                    self.count(),
                    self.target
                );
            }
        }
    }
}

/// A generous bound for one run: 60 s plus 1 ms per message, times `STREAM_BENCH_LIMIT_FACTOR`
/// (default 1; `cargo xtask bench --callgrind` sets 50, as valgrind runs the client that much
/// slower).
pub(crate) fn run_limit(messages: u64) -> Duration {
    let factor = std::env::var("STREAM_BENCH_LIMIT_FACTOR")
        .ok()
        .and_then(|f| f.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    (Duration::from_secs(60) + Duration::from_millis(messages)) * factor
}

/// The end-to-end scenarios' application: function `uppercase` (`String -> String`) on
/// `binder`, ticking `meter` once per message.
pub(crate) async fn uppercase_app(
    env: stream_core::stream_config::Environment,
    binder: impl stream_core::binder::BinderFactory,
    meter: &std::sync::Arc<Meter>,
) -> anyhow::Result<stream_core::StreamApp> {
    let m = std::sync::Arc::clone(meter);
    Ok(stream_core::StreamApp::builder()
        .environment(env)
        .binder(binder)
        .function("uppercase", move |s: String| {
            let upper = s.to_uppercase();
            m.tick();
            std::future::ready(Ok::<String, stream_core::FunctionError>(upper))
        })
        .build()
        .await?)
}
