//! The JSON Schema Test Suite as a corpus for evgen's schema lowering.
//!
//! For every schema of the draft2020-12 and draft7 folders (optional tests
//! included): lower it (remote `$ref`s served from the suite's `remotes/`,
//! never the network), generate its types, compile them all (one crate per
//! draft, one module per schema), and run a checker that
//!
//! - deserializes every instance marked valid into the generated type and
//!   serializes it back, expecting a value equal as JSON Schema defines
//!   equality (`1` equals `1.0`);
//! - runs the runtime validation (the `jsonschema` crate with the options of
//!   the generated crates) on every instance marked invalid, expecting a
//!   rejection.
//!
//! The figures go to `docs/schema-support.md`; the test fails when that
//! report is out of date. Regenerate it with
//! `EVGEN_UPDATE_REPORT=1 cargo test --test corpus`.
//!
//! Environment: `EVGEN_SCHEMA_SUITE` (the suite's folder, default
//! `../shared/corpus/json-schema-test-suite` next to the crate),
//! `EVGEN_CORPUS_DIR` (the generated project) and `EVGEN_CORPUS_TARGET`
//! (its cargo target folder; both default to the test's temporary folder).

use evgen::schema::{Lowered, Options, lower_document};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DRAFTS: [(&str, &str); 2] = [
    (
        "draft2020-12",
        "https://json-schema.org/draft/2020-12/schema",
    ),
    ("draft7", "http://json-schema.org/draft-07/schema#"),
];

/// The groups of cases: the suite's drafts, then evgen's own cases.
const GROUPS: [&str; 3] = ["draft2020-12", "draft7", EXTRA];

/// evgen's own cases (2020-12), in the suite's format: what catalogs use
/// and the suite barely touches (discriminated unions, integers in every
/// position, nullable optional properties, defaults, typed formats,
/// recursion through anchors, clashing and unicode names).
const EXTRA: &str = "evgen";

