//! The NATS transport: JetStream work queues, a replayable events stream, core NATS for the rest.
//!
//! Streams, one per family of durable subjects (see [`StreamFamily`]):
//! `<P>_TASKS`, `<P>_WORK` and `<P>_RESULTS` use work-queue retention (a message is removed
//! once acknowledged) and de-duplicate by `Nats-Msg-Id` (the envelope id); `<P>_EVENTS` and
//! `<P>_DEAD` keep messages by age, so monitors can replay them. Each queue has one durable
//! pull consumer shared by every process that consumes it, so each message is handled once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Triage, triage};
use crate::bus::{
    Acker, Bus, BusConfig, Confirmation, DeadLetter, DeadLetters, Deliveries, Delivery, Queue,
    QueueDepth, RawMessage, RawStream, Replier, Request, Requests, dead_letter_body,
};
use crate::envelope::{Body, Envelope};
use crate::error::{BusError, ProtocolError};
use crate::subjects::{StreamFamily, Subjects};

/// How long events stay replayable on the server.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long dead letters are kept for inspection.
const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a health check waits for the server to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The idle heartbeat of pull requests, by which a lost connection is noticed.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Pause after a consumer error before asking the server again.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// Consecutive consumer errors (missed heartbeats, mostly) after which the consumer is
/// looked up and pulled from anew: its server may be gone, or its leader moved.
const CONSUMER_ERRORS_BEFORE_RENEWAL: u32 = 3;
/// The pause before a consumer that could not be reached is tried again.
const CONSUMER_RETRY: Duration = Duration::from_secs(1);

/// Where a durable pull consumer's messages come from, to pull from it again.
struct PullSource {
    stream: jetstream::stream::Stream,
    config: pull::Config,
    batch: Option<usize>,
}

impl PullSource {
    /// The consumer (created where missing) and a fresh pull of its messages.
    async fn messages(&self) -> Result<pull::Stream, BusError> {
        let name = self.config.durable_name.clone().unwrap_or_default();
        let consumer = self
            .stream
            .get_or_create_consumer(&name, self.config.clone())
            .await
            .map_err(|e| BusError::unavailable("creating a consumer", e))?;
        let mut messages = consumer.stream().heartbeat(PULL_HEARTBEAT);
        if let Some(batch) = self.batch {
            messages = messages.max_messages_per_batch(batch);
        }
        messages
            .messages()
            .await
            .map_err(|e| BusError::unavailable("pulling messages", e))
    }
}

const FAMILIES: [StreamFamily; 5] = [
    StreamFamily::Tasks,
    StreamFamily::Work,
    StreamFamily::Results,
    StreamFamily::Events,
    StreamFamily::Dead,
];

/// A [`Bus`] on a NATS server with JetStream.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
}

/// How Orion proves itself to the NATS server, and how it checks the server: at most one of
/// user and password, token, or a credentials (`.creds`: JWT and nkey seed) file; TLS with a
/// CA, a client certificate, or both.
#[derive(Clone, Default)]
pub struct NatsSecurity {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds_file: Option<std::path::PathBuf>,
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    pub require_tls: bool,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecurity")
            .field("user", &self.user)
            .field("creds_file", &self.creds_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("require_tls", &self.require_tls)
            .finish_non_exhaustive()
    }
}

impl NatsSecurity {
    async fn options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        let refuse = |why: &str| {
            BusError::unavailable(
                "reading the NATS settings",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
            )
        };
        let ways = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(refuse(
                "give one of bus.user with bus.password, bus.token, or bus.creds_file",
            ));
        }
        let mut options = async_nats::ConnectOptions::new();
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            (None, None) => {}
            _ => return Err(refuse("bus.user and bus.password go together")),
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(file) = &self.creds_file {
            options = options
                .credentials_file(file)
                .await
                .map_err(|e| BusError::unavailable("reading bus.creds_file", e))?;
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err(refuse("bus.tls_cert_file and bus.tls_key_file go together")),
        }
        Ok(options.require_tls(self.require_tls))
    }
}

/// Answers one request on its reply subject.
struct NatsReplier {
    client: Arc<async_nats::Client>,
    subject: async_nats::Subject,
    limit: usize,
}

