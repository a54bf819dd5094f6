//! The `Bus` trait: what every transport promises.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::envelope::Envelope;
use crate::error::BusError;
use crate::protocol::{AgentKind, Priority};
use crate::subjects::Subjects;

/// A durable work queue: each message is handled by one consumer and redelivered until it
/// is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// The coordinators' inbox: tasks from the gateway, people's reviews and raised budgets
    /// (subject `<p>.tasks.submitted`; label and consumer keep that name, which the wire
    /// and running clusters know).
    Coordinators,
    /// Assignments to one agent pool, at a priority.
    Work(AgentKind, Priority),
    /// Agents' reports to the coordinators.
    Results,
}

impl Queue {
    /// A short name for logs and metrics: `submitted`, `results`, `work.<agent>`.
    pub fn label(&self) -> String {
        match *self {
            Queue::Coordinators => "submitted".into(),
            Queue::Work(agent, _) => format!("work.{agent}"),
            Queue::Results => "results".into(),
        }
    }

    /// The subject a message of this queue is published on.
    pub fn subject(&self, subjects: &Subjects) -> String {
        match *self {
            Queue::Coordinators => subjects.tasks_submitted(),
            Queue::Work(agent, priority) => subjects.work(agent, priority),
            Queue::Results => subjects.results(),
        }
    }

    /// The subject filter of this queue's consumer: one priority of one pool for work, so a
    /// node can take the priorities in the order it chooses.
    pub fn filter(&self, subjects: &Subjects) -> String {
        self.subject(subjects)
    }

    /// The durable consumer's name: consumers of the same queue on any node share it.
    pub fn consumer_name(&self) -> String {
        match *self {
            Queue::Coordinators => "coordinators-submitted".to_owned(),
            Queue::Work(agent, priority) => format!("agents-{agent}-{priority}"),
            Queue::Results => "coordinators-results".to_owned(),
        }
    }

    /// An agent pool's work queues, most urgent first.
    pub fn work_by_priority(agent: AgentKind) -> [Queue; 4] {
        [
            Queue::Work(agent, Priority::Urgent),
            Queue::Work(agent, Priority::High),
            Queue::Work(agent, Priority::Normal),
            Queue::Work(agent, Priority::Low),
        ]
    }
}

/// Timings and limits shared by both transports.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries after which a message is dead-lettered instead of delivered again.
    pub max_deliver: u32,
    /// The largest message accepted on encode and decode.
    pub max_message_bytes: usize,
    /// How long a message id is remembered for de-duplication.
    pub duplicate_window: Duration,
    /// How many messages a consumer asks the server for at once. Keep it near the number
    /// handled concurrently: a prefetched message waiting in the client still runs down its
    /// ack wait, and would be redelivered elsewhere if it waited longer.
    pub prefetch: usize,
    /// Copies of every stream a JetStream cluster keeps (1, or 3 to survive a server's loss):
    /// applied to the streams created, and to existing ones that differ, when a process
    /// connects.
    pub replicas: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_message_bytes: 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            prefetch: 8,
            replicas: 1,
        }
    }
}

/// Settles one delivery. Implemented by each transport.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done: never deliver again.
    async fn ack(&self) -> Result<(), BusError>;
    /// Not done: deliver again, after `delay` if given.
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError>;
    /// Still working: restart the ack-wait clock. `Ok` once the server confirmed it received
    /// the extension (not that the message is still this consumer's: a lost one is not).
    async fn in_progress(&self) -> Result<(), BusError>;
}

/// One delivery of a queued message.
pub struct Delivery {
    pub envelope: Envelope,
    /// 1 on first delivery; higher on redelivery.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    pub fn new(envelope: Envelope, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Self {
            envelope,
            attempt,
            acker,
        }
    }

    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }

    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acker.in_progress().await
    }
}

/// One delivery of a dead letter ([`dead_letter_body`]) to its followers' queue.
pub struct DeadLetter {
    /// `<p>.dead.<original subject>`.
    pub subject: String,
    pub body: Bytes,
    acker: Box<dyn Acker>,
}

impl DeadLetter {
    pub fn new(subject: String, body: Bytes, acker: Box<dyn Acker>) -> Self {
        Self {
            subject,
            body,
            acker,
        }
    }

    /// Handled: no follower gets it again.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }
}

pub type DeadLetters = BoxStream<'static, DeadLetter>;

/// A message as it arrived, before decoding.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub subject: String,
    pub payload: Bytes,
}

pub type Deliveries = BoxStream<'static, Delivery>;
/// A publication handed to the transport, not yet confirmed by it.
pub type Confirmation = futures_util::future::BoxFuture<'static, Result<(), BusError>>;
pub type Requests = BoxStream<'static, Request>;

/// A request received by a server, with the way back to its sender.
pub struct Request {
    pub envelope: Envelope,
    pub reply: Box<dyn Replier>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

/// Sends the answer to one request.
#[async_trait]
pub trait Replier: Send {
    async fn reply(self: Box<Self>, envelope: &Envelope) -> Result<(), BusError>;
}
pub type RawStream = BoxStream<'static, RawMessage>;
pub type EnvelopeStream = BoxStream<'static, (String, Envelope)>;

/// The body of a dead letter: the reason, where the message came from, how often it was
/// delivered, and the original bytes (as text, lossily).
pub fn dead_letter_body(reason: &str, subject: &str, attempts: u32, payload: &[u8]) -> Bytes {
    let letter = DeadLetterBody {
        reason: reason.to_owned(),
        subject: subject.to_owned(),
        attempts,
        payload: String::from_utf8_lossy(payload).into_owned(),
    };
    Bytes::from(serde_json::to_vec(&letter).unwrap_or_default())
}

/// What a dead letter says, as written to `<p>.dead.<subject>` (documented in
/// `docs/asyncapi.yaml`): why, where from, after how many deliveries, and the message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterBody {
    pub reason: String,
    /// The subject the message was on.
    pub subject: String,
    pub attempts: u32,
    /// The message as it was (lossily as text, when it was not UTF-8).
    pub payload: String,
}

