//! The REST API end to end, in embedded mode (SQLite, in-process bus), as `orion up` runs it.

use std::time::Duration;

use orion_bus::AgentKind;
use serde_json::{Value, json};

use crate::support::{TestApp, eventually, fixture_repo, metric};

fn repo_of(dir: &crate::support::TempDir) -> String {
    dir.path().to_string_lossy().into_owned()
}

#[actix_rt::test]
async fn an_analyze_task_completes_with_the_measures_of_its_repository() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_of(&repo) }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    assert_eq!(task["attempts"], 1);
    let totals = &task["result"]["totals"];
    assert_eq!(
        totals["rust"],
        json!({ "files": 1, "lines": 8, "code": 5, "comment": 2, "blank": 1, "functions": 2, "types": 1, "imports": 0, "todos": 0 })
    );
    assert_eq!(
        totals["python"],
        json!({ "files": 1, "lines": 7, "code": 5, "comment": 1, "blank": 1, "functions": 3, "types": 0, "imports": 0, "todos": 0 })
    );
    let files: Vec<&str> = task["result"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["src/lib.rs", "tool.py"],
        "build output and hidden folders are skipped"
    );
}

#[actix_rt::test]
async fn the_events_of_a_task_tell_its_story() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_of(&repo), "priority": "high" }))
        .await;
    app.wait_for(&id, "completed").await;
    let (status, body) = app.get(&format!("/v1/tasks/{id}/events")).await;
    assert_eq!(status, 200);
    let events = body["items"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["queued", "assigned", "running", "completed"]);
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    assert_eq!(events[1]["data"]["agent"], "analyzer");
    assert_eq!(
        events[2]["data"]["agent_node"], events[2]["node"],
        "one node did both in embedded mode"
    );
    let after = events[1]["seq"].as_i64().unwrap();
    let (_, tail) = app
        .get(&format!("/v1/tasks/{id}/events?after={after}"))
        .await;
    assert_eq!(tail["items"].as_array().unwrap(), &events[2..]);
}

#[actix_rt::test]
async fn an_auto_task_gets_the_kind_its_prompt_names_and_the_choice_is_explained() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "auto", "repo": repo_of(&repo), "prompt": "Where are the complexity hotspots and the debt?" }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    assert_eq!(task["kind"], "analyze", "the chosen kind is stored");
    assert_eq!(task["result"]["totals"]["rust"]["lines"], 8);
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let assigned = &events["items"][1];
    assert_eq!(assigned["type"], "assigned");
    let chosen = &assigned["data"]["chosen"];
    assert_eq!(chosen["kind"], "analyze");
    assert_eq!(chosen["matched"], json!(["complexity", "hotspot", "debt"]));
    assert!(
        chosen["why"]
            .as_str()
            .unwrap()
            .starts_with("chose `analyze`: the prompt names 3"),
        "{chosen}"
    );

    // No kind fits: the task fails at once, saying so.
    let id = app
        .submit(json!({ "kind": "auto", "repo": repo_of(&repo), "prompt": "hello there" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "no_kind_chosen");
    assert_eq!(task["kind"], "auto");

    // Without a prompt there is nothing to choose by: refused before it is stored.
    let (status, _, problem) = app
        .post_json(
            "/v1/tasks",
            &json!({ "kind": "auto", "repo": repo_of(&repo) }),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_field"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("needs a prompt"),
        "{problem}"
    );
}

#[actix_rt::test]
async fn a_missing_repository_fails_the_task_clearly() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(json!({ "kind": "analyze", "repo": "/no/such/repository" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(
        task["error"],
        json!({ "code": "repo_not_found", "message": "repository path `/no/such/repository` does not exist" })
    );
    let id = app
        .submit(json!({ "kind": "analyze", "repo": "https://example.invalid/x.git" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "repo_unsupported");
}

#[actix_rt::test]
async fn listing_filters_by_kind_and_status_and_pages_with_a_cursor() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let mut analyze = Vec::new();
    for _ in 0..3 {
        analyze.push(
            app.submit(json!({ "kind": "analyze", "repo": repo_of(&repo) }))
                .await,
        );
    }
    let design = app.submit(json!({ "kind": "ci", "repo": "/x" })).await;
    for id in &analyze {
        app.wait_for(id, "completed").await;
    }
    app.wait_for(&design, "failed").await;

    let (status, first) = app.get("/v1/tasks?kind=analyze&limit=2").await;
    assert_eq!(status, 200);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&first),
        [analyze[2].clone(), analyze[1].clone()],
        "newest first"
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/v1/tasks?kind=analyze&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second), [analyze[0].clone()]);
    assert!(second["next_cursor"].is_null());
    let (_, failed) = app.get("/v1/tasks?status=failed").await;
    assert_eq!(ids(&failed), [design]);
    let (status, bad) = app.get("/v1/tasks?status=sleeping").await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[actix_rt::test]
async fn a_task_can_be_cancelled_until_it_ends() {
    // Only a coordinator runs: tasks are assigned and wait for an analyzer that never comes.
    let app = TestApp::spawn_with(|s| s.node.agents = vec![AgentKind::Coordinator]).await;
    let id = app.submit(json!({ "kind": "analyze", "repo": "/x" })).await;
    app.wait_for(&id, "assigned").await;
    let (status, _, task) = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!((status, task["status"].as_str()), (200, Some("cancelled")));
    let (status, content_type, problem) = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (409, "application/problem+json")
    );
    assert_eq!(
        problem,
        json!({
            "type": "https://orion.dev/problems/task_not_cancellable",
            "title": "Task not cancellable",
            "status": 409,
            "detail": "task is cancelled and can no longer be cancelled",
            "code": "task_not_cancellable",
        })
    );
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["type"].as_str(), last["data"]["by"].as_str()),
        (Some("cancelled"), Some("anonymous")),
        "the log names who cancelled: with auth off, the anonymous caller"
    );
}

