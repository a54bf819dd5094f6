//! Routes, one module per resource.

mod access;
mod budgets;
mod health;
mod hooks;
pub(crate) mod openapi;
mod pulls;
mod repos;
mod stream;
mod tasks;
mod ui;

use actix_web::web;

use crate::error::ApiError;

/// The UUID a path's `{id}` holds, or `invalid_parameter` saying it is not `what`.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::InvalidParameter {
        name: "id".into(),
        reason: format!("`{raw}` is not {what}"),
    })
}

pub(crate) use health::{healthz, metrics};
pub use stream::StreamCounts;

/// Registers `pattern`'s routes behind the gate ([`crate::auth::gate`]), which runs once the
/// router has chosen this resource and decides on `pattern` itself: however a request spells
/// its path, it is authorized for the route that will serve it.
fn gated(
    cfg: &mut web::ServiceConfig,
    pattern: &'static str,
    routes: impl IntoIterator<Item = actix_web::Route>,
) {
    let mut resource = web::resource(pattern);
    for route in routes {
        resource = resource.route(route);
    }
    cfg.service(
        resource.wrap(actix_web::middleware::from_fn(move |req, next| {
            crate::auth::gate(pattern, req, next)
        })),
    );
}

/// Every route of the gateway; each is gated, and a path that matches none is answered by
/// [`crate::auth::unrouted`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, post};
    let table: Vec<(&'static str, Vec<actix_web::Route>)> = vec![
        ("/", vec![get().to(ui::index)]),
        ("/ui/{file}", vec![get().to(ui::asset)]),
        ("/docs", vec![get().to(ui::docs)]),
        ("/healthz", vec![get().to(health::healthz)]),
        ("/readyz", vec![get().to(health::readyz)]),
        ("/metrics", vec![get().to(health::metrics)]),
        ("/v1/openapi.json", vec![get().to(openapi::document)]),
        (
            "/v1/tasks",
            vec![post().to(tasks::submit), get().to(tasks::list)],
        ),
        ("/v1/tasks/{id}", vec![get().to(tasks::get)]),
        ("/v1/tasks/{id}/events", vec![get().to(tasks::events)]),
        ("/v1/tasks/{id}/functions", vec![get().to(tasks::functions)]),
        ("/v1/tasks/{id}/cancel", vec![post().to(tasks::cancel)]),
        ("/v1/tasks/{id}/usage", vec![get().to(tasks::usage)]),
        ("/v1/tasks/{id}/budget", vec![post().to(tasks::budget)]),
        (
            "/v1/tasks/{id}/suggestions/{n}/submit",
            vec![post().to(tasks::submit_suggestion)],
        ),
        ("/v1/usage", vec![get().to(tasks::usage_summary)]),
        ("/v1/usage/budgets", vec![get().to(budgets::list)]),
        ("/v1/usage/budgets/{name}", vec![post().to(budgets::raise)]),
        ("/v1/agents", vec![get().to(health::agents)]),
        ("/v1/agents/{node}/drain", vec![post().to(health::drain)]),
        ("/v1/repos/{repo}/trend", vec![get().to(repos::trend)]),
        ("/v1/pulls", vec![get().to(pulls::list)]),
        ("/v1/pulls/{id}", vec![get().to(pulls::get)]),
        ("/v1/pulls/{id}/reviews", vec![post().to(pulls::review)]),
        (crate::auth::STREAM_ROUTE, vec![get().to(stream::connect)]),
        (crate::auth::HOOK_ROUTE, vec![post().to(hooks::receive)]),
        (
            crate::auth::MCP_ROUTE,
            vec![
                get().to(crate::mcp::serve),
                post().to(crate::mcp::serve),
                delete().to(crate::mcp::serve),
            ],
        ),
        (
            "/v1/api-keys",
            vec![post().to(access::create_key), get().to(access::list_keys)],
        ),
        ("/v1/api-keys/{id}", vec![delete().to(access::revoke_key)]),
        (
            "/v1/credentials",
            vec![
                post().to(access::save_credential),
                get().to(access::list_credentials),
            ],
        ),
        (
            "/v1/credentials/{id}",
            vec![delete().to(access::delete_credential)],
        ),
        ("/v1/audit", vec![get().to(access::audit_log)]),
        ("/v1/me", vec![get().to(access::me)]),
    ];
    for (pattern, routes) in table {
        gated(cfg, pattern, routes);
    }
}
