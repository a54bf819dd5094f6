//! Orion's actors: the coordinator, the agents, the bridge to the bus, and the node runtime
//! that starts them.
//!
//! Every agent is an actix actor, and every actor runs supervised ([`supervision`]). The [`BusBridge`] is the only place where envelopes become
//! actor messages and where deliveries are acknowledged: a message is acknowledged after its
//! handler succeeded, rejected for redelivery when the handler failed for a passing reason,
//! and acknowledged with a warning when it can never succeed. Agents never change a task's
//! status themselves; they report to the coordinators, which move tasks through the
//! [`orion_services::lifecycle::Lifecycle`].

mod agents;
mod ask;
mod bridge;
mod coordinator;
mod messages;
mod node;
pub mod supervision;

pub use agents::{
    Agent, AgentActor, AnalyzerWork, ArchitectWork, DeveloperConfig, DeveloperWork, DevopsWork,
    EDIT_FORMAT, Edit, TestingConfig, TestingWork, Work, WorkContext, parse_edits, validate_edits,
};
pub use ask::{AskError, ask};
pub use bridge::{BusBridge, COORDINATOR_CONCURRENCY, concurrency_of, coordinator_concurrency};
pub use coordinator::{Coordinator, reclaim_orphans};
pub use messages::{
    Ask, CancelTask, Drain, HandleError, Perform, ReportArrived, ResumeArrived, ReviewArrived,
    Stop, TaskArrived,
};
pub use node::{NodeConfig, NodeHandle, NodeServices, start_node};
