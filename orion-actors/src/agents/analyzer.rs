//! The Analyzer: measures a repository with code intelligence and weighs it with history.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{Task, TaskFailure};
use orion_services::code::{CodeError, CodeIntel, MAX_LISTED_FILES, score_change};
use orion_services::vcs;

use super::{Work, WorkContext};

/// `analyze` tasks: a report with totals, the most complex functions, hotspots and debt.
pub struct AnalyzerWork {
    code: Arc<dyn CodeIntel>,
}

impl AnalyzerWork {
    pub fn new(code: Arc<dyn CodeIntel>) -> Self {
        Self { code }
    }
}

/// The local path a task's `repo` names (`file://` or a plain path), or why it names none
/// the agents can reach.
pub(crate) fn repository_path(task: &Task) -> Result<PathBuf, TaskFailure> {
    let repo = task.spec.repo.trim();
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if path.contains("://") || path.starts_with("git@") {
        return Err(TaskFailure::new(
            "repo_unsupported",
            format!("`{repo}` is a remote repository; agents read local paths only so far"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// The remote a writing agent clones: a local path, or a URL (`http://` and `file://` here;
/// private ones with the credential stored for them).
pub(crate) fn remote_url(task: &Task) -> Result<String, TaskFailure> {
    let repo = task.spec.repo.trim();
    if repo.contains("://") || repo.starts_with("git@") {
        return Ok(repo.to_owned());
    }
    Ok(repository_path(task)?.to_string_lossy().into_owned())
}

/// The working tree a read-only agent measures: the repository as it is, so a `ref` (which
/// would need a checkout) is refused.
pub(crate) fn local_repository(task: &Task) -> Result<PathBuf, TaskFailure> {
    let path = repository_path(task)?;
    if task.spec.git_ref.is_some() {
        return Err(TaskFailure::new(
            "ref_unsupported",
            "agents measure the working tree (or a `diff`); working on another ref is not supported yet",
        ));
    }
    Ok(path)
}

pub(crate) fn code_failure(e: CodeError) -> TaskFailure {
    match e {
        CodeError::NotFound(_) | CodeError::NotADirectory(_) => {
            TaskFailure::new("repo_not_found", e.to_string())
        }
        CodeError::Io(_) => TaskFailure::new("repo_unreadable", e.to_string()),
        CodeError::Interrupted(_) => TaskFailure::new("analysis_interrupted", e.to_string()),
    }
}

#[async_trait]
impl Work for AnalyzerWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        let root = local_repository(task)?;
        if let Some((base, head)) = task.spec.diff_range() {
            return score_diff(root, base.to_owned(), head.to_owned()).await;
        }
        let mut report = self.code.analyze(&root).await.map_err(code_failure)?;
        // History is optional: a plain directory has no hotspots, and that is not a failure.
        let history = tokio::task::spawn_blocking(move || vcs::churn(&root, vcs::CHURN_COMMITS))
            .await
            .map_err(|e| TaskFailure::new("analysis_interrupted", e.to_string()))?;
        match history {
            Ok(churn) => report.add_hotspots(&churn),
            Err(e) => tracing::info!(task = %task.id, reason = %e, "no history for hotspots"),
        }
        report.suggest();
        report.trim_files(MAX_LISTED_FILES);
        serde_json::to_value(report).map_err(|e| TaskFailure::new("internal", e.to_string()))
    }
}

/// `diff` mode: only what changed between two revisions, scored.
async fn score_diff(
    root: PathBuf,
    base: String,
    head: String,
) -> Result<serde_json::Value, TaskFailure> {
    let diff = format!("{base}..{head}");
    let report = tokio::task::spawn_blocking(move || {
        let changes = vcs::changes(&root, &base, &head)?;
        Ok::<_, vcs::VcsError>(score_change(&diff, &changes))
    })
    .await
    .map_err(|e| TaskFailure::new("analysis_interrupted", e.to_string()))?
    .map_err(|e| match e {
        vcs::VcsError::NotARepository(_) => TaskFailure::new("not_a_repository", e.to_string()),
        vcs::VcsError::UnknownRevision(_) => TaskFailure::new("unknown_revision", e.to_string()),
        _ => TaskFailure::new("vcs_error", e.to_string()),
    })?;
    serde_json::to_value(report).map_err(|e| TaskFailure::new("internal", e.to_string()))
}
