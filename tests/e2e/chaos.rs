//! Effects exactly once, shown under chaos. Fifty develop tasks on three node processes, a
//! gateway, NATS and Postgres of the test's own; a fake model and a fake GitHub-compatible
//! forge that count every request they receive; a bare repository that logs every ref update
//! (`core.logAllRefUpdates = always`: libgit2 pushes to a local path without running hooks,
//! and writes the reflog of each ref it moves). During the run nodes are killed with SIGKILL
//! every few seconds and restarted, NATS is restarted once, Postgres is stopped hard and
//! restarted once, every assignment is published twice more at the same moment (with fresh
//! message ids, as after the bus's de-duplication window), and one node is drained. Half of
//! the tasks are approved on review, the other half cancelled.
//!
//! At the end the effects themselves are counted: each commit pushed to its branch once, one
//! pull request and (for the approved) one approval on the forge per task, one merge into
//! `main` for each approved task and none for the others, and no model call paid twice for an
//! answer that was recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::cluster::{cluster_env, migrate, orion, start_gateway};
use crate::faults::{Nats, Postgres};
use crate::support::{Process, TempDir, client_as, completion, eventually, forge_remote, unique};

const TASKS: usize = 50;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Rounds of the chaos schedule, one every [`ROUND`]; each kills a node and starts it again.
const ROUNDS: usize = 12;
const ROUND: Duration = Duration::from_millis(2500);
const PROMPT: &str = "Task: add note-";

/// The number of the task a prompt is for (`add note-<n>`).
fn note_of(text: &str) -> Option<usize> {
    let rest = &text[text.find(PROMPT)? + PROMPT.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// What a reviewer asks of the tasks it sends back for changes.
const CHANGES: &str = "say hello too";

/// The fake model: answers task `n`'s call with an edit adding `notes/note-<n>.txt` (so
/// every change merges cleanly), or, asked for the reviewer's changes, one that says hello
/// too; counts the calls it was paid for, per task and kind (`false`: the first version,
/// `true`: a revision).
#[derive(Clone, Default)]
struct CountingModel(Arc<Mutex<BTreeMap<(usize, bool), usize>>>);

impl CountingModel {
    fn paid(&self, n: usize, revision: bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .get(&(n, revision))
            .copied()
            .unwrap_or(0)
    }
}

impl Respond for CountingModel {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        let Some(n) = note_of(&body) else {
            return ResponseTemplate::new(400);
        };
        let revision = body.contains(CHANGES);
        *self.0.lock().unwrap().entry((n, revision)).or_default() += 1;
        let text = if revision {
            format!("note {n}\nhello\n")
        } else {
            format!("note {n}\n")
        };
        let edit = format!("=== FILE: notes/note-{n}.txt\n{text}=== END\n");
        ResponseTemplate::new(200).set_body_json(completion("gpt-test", &edit))
    }
}

/// What the fake forge was asked to do.
#[derive(Default)]
struct ForgeLog {
    /// Pull requests opened, in order: (head branch, number).
    pulls: Vec<(String, u64)>,
    /// Reviews and line comments posted: (pull number, `reviews` or `comments`, body).
    posts: Vec<(u64, String, Value)>,
    /// Commit statuses set: the commits.
    statuses: Vec<String>,
}

/// A GitHub-compatible forge for `acme/widgets` that keeps what it is sent, and answers the
/// look-ups Orion settles a lost run's claims with.
#[derive(Clone, Default)]
struct FakeForge(Arc<Mutex<ForgeLog>>);

impl Respond for FakeForge {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        if let Some(commit) = path.strip_prefix("/repos/acme/widgets/statuses/") {
            self.0.lock().unwrap().statuses.push(commit.to_owned());
            return ResponseTemplate::new(201).set_body_json(json!({ "state": "success" }));
        }
        let Some(rest) = path.strip_prefix("/repos/acme/widgets/pulls") else {
            return ResponseTemplate::new(404);
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let mut log = self.0.lock().unwrap();
        let pull = |number: u64| json!({ "number": number, "html_url": format!("https://forge.invalid/acme/widgets/pull/{number}") });
        match (request.method.as_str(), rest) {
            ("POST", "") => {
                let number = log.pulls.len() as u64 + 1;
                log.pulls
                    .push((body["head"].as_str().unwrap_or_default().into(), number));
                ResponseTemplate::new(201).set_body_json(pull(number))
            }
            ("GET", "") => {
                let head = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "head")
                    .map(|(_, v)| v.trim_start_matches("acme:").to_owned())
                    .unwrap_or_default();
                let found: Vec<Value> = log
                    .pulls
                    .iter()
                    .filter(|(h, _)| *h == head)
                    .map(|(_, n)| pull(*n))
                    .collect();
                ResponseTemplate::new(200).set_body_json(found)
            }
            (method, rest) => {
                let mut parts = rest.trim_start_matches('/').split('/');
                let (Some(Ok(number)), Some(kind)) =
                    (parts.next().map(str::parse::<u64>), parts.next())
                else {
                    return ResponseTemplate::new(404);
                };
                if method == "POST" {
                    log.posts.push((number, kind.to_owned(), body));
                    return ResponseTemplate::new(200).set_body_json(json!({}));
                }
                let listed: Vec<Value> = log
                    .posts
                    .iter()
                    .filter(|(n, k, _)| *n == number && k == kind)
                    .map(|(_, _, b)| b.clone())
                    .collect();
                ResponseTemplate::new(200).set_body_json(listed)
            }
        }
    }
}

