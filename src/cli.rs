//! The command line: parse flags, call the library, print, map to exit
//! codes (0 ok, 1 `check` found drift, 2 bad input).

use crate::catalog::CATALOG_FILE;
use crate::diag::{Diagnostic, Diagnostics};
use crate::{edit, emit, render, service};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit code: success.
pub const OK: i32 = 0;
/// Exit code: `check` found drift.
pub const DRIFT: i32 = 1;
/// Exit code: bad input (catalog, schema, flags) or an I/O failure.
pub const BAD_INPUT: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "evgen", version, about = "Generate typed, reliable Rust event services from an event catalog", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Scaffold a new service that builds and runs at once
    #[command(
        after_help = "Examples:\n  evgen new orders\n  evgen new orders --broker rabbitmq --outbox postgres\n  evgen new billing --catalog ../catalog/evgen.yaml"
    )]
    New {
        /// Folder to create (must not exist or be empty)
        dir: PathBuf,
        /// Start from this catalog (its schema files are copied too)
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// rabbitmq, kafka, nats or redis
        #[arg(long)]
        broker: Option<String>,
        /// postgres or none
        #[arg(long)]
        outbox: Option<String>,
        /// Service name (default: the folder name)
        #[arg(long)]
        name: Option<String>,
    },
    /// Regenerate: write the generated files whose content changed
    #[command(after_help = "Examples:\n  evgen generate\n  evgen generate --dir services/orders")]
    Generate {
        /// Folder holding evgen.yaml
        #[arg(long, short = 'C', default_value = ".")]
        dir: PathBuf,
    },
    /// Prove the generated files are up to date (exit 1 with a diff if not)
    #[command(
        after_help = "Examples:\n  evgen check            # in CI, after checkout\n  evgen check --dir services/orders"
    )]
    Check {
        /// Folder holding evgen.yaml
        #[arg(long, short = 'C', default_value = ".")]
        dir: PathBuf,
    },
    /// Check the catalog and its schemas without writing anything
    #[command(after_help = "Examples:\n  evgen validate\n  evgen validate --dir services/orders")]
    Validate {
        /// Folder holding evgen.yaml
        #[arg(long, short = 'C', default_value = ".")]
        dir: PathBuf,
    },
    /// Add an event to the catalog (comments kept) and regenerate
    #[command(
        after_help = "Field types: string, integer, number, boolean, uuid, datetime, date;\n`?` makes a field optional, `[]` makes it an array (`tags:string[]?`).\n\nExamples:\n  evgen add-event order.shipped --field order_id:uuid --field carrier:string --field eta:datetime? --produce --key order_id\n  evgen add-event stock.reserved --schema ../contracts/stock.reserved.json --consume"
    )]
    AddEvent {
        /// Event name, `<entity>.<action>`
        name: String,
        /// JSON Schema file of the payload (copied into schemas/ when outside the catalog's folder)
        #[arg(long, conflicts_with = "field")]
        schema: Option<PathBuf>,
        /// A payload field `name:type` (repeatable)
        #[arg(long = "field", value_name = "NAME:TYPE")]
        field: Vec<String>,
        /// This service publishes the event
        #[arg(long)]
        produce: bool,
        /// This service consumes the event
        #[arg(long)]
        consume: bool,
        /// Ordering key property
        #[arg(long)]
        key: Option<String>,
        /// Schema version
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// Description (becomes docs)
        #[arg(long)]
        description: Option<String>,
        /// Folder holding evgen.yaml
        #[arg(long, short = 'C', default_value = ".")]
        dir: PathBuf,
    },
}

/// Run evgen with `args` (the first is the program name).
pub fn run(args: Vec<std::ffi::OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { BAD_INPUT } else { OK };
            let text = e.render().to_string();
            let _ = if e.use_stderr() {
                write!(err, "{text}")
            } else {
                write!(out, "{text}")
            };
            return code;
        }
    };
    let result = match cli.cmd {
        Cmd::New {
            dir,
            catalog,
            broker,
            outbox,
            name,
        } => new(&dir, catalog.as_deref(), broker, outbox, name, out),
        Cmd::Generate { dir } => generate(&dir, out),
        Cmd::Check { dir } => check(&dir, out),
        Cmd::Validate { dir } => validate(&dir, out),
        Cmd::AddEvent {
            name,
            schema,
            field,
            produce,
            consume,
            key,
            version,
            description,
            dir,
        } => add_event(
            &dir,
            AddEvent {
                name,
                schema,
                fields: field,
                produce,
                consume,
                key,
                version,
                description,
            },
            out,
        ),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Diagnostics(dir, d)) => {
            let _ = write!(err, "{}", crate::render_diagnostics(&dir, &d));
            BAD_INPUT
        }
        Err(Failure::Message(m)) => {
            let _ = writeln!(err, "error: {m}");
            BAD_INPUT
        }
    }
}

