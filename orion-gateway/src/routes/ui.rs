//! The web dashboard and the API page: files compiled into the binary (no Node.js to build or
//! run them, no CDN), served at `/`, `/docs` and `/ui/…`. They need no credentials; the API
//! calls they make do.

use actix_web::{HttpResponse, http::header, web};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const CHARTS: &str = include_str!("../../ui/charts.js");
const STYLE: &str = include_str!("../../ui/app.css");
const DOCS: &str = include_str!("../../ui/docs.html");
const DOCS_SCRIPT: &str = include_str!("../../ui/docs.js");
const DOCS_STYLE: &str = include_str!("../../ui/docs.css");

/// Only the page's own files, and its own API and stream.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /`: the dashboard.
pub async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /docs`: the API page, every operation of the OpenAPI document to read and to try.
pub async fn docs() -> HttpResponse {
    file("text/html; charset=utf-8", DOCS)
}

/// `GET /ui/{file}`: the pages' scripts and style sheets.
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match path.as_str() {
        "app.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "charts.js" => Ok(file("text/javascript; charset=utf-8", CHARTS)),
        "app.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        "docs.js" => Ok(file("text/javascript; charset=utf-8", DOCS_SCRIPT)),
        "docs.css" => Ok(file("text/css; charset=utf-8", DOCS_STYLE)),
        _ => Err(ApiError::RouteNotFound),
    }
}
