//! The REST operations the MCP tools call, as the OpenAPI document (`docs/openapi.json`,
//! compiled in) states them. A tool's input schema is its operation's path and query
//! parameters and request body, every `$ref` resolved in place, so a tool takes exactly what
//! the API takes; a call puts each argument where the operation takes it, and the API's own
//! checks answer a bad one.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use orion_services::uri::encode_component as encode;
use rmcp::model::JsonObject;
use serde_json::{Map, Value, json};

/// Where an operation takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// A segment of the path; `uuid` when the document says it is one.
    Path {
        uuid: bool,
    },
    Query,
    Body,
}

/// One operation of the API, as the document states it.
#[derive(Debug)]
pub(crate) struct Operation {
    pub(crate) method: reqwest::Method,
    template: String,
    /// What a UUID in the path names, for the refusal of one that is not ("a task").
    noun: &'static str,
    arguments: Vec<(String, Place)>,
    body: bool,
    schema: Arc<JsonObject>,
}

static OPERATIONS: LazyLock<HashMap<String, Operation>> = LazyLock::new(|| {
    let document = serde_json::from_str(crate::routes::openapi::DOCUMENT)
        .expect("docs/openapi.json is JSON (tests/e2e/api.rs checks it)");
    operations(&document)
});

/// The operation `id` names (an `operationId` of the document).
pub(crate) fn operation(id: &str) -> &'static Operation {
    OPERATIONS
        .get(id)
        .unwrap_or_else(|| panic!("no operation `{id}` in docs/openapi.json"))
}

/// A tool's input schema: operation `id`'s, with the properties the tool itself takes.
pub(crate) fn input_schema(id: &str, own: &[(&str, Value)]) -> Arc<JsonObject> {
    let operation = operation(id);
    if own.is_empty() {
        return operation.schema.clone();
    }
    let mut schema = (*operation.schema).clone();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for (name, property) in own {
            properties.insert((*name).to_owned(), property.clone());
        }
    }
    Arc::new(schema)
}

/// How deep a schema may nest, references followed, before the document is taken to have
/// a reference cycle.
const MAX_DEPTH: usize = 32;

/// `value` with every `#/...` reference replaced by what it names (its sibling keywords, a
/// description, kept beside).
fn resolve(document: &Value, value: &Value, depth: usize) -> Value {
    assert!(depth < MAX_DEPTH, "a reference cycle in docs/openapi.json");
    match value {
        Value::Object(map) => match map.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let target = reference
                    .strip_prefix('#')
                    .and_then(|pointer| document.pointer(pointer))
                    .unwrap_or_else(|| panic!("`{reference}` names nothing in the document"));
                let mut resolved = resolve(document, target, depth + 1);
                if let Value::Object(into) = &mut resolved {
                    for (key, v) in map.iter().filter(|(key, _)| *key != "$ref") {
                        into.insert(key.clone(), resolve(document, v, depth + 1));
                    }
                }
                resolved
            }
            None => Value::Object(
                map.iter()
                    .map(|(key, v)| (key.clone(), resolve(document, v, depth + 1)))
                    .collect(),
            ),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(document, v, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a UUID in a path under `template` names.
fn noun(template: &str) -> &'static str {
    match template.split('/').nth(2) {
        Some("tasks") => "a task",
        Some("pulls") => "a pull request",
        Some("api-keys") => "an API key",
        Some("credentials") => "a repository credential",
        _ => "a resource",
    }
}

/// Every operation of `document` with an `operationId`, by it.
fn operations(document: &Value) -> HashMap<String, Operation> {
    let mut all = HashMap::new();
    let paths = document["paths"].as_object().expect("the document's paths");
    for (template, item) in paths {
        for (method, spec) in item.as_object().expect("a path item") {
            let Some(id) = spec["operationId"].as_str() else {
                continue;
            };
            let mut properties = Map::new();
            let mut required = Vec::new();
            let mut arguments = Vec::new();
            for parameter in spec["parameters"].as_array().into_iter().flatten() {
                let parameter = resolve(document, parameter, 0);
                let name = parameter["name"].as_str().expect("a parameter's name");
                let mut schema = parameter["schema"].clone();
                let place = match parameter["in"].as_str() {
                    Some("path") => Place::Path {
                        uuid: schema["format"] == "uuid",
                    },
                    Some("query") => Place::Query,
                    // Headers are the transport's business (the credential).
                    _ => continue,
                };
                if let (Some(description), Value::Object(s)) =
                    (parameter.get("description"), &mut schema)
                {
                    s.entry("description").or_insert(description.clone());
                }
                if matches!(place, Place::Path { .. }) || parameter["required"] == true {
                    required.push(Value::from(name));
                }
                properties.insert(name.to_owned(), schema);
                arguments.push((name.to_owned(), place));
            }
            let body = spec
                .pointer("/requestBody/content/application~1json/schema")
                .map(|schema| resolve(document, schema, 0));
            if let Some(body) = &body {
                for (name, schema) in body["properties"].as_object().into_iter().flatten() {
                    assert!(
                        !properties.contains_key(name),
                        "`{name}` is both a parameter and a body field of `{id}`"
                    );
                    properties.insert(name.clone(), schema.clone());
                    arguments.push((name.clone(), Place::Body));
                }
                required.extend(body["required"].as_array().into_iter().flatten().cloned());
            }
            let mut schema = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            if !required.is_empty() {
                schema["required"] = Value::Array(required);
            }
            let Value::Object(schema) = schema else {
                unreachable!("built as an object")
            };
            let operation = Operation {
                method: reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                    .expect("an HTTP method"),
                template: template.clone(),
                noun: noun(template),
                arguments,
                body: body.is_some(),
                schema: Arc::new(schema),
            };
            all.insert(id.to_owned(), operation);
        }
    }
    all
}

/// An argument that goes into a path or a query, as text.
fn scalar(name: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("`{name}` must be a string, a number or a boolean")),
    }
}

