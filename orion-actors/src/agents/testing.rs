//! The Testing agent: runs a repository's tests in the sandbox — for `test` tasks, at a ref
//! or on the working tree; for `develop` tasks, on the Developer's candidate commit, whose
//! verdict it hands back to the Developer.

use orion_bus::codes;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use orion_bus::{AgentKind, Assignment, Candidate, Outcome, Step, Task, TaskFailure, TestVerdict};
use orion_services::sandbox::{self, Job, Sandbox, SandboxError, Scratch, TestRun};
use orion_services::vcs;

use super::repo::{blocking, remote_url, repository_path};
use super::{Work, WorkContext};

/// The last characters of a failing run's output that a failure message carries.
const FAILURE_TAIL_CHARS: usize = 2000;

/// Where and how the Testing agent runs tests.
#[derive(Clone, Debug)]
pub struct TestingConfig {
    /// Clones for testing live in `<work_dir>/<task>…`.
    pub work_dir: PathBuf,
    /// The test command; detected from the repository when absent.
    pub command: Option<Vec<String>>,
    /// Installs the suite's dependencies before its tests, in a step of its own
    /// (`developer.setup_command`); absent: the repository's detected setup, where
    /// `sandbox.setup_network` lets it reach the network, else none.
    pub setup: Option<Vec<String>>,
    pub timeout: Duration,
    /// Where repository code runs; its `denied` paths (the node's data directory) are never
    /// copied into a test run's tree either.
    pub sandbox: Sandbox,
}

/// `test` tasks, and the test step of `develop` tasks.
pub struct TestingWork {
    config: TestingConfig,
}

impl TestingWork {
    pub fn new(config: TestingConfig) -> Self {
        Self { config }
    }

    /// The configured command, else the one the repository's files suggest.
    fn command_for(&self, dir: &Path) -> Option<Vec<String>> {
        self.config.command.clone().or_else(|| sandbox::detect(dir))
    }

    /// The setup step's commands: the configured one, else the detected ones where they may
    /// reach the network (they install dependencies).
    fn setup_for(&self, dir: &Path) -> Vec<Vec<String>> {
        match &self.config.setup {
            Some(command) => vec![command.clone()],
            None if self.config.sandbox.config.setup_network => sandbox::detect_setup(dir),
            None => Vec::new(),
        }
    }

    fn job<'a>(
        &self,
        dir: &'a Path,
        command: &'a [String],
        network: bool,
        scratch: &'a Scratch,
    ) -> Job<'a> {
        Job {
            dir,
            command,
            timeout: self.config.timeout,
            network,
            environment: std::env::vars().collect(),
            scratch,
        }
    }

    /// Runs the setup step, then the tests, in `dir`, both in the sandbox (sharing a
    /// private scratch directory); `Err` when they could not run or ran out of time.
    async fn run(&self, dir: &Path, command: &[String]) -> Result<TestRun, TaskFailure> {
        let not_run = |e: SandboxError| {
            let code = match e {
                SandboxError::Unavailable(_) => codes::SANDBOX_UNAVAILABLE,
                _ => codes::TESTS_NOT_RUN,
            };
            TaskFailure::new(code, e.to_string())
        };
        let scratch =
            Scratch::new().map_err(|e| TaskFailure::new(codes::TESTS_NOT_RUN, e.to_string()))?;
        let sandbox = &self.config.sandbox;
        for setup in self.setup_for(dir) {
            let network = sandbox.config.setup_network;
            let run = sandbox
                .run(self.job(dir, &setup, network, &scratch))
                .await
                .map_err(not_run)?;
            if !run.passed {
                return Err(TaskFailure::new(
                    codes::SETUP_FAILED,
                    format!(
                        "the setup step `{}` failed{}:\n{}",
                        setup.join(" "),
                        if network {
                            ""
                        } else {
                            " (without network: sandbox.setup_network is off)"
                        },
                        tail(&run.output)
                    ),
                ));
            }
        }
        let run = sandbox
            .run(self.job(dir, command, false, &scratch))
            .await
            .map_err(not_run)?;
        if run.timed_out {
            return Err(TaskFailure::new(
                codes::TESTS_TIMED_OUT,
                format!(
                    "`{}` ran out of time:\n{}",
                    command.join(" "),
                    tail(&run.output)
                ),
            ));
        }
        Ok(run)
    }

    /// The verdict on a candidate commit: checked out from the remote in a worktree of its
    /// own, tested, and the worktree removed again.
    async fn test_candidate(&self, task: &Task, candidate: &Candidate) -> TestVerdict {
        let outcome = async {
            let remote = remote_url(task)?;
            let short: String = candidate.head.chars().take(12).collect();
            let into = self.config.work_dir.join(format!("{}-{short}", task.id));
            let dir = {
                let (remote, into, candidate) = (remote.clone(), into.clone(), candidate.clone());
                blocking(move || {
                    // What a crashed earlier delivery left (its tests could have rewritten
                    // the worktree's `.git`) is never trusted: made anew.
                    vcs::remove_checkout(&remote, &into, &candidate.git_ref)?;
                    vcs::checkout_commit(&remote, &into, &candidate.git_ref, &candidate.head)
                })
                .await?
            };
            let verdict = match self.command_for(&dir) {
                None => Ok(TestVerdict::Skipped {
                    reason: "no test command configured or detected".into(),
                }),
                Some(command) => self.run(&dir, &command).await.map(|run| {
                    if run.passed {
                        TestVerdict::Passed {
                            run: serde_json::to_value(&run).unwrap_or_default(),
                        }
                    } else {
                        TestVerdict::Failed {
                            failure: TaskFailure::new(
                                codes::TESTS_FAILED,
                                format!("`{}` failed:\n{}", command.join(" "), tail(&run.output)),
                            ),
                        }
                    }
                }),
            };
            let git_ref = candidate.git_ref.clone();
            if let Err(e) =
                blocking(move || vcs::remove_checkout(&remote, &into, &git_ref)).await
            {
                tracing::warn!(task = %task.id, error = %e.message, "could not remove a test worktree");
            }
            verdict
        }
        .await;
        outcome.unwrap_or_else(|failure| TestVerdict::Failed { failure })
    }
}

