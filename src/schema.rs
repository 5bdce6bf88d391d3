//! JSON Schema documents: loading with `$ref` resolution inside the
//! catalog's folder, meta-schema checks, and lowering to Rust types.
//!
//! Lowering follows one rule: the Rust type of a schema node must accept
//! every instance the node accepts (completeness), and serializing what it
//! deserialized must give back an equal JSON value (fidelity). Keywords
//! at one node are conjunctive, so a type built from some of them is
//! complete for all of them: keywords that only narrow the set of valid
//! instances (`not`, `if`/`then`/`else`, `dependentSchemas`, `minimum`, …)
//! are left to the runtime validation. Where no such type exists, the node
//! becomes `serde_json::Value`.

use crate::diag::{Diagnostic, Pos, locate_json_pointer};
use crate::model::{Field, Ty, TypeDef, TypeKind, Types};
use crate::naming::{self, Scope};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One loaded schema document.
#[derive(Debug, Clone)]
pub struct Doc {
    /// File name shown in errors.
    pub display: String,
    /// Virtual path relative to the catalog folder, `/`-separated.
    pub path: String,
    /// The schema (shared, so lowering can hold a node while it records
    /// what it found).
    pub value: Arc<Value>,
    /// Original text, for positions in errors (absent for inline schemas).
    pub text: Option<String>,
    /// For a document evgen derived from another one: the document its
    /// `$ref`s resolve against (unused by the lowering, kept for callers).
    pub origin: Option<String>,
}

/// Reads a file relative to the catalog folder (from several threads).
pub type ReadFile<'a> = dyn Fn(&str) -> std::io::Result<String> + Sync + 'a;

/// The base URI of the catalog folder: the generated crate serves the
/// embedded documents under it too.
pub const BASE_URI: &str = "evgen:///";

/// Normalize `base_dir/rel` into a path inside the catalog folder, or say why not.
pub fn join_inside(base_path: &str, rel: &str) -> Result<String, String> {
    if rel.contains("://") || rel.starts_with("//") {
        return Err(format!(
            "`{rel}` is a remote reference; evgen never reads the network"
        ));
    }
    if rel.starts_with('/') || rel.contains('\\') || rel.get(1..2) == Some(":") {
        return Err(format!(
            "`{rel}` is an absolute path; use a path relative to the catalog"
        ));
    }
    let mut parts: Vec<&str> = base_path.split('/').collect();
    parts.pop(); // the file name
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{rel}` leaves the catalog's folder"));
                }
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err(format!("`{rel}` names no file"));
    }
    Ok(parts.join("/"))
}

/// Percent-decoding for JSON pointer fragments.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape_token(t: &str) -> Cow<'_, str> {
    if t.contains(['~', '/']) {
        Cow::Owned(t.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(t)
    }
}

/// The node at a JSON pointer: [`Value::pointer`] without allocating for
/// tokens that need no unescaping.
fn pointer<'v>(root: &'v Value, ptr: &str) -> Option<&'v Value> {
    if ptr.is_empty() {
        return Some(root);
    }
    let rest = ptr.strip_prefix('/')?;
    rest.split('/').try_fold(root, |node, token| {
        let token: Cow<'_, str> = if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        };
        match node {
            Value::Object(m) => m.at(&token),
            Value::Array(a) => {
                // As `Value::pointer`: no sign, no leading zero.
                if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
                    return None;
                }
                a.get(token.parse::<usize>().ok()?)
            }
            _ => None,
        }
    })
}

/// The parts of a URI reference (RFC 3986, section 3).
#[derive(Debug, Clone, Default, PartialEq)]
struct UriRef {
    scheme: Option<String>,
    authority: Option<String>,
    path: String,
    query: Option<String>,
    fragment: Option<String>,
}

impl UriRef {
    fn parse(s: &str) -> UriRef {
        let (rest, fragment) = match s.split_once('#') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (s, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_string())),
            None => (rest, None),
        };
        let mut rest = rest;
        let mut scheme = None;
        if let Some(i) = rest.find(':') {
            let cand = &rest[..i];
            if cand.starts_with(|c: char| c.is_ascii_alphabetic())
                && cand
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            {
                scheme = Some(cand.to_ascii_lowercase());
                rest = &rest[i + 1..];
            }
        }
        let mut authority = None;
        if let Some(a) = rest.strip_prefix("//") {
            let end = a.find('/').unwrap_or(a.len());
            authority = Some(a[..end].to_string());
            rest = &a[end..];
        }
        UriRef {
            scheme,
            authority,
            path: rest.to_string(),
            query,
            fragment,
        }
    }

    fn to_string_without_fragment(&self) -> String {
        let mut s = String::new();
        if let Some(x) = &self.scheme {
            s.push_str(x);
            s.push(':');
        }
        if let Some(a) = &self.authority {
            s.push_str("//");
            s.push_str(a);
        }
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }

    /// Resolve `r` against `self` (RFC 3986, section 5.2); the flag tells
    /// whether a `..` climbed above the root of the path.
    fn resolve(&self, r: &UriRef) -> (UriRef, bool) {
        let mut escaped = false;
        let mut dots = |p: &str| {
            let (p, e) = remove_dots(p);
            escaped |= e;
            p
        };
        let mut t = if r.scheme.is_some() {
            UriRef {
                path: dots(&r.path),
                ..r.clone()
            }
        } else if r.authority.is_some() {
            UriRef {
                scheme: self.scheme.clone(),
                path: dots(&r.path),
                ..r.clone()
            }
        } else if r.path.is_empty() {
            UriRef {
                scheme: self.scheme.clone(),
                authority: self.authority.clone(),
                path: self.path.clone(),
                query: r.query.clone().or_else(|| self.query.clone()),
                fragment: None,
            }
        } else {
            let path = if r.path.starts_with('/') {
                dots(&r.path)
            } else if self.authority.is_some() && self.path.is_empty() {
                dots(&format!("/{}", r.path))
            } else {
                let dir = self.path.rfind('/').map_or("", |i| &self.path[..=i]);
                dots(&format!("{dir}{}", r.path))
            };
            UriRef {
                scheme: self.scheme.clone(),
                authority: self.authority.clone(),
                path,
                query: r.query.clone(),
                fragment: None,
            }
        };
        t.fragment = r.fragment.clone();
        (t, escaped)
    }
}

/// RFC 3986 `remove_dot_segments`, reporting a `..` above the root.
fn remove_dots(path: &str) -> (String, bool) {
    let abs = path.starts_with('/');
    let segs: Vec<&str> = path.split('/').collect();
    let start = usize::from(abs);
    let n = segs.len();
    let mut out: Vec<&str> = Vec::new();
    let mut escaped = false;
    for (i, s) in segs.iter().enumerate().skip(start) {
        let last = i + 1 == n;
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    escaped = true;
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    (if abs { format!("/{joined}") } else { joined }, escaped)
}

/// Schema dialects, as far as lowering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Draft {
    /// draft-04, -06 and -07: `$ref` hides its siblings, `$id` with a
    /// fragment is an anchor, `items` may be an array.
    Legacy,
    /// 2019-09: `$ref` beside other keywords, `items` may be an array.
    D2019,
    /// 2020-12 (the default).
    D2020,
}

fn draft_of_uri(s: &str) -> Option<Draft> {
    if s.contains("json-schema.org/draft-0") {
        Some(Draft::Legacy)
    } else if s.contains("json-schema.org/draft/2019-09") {
        Some(Draft::D2019)
    } else if s.contains("json-schema.org/draft/2020-12") {
        Some(Draft::D2020)
    } else {
        None
    }
}

/// The JSON Schema meta-schemas: every JSON Schema implementation knows
/// them without reading the network.
fn is_meta_schema_uri(u: &UriRef) -> bool {
    matches!(u.scheme.as_deref(), Some("http" | "https"))
        && u.authority.as_deref() == Some("json-schema.org")
        && u.path.starts_with("/draft")
}

/// How evgen lowers schemas.
#[derive(Debug, Clone)]
pub struct Options {
    /// Give optional properties with a `default` that default instead of
    /// an `Option` (serializing then writes the default out).
    pub apply_defaults: bool,
    /// `format: date-time`, `date` and `uuid` strings become chrono and
    /// uuid types (which normalize the text: offsets become UTC, UUIDs
    /// lower case); otherwise they stay `String`.
    pub typed_formats: bool,
    /// Integers that `minimum`/`maximum` do not keep within 64 bits become
    /// `serde_json::Number`, which holds any JSON number; otherwise they
    /// are `i64` (`u64` when not negative) and an integer beyond 64 bits
    /// fails to deserialize.
    pub big_integers: bool,
    /// Absolute URI prefixes served from folders of the catalog:
    /// `(uri prefix, folder prefix)`. Empty for catalogs: evgen never
    /// reads the network; the schema corpus test maps the JSON Schema Test
    /// Suite's `http://localhost:1234/` to its `remotes/` folder.
    pub remotes: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            apply_defaults: true,
            typed_formats: true,
            big_integers: false,
            remotes: Vec::new(),
        }
    }
}

/// Sets of JSON types, as bits.
type Kinds = u8;
const K_NULL: Kinds = 1;
const K_BOOL: Kinds = 2;
const K_OBJECT: Kinds = 4;
const K_ARRAY: Kinds = 8;
/// Numbers that are not integers.
const K_FRACTION: Kinds = 16;
const K_INTEGER: Kinds = 32;
const K_STRING: Kinds = 64;
const K_ALL: Kinds = 127;

fn kind_of_name(s: &str) -> Kinds {
    match s {
        "null" => K_NULL,
        "boolean" => K_BOOL,
        "object" => K_OBJECT,
        "array" => K_ARRAY,
        "number" => K_FRACTION | K_INTEGER,
        "integer" => K_INTEGER,
        "string" => K_STRING,
        _ => 0,
    }
}

/// The kinds a `type` keyword allows (`K_ALL` without one).
fn declared_kinds(m: &Map<String, Value>) -> Kinds {
    match m.at("type") {
        Some(Value::String(s)) => kind_of_name(s),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .fold(0, |k, s| k | kind_of_name(s)),
        _ => K_ALL,
    }
}

