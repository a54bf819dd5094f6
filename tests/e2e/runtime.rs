//! The node runtime under load: priorities under a backlog, per-kind concurrency.

use std::time::Duration;

use orion_bus::{AgentKind, EventType, TaskId, TaskStatus};
use serde_json::json;

use crate::support::{TestApp, eventually, fixture_repo, test_settings};

/// Waits until `n` tasks are in `status`.
async fn all_reach(app: &TestApp, status: &str, n: usize, deadline: Duration) {
    eventually(&format!("{n} tasks to be {status}"), deadline, || async {
        let (_, page) = app
            .get(&format!("/v1/tasks?status={status}&limit=100"))
            .await;
        (page["items"].as_array()?.len() == n).then_some(())
    })
    .await;
}

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
    all_reach(&app, "assigned", priority_of.len(), Duration::from_secs(30)).await;

    let mut settings = test_settings();
    settings.data_dir = app.data.path().to_owned();
    settings.node.agents = vec![AgentKind::Analyzer];
    settings.node.kind_concurrency = [(AgentKind::Analyzer, 1)].into();
    let _worker = orion::app::start_node(&app.services, &settings, "worker").unwrap();
    all_reach(
        &app,
        "completed",
        priority_of.len(),
        Duration::from_secs(60),
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

/// Analyzer work that panics the first `panics` times it is asked, then answers; asked
/// `boom`, its answer panics every time.
struct Panicky {
    panics: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl orion_actors::Work for Panicky {
    async fn perform(
        &self,
        _: &orion_bus::Task,
        _: &orion_actors::WorkContext,
    ) -> Result<serde_json::Value, orion_bus::TaskFailure> {
        use std::sync::atomic::Ordering;
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("boom in the analyzer");
        }
        Ok(json!({ "survived": true }))
    }

    async fn answer(
        &self,
        op: &str,
        _: &serde_json::Value,
        _: &orion_actors::WorkContext,
    ) -> Result<serde_json::Value, orion_bus::TaskFailure> {
        match op {
            "boom" => panic!("boom in an answer"),
            other => Ok(json!({ "op": other })),
        }
    }
}

/// Requests asked at once reach the agent together; one whose answer panics is refused on
/// its own, and every other request of its burst gets its own answer.
#[actix_rt::test]
async fn an_answer_that_panics_refuses_its_own_request_only() {
    let (app, _bridge) = panicky_node(0).await;
    let bus = app.services.lifecycle.bus().clone();
    // The bridge serves requests once it has subscribed.
    crate::support::eventually(
        "the agent to answer",
        std::time::Duration::from_secs(10),
        || async {
            orion_actors::ask(
                bus.as_ref(),
                "asker",
                AgentKind::Analyzer,
                "ping",
                serde_json::Value::Null,
                std::time::Duration::from_secs(1),
            )
            .await
            .ok()
        },
    )
    .await;
    let asked = (0..40).map(|i| {
        let bus = bus.clone();
        async move {
            let op = match i {
                13 => "boom".to_owned(),
                _ => format!("op-{i}"),
            };
            let answer = orion_actors::ask(
                bus.as_ref(),
                "asker",
                AgentKind::Analyzer,
                &op,
                serde_json::Value::Null,
                std::time::Duration::from_secs(10),
            )
            .await;
            (op, answer)
        }
    });
    for (op, answer) in futures_util::future::join_all(asked).await {
        match (op.as_str(), answer) {
            ("boom", Err(orion_actors::AskError::Refused { failure, .. })) => {
                assert_eq!(failure.code, "agent_panicked", "{failure:?}");
                assert!(failure.message.contains("boom in an answer"), "{failure:?}");
            }
            (op, Ok(value)) if op != "boom" => assert_eq!(value, json!({ "op": op })),
            (op, other) => panic!("{op} was answered with {other:?}"),
        }
    }
}

/// A node of one supervised analyzer whose work panics `panics` times, beside an app whose
/// node only coordinates.
async fn panicky_node(panics: u32) -> (TestApp, actix::Addr<orion_actors::BusBridge>) {
    use actix::Actor;
    let app = TestApp::spawn_with(|s| s.node.agents = vec![AgentKind::Coordinator]).await;
    let lifecycle = app.services.lifecycle.clone();
    let agent = orion_actors::Agent {
        context: orion_actors::WorkContext {
            node: "panicky".into(),
            agent: AgentKind::Analyzer,
            bus: lifecycle.bus().clone(),
            repos: Default::default(),
            run: Default::default(),
        },
        work: std::sync::Arc::new(Panicky {
            panics: panics.into(),
        }),
        store: lifecycle.store().clone(),
    };
    let analyzer = actix::Supervisor::start(move |_| orion_actors::AgentActor::new(agent));
    let bridge = orion_actors::BusBridge::new(
        lifecycle.bus().clone(),
        "panicky".into(),
        None,
        [(AgentKind::Analyzer, analyzer)].into(),
        1,
        Default::default(),
    )
    .start();
    (app, bridge)
}

#[actix_rt::test]
async fn a_panicking_agent_is_restarted_from_its_snapshot_and_the_assignment_retried() {
    let restarts_before = orion_services::metrics::metrics()
        .agent_restarts
        .with_label_values(&["analyzer"])
        .get();
    let (app, _bridge) = panicky_node(2).await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = eventually("the task to settle", Duration::from_secs(30), || async {
        let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
    })
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["survived"], true);
    let snapshot = app
        .services
        .lifecycle
        .store()
        .snapshot("panicky/analyzer")
        .await
        .unwrap()
        .expect("the agent saved a snapshot");
    assert_eq!(snapshot.state["restarts"], 2, "{:?}", snapshot.state);
    assert_eq!(
        orion_services::metrics::metrics()
            .agent_restarts
            .with_label_values(&["analyzer"])
            .get()
            - restarts_before,
        2,
        "each restart is counted"
    );
    let (_, agents) = app.get("/v1/agents").await;
    assert_eq!(
        agents["restarts"]["panicky/analyzer"], 2,
        "the API shows each agent's restarts: {agents}"
    );
}

