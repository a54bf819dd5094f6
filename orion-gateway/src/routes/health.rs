//! Liveness and readiness.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::startup::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The process can do its job: the store and the bus answer.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.store().ping().await.is_err() {
        return Err(ApiError::Unavailable("database"));
    }
    if state.lifecycle.bus().check().await.is_err() {
        return Err(ApiError::Unavailable("message bus"));
    }
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "status": "ready", "checks": { "database": "ok", "bus": "ok" } }),
    ))
}