const EXTRA_CASES: &str = r##"[
  {"description": "discriminated union, one variant nullable",
   "schema": {"oneOf": [
     {"type": ["object", "null"], "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"]},
     {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "string"}}, "required": ["kind"], "additionalProperties": false}]},
   "tests": [
     {"description": "a", "data": {"kind": "a", "x": 1.0}, "valid": true},
     {"description": "a with more", "data": {"x": 1, "kind": "a", "z": [true]}, "valid": true},
     {"description": "b", "data": {"kind": "b", "y": "s"}, "valid": true},
     {"description": "null", "data": null, "valid": true},
     {"description": "b with more", "data": {"kind": "b", "z": 1}, "valid": false},
     {"description": "unknown kind", "data": {"kind": "c"}, "valid": false}]},
  {"description": "integers everywhere",
   "schema": {"type": "object", "properties": {
     "n": {"type": ["integer", "null"]},
     "v": {"type": "array", "items": {"type": "integer"}},
     "m": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}},
     "additionalProperties": {"type": "integer"}},
   "tests": [
     {"description": "empty", "data": {}, "valid": true},
     {"description": "null", "data": {"n": null}, "valid": true},
     {"description": "integral floats", "data": {"n": 2.0, "v": [1, 2.0, -3], "m": {"a": 1.0}, "q": 5.0}, "valid": true},
     {"description": "a string", "data": {"n": "x"}, "valid": false},
     {"description": "a fraction", "data": {"v": [1.5]}, "valid": false},
     {"description": "an additional string", "data": {"q": "x"}, "valid": false}]},
  {"description": "defaults",
   "schema": {"type": "object", "properties": {
     "c": {"enum": ["web", "store"], "default": "web"},
     "k": {"type": "integer", "default": 3},
     "f": {"type": "number", "default": 1.5},
     "b": {"type": "boolean", "default": true},
     "s": {"type": "string", "default": "x"}}},
   "tests": [
     {"description": "all given", "data": {"c": "store", "k": 4, "f": 2, "b": false, "s": "y"}, "valid": true},
     {"description": "none given", "data": {}, "valid": true},
     {"description": "not in the enum", "data": {"c": "x"}, "valid": false}]},
  {"description": "typed formats",
   "schema": {"type": "object", "properties": {
     "at": {"type": "string", "format": "date-time"},
     "id": {"type": "string", "format": "uuid"},
     "d": {"type": "string", "format": "date"}}},
   "tests": [
     {"description": "canonical", "data": {"at": "2024-01-02T03:04:05Z", "id": "0f8fad5b-d9cb-469f-a165-70867728950e", "d": "2024-01-02"}, "valid": true},
     {"description": "an offset", "data": {"at": "2024-01-02T03:04:05+02:00"}, "valid": true},
     {"description": "an upper-case uuid", "data": {"id": "0F8FAD5B-D9CB-469F-A165-70867728950E"}, "valid": true},
     {"description": "not a date-time", "data": {"at": "yesterday"}, "valid": false},
     {"description": "not a uuid", "data": {"id": "x"}, "valid": false}]},
  {"description": "recursion through an anchor",
   "schema": {"$ref": "#node", "$defs": {"node": {"$anchor": "node", "type": "object", "required": ["value"], "properties": {
     "value": {"type": "integer"},
     "children": {"type": "array", "items": {"$ref": "#node"}},
     "parent": {"$ref": "#node"}}}}},
   "tests": [
     {"description": "a tree", "data": {"value": 1, "children": [{"value": 2.0, "children": []}], "parent": {"value": 0}}, "valid": true},
     {"description": "a bad value", "data": {"value": "x"}, "valid": false},
     {"description": "no value", "data": {"children": []}, "valid": false}]},
  {"description": "clashing, reserved and unicode names",
   "schema": {"type": "object", "required": ["type"], "properties": {
     "fooBar": {"type": "string"}, "foo_bar": {"type": "integer"}, "ü": {"type": "boolean"},
     "type": {"type": "string"}, "self": {"type": "string"}, "": {"type": "null"}, "extra": {"type": "string"},
     "Option": {"enum": ["Some", "None", "some"]}}},
   "tests": [
     {"description": "all", "data": {"type": "t", "fooBar": "a", "foo_bar": 1, "ü": true, "self": "s", "": null, "extra": "e", "Option": "None", "other": [1]}, "valid": true},
     {"description": "a bad type", "data": {"type": 1}, "valid": false}]},
  {"description": "allOf of references",
   "schema": {"allOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}], "$defs": {
     "a": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
     "b": {"type": "object", "properties": {"b": {"type": "string"}}}}},
   "tests": [
     {"description": "both", "data": {"a": 1, "b": "x", "c": null}, "valid": true},
     {"description": "a only", "data": {"a": 2.0}, "valid": true},
     {"description": "no a", "data": {"b": "x"}, "valid": false}]},
  {"description": "untagged union",
   "schema": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "string"},
     {"type": "object", "properties": {"x": {"type": "integer"}}}, {"type": "array", "items": {"type": "integer"}}]},
   "tests": [
     {"description": "integer", "data": 1, "valid": true},
     {"description": "fraction", "data": 1.5, "valid": true},
     {"description": "integral float", "data": 2.0, "valid": true},
     {"description": "string", "data": "s", "valid": true},
     {"description": "object", "data": {"x": 1.0, "y": "z"}, "valid": true},
     {"description": "array", "data": [1, 2.0], "valid": true},
     {"description": "boolean", "data": true, "valid": false},
     {"description": "null", "data": null, "valid": false}]},
  {"description": "integers beyond 64 bits",
   "schema": {"type": "object", "properties": {"i": {"type": "integer"}, "small": {"type": "integer", "minimum": -5, "maximum": 5}}},
   "tests": [
     {"description": "big", "data": {"i": 12345678901234567890123}, "valid": true},
     {"description": "64 bits", "data": {"i": -9223372036854775808, "small": 5.0}, "valid": true},
     {"description": "out of bounds", "data": {"small": 6}, "valid": false}]},
  {"description": "nullable recursive root",
   "schema": {"type": ["object", "null"], "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
   "tests": [
     {"description": "a chain", "data": {"next": {"next": null}}, "valid": true},
     {"description": "null", "data": null, "valid": true},
     {"description": "a number", "data": {"next": 1}, "valid": false}]},
  {"description": "properties without type",
   "schema": {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
   "tests": [
     {"description": "an object", "data": {"a": 1, "b": 2}, "valid": true},
     {"description": "not an object", "data": "a", "valid": true},
     {"description": "a bad a", "data": {"a": "x"}, "valid": false}]}
]"##;

/// Where lowering reads a test case's schema, relative to a virtual catalog.
const SCHEMA_PATH: &str = "schemas/case.json";

/// One test case of the suite: a schema and its instances.
struct Case {
    draft: &'static str,
    /// File relative to the draft folder, `/`-separated.
    file: String,
    index: usize,
    description: String,
    schema: Value,
    tests: Vec<(String, Value, bool)>,
}

/// What lowering a case did.
enum Lowering {
    Accepted(Box<Lowered>),
    Refused(String),
    Panicked(String),
    Hung,
}

fn suite_dir() -> PathBuf {
    match std::env::var_os("EVGEN_SCHEMA_SUITE") {
        Some(d) => PathBuf::from(d),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/json-schema-test-suite")
        }
    }
}