fn kind_of_value(v: &Value) -> Kinds {
    match v {
        Value::Null => K_NULL,
        Value::Bool(_) => K_BOOL,
        Value::Object(_) => K_OBJECT,
        Value::Array(_) => K_ARRAY,
        Value::String(_) => K_STRING,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                K_INTEGER
            } else {
                K_FRACTION
            }
        }
    }
}

/// Keywords that neither assert nor shape anything.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$recursiveAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// A node that accepts every instance: `serde_json::Value` is its exact type.
fn unconstrained(v: &Value) -> bool {
    let all = |k: &str, f: fn(&Value) -> bool| {
        v.at(k)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(f))
    };
    let any = |k: &str, f: fn(&Value) -> bool| {
        v.at(k)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(f))
    };
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.iter().all(|(k, s)| match k.as_str() {
            "allOf" => all(k, unconstrained),
            "anyOf" => any(k, unconstrained),
            "oneOf" => v.at(k).and_then(Value::as_array).is_some_and(|a| {
                a.iter().filter(|s| unconstrained(s)).count() == 1
                    && a.iter().all(|s| unconstrained(s) || unsatisfiable(s))
            }),
            "not" => unsatisfiable(s),
            "items"
            | "additionalProperties"
            | "additionalItems"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => unconstrained(s),
            "if" | "then" | "else" => {
                unconstrained(m.at("then").unwrap_or(&Value::Bool(true)))
                    && unconstrained(m.at("else").unwrap_or(&Value::Bool(true)))
            }
            "properties" | "patternProperties" | "dependentSchemas" => {
                s.as_object().is_some_and(|o| o.values().all(unconstrained))
            }
            "required" => s.as_array().is_some_and(Vec::is_empty),
            _ => ANNOTATIONS.contains(&k.as_str()),
        }),
        _ => false,
    }
}

/// A node that accepts no instance: any type is exact.
fn unsatisfiable(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !*b,
        Value::Object(m) => {
            m.at("enum")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                || m.at("type")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
                || m.at("not").is_some_and(unconstrained)
                || m.at("allOf")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(unsatisfiable))
                || ["anyOf", "oneOf"].iter().any(|k| {
                    m.at(k)
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().all(unsatisfiable))
                })
        }
        _ => false,
    }
}

/// Keywords whose subschemas are schemas: single, arrays, maps.
const SUB_ONE: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "items",
];
const SUB_MANY: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
const SUB_MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];

/// Keyword lookup in schema objects. serde_json's map hashes the key
/// (SipHash); a schema object has few keys, and comparing them is cheaper.
trait Lookup {
    fn at(&self, k: &str) -> Option<&Value>;

    fn has(&self, k: &str) -> bool {
        self.at(k).is_some()
    }
}

impl Lookup for Map<String, Value> {
    fn at(&self, k: &str) -> Option<&Value> {
        if self.len() <= 16 {
            self.iter().find_map(|(key, v)| (key == k).then_some(v))
        } else {
            self.get(k)
        }
    }
}

impl Lookup for Value {
    fn at(&self, k: &str) -> Option<&Value> {
        self.as_object()?.at(k)
    }
}

/// Where a schema node lives: document and JSON pointer.
type Loc = (String, String);

/// A node lowered knowing its instances are of these kinds.
type Key = (String, String, Kinds);

/// The node a missing pointer stands for: it accepts anything.
static ANY: Value = Value::Bool(true);

/// The node at `ptr` of a shared document, [`ANY`] when there is none.
fn node_in<'v>(root: Option<&'v Arc<Value>>, ptr: &str) -> &'v Value {
    root.and_then(|v| pointer(v, ptr)).unwrap_or(&ANY)
}

/// What a `$ref` names.
enum Target {
    /// A node of a loaded document.
    Node(Loc),
    /// A JSON Schema meta-schema: any schema, kept as a value.
    Meta,
}

/// The object keywords of one part of a struct.
struct ObjectPart {
    loc: Loc,
    props: Vec<(String, Loc)>,
    required: Vec<String>,
    closed: bool,
    extra: Option<Loc>,
    patterns: bool,
}

/// A file document read, parsed and checked on its own, as `load` does
/// for a file no document references (see [`Lowerer::preload`]).
struct Loaded {
    doc: Option<Doc>,
    ok: bool,
    errors: Vec<Diagnostic>,
}

fn load_alone(read: &ReadFile<'_>, remotes: &[(String, String)], path: &str) -> Loaded {
    let failed = |d: Diagnostic| Loaded {
        doc: None,
        ok: false,
        errors: vec![d],
    };
    let text = match read(path) {
        Ok(t) => t,
        Err(e) => return failed(cannot_read(path, None, path, &e)),
    };
    let doc = match parse_doc(path, text) {
        Ok(d) => d,
        Err(d) => return failed(d),
    };
    let mut errors = Vec::new();
    let ok = check_meta(remotes, &doc, &mut errors);
    Loaded {
        doc: Some(doc),
        ok,
        errors,
    }
}

/// Schema files read, parsed and checked ahead of [`Lowerer::load`].
pub(crate) struct Prefetched(Vec<(String, Loaded)>);

/// Read, parse and check `paths` on the other cores while `first` runs on
/// this one, as a lowerer with default options loads them; they stop when
/// `first` returns, so the result may hold only some of them.
pub(crate) fn prefetch_beside<U>(
    read: &ReadFile<'_>,
    paths: &[String],
    first: impl FnOnce() -> U,
) -> (U, Prefetched) {
    let (u, done) = crate::par::beside(paths, |p| load_alone(read, &[], p), first);
    let files = done
        .into_iter()
        .map(|(i, l)| (paths[i].clone(), l))
        .collect();
    (u, Prefetched(files))
}

/// `path` could not be read (reported at `file`, the document naming it).
fn cannot_read(file: &str, pos: Option<Pos>, path: &str, e: &std::io::Error) -> Diagnostic {
    Diagnostic::at(
        file,
        pos,
        1,
        format!("cannot read schema file `{path}`: {e}"),
    )
    .help("create the file, or fix the path (relative to the file that names it)")
}

fn parse_doc(path: &str, text: String) -> Result<Doc, Diagnostic> {
    match serde_json::from_str(&text) {
        Ok(value) => Ok(Doc {
            display: path.to_string(),
            path: path.to_string(),
            value: Arc::new(value),
            text: Some(text),
            origin: None,
        }),
        Err(e) => {
            let pos = Pos {
                line: e.line().max(1),
                col: e.column().max(1),
            };
            Err(
                Diagnostic::at(path, Some(pos), 1, format!("invalid JSON: {e}"))
                    .help("a schema file is one JSON document"),
            )
        }
    }
}

/// The remote prefix of `remotes` that serves `uri`, as a catalog path.
fn remote_path(remotes: &[(String, String)], uri: &str) -> Option<String> {
    remotes.iter().find_map(|(prefix, folder)| {
        let rest = uri.strip_prefix(prefix.as_str())?;
        join_inside(&format!("{folder}x"), rest).ok()
    })
}

/// Check a document against its meta-schema (draft-07 or 2020-12, by
/// `$schema`); problems go to `errors`.
fn check_meta(remotes: &[(String, String)], doc: &Doc, errors: &mut Vec<Diagnostic>) -> bool {
    let mut ok = true;
    if let Some(s) = doc.value.at("$schema").and_then(Value::as_str)
        && draft_of_uri(s).is_none()
    {
        // A custom meta-schema is only known through a remote mapping.
        if remote_path(remotes, s.split('#').next().unwrap_or(s)).is_some() {
            return true;
        }
        let pos = doc
            .text
            .as_deref()
            .map(|t| locate_json_pointer(t, "/$schema"));
        errors.push(
            Diagnostic::at(&doc.display, pos, s.len() + 2, format!("unknown `$schema` `{s}`"))
                .help("use \"http://json-schema.org/draft-07/schema#\" or \"https://json-schema.org/draft/2020-12/schema\""),
        );
        return false;
    }
    match jsonschema::meta::validator_for(&doc.value) {
        // Most documents are valid: the boolean check is much cheaper
        // than collecting errors.
        Ok(v) if v.is_valid(&doc.value) => {}
        Ok(v) => {
            for e in v.iter_errors(&doc.value) {
                ok = false;
                let ptr = e.instance_path().to_string();
                let pos = doc.text.as_deref().map(|t| locate_json_pointer(t, &ptr));
                let at = if ptr.is_empty() {
                    "the root".to_string()
                } else {
                    format!("`{ptr}`")
                };
                errors.push(
                    Diagnostic::at(
                        &doc.display,
                        pos,
                        1,
                        format!("not a valid JSON Schema at {at}: {e}"),
                    )
                    .help("fix the schema so that it validates against its meta-schema"),
                );
            }
        }
        Err(e) => {
            ok = false;
            errors.push(
                Diagnostic::at(
                    &doc.display,
                    None,
                    1,
                    format!("not a valid JSON Schema: {e}"),
                )
                .help("use draft-07 or 2020-12"),
            );
        }
    }
    ok
}

