//! Agents: one actix actor type, [`AgentActor`], parameterised by the [`Work`] it does.
//!
//! The actor reports `started`, does the work, and reports the outcome; the coordinators
//! turn reports into status changes. Reports are queued with ids derived from (task,
//! attempt, state), so a redelivered assignment cannot produce a second, different history.

mod analyzer;
mod architect;
mod delivery;
mod developer;
mod devops;
mod edits;
mod repo;
mod testing;

pub use analyzer::AnalyzerWork;
pub use architect::ArchitectWork;
pub use delivery::DeveloperConfig;
pub use developer::DeveloperWork;
pub use devops::DevopsWork;
pub use edits::{EDIT_FORMAT, Edit, parse_edits, validate_edits};
pub use testing::{TestingConfig, TestingWork};

use orion_bus::codes;
use std::sync::Arc;

use actix::prelude::*;

use crate::messages::{Ask, CancelTask, PanicVerdict, Panicked};
use async_trait::async_trait;
use orion_bus::{
    AgentKind, Assignment, Body, Bus, BusError, Envelope, Outcome, ProtocolError, Queue, Step,
    Task, TaskFailure, WorkReport,
};

use orion_services::metrics::metrics;
use orion_services::store::{AgentSnapshot, EffectStore, TaskStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

use futures_util::future::{AbortHandle, Abortable};

use crate::messages::{HandleError, Perform};

/// Who is working, and the way back to the coordinators.
#[derive(Clone)]
pub struct WorkContext {
    pub node: String,
    pub agent: AgentKind,
    pub bus: Arc<dyn Bus>,
    /// Where a task's `repo` may point; checked before every step.
    pub repos: Arc<orion_services::vcs::RepoPolicy>,
    /// The run: one delivery's work on a step (the holder of the effects it claims), as
    /// [`Perform`] names it. Set by the agent when the step starts.
    pub run: uuid::Uuid,
}

/// How long a claim keeps another run of the same attempt waiting: twice the bus's ack
/// wait. A live run renews the leases of its claims every third of that ([`renew_claims`]),
/// so a claim past its lease belongs to a run that was lost (or stopped for that long).
pub(crate) fn claim_lease(ctx: &WorkContext) -> std::time::Duration {
    ctx.bus.config().ack_wait * 2
}

/// Renews the leases of the claims `run` holds on `task`, every third of `lease`, for as
/// long as it is polled.
async fn renew_claims(
    ledger: Arc<dyn EffectStore>,
    task: orion_bus::TaskId,
    run: uuid::Uuid,
    lease: std::time::Duration,
) -> std::convert::Infallible {
    let every = (lease / 3).max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        if let Err(e) = ledger.renew_claims(task, run).await {
            tracing::warn!(%task, error = %e, "could not renew the leases of the run's claims");
        }
    }
}

/// The failure code of a step that found a newer attempt of its task holding an effect it
/// was about to claim: the step stops, and nothing is reported (the newer attempt reports).
/// It never reaches a task, so it is not among `orion_bus::codes`.
pub(crate) const SUPERSEDED: &str = "superseded";

impl WorkContext {
    /// Queues a report; its id names (task, attempt, step, state), so a redelivered
    /// assignment repeats no report and the steps of one attempt never collide.
    async fn report(
        &self,
        assignment: &Assignment,
        state: &str,
        outcome: Outcome,
    ) -> Result<(), HandleError> {
        let (task, attempt) = (assignment.task.id, assignment.attempt);
        let id = orion_bus::MessageId::report(task, attempt, &assignment.step, state);
        let envelope = |outcome| {
            let report = WorkReport {
                task_id: task,
                agent: self.agent,
                attempt,
                outcome,
                assigned: Some(orion_bus::AssignedAt::of(&assignment.task)),
            };
            Envelope::new(self.node.clone(), Body::Report(report))
        };
        match self
            .bus
            .enqueue_as(Queue::Results, &id, &envelope(outcome))
            .await
        {
            // A result too large for the bus is the task's failure, reported as such.
            Err(BusError::Protocol(ProtocolError::TooLarge { size, limit })) => {
                let failure = TaskFailure::new(
                    codes::RESULT_TOO_LARGE,
                    format!("the result has {size} bytes; the bus takes {limit}"),
                );
                let failed = envelope(Outcome::Failed { failure });
                Ok(self.bus.enqueue_as(Queue::Results, &id, &failed).await?)
            }
            other => Ok(other?),
        }
    }

