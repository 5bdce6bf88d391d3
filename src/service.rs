//! From the raw catalog to the validated [`Service`] model: every semantic
//! check of the catalog, schema loading and type lowering.

use crate::catalog::{self, CATALOG_FILE, RawCatalog, RawDelivery, pos_of};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Broker, Delivery, Event, KeyField, SchemaDoc, Service, Ty, TypeDef, TypeKind};
use crate::naming;
use crate::schema::{self, Doc, Lowerer, ReadFile};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet};

/// Lowering statistics (for reports).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Schema nodes with a precise Rust type.
    pub precise: usize,
    /// Schema nodes kept as `serde_json::Value`.
    pub fallback: usize,
}

fn err<T>(
    s: &Spanned<T>,
    len: usize,
    msg: impl Into<String>,
    help: impl Into<String>,
) -> Diagnostic {
    Diagnostic::at(CATALOG_FILE, pos_of(s), len, msg).help(help)
}

/// Is `s` a lower-case word: `[a-z][a-z0-9_]*`?
fn is_word(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.ends_with('_')
}

/// `<entity>.<action>`, both lower snake case.
pub fn valid_event_name(s: &str) -> bool {
    matches!(s.split_once('.'), Some((a, b)) if is_word(a) && is_word(b))
}

/// lower kebab-case: `orders`, `order-history`.
pub fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// Semantic version `MAJOR.MINOR.PATCH[-pre][+build]`.
pub fn valid_semver(s: &str) -> bool {
    let (core, rest) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let core_ok = nums.len() == 3
        && nums.iter().all(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        });
    let rest_ok = rest.is_empty()
        || rest[1..]
            .split(['.', '+'])
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    core_ok && rest_ok
}

fn delivery(base: &Delivery, raw: &RawDelivery, errors: &mut Vec<Diagnostic>) -> Delivery {
    let mut d = base.clone();
    if let Some(v) = &raw.max_attempts {
        if v.value == 0 || v.value > 100 {
            errors.push(err(
                v,
                1,
                format!("max_attempts is {}", v.value),
                "use 1 (no retries) to 100",
            ));
        } else {
            d.max_attempts = v.value;
        }
    }
    if let Some(v) = &raw.initial_backoff_ms {
        d.initial_backoff_ms = v.value;
    }
    if let Some(v) = &raw.max_backoff_ms {
        d.max_backoff_ms = v.value;
    }
    if let Some(v) = &raw.backoff_multiplier {
        if !(1.0..=100.0).contains(&v.value) {
            errors.push(err(
                v,
                1,
                format!("backoff_multiplier is {}", v.value),
                "use a factor from 1.0 to 100.0",
            ));
        } else {
            d.backoff_multiplier = v.value;
        }
    }
    if let Some(v) = &raw.dead_letter {
        d.dead_letter = v.value;
    }
    if d.initial_backoff_ms > d.max_backoff_ms {
        let at = raw
            .initial_backoff_ms
            .as_ref()
            .or(raw.max_backoff_ms.as_ref());
        errors.push(
            Diagnostic::at(
                CATALOG_FILE,
                at.and_then(pos_of),
                1,
                format!(
                    "initial_backoff_ms ({}) is above max_backoff_ms ({})",
                    d.initial_backoff_ms, d.max_backoff_ms
                ),
            )
            .help("make initial_backoff_ms at most max_backoff_ms"),
        );
    }
    if d.max_backoff_ms > 24 * 3600 * 1000 {
        errors.push(
            Diagnostic::at(
                CATALOG_FILE,
                raw.max_backoff_ms.as_ref().and_then(pos_of),
                1,
                "max_backoff_ms is more than a day",
            )
            .help("use at most 86400000"),
        );
    }
    d
}

/// Parse, check and lower a catalog. `read` reads files relative to the
/// catalog's folder. All problems are returned together.
pub fn load(text: &str, read: &ReadFile<'_>) -> Result<(Service, Stats), Diagnostics> {
    // While the catalog parses, the other cores read the schema files its
    // text seems to name; what they did not get to is read later.
    let guess = catalog::guess_schema_files(text);
    let (raw, early) = schema::prefetch_beside(read, &guess, || catalog::parse(text));
    build(&raw?, read, early)
}

/// Types every generated crate defines at its root; event and schema
/// types must not take these names.
const RESERVED_TYPES: &[&str] = &[];

