//! Wall and CPU time of a phase, latency percentiles, and the report.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a phase measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Messages (or events) in the timed section.
    pub n: u64,
    /// Wall time of the timed section.
    pub secs: f64,
    /// CPU time of the whole process (all threads) in the timed section.
    pub cpu_us: f64,
    /// Latency percentiles (latency phases only).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.n as f64 / self.secs
    }

    pub fn cpu_per_msg(&self) -> f64 {
        self.cpu_us / self.n as f64
    }

    pub fn describe(&self) -> String {
        match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => format!(
                "{} events, p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.1} ms, {:.1} µs CPU/event",
                self.n,
                self.max_ms.unwrap_or_default(),
                self.cpu_per_msg()
            ),
            _ => format!(
                "{} msgs in {:.2} s = {:.0}/s, {:.1} µs CPU/msg",
                self.n,
                self.secs,
                self.rate(),
                self.cpu_per_msg()
            ),
        }
    }
}

/// CPU time used by this process so far (user + system, all threads).
fn cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Wall and CPU time from `start` to `stop`.
pub struct Meter {
    wall: Instant,
    cpu: Duration,
}

impl Meter {
    pub fn start() -> Self {
        Meter {
            wall: Instant::now(),
            cpu: cpu(),
        }
    }

    pub fn stop(self, n: u64) -> Sample {
        Sample {
            n,
            secs: self.wall.elapsed().as_secs_f64(),
            cpu_us: (cpu() - self.cpu).as_secs_f64() * 1e6,
            ..Sample::default()
        }
    }
}

/// Percentile `p` (0..=100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v >= 1000.0 && digits == 0 => {
            // Thousands separators: 12345 → 12,345.
            let s = format!("{v:.0}");
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Some(v) => format!("{v:.digits$}"),
        None => "failed".to_string(),
    }
}

pub type Runs = Vec<Option<Sample>>;

/// Medians per broker, as markdown.
#[derive(Default)]
pub struct Report {
    throughput: String,
    other: String,
    header: String,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        broker: &str,
        load_before: &str,
        load_after: &str,
        runs: usize,
        cfg: &crate::Cfg,
        pairs: Vec<(&str, Runs, Runs)>,
        singles: Vec<(&str, Runs)>,
    ) {
        let _ = writeln!(
            self.header,
            "- {broker}: {runs} runs, load (1/5/15 min) {load_before} before, {load_after} after; \
             {} messages per throughput phase, batches of {}; latency {} s at {}/s",
            cfg.count, cfg.batch, cfg.latency_secs, cfg.rate
        );
        for (kind, generated, raw) in &pairs {
            let ok = |v: &Runs| v.iter().filter(|s| s.is_some()).count();
            let rate = |v: &Runs| median(v.iter().flatten().map(Sample::rate).collect());
            let cpu = |v: &Runs| median(v.iter().flatten().map(Sample::cpu_per_msg).collect());
            // Paired ratios: run i of generated against run i of raw.
            let ratios = generated
                .iter()
                .zip(raw)
                .filter_map(|(g, r)| Some(g.as_ref()?.rate() / r.as_ref()?.rate()))
                .collect();
            let per_run: Vec<String> = generated
                .iter()
                .zip(raw)
                .map(|(g, r)| {
                    let f = |s: &Option<Sample>| s.as_ref().map(Sample::rate);
                    format!("{}/{}", fmt(f(g), 0), fmt(f(r), 0))
                })
                .collect();
            let _ = writeln!(
                self.throughput,
                "| {broker} | {kind} | {} | {} | {} | {} | {} | {}/{} | {} |",
                fmt(rate(generated), 0),
                fmt(rate(raw), 0),
                fmt(median(ratios), 2),
                fmt(cpu(generated), 1),
                fmt(cpu(raw), 1),
                ok(generated),
                ok(raw),
                per_run.join(", ")
            );
        }
        for (kind, samples) in &singles {
            let ok = samples.iter().filter(|s| s.is_some()).count();
            let m = |f: &dyn Fn(&Sample) -> Option<f64>| {
                median(samples.iter().flatten().filter_map(f).collect())
            };
            let line = if kind.starts_with("latency") {
                format!(
                    "p50 {} ms, p99 {} ms, max {} ms",
                    fmt(m(&|s| s.p50_ms), 2),
                    fmt(m(&|s| s.p99_ms), 2),
                    fmt(m(&|s| s.max_ms), 1)
                )
            } else {
                format!(
                    "{} events/s, {} µs CPU/event",
                    fmt(m(&|s| Some(s.rate())), 0),
                    fmt(m(&|s| Some(s.cpu_per_msg())), 1)
                )
            };
            let per_run: Vec<String> = samples
                .iter()
                .map(|s| match s {
                    Some(s) if kind.starts_with("latency") => {
                        format!("{}/{}", fmt(s.p50_ms, 2), fmt(s.p99_ms, 2))
                    }
                    Some(s) => fmt(Some(s.rate()), 0),
                    None => "failed".into(),
                })
                .collect();
            let _ = writeln!(
                self.other,
                "| {broker} | {kind} | {line} | {ok} | {} |",
                per_run.join(", ")
            );
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "{}\n| broker | phase | generated msg/s | raw msg/s | generated/raw | generated CPU µs/msg | raw CPU µs/msg | runs ok | per run (generated/raw msg/s) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n| broker | phase | median | runs ok | per run |\n| --- | --- | --- | --- | --- |\n{}",
            self.header, self.throughput, self.other
        )
    }
}
