//! The validated, resolved description of a service: what the templates
//! render. Everything here is already named, sorted and checked.

/// A Rust type as used in a field or variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ty {
    /// `bool`
    Bool,
    /// A sized integer such as `i64` or `u32`.
    Int(&'static str),
    /// `f64`
    F64,
    /// `serde_json::Number`: any JSON number, kept exactly (integers
    /// beyond 64 bits).
    Number,
    /// `String`
    String,
    /// `uuid::Uuid`
    Uuid,
    /// `chrono::DateTime<Utc>`
    DateTime,
    /// `chrono::NaiveDate`
    Date,
    /// `serde_json::Value`: validated at runtime only.
    Value,
    /// JSON `null`: `()`.
    Null,
    /// A generated type, by index into [`Types::defs`].
    Named(usize),
    /// `Vec<T>`
    Vec(Box<Ty>),
    /// `BTreeMap<String, T>`
    Map(Box<Ty>),
    /// `Option<T>`
    Option(Box<Ty>),
    /// `Box<T>`, to break recursion.
    Boxed(Box<Ty>),
}

/// A generated type definition.
#[derive(Debug, Clone)]
pub struct TypeDef {
    /// Rust type name, unique in the crate's `types` module.
    pub name: String,
    /// Sanitized doc lines.
    pub doc: Vec<String>,
    /// What it is.
    pub kind: TypeKind,
}

/// The shape of a generated type.
#[derive(Debug, Clone)]
pub enum TypeKind {
    /// A struct with named fields.
    Struct {
        /// Fields in schema order.
        fields: Vec<Field>,
        /// `additionalProperties: false`.
        deny_unknown: bool,
        /// Properties not named in `fields`, kept so that nothing is lost
        /// when the value is serialized again: `(field ident, map type)`.
        /// `None` when the struct denies unknown properties.
        extra: Option<(String, Ty)>,
    },
    /// A string enum: `(ident, json value)`.
    Enum {
        /// Variants in schema order.
        variants: Vec<(String, String)>,
    },
    /// `oneOf`/`anyOf` with a `const` discriminator property.
    Tagged {
        /// The discriminator's JSON name.
        tag: String,
        /// `(ident, discriminator value, payload type)`.
        variants: Vec<(String, String, Ty)>,
    },
    /// `oneOf`/`anyOf` without a discriminator.
    Untagged {
        /// `(ident, payload type)`.
        variants: Vec<(String, Ty)>,
    },
    /// A transparent wrapper.
    Newtype {
        /// Wrapped type.
        inner: Ty,
    },
    /// Not filled yet (only during lowering).
    Pending,
}

/// A struct field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Rust identifier (may be `r#type`).
    pub ident: String,
    /// JSON property name.
    pub json: String,
    /// Field type; optional fields are `Ty::Option`.
    pub ty: Ty,
    /// Optional in the schema: skipped when `None`.
    pub optional: bool,
    /// Rust expression of the schema default, with the function name that returns it.
    pub default: Option<(String, String)>,
    /// Sanitized doc lines.
    pub doc: Vec<String>,
}

/// All generated types.
#[derive(Debug, Default, Clone)]
pub struct Types {
    /// Definitions in creation order (deterministic).
    pub defs: Vec<TypeDef>,
}

impl Types {
    /// Rust syntax of a type, fully qualified.
    pub fn rust(&self, ty: &Ty) -> String {
        match ty {
            Ty::Bool => "bool".into(),
            Ty::Int(k) => (*k).into(),
            Ty::F64 => "f64".into(),
            Ty::Number => "::serde_json::Number".into(),
            Ty::String => "::std::string::String".into(),
            Ty::Uuid => "::uuid::Uuid".into(),
            Ty::DateTime => "::chrono::DateTime<::chrono::Utc>".into(),
            Ty::Date => "::chrono::NaiveDate".into(),
            Ty::Value => "::serde_json::Value".into(),
            Ty::Null => "()".into(),
            Ty::Named(i) => self.defs[*i].name.clone(),
            Ty::Vec(t) => format!("::std::vec::Vec<{}>", self.rust(t)),
            Ty::Map(t) => format!(
                "::std::collections::BTreeMap<::std::string::String, {}>",
                self.rust(t)
            ),
            Ty::Option(t) => format!("::std::option::Option<{}>", self.rust(t)),
            Ty::Boxed(t) => format!("::std::boxed::Box<{}>", self.rust(t)),
        }
    }
}