fn json_files(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if e.path().is_dir() {
            json_files(&e.path(), &r, out);
        } else if name.ends_with(".json") {
            out.push(r);
        }
    }
}

fn load_cases(suite: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (draft, meta) in DRAFTS {
        let dir = suite.join("tests").join(draft);
        let mut files = Vec::new();
        json_files(&dir, "", &mut files);
        for file in files {
            let text = std::fs::read_to_string(dir.join(&file)).expect("read a test file");
            let groups: Vec<Value> =
                serde_json::from_str(&text).expect("a test file is a JSON array");
            for (index, g) in groups.into_iter().enumerate() {
                let mut schema = g["schema"].clone();
                // The drafts before 2019-09 are only known by `$schema`.
                if let Value::Object(m) = &mut schema
                    && !m.contains_key("$schema")
                    && draft == "draft7"
                {
                    m.insert("$schema".into(), meta.into());
                }
                let tests = g["tests"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .map(|t| {
                                let d = t["description"].as_str().unwrap_or_default().to_string();
                                (d, t["data"].clone(), t["valid"].as_bool().unwrap_or(false))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                cases.push(Case {
                    draft,
                    file: file.clone(),
                    index,
                    description: g["description"].as_str().unwrap_or_default().to_string(),
                    schema,
                    tests,
                });
            }
        }
    }
    let extra: Vec<Value> = serde_json::from_str(EXTRA_CASES).expect("the extra cases are JSON");
    for (index, g) in extra.into_iter().enumerate() {
        let tests = g["tests"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        let d = t["description"].as_str().unwrap_or_default().to_string();
                        (d, t["data"].clone(), t["valid"].as_bool().unwrap_or(false))
                    })
                    .collect()
            })
            .unwrap_or_default();
        cases.push(Case {
            draft: EXTRA,
            file: g["description"].as_str().unwrap_or_default().to_string(),
            index,
            description: g["description"].as_str().unwrap_or_default().to_string(),
            schema: g["schema"].clone(),
            tests,
        });
    }
    cases
}

/// The lowering options of catalogs, with the suite's remotes.
fn catalog_options() -> Options {
    Options {
        remotes: corpus_options().remotes,
        ..Options::default()
    }
}

/// The lowering options of the corpus: the JSON Schema meaning exactly.
fn corpus_options() -> Options {
    Options {
        // A default written out on serialization changes the instance.
        apply_defaults: false,
        // chrono and uuid normalize the text (offsets, case).
        typed_formats: false,
        // Integers beyond 64 bits are valid JSON Schema integers.
        big_integers: true,
        remotes: vec![("http://localhost:1234/".into(), "remotes/".into())],
    }
}

/// Lower one case in a thread, with a deadline.
fn lower_case(case: &Case, remotes: &Path, options: Options) -> Lowering {
    let text = serde_json::to_string_pretty(&case.schema).expect("a JSON value prints");
    let remotes = remotes.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let read = move |p: &str| -> std::io::Result<String> {
            if p == SCHEMA_PATH {
                Ok(text.clone())
            } else if let Some(r) = p.strip_prefix("remotes/") {
                std::fs::read_to_string(remotes.join(r))
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not found",
                ))
            }
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lower_document(SCHEMA_PATH, "Root", &read, options)
        }));
        let _ = tx.send(match r {
            Ok(Ok(l)) => Lowering::Accepted(Box::new(l)),
            Ok(Err(d)) => {
                Lowering::Refused(d.0.first().map(|d| d.message.clone()).unwrap_or_default())
            }
            Err(p) => Lowering::Panicked(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        });
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or(Lowering::Hung)
}

/// Write `content` to `path` unless it is there already (keeps cargo's
/// incremental builds).
fn write_if_changed(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return;
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("create a folder");
    }
    std::fs::write(path, content).expect("write a file");
}

