//! JSON Schema documents: loading with `$ref` resolution inside the
//! catalog's folder, meta-schema checks, and lowering to Rust types.

use crate::diag::{Diagnostic, locate_json_pointer};
use crate::model::{Field, Ty, TypeDef, TypeKind, Types};
use crate::naming::{self, Scope};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One loaded schema document.
#[derive(Debug, Clone)]
pub struct Doc {
    /// File name shown in errors.
    pub display: String,
    /// Virtual path relative to the catalog folder, `/`-separated.
    pub path: String,
    /// The schema.
    pub value: Value,
    /// Original text, for positions in errors (absent for inline schemas).
    pub text: Option<String>,
    /// For a document evgen derived from another one (merged `allOf`,
    /// a union variant): the document its `$ref`s resolve against.
    pub origin: Option<String>,
}

/// Reads a file relative to the catalog folder.
pub type ReadFile<'a> = dyn Fn(&str) -> std::io::Result<String> + 'a;

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
            && i + 2 < b.len() + 0
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

fn escape_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

fn find_anchor(v: &Value, anchor: &str, ptr: &str, out: &mut Option<String>) {
    if out.is_some() {
        return;
    }
    match v {
        Value::Object(m) => {
            if m.get("$anchor").and_then(Value::as_str) == Some(anchor)
                || m.get("$id").and_then(Value::as_str) == Some(&format!("#{anchor}"))
            {
                *out = Some(ptr.to_string());
                return;
            }
            for (k, c) in m {
                if matches!(k.as_str(), "const" | "enum" | "default" | "examples") {
                    continue;
                }
                find_anchor(c, anchor, &format!("{ptr}/{}", escape_token(k)), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                find_anchor(c, anchor, &format!("{ptr}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Keywords that only annotate or constrain values without changing the
/// shape of the Rust type; runtime validation enforces them.
const NEUTRAL: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "$vocabulary",
    "$dynamicAnchor",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
];

/// Lowers schema nodes into [`Types`].
pub struct Lowerer<'a> {
    read: &'a ReadFile<'a>,
    /// Loaded documents by virtual path.
    pub docs: BTreeMap<String, Doc>,
    /// Generated types.
    pub types: Types,
    memo: BTreeMap<(String, String), Ty>,
    names: Scope,
    /// A fixed name for the type created for this node (an event's root).
    root_name: Option<((String, String), String)>,
    /// The node each named type was created for.
    created_at: BTreeMap<usize, (String, String)>,
    /// Problems found.
    pub errors: Vec<Diagnostic>,
    /// Nodes given a precise Rust type / lowered to `serde_json::Value`.
    pub precise: usize,
    /// See `precise`.
    pub fallback: usize,
    depth: usize,
}

impl<'a> Lowerer<'a> {
    /// A lowerer whose type names avoid `reserved`.
    pub fn new(read: &'a ReadFile<'a>, reserved: &[&str]) -> Self {
        Lowerer {
            read,
            docs: BTreeMap::new(),
            types: Types::default(),
            memo: BTreeMap::new(),
            names: Scope::with_reserved(reserved),
            created_at: BTreeMap::new(),
            root_name: None,
            errors: Vec::new(),
            precise: 0,
            fallback: 0,
            depth: 0,
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
        let text = match (self.read)(path) {
            Ok(t) => t,
            Err(e) => {
                let (file, ptr) = from.unwrap_or((path, ""));
                let pos = self
                    .docs
                    .get(file)
                    .and_then(|d| d.text.as_deref())
                    .map(|t| locate_json_pointer(t, ptr));
                self.errors.push(
                    Diagnostic::at(
                        file,
                        pos,
                        1,
                        format!("cannot read schema file `{path}`: {e}"),
                    )
                    .help("create the file, or fix the path (relative to the file that names it)"),
                );
                return false;
            }
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let pos = crate::diag::Pos {
                    line: e.line().max(1),
                    col: e.column().max(1),
                };
                self.errors.push(
                    Diagnostic::at(path, Some(pos), 1, format!("invalid JSON: {e}"))
                        .help("a schema file is one JSON document"),
                );
                return false;
            }
        };
        let doc = Doc {
            display: path.to_string(),
            path: path.to_string(),
            value,
            text: Some(text),
            origin: None,
        };
        let ok = self.check_meta(&doc);
        self.docs.insert(path.to_string(), doc);
        ok
    }

    /// Check a document against its meta-schema (draft-07 or 2020-12, by `$schema`).
    pub fn check_meta(&mut self, doc: &Doc) -> bool {
        let mut ok = true;
        if let Some(s) = doc.value.get("$schema").and_then(Value::as_str)
            && !(s.contains("draft-07")
                || s.contains("draft/2020-12")
                || s.contains("draft/2019-09")
                || s.contains("draft-06")
                || s.contains("draft-04"))
        {
            let pos = doc
                .text
                .as_deref()
                .map(|t| locate_json_pointer(t, "/$schema"));
            self.errors.push(
                Diagnostic::at(&doc.display, pos, s.len() + 2, format!("unknown `$schema` `{s}`"))
                    .help("use \"http://json-schema.org/draft-07/schema#\" or \"https://json-schema.org/draft/2020-12/schema\""),
            );
            return false;
        }
        match jsonschema::meta::validator_for(&doc.value) {
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
                    self.errors.push(
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
                self.errors.push(
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

    fn root_of(&self, doc: &str) -> String {
        self.docs
            .get(doc)
            .and_then(|d| d.origin.clone())
            .unwrap_or_else(|| doc.to_string())
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
        self.docs.get(doc)?.value.pointer(ptr)
    }

    /// Resolve a `$ref` found in `doc`; `Err` is already reported.
    fn resolve_ref(&mut self, doc: &str, at: &str, r: &str) -> Result<(String, String), ()> {
        let origin = self.docs.get(doc).and_then(|d| d.origin.clone());
        let doc = origin.as_deref().unwrap_or(doc);
        let (file, frag) = match r.split_once('#') {
            Some((f, fr)) => (f, fr),
            None => (r, ""),
        };
        let target_doc = if file.is_empty() {
            doc.to_string()
        } else {
            let base = self
                .docs
                .get(doc)
                .map(|d| d.path.clone())
                .unwrap_or_default();
            match join_inside(&base, file) {
                Ok(p) => {
                    if !self.load(&p, Some((doc, at))) {
                        return Err(());
                    }
                    p
                }
                Err(why) => {
                    self.err(
                        doc,
                        at,
                        format!("unsupported: $ref at {} ({why})", if at.is_empty() { "/" } else { at }),
                        "keep every schema inside the catalog's folder and reference it by a relative path",
                    );
                    return Err(());
                }
            }
        };
        let frag = percent_decode(frag);
        let ptr = if frag.is_empty() || frag.starts_with('/') {
            frag
        } else {
            let mut found = None;
            if let Some(d) = self.docs.get(&target_doc) {
                find_anchor(&d.value, &frag, "", &mut found);
            }
            match found {
                Some(p) => p,
                None => {
                    self.err(
                        doc,
                        at,
                        format!("$ref `{r}`: no `$anchor` named `{frag}`"),
                        "add the anchor or fix the reference",
                    );
                    return Err(());
                }
            }
        };
        if self.node(&target_doc, &ptr).is_none() {
            self.err(
                doc,
                at,
                format!("$ref `{r}` points at nothing (`{ptr}` in `{target_doc}`)"),
                "fix the JSON pointer after `#`",
            );
            return Err(());
        }
        Ok((target_doc, ptr))
    }

    /// Lower the node at `doc#ptr`, naming generated types after `hint`.
    pub fn lower_at(&mut self, doc: &str, ptr: &str, hint: &str) -> Ty {
        let key = (doc.to_string(), ptr.to_string());
        if let Some(t) = self.memo.get(&key) {
            return t.clone();
        }
        // Placeholder for recursion through non-named nodes.
        self.memo.insert(key.clone(), Ty::Value);
        self.depth += 1;
        let ty = if self.depth > 64 {
            Ty::Value
        } else {
            let node = self.node(doc, ptr).cloned().unwrap_or(Value::Bool(true));
            self.lower(doc, ptr, &node, hint, Some(key.clone()))
        };
        self.depth -= 1;
        self.memo.insert(key, ty.clone());
        ty
    }

    /// Lower an event's root: a type created for the root node itself takes
    /// `name`, which the caller has already claimed.
    pub fn lower_root(&mut self, doc: &str, name: &str) -> Ty {
        self.root_name = Some(((doc.to_string(), String::new()), name.to_string()));
        let t = self.lower_at(doc, "", name);
        self.root_name = None;
        t
    }

    fn reserve(
        &mut self,
        hint: &str,
        node: &Map<String, Value>,
        memo_key: Option<(String, String)>,
    ) -> usize {
        let fixed = match (&self.root_name, &memo_key) {
            (Some((k, _)), Some(m)) if k == m => self.root_name.take().map(|(_, n)| n),
            _ => None,
        };
        let name = fixed.unwrap_or_else(|| self.names.claim(&naming::type_ident(hint)));
        let doc = node
            .get("description")
            .and_then(Value::as_str)
            .map(naming::doc_lines)
            .unwrap_or_default();
        self.types.defs.push(TypeDef {
            name,
            doc,
            kind: TypeKind::Pending,
        });
        let idx = self.types.defs.len() - 1;
        if let Some(k) = memo_key {
            self.created_at.insert(idx, k.clone());
            self.memo.insert(k, Ty::Named(idx));
        }
        idx
    }

    fn value(&mut self) -> Ty {
        self.fallback += 1;
        Ty::Value
    }

    /// Lower one node (`memo_key` is set when the node is addressable, so
    /// named types are shared by every reference to it).
    fn lower(
        &mut self,
        doc: &str,
        ptr: &str,
        node: &Value,
        hint: &str,
        memo_key: Option<(String, String)>,
    ) -> Ty {
        let m = match node {
            Value::Object(m) => m,
            _ => return self.value(),
        };
        if let Some(r) = m.get("$ref").and_then(Value::as_str) {
            return match self.resolve_ref(doc, &format!("{ptr}/$ref"), r) {
                Ok((d, p)) => {
                    let h = ref_hint(&d, &p, self.node(&d, &p), hint);
                    self.lower_at(&d, &p, &h)
                }
                Err(()) => Ty::Value,
            };
        }
        if m.contains_key("$dynamicRef") || m.contains_key("$recursiveRef") {
            return self.value();
        }
        // Keywords whose meaning a Rust type would change: the whole node is
        // validated at runtime and carried as a JSON value.
        for k in [
            "not",
            "if",
            "then",
            "else",
            "dependentSchemas",
            "dependencies",
            "dependentRequired",
            "unevaluatedProperties",
            "unevaluatedItems",
            "patternProperties",
            "prefixItems",
        ] {
            if m.contains_key(k) {
                return self.value();
            }
        }
        let types: Vec<&str> = match m.get("type") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let nullable = types.contains(&"null");
        let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
        let wrap = |t: Ty| {
            if nullable && !matches!(t, Ty::Option(_) | Ty::Value | Ty::Null) {
                Ty::Option(Box::new(t))
            } else {
                t
            }
        };

        // const / enum
        let consts: Option<Vec<Value>> = match (m.get("const"), m.get("enum")) {
            (Some(c), _) => Some(vec![c.clone()]),
            (None, Some(Value::Array(a))) => Some(a.clone()),
            _ => None,
        };
        if let Some(values) = consts {
            return self.lower_enum(&values, m, hint, memo_key, nullable);
        }

        // allOf / oneOf / anyOf
        let has_shape = m.contains_key("properties")
            || m.contains_key("items")
            || m.contains_key("additionalProperties");
        if let Some(Value::Array(all)) = m.get("allOf") {
            if m.contains_key("oneOf") || m.contains_key("anyOf") {
                return self.value();
            }
            return self.lower_all_of(doc, ptr, m, all, hint, memo_key);
        }
        for kw in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = m.get(kw) {
                if has_shape
                    || !non_null.is_empty() && non_null.len() != 1
                    || (m.contains_key("oneOf") && m.contains_key("anyOf"))
                {
                    return self.value();
                }
                return self.lower_union(doc, ptr, kw, m, alts, hint, memo_key, &non_null);
            }
        }

        let inferred = if non_null.is_empty() {
            if m.contains_key("properties")
                || m.contains_key("additionalProperties")
                || m.contains_key("required")
            {
                Some("object")
            } else if m.contains_key("items") {
                Some("array")
            } else if nullable {
                return Ty::Null;
            } else {
                None
            }
        } else if non_null.len() == 1 {
            Some(non_null[0])
        } else if non_null.len() == 2
            && non_null.contains(&"integer")
            && non_null.contains(&"number")
        {
            Some("number")
        } else {
            None
        };
        let Some(t) = inferred else {
            return self.value();
        };
        // Other type-specific keywords beside a different `type` mean the
        // node accepts more than one shape: keep it as a value.
        if t != "object" && has_shape && t != "array" {
            return self.value();
        }
        let ty = match t {
            "boolean" => Ty::Bool,
            "integer" => Ty::Int(int_kind(m)),
            "number" => Ty::F64,
            "string" => match m.get("format").and_then(Value::as_str) {
                Some("date-time") => Ty::DateTime,
                Some("date") => Ty::Date,
                Some("uuid") => Ty::Uuid,
                _ => Ty::String,
            },
            "array" => match m.get("items") {
                None | Some(Value::Bool(true)) => Ty::Vec(Box::new(Ty::Value)),
                Some(Value::Object(_)) => {
                    let it = self.lower_at(doc, &format!("{ptr}/items"), &format!("{hint}Item"));
                    Ty::Vec(Box::new(it))
                }
                Some(_) => return self.value(),
            },
            "object" => return self.lower_object(doc, ptr, m, hint, memo_key, nullable),
            _ => return self.value(),
        };
        self.precise += 1;
        wrap(ty)
    }

    fn lower_enum(
        &mut self,
        values: &[Value],
        m: &Map<String, Value>,
        hint: &str,
        memo_key: Option<(String, String)>,
        nullable: bool,
    ) -> Ty {
        let has_null = nullable || values.iter().any(Value::is_null);
        let strings: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        let others = values
            .iter()
            .filter(|v| !v.is_null() && !v.is_string())
            .count();
        if others > 0 || strings.is_empty() {
            if !values.is_empty() && values.iter().all(Value::is_boolean) {
                self.precise += 1;
                return if has_null {
                    Ty::Option(Box::new(Ty::Bool))
                } else {
                    Ty::Bool
                };
            }
            if values.iter().all(Value::is_null) {
                self.precise += 1;
                return Ty::Null;
            }
            return self.value();
        }
        // `type` must allow strings for the enum to be a string enum.
        if let Some(t) = m.get("type") {
            let allows = match t {
                Value::String(s) => s == "string",
                Value::Array(a) => a.iter().any(|x| x == "string"),
                _ => false,
            };
            if !allows {
                return self.value();
            }
        }
        let mut seen = BTreeSet::new();
        let uniq: Vec<&str> = strings.into_iter().filter(|s| seen.insert(*s)).collect();
        let idx = self.reserve(hint, m, memo_key);
        let mut scope = Scope::default();
        let variants = uniq
            .iter()
            .map(|s| (scope.claim(&naming::type_ident(s)), s.to_string()))
            .collect();
        self.types.defs[idx].kind = TypeKind::Enum { variants };
        self.precise += 1;
        if has_null {
            Ty::Option(Box::new(Ty::Named(idx)))
        } else {
            Ty::Named(idx)
        }
    }

    fn lower_object(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        hint: &str,
        memo_key: Option<(String, String)>,
        nullable: bool,
    ) -> Ty {
        let props = m.get("properties").and_then(Value::as_object);
        let additional = m.get("additionalProperties");
        let wrap = |t: Ty| if nullable { Ty::Option(Box::new(t)) } else { t };
        if props.is_none_or(Map::is_empty) {
            self.precise += 1;
            return wrap(match additional {
                Some(Value::Object(_)) => {
                    let v = self.lower_at(
                        doc,
                        &format!("{ptr}/additionalProperties"),
                        &format!("{hint}Value"),
                    );
                    Ty::Map(Box::new(v))
                }
                _ => Ty::Map(Box::new(Ty::Value)),
            });
        }
        let props = props.cloned().unwrap_or_default();
        // additionalProperties with a schema beside named properties: the
        // extra entries would be lost by a struct, keep the value whole.
        if matches!(additional, Some(Value::Object(_))) {
            return self.value();
        }
        let required: BTreeSet<String> = m
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let idx = self.reserve(hint, m, memo_key);
        let parent = self.types.defs[idx].name.clone();
        let mut scope = Scope::default();
        // Names equal to their JSON property claim first, so `foo_bar` keeps
        // its name and `fooBar` becomes `foo_bar_2`.
        let mut idents: BTreeMap<String, String> = BTreeMap::new();
        for pass in [true, false] {
            for k in props.keys() {
                let id = naming::field_ident(k);
                if (naming::unraw(&id) == k) == pass {
                    idents.insert(k.clone(), scope.claim(&id));
                }
            }
        }
        let mut fields = Vec::new();
        for (k, schema) in &props {
            let fptr = format!("{ptr}/properties/{}", escape_token(k));
            let fhint = format!("{parent}{}", naming::type_ident(k));
            let ty = self.lower_at(doc, &fptr, &fhint);
            let optional = !required.contains(k);
            let doc_lines = schema
                .get("description")
                .and_then(Value::as_str)
                .map(naming::doc_lines)
                .unwrap_or_default();
            let ident = idents[k].clone();
            let default = if optional {
                self.default_expr(&parent, &ident, &ty, schema.get("default"))
            } else {
                None
            };
            let ty = if optional && default.is_none() && !matches!(ty, Ty::Option(_)) {
                Ty::Option(Box::new(ty))
            } else {
                ty
            };
            fields.push(Field {
                ident,
                json: k.clone(),
                ty,
                optional: optional && default.is_none(),
                default,
                doc: doc_lines,
            });
        }
        let deny_unknown = matches!(additional, Some(Value::Bool(false)));
        self.types.defs[idx].kind = TypeKind::Struct {
            fields,
            deny_unknown,
        };
        self.precise += 1;
        wrap(Ty::Named(idx))
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
            (Ty::Int(k), Value::Number(n)) => {
                let v = n
                    .as_i64()
                    .map(|v| v.to_string())
                    .or_else(|| n.as_u64().map(|v| v.to_string()))?;
                let fits = match *k {
                    "u64" | "u32" | "u16" | "u8" => !v.starts_with('-'),
                    _ => true,
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

    fn lower_all_of(
        &mut self,
        doc: &str,
        ptr: &str,
        m: &Map<String, Value>,
        all: &[Value],
        hint: &str,
        memo_key: Option<(String, String)>,
    ) -> Ty {
        // Collect the object schemas to merge, following `$ref`s.
        let mut parts: Vec<(String, String)> = Vec::new();
        for i in 0..all.len() {
            let mut d = doc.to_string();
            let mut p = format!("{ptr}/allOf/{i}");
            for _ in 0..16 {
                let Some(r) = self
                    .node(&d, &p)
                    .and_then(|n| n.get("$ref"))
                    .and_then(Value::as_str)
                    .map(String::from)
                else {
                    break;
                };
                match self.resolve_ref(&d, &format!("{p}/$ref"), &r) {
                    Ok((d2, p2)) => (d, p) = (d2, p2),
                    Err(()) => return Ty::Value,
                }
            }
            parts.push((d, p));
        }
        if parts.len() == 1 && !m.contains_key("properties") {
            let (d, p) = parts.remove(0);
            let h = if (d.as_str(), p.as_str()) == (doc, format!("{ptr}/allOf/0").as_str()) {
                hint.to_string()
            } else {
                ref_hint(&d, &p, self.node(&d, &p), hint)
            };
            return self.lower_at(&d, &p, &h);
        }
        let mut merged = Map::new();
        let mut props = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut sources: Vec<Value> = parts
            .iter()
            .filter_map(|(d, p)| self.node(d, p).cloned())
            .collect();
        let mut own = m.clone();
        own.remove("allOf");
        sources.push(Value::Object(own));
        for s in &sources {
            let Some(sm) = s.as_object() else {
                return self.value();
            };
            for (k, v) in sm {
                match k.as_str() {
                    "properties" => {
                        for (pk, pv) in v.as_object().into_iter().flatten() {
                            match props.get(pk) {
                                Some(old) if old != pv => {
                                    props.insert(pk.clone(), Value::Bool(true));
                                }
                                _ => {
                                    props.insert(pk.clone(), pv.clone());
                                }
                            }
                        }
                    }
                    "required" => required.extend(v.as_array().cloned().unwrap_or_default()),
                    "type" if v != "object" => return self.value(),
                    "additionalProperties" if v == &Value::Bool(false) => {}
                    k if NEUTRAL.contains(&k) || k == "type" => {
                        merged.entry(k.to_string()).or_insert_with(|| v.clone());
                    }
                    _ => return self.value(),
                }
            }
        }
        if props.is_empty() {
            return self.value();
        }
        // Property schemas that were `$ref`s relative to another document
        // would resolve wrongly once merged; keep those nodes as values.
        let foreign = parts.iter().any(|(d, _)| d != doc);
        if foreign && props.values().any(|v| v.to_string().contains("\"$ref\"")) {
            return self.value();
        }
        merged.insert("type".into(), "object".into());
        merged.insert("properties".into(), Value::Object(props));
        merged.insert("required".into(), Value::Array(required));
        // Lower the merged node as a synthetic document so nested
        // properties get their own pointers.
        let synth = format!("{doc}#allOf{ptr}");
        let base = self
            .docs
            .get(doc)
            .map(|d| d.path.clone())
            .unwrap_or_default();
        self.docs.insert(
            synth.clone(),
            Doc {
                display: doc.to_string(),
                path: base,
                value: Value::Object(merged.clone()),
                text: None,
                origin: Some(self.root_of(doc)),
            },
        );
        let t = self.lower_object(&synth, "", &merged, hint, memo_key.clone(), false);
        t
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_union(
        &mut self,
        doc: &str,
        ptr: &str,
        kw: &str,
        m: &Map<String, Value>,
        alts: &[Value],
        hint: &str,
        memo_key: Option<(String, String)>,
        non_null: &[&str],
    ) -> Ty {
        let _ = non_null;
        // Resolve each alternative to its document and pointer.
        let mut locs = Vec::new();
        for i in 0..alts.len() {
            let mut d = doc.to_string();
            let mut p = format!("{ptr}/{kw}/{i}");
            for _ in 0..16 {
                let Some(r) = self
                    .node(&d, &p)
                    .and_then(|n| n.get("$ref"))
                    .and_then(Value::as_str)
                    .map(String::from)
                else {
                    break;
                };
                match self.resolve_ref(&d, &format!("{p}/$ref"), &r) {
                    Ok((d2, p2)) => (d, p) = (d2, p2),
                    Err(()) => return Ty::Value,
                }
            }
            locs.push((d, p));
        }
        let nodes: Vec<Value> = locs
            .iter()
            .map(|(d, p)| self.node(d, p).cloned().unwrap_or(Value::Bool(true)))
            .collect();
        let is_null = |v: &Value| {
            v.get("type") == Some(&Value::String("null".into()))
                && v.as_object().is_some_and(|o| {
                    o.keys()
                        .all(|k| k == "type" || NEUTRAL.contains(&k.as_str()))
                })
        };
        let null_count = nodes.iter().filter(|v| is_null(v)).count();
        // [X, null] → Option<X>
        if nodes.len() == 2 && null_count == 1 {
            let i = usize::from(is_null(&nodes[0]));
            let (d, p) = locs[i].clone();
            let t = self.lower_at(&d, &p, hint);
            return if matches!(t, Ty::Option(_) | Ty::Value | Ty::Null) {
                t
            } else {
                Ty::Option(Box::new(t))
            };
        }
        if null_count > 0 || nodes.is_empty() {
            return self.value();
        }
        // A discriminator: a property every alternative requires with a
        // distinct string `const`.
        let tag = discriminator(&nodes);
        let idx = self.reserve(hint, m, memo_key);
        let parent = self.types.defs[idx].name.clone();
        let mut scope = Scope::default();
        if let Some((tag, values)) = tag {
            let mut variants = Vec::new();
            for (i, ((d, p), value)) in locs.iter().zip(values).enumerate() {
                let mut node = nodes[i].clone();
                if let Some(props) = node.get_mut("properties").and_then(Value::as_object_mut) {
                    props.remove(&tag);
                }
                if let Some(req) = node.get_mut("required").and_then(Value::as_array_mut) {
                    req.retain(|r| r != &Value::String(tag.clone()));
                }
                let vname = scope.claim(&naming::type_ident(&value));
                let synth = format!("{d}#variant{p}");
                let base = self.docs.get(d).map(|x| x.path.clone()).unwrap_or_default();
                self.docs.insert(
                    synth.clone(),
                    Doc {
                        display: d.clone(),
                        path: base,
                        value: node,
                        text: None,
                        origin: Some(self.root_of(d)),
                    },
                );
                let ty = self.lower_at(&synth, "", &format!("{parent}{vname}"));
                variants.push((vname, value, ty));
            }
            self.types.defs[idx].kind = TypeKind::Tagged { tag, variants };
        } else {
            let mut variants = Vec::new();
            for (i, (d, p)) in locs.iter().enumerate() {
                let own = (d.as_str(), p.as_str()) == (doc, format!("{ptr}/{kw}/{i}").as_str());
                let hint = if own {
                    format!("{parent}Variant{i}")
                } else {
                    ref_hint(d, p, self.node(d, p), &format!("{parent}Variant{i}"))
                };
                let ty = self.lower_at(d, p, &hint);
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
            // serde tries untagged variants in order: integers before
            // floats so whole numbers keep their type.
            variants.sort_by_key(|(_, t)| match t {
                Ty::Int(_) => 0,
                Ty::F64 => 1,
                Ty::Value => 3,
                _ => 2,
            });
            self.types.defs[idx].kind = TypeKind::Untagged { variants };
        }
        self.precise += 1;
        Ty::Named(idx)
    }
}

fn variant_name(t: &Ty) -> &'static str {
    match t {
        Ty::Bool => "Boolean",
        Ty::Int(_) => "Integer",
        Ty::F64 => "Number",
        Ty::String => "String",
        Ty::Uuid => "Uuid",
        Ty::DateTime => "DateTime",
        Ty::Date => "Date",
        Ty::Null => "Null",
        Ty::Vec(_) => "Array",
        Ty::Map(_) => "Object",
        _ => "Value",
    }
}

fn discriminator(nodes: &[Value]) -> Option<(String, Vec<String>)> {
    let first = nodes.first()?.get("properties")?.as_object()?;
    'cand: for (name, _) in first {
        let mut values = Vec::new();
        for n in nodes {
            let req = n
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|r| r == name));
            let c = n.get("properties").and_then(|p| p.get(name)).and_then(|s| {
                s.get("const")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .or_else(|| {
                        s.get("enum")
                            .and_then(Value::as_array)
                            .filter(|a| a.len() == 1)
                            .and_then(|a| a[0].as_str().map(String::from))
                    })
            });
            match c {
                Some(c) if req && !values.contains(&c) => values.push(c),
                _ => continue 'cand,
            }
            if n.get("type").is_some_and(|t| t != "object")
                || n.get("additionalProperties").is_some_and(Value::is_object)
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
        if let Some(t) = node.and_then(|n| n.get("title")).and_then(Value::as_str) {
            return t.to_string();
        }
        let stem = doc.rsplit('/').next().unwrap_or(doc);
        return stem.trim_end_matches(".json").to_string();
    }
    fallback.to_string()
}

fn int_kind(m: &Map<String, Value>) -> &'static str {
    match m.get("format").and_then(Value::as_str) {
        Some("int8") => return "i8",
        Some("int16") => return "i16",
        Some("int32") => return "i32",
        Some("int64") => return "i64",
        Some("uint8") => return "u8",
        Some("uint16") => return "u16",
        Some("uint32") => return "u32",
        Some("uint64") => return "u64",
        _ => {}
    }
    match m.get("minimum").and_then(Value::as_f64) {
        Some(min) if min >= 0.0 => "u64",
        _ => "i64",
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
    let reaches = |defs: &[TypeDef], from: usize, to: usize| -> bool {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(x) = stack.pop() {
            if x == to {
                return true;
            }
            if std::mem::replace(&mut seen[x], true) {
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
            TypeKind::Newtype { inner } => {
                if !boxes.is_empty() {
                    boxed(inner)
                }
            }
            _ => {}
        }
    }
}
