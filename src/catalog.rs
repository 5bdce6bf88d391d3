//! The catalog file `evgen.yaml` as written by the user: raw serde types
//! that keep source positions for later semantic errors.

use crate::diag::{Diagnostic, Diagnostics, Pos};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The file name of the catalog inside a service folder.
pub const CATALOG_FILE: &str = "evgen.yaml";

/// The whole catalog.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// Catalog format version; only `1` exists.
    #[serde(default)]
    pub version: Option<Spanned<u32>>,
    /// The service this catalog generates.
    pub service: RawService,
    /// Defaults for every consumed event.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Every event the service touches.
    #[serde(default)]
    pub events: Vec<RawEvent>,
    /// Names of the events this service publishes.
    #[serde(default)]
    pub produces: Vec<Spanned<String>>,
    /// The events this service consumes, with delivery settings.
    #[serde(default)]
    pub consumes: Vec<RawConsume>,
}

/// `service:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Service name: lower kebab-case, used for crate, queue and group names.
    pub name: Spanned<String>,
    /// `rabbitmq`, `kafka`, `nats` or `redis`.
    pub broker: Spanned<String>,
    /// `postgres` or `none`.
    #[serde(default)]
    pub outbox: Option<Spanned<String>>,
    /// Where events are published: the exchange / subject prefix / topic prefix.
    #[serde(default)]
    pub exchange: Option<Spanned<String>>,
    /// CloudEvents `source` attribute.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    /// Consumer settings for the whole service.
    #[serde(default)]
    pub prefetch: Option<Spanned<u32>>,
    /// Redis Streams: streams this service writes are trimmed to about
    /// this many entries.
    #[serde(default)]
    pub stream_maxlen: Option<Spanned<u64>>,
}

/// `defaults:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Default delivery settings of every consumed event.
    #[serde(default)]
    pub delivery: RawDelivery,
}

/// Delivery settings, all optional so they can be layered.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Attempts in total, the first one included.
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// Delay before the first retry.
    #[serde(default)]
    pub initial_backoff_ms: Option<Spanned<u64>>,
    /// Factor between consecutive delays.
    #[serde(default)]
    pub backoff_multiplier: Option<Spanned<f64>>,
    /// Upper bound of a delay.
    #[serde(default)]
    pub max_backoff_ms: Option<Spanned<u64>>,
    /// Move failed messages to the dead-letter queue (else drop them, logged).
    #[serde(default)]
    pub dead_letter: Option<Spanned<bool>>,
}

/// One entry of `events:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    /// `<entity>.<action>`.
    pub name: Spanned<String>,
    /// Semantic version of the payload schema.
    pub version: Spanned<String>,
    /// Free text, becomes docs.
    #[serde(default)]
    pub description: Option<String>,
    /// A path relative to the catalog, or an inline JSON Schema.
    pub schema: Spanned<serde_json::Value>,
    /// Property of the payload used as ordering / partition key.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Kafka topic / Redis stream carrying the event (default
    /// `<exchange>.<entity>`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Partitions of the Kafka topic when evgen creates it (default 3).
    #[serde(default)]
    pub partitions: Option<Spanned<u32>>,
}

/// One entry of `consumes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsume {
    /// The consumed event's name.
    pub event: Spanned<String>,
    /// Overrides of `defaults.delivery`.
    #[serde(default)]
    pub delivery: RawDelivery,
}

/// Position of a spanned value.
pub fn pos_of<T>(s: &Spanned<T>) -> Option<Pos> {
    let l = &s.referenced;
    let (line, col) = (l.line() as usize, l.column() as usize);
    (line > 0).then_some(Pos {
        line,
        col: col.max(1),
    })
}

/// The schema files the catalog text seems to name (`schema: <path>`
/// lines), found without parsing it: files to read early. Only a guess;
/// a wrong one costs time, never correctness.
pub fn guess_schema_files(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("- ")
                .unwrap_or(l)
                .trim_start()
                .strip_prefix("schema:")
        })
        .map(|v| {
            let v = v.split(" #").next().unwrap_or(v).trim();
            v.trim_matches(|c| c == '"' || c == '\'')
        })
        // Not an inline schema, block scalar, anchor, alias or tag.
        .filter(|v| !v.starts_with(['{', '[', '|', '>', '&', '*', '!']))
        .filter_map(|v| crate::schema::join_inside(CATALOG_FILE, v).ok())
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// Parse the catalog text; a syntax or shape error is one diagnostic.
pub fn parse(text: &str) -> Result<RawCatalog, Diagnostics> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<RawCatalog>(text, options).map_err(|e| {
        let pos = e.location().and_then(|l| {
            let (line, col) = (l.line() as usize, l.column() as usize);
            (line > 0).then_some(Pos {
                line,
                col: col.max(1),
            })
        });
        let msg = e.to_string();
        // The crate's message may repeat the position and a snippet; keep
        // its first line, we print our own snippet.
        let first = msg
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .to_string();
        let mut d = Diagnostic::at(CATALOG_FILE, pos, 1, first);
        d = d.help(
            "see the catalog reference in evgen's README (`evgen new --help` shows an example)",
        );
        Diagnostics(vec![d])
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn guesses_schema_files_from_the_text() {
        let text = "events:\n  - name: a.b\n    schema: schemas/a.json # note\n  - schema: \"schemas/b.json\"\n    name: c.d\n  - name: e.f\n    schema: {type: object}\n  - name: g.h\n    schema: schemas/a.json\n";
        assert_eq!(
            super::guess_schema_files(text),
            ["schemas/a.json", "schemas/b.json"]
        );
    }
}