    /// Records a progress note on the task mid-step (`key` names it among the step's
    /// notes); a note that cannot be sent is logged, not fatal.
    pub async fn progress(
        &self,
        assignment: &Assignment,
        key: &str,
        message: String,
        detail: serde_json::Value,
    ) {
        let outcome = Outcome::Progress { message, detail };
        if let Err(e) = self
            .report(assignment, &format!("progress-{key}"), outcome)
            .await
        {
            tracing::warn!(task = %assignment.task.id, error = %e, "could not send a progress note");
        }
    }
}

/// The work of one agent kind.
#[async_trait]
pub trait Work: Send + Sync + 'static {
    /// Does the task; `Err` is the task's failure, with a stable code.
    async fn perform(
        &self,
        task: &Task,
        ctx: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure>;

    /// Answers a request from another actor (`ask`). Every agent answers `ping` with its
    /// node and kind; an agent kind that knows more operations overrides this.
    async fn answer(
        &self,
        op: &str,
        _args: &serde_json::Value,
        ctx: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        match op {
            "ping" => Ok(serde_json::json!({ "node": ctx.node, "agent": ctx.agent })),
            other => Err(TaskFailure::new(
                codes::UNKNOWN_OPERATION,
                format!("the {} agent does not answer `{other}`", ctx.agent),
            )),
        }
    }

    /// The effects ledger where the agent claims its effects, if it makes any: the claims a
    /// run holds are renewed while the run lives.
    fn ledger(&self) -> Option<Arc<dyn EffectStore>> {
        None
    }

    /// Does one step of a task. Agents whose tasks pass a review gate (merge, revise)
    /// override it; the others only know the work itself.
    async fn step(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        match assignment.step {
            Step::Work => self
                .perform(&assignment.task, ctx)
                .await
                .map(|result| Outcome::Completed { result }),
            _ => Err(TaskFailure::new(
                codes::STEP_UNSUPPORTED,
                "this agent has no review gate",
            )),
        }
    }
}

/// Identity and dependencies of one agent actor.
#[derive(Clone)]
pub struct Agent {
    pub context: WorkContext,
    pub work: Arc<dyn Work>,
    /// Where the actor's snapshot is kept (`agent_snapshots`).
    pub store: Arc<dyn TaskStore>,
}

/// How often one step may panic before its task fails with the cause.
pub const MAX_PANICS: u32 = 3;
/// Steps whose panics an agent remembers at most (the oldest are forgotten first).
const REMEMBERED_STEPS: usize = 1000;

/// What an agent keeps across restarts: its snapshot in `agent_snapshots`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentMemory {
    /// How often the actor was restarted after a panic.
    pub restarts: u64,
    /// Panics per step (`<task>/<attempt>/<step>`) that has not yet succeeded or given up.
    pub panics: BTreeMap<String, u32>,
}

/// An agent as an actor, under `actix::Supervisor`: a panic in its work stops it, the
/// supervisor restarts it, and it restores its memory from its last snapshot.
pub struct AgentActor {
    agent: Agent,
    memory: AgentMemory,
    /// Its restarts, against the node's restart rate.
    restarts: crate::supervision::RestartLimit,
    /// The steps being worked on, by task: a cancelled task's step is aborted. Shared with
    /// the steps' futures, which outlive a restart of the actor (a panicking step reports to
    /// the actor, which stops and is restarted, before the step ends).
    running: Arc<std::sync::Mutex<Running>>,
}

/// Steps in progress, by task, each with a number and what aborts it.
#[derive(Default)]
struct Running {
    steps: HashMap<orion_bus::TaskId, Vec<(u64, AbortHandle)>>,
    next: u64,
}

impl AgentActor {
    pub fn new(agent: Agent) -> Self {
        Self {
            agent,
            memory: AgentMemory::default(),
            restarts: Default::default(),
            running: Arc::default(),
        }
    }