impl Operation {
    /// The path (with its query) and the body of a call of the operation with a tool's
    /// `arguments`. A path segment is a UUID where the document says so (checked as the
    /// gateway checks it) and is otherwise encoded whole, so no argument reaches another
    /// route; an argument the operation does not take goes to the body, where the API
    /// refuses it, or is refused here when there is no body.
    pub(crate) fn request(
        &self,
        mut arguments: JsonObject,
    ) -> Result<(String, Option<Value>), String> {
        let mut path = self.template.clone();
        let mut query = Vec::new();
        let mut body = Map::new();
        for (name, place) in &self.arguments {
            let value = match arguments.remove(name) {
                Some(Value::Null) | None => {
                    if matches!(place, Place::Path { .. }) {
                        return Err(format!("`{name}` is required"));
                    }
                    continue;
                }
                Some(value) => value,
            };
            match place {
                Place::Path { uuid } => {
                    let text = scalar(name, &value)?;
                    let segment = if *uuid {
                        super::id(&text, self.noun)?.to_string()
                    } else if text.is_empty() || text == "." || text == ".." {
                        return Err(format!("`{text}` is not a valid `{name}`"));
                    } else {
                        encode(&text)
                    };
                    path = path.replace(&format!("{{{name}}}"), &segment);
                }
                Place::Query => query.push(format!(
                    "{}={}",
                    encode(name),
                    encode(&scalar(name, &value)?)
                )),
                Place::Body => {
                    body.insert(name.clone(), value);
                }
            }
        }
        if !self.body
            && let Some(name) = arguments.keys().next()
        {
            return Err(format!("`{name}` is not an argument of this tool"));
        }
        body.extend(arguments);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let body = if self.body {
            Some(Value::Object(body))
        } else if self.method == reqwest::Method::POST {
            Some(json!({}))
        } else {
            None
        };
        Ok((path, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn every_operation_of_the_document_is_read_and_its_schema_holds_no_reference() {
        assert!(OPERATIONS.len() >= 25, "{}", OPERATIONS.len());
        for (id, operation) in OPERATIONS.iter() {
            let text = serde_json::to_string(&*operation.schema).unwrap();
            assert!(!text.contains("$ref"), "{id}: {text}");
        }
        let submit = &operation("submitTask").schema;
        assert_eq!(submit["required"], json!(["kind", "repo"]));
        assert_eq!(
            submit["properties"]["kind"]["anyOf"][0]["enum"][2],
            "analyze"
        );
        assert!(submit["properties"].get("budget_usd").is_some());
        let review = &operation("reviewPull").schema;
        assert_eq!(review["required"], json!(["id", "decision"]));
        assert_eq!(review["properties"]["id"]["format"], "uuid");
    }

    #[test]
    fn a_call_puts_each_argument_where_the_operation_takes_it() {
        let id = uuid::Uuid::now_v7();
        let (path, body) = operation("reviewPull")
            .request(arguments(
                json!({ "id": id.to_string(), "decision": "approve" }),
            ))
            .unwrap();
        assert_eq!(path, format!("/v1/pulls/{id}/reviews"));
        assert_eq!(body, Some(json!({ "decision": "approve" })));
        let (path, body) = operation("taskFunctions")
            .request(arguments(
                json!({ "id": id.to_string(), "after": 7, "limit": "a&b=c" }),
            ))
            .unwrap();
        assert_eq!(
            path,
            format!("/v1/tasks/{id}/functions?after=7&limit=a%26b%3Dc")
        );
        assert_eq!(body, None);
        // Anything but a UUID where one is due, and anything the operation does not take.
        for (op, args) in [
            ("cancelTask", json!({ "id": "../agents/node-a/drain?" })),
            ("getTask", json!({})),
            ("getTask", json!({ "id": id.to_string(), "extra": 1 })),
            ("getPull", json!({ "id": { "nested": true } })),
        ] {
            assert!(
                operation(op).request(arguments(args.clone())).is_err(),
                "{op} {args}"
            );
        }
        let (path, _) = operation("drainNode")
            .request(arguments(json!({ "node": "../../v1/api-keys" })))
            .unwrap();
        assert_eq!(path, "/v1/agents/..%2F..%2Fv1%2Fapi-keys/drain");
        assert!(
            operation("drainNode")
                .request(arguments(json!({ "node": ".." })))
                .is_err()
        );
        // The API's own check answers a body field it does not take.
        let (_, body) = operation("submitTask")
            .request(arguments(
                json!({ "kind": "analyze", "repo": ".", "promt": "x" }),
            ))
            .unwrap();
        assert_eq!(
            body,
            Some(json!({ "kind": "analyze", "repo": ".", "promt": "x" }))
        );
    }
}
