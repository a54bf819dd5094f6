//! Cluster mode across processes: one `orion gateway` and two `orion node` processes on one
//! NATS and one Postgres, watched by a plain NATS subscriber as an external monitor would.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use orion_bus::{BusConfig, NatsBus, Subjects};
use serde_json::{Value, json};

use crate::support::{
    PgDatabase, Process, TempDir, auth_env, bare_remote, candidate_refs, client_as, eventually,
    first_line, get_json, git_fixture, git_rev, metric, model_answering, nats_url, unique,
};

pub(crate) fn orion(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orion"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// `orion migrate`: the schema the nodes and the gateway expect.
pub(crate) fn migrate(env: &[(&str, String)]) {
    let migrated = orion(env, &["migrate"])
        .stdout(Stdio::null())
        .status()
        .expect("run orion migrate");
    assert!(migrated.success(), "orion migrate failed");
}

/// Starts `orion gateway` and waits until it is ready; returns the process and its base URL.
pub(crate) async fn start_gateway(env: &[(&str, String)]) -> (Process, String) {
    let mut gateway = Process(
        orion(env, &["gateway"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut gateway.0, "the gateway").await;
    let base = line
        .trim()
        .strip_prefix("gateway listening on ")
        .expect("the gateway prints its address")
        .to_owned();
    let client = awc::Client::new();
    eventually(
        "the gateway to be ready",
        Duration::from_secs(20),
        || async {
            let response = client.get(format!("{base}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    (gateway, base)
}

/// What every process of one test's cluster shares: the database, the bus and its prefix.
pub(crate) fn cluster_env(db_url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ORION__DATABASE__URL", db_url.to_owned()),
        ("ORION__BUS__URL", nats_url()),
        ("ORION__BUS__PREFIX", prefix.to_owned()),
        ("ORION__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        // A cluster allows no repository until told where they may be: the tests' own
        // repositories live in the temporary directory.
        (
            "ORION__SECURITY__REPO_ROOTS",
            format!("[{:?}]", std::env::temp_dir().canonicalize().unwrap()),
        ),
    ];
    env.extend(auth_env());
    env
}

/// A cluster's shared environment with a fresh, migrated database and a fresh prefix named
/// after `stem`.
pub(crate) async fn migrated_cluster(
    stem: &str,
) -> (PgDatabase, String, Vec<(&'static str, String)>) {
    let db = PgDatabase::create().await;
    let prefix = unique(stem);
    let env = cluster_env(&db.url, &prefix);
    migrate(&env);
    (db, prefix, env)
}

/// A cluster's shared environment with a fresh database and prefix, and a fake model that
/// answers every call with an edit doubling the fixture's helper.
pub(crate) async fn model_cluster(
    stem: &str,
) -> (
    wiremock::MockServer,
    PgDatabase,
    String,
    Vec<(&'static str, String)>,
) {
    let model =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 2\n=== END\n").await;
    let db = PgDatabase::create().await;
    let prefix = unique(stem);
    let mut env = cluster_env(&db.url, &prefix);
    env.extend([
        ("ORION__LLM__BASE_URL", format!("{}/v1", model.uri())),
        ("ORION__LLM__MODEL", "gpt-test".to_owned()),
    ]);
    (model, db, prefix, env)
}

/// A bus on the tests' NATS server under `prefix`, as a monitor or an attacker would connect.
pub(crate) async fn test_bus(prefix: &str) -> NatsBus {
    NatsBus::connect(
        &nats_url(),
        Subjects::new(prefix.to_owned()).unwrap(),
        BusConfig::default(),
    )
    .await
    .unwrap()
}

/// An `orion node` process with a coordinator and an analyzer, named `name`.
pub(crate) fn analyzer_node(env: &[(&str, String)], name: &str) -> Process {
    Process(
        orion(
            env,
            &["node", "--name", name, "--agents", "coordinator,analyzer"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    )
}

/// `orion node` processes with a coordinator and an analyzer each, by name.
pub(crate) fn analyzer_nodes(env: &[(&str, String)], names: &[&str]) -> Vec<Process> {
    names.iter().map(|name| analyzer_node(env, name)).collect()
}

/// Deletes the test's streams and database.
pub(crate) async fn tear_down(prefix: String, db: PgDatabase) {
    delete_streams(prefix).await;
    db.drop_now().await;
}

/// Deletes the streams of `prefix` on the tests' NATS server.
pub(crate) async fn delete_streams(prefix: String) {
    let subjects = Subjects::new(prefix).unwrap();
    NatsBus::connect(&nats_url(), subjects, BusConfig::default())
        .await
        .unwrap()
        .delete_streams()
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_gateway_and_two_nodes_complete_tasks_seen_by_a_plain_nats_subscriber() {
    let (db, prefix, env) = migrated_cluster("c").await;
    // The monitor subscribes before anything happens.
    let monitor = async_nats::connect(nats_url())
        .await
        .expect("NATS is running");
    let mut events = monitor
        .subscribe(format!("{prefix}.events.>"))
        .await
        .unwrap();
    let mut health = monitor
        .subscribe(format!("{prefix}.health.*"))
        .await
        .unwrap();
    monitor.flush().await.unwrap();

    let _node_a = Process(
        orion(
            &env,
            &[
                "node",
                "--name",
                "node-a",
                "--agents",
                "coordinator,analyzer",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let _node_b = Process(
        orion(
            &env,
            &[
                "node",
                "--name",
                "node-b",
                "--agents",
                "coordinator,analyzer,developer,architect,testing",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let (gateway, base) = start_gateway(&env).await;
    let client = client_as("admin");

    let repo = git_fixture();
    let mut submitted = Vec::new();
    for i in 0..8 {
        let body = match i {
            6 => {
                json!({ "kind": "test", "repo": repo.path().to_string_lossy() })
            }
            7 => json!({ "kind": "design", "repo": repo.path().to_string_lossy() }),
            _ => json!({ "kind": "analyze", "repo": repo.path().to_string_lossy() }),
        };
        let mut response = client
            .post(format!("{base}/v1/tasks"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let task: Value = response.json().await.unwrap();
        submitted.push(task["id"].as_str().unwrap().to_owned());
    }

    let client = &client;
    let base = &base;
    for (i, id) in submitted.iter().enumerate() {
        let want = if i == 6 { "failed" } else { "completed" };
        let task = eventually(
            &format!("task {id} to be {want}"),
            Duration::from_secs(60),
            || async move {
                let mut response = client
                    .get(format!("{base}/v1/tasks/{id}"))
                    .send()
                    .await
                    .ok()?;
                let task: Value = response.json().await.ok()?;
                (task["status"] == want).then_some(task)
            },
        )
        .await;
        match i {
            6 => assert_eq!(task["error"]["code"], "no_test_command"),
            7 => assert_eq!(
                task["result"]["languages"]["python"]["edges"],
                json!([["app/core.py", "app/util.py"]])
            ),
            _ => {
                assert_eq!(task["result"]["totals"]["rust"]["lines"], 8);
                assert_eq!(task["result"]["hotspots"][0]["path"], "app/core.py");
            }
        }
        assert_eq!(task["attempts"], 1, "no task was done twice");
    }

    // The external monitor saw every task's whole story on `<prefix>.events.>`: in the order
    // of the events' `seq`, copies passed over (an event whose publication failed is
    // published again, and may come after a later one).
    let mut stories: HashMap<String, std::collections::BTreeMap<i64, String>> = HashMap::new();
    let finished = |stories: &HashMap<String, std::collections::BTreeMap<i64, String>>| {
        submitted.iter().all(|id| {
            stories.get(id).is_some_and(|s| {
                s.len() >= 4 && s.values().any(|t| t == "completed" || t == "failed")
            })
        })
    };
    while !finished(&stories) {
        let message = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events in time")
            .unwrap();
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(envelope["v"], 1);
        assert_eq!(envelope["type"], "task.event");
        let event = &envelope["payload"];
        let task = event["task_id"].as_str().unwrap().to_owned();
        assert_eq!(
            message.subject.as_str(),
            format!("{prefix}.events.{task}.{}", event["type"].as_str().unwrap())
        );
        stories.entry(task).or_default().insert(
            event["seq"].as_i64().unwrap(),
            event["type"].as_str().unwrap().to_owned(),
        );
    }
    for (i, id) in submitted.iter().enumerate() {
        let end = if i == 6 { "failed" } else { "completed" };
        let story: Vec<&str> = stories[id].values().map(String::as_str).collect();
        assert_eq!(
            story,
            ["queued", "assigned", "running", end],
            "story of {id}"
        );
    }

    // Both nodes announce themselves.
    let mut nodes = HashSet::new();
    while nodes.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), health.next())
            .await
            .expect("heartbeats")
            .unwrap();
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        nodes.insert(envelope["payload"]["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        nodes,
        HashSet::from(["node-a".to_owned(), "node-b".to_owned()])
    );
    // The gateway keeps the same view for GET /v1/agents.
    let cluster = eventually(
        "both nodes in /v1/agents",
        Duration::from_secs(20),
        || async {
            let cluster = get_json(client, format!("{base}/v1/agents")).await?;
            (cluster["nodes"].as_array()?.len() == 2).then_some(cluster)
        },
    )
    .await;
    assert_eq!(cluster["nodes"][0]["node"], "node-a");
    assert_eq!(cluster["nodes"][1]["state"], "healthy");
    assert_eq!(cluster["agents"]["analyzer"]["healthy_nodes"], 2);
    assert_eq!(cluster["agents"]["developer"]["healthy_nodes"], 1);
    assert_eq!(cluster["agents"]["devops"]["healthy_nodes"], 0);

    drop(gateway);
    tear_down(prefix, db).await;
}

/// The develop pipeline across processes: the Developer on one node, the Testing agent on
/// another with a work directory of its own, so the commit under test can only travel
/// through the remote (the candidate ref) and the hand-offs only through the bus.
#[actix_rt::test]
async fn a_develop_task_hands_its_commit_from_the_developer_node_to_the_testing_node() {
    let (_model, db, prefix, env) = model_cluster("c").await;
    let (_keep, remote) = bare_remote();
    let main_before = git_rev(&remote, "main").unwrap();
    let (dir_a, dir_b) = (TempDir::new(), TempDir::new());
    // Every process writes its finished spans to a file of its own.
    let traces = TempDir::new();
    let trace_file = |process: &str| traces.path().join(format!("{process}.jsonl"));
    let node = |name: &str, agents: &str, data: &TempDir| {
        let mut env = env.clone();
        env.push((
            "ORION_TRACE_FILE",
            trace_file(name).to_string_lossy().into_owned(),
        ));
        env.push((
            "ORION__DATA_DIR",
            data.path().to_string_lossy().into_owned(),
        ));
        // The Testing node's test command fails unless it sees the model's change.
        env.push((
            "ORION__DEVELOPER__TEST_COMMAND",
            r#"["sh", "-c", "grep -q 'x [*] 2' app/util.py"]"#.to_owned(),
        ));
        // Each node serves its metrics on a port of its own choosing, which it prints first.
        env.push(("ORION__NODE__METRICS_LISTEN", "127.0.0.1:0".to_owned()));
        // A node that only runs tests is given no database at all (as the chart's test pool).
        if agents == "testing" {
            env.retain(|(key, _)| *key != "ORION__DATABASE__URL");
        }
        Process(
            orion(&env, &["node", "--name", name, "--agents", agents])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    migrate(&env);
    let mut gateway_env = env.clone();
    gateway_env.push((
        "ORION_TRACE_FILE",
        trace_file("gateway").to_string_lossy().into_owned(),
    ));
    let (gateway, base) = start_gateway(&gateway_env).await;
    let _developer = node("node-dev", "coordinator,developer", &dir_a);
    let mut testing = node("node-test", "testing", &dir_b);
    let line = first_line(&mut testing.0, "the testing node").await;
    let metrics_url = line
        .trim()
        .strip_prefix("node node-test serves metrics on ")
        .expect("the node prints where its metrics are")
        .to_owned();

    let client = client_as("admin");
    let id = crate::support::submit_to(&client, &base, &json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "double the helper" })).await;
    let (client, base, id) = (&client, &base, &id);
    let task = eventually("the pull request", Duration::from_secs(60), || async move {
        let task = get_json(client, format!("{base}/v1/tasks/{id}")).await?;
        matches!(task["status"].as_str(), Some("awaiting_review" | "failed")).then_some(task)
    })
    .await;
    assert_eq!(task["status"], "awaiting_review", "{task}");

    let events = get_json(client, format!("{base}/v1/tasks/{id}/events"))
        .await
        .unwrap();
    let handoffs: Vec<(String, String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["handoff"].is_string())
        .map(|e| {
            let s = |k: &str| e["data"][k].as_str().unwrap().to_owned();
            (s("agent_node"), s("agent"), s("handoff"))
        })
        .collect();
    assert_eq!(
        handoffs,
        [
            ("node-dev".into(), "developer".into(), "testing".into()),
            ("node-test".into(), "testing".into(), "developer".into()),
        ]
    );
    let pulls = get_json(client, format!("{base}/v1/pulls")).await.unwrap();
    let pull = &pulls["items"][0];
    assert_eq!(pull["tests"]["passed"], true, "{pull}");
    assert_eq!(
        git_rev(&remote, &format!("orion/{id}")).as_deref(),
        pull["head_oid"].as_str(),
        "the tested commit is the pushed branch"
    );
    assert_eq!(
        candidate_refs(&remote, &id.to_string()),
        Vec::<String>::new()
    );
    assert_eq!(git_rev(&remote, "main").unwrap(), main_before);
    // The Testing node worked in its own directory and cleaned it up.
    let leftovers: Vec<_> = std::fs::read_dir(dir_b.path().join("work/tests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".repos")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // One trace follows the task from the HTTP request through both nodes (the context
    // travels in the NATS headers), down to the model call with its GenAI attributes.
    let spans = |process: &str| -> Vec<Value> {
        std::fs::read_to_string(trace_file(process))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let submit = eventually("the submission's span", Duration::from_secs(10), || async {
        spans("gateway").into_iter().find(|s| {
            s["name"] == "http.request"
                && s["attributes"]["url.path"] == "/v1/tasks"
                && s["attributes"]["http.method"] == "POST"
        })
    })
    .await;
    let trace = submit["trace_id"].as_str().unwrap().to_owned();
    let in_trace = |process: &str, name: &str| {
        spans(process)
            .into_iter()
            .filter(|s| s["trace_id"] == trace.as_str() && s["name"] == name)
            .collect::<Vec<_>>()
    };
    let trace = &trace;
    eventually(
        "the nodes' spans in the trace",
        Duration::from_secs(10),
        || async {
            (!in_trace("node-test", "perform").is_empty()
                && !in_trace("node-dev", "chat").is_empty())
            .then_some(())
        },
    )
    .await;
    assert!(
        !in_trace("node-dev", "coordinator.assign").is_empty(),
        "{trace}"
    );
    assert!(
        in_trace("node-dev", "perform").len() >= 2,
        "the developer's work and publish steps"
    );
    let chat = &in_trace("node-dev", "chat")[0];
    assert_eq!(chat["attributes"]["gen_ai.request.model"], "gpt-test");
    assert_eq!(chat["attributes"]["gen_ai.usage.input_tokens"], "1200");
    assert!(
        !in_trace("node-dev", "git").is_empty(),
        "git work is in the trace"
    );
    assert_eq!(
        in_trace("node-test", "perform")[0]["attributes"]["agent"],
        "testing"
    );

    // The Testing node's own metrics show the step it did and the delivery it settled.
    let mut response = client.get(&metrics_url).send().await.unwrap();
    let text = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
    assert_eq!(
        metric(
            &text,
            "orion_step_duration_seconds_count",
            &[
                ("agent", "testing"),
                ("step", "test"),
                ("outcome", "handoff")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "orion_bus_deliveries_total",
            &[("queue", "work.testing"), ("outcome", "ack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "orion_task_transitions_total",
            &[("kind", "develop")]
        ),
        None,
        "a node without a coordinator moves no task"
    );

    drop(gateway);
    tear_down(prefix, db).await;
}

/// SIGTERM on a node: it stops taking work, and what it cannot finish within its drain
/// deadline goes back to the bus; another node completes it. Nothing is lost.
#[actix_rt::test]
async fn a_node_stopped_by_sigterm_hands_back_its_unfinished_assignment_and_another_completes_it() {
    let db = PgDatabase::create().await;
    let prefix = unique("d");
    let mut env = cluster_env(&db.url, &prefix);
    // The tests take longer than the first node's drain deadline.
    env.push((
        "ORION__DEVELOPER__TEST_COMMAND",
        "[\"sh\", \"-c\", \"sleep 4; echo slow tests pass\"]".to_owned(),
    ));
    migrate(&env);
    let (_gateway, base) = start_gateway(&env).await;
    let client = client_as("admin");
    let mut first_env = env.clone();
    first_env.push(("ORION__NODE__DRAIN_TIMEOUT_SECS", "1".to_owned()));
    let mut first = Process(
        orion(
            &first_env,
            &["node", "--name", "first", "--agents", "coordinator,testing"],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let repo = git_fixture();
    let id = crate::support::submit_to(
        &client,
        &base,
        &json!({ "kind": "test", "repo": repo.path().to_string_lossy() }),
    )
    .await;
    let events = |id: String| {
        let client = client.clone();
        let base = base.clone();
        async move { get_json(&client, format!("{base}/v1/tasks/{id}/events")).await }
    };
    eventually(
        "the first node to start the tests",
        Duration::from_secs(30),
        || async {
            let events = events(id.clone()).await?;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| e["type"] == "running" && e["node"] == "first")
                .then_some(())
        },
    )
    .await;
    let pid = first.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = first.0.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(first.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        (status, out)
    });
    let (status, out) = tokio::time::timeout(Duration::from_secs(20), exit)
        .await
        .expect("the node stops within its drain deadline and the hand-back")
        .unwrap();
    assert!(status.success(), "a drained node exits cleanly: {status:?}");
    assert!(out.contains("node first drained"), "{out}");
    let task = get_json(&client, format!("{base}/v1/tasks/{id}"))
        .await
        .unwrap();
    assert_ne!(
        task["status"], "completed",
        "the slow tests did not finish on the first node"
    );

    let _second = Process(
        orion(
            &env,
            &[
                "node",
                "--name",
                "second",
                "--agents",
                "coordinator,testing",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let task =
        crate::support::wait_for_status(&client, &base, &id, "completed", Duration::from_secs(40))
            .await;
    assert_eq!(task["result"]["passed"], true, "{task}");
    let events = events(id.clone()).await.unwrap();
    let completed: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "completed")
        .collect();
    assert_eq!(completed.len(), 1, "completed once: {events}");
    assert_eq!(completed[0]["node"], "second", "{events}");
    tear_down(prefix, db).await;
}

/// Request/reply across processes: this process asks the analyzer pool over NATS and one
/// node's analyzer answers; the failures are typed.
#[actix_rt::test]
async fn an_actor_asks_an_agent_on_another_node_and_gets_typed_errors() {
    use orion_actors::{AskError, ask};
    let (db, prefix, env) = migrated_cluster("r").await;
    let _node = Process(
        orion(
            &env,
            &["node", "--name", "answerer", "--agents", "analyzer"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let bus = test_bus(&prefix).await;
    let pong = eventually("the node to answer", Duration::from_secs(20), || async {
        ask(
            &bus,
            "asker",
            orion_bus::AgentKind::Analyzer,
            "ping",
            Value::Null,
            Duration::from_secs(2),
        )
        .await
        .ok()
    })
    .await;
    assert_eq!(pong, json!({ "node": "answerer", "agent": "analyzer" }));
    let refused = ask(
        &bus,
        "asker",
        orion_bus::AgentKind::Analyzer,
        "fly",
        Value::Null,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, AskError::Refused { failure, .. } if failure.code == "unknown_operation"),
        "{refused}"
    );
    let nobody = ask(
        &bus,
        "asker",
        orion_bus::AgentKind::Devops,
        "ping",
        Value::Null,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(nobody, AskError::NoAgent(orion_bus::AgentKind::Devops)),
        "{nobody}"
    );

    // Many at once, so that the node answers them in bursts: every request gets its own
    // answer (a refusal names the operation that earned it), and a message that is no
    // request, sent among them, is refused on its own.
    let asks = (0..200).map(|i| {
        let bus = &bus;
        async move {
            let op = match i % 2 {
                0 => "ping".to_owned(),
                _ => format!("op-{i}"),
            };
            let answer = ask(
                bus,
                "asker",
                orion_bus::AgentKind::Analyzer,
                &op,
                Value::Null,
                Duration::from_secs(10),
            )
            .await;
            (op, answer)
        }
    });
    let stray = orion_bus::Envelope::new(
        "asker",
        orion_bus::Body::Control(orion_bus::ControlCommand::Drain),
    );
    let rpc = orion_bus::Bus::subjects(&bus).rpc(orion_bus::AgentKind::Analyzer);
    let (answers, refused_stray) = futures_util::join!(
        futures_util::future::join_all(asks),
        orion_bus::Bus::request(&bus, &rpc, &stray, Duration::from_secs(10)),
    );
    for (op, answer) in answers {
        match (op.as_str(), answer) {
            ("ping", Ok(value)) => assert_eq!(value, pong),
            (op, Err(AskError::Refused { failure, .. })) => assert!(
                failure.code == "unknown_operation" && failure.message.contains(&format!("`{op}`")),
                "{op} was refused with {failure:?}"
            ),
            (op, other) => panic!("{op} was answered with {other:?}"),
        }
    }
    let refused_stray = refused_stray.unwrap();
    assert_eq!(refused_stray.causation_id, Some(stray.id));
    assert!(
        matches!(
            &refused_stray.body,
            orion_bus::Body::Reply(orion_bus::AgentReply::Refused { failure })
                if failure.code == "not_a_request"
        ),
        "{refused_stray:?}"
    );
    tear_down(prefix, db).await;
}

/// Every event the database logged, as (seq, task, type), in `seq` order.
async fn logged_events(db_url: &str) -> Vec<(i64, String, String)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(db_url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT seq, task_id::text AS task, event_type FROM task_events ORDER BY seq",
        ))
        .await
        .unwrap();
    let _ = db.close().await;
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "seq").unwrap(),
                r.try_get("", "task").unwrap(),
                r.try_get("", "event_type").unwrap(),
            )
        })
        .collect()
}

/// A WebSocket client of `/v1/stream` on `base`, resuming after `since`.
async fn stream_from(base: &str, since: i64) -> Option<crate::stream::Frames> {
    let url = format!(
        "{}/v1/stream?since={since}&access_token={}",
        base.replacen("http", "ws", 1),
        crate::support::token("viewer")
    );
    let (_, frames) = awc::Client::new().ws(url).connect().await.ok()?;
    Some(frames)
}

/// Submits `n` analyze tasks of `repo` through `base`, eight at a time.
async fn submit_analyses(base: String, repo: String, n: usize) {
    let client = client_as("submitter");
    let answers: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|_| {
            let (client, base, repo) = (client.clone(), base.clone(), repo.clone());
            async move {
                let mut response = client
                    .post(format!("{base}/v1/tasks"))
                    .send_json(&json!({ "kind": "analyze", "repo": repo }))
                    .await
                    .unwrap();
                let _ = response.body().await;
                response.status().as_u16()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 202), "{answers:?}");
}

/// Two gateways and two nodes on one bus and one database, tasks submitted eight at a time
/// all the while: a WebSocket client whose gateway is killed with SIGKILL reconnects to the
/// other with `since` set to the last `seq` it received; tasks go on after the switch. In the
/// end it has received every event the database logged (seq, task and type), each once, in
/// `seq` order: no gap at the switch, no repeat.
#[actix_rt::test]
async fn a_stream_client_that_loses_its_gateway_resumes_on_another_with_no_gap_and_no_repeat() {
    use awc::ws::Frame;

    const HALF: usize = 40;
    let (db, prefix, env) = migrated_cluster("gw2").await;
    let _nodes = analyzer_nodes(&env, &["node-a", "node-b"]);
    let (first, first_base) = start_gateway(&env).await;
    let (_second, second_base) = start_gateway(&env).await;

    // Half the tasks submitted through the second gateway while the client watches the first,
    // the other half once it has moved.
    let repo = git_fixture();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let first_half = actix_rt::spawn(submit_analyses(
        second_base.clone(),
        repo_path.clone(),
        HALF,
    ));
    let mut second_half = None;

    let mut received: Vec<(i64, String, String)> = Vec::new();
    let mut first = Some(first);
    let mut frames = stream_from(&first_base, 0)
        .await
        .expect("a stream on the first gateway");
    let mut switched_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client has {} events, the log {}",
            received.len(),
            logged_events(&db.url).await.len()
        );
        // A third of the way through the first half, the client's gateway is lost.
        if first.is_some() && received.len() >= HALF * 4 / 3 {
            drop(first.take());
        }
        let frame = tokio::time::timeout(Duration::from_secs(2), frames.next()).await;
        let lost = match frame {
            Err(_) => {
                // Nothing new for a while: done when every task has completed and the client
                // has the log's last event.
                if second_half.is_some() && completions_of(&db.url).await == 2 * HALF {
                    let logged = logged_events(&db.url).await;
                    if received.last().map(|e| e.0) == logged.last().map(|e| e.0) {
                        assert_eq!(received, logged, "every event logged, each once, in order");
                        break;
                    }
                }
                false
            }
            Ok(Some(Ok(Frame::Text(text)))) => {
                let event: Value = serde_json::from_slice(&text).unwrap();
                received.push((
                    event["seq"].as_i64().unwrap(),
                    event["task_id"].as_str().unwrap().to_owned(),
                    event["type"].as_str().unwrap().to_owned(),
                ));
                false
            }
            Ok(Some(Ok(Frame::Close(_)) | Err(_)) | None) => true,
            Ok(Some(Ok(_))) => false,
        };
        if lost {
            assert!(
                first.is_none() && switched_at.is_none(),
                "only the killed gateway's stream ends"
            );
            let since = received.last().map_or(0, |e| e.0);
            frames = stream_from(&second_base, since)
                .await
                .expect("a stream on the other gateway");
            switched_at = logged_events(&db.url).await.last().map(|e| e.0);
            second_half = Some(actix_rt::spawn(submit_analyses(
                second_base.clone(),
                repo_path.clone(),
                HALF,
            )));
        }
    }
    let switched_at = switched_at.expect("the client moved to the gateway that lives");
    assert!(
        received.last().unwrap().0 > switched_at,
        "events committed after the switch reached the client live"
    );
    assert!(
        received.windows(2).all(|w| w[0].0 < w[1].0),
        "in seq order, no repeat"
    );
    first_half.await.unwrap();
    second_half.unwrap().await.unwrap();
    tear_down(prefix, db).await;
}

/// How many tasks the database has `completed`.
async fn completions_of(db_url: &str) -> usize {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(db_url).await.unwrap();
    let n = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM tasks WHERE status = 'completed'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    let _ = db.close().await;
    n as usize
}
