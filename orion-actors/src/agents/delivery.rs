//! What agents that deliver a change as a pull request share: the task's workspace, model
//! calls through the effects ledger and the task's budget, publishing the pull request (and
//! mirroring it to a forge), and the merge on approval.

use orion_bus::codes;
use orion_bus::{AgentKind, Assignment, Outcome, Step, Task, TaskFailure};
use orion_services::forge::{ForgePull, ForgeReviewEvent, GitHubForge};
use orion_services::llm::{CallContext, ChatModel, ChatRequest, ChatResponse};
use orion_services::store::{
    EffectKey, EffectStore, PullState, PullStore, PullVersion, Store, StoreError, UsageRecord,
    UsageStore,
};
use orion_services::vcs::{self, MergeOutcome, Workspace};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

use super::WorkContext;
use super::repo::{blocking, remote_url};

/// The failure of a task whose agent works in steps around the review gate, asked to just
/// perform it.
pub(crate) fn through_the_gate(task: &Task) -> TaskFailure {
    TaskFailure::new(
        codes::STEP_UNSUPPORTED,
        format!("`{}` tasks go through the review gate", task.spec.kind),
    )
}

/// A streamed answer is noted in the task's events every so many pieces, with its end.
const STREAM_NOTE_EVERY: usize = 32;
const STREAM_NOTE_TAIL: usize = 400;

/// A model call's outcome short of failure.
pub(crate) enum Asked {
    Answer(ChatResponse),
    /// The call would exceed the task's budget: the task pauses with this outcome.
    OverBudget(Outcome),
}

pub(crate) fn store_failure(e: StoreError) -> TaskFailure {
    TaskFailure::new(codes::STORE_UNAVAILABLE, e.to_string())
}

/// Where and as whom the Developer (and the DevOps agent) work.
#[derive(Clone, Debug)]
pub struct DeveloperConfig {
    /// Task clones live in `<work_dir>/<task id>`.
    pub work_dir: PathBuf,
    pub author_name: String,
    pub author_email: String,
    /// The budget of a task that sets none; unlimited when absent.
    pub default_budget_usd: Option<f64>,
    /// The weights of context selection's signals.
    pub context: orion_services::code::select::SelectWeights,
}

/// Delivering a change as a pull request, shared by the Developer and the DevOps agent
/// (not to be mistaken for a bus delivery, `orion_bus::Delivery`): where its tasks' clones
/// live, who commits, the store that holds the ledger and the pull requests, and the forge
/// that mirrors them.
pub(crate) struct ChangeDelivery {
    pub(crate) agent: AgentKind,
    /// The effects ledger: what happened once.
    pub(crate) ledger: Arc<dyn EffectStore>,
    /// The model usage it paid for.
    pub(crate) usage: Arc<dyn UsageStore>,
    /// The pull requests it opens and merges.
    pub(crate) pulls: Arc<dyn PullStore>,
    pub(crate) forge: Option<GitHubForge>,
    pub(crate) config: DeveloperConfig,
}

impl ChangeDelivery {
    /// The delivery of `agent`'s changes, on the aggregates of `store` it uses.
    pub(crate) fn new(agent: AgentKind, store: Arc<dyn Store>, config: DeveloperConfig) -> Self {
        Self {
            agent,
            ledger: store.clone(),
            usage: store.clone(),
            pulls: store,
            forge: None,
            config,
        }
    }

    /// The commit author, as git wants it.
    pub(crate) fn author(&self) -> (String, String) {
        (
            self.config.author_name.clone(),
            self.config.author_email.clone(),
        )
    }