/// Lowers schema nodes into [`Types`].
pub struct Lowerer<'a> {
    read: &'a ReadFile<'a>,
    /// Loaded documents by virtual path.
    pub docs: BTreeMap<String, Doc>,
    /// Generated types.
    pub types: Types,
    /// How to lower.
    pub options: Options,
    memo: FxHashMap<Key, Ty>,
    names: Scope,
    /// A fixed name for the type created for this node (an event's root).
    root_name: Option<(Key, String)>,
    /// The node each named type was created for.
    created_at: BTreeMap<usize, Loc>,
    /// The type that took the root's fixed name.
    root_def: Option<usize>,
    /// Problems found.
    pub errors: Vec<Diagnostic>,
    /// Nodes given a precise Rust type (a node that accepts anything is
    /// precise as `serde_json::Value`).
    pub precise: usize,
    /// Nodes kept as `serde_json::Value` although the schema constrains them.
    pub fallback: usize,
    /// Whether each lowered node got a precise type. (The maps below are
    /// only looked up, never iterated into output, so they hash.)
    classes: FxHashMap<Loc, bool>,
    depth: usize,
    /// Retrieval URI of each document.
    doc_uri: FxHashMap<String, String>,
    /// Documents whose identifiers are indexed.
    indexed: FxHashSet<String>,
    /// Resources (`$id`s and documents) by absolute URI.
    resources: FxHashMap<String, Loc>,
    /// `$anchor`s (and legacy `$id: "#name"`) by `uri#name`.
    anchors: FxHashMap<String, Loc>,
    /// The base URI of nodes that set one with `$id`.
    bases: FxHashMap<Loc, String>,
    /// The dialect of each document, and whether its meta-schema turns
    /// assertions off (no validation vocabulary).
    drafts: FxHashMap<String, (Draft, bool)>,
    /// Files loaded ahead of time, until `load` takes them.
    preloaded: FxHashMap<String, Loaded>,
}

impl<'a> Lowerer<'a> {
    /// A lowerer whose type names avoid `reserved`.
    pub fn new(read: &'a ReadFile<'a>, reserved: &[&str]) -> Self {
        Lowerer {
            read,
            docs: BTreeMap::new(),
            types: Types::default(),
            options: Options::default(),
            memo: FxHashMap::default(),
            names: Scope::with_reserved(reserved),
            created_at: BTreeMap::new(),
            root_def: None,
            root_name: None,
            errors: Vec::new(),
            precise: 0,
            fallback: 0,
            classes: FxHashMap::default(),
            depth: 0,
            doc_uri: FxHashMap::default(),
            indexed: FxHashSet::default(),
            resources: FxHashMap::default(),
            anchors: FxHashMap::default(),
            bases: FxHashMap::default(),
            drafts: FxHashMap::default(),
            preloaded: FxHashMap::default(),
        }
    }

    /// Claim a type name now (event types get their names first).
    pub fn claim_name(&mut self, name: &str) -> String {
        self.names.claim(name)
    }

    /// The named type `j` was created for the root of `doc`.
    pub fn is_root_def(&self, j: usize, doc: &str) -> bool {
        self.created_at
            .get(&j)
            .is_some_and(|(d, p)| d == doc && p.is_empty())
    }

    /// Add an already parsed document.
    pub fn add_doc(&mut self, doc: Doc) {
        self.docs.insert(doc.path.clone(), doc);
    }

    /// Load a file document, reporting read/parse/meta-schema problems.
    /// Returns false when it could not be used.
    pub fn load(&mut self, path: &str, from: Option<(&str, &str)>) -> bool {
        if self.docs.contains_key(path) {
            return true;
        }
        let Some((file, ptr)) = from else {
            let loaded = match self.preloaded.remove(path) {
                Some(l) => l,
                None => load_alone(self.read, &self.options.remotes, path),
            };
            self.errors.extend(loaded.errors);
            if let Some(doc) = loaded.doc {
                self.docs.insert(path.to_string(), doc);
            }
            return loaded.ok;
        };
        let text = match (self.read)(path) {
            Ok(t) => t,
            Err(e) => {
                let pos = self
                    .docs
                    .get(file)
                    .and_then(|d| d.text.as_deref())
                    .map(|t| locate_json_pointer(t, ptr));
                self.errors.push(cannot_read(file, pos, path, &e));
                return false;
            }
        };
        let doc = match parse_doc(path, text) {
            Ok(d) => d,
            Err(d) => {
                self.errors.push(d);
                return false;
            }
        };
        // A document without `$schema` is in the dialect of the one that
        // references it.
        let inherited =
            (doc.value.is_object() && doc.value.at("$schema").is_none()).then(|| self.draft(file));
        let ok = match inherited {
            Some((d, _)) if d != Draft::D2020 => {
                let mut probe = doc.clone();
                let uri = if d == Draft::Legacy {
                    "http://json-schema.org/draft-07/schema#"
                } else {
                    "https://json-schema.org/draft/2019-09/schema"
                };
                Arc::make_mut(&mut probe.value)["$schema"] = uri.into();
                self.check_meta(&probe)
            }
            _ => self.check_meta(&doc),
        };
        if let Some(d) = inherited {
            self.drafts.insert(path.to_string(), d);
        }
        self.docs.insert(path.to_string(), doc);
        ok
    }

    /// Read, parse and check `paths` ahead of time on every core; a later
    /// `load` of one of them without a referrer takes the result, so
    /// documents and errors come out as if loaded one after another.
    pub fn preload(&mut self, paths: &[String]) {
        let mut seen = FxHashSet::default();
        let todo: Vec<&str> = paths
            .iter()
            .map(String::as_str)
            .filter(|p| {
                !self.docs.contains_key(*p) && !self.preloaded.contains_key(*p) && seen.insert(*p)
            })
            .collect();
        let (read, remotes) = (self.read, &self.options.remotes);
        let loaded = crate::par::map(&todo, |p| load_alone(read, remotes, p));
        self.preloaded
            .extend(todo.iter().map(|p| p.to_string()).zip(loaded));
    }

    /// Take files prefetched for a lowerer with default options (see
    /// [`prefetch_beside`]), as [`Lowerer::preload`] would have loaded them.
    pub(crate) fn adopt(&mut self, early: Prefetched) {
        if !self.options.remotes.is_empty() {
            return;
        }
        for (path, loaded) in early.0 {
            if !self.docs.contains_key(&path) {
                self.preloaded.entry(path).or_insert(loaded);
            }
        }
    }

    /// The remote prefix that serves `uri`, as a catalog path.
    fn remote_path(&self, uri: &str) -> Option<String> {
        remote_path(&self.options.remotes, uri)
    }

    /// Check a document against its meta-schema (draft-07 or 2020-12, by `$schema`).
    pub fn check_meta(&mut self, doc: &Doc) -> bool {
        check_meta(&self.options.remotes, doc, &mut self.errors)
    }

    fn err(&mut self, doc: &str, ptr: &str, msg: String, help: &str) {
        let (display, pos) = match self.docs.get(doc) {
            Some(d) => (
                d.display.clone(),
                d.text.as_deref().map(|t| locate_json_pointer(t, ptr)),
            ),
            None => (doc.to_string(), None),
        };
        self.errors
            .push(Diagnostic::at(display, pos, 1, msg).help(help));
    }

    fn node(&self, doc: &str, ptr: &str) -> Option<&Value> {
        pointer(&self.docs.get(doc)?.value, ptr)
    }

    /// The document `doc`, shared: a node borrowed from it stays valid
    /// while the lowerer changes.
    fn doc_value(&self, doc: &str) -> Option<Arc<Value>> {
        self.docs.get(doc).map(|d| Arc::clone(&d.value))
    }

    /// The dialect of a document and whether its assertions are off.
    fn draft(&mut self, doc: &str) -> (Draft, bool) {
        if let Some(d) = self.drafts.get(doc) {
            return *d;
        }
        let schema = self
            .docs
            .get(doc)
            .and_then(|d| d.value.at("$schema"))
            .and_then(Value::as_str)
            .map(String::from);
        self.drafts.insert(doc.to_string(), (Draft::D2020, false));
        let d = match schema {
            None => (Draft::D2020, false),
            Some(s) => match draft_of_uri(&s) {
                Some(d) => (d, false),
                None => self.custom_meta(&s),
            },
        };
        self.drafts.insert(doc.to_string(), d);
        d
    }

    /// The dialect of a custom meta-schema served by a remote mapping.
    fn custom_meta(&mut self, uri: &str) -> (Draft, bool) {
        let Some(path) = self.remote_path(uri.split('#').next().unwrap_or(uri)) else {
            return (Draft::D2020, false);
        };
        if !self.load(&path, None) {
            return (Draft::D2020, false);
        }
        let (draft, _) = self.draft(&path);
        let no_validation = self
            .docs
            .get(&path)
            .and_then(|d| d.value.at("$vocabulary"))
            .and_then(Value::as_object)
            .is_some_and(|v| !v.keys().any(|k| k.ends_with("/vocab/validation")));
        (draft, no_validation)
    }

    /// Record the identifiers of a document.
    fn index(&mut self, doc: &str) {
        if !self.indexed.insert(doc.to_string()) {
            return;
        }
        let Some(value) = self.doc_value(doc) else {
            return;
        };
        let (draft, _) = self.draft(doc);
        let uri = self
            .doc_uri
            .get(doc)
            .cloned()
            .unwrap_or_else(|| format!("{BASE_URI}{doc}"));
        self.resources
            .entry(uri.clone())
            .or_insert_with(|| (doc.to_string(), String::new()));
        self.bases
            .insert((doc.to_string(), String::new()), uri.clone());
        self.walk_ids(doc, &value, "", &uri, draft, 0);
    }

