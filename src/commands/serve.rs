//! Long-running processes: `up`, `gateway`, `node`, and `migrate`.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_bus::AgentKind;
use orion_gateway::auth::AuthMode;
use orion_services::store::SqlStore;

use crate::app;
use crate::cli::{DataArgs, NodeArgs, UpArgs};
use crate::settings::Settings;

pub(super) fn apply_data_dir(settings: &mut Settings, data: DataArgs) {
    if let Some(dir) = data.data_dir {
        settings.data_dir = dir;
    }
}

/// Cluster processes share state, so they refuse to start on the embedded defaults.
fn require_cluster(settings: &Settings, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.bus_servers().is_some() && settings.database.url.is_some(),
        "`orion {what}` is a cluster process: set bus.url (or bus.servers) and database.url \
         (ORION__BUS__URL, ORION__DATABASE__URL or --config config/cluster.toml); \
         for everything in one process use `orion up`"
    );
    Ok(())
}

/// SIGTERM and SIGINT, listened for from the moment this is made: made before a process
/// says it is up, so a signal sent as soon as it says so is never the default (fatal) one.
struct Signals {
    terminate: actix_rt::signal::unix::Signal,
    interrupt: actix_rt::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use actix_rt::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())
                .context("while installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt())
                .context("while installing the SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

pub async fn up(args: UpArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    let signals = Signals::install()?;
    apply_data_dir(&mut settings, args.data);
    if let Some(listen) = args.listen {
        settings.server.listen = listen;
    }
    let embedded = app::start_embedded(&settings).await?;
    let addr = embedded.gateway.addr;
    let bus = if settings.bus_servers().is_some() {
        "NATS"
    } else {
        "in-process bus"
    };
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), bus, "Orion is up");
    say!(
        "Orion listening on http://{addr} (data in {}; Ctrl-C stops)",
        settings.data_dir.display()
    );
    // After the address: scripts read the first line.
    if settings.auth.mode == AuthMode::None {
        tracing::warn!(%addr, "auth is off: anyone on this machine can use the API as admin");
        say!("auth is off (auth.mode = \"none\"): loopback only, every caller is admin");
    }
    serve_until_signal(
        signals,
        Some(embedded.gateway.server),
        Some(&embedded.node),
        &settings,
        &settings.node_name(),
    )
    .await
}

/// The one way a process of Orion's ends: it serves until SIGTERM or Ctrl-C (or until its
/// HTTP server stops), then its node (if it runs one) drains: no new work, what is in flight
/// finishes, and past `node.drain_timeout_secs` goes back to the bus; then its HTTP server
/// (if any) stops, finishing the requests it is answering.
async fn serve_until_signal(
    mut signals: Signals,
    server: Option<orion_gateway::Server>,
    node: Option<&orion_actors::NodeHandle>,
    settings: &Settings,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let handle = server.as_ref().map(|s| s.handle());
    let served = async {
        match server {
            Some(server) => server.await.context("while serving"),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = signals.wait() => {}
        served = served => served?,
        // An actor past its restart rate: no drain, the bus redelivers what this node held.
        () = orion_actors::supervision::crash_looped() => {
            return Ok(ExitCode::from(orion_actors::supervision::CRASH_LOOP_EXIT));
        }
    }
    if let Some(node) = node {
        // Kubernetes sends SIGTERM on every rollout: finish what is in flight, hand back what
        // cannot finish in time, then go.
        let deadline = std::time::Duration::from_secs(settings.node.drain_timeout_secs);
        tracing::info!(node = %name, ?deadline, "draining before stopping");
        node.bridge
            .send(orion_actors::Drain {
                deadline: Some(deadline),
            })
            .await
            .context("while draining")?;
        say!("node {name} drained");
    }
    if let Some(handle) = handle {
        handle.stop(true).await;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn gateway(settings: Settings) -> anyhow::Result<ExitCode> {
    let signals = Signals::install()?;
    require_cluster(&settings, "gateway")?;
    anyhow::ensure!(
        settings.auth.mode != AuthMode::None,
        "`orion gateway` serves a cluster and refuses to start without auth: set auth.mode = \
         \"jwt\" and one of auth.jwt.secret, auth.jwt.public_key_file, auth.jwt.jwks_file \
         (ORION__AUTH__MODE=jwt, ORION__AUTH__JWT__SECRET=…; see docs/security.md)"
    );
    anyhow::ensure!(
        settings
            .auth
            .jwt
            .issuer
            .as_deref()
            .is_some_and(|i| !i.trim().is_empty())
            && settings
                .auth
                .jwt
                .audience
                .as_deref()
                .is_some_and(|a| !a.trim().is_empty()),
        "`orion gateway` serves a cluster and requires every token's issuer and audience: set \
         auth.jwt.issuer and auth.jwt.audience (ORION__AUTH__JWT__ISSUER, ORION__AUTH__JWT__AUDIENCE)"
    );
    let name = format!("gateway-{}", settings.node_name());
    let services = app::connect(&settings, &name).await?;
    let gateway = app::start_gateway(&services, &settings)?;
    tracing::info!(addr = %gateway.addr, node = %name, "gateway listening");
    say!("gateway listening on http://{}", gateway.addr);
    serve_until_signal(signals, Some(gateway.server), None, &settings, &name).await
}

pub async fn node(args: NodeArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    let signals = Signals::install()?;
    if let Some(agents) = args.agents {
        settings.node.agents = agents;
    }
    // A node that only runs tests needs no database (its agents' snapshots stay in a local
    // file), so a test pool can be given no database password.
    let tests_only = !settings.node.agents.is_empty()
        && settings
            .node
            .agents
            .iter()
            .all(|a| *a == AgentKind::Testing);
    if tests_only && settings.bus_servers().is_some() {
        tracing::info!("a testing-only node: no database, its snapshots stay in data_dir");
    } else {
        require_cluster(&settings, "node")?;
    }
    if let Some(name) = args.name {
        settings.node.name = Some(name);
    }
    let name = settings.node_name();
    let services = app::connect(&settings, &name).await?;
    let node = app::start_node(&services, &settings, &name)?;
    if let Some(addr) = settings.node.metrics_listen {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("while binding node.metrics_listen {addr}"))?;
        let bound = listener.local_addr()?;
        actix_rt::spawn(orion_gateway::run_metrics(listener)?);
        say!("node {name} serves metrics on http://{bound}/metrics");
    }
    // What the node runs, and how many deliveries of each kind it handles at once.
    let kinds = settings.kind_concurrency();
    let running: Vec<String> = settings
        .node
        .agents
        .iter()
        .map(|&kind| {
            let at_once = orion_actors::concurrency_of(kind, settings.node.concurrency, &kinds);
            format!("{kind} ({at_once} at once)")
        })
        .collect();
    say!("node {name} running {}", running.join(", "));
    serve_until_signal(signals, None, Some(&node), &settings, &name).await
}

pub async fn migrate(args: DataArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    apply_data_dir(&mut settings, args);
    let url = settings.database_url()?;
    SqlStore::connect(&url)
        .await
        .context("while migrating the database")?;
    say!("database is up to date");
    Ok(ExitCode::SUCCESS)
}
