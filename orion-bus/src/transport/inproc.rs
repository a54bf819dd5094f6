//! The in-process transport: the embedded mode's bus, with the same semantics as NATS.
//!
//! Messages are kept as encoded bytes and decoded on delivery, so size and schema checks,
//! dead-lettering and redelivery behave exactly as on the NATS transport.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use super::{Triage, triage};
use crate::bus::{
    Acker, Bus, BusConfig, DeadLetter, DeadLetters, Deliveries, Delivery, Queue, QueueDepth,
    RawMessage, RawStream, Replier, Request, Requests, dead_letter_body,
};
use crate::envelope::{Body, Envelope};
use crate::error::{BusError, ProtocolError};
use crate::subjects::{Subjects, subject_matches};

/// How many published messages a slow subscriber may fall behind before it skips some.
const TOPIC_CAPACITY: usize = 16 * 1024;

/// A [`Bus`] inside one process.
#[derive(Clone)]
pub struct InProcessBus {
    subjects: Subjects,
    config: BusConfig,
    inner: Arc<Inner>,
}

struct Inner {
    queues: Mutex<HashMap<String, QueueState>>,
    topics: broadcast::Sender<RawMessage>,
    seen: Mutex<HashMap<String, Instant>>,
    /// The servers of each request subject, taken in turn.
    servers: Mutex<HashMap<String, (usize, Vec<Server>)>>,
}

/// A request's bytes and where its answer goes.
type Asked = (Bytes, tokio::sync::oneshot::Sender<Bytes>);
type Server = tokio::sync::mpsc::UnboundedSender<Asked>;

/// Answers one in-process request.
struct OneshotReplier {
    answer: tokio::sync::oneshot::Sender<Bytes>,
    limit: usize,
}

#[async_trait]
impl Replier for OneshotReplier {
    async fn reply(self: Box<Self>, envelope: &Envelope) -> Result<(), BusError> {
        // A requester that gave up is not an error of the server's.
        let _ = self.answer.send(envelope.encode(self.limit)?);
        Ok(())
    }
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Pending>,
    in_flight: HashMap<u64, InFlight>,
    next_token: u64,
    notify: Arc<Notify>,
}

struct Pending {
    subject: String,
    payload: Bytes,
    traceparent: Option<String>,
    deliveries: u32,
}

struct InFlight {
    message: Pending,
    deadline: Instant,
}

/// The key of the dead letters' queue (no queue's consumer name looks like it).
const DEAD_LETTERS: &str = "<dead letters>";

impl QueueState {
    /// Messages whose ack-wait ran out are delivered again, first.
    fn redeliver_expired(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(f) = self.in_flight.remove(&token) {
                self.ready.push_front(f.message);
            }
        }
    }

    /// What a taker waits for when nothing is ready.
    fn wait(&self) -> Wait {
        Wait {
            notify: self.notify.clone(),
            until: self.in_flight.values().map(|f| f.deadline).min(),
        }
    }
}

impl InProcessBus {
    pub fn new(subjects: Subjects, config: BusConfig) -> Self {
        let (topics, _) = broadcast::channel(TOPIC_CAPACITY);
        let inner = Inner {
            queues: Mutex::default(),
            topics,
            seen: Mutex::default(),
            servers: Mutex::default(),
        };
        Self {
            subjects,
            config,
            inner: Arc::new(inner),
        }
    }
}