#[async_trait]
impl Replier for NatsReplier {
    async fn reply(self: Box<Self>, envelope: &Envelope) -> Result<(), BusError> {
        let payload = envelope.encode(self.limit)?;
        self.client
            .publish(self.subject, payload)
            .await
            .map_err(|e| BusError::unavailable("answering a request", e))
    }
}

impl NatsBus {
    /// Connects and makes sure every stream exists (creating them is idempotent).
    pub async fn connect(
        url: &str,
        subjects: Subjects,
        config: BusConfig,
    ) -> Result<Self, BusError> {
        Self::connect_with(url, subjects, config, &NatsSecurity::default()).await
    }

    /// Connects with credentials and TLS settings. `url` names one server, or several
    /// separated by commas (a cluster: the client fails over between them, and learns the
    /// others the servers announce).
    pub async fn connect_with(
        url: &str,
        subjects: Subjects,
        config: BusConfig,
        security: &NatsSecurity,
    ) -> Result<Self, BusError> {
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = security
            .options()
            .await?
            .name("orion")
            .connect(servers.as_slice())
            .await
            .map_err(|e| BusError::unavailable("connecting to NATS", e))?;
        let js = jetstream::new(client.clone());
        let bus = Self {
            client,
            js,
            subjects,
            config,
        };
        for family in FAMILIES {
            bus.ensure_stream(family).await?;
        }
        Ok(bus)
    }

    /// Creates `family`'s stream where it is missing; where it exists with another number of
    /// replicas, changes that (and only that) to the configured one.
    async fn ensure_stream(&self, family: StreamFamily) -> Result<(), BusError> {
        let wanted = self.stream_config(family);
        let mut stream = match self.js.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => stream,
            // Processes that start together (a gateway and its nodes) all find no stream and
            // all create it: the server may refuse the later ones ("subjects overlap with an
            // existing stream") while the first is being made. The stream is there for them
            // then, or soon.
            Err(refused) => {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                loop {
                    if let Ok(stream) = self.js.get_stream(&wanted.name).await {
                        break stream;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BusError::unavailable(
                            "creating a JetStream stream",
                            refused,
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::unavailable("reading a JetStream stream", e))?;
        if info.config.num_replicas != wanted.num_replicas {
            tracing::warn!(
                stream = %wanted.name,
                from = info.config.num_replicas,
                to = wanted.num_replicas,
                "the stream has another number of replicas than bus.replicas; changing it"
            );
            let mut changed = info.config.clone();
            changed.num_replicas = wanted.num_replicas;
            self.js
                .update_stream(changed)
                .await
                .map_err(|e| BusError::unavailable("changing a stream's replicas", e))?;
        }
        Ok(())
    }

    fn stream_config(&self, family: StreamFamily) -> stream::Config {
        let (retention, max_age) = match family {
            StreamFamily::Tasks | StreamFamily::Work | StreamFamily::Results => {
                (stream::RetentionPolicy::WorkQueue, Duration::ZERO)
            }
            StreamFamily::Events => (stream::RetentionPolicy::Limits, EVENTS_MAX_AGE),
            StreamFamily::Dead => (stream::RetentionPolicy::Limits, DEAD_MAX_AGE),
        };
        stream::Config {
            name: self.subjects.stream(family),
            subjects: vec![self.subjects.stream_subjects(family)],
            retention,
            max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas.max(1),
            ..Default::default()
        }
    }

    /// Deletes this prefix's streams and everything in them; for tests and tenant removal.
    pub async fn delete_streams(&self) -> Result<(), BusError> {
        for family in FAMILIES {
            self.js
                .delete_stream(self.subjects.stream(family))
                .await
                .map_err(|e| BusError::unavailable("deleting a JetStream stream", e))?;
        }
        Ok(())
    }

    /// The underlying client, for callers that need plain NATS (monitors in tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream stream of `family`.
    async fn stream(&self, family: StreamFamily) -> Result<jetstream::stream::Stream, BusError> {
        self.js
            .get_stream(self.subjects.stream(family))
            .await
            .map_err(|e| BusError::unavailable("looking up a stream", e))
    }

    /// The JetStream stream that holds `queue`.
    async fn stream_of(&self, queue: Queue) -> Result<jetstream::stream::Stream, BusError> {
        self.stream(family_of(queue)).await
    }

    /// The messages of the durable pull consumer `name` on `stream` (created where missing:
    /// explicit acks, the configured ack wait, no delivery limit of its own), `batch` at a
    /// time where given. The stream does not end while the process lives: a consumer error
    /// is logged and passed over, and where the server's side goes quiet or ends (its server
    /// was lost, its leader moved to another) the consumer is looked up and pulled from again.
    async fn pull(
        &self,
        stream: &jetstream::stream::Stream,
        name: &str,
        filter_subject: String,
        batch: Option<usize>,
    ) -> Result<futures_util::stream::BoxStream<'static, jetstream::Message>, BusError> {
        let source = PullSource {
            stream: stream.clone(),
            config: pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                max_deliver: -1,
                ..Default::default()
            },
            batch,
        };
        let first = source.messages().await?;
        let state = (source, Some(first), 0u32);
        Ok(futures_util::stream::unfold(
            state,
            |(source, mut messages, mut errors)| async move {
                loop {
                    let Some(current) = messages.as_mut() else {
                        match source.messages().await {
                            Ok(fresh) => messages = Some(fresh),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot pull from a consumer; trying again");
                                tokio::time::sleep(CONSUMER_RETRY).await;
                            }
                        }
                        continue;
                    };
                    match current.next().await {
                        Some(Ok(message)) => return Some((message, (source, messages, 0))),
                        Some(Err(e)) if errors + 1 < CONSUMER_ERRORS_BEFORE_RENEWAL => {
                            errors += 1;
                            tracing::warn!(error = %e, "consumer error; continuing");
                            tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                        }
                        ended => {
                            tracing::warn!(
                                consumer = source.config.durable_name.as_deref().unwrap_or_default(),
                                error = ?ended.and_then(Result::err).map(|e| e.to_string()),
                                "the consumer's messages stopped; pulling from it anew"
                            );
                            (messages, errors) = (None, 0);
                        }
                    }
                }
            },
        )
        .boxed())
    }

