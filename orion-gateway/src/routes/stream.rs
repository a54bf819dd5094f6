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
    let (response, session, incoming) =
        actix_ws::handle(&req, payload).map_err(|e| ApiError::InvalidParameter {
            name: "upgrade".into(),
            reason: e.to_string(),
        })?;
    let (store, access) = (state.tasks.clone(), state.access.clone());
    let incoming = incoming.max_frame_size(state.config.streams.ws_max_frame_bytes);
    let live = buffered(live, state.config.streams.ws_buffer_events);
    let limits = Limits {
        caller: caller.into_inner(),
        access,
        max_replay: config.streams.ws_max_replay,
        recheck: Duration::from_secs(config.streams.ws_recheck_secs.max(1)),
    };
    actix_web::rt::spawn(async move {
        serve(
            session,
            incoming,
            live,
            store,
            Filter { task, types },
            params.since,
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
    max_replay: usize,
    recheck: Duration,
}

/// Live events, at most `capacity` of them waiting for a slow client; `None` from the
/// receiver with the flag set means the client fell that far behind.
struct Live {
    events: tokio::sync::mpsc::Receiver<TaskEvent>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn buffered(mut live: EnvelopeStream, capacity: usize) -> Live {
    use std::sync::atomic::Ordering;
    let (tx, events) = tokio::sync::mpsc::channel(capacity.max(1));
    let overflowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = overflowed.clone();
    actix_web::rt::spawn(async move {
        while let Some((_, envelope)) = live.next().await {
            let Body::Event(event) = envelope.body else {
                continue;
            };
            match tx.try_send(event) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    Live { events, overflowed }
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

/// Sends the events after `cursor` that the filter admits, in `seq` order, reading at most
/// `max` from the store, and moves `cursor` to the last one read.
async fn replay(
    session: &mut Session,
    store: &dyn TaskStore,
    filter: &Filter,
    cursor: &mut i64,
    max: usize,
) -> Result<(), End> {
    // Every stored event read counts, sent or filtered out: a filter that admits little
    // does not make a replay read the whole log.
    let mut read = 0usize;
    loop {
        let batch = store
            .events(filter.task, *cursor, REPLAY_BATCH)
            .await
            .map_err(|e| End::StoreFailed(e.to_string()))?;
        if batch.is_empty() {
            return Ok(());
        }
        for event in &batch {
            if read == max {
                return Err(End::ReplayLimit(*cursor));
            }
            read += 1;
            if filter.admits(event) {
                send(session, event).await?;
            }
            *cursor = event.seq;
        }
    }
}

/// Sends what the log has after `cursor` (see [`replay`]); a store that fails is read again
/// at the next event or tick, the stream staying open.
async fn catch_up(
    session: &mut Session,
    store: &dyn TaskStore,
    filter: &Filter,
    cursor: &mut i64,
) -> Result<(), End> {
    match replay(session, store, filter, cursor, usize::MAX).await {
        Err(End::StoreFailed(why)) => {
            tracing::warn!(%why, cursor = *cursor, "an event stream cannot read the log now");
            Ok(())
        }
        other => other,
    }
}

async fn serve(
    mut session: Session,
    mut incoming: actix_ws::MessageStream,
    mut live: Live,
    store: std::sync::Arc<dyn TaskStore>,
    filter: Filter,
    since: Option<i64>,
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
        let mut cursor = match since {
            Some(since) => since,
            None => store
                .last_event_seq()
                .await
                .map_err(|e| End::StoreFailed(e.to_string()))?,
        };
        if since.is_some() {
            replay(&mut session, store.as_ref(), &filter, &mut cursor, limits.max_replay).await?;
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut unasked = tokio::time::interval(CATCH_UP_INTERVAL);
        let mut recheck = tokio::time::interval(limits.recheck);
        loop {
            tokio::select! {
                () = &mut expired => return Err(End::CredentialEnded),
                _ = recheck.tick() => {
                    // A credential that cannot be checked (the store is down) is not trusted.
                    if !limits.caller.still_valid(limits.access.as_ref()).await.unwrap_or(false) {
                        return Err(End::CredentialEnded);
                    }
                }
                next = live.events.recv() => {
                    let Some(event) = next else {
                        return Err(if live.overflowed.load(std::sync::atomic::Ordering::SeqCst) {
                            End::TooSlow
                        } else {
                            End::Failed("event subscription ended".into())
                        });
                    };
                    if event.seq > cursor {
                        catch_up(&mut session, store.as_ref(), &filter, &mut cursor).await?;
                    }
                }
                _ = unasked.tick() => {
                    catch_up(&mut session, store.as_ref(), &filter, &mut cursor).await?;
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

    fn events(n: usize) -> EnvelopeStream {
        let task = TaskId::new();
        let items: Vec<(String, Envelope)> = (0..n)
            .map(|seq| {
                let event = TaskEvent {
                    seq: seq as i64,
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
    async fn a_subscriber_that_falls_too_far_behind_is_told_so_and_one_that_keeps_up_is_not() {
        // Nobody reads while 10 events arrive for a buffer of 4: the buffer keeps 4, then the
        // stream ends with the overflow flag set.
        let mut slow = buffered(events(10), 4);
        let mut kept = 0;
        while tokio::time::timeout(Duration::from_secs(5), slow.events.recv())
            .await
            .expect("the buffer drains")
            .is_some()
        {
            kept += 1;
        }
        assert_eq!(kept, 4);
        assert!(slow.overflowed.load(std::sync::atomic::Ordering::SeqCst));

        // Within the buffer: every event, and no overflow.
        let mut fine = buffered(events(4), 4);
        let mut seen = Vec::new();
        while let Some(event) = fine.events.recv().await {
            seen.push(event.seq);
        }
        assert_eq!(seen, [0, 1, 2, 3]);
        assert!(!fine.overflowed.load(std::sync::atomic::Ordering::SeqCst));
    }
}
