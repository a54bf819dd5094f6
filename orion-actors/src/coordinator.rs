//! The coordinator: assigns submitted tasks to agent pools and moves tasks on agents' reports.
//!
//! Any number of coordinators may run; the store's version guard decides which one moves a
//! task, and the loser's change is simply no longer applicable.

use orion_bus::codes;
use std::time::Duration;

use actix::prelude::*;
use orion_bus::{
    AgentKind, Assignment, Body, Decision, Envelope, MessageId, Outcome, Plugins, Queue,
    ResumeTask, ReviewSubmitted, Step, Task, TaskFailure, TaskKind, TaskStatus,
};
use orion_services::lifecycle::{Change, Lifecycle};
use tracing::Instrument;

use crate::messages::{HandleError, ReportArrived, ResumeArrived, ReviewArrived, TaskArrived};

/// How many tasks one reconciliation looks at, at most.
const RECONCILE_BATCH: u64 = 1000;
/// The least time a sweep for orphaned tasks is given before it is given up on.
const SWEEP_DEADLINE: Duration = Duration::from_secs(60);
/// The lease of a coordinator that is given none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

pub struct Coordinator {
    lifecycle: Lifecycle,
    /// The declared kinds, for choosing the kind of an `auto` task.
    plugins: Plugins,
    /// How long an assigned or running task may go unmoved before its messages are looked
    /// for (see [`reclaim_orphans`]).
    lease: Duration,
    /// A sweep is under way: the next waits for its turn instead of piling up beside it.
    sweeping: bool,
    /// Its restarts, against the node's restart rate.
    restarts: crate::supervision::RestartLimit,
}

impl actix::Supervised for Coordinator {
    fn restarting(&mut self, _: &mut Self::Context) {
        crate::supervision::restarting(&mut self.restarts, "coordinator", self.lifecycle.node());
        self.sweeping = false;
    }
}