const CHECKER: &str = r#"
/// JSON Schema equality: numbers by value, objects regardless of order.
fn equal(a: &::serde_json::Value, b: &::serde_json::Value) -> bool {
    use ::serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let int = |n: &::serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 1.0e38)
                            .map(|f| f as i128)
                    })
            };
            match (int(x), int(y)) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Serves the suite's remote documents; nothing else.
struct Remotes(::std::path::PathBuf);

impl ::jsonschema::Retrieve for Remotes {
    fn retrieve(
        &self,
        uri: &::jsonschema::Uri<String>,
    ) -> Result<::serde_json::Value, Box<dyn ::std::error::Error + Send + Sync>> {
        let path = uri
            .as_str()
            .strip_prefix("http://localhost:1234/")
            .ok_or_else(|| format!("`{uri}` is not a remote of the suite"))?;
        let text = ::std::fs::read_to_string(self.0.join(path))?;
        Ok(::serde_json::from_str(&text)?)
    }
}

fn panic_text(p: Box<dyn ::std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Check one case; the result per test: "ok" or what went wrong.
fn check<T: ::serde::de::DeserializeOwned + ::serde::Serialize>(
    case: &::serde_json::Value,
    remotes: &::std::path::Path,
) -> ::serde_json::Value {
    let schema = &case["schema"];
    let validator = ::jsonschema::options()
        .with_base_uri("evgen:///schemas/case.json".to_string())
        .with_retriever(Remotes(remotes.to_path_buf()))
        .should_validate_formats(true)
        .build(schema);
    let mut out = Vec::new();
    for t in case["tests"].as_array().into_iter().flatten() {
        let data = t["data"].clone();
        let result = if t["valid"] == true {
            let r = ::std::panic::catch_unwind(|| match ::serde_json::from_value::<T>(data.clone()) {
                Err(e) => format!("does not deserialize: {e}"),
                Ok(v) => match ::serde_json::to_value(&v) {
                    Err(e) => format!("does not serialize: {e}"),
                    Ok(back) if equal(&back, &data) => "ok".to_string(),
                    Ok(back) => format!("comes back as {back}"),
                },
            });
            r.unwrap_or_else(|p| format!("panics: {}", panic_text(p)))
        } else {
            match &validator {
                // The generated crates reject everything then.
                Err(e) => format!("ok (the schema does not compile: {e})"),
                Ok(v) => {
                    if v.is_valid(&data) {
                        "is accepted".to_string()
                    } else {
                        "ok".to_string()
                    }
                }
            }
        };
        out.push(::serde_json::Value::String(result));
    }
    ::serde_json::Value::Array(out)
}

fn main() {
    ::std::panic::set_hook(Box::new(|_| {}));
    let args: Vec<String> = ::std::env::args().collect();
    let cases: Vec<::serde_json::Value> =
        ::serde_json::from_str(&::std::fs::read_to_string(&args[1]).expect("read the cases"))
            .expect("cases are JSON");
    let remotes = ::std::path::PathBuf::from(&args[2]);
    let mut results = ::serde_json::Map::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or_default();
        if let Some((_, f)) = CHECKS.iter().find(|(i, _)| *i == id) {
            results.insert(id.to_string(), f(case, &remotes));
        }
    }
    println!("{}", ::serde_json::Value::Object(results));
}
"#;

struct Project {
    dir: PathBuf,
    target: PathBuf,
}

/// One crate of the checker workspace: a module per lowered case.
struct Crate<'a> {
    name: &'static str,
    /// `(case, lowering, result id)`.
    entries: Vec<(&'a Case, &'a Lowering, String)>,
}

