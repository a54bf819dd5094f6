//! The actor messages: imperative nouns with typed results.

use std::time::Duration;

use actix::{Message, MessageResponse};
use orion_bus::{Assignment, ResumeTask, ReviewSubmitted, Task, WorkReport};
use orion_services::lifecycle::LifecycleError;

/// Why a handler did not finish its message, which decides what happens to the delivery.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A passing failure (database or bus down): deliver the message again later.
    #[error("retry later: {0}")]
    Retry(String),
    /// A service it needs (database, bus) is down: keep the message and try again here,
    /// without spending the message's delivery attempts on an outage.
    #[error("a service is unavailable: {0}")]
    Unavailable(String),
    /// The message can never be handled: acknowledge it and log why.
    #[error("dropped: {0}")]
    Drop(String),
}

impl From<LifecycleError> for HandleError {
    fn from(e: LifecycleError) -> Self {
        use orion_services::store::StoreError;
        match e {
            LifecycleError::Store(StoreError::NotFound(id)) => {
                HandleError::Drop(format!("task {id} is not stored"))
            }
            LifecycleError::Store(StoreError::Corrupt(why)) => HandleError::Drop(why),
            LifecycleError::Store(e @ StoreError::Unavailable(_)) => {
                HandleError::Unavailable(e.to_string())
            }
            LifecycleError::Bus(e) => e.into(),
            other => HandleError::Retry(other.to_string()),
        }
    }
}

impl From<orion_bus::BusError> for HandleError {
    fn from(e: orion_bus::BusError) -> Self {
        match e {
            // A message the protocol refuses will be refused again.
            orion_bus::BusError::Protocol(why) => HandleError::Drop(why.to_string()),
            unavailable => HandleError::Unavailable(unavailable.to_string()),
        }
    }
}

impl From<orion_services::store::StoreError> for HandleError {
    fn from(e: orion_services::store::StoreError) -> Self {
        LifecycleError::from(e).into()
    }
}

/// A task was submitted: the coordinator assigns it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandleError>")]
pub struct TaskArrived(pub Task, pub tracing::Span);

/// An agent reported on an assignment: the coordinator moves the task.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandleError>")]
pub struct ReportArrived {
    pub report: WorkReport,
    /// The node whose agent sent the report.
    pub node: String,
    /// The span the delivery is handled in (a child of the sender's, across processes).
    pub span: tracing::Span,
}

/// An agent is to do an assignment; the work stops when its [`Stop`] is used. The id names
/// the delivery's work (the run) that holds the effects the step claims: the same for every
/// start the delivery makes after an outage, another for any other delivery.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandleError>")]
pub struct Perform(pub Assignment, pub tracing::Span, pub Stop, pub uuid::Uuid);

/// What stops a step's work. The agent runs the step under it (a cancelled task uses it
/// too); the sender keeps the other half, [`StopOnDrop`], which stops the work if it is
/// dropped before the work ends: a message the bus handed back, or may have lost, leaves no
/// run of its step behind to race the next delivery's.
#[derive(Debug)]
pub struct Stop {
    pub(crate) handle: futures_util::future::AbortHandle,
    pub(crate) registration: futures_util::future::AbortRegistration,
}

/// The sender's half of a [`Stop`]: stops the work when dropped (a no-op once it ended).
#[derive(Debug)]
pub struct StopOnDrop(futures_util::future::AbortHandle);

impl Stop {
    pub fn new() -> (Self, StopOnDrop) {
        let (handle, registration) = futures_util::future::AbortHandle::new_pair();
        (
            Self {
                handle: handle.clone(),
                registration,
            },
            StopOnDrop(handle),
        )
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A review was submitted: the coordinator resumes the task.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandleError>")]
pub struct ReviewArrived(pub ReviewSubmitted, pub tracing::Span);

/// A paused task may go on: the coordinator resumes it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandleError>")]
pub struct ResumeArrived(pub ResumeTask, pub tracing::Span);

/// Stop taking work; resolves when nothing is in flight. With a deadline, what is still in
/// flight then is handed back to the bus (redelivered to another node at once).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub deadline: Option<Duration>,
}

/// Stops every agent's work on a cancelled task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Cancel(pub(crate) orion_bus::TaskId);

/// Requests for the agent to answer (`<p>.rpc.<agent>`), those that arrived together; the
/// answers come back together, one per request in their order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<orion_bus::AgentReply>")]
pub struct Ask(pub Vec<orion_bus::AgentRequest>);

/// A task was cancelled: the step this agent is working on for it (if any) stops at its next
/// await, reports nothing more, and its assignment is acknowledged.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct CancelTask(pub orion_bus::TaskId);

/// A step's work panicked: the actor counts it, saves its snapshot, and stops (its supervisor
/// restarts it).
#[derive(Debug, Message)]
#[rtype(result = "PanicVerdict")]
pub(crate) struct Panicked {
    pub(crate) step: String,
}

#[derive(Debug, MessageResponse)]
pub(crate) enum PanicVerdict {
    /// Deliver the assignment again.
    Retry,
    /// The step panicked this many times: fail the task.
    GiveUp(u32),
}