#[actix_rt::test]
async fn an_agent_that_keeps_panicking_fails_the_task_with_the_cause_after_bounded_attempts() {
    let (app, _bridge) = panicky_node(u32::MAX).await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "agent_panicked", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 times") && message.contains("boom in the analyzer"),
        "{message}"
    );
    let snapshot = app
        .services
        .lifecycle
        .store()
        .snapshot("panicky/analyzer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.state["restarts"], 3);
    assert_eq!(
        snapshot.state["panics"],
        json!({}),
        "a step given up on is forgotten"
    );
}

/// The attempt of the next assignment taken from `work`, for task `id`.
async fn next_assignment(work: &mut orion_bus::Deliveries, id: &str) -> orion_bus::Delivery {
    use futures_util::StreamExt;
    let delivery = tokio::time::timeout(Duration::from_secs(30), work.next())
        .await
        .expect("an assignment in time")
        .unwrap();
    let orion_bus::Body::Assignment(assignment) = &delivery.envelope.body else {
        panic!("not an assignment: {:?}", delivery.envelope);
    };
    assert_eq!(assignment.task.id.to_string(), id);
    delivery
}

/// The analyzer's work queue, consumed by the test in the agent's place.
/// An app whose only agent is a coordinator (with `lease_secs` as its task lease, where
/// given), the analyzer's queue read by the test in the analyzer's place, and an analyze task
/// submitted after the queue is read.
struct AnalyzeTask {
    app: TestApp,
    work: orion_bus::Deliveries,
    id: String,
    _repo: crate::support::TempDir,
}

async fn coordinator_with_an_analyze_task(lease_secs: Option<u64>) -> AnalyzeTask {
    let app = TestApp::spawn_with(|s| {
        s.node.agents = vec![AgentKind::Coordinator];
        if let Some(lease) = lease_secs {
            s.node.task_lease_secs = lease;
        }
    })
    .await;
    let work = analyzer_work(&app.services.lifecycle).await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    AnalyzeTask {
        app,
        work,
        id,
        _repo: repo,
    }
}

async fn analyzer_work(lifecycle: &orion_services::lifecycle::Lifecycle) -> orion_bus::Deliveries {
    lifecycle
        .bus()
        .consume(orion_bus::Queue::Work(
            AgentKind::Analyzer,
            orion_bus::Priority::Normal,
        ))
        .await
        .unwrap()
}

/// Waits until no report is left on the results queue (each was handled and acknowledged).
async fn results_settled(lifecycle: &orion_services::lifecycle::Lifecycle) {
    eventually(
        "the reports to be settled",
        Duration::from_secs(10),
        || async {
            let held = lifecycle.bus().held(orion_bus::Queue::Results).await.ok()?;
            (held == 0).then_some(())
        },
    )
    .await;
}

