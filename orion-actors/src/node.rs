//! The node runtime: starts the actors a node is configured for.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use orion_bus::AgentKind;
use orion_services::code::CodeIntel;
use orion_services::lifecycle::Lifecycle;
use orion_services::llm::ChatModel;

use crate::agents::{
    Agent, AgentActor, AnalyzerWork, ArchitectWork, DeveloperConfig, DeveloperWork, DevopsWork,
    TestingConfig, TestingWork, Work, WorkContext,
};
use crate::bridge::BusBridge;
use crate::coordinator::Coordinator;

/// What a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Unique among the cluster's nodes; appears in events and heartbeats.
    pub name: String,
    /// The roles this node takes; `coordinator` among them makes it a coordinator too.
    pub agents: Vec<AgentKind>,
    /// Deliveries handled at once per queue.
    pub concurrency: usize,
    /// Per agent kind, deliveries handled at once where it differs from `concurrency`.
    pub kind_concurrency: HashMap<AgentKind, usize>,
    pub developer: DeveloperConfig,
    pub testing: TestingConfig,
    /// The kinds declared in `[plugins]` (a coordinator routes them and chooses among all
    /// kinds for `auto` tasks).
    pub plugins: orion_bus::Plugins,
    /// The coordinator's task lease (see `Coordinator::with_lease`).
    pub task_lease: std::time::Duration,
    /// Where a task's `repo` may point: checked before any agent touches it.
    pub repos: orion_services::vcs::RepoPolicy,
}

/// The services a node's agents use besides the store and the bus.
#[derive(Clone)]
pub struct NodeServices {
    pub code: Arc<dyn CodeIntel>,
    /// `None` where no model is configured: model work then fails with a clear message.
    pub model: Option<Arc<dyn ChatModel>>,
    /// Where pull requests are mirrored, if anywhere.
    pub forges: orion_services::forge::Forges,
}

/// The running actors of a node. Dropping it does not stop them; stopping the actix
/// System does.
pub struct NodeHandle {
    pub bridge: Addr<BusBridge>,
    pub coordinator: Option<Addr<Coordinator>>,
    pub agents: HashMap<AgentKind, Addr<AgentActor>>,
}

/// Starts a node's actors on the current actix System. Each (the coordinator, the bridge,
/// every agent) runs under `actix::Supervisor`, so it is restarted when it stops, within the
/// restart rate of [`crate::supervision`].
pub fn start_node(lifecycle: Lifecycle, services: NodeServices, config: NodeConfig) -> NodeHandle {
    let code = services.code.clone();
    let coordinator = config.agents.contains(&AgentKind::Coordinator).then(|| {
        let coordinator = Coordinator::new(lifecycle.clone(), config.plugins.clone())
            .with_lease(config.task_lease);
        actix::Supervisor::start(move |_| coordinator)
    });
    let mut agents = HashMap::new();
    for &kind in &config.agents {
        let work: Arc<dyn Work> = match kind {
            AgentKind::Analyzer => {
                Arc::new(AnalyzerWork::new(code.clone(), lifecycle.store().clone()))
            }
            AgentKind::Architect => Arc::new(ArchitectWork::new(code.clone())),
            AgentKind::Testing => Arc::new(TestingWork::new(config.testing.clone())),
            AgentKind::Developer => Arc::new(
                DeveloperWork::new(
                    services.model.clone(),
                    lifecycle.store().clone(),
                    code.clone(),
                    config.developer.clone(),
                )
                .with_forges(services.forges.clone()),
            ),
            AgentKind::Devops => Arc::new(
                DevopsWork::new(
                    services.model.clone(),
                    lifecycle.store().clone(),
                    config.developer.clone(),
                )
                .with_forges(services.forges.clone()),
            ),
            // The coordinator runs beside the agents, not as one of them.
            AgentKind::Coordinator => continue,
            AgentKind::Custom(custom) => {
                tracing::warn!(kind = %custom.as_str(), "a declared kind is served by external agents, not by a node");
                continue;
            }
        };
        let agent = Agent {
            context: WorkContext {
                node: config.name.clone(),
                agent: kind,
                bus: lifecycle.bus().clone(),
                repos: Arc::new(config.repos.clone()),
                run: Default::default(),
            },
            work,
            store: lifecycle.store().clone(),
        };
        agents.insert(
            kind,
            actix::Supervisor::start(move |_| AgentActor::new(agent)),
        );
    }
    let bridge = BusBridge::new(
        lifecycle.bus().clone(),
        config.name.clone(),
        coordinator.clone(),
        agents.clone(),
        config.concurrency,
        config.kind_concurrency.clone(),
    );
    let bridge = actix::Supervisor::start(move |_| bridge);
    tracing::info!(node = %config.name, agents = ?config.agents, "node started");
    NodeHandle {
        bridge,
        coordinator,
        agents,
    }
}