impl DeadLetterBody {
    /// Reads a dead letter's body; `None` when it is not one.
    pub fn read(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

/// A message transport with durable work queues and publish/subscribe.
///
/// The contract, which `tests/e2e/bus_contract.rs` checks on every transport:
/// - a queued message goes to exactly one consumer of its queue and is redelivered after
///   `ack_wait` (or at once on `nak`) until acknowledged;
/// - messages with the same envelope id within the duplicate window are queued once;
/// - a message that cannot be decoded, or that was delivered `max_deliver` times, is
///   published to `<p>.dead.<subject>` with the reason and acknowledged, never retried
///   forever and never dropped silently;
/// - every dead letter, also one written while nobody followed them, goes to one of the
///   dead letters' followers, again after `ack_wait` until acknowledged;
/// - events and plain publications reach every live subscriber whose pattern matches.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    fn subjects(&self) -> &Subjects;

    fn config(&self) -> &BusConfig;

    /// Queues a message durably, de-duplicated by its envelope id; returns once the
    /// transport holds it.
    async fn enqueue(&self, queue: Queue, envelope: &Envelope) -> Result<(), BusError> {
        self.enqueue_as(queue, &envelope.id.to_string(), envelope)
            .await
    }

    /// Queues a message de-duplicated by `message_id`: an id derived from what the message
    /// means (a task and its attempt, a review) makes sending it again harmless.
    async fn enqueue_as(
        &self,
        queue: Queue,
        message_id: &str,
        envelope: &Envelope,
    ) -> Result<(), BusError> {
        let bytes = envelope.encode(self.config().max_message_bytes)?;
        self.enqueue_raw(queue, message_id, bytes, envelope.traceparent.as_deref())
            .await
    }

    /// Queues bytes as they are, de-duplicated by `message_id`; for bridges and tests that
    /// must put what another process sent on a queue.
    async fn enqueue_raw(
        &self,
        queue: Queue,
        message_id: &str,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<(), BusError>;

    /// Takes deliveries from a queue, competing with every other consumer of it.
    async fn consume(&self, queue: Queue) -> Result<Deliveries, BusError>;

    /// Takes the dead letters, competing with every other follower: those kept from before
    /// (the coordinators were down) first, then each new one.
    async fn follow_dead_letters(&self) -> Result<DeadLetters, BusError>;

    /// Publishes a task event on `<p>.events.<task>.<type>`, durably where the transport
    /// keeps events.
    async fn publish_event(&self, envelope: &Envelope) -> Result<(), BusError>;

    /// [`Bus::publish_event`] without waiting for the transport's acknowledgement: the event
    /// is handed over in call order, and the returned future resolves once it is confirmed
    /// (so that many events' confirmations are awaited together, not each in turn).
    async fn send_event(&self, envelope: &Envelope) -> Result<Confirmation, BusError> {
        self.publish_event(envelope).await?;
        Ok(Box::pin(futures_util::future::ready(Ok(()))))
    }

    /// Publishes to live subscribers only (health, control).
    async fn publish(&self, subject: &str, envelope: &Envelope) -> Result<(), BusError>;

    /// Every message on subjects matching `pattern` from now on, undecoded.
    async fn subscribe_raw(&self, pattern: &str) -> Result<RawStream, BusError>;

    /// Every decodable message on subjects matching `pattern` from now on.
    async fn subscribe(&self, pattern: &str) -> Result<EnvelopeStream, BusError> {
        let limit = self.config().max_message_bytes;
        let raw = self.subscribe_raw(pattern).await?;
        Ok(raw
            .filter_map(move |m| async move {
                match Envelope::decode(&m.payload, limit) {
                    Ok(env) => Some((m.subject, env)),
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, error = %e, "skipping an undecodable message");
                        None
                    }
                }
            })
            .boxed())
    }

    /// Sends a request on `subject` to one of its servers and waits up to `timeout` for the
    /// answer: `Timeout` when none comes, `NoResponders` when nothing serves the subject.
    async fn request(
        &self,
        subject: &str,
        envelope: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, BusError>;

    /// Serves requests on `subject`; the servers in one `group` share them, one each.
    async fn serve(&self, subject: &str, group: &str) -> Result<Requests, BusError>;

    /// Whether the transport can carry messages now.
    async fn check(&self) -> Result<(), BusError>;

    /// Messages of `queue` waiting for a consumer, and delivered but not yet acknowledged.
    async fn queue_depth(&self, queue: Queue) -> Result<QueueDepth, BusError>;

    /// How many messages of `queue` the transport holds (waiting, or delivered and not yet
    /// acknowledged), whether or not anything consumes the queue: 0 means that no message
    /// of it will be delivered again (none is stored, or the queue's consumer has passed
    /// every one that is).
    async fn held(&self, queue: Queue) -> Result<u64, BusError>;
}

/// How much work waits in a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub in_flight: u64,
}