impl Coordinator {
    pub fn new(lifecycle: Lifecycle, plugins: Plugins) -> Self {
        Self {
            lifecycle,
            plugins,
            lease: DEFAULT_LEASE,
            sweeping: false,
            restarts: Default::default(),
        }
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(node = self.lifecycle.node(), "coordinator started");
        let lifecycle = self.lifecycle.clone();
        // Tasks stored but never queued (the bus was down at submission) get queued now;
        // the bus de-duplicates the ones that were.
        ctx.spawn(
            async move {
                match lifecycle.store().tasks_in(&[TaskStatus::Queued], None, RECONCILE_BATCH).await {
                    Ok(tasks) => {
                        for task in tasks {
                            if let Err(e) = lifecycle.enqueue_submitted(&task).await {
                                tracing::warn!(task = %task.id, error = %e, "could not re-queue a task");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not reconcile queued tasks"),
                }
            }
            .into_actor(self),
        );
        ctx.spawn(follow_dead_letters(self.lifecycle.clone()).into_actor(self));
        let every = (self.lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
        ctx.run_interval(every, |this, ctx| {
            if this.sweeping {
                return;
            }
            this.sweeping = true;
            // A sweep that hangs (a server that takes a request and never answers) would
            // keep every later one from starting: it is given up on after its deadline.
            let deadline = this.lease.max(SWEEP_DEADLINE);
            let sweep = tokio::time::timeout(
                deadline,
                reclaim_orphans(this.lifecycle.clone(), this.lease),
            );
            ctx.spawn(sweep.into_actor(this).map(move |done, this, _| {
                if done.is_err() {
                    tracing::warn!(
                        after_secs = deadline.as_secs(),
                        "a sweep for orphaned tasks did not finish: given up on, the next starts afresh"
                    );
                }
                this.sweeping = false;
            }));
        });
    }
}

/// Tasks that have not moved for a lease and whose messages are all gone are put back on
/// the bus: a queued one's submission again, an assigned or running one queued again,
/// counting an attempt. Gone means that no queue that could hold a
/// message about the task holds any message at all (waiting or unacknowledged, see
/// [`orion_bus::Bus::held`]): not the submissions, not the results, not its priority's work
/// queue of any agent. That happens
/// when the bus lost them (a stream was purged, a server lost its disk), never to a task
/// that waits behind a backlog or whose agent is still working (an unacknowledged
/// assignment is held), so nothing is done twice. Every coordinator sweeps; the store's
/// version guard lets one of them move each task.
pub async fn reclaim_orphans(lifecycle: Lifecycle, lease: Duration) {
    let Ok(since) = chrono::Duration::from_std(lease).map(|lease| chrono::Utc::now() - lease)
    else {
        return;
    };
    let stale = match lifecycle
        .store()
        .tasks_in(
            &[
                TaskStatus::Queued,
                TaskStatus::Assigned,
                TaskStatus::Running,
            ],
            Some(since),
            RECONCILE_BATCH,
        )
        .await
    {
        Ok(stale) => stale,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for orphaned tasks");
            return;
        }
    };
    // Each queue is asked once per sweep; a queue that cannot be asked counts as busy.
    let mut empty: std::collections::HashMap<String, bool> = Default::default();
    'tasks: for task in stale {
        let priority = task.spec.priority;
        let mut queues = vec![Queue::Coordinators];
        if task.status != TaskStatus::Queued {
            queues.push(Queue::Results);
            queues.extend(AgentKind::ALL.iter().map(|&a| Queue::Work(a, priority)));
            queues.push(Queue::Work(task.spec.kind.agent(), priority));
        }
        for queue in queues {
            let key = queue.subject(lifecycle.bus().subjects());
            let is_empty = match empty.get(&key) {
                Some(&is_empty) => is_empty,
                None => {
                    let is_empty = matches!(lifecycle.bus().held(queue).await, Ok(0));
                    empty.insert(key, is_empty);
                    is_empty
                }
            };
            if !is_empty {
                continue 'tasks;
            }
        }
        if task.status == TaskStatus::Queued {
            // Stored, but its submission is not on the bus (queueing it failed).
            if let Err(e) = lifecycle.enqueue_submitted(&task).await {
                tracing::warn!(task = %task.id, error = %e, "could not queue a task again");
            }
            continue;
        }
        let change = Change {
            count_attempt: true,
            data: serde_json::json!({
                "reclaimed": format!(
                    "no message about this task was left on the bus after {} s without a move",
                    lease.as_secs()
                ),
            }),
            ..Change::default()
        };
        // Only the task as the sweep found it: one another coordinator reclaimed (or that
        // moved on) since is left alone.
        let version = task.version;
        let found = task.clone();
        match lifecycle
            .advance_from_if(found, TaskStatus::Queued, change, |t| t.version == version)
            .await
        {
            Ok(Some(queued)) => {
                tracing::warn!(task = %queued.id, from = %task.status, "an orphaned task is queued again");
                if let Err(e) = lifecycle.enqueue_submitted(&queued).await {
                    // It is stored as queued: a later sweep queues it.
                    tracing::warn!(task = %queued.id, error = %e, "could not queue a reclaimed task");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(task = %task.id, error = %e, "could not reclaim a task"),
        }
    }
}

/// How long to wait before following the dead letters again after the bus failed.
const RESUBSCRIBE: std::time::Duration = std::time::Duration::from_secs(1);

/// A message about a task that went to the dead letters (it could not be handled in
/// `max_deliver` deliveries) would leave its task waiting forever: the task fails instead,
/// with the dead letter's reason. The coordinators share the dead letters' durable queue, so
/// a letter written while none ran is handled by the next to start; a letter is acknowledged
/// once handled, and comes again (after `ack_wait`) when the store could not be written.
async fn follow_dead_letters(lifecycle: Lifecycle) {
    use futures_util::StreamExt;
    let bus = lifecycle.bus().clone();
    orion_bus::follow(
        "the dead letters",
        RESUBSCRIBE,
        || bus.follow_dead_letters(),
        |mut letters| {
            let lifecycle = lifecycle.clone();
            async move {
                while let Some(letter) = letters.next().await {
                    match fail_dead_lettered(&lifecycle, &letter.body).await {
                        Ok(()) => {}
                        Err(HandleError::Drop(why)) => {
                            tracing::warn!(subject = %letter.subject, %why, "a dead letter names no task that can fail")
                        }
                        Err(e) => {
                            tracing::warn!(subject = %letter.subject, error = %e, "could not fail a dead-lettered task; the letter comes again");
                            continue;
                        }
                    }
                    if let Err(e) = letter.ack().await {
                        tracing::warn!(error = %e, "could not acknowledge a dead letter");
                    }
                }
            }
        },
    )
    .await
}

/// Fails the task a dead letter is about; a letter about no task, or about one that has
/// ended, needs nothing. An error means the store could not be written.
async fn fail_dead_lettered(lifecycle: &Lifecycle, letter: &[u8]) -> Result<(), HandleError> {
    let Some(letter) = orion_bus::DeadLetterBody::read(letter) else {
        return Ok(());
    };
    let limit = lifecycle.bus().config().max_message_bytes;
    let Ok(envelope) = Envelope::decode(letter.payload.as_bytes(), limit) else {
        return Ok(()); // undecodable: it names no task
    };
    let (Some(task), Body::TaskSubmitted(_) | Body::Assignment(_) | Body::Report(_)) =
        (envelope.task_id, &envelope.body)
    else {
        return Ok(());
    };
    let reason = &letter.reason;
    let failure = orion_bus::TaskFailure::new(
        codes::DEAD_LETTERED,
        format!(
            "a `{}` message about this task could not be handled: {reason}",
            envelope.type_name()
        ),
    );
    // `None`: it had ended, or another coordinator moved it.
    if lifecycle
        .advance(task, TaskStatus::Failed, Change::failed(failure))
        .await?
        .is_some()
    {
        tracing::warn!(%task, %reason, "a task failed: its message went to the dead letters");
    }
    Ok(())
}

/// Assigns a queued task to its kind's agents; an `auto` task first gets its kind, chosen
/// from its prompt (the choice and its reasons are in the `assigned` event), or fails when
/// no kind fits.
async fn assign(lifecycle: Lifecycle, plugins: Plugins, task: Task) -> Result<(), HandleError> {
    let mut change = Change {
        count_attempt: true,
        ..Change::default()
    };
    let mut kind = task.spec.kind;
    if kind == TaskKind::Auto {
        let chosen = orion_services::routing::choose(
            &plugins,
            task.spec.prompt.as_deref().unwrap_or_default(),
        )
        .and_then(|choice| {
            let spec = orion_bus::TaskSpec {
                kind: choice.kind,
                ..task.spec.clone()
            };
            plugins.check(&spec).map_err(|e| e.to_string())?;
            Ok(choice)
        });
        match chosen {
            Ok(choice) => {
                kind = choice.kind;
                change.kind = Some(kind);
                change.data = serde_json::json!({ "chosen": choice });
            }
            Err(why) => {
                let failure = TaskFailure::new(codes::NO_KIND_CHOSEN, why);
                lifecycle
                    .advance(task.id, TaskStatus::Failed, Change::failed(failure))
                    .await?;
                return Ok(());
            }
        }
    }
    let agent = kind.agent();
    change.data["agent"] = serde_json::json!(agent);
    // From the submission's copy of the task: it is read only where it moved since.
    let Some(task) = lifecycle
        .advance_or_find_from(task, TaskStatus::Assigned, change)
        .await?
    else {
        return Ok(());
    };
    let id = MessageId::assignment(task.id, task.attempts);
    assign_step(&lifecycle, &task, agent, Step::Work, id).await
}

/// The start an outcome of attempt `attempt` implies, recorded where the task is still
/// `assigned` at that attempt (its start report has not come, or came to another coordinator
/// that has not applied it yet); a task already running at it is left as it is, with no
/// transition tried. `None`: the task is elsewhere (paused, ended, reclaimed).
async fn start_implied(
    lifecycle: &Lifecycle,
    stored: Task,
    attempt: i32,
    started: Change,
) -> Result<Option<Task>, HandleError> {
    if stored.status != TaskStatus::Assigned {
        let running = stored.status == TaskStatus::Running && stored.attempts == attempt;
        return Ok(running.then_some(stored));
    }
    let assigned = |t: &Task| t.status == TaskStatus::Assigned && t.attempts == attempt;
    Ok(lifecycle
        .advance_from_if(stored, TaskStatus::Running, started, assigned)
        .await?)
}

/// The task, running at `attempt`, as read now (after a race lost to another coordinator).
async fn running_now(
    lifecycle: &Lifecycle,
    id: orion_bus::TaskId,
    attempt: i32,
) -> Result<Option<Task>, HandleError> {
    let task = lifecycle.store().task(id).await?;
    Ok((task.status == TaskStatus::Running && task.attempts == attempt).then_some(task))
}

/// Ends the step a report of attempt `attempt` is the outcome of: the task goes to `to`, from
/// `stored` (as read for the report) after the start it implies, only while it runs at that
/// attempt (checked again at every read: a task that paused or was reclaimed meanwhile is not
/// moved by this report).
async fn end_step(
    lifecycle: &Lifecycle,
    stored: Task,
    attempt: i32,
    started: Change,
    to: TaskStatus,
    change: Change,
) -> Result<(), HandleError> {
    let id = stored.id;
    let running = match start_implied(lifecycle, stored, attempt, started).await? {
        Some(running) => Some(running),
        None => running_now(lifecycle, id, attempt).await?,
    };
    if let Some(running) = running {
        let at_work = |t: &Task| t.status == TaskStatus::Running && t.attempts == attempt;
        lifecycle
            .advance_from_if(running, to, change, at_work)
            .await?;
    }
    Ok(())
}

async fn apply_report(lifecycle: Lifecycle, msg: ReportArrived) -> Result<(), HandleError> {
    let ReportArrived { report, node, .. } = msg;
    let id = report.task_id;
    // Events name the node whose agent did the work; the event's own `node` is the
    // coordinator's that recorded it.
    let by = |mut data: serde_json::Value| {
        data["agent"] = report.agent.as_str().into();
        data["agent_node"] = node.clone().into();
        data
    };
    // Reports may overtake each other between coordinators: an outcome that finds the task
    // still assigned records the start it implies first, so every story reads the same.
    let started = || Change {
        data: by(serde_json::json!({})),
        ..Change::default()
    };
    // Where the task is still as its assignment left it, the report's changes are made from
    // there, with no read (a quick step sends no `started` report: its outcome's start is
    // written with it).
    if let Some((assigned, steps)) = steps_from_assignment(&report, started(), by)
        && lifecycle
            .advance_known(id, assigned.status, assigned.version, &steps)
            .await?
            .is_some()
    {
        return Ok(());
    }
    // A report of an older attempt (its task was reclaimed and assigned again since) moves
    // nothing: the newer attempt's reports decide. The event log says it came.
    let stored = lifecycle.store().task(id).await?;
    let current = stored.attempts;
    // A task paused for a review or an approval was paused by its attempt's last step: a
    // later report of that attempt (a copy's, a late duplicate's) would revive it. Only
    // progress notes are still recorded. A start report moves only an assigned task (below),
    // and one that comes after its step's outcome is expected (it is sent while the step
    // runs on), so it is not noted.
    if matches!(
        stored.status,
        TaskStatus::AwaitingReview | TaskStatus::AwaitingApproval
    ) && report.attempt == current
        && !matches!(report.outcome, Outcome::Progress { .. } | Outcome::Started)
    {
        tracing::info!(task = %id, attempt = report.attempt, status = %stored.status, "a report to a paused task is ignored");
        let data = serde_json::json!({
            "message": format!("a report of attempt {} is ignored: the task is {}", report.attempt, stored.status),
            "stale_attempt": report.attempt,
        });
        lifecycle.note(id, by(data)).await?;
        return Ok(());
    }
    if report.attempt < current {
        tracing::info!(task = %id, attempt = report.attempt, current, "a report of an older attempt is ignored");
        let data = serde_json::json!({
            "message": format!("a report of attempt {} is ignored: the task is at attempt {current}", report.attempt),
            "stale_attempt": report.attempt,
        });
        lifecycle.note(id, by(data)).await?;
        return Ok(());
    }
    if let Some((to, change)) = step_end(&report.outcome, by) {
        return end_step(&lifecycle, stored, report.attempt, started(), to, change).await;
    }
    match report.outcome {
        Outcome::Started => {
            start_implied(&lifecycle, stored, report.attempt, started()).await?;
        }
        Outcome::Progress { message, detail } => {
            let mut data = serde_json::json!({ "message": message });
            if let serde_json::Value::Object(extra) = detail {
                data.as_object_mut()
                    .expect("an object")
                    .extend(extra.into_iter().filter(|(k, _)| k != "message"));
            }
            lifecycle.note(id, by(data)).await?;
        }
        Outcome::Completed { .. }
        | Outcome::AwaitingReview { .. }
        | Outcome::AwaitingApproval { .. }
        | Outcome::Failed { .. } => unreachable!("the end of a step is handled above"),
        Outcome::Handoff { agent, step } => {
            // Merges and revisions follow a person's review only (`resume_after_review`),
            // never an agent's word.
            if matches!(step, Step::Merge { .. } | Step::Revise { .. }) {
                tracing::warn!(task = %id, step = step.name(), "a hand-off to a review step is dropped");
                return Ok(());
            }
            // The task stays running; its next step goes to another agent's pool, unless
            // the task was cancelled meanwhile.
            // Read fresh after the start: a cancel or a reclaim since the report's read gets
            // no next step.
            start_implied(&lifecycle, stored, report.attempt, started()).await?;
            let Some(task) = running_now(&lifecycle, id, report.attempt).await? else {
                tracing::info!(task = %id, "hand-off no longer applies");
                return Ok(());
            };
            let data = serde_json::json!({ "handoff": agent, "step": step.name() });
            lifecycle.note(id, by(data)).await?;
            let message = MessageId::handoff(id, report.attempt, &step);
            assign_step(&lifecycle, &task, agent, step, message).await?;
        }
    }
    Ok(())
}

/// Where the outcome of a step takes its task, and what is recorded with it; `None` for an
/// outcome that ends no step.
fn step_end(
    outcome: &Outcome,
    by: impl Fn(serde_json::Value) -> serde_json::Value,
) -> Option<(TaskStatus, Change)> {
    let with = |data| Change {
        data: by(data),
        ..Change::default()
    };
    Some(match outcome {
        Outcome::Completed { result } => (
            TaskStatus::Completed,
            Change {
                data: by(serde_json::json!({})),
                ..Change::completed(result.clone())
            },
        ),
        Outcome::AwaitingReview { pull } => (
            TaskStatus::AwaitingReview,
            with(serde_json::json!({ "pull": pull })),
        ),
        Outcome::AwaitingApproval {
            step,
            needed_usd,
            spent_usd,
            budget_usd,
            cap,
        } => {
            let mut data = serde_json::json!({ "step": step, "needed_usd": needed_usd, "spent_usd": spent_usd, "budget_usd": budget_usd });
            if let Some(cap) = cap {
                data["cap"] = cap.clone().into();
            }
            (TaskStatus::AwaitingApproval, with(data))
        }
        Outcome::Failed { failure } => {
            let mut change = Change::failed(failure.clone());
            change.data = by(change.data);
            (TaskStatus::Failed, change)
        }
        Outcome::Started | Outcome::Progress { .. } | Outcome::Handoff { .. } => return None,
    })
}

/// The changes a report makes to a task that is still as its assignment left it (assigned,
/// or running for a later step): its start where the task is assigned, then the end of the
/// step where its outcome ends one, with where the assignment found the task. `None` for a
/// report with no assignment named, and for outcomes that need the task read (progress
/// notes, hand-offs).
fn steps_from_assignment(
    report: &orion_bus::WorkReport,
    started: Change,
    by: impl Fn(serde_json::Value) -> serde_json::Value,
) -> Option<(orion_bus::AssignedAt, Vec<(TaskStatus, Change)>)> {
    let assigned = report.assigned?;
    let end = step_end(&report.outcome, by);
    if end.is_none() && !matches!(report.outcome, Outcome::Started) {
        return None;
    }
    let mut steps = Vec::with_capacity(2);
    match assigned.status {
        TaskStatus::Assigned => steps.push((TaskStatus::Running, started)),
        TaskStatus::Running if end.is_some() => {}
        _ => return None,
    }
    steps.extend(end);
    Some((assigned, steps))
}

/// Handles a message with its events' confirmations awaited together at the end, before the
/// bridge acknowledges the message.
async fn confirming(
    lifecycle: Lifecycle,
    handling: impl std::future::Future<Output = Result<(), HandleError>>,
) -> Result<(), HandleError> {
    let result = handling.await;
    lifecycle.confirmed().await;
    result
}

impl Handler<TaskArrived> for Coordinator {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: TaskArrived, _: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.1, "coordinator.assign", task = %msg.0.id);
        let lifecycle = self.lifecycle.deferring();
        Box::pin(
            confirming(
                lifecycle.clone(),
                assign(lifecycle.clone(), self.plugins.clone(), msg.0),
            )
            .instrument(span),
        )
    }
}

impl Handler<ReportArrived> for Coordinator {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: ReportArrived, _: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.span, "coordinator.report", task = %msg.report.task_id);
        let lifecycle = self.lifecycle.deferring();
        Box::pin(
            confirming(lifecycle.clone(), apply_report(lifecycle.clone(), msg)).instrument(span),
        )
    }
}