    fn walk_ids(
        &mut self,
        doc: &str,
        v: &Value,
        ptr: &str,
        base: &str,
        draft: Draft,
        depth: usize,
    ) {
        let Value::Object(m) = v else { return };
        if depth > 200 {
            return;
        }
        let mut base = Cow::Borrowed(base);
        let legacy_ref = draft == Draft::Legacy && m.has("$ref");
        if let Some(id) = m.at("$id").and_then(Value::as_str)
            && !legacy_ref
        {
            let (t, _) = UriRef::parse(&base).resolve(&UriRef::parse(id));
            let frag = t.fragment.clone().unwrap_or_default();
            let res = t.to_string_without_fragment();
            if draft == Draft::Legacy && id.starts_with('#') {
                self.anchors
                    .entry(format!("{base}#{frag}"))
                    .or_insert_with(|| (doc.to_string(), ptr.to_string()));
            } else {
                base = Cow::Owned(res.clone());
                self.resources
                    .entry(res.clone())
                    .or_insert_with(|| (doc.to_string(), ptr.to_string()));
                self.bases
                    .insert((doc.to_string(), ptr.to_string()), res.clone());
                if !frag.is_empty() && !frag.starts_with('/') {
                    self.anchors
                        .entry(format!("{res}#{frag}"))
                        .or_insert_with(|| (doc.to_string(), ptr.to_string()));
                }
            }
        }
        if draft != Draft::Legacy {
            for k in ["$anchor", "$dynamicAnchor"] {
                if let Some(a) = m.at(k).and_then(Value::as_str) {
                    self.anchors
                        .entry(format!("{base}#{a}"))
                        .or_insert_with(|| (doc.to_string(), ptr.to_string()));
                }
            }
        }
        for (k, c) in m {
            let kp = || format!("{ptr}/{}", escape_token(k));
            if SUB_ONE.contains(&k.as_str()) && !c.is_array() {
                self.walk_ids(doc, c, &kp(), &base, draft, depth + 1);
            } else if SUB_MANY.contains(&k.as_str())
                && let Value::Array(a) = c
            {
                let kp = kp();
                for (i, s) in a.iter().enumerate() {
                    self.walk_ids(doc, s, &format!("{kp}/{i}"), &base, draft, depth + 1);
                }
            } else if SUB_MAP.contains(&k.as_str())
                && let Value::Object(o) = c
            {
                let kp = kp();
                for (n, s) in o {
                    let sp = format!("{kp}/{}", escape_token(n));
                    self.walk_ids(doc, s, &sp, &base, draft, depth + 1);
                }
            }
        }
    }

    /// The base URI in effect at `doc#ptr`.
    fn base_at(&mut self, doc: &str, ptr: &str) -> String {
        self.index(doc);
        let mut p = ptr;
        loop {
            if let Some(b) = self.bases.get(&(doc.to_string(), p.to_string())) {
                return b.clone();
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return format!("{BASE_URI}{doc}"),
            }
        }
    }

    /// Resolve the `$ref` of the node at `doc#node_ptr`; `Err` is already reported.
    fn resolve_ref(&mut self, doc: &str, node_ptr: &str, r: &str) -> Result<Target, ()> {
        let at = format!("{node_ptr}/$ref");
        let base = self.base_at(doc, node_ptr);
        let reference = UriRef::parse(r);
        let base_ref = UriRef::parse(&base);
        let in_catalog = base_ref.scheme.as_deref() == Some("evgen");
        let refuse = |me: &mut Self, why: String| {
            me.err(
                doc,
                &at,
                format!("unsupported: $ref at {at} ({why})"),
                "keep every schema inside the catalog's folder and reference it by a relative path",
            );
            Err(())
        };
        let file = r.split('#').next().unwrap_or_default();
        if in_catalog
            && reference.scheme.is_none()
            && (file.starts_with('/') || file.contains('\\'))
            && let Err(why) = join_inside("x", file)
        {
            return refuse(self, why);
        }
        let (target, escaped) = base_ref.resolve(&reference);
        if escaped && target.scheme.as_deref() == Some("evgen") {
            return refuse(self, format!("`{file}` leaves the catalog's folder"));
        }
        let resource = target.to_string_without_fragment();
        let frag = percent_decode(target.fragment.as_deref().unwrap_or(""));
        let root = match self.resources.get(&resource).cloned() {
            Some(loc) => loc,
            None => {
                let path = if let Some(p) = resource.strip_prefix(BASE_URI) {
                    Some(p.to_string())
                } else {
                    self.remote_path(&resource)
                };
                match path {
                    Some(p) if !p.is_empty() && !p.ends_with('/') => {
                        if !self.load(&p, Some((doc, &at))) {
                            return Err(());
                        }
                        if resource.starts_with(BASE_URI) {
                            self.doc_uri
                                .entry(p.clone())
                                .or_insert_with(|| resource.clone());
                        } else {
                            self.doc_uri.insert(p.clone(), resource.clone());
                        }
                        self.index(&p);
                        self.resources
                            .get(&resource)
                            .cloned()
                            .unwrap_or((p, String::new()))
                    }
                    _ if is_meta_schema_uri(&target) => return Ok(Target::Meta),
                    _ => {
                        let what = if file.is_empty() { r } else { file };
                        let why = if reference.scheme.is_none() {
                            // A relative reference against an absolute `$id`.
                            format!(
                                "`{what}` resolves against `{base}` to `{resource}`, a remote reference; evgen never reads the network"
                            )
                        } else {
                            format!("`{what}` is a remote reference; evgen never reads the network")
                        };
                        return refuse(self, why);
                    }
                }
            }
        };
        let (target_doc, rptr) = root;
        let ptr = if frag.is_empty() || frag.starts_with('/') {
            format!("{rptr}{frag}")
        } else {
            self.index(&target_doc);
            match self.anchors.get(&format!("{resource}#{frag}")) {
                Some((_, p)) => p.clone(),
                None => {
                    self.err(
                        doc,
                        &at,
                        format!("$ref `{r}`: no `$anchor` named `{frag}`"),
                        "add the anchor or fix the reference",
                    );
                    return Err(());
                }
            }
        };
        let target_doc = if frag.is_empty() || frag.starts_with('/') {
            target_doc
        } else {
            self.anchors[&format!("{resource}#{frag}")].0.clone()
        };
        if self.node(&target_doc, &ptr).is_none() {
            self.err(
                doc,
                &at,
                format!("$ref `{r}` points at nothing (`{ptr}` in `{target_doc}`)"),
                "fix the JSON pointer after `#`",
            );
            return Err(());
        }
        Ok(Target::Node((target_doc, ptr)))
    }

