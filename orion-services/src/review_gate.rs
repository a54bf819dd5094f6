//! The review gate and the budget resume: what a person decides about a task, decided here
//! (the gateway's handlers parse, authorize, call one of these and render the answer).
//!
//! - [`Lifecycle::review`]: a decision on a pull request, for the version the reviewer saw.
//!   The store moves the pull request by its transition table under a guard
//!   (`Store::review_pull`), so of concurrent reviews one decides; then the coordinators are
//!   told on the submissions queue, and they act only on what the store confirms.
//! - [`Lifecycle::raise_budget`]: a task's budget set again; a task paused for approval
//!   resumes the step that paused last.
//! - [`Lifecycle::raise_cap`]: a spending cap raised for its current period; every task it
//!   paused resumes the step that paused.

use orion_bus::{
    Body, Decision, Envelope, EventType, MessageId, Queue, ResumeTask, ReviewSubmitted, Step, Task,
    TaskId, TaskStatus,
};
use uuid::Uuid;

use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::store::{PullState, Review, StoreError};

/// Revision rounds a pull request may go through before a reviewer must approve or give up.
pub const MAX_REVISION_ROUNDS: i32 = 3;
/// Events read per page while looking for the step that paused.
const EVENT_PAGE: u64 = 500;
/// Paused tasks a cap's raise looks at, at most.
const RESUME_BATCH: u64 = 1000;

/// Why a person's decision is not taken.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("pull request {pull} is {state}, not waiting for a review")]
    NotAwaitingReview { pull: Uuid, state: &'static str },
    #[error("pull request {pull} has been revised {rounds} times; approve it or cancel the task")]
    RoundsExhausted { pull: Uuid, rounds: i32 },
    #[error("pull request {pull} has a newer version ({head}) than the one reviewed")]
    PullChanged { pull: Uuid, head: String },
    #[error("a request for changes must say what to change")]
    CommentRequired,
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl From<StoreError> for GateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PullNotOpen { pull, state } => GateError::NotAwaitingReview {
                pull,
                state: PullState::parse(&state).map_or("unknown", PullState::as_str),
            },
            StoreError::PullChanged { pull, head } => GateError::PullChanged { pull, head },
            other => GateError::Lifecycle(other.into()),
        }
    }
}

impl From<orion_bus::BusError> for GateError {
    fn from(e: orion_bus::BusError) -> Self {
        GateError::Lifecycle(e.into())
    }
}

/// A reviewer's decision.
#[derive(Clone, Debug)]
pub struct ReviewRequest {
    pub pull: Uuid,
    pub decision: Decision,
    pub comment: String,
    /// The version the reviewer saw; `None`: the version current now.
    pub head_oid: Option<String>,
}

/// What a raised budget did.
#[derive(Debug)]
pub struct BudgetRaised {
    pub task: Task,
    /// The task was paused for approval and its step is queued again.
    pub resumed: bool,
}

impl Lifecycle {
    /// Decides a pull request by a review, once, for the version the reviewer saw, and tells
    /// the coordinators. Returns the review and the task it is of.
    pub async fn review(&self, request: ReviewRequest) -> Result<(Review, TaskId), GateError> {
        if request.decision == Decision::RequestChanges && request.comment.trim().is_empty() {
            return Err(GateError::CommentRequired);
        }
        let store = self.store();
        let pull = store.pull(request.pull).await?;
        let head = request.head_oid.unwrap_or_else(|| pull.head_oid.clone());
        if head != pull.head_oid {
            return Err(GateError::PullChanged {
                pull: pull.id,
                head: pull.head_oid,
            });
        }
        let task = store.task(pull.task_id).await?;
        if pull.state != PullState::Open || task.status != TaskStatus::AwaitingReview {
            return Err(GateError::NotAwaitingReview {
                pull: pull.id,
                state: pull.state.as_str(),
            });
        }
        if request.decision == Decision::RequestChanges && pull.rounds >= MAX_REVISION_ROUNDS {
            return Err(GateError::RoundsExhausted {
                pull: pull.id,
                rounds: MAX_REVISION_ROUNDS,
            });
        }
        // The store decides: of concurrent reviews, one moves the pull request.
        let review = store
            .review_pull(pull.id, &head, request.decision, &request.comment)
            .await?;
        let submitted = ReviewSubmitted {
            task_id: task.id,
            pull: pull.id,
            review: review.id,
            decision: request.decision,
            comment: request.comment,
        };
        let envelope = Envelope::new(self.node(), Body::Review(submitted));
        self.bus()
            .enqueue_as(
                Queue::Coordinators,
                &MessageId::review(review.id),
                &envelope,
            )
            .await?;
        Ok((review, task.id))
    }

