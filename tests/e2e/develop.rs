//! The Developer pipeline end to end in embedded mode, against a local bare git remote and a
//! fake model endpoint (wiremock speaking the OpenAI chat-completions format):
//! submit → edits → tests → pull request → request changes → revision → approve → merged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    TempDir, TestApp, bare_remote, candidate_refs, completion, eventually, first_line,
    forge_remote, get_json, git, git_fixture, git_rev, metric, model_answering, pull_of, show,
};

async fn app_with_model(server: &MockServer, test_command: &[&str]) -> TestApp {
    app_with(server, test_command, None).await
}

/// An embedded app on the fake model, optionally mirroring pull requests to a fake forge.
async fn app_with(
    server: &MockServer,
    test_command: &[&str],
    forge: Option<(&MockServer, &std::path::Path)>,
) -> TestApp {
    app_adjusted(server, test_command, forge, |_| {}).await
}

/// [`app_with`], its settings then adjusted by `adjust`.
async fn app_adjusted(
    server: &MockServer,
    test_command: &[&str],
    forge: Option<(&MockServer, &std::path::Path)>,
    adjust: impl FnOnce(&mut orion::settings::Settings),
) -> TestApp {
    let base = format!("{}/v1", server.uri());
    let command: Vec<String> = test_command.iter().map(|s| (*s).to_owned()).collect();
    // The forge serves the repositories under `dir` (`<dir>/acme/widgets.git` is
    // `acme/widgets` on it).
    let forge = forge.map(|(f, dir)| orion_services::forge::ForgeConfig {
        kind: orion_services::forge::ForgeKind::Github,
        api_url: f.uri(),
        token: "forge-token".into(),
        host: None,
        remotes: vec![format!("{}/", dir.display())],
        webhook_secret: None,
        hooks: Default::default(),
    });
    TestApp::spawn_with(move |s| {
        s.llm.base_url = Some(base);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(command);
        s.llm.prices.insert(
            "gpt-test".into(),
            orion_services::llm::Price {
                input_per_million: 2.0,
                output_per_million: 8.0,
            },
        );
        s.forges.extend(forge.map(|f| ("fake".to_owned(), f)));
        adjust(s);
    })
    .await
}

