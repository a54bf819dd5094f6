//! `GET /v1/stream`: task events over a WebSocket.
//!
//! Query: `task` (one task's events only), `types` (comma-separated event types), `since`
//! (an event `seq`: events after it are replayed from the store before live ones follow).
//!
//! The store's event log is the source: a stream sends the events after its cursor (`since`,
//! or the log's last `seq` when the stream opened) in `seq` order, each once, and moves its
//! cursor to the last one read. An event on the bus only wakes the stream to read the log
//! after its cursor (every few seconds it reads unasked, for an event whose publication was
//! lost). The log's `seq` is in commit order, so an event read later never has a smaller
//! `seq` than one sent: a client that resumes with `since` set to the last `seq` it received,
//! from this gateway or another, misses nothing and receives nothing twice. The live
//! subscription is opened before the cursor is read, so nothing committed after it goes
//! unannounced. A client that cannot keep up is closed with code 1008 ("slow consumer").
//!
//! Limits: a caller may hold `server.ws_max_per_caller` streams and the gateway
//! `server.ws_max` (beyond them: 429 `too_many_streams`); one connection reads at most
//! `server.ws_max_replay` stored events for its replay, then closes (1008) saying the `since`
//! to resume from; a stream ends (1008) when its caller's token expires, and when its API key is revoked
//! or expires (checked every `server.ws_recheck_secs`).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use futures_util::StreamExt;
use orion_bus::{Body, EnvelopeStream, EventType, TaskEvent, TaskId};
use orion_services::store::{AccessStore, TaskStore};
use serde::Deserialize;

use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// The event streams open now: in all, and by caller.
#[derive(Debug, Default)]
pub struct StreamCounts {
    open: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// One open stream, counted until it is dropped.
struct StreamSlot {
    counts: std::sync::Arc<StreamCounts>,
    caller: String,
}

impl StreamCounts {
    /// Counts a stream of `caller`'s, or refuses it when either limit is reached.
    fn open(
        self: &std::sync::Arc<Self>,
        caller: &str,
        per_caller: usize,
        total: usize,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("not poisoned");
        let mine = open.1.get(caller).copied().unwrap_or(0);
        if mine >= per_caller {
            return Err(ApiError::TooManyStreams {
                open: mine,
                limit: per_caller,
                scope: "for this caller",
            });
        }
        if open.0 >= total {
            return Err(ApiError::TooManyStreams {
                open: open.0,
                limit: total,
                scope: "on this gateway",
            });
        }
        open.0 += 1;
        *open.1.entry(caller.to_owned()).or_default() += 1;
        Ok(StreamSlot {
            counts: self.clone(),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("not poisoned");
        open.0 = open.0.saturating_sub(1);
        if let Some(mine) = open.1.get_mut(&self.caller) {
            *mine -= 1;
            if *mine == 0 {
                open.1.remove(&self.caller);
            }
        }
    }
}

/// A send that takes longer than this marks the client as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server pings an idle client.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Events read from the store per replay query.
const REPLAY_BATCH: u64 = 500;
/// How often a stream reads the log unasked (for an event whose publication was lost).
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    task: Option<String>,
    since: Option<i64>,
    types: Option<String>,
}

struct Filter {
    task: Option<TaskId>,
    types: Option<Vec<EventType>>,
}

impl Filter {
    fn admits(&self, event: &TaskEvent) -> bool {
        self.task.is_none_or(|t| t == event.task_id)
            && self
                .types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
    }
}

pub async fn connect(
    req: HttpRequest,
    payload: web::Payload,
    params: web::Query<StreamParams>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let task = params
        .task
        .as_deref()
        .map(|t| {
            t.parse::<TaskId>()
                .map_err(|_| ApiError::InvalidTaskId(t.to_owned()))
        })
        .transpose()?;
    let types = params
        .types
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|t| t.trim().parse::<EventType>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::InvalidParameter {
                    name: "types".into(),
                    reason: e.to_string(),
                })
        })
        .transpose()?;
    let config = &state.config;
    let slot = state.streams.open(
        &caller.subject,
        config.streams.ws_max_per_caller,
        config.streams.ws_max,
    )?;
    let bus = state.lifecycle.bus();
    let pattern = match task {
        Some(t) => bus.subjects().events_of(t),
        None => bus.subjects().events_all(),
    };
    let live = bus.subscribe(&pattern).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot subscribe to events");
        ApiError::Unavailable("message bus")
    })?;
    // The log's last event, read once subscribed and before the client may act: what is
    // committed after it is announced on the subscription, and a stream without `since`
    // starts from it.
    let last = state.tasks.last_event_seq().await?;
    if let Some(since) = params.since
        && since > last
    {
        return Err(ApiError::InvalidParameter {
            name: "since".into(),
            reason: format!(
                "{since} is past the last event of this deployment's log ({last}): a cursor of another deployment, or of a log restored from before it"
            ),
        });
    }
    let (response, session, incoming) =
        actix_ws::handle(&req, payload).map_err(|e| ApiError::InvalidParameter {
            name: "upgrade".into(),
            reason: e.to_string(),
        })?;
    let (store, access) = (state.tasks.clone(), state.access.clone());
    let incoming = incoming.max_frame_size(state.config.streams.ws_max_frame_bytes);
    let limits = Limits {
        caller: caller.into_inner(),
        access,
        max_replay: config.streams.ws_max_replay,
        at_once: config.streams.ws_buffer_events.max(1),
        recheck: Duration::from_secs(config.streams.ws_recheck_secs.max(1)),
    };
    let start = match params.since {
        Some(since) => Start::Replay(since),
        None => Start::After(last),
    };
    actix_web::rt::spawn(async move {
        serve(
            session,
            incoming,
            announced(live),
            store,
            Filter { task, types },
            start,
            limits,
        )
        .await;
        drop(slot);
    });
    Ok(response)
}