enum Failure {
    Diagnostics(PathBuf, Diagnostics),
    Message(String),
}

impl From<emit::EmitError> for Failure {
    fn from(e: emit::EmitError) -> Self {
        Failure::Message(e.to_string())
    }
}

fn io_msg(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::Message(format!("{what} `{}`: {e}", path.display()))
}

fn load(dir: &Path) -> Result<crate::Generated, Failure> {
    crate::generate(dir).map_err(|d| Failure::Diagnostics(dir.to_path_buf(), d))
}

fn generate(dir: &Path, out: &mut dyn Write) -> Result<i32, Failure> {
    let g = load(dir)?;
    let report = emit::write(dir, &g.files, false)?;
    for w in &report.written {
        let _ = writeln!(out, "wrote {w}");
    }
    for r in &report.removed {
        let _ = writeln!(out, "removed {r} (no longer generated)");
    }
    let _ = writeln!(
        out,
        "{} written, {} unchanged, {} removed",
        report.written.len(),
        report.unchanged,
        report.removed.len()
    );
    Ok(OK)
}

fn check(dir: &Path, out: &mut dyn Write) -> Result<i32, Failure> {
    let g = load(dir)?;
    let report = emit::check(dir, &g.files);
    if report.is_empty() {
        let _ = writeln!(out, "up to date");
        Ok(OK)
    } else {
        let _ = write!(out, "{report}");
        let _ = writeln!(out, "generated files are out of date: run `evgen generate`");
        Ok(DRIFT)
    }
}

fn validate(dir: &Path, out: &mut dyn Write) -> Result<i32, Failure> {
    let g = load(dir)?;
    let s = &g.service;
    let _ = writeln!(
        out,
        "ok: {} ({}), {} events, {} produced, {} consumed, {} types",
        s.name,
        s.broker.as_str(),
        s.events.len(),
        s.events.iter().filter(|e| e.produced).count(),
        s.events.iter().filter(|e| e.consumed.is_some()).count(),
        s.types.defs.len()
    );
    Ok(OK)
}

const EXAMPLE_CATALOG: &str = include_str!("../templates/example/evgen.yaml");
const EXAMPLE_SCHEMAS: &[(&str, &str)] = &[
    (
        "schemas/order.placed.json",
        include_str!("../templates/example/schemas/order.placed.json"),
    ),
    (
        "schemas/payment.processed.json",
        include_str!("../templates/example/schemas/payment.processed.json"),
    ),
];

