//! The versioned envelope every message travels in.

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::ProtocolError;
use crate::protocol::{
    AgentReply, AgentRequest, Assignment, ControlCommand, Heartbeat, ResumeTask, ReviewSubmitted,
    Task, TaskEvent, TaskId, WorkReport,
};

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: u64 = 1;

/// Bytes reserved for an envelope before it is written.
const ENCODE_CAPACITY: usize = 384;

/// Declares [`Body`] from one list of its variants, their payload types and their wire names,
/// with what the envelope's (de)serialisation needs of it: the names, and the payload of each.
macro_rules! bodies {
    ($($variant:ident($payload:ty) = $name:literal,)+) => {
        /// What a message says; the `type` field on the wire names the variant, and `payload`
        /// holds it.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Body {
            $($variant($payload),)+
        }

        impl Body {
            /// Every `type` this build understands.
            pub const TYPES: &'static [&'static str] = &[$($name,)+];

            /// The wire name of the variant.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Body::$variant(_) => $name,)+
                }
            }

            fn serialize_payload<S: SerializeStruct>(&self, fields: &mut S) -> Result<(), S::Error> {
                match self {
                    $(Body::$variant(payload) => fields.serialize_field("payload", payload),)+
                }
            }

            /// Reads the payload of a message of type `type_name` (one of [`Body::TYPES`]).
            fn deserialize_payload<'de, D: Deserializer<'de>>(
                type_name: &str,
                payload: D,
            ) -> Result<Body, D::Error> {
                match type_name {
                    $($name => <$payload>::deserialize(payload).map(Body::$variant),)+
                    other => Err(de::Error::unknown_variant(other, Self::TYPES)),
                }
            }
        }
    };
}

bodies! {
    TaskSubmitted(Box<Task>) = "task.submitted",
    Assignment(Box<Assignment>) = "work.assignment",
    Report(WorkReport) = "work.report",
    Event(TaskEvent) = "task.event",
    Heartbeat(Heartbeat) = "node.heartbeat",
    Control(ControlCommand) = "node.control",
    Review(ReviewSubmitted) = "review.submitted",
    Resume(ResumeTask) = "task.resume",
    Request(AgentRequest) = "agent.request",
    Reply(AgentReply) = "agent.reply",
}

/// A message with its routing and causality metadata.
///
/// `correlation_id` is shared by every message about one task (it is the task id when there
/// is one); `causation_id` names the message that caused this one.
///
/// On the wire it is one JSON object: `v`, `id`, `task_id` (where there is one),
/// `correlation_id`, `causation_id` (where there is one), `node`, `sent_at`, then the body as
/// `type` and `payload`. It is (de)serialised by hand, not derived with the body flattened:
/// a flattened body makes serde buffer every message's fields before reading them, which was
/// most of what decoding an envelope cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub v: u64,
    pub id: Uuid,
    pub task_id: Option<TaskId>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub node: String,
    pub sent_at: DateTime<Utc>,
    pub body: Body,
    /// The W3C trace context of the code that made this message; it travels in the
    /// transport's headers (`traceparent` on NATS), not in the JSON.
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
        self.body.type_name()
    }

    /// Serialises, refusing a message larger than `limit` bytes.
    pub fn encode(&self, limit: usize) -> Result<Bytes, ProtocolError> {
        // Room for a small message (a request, a reply, a report) without growing.
        let mut bytes = Vec::with_capacity(ENCODE_CAPACITY);
        serde_json::to_writer(&mut bytes, self)
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
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
        let refused = match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) => {
                return match envelope.v {
                    SCHEMA_VERSION => Ok(envelope),
                    other => Err(ProtocolError::UnsupportedVersion(other)),
                };
            }
            Err(refused) => refused,
        };
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
        // A generic parse keeps the last of a repeated field: the first parse's reason stands.
        Err(ProtocolError::Malformed(refused.to_string()))
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional =
            usize::from(self.task_id.is_some()) + usize::from(self.causation_id.is_some());
        let mut fields = serializer.serialize_struct("Envelope", 7 + optional)?;
        fields.serialize_field("v", &self.v)?;
        fields.serialize_field("id", &self.id)?;
        match &self.task_id {
            Some(task_id) => fields.serialize_field("task_id", task_id)?,
            None => fields.skip_field("task_id")?,
        }
        fields.serialize_field("correlation_id", &self.correlation_id)?;
        match &self.causation_id {
            Some(causation_id) => fields.serialize_field("causation_id", causation_id)?,
            None => fields.skip_field("causation_id")?,
        }
        fields.serialize_field("node", &self.node)?;
        // As chrono's own serde writes it, in one piece (its serde writes it a part at a time
        // through the escaping writer).
        fields.serialize_field(
            "sent_at",
            &self.sent_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )?;
        fields.serialize_field("type", self.body.type_name())?;
        self.body.serialize_payload(&mut fields)?;
        fields.end()
    }
}

