//! `GET /v1/stream`: task events over a WebSocket.
//!
//! Query: `task` (one task's events only), `types` (comma-separated event types), `since`
//! (an event `seq`: events after it are replayed from the store before live ones follow).
//! The live subscription is opened before the replay is read, and live events at or below
//! the last replayed `seq` are skipped, so nothing falls between replay and live and nothing
//! is sent twice. A client that cannot keep up is closed with code 1008 ("slow consumer").

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use futures_util::StreamExt;
use orion_bus::{Body, EnvelopeStream, EventType, TaskEvent, TaskId};
use orion_services::store::Store;
use serde::Deserialize;

use crate::error::ApiError;
use crate::startup::AppState;

/// A send that takes longer than this marks the client as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server pings an idle client.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Events read from the store per replay query.
const REPLAY_BATCH: u64 = 500;

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
    let store = state.lifecycle.store().clone();
    let incoming = incoming.max_frame_size(state.config.ws_max_frame_bytes);
    let live = buffered(live, state.config.ws_buffer_events);
    actix_web::rt::spawn(serve(
        session,
        incoming,
        live,
        store,
        Filter { task, types },
        params.since,
    ));
    Ok(response)
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

async fn replay(
    session: &mut Session,
    store: &dyn Store,
    filter: &Filter,
    since: i64,
) -> Result<i64, End> {
    let mut last = since;
    loop {
        let batch = store
            .events(filter.task, last, REPLAY_BATCH)
            .await
            .map_err(|e| End::Failed(e.to_string()))?;
        let Some(tail) = batch.last() else {
            return Ok(last);
        };
        last = tail.seq;
        for event in batch.iter().filter(|e| filter.admits(e)) {
            send(session, event).await?;
        }
    }
}

async fn serve(
    mut session: Session,
    mut incoming: actix_ws::MessageStream,
    mut live: Live,
    store: std::sync::Arc<dyn Store>,
    filter: Filter,
    since: Option<i64>,
) {
    let _subscribed = orion_services::metrics::ws_subscriber();
    let result: Result<(), End> = async {
        let replayed_up_to = match since {
            Some(since) => replay(&mut session, store.as_ref(), &filter, since).await?,
            None => i64::MIN,
        };
        let mut ping = tokio::time::interval(PING_INTERVAL);
        loop {
            tokio::select! {
                next = live.events.recv() => {
                    let Some(event) = next else {
                        return Err(if live.overflowed.load(std::sync::atomic::Ordering::SeqCst) {
                            End::TooSlow
                        } else {
                            End::Failed("event subscription ended".into())
                        });
                    };
                    if event.seq > replayed_up_to && filter.admits(&event) {
                        send(&mut session, &event).await?;
                    }
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
        Err(End::Failed(why)) => {
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