/// Copies the working tree at `from` into a fresh `to`: files, directories and symbolic
/// links (as links), but no `.git` and nothing under `exclude` (the node's own data).
fn copy_tree(from: &Path, to: &Path, exclude: &[PathBuf]) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == ".git" || exclude.iter().any(|e| source.starts_with(e)) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&source, &target, exclude)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// The end of a run's output, where test runners print their summary.
fn tail(output: &str) -> String {
    let skip = output.chars().count().saturating_sub(FAILURE_TAIL_CHARS);
    output.chars().skip(skip).collect()
}

#[async_trait]
impl Work for TestingWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        let path = repository_path(task)?;
        if !path.is_dir() {
            return Err(TaskFailure::new(
                codes::REPO_NOT_FOUND,
                format!("repository path `{}` does not exist", path.display()),
            ));
        }
        // The tests never run in the repository itself (they could write its `.git`, or the
        // node's data directory inside it): a ref is tested in a worktree of its own, the
        // working tree in a copy of it, and either is removed afterwards.
        let into = self.config.work_dir.join(task.id.to_string());
        let remote = path.to_string_lossy().into_owned();
        let branch_ref = format!("refs/heads/orion-test/{}", task.id);
        {
            // What a crashed earlier delivery left is never trusted: made anew.
            let (remote, into, branch_ref) = (remote.clone(), into.clone(), branch_ref.clone());
            blocking(move || vcs::remove_checkout(&remote, &into, &branch_ref)).await?;
        }
        let dir = match &task.spec.git_ref {
            Some(git_ref) => {
                let (remote, into, git_ref) = (remote.clone(), into.clone(), git_ref.clone());
                let branch = format!("orion-test/{}", task.id);
                blocking(move || {
                    vcs::checkout(&remote, &into, &branch, Some(&git_ref)).map(|ws| ws.path)
                })
                .await?
            }
            None => {
                let from = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
                let (to, exclude) = (into.clone(), self.config.sandbox.config.denied.clone());
                tokio::task::spawn_blocking(move || copy_tree(&from, &to, &exclude).map(|()| to))
                    .await
                    .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))?
                    .map_err(|e| {
                        TaskFailure::new(
                            codes::REPO_UNREADABLE,
                            format!("copying the working tree: {e}"),
                        )
                    })?
            }
        };
        let outcome = async {
            let command = self.command_for(&dir).ok_or_else(|| {
                TaskFailure::new(
                    codes::NO_TEST_COMMAND,
                    "no test command configured (developer.test_command) or detected",
                )
            })?;
            self.run(&dir, &command).await
        }
        .await;
        let cleanup = blocking(move || vcs::remove_checkout(&remote, &into, &branch_ref)).await;
        if let Err(e) = cleanup {
            tracing::warn!(task = %task.id, error = %e.message, "could not remove a test worktree");
        }
        let run = outcome?;
        // Failing tests are a finding, not a failure of the task: the verdict is the result.
        serde_json::to_value(run).map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))
    }

    async fn step(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        match &assignment.step {
            Step::Test { candidate } => {
                let verdict = self.test_candidate(&assignment.task, candidate).await;
                Ok(Outcome::Handoff {
                    agent: AgentKind::Developer,
                    step: Step::Publish {
                        candidate: candidate.clone(),
                        verdict,
                    },
                })
            }
            Step::Work => self
                .perform(&assignment.task, ctx)
                .await
                .map(|result| Outcome::Completed { result }),
            other => Err(TaskFailure::new(
                codes::STEP_UNSUPPORTED,
                format!("the testing agent has no `{}` step", other.name()),
            )),
        }
    }
}
