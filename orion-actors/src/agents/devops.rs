//! The DevOps agent: `ci` tasks write a CI workflow and a Dockerfile for the repository's
//! build systems; `release` tasks write the next release's changelog section from the
//! conventional commits since the last version tag. Both are delivered as a pull request
//! through the review gate; an approved release is tagged when it merges.
//!
//! The files come from rules ([`orion_services::devops`]); where a model is configured it
//! may improve the CI files, and its version is used only when it passes the same checks as
//! the rules' own. A reviewer's request for changes is carried out by the model, on the
//! task's files only.

use orion_bus::codes;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{AgentKind, Assignment, Outcome, Step, Task, TaskFailure, TaskKind};
use orion_services::devops::{self, BuildSystem, ci, release};
use orion_services::forge::{ForgeReviewEvent, Forges};
use orion_services::llm::ChatModel;
use orion_services::store::{EffectKey, Store};
use orion_services::vcs::{self, Workspace};
use serde_json::json;
use uuid::Uuid;

use super::delivery::{
    Act, Asked, ChangeDelivery, DeveloperConfig, Run, store_failure, through_the_gate,
};
use super::edits::{Edit, edit_request, parse_edits, validate_edits, write_edits};
use super::repo::{blocking, head_of, landed};
use super::{Work, WorkContext};

/// Where a release's notes go.
const CHANGELOG: &str = "CHANGELOG.md";
/// The most of a manifest shown to the model.
const MANIFEST_BYTES: usize = 8 * 1024;

/// `ci` and `release` tasks.
pub struct DevopsWork {
    model: Option<Arc<dyn ChatModel>>,
    delivery: ChangeDelivery,
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path)).ok()
}

impl DevopsWork {
    pub fn new(
        model: Option<Arc<dyn ChatModel>>,
        store: Arc<dyn Store>,
        config: DeveloperConfig,
    ) -> Self {
        Self {
            model,
            delivery: ChangeDelivery::new(AgentKind::Devops, store, config),
        }
    }

    /// Mirrors pull requests and reviews to the forges of their repositories.
    pub fn with_forges(mut self, forges: Forges) -> Self {
        self.delivery.forges = forges;
        self
    }