    async fn publish_durable(
        &self,
        subject: String,
        message_id: &str,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        self.send_durable(subject, message_id, payload, traceparent)
            .await?
            .await
    }

    /// Hands a message to JetStream; the future it returns is the server's acknowledgement.
    async fn send_durable(
        &self,
        subject: String,
        message_id: &str,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<Confirmation, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        if let Some(traceparent) = traceparent {
            headers.insert(TRACEPARENT, traceparent);
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| BusError::unavailable("publishing to JetStream", e))?;
        Ok(Box::pin(async move {
            ack.await
                .map(drop)
                .map_err(|e| BusError::unavailable("awaiting a JetStream acknowledgement", e))
        }))
    }
}

/// What a work queue holds: of the messages the stream stores under its subject, those its
/// consumer (where it has one) will still deliver (after its floor) or deliver again
/// (unacknowledged). A stored message below the consumer's floor is never delivered again: a
/// failover can leave one behind, acknowledged on a leader that was lost before the removal
/// reached the others. So either count at nothing means nothing more comes from the queue;
/// with no consumer yet, everything stored is still to come.
fn held_of(stored: u64, to_deliver: Option<u64>) -> u64 {
    to_deliver.map_or(stored, |n| stored.min(n))
}

/// The durable consumer the dead letters' followers (the coordinators) share.
const DEAD_LETTER_FOLLOWERS: &str = "dead-letter-followers";

/// The W3C trace-context header.
const TRACEPARENT: &str = "traceparent";

fn family_of(queue: Queue) -> StreamFamily {
    match queue {
        Queue::Coordinators => StreamFamily::Tasks,
        Queue::Work(..) => StreamFamily::Work,
        Queue::Results => StreamFamily::Results,
    }
}

struct NatsAcker {
    message: jetstream::Message,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        // Wait for the server to confirm: an effect that follows an ack must not be repeated
        // because the ack was lost on the way.
        self.message
            .double_ack()
            .await
            .map_err(|e| BusError::unavailable("acknowledging", e))
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| BusError::unavailable("rejecting", e))
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        // Confirmed by the server: a plain publish succeeds while the connection is down, and
        // a node must know when the bus may have given its message to another.
        self.message
            .double_ack_with(AckKind::Progress)
            .await
            .map_err(|e| BusError::unavailable("extending", e))
    }
}