/// Write the checker workspace: one crate per draft with the corpus
/// options, one crate with the catalog defaults; a module per case.
fn write_project(project: &Project, crates: &[Crate<'_>]) {
    let dir = &project.dir;
    let members: Vec<String> = crates.iter().map(|c| format!("\"{}\"", c.name)).collect();
    write_if_changed(
        &dir.join("Cargo.toml"),
        &format!(
            "[workspace]\nmembers = [{}]\nresolver = \"3\"\n\n[profile.dev]\ndebug = 0\n",
            members.join(", ")
        ),
    );
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        let _ = std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
            &lock,
        );
    }
    for c in crates {
        let cdir = dir.join(c.name);
        write_if_changed(
            &cdir.join("Cargo.toml"),
            &format!(
                "[package]\nname = \"corpus-{}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\n{}\n\
                 serde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n",
                c.name,
                generated_dependencies()
            ),
        );
        let mut main = String::from("#![allow(dead_code)]\n\n");
        let mut checks = String::new();
        let mut wanted = Vec::new();
        for (case, low, id) in &c.entries {
            let Lowering::Accepted(l) = low else { continue };
            let m = module_name(case);
            let _ = writeln!(main, "mod {m};");
            let _ = writeln!(
                checks,
                "    ({id:?}, check::<{m}::{}>),",
                l.types.defs[l.root].name
            );
            let file = format!("{m}.rs");
            write_if_changed(
                &cdir.join("src").join(&file),
                &evgen::render::types_rs(&l.types),
            );
            wanted.push(file);
        }
        let _ = writeln!(
            main,
            "\ntype Check = fn(&::serde_json::Value, &::std::path::Path) -> ::serde_json::Value;\n\n\
             const CHECKS: &[(&str, Check)] = &[\n{checks}];"
        );
        main.push_str(CHECKER);
        write_if_changed(&cdir.join("src/main.rs"), &main);
        // Modules of cases that no longer exist.
        if let Ok(rd) = std::fs::read_dir(cdir.join("src")) {
            for e in rd.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != "main.rs" && !wanted.contains(&n) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The `jsonschema`, `chrono` and `uuid` dependencies of the generated
/// crates, so that the checker validates and deserializes as they do.
fn generated_dependencies() -> String {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/events/Cargo.toml");
    let text = std::fs::read_to_string(template).unwrap_or_default();
    let mut deps = Vec::new();
    for (name, fallback) in [
        (
            "jsonschema",
            "jsonschema = { version = \"=0.61\", default-features = false }",
        ),
        (
            "chrono",
            "chrono = { version = \"0.4\", default-features = false, features = [\"serde\", \"std\"] }",
        ),
        ("uuid", "uuid = { version = \"1\", features = [\"serde\"] }"),
    ] {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} =")));
        deps.push(line.unwrap_or(fallback).to_string());
    }
    deps.join("\n")
}

fn case_id(c: &Case) -> String {
    format!("{}/{}#{}", c.draft, c.file, c.index)
}

fn module_name(c: &Case) -> String {
    let stem: String = format!("{}_{}", c.draft, c.file.trim_end_matches(".json"))
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("s_{stem}_{}", c.index)
}

/// Run a command with a deadline (its output goes through files next to
/// `scratch`); `None` when it had to be killed.
fn run(mut cmd: Command, limit: Duration, scratch: &Path) -> Option<std::process::Output> {
    let (out_path, err_path) = (
        scratch.with_extension("stdout"),
        scratch.with_extension("stderr"),
    );
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).expect("create an output file"))
        .stderr(std::fs::File::create(&err_path).expect("create an output file"))
        .spawn()
        .expect("start a command");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(std::process::Output {
                status,
                stdout: std::fs::read(&out_path).unwrap_or_default(),
                stderr: std::fs::read(&err_path).unwrap_or_default(),
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Figures of one group of cases.
#[derive(Default, Clone)]
struct Figures {
    schemas: usize,
    accepted: usize,
    valid: usize,
    round_tripped: usize,
    invalid: usize,
    rejected: usize,
    precise: usize,
    nodes: usize,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.schemas += o.schemas;
        self.accepted += o.accepted;
        self.valid += o.valid;
        self.round_tripped += o.round_tripped;
        self.invalid += o.invalid;
        self.rejected += o.rejected;
        self.precise += o.precise;
        self.nodes += o.nodes;
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "–".into()
    } else if a == b {
        "100 %".into()
    } else {
        format!("{:.1} %", (a as f64) * 100.0 / (b as f64)).replace("100.0 %", "99.9 %")
    }
}

fn row(name: &str, f: &Figures) -> String {
    format!(
        "| {name} | {} | {} | {} | {}/{} ({}) | {}/{} ({}) | {}/{} ({}) |\n",
        f.schemas,
        f.accepted,
        f.schemas - f.accepted,
        f.round_tripped,
        f.valid,
        pct(f.round_tripped, f.valid),
        f.rejected,
        f.invalid,
        pct(f.rejected, f.invalid),
        f.precise,
        f.nodes,
        pct(f.precise, f.nodes),
    )
}

const HEADER: &str = "| | schemas | accepted | refused | valid instances round-tripped | invalid instances rejected | typed precision |\n|---|---:|---:|---:|---:|---:|---:|\n";

fn one_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.replace('|', "\\|");
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

fn report(
    cases: &[Case],
    lowered: &[Lowering],
    catalog: &[Lowering],
    results: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut per_file: BTreeMap<(&str, &str), Figures> = BTreeMap::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (case, low) in cases.iter().zip(lowered) {
        let f = per_file
            .entry((case.draft, case.file.as_str()))
            .or_default();
        f.schemas += 1;
        let id = case_id(case);
        let res = results.get(&id);
        let probs = problems.entry(case.draft).or_default();
        let what = format!(
            "`{}` #{} ({})",
            case.file,
            case.index,
            one_line(&case.description)
        );
        match low {
            Lowering::Accepted(l) => {
                f.accepted += 1;
                f.precise += l.precise;
                f.nodes += l.precise + l.fallback;
            }
            Lowering::Refused(why) => probs.push(format!("{what}: refused: {}", one_line(why))),
            Lowering::Panicked(p) => {
                probs.push(format!("{what}: lowering panics: {}", one_line(p)))
            }
            Lowering::Hung => probs.push(format!("{what}: lowering hangs")),
        }
        for (i, (desc, _, valid)) in case.tests.iter().enumerate() {
            let r = res.and_then(|r| r.get(i)).map(String::as_str);
            if *valid {
                f.valid += 1;
                match r {
                    Some("ok") => f.round_tripped += 1,
                    Some(other) if matches!(low, Lowering::Accepted(_)) => probs.push(format!(
                        "{what}, valid \"{}\": {}",
                        one_line(desc),
                        one_line(other)
                    )),
                    _ => {}
                }
            } else {
                f.invalid += 1;
                match r {
                    Some(s) if s.starts_with("ok") => f.rejected += 1,
                    Some(other) => probs.push(format!(
                        "{what}, invalid \"{}\": {}",
                        one_line(desc),
                        one_line(other)
                    )),
                    None => {}
                }
            }
        }
    }
    let mut out = String::new();
    out.push_str(
        "# JSON Schema support\n\n\
         <!-- Generated by `EVGEN_UPDATE_REPORT=1 cargo test --test corpus`; do not edit. -->\n\n\
         evgen's schema lowering measured on the [JSON Schema Test Suite](https://github.com/json-schema-org/JSON-Schema-Test-Suite) \
         (draft2020-12 and draft7, optional tests included; remote references served from the suite's `remotes/` folder). \
         `tests/corpus.rs` lowers every schema, compiles the generated types (one crate per draft, one module per schema) and checks:\n\n\
         - **accepted**: evgen lowers the schema without an error;\n\
         - **round-tripped**: an instance the suite marks valid deserializes into the generated type and serializes back to an equal \
         JSON value (equal as JSON Schema defines it: `1` equals `1.0`, key order does not matter);\n\
         - **rejected**: the runtime validation of the generated crates (`jsonschema` with `should_validate_formats(true)`) \
         rejects an instance the suite marks invalid;\n\
         - **typed precision**: the share of lowered schema nodes that got a precise Rust type rather than a `serde_json::Value` \
         fallback (a node that accepts anything, like `true` or `{}`, or nothing, like `false`, is precise as a `Value`).\n\n\
         The corpus lowers with `apply_defaults: false` (a default written back out would change the instance), \
         `typed_formats: false` (formats are annotations in 2020-12; chrono and uuid normalize the text) and \
         `big_integers: true` (integers beyond 64 bits are valid JSON Schema integers). Catalogs lower with the \
         defaults: defaults applied, chrono and uuid types, 64-bit integers.\n",
    );
    if !generated_dependencies().contains("idna") {
        out.push_str(
            "\nThe checker depends on `jsonschema` as the generated crates do (`templates/events/Cargo.toml`): \
             without its `idna` feature, `idn-hostname` and `idn-email` formats are not checked.\n",
        );
    }
    out.push_str("\n## Summary\n\n");
    out.push_str(HEADER);
    let mut totals: BTreeMap<&str, Figures> = BTreeMap::new();
    for ((d, _), f) in &per_file {
        totals.entry(d).or_default().add(f);
    }
    for d in GROUPS {
        out.push_str(&row(d, &totals.get(d).cloned().unwrap_or_default()));
    }
    out.push_str(
        "\nNo lowering panics or hangs, and every generated module compiles and is rustfmt-clean: the test fails \
         otherwise. Typed precision counts every schema node lowered (a `$ref` that only points elsewhere counts \
         as its target); nodes without `type` that only constrain numbers, strings or arrays (`minimum`, `pattern`, \
         `contains`, …) or that are conditional (`not`, `if`, `$dynamicRef`) accept any other JSON value, so \
         `serde_json::Value` is the only complete type for them. A node without `type` whose object or array \
         keywords say something becomes an enum of the typed object (or array) and any other value.\n",
    );
    for d in GROUPS {
        let _ = write!(out, "\n## {d}\n\n{HEADER}");
        for ((dd, file), f) in &per_file {
            if *dd == d {
                out.push_str(&row(&format!("`{file}`"), f));
            }
        }
        let probs = problems.get(d).cloned().unwrap_or_default();
        if probs.is_empty() {
            out.push_str("\nNo refusal, and no failing instance.\n");
        } else {
            let _ = write!(
                out,
                "\n### Refusals and failing instances ({})\n\n",
                probs.len()
            );
            for p in probs {
                let _ = writeln!(out, "- {p}");
            }
        }
    }
    // The catalog defaults.
    let _ = write!(
        out,
        "\n## With the catalog defaults\n\n\
         The same schemas lowered as a catalog's are (`Options::default()`: defaults applied, `date-time`, `date` and \
         `uuid` strings as chrono and uuid types, integers as `i64`/`u64`), compiled and checked the same way. \
         Invalid instances are rejected as above (the runtime validation does not depend on the lowering).\n\n\
         | | schemas | accepted | refused | valid instances round-tripped | typed precision |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    let mut why: BTreeMap<(&str, &str), (usize, String)> = BTreeMap::new();
    for d in GROUPS {
        let mut f = Figures::default();
        for (case, low) in cases.iter().zip(catalog) {
            if case.draft != d {
                continue;
            }
            f.schemas += 1;
            if let Lowering::Accepted(l) = low {
                f.accepted += 1;
                f.precise += l.precise;
                f.nodes += l.precise + l.fallback;
            }
            let res = results.get(&format!("catalog:{}", case_id(case)));
            for (i, (_, _, valid)) in case.tests.iter().enumerate() {
                if !*valid {
                    continue;
                }
                f.valid += 1;
                match res.and_then(|r| r.get(i)).map(String::as_str) {
                    Some("ok") => f.round_tripped += 1,
                    other => {
                        let e = why.entry((case.draft, case.file.as_str())).or_default();
                        e.0 += 1;
                        if e.1.is_empty() {
                            e.1 = one_line(other.unwrap_or("refused"));
                        }
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "| {d} | {} | {} | {} | {}/{} ({}) | {}/{} ({}) |",
            f.schemas,
            f.accepted,
            f.schemas - f.accepted,
            f.round_tripped,
            f.valid,
            pct(f.round_tripped, f.valid),
            f.precise,
            f.nodes,
            pct(f.precise, f.nodes)
        );
    }
    if !why.is_empty() {
        out.push_str("\nValid instances that do not round-trip with the catalog defaults, by file (with the first reason):\n\n");
        for ((d, file), (n, first)) in &why {
            let _ = writeln!(out, "- {d} `{file}`: {n} ({first})");
        }
    }
    out
}

#[test]
fn json_schema_test_suite() {
    let suite = suite_dir();
    assert!(
        suite.join("tests").is_dir(),
        "no JSON Schema Test Suite at {}: it ships in the project's shared/corpus folder beside the clone (or set EVGEN_SCHEMA_SUITE)",
        suite.display()
    );
    let remotes = suite.join("remotes");
    let cases = load_cases(&suite);
    let t0 = Instant::now();
    let lowered: Vec<Lowering> = cases
        .iter()
        .map(|c| lower_case(c, &remotes, corpus_options()))
        .collect();
    let lowered_catalog: Vec<Lowering> = cases
        .iter()
        .map(|c| lower_case(c, &remotes, catalog_options()))
        .collect();
    eprintln!(
        "lowered {} schemas twice in {:?}",
        cases.len(),
        t0.elapsed()
    );
    if std::env::var_os("EVGEN_CORPUS_FALLBACKS").is_some() {
        for (c, l) in cases.iter().zip(&lowered) {
            if let Lowering::Accepted(l) = l {
                for (d, p) in &l.fallback_at {
                    let node = if d == SCHEMA_PATH {
                        c.schema.pointer(p).cloned()
                    } else {
                        None
                    };
                    eprintln!(
                        "FALLBACK {} {d}#{p} {}",
                        case_id(c),
                        node.map(|n| n.to_string()).unwrap_or_default()
                    );
                }
            }
        }
    }
    let panics: Vec<String> = cases
        .iter()
        .zip(lowered.iter().zip(&lowered_catalog))
        .flat_map(|(c, (a, b))| [(c, a), (c, b)])
        .filter_map(|(c, l)| match l {
            Lowering::Panicked(p) => Some(format!("{}: panics: {p}", case_id(c))),
            Lowering::Hung => Some(format!("{}: hangs", case_id(c))),
            _ => None,
        })
        .collect();

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let project = Project {
        dir: std::env::var_os("EVGEN_CORPUS_DIR")
            .map_or_else(|| tmp.join("evgen-corpus"), PathBuf::from),
        target: std::env::var_os("EVGEN_CORPUS_TARGET")
            .map_or_else(|| tmp.join("evgen-corpus-target"), PathBuf::from),
    };
    let mut crates: Vec<Crate<'_>> = GROUPS
        .iter()
        .map(|d| Crate {
            name: d,
            entries: cases
                .iter()
                .zip(&lowered)
                .filter(|(c, _)| c.draft == *d)
                .map(|(c, l)| (c, l, case_id(c)))
                .collect(),
        })
        .collect();
    crates.push(Crate {
        name: "catalog",
        entries: cases
            .iter()
            .zip(&lowered_catalog)
            .map(|(c, l)| (c, l, format!("catalog:{}", case_id(c))))
            .collect(),
    });
    write_project(&project, &crates);

    // The generated code is rustfmt-clean, like the catalog's.
    let mut fmt = Command::new("rustfmt");
    fmt.args(["--edition", "2024", "--check"]);
    for c in &crates {
        for e in std::fs::read_dir(project.dir.join(c.name).join("src"))
            .expect("the crate's sources")
            .flatten()
        {
            if e.file_name() != "main.rs" {
                fmt.arg(e.path());
            }
        }
    }
    let fmt_out =
        run(fmt, Duration::from_secs(600), &project.dir.join("rustfmt")).expect("rustfmt finishes");
    let fmt_diff = String::from_utf8_lossy(&fmt_out.stdout).into_owned();

    let t1 = Instant::now();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--workspace", "--quiet", "--message-format=short"])
        .current_dir(&project.dir)
        .env("CARGO_TARGET_DIR", &project.target)
        .env_remove("RUSTFLAGS");
    let out = run(build, Duration::from_secs(3600), &project.dir.join("build"))
        .expect("the corpus crates build in time");
    assert!(
        out.status.success(),
        "the generated corpus crates do not compile (project in {}):\n{}",
        project.dir.display(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("built the corpus crates in {:?}", t1.elapsed());

    let mut results: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &crates {
        let input: Vec<Value> = c
            .entries
            .iter()
            .map(|(case, _, id)| {
                json!({
                    "id": id,
                    "schema": case.schema,
                    "tests": case.tests.iter().map(|(_, d, v)| json!({"data": d, "valid": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let input_path = project.dir.join(format!("{}.cases.json", c.name));
        write_if_changed(
            &input_path,
            &serde_json::to_string(&input).expect("JSON prints"),
        );
        let mut cmd = Command::new(
            project
                .target
                .join("debug")
                .join(format!("corpus-{}", c.name)),
        );
        cmd.arg(&input_path).arg(&remotes);
        let out = run(cmd, Duration::from_secs(600), &project.dir.join(c.name))
            .expect("the checker finishes in time");
        assert!(
            out.status.success(),
            "the checker failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: BTreeMap<String, Vec<String>> =
            serde_json::from_slice(&out.stdout).expect("the checker prints JSON");
        results.extend(v);
    }

    let text = report(&cases, &lowered, &lowered_catalog, &results);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema-support.md");
    if std::env::var_os("EVGEN_UPDATE_REPORT").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs/")).expect("create docs/");
        std::fs::write(&path, &text).expect("write the report");
    }
    assert!(
        panics.is_empty(),
        "lowering panics or hangs:\n{}",
        panics.join("\n")
    );
    assert!(
        fmt_diff.is_empty(),
        "generated types are not rustfmt-clean:\n{fmt_diff}"
    );
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/schema-support.md is out of date: run `EVGEN_UPDATE_REPORT=1 cargo test --test corpus`"
    );
}