    /// Opens the task's pull request on the forge once (the ledger remembers it). A forge
    /// that fails is logged: the review gate is Orion's, the forge only mirrors it.
    pub(crate) async fn mirror_pull(&self, task: &Task, ws: &Workspace, stats: &str) {
        let Some(forge) = &self.forge else { return };
        if matches!(
            self.ledger.effect(task.id, &EffectKey::forge_pull()).await,
            Ok(Some(_))
        ) {
            return;
        }
        let title = task
            .spec
            .prompt
            .as_deref()
            .and_then(|p| p.lines().next())
            .unwrap_or("Orion change");
        let body = format!("Opened by Orion for task {}.\n\n{stats}", task.id);
        match forge
            .open_pull(title, &body, &ws.branch, &ws.base_branch)
            .await
        {
            Ok(pull) => {
                let recorded = serde_json::to_value(&pull).unwrap_or_default();
                if let Err(e) = self
                    .ledger
                    .record_effect(task.id, &EffectKey::forge_pull(), "forge_pull", recorded)
                    .await
                {
                    tracing::warn!(task = %task.id, error = %e, "could not record the forge pull request");
                }
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "could not open the pull request on the forge")
            }
        }
    }

    /// Mirrors a review decision to the forge's pull request, once per step.
    pub(crate) async fn mirror_review(
        &self,
        assignment: &Assignment,
        event: ForgeReviewEvent,
        body: &str,
    ) {
        let Some(forge) = &self.forge else { return };
        let task = &assignment.task;
        let Ok(Some(pull)) = self.ledger.effect(task.id, &EffectKey::forge_pull()).await else {
            return;
        };
        let Ok(pull) = serde_json::from_value::<ForgePull>(pull) else {
            return;
        };
        // One approval per pull request; one request for changes per revision round.
        let key = match &assignment.step {
            Step::Merge { pull } => EffectKey::forge_approval(*pull),
            _ => EffectKey::forge_review(assignment.attempt),
        };
        if matches!(self.ledger.effect(task.id, &key).await, Ok(Some(_))) {
            return;
        }
        match forge.review(pull.number, event, body).await {
            Ok(()) => {
                let _ = self
                    .ledger
                    .record_effect(
                        task.id,
                        &key,
                        "forge_review",
                        serde_json::json!({ "event": event }),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "could not mirror a review to the forge")
            }
        }
    }

    pub(crate) async fn workspace(&self, task: &Task) -> Result<Workspace, TaskFailure> {
        // The task's `ref` is the base to branch from: it is checked out, not refused.
        let remote = remote_url(task)?;
        let into = self.config.work_dir.join(task.id.to_string());
        let branch = vcs::task_branch(task.id);
        let base = task.spec.git_ref.clone();
        blocking(move || vcs::checkout(&remote, &into, &branch, base.as_deref())).await
    }

    /// Pushes the tested branch (once per head, by the ledger), stores the pull request's
    /// new version and mirrors it to the forge.
    pub(crate) async fn publish(
        &self,
        task: &Task,
        ws: &Workspace,
        head: String,
        tests: Option<serde_json::Value>,
    ) -> Result<Outcome, TaskFailure> {
        let push_key = EffectKey::push(&head);
        if self
            .ledger
            .effect(task.id, &push_key)
            .await
            .map_err(store_failure)?
            .is_none()
        {
            let pushed = ws.clone();
            blocking(move || vcs::push_branch(&pushed)).await?;
            let record = serde_json::json!({ "branch": ws.branch, "head": head });
            self.ledger
                .record_effect(task.id, &push_key, "push", record)
                .await
                .map_err(store_failure)?;
        }
        let stats = {
            let ws = ws.clone();
            blocking(move || vcs::diff_stats(&ws)).await?
        };
        let pull = self
            .pulls
            .upsert_pull(PullVersion {
                task_id: task.id,
                repo: task.spec.repo.clone(),
                branch: ws.branch.clone(),
                base: ws.base_branch.clone(),
                base_oid: ws.base_oid.clone(),
                head_oid: head,
                files_changed: stats.files_changed,
                insertions: stats.insertions,
                deletions: stats.deletions,
                diff: stats.patch,
                tests,
            })
            .await
            .map_err(store_failure)?;
        let summary = format!(
            "{} files changed, +{} -{}",
            pull.files_changed, pull.insertions, pull.deletions
        );
        self.mirror_pull(task, ws, &summary).await;
        Ok(Outcome::AwaitingReview { pull: pull.id })
    }

    /// A model call for `step` of the assignment, through the effects ledger: a redelivered
    /// step reads the answer its first delivery paid for; a new answer's tokens and cost are
    /// recorded.
    pub(crate) async fn ask(
        &self,
        model: &dyn ChatModel,
        assignment: &Assignment,
        ctx: &WorkContext,
        step: String,
        request: &ChatRequest,
    ) -> Result<Asked, TaskFailure> {
        let task = &assignment.task;
        let context = &CallContext {
            task: Some(task.id),
            agent: self.agent.as_str().into(),
            step,
            attempt: assignment.attempt,
        };
        let key = EffectKey::model_call(&context.step, context.attempt);
        if let Some(recorded) = self
            .ledger
            .effect(task.id, &key)
            .await
            .map_err(store_failure)?
            && let Ok(answer) = serde_json::from_value::<ChatResponse>(recorded)
        {
            return Ok(Asked::Answer(answer));
        }
        // The call's most expensive outcome is reserved against the budget before it is made.
        if let Some(budget) = task.spec.budget_usd.or(self.config.default_budget_usd) {
            let spent: f64 = self
                .usage
                .task_usage(task.id)
                .await
                .map_err(store_failure)?
                .iter()
                .map(|u| u.cost_usd)
                .sum();
            let needed = model.estimate_cost(request);
            if spent + needed > budget {
                return Ok(Asked::OverBudget(Outcome::AwaitingApproval {
                    step: assignment.step.clone(),
                    needed_usd: needed,
                    spent_usd: spent,
                    budget_usd: budget,
                }));
            }
        }
        // What a streaming model writes reaches the task's events as it goes.
        let (sink, mut pieces) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = async {
            let (mut text, mut count, mut notes) = (String::new(), 0usize, 0usize);
            let tail = |text: &str| {
                text[text.floor_char_boundary(text.len().saturating_sub(STREAM_NOTE_TAIL))..]
                    .to_owned()
            };
            while let Some(piece) = pieces.recv().await {
                text.push_str(&piece);
                count += 1;
                if count % STREAM_NOTE_EVERY == 0 {
                    notes += 1;
                    ctx.progress(
                        assignment,
                        &format!("writing-{}-{notes}", context.step),
                        format!("the model is writing: {count} pieces so far"),
                        serde_json::json!({ "step": context.step, "tail": tail(&text) }),
                    )
                    .await;
                }
            }
            // The end of a streamed answer, unless the last note showed it.
            if count % STREAM_NOTE_EVERY != 0 {
                ctx.progress(
                    assignment,
                    &format!("writing-{}-{}", context.step, notes + 1),
                    format!("the model wrote {count} pieces"),
                    serde_json::json!({ "step": context.step, "tail": tail(&text) }),
                )
                .await;
            }
        };
        let (answer, ()) = tokio::join!(model.chat_streaming(context, request, sink), forward);
        let answer = answer.map_err(|e| TaskFailure::new(e.code(), e.to_string()))?;
        if !answer.cached {
            let usage = UsageRecord {
                task_id: context.task,
                agent: context.agent.clone(),
                model: answer.model.clone(),
                prompt_tokens: answer.usage.prompt_tokens,
                completion_tokens: answer.usage.completion_tokens,
                cost_usd: answer.cost_usd,
            };
            self.usage
                .record_usage(&usage)
                .await
                .map_err(store_failure)?;
        }
        let recorded = serde_json::to_value(&answer)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        let first = self
            .ledger
            .record_effect(task.id, &key, "model_call", recorded)
            .await
            .map_err(store_failure)?;
        serde_json::from_value(first)
            .map(Asked::Answer)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))
    }

    pub(crate) async fn merge(&self, task: &Task, pull: Uuid) -> Result<Outcome, TaskFailure> {
        // A merge that happened is never made twice: a redelivery reads the ledger.
        let key = EffectKey::merge(pull);
        if let Some(result) = self
            .ledger
            .effect(task.id, &key)
            .await
            .map_err(store_failure)?
        {
            return Ok(Outcome::Completed { result });
        }
        // Only what a review approved is merged: this task's pull request, in the state the
        // review moved it to, and exactly the commit it showed.
        let approved = self.pulls.pull(pull).await.map_err(store_failure)?;
        if approved.task_id != task.id || approved.state != PullState::Approved {
            return Err(TaskFailure::new(
                codes::MERGE_NOT_APPROVED,
                format!(
                    "pull request {pull} is {} (of task {}), not an approved pull request of this task",
                    approved.state.as_str(),
                    approved.task_id
                ),
            ));
        }
        let ws = self.workspace(task).await?;
        let (name, email) = self.author();
        let head = approved.head_oid.clone();
        let outcome = blocking(move || vcs::merge(&ws, (&name, &email), &head)).await?;
        let head = match &outcome {
            MergeOutcome::FastForward { head } | MergeOutcome::MergeCommit { head } => head.clone(),
            MergeOutcome::Conflict { paths } => {
                self.pulls
                    .set_pull_state(pull, PullState::Conflict, None)
                    .await
                    .map_err(store_failure)?;
                return Err(TaskFailure::new(
                    codes::MERGE_CONFLICT,
                    format!(
                        "the base branch moved and conflicts in: {}",
                        paths.join(", ")
                    ),
                ));
            }
        };
        let result = serde_json::json!({ "pull": pull, "merge": outcome, "head": head });
        let result = self
            .ledger
            .record_effect(task.id, &key, "merge", result)
            .await
            .map_err(store_failure)?;
        self.pulls
            .set_pull_state(pull, PullState::Merged, Some(head))
            .await
            .map_err(store_failure)?;
        Ok(Outcome::Completed { result })
    }
}