/// Delivery settings of one consumed event, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Attempts in total, the first included (≥ 1).
    pub max_attempts: u32,
    /// First retry delay.
    pub initial_backoff_ms: u64,
    /// Growth factor.
    pub backoff_multiplier: f64,
    /// Cap of a delay.
    pub max_backoff_ms: u64,
    /// Dead-letter after the last attempt.
    pub dead_letter: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            backoff_multiplier: 2.0,
            max_backoff_ms: 60_000,
            dead_letter: true,
        }
    }
}

impl Delivery {
    /// The delay before attempt `n + 1`, for `n` in `1..max_attempts`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let exp = self
            .backoff_multiplier
            .powi(attempt.saturating_sub(1) as i32);
        let d = (self.initial_backoff_ms as f64 * exp).round();
        if d.is_finite() && d < self.max_backoff_ms as f64 {
            d as u64
        } else {
            self.max_backoff_ms
        }
    }
    /// Every distinct retry delay this policy can produce, ascending.
    pub fn delays(&self) -> Vec<u64> {
        let mut v: Vec<u64> = (1..self.max_attempts).map(|a| self.delay_ms(a)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The broker a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Broker {
    /// RabbitMQ via lapin.
    RabbitMq,
    /// Kafka via rdkafka.
    Kafka,
    /// NATS JetStream via async-nats.
    Nats,
    /// Redis Streams via redis.
    Redis,
}

impl Broker {
    /// Every broker, as spelled in the catalog.
    pub const ALL: [(&'static str, Broker); 4] = [
        ("rabbitmq", Broker::RabbitMq),
        ("kafka", Broker::Kafka),
        ("nats", Broker::Nats),
        ("redis", Broker::Redis),
    ];
    /// Catalog spelling.
    pub fn as_str(self) -> &'static str {
        Broker::ALL
            .iter()
            .find(|(_, b)| *b == self)
            .map_or("rabbitmq", |(s, _)| s)
    }
    /// Parse the catalog spelling.
    pub fn parse(s: &str) -> Option<Broker> {
        Broker::ALL.iter().find(|(n, _)| *n == s).map(|(_, b)| *b)
    }
}

/// One event of the catalog.
#[derive(Debug, Clone)]
pub struct Event {
    /// `<entity>.<action>`
    pub name: String,
    /// Semver of the schema.
    pub version: String,
    /// Sanitized doc lines.
    pub doc: Vec<String>,
    /// Rust type name of the payload.
    pub type_name: String,
    /// Method name (`order_placed`).
    pub method: String,
    /// Constant name (`ORDER_PLACED`).
    pub konst: String,
    /// Key property: (JSON name, Rust field ident, optional, is string).
    pub key: Option<KeyField>,
    /// Virtual path of the schema document (`schemas/order.placed.json`).
    pub schema_path: String,
    /// Kafka topic / Redis stream (`events.order` by default).
    pub topic: String,
    /// Partitions of the Kafka topic.
    pub partitions: u32,
    /// Produced by this service.
    pub produced: bool,
    /// Consumed by this service, with its delivery settings.
    pub consumed: Option<Delivery>,
}

/// The ordering key of an event.
#[derive(Debug, Clone)]
pub struct KeyField {
    /// JSON property name.
    pub json: String,
    /// Rust field identifier.
    pub ident: String,
    /// The property is optional.
    pub optional: bool,
    /// The field's Rust type.
    pub ty: Ty,
}

/// A schema document embedded into the generated crate.
#[derive(Debug, Clone)]
pub struct SchemaDoc {
    /// Virtual path relative to the catalog (`schemas/x.json`).
    pub path: String,
    /// Canonical JSON text.
    pub json: String,
}

/// The whole service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Service name (kebab-case).
    pub name: String,
    /// Crate name of the generated crate.
    pub events_crate: String,
    /// Crate name of the user's binary crate.
    pub service_crate: String,
    /// Broker.
    pub broker: Broker,
    /// Outbox and inbox in PostgreSQL.
    pub postgres: bool,
    /// Exchange / subject prefix.
    pub exchange: String,
    /// CloudEvents source.
    pub source: String,
    /// Consumer prefetch.
    pub prefetch: u32,
    /// Redis Streams: `MAXLEN ~` of the streams this service writes.
    pub stream_maxlen: u64,
    /// Events in catalog order.
    pub events: Vec<Event>,
    /// Generated types.
    pub types: Types,
    /// Schema documents, sorted by path.
    pub schemas: Vec<SchemaDoc>,
}