    /// The actor's id in `agent_snapshots`: `<node>/<kind>`.
    fn id(&self) -> String {
        format!("{}/{}", self.agent.context.node, self.agent.context.agent)
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(agent = %self.agent.context.agent, node = %self.agent.context.node, "agent started");
        // Restore the last snapshot before handling anything.
        let (store, id) = (self.agent.store.clone(), self.id());
        ctx.wait(
            async move { store.snapshot(&id).await }
                .into_actor(self)
                .map(|snapshot, actor, _| match snapshot {
                    Ok(Some(snapshot)) => {
                        actor.memory = serde_json::from_value(snapshot.state).unwrap_or_default();
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not restore the agent's snapshot"),
                }),
        );
    }
}

impl actix::Supervised for AgentActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        crate::supervision::restarting(
            &mut self.restarts,
            self.agent.context.agent.as_str(),
            &self.agent.context.node,
        );
        // What it knew is read back from the snapshot in `started`.
        self.memory = AgentMemory::default();
    }
}

impl Handler<Panicked> for AgentActor {
    type Result = AtomicResponse<Self, PanicVerdict>;

    fn handle(&mut self, panicked: Panicked, _: &mut Self::Context) -> Self::Result {
        let agent_id = self.id();
        let memory = &mut self.memory;
        memory.restarts += 1;
        let count = {
            let count = memory.panics.entry(panicked.step.clone()).or_default();
            *count += 1;
            *count
        };
        let verdict = if count >= MAX_PANICS {
            memory.panics.remove(&panicked.step);
            PanicVerdict::GiveUp(count)
        } else {
            PanicVerdict::Retry
        };
        while memory.panics.len() > REMEMBERED_STEPS {
            memory.panics.pop_first();
        }
        let snapshot = AgentSnapshot {
            agent_id,
            agent_kind: self.agent.context.agent,
            node: self.agent.context.node.clone(),
            state: serde_json::to_value(&*memory).unwrap_or_default(),
            version: memory.restarts as i64,
            updated_at: chrono::Utc::now(),
        };
        let store = self.agent.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if let Err(e) = store.save_snapshot(&snapshot).await {
                    tracing::warn!(error = %e, "could not save the agent's snapshot");
                }
            }
            .into_actor(self)
            .map(move |_, _, ctx| {
                ctx.stop();
                verdict
            }),
        ))
    }
}

