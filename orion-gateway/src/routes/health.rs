//! Liveness and readiness.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /v1/agents`: every node heard from (its agents, work in flight, last heartbeat and
/// state), per agent kind how many healthy nodes serve it, the kinds declared in `[plugins]`
/// with their descriptions, capabilities and input schemas, and each agent's (`<node>/<kind>`)
/// restarts after a panic, from its snapshot.
pub async fn agents(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = state.nodes.nodes();
    let kinds: std::collections::BTreeMap<String, serde_json::Value> =
        crate::nodes::healthy_per_kind(&nodes)
            .into_iter()
            .map(|(kind, n)| (kind.to_string(), serde_json::json!({ "healthy_nodes": n })))
            .collect();
    let plugins: std::collections::BTreeMap<&str, &orion_bus::PluginKind> = state
        .config
        .plugins
        .kinds()
        .map(|(kind, declared)| (kind.as_str(), declared))
        .collect();
    // Each agent's memory (its snapshot) counts the restarts after a panic.
    let restarts: std::collections::BTreeMap<String, u64> = state
        .tasks
        .snapshots()
        .await?
        .into_iter()
        .map(|s| (s.agent_id, s.state["restarts"].as_u64().unwrap_or(0)))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "nodes": nodes, "agents": kinds, "plugins": plugins, "restarts": restarts,
    })))
}

/// How long readiness waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /v1/agents/{node}/drain`: orders the node (by name, as `GET /v1/agents` lists it) to
/// take no new work and finish what it has; 202 once the order is published.
pub async fn drain(
    path: web::Path<String>,
    caller: crate::auth::Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let node = path.into_inner();
    if !state.nodes.nodes().iter().any(|n| n.node == node) {
        return Err(ApiError::NodeNotFound(node));
    }
    crate::nodes::order(&state.lifecycle, &node, orion_bus::ControlCommand::Drain).await?;
    crate::auth::audit(
        &state,
        &caller,
        "node.drain",
        Some(node.clone()),
        serde_json::Value::Null,
    )
    .await;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "node": node, "command": "drain" })))
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(orion_services::metrics::CONTENT_TYPE)
        .body(orion_services::metrics::render())
}

/// The process can do its job: the store and the bus answer.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // A probe answers fast: a database that takes longer than this is as good as down.
    let ping = tokio::time::timeout(READY_TIMEOUT, state.tasks.ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return Err(ApiError::Unavailable("database"));
    }
    if state.lifecycle.bus().check().await.is_err() {
        return Err(ApiError::Unavailable("message bus"));
    }
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "status": "ready", "checks": { "database": "ok", "bus": "ok" } }),
    ))
}