#[async_trait]
impl Bus for NatsBus {
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
        self.publish_durable(
            queue.subject(&self.subjects),
            message_id,
            payload,
            traceparent,
        )
        .await
    }

    async fn consume(&self, queue: Queue) -> Result<Deliveries, BusError> {
        let stream = self.stream_of(queue).await?;
        if let Queue::Work(agent, _) = queue {
            // Before priorities had consumers of their own, one consumer took all of a pool's
            // work; its filter would overlap theirs, which a work-queue stream refuses. The
            // messages stay in the stream for the new consumers.
            let _ = stream.delete_consumer(&format!("agents-{agent}")).await;
        }
        // Redelivery is bounded by `triage`, which dead-letters with a reason.
        let messages = self
            .pull(
                &stream,
                &queue.consumer_name(),
                queue.filter(&self.subjects),
                Some(self.config.prefetch.max(1)),
            )
            .await?;
        let bus = self.clone();
        Ok(messages
            .filter_map(move |message| {
                let bus = bus.clone();
                async move {
                    let attempt = message
                        .info()
                        .map(|i| i.delivered.max(1) as u32)
                        .unwrap_or(1);
                    match triage(&message.payload, attempt, &bus.config) {
                        Triage::Deliver(mut envelope) => {
                            envelope.traceparent = message
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(TRACEPARENT))
                                .map(|v| v.to_string());
                            Some(Delivery::new(
                                *envelope,
                                attempt,
                                Box::new(NatsAcker { message }),
                            ))
                        }
                        Triage::Dead(reason) => {
                            bus.dead_letter(&message, &reason, attempt).await;
                            None
                        }
                    }
                }
            })
            .boxed())
    }

    async fn follow_dead_letters(&self) -> Result<DeadLetters, BusError> {
        let stream = self.stream(StreamFamily::Dead).await?;
        let messages = self
            .pull(
                &stream,
                DEAD_LETTER_FOLLOWERS,
                self.subjects.dead_all(),
                None,
            )
            .await?;
        Ok(messages
            .map(|message| {
                DeadLetter::new(
                    message.subject.to_string(),
                    message.payload.clone(),
                    Box::new(NatsAcker { message }),
                )
            })
            .boxed())
    }

    async fn publish_event(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.send_event(envelope).await?.await
    }

    async fn send_event(&self, envelope: &Envelope) -> Result<Confirmation, BusError> {
        let Body::Event(event) = &envelope.body else {
            return Err(ProtocolError::Malformed("publish_event takes a task.event".into()).into());
        };
        let subject = self.subjects.event(event.task_id, event.event_type);
        let payload = envelope.encode(self.config.max_message_bytes)?;
        self.send_durable(
            subject,
            &envelope.id.to_string(),
            payload,
            envelope.traceparent.as_deref(),
        )
        .await
    }

    async fn publish(&self, subject: &str, envelope: &Envelope) -> Result<(), BusError> {
        let payload = envelope.encode(self.config.max_message_bytes)?;
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| BusError::unavailable("publishing", e))
    }

    async fn subscribe_raw(&self, pattern: &str) -> Result<RawStream, BusError> {
        let subscriber = self
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| BusError::unavailable("subscribing", e))?;
        // Make sure the server has registered the interest before the caller relies on it.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::unavailable("subscribing", e))?;
        Ok(subscriber
            .map(|m| RawMessage {
                subject: m.subject.to_string(),
                payload: m.payload,
            })
            .boxed())
    }

    async fn queue_depth(&self, queue: Queue) -> Result<QueueDepth, BusError> {
        let stream = self.stream_of(queue).await?;
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&queue.consumer_name())
            .await
            .map_err(|e| BusError::unavailable("looking up a consumer", e))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| BusError::unavailable("reading a consumer's state", e))?;
        Ok(QueueDepth {
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
        })
    }

    async fn held(&self, queue: Queue) -> Result<u64, BusError> {
        // Work-queue retention: a message stays in the stream until it is acknowledged.
        let stream = self.stream_of(queue).await?;
        let mut subjects = stream
            .info_with_subjects(queue.subject(&self.subjects))
            .await
            .map_err(|e| BusError::unavailable("reading a stream's subjects", e))?;
        let mut stored = 0;
        while let Some(entry) = subjects.next().await {
            let (_, count) =
                entry.map_err(|e| BusError::unavailable("reading a stream's subjects", e))?;
            stored += count as u64;
        }
        if stored == 0 {
            return Ok(0);
        }
        match stream.consumer_info(queue.consumer_name()).await {
            Ok(info) => Ok(held_of(
                stored,
                Some(info.num_pending + info.num_ack_pending as u64),
            )),
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                Ok(held_of(stored, None))
            }
            Err(e) => Err(BusError::unavailable("reading a consumer's state", e)),
        }
    }

    async fn request(
        &self,
        subject: &str,
        envelope: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, BusError> {
        use async_nats::client::RequestErrorKind;
        let limit = self.config.max_message_bytes;
        let payload = envelope.encode(limit)?;
        let timed_out = || BusError::Timeout {
            subject: subject.to_owned(),
            after: timeout,
        };
        // One timer: this one, over the whole request (the client's own is turned off).
        let request = self.client.send_request(
            subject.to_owned(),
            async_nats::Request::new().payload(payload).timeout(None),
        );
        let answer = match tokio::time::timeout(timeout, request).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_owned()),
                    RequestErrorKind::TimedOut => timed_out(),
                    _ => BusError::unavailable("sending a request", e),
                });
            }
            Ok(Ok(answer)) => answer,
        };
        Ok(Envelope::decode(&answer.payload, limit)?)
    }

    async fn serve(&self, subject: &str, group: &str) -> Result<Requests, BusError> {
        let limit = self.config.max_message_bytes;
        // One handle shared by every replier (a client clone is several reference counts).
        let client = Arc::new(self.client.clone());
        let requests = self
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(|e| BusError::unavailable("serving requests", e))?;
        Ok(requests
            .filter_map(move |message| {
                let client = client.clone();
                async move {
                    let reply = message.reply?;
                    match Envelope::decode(&message.payload, limit) {
                        Ok(envelope) => Some(Request {
                            envelope,
                            reply: Box::new(NatsReplier {
                                client,
                                subject: reply,
                                limit,
                            }) as Box<dyn Replier>,
                        }),
                        Err(e) => {
                            tracing::warn!(subject = %message.subject, error = %e, "skipping an undecodable request");
                            None
                        }
                    }
                }
            })
            .boxed())
    }

    async fn check(&self) -> Result<(), BusError> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::unavailable("checking the NATS connection", e)),
            Err(elapsed) => Err(BusError::unavailable(
                "checking the NATS connection",
                elapsed,
            )),
        }
    }
}