#[actix_rt::test]
async fn a_develop_task_goes_through_review_revision_and_merge() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("A reviewer asked for changes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-test",
            "=== FILE: CHANGES.md\nhelper doubles its input\n=== END\n",
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("You review a change"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-test",
            "=== COMMENT app/util.py:2\nOverflow?\n=== END\n",
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("double the helper"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", 
            "Here is the change.\n=== FILE: app/util.py\n```python\ndef helper(x):\n    return x * 2\n```\n=== END\n",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let forge = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/widgets/pulls"))
        .and(header("authorization", "Bearer forge-token"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({ "number": 7, "html_url": "https://forge.invalid/acme/widgets/pull/7" }),
        ))
        .expect(1)
        .mount(&forge)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/widgets/pulls/7/comments"))
        .and(wiremock::matchers::body_partial_json(
            json!({ "path": "app/util.py", "line": 2, "side": "RIGHT" }),
        ))
        // The comment, with the invisible mark a lost run's claim is settled by.
        .and(wiremock::matchers::body_string_contains(
            "Overflow?\\n\\n<!-- orion:",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 3 })))
        .expect(1)
        .mount(&forge)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/repos/acme/widgets/statuses/[0-9a-f]{40}$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 9 })))
        .expect(2)
        .mount(&forge)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/widgets/pulls/7/reviews"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": 1 })))
        .expect(2)
        .mount(&forge)
        .await;
    let (keep, remote) = forge_remote();
    let app = app_with(
        &server,
        &["sh", "-c", "grep -q 'x \\* 2' app/util.py"],
        Some((&forge, keep.path())),
    )
    .await;
    let main_before = git_rev(&remote, "main").unwrap();

    let id = app.submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "double the helper" })).await;
    app.wait_for(&id, "awaiting_review").await;
    let pull = pull_of(&app, &id).await;
    let pull_id = pull["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            pull["state"].as_str(),
            pull["rounds"].as_i64(),
            pull["files_changed"].as_u64()
        ),
        (Some("open"), Some(0), Some(1))
    );
    assert_eq!(pull["branch"], format!("orion/{id}"));
    assert_eq!(pull["tests"]["passed"], true);
    assert!(
        pull["diff"].as_str().unwrap().contains("+    return x * 2"),
        "{}",
        pull["diff"]
    );
    assert_eq!(
        git_rev(&remote, &format!("orion/{id}")).as_deref(),
        pull["head_oid"].as_str(),
        "the branch is pushed"
    );
    assert_eq!(
        git_rev(&remote, "main").unwrap(),
        main_before,
        "nothing lands before approval"
    );
    let (_, listed) = app.get("/v1/pulls?state=open").await;
    assert_eq!(listed["items"][0]["id"], pull_id.as_str());

    // A review task on the pull request's head: its comments are mirrored to the forge.
    let review_task = app
        .submit(json!({ "kind": "review", "repo": remote.to_string_lossy(), "diff": format!("main..orion/{id}") }))
        .await;
    let reviewed = app.wait_for(&review_task, "completed").await;
    assert_eq!(
        reviewed["result"]["comments"],
        json!([{ "path": "app/util.py", "line": 2, "body": "Overflow?" }])
    );
    assert_eq!(
        reviewed["result"]["mirrored_to"],
        "https://forge.invalid/acme/widgets/pull/7"
    );

    let reviews = format!("/v1/pulls/{pull_id}/reviews");
    let (status, _, review) = app
        .post_json(
            &reviews,
            &json!({ "decision": "request_changes", "comment": "note it in CHANGES.md" }),
        )
        .await;
    assert_eq!(
        (status, review["decision"].as_str()),
        (202, Some("request_changes"))
    );
    let revised = eventually("the revision", Duration::from_secs(30), || async {
        let (_, p) = app.get(&format!("/v1/pulls/{pull_id}")).await;
        (p["rounds"] == 1 && p["state"] == "open").then_some(p)
    })
    .await;
    app.wait_for(&id, "awaiting_review").await;
    assert_eq!(revised["files_changed"], 2);
    assert_eq!(revised["reviews"].as_array().unwrap().len(), 1);

    let (status, _, _) = app
        .post_json(
            &reviews,
            &json!({ "decision": "approve", "comment": "thanks" }),
        )
        .await;
    assert_eq!(status, 202);
    let task = app.wait_for(&id, "completed").await;
    let head = revised["head_oid"].as_str().unwrap();
    assert_eq!(task["result"]["head"], head);
    assert_eq!(
        git_rev(&remote, "main").as_deref(),
        Some(head),
        "the approved branch landed on main"
    );
    assert!(show(&remote, "main:app/util.py").contains("return x * 2"));
    assert_eq!(
        show(&remote, "main:CHANGES.md"),
        "helper doubles its input\n"
    );
    let (_, merged) = app.get(&format!("/v1/pulls/{pull_id}")).await;
    assert_eq!(
        (merged["state"].as_str(), merged["merge_commit"].as_str()),
        (Some("merged"), Some(head))
    );

    // Each round explains which files the model was shown: the one defining the helper the
    // task names first, for the words of the task in its definitions and path.
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let (context, events): (Vec<&Value>, Vec<&Value>) = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|e| e["data"]["context"].is_array());
    assert_eq!(context.len(), 2, "one choice per round");
    let chosen = &context[0]["data"]["context"][0];
    assert_eq!(chosen["path"], "app/util.py", "{}", context[0]["data"]);
    assert!(chosen["signals"]["symbols"].as_f64().unwrap() > 0.0);
    assert_eq!(context[0]["data"]["agent"], "developer");
    assert!(
        context[0]["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("showing the model app/util.py")
    );
    // Each round hands the commit to the Testing agent and the verdict back, on the bus.
    let story: Vec<String> = events
        .iter()
        .map(|e| match e["data"]["handoff"].as_str() {
            Some(to) => format!(
                "{} to {to} ({}) by {}",
                e["type"].as_str().unwrap(),
                e["data"]["step"].as_str().unwrap(),
                e["data"]["agent"].as_str().unwrap()
            ),
            None if e["data"]["paths"].is_array() => format!("edits {}", e["data"]["paths"]),
            None => e["type"].as_str().unwrap().to_owned(),
        })
        .collect();
    let round = [
        "progress to testing (test) by developer",
        "progress to developer (publish) by testing",
        "awaiting_review",
    ];
    let mut expected = vec!["queued", "assigned", "running", r#"edits ["app/util.py"]"#];
    expected.extend(round);
    expected.extend(["running", r#"edits ["CHANGES.md"]"#]);
    expected.extend(round);
    expected.extend(["running", "completed"]);
    assert_eq!(story, expected);
    assert_eq!(
        candidate_refs(&remote, &id.to_string()),
        Vec::<String>::new(),
        "no candidate ref stays on the remote"
    );
    let (status, _, late) = app
        .post_json(&reviews, &json!({ "decision": "approve" }))
        .await;
    assert_eq!(
        (status, late["code"].as_str()),
        (409, Some("pull_not_awaiting_review"))
    );

    // The ledger holds the push of each version and the merge.
    let store = app.services.lifecycle.store();
    let task_id = id.parse().unwrap();
    assert_eq!(
        store
            .effect(task_id, &format!("push:{head}"))
            .await
            .unwrap()
            .unwrap()["head"],
        head
    );
    assert_eq!(
        store
            .effect(task_id, &format!("merge:{pull_id}"))
            .await
            .unwrap()
            .unwrap()["head"],
        head
    );

    // The forge saw the pull request opened once, the review task's comment, then the request
    // for changes, then the approval.
    let (statuses, mirrored): (Vec<_>, Vec<_>) = forge
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .partition(|r| r.url.path().contains("/statuses/"));
    let mirrored: Vec<Value> = mirrored
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    // The test verdict as a commit status on each version pushed: the first and the revision.
    let statuses: Vec<(String, Value)> = statuses
        .iter()
        .map(|r| {
            (
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert_eq!(
        statuses[1].0,
        format!("/repos/acme/widgets/statuses/{head}"),
        "the merged head had its status"
    );
    for (_, status) in &statuses {
        assert_eq!(status["state"], "success");
        assert_eq!(status["context"], "orion/tests");
    }
    assert_eq!(mirrored[0]["head"], format!("orion/{id}"));
    assert_eq!(mirrored[0]["base"], "main");
    assert_eq!(
        mirrored[1]["path"], "app/util.py",
        "the review task's comment"
    );
    assert_eq!(mirrored[2]["event"], "REQUEST_CHANGES");
    // The body carries an invisible mark, by which a lost run's claim is settled.
    let body = mirrored[2]["body"].as_str().unwrap();
    assert!(
        body.starts_with("note it in CHANGES.md\n\n<!-- orion:") && body.ends_with(" -->"),
        "{body}"
    );
    assert_eq!(mirrored[3]["event"], "APPROVE");

    // Two model calls, each 1200 + 300 tokens at $2 / $8 per million.
    let (_, usage) = app.get(&format!("/v1/tasks/{id}/usage")).await;
    assert_eq!(usage["totals"]["calls"], 2);
    assert_eq!(
        (
            usage["totals"]["prompt_tokens"].as_u64(),
            usage["totals"]["completion_tokens"].as_u64()
        ),
        (Some(2400), Some(600))
    );
    assert!(
        (usage["totals"]["cost_usd"].as_f64().unwrap() - 2.0 * (1200.0 * 2.0 + 300.0 * 8.0) / 1e6)
            .abs()
            < 1e-12
    );
    assert_eq!(usage["calls"][0]["agent"], "developer");
    let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["usage"], usage["totals"], "the task shows its usage");

    // The usage API agrees with the calls recorded: by task, by model, by day.
    let (_, by_task) = app.get("/v1/usage?group_by=task").await;
    let group = |summary: &Value, key: &str| {
        summary["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {summary}"))
            .clone()
    };
    let develop = group(&by_task, &id);
    assert_eq!(
        (develop["calls"].as_u64(), develop["prompt_tokens"].as_u64()),
        (Some(2), Some(2400))
    );
    assert_eq!(group(&by_task, &review_task)["calls"], 1);
    assert_eq!(by_task["totals"]["calls"], 3);
    let (_, by_model) = app.get("/v1/usage?group_by=model").await;
    let model = group(&by_model, "gpt-test");
    assert_eq!(model["calls"], 3);
    assert!(
        (model["cost_usd"].as_f64().unwrap() - 3.0 * (1200.0 * 2.0 + 300.0 * 8.0) / 1e6).abs()
            < 1e-12
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, by_day) = app.get("/v1/usage?group_by=day").await;
    assert_eq!(group(&by_day, &today)["calls"], 3);
    let (_, later) = app
        .get("/v1/usage?group_by=agent&from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (
            later["groups"].as_array().map(Vec::len),
            later["totals"]["calls"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // The process's metrics count the same tokens and spending as the store.
    let (_, _, metrics) = app.get_text("/metrics").await;
    for (kind, tokens) in [("prompt", 3600.0), ("completion", 900.0)] {
        assert_eq!(
            metric(
                &metrics,
                "orion_model_tokens_total",
                &[("model", "gpt-test"), ("kind", kind)]
            ),
            Some(tokens)
        );
    }
    let spent = by_model["totals"]["cost_usd"].as_f64().unwrap();
    assert_eq!(
        metric(
            &metrics,
            "orion_model_cost_microdollars_total",
            &[("model", "gpt-test")]
        ),
        Some((spent * 1e6).round())
    );
    assert_eq!(
        metric(
            &metrics,
            "orion_model_requests_total",
            &[("model", "gpt-test"), ("outcome", "ok")]
        ),
        Some(3.0)
    );
    for bad in ["/v1/usage?group_by=week", "/v1/usage?from=yesterday"] {
        let (status, problem) = app.get(bad).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{bad}"
        );
    }

    // A merge delivered again after the task completed (a copy, or a crashed node's
    // redelivery) is dropped before it acts: without that, a second merge onto a base that
    // moved on would add another merge commit.
    let seed = TempDir::new();
    git(
        seed.path(),
        &["clone", "-q", &remote.to_string_lossy(), "w"],
    );
    std::fs::write(seed.path().join("w/LATER.md"), "later\n").unwrap();
    git(&seed.path().join("w"), &["add", "LATER.md"]);
    git(&seed.path().join("w"), &["commit", "-q", "-m", "later"]);
    git(&seed.path().join("w"), &["push", "-q", "origin", "main"]);
    let moved = git_rev(&remote, "main").unwrap();
    let task_now = app
        .services
        .lifecycle
        .store()
        .task(id.parse().unwrap())
        .await
        .unwrap();
    let dropped = |text: &str| {
        metric(
            text,
            "orion_bus_deliveries_total",
            &[("queue", "work.developer"), ("outcome", "drop")],
        )
        .unwrap_or(0.0)
    };
    let (_, _, before) = app.get_text("/metrics").await;
    let again = orion_bus::Assignment {
        task: task_now.clone(),
        agent: orion_bus::AgentKind::Developer,
        attempt: task_now.attempts,
        step: orion_bus::Step::Merge {
            pull: pull_id.parse().unwrap(),
        },
    };
    let bus = app.services.lifecycle.bus();
    let envelope = orion_bus::Envelope::new("test", orion_bus::Body::Assignment(Box::new(again)));
    let queue =
        orion_bus::Queue::Work(orion_bus::AgentKind::Developer, orion_bus::Priority::Normal);
    bus.enqueue(queue, &envelope).await.unwrap();
    let (app_ref, before) = (&app, dropped(&before));
    eventually(
        "the copy to be dropped",
        Duration::from_secs(20),
        || async move {
            let (_, _, text) = app_ref.get_text("/metrics").await;
            (dropped(&text) > before).then_some(())
        },
    )
    .await;
    assert_eq!(
        git_rev(&remote, "main").unwrap(),
        moved,
        "no second merge reached the remote"
    );
}

#[actix_rt::test]
async fn unsafe_or_unusable_model_output_and_failing_tests_leave_the_remote_untouched() {
    let (_keep, remote) = bare_remote();
    // The fixture gets a symbolic link out of the repository.
    let seed = TempDir::new();
    git(
        seed.path(),
        &["clone", "-q", &remote.to_string_lossy(), "w"],
    );
    let work = seed.path().join("w");
    std::os::unix::fs::symlink("/tmp", work.join("outside")).unwrap();
    // And a file over the 8 KB a prompt shows of one: the model sees it only in part.
    let table: String = (0..400)
        .map(|i| format!("def helper_step_{i}(x):\n    return x + {i}\n"))
        .collect();
    std::fs::write(work.join("app/helper_table.py"), &table).unwrap();
    git(&work, &["add", "outside", "app/helper_table.py"]);
    git(&work, &["commit", "-q", "-m", "a link and a long file"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let main_before = git_rev(&remote, "main").unwrap();

    let cases = [
        (
            "parent",
            "=== FILE: ../escape.txt\nx\n=== END\n",
            "unsafe_edit",
            "`../escape.txt` climbs out of the repository with `..`",
        ),
        (
            "absolute",
            "=== FILE: /etc/evil\nx\n=== END\n",
            "unsafe_edit",
            "`/etc/evil` is absolute; paths are relative to the repository",
        ),
        (
            "git dir",
            "=== FILE: .git/config\nx\n=== END\n",
            "unsafe_edit",
            "`.git/config` is inside `.git`",
        ),
        (
            "symlink",
            "=== FILE: outside/evil.txt\nx\n=== END\n",
            "unsafe_edit",
            "`outside/evil.txt` goes through a symbolic link",
        ),
        (
            "a file seen in part, however spelled",
            "=== FILE: ./app//helper_table.py\ndef helper_step_0(x):\n    return x * 2\n=== END\n",
            "unsafe_edit",
            "`app/helper_table.py` was shown to the model only in part: a whole-file edit of it would replace what the model did not see",
        ),
        (
            "prose",
            "I would double it.",
            "model_output_unusable",
            "the model's answer cannot be applied: the answer contains no edit block, and it is not one code block for a file shown to it; it began: \"I would double it.\"",
        ),
        (
            "tests",
            "=== FILE: app/util.py\ndef helper(x):\n    return x + 1\n=== END\n",
            "tests_failed",
            "",
        ),
    ];
    for (what, answer, code, message) in cases {
        let server = model_answering(answer).await;
        let app = app_with_model(
            &server,
            &[
                "sh",
                "-c",
                "echo 'expected x * 2'; grep -q 'x \\* 2' app/util.py",
            ],
        )
        .await;
        let id = app.submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "double the helper" })).await;
        let task = app.wait_for(&id, "failed").await;
        assert_eq!(task["error"]["code"], code, "{what}: {task}");
        if !message.is_empty() {
            assert_eq!(task["error"]["message"], message, "{what}");
        } else {
            assert!(
                task["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expected x * 2"),
                "{what}: the test output is in the message"
            );
        }
        assert_eq!(
            git_rev(&remote, "main").unwrap(),
            main_before,
            "{what}: main is untouched"
        );
        assert_eq!(
            git_rev(&remote, &format!("orion/{id}")),
            None,
            "{what}: no branch was pushed"
        );
        assert_eq!(
            candidate_refs(&remote, &id.to_string()),
            Vec::<String>::new(),
            "{what}: no candidate ref stays on the remote"
        );
        assert!(!Path::new("/tmp/evil.txt").exists() && !Path::new("/etc/evil").exists());
    }
}

#[actix_rt::test]
async fn without_a_model_a_develop_task_fails_at_once_saying_how_to_configure_one() {
    let app = TestApp::spawn().await;
    let (_keep, remote) = bare_remote();
    let id = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "x" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "model_not_configured");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ORION__LLM__BASE_URL")
    );
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("orion model fetch"),
        "the message says how to get the in-process model too"
    );
    let reviews = format!("/v1/pulls/{}/reviews", uuid::Uuid::now_v7());
    let cases = [
        (
            json!({ "decision": "approve" }),
            404,
            "pull_not_found",
            "pull request",
        ),
        (
            json!({ "decision": "merge" }),
            422,
            "invalid_field",
            "field `decision` is invalid",
        ),
        (
            json!({ "decision": "request_changes" }),
            422,
            "invalid_field",
            "field `comment` is invalid: say what to change",
        ),
    ];
    for (body, status, code, detail) in cases {
        let (answered, _, problem) = app.post_json(&reviews, &body).await;
        assert_eq!(
            (answered, problem["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{body}: {problem}"
        );
    }
}

/// `orion up` as a process, and the address it serves on.
struct Up(std::process::Child, String);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn orion_up(config: &Path, data: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orion"))
        .arg("--config")
        .arg(config)
        .args(["up", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child, "orion up").await;
    let address = line
        .split_whitespace()
        .nth(3)
        .expect("Orion listening on http://…")
        .to_owned();
    Up(child, address)
}

#[actix_rt::test]
async fn the_review_gate_survives_a_killed_process_and_approval_merges_afterwards() {
    let server =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 3\n=== END\n").await;
    let (_keep, remote) = bare_remote();
    let dir = TempDir::new();
    let config = crate::support::model_config(dir.path(), &server, "true");
    let data = dir.path().join("data");
    let client = awc::Client::new();
    let get = |url: String| get_json(&client, url);

    let first = orion_up(&config, &data).await;
    let id = crate::support::submit_to(&client, &first.1, &json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "triple the helper" })).await;
    let base = first.1.clone();
    let pull = eventually("the pull request", Duration::from_secs(30), || async {
        let task = get(format!("{base}/v1/tasks/{id}")).await?;
        if task["status"] != "awaiting_review" {
            return None;
        }
        let pulls = get(format!("{base}/v1/pulls")).await?;
        pulls["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    drop(first); // SIGKILL: no shutdown of any kind

    let second = orion_up(&config, &data).await;
    let task = get(format!("{}/v1/tasks/{id}", second.1)).await.unwrap();
    assert_eq!(
        task["status"], "awaiting_review",
        "the gate is in the store, not in the process"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["pulls", "--state", "open", "--server", &second.1])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("orion pulls prints JSON");
    assert_eq!(listed["items"][0]["id"], pull.as_str(), "{listed}");
    let usage = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["usage", "--group-by", "model", "--server", &second.1])
        .output()
        .unwrap();
    let usage: Value = serde_json::from_slice(&usage.stdout).expect("orion usage prints JSON");
    assert_eq!(usage["groups"][0]["key"], "gpt-test", "{usage}");
    assert_eq!(
        usage["groups"][0]["calls"], 1,
        "the model call survived the restart"
    );
    let review = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["review", "approve", &pull, "--server", &second.1])
        .output()
        .unwrap();
    assert!(
        review.status.success(),
        "{}",
        String::from_utf8_lossy(&review.stdout)
    );
    let base = second.1.clone();
    let done = eventually("the merge", Duration::from_secs(30), || async {
        let task = get(format!("{base}/v1/tasks/{id}")).await?;
        (task["status"] == "completed").then_some(task)
    })
    .await;
    assert_eq!(
        git_rev(&remote, "main").as_deref(),
        done["result"]["head"].as_str()
    );
    assert!(show(&remote, "main:app/util.py").contains("return x * 3"));
}

/// The model's answer that negates the fixture's helper.
const NEGATED: &str = "=== FILE: app/util.py\ndef helper(x):\n    return -x\n=== END\n";

/// A fake model asked exactly once for `first`, and, where given, exactly once more for a
/// request that contains `revision.0`, answered with `revision.1`.
async fn editing_model(first: &str, revision: Option<(&str, &str)>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", first)))
        .expect(1)
        .mount(&server)
        .await;
    if let Some((marker, answer)) = revision {
        Mock::given(method("POST"))
            .and(body_string_contains(marker))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", answer)))
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
    }
    server
}

/// The last change of status in a page of events (a progress line a step sent just before
/// it may be stored after it: progress is not ordered with status changes).
fn last_status_change(events: &Value) -> Value {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["type"] != "progress")
        .unwrap()
        .clone()
}

#[actix_rt::test]
async fn a_call_over_budget_pauses_the_task_until_a_person_raises_the_budget() {
    // The revision a reviewer asks for, later.
    let server = editing_model(
        NEGATED,
        Some((
            "minus one",
            "=== FILE: app/util.py\ndef helper(x):\n    return -x - 1\n=== END\n",
        )),
    )
    .await;
    let app = app_with_model(&server, &["sh", "-c", "true"]).await;
    let (_keep, remote) = bare_remote();
    // $8 per million answer tokens: the 4096-token allowance alone reserves $0.0328.
    let id = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "negate the helper", "budget_usd": 0.01 }))
        .await;
    let paused = app.wait_for(&id, "awaiting_approval").await;
    assert_eq!(paused["budget_usd"], 0.01);
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let pause = last_status_change(&events);
    assert_eq!(
        (
            pause["type"].as_str(),
            pause["data"]["step"]["step"].as_str()
        ),
        (Some("awaiting_approval"), Some("work"))
    );
    assert!(
        pause["data"]["needed_usd"].as_f64().unwrap() > 0.01,
        "{pause}"
    );
    assert_eq!(pause["data"]["spent_usd"], 0.0);
    let (_, usage) = app.get(&format!("/v1/tasks/{id}/usage")).await;
    assert_eq!(
        usage["totals"]["calls"], 0,
        "nothing was spent on the refused call"
    );

    let (status, _, problem) = app
        .post_json(
            &format!("/v1/tasks/{id}/budget"),
            &json!({ "budget_usd": -1 }),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_field"))
    );
    let (status, _, raised) = app
        .post_json(
            &format!("/v1/tasks/{id}/budget"),
            &json!({ "budget_usd": 1.0 }),
        )
        .await;
    assert_eq!((status, raised["budget_usd"].as_f64()), (202, Some(1.0)));
    app.wait_for(&id, "awaiting_review").await;
    let (_, usage) = app.get(&format!("/v1/tasks/{id}/usage")).await;
    assert_eq!(usage["totals"]["calls"], 1);
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["context"].is_null())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "queued",
            "assigned",
            "running",
            "awaiting_approval",
            "running",
            "progress",
            "progress",
            "progress",
            "awaiting_review"
        ]
    );

    // A revision whose model call is over budget pauses too, and resumes when the budget is
    // raised: the review step goes on where the store says the task paused.
    let spent = usage["totals"]["cost_usd"].as_f64().unwrap();
    let (status, _, _) = app
        .post_json(
            &format!("/v1/tasks/{id}/budget"),
            &json!({ "budget_usd": spent }),
        )
        .await;
    assert_eq!(
        status, 200,
        "a budget set while awaiting review resumes nothing"
    );
    let pull = pull_of(&app, &id).await;
    let first_head = pull["head_oid"].as_str().unwrap().to_owned();
    let (status, _, _) = app
        .post_json(
            &format!("/v1/pulls/{}/reviews", pull["id"].as_str().unwrap()),
            &json!({ "decision": "request_changes", "comment": "make it minus one" }),
        )
        .await;
    assert!(status < 300, "{status}");
    app.wait_for(&id, "awaiting_approval").await;
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let pause = last_status_change(&events);
    assert_eq!(pause["data"]["step"]["step"], "revise", "{pause}");
    let (status, _, _) = app
        .post_json(
            &format!("/v1/tasks/{id}/budget"),
            &json!({ "budget_usd": 10.0 }),
        )
        .await;
    assert_eq!(status, 202);
    app.wait_for(&id, "awaiting_review").await;
    let revised = pull_of(&app, &id).await;
    assert_ne!(
        revised["head_oid"],
        first_head.as_str(),
        "the revision is up for review"
    );
    assert_eq!(revised["state"], "open");
}

