//! Building the HTTP server on a given listener (port 0 in tests).

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{App, HttpServer, web};

use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

fn json_error(
    limit: usize,
) -> impl Fn(JsonPayloadError, &actix_web::HttpRequest) -> actix_web::Error + Clone {
    move |e, _| {
        let api = match e {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
            other => ApiError::MalformedJson(other.to_string()),
        };
        api.into()
    }
}

/// Starts serving on `listener`; the returned server runs until stopped.
pub fn run(listener: TcpListener, mut state: AppState) -> std::io::Result<Server> {
    let limit = state.config.max_body_bytes;
    // The MCP tools call this gateway's own API, on the address it listens on.
    let own = listener.local_addr()?;
    let own = match own.ip().is_unspecified() {
        true => std::net::SocketAddr::from(([127, 0, 0, 1], own.port())),
        false => own,
    };
    state.mcp = Some(crate::mcp::http_service(format!("http://{own}")));
    let workers = state.config.workers.max(1);
    state.nodes.watch(state.lifecycle.bus().clone());
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(json_error(limit)),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::PathConfig::default().error_handler(|e: PathError, _| {
                ApiError::InvalidParameter {
                    name: "path".into(),
                    reason: e.to_string(),
                }
                .into()
            }))
            .app_data(
                web::QueryConfig::default().error_handler(|e: QueryPayloadError, _| {
                    ApiError::InvalidParameter {
                        name: "query".into(),
                        reason: e.to_string(),
                    }
                    .into()
                }),
            )
            .wrap_fn(count_request)
            .wrap(actix_web::middleware::NormalizePath::trim())
            .configure(routes::configure)
            .default_service(web::to(crate::auth::unrouted))
    })
    .workers(workers)
    // The process decides when to stop (after its node drains), not the server.
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// A node's small HTTP listener: `/healthz` and `/metrics`, for probes and Prometheus (a node
/// serves no API).
pub fn run_metrics(listener: TcpListener) -> std::io::Result<Server> {
    let server = HttpServer::new(|| {
        App::new()
            .route("/healthz", web::get().to(crate::routes::healthz))
            .route("/metrics", web::get().to(crate::routes::metrics))
    })
    .workers(1)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Counts each request in the metrics, by its route pattern (not its path, so ids do not
/// make a series each), method and status.
fn count_request<S>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>> + use<S>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    // Each request is a span: the root of a task's trace when it submits one.
    let span = tracing::info_span!(
        "http.request",
        http.method = %method,
        url.path = %req.path(),
        trace_id = tracing::field::Empty
    );
    orion_services::telemetry::record_trace_id(&span);
    let response = tracing::Instrument::instrument(srv.call(req), span);
    async move {
        let response = response.await?;
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let m = orion_services::metrics::metrics();
        m.http_requests
            .with_label_values(&[&route, &method, response.status().as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[&route])
            .observe(started.elapsed().as_secs_f64());
        Ok(response)
    }
}
