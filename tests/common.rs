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

/// A generated service running as a child process, its output captured
/// line by line. Killed when dropped; a failing test shows its last lines.
pub struct Service {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub port: u16,
}

impl Service {
    /// Start `command` (the service binary with its environment) serving
    /// HTTP on `port`, and wait until it logs `listening`.
    pub fn start(mut command: Command, port: u16) -> Service {
        use std::io::{BufRead, BufReader, Read};
        let mut child = command
            .env("PORT", port.to_string())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start service");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let s = Service { child, lines, port };
        s.wait_line("listening", std::time::Duration::from_secs(60));
        s
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first output line matching `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: std::time::Duration) -> String {
        let start = std::time::Instant::now();
        loop {
            if let Some(l) = self.lines().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "nothing expected in the service's output after {timeout:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn wait_line(&self, needle: &str, timeout: std::time::Duration) -> String {
        self.wait_for(|l| l.contains(needle), timeout)
    }

    /// Output lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// One HTTP/1.1 request; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait up to 30 s for a clean exit.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let lines = self.lines();
            let from = lines.len().saturating_sub(60);
            eprintln!(
                "--- last lines of the service on port {} ---\n{}",
                self.port,
                lines[from..].join("\n")
            );
        }
    }
}