    /// Writes `files`, commits them and opens the pull request; a commit that changes
    /// nothing ends the task with `no_change`.
    async fn deliver(
        &self,
        run: Run<'_>,
        ws: &Workspace,
        files: Vec<Edit>,
        message: String,
        checks: serde_json::Value,
    ) -> Result<Outcome, TaskFailure> {
        let task = run.task();
        let validated = validate_edits(&ws.path, &files)?;
        tokio::task::spawn_blocking(move || write_edits(&validated))
            .await
            .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))??;
        let (name, email) = self.delivery.author();
        let message = format!("{message}\n\nOrion task {}", task.id);
        let committed = {
            let ws = ws.clone();
            blocking(move || vcs::commit_all(&ws, &message, (&name, &email))).await?
        };
        let head = head_of(ws).await?;
        if committed.is_none() && ws.base_oid == head {
            return Err(TaskFailure::new(
                codes::NO_CHANGE,
                "the repository has these files already, as they would be written",
            ));
        }
        self.delivery.publish(run, ws, head, Some(checks)).await
    }

    /// `ci`: the workflow and Dockerfile for the build systems at the repository's root.
    async fn ci(&self, assignment: &Assignment, ctx: &WorkContext) -> Result<Outcome, TaskFailure> {
        let task = &assignment.task;
        let ws = self.delivery.workspace(task).await?;
        let root = ws.path.clone();
        let systems = devops::detect(&root);
        if systems.is_empty() {
            return Err(TaskFailure::new(
                codes::NO_BUILD_SYSTEM,
                "no build file at the repository's root: looked for Cargo.toml, package.json, pyproject.toml, \
                 setup.py, setup.cfg, requirements.txt, pytest.ini, go.mod, pom.xml and build.gradle(.kts)",
            ));
        }
        let found: Vec<String> = systems
            .iter()
            .map(|s| format!("{:?} ({})", s.toolchain, s.manifest).to_lowercase())
            .collect();
        ctx.progress(
            assignment,
            "detect",
            format!("found {}", found.join(", ")),
            json!({ "build_systems": systems }),
        )
        .await;
        let workflow_path = if root.join(ci::WORKFLOW_PATH).exists()
            && read(&root, ci::WORKFLOW_PATH).is_some_and(|t| !t.contains("Orion's DevOps agent"))
        {
            ci::FALLBACK_WORKFLOW_PATH
        } else {
            ci::WORKFLOW_PATH
        };
        let mut files = vec![Edit {
            path: workflow_path.to_owned(),
            content: ci::workflow(&root, &systems, &ws.base_branch),
        }];
        let dockerfile_kept = root.join("Dockerfile").exists();
        if !dockerfile_kept {
            files.push(Edit {
                path: "Dockerfile".into(),
                content: ci::dockerfile(&root, &systems[0]),
            });
        }
        if !root.join(".dockerignore").exists() {
            files.push(Edit {
                path: ".dockerignore".into(),
                content: ci::DOCKERIGNORE.into(),
            });
        }
        check_files(&root, &files, &systems).map_err(|why| {
            TaskFailure::new(
                codes::CI_RULES_INVALID,
                format!("the rules wrote an invalid file: {why}"),
            )
        })?;
        let mut author = "rules";
        if let Some(model) = &self.model {
            match self
                .improve(model.as_ref(), assignment, ctx, &root, &systems, &files)
                .await?
            {
                Improved::Used(better) => {
                    files = better;
                    author = "model";
                }
                Improved::Rejected(why) => {
                    ctx.progress(
                        assignment,
                        "model",
                        format!("kept the rules' files: the model's version {why}"),
                        json!({ "rejected": why }),
                    )
                    .await;
                }
                Improved::Paused(outcome) => return Ok(outcome),
            }
        }
        let check = check_files(&root, &files, &systems).map_err(|why| {
            TaskFailure::new(
                codes::CI_RULES_INVALID,
                format!("the files became invalid: {why}"),
            )
        })?;
        let checks = json!({
            "skipped": "a CI change is checked, not run here: its workflow runs on the forge",
            "checks": { "workflow": check, "dockerfile": if dockerfile_kept { "kept the repository's own" } else { "valid" } },
            "build_systems": systems,
            "written_by": author,
        });
        let message = "ci: build and test in CI, and a container image".to_owned();
        self.deliver(Run { assignment, ctx }, &ws, files, message, checks)
            .await
    }

    /// Asks the model to improve the rules' files; its answer is used only when every file
    /// it writes is one of them and passes the checks.
    async fn improve(
        &self,
        model: &dyn ChatModel,
        assignment: &Assignment,
        ctx: &WorkContext,
        root: &Path,
        systems: &[BuildSystem],
        files: &[Edit],
    ) -> Result<Improved, TaskFailure> {
        let mut user = String::from(
            "Improve this CI workflow (GitHub Actions) and Dockerfile for the repository: keep every `run` command a \
             command of the project's own tools, keep the test commands, fix what is wrong, and change nothing \
             without a reason.\n",
        );
        if let Some(brief) = &assignment.task.spec.prompt {
            user.push_str(&format!("The requester's brief: {brief}\n"));
        }
        for system in systems {
            let text = read(root, &system.manifest).unwrap_or_default();
            let cut = text
                .char_indices()
                .nth(MANIFEST_BYTES)
                .map_or(text.len(), |(i, _)| i);
            user.push_str(&format!(
                "\n--- {} (the build file)\n{}\n",
                system.manifest,
                &text[..cut]
            ));
        }
        for file in files {
            user.push_str(&format!(
                "\n=== FILE: {}\n{}=== END\n",
                file.path, file.content
            ));
        }
        let request = edit_request(user, files.iter().map(|f| f.path.clone()).collect());
        let answer = match self
            .delivery
            .ask(model, Run { assignment, ctx }, "ci".into(), &request)
            .await?
        {
            Asked::Answer(answer) => answer,
            Asked::OverBudget(pause) => return Ok(Improved::Paused(pause)),
        };
        let edits = match parse_edits(&answer.content) {
            Ok(edits) => edits,
            Err(why) => return Ok(Improved::Rejected(format!("could not be read: {why}"))),
        };
        let mut better: Vec<Edit> = files
            .iter()
            .map(|f| Edit {
                path: f.path.clone(),
                content: f.content.clone(),
            })
            .collect();
        for edit in edits {
            let Some(file) = better.iter_mut().find(|f| f.path == edit.path) else {
                return Ok(Improved::Rejected(format!(
                    "writes `{}`, which is not a CI file",
                    edit.path
                )));
            };
            file.content = edit.content;
        }
        Ok(match check_files(root, &better, systems) {
            Ok(_) => Improved::Used(better),
            Err(why) => Improved::Rejected(format!("is invalid: {why}")),
        })
    }

    /// `release`: the changelog section of the next version, from the conventional commits
    /// since the newest version tag on the history.
    async fn release(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        let task = &assignment.task;
        let ws = self.delivery.workspace(task).await?;
        let tags = {
            let ws = ws.clone();
            blocking(move || vcs::tags_on_head(&ws)).await?
        };
        let previous = release::latest(&tags).cloned();
        let commits = {
            let (ws, previous) = (ws.clone(), previous.clone());
            blocking(move || vcs::messages_since(&ws, previous.as_deref())).await?
        };
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let Some(plan) = release::plan(previous.as_deref(), &commits, &today) else {
            let since = previous.as_deref().unwrap_or("the first commit");
            return Ok(Outcome::Completed {
                result: json!({
                    "released": false,
                    "previous": previous,
                    "commits": commits.len(),
                    "reason": format!("no feat, fix, perf or breaking commit since {since}: nothing to release"),
                }),
            });
        };
        // The plan is fixed on first delivery: a redelivery (on another day) writes the same.
        let recorded = serde_json::to_value(&plan)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        let plan: release::Plan = serde_json::from_value(
            self.delivery
                .ledger
                .record_effect(
                    task.id,
                    &EffectKey::release_plan(),
                    "release_plan",
                    recorded,
                )
                .await
                .map_err(store_failure)?,
        )
        .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        ctx.progress(
            assignment,
            "plan",
            format!(
                "{} → {} ({} bump, {} changes)",
                plan.previous.as_deref().unwrap_or("(none)"),
                plan.tag,
                serde_json::to_value(plan.bump)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default(),
                plan.changes.len()
            ),
            json!({ "release": plan }),
        )
        .await;
        let changelog = release::with_section(read(&ws.path, CHANGELOG).as_deref(), &plan.section);
        let files = vec![Edit {
            path: CHANGELOG.into(),
            content: changelog,
        }];
        let checks = json!({
            "skipped": "a release is tagged when its pull request merges; its changes were tested as they landed",
            "release": plan,
        });
        let message = format!("chore(release): {}", plan.tag);
        self.deliver(Run { assignment, ctx }, &ws, files, message, checks)
            .await
    }

    /// On approval: merges, and for a release tags the merged commit (once, by the ledger).
    async fn merge(&self, run: Run<'_>, pull: Uuid) -> Result<Outcome, TaskFailure> {
        let task = run.task();
        let outcome = self.delivery.merge(run, pull).await?;
        let Outcome::Completed { mut result } = outcome else {
            return Ok(outcome);
        };
        if task.spec.kind != TaskKind::Release {
            return Ok(Outcome::Completed { result });
        }
        let ledger = &self.delivery.ledger;
        let plan: release::Plan = ledger
            .effect(task.id, &EffectKey::release_plan())
            .await
            .map_err(store_failure)?
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| {
                TaskFailure::new(codes::INTERNAL, "the release's plan is not in the ledger")
            })?;
        // Tagged once: claimed, and a claim a lost run left is settled by the remote tag.
        let key = EffectKey::tag(&plan.tag);
        if let Act::Go { orphaned } = self.delivery.claim(run, &key, "tag").await? {
            let head = result["head"].as_str().unwrap_or_default().to_owned();
            let ws = self.delivery.workspace(task).await?;
            let tag = format!("refs/tags/{}", plan.tag);
            if !landed(&ws, orphaned, tag, &head).await? {
                let (name, email) = self.delivery.author();
                let (tag, notes, head) = (
                    plan.tag.clone(),
                    format!("Release {}\n\n{}", plan.version, plan.section),
                    head.clone(),
                );
                blocking(move || vcs::tag_and_push(&ws, &tag, &head, &notes, (&name, &email)))
                    .await?;
            }
            self.delivery
                .settle(run, &key, json!({ "tag": plan.tag }))
                .await?;
        }
        result["tag"] = plan.tag.clone().into();
        result["release"] = serde_json::to_value(&plan).unwrap_or_default();
        Ok(Outcome::Completed { result })
    }

    /// A reviewer asked for changes: the model revises the task's files (and only those).
    async fn revise(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
        pull: Uuid,
        comment: &str,
    ) -> Result<Outcome, TaskFailure> {
        let task = &assignment.task;
        let model = self.model.as_ref().ok_or_else(|| {
            TaskFailure::new(
                codes::REVISION_NEEDS_MODEL,
                "the DevOps agent revises its files with a model, and none is configured: set llm.base_url and \
                 llm.model, or edit the branch by hand and approve",
            )
        })?;
        let ws = self.delivery.workspace(task).await?;
        let pr = self
            .delivery
            .pulls
            .pull(pull)
            .await
            .map_err(store_failure)?;
        let paths: Vec<String> = pr
            .diff
            .lines()
            .filter_map(|l| l.strip_prefix("+++ b/").map(str::to_owned))
            .collect();
        let mut user = format!("A reviewer asked for changes to these files: {comment}\n");
        for path in &paths {
            user.push_str(&format!(
                "\n=== FILE: {path}\n{}=== END\n",
                read(&ws.path, path).unwrap_or_default()
            ));
        }
        let request = edit_request(user, paths.clone());
        let answer = match self
            .delivery
            .ask(
                model.as_ref(),
                Run { assignment, ctx },
                self.delivery.revision_step(pull).await?,
                &request,
            )
            .await?
        {
            Asked::Answer(answer) => answer,
            Asked::OverBudget(pause) => return Ok(pause),
        };
        let edits = parse_edits(&answer.content).map_err(|why| {
            TaskFailure::new(
                codes::MODEL_OUTPUT_UNUSABLE,
                format!("the model's revision cannot be applied: {why}"),
            )
        })?;
        if let Some(stray) = edits.iter().find(|e| !paths.contains(&e.path)) {
            return Err(TaskFailure::new(
                codes::UNSAFE_EDIT,
                format!(
                    "the revision writes `{}`, which is not one of the task's files",
                    stray.path
                ),
            ));
        }
        let files = edits
            .into_iter()
            .map(|e| Edit {
                path: e.path,
                content: e.content,
            })
            .collect::<Vec<_>>();
        if task.spec.kind == TaskKind::Ci {
            let systems = devops::detect(&ws.path);
            let mut all: Vec<Edit> = paths
                .iter()
                .map(|p| Edit {
                    path: p.clone(),
                    content: read(&ws.path, p).unwrap_or_default(),
                })
                .collect();
            for file in &files {
                if let Some(slot) = all.iter_mut().find(|f| f.path == file.path) {
                    slot.content = file.content.clone();
                }
            }
            check_files(&ws.path, &all, &systems).map_err(|why| {
                TaskFailure::new(
                    codes::MODEL_OUTPUT_UNUSABLE,
                    format!("the revised files are invalid: {why}"),
                )
            })?;
        }
        let checks = json!({ "skipped": "a revision of a CI or release change is checked, not run", "revised_for": comment });
        self.deliver(
            Run { assignment, ctx },
            &ws,
            files,
            format!("{}: revise as reviewed", task.spec.kind),
            checks,
        )
        .await
    }
}

