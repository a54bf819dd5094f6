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

use crate::messages::{HandleError, Perform};

/// What an agent needs besides the task.
#[derive(Clone)]
pub struct WorkContext {
    pub node: String,
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
    pub kind: AgentKind,
    pub bus: Arc<dyn Bus>,
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
        tracing::info!(agent = %self.agent.kind, node = %self.agent.context.node, "agent started");
    }
}

impl actix::Supervised for AgentActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(agent = %self.agent.kind, node = %self.agent.context.node, "agent restarting");
    }
}

impl Agent {
    /// Queues a report; its id names (task, attempt, step, state), so a redelivered
    /// assignment repeats no report and the steps of one attempt never collide.
    async fn report(
        &self,
        task: &Task,
        attempt: i32,
        step: &Step,
        outcome: Outcome,
    ) -> Result<(), HandleError> {
        let state = match &outcome {
            Outcome::Started => "started",
            Outcome::AwaitingReview { .. } => "awaiting_review",
            Outcome::AwaitingApproval { .. } => "awaiting_approval",
            Outcome::Progress { .. } => "progress",
            Outcome::Completed { .. } => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Handoff { .. } => "handoff",
        };
        let report = WorkReport {
            task_id: task.id,
            agent: self.kind,
            attempt,
            outcome,
        };
        let id = format!("report-{}-{attempt}-{}-{state}", task.id, step.name());
        let envelope = Envelope::new(self.context.node.clone(), Body::Report(report));
        match self.bus.enqueue_as(Queue::Results, &id, &envelope).await {
            // A result too large for the bus is the task's failure, reported as such.
            Err(BusError::Protocol(ProtocolError::TooLarge { size, limit })) => {
                let failure = TaskFailure::new(
                    "result_too_large",
                    format!("the result has {size} bytes; the bus takes {limit}"),
                );
                let report = WorkReport {
                    task_id: task.id,
                    agent: self.kind,
                    attempt,
                    outcome: Outcome::Failed { failure },
                };
                let envelope = Envelope::new(self.context.node.clone(), Body::Report(report));
                Ok(self.bus.enqueue_as(Queue::Results, &id, &envelope).await?)
            }
            other => Ok(other?),
        }
    }

    async fn run(self, assignment: Assignment) -> Result<(), HandleError> {
        let task = assignment.task.clone();
        let attempt = assignment.attempt;
        let step = &assignment.step;
        self.report(&task, attempt, step, Outcome::Started).await?;
        let outcome = self
            .work
            .step(&assignment, &self.context)
            .await
            .unwrap_or_else(|failure| Outcome::Failed { failure });
        self.report(&task, attempt, step, outcome).await
    }
}

impl Handler<Perform> for AgentActor {
    type Result = ResponseFuture<Result<(), HandleError>>;

    fn handle(&mut self, msg: Perform, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent.clone();
        let span = tracing::info_span!("perform", agent = %agent.kind, task = %msg.0.task.id, attempt = msg.0.attempt);
        Box::pin(tracing::Instrument::instrument(agent.run(msg.0), span))
    }
}