/// The types of a page of events from the API, in order.
fn story_of(events: &serde_json::Value) -> Vec<&str> {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

/// An analyzer's report of `outcome` for attempt `attempt` of the task's work step, with the
/// message id its `state` gives it.
fn analyzer_report(
    task_id: TaskId,
    attempt: i32,
    outcome: orion_bus::Outcome,
    state: &str,
) -> (orion_bus::MessageId, orion_bus::Envelope) {
    analyzer_report_from(task_id, attempt, outcome, state, None)
}

/// [`analyzer_report`] naming the task as its assignment found it (`assigned`).
fn analyzer_report_from(
    task_id: TaskId,
    attempt: i32,
    outcome: orion_bus::Outcome,
    state: &str,
    assigned: Option<orion_bus::AssignedAt>,
) -> (orion_bus::MessageId, orion_bus::Envelope) {
    let envelope = orion_bus::Envelope::new(
        "a-node",
        orion_bus::Body::Report(orion_bus::WorkReport {
            task_id,
            agent: AgentKind::Analyzer,
            attempt,
            outcome,
            assigned,
        }),
    );
    let id = orion_bus::MessageId::report(task_id, attempt, &orion_bus::Step::Work, state);
    (id, envelope)
}

fn attempt_of(delivery: &orion_bus::Delivery) -> i32 {
    match &delivery.envelope.body {
        orion_bus::Body::Assignment(a) => a.attempt,
        _ => unreachable!(),
    }
}

/// Where a delivered assignment found its task.
fn found_by(delivery: &orion_bus::Delivery) -> orion_bus::AssignedAt {
    match &delivery.envelope.body {
        orion_bus::Body::Assignment(a) => orion_bus::AssignedAt::of(&a.task),
        _ => unreachable!(),
    }
}

/// Puts a report on the results queue, in an agent's place.
async fn send_report(
    lifecycle: &orion_services::lifecycle::Lifecycle,
    (message, envelope): (orion_bus::MessageId, orion_bus::Envelope),
) {
    lifecycle
        .bus()
        .enqueue_as(orion_bus::Queue::Results, &message, &envelope)
        .await
        .unwrap();
}

/// Eight sweeps at once over one orphaned task (as eight coordinators would run them): the
/// task is queued again once, with one more attempt, not once per sweep.
#[actix_rt::test]
async fn of_sweeps_racing_over_one_orphaned_task_exactly_one_reclaims_it() {
    // The app's own coordinator never finds it stale: only the racing sweeps do.
    let AnalyzeTask {
        app,
        mut work,
        id,
        _repo,
    } = coordinator_with_an_analyze_task(Some(3600)).await;
    let lifecycle = app.services.lifecycle.clone();
    // Taken and acknowledged, never reported: no message about the task is left.
    next_assignment(&mut work, &id).await.ack().await.unwrap();
    let sweeps = (0..8).map(|_| orion_actors::reclaim_orphans(lifecycle.clone(), Duration::ZERO));
    futures_util::future::join_all(sweeps).await;
    let again = next_assignment(&mut work, &id).await;
    assert_eq!(
        attempt_of(&again),
        3,
        "one reclaim's attempt, then the assignment's"
    );
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let reclaims = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["reclaimed"].is_string())
        .count();
    assert_eq!(reclaims, 1, "{events}");
}

