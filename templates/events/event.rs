{{ header }}
//! The [`Event`] trait: name, version, schema and key of every payload type.

/// A payload type of the catalog.
pub trait Event:
    ::serde::Serialize + ::serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// Event name, `<entity>.<action>`: the CloudEvents `type`.
    const NAME: &'static str;
    /// Semantic version of the schema.
    const VERSION: &'static str;
    /// Path of the JSON Schema, relative to the catalog.
    const SCHEMA_PATH: &'static str;

    /// The JSON Schema of the payload (JSON text).
    fn schema() -> &'static str {
        crate::schemas::doc(Self::SCHEMA_PATH).unwrap_or("true")
    }

    /// The ordering key, when the catalog names one.
    fn key(&self) -> ::std::option::Option<::std::string::String>;
}
{% for e in events %}
impl Event for crate::types::{{ e.type_name }} {
    const NAME: &'static str = {{ e.name_lit }};
    const VERSION: &'static str = {{ e.version_lit }};
    const SCHEMA_PATH: &'static str = {{ e.schema_lit }};

{%- if e.key_expr.is_empty() %}

    fn key(&self) -> ::std::option::Option<::std::string::String> {
        ::std::option::Option::None
    }
{%- else %}

    fn key(&self) -> ::std::option::Option<::std::string::String> {
        ::std::option::Option::Some({{ e.key_expr }})
    }
{%- endif %}
}
{% endfor -%}