/// Queues `step` of a running task for `agent`'s pool; `id` makes a repeat harmless.
async fn assign_step(
    lifecycle: &Lifecycle,
    task: &Task,
    agent: AgentKind,
    step: Step,
    id: MessageId,
) -> Result<(), HandleError> {
    let assignment = Assignment {
        agent,
        attempt: task.attempts,
        step,
        task: task.clone(),
    };
    let envelope = Envelope::new(lifecycle.node(), Body::Assignment(Box::new(assignment)));
    let queue = Queue::Work(agent, task.spec.priority);
    Ok(lifecycle.bus().enqueue_as(queue, &id, &envelope).await?)
}

/// Moves a paused task back to `running` (counting an attempt), or finds it there already.
async fn back_to_running(
    lifecycle: &Lifecycle,
    id: orion_bus::TaskId,
    data: serde_json::Value,
) -> Result<Option<Task>, HandleError> {
    let change = Change {
        count_attempt: true,
        data,
        ..Change::default()
    };
    Ok(lifecycle
        .advance_or_find(id, TaskStatus::Running, change)
        .await?)
}

/// A person raised a paused task's budget: the step that paused runs again.
async fn resume(lifecycle: Lifecycle, resume: ResumeTask) -> Result<(), HandleError> {
    // A budget resumes the step that paused. A merge or a revision otherwise follows a review
    // only: one resumes here only where the store says the task is paused at it (a revision
    // whose model call was over budget), never on the bus's word alone.
    if matches!(resume.step, Step::Merge { .. } | Step::Revise { .. }) {
        let task = lifecycle.store().task(resume.task_id).await?;
        let paused = lifecycle.paused_step(resume.task_id).await?;
        if task.status != TaskStatus::AwaitingApproval || paused.as_ref() != Some(&resume.step) {
            tracing::warn!(task = %resume.task_id, step = resume.step.name(), "a resume of a review step the task is not paused at is dropped");
            return Ok(());
        }
    }
    let data = serde_json::json!({ "resumed": resume.reason });
    let Some(task) = back_to_running(&lifecycle, resume.task_id, data).await? else {
        return Ok(());
    };
    let id = MessageId::resume(task.id, task.version);
    // Only model calls pause, and they are the kind's own agent's.
    assign_step(&lifecycle, &task, task.spec.kind.agent(), resume.step, id).await
}