fn build(
    raw: &RawCatalog,
    read: &ReadFile<'_>,
    early: schema::Prefetched,
) -> Result<(Service, Stats), Diagnostics> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    if let Some(v) = &raw.version
        && v.value != 1
    {
        errors.push(err(
            v,
            1,
            format!("unknown catalog version {}", v.value),
            "this evgen reads `version: 1`",
        ));
    }
    let s = &raw.service;
    if !valid_service_name(&s.name.value) {
        errors.push(err(
            &s.name,
            s.name.value.len().max(1),
            format!("invalid service name `{}`", s.name.value),
            "use lower kebab-case, e.g. `orders` or `order-history`",
        ));
    }
    let broker = Broker::parse(&s.broker.value).unwrap_or_else(|| {
        errors.push(err(
            &s.broker,
            s.broker.value.len().max(1),
            format!("unknown broker `{}`", s.broker.value),
            "use one of: rabbitmq, kafka, nats, redis",
        ));
        Broker::RabbitMq
    });
    let postgres = match s.outbox.as_ref().map(|o| o.value.as_str()) {
        None | Some("none") => false,
        Some("postgres") => true,
        Some(other) => {
            let o = s.outbox.as_ref().expect("matched Some");
            errors.push(err(
                o,
                other.len().max(1),
                format!("unknown outbox `{other}`"),
                "use `postgres` or `none`",
            ));
            false
        }
    };
    let exchange = s
        .exchange
        .as_ref()
        .map_or_else(|| "events".to_string(), |e| e.value.clone());
    if let Some(e) = &s.exchange
        && (e.value.is_empty()
            || !e
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        errors.push(err(
            e,
            e.value.len().max(1),
            format!("invalid exchange `{}`", e.value),
            "use letters, digits, `.`, `_` and `-`",
        ));
    }
    let prefetch = s.prefetch.as_ref().map_or(32, |p| p.value);
    if let Some(p) = &s.prefetch
        && (p.value == 0 || p.value > 65_535)
    {
        errors.push(err(
            p,
            1,
            format!("prefetch is {}", p.value),
            "use 1 to 65535",
        ));
    }
    let stream_maxlen = s.stream_maxlen.as_ref().map_or(1_000_000, |m| m.value);
    if let Some(m) = &s.stream_maxlen
        && m.value == 0
    {
        errors.push(err(
            m,
            1,
            "stream_maxlen is 0".to_string(),
            "use at least 1 (default 1000000): the entries a Redis stream keeps",
        ));
    }
    let source = s
        .source
        .as_ref()
        .map_or_else(|| format!("/{}", s.name.value), |x| x.value.clone());

    let defaults = delivery(&Delivery::default(), &raw.defaults.delivery, &mut errors);

    // Events: names, versions, duplicates.
    let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
    for e in &raw.events {
        let n = &e.name.value;
        if !valid_event_name(n) {
            errors.push(err(
                &e.name,
                n.len().max(1),
                format!("invalid event name `{n}`"),
                "name events `<entity>.<action>` in lower snake case, e.g. `order.placed`",
            ));
        } else if seen.insert(n, ()).is_some() {
            errors.push(err(
                &e.name,
                n.len(),
                format!("event `{n}` is declared twice"),
                "remove or rename one of the declarations",
            ));
        }
        if let Some(t) = &e.topic
            && (t.value.is_empty()
                || t.value.len() > 200
                || !t
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            errors.push(err(
                t,
                t.value.len().max(1),
                format!("invalid topic `{}`", t.value),
                "use letters, digits, `.`, `_` and `-`",
            ));
        }
        if let Some(p) = &e.partitions
            && !(1..=1000).contains(&p.value)
        {
            errors.push(err(
                p,
                1,
                format!("partitions is {}", p.value),
                "use 1 to 1000",
            ));
        }
        if !valid_semver(&e.version.value) {
            errors.push(err(
                &e.version,
                e.version.value.len().max(1),
                format!("invalid version `{}`", e.version.value),
                "use a semantic version such as `1.0.0`",
            ));
        }
    }
    let declared: BTreeSet<&str> = raw.events.iter().map(|e| e.name.value.as_str()).collect();
    let mut produced = BTreeSet::new();
    for p in &raw.produces {
        if !declared.contains(p.value.as_str()) {
            errors.push(err(
                p,
                p.value.len().max(1),
                format!("produced event `{}` is not declared", p.value),
                "add it under `events:` (or run `evgen add-event`)",
            ));
        } else if !produced.insert(p.value.as_str()) {
            errors.push(err(
                p,
                p.value.len(),
                format!("`{}` is listed twice in `produces`", p.value),
                "remove the repetition",
            ));
        }
    }
    let mut consumed: BTreeMap<&str, Delivery> = BTreeMap::new();
    for c in &raw.consumes {
        let d = delivery(&defaults, &c.delivery, &mut errors);
        if !declared.contains(c.event.value.as_str()) {
            errors.push(err(
                &c.event,
                c.event.value.len().max(1),
                format!("consumed event `{}` is not declared", c.event.value),
                "add it under `events:` (or run `evgen add-event`)",
            ));
        } else if consumed.insert(c.event.value.as_str(), d).is_some() {
            errors.push(err(
                &c.event,
                c.event.value.len(),
                format!("`{}` is listed twice in `consumes`", c.event.value),
                "merge the two entries",
            ));
        }
    }

    // Events whose names map to the same Rust identifiers.
    let mut rust_names: BTreeMap<String, &str> = BTreeMap::new();
    for e in &raw.events {
        let n = &e.name.value;
        if !valid_event_name(n) {
            continue;
        }
        let method = naming::event_method(n);
        for key in [
            method.clone(),
            format!("{method}_batch"),
            naming::event_type(n),
        ] {
            match rust_names.get(&key) {
                Some(other) if other != n => errors.push(err(
                    &e.name,
                    n.len(),
                    format!("events `{other}` and `{n}` both map to the Rust name `{key}`"),
                    "rename one of them",
                )),
                _ => {
                    rust_names.insert(key, n);
                }
            }
        }
    }

    // Schemas.
    let mut low = Lowerer::new(read, RESERVED_TYPES);
    low.adopt(early);
    let event_names: Vec<String> = raw
        .events
        .iter()
        .map(|e| low.claim_name(&naming::event_type(&e.name.value)))
        .collect();
    // Read, parse and check the schema files on every core first.
    let files: Vec<String> = raw
        .events
        .iter()
        .filter_map(|e| e.schema.value.as_str())
        .filter_map(|path| schema::join_inside(CATALOG_FILE, path).ok())
        .collect();
    low.preload(&files);
    let mut roots: Vec<Option<(String, String)>> = Vec::new();
    for e in &raw.events {
        let root = match &e.schema.value {
            serde_json::Value::String(path) => match schema::join_inside(CATALOG_FILE, path) {
                Ok(p) => {
                    let before = low.errors.len();
                    let ok = low.load(&p, None);
                    if !ok && low.errors.len() > before {
                        // Point the read error at the catalog line too.
                        if let Some(last) = low.errors.last_mut()
                            && last.file == p
                            && last.message.starts_with("cannot read")
                        {
                            *last = err(
                                &e.schema,
                                path.len() + 2,
                                last.message.clone(),
                                "create the file, or fix the path (relative to evgen.yaml)",
                            );
                        }
                    }
                    ok.then(|| (p, String::new()))
                }
                Err(why) => {
                    errors.push(err(&e.schema, path.len() + 2, format!("schema path {why}"), "put schema files inside the catalog's folder, e.g. `schemas/order.placed.json`"));
                    None
                }
            },
            serde_json::Value::Object(_) => {
                let path = format!("{}.inline.json", e.name.value);
                let doc = Doc {
                    display: CATALOG_FILE.to_string(),
                    path: path.clone(),
                    value: std::sync::Arc::new(e.schema.value.clone()),
                    text: None,
                    origin: None,
                };
                if low.check_meta(&doc) {
                    low.add_doc(doc);
                    Some((path, String::new()))
                } else {
                    // Point meta errors at the catalog.
                    for d in low
                        .errors
                        .iter_mut()
                        .filter(|d| d.file == CATALOG_FILE && d.pos.is_none())
                    {
                        d.pos = pos_of(&e.schema);
                    }
                    None
                }
            }
            _ => {
                errors.push(err(
                    &e.schema,
                    1,
                    "`schema` must be a file path or an inline JSON Schema object",
                    "write `schema: schemas/<event>.json`",
                ));
                None
            }
        };
        roots.push(root);
    }

    // Lower every event's root type.
    let mut events = Vec::new();
    let mut root_owner: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, e) in raw.events.iter().enumerate() {
        let Some((doc, ptr)) = roots[i].clone() else {
            continue;
        };
        let ty = if ptr.is_empty() {
            low.lower_root(&doc, &event_names[i])
        } else {
            low.lower_at(&doc, &ptr, &event_names[i])
        };
        let type_name = event_names[i].clone();
        let own = match ty {
            Ty::Named(j) if !root_owner.contains_key(&j) && is_root_struct(&low, j, &doc) => {
                root_owner.insert(j, i);
                low.types.defs[j].name = type_name.clone();
                j
            }
            other => {
                low.types.defs.push(TypeDef {
                    name: type_name.clone(),
                    doc: vec![],
                    kind: TypeKind::Newtype { inner: other },
                });
                low.types.defs.len() - 1
            }
        };
        if let Some(d) = &e.description {
            low.types.defs[own].doc = naming::doc_lines(d);
        }
        let key = e.key.as_ref().and_then(|k| match key_field(&low, own, &k.value) {
            Ok(kf) => Some(kf),
            Err(msg) => {
                errors.push(err(k, k.value.len().max(1), msg, "name a required string, integer or uuid property of the event's top-level object"));
                None
            }
        });
        events.push(Event {
            name: e.name.value.clone(),
            version: e.version.value.clone(),
            doc: e
                .description
                .as_deref()
                .map(naming::doc_lines)
                .unwrap_or_default(),
            type_name,
            method: naming::event_method(&e.name.value),
            konst: naming::event_const(&e.name.value),
            key,
            schema_path: doc,
            topic: e.topic.as_ref().map_or_else(
                || {
                    format!(
                        "{exchange}.{}",
                        e.name.value.split('.').next().unwrap_or_default()
                    )
                },
                |t| t.value.clone(),
            ),
            partitions: e.partitions.as_ref().map_or(3, |p| p.value),
            produced: produced.contains(e.name.value.as_str()),
            consumed: consumed.get(e.name.value.as_str()).cloned(),
        });
    }
    errors.append(&mut low.errors);
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    schema::box_recursion(&mut low.types);
    let stats = Stats {
        precise: low.precise,
        fallback: low.fallback,
    };
    let docs: Vec<&Doc> = low.docs.values().filter(|d| d.origin.is_none()).collect();
    let schemas = crate::par::map(&docs, |d| SchemaDoc {
        path: d.path.clone(),
        json: serde_json::to_string(&*d.value).unwrap_or_default(),
    });
    let name = s.name.value.clone();
    Ok((
        Service {
            events_crate: format!("{name}-events"),
            service_crate: format!("{name}-service"),
            name,
            broker,
            postgres,
            exchange,
            source,
            prefetch,
            stream_maxlen,
            events,
            types: low.types,
            schemas,
        },
        stats,
    ))
}

