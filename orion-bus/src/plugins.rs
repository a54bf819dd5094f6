//! Agent kinds declared in configuration (`[plugins.<name>]`): served by any process that
//! speaks the protocol on `<prefix>.work.<name>.<priority>` (see `docs/agents.md`), routed
//! by the coordinators like the built-in kinds. A task of such a kind carries an `input`,
//! checked against the kind's `input_schema` before it is accepted.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProtocolError;
use crate::protocol::{CustomKind, TaskKind, TaskSpec};

/// One declared kind, as configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginKind {
    /// What the kind does, for people and for choosing a kind by capability.
    pub description: String,
    /// Words naming what the kind can do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// A JSON Schema (the subset [`check_schema`] knows) that a task's `input` must satisfy;
    /// absent: any input, or none.
    #[serde(default)]
    pub input_schema: Option<Value>,
}

/// The kinds this process accepts tasks of, declared once at start.
#[derive(Clone, Debug, Default)]
pub struct Plugins {
    kinds: Arc<BTreeMap<CustomKind, PluginKind>>,
}

impl Plugins {
    /// Declares every configured kind (see [`CustomKind::declare`]); a bad name or schema is
    /// an error naming it.
    pub fn declare(config: &BTreeMap<String, PluginKind>) -> Result<Self, ProtocolError> {
        let mut kinds = BTreeMap::new();
        for (name, kind) in config {
            let custom = CustomKind::declare(name)?;
            if let Some(schema) = &kind.input_schema {
                check_schema_itself(schema).map_err(|reason| ProtocolError::InvalidField {
                    field: "input_schema",
                    reason: format!("of `{name}`: {reason}"),
                })?;
            }
            kinds.insert(custom, kind.clone());
        }
        Ok(Self {
            kinds: Arc::new(kinds),
        })
    }

    /// The declared kinds, by name.
    pub fn kinds(&self) -> impl Iterator<Item = (CustomKind, &PluginKind)> {
        self.kinds.iter().map(|(k, v)| (*k, v))
    }

    /// Checks that a submission's kind is accepted here and its `input` fits: a declared
    /// kind's input against its schema; a built-in kind takes none.
    pub fn check(&self, spec: &TaskSpec) -> Result<(), ProtocolError> {
        match spec.kind {
            TaskKind::Custom(custom) => {
                let kind = self
                    .kinds
                    .get(&custom)
                    .ok_or_else(|| ProtocolError::UnknownTaskKind(custom.as_str().to_owned()))?;
                match (&kind.input_schema, &spec.input) {
                    (Some(schema), input) => {
                        check_schema(schema, input.as_ref().unwrap_or(&Value::Null), "input")
                            .map_err(ProtocolError::InvalidInput)
                    }
                    (None, _) => Ok(()),
                }
            }
            TaskKind::Auto => match spec.prompt.as_deref().map(str::trim) {
                Some(p) if !p.is_empty() => Ok(()),
                _ => Err(ProtocolError::InvalidField {
                    field: "prompt",
                    reason: "an `auto` task needs a prompt to choose its kind by".to_owned(),
                }),
            },
            builtin if spec.input.is_some() => Err(ProtocolError::InvalidInput(format!(
                "`{builtin}` tasks take no `input`; declared kinds do"
            ))),
            _ => Ok(()),
        }
    }
}

/// The keywords [`check_schema`] knows; a schema with others is refused when declared, so
/// nothing is silently not checked.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "description",
    "title",
];