impl Handler<ResumeArrived> for Coordinator {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: ResumeArrived, _: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.1, "coordinator.resume", task = %msg.0.task_id);
        let lifecycle = self.lifecycle.deferring();
        Box::pin(confirming(lifecycle.clone(), resume(lifecycle.clone(), msg.0)).instrument(span))
    }
}

/// A person reviewed a pull request: the task runs again, to merge or to revise. The message
/// only says that a review happened: what was decided is read back from the store, where the
/// gateway's checked transition put it. A message the store does not confirm (a review that
/// is not there, of another task, with another decision, or a pull request that this review
/// did not move) is dropped and logged: nothing merges on the bus's word alone.
async fn resume_after_review(
    lifecycle: Lifecycle,
    message: ReviewSubmitted,
) -> Result<(), HandleError> {
    let store = lifecycle.store();
    let stored = store.review(message.pull, message.review).await?;
    let pull = match store.pull(message.pull).await {
        Ok(pull) => Some(pull),
        Err(orion_services::store::StoreError::PullNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let decided = orion_services::store::PullState::decided_by(message.decision);
    let review = match (stored, pull) {
        (Some(review), Some(pull))
            if pull.task_id == message.task_id
                && review.decision == message.decision
                && pull.state == decided =>
        {
            ReviewSubmitted {
                comment: review.comment,
                ..message
            }
        }
        (stored, pull) => {
            tracing::warn!(
                task = %message.task_id,
                pull = %message.pull,
                review = %message.review,
                stored_review = stored.is_some(),
                pull_state = pull.as_ref().map(|p| p.state.as_str()),
                "a review message the store does not confirm is dropped"
            );
            return Ok(());
        }
    };
    let data = serde_json::json!({ "review": review.review, "decision": review.decision, "pull": review.pull });
    let Some(task) = back_to_running(&lifecycle, review.task_id, data).await? else {
        return Ok(());
    };
    let step = match review.decision {
        Decision::Approve => Step::Merge { pull: review.pull },
        Decision::RequestChanges => Step::Revise {
            pull: review.pull,
            comment: review.comment.clone(),
        },
    };
    assign_step(
        &lifecycle,
        &task,
        task.spec.kind.agent(),
        step,
        MessageId::review_step(review.review),
    )
    .await
}

impl Handler<ReviewArrived> for Coordinator {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: ReviewArrived, _: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.1, "coordinator.review", task = %msg.0.task_id);
        let lifecycle = self.lifecycle.deferring();
        Box::pin(
            confirming(
                lifecycle.clone(),
                resume_after_review(lifecycle.clone(), msg.0),
            )
            .instrument(span),
        )
    }
}
