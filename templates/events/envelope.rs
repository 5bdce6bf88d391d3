{{ header }}
//! The CloudEvents 1.0 envelope (structured JSON mode) every event travels in.

/// A CloudEvents 1.0 event in structured JSON mode.
#[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
pub struct Envelope {
    /// Always `1.0`.
    pub specversion: ::std::string::String,
    /// Unique event id (UUID v7): the deduplication key of the inbox.
    pub id: ::std::string::String,
    /// Who published it.
    pub source: ::std::string::String,
    /// The event name, `<entity>.<action>`.
    #[serde(rename = "type")]
    pub kind: ::std::string::String,
    /// When it was published.
    pub time: ::chrono::DateTime<::chrono::Utc>,
    /// Always `application/json`.
    pub datacontenttype: ::std::string::String,
    /// Schema version of `data` (extension attribute).
    pub dataversion: ::std::string::String,
    /// The ordering key, when the catalog names one (partitioning extension).
    #[serde(default, skip_serializing_if = "::std::option::Option::is_none")]
    pub partitionkey: ::std::option::Option<::std::string::String>,
    /// The payload.
    pub data: ::serde_json::Value,
}

impl Envelope {
    /// Wrap a payload that was already validated.
    pub fn new(
        kind: &str,
        version: &str,
        key: ::std::option::Option<::std::string::String>,
        data: ::serde_json::Value,
    ) -> Self {
        Envelope {
            specversion: "1.0".to_string(),
            id: ::uuid::Uuid::now_v7().to_string(),
            source: crate::SOURCE.to_string(),
            kind: kind.to_string(),
            time: ::chrono::Utc::now(),
            datacontenttype: "application/json".to_string(),
            dataversion: version.to_string(),
            partitionkey: key,
            data,
        }
    }
}