/// `orion dataset export` on a task whose pull request was sent back once and then approved:
/// `chat` is one line, the request that wrote the approved version and its answer;
/// `preference` is one line, the approved answer preferred over the sent-back one, on the
/// first request. Credentials in the repository, the task's words, the reviewer's comment
/// and the model's answer appear in neither file.
#[actix_rt::test]
async fn reviewed_pull_requests_export_as_chat_and_preference_data_without_credentials() {
    const CONFIGURED_KEY: &str = "Zq9-weird.shape!key";
    const SECRETS: [&str; 5] = [
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAABCDEFGHIJKLMNOP",
        "hunter2hunter2",
        "sk-proj-abcdefghijklmnopqrstuvwx1234",
        CONFIGURED_KEY,
    ];
    let server = editing_model(
        NEGATED,
        Some((
            "A reviewer asked for changes",
            "=== FILE: app/util.py\nKEY = 'sk-proj-abcdefghijklmnopqrstuvwx1234'\ndef helper(x):\n    return -x - 1\n=== END\n",
        )),
    )
    .await;
    let fixture = crate::support::git_fixture();
    std::fs::write(
        fixture.path().join("app/util.py"),
        "DEPLOY = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"\ndef helper(x):\n    return x\n",
    )
    .unwrap();
    git(fixture.path(), &["commit", "-qam", "a token in the code"]);
    let dir = TempDir::new();
    let remote = crate::support::bare_clone(&dir, fixture.path());
    let app = app_with_model(&server, &["sh", "-c", "true"]).await;
    let id = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "negate the helper (aws: AKIAABCDEFGHIJKLMNOP, model key Zq9-weird.shape!key)" }))
        .await;
    app.wait_for(&id, "awaiting_review").await;
    let pull = pull_of(&app, &id).await;
    let reviews = format!("/v1/pulls/{}/reviews", pull["id"].as_str().unwrap());
    let (status, _, _) = app
        .post_json(
            &reviews,
            &json!({ "decision": "request_changes", "comment": "minus one more; db password=hunter2hunter2" }),
        )
        .await;
    assert_eq!(status, 202);
    eventually("the revision", Duration::from_secs(30), || async {
        let (_, p) = app
            .get(&format!("/v1/pulls/{}", pull["id"].as_str().unwrap()))
            .await;
        (p["rounds"] == 1 && p["state"] == "open").then_some(())
    })
    .await;
    app.wait_for(&id, "awaiting_review").await;
    let (status, _, _) = app
        .post_json(&reviews, &json!({ "decision": "approve", "comment": "ok" }))
        .await;
    assert_eq!(status, 202);
    app.wait_for(&id, "completed").await;

    // `orion dataset export <args>` on the app's database, as a deployment that holds
    // CONFIGURED_KEY (in whatever shape: redacted wherever it appears).
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orion"))
            .args(["dataset", "export"])
            .args(args)
            .arg("--data-dir")
            .arg(app.data.path())
            .env("ORION__LLM__API_KEY", CONFIGURED_KEY)
            .output()
            .unwrap()
    };
    let export = |format: &str| {
        let out = run(&["--format", format]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{secret} in the {format} export:\n{text}"
            );
        }
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let chat = export("chat");
    assert_eq!(chat.len(), 1, "{chat:?}");
    let messages = chat[0]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    let asked = messages[1]["content"].as_str().unwrap();
    assert!(
        asked.contains("A reviewer asked for changes"),
        "the approved version's request"
    );
    assert!(
        asked.contains("def helper(x):"),
        "the code it was shown stays: {asked}"
    );
    assert!(asked.contains("[REDACTED]"), "{asked}");
    let approved = messages[2]["content"].as_str().unwrap();
    assert!(approved.contains("return -x - 1"), "{approved}");

    let preference = export("preference");
    assert_eq!(preference.len(), 1, "{preference:?}");
    let pair = &preference[0];
    let input = pair["input"]["messages"][1]["content"].as_str().unwrap();
    assert!(input.contains("negate the helper"), "{input}");
    assert!(
        !input.contains("A reviewer asked"),
        "the first request: {input}"
    );
    assert!(
        pair["preferred_output"][0]["content"]
            .as_str()
            .unwrap()
            .contains("return -x - 1")
    );
    let rejected = pair["non_preferred_output"][0]["content"].as_str().unwrap();
    assert!(rejected.contains("return -x\n"), "{rejected}");

    // A window that ends before the approval holds nothing.
    let out = run(&["--to", "2000-01-01"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    // A bad time is named.
    let out = run(&["--from", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from \"yesterday\""));
}

/// Spending caps across tasks: a task whose next call would cross the deployment's daily cap
/// pauses in `awaiting_approval` naming it (caps of another caller and another model do not
/// apply to it), `GET /v1/usage/budgets` shows each cap's spend and headroom, bad raises are
/// refused with their codes and change nothing, and an operator's raise resumes the task.
#[actix_rt::test]
async fn a_daily_cap_pauses_a_task_until_an_operator_raises_it() {
    use orion_services::budgets::{Period, SpendingCap};
    let server = editing_model(NEGATED, None).await;
    let cap = |name: &str, usd: f64, caller: Option<&str>, model: Option<&str>| SpendingCap {
        name: name.into(),
        period: Period::Day,
        usd,
        caller: caller.map(Into::into),
        model: model.map(Into::into),
    };
    let caps = vec![
        cap("bobs", 1e-6, Some("bob"), None),
        cap("other-model", 1e-6, None, Some("gpt-other")),
        // $8 per million answer tokens: the 4096-token allowance alone reserves $0.0328.
        cap("daily", 0.01, None, None),
    ];
    let app = app_adjusted(&server, &["sh", "-c", "true"], None, |s| {
        s.llm.budgets = caps;
    })
    .await;
    let (_keep, remote) = bare_remote();
    // Who submitted a task is the credential's to say, never the body's: a caller cannot
    // spend under another caller's cap (or escape its own).
    let (status, _, problem) = app
        .post_json(
            "/v1/tasks",
            &json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "x", "submitted_by": "bob" }),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_field")),
        "{problem}"
    );
    let id = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "negate the helper" }))
        .await;
    let paused = app.wait_for(&id, "awaiting_approval").await;
    assert_eq!(paused["submitted_by"], "anonymous", "{paused}");
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let pause = last_status_change(&events);
    assert_eq!(pause["data"]["cap"], "daily", "{pause}");
    assert_eq!(pause["data"]["budget_usd"], 0.01, "{pause}");
    assert!(
        pause["data"]["needed_usd"].as_f64().unwrap() > 0.01,
        "{pause}"
    );

    let (status, caps) = app.get("/v1/usage/budgets").await;
    assert_eq!(status, 200, "{caps}");
    let daily = caps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "daily")
        .unwrap()
        .clone();
    assert_eq!(
        (
            &daily["usd"],
            &daily["spent_usd"],
            &daily["remaining_usd"],
            &daily["raised"]
        ),
        (&json!(0.01), &json!(0.0), &json!(0.01), &json!(false)),
        "{daily}"
    );
    assert_eq!(
        daily["current_period"],
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    );

    // Bad raises: named, refused, and nothing moves.
    for (path, body, want) in [
        (
            "/v1/usage/budgets/nope",
            json!({ "usd": 1.0 }),
            (404, "budget_not_found"),
        ),
        (
            "/v1/usage/budgets/daily",
            json!({ "usd": -1 }),
            (422, "invalid_field"),
        ),
        (
            "/v1/usage/budgets/daily",
            json!({ "usd": "lots" }),
            (422, "invalid_field"),
        ),
        ("/v1/usage/budgets/daily", json!({}), (422, "missing_field")),
    ] {
        let (status, _, problem) = app.post_json(path, &body).await;
        assert_eq!(
            (status, problem["code"].as_str().unwrap()),
            want,
            "{path} {body}"
        );
    }
    let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["status"], "awaiting_approval");
    let (_, unchanged) = app.get("/v1/usage/budgets").await;
    assert_eq!(unchanged, caps, "a refused raise changed a cap");

    let (status, _, raised) = app
        .post_json("/v1/usage/budgets/daily", &json!({ "usd": 1.0 }))
        .await;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["resumed"], json!([id]), "{raised}");
    assert_eq!(
        (&raised["cap"]["usd"], &raised["cap"]["raised"]),
        (&json!(1.0), &json!(true))
    );
    app.wait_for(&id, "awaiting_review").await;
    let (_, usage) = app.get(&format!("/v1/tasks/{id}/usage")).await;
    let spent = usage["totals"]["cost_usd"].as_f64().unwrap();
    assert!(spent > 0.0, "{usage}");
    let (_, caps) = app.get("/v1/usage/budgets").await;
    let daily = caps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "daily")
        .unwrap()
        .clone();
    assert_eq!(daily["spent_usd"].as_f64(), Some(spent), "{daily}");
    assert!((daily["remaining_usd"].as_f64().unwrap() - (1.0 - spent)).abs() < 1e-9);
    // Another caller's cap counts none of this caller's spend.
    let bobs = caps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bobs")
        .unwrap();
    assert_eq!(bobs["spent_usd"], 0.0, "{bobs}");
}