    /// Follow a chain of `$ref`s that carry no other assertion; `Ok(None)`
    /// for a meta-schema, `Err` when a reference is broken (reported).
    fn follow(&mut self, doc: &str, ptr: &str) -> Result<Option<Loc>, ()> {
        let mut loc = (doc.to_string(), ptr.to_string());
        for _ in 0..32 {
            let Some(Value::Object(m)) = self.node(&loc.0, &loc.1) else {
                break;
            };
            let Some(r) = m.at("$ref").and_then(Value::as_str).map(String::from) else {
                break;
            };
            let alone = m
                .keys()
                .all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str()));
            if !alone && self.draft(&loc.0).0 != Draft::Legacy {
                break;
            }
            match self.resolve_ref(&loc.0, &loc.1, &r)? {
                Target::Node(l) => loc = l,
                Target::Meta => return Ok(None),
            }
        }
        Ok(Some(loc))
    }

    /// Lower the node at `doc#ptr`, naming generated types after `hint`.
    pub fn lower_at(&mut self, doc: &str, ptr: &str, hint: &str) -> Ty {
        self.lower_as(doc, ptr, hint, K_ALL)
    }

    /// Lower the node at `doc#ptr` where valid instances are known to be
    /// of the JSON types `kinds`.
    fn lower_as(&mut self, doc: &str, ptr: &str, hint: &str, kinds: Kinds) -> Ty {
        let key = (doc.to_string(), ptr.to_string(), kinds);
        if let Some(t) = self.memo.get(&key) {
            return t.clone();
        }
        // Placeholder for recursion through non-named nodes: a value
        // accepts whatever the recursion accepts.
        self.memo.insert(key.clone(), Ty::Value);
        self.depth += 1;
        let ty = if self.depth > 64 {
            self.classify(doc, ptr, false);
            Ty::Value
        } else {
            let root = self.doc_value(doc);
            let node = node_in(root.as_ref(), ptr);
            let ty = self.lower(doc, ptr, node, hint, &key);
            let alias = node.as_object().is_some_and(|m| {
                m.has("$ref")
                    && m.keys()
                        .all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str()))
            });
            if !alias {
                // `true` and `{}` accept anything, `false` nothing: a value
                // is as precise as a type can be.
                let exact = unsatisfiable(node) || (kinds == K_ALL && unconstrained(node));
                self.classify(doc, ptr, ty != Ty::Value || exact);
            }
            ty
        };
        self.depth -= 1;
        self.memo.insert(key, ty.clone());
        ty
    }

    /// Record whether the node at `doc#ptr` got a precise type (the last
    /// lowering of a node counts).
    fn classify(&mut self, doc: &str, ptr: &str, precise: bool) {
        match self
            .classes
            .insert((doc.to_string(), ptr.to_string()), precise)
        {
            Some(true) => self.precise -= 1,
            Some(false) => self.fallback -= 1,
            None => {}
        }
        if precise {
            self.precise += 1;
        } else {
            self.fallback += 1;
        }
    }

    /// The nodes kept as values although the schema constrains them.
    pub fn fallback_nodes(&self) -> Vec<(String, String)> {
        let mut nodes: Vec<Loc> = self
            .classes
            .iter()
            .filter(|(_, p)| !**p)
            .map(|(l, _)| l.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Lower an event's root: a type created for the root node itself takes
    /// `name`, which the caller has already claimed.
    pub fn lower_root(&mut self, doc: &str, name: &str) -> Ty {
        self.root_name = Some(((doc.to_string(), String::new(), K_ALL), name.to_string()));
        let t = self.lower_at(doc, "", name);
        self.root_name = None;
        t
    }

    fn reserve(
        &mut self,
        hint: &str,
        node: &Map<String, Value>,
        memo_key: Option<&Key>,
        nullable: bool,
    ) -> usize {
        // A nullable root is an `Option` around this type, which the
        // caller wraps in a newtype of the root's name.
        let fixed = match (&self.root_name, &memo_key) {
            (Some((k, _)), Some(m)) if k == *m && !nullable => {
                self.root_name.take().map(|(_, n)| n)
            }
            _ => None,
        };
        let is_root = fixed.is_some();
        let name = fixed.unwrap_or_else(|| self.names.claim(&naming::type_ident(hint)));
        let doc = node
            .at("description")
            .and_then(Value::as_str)
            .map(naming::doc_lines)
            .unwrap_or_default();
        self.types.defs.push(TypeDef {
            name,
            doc,
            kind: TypeKind::Pending,
        });
        let idx = self.types.defs.len() - 1;
        if is_root {
            self.root_def = Some(idx);
        }
        if let Some((d, p, k)) = memo_key {
            self.created_at.insert(idx, (d.clone(), p.clone()));
            self.memo.insert(
                (d.clone(), p.clone(), *k),
                nullable_ty(nullable, Ty::Named(idx)),
            );
        }
        idx
    }

    /// Lower one node (`key` is its memo key, so named types are shared by
    /// every reference to it).
    fn lower(&mut self, doc: &str, ptr: &str, node: &Value, hint: &str, key: &Key) -> Ty {
        let Value::Object(m) = node else {
            return Ty::Value;
        };
        let (draft, no_assertions) = self.draft(doc);
        if no_assertions {
            return Ty::Value;
        }
        let kinds = key.2;
        let own = declared_kinds(m);
        if let Some(r) = m.at("$ref").and_then(Value::as_str) {
            let legacy = draft == Draft::Legacy;
            let siblings = m
                .keys()
                .any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str()));
            let assume = if legacy { kinds } else { kinds & own };
            let t = match self.resolve_ref(doc, ptr, r) {
                Ok(Target::Node((d, p))) => {
                    let h = ref_hint(&d, &p, self.node(&d, &p), hint);
                    self.lower_as(&d, &p, &h, assume)
                }
                Ok(Target::Meta) => Ty::Value,
                Err(()) => return Ty::Value,
            };
            // Before 2019-09 `$ref` hides its siblings; since, they are
            // conjunctive and either side gives a complete type.
            if legacy || !siblings || t != Ty::Value {
                return t;
            }
        }
        let kinds = kinds & own;
        if kinds == 0 {
            // Nothing is valid: any type will do.
            return Ty::Value;
        }
        if let Some(c) = m.at("const") {
            return self.lower_enum(std::slice::from_ref(c), kinds, m, hint, key);
        }
        if let Some(Value::Array(a)) = m.at("enum") {
            return self.lower_enum(a, kinds, m, hint, key);
        }
        if let Some(Value::Array(all)) = m.at("allOf")
            && !all.is_empty()
        {
            return self.lower_all_of(doc, ptr, m, all.len(), hint, key, kinds);
        }
        let t = self.lower_own_union(doc, ptr, m, hint, key, kinds);
        if t != Ty::Value {
            return t;
        }
        if kinds | K_NULL == K_ALL {
            return self.lower_untyped(doc, ptr, m, hint, key);
        }
        self.lower_kinds(doc, ptr, m, hint, Some(key), kinds)
    }

    /// A node without `type` whose object or array keywords say something:
    /// an enum of the typed objects or arrays, and any other value.
    fn lower_untyped(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        hint: &str,
        key: &Key,
    ) -> Ty {
        let objects = m
            .at("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
            || m.at("additionalProperties").is_some_and(Value::is_object)
            || self.all_of_has_properties(doc, ptr, m);
        let arrays = m.at("items").is_some_and(Value::is_object) && !m.has("prefixItems");
        if !objects && !arrays {
            return Ty::Value;
        }
        let idx = self.reserve(hint, m, Some(key), false);
        let parent = self.types.defs[idx].name.clone();
        let mut variants = Vec::new();
        for (on, kind, name) in [(objects, K_OBJECT, "Object"), (arrays, K_ARRAY, "Array")] {
            if on {
                let t = self.lower_as(doc, ptr, &format!("{parent}{name}"), kind);
                if t != Ty::Value
                    && t != Ty::Map(Box::new(Ty::Value))
                    && t != Ty::Vec(Box::new(Ty::Value))
                {
                    variants.push((name.to_string(), t));
                }
            }
        }
        if variants.is_empty() && self.root_def != Some(idx) {
            self.types.defs[idx].kind = TypeKind::Newtype { inner: Ty::Value };
            return Ty::Value;
        }
        variants.push(("Other".to_string(), Ty::Value));
        self.types.defs[idx].kind = TypeKind::Untagged { variants };
        Ty::Named(idx)
    }

    fn all_of_has_properties(&mut self, doc: &str, ptr: &str, m: &Map<String, Value>) -> bool {
        let n = m.at("allOf").and_then(Value::as_array).map_or(0, Vec::len);
        (0..n).any(|i| match self.follow(doc, &format!("{ptr}/allOf/{i}")) {
            Ok(Some((d, p))) => self
                .node(&d, &p)
                .and_then(|v| v.at("properties"))
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty()),
            _ => false,
        })
    }

    /// The `oneOf`/`anyOf` of a node without object or array keywords of
    /// its own (those would type it on their own).
    fn lower_own_union(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        hint: &str,
        key: &Key,
        kinds: Kinds,
    ) -> Ty {
        let shape = [
            "properties",
            "additionalProperties",
            "patternProperties",
            "items",
            "prefixItems",
            "additionalItems",
        ]
        .iter()
        .any(|k| m.has(k));
        if shape {
            return Ty::Value;
        }
        for kw in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = m.at(kw)
                && !alts.is_empty()
            {
                let t = self.lower_union(doc, ptr, kw, alts.len(), m, hint, key, kinds);
                if t != Ty::Value {
                    return t;
                }
            }
        }
        Ty::Value
    }

    /// Type a node from its own keywords, knowing the JSON types it allows.
    fn lower_kinds(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        hint: &str,
        key: Option<&Key>,
        kinds: Kinds,
    ) -> Ty {
        let nullable = kinds & K_NULL != 0;
        let mut cats: Vec<Kinds> = Vec::new();
        if kinds & K_FRACTION != 0 {
            cats.push(K_FRACTION);
        } else if kinds & K_INTEGER != 0 {
            cats.push(K_INTEGER);
        }
        for k in [K_BOOL, K_STRING, K_OBJECT, K_ARRAY] {
            if kinds & k != 0 {
                cats.push(k);
            }
        }
        match cats.len() {
            0 => {
                if nullable {
                    Ty::Null
                } else {
                    Ty::Value
                }
            }
            5 => Ty::Value,
            1 => {
                let t = self.lower_kind(doc, ptr, m, hint, key, cats[0], nullable);
                nullable_ty(nullable, t)
            }
            _ => {
                let idx = self.reserve(hint, m, key, nullable);
                let parent = self.types.defs[idx].name.clone();
                let mut variants = Vec::new();
                for c in cats {
                    let name = kind_name(c);
                    let t =
                        self.lower_kind(doc, ptr, m, &format!("{parent}{name}"), None, c, false);
                    variants.push((name.to_string(), t));
                }
                self.types.defs[idx].kind = TypeKind::Untagged { variants };
                nullable_ty(nullable, Ty::Named(idx))
            }
        }
    }

    /// The type of one JSON type of a node.
    #[allow(clippy::too_many_arguments)]
    fn lower_kind(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        hint: &str,
        key: Option<&Key>,
        kind: Kinds,
        nullable: bool,
    ) -> Ty {
        match kind {
            K_BOOL => Ty::Bool,
            K_INTEGER => match int_kind(m, self.options.typed_formats) {
                Some(k) => Ty::Int(k),
                None if self.options.big_integers => Ty::Number,
                None if m
                    .at("minimum")
                    .and_then(Value::as_f64)
                    .is_some_and(|x| x >= 0.0) =>
                {
                    Ty::Int("u64")
                }
                None => Ty::Int("i64"),
            },
            K_FRACTION => Ty::F64,
            K_STRING => match m.at("format").and_then(Value::as_str) {
                Some("date-time") if self.options.typed_formats => Ty::DateTime,
                Some("date") if self.options.typed_formats => Ty::Date,
                Some("uuid") if self.options.typed_formats => Ty::Uuid,
                _ => Ty::String,
            },
            K_ARRAY => {
                // `prefixItems` (or an array `items`) makes a tuple, whose
                // items differ: keep them as values.
                if m.has("prefixItems") {
                    return Ty::Vec(Box::new(Ty::Value));
                }
                match m.at("items") {
                    Some(Value::Object(_)) => {
                        let it =
                            self.lower_at(doc, &format!("{ptr}/items"), &format!("{hint}Item"));
                        Ty::Vec(Box::new(it))
                    }
                    _ => Ty::Vec(Box::new(Ty::Value)),
                }
            }
            _ => self.lower_struct(
                &[(doc.to_string(), ptr.to_string())],
                hint,
                key,
                None,
                nullable,
            ),
        }
    }

    fn object_part(&self, loc: &Loc) -> ObjectPart {
        let m = self.node(&loc.0, &loc.1).and_then(Value::as_object);
        let get = |k: &str| m.and_then(|m| m.at(k));
        let props = get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.keys()
                    .map(|k| {
                        let l = (
                            loc.0.clone(),
                            format!("{}/properties/{}", loc.1, escape_token(k)),
                        );
                        (k.clone(), l)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let required = get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let patterns = get("patternProperties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        let extra = match get("additionalProperties") {
            Some(Value::Object(_)) => {
                Some((loc.0.clone(), format!("{}/additionalProperties", loc.1)))
            }
            _ => None,
        };
        ObjectPart {
            loc: loc.clone(),
            props,
            required,
            closed: get("additionalProperties") == Some(&Value::Bool(false)),
            extra,
            patterns,
        }
    }

    /// A struct (or a map) for the object keywords of `parts`, all of which
    /// an instance satisfies. `skip` is a discriminator property left out.
    fn lower_struct(
        &mut self,
        parts: &[Loc],
        hint: &str,
        key: Option<&Key>,
        skip: Option<&str>,
        nullable: bool,
    ) -> Ty {
        let parts: Vec<ObjectPart> = parts.iter().map(|l| self.object_part(l)).collect();
        let mut props: Vec<(String, Loc)> = Vec::new();
        let mut required: BTreeSet<String> = BTreeSet::new();
        for p in &parts {
            for (k, l) in &p.props {
                if Some(k.as_str()) != skip && !props.iter().any(|(j, _)| j == k) {
                    props.push((k.clone(), l.clone()));
                }
            }
            required.extend(p.required.iter().cloned());
        }
        // Properties outside `properties`: forbidden when a part is closed
        // (and has no patterns), typed by `additionalProperties` when a
        // part without patterns has one, kept as values otherwise.
        let closed = parts.iter().any(|p| p.closed && !p.patterns);
        let extra_loc = parts
            .iter()
            .find(|p| p.extra.is_some() && !p.patterns)
            .and_then(|p| p.extra.clone());
        if props.is_empty() {
            let v = match extra_loc {
                Some((d, p)) => self.lower_at(&d, &p, &format!("{hint}Value")),
                None => Ty::Value,
            };
            return Ty::Map(Box::new(v));
        }
        let first = self.doc_value(&parts[0].loc.0);
        let empty = Map::new();
        let node = node_in(first.as_ref(), &parts[0].loc.1)
            .as_object()
            .unwrap_or(&empty);
        let idx = self.reserve(hint, node, key, nullable);
        let parent = self.types.defs[idx].name.clone();
        let mut scope = Scope::default();
        // Names equal to their JSON property claim first, so `foo_bar` keeps
        // its name and `fooBar` becomes `foo_bar_2`.
        let mut idents: BTreeMap<String, String> = BTreeMap::new();
        let ids: Vec<String> = props.iter().map(|(k, _)| naming::field_ident(k)).collect();
        for pass in [true, false] {
            for ((k, _), id) in props.iter().zip(&ids) {
                if (naming::unraw(id) == k) == pass {
                    idents.insert(k.clone(), scope.claim(id));
                }
            }
        }
        let mut fields = Vec::new();
        for (k, (d, p)) in &props {
            let fhint = format!("{parent}{}", naming::type_ident(k));
            let ty = self.lower_at(d, p, &fhint);
            let root = self.doc_value(d);
            let schema = node_in(root.as_ref(), p);
            let optional = !required.contains(k);
            let doc_lines = schema
                .at("description")
                .and_then(Value::as_str)
                .map(naming::doc_lines)
                .unwrap_or_default();
            let ident = idents[k].clone();
            let default = if optional && self.options.apply_defaults {
                self.default_expr(&parent, &ident, &ty, schema.at("default"))
            } else {
                None
            };
            let optional = optional && default.is_none();
            let ty = if optional {
                Ty::Option(Box::new(ty))
            } else {
                ty
            };
            fields.push(Field {
                ident,
                json: k.clone(),
                ty,
                optional,
                default,
                doc: doc_lines,
            });
        }
        let extra = if closed {
            None
        } else {
            let v = match extra_loc {
                Some((d, p)) => self.lower_at(&d, &p, &format!("{parent}Value")),
                None => Ty::Value,
            };
            Some((scope.claim("extra"), Ty::Map(Box::new(v))))
        };
        self.types.defs[idx].kind = TypeKind::Struct {
            fields,
            deny_unknown: closed,
            extra,
        };
        nullable_ty(nullable, Ty::Named(idx))
    }

    fn lower_enum(
        &mut self,
        values: &[Value],
        kinds: Kinds,
        m: &Map<String, Value>,
        hint: &str,
        key: &Key,
    ) -> Ty {
        let vals: Vec<&Value> = values
            .iter()
            .filter(|v| kind_of_value(v) & kinds != 0)
            .collect();
        if vals.is_empty() {
            return Ty::Value;
        }
        let has_null = vals.iter().any(|v| v.is_null());
        let non: Vec<&Value> = vals.into_iter().filter(|v| !v.is_null()).collect();
        let t = if non.is_empty() {
            Ty::Null
        } else if non.iter().all(|v| v.is_string()) {
            let mut seen = BTreeSet::new();
            let uniq: Vec<&str> = non
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|s| seen.insert(*s))
                .collect();
            let idx = self.reserve(hint, m, Some(key), has_null);
            let mut scope = Scope::default();
            let variants = uniq
                .iter()
                .map(|s| (scope.claim(&naming::type_ident(s)), s.to_string()))
                .collect();
            self.types.defs[idx].kind = TypeKind::Enum { variants };
            Ty::Named(idx)
        } else if non.iter().all(|v| v.is_boolean()) {
            Ty::Bool
        } else if non.iter().all(|v| v.is_number()) {
            let ints: Option<Vec<i128>> = non.iter().map(|v| integral(v)).collect();
            match ints {
                Some(is) if is.iter().all(|&i| i64::try_from(i).is_ok()) => Ty::Int("i64"),
                Some(is) if is.iter().all(|&i| u64::try_from(i).is_ok()) => Ty::Int("u64"),
                _ => Ty::F64,
            }
        } else {
            return Ty::Value;
        };
        nullable_ty(has_null, t)
    }

    fn default_expr(
        &self,
        parent: &str,
        ident: &str,
        ty: &Ty,
        default: Option<&Value>,
    ) -> Option<(String, String)> {
        let d = default?;
        let expr = match (ty, d) {
            (Ty::Bool, Value::Bool(b)) => b.to_string(),
            (Ty::Int(k), Value::Number(_)) => {
                let v = integral(d)?;
                let fits = match *k {
                    "i8" => i8::try_from(v).is_ok(),
                    "i16" => i16::try_from(v).is_ok(),
                    "i32" => i32::try_from(v).is_ok(),
                    "i64" => i64::try_from(v).is_ok(),
                    "u8" => u8::try_from(v).is_ok(),
                    "u16" => u16::try_from(v).is_ok(),
                    "u32" => u32::try_from(v).is_ok(),
                    "u64" => u64::try_from(v).is_ok(),
                    _ => false,
                };
                if !fits {
                    return None;
                }
                format!("{v}_{k}")
            }
            (Ty::F64, Value::Number(n)) => {
                let f = n.as_f64()?;
                if !f.is_finite() {
                    return None;
                }
                format!("{f:?}_f64")
            }
            (Ty::String, Value::String(s)) => {
                format!("::std::string::String::from({})", naming::str_lit(s))
            }
            (Ty::Named(i), Value::String(s)) => match &self.types.defs[*i].kind {
                TypeKind::Enum { variants } => {
                    let (v, _) = variants.iter().find(|(_, j)| j == s)?;
                    format!("{}::{v}", self.types.defs[*i].name)
                }
                _ => return None,
            },
            _ => return None,
        };
        let f = format!(
            "default_{}_{}",
            naming::unraw(&naming::field_ident(parent)),
            naming::unraw(ident)
        );
        Some((f, expr))
    }

    /// Is `loc` a plain object schema (see [`objecty`])?
    fn objecty(&self, loc: &Loc) -> bool {
        match self.node(&loc.0, &loc.1) {
            Some(Value::Object(m)) => objecty(m),
            Some(Value::Bool(true)) => true,
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_all_of(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        n: usize,
        hint: &str,
        key: &Key,
        kinds: Kinds,
    ) -> Ty {
        let mut locs = Vec::new();
        for i in 0..n {
            match self.follow(doc, &format!("{ptr}/allOf/{i}")) {
                Ok(Some(l)) => locs.push(l),
                Ok(None) => {}
                Err(()) => return Ty::Value,
            }
        }
        // Every branch holds: the kinds narrow to what all of them allow.
        let mut kinds = kinds;
        for (d, p) in &locs {
            if let Some(Value::Object(b)) = self.node(d, p) {
                kinds &= declared_kinds(b);
            }
        }
        if kinds == 0 {
            return Ty::Value;
        }
        let own = (doc.to_string(), ptr.to_string());
        let mut own_node = m.clone();
        own_node.remove("allOf");
        let own_plain = own_node
            .keys()
            .all(|k| OBJECT_KEYWORDS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()));
        let has_props = locs.iter().chain(std::iter::once(&own)).any(|(d, p)| {
            self.node(d, p)
                .and_then(|v| v.at("properties"))
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty())
        });
        let mergeable = own_plain && has_props && locs.iter().all(|l| self.objecty(l));
        if kinds & !K_NULL == K_OBJECT && mergeable {
            let mut parts = vec![own];
            parts.extend(locs);
            return self.lower_struct(&parts, hint, Some(key), None, kinds & K_NULL != 0);
        }
        if kinds | K_NULL == K_ALL && mergeable {
            // Objects get the merged struct.
            return self.lower_untyped(doc, ptr, m, hint, key);
        }
        // Any one part gives a complete type: take the first precise one,
        // the node's own keywords first.
        let t = self.lower_own_union(doc, ptr, m, hint, key, kinds);
        if t != Ty::Value {
            return t;
        }
        let own_shape = ["properties", "additionalProperties", "items"]
            .iter()
            .any(|k| own_node.has(k));
        if own_shape {
            let t = if kinds | K_NULL == K_ALL {
                self.lower_untyped(doc, ptr, &own_node, hint, key)
            } else {
                self.lower_kinds(doc, ptr, &own_node, hint, Some(key), kinds)
            };
            if t != Ty::Value {
                return t;
            }
        }
        for (i, (d, p)) in locs.iter().enumerate() {
            let inline = (d.as_str(), p.as_str()) == (doc, format!("{ptr}/allOf/{i}").as_str());
            let h = if inline {
                hint.to_string()
            } else {
                ref_hint(d, p, self.node(d, p), hint)
            };
            let t = self.lower_as(d, p, &h, kinds);
            if t != Ty::Value {
                return t;
            }
        }
        self.lower_kinds(doc, ptr, &own_node, hint, Some(key), kinds)
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_union(
        &mut self,
        doc: &str,
        ptr: &str,
        kw: &str,
        n: usize,
        m: &Map<String, Value>,
        hint: &str,
        key: &Key,
        kinds: Kinds,
    ) -> Ty {
        // Resolve each alternative to its document and pointer.
        let mut locs = Vec::new();
        for i in 0..n {
            match self.follow(doc, &format!("{ptr}/{kw}/{i}")) {
                Ok(Some(l)) => locs.push((i, l)),
                // A meta-schema alternative accepts any schema.
                Ok(None) => return Ty::Value,
                Err(()) => return Ty::Value,
            }
        }
        // Alternatives that only allow `null` make the union optional.
        let mut nullable = false;
        let mut nullable_alt = false;
        let mut alts = Vec::new();
        for (i, (d, p)) in locs {
            let root = self.doc_value(&d);
            let k = match node_in(root.as_ref(), &p) {
                Value::Object(o) => {
                    let mut k = declared_kinds(o) & kinds;
                    if let Some(c) = o.at("const") {
                        k &= kind_of_value(c);
                    }
                    k
                }
                Value::Bool(true) => kinds,
                _ => 0,
            };
            if k == 0 {
                continue;
            }
            if k == K_NULL {
                nullable = true;
                continue;
            }
            // (A tagged enum types the objects only.)
            nullable_alt |= k & K_NULL != 0;
            alts.push((i, (d, p), root));
        }
        if alts.is_empty() {
            return if nullable { Ty::Null } else { Ty::Value };
        }
        let kinds_nn = kinds & !K_NULL;
        // A discriminator: objects that all require a property with a
        // distinct string `const`.
        let nodes: Vec<&Value> = alts
            .iter()
            .map(|(_, (_, p), root)| node_in(root.as_ref(), p))
            .collect();
        let objects = kinds_nn == K_OBJECT
            || nodes.iter().all(|v| {
                v.as_object()
                    .is_some_and(|o| declared_kinds(o) & !K_NULL == K_OBJECT)
            });
        let plain = alts.iter().all(|(_, l, _)| self.objecty(l));
        if alts.len() > 1
            && objects
            && plain
            && let Some((tag, values)) = discriminator(&nodes)
        {
            let nullable = nullable || nullable_alt;
            let idx = self.reserve(hint, m, Some(key), nullable);
            let parent = self.types.defs[idx].name.clone();
            let mut scope = Scope::default();
            let mut variants = Vec::new();
            for ((_, loc, _), value) in alts.iter().zip(values) {
                let vname = scope.claim(&naming::type_ident(&value));
                let ty = self.lower_struct(
                    std::slice::from_ref(loc),
                    &format!("{parent}{vname}"),
                    None,
                    Some(&tag),
                    false,
                );
                variants.push((vname, value, ty));
            }
            self.types.defs[idx].kind = TypeKind::Tagged { tag, variants };
            return nullable_ty(nullable, Ty::Named(idx));
        }
        let idx = (alts.len() > 1).then(|| self.reserve(hint, m, Some(key), nullable));
        let parent = idx.map_or_else(|| hint.to_string(), |i| self.types.defs[i].name.clone());
        let mut scope = Scope::default();
        let mut variants: Vec<(String, Ty)> = Vec::new();
        for (i, (d, p), _) in &alts {
            let inline = (d.as_str(), p.as_str()) == (doc, format!("{ptr}/{kw}/{i}").as_str());
            let vhint = if idx.is_none() {
                hint.to_string()
            } else if inline {
                format!("{parent}Variant{i}")
            } else {
                ref_hint(d, p, self.node(d, p), &format!("{parent}Variant{i}"))
            };
            let ty = self.lower_as(d, p, &vhint, kinds);
            if variants.iter().any(|(_, t)| *t == ty) {
                continue;
            }
            let base = match &ty {
                Ty::Named(j) => self.types.defs[*j].name.clone(),
                other => variant_name(other).to_string(),
            };
            let base = base
                .strip_prefix(&parent)
                .filter(|s| !s.is_empty())
                .unwrap_or(&base)
                .to_string();
            variants.push((scope.claim(&naming::type_ident(&base)), ty));
        }
        let Some(idx) = idx else {
            let t = variants.pop().map_or(Ty::Value, |(_, t)| t);
            return nullable_ty(nullable, t);
        };
        // serde tries untagged variants in order: integers before
        // floats so whole numbers keep their type, values last.
        variants.sort_by_key(|(_, t)| match t {
            Ty::Int(_) => 0,
            Ty::F64 | Ty::Number => 1,
            Ty::Value => 3,
            _ => 2,
        });
        // A value accepts anything: the union is no more precise (the type
        // stays for references made while lowering it).
        if variants.iter().all(|(_, t)| *t == Ty::Value) && self.root_def != Some(idx) {
            self.types.defs[idx].kind = TypeKind::Newtype { inner: Ty::Value };
            return Ty::Value;
        }
        // (An enum even with one variant left: the type may have been named
        // after an event already.)
        self.types.defs[idx].kind = TypeKind::Untagged { variants };
        nullable_ty(nullable, Ty::Named(idx))
    }
}

/// Keywords of a plain object schema: object keywords, and keywords that
/// only narrow the valid instances (a struct can ignore those).
const OBJECT_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "dependencies",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
];