fn check_schema_itself(schema: &Value) -> Result<(), String> {
    let object = schema.as_object().ok_or("a schema is a JSON object")?;
    for (key, value) in object {
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "`{key}` is not a keyword Orion checks (it knows {})",
                KEYWORDS.join(", ")
            ));
        }
        match key.as_str() {
            "properties" => {
                for sub in value
                    .as_object()
                    .ok_or("`properties` is an object")?
                    .values()
                {
                    check_schema_itself(sub)?;
                }
            }
            "items" => check_schema_itself(value)?,
            _ => {}
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `value` (at `path`, for the message) against a JSON Schema subset: `type` (one or
/// a list), `properties`, `required`, `additionalProperties: false`, `items`, `enum`,
/// `minLength`/`maxLength`, `minimum`/`maximum`.
pub fn check_schema(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(expected) = schema.get("type") {
        let actual = type_name(value);
        let fits = |t: &Value| {
            t.as_str()
                .is_some_and(|t| t == actual || (t == "number" && actual == "integer"))
        };
        let ok = match expected {
            Value::Array(types) => types.iter().any(fits),
            t => fits(t),
        };
        if !ok {
            return Err(format!("`{path}` must be {expected}, not {actual}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!(
            "`{path}` must be one of {}",
            Value::from(allowed.clone())
        ));
    }
    if let Value::String(s) = value {
        let chars = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|n| chars < n)
        {
            return Err(format!("`{path}` is shorter than {}", schema["minLength"]));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|n| chars > n)
        {
            return Err(format!("`{path}` is longer than {}", schema["maxLength"]));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("`{path}` is below {}", schema["minimum"]));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("`{path}` is above {}", schema["maximum"]));
        }
    }
    if let Value::Object(object) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str()
                && !object.contains_key(name)
            {
                return Err(format!("`{path}.{name}` is required"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check_schema(sub, field, &format!("{path}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!(
                        "`{path}.{name}` is not a field of this kind's input"
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_schema(sub, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_checked_against_the_declared_schema() {
        let schema = json!({
            "type": "object",
            "required": ["text"],
            "additionalProperties": false,
            "properties": {
                "text": { "type": "string", "minLength": 1, "maxLength": 10 },
                "mode": { "enum": ["words", "lines"] },
                "delay_ms": { "type": "integer", "minimum": 0, "maximum": 60000 },
                "tags": { "type": "array", "items": { "type": "string" } },
            },
        });
        let ok = |v: Value| check_schema(&schema, &v, "input");
        assert_eq!(
            ok(json!({ "text": "hi", "mode": "words", "delay_ms": 5, "tags": ["a"] })),
            Ok(())
        );
        let cases = [
            (json!("hi"), "`input` must be \"object\", not string"),
            (json!({}), "`input.text` is required"),
            (json!({ "text": "" }), "`input.text` is shorter than 1"),
            (
                json!({ "text": "x".repeat(11) }),
                "`input.text` is longer than 10",
            ),
            (
                json!({ "text": "a", "mode": "bytes" }),
                "`input.mode` must be one of [\"words\",\"lines\"]",
            ),
            (
                json!({ "text": "a", "delay_ms": -1 }),
                "`input.delay_ms` is below 0",
            ),
            (
                json!({ "text": "a", "delay_ms": 1.5 }),
                "`input.delay_ms` must be \"integer\", not number",
            ),
            (
                json!({ "text": "a", "tags": [1] }),
                "`input.tags[0]` must be \"string\", not integer",
            ),
            (
                json!({ "text": "a", "extra": 1 }),
                "`input.extra` is not a field of this kind's input",
            ),
        ];
        for (value, why) in cases {
            assert_eq!(ok(value.clone()), Err(why.to_owned()), "{value}");
        }
    }

    #[test]
    fn a_declaration_with_a_bad_name_or_an_unknown_keyword_is_refused() {
        let declare = |name: &str, schema: Value| {
            let mut config = BTreeMap::new();
            config.insert(
                name.to_owned(),
                PluginKind {
                    description: "d".into(),
                    capabilities: vec![],
                    input_schema: Some(schema),
                },
            );
            Plugins::declare(&config)
        };
        assert!(declare("lint-docs", json!({ "type": "object" })).is_ok());
        assert!(declare("Bad Name", json!({})).is_err());
        let unknown = declare(
            "lint-docs",
            json!({ "properties": { "a": { "pattern": "x" } } }),
        );
        assert!(format!("{}", unknown.unwrap_err()).contains("`pattern` is not a keyword"));
    }

    #[test]
    fn only_declared_kinds_take_input() {
        let mut config = BTreeMap::new();
        config.insert("echo-plugin".to_owned(), PluginKind::default());
        let plugins = Plugins::declare(&config).unwrap();
        let kind = TaskKind::Custom(CustomKind::find("echo-plugin").unwrap());
        let spec = TaskSpec::new(kind, "/r", None, None, Default::default()).unwrap();
        assert_eq!(
            plugins.check(&spec.clone().with_input(json!([1])).unwrap()),
            Ok(())
        );
        let analyze = TaskSpec::new(TaskKind::Analyze, "/r", None, None, Default::default())
            .unwrap()
            .with_input(json!({}))
            .unwrap();
        assert!(matches!(
            plugins.check(&analyze),
            Err(ProtocolError::InvalidInput(_))
        ));
        // Declared in this process by another configuration, but not accepted by this one.
        CustomKind::declare("elsewhere").unwrap();
        let elsewhere = TaskKind::Custom(CustomKind::find("elsewhere").unwrap());
        let spec = TaskSpec::new(elsewhere, "/r", None, None, Default::default()).unwrap();
        assert!(matches!(
            plugins.check(&spec),
            Err(ProtocolError::UnknownTaskKind(_))
        ));
    }
}
