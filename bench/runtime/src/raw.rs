//! What the raw baselines send and receive: the same payload as the
//! generated `ItemCreated`, in an envelope of the same fields, serialized
//! with serde_json. The raw publishers validate each payload against the
//! event's JSON Schema with a validator compiled once (the issue's "same
//! guarantees": persistent, confirmed, schema-validated); the
//! `publish-nv` phases leave validation out, to show what it costs. Raw
//! consumers do as the generated subscriber does: decode the envelope with
//! its payload as JSON, validate the payload with the same validator, then
//! type it; the `consume-nv` phases only type the payload, without
//! validating.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub item_id: uuid::Uuid,
    pub seq: u64,
    pub sku: String,
    pub quantity: u64,
    pub price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A CloudEvents-shaped envelope, as a raw client would write it.
#[derive(Debug, Serialize)]
pub struct Out<'a> {
    pub specversion: &'static str,
    pub id: String,
    pub source: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: chrono::DateTime<chrono::Utc>,
    pub datacontenttype: &'static str,
    pub dataversion: &'static str,
    pub partitionkey: String,
    pub data: &'a Item,
}

/// The envelope as a raw consumer reads it (other fields ignored).
#[derive(Debug, Deserialize)]
pub struct In {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub data: Item,
}

pub const EVENT: &str = "item.created";

/// Messages handled at once by every consumer, generated and raw (the
/// generated side's `prefetch` in `bench/runtime/catalog/evgen.yaml`).
pub const PREFETCH: u16 = 64;

/// The `i`th payload; the same values as `generated::item`.
pub fn item(i: u64) -> Item {
    Item {
        item_id: uuid::Uuid::new_v4(),
        seq: i,
        sku: format!("SKU-{:06}", i % 1_000_000),
        quantity: 1 + i % 5,
        price: 9.99 + (i % 100) as f64,
        currency: Some("EUR".to_string()),
        created_at: chrono::Utc::now(),
        tags: Some(vec!["bench".to_string(), "runtime".to_string()]),
    }
}

/// The message body of a payload.
pub fn body(item: &Item) -> Vec<u8> {
    body_with_id(item).1
}

/// Whether the raw publishers and consumers validate payloads (set once
/// per phase).
pub static VALIDATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The event's schema, compiled once (the same file the generated crates
/// embed; its `format`s checked, as there).
fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../catalog/schemas/item.created.json"))
                .expect("schema JSON");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles")
    })
}

/// Panics when the payload does not match the schema (never, here).
fn validate(item: &Item) {
    if VALIDATE.load(std::sync::atomic::Ordering::Relaxed) {
        let value = serde_json::to_value(item).expect("serialize");
        assert!(validator().is_valid(&value), "payload violates the schema");
    }
}

/// The event id and message body of a payload.
pub fn body_with_id(item: &Item) -> (String, Vec<u8>) {
    validate(item);
    let id = uuid::Uuid::now_v7().to_string();
    let out = Out {
        specversion: "1.0",
        id: id.clone(),
        source: "/bench-raw",
        kind: EVENT,
        time: chrono::Utc::now(),
        datacontenttype: "application/json",
        dataversion: "1.0.0",
        partitionkey: item.item_id.to_string(),
        data: item,
    };
    (id, serde_json::to_vec(&out).expect("serialize"))
}

/// The envelope with its payload as JSON, for validating it.
#[derive(Debug, Deserialize)]
struct InJson {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    time: chrono::DateTime<chrono::Utc>,
    data: serde_json::Value,
}

/// Decode a message body the way a raw consumer would: typed, after
/// validating the payload against the schema when [`VALIDATE`] is set.
/// `None` for a body that does not decode or validate.
pub fn decode(body: &[u8]) -> Option<In> {
    if !VALIDATE.load(std::sync::atomic::Ordering::Relaxed) {
        return serde_json::from_slice(body).ok();
    }
    let envelope: InJson = serde_json::from_slice(body).ok()?;
    if !validator().is_valid(&envelope.data) {
        return None;
    }
    Some(In {
        id: envelope.id,
        kind: envelope.kind,
        time: envelope.time,
        data: Item::deserialize(&envelope.data).ok()?,
    })
}

/// Counts handled messages and wakes the waiter at the target.
pub struct Counter {
    handled: std::sync::atomic::AtomicU64,
    target: u64,
    done: tokio::sync::Notify,
}

impl Counter {
    pub fn new(target: u64) -> Self {
        Counter {
            handled: std::sync::atomic::AtomicU64::new(0),
            target,
            done: tokio::sync::Notify::new(),
        }
    }

    pub fn hit(&self) {
        let n = self
            .handled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n == self.target {
            self.done.notify_one();
        }
    }

    pub fn count(&self) -> u64 {
        self.handled.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn wait(&self) {
        self.done.notified().await;
    }
}
