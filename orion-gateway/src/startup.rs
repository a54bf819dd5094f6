//! Building the HTTP server on a given listener (port 0 in tests).

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{App, HttpServer, web};
use orion_services::lifecycle::Lifecycle;

use std::sync::Arc;

use orion_services::secrets::Sealer;

use crate::auth::{Authenticator, SubmitLimiter};
use crate::error::ApiError;
use crate::routes;

/// Limits of the HTTP surface.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How deep a JSON body may nest.
    pub max_json_depth: usize,
    /// Submissions per caller per minute; 0: unlimited.
    pub submissions_per_minute: u32,
    /// The largest WebSocket frame a client may send.
    pub ws_max_frame_bytes: usize,
    /// Events buffered for a WebSocket subscriber before it is closed as too slow.
    pub ws_buffer_events: usize,
    /// Event streams open at once, per caller and in all.
    pub ws_max_per_caller: usize,
    pub ws_max: usize,
    /// Stored events one connection replays at most (a client resumes past them with a new
    /// connection and `since`).
    pub ws_max_replay: usize,
    /// How often an open stream checks that its caller's credential still holds (an API key
    /// revoked meanwhile); a token's expiry ends it on time regardless.
    pub ws_recheck: std::time::Duration,
    /// How many actix workers serve requests.
    pub workers: usize,
    /// The declared kinds submissions may name, with their input schemas.
    pub plugins: orion_bus::Plugins,
    /// `/metrics` without credentials (for a scraper inside the cluster); else it needs a
    /// viewer.
    pub public_metrics: bool,
    /// Where a submitted task's `repo` may point.
    pub repos: orion_services::vcs::RepoPolicy,
    /// The budget of a task that sets none (`llm.task_budget_usd`): a submitter may ask for
    /// no more, an operator may.
    pub default_budget_usd: Option<f64>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_json_depth: 32,
            submissions_per_minute: 600,
            ws_max_frame_bytes: 64 * 1024,
            ws_buffer_events: 1024,
            ws_max_per_caller: 8,
            ws_max: 1024,
            ws_max_replay: 10_000,
            ws_recheck: std::time::Duration::from_secs(15),
            workers: 2,
            plugins: Default::default(),
            public_metrics: false,
            repos: Default::default(),
            default_budget_usd: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub lifecycle: Lifecycle,
    pub config: GatewayConfig,
    /// The nodes' heartbeats, kept by [`run`].
    pub nodes: crate::nodes::NodeView,
    pub auth: Arc<Authenticator>,
    pub submit_limiter: Arc<SubmitLimiter>,
    /// Seals repository credentials; `None` when no key is configured (the credential routes
    /// then refuse to store any).
    pub sealer: Option<Sealer>,
    /// The event streams open now, by caller.
    pub streams: Arc<crate::routes::StreamCounts>,
}

impl AppState {
    pub fn new(
        lifecycle: Lifecycle,
        config: GatewayConfig,
        auth: Authenticator,
        sealer: Option<Sealer>,
    ) -> Self {
        Self {
            lifecycle,
            submit_limiter: Arc::new(SubmitLimiter::per_minute(config.submissions_per_minute)),
            config,
            nodes: Default::default(),
            auth: Arc::new(auth),
            sealer,
            streams: Default::default(),
        }
    }
}

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
pub fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let limit = state.config.max_body_bytes;
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