/// A plain object schema: it may allow objects, and has only
/// [`OBJECT_KEYWORDS`] and annotations.
fn objecty(m: &Map<String, Value>) -> bool {
    declared_kinds(m) & K_OBJECT != 0
        && m.keys()
            .all(|k| OBJECT_KEYWORDS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()))
}

/// `Option<t>` when `nullable` and `t` does not hold `null` already.
fn nullable_ty(nullable: bool, t: Ty) -> Ty {
    if nullable && !matches!(t, Ty::Option(_) | Ty::Value | Ty::Null) {
        Ty::Option(Box::new(t))
    } else {
        t
    }
}

/// The integer a JSON number is equal to, if any.
fn integral(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1.7e38).then_some(f as i128)
}

fn kind_name(k: Kinds) -> &'static str {
    match k {
        K_BOOL => "Boolean",
        K_OBJECT => "Object",
        K_ARRAY => "Array",
        K_STRING => "String",
        K_INTEGER => "Integer",
        K_FRACTION => "Number",
        _ => "Null",
    }
}

fn variant_name(t: &Ty) -> &'static str {
    match t {
        Ty::Bool => "Boolean",
        Ty::Int(_) => "Integer",
        Ty::F64 | Ty::Number => "Number",
        Ty::String => "String",
        Ty::Uuid => "Uuid",
        Ty::DateTime => "DateTime",
        Ty::Date => "Date",
        Ty::Null => "Null",
        Ty::Vec(_) => "Array",
        Ty::Map(_) => "Object",
        Ty::Option(t) => variant_name(t),
        _ => "Value",
    }
}

