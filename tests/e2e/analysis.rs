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

/// Every function an analysis measured is stored with its report and read back through the
/// API a page at a time: exactly the rows `orion code metrics` gives for the same tree, in
/// its order, numbered without a gap. Bad paging parameters, and tasks that have no list,
/// get their own errors.
#[actix_rt::test]
async fn an_analysis_stores_every_function_and_the_api_pages_through_them() {
    let app = TestApp::spawn().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let id = app.submit(json!({ "kind": "analyze", "repo": root })).await;
    let task = app.wait_for(&id, "completed").await;
    let report = &task["result"];
    let count = report["function_list"]["count"].as_u64().unwrap();
    assert_eq!(Some(count), report["summary"]["functions"].as_u64());
    assert!(count > 1000, "{count} functions");

    const PAGE: u64 = 997;
    let (mut items, mut after, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let (status, page) = app
            .get(&format!("/v1/tasks/{id}/functions?limit={PAGE}{after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["count"], count);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        pages += 1;
        match page["next_cursor"].as_u64() {
            Some(cursor) => after = format!("&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, count.div_ceil(PAGE));
    let expected: Vec<Value> = orion_services::code::function_rows(std::path::Path::new(root), 2)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(seq, row)| {
            let mut item = serde_json::to_value(row).unwrap();
            item["seq"] = seq.into();
            item
        })
        .collect();
    assert_eq!(items.len(), expected.len());
    assert!(
        items == expected,
        "the pages differ from `orion code metrics`"
    );

    let problem = |status: u16, code: &str| (status, Some(code.to_owned()));
    for (query, expected) in [
        ("?limit=0", problem(400, "invalid_parameter")),
        ("?limit=2001", problem(400, "invalid_parameter")),
        ("?after=-1", problem(400, "invalid_parameter")),
        ("?after=4294967296", problem(400, "invalid_parameter")),
        ("?after=ten", problem(400, "invalid_parameter")),
    ] {
        let (status, answer) = app.get(&format!("/v1/tasks/{id}/functions{query}")).await;
        let code = answer["code"].as_str().map(str::to_owned);
        assert_eq!((status, code), expected, "{query}: {answer}");
    }
    let (status, past) = app
        .get(&format!("/v1/tasks/{id}/functions?after={count}"))
        .await;
    assert_eq!(
        (
            status,
            past["items"].as_array().map(Vec::len),
            &past["next_cursor"]
        ),
        (200, Some(0), &Value::Null),
        "past the end: an empty last page"
    );
    let repo = git_fixture();
    let diff = app
        .submit(json!({ "kind": "analyze", "repo": repo.path(), "diff": "HEAD~1..HEAD" }))
        .await;
    app.wait_for(&diff, "completed").await;
    let unknown = uuid::Uuid::now_v7();
    for (task, expected) in [
        (diff.as_str(), problem(404, "no_function_list")),
        (&unknown.to_string(), problem(404, "task_not_found")),
        ("not-a-task", problem(400, "invalid_task_id")),
    ] {
        let (status, answer) = app.get(&format!("/v1/tasks/{task}/functions")).await;
        let code = answer["code"].as_str().map(str::to_owned);
        assert_eq!((status, code), expected, "{task}: {answer}");
    }
    // A task of another kind whose result says it has a list, and an analyze task whose list
    // does not read: neither has one to page.
    let lifecycle = &app.services.lifecycle;
    for (kind, result) in [
        (
            orion_bus::TaskKind::Review,
            json!({ "function_list": { "id": uuid::Uuid::now_v7(), "count": 3 } }),
        ),
        (
            orion_bus::TaskKind::Analyze,
            json!({ "function_list": "every one" }),
        ),
    ] {
        let spec = orion_bus::TaskSpec::new(
            kind,
            root,
            Some("x".into()),
            None,
            orion_bus::Priority::Normal,
        )
        .unwrap();
        let task = lifecycle
            .store()
            .create_task(spec, None, Some("test"))
            .await
            .unwrap()
            .0;
        for to in [
            orion_bus::TaskStatus::Assigned,
            orion_bus::TaskStatus::Running,
        ] {
            lifecycle
                .advance(task.id, to, orion_services::lifecycle::Change::default())
                .await
                .unwrap();
        }
        lifecycle
            .advance(
                task.id,
                orion_bus::TaskStatus::Completed,
                orion_services::lifecycle::Change::completed(result),
            )
            .await
            .unwrap();
        let (status, answer) = app.get(&format!("/v1/tasks/{}/functions", task.id)).await;
        let code = answer["code"].as_str().map(str::to_owned);
        assert_eq!(
            (status, code),
            problem(404, "no_function_list"),
            "{kind:?}: {answer}"
        );
    }
    // The report itself still reads as it did.
    let (_, again) = app.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(&again["result"], report);
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