#[actix_rt::test]
async fn a_repeated_idempotency_key_returns_the_first_task() {
    let app = TestApp::spawn_with(|s| s.node.agents = vec![]).await;
    let body = json!({ "kind": "analyze", "repo": "/x" }).to_string();
    let send = || async {
        let mut response = app
            .client
            .post(app.url("/v1/tasks"))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Idempotency-Key", "build-42"))
            .send_body(body.clone())
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
        (response.status().as_u16(), json)
    };
    let (first_status, first) = send().await;
    let (second_status, second) = send().await;
    assert_eq!((first_status, second_status), (202, 200));
    assert_eq!(first["id"], second["id"]);
    let (_, all) = app.get("/v1/tasks").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

fn problem(status: u16, code: &str, title: &str, detail: &str) -> Value {
    json!({
        "type": format!("https://orion.dev/problems/{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

#[actix_rt::test]
async fn bad_input_is_refused_with_problem_json_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, &str, Vec<u8>, Value)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"kind\": \"analyze\",".to_vec(),
            problem(
                400,
                "malformed_json",
                "Malformed JSON",
                "the request body is not valid JSON: EOF while parsing a value at line 1 column 19",
            ),
        ),
        (
            "not an object",
            "application/json",
            b"[1, 2]".to_vec(),
            problem(
                400,
                "malformed_json",
                "Malformed JSON",
                "the request body is not valid JSON: the body must be a JSON object",
            ),
        ),
        (
            "unknown kind",
            "application/json",
            br#"{"kind":"deploy","repo":"."}"#.to_vec(),
            problem(
                422,
                "unknown_task_kind",
                "Unknown task kind",
                "unknown task kind `deploy`; expected one of develop, review, analyze, test, design, ci, release, auto, or a kind declared in `[plugins]`",
            ),
        ),
        (
            "missing repo",
            "application/json",
            br#"{"kind":"analyze"}"#.to_vec(),
            problem(
                422,
                "missing_field",
                "Missing field",
                "field `repo` is required",
            ),
        ),
        (
            "missing kind",
            "application/json",
            br#"{"repo":"."}"#.to_vec(),
            problem(
                422,
                "missing_field",
                "Missing field",
                "field `kind` is required",
            ),
        ),
        (
            "empty repo",
            "application/json",
            br#"{"kind":"analyze","repo":"  "}"#.to_vec(),
            problem(
                422,
                "invalid_field",
                "Invalid field",
                "field `repo` is invalid: must not be empty",
            ),
        ),
        (
            "repo of the wrong type",
            "application/json",
            br#"{"kind":"analyze","repo":7}"#.to_vec(),
            problem(
                422,
                "invalid_field",
                "Invalid field",
                "field `repo` is invalid: must be a string",
            ),
        ),
        (
            "unknown field",
            "application/json",
            br#"{"kind":"analyze","repo":".","promt":"x"}"#.to_vec(),
            problem(
                422,
                "invalid_field",
                "Invalid field",
                "field `promt` is invalid: is not a field of a task",
            ),
        ),
        (
            "unknown priority",
            "application/json",
            br#"{"kind":"analyze","repo":".","priority":"asap"}"#.to_vec(),
            problem(
                422,
                "invalid_field",
                "Invalid field",
                "field `priority` is invalid: unknown priority `asap`; expected one of low, normal, high, urgent",
            ),
        ),
        (
            "oversized body",
            "application/json",
            format!(
                r#"{{"kind":"analyze","repo":".","prompt":"{}"}}"#,
                "x".repeat(300 * 1024)
            )
            .into_bytes(),
            problem(
                413,
                "payload_too_large",
                "Payload too large",
                "the request body exceeds the limit of 262144 bytes",
            ),
        ),
        (
            "oversized prompt",
            "application/json",
            format!(
                r#"{{"kind":"analyze","repo":".","prompt":"{}"}}"#,
                "x".repeat(70 * 1024)
            )
            .into_bytes(),
            problem(
                422,
                "invalid_field",
                "Invalid field",
                "field `prompt` is invalid: must be at most 65536 bytes",
            ),
        ),
        (
            "not JSON at all",
            "text/plain",
            b"analyze this".to_vec(),
            problem(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                "the request body must be application/json",
            ),
        ),
    ];
    for (what, content_type, body, expected) in cases {
        let (status, answered_type, answer) = app.post_raw("/v1/tasks", content_type, body).await;
        assert_eq!(answer, expected, "{what}");
        assert_eq!(status, expected["status"], "{what}");
        assert_eq!(answered_type, "application/problem+json", "{what}");
    }
    let unknown = uuid::Uuid::now_v7();
    let (status, answer) = app.get(&format!("/v1/tasks/{unknown}")).await;
    assert_eq!(
        (status, answer),
        (
            404,
            problem(
                404,
                "task_not_found",
                "Task not found",
                &format!("task {unknown} does not exist")
            )
        )
    );
    let (status, answer) = app.get(&format!("/v1/tasks/{unknown}/events")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("task_not_found"))
    );
    let (status, _, answer) = app
        .post_json(&format!("/v1/tasks/{unknown}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("task_not_found"))
    );
    let (status, answer) = app.get("/v1/tasks/not-a-uuid").await;
    assert_eq!(
        (status, answer),
        (
            400,
            problem(
                400,
                "invalid_task_id",
                "Invalid task id",
                "`not-a-uuid` is not a task id (a UUID)"
            )
        )
    );
    let (status, answer) = app.get("/v1/nothing-here").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("route_not_found"))
    );

    // Nothing of it was stored.
    let (_, all) = app.get("/v1/tasks").await;
    assert_eq!(all, json!({ "items": [], "next_cursor": null }));
}