fn new(
    dir: &Path,
    catalog: Option<&Path>,
    broker: Option<String>,
    outbox: Option<String>,
    name: Option<String>,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Failure::Message(format!(
            "`{}` exists and is not empty; choose a new folder",
            dir.display()
        )));
    }
    // Files of the catalog: (relative path, content).
    let mut files: Vec<(String, String)> = Vec::new();
    let mut text = match catalog {
        None => {
            files.extend(
                EXAMPLE_SCHEMAS
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.to_string())),
            );
            EXAMPLE_CATALOG.to_string()
        }
        Some(c) => {
            std::fs::read_to_string(c).map_err(|e| io_msg("cannot read the catalog", c, e))?
        }
    };
    let default_name = dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .to_lowercase()
                .replace(['_', ' ', '.'], "-")
        })
        .unwrap_or_default();
    let name = name.or((catalog.is_none()).then_some(default_name));
    for (key, value) in [("name", name), ("broker", broker), ("outbox", outbox)] {
        if let Some(v) = value {
            text = edit::set_service_key(&text, key, &v);
        }
    }
    // Load in memory: the catalog's schemas come from the source folder.
    let src_dir = catalog.and_then(Path::parent).map(Path::to_path_buf);
    let read = |rel: &str| -> std::io::Result<String> {
        match &src_dir {
            Some(d) => std::fs::read_to_string(d.join(rel)),
            None => EXAMPLE_SCHEMAS
                .iter()
                .find(|(p, _)| *p == rel)
                .map(|(_, c)| c.to_string())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    };
    let g = crate::generate_from(&text, &read).map_err(|d| {
        Failure::Message(d.render(&|f| {
            if f == CATALOG_FILE {
                Some(text.clone())
            } else {
                read(f).ok()
            }
        }))
    })?;
    if catalog.is_some() {
        for doc in &g.service.schemas {
            if let Ok(c) = read(&doc.path) {
                files.push((doc.path.clone(), c));
            }
        }
    }
    files.push((CATALOG_FILE.to_string(), text));
    files.push((".gitignore".to_string(), "/target\n".to_string()));
    for (rel, content) in &files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| io_msg("cannot create", p, e))?;
        }
        std::fs::write(&path, content).map_err(|e| io_msg("cannot write", &path, e))?;
    }
    let report = emit::write(dir, &g.files, true)?;
    let _ = writeln!(
        out,
        "created {} ({} files)",
        dir.display(),
        report.written.len() + files.len()
    );
    let _ = writeln!(
        out,
        "\nnext:\n  cd {}\n  cargo build\n  docker compose up --build     # or run the broker yourself and `cargo run`",
        dir.display()
    );
    Ok(OK)
}

struct AddEvent {
    name: String,
    schema: Option<PathBuf>,
    fields: Vec<String>,
    produce: bool,
    consume: bool,
    key: Option<String>,
    version: String,
    description: Option<String>,
}

/// Parse `name:type` into a JSON Schema property; `Err` names the fix.
fn field_schema(spec: &str) -> Result<(String, serde_json::Value, bool), String> {
    let (name, ty) = spec
        .split_once(':')
        .ok_or_else(|| format!("--field `{spec}`: write `name:type`, e.g. `order_id:uuid`"))?;
    if name.is_empty() {
        return Err(format!("--field `{spec}`: the field has no name"));
    }
    let (ty, optional) = match ty.strip_suffix('?') {
        Some(t) => (t, true),
        None => (ty, false),
    };
    let (ty, array) = match ty.strip_suffix("[]") {
        Some(t) => (t, true),
        None => (ty, false),
    };
    let base = match ty {
        "string" => serde_json::json!({ "type": "string" }),
        "integer" | "int" => serde_json::json!({ "type": "integer" }),
        "number" | "float" => serde_json::json!({ "type": "number" }),
        "boolean" | "bool" => serde_json::json!({ "type": "boolean" }),
        "uuid" => serde_json::json!({ "type": "string", "format": "uuid" }),
        "datetime" | "date-time" => serde_json::json!({ "type": "string", "format": "date-time" }),
        "date" => serde_json::json!({ "type": "string", "format": "date" }),
        other => {
            return Err(format!(
                "--field `{spec}`: unknown type `{other}`; use string, integer, number, boolean, uuid, datetime or date (`?` optional, `[]` array)"
            ));
        }
    };
    let schema = if array {
        serde_json::json!({ "type": "array", "items": base })
    } else {
        base
    };
    Ok((name.to_string(), schema, optional))
}

