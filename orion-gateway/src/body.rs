//! The one extractor of JSON request bodies: size (by `JsonConfig`), syntax, and depth.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body no deeper than `server.max_json_depth`.
pub struct JsonBody(pub Value);

impl JsonBody {
    /// The body as a JSON object, or `malformed_json`.
    pub fn into_object(self) -> Result<Map<String, Value>, ApiError> {
        match self.0 {
            Value::Object(fields) => Ok(fields),
            _ => Err(ApiError::MalformedJson(
                "the body must be a JSON object".into(),
            )),
        }
    }

    /// The body as a JSON object with no field but `allowed`; `what` names the object in the
    /// error (`a task`, `a review`).
    pub fn into_object_of(
        self,
        allowed: &[&str],
        what: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        let fields = self.into_object()?;
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::InvalidField {
                field: unknown.clone(),
                reason: format!("is not a field of {what}"),
            });
        }
        Ok(fields)
    }
}

/// How deep `value` nests: 1 for a scalar, one more per array or object around it.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

impl FromRequest for JsonBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.config.max_json_depth)
            .unwrap_or_else(|| crate::GatewayConfig::default().max_json_depth);
        Box::pin(async move {
            let value = json.await?.into_inner();
            if depth(&value) > limit {
                return Err(ApiError::JsonTooDeep { limit }.into());
            }
            Ok(JsonBody(value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_levels_of_nesting() {
        assert_eq!(depth(&serde_json::json!(1)), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": 2}]})), 4);
        assert_eq!(depth(&serde_json::json!([[], [[[]]]])), 4);
    }
}