/// An assignment taken and acknowledged by something that never reported (as if the bus had
/// lost it) leaves its task with no message anywhere: after its lease a coordinator queues
/// it again, with a new attempt. An assignment that is held (its agent still at work) keeps
/// its task from being taken again, however long it takes.
#[actix_rt::test]
async fn a_task_whose_messages_are_lost_is_queued_again_after_its_lease() {
    let AnalyzeTask {
        app,
        mut work,
        id,
        _repo,
    } = coordinator_with_an_analyze_task(Some(1)).await;
    let lifecycle = app.services.lifecycle.clone();
    let first = next_assignment(&mut work, &id).await;
    assert_eq!(attempt_of(&first), 1);
    first.ack().await.unwrap();
    let second = next_assignment(&mut work, &id).await;
    // The reclaim counts an attempt (so its submission is not taken for a duplicate of the
    // first), and the assignment that follows another.
    assert_eq!(attempt_of(&second), 3, "a new attempt");
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let reclaimed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["reclaimed"].is_string())
        .unwrap_or_else(|| panic!("the event log says why it was queued again: {events}"));
    assert_eq!(reclaimed["status"], "queued", "{reclaimed}");
    // Held (not acknowledged) for longer than the lease, below the ack wait (2 s): the
    // coordinators' sweeps (every half lease) find its message and leave it alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let task = lifecycle.store().task(id.parse().unwrap()).await.unwrap();
    assert_eq!(
        (task.status.as_str(), task.attempts),
        ("assigned", 3),
        "a held assignment's task is not taken again"
    );
    // The first attempt's agent reports late that it completed: the report moves nothing,
    // and the log says it came. The current attempt's report does move the task.
    let task_id: orion_bus::TaskId = id.parse().unwrap();
    let report = |attempt, outcome, state| analyzer_report(task_id, attempt, outcome, state);
    let (late, stale) = report(
        1,
        orion_bus::Outcome::Completed {
            result: json!({ "from": "the first attempt" }),
        },
        "completed",
    );
    lifecycle
        .bus()
        .enqueue_as(orion_bus::Queue::Results, &late, &stale)
        .await
        .unwrap();
    crate::support::eventually(
        "the stale report to be noted",
        Duration::from_secs(10),
        || async {
            let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| e["data"]["stale_attempt"] == 1)
                .then_some(())
        },
    )
    .await;
    let task = lifecycle.store().task(task_id).await.unwrap();
    assert_eq!((task.status.as_str(), task.result), ("assigned", None));
    let (current, started) = report(3, orion_bus::Outcome::Started, "started");
    lifecycle
        .bus()
        .enqueue_as(orion_bus::Queue::Results, &current, &started)
        .await
        .unwrap();
    app.wait_for(&id, "running").await;
    second.ack().await.unwrap();
}

/// A dead letter written while no coordinator ran is not lost with the live subscribers: the
/// next coordinator to start takes it from the dead letters' queue and fails its task.
#[actix_rt::test]
async fn a_dead_letter_written_while_no_coordinator_ran_fails_its_task_when_one_starts() {
    use actix::Actor;
    use futures_util::StreamExt;
    let app = TestApp::spawn_with(|s| s.node.agents = vec![AgentKind::Analyzer]).await;
    let lifecycle = app.services.lifecycle.clone();
    let bus = lifecycle.bus().clone();
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    // No coordinator takes the submission; this test does, and rejects it until the bus
    // gives up on it.
    let mut dead = bus.subscribe_raw(&bus.subjects().dead_all()).await.unwrap();
    let mut submitted = bus.consume(orion_bus::Queue::Coordinators).await.unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::select! {
                letter = dead.next() => return letter.unwrap(),
                delivery = submitted.next() => delivery.unwrap().nak(None).await.unwrap(),
            }
        }
    })
    .await
    .expect("the submission dead-lettered");
    assert!(
        String::from_utf8_lossy(&letter.payload).contains(&id),
        "the letter is about the task"
    );
    let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["status"], "queued", "nothing failed it yet: {task}");
    let _coordinator =
        orion_actors::Coordinator::new(lifecycle.clone(), Default::default()).start();
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "dead_lettered", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("task.submitted"),
        "{task}"
    );
}

/// An assignment no agent can take (its actor is gone, so every delivery is retried) goes to
/// the dead letters after `max_deliver` deliveries, and the task fails with the reason
/// instead of waiting forever.
#[actix_rt::test]
async fn a_task_whose_message_is_dead_lettered_fails_with_the_reason() {
    use actix::Actor;
    let app = TestApp::spawn_with(|s| s.node.agents = vec![AgentKind::Coordinator]).await;
    let lifecycle = app.services.lifecycle.clone();
    let agent = orion_actors::Agent {
        context: orion_actors::WorkContext {
            node: "gone".into(),
            agent: AgentKind::Analyzer,
            bus: lifecycle.bus().clone(),
            repos: Default::default(),
            run: Default::default(),
        },
        work: std::sync::Arc::new(Panicky { panics: 0.into() }),
        store: lifecycle.store().clone(),
    };
    // The analyzer lives on an arbiter that is stopped: its mailbox is closed.
    let arbiter = actix::Arbiter::new();
    let analyzer = orion_actors::AgentActor::start_in_arbiter(&arbiter.handle(), move |_| {
        orion_actors::AgentActor::new(agent)
    });
    arbiter.stop();
    arbiter.join().unwrap();
    let _bridge = orion_actors::BusBridge::new(
        lifecycle.bus().clone(),
        "gone".into(),
        None,
        [(AgentKind::Analyzer, analyzer)].into(),
        1,
        Default::default(),
    )
    .start();
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "dead_lettered", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(message.contains("work.assignment"), "{message}");
    assert!(
        message.contains("3"),
        "the reason names the deliveries: {message}"
    );
}

