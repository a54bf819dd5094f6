//! What every handler shares: the gateway's limits and the services it calls.

use std::sync::Arc;

use orion_services::lifecycle::Lifecycle;
use orion_services::secrets::Sealer;
use orion_services::store::{AccessStore, AnalysisStore, PullStore, TaskStore, UsageStore};

use crate::auth::{Authenticator, SubmitLimiter};

/// The event stream's limits (`[server]`'s `ws_*` keys).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct StreamLimits {
    /// The largest WebSocket frame a client may send.
    pub ws_max_frame_bytes: usize,
    /// Events a live stream reads from the log at once, before it looks at its client and
    /// credential again (and then reads on).
    pub ws_buffer_events: usize,
    /// Streams open at once, per caller and in all.
    pub ws_max_per_caller: usize,
    pub ws_max: usize,
    /// Stored events one connection reads for its replay at most (a client resumes past
    /// them with a new connection and `since`).
    pub ws_max_replay: usize,
    /// How often an open stream checks that its caller's credential still holds (an API key
    /// revoked meanwhile); a token's expiry ends it on time regardless.
    pub ws_recheck_secs: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            ws_max_frame_bytes: 64 * 1024,
            ws_buffer_events: 1024,
            ws_max_per_caller: 8,
            ws_max: 1024,
            ws_max_replay: 10_000,
            ws_recheck_secs: 15,
        }
    }
}

/// Limits of the HTTP surface.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How deep a JSON body may nest.
    pub max_json_depth: usize,
    /// Submissions per caller per minute; 0: unlimited.
    pub submissions_per_minute: u32,
    /// The event stream's limits.
    pub streams: StreamLimits,
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
    /// The forges whose webhooks `POST /v1/hooks/{forge}` takes.
    pub forges: orion_services::forge::Forges,
    /// Spending caps across tasks (`llm.budgets`), for `/v1/usage/budgets`.
    pub spending_caps: Vec<orion_services::budgets::SpendingCap>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_json_depth: 32,
            submissions_per_minute: 600,
            streams: StreamLimits::default(),
            workers: 2,
            plugins: Default::default(),
            public_metrics: false,
            repos: Default::default(),
            default_budget_usd: None,
            forges: Default::default(),
            spending_caps: Vec::new(),
        }
    }
}

/// What every handler shares. Handlers reach the store through the one aggregate they use
/// (`tasks`, `pulls`, `usage`, `access`, `analysis`); what moves a task goes through `lifecycle`.
#[derive(Clone)]
pub struct AppState {
    pub lifecycle: Lifecycle,
    pub tasks: Arc<dyn TaskStore>,
    pub pulls: Arc<dyn PullStore>,
    pub usage: Arc<dyn UsageStore>,
    pub access: Arc<dyn AccessStore>,
    pub analysis: Arc<dyn AnalysisStore>,
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
    /// The MCP server at `/mcp`, once the gateway knows its own address.
    pub mcp: Option<crate::mcp::HttpService>,
}

impl AppState {
    pub fn new(
        lifecycle: Lifecycle,
        config: GatewayConfig,
        auth: Authenticator,
        sealer: Option<Sealer>,
    ) -> Self {
        let store = lifecycle.store().clone();
        Self {
            tasks: store.clone(),
            pulls: store.clone(),
            usage: store.clone(),
            analysis: store.clone(),
            access: store,
            lifecycle,
            submit_limiter: Arc::new(SubmitLimiter::per_minute(config.submissions_per_minute)),
            config,
            nodes: Default::default(),
            auth: Arc::new(auth),
            sealer,
            streams: Default::default(),
            mcp: None,
        }
    }
}
