//! Agent kinds declared in configuration and served by a process in another language: the
//! Python agent of `examples/agents/python/` serves `wordcount` through a real cluster (a
//! gateway and a coordinator node on NATS and Postgres).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{cluster_env, migrate, orion, start_gateway, tear_down};
use crate::support::{
    PgDatabase, Process, TempDir, client_as, eventually, get_json, nats_url, unique,
};

const PLUGINS: &str = r#"
[plugins.wordcount]
description = "Counts the words and lines of a text"
capabilities = ["count", "words", "lines", "text"]

[plugins.wordcount.input_schema]
type = "object"
required = ["text"]
additionalProperties = false

[plugins.wordcount.input_schema.properties.text]
type = "string"
maxLength = 10000

[plugins.wordcount.input_schema.properties.delay_ms]
type = "integer"
minimum = 0
maximum = 60000
"#;

/// The example agent, as a user would start it.
fn python_agent(prefix: &str, node: &str) -> Process {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/agents/python/agent.py"
    );
    let mut child = Command::new("python3")
        .args([
            script,
            "--nats",
            &nats_url(),
            "--prefix",
            prefix,
            "--kind",
            "wordcount",
        ])
        .args(["--node", node, "--ack-wait", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    // It prints one line once its consumer is bound.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.contains("serving wordcount"),
        "the agent said {line:?}"
    );
    Process(child)
}

async fn task_when(client: &awc::Client, base: &str, id: &str, status: &str) -> Value {
    eventually(
        &format!("task {id} to be {status}"),
        Duration::from_secs(60),
        || async {
            let task = get_json(client, format!("{base}/v1/tasks/{id}")).await?;
            (task["status"] == status).then_some(task)
        },
    )
    .await
}

#[actix_rt::test]
async fn a_python_agent_serves_a_declared_kind_and_a_killed_one_has_its_task_redelivered() {
    let db = PgDatabase::create().await;
    let prefix = unique("plug");
    let dir = TempDir::new();
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, PLUGINS).unwrap();
    let mut env = cluster_env(&db.url, &prefix);
    env.push(("ORION_CONFIG", config.to_string_lossy().into_owned()));
    // The declared kinds' tasks name `/r`, which this cluster allows.
    env.retain(|(key, _)| *key != "ORION__SECURITY__REPO_ROOTS");
    env.push(("ORION__SECURITY__REPO_ROOTS", r#"["/r"]"#.to_owned()));
    migrate(&env);
    let _node = Process(
        orion(
            &env,
            &["node", "--name", "coord", "--agents", "coordinator"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let (_gateway, base) = start_gateway(&env).await;
    let client = client_as("submitter");
    let submit = |body: Value| {
        let (client, base) = (&client, &base);
        async move {
            let mut response = client
                .post(format!("{base}/v1/tasks"))
                .send_json(&body)
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Bad submissions of the declared kind are refused with their reason; nothing is stored.
    let (status, problem) =
        submit(json!({ "kind": "wordcount", "repo": "/r", "input": { "txt": "a" } })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_input")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`input.text` is required"),
        "{problem}"
    );
    let (status, problem) = submit(json!({ "kind": "wordcount2", "repo": "/r" })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("unknown_task_kind"))
    );
    let (status, problem) = submit(json!({ "kind": "analyze", "repo": "/r", "input": {} })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_input"))
    );
    let listed = get_json(&client, format!("{base}/v1/tasks")).await.unwrap();
    assert_eq!(
        listed["items"],
        json!([]),
        "refused submissions store nothing"
    );

    // Submitted before any agent serves the kind: the work waits in its queue.
    let (status, task) = submit(
        json!({ "kind": "wordcount", "repo": "/r", "input": { "text": "one two three\nfour" } }),
    )
    .await;
    assert_eq!(status, 202, "{task}");
    let quick = task["id"].as_str().unwrap().to_owned();
    let _first = python_agent(&prefix, "py-first");
    let done = task_when(&client, &base, &quick, "completed").await;
    assert_eq!(
        done["result"],
        json!({ "words": 4, "lines": 2, "served_by": "py-first" })
    );
    assert_eq!(done["kind"], "wordcount");
    // The agent's heartbeats make it a node of the cluster's view.
    eventually(
        "the python agent among the nodes",
        Duration::from_secs(20),
        || async {
            let agents = get_json(&client, format!("{base}/v1/agents")).await?;
            agents["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["node"] == "py-first" && n["agents"] == json!(["wordcount"]))
                .then_some(())
        },
    )
    .await;
    // Asked for by capability: `auto` picks the declared kind the prompt describes.
    let (status, task) = submit(json!({ "kind": "auto", "repo": "/r", "prompt": "count the words of this text", "input": { "text": "a b c" } })).await;
    assert_eq!(status, 202, "{task}");
    let auto = task["id"].as_str().unwrap().to_owned();
    let done = task_when(&client, &base, &auto, "completed").await;
    assert_eq!(
        (done["kind"].as_str(), done["result"]["words"].as_u64()),
        (Some("wordcount"), Some(3))
    );
    drop(_first);

    // An agent killed mid-task: its assignment goes to the next agent after `ack_wait`.
    let mut doomed = python_agent(&prefix, "py-doomed");
    let (_, task) = submit(json!({ "kind": "wordcount", "repo": "/r", "input": { "text": "slow words", "delay_ms": 4000 } })).await;
    let slow = task["id"].as_str().unwrap().to_owned();
    task_when(&client, &base, &slow, "running").await;
    doomed.0.kill().unwrap();
    doomed.0.wait().unwrap();
    let _second = python_agent(&prefix, "py-second");
    let done = task_when(&client, &base, &slow, "completed").await;
    assert_eq!(done["result"]["served_by"], "py-second");
    assert_eq!(done["result"]["words"], 2);
    let events = get_json(&client, format!("{base}/v1/tasks/{slow}/events"))
        .await
        .unwrap();
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["queued", "assigned", "running", "completed"],
        "nothing twice"
    );
    tear_down(prefix, db).await;
}
