//! Inputs that once crashed or hung a fuzz target (see docs/fuzzing.md),
//! replayed as the targets run them: `tests/fuzz-regressions/catalog/*`
//! through the whole pipeline, `tests/fuzz-regressions/schema/*` (an
//! options byte, then a JSON document) through schema lowering and
//! rendering. Each must finish, without a panic, within a few seconds.

use evgen::schema::{Options, lower_document};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_file() && e.file_name() != "README.md")
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Run `f` in a thread: `Err` on a panic or after the deadline.
fn guarded(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{name}: panics")),
        Err(_) => Err(format!("{name}: hangs")),
    }
}

fn not_found() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "not found")
}

/// The `catalog` fuzz target.
fn catalog(data: &[u8]) {
    const SCHEMA: &str = include_str!("../templates/example/schemas/order.placed.json");
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let read = |p: &str| {
        if p.ends_with(".json") {
            Ok(SCHEMA.to_string())
        } else {
            Err(not_found())
        }
    };
    if let Err(d) = evgen::generate_from(text, &read) {
        let _ = d.render(&|f| {
            if f == "evgen.yaml" {
                Some(text.to_string())
            } else {
                read(f).ok()
            }
        });
    }
}

/// The `schema` fuzz target (without its check that the output parses).
fn schema(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if serde_json::from_str::<serde_json::Value>(text).is_err() {
        return;
    }
    let read = |p: &str| {
        if p.ends_with(".json") {
            Ok(text.to_string())
        } else {
            Err(not_found())
        }
    };
    let options = Options {
        apply_defaults: flags & 1 != 0,
        typed_formats: flags & 2 != 0,
        big_integers: flags & 4 != 0,
        remotes: if flags & 8 != 0 {
            vec![("http://localhost:1234/".into(), "remotes/".into())]
        } else {
            vec![]
        },
    };
    if let Ok(l) = lower_document("schemas/fuzz.json", "Fuzz", &read, options) {
        let _ = evgen::render::types_rs(&l.types);
    }
}

#[test]
fn fuzz_regressions() {
    let mut failures = Vec::new();
    for (name, data) in inputs("catalog") {
        if let Err(e) = guarded(&format!("catalog/{name}"), move || catalog(&data)) {
            failures.push(e);
        }
    }
    for (name, data) in inputs("schema") {
        if let Err(e) = guarded(&format!("schema/{name}"), move || schema(&data)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