impl Inner {
    fn queues(&self) -> MutexGuard<'_, HashMap<String, QueueState>> {
        // A poisoned lock means a panic while holding it; the maps stay consistent because
        // every critical section is a handful of infallible collection operations.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn broadcast(&self, subject: String, payload: Bytes) {
        // No subscriber is not an error: publications reach live subscribers only.
        let _ = self.topics.send(RawMessage { subject, payload });
    }

    /// Returns false when `id` was seen within `window`.
    fn first_sighting(&self, id: &str, window: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < window);
        if seen.contains_key(id) {
            return false;
        }
        seen.insert(id.to_owned(), now);
        true
    }

    /// Takes the next deliverable message of a queue, or says when to look again.
    fn take(
        self: &Arc<Self>,
        key: &str,
        subjects: &Subjects,
        config: &BusConfig,
    ) -> Result<Delivery, Wait> {
        let mut dead = Vec::new();
        let taken = self.take_from(key, subjects, config, &mut dead);
        for (subject, body) in dead {
            self.queue_dead_letter(subject, body);
        }
        taken
    }

    /// A dead letter, for its live subscribers and for the followers' queue.
    fn queue_dead_letter(&self, subject: String, body: Bytes) {
        {
            let mut queues = self.queues();
            let q = queues.entry(DEAD_LETTERS.to_owned()).or_default();
            q.ready.push_back(Pending {
                subject: subject.clone(),
                payload: body.clone(),
                traceparent: None,
                deliveries: 0,
            });
            q.notify.notify_one();
        }
        self.broadcast(subject, body);
    }

    fn take_from(
        self: &Arc<Self>,
        key: &str,
        subjects: &Subjects,
        config: &BusConfig,
        dead: &mut Vec<(String, Bytes)>,
    ) -> Result<Delivery, Wait> {
        let mut queues = self.queues();
        let q = queues.entry(key.to_owned()).or_default();
        let now = Instant::now();
        q.redeliver_expired(now);
        while let Some(mut message) = q.ready.pop_front() {
            message.deliveries += 1;
            let attempt = message.deliveries;
            match triage(&message.payload, attempt, config) {
                Triage::Deliver(mut envelope) => {
                    envelope.traceparent = message.traceparent.clone();
                    let acker = self.lend(q, key, message, config.ack_wait);
                    return Ok(Delivery::new(*envelope, attempt, acker));
                }
                Triage::Dead(reason) => {
                    tracing::warn!(subject = %message.subject, %reason, "dead-lettering a message");
                    let body =
                        dead_letter_body(&reason, &message.subject, attempt, &message.payload);
                    dead.push((subjects.dead(&message.subject), body));
                }
            }
        }
        Err(q.wait())
    }

    /// Takes the next dead letter, or says when to look again.
    fn take_dead_letter(self: &Arc<Self>, ack_wait: Duration) -> Result<DeadLetter, Wait> {
        let mut queues = self.queues();
        let q = queues.entry(DEAD_LETTERS.to_owned()).or_default();
        let now = Instant::now();
        q.redeliver_expired(now);
        let Some(mut message) = q.ready.pop_front() else {
            return Err(q.wait());
        };
        message.deliveries += 1;
        let (subject, body) = (message.subject.clone(), message.payload.clone());
        let acker = self.lend(q, DEAD_LETTERS, message, ack_wait);
        Ok(DeadLetter::new(subject, body, acker))
    }

    /// Puts `message` of queue `key` in flight until `ack_wait` runs out; its acker settles it.
    fn lend(
        self: &Arc<Self>,
        q: &mut QueueState,
        key: &str,
        message: Pending,
        ack_wait: Duration,
    ) -> Box<dyn Acker> {
        let token = q.next_token;
        q.next_token += 1;
        q.in_flight.insert(
            token,
            InFlight {
                message,
                deadline: Instant::now() + ack_wait,
            },
        );
        Box::new(InProcessAcker {
            inner: self.clone(),
            key: key.to_owned(),
            token,
            ack_wait,
        })
    }

    fn settle(&self, key: &str, token: u64, change: impl FnOnce(&mut QueueState, InFlight)) {
        let mut queues = self.queues();
        if let Some(q) = queues.get_mut(key) {
            // A token that is gone was redelivered after its ack_wait: settling it is a no-op,
            // as acknowledging a late message is on NATS.
            if let Some(f) = q.in_flight.remove(&token) {
                change(q, f);
                q.notify.notify_one();
            }
        }
    }
}

/// Nothing to deliver now: wait for a notification or until the earliest lease runs out.
struct Wait {
    notify: Arc<Notify>,
    until: Option<Instant>,
}

