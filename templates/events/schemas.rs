{{ header }}
//! The catalog's JSON Schemas, embedded, and their validators, compiled
//! once on first use.

use ::std::sync::OnceLock;

/// Base URI under which the embedded documents resolve each other.
const BASE: &str = "evgen:///";
{% for d in docs %}
/// `{{ d.path_doc }}`
const DOC_{{ loop.index0 }}: &str = {{ d.text_lit }};
{% endfor %}
/// The embedded document at `path` (relative to the catalog).
pub(crate) fn doc(path: &str) -> Option<&'static str> {
    match path {
{%- for d in docs %}
{{ d.arm }}
{%- endfor %}
        _ => None,
    }
}

/// Index and schema path of each event of the catalog.
fn event_schema(event: &str) -> Option<(usize, &'static str)> {
    match event {
{%- for a in event_arms %}
{{ a }}
{%- endfor %}
        _ => None,
    }
}

type Compiled = Result<::jsonschema::Validator, String>;

static VALIDATORS: [OnceLock<Compiled>; {{ event_arms.len() }}] = [const { OnceLock::new() }; {{ event_arms.len() }}];

/// Serves `$ref`s between the embedded documents; nothing else is fetched.
struct Embedded;

impl ::jsonschema::Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &::jsonschema::Uri<String>,
    ) -> Result<::serde_json::Value, Box<dyn ::std::error::Error + Send + Sync>> {
        let path = uri.as_str().strip_prefix(BASE).unwrap_or_default();
        let text = doc(path).ok_or_else(|| format!("`{uri}` is not a schema of the catalog"))?;
        Ok(::serde_json::from_str(text)?)
    }
}

fn compile(path: &str) -> Compiled {
    let text = doc(path).ok_or_else(|| format!("schema `{path}` is not embedded"))?;
    let schema: ::serde_json::Value = ::serde_json::from_str(text).map_err(|e| e.to_string())?;
    ::jsonschema::options()
        .with_base_uri(format!("{BASE}{path}"))
        .with_retriever(Embedded)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| e.to_string())
}

/// Check `data` against the schema of `event`.
pub(crate) fn validate(event: &str, data: &::serde_json::Value) -> Result<(), crate::Error> {
    let Some((index, path)) = event_schema(event) else {
        return Err(crate::Error::UnknownEvent(event.to_string()));
    };
    let invalid = |errors: Vec<String>| crate::Error::Invalid {
        event: event.to_string(),
        errors,
    };
    let validator = VALIDATORS[index]
        .get_or_init(|| compile(path))
        .as_ref()
        .map_err(|e| invalid(vec![format!("the schema does not compile: {e}")]))?;
    // The common case first: `is_valid` stops at the first failure and
    // builds no error values.
    if validator.is_valid(data) {
        return Ok(());
    }
    let errors: Vec<String> = validator
        .iter_errors(data)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(errors))
    }
}
