//! The Analyzer: measures a repository with code intelligence.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{Task, TaskFailure};
use orion_services::code::{CodeError, CodeIntel};

use super::{Work, WorkContext};

/// `analyze` tasks: per-file and per-language line and function counts.
pub struct AnalyzerWork {
    code: Arc<dyn CodeIntel>,
}

impl AnalyzerWork {
    pub fn new(code: Arc<dyn CodeIntel>) -> Self {
        Self { code }
    }
}

/// The local directory a task's `repo` names, or why it names none this agent can read.
fn local_repository(task: &Task) -> Result<PathBuf, TaskFailure> {
    let repo = task.spec.repo.trim();
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if path.contains("://") || path.starts_with("git@") {
        return Err(TaskFailure::new(
            "repo_unsupported",
            format!("`{repo}` is a remote repository; the analyzer reads local paths only so far"),
        ));
    }
    if task.spec.git_ref.is_some() {
        return Err(TaskFailure::new(
            "ref_unsupported",
            "the analyzer measures the working tree; analysing another ref is not supported yet",
        ));
    }
    Ok(PathBuf::from(path))
}

#[async_trait]
impl Work for AnalyzerWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        let root = local_repository(task)?;
        let report = self.code.analyze(&root).await.map_err(|e| match e {
            CodeError::NotFound(_) | CodeError::NotADirectory(_) => {
                TaskFailure::new("repo_not_found", e.to_string())
            }
            CodeError::Io(_) => TaskFailure::new("repo_unreadable", e.to_string()),
            CodeError::Interrupted(_) => TaskFailure::new("analysis_interrupted", e.to_string()),
        })?;
        serde_json::to_value(report).map_err(|e| TaskFailure::new("internal", e.to_string()))
    }
}