/// How long a step runs before its agent reports that it started.
pub const START_REPORT_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// Counts a step in flight for as long as it lives, however it ends (an aborted step too).
struct InFlight(&'static str);

impl InFlight {
    fn start(agent: &'static str) -> Self {
        metrics().in_flight.with_label_values(&[agent]).inc();
        Self(agent)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.with_label_values(&[self.0]).dec();
    }
}

/// One step of a task at a time per agent kind in this process: a second delivery of the
/// same task (a copy, or a redelivery while the first run still goes) waits for the first, so
/// the two never share the task's working directory, and finds what the first recorded.
/// The lock of each (agent kind, task) that has a step running or waiting.
type StepLockMap = HashMap<(AgentKind, orion_bus::TaskId), std::sync::Weak<tokio::sync::Mutex<()>>>;

#[derive(Default)]
struct StepLocks(std::sync::Mutex<StepLockMap>);

impl StepLocks {
    fn of(&self, agent: AgentKind, task: orion_bus::TaskId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(&(agent, task)).and_then(std::sync::Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert((agent, task), Arc::downgrade(&lock));
        lock
    }
}

static STEP_LOCKS: std::sync::LazyLock<StepLocks> = std::sync::LazyLock::new(StepLocks::default);

impl Agent {
    /// Answers one request; an answer that panics refuses its request (`agent_panicked`).
    async fn answer(&self, request: &orion_bus::AgentRequest) -> orion_bus::AgentReply {
        let answer = self.work.answer(&request.op, &request.args, &self.context);
        let panic =
            match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(answer)).await
            {
                Ok(Ok(value)) => return orion_bus::AgentReply::Answer { value },
                Ok(Err(failure)) => return orion_bus::AgentReply::Refused { failure },
                Err(panic) => orion_services::panic_text(panic.as_ref()),
            };
        tracing::error!(op = %request.op, cause = %panic, "an answer panicked");
        let message = format!(
            "the {} agent panicked answering `{}`: {panic}",
            self.context.agent, request.op
        );
        orion_bus::AgentReply::Refused {
            failure: TaskFailure::new(codes::AGENT_PANICKED, message),
        }
    }

    async fn run(self, assignment: Assignment, run: uuid::Uuid) -> Result<(), HandleError> {
        let step_lock = STEP_LOCKS.of(self.context.agent, assignment.task.id);
        let _one_step_at_a_time = step_lock.lock().await;
        let ctx = &WorkContext {
            run,
            ..self.context.clone()
        };
        // A copy of an assignment an older attempt made, or one whose task is not at work
        // (waiting for a review or an approval, or ended), is dropped before an agent that
        // makes effects acts on it: the task moved on, and the step would act on a state that
        // is past. (Agents without effects may run without a
        // database: a Testing node has none.)
        let ledger = self.work.ledger();
        if ledger.is_some() {
            match self.store.task(assignment.task.id).await {
                Ok(task)
                    if !orion_services::store::run_is_current(
                        task.status,
                        task.attempts,
                        assignment.attempt,
                    ) =>
                {
                    return Err(HandleError::Drop(format!(
                        "the task is {} at attempt {}; this assignment is of attempt {}",
                        task.status, task.attempts, assignment.attempt
                    )));
                }
                Ok(_) => {}
                Err(orion_services::store::StoreError::NotFound(id)) => {
                    return Err(HandleError::Drop(format!("task {id} is not stored")));
                }
                Err(e) => return Err(HandleError::Unavailable(e.to_string())),
            }
        }
        let agent = ctx.agent.as_str();
        let in_flight = InFlight::start(agent);
        let started = std::time::Instant::now();
        // A task that reached the bus without a gateway is checked here all the same.
        let work = async {
            match ctx.repos.check(&assignment.task.spec.repo) {
                Ok(()) => match ledger {
                    // While the step runs, the leases of the claims it holds are renewed: a claim
                    // past its lease belongs to a lost run.
                    Some(ledger) => {
                        let renewing =
                            renew_claims(ledger, assignment.task.id, run, claim_lease(ctx));
                        tokio::select! {
                            outcome = self.work.step(&assignment, ctx) => outcome,
                            never = renewing => match never {},
                        }
                    }
                    None => self.work.step(&assignment, ctx).await,
                },
                Err(refused) => Err(TaskFailure::new(
                    codes::REPO_NOT_ALLOWED,
                    refused.to_string(),
                )),
            }
        };
        // A step that takes a while says that it started; a quicker one's outcome implies
        // its start, which the coordinator records with it.
        let outcome = {
            let mut work = std::pin::pin!(work);
            tokio::select! {
                biased;
                outcome = &mut work => outcome,
                () = tokio::time::sleep(START_REPORT_AFTER) => {
                    let report = ctx.report(&assignment, "started", Outcome::Started);
                    let (outcome, reported) = tokio::join!(work, report);
                    if let Err(e) = reported {
                        // The outcome's report implies the start all the same.
                        tracing::warn!(task = %assignment.task.id, error = %e, "could not report a step's start");
                    }
                    outcome
                }
            }
        }
        .or_else(|failure| match failure.code.as_str() {
            // An outage is waited out and the step tried again, never the task's failure.
            codes::STORE_UNAVAILABLE => Err(HandleError::Unavailable(failure.message)),
            // A newer attempt has the step: this run leaves it without a word.
            SUPERSEDED => Err(HandleError::Drop(failure.message)),
            _ => Ok(Outcome::Failed { failure }),
        });
        drop(in_flight);
        let outcome = outcome?;
        let state = match &outcome {
            Outcome::Started => "started",
            Outcome::AwaitingReview { .. } => "awaiting_review",
            Outcome::AwaitingApproval { .. } => "awaiting_approval",
            Outcome::Progress { .. } => "progress",
            Outcome::Completed { .. } => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Handoff { .. } => "handoff",
        };
        metrics()
            .step_duration
            .with_label_values(&[agent, assignment.step.name(), state])
            .observe(started.elapsed().as_secs_f64());
        ctx.report(&assignment, state, outcome).await
    }
}

/// Runs an assignment, catching a panic of its work: the actor is told (it counts, saves its
/// snapshot and is restarted), and the assignment is delivered again, or after
/// [`MAX_PANICS`] the task fails with the panic's message.
async fn supervised(
    agent: Agent,
    actor: Addr<AgentActor>,
    assignment: Assignment,
    run: uuid::Uuid,
) -> Result<(), HandleError> {
    let step = format!(
        "{}/{}/{}",
        assignment.task.id,
        assignment.attempt,
        assignment.step.name()
    );
    let work = std::panic::AssertUnwindSafe(agent.clone().run(assignment.clone(), run));
    let panic = match futures_util::FutureExt::catch_unwind(work).await {
        Ok(result) => return result,
        Err(panic) => orion_services::panic_text(panic.as_ref()),
    };
    tracing::error!(%step, cause = %panic, "the agent's work panicked");
    match actor.send(Panicked { step }).await {
        Ok(PanicVerdict::GiveUp(times)) => {
            let failure = TaskFailure::new(
                codes::AGENT_PANICKED,
                format!(
                    "the {} agent failed on this step {times} times; the last time: {panic}",
                    agent.context.agent
                ),
            );
            agent
                .context
                .report(&assignment, "failed", Outcome::Failed { failure })
                .await
        }
        Ok(PanicVerdict::Retry) | Err(_) => Err(HandleError::Retry(format!(
            "the agent's work panicked: {panic}"
        ))),
    }
}

impl Handler<Ask> for AgentActor {
    type Result = ResponseFuture<Vec<orion_bus::AgentReply>>;

    /// Answers a burst at once: each request is answered concurrently, and the replies go
    /// back once all are answered (a slow answer holds the others of its burst). An answer
    /// that panics refuses its own request only (`agent_panicked`).
    fn handle(&mut self, ask: Ask, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent.clone();
        Box::pin(async move {
            futures_util::future::join_all(ask.0.iter().map(|request| agent.answer(request))).await
        })
    }
}

impl Handler<Perform> for AgentActor {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: Perform, ctx: &mut Self::Context) -> Self::Result {
        let agent = self.agent.clone();
        let task = msg.0.task.id;
        let span = tracing::info_span!(parent: &msg.1, "perform", agent = %agent.context.agent, task = %task, attempt = msg.0.attempt);
        let (abort, registration) = (msg.2.handle, msg.2.registration);
        let run = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.next += 1;
            let run = running.next;
            running.steps.entry(task).or_default().push((run, abort));
            run
        };
        let running = self.running.clone();
        let work =
            tracing::Instrument::instrument(supervised(agent, ctx.address(), msg.0, msg.3), span);
        Box::pin(async move {
            let outcome = Abortable::new(work, registration).await;
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(runs) = running.steps.get_mut(&task) {
                runs.retain(|(r, _)| *r != run);
                if runs.is_empty() {
                    running.steps.remove(&task);
                }
            }
            // A cancelled task has nothing left to do: its message is settled.
            outcome.unwrap_or_else(|_| Err(HandleError::Drop("the task was cancelled".into())))
        })
    }
}