/// What bounds one connection.
struct Limits {
    caller: Principal,
    /// Where the caller's credential is checked again.
    access: std::sync::Arc<dyn AccessStore>,
    /// Events read from the log for the replay of `since`, before the stream closes.
    max_replay: usize,
    /// Events read from the log at once while live, before the stream looks at its client and
    /// credential again (and then reads on).
    at_once: usize,
    recheck: Duration,
}

/// Where a stream's cursor starts.
enum Start {
    /// After the client's `since`: the log from there is replayed first.
    Replay(i64),
    /// After the log's last event when the stream opened.
    After(i64),
}

/// The highest `seq` the bus has announced so far; the sender goes when the subscription ends.
fn announced(mut live: EnvelopeStream) -> tokio::sync::watch::Receiver<i64> {
    let (tx, rx) = tokio::sync::watch::channel(i64::MIN);
    actix_web::rt::spawn(async move {
        loop {
            // The stream's end drops the subscription at once, not at the next event (a task's
            // stream may never see another).
            let next = tokio::select! {
                () = tx.closed() => return,
                next = live.next() => next,
            };
            let Some((_, envelope)) = next else {
                return;
            };
            let Body::Event(event) = envelope.body else {
                continue;
            };
            tx.send_if_modified(|highest| {
                let newer = event.seq > *highest;
                if newer {
                    *highest = event.seq;
                }
                newer
            });
        }
    });
    rx
}

/// Why a session ended.
enum End {
    ClientGone,
    FrameTooLarge,
    TooSlow,
    /// The replay reached the limit; the client resumes after this `seq`.
    ReplayLimit(i64),
    /// The caller's token expired, or its API key was revoked or expired.
    CredentialEnded,
    /// The store could not be read.
    StoreFailed(String),
    Failed(String),
}

async fn send(session: &mut Session, event: &TaskEvent) -> Result<(), End> {
    let text = serde_json::to_string(event).map_err(|e| End::Failed(e.to_string()))?;
    match tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientGone),
        Err(_) => Err(End::TooSlow),
    }
}

/// What a read of the log does once it has read its most.
#[derive(Clone, Copy)]
enum AtMost {
    /// Closes the stream, saying where to resume (the replay of `since`).
    Close(usize),
    /// Stops, to read on later (live).
    Pause(usize),
}

/// Sends the events after `cursor` that the filter admits, in `seq` order, and moves `cursor`
/// to the last one read; whether it stopped at its most with more to read.
async fn replay(
    session: &mut Session,
    store: &dyn TaskStore,
    filter: &Filter,
    cursor: &mut i64,
    at_most: AtMost,
) -> Result<bool, End> {
    // Every stored event read counts, sent or filtered out: a filter that admits little
    // does not make a replay read the whole log. A query asks for one more than may still be
    // read, to tell "more" from "all".
    let max = match at_most {
        AtMost::Close(max) | AtMost::Pause(max) => max,
    };
    let mut read = 0usize;
    loop {
        let limit = REPLAY_BATCH.min((max - read).saturating_add(1) as u64);
        let batch = store
            .events(filter.task, *cursor, limit)
            .await
            .map_err(|e| End::StoreFailed(e.to_string()))?;
        for event in &batch {
            if read == max {
                return match at_most {
                    AtMost::Close(_) => Err(End::ReplayLimit(*cursor)),
                    AtMost::Pause(_) => Ok(true),
                };
            }
            read += 1;
            if filter.admits(event) {
                send(session, event).await?;
            }
            *cursor = event.seq;
        }
        if (batch.len() as u64) < limit {
            return Ok(false);
        }
    }
}

/// Sends what the log has after `cursor`, at most `at_once` events (see [`replay`]); whether
/// more are left. A store that fails is read again at the next event or tick, the stream
/// staying open.
async fn catch_up(
    session: &mut Session,
    store: &dyn TaskStore,
    filter: &Filter,
    cursor: &mut i64,
    at_once: usize,
) -> Result<bool, End> {
    match replay(session, store, filter, cursor, AtMost::Pause(at_once)).await {
        Err(End::StoreFailed(why)) => {
            tracing::warn!(%why, cursor = *cursor, "an event stream cannot read the log now");
            Ok(false)
        }
        other => other,
    }
}