#[actix_rt::test]
async fn health_readiness_and_the_openapi_document() {
    let app = TestApp::spawn().await;
    let (status, health) = app.get("/healthz").await;
    assert_eq!((status, health), (200, json!({ "status": "ok" })));
    let (status, ready) = app.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, doc) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(doc, file, "the served document is docs/openapi.json");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/readyz",
            "/v1/agents",
            "/v1/agents/{node}/drain",
            "/v1/api-keys",
            "/v1/api-keys/{id}",
            "/v1/audit",
            "/v1/credentials",
            "/v1/credentials/{id}",
            "/v1/hooks/{forge}",
            "/v1/me",
            "/v1/openapi.json",
            "/v1/pulls",
            "/v1/pulls/{id}",
            "/v1/pulls/{id}/reviews",
            "/v1/repos/{repo}/trend",
            "/v1/stream",
            "/v1/tasks",
            "/v1/tasks/{id}",
            "/v1/tasks/{id}/budget",
            "/v1/tasks/{id}/cancel",
            "/v1/tasks/{id}/events",
            "/v1/tasks/{id}/functions",
            "/v1/tasks/{id}/suggestions/{n}/submit",
            "/v1/tasks/{id}/usage",
            "/v1/usage",
            "/v1/usage/budgets",
            "/v1/usage/budgets/{name}"
        ],
        "every route is documented"
    );
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["name"], "X-Api-Key");
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        json!([]),
        "probes are open"
    );
}