/// What the model made of the rules' files.
enum Improved {
    Used(Vec<Edit>),
    Rejected(String),
    Paused(Outcome),
}

/// Checks the CI files among `files`: the workflow against the build systems, the
/// Dockerfile's instructions.
fn check_files(
    root: &Path,
    files: &[Edit],
    systems: &[BuildSystem],
) -> Result<ci::WorkflowCheck, String> {
    let mut check = None;
    for file in files {
        if file.path.starts_with(".github/workflows/") {
            check = Some(
                ci::validate_workflow(root, &file.content, systems)
                    .map_err(|e| format!("{}: {e}", file.path))?,
            );
        } else if file.path == "Dockerfile" {
            ci::validate_dockerfile(&file.content).map_err(|e| format!("Dockerfile: {e}"))?;
        }
    }
    check.ok_or_else(|| "no workflow".to_owned())
}

#[async_trait]
impl Work for DevopsWork {
    fn ledger(&self) -> Option<Arc<dyn orion_services::store::EffectStore>> {
        Some(self.delivery.ledger.clone())
    }

    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        Err(through_the_gate(task))
    }

    async fn step(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        match (&assignment.step, assignment.task.spec.kind) {
            (Step::Work, TaskKind::Ci) => self.ci(assignment, ctx).await,
            (Step::Work, TaskKind::Release) => self.release(assignment, ctx).await,
            (Step::Merge { pull }, _) => {
                let run = Run { assignment, ctx };
                self.delivery
                    .mirror_review(run, ForgeReviewEvent::Approve, "Approved in Orion.")
                    .await?;
                self.merge(run, *pull).await
            }
            (Step::Revise { pull, comment }, _) => {
                self.delivery
                    .mirror_review(
                        Run { assignment, ctx },
                        ForgeReviewEvent::RequestChanges,
                        comment,
                    )
                    .await?;
                self.revise(assignment, ctx, *pull, comment).await
            }
            (step, kind) => Err(TaskFailure::new(
                codes::STEP_UNSUPPORTED,
                format!(
                    "the devops agent has no `{}` step for `{kind}` tasks",
                    step.name()
                ),
            )),
        }
    }
}