fn discriminator(nodes: &[&Value]) -> Option<(String, Vec<String>)> {
    let first = nodes.first()?.at("properties")?.as_object()?;
    'cand: for (name, _) in first {
        let mut values = Vec::new();
        for n in nodes {
            let req = n
                .at("required")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|r| r == name));
            let c = n.at("properties").and_then(|p| p.at(name)).and_then(|s| {
                s.at("const")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .or_else(|| {
                        s.at("enum")
                            .and_then(Value::as_array)
                            .filter(|a| a.len() == 1)
                            .and_then(|a| a[0].as_str().map(String::from))
                    })
            });
            match c {
                Some(c) if req && !values.contains(&c) => values.push(c),
                _ => continue 'cand,
            }
            if n.at("additionalProperties").is_some_and(Value::is_object)
                || n.at("patternProperties").is_some()
            {
                continue 'cand;
            }
        }
        return Some((name.clone(), values));
    }
    None
}

/// Name for the target of a `$ref`: the definition name, else the file's
/// `title` or stem.
fn ref_hint(doc: &str, ptr: &str, node: Option<&Value>, fallback: &str) -> String {
    if let Some(last) = ptr.rsplit('/').next().filter(|s| !s.is_empty()) {
        let last = last.replace("~1", "/").replace("~0", "~");
        if last.parse::<usize>().is_err() {
            return last;
        }
    }
    if ptr.is_empty() {
        if let Some(t) = node.and_then(|n| n.at("title")).and_then(Value::as_str) {
            return t.to_string();
        }
        let stem = doc.rsplit('/').next().unwrap_or(doc);
        return stem.trim_end_matches(".json").to_string();
    }
    fallback.to_string()
}

/// The Rust integer type of an integer node when its bounds keep it within
/// 64 bits: `u64` when it cannot be negative, `i64` otherwise; OpenAPI's
/// `int32`-style formats pick a smaller type when typed formats are on.
fn int_kind(m: &Map<String, Value>, formats: bool) -> Option<&'static str> {
    if formats {
        match m.at("format").and_then(Value::as_str) {
            Some("int8") => return Some("i8"),
            Some("int16") => return Some("i16"),
            Some("int32") => return Some("i32"),
            Some("int64") => return Some("i64"),
            Some("uint8") => return Some("u8"),
            Some("uint16") => return Some("u16"),
            Some("uint32") => return Some("u32"),
            Some("uint64") => return Some("u64"),
            _ => {}
        }
    }
    let bound = |ks: [&str; 2]| {
        ks.iter()
            .filter_map(|k| m.at(k).and_then(Value::as_f64))
            .reduce(|a, b| {
                if ks[0] == "minimum" {
                    a.max(b)
                } else {
                    a.min(b)
                }
            })
    };
    let min = bound(["minimum", "exclusiveMinimum"]);
    let max = bound(["maximum", "exclusiveMaximum"]);
    match (min, max) {
        (Some(lo), Some(hi)) if lo >= 0.0 && hi < 1.8e19 => Some("u64"),
        (Some(lo), Some(hi)) if lo >= -9.2e18 && hi < 9.2e18 => Some("i64"),
        _ => None,
    }
}

