//! The WebSocket event stream end to end, in embedded mode.

use std::time::Duration;

use awc::ws::Frame;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TestApp, fixture_repo};

pub(crate) type Frames = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

async fn open(app: &TestApp, query: &str) -> Frames {
    let url = format!("{}/v1/stream{query}", app.base.replacen("http", "ws", 1));
    let (_, frames) = app
        .client
        .ws(url)
        .connect()
        .await
        .expect("WebSocket upgrade");
    frames
}

/// The next event on the stream (pings and pongs are skipped).
async fn next_event(frames: &mut Frames) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), frames.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("a valid frame");
        match frame {
            Frame::Text(text) => return serde_json::from_slice(&text).expect("events are JSON"),
            Frame::Close(reason) => panic!("stream closed: {reason:?}"),
            _ => {}
        }
    }
}

/// Events of `task` until its `last` event type, in order.
async fn events_until(frames: &mut Frames, task: &str, last: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(frames).await;
        if event["task_id"] == task {
            let done = event["type"] == last;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A live stream opened before an analysis of a fixture repository: the stream, the task's id
/// and its events up to `completed`.
async fn live_analysis(app: &TestApp) -> (Frames, String, Vec<Value>) {
    let repo = fixture_repo();
    let mut frames = open(app, "").await;
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    let events = events_until(&mut frames, &id, "completed").await;
    (frames, id, events)
}

#[actix_rt::test]
async fn live_events_arrive_as_the_task_moves() {
    let app = TestApp::spawn().await;
    let (_, _, events) = live_analysis(&app).await;
    assert_eq!(
        types(&events),
        ["queued", "assigned", "running", "completed"]
    );
    assert_eq!(events[3]["status"], "completed");
}

#[actix_rt::test]
async fn a_client_resumes_from_a_cursor_with_replay_from_the_store() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    app.wait_for(&id, "completed").await;
    let (_, log) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let log = log["items"].as_array().unwrap().clone();

    // From the start: the whole story, replayed.
    let mut from_start = open(&app, &format!("?task={id}&since=0")).await;
    assert_eq!(events_until(&mut from_start, &id, "completed").await, log);

    // From the `assigned` event on: only what came after it.
    let cursor = log[1]["seq"].as_i64().unwrap();
    let mut resumed = open(&app, &format!("?task={id}&since={cursor}")).await;
    assert_eq!(
        events_until(&mut resumed, &id, "completed").await,
        log[2..].to_vec()
    );

    // Replay hands over to live events without a gap: a new task's events follow.
    let second = app.submit(json!({ "kind": "ci", "repo": "/x" })).await;
    let mut everything = open(&app, &format!("?since={cursor}&types=queued,failed")).await;
    let replayed_and_live = events_until(&mut everything, &second, "failed").await;
    assert_eq!(types(&replayed_and_live), ["queued", "failed"]);
}

#[actix_rt::test]
async fn a_bad_filter_is_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/stream?task=nope", app.base.replacen("http", "ws", 1));
    let err = app.client.ws(url).connect().await.err().expect("refused");
    assert!(
        matches!(err, awc::error::WsClientError::InvalidResponseStatus(s) if s.as_u16() == 400),
        "{err:?}"
    );
    let (status, problem) = app.get("/v1/stream?types=queued,exploded").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    // A cursor past the log's end (another deployment's, or one from before a restore) would
    // skip the events that take its place: refused, saying where the log ends.
    app.submit(json!({ "kind": "ci", "repo": "/x" })).await;
    let (status, problem) = app.get("/v1/stream?since=1000000").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("past the last event"),
        "{problem}"
    );
}

/// The bus carries an event at least once (a publication that failed is made again as a
/// message of its own): copies of an event, as its `seq` names it, reach a client once.
#[actix_rt::test]
async fn copies_of_an_event_on_the_bus_reach_a_client_once() {
    let app = TestApp::spawn().await;
    let (mut frames, id, events) = live_analysis(&app).await;
    let completed: orion_bus::TaskEvent = serde_json::from_value(events[3].clone()).unwrap();
    let lifecycle = &app.services.lifecycle;
    for _ in 0..2 {
        let copy = orion_bus::Envelope::new("a-retry", orion_bus::Body::Event(completed.clone()));
        lifecycle.bus().publish_event(&copy).await.unwrap();
    }
    // A new event after the copies: what arrives before it is what the copies made.
    let task_id: orion_bus::TaskId = id.parse().unwrap();
    let note = lifecycle
        .note(task_id, json!({ "after": "the copies" }))
        .await
        .unwrap();
    let next = next_event(&mut frames).await;
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_i64()),
        (Some("progress"), Some(note.seq)),
        "a copy of `completed` reached the client again: {next}"
    );
}

/// The log is the stream's source, the bus only its wake-up: an event stored but never
/// published (its publication lost) reaches the client all the same, before a later one that
/// was published, in `seq` order.
#[actix_rt::test]
async fn an_event_whose_publication_was_lost_reaches_the_client_in_order() {
    let app = TestApp::spawn().await;
    let (mut frames, id, _) = live_analysis(&app).await;
    let task_id: orion_bus::TaskId = id.parse().unwrap();
    let lifecycle = &app.services.lifecycle;
    let unpublished = lifecycle
        .store()
        .append_event(
            task_id,
            orion_bus::EventType::Progress,
            json!({ "published": false }),
            None,
        )
        .await
        .unwrap();
    let published = lifecycle
        .note(task_id, json!({ "published": true }))
        .await
        .unwrap();
    let (a, b) = (next_event(&mut frames).await, next_event(&mut frames).await);
    assert_eq!(
        (a["seq"].as_i64(), b["seq"].as_i64()),
        (Some(unpublished.seq), Some(published.seq))
    );
    assert_eq!(a["data"]["published"], false);
    // The last event unpublished, nothing after it to wake the stream: the stream reads the
    // log unasked and sends it all the same.
    let last = lifecycle
        .store()
        .append_event(
            task_id,
            orion_bus::EventType::Progress,
            json!({ "published": false, "last": true }),
            None,
        )
        .await
        .unwrap();
    let c = next_event(&mut frames).await;
    assert_eq!(c["seq"].as_i64(), Some(last.seq));
}
