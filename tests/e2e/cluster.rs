//! Cluster mode across processes: one `orion gateway` and two `orion node` processes on one
//! NATS and one Postgres, watched by a plain NATS subscriber as an external monitor would.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use orion_bus::{BusConfig, NatsBus, Subjects};
use serde_json::{Value, json};

use crate::support::{PgDatabase, eventually, git_fixture, nats_url, unique};

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orion(env: &[(&str, String)], args: &[&str]) -> Command {
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

#[actix_rt::test]
async fn a_gateway_and_two_nodes_complete_tasks_seen_by_a_plain_nats_subscriber() {
    let db = PgDatabase::create().await;
    let prefix = unique("c");
    let env = vec![
        ("ORION__DATABASE__URL", db.url.clone()),
        ("ORION__BUS__URL", nats_url()),
        ("ORION__BUS__PREFIX", prefix.clone()),
        ("ORION__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
    ];

    let migrated = orion(&env, &["migrate"])
        .stdout(Stdio::null())
        .status()
        .expect("run orion migrate");
    assert!(migrated.success(), "orion migrate failed");

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
    let mut gateway = Process(
        orion(&env, &["gateway"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = gateway.0.stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first_line)
        .await
        .expect("gateway starts")
        .unwrap()
        .unwrap();
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

    // The external monitor saw every task's whole story on `<prefix>.events.>`.
    let mut stories: HashMap<String, Vec<String>> = HashMap::new();
    let finished = |stories: &HashMap<String, Vec<String>>| {
        submitted.iter().all(|id| {
            stories
                .get(id)
                .is_some_and(|s| s.last().is_some_and(|t| t == "completed" || t == "failed"))
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
        stories
            .entry(task)
            .or_default()
            .push(event["type"].as_str().unwrap().to_owned());
    }
    for (i, id) in submitted.iter().enumerate() {
        let end = if i == 6 { "failed" } else { "completed" };
        assert_eq!(
            stories[id],
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

    drop(gateway);
    let subjects = Subjects::new(prefix).unwrap();
    NatsBus::connect(&nats_url(), subjects, BusConfig::default())
        .await
        .unwrap()
        .delete_streams()
        .await
        .unwrap();
    db.drop_now().await;
}
