//! Runtime benchmarks of evgen's generated code against raw clients.
//!
//! `evgen-bench-runtime run --brokers rabbitmq,nats --runs 5 --count 20000`
//! runs every measurement as its own child process (`phase …`), so each
//! starts from fresh connections and its CPU time is its own; generated and
//! raw alternate within each run (odd runs generated first, even runs raw
//! first), and the medians are printed as markdown. Start it through
//! `bash bench/runtime.sh`, which generates the events crates first.

#[macro_use]
mod generated;
mod measure;
mod raw;

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
mod redis;

use measure::{Runs, Sample};
use std::process::{Command, Stdio};
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// What one phase needs to know.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// Messages per throughput phase.
    pub count: u64,
    /// Messages per `_batch` call / raw pipeline window.
    pub batch: usize,
    /// Duration of a latency phase.
    pub latency_secs: u64,
    /// Events per second of a latency phase.
    pub rate: u64,
}

/// The PostgreSQL database of the outbox benchmarks (created if missing).
pub const DATABASE: &str = "evgen_bench";

pub fn database_url() -> String {
    format!("postgres://postgres@127.0.0.1:5432/{DATABASE}")
}

const ALL_BROKERS: &[&str] = &["rabbitmq", "nats", "redis", "kafka"];
const ALL_KINDS: &[&str] = &[
    "publish",
    "publish-nv",
    "consume",
    "consume-nv",
    "relay",
    "latency",
];
/// A phase that takes longer than this is reported as failed.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

const USAGE: &str = "usage: evgen-bench-runtime run [--brokers a,b] [--runs N] [--count N] \
    [--batch N] [--latency-secs S] [--rate R] [--only publish,publish-nv,consume,consume-nv,relay,latency]";

/// The options `run` and `phase` take, each with a value.
const OPTIONS: [&str; 7] = [
    "--brokers",
    "--runs",
    "--count",
    "--batch",
    "--latency-secs",
    "--rate",
    "--only",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("run") if options_ok(&args[1..]) => run(&args[1..]),
        Some("phase") if args.len() >= 3 && options_ok(&args[3..]) => phase(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

/// Every argument is a known option followed by its value (so `--help`
/// or a typo stops here instead of starting a run).
fn options_ok(args: &[String]) -> bool {
    args.chunks(2)
        .all(|pair| pair.len() == 2 && OPTIONS.contains(&pair[0].as_str()))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn number<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    flag(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cfg_from(args: &[String]) -> Cfg {
    Cfg {
        count: number(args, "--count", 20_000),
        batch: number(args, "--batch", 1_000),
        latency_secs: number(args, "--latency-secs", 10),
        rate: number(args, "--rate", 1_000),
    }
}

fn cfg_args(cfg: &Cfg) -> Vec<String> {
    vec![
        "--count".into(),
        cfg.count.to_string(),
        "--batch".into(),
        cfg.batch.to_string(),
        "--latency-secs".into(),
        cfg.latency_secs.to_string(),
        "--rate".into(),
        cfg.rate.to_string(),
    ]
}

/// Child process: run one phase, print `RESULT <json>`.
fn phase(args: &[String]) -> i32 {
    let (Some(broker), Some(name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: evgen-bench-runtime phase BROKER PHASE [options]");
        return 2;
    };
    let cfg = cfg_from(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match tokio::time::timeout(PHASE_TIMEOUT, run_phase(broker, name, &cfg)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {PHASE_TIMEOUT:?}").into()),
        }
    });
    // Do not wait for background tasks (subscribers, listeners) to stop.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(sample) => {
            println!(
                "RESULT {}",
                serde_json::to_string(&sample).expect("serialize")
            );
            0
        }
        Err(e) => {
            eprintln!("phase {broker} {name} failed: {e}");
            1
        }
    }
}

async fn run_phase(broker: &str, name: &str, cfg: &Cfg) -> Result<Sample> {
    match broker {
        #[cfg(feature = "rabbitmq")]
        "rabbitmq" => rabbitmq::phase(name, cfg).await,
        #[cfg(feature = "nats")]
        "nats" => nats::phase(name, cfg).await,
        #[cfg(feature = "redis")]
        "redis" => redis::phase(name, cfg).await,
        #[cfg(feature = "kafka")]
        "kafka" => kafka::phase(name, cfg).await,
        _ => Err(format!("broker `{broker}` is not built into this bench (see --features)").into()),
    }
}

/// Run one phase in a child process.
fn child(broker: &str, name: &str, cfg: &Cfg) -> Option<Sample> {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg("phase")
        .arg(broker)
        .arg(name)
        .args(cfg_args(cfg))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("run phase");
    let text = String::from_utf8_lossy(&out.stdout);
    let sample = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str::<Sample>(j).ok());
    match &sample {
        Some(s) => eprintln!("    {broker:<8} {name:<15} {}", s.describe()),
        None => eprintln!("    {broker:<8} {name:<15} FAILED"),
    }
    sample
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(args: &[String]) -> i32 {
    let brokers: Vec<String> = flag(args, "--brokers")
        .map(|b| b.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| ALL_BROKERS.iter().map(|b| b.to_string()).collect());
    let only: Vec<String> = flag(args, "--only")
        .map(|b| b.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| ALL_KINDS.iter().map(|b| b.to_string()).collect());
    let runs: usize = number(args, "--runs", 5);
    let cfg = cfg_from(args);
    let mut report = measure::Report::default();
    for broker in &brokers {
        let before = load();
        eprintln!("==> {broker}: {runs} runs, load {before}");
        let mut pairs: Vec<(&str, Runs, Runs)> = Vec::new();
        for kind in ["publish", "publish-nv", "consume", "consume-nv"] {
            if only.iter().any(|o| o == kind) {
                pairs.push((kind, Vec::new(), Vec::new()));
            }
        }
        let mut singles: Vec<(&str, Runs)> = Vec::new();
        for kind in ["relay", "latency-direct", "latency-outbox"] {
            if only.iter().any(|o| kind.starts_with(o.as_str())) {
                singles.push((kind, Vec::new()));
            }
        }
        for run in 0..runs {
            eprintln!("  run {} (load {})", run + 1, load());
            for (kind, generated, raw) in &mut pairs {
                // Alternate which goes first, so drift favours neither.
                let (g, r) = if run % 2 == 0 {
                    let g = child(broker, &format!("{kind}-gen"), &cfg);
                    (g, child(broker, &format!("{kind}-raw"), &cfg))
                } else {
                    let r = child(broker, &format!("{kind}-raw"), &cfg);
                    (child(broker, &format!("{kind}-gen"), &cfg), r)
                };
                generated.push(g);
                raw.push(r);
            }
            for (kind, samples) in &mut singles {
                samples.push(child(broker, kind, &cfg));
            }
        }
        child(broker, "cleanup", &cfg);
        let after = load();
        report.add(broker, &before, &after, runs, &cfg, pairs, singles);
    }
    println!("{}", report.markdown());
    0
}