/// A bare remote that logs every update of every ref; with where its `main` starts.
fn logged_remote() -> (TempDir, std::path::PathBuf, String) {
    let (keep, remote) = forge_remote();
    let configured = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args(["config", "core.logAllRefUpdates", "always"])
        .status()
        .unwrap();
    assert!(configured.success());
    let main_before = crate::support::git_rev(&remote, "main").unwrap();
    (keep, remote, main_before)
}

/// The fake model and forge, each on a server of its own.
async fn fake_model_and_forge() -> (CountingModel, MockServer, FakeForge, MockServer) {
    let model = CountingModel::default();
    let model_server = MockServer::start().await;
    Mock::given(wiremock::matchers::path("/v1/chat/completions"))
        .respond_with(model.clone())
        .mount(&model_server)
        .await;
    let forge = FakeForge::default();
    let forge_server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(forge.clone())
        .mount(&forge_server)
        .await;
    (model, model_server, forge, forge_server)
}

/// What every process of these tests is configured with besides the cluster's own: the fake
/// model and forge, a test command that sees the task's note, and a short ack wait.
fn fakes_env(
    model: &MockServer,
    forge: &MockServer,
    remotes: &Path,
    ack_wait_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("ORION__BUS__ACK_WAIT_MS", ack_wait_ms.to_string()),
        // A node is killed every 2.5 s: a message can be in flight on the killed node more
        // often than the default 5 deliveries allow before it is dead-lettered (which the
        // bus contract tests cover). Here every kill must be survived, so the bound is higher.
        ("ORION__BUS__MAX_DELIVER", "20".to_owned()),
        ("ORION__LLM__BASE_URL", format!("{}/v1", model.uri())),
        ("ORION__LLM__MODEL", "gpt-test".to_owned()),
        ("ORION__FORGES__FAKE__KIND", "github".to_owned()),
        ("ORION__FORGES__FAKE__API_URL", forge.uri()),
        ("ORION__FORGES__FAKE__TOKEN", "forge-token".to_owned()),
        (
            "ORION__FORGES__FAKE__REMOTES",
            format!("[{:?}]", format!("{}/", remotes.display())),
        ),
        (
            "ORION__DEVELOPER__TEST_COMMAND",
            r#"["sh", "-c", "ls notes"]"#.to_owned(),
        ),
    ]
}

/// Every ref update of the bare repository's `refname`: the commits it was moved to.
fn ref_updates(remote: &Path, refname: &str) -> Vec<String> {
    std::fs::read_to_string(remote.join("logs").join(refname))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect()
}

/// The subject of commit `oid` in the bare repository.
fn subject(remote: &Path, oid: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args(["log", "-1", "--format=%s", oid])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Re-publishes every assignment the nodes are sent twice more, both copies at the same
/// moment and each with a fresh message id (as if the bus's de-duplication window had passed),
/// until `stop`. Returns how many copies it published.
async fn duplicate_assignments(nats_url: String, prefix: String, stop: Arc<AtomicBool>) -> usize {
    let client = async_nats::connect(&nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut work = client.subscribe(format!("{prefix}.work.>")).await.unwrap();
    let mut copies = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), work.next()).await
        else {
            continue;
        };
        let mut headers = message.headers.clone().unwrap_or_default();
        if headers.get("Orion-Test-Copy").is_some() {
            continue;
        }
        headers.insert("Orion-Test-Copy", "1");
        let publish = |headers: async_nats::HeaderMap| {
            let (jetstream, subject, payload) = (
                jetstream.clone(),
                message.subject.clone(),
                message.payload.clone(),
            );
            async move {
                let mut headers = headers;
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    uuid::Uuid::now_v7().to_string().as_str(),
                );
                match jetstream
                    .publish_with_headers(subject, headers, payload)
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        };
        let (a, b) = futures_util::join!(publish(headers.clone()), publish(headers));
        copies += usize::from(a) + usize::from(b);
    }
    copies
}