impl Handler<CancelTask> for AgentActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelTask, _: &mut Self::Context) -> bool {
        let runs = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.steps.remove(&msg.0)
        };
        let Some(runs) = runs else {
            return false;
        };
        for (_, abort) in runs {
            abort.abort();
        }
        tracing::info!(task = %msg.0, agent = %self.agent.context.agent, "stopped the work of a cancelled task");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps of one task for one agent kind share a lock, so the second waits while the
    /// first holds it; another kind or task is not held up; and a lock nobody holds any more is
    /// forgotten.
    #[test]
    fn a_second_step_of_a_task_waits_for_the_first_and_the_lock_is_forgotten_after() {
        let locks = StepLocks::default();
        let task = orion_bus::TaskId::new();
        let first = locks.of(AgentKind::Developer, task);
        let held = first.try_lock().expect("free at first");
        let second = locks.of(AgentKind::Developer, task);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(second.try_lock().is_err(), "the second step waits");
        assert!(locks.of(AgentKind::Testing, task).try_lock().is_ok());
        assert!(
            locks
                .of(AgentKind::Developer, orion_bus::TaskId::new())
                .try_lock()
                .is_ok()
        );
        drop(held);
        assert!(second.try_lock().is_ok(), "free once the first is done");
        drop((first, second));
        let _last = locks.of(AgentKind::Analyzer, orion_bus::TaskId::new());
        assert_eq!(
            locks.0.lock().unwrap().len(),
            1,
            "only the lock still held is remembered"
        );
    }
}