impl NatsBus {
    /// Publishes a dead letter and terminates the original; if the dead letter cannot be
    /// written the original is left unacknowledged, so it is not lost.
    async fn dead_letter(&self, message: &jetstream::Message, reason: &str, attempt: u32) {
        let subject = message.subject.to_string();
        tracing::warn!(%subject, %reason, "dead-lettering a message");
        let body = dead_letter_body(reason, &subject, attempt, &message.payload);
        let id = format!(
            "dead-{subject}-{}",
            message.info().map(|i| i.stream_sequence).unwrap_or(0)
        );
        match self
            .publish_durable(self.subjects.dead(&subject), &id, body, None)
            .await
        {
            Ok(()) => {
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "could not terminate a dead-lettered message");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write a dead letter; leaving the message for redelivery")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::held_of;

    /// nats-server 2.9 offers no way to leave a stored message below a work queue consumer's
    /// floor on purpose (such a consumer must deliver all, and a message it gives up on is
    /// removed or stays unacknowledged), so the rule is shown on the counts.
    #[test]
    fn a_queue_holds_what_its_consumer_will_still_deliver() {
        assert_eq!(held_of(0, None), 0);
        assert_eq!(held_of(3, None), 3, "no consumer yet: all of it is to come");
        assert_eq!(held_of(3, Some(3)), 3);
        assert_eq!(
            held_of(1, Some(0)),
            0,
            "stored below the floor: never delivered"
        );
        assert_eq!(
            held_of(0, Some(2)),
            0,
            "counted by the consumer, stored nowhere"
        );
    }
}
