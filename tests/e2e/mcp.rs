//! `orion mcp`, driven by a client nobody here wrote: the official MCP Python SDK (`mcp` on
//! PyPI) over stdio, against a gateway with auth on. It lists the tools, submits an analyze
//! task, waits for it with progress notifications from its events, reads the report, lists
//! pull requests and measures code; the gateway's roles apply, so a token without one gets
//! the API's refusal, not the tools' effects.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{TestApp, bare_remote, fixture_repo, model_answering, token, with_jwt_auth};

/// Runs the Python client against `server` (empty: `orion mcp` embeds an Orion with its data
/// in `data`) with `token` as the client token; what it saw.
fn client(server: &str, token: &str, repo: &Path, data: &Path, remote: Option<&Path>) -> Value {
    client_over(
        env!("CARGO_BIN_EXE_orion"),
        server,
        token,
        repo,
        data,
        remote,
    )
}

/// The Python client over `transport`: the orion binary (stdio), or `--http` (the gateway's
/// `/mcp`).
fn client_over(
    transport: &str,
    server: &str,
    token: &str,
    repo: &Path,
    data: &Path,
    remote: Option<&Path>,
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/mcp_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(transport)
        .arg(server)
        .arg(repo)
        .args(remote)
        .env("ORION__CLIENT__TOKEN", token)
        .env("ORION__DATA_DIR", data)
        .output()
        .expect("python3 runs (scripts/test.sh installs the mcp package)");
    assert!(
        out.status.success(),
        "the MCP client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[actix_rt::test]
async fn an_mcp_client_submits_waits_with_progress_and_reads_the_report_and_a_diff() {
    let model =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 2\n=== END\n").await;
    let model_url = format!("{}/v1", model.uri());
    let app = TestApp::spawn_with(move |s| {
        with_jwt_auth(s);
        s.llm.base_url = Some(model_url);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
    })
    .await;
    let (_keep, remote) = bare_remote();
    let repo = fixture_repo();
    let (base, path) = (app.base.clone(), repo.path().to_owned());
    let submitter = token("submitter");
    let data = app.data.path().to_owned();
    let seen =
        tokio::task::spawn_blocking(move || client(&base, &submitter, &path, &data, Some(&remote)))
            .await
            .unwrap();
    assert_eq!(seen["server"], "orion");
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for tool in [
        "submit_task",
        "list_tasks",
        "get_task",
        "task_functions",
        "wait_task",
        "cancel_task",
        "list_pulls",
        "get_pull",
        "review_pull",
        "usage",
        "code_metrics",
        "code_outline",
        "code_definition",
    ] {
        assert!(tools.contains(&tool), "{tool} in {tools:?}");
    }
    // The API tools take what the API takes: their schemas are the OpenAPI document's.
    let document: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    let schemas = &document["components"]["schemas"];
    let submit = &seen["schemas"]["submit_task"];
    assert_eq!(submit["required"], serde_json::json!(["kind", "repo"]));
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&submit["properties"]),
        keys(&schemas["TaskSubmission"]["properties"])
    );
    let kinds = &submit["properties"]["kind"]["anyOf"];
    assert!(
        kinds[0]["enum"].as_array().is_some_and(|k| k.len() >= 7),
        "{submit}"
    );
    assert_eq!(kinds, &schemas["TaskKind"]["anyOf"]);
    let functions = &seen["schemas"]["task_functions"]["properties"];
    assert_eq!(
        (&functions["id"]["format"], &functions["limit"]["maximum"]),
        (&Value::from("uuid"), &Value::from(2000))
    );
    assert_eq!(
        seen["schemas"]["review_pull"]["properties"]["decision"]["enum"],
        serde_json::json!(["approve", "request_changes"])
    );
    // And the API's own check answers what it does not take.
    assert_eq!(seen["juggle"][0], true, "{seen}");
    assert!(
        seen["juggle"][1]
            .as_str()
            .unwrap()
            .starts_with("422 unknown_task_kind"),
        "{seen}"
    );
    assert_eq!(seen["submitted_error"], false, "{seen}");
    assert_eq!(seen["waited"]["status"], "completed", "{seen}");
    assert!(
        seen["waited"]["result"]["summary"]["files"].as_u64() > Some(0),
        "the report: {seen}"
    );
    assert!(
        !seen["progress"].as_array().unwrap().is_empty(),
        "progress notifications from the task's events: {seen}"
    );
    assert_eq!(
        (
            &seen["functions"]["count"],
            seen["functions"]["items"].as_array().map(Vec::len)
        ),
        (&seen["waited"]["result"]["summary"]["functions"], Some(3)),
        "{seen}"
    );
    assert_eq!(seen["pulls_error"], false, "{seen}");
    assert!(
        seen["metrics"].as_array().is_some_and(|m| !m.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["unknown_error"], true);
    // Resources: the task's report, and the pull request's diff.
    assert_eq!(
        seen["templates"],
        serde_json::json!(["orion://pulls/{id}/diff", "orion://tasks/{id}"])
    );
    assert_eq!(seen["report_resource"]["status"], "completed", "{seen}");
    assert!(
        seen["elsewhere_read"].as_str().is_some(),
        "an unknown resource is an error: {seen}"
    );
    assert_eq!(seen["developed"], "awaiting_review", "{seen}");
    let diff = seen["diff"].as_str().unwrap();
    assert!(diff.contains("+    return x * 2"), "{diff}");
    // An id is an id: one that would climb to another route is refused before any call.
    assert_eq!(seen["climbing_error"], true, "{seen}");
    assert!(
        seen["climbing_text"]
            .as_str()
            .unwrap()
            .contains("is not a task id"),
        "{seen}"
    );

    // A token the gateway refuses: every API tool answers with the refusal, nothing happens.
    let (base, path) = (app.base.clone(), repo.path().to_owned());
    let data = app.data.path().to_owned();
    let seen =
        tokio::task::spawn_blocking(move || client(&base, "not-a-token", &path, &data, None))
            .await
            .unwrap();
    assert_eq!(seen["submitted_error"], true, "{seen}");
    assert!(
        seen["pulls_text"].as_str().unwrap().starts_with("401"),
        "{seen}"
    );
    let admin = crate::security::bearer(&token("admin"));
    let tasks = crate::security::call(&app, "GET", "/v1/tasks", Some(&admin), None).await;
    assert_eq!(
        tasks.body["items"].as_array().map(Vec::len),
        Some(2),
        "only the first client's two tasks: {}",
        tasks.body
    );
}

#[test]
fn without_a_server_orion_mcp_embeds_an_orion_for_the_session() {
    let repo = fixture_repo();
    let data = crate::support::TempDir::new();
    let seen = client("", "", repo.path(), data.path(), None);
    assert_eq!(seen["waited"]["status"], "completed", "{seen}");
    assert!(
        seen["waited"]["result"]["summary"]["files"].as_u64() > Some(0),
        "{seen}"
    );
    assert!(
        data.path().join("orion.db").exists()
            || std::fs::read_dir(data.path()).unwrap().next().is_some(),
        "the embedded Orion kept its store in the data directory"
    );
}

#[actix_rt::test]
async fn the_gateway_serves_mcp_at_slash_mcp_with_the_callers_own_role() {
    let app = TestApp::spawn_with(with_jwt_auth).await;
    let repo = fixture_repo();
    let (base, path, data) = (
        app.base.clone(),
        repo.path().to_owned(),
        app.data.path().to_owned(),
    );
    let submitter = token("submitter");
    let seen = tokio::task::spawn_blocking(move || {
        client_over("--http", &base, &submitter, &path, &data, None)
    })
    .await
    .unwrap();
    assert_eq!(seen["server"], "orion");
    assert!(seen["tools"].as_array().unwrap().len() >= 11, "{seen}");
    assert_eq!(seen["waited"]["status"], "completed", "{seen}");
    assert!(!seen["progress"].as_array().unwrap().is_empty(), "{seen}");
    assert_eq!(seen["report_resource"]["status"], "completed", "{seen}");
    // The code tools would read the gateway's own files: refused over HTTP.
    assert!(
        seen["metrics"]
            .as_str()
            .is_some_and(|m| m.contains("read local files")),
        "{seen}"
    );

    // A viewer reaches /mcp, but submitting is the API's to refuse: 403, and no task.
    let (base, path, data) = (
        app.base.clone(),
        repo.path().to_owned(),
        app.data.path().to_owned(),
    );
    let viewer = token("viewer");
    let seen = tokio::task::spawn_blocking(move || {
        client_over("--http", &base, &viewer, &path, &data, None)
    })
    .await
    .unwrap();
    assert_eq!(seen["submitted_error"], true, "{seen}");
    assert_eq!(seen["pulls_error"], false, "a viewer may read: {seen}");

    // Without credentials, /mcp itself is refused, whatever the method.
    for method in ["GET", "POST", "DELETE"] {
        let answer = crate::security::call(&app, method, "/mcp", None, None).await;
        assert_eq!(answer.status, 401, "{method} /mcp");
    }
    let admin = crate::security::bearer(&token("admin"));
    let tasks = crate::security::call(&app, "GET", "/v1/tasks", Some(&admin), None).await;
    assert_eq!(
        tasks.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        tasks.body
    );
}
