//! `/v1/pulls`: pull requests and the review gate.

use actix_web::{HttpResponse, web};
use orion_bus::Decision;
use orion_services::review_gate::ReviewRequest;
use orion_services::store::PullState;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, audit};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

const COMMENT_MAX_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    state: Option<String>,
    limit: Option<u64>,
}

/// `GET /v1/pulls?state&limit`: newest first, without diffs.
pub async fn list(
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = params
        .state
        .as_deref()
        .map(|s| {
            PullState::parse(s).ok_or_else(|| ApiError::InvalidParameter {
                name: "state".into(),
                reason: format!("unknown state `{s}`"),
            })
        })
        .transpose()?;
    let items = state
        .pulls
        .list_pulls(filter, None, params.limit.unwrap_or(50))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// `GET /v1/pulls/{id}`: the pull request with its diff and reviews.
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path_id(&path, "a pull request id")?;
    let pull = state.pulls.pull(id).await?;
    let reviews = state.pulls.reviews(id).await?;
    let mut body = serde_json::to_value(pull).map_err(ApiError::internal)?;
    body["reviews"] = serde_json::to_value(reviews).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /v1/pulls/{id}/reviews` `{"decision": "approve" | "request_changes", "comment",
/// "head_oid"}`: 202; the coordinator then merges (exactly `head_oid`, the version reviewed)
/// or has the change revised. A `head_oid` that is no longer the pull request's is 409
/// `pull_changed`.
pub async fn review(
    path: web::Path<String>,
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path_id(&path, "a pull request id")?;
    let body = body.into_object_of(&["decision", "comment", "head_oid"], "a review")?;
    let decision = match body.get("decision") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("decision")),
        Some(Value::String(d)) if d == "approve" => Decision::Approve,
        Some(Value::String(d)) if d == "request_changes" => Decision::RequestChanges,
        Some(_) => {
            return Err(ApiError::InvalidField {
                field: "decision".into(),
                reason: "must be `approve` or `request_changes`".into(),
            });
        }
    };
    let comment = match body.get("comment") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) if c.len() <= COMMENT_MAX_BYTES => c.clone(),
        Some(_) => {
            return Err(ApiError::InvalidField {
                field: "comment".into(),
                reason: "must be a string of at most 16 KiB".into(),
            });
        }
    };
    // The version the reviewer saw; without one, the version read now.
    let head_oid = match body.get("head_oid") {
        None | Some(Value::Null) => None,
        Some(Value::String(head)) if head.len() <= 64 => Some(head.clone()),
        Some(_) => {
            return Err(ApiError::InvalidField {
                field: "head_oid".into(),
                reason: "must be the commit id the review is of".into(),
            });
        }
    };
    let request = ReviewRequest {
        pull: id,
        decision,
        comment,
        head_oid,
    };
    let (review, task) = state.lifecycle.review(request).await?;
    let detail = serde_json::json!({ "task": task, "decision": decision, "review": review.id });
    audit(&state, &caller, "pull.review", Some(id.to_string()), detail).await;
    Ok(HttpResponse::Accepted().json(review))
}