    /// The step a task paused at last for approval, as its event log says (the whole log is
    /// read, a page at a time).
    pub async fn paused_step(&self, id: TaskId) -> Result<Option<Step>, StoreError> {
        Ok(self
            .last_pause(id)
            .await?
            .and_then(|(_, data)| serde_json::from_value::<Step>(data["step"].clone()).ok()))
    }

    /// The task's last pause for approval: its event's sequence number, and its data (the
    /// step, and the cap where one paused it).
    async fn last_pause(&self, id: TaskId) -> Result<Option<(i64, serde_json::Value)>, StoreError> {
        let store = self.store();
        let (mut after, mut paused) = (0, None);
        loop {
            let page = store.events(Some(id), after, EVENT_PAGE).await?;
            let Some(tail) = page.last() else { break };
            after = tail.seq;
            if let Some(e) = page
                .iter()
                .rev()
                .find(|e| e.event_type == EventType::AwaitingApproval)
            {
                paused = Some((e.seq, e.data.clone()));
            }
        }
        Ok(paused)
    }

    /// Tells the coordinators to resume `task`'s `step`, paused by the event `pause` (once
    /// per pause: a raise repeated before the task ran sends nothing more).
    async fn resume(
        &self,
        task: &Task,
        pause: i64,
        step: Step,
        reason: String,
    ) -> Result<(), GateError> {
        let resume = ResumeTask {
            task_id: task.id,
            step,
            reason,
        };
        let envelope = Envelope::new(self.node(), Body::Resume(resume));
        self.bus()
            .enqueue_as(
                Queue::Coordinators,
                &MessageId::resume(task.id, pause),
                &envelope,
            )
            .await?;
        Ok(())
    }

    /// Raises spending cap `cap` to `usd` for its current period, and resumes every task it
    /// paused (each checks its caps again before its next call). The tasks resumed.
    pub async fn raise_cap(
        &self,
        cap: &crate::budgets::SpendingCap,
        usd: f64,
    ) -> Result<Vec<TaskId>, GateError> {
        let period = cap.period.key(chrono::Utc::now());
        self.store().raise_cap(&cap.name, &period, usd).await?;
        let mut resumed = Vec::new();
        let paused = self
            .store()
            .tasks_in(&[TaskStatus::AwaitingApproval], None, RESUME_BATCH)
            .await?;
        for task in paused {
            let Some((seq, pause)) = self.last_pause(task.id).await? else {
                continue;
            };
            if pause["cap"].as_str() != Some(cap.name.as_str()) {
                continue;
            }
            let step = serde_json::from_value::<Step>(pause["step"].clone()).unwrap_or_default();
            let reason = format!("spending cap {} raised to ${usd} for {period}", cap.name);
            self.resume(&task, seq, step, reason).await?;
            resumed.push(task.id);
        }
        Ok(resumed)
    }

    /// Sets a task's budget; a task paused for approval resumes the step that paused last.
    pub async fn raise_budget(&self, id: TaskId, budget: f64) -> Result<BudgetRaised, GateError> {
        let store = self.store();
        let task = store.set_budget(id, budget).await?;
        if task.status != TaskStatus::AwaitingApproval {
            return Ok(BudgetRaised {
                task,
                resumed: false,
            });
        }
        let (seq, pause) = self.last_pause(id).await?.unwrap_or_default();
        let paused = serde_json::from_value::<Step>(pause["step"].clone()).unwrap_or_default();
        self.resume(&task, seq, paused, format!("budget raised to ${budget}"))
            .await?;
        Ok(BudgetRaised {
            task,
            resumed: true,
        })
    }
}