/// Wrap fields in `Box` where a struct would otherwise contain itself.
pub fn box_recursion(types: &mut Types) {
    let n = types.defs.len();
    // Direct edges: a type holds another without indirection.
    fn direct(t: &Ty, out: &mut Vec<usize>) {
        match t {
            Ty::Named(i) => out.push(*i),
            Ty::Option(inner) => direct(inner, out),
            _ => {}
        }
    }
    let edges = |defs: &[TypeDef], i: usize| -> Vec<usize> {
        let mut out = Vec::new();
        match &defs[i].kind {
            TypeKind::Struct { fields, .. } => fields.iter().for_each(|f| direct(&f.ty, &mut out)),
            TypeKind::Tagged { variants, .. } => {
                variants.iter().for_each(|v| direct(&v.2, &mut out))
            }
            TypeKind::Untagged { variants } => variants.iter().for_each(|v| direct(&v.1, &mut out)),
            TypeKind::Newtype { inner } => direct(inner, &mut out),
            _ => {}
        }
        out
    };
    // Nodes seen by the current search carry its number, so a search costs
    // what it visits, not the number of types.
    let mut seen = vec![0usize; n];
    let mut search = 0;
    let mut reaches = |defs: &[TypeDef], from: usize, to: usize| -> bool {
        search += 1;
        let mut stack = vec![from];
        while let Some(x) = stack.pop() {
            if x == to {
                return true;
            }
            if std::mem::replace(&mut seen[x], search) == search {
                continue;
            }
            stack.extend(edges(defs, x));
        }
        false
    };
    for i in 0..n {
        let mut boxes: Vec<usize> = Vec::new();
        let targets: Vec<Vec<usize>> = match &types.defs[i].kind {
            TypeKind::Struct { fields, .. } => fields
                .iter()
                .map(|f| {
                    let mut o = vec![];
                    direct(&f.ty, &mut o);
                    o
                })
                .collect(),
            TypeKind::Tagged { variants, .. } => variants
                .iter()
                .map(|v| {
                    let mut o = vec![];
                    direct(&v.2, &mut o);
                    o
                })
                .collect(),
            TypeKind::Untagged { variants } => variants
                .iter()
                .map(|v| {
                    let mut o = vec![];
                    direct(&v.1, &mut o);
                    o
                })
                .collect(),
            TypeKind::Newtype { inner } => {
                let mut o = vec![];
                direct(inner, &mut o);
                vec![o]
            }
            _ => vec![],
        };
        for (slot, ts) in targets.iter().enumerate() {
            if ts.iter().any(|&t| reaches(&types.defs, t, i)) {
                boxes.push(slot);
            }
        }
        let boxed = |t: &mut Ty| {
            let inner = std::mem::replace(t, Ty::Null);
            *t = match inner {
                Ty::Option(x) => Ty::Option(Box::new(Ty::Boxed(x))),
                other => Ty::Boxed(Box::new(other)),
            };
        };
        match &mut types.defs[i].kind {
            TypeKind::Struct { fields, .. } => boxes.iter().for_each(|&s| boxed(&mut fields[s].ty)),
            TypeKind::Tagged { variants, .. } => {
                boxes.iter().for_each(|&s| boxed(&mut variants[s].2))
            }
            TypeKind::Untagged { variants } => {
                boxes.iter().for_each(|&s| boxed(&mut variants[s].1))
            }
            TypeKind::Newtype { inner } if !boxes.is_empty() => boxed(inner),
            _ => {}
        }
    }
}

/// One schema document lowered on its own (see [`lower_document`]).
#[derive(Debug, Clone)]
pub struct Lowered {
    /// Every generated type; the root is named as asked.
    pub types: Types,
    /// Index of the root type in `types.defs`.
    pub root: usize,
    /// Nodes given a precise type.
    pub precise: usize,
    /// Nodes kept as `serde_json::Value` although constrained.
    pub fallback: usize,
    /// Where those nodes are: document and JSON pointer.
    pub fallback_at: Vec<(String, String)>,
}

/// Lower the schema document at `path` (read through `read`, like a
/// catalog's schema file) to Rust types, the root one named `name`, as
/// evgen does for an event's payload.
pub fn lower_document(
    path: &str,
    name: &str,
    read: &ReadFile<'_>,
    options: Options,
) -> Result<Lowered, crate::diag::Diagnostics> {
    let mut low = Lowerer::new(read, &[]);
    low.options = options;
    let name = low.claim_name(name);
    let ok = low.load(path, None);
    if !ok || !low.errors.is_empty() {
        return Err(crate::diag::Diagnostics(low.errors));
    }
    let ty = low.lower_root(path, &name);
    if !low.errors.is_empty() {
        return Err(crate::diag::Diagnostics(low.errors));
    }
    let root = match ty {
        Ty::Named(j)
            if low.is_root_def(j, path)
                && matches!(
                    low.types.defs[j].kind,
                    TypeKind::Struct { .. }
                        | TypeKind::Enum { .. }
                        | TypeKind::Tagged { .. }
                        | TypeKind::Untagged { .. }
                ) =>
        {
            j
        }
        other => {
            low.types.defs.push(TypeDef {
                name,
                doc: vec![],
                kind: TypeKind::Newtype { inner: other },
            });
            low.types.defs.len() - 1
        }
    };
    box_recursion(&mut low.types);
    let fallback_at = low.fallback_nodes();
    Ok(Lowered {
        types: low.types,
        root,
        precise: low.precise,
        fallback: low.fallback,
        fallback_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lower `files[0]` of an in-memory catalog folder.
    fn lower(files: &[(&str, &str)]) -> Result<Lowered, Vec<String>> {
        let read = |p: &str| -> std::io::Result<String> {
            files
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
        };
        lower_document(files[0].0, "Root", &read, Options::default())
            .map_err(|d| d.0.into_iter().map(|d| d.message).collect())
    }

    fn rust(l: &Lowered) -> String {
        crate::render::types_rs(&l.types)
    }

    #[test]
    fn refs_across_files_anchors_and_defs() {
        let l = lower(&[
            (
                "schemas/a.json",
                r##"{"type": "object", "required": ["m", "c", "n"], "properties": {
                    "m": {"$ref": "../common/money.json"},
                    "c": {"$ref": "../common/money.json#/$defs/Currency"},
                    "n": {"$ref": "../common/money.json#note"}}}"##,
            ),
            (
                "common/money.json",
                r##"{"type": "object", "title": "Money", "properties": {"cents": {"type": "integer"}},
                    "$defs": {"Currency": {"enum": ["EUR", "USD"]},
                              "Note": {"$anchor": "note", "type": "string"}}}"##,
            ),
        ])
        .expect("lowers");
        let r = rust(&l);
        assert!(r.contains("pub m: Money,"), "{r}");
        assert!(r.contains("pub c: Currency,"), "{r}");
        assert!(r.contains("pub n: ::std::string::String,"), "{r}");
    }

    #[test]
    fn recursion_within_and_across_files() {
        let l = lower(&[
            (
                "schemas/tree.json",
                r##"{"type": "object", "required": ["children", "up"], "properties": {
                    "children": {"type": "array", "items": {"$ref": "#"}},
                    "up": {"$ref": "node.json"}}}"##,
            ),
            (
                "schemas/node.json",
                r##"{"type": "object", "required": ["tree"], "properties": {"tree": {"$ref": "tree.json"}}}"##,
            ),
        ])
        .expect("lowers");
        let r = rust(&l);
        assert!(r.contains("pub children: ::std::vec::Vec<Root>,"), "{r}");
        assert!(r.contains("::std::boxed::Box<"), "{r}");
    }

    #[test]
    fn ids_change_the_base() {
        let l = lower(&[(
            "schemas/a.json",
            r##"{"$id": "urn:example:a", "type": "object", "required": ["x"],
                "properties": {"x": {"$ref": "urn:example:b#/$defs/X"}},
                "$defs": {"b": {"$id": "urn:example:b", "$defs": {"X": {"type": "boolean"}}}}}"##,
        )])
        .expect("lowers");
        assert!(rust(&l).contains("pub x: bool,"));
    }

    #[test]
    fn refs_leaving_the_folder_or_reaching_the_network_are_refused() {
        for (r, want) in [
            ("../../x.json", "leaves the catalog's folder"),
            ("https://example.com/x.json", "is a remote reference"),
            ("//example.com/x.json", "remote reference"),
            ("/etc/passwd", "is an absolute path"),
        ] {
            let doc = format!(r#"{{"properties": {{"p": {{"$ref": "{r}"}}}}}}"#);
            let e = lower(&[("schemas/a.json", &doc)]).expect_err(r);
            assert!(e.iter().any(|m| m.contains(want)), "{r}: {e:?}");
        }
        // A relative reference against an absolute `$id` is remote too.
        let e = lower(&[(
            "schemas/a.json",
            r#"{"$id": "https://example.com/a.json", "properties": {"p": {"$ref": "b.json"}}}"#,
        )])
        .expect_err("remote");
        assert!(
            e[0].contains("resolves against `https://example.com/a.json`"),
            "{e:?}"
        );
    }

    #[test]
    fn uri_resolution() {
        let cases = [
            ("http://a/b/c/d;p?q", "g", "http://a/b/c/g"),
            ("http://a/b/c/d;p?q", "../g", "http://a/b/g"),
            ("http://a/b/c/d;p?q", "#s", "http://a/b/c/d;p?q#s"),
            ("http://a/b/c/d;p?q", "//g", "http://g"),
            ("http://a/b/c/d;p?q", "/./g", "http://a/g"),
            ("urn:uuid:1234", "#/$defs/x", "urn:uuid:1234#/$defs/x"),
            (
                "evgen:///schemas/a.json",
                "b.json",
                "evgen:///schemas/b.json",
            ),
        ];
        for (base, r, want) in cases {
            let (t, _) = UriRef::parse(base).resolve(&UriRef::parse(r));
            let mut got = t.to_string_without_fragment();
            if let Some(f) = &t.fragment {
                got = format!("{got}#{f}");
            }
            assert_eq!(got, want, "{base} + {r}");
        }
        let (_, escaped) =
            UriRef::parse("evgen:///schemas/a.json").resolve(&UriRef::parse("../../x"));
        assert!(escaped);
    }

    #[test]
    fn integers_and_nulls_keep_their_meaning() {
        let l = lower(&[(
            "schemas/a.json",
            r#"{"type": "object", "properties": {
                "n": {"type": ["integer", "null"]},
                "big": {"type": "integer"},
                "small": {"type": "integer", "minimum": 0, "maximum": 10}}}"#,
        )])
        .expect("lowers");
        let r = rust(&l);
        assert!(
            r.contains("pub n: ::std::option::Option<::std::option::Option<i64>>,"),
            "{r}"
        );
        assert!(r.contains("evgen_serde::present_de"), "{r}");
        assert!(r.contains("pub small: ::std::option::Option<u64>,"), "{r}");
        assert!(
            r.contains("pub extra: ::std::collections::BTreeMap<"),
            "{r}"
        );
    }
}
