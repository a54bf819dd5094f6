//! Orion's wire: the protocol every process speaks, and the transports that carry it.
//!
//! This crate owns everything that crosses a process boundary: task, status and event
//! types (with the one table of legal status transitions), the versioned [`Envelope`]
//! every message travels in, the subject names under a configurable prefix, and the
//! [`Bus`] trait with two transports — [`NatsBus`] (NATS JetStream work queues with
//! explicit acknowledgement, a replayable events stream, core NATS for health and control)
//! and [`InProcessBus`] (the same semantics inside one process, for the embedded mode).
//!
//! It knows nothing of actors, databases or HTTP, so a monitor or an agent in any language
//! can be written from `docs/asyncapi.yaml` and this crate's documentation alone.

mod bus;
mod envelope;
mod error;
mod failures;
mod follow;
mod ids;
mod plugins;
mod protocol;
mod subjects;
mod transport;

pub use bus::{
    Acker, Bus, BusConfig, Confirmation, DeadLetter, DeadLetterBody, DeadLetters, Deliveries,
    Delivery, EnvelopeStream, Queue, QueueDepth, RawMessage, RawStream, Replier, Request, Requests,
    dead_letter_body,
};
pub use envelope::{Body, Envelope, SCHEMA_VERSION, set_trace_source};
pub use error::{BusError, BusErrorKind, ProtocolError};
pub use failures::codes;
pub use follow::follow;
pub use ids::MessageId;
pub use plugins::{PluginKind, Plugins, check_schema};
pub use protocol::{
    AgentKind, AgentReply, AgentRequest, AssignedAt, Assignment, Candidate, ControlCommand,
    CustomKind, Decision, EventType, HEARTBEAT_INTERVAL, Heartbeat, IllegalTransition,
    OriginThread, Outcome, Priority, ResumeTask, ReviewSubmitted, Step, Task, TaskEvent,
    TaskFailure, TaskId, TaskKind, TaskOrigin, TaskSpec, TaskStatus, TestVerdict, WorkReport,
    check_budget,
};
pub use subjects::{StreamFamily, Subjects, subject_matches};
pub use transport::{InProcessBus, NatsBus, NatsSecurity};