#[actix_rt::test]
async fn a_review_task_anchors_the_models_comments_to_changed_lines() {
    let server = MockServer::start().await;
    let answer = "=== COMMENT app/core.py:6\nThis function is too tangled to test.\n=== END\n\
                  === COMMENT app/core.py:999\nNo such line.\n=== END\n\
                  === COMMENT README.md:1\nNot changed.\n=== END\n\
                  === COMMENT somewhere\nNo line.\n=== END\n";
    Mock::given(method("POST"))
        .and(body_string_contains("    6 | def tangled(a, b, c):"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", answer)))
        .expect(1)
        .mount(&server)
        .await;
    let app = app_with_model(&server, &["true"]).await;
    let repo = git_fixture();
    let id = app
        .submit(json!({ "kind": "review", "repo": repo.path().to_string_lossy(), "diff": "HEAD~2..HEAD", "prompt": "look for risk" }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    let result = &task["result"];
    assert_eq!(
        result["comments"],
        json!([{ "path": "app/core.py", "line": 6, "body": "This function is too tangled to test." }])
    );
    assert_eq!(
        result["rejected"],
        json!([
            "`somewhere` is not `path:line`",
            "app/core.py:999 is not a line of a changed file",
            "README.md:1 is not a line of a changed file"
        ])
    );
    assert_eq!(result["metrics"]["score"]["functions_changed"], 2);
    assert_eq!(result["metrics"]["functions"][0]["name"], "tangled");

    let id = app
        .submit(json!({ "kind": "review", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "missing_diff");
}

#[actix_rt::test]
async fn a_test_task_runs_the_repositorys_tests_at_a_ref_in_the_sandbox() {
    let server = MockServer::start().await;
    let app = app_with_model(
        &server,
        &[
            "sh",
            "-c",
            "echo checking; grep -q 'x + 1' app/core.py || grep -q 'helper(v) + 1' app/core.py",
        ],
    )
    .await;
    let (_keep, remote) = bare_remote();
    let id = app
        .submit(json!({ "kind": "test", "repo": remote.to_string_lossy(), "ref": "main" }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    assert_eq!(
        (
            task["result"]["passed"].as_bool(),
            task["result"]["timed_out"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(task["result"]["output"], "checking\n");

    let failing = app_with_model(&server, &["sh", "-c", "echo 2 failed; exit 1"]).await;
    let id = failing
        .submit(json!({ "kind": "test", "repo": remote.to_string_lossy(), "ref": "main" }))
        .await;
    let task = failing.wait_for(&id, "completed").await;
    assert_eq!(
        (
            task["result"]["passed"].as_bool(),
            task["result"]["exit_code"].as_i64()
        ),
        (Some(false), Some(1)),
        "failing tests are the finding"
    );
    let id = failing
        .submit(
            json!({ "kind": "test", "repo": remote.to_string_lossy(), "ref": "no-such-branch" }),
        )
        .await;
    assert_eq!(
        failing.wait_for(&id, "failed").await["error"]["code"],
        "unknown_revision"
    );
}

#[actix_rt::test]
async fn orion_run_develop_stops_at_the_review_gate_and_prints_the_pull_request() {
    let server =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 2\n=== END\n").await;
    let (_keep, remote) = bare_remote();
    let dir = TempDir::new();
    let config = crate::support::model_config(dir.path(), &server, "grep -q 'x [*] 2' app/util.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_orion"))
            .arg("--config")
            .arg(&config)
            .args(["run", "develop", "--repo"])
            .arg(&remote)
            .args(["--prompt", "double the helper", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("awaiting_review"), "{stdout}");
    assert!(
        stdout.contains("1 files, +1 -1; tests: passed"),
        "the pull request line: {stdout}"
    );
    assert!(stdout.contains("+    return x * 2"), "the diff: {stdout}");
    assert!(
        stdout.contains("orion review approve"),
        "how to review: {stdout}"
    );
    assert!(
        stderr.contains(r#""handoff":"testing""#) && stderr.contains(r#""handoff":"developer""#),
        "the progress shows both hand-offs: {stderr}"
    );
}

#[actix_rt::test]
async fn the_local_model_drives_a_develop_task_on_the_example_repository() {
    let model = crate::llm::local_model_file();
    let app = TestApp::spawn_with(move |s| {
        s.llm.provider = orion::settings::LlmProvider::Local;
        s.llm.model_path = Some(model);
        s.developer.test_command = Some(vec![
            "python3".into(),
            "-m".into(),
            "pytest".into(),
            "-q".into(),
        ]);
    })
    .await;
    let (_dir, _, remote) = crate::devops::example_remote("python-hello", "feat: greet");
    let main_before = git_rev(&remote, "main").unwrap();
    let id = app
        .submit(json!({
            "kind": "develop",
            "repo": remote.to_string_lossy(),
            "prompt": "In hello/__init__.py, add a function farewell(name) that returns f\"Goodbye, {name}!\".",
        }))
        .await;
    let task = crate::support::eventually(
        "the task to reach the gate or end",
        Duration::from_secs(600),
        || async {
            let (_, task) = app.get(&format!("/v1/tasks/{id}")).await;
            ["awaiting_review", "failed", "completed"]
                .contains(&task["status"].as_str()?)
                .then_some(task)
        },
    )
    .await;
    // What the model writes differs between CPUs (greedy decoding picks other tokens where
    // the kernels round differently): this asserts the pipeline, never the model's words.
    // Orion writes the edit frame for the file the prompt names, so the answer always parses;
    // the repository's tests then decide.
    let status = task["status"].as_str().unwrap();
    let (_, events) = app.get(&format!("/v1/tasks/{id}/events")).await;
    let messages: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["message"].as_str())
        .collect();
    let first = |says: &dyn Fn(&str) -> bool| {
        messages
            .iter()
            .position(|m| says(m))
            .unwrap_or_else(|| panic!("no such event in {messages:#?}\n{task}"))
    };
    let context = first(&|m| m.starts_with("showing the model"));
    let writing =
        first(&|m| m.starts_with("the model is writing") || m.starts_with("the model wrote"));
    let edits = first(&|m| m == "the answer edits hello/__init__.py");
    assert!(
        context < writing && writing < edits,
        "context, then the answer streamed, then its edits: {messages:#?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("taken as the new")),
        "the framed answer needs no fallback: {messages:#?}"
    );
    match status {
        "awaiting_review" => {
            let pull = pull_of(&app, &id).await;
            assert_eq!(pull["tests"]["passed"], true, "{pull}");
            let diff = pull["diff"].as_str().unwrap();
            assert!(diff.contains("+++ b/hello/__init__.py"), "{diff}");
            assert!(
                diff.lines().filter(|l| l.starts_with("+++ ")).count() == 1,
                "the named file alone: {diff}"
            );
        }
        "failed" => {
            assert_eq!(task["error"]["code"], "tests_failed", "{task}");
            assert!(
                task["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("python3 -m pytest -q` failed:\n"),
                "the failure quotes the test output: {task}"
            );
        }
        other => panic!("a develop task stops at review or fails; it is {other}: {task}"),
    }
    let usage = &task["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 0
            && usage["completion_tokens"].as_u64().unwrap() > 0,
        "{task}"
    );
    assert_eq!(usage["cost_usd"], 0.0, "the local model costs nothing");
    assert_eq!(
        git_rev(&remote, "main").unwrap(),
        main_before,
        "nothing lands before approval"
    );
}
