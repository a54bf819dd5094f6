//! What agents that deliver a change as a pull request share: the task's workspace, model
//! calls through the effects ledger and the task's budget, publishing the pull request (and
//! mirroring it to a forge), and the merge on approval.

use orion_bus::codes;
use orion_bus::{AgentKind, Assignment, Outcome, Step, Task, TaskFailure};
use orion_services::forge::{
    CommitStatus, ForgeError, ForgePost, ForgePull, ForgeReviewEvent, ForgeTarget, Forges,
    StatusState, Thread, post_mark,
};
use orion_services::llm::{CallContext, ChatModel, ChatRequest, ChatResponse};
use orion_services::store::{
    Claim, EffectKey, EffectStore, Fence, PullState, PullStore, PullVersion, Store, StoreError,
    TaskStore, UsageRecord, UsageStore,
};
use orion_services::vcs::{self, MergeOutcome, Workspace};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

use super::WorkContext;
use super::repo::{blocking, landed, remote_url};

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

/// A store error as a step's failure: an outage (`store_unavailable`) is waited out and the
/// step tried again, never the task's failure; anything else the store says is.
pub(crate) fn store_failure(e: StoreError) -> TaskFailure {
    match e {
        StoreError::Unavailable(_) => TaskFailure::new(codes::STORE_UNAVAILABLE, e.to_string()),
        // A newer attempt (or a review) moved the task on: this run leaves without a word.
        StoreError::Superseded { .. } => TaskFailure::new(super::SUPERSEDED, e.to_string()),
        other => TaskFailure::new(codes::INTERNAL, other.to_string()),
    }
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
    /// Spending caps across tasks (`llm.budgets`).
    pub spending_caps: Vec<orion_services::budgets::SpendingCap>,
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
    /// The tasks, read to fence a run before it pushes.
    pub(crate) tasks: Arc<dyn TaskStore>,
    /// The forges that mirror the pull requests of their repositories.
    pub(crate) forges: Forges,
    pub(crate) config: DeveloperConfig,
}