/// The fields of an envelope; any other is skipped (a newer sender may add fields).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    V,
    Id,
    TaskId,
    CorrelationId,
    CausationId,
    Node,
    SentAt,
    Type,
    Payload,
    #[serde(other)]
    Other,
}

/// Reads a value from a string with `read`; `expecting` says what the string is.
struct Text<T> {
    expecting: &'static str,
    read: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for Text<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.read)(text).map_err(E::custom)
    }
}

/// A `type` this build understands, as its entry of [`Body::TYPES`].
struct TypeName(&'static str);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Text {
            expecting: "a message type",
            read: |name| {
                Body::TYPES
                    .iter()
                    .find(|known| **known == name)
                    .map(|known| TypeName(known))
                    .ok_or_else(|| format!("unknown message type `{name}`"))
            },
        })
    }
}

/// When a message was sent: RFC 3339 as Orion writes it, read with chrono's strict parser,
/// or any spelling chrono's serde reads (its relaxed parser, several times slower).
struct SentAt(DateTime<Utc>);

impl<'de> Deserialize<'de> for SentAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Text {
            expecting: "an RFC 3339 date and time",
            read: |text| {
                DateTime::parse_from_rfc3339(text)
                    .or_else(|_| text.parse::<DateTime<FixedOffset>>())
                    .map(|time| SentAt(time.with_timezone(&Utc)))
                    .map_err(|e| e.to_string())
            },
        })
    }
}

