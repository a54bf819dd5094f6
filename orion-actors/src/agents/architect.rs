//! The Architect: the repository's module dependency graph, its cycles and layers.

use orion_bus::codes;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{Task, TaskFailure};
use orion_services::code::CodeIntel;

use super::repo::{code_failure, local_repository};
use super::{Work, WorkContext};

/// `design` tasks: the dependency graph as JSON and Mermaid. A design note (ADR) drafted by
/// a model comes with the model service; until then the graph is the whole answer, and the
/// result says so.
pub struct ArchitectWork {
    code: Arc<dyn CodeIntel>,
}

impl ArchitectWork {
    pub fn new(code: Arc<dyn CodeIntel>) -> Self {
        Self { code }
    }
}

#[async_trait]
impl Work for ArchitectWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        let root = local_repository(task)?;
        let graph = self.code.dependencies(&root).await.map_err(code_failure)?;
        let cycles: usize = graph.languages.values().map(|g| g.cycles.len()).sum();
        let mut result = serde_json::to_value(&graph)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        result["cycles"] = cycles.into();
        result["design_note"] = serde_json::Value::Null;
        result["design_note_reason"] = "no model is configured; the dependency graph alone".into();
        Ok(result)
    }
}
