//! `/v1/usage/budgets`: the spending caps across tasks, where each stands in its current
//! period, and an operator's raise.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use crate::auth::{Caller, audit};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/usage/budgets`: every cap, its spend and headroom in the current period.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caps = orion_services::budgets::status(
        &state.config.spending_caps,
        &*state.usage,
        chrono::Utc::now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": caps })))
}

/// `POST /v1/usage/budgets/{name}` `{"usd": n}`: raises (or lowers) cap `name` for its current
/// period; the tasks it paused resume. The cap as it now stands, and the tasks resumed.
pub async fn raise(
    path: web::Path<String>,
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let cap = state
        .config
        .spending_caps
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::CapNotFound(name.clone()))?;
    let body = body.into_object_of(&["usd"], "a cap's raise")?;
    let usd = match body.get("usd") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("usd")),
        Some(v) => v
            .as_f64()
            .filter(|usd| orion_bus::check_budget(*usd).is_ok())
            .ok_or(ApiError::InvalidField {
                field: "usd".into(),
                reason: "must be a positive number of dollars".into(),
            })?,
    };
    let resumed = state.lifecycle.raise_cap(cap, usd).await?;
    let detail = serde_json::json!({ "usd": usd, "resumed": resumed });
    audit(&state, &caller, "budget.raise", Some(name.clone()), detail).await;
    let now = chrono::Utc::now();
    let status = orion_services::budgets::status(std::slice::from_ref(cap), &*state.usage, now)
        .await?
        .pop();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cap": status, "resumed": resumed })))
}