/// A task as the database has it at the end.
struct Row {
    id: String,
    status: String,
    /// Its pull request: (id, head).
    pull: Option<(String, String)>,
    /// Its failure: code and message.
    error: Option<String>,
}

/// The tasks with their pull requests, read from the database; `None` while it is down.
async fn tasks_and_pulls(db_url: &str) -> Option<Vec<Row>> {
    let db = Database::connect(db_url).await.ok()?;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT t.id::text AS id, t.status, t.error_code || ': ' || t.error_message AS error, \
             p.id::text AS pull, p.head_oid FROM tasks t LEFT JOIN pull_requests p ON p.task_id = t.id",
        ))
        .await
        .ok()?;
    let _ = db.close().await;
    rows.iter()
        .map(|r| {
            let pull: Option<String> = r.try_get("", "pull").ok()?;
            let head: Option<String> = r.try_get("", "head_oid").ok()?;
            Some(Row {
                id: r.try_get("", "id").ok()?,
                status: r.try_get("", "status").ok()?,
                pull: pull.zip(head),
                error: r.try_get("", "error").ok()?,
            })
        })
        .collect()
}

#[actix_rt::test]
async fn fifty_develop_tasks_under_kills_restarts_copies_and_a_drain_make_every_effect_once() {
    let pg = Postgres::start();
    let mut nats = Nats::start().await;
    let (model, model_server, forge, forge_server) = fake_model_and_forge().await;
    let (_keep, remote, main_before) = logged_remote();

    let prefix = unique("x");
    let mut env = cluster_env(&pg.url(), &prefix);
    env.retain(|(k, _)| *k != "ORION__BUS__URL");
    env.push(("ORION__BUS__URL", nats.url()));
    // A lost node's messages come back after 3 s, not 30.
    env.extend(fakes_env(&model_server, &forge_server, _keep.path(), 3000));
    migrate(&env);
    let (_gateway, base) = start_gateway(&env).await;
    let data: Vec<TempDir> = NODES.iter().map(|_| TempDir::new()).collect();
    let start_node = |i: usize| {
        let mut env = env.clone();
        env.push((
            "ORION__DATA_DIR",
            data[i].path().to_string_lossy().into_owned(),
        ));
        Process(
            orion(
                &env,
                &[
                    "node",
                    "--name",
                    NODES[i],
                    "--agents",
                    "coordinator,developer,testing",
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        )
    };
    let mut nodes: Vec<Option<Process>> = (0..NODES.len()).map(|i| Some(start_node(i))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let copier = tokio::spawn(duplicate_assignments(
        nats.url(),
        prefix.clone(),
        stop.clone(),
    ));

    let client = client_as("admin");
    let repo = remote.to_string_lossy().into_owned();
    let mut ids = Vec::with_capacity(TASKS);
    for n in 0..TASKS {
        let (client, base, repo) = (&client, &base, &repo);
        ids.push(
            eventually("an acknowledged submission", Duration::from_secs(60), || async move {
                let mut response = client
                    .post(format!("{base}/v1/tasks"))
                    .insert_header(("Idempotency-Key", format!("chaos-{n}")))
                    .send_json(&json!({ "kind": "develop", "repo": repo, "prompt": format!("add note-{n}") }))
                    .await
                    .ok()?;
                let task: Value = response.json().await.ok()?;
                matches!(response.status().as_u16(), 200 | 202)
                    .then(|| task["id"].as_str().unwrap().to_owned())
            })
            .await,
        );
    }
    let index: HashMap<String, usize> = ids
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();

    // The reviewer: approves the even-numbered tasks' pull requests and cancels the others,
    // as each reaches review, but first asks for changes to every fourth (and approves the
    // version that answers them); done when every task has ended.
    let revised: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
    let kills = AtomicUsize::new(0);
    let (approved, cancelled) = (Mutex::new(HashSet::new()), Mutex::new(HashSet::new()));
    let review = async {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tick.tick().await;
            let Some(rows) = tasks_and_pulls(&pg.url()).await else {
                continue;
            };
            if rows.len() == TASKS
                && rows
                    .iter()
                    .all(|r| matches!(r.status.as_str(), "completed" | "failed" | "cancelled"))
            {
                return rows;
            }
            for Row {
                id, status, pull, ..
            } in &rows
            {
                let (Some((pull, head)), "awaiting_review") = (pull, status.as_str()) else {
                    continue;
                };
                if approved.lock().unwrap().contains(id) || cancelled.lock().unwrap().contains(id) {
                    continue;
                }
                let asked = revised.lock().unwrap().get(id).cloned();
                if index[id].is_multiple_of(4) && asked.is_none() {
                    let Ok(response) = client
                        .post(format!("{base}/v1/pulls/{pull}/reviews"))
                        .send_json(&json!({ "decision": "request_changes", "comment": CHANGES, "head_oid": head }))
                        .await
                    else {
                        continue;
                    };
                    if response.status().is_success() {
                        revised.lock().unwrap().insert(id.clone(), head.clone());
                    }
                } else if index[id].is_multiple_of(2) {
                    if asked.as_ref() == Some(head) {
                        continue; // the version sent back, read before its revision began
                    }
                    let Ok(response) = client
                        .post(format!("{base}/v1/pulls/{pull}/reviews"))
                        .send_json(&json!({ "decision": "approve", "head_oid": head }))
                        .await
                    else {
                        continue;
                    };
                    if response.status().is_success() {
                        approved.lock().unwrap().insert(id.clone());
                    }
                } else {
                    let Ok(response) = client
                        .post(format!("{base}/v1/tasks/{id}/cancel"))
                        .send_json(&json!({}))
                        .await
                    else {
                        continue;
                    };
                    if response.status().is_success() {
                        cancelled.lock().unwrap().insert(id.clone());
                    }
                }
            }
        }
    };
    let chaos = async {
        let mut tick = tokio::time::interval(ROUND);
        tick.tick().await;
        for round in 1..=ROUNDS {
            tick.tick().await;
            let victim = round % NODES.len();
            drop(nodes[victim].take()); // SIGKILL: no drain, no goodbye
            nodes[victim] = Some(start_node(victim));
            kills.fetch_add(1, Ordering::Relaxed);
            match round {
                3 => nats.restart().await,
                6 => {
                    let node = NODES[2];
                    eventually("a drain order", Duration::from_secs(20), || async {
                        let response = client
                            .post(format!("{base}/v1/agents/{node}/drain"))
                            .send_json(&json!({}))
                            .await
                            .ok()?;
                        (response.status().as_u16() == 202).then_some(())
                    })
                    .await;
                }
                9 => {
                    pg.down();
                    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself
                    pg.up();
                }
                _ => {}
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(240), async {
        futures_util::join!(review, chaos)
    })
    .await;
    let Ok((rows, ())) = ended else {
        let left: Vec<String> = tasks_and_pulls(&pg.url())
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| !matches!(r.status.as_str(), "completed" | "cancelled"))
            .map(|r| format!("{} {} {:?}", r.id, r.status, r.error))
            .collect();
        panic!(
            "not every task ended: approved {}, cancelled {}; the others: {left:#?}",
            approved.lock().unwrap().len(),
            cancelled.lock().unwrap().len(),
        );
    };
    stop.store(true, Ordering::Relaxed);
    let copies = copier.await.unwrap();
    let (approved, cancelled, revised) = (
        approved.into_inner().unwrap(),
        cancelled.into_inner().unwrap(),
        revised.into_inner().unwrap(),
    );
    assert_eq!(
        revised.len(),
        TASKS.div_ceil(4),
        "every fourth task was sent back once"
    );

    // Every task ended as its reviewer decided: the approved merged, the others cancelled.
    let undecided: Vec<String> = rows
        .iter()
        .filter(|r| !approved.contains(&r.id) && !cancelled.contains(&r.id))
        .map(|r| format!("{} {}: {:?}", r.id, r.status, r.error))
        .collect();
    assert_eq!(
        (approved.len(), cancelled.len()),
        (TASKS / 2, TASKS / 2),
        "every task reached review; these did not: {undecided:#?}"
    );
    let wrong: Vec<String> = rows
        .iter()
        .filter(|r| {
            let want = if approved.contains(&r.id) {
                "completed"
            } else {
                "cancelled"
            };
            r.status != want
        })
        .map(|r| format!("{} {}: {:?}", r.id, r.status, r.error))
        .collect();
    assert!(
        wrong.is_empty(),
        "tasks that did not end as reviewed: {wrong:#?}"
    );

    // Each version's commit was pushed to its branch once: the first, then (for a task sent
    // back) the revision, which is the pull request's head.
    let heads: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| Some((r.id.as_str(), r.pull.as_ref()?.1.as_str())))
        .collect();
    for id in &ids {
        let pushes = ref_updates(&remote, &format!("refs/heads/orion/{id}"));
        let versions: Vec<&str> = match revised.get(id) {
            Some(first) => vec![first.as_str(), heads[id.as_str()]],
            None => vec![heads[id.as_str()]],
        };
        assert_eq!(pushes, versions, "the pushes of task {id}'s branch");
    }
    // One merge into `main` for each approved task, none for the others.
    let mut merges: BTreeMap<String, usize> = BTreeMap::new();
    for oid in ref_updates(&remote, "refs/heads/main") {
        if oid == main_before {
            continue;
        }
        let subject = subject(&remote, &oid);
        let task = subject
            .strip_prefix("Merge orion/")
            .and_then(|s| s.strip_suffix(" into main"))
            .map(str::to_owned)
            .or_else(|| {
                heads
                    .iter()
                    .find(|(_, h)| **h == oid)
                    .map(|(id, _)| (*id).to_owned())
            })
            .unwrap_or_else(|| panic!("main moved to {oid} ({subject}), no task's merge"));
        *merges.entry(task).or_default() += 1;
    }
    let approved_sorted: BTreeMap<String, usize> =
        approved.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(merges, approved_sorted, "merges into main, per task");
    // And no merge undid another: every approved commit is in main.
    for id in &approved {
        let head = heads[id.as_str()];
        let kept = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&remote)
            .args(["merge-base", "--is-ancestor", head, "main"])
            .status()
            .unwrap();
        assert!(
            kept.success(),
            "task {id}'s approved commit {head} is not in main"
        );
    }

    // The forge: one pull request per task, one approval per approved task, nothing else.
    let (opened, approvals, changes) = {
        let log = forge.0.lock().unwrap();
        let mut opened: BTreeMap<String, usize> = BTreeMap::new();
        for (head, _) in &log.pulls {
            *opened.entry(head.clone()).or_default() += 1;
        }
        let number_of: HashMap<&str, u64> =
            log.pulls.iter().map(|(h, n)| (h.as_str(), *n)).collect();
        let mut approvals: BTreeMap<String, usize> = BTreeMap::new();
        let mut changes: BTreeMap<String, usize> = BTreeMap::new();
        for id in &ids {
            let n = number_of[format!("orion/{id}").as_str()];
            let count = log
                .posts
                .iter()
                .filter(|(p, k, b)| *p == n && k == "reviews" && b["event"] == "APPROVE")
                .count();
            if count > 0 {
                approvals.insert(id.clone(), count);
            }
            let asked = log
                .posts
                .iter()
                .filter(|(p, k, b)| *p == n && k == "reviews" && b["event"] == "REQUEST_CHANGES")
                .count();
            if asked > 0 {
                changes.insert(id.clone(), asked);
            }
        }
        (opened, approvals, changes)
    };
    // The test verdict as a commit status: only on commits pushed to a task's branch, and on
    // every approved head.
    let statuses: HashSet<String> = forge.0.lock().unwrap().statuses.iter().cloned().collect();
    let pushed: HashSet<String> = ids
        .iter()
        .flat_map(|id| ref_updates(&remote, &format!("refs/heads/orion/{id}")))
        .collect();
    assert!(
        statuses.is_subset(&pushed),
        "statuses on commits no task pushed: {:?}",
        statuses.difference(&pushed).collect::<Vec<_>>()
    );
    for id in &approved {
        assert!(
            statuses.contains(heads[id.as_str()]),
            "task {id}'s approved head has its status"
        );
    }
    let sent_back: BTreeMap<String, usize> = revised.keys().map(|id| (id.clone(), 1)).collect();
    assert_eq!(
        changes, sent_back,
        "requests for changes posted on the forge, per task"
    );
    let every_branch: BTreeMap<String, usize> =
        ids.iter().map(|id| (format!("orion/{id}"), 1)).collect();
    assert_eq!(
        opened, every_branch,
        "pull requests opened on the forge, per branch"
    );
    assert_eq!(
        approvals, approved_sorted,
        "approvals posted on the forge, per task"
    );

    // The model: every call paid for is a try the ledger counted, and a step whose claim was
    // never taken over (one try) was paid exactly once: no answer recorded was paid again.
    let db = Database::connect(pg.url()).await.unwrap();
    let claims = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT task_id::text AS task, step, tries, state FROM effects WHERE kind = 'model_call'",
        ))
        .await
        .unwrap();
    let mut tries_total = 0;
    for row in &claims {
        let task: String = row.try_get("", "task").unwrap();
        let step: String = row.try_get("", "step").unwrap();
        let tries: i32 = row.try_get("", "tries").unwrap();
        let state: String = row.try_get("", "state").unwrap();
        let paid = model.paid(index[&task], step.starts_with("model:revise"));
        assert_eq!(state, "done", "task {task}'s answer is recorded");
        assert!(
            paid >= 1 && paid <= tries as usize,
            "task {task}: paid {paid} times for {tries} tries"
        );
        if tries == 1 {
            assert_eq!(paid, 1, "task {task}");
        }
        tries_total += tries as usize;
    }
    assert_eq!(
        claims.len(),
        TASKS + revised.len(),
        "one model call recorded per version"
    );
    let paid_total: usize = model.0.lock().unwrap().values().sum();
    println!(
        "chaos: {TASKS} tasks ({} sent back), {} kills, {copies} copied assignments; model calls paid \
         {paid_total}, tries recorded {tries_total}; {} merges; {} pull requests",
        revised.len(),
        kills.load(Ordering::Relaxed),
        merges.values().sum::<usize>(),
        opened.values().sum::<usize>(),
    );
    let _ = db.close().await;
    // The NATS server and Postgres are the test's own: they go with it.
    drop(nodes);
}