fn add_event(dir: &Path, a: AddEvent, out: &mut dyn Write) -> Result<i32, Failure> {
    let cat_path = dir.join(CATALOG_FILE);
    let text = std::fs::read_to_string(&cat_path)
        .map_err(|e| io_msg("cannot read the catalog", &cat_path, e))?;
    let bad = |m: String, help: &str| {
        Failure::Diagnostics(
            dir.to_path_buf(),
            Diagnostics(vec![Diagnostic::at("command line", None, 0, m).help(help)]),
        )
    };
    if !service::valid_event_name(&a.name) {
        return Err(bad(
            format!("invalid event name `{}`", a.name),
            "name events `<entity>.<action>` in lower snake case, e.g. `order.shipped`",
        ));
    }
    if !a.produce && !a.consume {
        return Err(bad(
            "the event is neither produced nor consumed".into(),
            "pass --produce, --consume or both",
        ));
    }
    if a.schema.is_none() && a.fields.is_empty() {
        return Err(bad(
            "no payload given".into(),
            "pass --schema FILE or one --field name:type per field",
        ));
    }
    // The schema file: (path relative to the catalog, content to write if new).
    let (schema_rel, new_schema): (String, Option<String>) = match &a.schema {
        Some(f) => {
            let content =
                std::fs::read_to_string(f).map_err(|e| io_msg("cannot read the schema", f, e))?;
            let abs_dir = std::fs::canonicalize(dir).map_err(|e| io_msg("cannot read", dir, e))?;
            let abs = std::fs::canonicalize(f).map_err(|e| io_msg("cannot read", f, e))?;
            match abs.strip_prefix(&abs_dir) {
                Ok(rel) => (rel.to_string_lossy().replace('\\', "/"), None),
                Err(_) => (format!("schemas/{}.json", a.name), Some(content)),
            }
        }
        None => {
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for spec in &a.fields {
                let (n, s, optional) =
                    field_schema(spec).map_err(|m| bad(m, "see `evgen add-event --help`"))?;
                if !optional {
                    required.push(serde_json::Value::String(n.clone()));
                }
                props.insert(n, s);
            }
            let schema = serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": crate::naming::event_type(&a.name),
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": props,
            });
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n";
            (format!("schemas/{}.json", a.name), Some(text))
        }
    };
    if new_schema.is_some() && dir.join(&schema_rel).exists() {
        return Err(bad(
            format!("`{schema_rel}` already exists"),
            "pass it with --schema to use it, or remove it",
        ));
    }
    // Edit the catalog text.
    let mut entry = format!("- name: {}\n  version: {}\n", a.name, a.version);
    if let Some(d) = &a.description {
        entry.push_str(&format!(
            "  description: {}\n",
            serde_json::to_string(d).unwrap_or_default()
        ));
    }
    entry.push_str(&format!("  schema: {schema_rel}\n"));
    if let Some(k) = &a.key {
        entry.push_str(&format!("  key: {k}\n"));
    }
    let mut new_text = edit::append_item(&text, "events", entry.trim_end());
    if a.produce {
        new_text = edit::append_item(&new_text, "produces", &format!("- {}", a.name));
    }
    if a.consume {
        new_text = edit::append_item(&new_text, "consumes", &format!("- event: {}", a.name));
    }
    // Check the result in memory before writing anything.
    let read = |rel: &str| -> std::io::Result<String> {
        match &new_schema {
            Some(c) if rel == schema_rel => Ok(c.clone()),
            _ => std::fs::read_to_string(dir.join(rel)),
        }
    };
    let g = crate::generate_from(&new_text, &read).map_err(|d| {
        Failure::Message(d.render(&|f| {
            if f == CATALOG_FILE {
                Some(new_text.clone())
            } else {
                read(f).ok()
            }
        }))
    })?;
    if let Some(c) = &new_schema {
        let p = dir.join(&schema_rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_msg("cannot create", parent, e))?;
        }
        std::fs::write(&p, c).map_err(|e| io_msg("cannot write", &p, e))?;
        let _ = writeln!(out, "wrote {schema_rel}");
    }
    std::fs::write(&cat_path, &new_text).map_err(|e| io_msg("cannot write", &cat_path, e))?;
    let _ = writeln!(out, "added {} to {CATALOG_FILE}", a.name);
    let report = emit::write(dir, &g.files, false)?;
    let _ = writeln!(
        out,
        "regenerated: {} written, {} unchanged",
        report.written.len(),
        report.unchanged
    );
    let e = g
        .service
        .events
        .iter()
        .find(|e| e.name == a.name)
        .ok_or_else(|| Failure::Message("internal: event missing after add".into()))?;
    let _ = writeln!(out, "\nnext:");
    if a.produce {
        let _ = writeln!(
            out,
            "  publish it: `publisher.{}(&event).await?` with `event: {}::{}`",
            e.method,
            g.service.events_crate.replace('-', "_"),
            e.type_name
        );
    }
    if a.consume {
        let _ = writeln!(
            out,
            "  handle it: add this method to `impl events::Handlers for App` in service/src/handlers.rs\n  (until then `cargo build` fails naming `{}`):\n",
            e.method
        );
        let _ = writeln!(out, "{}", render::handler_method(e));
    }
    Ok(OK)
}