impl Wait {
    async fn until_ready(self) {
        match self.until {
            Some(deadline) => {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => self.notify.notified().await,
        }
    }
}

struct InProcessAcker {
    inner: Arc<Inner>,
    key: String,
    token: u64,
    ack_wait: Duration,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.inner.settle(&self.key, self.token, |_, _| {});
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        let token = self.token;
        self.inner.settle(&self.key, token, |q, mut f| match delay {
            Some(d) => {
                f.deadline = Instant::now() + d;
                q.in_flight.insert(token, f);
            }
            None => q.ready.push_front(f.message),
        });
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        let mut queues = self.inner.queues();
        if let Some(f) = queues
            .get_mut(&self.key)
            .and_then(|q| q.in_flight.get_mut(&self.token))
        {
            f.deadline = Instant::now() + self.ack_wait;
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for InProcessBus {
    fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    fn config(&self) -> &BusConfig {
        &self.config
    }

    async fn enqueue_raw(
        &self,
        queue: Queue,
        message_id: &str,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        // Ids are remembered per queue, as NATS remembers them per stream.
        let scoped = format!("{}/{message_id}", queue.consumer_name());
        if !self
            .inner
            .first_sighting(&scoped, self.config.duplicate_window)
        {
            return Ok(());
        }
        let subject = queue.subject(&self.subjects);
        {
            let mut queues = self.inner.queues();
            let q = queues.entry(queue.consumer_name()).or_default();
            q.ready.push_back(Pending {
                subject: subject.clone(),
                payload: payload.clone(),
                traceparent: traceparent.map(str::to_owned),
                deliveries: 0,
            });
            q.notify.notify_one();
        }
        self.inner.broadcast(subject, payload);
        Ok(())
    }

    async fn consume(&self, queue: Queue) -> Result<Deliveries, BusError> {
        let state = (
            self.inner.clone(),
            queue.consumer_name(),
            self.subjects.clone(),
            self.config.clone(),
        );
        Ok(futures_util::stream::unfold(state, |state| async move {
            loop {
                let (inner, key, subjects, config) = &state;
                match inner.take(key, subjects, config) {
                    Ok(delivery) => return Some((delivery, state)),
                    Err(wait) => wait.until_ready().await,
                }
            }
        })
        .boxed())
    }

    async fn follow_dead_letters(&self) -> Result<DeadLetters, BusError> {
        let state = (self.inner.clone(), self.config.ack_wait);
        Ok(futures_util::stream::unfold(state, |state| async move {
            loop {
                match state.0.take_dead_letter(state.1) {
                    Ok(letter) => return Some((letter, state)),
                    Err(wait) => wait.until_ready().await,
                }
            }
        })
        .boxed())
    }

    async fn queue_depth(&self, queue: Queue) -> Result<QueueDepth, BusError> {
        let queues = self.inner.queues();
        Ok(queues
            .get(&queue.consumer_name())
            .map(|q| QueueDepth {
                pending: q.ready.len() as u64,
                in_flight: q.in_flight.len() as u64,
            })
            .unwrap_or_default())
    }

    async fn held(&self, queue: Queue) -> Result<u64, BusError> {
        let depth = self.queue_depth(queue).await?;
        Ok(depth.pending + depth.in_flight)
    }

    async fn publish_event(&self, envelope: &Envelope) -> Result<(), BusError> {
        let Body::Event(event) = &envelope.body else {
            return Err(ProtocolError::Malformed("publish_event takes a task.event".into()).into());
        };
        let subject = self.subjects.event(event.task_id, event.event_type);
        self.publish(&subject, envelope).await
    }

    async fn publish(&self, subject: &str, envelope: &Envelope) -> Result<(), BusError> {
        let payload = envelope.encode(self.config.max_message_bytes)?;
        self.inner.broadcast(subject.to_owned(), payload);
        Ok(())
    }

    async fn subscribe_raw(&self, pattern: &str) -> Result<RawStream, BusError> {
        let rx = self.inner.topics.subscribe();
        let pattern = pattern.to_owned();
        Ok(futures_util::stream::unfold((rx, pattern), |(mut rx, pattern)| async move {
            loop {
                match rx.recv().await {
                    Ok(m) if subject_matches(&pattern, &m.subject) => return Some((m, (rx, pattern))),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, %pattern, "a slow subscriber skipped messages");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }

    async fn request(
        &self,
        subject: &str,
        envelope: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, BusError> {
        let limit = self.config.max_message_bytes;
        let payload = envelope.encode(limit)?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let mut asked = Some((payload, answer));
        {
            let mut servers = self.inner.servers.lock().unwrap_or_else(|p| p.into_inner());
            let (turn, list) = servers.entry(subject.to_owned()).or_default();
            list.retain(|s| !s.is_closed());
            for _ in 0..list.len() {
                *turn = (*turn + 1) % list.len();
                match list[*turn].send(asked.take().expect("not sent yet")) {
                    Ok(()) => break,
                    Err(returned) => asked = Some(returned.0),
                }
            }
        }
        if asked.is_some() {
            return Err(BusError::NoResponders(subject.to_owned()));
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(bytes)) => Ok(Envelope::decode(&bytes, limit)?),
            // The server dropped the request unanswered, or took too long.
            Ok(Err(_)) | Err(_) => Err(BusError::Timeout {
                subject: subject.to_owned(),
                after: timeout,
            }),
        }
    }

    async fn serve(&self, subject: &str, _group: &str) -> Result<Requests, BusError> {
        let limit = self.config.max_message_bytes;
        let (server, asked) = tokio::sync::mpsc::unbounded_channel::<Asked>();
        self.inner
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(subject.to_owned())
            .or_default()
            .1
            .push(server);
        let stream = tokio_stream_from(asked).filter_map(move |(bytes, answer)| async move {
            match Envelope::decode(&bytes, limit) {
                Ok(envelope) => Some(Request {
                    envelope,
                    reply: Box::new(OneshotReplier { answer, limit }) as Box<dyn Replier>,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable request");
                    None
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// The messages of an unbounded channel as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> futures_util::stream::BoxStream<'static, T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
        .boxed()
}
