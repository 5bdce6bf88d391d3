//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fixture catalogs that must generate: `tests/fixtures/<case>/`.
pub fn fixtures() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("tests/fixtures"))
        .expect("tests/fixtures")
        .flatten()
        .filter(|e| e.path().join("evgen.yaml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// The shared target directory for generated workspaces (outside the
/// clone, so it stays warm between runs).
pub fn target_dir() -> PathBuf {
    std::env::var_os("EVGEN_TEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/evgen/target-generated"))
}

/// A scratch folder for generated workspaces, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("EVGEN_TEST_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("evgen-tests"));
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("scratch parent");
    dir
}

/// Run evgen in-process; returns (exit code, stdout, stderr).
pub fn evgen(args: &[&str]) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv: Vec<std::ffi::OsString> = vec!["evgen".into()];
    argv.extend(args.iter().map(|a| a.into()));
    let code = evgen::cli::run(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// `cargo <args>` in `dir` with the shared target dir; panics with the
/// output when it fails.
pub fn cargo(dir: &Path, args: &[&str]) -> String {
    let (ok, out) = cargo_result(dir, args);
    assert!(
        ok,
        "`cargo {}` failed in {}:\n{out}",
        args.join(" "),
        dir.display()
    );
    out
}

/// `cargo <args>` in `dir`; (success, combined output).
pub fn cargo_result(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An environment setting for services on Kafka here. tansu 0.6.0, the
/// Kafka-protocol broker of these machines, answers a fetch from an offset
/// inside a record batch with the batches after it (tansu-storage
/// `dynostore.rs`, `fetch`: `offsets.split_off(&offset)` over batch base
/// offsets), and reports the end of a partition as the last batch's base
/// offset + 1. So a consumer that resumes from a committed offset inside a
/// batch skips the rest of it, and reads of the dead-letter topic stop
/// short. One record per batch (`batch.num.messages=1`, through the
/// generated `KAFKA_CONFIG_` variables) keeps every offset at a batch
/// start. Real Kafka needs no such setting.
#[allow(dead_code)]
pub const TANSU_ONE_RECORD_PER_BATCH: (&str, &str) = ("KAFKA_CONFIG_BATCH_NUM_MESSAGES", "1");