/// Reads a payload whose type is already known straight into its variant.
struct Payload(&'static str);

impl<'de> de::DeserializeSeed<'de> for Payload {
    type Value = Body;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Body, D::Error> {
        Body::deserialize_payload(self.0, deserializer)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an envelope")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                fn once<T, E: de::Error>(
                    slot: &mut Option<T>,
                    name: &'static str,
                    value: T,
                ) -> Result<(), E> {
                    match slot.replace(value) {
                        Some(_) => Err(E::duplicate_field(name)),
                        None => Ok(()),
                    }
                }
                let (mut v, mut id, mut task_id, mut correlation_id, mut causation_id) =
                    (None, None, None, None, None);
                let (mut node, mut sent_at, mut type_name) = (None, None, None);
                let mut body: Option<Body> = None;
                // A payload that came before its `type` (our senders write `type` first).
                let mut early: Option<serde_json::Value> = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::V => once(&mut v, "v", map.next_value::<u64>()?)?,
                        Field::Id => once(&mut id, "id", map.next_value::<Uuid>()?)?,
                        Field::TaskId => {
                            once(&mut task_id, "task_id", map.next_value::<Option<TaskId>>()?)?
                        }
                        Field::CorrelationId => once(
                            &mut correlation_id,
                            "correlation_id",
                            map.next_value::<Uuid>()?,
                        )?,
                        Field::CausationId => once(
                            &mut causation_id,
                            "causation_id",
                            map.next_value::<Option<Uuid>>()?,
                        )?,
                        Field::Node => once(&mut node, "node", map.next_value::<String>()?)?,
                        Field::SentAt => {
                            once(&mut sent_at, "sent_at", map.next_value::<SentAt>()?.0)?
                        }
                        Field::Type => {
                            once(&mut type_name, "type", map.next_value::<TypeName>()?.0)?
                        }
                        Field::Payload => {
                            if body.is_some() || early.is_some() {
                                return Err(de::Error::duplicate_field("payload"));
                            }
                            match type_name {
                                Some(known) => body = Some(map.next_value_seed(Payload(known))?),
                                None => early = Some(map.next_value()?),
                            }
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let type_name = type_name.ok_or_else(|| de::Error::missing_field("type"))?;
                let body = match (body, early) {
                    (Some(body), _) => body,
                    (None, Some(payload)) => {
                        Body::deserialize_payload(type_name, payload).map_err(de::Error::custom)?
                    }
                    (None, None) => return Err(de::Error::missing_field("payload")),
                };
                Ok(Envelope {
                    v: v.ok_or_else(|| de::Error::missing_field("v"))?,
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                    task_id: task_id.flatten(),
                    correlation_id: correlation_id
                        .ok_or_else(|| de::Error::missing_field("correlation_id"))?,
                    causation_id: causation_id.flatten(),
                    node: node.ok_or_else(|| de::Error::missing_field("node"))?,
                    sent_at: sent_at.ok_or_else(|| de::Error::missing_field("sent_at"))?,
                    body,
                    traceparent: None,
                })
            }
        }
        deserializer.deserialize_map(Fields)
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
    fn a_payload_before_its_type_and_fields_this_build_does_not_know_are_read() {
        let task_id = TaskId::new();
        let env = Envelope::new("n1", Body::Control(ControlCommand::Cancel { task_id }));
        let bytes = env.encode(LIMIT).unwrap();
        let ours = std::str::from_utf8(&bytes).unwrap();
        assert!(ours.find(r#""type""#).unwrap() < ours.find(r#""payload""#).unwrap());
        // Another sender's spelling of the same message: payload first, a field added.
        let theirs = format!(
            r#"{{"payload":{{"command":"cancel","task_id":"{task_id}"}},"added":[1,{{"a":null}}],"v":1,"id":"{}","task_id":"{task_id}","correlation_id":"{}","node":"n1","sent_at":{},"type":"node.control"}}"#,
            env.id,
            env.correlation_id,
            serde_json::to_string(&env.sent_at).unwrap(),
        );
        assert_eq!(Envelope::decode(theirs.as_bytes(), LIMIT).unwrap(), env);
        // Without the optional fields, or with them null, they are absent.
        let bare = Envelope::new("n1", Body::Control(ControlCommand::Drain));
        let mut json: serde_json::Value = serde_json::to_value(&bare).unwrap();
        assert!(json.get("task_id").is_none() && json.get("causation_id").is_none());
        json["task_id"] = serde_json::Value::Null;
        json["causation_id"] = serde_json::Value::Null;
        let read = Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT).unwrap();
        assert_eq!(read, bare);
    }

    #[test]
    fn times_are_written_as_chrono_writes_them_and_read_in_any_spelling_it_reads() {
        let mut env = Envelope::new("n1", Body::Control(ControlCommand::Drain));
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789] {
            env.sent_at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 5, 23, 1, 2).unwrap()
                + chrono::Duration::nanoseconds(nanos);
            let json: serde_json::Value =
                serde_json::from_slice(&env.encode(LIMIT).unwrap()).unwrap();
            assert_eq!(json["sent_at"], serde_json::to_value(env.sent_at).unwrap());
            assert_eq!(
                Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT).unwrap(),
                env
            );
        }
        let mut json = serde_json::to_value(&env).unwrap();
        for (spelling, read) in [
            ("2026-12-05T23:01:02+01:00", "2026-12-05T22:01:02Z"),
            ("2026-12-05 23:01:02Z", "2026-12-05T23:01:02Z"),
            ("2026-12-05t23:01:02.5z", "2026-12-05T23:01:02.500Z"),
        ] {
            json["sent_at"] = spelling.into();
            let decoded = Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT).unwrap();
            assert_eq!(
                decoded.sent_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                read
            );
        }
        json["sent_at"] = "yesterday".into();
        assert!(matches!(
            Envelope::decode(&serde_json::to_vec(&json).unwrap(), LIMIT),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn a_field_twice_or_a_part_missing_is_malformed() {
        let env = Envelope::new("n1", Body::Control(ControlCommand::Drain));
        let ours = String::from_utf8(env.encode(LIMIT).unwrap().to_vec()).unwrap();
        let end = ours.len() - 1;
        for spelling in [
            format!(r#"{},"payload":{{"command":"drain"}}}}"#, &ours[..end]),
            format!(r#"{},"node":"n2"}}"#, &ours[..end]),
            format!(r#"{},"type":"node.control"}}"#, &ours[..end]),
            ours.replace(r#","payload":{"command":"drain"}"#, ""),
            ours.replace(r#""node":"n1","#, ""),
        ] {
            assert!(
                matches!(
                    Envelope::decode(spelling.as_bytes(), LIMIT),
                    Err(ProtocolError::Malformed(_))
                ),
                "{spelling} was read"
            );
        }
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
