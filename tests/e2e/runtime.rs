//! The node runtime under load: priorities under a backlog, per-kind concurrency.

use std::time::Duration;

use orion_bus::{AgentKind, EventType, TaskId};
use serde_json::json;

use crate::support::{TestApp, eventually, fixture_repo, test_settings};

/// A backlog of low, normal and urgent tasks waits on the work queues while no analyzer runs;
/// then one analyzer takes them one at a time: the urgent first, and the low ones are not
/// left to the end (each priority gets its share of turns).
#[actix_rt::test]
async fn under_a_backlog_urgent_work_goes_first_and_low_work_is_not_starved() {
    // One report at a time, so the task log's order is the order the work ran in.
    let app = TestApp::spawn_with(|s| {
        s.node.agents = vec![AgentKind::Coordinator];
        s.node.concurrency = 1;
    })
    .await;
    let repo = fixture_repo();
    let repo = repo.path().to_string_lossy().into_owned();
    let mut priority_of = std::collections::HashMap::new();
    for (priority, count) in [("low", 12), ("normal", 12), ("urgent", 4)] {
        for _ in 0..count {
            let id = app
                .submit(json!({ "kind": "analyze", "repo": repo, "priority": priority }))
                .await;
            priority_of.insert(id.parse::<TaskId>().unwrap(), priority);
        }
    }
    let store = app.services.lifecycle.store().clone();
    eventually(
        "every task to wait on the work queue",
        Duration::from_secs(30),
        || async {
            let (_, page) = app.get("/v1/tasks?status=assigned&limit=100").await;
            (page["items"].as_array()?.len() == priority_of.len()).then_some(())
        },
    )
    .await;

    let mut settings = test_settings();
    settings.data_dir = app.data.path().to_owned();
    settings.node.agents = vec![AgentKind::Analyzer];
    settings.node.kind_concurrency = [(AgentKind::Analyzer, 1)].into();
    let _worker = orion::app::start_node(&app.services, &settings, "worker").unwrap();
    eventually(
        "every task to complete",
        Duration::from_secs(60),
        || async {
            let (_, page) = app.get("/v1/tasks?status=completed&limit=100").await;
            (page["items"].as_array()?.len() == priority_of.len()).then_some(())
        },
    )
    .await;

    let events = store.events(None, 0, 10_000).await.unwrap();
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == EventType::Running)
        .map(|e| priority_of[&e.task_id])
        .collect();
    assert_eq!(started.len(), priority_of.len(), "each task ran once");
    assert_eq!(
        &started[..4],
        ["urgent"; 4],
        "the urgent first: {started:?}"
    );
    let first_low = started.iter().position(|p| *p == "low").unwrap();
    let last_normal = started.iter().rposition(|p| *p == "normal").unwrap();
    assert!(
        first_low < last_normal,
        "low work gets turns while normal work waits: {started:?}"
    );
}
