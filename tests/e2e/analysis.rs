//! The Analyzer and the Architect end to end through REST, in embedded mode (the cluster
//! test runs them across processes too).

use serde_json::{Value, json};

use crate::support::{TestApp, git, git_fixture};

fn encode(repo: &str) -> String {
    repo.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[actix_rt::test]
async fn an_analysis_reports_complexity_hotspots_and_suggestions_and_a_suggestion_becomes_a_task() {
    let app = TestApp::spawn().await;
    let repo = git_fixture();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_path }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    let report = &task["result"];

    let tangled = &report["complex_functions"][0];
    assert_eq!(
        (
            tangled["path"].as_str(),
            tangled["name"].as_str(),
            tangled["cyclomatic"].as_u64(),
            tangled["cognitive"].as_u64(),
            tangled["max_nesting"].as_u64()
        ),
        (
            Some("app/core.py"),
            Some("tangled"),
            Some(13),
            Some(18),
            Some(4)
        )
    );
    assert_eq!(report["hotspots"][0]["path"], "app/core.py");
    assert_eq!(report["hotspots"][0]["churn"], 3);
    let paths: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        !paths.contains(&"ignored/skip.py"),
        ".gitignore is respected: {paths:?}"
    );
    // debt: (13-10)*5 + (18-15)*5 for `tangled`, nothing else over a threshold.
    assert_eq!(report["summary"]["debt_minutes"], 30);

    let suggestion = &report["suggestions"][0];
    assert_eq!(suggestion["title"], "Simplify `tangled` in app/core.py");
    assert_eq!(suggestion["evidence"]["churn"], 3);
    let path = format!("/v1/tasks/{id}/suggestions/0/submit");
    let (status, _, develop) = app.post_json(&path, &json!({})).await;
    assert_eq!(
        (status, develop["kind"].as_str(), develop["repo"].as_str()),
        (202, Some("develop"), Some(repo_path.as_str()))
    );
    assert!(
        develop["prompt"]
            .as_str()
            .unwrap()
            .contains("cyclomatic complexity 13")
    );
    let (status, _, again) = app.post_json(&path, &json!({})).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &develop["id"]),
        "one suggestion makes one task"
    );
    let (status, _, missing) = app
        .post_json(&format!("/v1/tasks/{id}/suggestions/9/submit"), &json!({}))
        .await;
    assert_eq!(
        (status, missing["code"].as_str()),
        (404, Some("suggestion_not_found"))
    );
}

#[actix_rt::test]
async fn a_second_analysis_shows_the_trend() {
    let app = TestApp::spawn().await;
    let repo = git_fixture();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let first = app
        .submit(json!({ "kind": "analyze", "repo": repo_path }))
        .await;
    app.wait_for(&first, "completed").await;
    std::fs::write(
        repo.path().join("app/more.py"),
        "def more(a):\n    # TODO: finish\n    return a if a else 0\n",
    )
    .unwrap();
    let second = app
        .submit(json!({ "kind": "analyze", "repo": repo_path }))
        .await;
    app.wait_for(&second, "completed").await;

    let (status, trend) = app
        .get(&format!("/v1/repos/{}/trend", encode(&repo_path)))
        .await;
    assert_eq!(status, 200, "{trend}");
    assert_eq!(trend["repo"], repo_path.as_str());
    let points: Vec<&str> = trend["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(points, [first.as_str(), second.as_str()], "oldest first");
    assert_eq!(trend["change"]["lines"], 3.0);
    assert_eq!(trend["change"]["functions"], 1.0);
    assert_eq!(trend["change"]["todos"], 1.0);
    assert_eq!(trend["change"]["debt_minutes"], 15.0);
    let (_, none) = app.get("/v1/repos/%2Fnever%2Fanalysed/trend").await;
    assert_eq!(
        none,
        json!({ "repo": "/never/analysed", "points": [], "change": null })
    );
}

#[actix_rt::test]
async fn a_diff_analysis_scores_only_the_change() {
    let app = TestApp::spawn().await;
    let repo = git_fixture();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_path, "diff": "HEAD~2..HEAD" }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    let report = &task["result"];
    assert_eq!(report["diff"], "HEAD~2..HEAD");
    assert_eq!(
        report["score"],
        json!({ "files_changed": 1, "files_measured": 1, "functions_changed": 2, "new_functions": 1, "added_cyclomatic": 12, "complex_functions": 1, "debt_minutes_delta": 30 })
    );
    let changed: Vec<(&str, i64)> = report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["delta_cyclomatic"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changed, [("tangled", 12), ("run", 0)]);

    let id = app
        .submit(json!({ "kind": "analyze", "repo": repo_path, "diff": "nope..HEAD" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(
        task["error"],
        json!({ "code": "unknown_revision", "message": "unknown revision `nope`" })
    );
    let (status, _, problem) = app
        .post_json(
            "/v1/tasks",
            &json!({ "kind": "analyze", "repo": repo_path, "diff": "HEAD" }),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_field"))
    );
}

#[actix_rt::test]
async fn the_architect_draws_the_dependency_graph() {
    let app = TestApp::spawn().await;
    let repo = git_fixture();
    std::fs::write(
        repo.path().join("app/util.py"),
        "from app import core\n\ndef helper(x):\n    return x\n",
    )
    .unwrap();
    git(repo.path(), &["commit", "-q", "-am", "cycle"]);
    let id = app
        .submit(json!({ "kind": "design", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    let graph = &task["result"]["languages"]["python"];
    let edges: Vec<Value> = graph["edges"].as_array().unwrap().clone();
    assert_eq!(
        edges,
        [
            json!(["app/core.py", "app/util.py"]),
            json!(["app/util.py", "app/core.py"])
        ]
    );
    assert_eq!(graph["cycles"], json!([["app/core.py", "app/util.py"]]));
    assert_eq!(task["result"]["cycles"], 1);
    assert!(
        task["result"]["mermaid"]
            .as_str()
            .unwrap()
            .contains("[\"app/core.py\"]")
    );
    assert!(task["result"]["design_note"].is_null());
}
