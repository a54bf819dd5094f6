//! The Testing agent: runs a repository's tests, at a ref, in the sandbox.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use orion_bus::{Task, TaskFailure};
use orion_services::{testing, vcs};

use super::analyzer::repository_path;
use super::developer::vcs_failure;
use super::{Work, WorkContext};

/// `test` tasks: the result is the test run (command, verdict, output).
pub struct TestingWork {
    /// Clones for testing a ref live in `<work_dir>/<task>`.
    work_dir: PathBuf,
    command: Option<Vec<String>>,
    timeout: Duration,
}

impl TestingWork {
    pub fn new(work_dir: PathBuf, command: Option<Vec<String>>, timeout: Duration) -> Self {
        Self {
            work_dir,
            command,
            timeout,
        }
    }
}

#[async_trait]
impl Work for TestingWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        let path = repository_path(task)?;
        // A ref is tested in a clone of its own; the working tree as it is otherwise.
        let dir = match &task.spec.git_ref {
            Some(git_ref) => {
                let (remote, into, git_ref) = (
                    path.to_string_lossy().into_owned(),
                    self.work_dir.join(task.id.to_string()),
                    git_ref.clone(),
                );
                let branch = format!("orion-test/{}", task.id);
                tokio::task::spawn_blocking(move || {
                    vcs::checkout(&remote, &into, &branch, Some(&git_ref)).map(|ws| ws.path)
                })
                .await
                .map_err(|e| TaskFailure::new("interrupted", e.to_string()))?
                .map_err(vcs_failure)?
            }
            None => path,
        };
        if !dir.is_dir() {
            return Err(TaskFailure::new(
                "repo_not_found",
                format!("repository path `{}` does not exist", dir.display()),
            ));
        }
        let command = self
            .command
            .clone()
            .or_else(|| testing::detect(&dir))
            .ok_or_else(|| {
                TaskFailure::new(
                    "no_test_command",
                    "no test command configured (developer.test_command) or detected",
                )
            })?;
        let environment: Vec<(String, String)> = std::env::vars().collect();
        let run = testing::run(&dir, &command, self.timeout, environment)
            .await
            .map_err(|e| TaskFailure::new("tests_not_run", e.to_string()))?;
        if run.timed_out {
            return Err(TaskFailure::new(
                "tests_timed_out",
                format!("`{}` ran out of time", command.join(" ")),
            ));
        }
        // Failing tests are a finding, not a failure of the task: the verdict is the result.
        serde_json::to_value(run).map_err(|e| TaskFailure::new("internal", e.to_string()))
    }
}
