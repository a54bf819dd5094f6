//! Orion's adapters to the outside world, each behind a trait the actors depend on.
//!
//! - [`store`]: tasks, their event log and agent snapshots in Postgres or SQLite (sea-orm);
//! - [`code`]: code intelligence over tree-sitter grammars;
//! - [`vcs`]: version control over git2;
//! - [`llm`]: chat models on OpenAI-compatible endpoints;
//! - [`forge`]: pull requests mirrored to a GitHub-compatible API;
//! - [`devops`]: build systems, CI workflows and Dockerfiles, releases from conventional commits;
//! - [`sandbox`]: code Orion did not write (a repository's tests) run in new namespaces;
//! - [`lifecycle`]: the one place a task's status is changed, logged and announced.
//!
//! This crate knows the protocol types of `orion-bus` but no actors and no HTTP.

pub mod budgets;
pub mod code;
pub mod dataset;
pub mod devops;
pub mod digest;
pub mod forge;
pub mod jitter;
pub mod lifecycle;
pub mod llm;
pub mod metrics;
pub mod review_gate;
pub mod routing;
pub mod sandbox;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod uri;
pub mod vcs;

/// The text of a panic's payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