#[actix_rt::test]
async fn cancelling_a_task_stops_the_work_in_progress_on_its_node() {
    // The model takes a minute: the develop step is mid-call when the task is cancelled.
    let model = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(crate::support::completion(
                    "gpt-test",
                    "=== FILE: a\nb\n=== END\n",
                ))
                .set_delay(Duration::from_secs(60)),
        )
        .mount(&model)
        .await;
    let base = format!("{}/v1", model.uri());
    let app = TestApp::spawn_with(move |s| {
        s.llm.base_url = Some(base);
        s.llm.model = "gpt-test".into();
    })
    .await;
    // The gateway sends cancel orders to the nodes it hears from.
    eventually(
        "the node's first heartbeat",
        Duration::from_secs(10),
        || async {
            let (_, agents) = app.get("/v1/agents").await;
            (!agents["nodes"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    let (_keep, remote) = crate::support::bare_remote();
    let id = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "change" }))
        .await;
    let metrics = orion_services::metrics::metrics();
    let in_flight = || metrics.in_flight.with_label_values(&["developer"]).get();
    eventually(
        "the model call under way",
        Duration::from_secs(20),
        || async {
            let asked = model.received_requests().await.unwrap_or_default();
            (!asked.is_empty() && in_flight() == 1).then_some(())
        },
    )
    .await;
    let dropped = || {
        metrics
            .bus_deliveries
            .with_label_values(&["work.developer", "drop"])
            .get()
    };
    let dropped_before = dropped();
    let (status, _, _) = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    // The step stops long before the model would answer, and its assignment is settled.
    eventually("the work to stop", Duration::from_secs(10), || async {
        (in_flight() == 0 && dropped() == dropped_before + 1).then_some(())
    })
    .await;
    let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["status"], "cancelled");
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    assert_eq!(
        events["items"].as_array().unwrap().last().unwrap()["type"],
        "cancelled",
        "nothing happens to the task after its cancellation"
    );
}

/// Reports may overtake each other: an outcome that comes before its step's start records
/// the start it implies, and the start that comes after it moves nothing; the story reads
/// queued, assigned, running, completed, with one `running`.
#[actix_rt::test]
async fn a_start_report_that_comes_after_its_outcome_moves_nothing() {
    let AnalyzeTask {
        app,
        mut work,
        id,
        _repo,
    } = coordinator_with_an_analyze_task(None).await;
    let lifecycle = app.services.lifecycle.clone();
    let assignment = next_assignment(&mut work, &id).await;
    let attempt = attempt_of(&assignment);
    assignment.ack().await.unwrap();
    let task_id: TaskId = id.parse().unwrap();
    let report = |outcome, state| {
        send_report(
            &lifecycle,
            analyzer_report(task_id, attempt, outcome, state),
        )
    };
    report(
        orion_bus::Outcome::Completed {
            result: json!({ "overtook": true }),
        },
        "completed",
    )
    .await;
    app.wait_for(&id, "completed").await;
    report(orion_bus::Outcome::Started, "started").await;
    results_settled(&lifecycle).await;
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let story = story_of(&events);
    assert_eq!(story, ["queued", "assigned", "running", "completed"]);
    let task = lifecycle.store().task(task_id).await.unwrap();
    assert_eq!(
        (task.status.as_str(), task.result),
        ("completed", Some(json!({ "overtook": true })))
    );
}