impl ChangeDelivery {
    /// The delivery of `agent`'s changes, on the aggregates of `store` it uses.
    pub(crate) fn new(agent: AgentKind, store: Arc<dyn Store>, config: DeveloperConfig) -> Self {
        Self {
            agent,
            ledger: store.clone(),
            usage: store.clone(),
            tasks: store.clone(),
            pulls: store,
            forges: Forges::default(),
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

    /// Claims an effect for `run` (see [`EffectStore::claim_effect`]): waits while another
    /// live run of the same attempt holds it (it renews its lease while it lives), and stops
    /// the step when a newer attempt holds it.
    pub(crate) async fn claim(
        &self,
        run: Run<'_>,
        key: &EffectKey,
        kind: &str,
    ) -> Result<Act, TaskFailure> {
        loop {
            let claim = self
                .ledger
                .claim_effect(run.task().id, key, kind, run.fence(), run.lease())
                .await
                .map_err(store_failure)?;
            match claim {
                Claim::Held { orphaned, tries } => {
                    if orphaned {
                        tracing::info!(task = %run.task().id, effect = &**key, tries, "took over an effect a lost run left pending");
                    }
                    return Ok(Act::Go { orphaned });
                }
                Claim::Done(result) => return Ok(Act::Done(result)),
                Claim::Superseded { attempt } => {
                    return Err(TaskFailure::new(
                        super::SUPERSEDED,
                        format!(
                            "attempt {attempt} of the task holds {}; attempt {} stops",
                            &**key, run.assignment.attempt
                        ),
                    ));
                }
                Claim::Busy => tokio::time::sleep(CLAIM_POLL).await,
            }
        }
    }

    /// Records the outcome of an effect `run` claimed; the first outcome recorded stands. A
    /// claim that passed to another run meanwhile stops this one.
    pub(crate) async fn settle(
        &self,
        run: Run<'_>,
        key: &EffectKey,
        result: serde_json::Value,
    ) -> Result<serde_json::Value, TaskFailure> {
        crash_before_record(key);
        self.ledger
            .settle_effect(run.task().id, key, run.fence(), result)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| {
                TaskFailure::new(
                    super::SUPERSEDED,
                    format!("the claim on {} passed to another run", &**key),
                )
            })
    }

    /// The forge of the task's repository, if one is configured.
    pub(crate) fn forge_of(&self, task: &Task) -> Option<ForgeTarget> {
        self.forges.for_repo(&task.spec.repo)
    }

    /// The thread on the task's forge it came from (a webhook's issue or pull request).
    pub(crate) fn origin_thread(&self, task: &Task, target: &ForgeTarget) -> Option<Thread> {
        let origin = task.spec.origin.as_ref()?;
        (origin.forge == target.name && origin.repository == target.repository).then_some(
            match origin.thread {
                orion_bus::OriginThread::Issue => Thread::Issue(origin.number),
                orion_bus::OriginThread::Pull => Thread::Pull(origin.number),
            },
        )
    }

    /// Sets the test verdict on the pushed head as Orion's commit status, once per head
    /// (claimed; a status set again replaces itself, so a claim a lost run left just sets it).
    async fn mirror_status(
        &self,
        run: Run<'_>,
        target: &ForgeTarget,
        head: &str,
        tests: Option<&serde_json::Value>,
    ) -> Result<(), TaskFailure> {
        let key = EffectKey::forge_status(head);
        if let Act::Done(_) = self.claim(run, &key, "forge_status").await? {
            return Ok(());
        }
        let description = match tests {
            Some(t) if t.get("skipped").is_some() => {
                format!(
                    "tests skipped: {}",
                    t["skipped"].as_str().unwrap_or_default()
                )
            }
            Some(_) => "the repository's tests passed in Orion's sandbox".to_owned(),
            None => "no tests ran".to_owned(),
        };
        let status = CommitStatus {
            state: StatusState::Success,
            description,
            target_url: None,
        };
        match target.forge.status(&target.repository, head, &status).await {
            Ok(()) => {
                self.settle(run, &key, serde_json::json!({ "state": status.state }))
                    .await?;
            }
            Err(e) => {
                self.forge_failed(run, &key, &e, "set the commit status")
                    .await?
            }
        }
        Ok(())
    }

    /// Posts `body` on a thread of the forge once (claimed as `key`; a claim a lost run left
    /// is settled by looking for the post's mark in the thread).
    pub(crate) async fn reply(
        &self,
        run: Run<'_>,
        target: &ForgeTarget,
        thread: Thread,
        key: EffectKey,
        body: &str,
    ) -> Result<(), TaskFailure> {
        let (forge, repository) = (&target.forge, target.repository.as_str());
        self.post_once(
            run,
            &key,
            "forge_reply",
            "post the task's outcome",
            serde_json::json!({ "thread": thread }),
            |mark| async move { forge.commented(repository, thread, &mark).await },
            |mark| async move {
                forge
                    .comment(repository, thread, &format!("{body}\n\n{mark}"))
                    .await
            },
        )
        .await
    }

    /// One post on a forge, once: claimed as `key` (`kind` names it in the ledger); a claim a
    /// lost run left is settled by `posted` (does the forge carry the post's mark?), else
    /// `post` makes it with the mark. The outcome is `record`, or the forge's failure
    /// ([`Self::forge_failed`], `what` saying what failed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn post_once<P, Q>(
        &self,
        run: Run<'_>,
        key: &EffectKey,
        kind: &str,
        what: &str,
        record: serde_json::Value,
        posted: impl FnOnce(String) -> P,
        post: impl FnOnce(String) -> Q,
    ) -> Result<(), TaskFailure>
    where
        P: std::future::Future<Output = Result<bool, ForgeError>>,
        Q: std::future::Future<Output = Result<(), ForgeError>>,
    {
        let orphaned = match self.claim(run, key, kind).await? {
            Act::Done(_) => return Ok(()),
            Act::Go { orphaned } => orphaned,
        };
        let mark = post_mark(run.task().id, key);
        let posted = match orphaned {
            true => posted(mark.clone()).await,
            false => Ok(false),
        };
        let done = match posted {
            Ok(true) => Ok(()),
            Ok(false) => post(mark).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                self.settle(run, key, record).await?;
            }
            Err(e) => self.forge_failed(run, key, &e, what).await?,
        }
        Ok(())
    }

    /// A forge that failed to take effect `key`: logged; where asking again cannot help (the
    /// forge refused the request itself), the refusal is recorded as the effect's outcome, so
    /// no later run waits on the claim or asks again.
    pub(crate) async fn forge_failed(
        &self,
        run: Run<'_>,
        key: &EffectKey,
        e: &orion_services::forge::ForgeError,
        what: &str,
    ) -> Result<(), TaskFailure> {
        tracing::warn!(task = %run.task().id, error = %e, "could not {what} on the forge");
        if e.is_definitive() {
            self.settle(run, key, serde_json::json!({ "refused": e.to_string() }))
                .await?;
        }
        Ok(())
    }

    /// Tells the thread the task came from that it failed, once.
    pub(crate) async fn reply_failure(
        &self,
        run: Run<'_>,
        failure: &TaskFailure,
    ) -> Result<(), TaskFailure> {
        let task = run.task();
        let Some(target) = self.forge_of(task) else {
            return Ok(());
        };
        let Some(thread) = self.origin_thread(task, &target) else {
            return Ok(());
        };
        let body = format!(
            "Orion could not do this (task {}): `{}`: {}",
            task.id, failure.code, failure.message
        );
        self.reply(
            run,
            &target,
            thread,
            EffectKey::forge_reply("failed"),
            &body,
        )
        .await
    }

    /// Opens the task's pull request on the forge once (claimed in the ledger; a claim a lost
    /// run left is settled by the forge's pull request for the branch), and tells the issue the
    /// task came from. A forge that fails is logged: the review gate is Orion's, the forge
    /// only mirrors it.
    pub(crate) async fn mirror_pull(
        &self,
        run: Run<'_>,
        target: &ForgeTarget,
        ws: &Workspace,
        stats: &str,
    ) -> Result<(), TaskFailure> {
        let task = run.task();
        let (forge, repository) = (&target.forge, target.repository.as_str());
        let key = EffectKey::forge_pull();
        let opened = match self.claim(run, &key, "forge_pull").await? {
            Act::Done(recorded) => serde_json::from_value::<ForgePull>(recorded).ok(),
            Act::Go { orphaned } => {
                let found = match orphaned {
                    true => forge.find_pull(repository, &ws.branch).await,
                    false => Ok(None),
                };
                let title = task
                    .spec
                    .prompt
                    .as_deref()
                    .and_then(|p| p.lines().next())
                    .unwrap_or("Orion change");
                let mut body = format!("Opened by Orion for task {}.\n\n{stats}", task.id);
                if let Some(Thread::Issue(n)) = self.origin_thread(task, target) {
                    body.push_str(&format!("\n\nFor #{n}."));
                }
                let opened = match found {
                    Ok(Some(pull)) => Ok(pull),
                    Ok(None) => {
                        forge
                            .open_pull(repository, title, &body, &ws.branch, &ws.base_branch)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(pull) => {
                        let recorded = serde_json::to_value(&pull).unwrap_or_default();
                        let first = self.settle(run, &key, recorded).await?;
                        serde_json::from_value::<ForgePull>(first).ok()
                    }
                    Err(e) => {
                        self.forge_failed(run, &key, &e, "open the pull request")
                            .await?;
                        None
                    }
                }
            }
        };
        if let (Some(pull), Some(thread @ Thread::Issue(_))) =
            (opened, self.origin_thread(task, target))
        {
            let body = format!(
                "Orion opened {} for this (task {}).",
                pull.html_url, task.id
            );
            self.reply(run, target, thread, EffectKey::forge_reply("pull"), &body)
                .await?;
        }
        Ok(())
    }

    /// Mirrors a review decision to the forge's pull request: one approval per pull request,
    /// one request for changes per reviewed version (claimed; a claim a lost run left is
    /// settled by looking for the post's mark on the forge).
    pub(crate) async fn mirror_review(
        &self,
        run: Run<'_>,
        event: ForgeReviewEvent,
        body: &str,
    ) -> Result<(), TaskFailure> {
        let task = run.task();
        let Some(target) = self.forge_of(task) else {
            return Ok(());
        };
        let (forge, repository) = (&target.forge, target.repository.as_str());
        let mirrored = self
            .ledger
            .effect(task.id, &EffectKey::forge_pull())
            .await
            .map_err(store_failure)?;
        let Some(Ok(forge_pull)) = mirrored.map(serde_json::from_value::<ForgePull>) else {
            return Ok(());
        };
        let key = match &run.assignment.step {
            Step::Merge { pull } => EffectKey::forge_approval(*pull),
            Step::Revise { pull, .. } => EffectKey::forge_review(self.revision_round(*pull).await?),
            _ => return Ok(()),
        };
        let number = forge_pull.number;
        self.post_once(
            run,
            &key,
            "forge_review",
            "mirror a review",
            serde_json::json!({ "event": event }),
            |mark| async move {
                forge
                    .posted(repository, number, ForgePost::Review, &mark)
                    .await
            },
            |mark| async move {
                forge
                    .review(repository, number, event, &format!("{body}\n\n{mark}"))
                    .await
            },
        )
        .await
    }

    /// The review a revision round carries out: the latest request for changes of the pull
    /// request. Neither the round's own publish nor a copy of its step moves it; only the next
    /// review does, which starts the next round (at a newer attempt).
    pub(crate) async fn revision_round(&self, pull: Uuid) -> Result<Uuid, TaskFailure> {
        self.pulls
            .reviews(pull)
            .await
            .map_err(store_failure)?
            .iter()
            .rev()
            .find(|r| r.decision == orion_bus::Decision::RequestChanges)
            .map(|r| r.id)
            .ok_or_else(|| {
                TaskFailure::new(
                    codes::INTERNAL,
                    format!("pull request {pull} has no request for changes to carry out"),
                )
            })
    }

    /// The name of a revision round's step: the pull request and the review carried out.
    pub(crate) async fn revision_step(&self, pull: Uuid) -> Result<String, TaskFailure> {
        Ok(format!(
            "revise-{pull}-{}",
            self.revision_round(pull).await?
        ))
    }

    pub(crate) async fn workspace(&self, task: &Task) -> Result<Workspace, TaskFailure> {
        // The task's `ref` is the base to branch from: it is checked out, not refused.
        let remote = remote_url(task)?;
        let into = self.config.work_dir.join(task.id.to_string());
        let branch = vcs::task_branch(task.id);
        let base = task.spec.git_ref.clone();
        blocking(move || vcs::checkout(&remote, &into, &branch, base.as_deref())).await
    }

    /// Pushes the tested branch (once per head: claimed in the ledger; a claim a lost run
    /// left is settled by the remote branch already at the head), stores the pull request's
    /// new version and mirrors it to the forge.
    pub(crate) async fn publish(
        &self,
        run: Run<'_>,
        ws: &Workspace,
        head: String,
        tests: Option<serde_json::Value>,
    ) -> Result<Outcome, TaskFailure> {
        let task = run.task();
        // A run that is no longer the task's (a late copy of an older attempt's step, or of a
        // task gone on to review) pushes nothing over the branch: its version is not the
        // one under review. (The pull request's version is fenced in the store; this read
        // only narrows the window for the push.)
        let current = self.tasks.task(task.id).await.map_err(store_failure)?;
        if !orion_services::store::run_is_current(
            current.status,
            current.attempts,
            run.assignment.attempt,
        ) {
            return Err(TaskFailure::new(
                super::SUPERSEDED,
                format!(
                    "the task is {} at attempt {}: a run of attempt {} pushes nothing",
                    current.status, current.attempts, run.assignment.attempt
                ),
            ));
        }
        let push_key = EffectKey::push(&head);
        if let Act::Go { orphaned } = self.claim(run, &push_key, "push").await? {
            let branch = format!("refs/heads/{}", ws.branch);
            if !landed(ws, orphaned, branch, &head).await? {
                let pushed = ws.clone();
                blocking(move || vcs::push_branch(&pushed)).await?;
            }
            let record = serde_json::json!({ "branch": ws.branch, "head": head });
            self.settle(run, &push_key, record).await?;
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
                attempt: run.assignment.attempt,
            })
            .await
            .map_err(store_failure)?;
        let summary = format!(
            "{} files changed, +{} -{}",
            pull.files_changed, pull.insertions, pull.deletions
        );
        if let Some(target) = self.forge_of(task) {
            self.mirror_status(run, &target, &pull.head_oid, pull.tests.as_ref())
                .await?;
            self.mirror_pull(run, &target, ws, &summary).await?;
        }
        Ok(Outcome::AwaitingReview { pull: pull.id })
    }

    /// A model call for `step` of the assignment, claimed in the effects ledger: any later
    /// run of the step (a redelivery, a reclaimed attempt) reads the answer the first paid
    /// for; a new answer's tokens and cost are recorded, and the answer is recorded before
    /// the step goes on (so before its message is acknowledged).
    pub(crate) async fn ask(
        &self,
        model: &dyn ChatModel,
        run: Run<'_>,
        step: String,
        request: &ChatRequest,
    ) -> Result<Asked, TaskFailure> {
        let (assignment, ctx) = (run.assignment, run.ctx);
        let task = &assignment.task;
        let context = &CallContext {
            task: Some(task.id),
            agent: self.agent.as_str().into(),
            step,
            attempt: assignment.attempt,
        };
        let key = EffectKey::model_call(&context.step);
        if let Act::Done(recorded) = self.claim(run, &key, "model_call").await? {
            return serde_json::from_value::<ChatResponse>(recorded)
                .map(Asked::Answer)
                .map_err(|e| {
                    TaskFailure::new(
                        codes::INTERNAL,
                        format!("the recorded answer does not read: {e}"),
                    )
                });
        }
        // The call's most expensive outcome is reserved against the budget before it is made,
        // and against every spending cap that applies to it.
        let needed = model.estimate_cost(request);
        if let Some(budget) = task.spec.budget_usd.or(self.config.default_budget_usd) {
            let spent: f64 = self
                .usage
                .task_usage(task.id)
                .await
                .map_err(store_failure)?
                .iter()
                .map(|u| u.cost_usd)
                .sum();
            if spent + needed > budget {
                return Ok(Asked::OverBudget(Outcome::AwaitingApproval {
                    step: assignment.step.clone(),
                    needed_usd: needed,
                    spent_usd: spent,
                    budget_usd: budget,
                    cap: None,
                }));
            }
        }
        if let Some(cap) = orion_services::budgets::crossed(
            &self.config.spending_caps,
            &*self.usage,
            task.spec.submitted_by.as_deref(),
            &model.model_names(),
            needed,
            chrono::Utc::now(),
        )
        .await
        .map_err(store_failure)?
        {
            return Ok(Asked::OverBudget(Outcome::AwaitingApproval {
                step: assignment.step.clone(),
                needed_usd: needed,
                spent_usd: cap.spent_usd,
                budget_usd: cap.usd,
                cap: Some(cap.name),
            }));
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
        // A cache hit is recorded too (costing nothing), for the cache's hit ratio.
        let (used, cost_usd) = if answer.cached {
            (Default::default(), 0.0)
        } else {
            (answer.usage, answer.cost_usd)
        };
        let usage = UsageRecord {
            task_id: context.task,
            agent: context.agent.clone(),
            model: answer.model.clone(),
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            cost_usd,
            caller: task.spec.submitted_by.clone(),
            cached: answer.cached,
        };
        self.usage
            .record_usage(&usage)
            .await
            .map_err(store_failure)?;
        let mut recorded = serde_json::to_value(&answer)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        // What was asked beside the answer: a reviewed change's prompt and answer are what
        // `orion dataset export` makes training examples of.
        recorded["request"] = serde_json::json!(request.messages);
        let first = self.settle(run, &key, recorded).await?;
        serde_json::from_value(first)
            .map(Asked::Answer)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))
    }

    /// Merges the approved pull request, once: claimed in the ledger, and a claim a lost run
    /// left is settled by the remote base branch already containing the approved commit
    /// ([`vcs::merge`] pushes nothing then).
    pub(crate) async fn merge(&self, run: Run<'_>, pull: Uuid) -> Result<Outcome, TaskFailure> {
        let task = run.task();
        let key = EffectKey::merge(pull);
        let orphaned = match self.claim(run, &key, "merge").await? {
            Act::Done(result) => {
                // The record may have been made by a run lost before it moved the pull.
                let head = result["head"].as_str().map(str::to_owned);
                self.pulls
                    .set_pull_state(pull, PullState::Merged, head)
                    .await
                    .map_err(store_failure)?;
                return Ok(Outcome::Completed { result });
            }
            Act::Go { orphaned } => orphaned,
        };
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
        if orphaned {
            tracing::info!(task = %task.id, %pull, "a lost run left the merge unrecorded: the base is asked whether it happened");
        }
        // The merge itself finds a base that contains the approved commit already (the lost
        // run's merge landed) and pushes nothing then.
        let ws = self.workspace(task).await?;
        let (name, email) = self.author();
        let head = approved.head_oid.clone();
        let outcome = blocking(move || vcs::merge(&ws, (&name, &email), &head)).await?;
        let head = match &outcome {
            MergeOutcome::FastForward { head }
            | MergeOutcome::MergeCommit { head }
            | MergeOutcome::Contained { head } => head.clone(),
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
        let result = self.settle(run, &key, result).await?;
        let head = result["head"].as_str().map(str::to_owned);
        self.pulls
            .set_pull_state(pull, PullState::Merged, head)
            .await
            .map_err(store_failure)?;
        Ok(Outcome::Completed { result })
    }
}