/// The def was created for the document root itself (not a shared `$defs`
/// entry reached through `$ref`).
fn is_root_struct(low: &Lowerer<'_>, j: usize, doc: &str) -> bool {
    let _ = doc;
    matches!(
        low.types.defs[j].kind,
        TypeKind::Struct { .. }
            | TypeKind::Enum { .. }
            | TypeKind::Tagged { .. }
            | TypeKind::Untagged { .. }
    ) && low.is_root_def(j, doc)
}

fn key_field(low: &Lowerer<'_>, own: usize, key: &str) -> Result<KeyField, String> {
    let (fields, prefix) = match &low.types.defs[own].kind {
        TypeKind::Struct { fields, .. } => (fields, String::new()),
        TypeKind::Newtype {
            inner: Ty::Named(j),
        } => match &low.types.defs[*j].kind {
            TypeKind::Struct { fields, .. } => (fields, "0.".to_string()),
            _ => return Err(format!("key `{key}`: the event's schema is not an object")),
        },
        _ => return Err(format!("key `{key}`: the event's schema is not an object")),
    };
    let f = fields
        .iter()
        .find(|f| f.json == key)
        .ok_or_else(|| format!("key `{key}` is not a property of the event"))?;
    if f.optional || matches!(f.ty, Ty::Option(_)) {
        return Err(format!("key `{key}` is not a required property"));
    }
    if !matches!(f.ty, Ty::String | Ty::Uuid | Ty::Int(_)) {
        return Err(format!("key `{key}` is not a string, integer or uuid"));
    }
    Ok(KeyField {
        json: key.to_string(),
        ident: format!("{prefix}{}", f.ident),
        optional: false,
        ty: f.ty.clone(),
    })
}