#[actix_rt::test]
async fn metrics_count_what_a_task_did_in_the_prometheus_format() {
    let app = TestApp::spawn().await;
    let (status, content_type, before) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let completed = [("kind", "analyze"), ("status", "completed")];
    assert_eq!(
        metric(&before, "orion_task_transitions_total", &completed),
        None
    );
    assert!(
        metric(&before, "process_resident_memory_bytes", &[]).is_some_and(|rss| rss > 0.0),
        "process metrics are there"
    );

    let repo = fixture_repo();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_of(&repo) }))
        .await;
    app.wait_for(&id, "completed").await;
    let bad = app
        .submit(json!({ "kind": "analyze", "repo": "/no/such/repo" }))
        .await;
    app.wait_for(&bad, "failed").await;

    let (_, _, after) = app.get_text("/metrics").await;
    let value = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels);
    assert_eq!(value("orion_task_transitions_total", &completed), Some(1.0));
    assert_eq!(
        value(
            "orion_task_transitions_total",
            &[("kind", "analyze"), ("status", "queued")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value("orion_task_failures_total", &[("code", "repo_not_found")]),
        Some(1.0)
    );
    assert_eq!(
        value("orion_task_duration_seconds_count", &completed),
        Some(1.0)
    );
    assert_eq!(
        value(
            "orion_step_duration_seconds_count",
            &[
                ("agent", "analyzer"),
                ("step", "work"),
                ("outcome", "completed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "orion_http_requests_total",
            &[
                ("route", "/v1/tasks"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        Some(2.0)
    );
    assert!(
        value(
            "orion_http_requests_total",
            &[
                ("route", "/v1/tasks/{id}"),
                ("method", "GET"),
                ("status", "200")
            ]
        )
        .is_some_and(|n| n >= 2.0),
        "requests are counted by route pattern, not by path"
    );
    assert!(
        value(
            "orion_bus_deliveries_total",
            &[("queue", "work.analyzer"), ("outcome", "ack")]
        )
        .is_some_and(|n| n >= 2.0)
    );
    assert_eq!(
        value("orion_in_flight_assignments", &[("agent", "analyzer")]),
        Some(0.0)
    );
    // Each heartbeat (every 5 s) reads the depth of the queues the node serves.
    let app = &app;
    let depth = eventually("the queue depth", Duration::from_secs(15), || async move {
        let (_, _, text) = app.get_text("/metrics").await;
        metric(
            &text,
            "orion_queue_depth",
            &[("queue", "work.analyzer"), ("state", "pending")],
        )
    })
    .await;
    assert_eq!(depth, 0.0, "both tasks were taken");
}

#[actix_rt::test]
async fn agents_lists_the_nodes_by_their_heartbeats() {
    let app = TestApp::spawn().await;
    let app = &app;
    let cluster = eventually(
        "the node's heartbeat",
        Duration::from_secs(15),
        || async move {
            let (_, cluster) = app.get("/v1/agents").await;
            (cluster["nodes"].as_array()?.len() == 1).then_some(cluster)
        },
    )
    .await;
    let node = &cluster["nodes"][0];
    assert_eq!(node["state"], "healthy");
    assert_eq!(node["in_flight"], 0);
    let agents: Vec<&str> = node["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for kind in [
        "coordinator",
        "developer",
        "analyzer",
        "testing",
        "architect",
    ] {
        assert!(agents.contains(&kind), "{agents:?}");
        assert_eq!(cluster["agents"][kind]["healthy_nodes"], 1, "{kind}");
    }
}
