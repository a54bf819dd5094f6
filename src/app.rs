//! Connecting a process to its store and bus, and starting its node and gateway.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use orion_actors::{NodeConfig, NodeHandle};
use orion_bus::{Bus, InProcessBus, NatsBus, Subjects};
use orion_gateway::{AppState, GatewayConfig};
use orion_services::code::TreeSitterIntel;
use orion_services::lifecycle::Lifecycle;
use orion_services::store::SqlStore;

use crate::settings::Settings;

/// A process's connections, shared by its node and its gateway.
#[derive(Clone)]
pub struct Services {
    pub lifecycle: Lifecycle,
}

/// Connects to the configured database (migrating it) and bus.
pub async fn connect(settings: &Settings, node: &str) -> anyhow::Result<Services> {
    let url = settings.database_url()?;
    let store = SqlStore::connect(&url)
        .await
        .context("while opening the database")?;
    let subjects =
        Subjects::new(settings.bus.prefix.clone()).context("while reading bus.prefix")?;
    let bus: Arc<dyn Bus> = match &settings.bus.url {
        Some(url) => Arc::new(
            NatsBus::connect(url, subjects, settings.bus_config())
                .await
                .with_context(|| format!("while connecting to NATS at {url}"))?,
        ),
        None => Arc::new(InProcessBus::new(subjects, settings.bus_config())),
    };
    Ok(Services {
        lifecycle: Lifecycle::new(Arc::new(store), bus, node),
    })
}

/// Starts the configured agents (and coordinator) on the current actix System.
pub fn start_node(services: &Services, settings: &Settings, name: &str) -> NodeHandle {
    let config = NodeConfig {
        name: name.to_owned(),
        agents: settings.node.agents.clone(),
        concurrency: settings.node.concurrency,
    };
    orion_actors::start_node(
        services.lifecycle.clone(),
        Arc::new(TreeSitterIntel),
        config,
    )
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    /// Await it to serve until stopped; `server.handle()` stops it.
    pub server: orion_gateway::Server,
}

/// Binds the configured address (port 0 picks a free one) and starts serving.
pub fn start_gateway(services: &Services, settings: &Settings) -> anyhow::Result<Gateway> {
    let listener = TcpListener::bind(settings.server.listen)
        .with_context(|| format!("while binding {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        lifecycle: services.lifecycle.clone(),
        config: GatewayConfig {
            max_body_bytes: settings.server.max_body_bytes,
            workers: settings.server.workers,
        },
    };
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
    let node = start_node(&services, settings, &name);
    let gateway = start_gateway(&services, settings)?;
    Ok(Embedded {
        services,
        node,
        gateway,
    })
}
