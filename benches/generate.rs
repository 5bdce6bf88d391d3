//! Whole-process generator benchmark: `evgen generate` (cold, into an
//! empty folder, and warm, nothing to write) and `evgen check` on synthetic
//! catalogs of N events, each a realistic schema of ~10 properties with
//! nesting, enums, arrays and formats. Run: `cargo bench --bench generate`
//! (sizes: EVGEN_BENCH_SIZES=100,1000,10000; runs: EVGEN_BENCH_RUNS=5;
//! EVGEN_BENCH_BIN=path times another evgen binary, e.g. an older build;
//! EVGEN_BENCH_KEEP=1 keeps the catalogs). Build times of a generated
//! service: `bash bench/build.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn schema(i: usize) -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["id", "account_id", "status", "amount", "lines", "created_at"],
  "properties": {{
    "id": {{ "type": "string", "format": "uuid" }},
    "account_id": {{ "type": "string", "minLength": 1 }},
    "status": {{ "enum": ["new", "active", "suspended", "closed"] }},
    "amount": {{ "$ref": "common.json#/$defs/Money" }},
    "lines": {{
      "type": "array",
      "items": {{
        "type": "object",
        "required": ["sku", "quantity"],
        "properties": {{
          "sku": {{ "type": "string" }},
          "quantity": {{ "type": "integer", "minimum": 1 }},
          "unit_price": {{ "$ref": "common.json#/$defs/Money" }}
        }}
      }}
    }},
    "created_at": {{ "type": "string", "format": "date-time" }},
    "tags": {{ "type": "array", "items": {{ "type": "string" }} }},
    "attributes": {{ "type": "object", "additionalProperties": {{ "type": "string" }} }},
    "note": {{ "type": ["string", "null"], "description": "Free text of event {i}." }},
    "priority": {{ "type": "integer", "format": "int32", "default": 0 }}
  }}
}}
"#
    )
}

const COMMON: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$defs": {
    "Money": {
      "type": "object",
      "required": ["cents", "currency"],
      "properties": { "cents": { "type": "integer" }, "currency": { "type": "string", "pattern": "^[A-Z]{3}$" } }
    }
  }
}
"#;

/// Write a catalog of `n` events into `dir`.
fn synth(dir: &Path, n: usize) {
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).expect("mkdir");
    std::fs::write(schemas.join("common.json"), COMMON).expect("write");
    let mut cat = String::from(
        "version: 1\nservice:\n  name: bench\n  broker: rabbitmq\n  outbox: postgres\nevents:\n",
    );
    for i in 0..n {
        let name = format!("entity{}.action{}", i / 10, i % 10);
        std::fs::write(schemas.join(format!("{name}.json")), schema(i)).expect("write");
        cat.push_str(&format!("  - name: {name}\n    version: 1.0.{i}\n    description: Synthetic event number {i}.\n    schema: schemas/{name}.json\n    key: id\n"));
    }
    cat.push_str("produces:\n");
    for i in (0..n).step_by(2) {
        cat.push_str(&format!("  - entity{}.action{}\n", i / 10, i % 10));
    }
    cat.push_str("consumes:\n");
    for i in (1..n).step_by(2) {
        cat.push_str(&format!("  - event: entity{}.action{}\n", i / 10, i % 10));
    }
    std::fs::write(dir.join("evgen.yaml"), cat).expect("write");
}

fn time(bin: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(bin).args(args).output().expect("run evgen");
    let d = start.elapsed();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("EVGEN_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("EVGEN_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let bin = std::env::var_os("EVGEN_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_evgen")), PathBuf::from);
    println!("| events | generate, empty folder | generate, nothing to write | check |");
    println!("| --- | --- | --- | --- |");
    for n in sizes {
        let dir = std::env::temp_dir().join(format!("evgen-bench-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        synth(&dir, n);
        let d = dir.to_str().expect("utf-8");
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut check = Vec::new();
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(dir.join("events"));
            cold.push(time(&bin, &["generate", "--dir", d]));
            warm.push(time(&bin, &["generate", "--dir", d]));
            check.push(time(&bin, &["check", "--dir", d]));
        }
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {n} | {} | {} | {} |",
            ms(median(cold)),
            ms(median(warm)),
            ms(median(check))
        );
        if std::env::var_os("EVGEN_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