/// A node stopped dead right after each kind of effect and before its record, once each
/// (`ORION_FAULT_CRASH_BEFORE_RECORD`), and started again: each claim the lost run left
/// pending is settled by asking the outside world, so the branch is pushed once, the pull
/// request opened once, the approval posted once and the merge made once. The model's answer
/// lost with the process is the one effect paid for again, and the ledger counts that try.
#[actix_rt::test]
async fn a_node_killed_between_each_effect_and_its_record_repeats_nothing_but_a_lost_answer() {
    let db = crate::support::PgDatabase::create().await;
    let (model, model_server, forge, forge_server) = fake_model_and_forge().await;
    let (_keep, remote, main_before) = logged_remote();
    let marks = TempDir::new();
    let prefix = unique("k");
    let mut env = cluster_env(&db.url, &prefix);
    env.extend(fakes_env(&model_server, &forge_server, _keep.path(), 1000));
    let faults = [
        "model:",
        "candidate:",
        "push:",
        "forge:pull",
        "forge:approve",
        "merge:",
        "tag:",
    ];
    env.extend([
        ("ORION_FAULT_CRASH_BEFORE_RECORD", faults.join(",")),
        (
            "ORION_FAULT_MARKS",
            marks.path().to_string_lossy().into_owned(),
        ),
    ]);
    migrate(&env);
    let (_gateway, base) = start_gateway(&env).await;
    let data = TempDir::new();
    let start_node = || {
        let mut env = env.clone();
        env.push((
            "ORION__DATA_DIR",
            data.path().to_string_lossy().into_owned(),
        ));
        Process(
            orion(
                &env,
                &[
                    "node",
                    "--name",
                    "k1",
                    "--agents",
                    "coordinator,developer,testing,devops",
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        )
    };
    let mut node = start_node();
    let client = client_as("admin");
    let id = crate::support::submit_to(
        &client,
        &base,
        &json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "add note-0" }),
    )
    .await;

    let mut restarts = 0;
    let row = see_through(
        &db.url,
        &client,
        &base,
        &id,
        &mut node,
        &start_node,
        &mut restarts,
    )
    .await;

    // A release of what landed: the merge and the tag go through the same faults.
    let work = TempDir::new();
    crate::support::git(
        work.path(),
        &["clone", "-q", &remote.to_string_lossy(), "."],
    );
    std::fs::write(work.path().join("notes/README"), "the notes\n").unwrap();
    crate::support::git(work.path(), &["add", "."]);
    crate::support::git(
        work.path(),
        &["commit", "-q", "-m", "feat: a note for each task"],
    );
    crate::support::git(work.path(), &["push", "-q", "origin", "main"]);
    let main_released = crate::support::git_rev(&remote, "main").unwrap();
    let release = crate::support::submit_to(
        &client,
        &base,
        &json!({ "kind": "release", "repo": remote.to_string_lossy() }),
    )
    .await;
    let released = see_through(
        &db.url,
        &client,
        &base,
        &release,
        &mut node,
        &start_node,
        &mut restarts,
    )
    .await;
    drop(node);

    // Each fault fired once, and each cost the node its life.
    let mut fired: Vec<String> = std::fs::read_dir(marks.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fired.sort();
    let mut expected: Vec<String> = faults.iter().map(|f| f.replace(':', "_")).collect();
    expected.sort();
    assert_eq!(fired, expected);
    assert_eq!(restarts, faults.len());

    let head = row.pull.as_ref().unwrap().1.clone();
    assert_eq!(
        ref_updates(&remote, &format!("refs/heads/orion/{id}")),
        std::slice::from_ref(&head),
        "the branch was pushed once"
    );
    let merges: Vec<String> = ref_updates(&remote, "refs/heads/main")
        .into_iter()
        .filter(|oid| *oid != main_before && *oid != main_released)
        .collect();
    let release_head = released.pull.as_ref().unwrap().1.clone();
    assert_eq!(
        merges,
        [head, release_head.clone()],
        "main moved once for each task, to its approved commit"
    );
    let mut task = client
        .get(format!("{base}/v1/tasks/{release}"))
        .send()
        .await
        .unwrap();
    let task: Value = task.json().await.unwrap();
    let tag = task["result"]["tag"].as_str().unwrap().to_owned();
    assert_eq!(
        ref_updates(&remote, &format!("refs/tags/{tag}")).len(),
        1,
        "the tag was pushed once"
    );
    assert_eq!(
        crate::support::git_rev(&remote, &format!("{tag}^{{commit}}")),
        Some(release_head),
        "the tag names the merged release"
    );
    {
        let log = forge.0.lock().unwrap();
        assert_eq!(log.pulls.len(), 2, "one pull request on the forge per task");
        let approvals = log
            .posts
            .iter()
            .filter(|(_, kind, body)| kind == "reviews" && body["event"] == "APPROVE")
            .count();
        assert_eq!(approvals, 2, "one approval on the forge per task");
    }
    let paid = model.paid(0, false);
    let db_conn = Database::connect(&db.url).await.unwrap();
    let tries = db_conn
        .query_one_raw(Statement::from_string(
            db_conn.get_database_backend(),
            "SELECT tries FROM effects WHERE kind = 'model_call'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i32>("", "tries")
        .unwrap();
    assert_eq!(
        (paid, tries),
        (2, 2),
        "the answer lost with the process was paid again, and counted"
    );
    let _ = db_conn.close().await;
    crate::cluster::tear_down(prefix, db).await;
}

/// Drives task `id` to its end on a node that faults stop: starts the node again whenever it
/// stopped (counting in `restarts`), approves the pull request when it is up for review, and
/// returns the completed task.
async fn see_through(
    db_url: &str,
    client: &awc::Client,
    base: &str,
    id: &str,
    node: &mut Process,
    start_node: &dyn Fn() -> Process,
    restarts: &mut usize,
) -> Row {
    let mut approved = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        tick.tick().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} did not complete; the node was restarted {restarts} times"
        );
        if node.0.try_wait().unwrap().is_some() {
            *restarts += 1;
            *node = start_node();
        }
        let Some(rows) = tasks_and_pulls(db_url).await else {
            continue;
        };
        let Some(row) = rows.into_iter().find(|r| r.id == id) else {
            continue;
        };
        match (row.status.as_str(), &row.pull) {
            ("completed", _) => return row,
            ("failed" | "cancelled", _) => panic!("task {id}: {} {:?}", row.status, row.error),
            ("awaiting_review", Some((pull, head))) if !approved => {
                let response = client
                    .post(format!("{base}/v1/pulls/{pull}/reviews"))
                    .send_json(&json!({ "decision": "approve", "head_oid": head }))
                    .await
                    .unwrap();
                approved = response.status().is_success();
            }
            _ => {}
        }
    }
}
