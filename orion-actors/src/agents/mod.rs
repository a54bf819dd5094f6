//! Agents: one actix actor type, [`AgentActor`], parameterised by the [`Work`] it does.
//!
//! The actor reports `started`, does the work, and reports the outcome; the coordinators
//! turn reports into status changes. Reports are queued with ids derived from (task,
//! attempt, state), so a redelivered assignment cannot produce a second, different history.

mod analyzer;
mod architect;
mod developer;
mod testing;

pub use analyzer::AnalyzerWork;
pub use architect::ArchitectWork;
pub use developer::{
    DeveloperConfig, DeveloperWork, EDIT_FORMAT, Edit, parse_edits, validate_edits,
};
pub use testing::{TestingConfig, TestingWork};

use std::sync::Arc;

use actix::prelude::*;
use async_trait::async_trait;
use orion_bus::{
    AgentKind, Assignment, Body, Bus, BusError, Envelope, Outcome, ProtocolError, Queue, Step,
    Task, TaskFailure, WorkReport,
};

use orion_services::metrics::metrics;

use crate::messages::{HandleError, Perform};

/// Who is working, and the way back to the coordinators.
#[derive(Clone)]
pub struct WorkContext {
    pub node: String,
    pub agent: AgentKind,
    pub bus: Arc<dyn Bus>,
}

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
        let id = format!("report-{task}-{attempt}-{}-{state}", assignment.step.name());
        let envelope = |outcome| {
            let report = WorkReport {
                task_id: task,
                agent: self.agent,
                attempt,
                outcome,
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
                    "result_too_large",
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
                "step_unsupported",
                "this agent has no review gate",
            )),
        }
    }
}

/// An agent kind whose capability is not built yet: fails each task with `not_implemented`.
#[derive(Clone, Copy, Debug)]
pub struct NotImplementedWork(pub AgentKind);

#[async_trait]
impl Work for NotImplementedWork {
    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        Err(TaskFailure::new(
            "not_implemented",
            format!(
                "the {} agent cannot do `{}` tasks yet",
                self.0, task.spec.kind
            ),
        ))
    }
}

/// Identity and dependencies of one agent actor.
#[derive(Clone)]
pub struct Agent {
    pub context: WorkContext,
    pub work: Arc<dyn Work>,
}

/// An agent as an actor, restarted by its supervisor when it stops.
pub struct AgentActor {
    agent: Agent,
}

impl AgentActor {
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        tracing::info!(agent = %self.agent.context.agent, node = %self.agent.context.node, "agent started");
    }
}

impl actix::Supervised for AgentActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        metrics()
            .agent_restarts
            .with_label_values(&[self.agent.context.agent.as_str()])
            .inc();
        tracing::warn!(agent = %self.agent.context.agent, node = %self.agent.context.node, "agent restarting");
    }
}

impl Agent {
    async fn run(self, assignment: Assignment) -> Result<(), HandleError> {
        let ctx = &self.context;
        ctx.report(&assignment, "started", Outcome::Started).await?;
        let agent = ctx.agent.as_str();
        let in_flight = metrics().in_flight.with_label_values(&[agent]);
        in_flight.inc();
        let started = std::time::Instant::now();
        let outcome = self
            .work
            .step(&assignment, ctx)
            .await
            .unwrap_or_else(|failure| Outcome::Failed { failure });
        in_flight.dec();
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

impl Handler<Perform> for AgentActor {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: Perform, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent.clone();
        let span = tracing::info_span!(parent: &msg.1, "perform", agent = %agent.context.agent, task = %msg.0.task.id, attempt = msg.0.attempt);
        Box::pin(tracing::Instrument::instrument(agent.run(msg.0), span))
    }
}
