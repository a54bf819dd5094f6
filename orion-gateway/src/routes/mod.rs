//! Routes, one module per resource.

mod access;
mod health;
mod openapi;
mod pulls;
mod repos;
mod stream;
mod tasks;
mod ui;

use actix_web::web;

use crate::error::ApiError;

/// The UUID a path's `{id}` holds, or `invalid_parameter` saying it is not `what`.
fn path_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::InvalidParameter {
        name: "id".into(),
        reason: format!("`{raw}` is not {what}"),
    })
}

pub(crate) use health::{healthz, metrics};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(ui::index))
        .route("/ui/{file}", web::get().to(ui::asset))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/v1")
                .route("/openapi.json", web::get().to(openapi::document))
                .route("/tasks", web::post().to(tasks::submit))
                .route("/tasks", web::get().to(tasks::list))
                .route("/tasks/{id}", web::get().to(tasks::get))
                .route("/tasks/{id}/events", web::get().to(tasks::events))
                .route("/tasks/{id}/cancel", web::post().to(tasks::cancel))
                .route("/tasks/{id}/usage", web::get().to(tasks::usage))
                .route("/tasks/{id}/budget", web::post().to(tasks::budget))
                .route(
                    "/tasks/{id}/suggestions/{n}/submit",
                    web::post().to(tasks::submit_suggestion),
                )
                .route("/usage", web::get().to(tasks::usage_summary))
                .route("/agents", web::get().to(health::agents))
                .route("/agents/{node}/drain", web::post().to(health::drain))
                .route("/repos/{repo}/trend", web::get().to(repos::trend))
                .route("/pulls", web::get().to(pulls::list))
                .route("/pulls/{id}", web::get().to(pulls::get))
                .route("/pulls/{id}/reviews", web::post().to(pulls::review))
                .route("/stream", web::get().to(stream::connect))
                .route("/api-keys", web::post().to(access::create_key))
                .route("/api-keys", web::get().to(access::list_keys))
                .route("/api-keys/{id}", web::delete().to(access::revoke_key))
                .route("/credentials", web::post().to(access::save_credential))
                .route("/credentials", web::get().to(access::list_credentials))
                .route(
                    "/credentials/{id}",
                    web::delete().to(access::delete_credential),
                )
                .route("/audit", web::get().to(access::audit_log))
                .route("/me", web::get().to(access::me)),
        );
}
