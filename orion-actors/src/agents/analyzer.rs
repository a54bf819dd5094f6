//! The Analyzer: measures a repository with code intelligence and weighs it with history.

use orion_bus::codes;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{Task, TaskFailure};
use orion_services::code::{CodeIntel, FunctionList, MAX_LISTED_FILES, score_change};
use orion_services::store::AnalysisStore;
use orion_services::vcs;

use super::delivery::store_failure;
use super::repo::{code_failure, local_repository};
use super::{Work, WorkContext};

/// `analyze` tasks: a report with totals, the most complex functions, hotspots and debt;
/// every function's metrics are stored beside it, as a list the report names.
pub struct AnalyzerWork {
    code: Arc<dyn CodeIntel>,
    store: Arc<dyn AnalysisStore>,
}

impl AnalyzerWork {
    pub fn new(code: Arc<dyn CodeIntel>, store: Arc<dyn AnalysisStore>) -> Self {
        Self { code, store }
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
            .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))?;
        match history {
            Ok(churn) => report.add_hotspots(&churn),
            Err(e) => tracing::info!(task = %task.id, reason = %e, "no history for hotspots"),
        }
        report.suggest();
        report.trim_files(MAX_LISTED_FILES);
        // Every function, as a list of this measurement's own (a retry of the step, or a
        // redelivery, measures anew under another id): the report that is stored names it.
        let functions = report.take_functions();
        let list = uuid::Uuid::now_v7();
        self.store
            .save_functions(task.id, list, &functions)
            .await
            .map_err(store_failure)?;
        report.function_list = Some(FunctionList {
            id: list,
            count: functions.len() as u64,
        });
        serde_json::to_value(report).map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))
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
    .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))?
    .map_err(|e| match e {
        vcs::VcsError::NotARepository(_) => {
            TaskFailure::new(codes::NOT_A_REPOSITORY, e.to_string())
        }
        vcs::VcsError::UnknownRevision(_) => {
            TaskFailure::new(codes::UNKNOWN_REVISION, e.to_string())
        }
        _ => TaskFailure::new(codes::VCS_ERROR, e.to_string()),
    })?;
    serde_json::to_value(report).map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))
}
