//! The versioned envelope every message travels in.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProtocolError;
use crate::protocol::{
    AgentReply, AgentRequest, Assignment, ControlCommand, Heartbeat, ResumeTask, ReviewSubmitted,
    Task, TaskEvent, TaskId, WorkReport,
};

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: u64 = 1;

/// What a message says; the `type` field on the wire names the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum Body {
    #[serde(rename = "task.submitted")]
    TaskSubmitted(Task),
    #[serde(rename = "work.assignment")]
    Assignment(Assignment),
    #[serde(rename = "work.report")]
    Report(WorkReport),
    #[serde(rename = "task.event")]
    Event(TaskEvent),
    #[serde(rename = "node.heartbeat")]
    Heartbeat(Heartbeat),
    #[serde(rename = "node.control")]
    Control(ControlCommand),
    #[serde(rename = "review.submitted")]
    Review(ReviewSubmitted),
    #[serde(rename = "task.resume")]
    Resume(ResumeTask),
    #[serde(rename = "agent.request")]
    Request(AgentRequest),
    #[serde(rename = "agent.reply")]
    Reply(AgentReply),
}

impl Body {
    /// Every `type` this build understands.
    pub const TYPES: &'static [&'static str] = &[
        "task.submitted",
        "work.assignment",
        "work.report",
        "task.event",
        "node.heartbeat",
        "node.control",
        "review.submitted",
        "task.resume",
        "agent.request",
        "agent.reply",
    ];
}

/// A message with its routing and causality metadata.
///
/// `correlation_id` is shared by every message about one task (it is the task id when there
/// is one); `causation_id` names the message that caused this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u64,
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    pub correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub node: String,
    pub sent_at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: Body,
    /// The W3C trace context of the code that made this message; it travels in the
    /// transport's headers (`traceparent` on NATS), not in the JSON.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

static TRACE_SOURCE: std::sync::OnceLock<fn() -> Option<String>> = std::sync::OnceLock::new();

/// Sets where new envelopes take their `traceparent` from (the current span's context, for a
/// process that exports traces); once per process, later calls are ignored.
pub fn set_trace_source(source: fn() -> Option<String>) {
    let _ = TRACE_SOURCE.set(source);
}

impl Envelope {
    /// A new message from `node`, correlated with its task where it has one.
    pub fn new(node: impl Into<String>, body: Body) -> Self {
        let task_id = match &body {
            Body::TaskSubmitted(t) => Some(t.id),
            Body::Assignment(a) => Some(a.task.id),
            Body::Report(r) => Some(r.task_id),
            Body::Event(e) => Some(e.task_id),
            Body::Control(ControlCommand::Cancel { task_id }) => Some(*task_id),
            Body::Review(r) => Some(r.task_id),
            Body::Resume(r) => Some(r.task_id),
            Body::Heartbeat(_)
            | Body::Control(ControlCommand::Drain)
            | Body::Request(_)
            | Body::Reply(_) => None,
        };
        let id = Uuid::now_v7();
        Self {
            v: SCHEMA_VERSION,
            id,
            task_id,
            correlation_id: task_id.map(|t| t.as_uuid()).unwrap_or(id),
            causation_id: None,
            node: node.into(),
            sent_at: Utc::now(),
            body,
            traceparent: TRACE_SOURCE.get().and_then(|source| source()),
        }
    }

    /// Marks this message as caused by `cause`.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.causation_id = Some(cause.id);
        self.correlation_id = cause.correlation_id;
        self
    }

    /// The wire type name of the body.
    pub fn type_name(&self) -> &'static str {
        match &self.body {
            Body::TaskSubmitted(_) => "task.submitted",
            Body::Assignment(_) => "work.assignment",
            Body::Report(_) => "work.report",
            Body::Event(_) => "task.event",
            Body::Heartbeat(_) => "node.heartbeat",
            Body::Control(_) => "node.control",
            Body::Review(_) => "review.submitted",
            Body::Resume(_) => "task.resume",
            Body::Request(_) => "agent.request",
            Body::Reply(_) => "agent.reply",
        }
    }

    /// Serialises, refusing a message larger than `limit` bytes.
    pub fn encode(&self, limit: usize) -> Result<Bytes, ProtocolError> {
        let bytes =
            serde_json::to_vec(self).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if bytes.len() > limit {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// Parses and validates a message: size first, then version, then type, then shape, so
    /// the reason given for a rejection is the most basic one that applies.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, ProtocolError> {
        if bytes.len() > limit {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        // Every well-formed message takes one parse; only a rejected one is parsed again,
        // generically, to say precisely why.
        if let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes) {
            return match envelope.v {
                SCHEMA_VERSION => Ok(envelope),
                other => Err(ProtocolError::UnsupportedVersion(other)),
            };
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let version = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ProtocolError::Malformed("missing schema version `v`".into()))?;
        if version != SCHEMA_VERSION {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let type_name = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ProtocolError::Malformed("missing `type`".into()))?;
        if !Body::TYPES.contains(&type_name) {
            return Err(ProtocolError::UnknownType(type_name.to_owned()));
        }
        serde_json::from_value(value).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ControlCommand, TaskId};

    const LIMIT: usize = 1024;

    #[test]
    fn round_trips_with_type_and_payload_on_the_wire() {
        let env = Envelope::new(
            "n1",
            Body::Control(ControlCommand::Cancel {
                task_id: TaskId::new(),
            }),
        );
        let bytes = env.encode(LIMIT).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["type"], "node.control");
        assert_eq!(json["payload"]["command"], "cancel");
        assert_eq!(Envelope::decode(&bytes, LIMIT).unwrap(), env);
    }

    #[test]
    fn rejections_say_why() {
        let env = Envelope::new("n1", Body::Control(ControlCommand::Drain));
        let mut json = serde_json::to_value(&env).unwrap();
        json["v"] = 2.into();
        let err = Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT).unwrap_err();
        assert_eq!(err, ProtocolError::UnsupportedVersion(2));
        json["v"] = 1.into();
        json["type"] = "task.exploded".into();
        let err = Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT).unwrap_err();
        assert_eq!(err, ProtocolError::UnknownType("task.exploded".into()));
        assert!(matches!(
            Envelope::decode(b"{not json", LIMIT),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(&[b' '; 2000], LIMIT),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            env.encode(10),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