/// A report names the task as its assignment found it, and a coordinator moves the task from
/// there without reading it: an outcome with no `started` report before it is written with
/// the start it implies. A report whose task moved since (cancelled while its agent worked),
/// and reports that name the version the task is at now with a status it is not at, move
/// nothing: the store checks version and status both.
#[actix_rt::test]
async fn a_report_moves_its_task_only_from_where_its_assignment_found_it() {
    let AnalyzeTask {
        app,
        mut work,
        id,
        _repo,
    } = coordinator_with_an_analyze_task(None).await;
    let lifecycle = app.services.lifecycle.clone();
    let task_id: TaskId = id.parse().unwrap();
    let send = |report| send_report(&lifecycle, report);
    let delivery = next_assignment(&mut work, &id).await;
    let (attempt, found) = (attempt_of(&delivery), found_by(&delivery));
    assert_eq!(found.status, TaskStatus::Assigned);
    delivery.ack().await.unwrap();
    let (status, _, _) = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let cancelled = lifecycle.store().task(task_id).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.version),
        (TaskStatus::Cancelled, found.version + 1)
    );
    let completed = |n: i32| orion_bus::Outcome::Completed {
        result: json!({ "report": n }),
    };
    // As the assignment found it (moved since), then as it is now under statuses it is not
    // at, with the version it is at.
    let claims = [
        found,
        orion_bus::AssignedAt {
            status: TaskStatus::Running,
            version: cancelled.version,
        },
        orion_bus::AssignedAt {
            status: TaskStatus::Assigned,
            version: cancelled.version,
        },
    ];
    for (n, claim) in (0..).zip(claims) {
        let state = format!("completed-{n}");
        send(analyzer_report_from(
            task_id,
            attempt,
            completed(n),
            &state,
            Some(claim),
        ))
        .await;
    }
    results_settled(&lifecycle).await;
    let after = lifecycle.store().task(task_id).await.unwrap();
    assert_eq!(
        (after.status, after.version, after.result),
        (TaskStatus::Cancelled, cancelled.version, None)
    );
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let story = story_of(&events);
    assert_eq!(story, ["queued", "assigned", "cancelled"]);

    // An honest report of a quick step, with no `started` before it: one write from where
    // the assignment found the task, with the start it implies.
    let repo = fixture_repo();
    let second = app
        .submit(json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }))
        .await;
    let delivery = next_assignment(&mut work, &second).await;
    let found = found_by(&delivery);
    let second_id: TaskId = second.parse().unwrap();
    send(analyzer_report_from(
        second_id,
        attempt_of(&delivery),
        completed(9),
        "completed",
        Some(found),
    ))
    .await;
    delivery.ack().await.unwrap();
    app.wait_for(&second, "completed").await;
    let done = lifecycle.store().task(second_id).await.unwrap();
    assert_eq!(
        (done.version, done.result),
        (found.version + 2, Some(json!({ "report": 9 })))
    );
    let events = lifecycle
        .store()
        .events(Some(second_id), 0, 100)
        .await
        .unwrap();
    let story: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data["agent"].as_str()))
        .collect();
    assert_eq!(
        story,
        [
            ("queued", None),
            ("assigned", Some("analyzer")),
            ("running", Some("analyzer")),
            ("completed", Some("analyzer")),
        ]
    );
}

/// Two copies of one quick step's report (the bus's de-duplication window passed, or an
/// agent sent it twice), handled at once: the task completes once, with one start and one
/// end in its story, whichever copy takes the path with no read.
#[actix_rt::test]
async fn the_same_report_twice_at_once_completes_its_task_once() {
    let AnalyzeTask {
        app,
        mut work,
        id,
        _repo,
    } = coordinator_with_an_analyze_task(None).await;
    let lifecycle = app.services.lifecycle.clone();
    let task_id: TaskId = id.parse().unwrap();
    let delivery = next_assignment(&mut work, &id).await;
    let (attempt, found) = (attempt_of(&delivery), found_by(&delivery));
    let copy = |state: &str| {
        let outcome = orion_bus::Outcome::Completed {
            result: json!({ "once": true }),
        };
        let report = analyzer_report_from(task_id, attempt, outcome, state, Some(found));
        send_report(&lifecycle, report)
    };
    futures_util::join!(copy("completed"), copy("completed-copy"));
    delivery.ack().await.unwrap();
    app.wait_for(&id, "completed").await;
    results_settled(&lifecycle).await;
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    assert_eq!(
        story_of(&events),
        ["queued", "assigned", "running", "completed"]
    );
    let task = lifecycle.store().task(task_id).await.unwrap();
    assert_eq!(
        (task.version, task.result),
        (found.version + 2, Some(json!({ "once": true })))
    );
}