/// Fault injection, for the tests of recovery: `ORION_FAULT_CRASH_BEFORE_RECORD` lists
/// prefixes of effect keys (`push:`, `merge:`, `model:`, `forge:pull` …). The first time an
/// effect whose key starts with one has happened and is about to be recorded, the process
/// aborts: no cleanup, no goodbye, as a SIGKILL there would. Each prefix that fired leaves a
/// file in the directory `ORION_FAULT_MARKS`, so it fires once across restarts. Unset (as
/// anywhere but in those tests), it does nothing.
fn crash_before_record(key: &str) {
    static FAULTS: std::sync::OnceLock<Option<(Vec<String>, PathBuf)>> = std::sync::OnceLock::new();
    let faults = FAULTS.get_or_init(|| {
        let list = std::env::var("ORION_FAULT_CRASH_BEFORE_RECORD").ok()?;
        let marks = PathBuf::from(std::env::var_os("ORION_FAULT_MARKS")?);
        let prefixes = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Some((prefixes, marks))
    });
    let Some((prefixes, marks)) = faults else {
        return;
    };
    for prefix in prefixes.iter().filter(|p| key.starts_with(p.as_str())) {
        let mark = marks.join(prefix.replace(':', "_"));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&mark)
            .is_ok()
        {
            tracing::error!(key, "fault injection: the process stops before recording");
            std::process::abort();
        }
    }
}

/// How often a run waiting on another run's claim looks again.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What a run may do about an effect it claimed.
pub(crate) enum Act {
    /// Act. `orphaned`: a lost run left the claim pending, so the effect may have happened;
    /// the outside world is asked first.
    Go { orphaned: bool },
    /// It happened: its recorded outcome.
    Done(serde_json::Value),
}

/// One run of a step: the assignment it works on and who works on it, which together fence
/// the effects it claims.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    pub(crate) assignment: &'a Assignment,
    pub(crate) ctx: &'a WorkContext,
}

impl Run<'_> {
    pub(crate) fn task(&self) -> &Task {
        &self.assignment.task
    }

    fn fence(&self) -> Fence {
        Fence {
            attempt: self.assignment.attempt,
            run: self.ctx.run,
        }
    }

    fn lease(&self) -> std::time::Duration {
        super::claim_lease(self.ctx)
    }
}