async fn serve(
    mut session: Session,
    mut incoming: actix_ws::MessageStream,
    mut announced: tokio::sync::watch::Receiver<i64>,
    store: std::sync::Arc<dyn TaskStore>,
    filter: Filter,
    start: Start,
    limits: Limits,
) {
    let _subscribed = orion_services::metrics::ws_subscriber();
    let result: Result<(), End> = async {
        // The credential's end, if it has one, ends the stream on time.
        let expiry = limits.caller.expires_at.map(|at| {
            let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let expired = async move {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let store = store.as_ref();
        let mut cursor = match start {
            Start::Replay(since) => {
                let mut cursor = since;
                replay(&mut session, store, &filter, &mut cursor, AtMost::Close(limits.max_replay)).await?;
                cursor
            }
            Start::After(last) => last,
        };
        // The last read stopped at its most: the stream reads on when nothing else is due.
        let mut behind = false;
        // A tick missed while the stream was busy sending is not made up in a burst.
        let interval = |period| {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        };
        let mut ping = interval(PING_INTERVAL);
        let mut unasked = interval(CATCH_UP_INTERVAL);
        let mut recheck = interval(limits.recheck);
        loop {
            tokio::select! {
                () = &mut expired => return Err(End::CredentialEnded),
                _ = recheck.tick() => {
                    // A credential that cannot be checked (the store is down) is not trusted.
                    if !limits.caller.still_valid(limits.access.as_ref()).await.unwrap_or(false) {
                        return Err(End::CredentialEnded);
                    }
                }
                changed = announced.changed() => {
                    if changed.is_err() {
                        return Err(End::Failed("event subscription ended".into()));
                    }
                    if *announced.borrow_and_update() > cursor {
                        behind = catch_up(&mut session, store, &filter, &mut cursor, limits.at_once).await?;
                    }
                }
                _ = unasked.tick() => {
                    behind = catch_up(&mut session, store, &filter, &mut cursor, limits.at_once).await?;
                }
                () = std::future::ready(()), if behind => {
                    behind = catch_up(&mut session, store, &filter, &mut cursor, limits.at_once).await?;
                }
                message = incoming.next() => match message {
                    Some(Ok(Message::Ping(bytes))) => session.pong(&bytes).await.map_err(|_| End::ClientGone)?,
                    Some(Err(actix_ws::ProtocolError::Overflow)) => return Err(End::FrameTooLarge),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(End::ClientGone),
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => session.ping(b"").await.map_err(|_| End::ClientGone)?,
            }
        }
    }
    .await;
    let reason = match result {
        Ok(()) | Err(End::ClientGone) => None,
        Err(End::FrameTooLarge) => Some(CloseReason {
            code: CloseCode::Size,
            description: Some("frame too large".into()),
        }),
        Err(End::TooSlow) => Some(CloseReason {
            code: CloseCode::Policy,
            description: Some("slow consumer".into()),
        }),
        Err(End::ReplayLimit(last)) => Some(CloseReason {
            code: CloseCode::Policy,
            description: Some(format!("replay limit reached: resume with since={last}")),
        }),
        Err(End::CredentialEnded) => Some(CloseReason {
            code: CloseCode::Policy,
            description: Some("credential expired or revoked".into()),
        }),
        Err(End::Failed(why) | End::StoreFailed(why)) => {
            tracing::warn!(%why, "closing an event stream");
            Some(CloseReason {
                code: CloseCode::Error,
                description: Some("stream failed".into()),
            })
        }
    };
    let _ = session.close(reason).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use orion_bus::{Envelope, EventType, TaskId};

    fn events(seqs: &[i64]) -> EnvelopeStream {
        let task = TaskId::new();
        let items: Vec<(String, Envelope)> = seqs
            .iter()
            .map(|seq| {
                let event = TaskEvent {
                    seq: *seq,
                    task_id: task,
                    event_type: EventType::Progress,
                    status: None,
                    data: serde_json::Value::Null,
                    node: None,
                    at: chrono::Utc::now(),
                };
                ("s".to_owned(), Envelope::new("n", Body::Event(event)))
            })
            .collect();
        futures_util::stream::iter(items).boxed()
    }

    #[actix_web::test]
    async fn the_bus_only_announces_the_highest_seq_so_a_slow_reader_is_never_behind_a_buffer() {
        // Many events while nobody reads, a copy of an older one among them: the reader sees
        // the highest seq, whenever it looks, then the end of the subscription.
        let seqs: Vec<i64> = (1..=5000).chain([17]).collect();
        let mut announced = announced(events(&seqs));
        let mut last = i64::MIN;
        while announced.changed().await.is_ok() {
            let seen = *announced.borrow_and_update();
            assert!(seen > last, "the announced seq only grows");
            last = seen;
        }
        assert_eq!(*announced.borrow(), 5000);
    }
}
