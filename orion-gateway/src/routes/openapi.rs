//! The OpenAPI document, kept beside the code in `docs/openapi.json` and compiled in.

use actix_web::HttpResponse;

pub(crate) const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
