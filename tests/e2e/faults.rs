//! Faults with real processes and hundreds of tasks in flight: a node (and the coordinator
//! on it) killed with SIGKILL, the NATS server restarted, the Postgres server restarted.
//! What must hold: every acknowledged submission is stored once (a submission retried with
//! its idempotency key is not a second task) and completes, and the gateway says 503 while a
//! service is down and recovers by itself. The effects of tasks (pushes, pull requests,
//! merges, paid model calls) are counted under faults in `chaos.rs`.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::cluster::{
    analyzer_nodes, cluster_env, delete_streams, migrate, start_gateway, tear_down,
};
use crate::support::{PgDatabase, Process, client_as, eventually, fixture_repo, unique};

/// How many tasks each fault test keeps in flight.
const TASKS: usize = 500;

/// Submits `TASKS` analyses, `parallel` at a time, each with its own idempotency key; retries
/// any that is not acknowledged (503) with the same key until it is. Returns the task ids.
async fn submit_all(client: &awc::Client, base: &str, repo: &str, stem: &str) -> Vec<String> {
    futures_util::stream::iter(0..TASKS)
        .map(|i| {
            let key = format!("{stem}-{i}");
            async move {
                eventually(
                    "an acknowledged submission",
                    Duration::from_secs(60),
                    || async {
                        let mut response = client
                            .post(format!("{base}/v1/tasks"))
                            .insert_header(("Idempotency-Key", key.as_str()))
                            .send_json(&json!({ "kind": "analyze", "repo": repo }))
                            .await
                            .ok()?;
                        let status = response.status().as_u16();
                        let task: Value = response.json().await.ok()?;
                        matches!(status, 200 | 202).then(|| task["id"].as_str().unwrap().to_owned())
                    },
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// How many tasks completed, and how many are stored at all, read from the database itself.
async fn tally(db_url: &str) -> Option<(i64, i64)> {
    let db = Database::connect(db_url).await.ok()?;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT count(*) FROM tasks WHERE status = 'completed') AS done, \
             (SELECT count(*) FROM tasks) AS stored",
        ))
        .await
        .ok()??;
    let done: i64 = row.try_get("", "done").ok()?;
    let stored: i64 = row.try_get("", "stored").ok()?;
    let _ = db.close().await;
    Some((done, stored))
}

/// Waits until at least `n` tasks completed; returns how many had.
async fn completed_at_least(db_url: &str, n: usize) -> usize {
    eventually("tasks to complete", Duration::from_secs(60), || async {
        let (done, _) = tally(db_url).await?;
        (done as usize >= n).then_some(done as usize)
    })
    .await
}

/// Waits until every task completed, and checks that no submission was stored twice.
async fn every_task_completes_once(db_url: &str) {
    let (done, stored) = eventually(
        "every task to complete",
        Duration::from_secs(180),
        || async {
            let (done, stored) = tally(db_url).await?;
            (done as usize >= TASKS).then_some((done, stored))
        },
    )
    .await;
    assert_eq!(
        (done as usize, stored as usize),
        (TASKS, TASKS),
        "each submission stored once, and completed"
    );
}

/// Two nodes (coordinator and analyzer each) and a gateway; the gateway's base URL.
async fn two_nodes_and_a_gateway(
    env: &[(&str, String)],
    names: [&str; 2],
) -> (Vec<Process>, String) {
    let nodes = analyzer_nodes(env, &names);
    let (gateway, base) = start_gateway(env).await;
    let mut processes: Vec<Process> = nodes;
    processes.push(gateway);
    (processes, base)
}

#[actix_rt::test]
async fn five_hundred_tasks_complete_once_each_when_a_node_and_its_coordinator_are_killed() {
    let (db, prefix, env) = crate::cluster::migrated_cluster("f").await;
    let (mut processes, base) = two_nodes_and_a_gateway(&env, ["victim", "survivor"]).await;
    let client = client_as("admin");
    let repo = fixture_repo();
    let repo = repo.path().to_string_lossy().into_owned();

    let submitted = submit_all(&client, &base, &repo, "kill").await;
    assert_eq!(submitted.len(), TASKS);
    completed_at_least(&db.url, TASKS / 5).await;
    drop(processes.remove(0)); // the victim, by SIGKILL: no drain, no goodbye
    every_task_completes_once(&db.url).await;
    tear_down(prefix, db).await;
}

/// A NATS server of the test's own (with JetStream on disk), restartable on the same port.
pub(crate) struct Nats {
    port: u16,
    dir: crate::support::TempDir,
    process: Option<Process>,
}

impl Nats {
    pub(crate) async fn start() -> Self {
        let mut nats = Self {
            port: crate::support::free_port(),
            dir: crate::support::TempDir::new(),
            process: None,
        };
        nats.up().await;
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let port = self.port.to_string();
        let args: [&std::ffi::OsStr; 7] = [
            "-a".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-js".as_ref(),
            "-sd".as_ref(),
            self.dir.path().as_os_str(),
        ];
        self.process = Some(crate::support::nats_server(self.port, &args).await);
    }

    pub(crate) async fn restart(&mut self) {
        self.process = None; // killed
        self.up().await;
    }
}

#[actix_rt::test]
async fn no_acknowledged_submission_is_lost_when_nats_restarts_and_everyone_reconnects() {
    let mut nats = Nats::start().await;
    let db = PgDatabase::create().await;
    let mut env = cluster_env(&db.url, &unique("n"));
    env.retain(|(k, _)| *k != "ORION__BUS__URL");
    env.push(("ORION__BUS__URL", nats.url()));
    migrate(&env);
    let (_processes, base) = two_nodes_and_a_gateway(&env, ["a", "b"]).await;
    let client = client_as("admin");
    let repo = fixture_repo();
    let repo = repo.path().to_string_lossy().into_owned();

    let submitting = submit_all(&client, &base, &repo, "nats");
    let restarting = async {
        let done = completed_at_least(&db.url, 50).await;
        nats.restart().await;
        done
    };
    let (submitted, done_at_restart) = futures_util::join!(submitting, restarting);
    assert!(
        done_at_restart < TASKS / 2,
        "NATS restarted with most of the work still to do ({done_at_restart} done)"
    );
    assert_eq!(
        submitted.len(),
        TASKS,
        "every submission was acknowledged in the end"
    );
    every_task_completes_once(&db.url).await;
    // The gateway is ready again: it reconnected by itself.
    let mut ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "{:?}", ready.body().await);
    db.drop_now().await;
}

/// A Postgres server of the test's own (Debian's binaries, trust authentication, on a free
/// port), stopped hard and started again on the same data.
pub(crate) struct Postgres {
    bin: std::path::PathBuf,
    dir: crate::support::TempDir,
    port: u16,
}

impl Postgres {
    /// Runs a Postgres program as the `postgres` user when this is root (Postgres refuses
    /// to run as root), as this user otherwise.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let status = if unsafe_is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            std::process::Command::new(&program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        }
        .expect("the Postgres server binaries are installed");
        assert!(status.success(), "{} {args:?}", program.display());
    }

    pub(crate) fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql package (scripts/services.sh installs it)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("pg_ctl").exists())
            .expect("pg_ctl");
        let port = crate::support::free_port();
        let dir = crate::support::TempDir::new();
        // The server runs as `postgres`: it needs to enter the directory.
        std::process::Command::new("chmod")
            .arg("777")
            .arg(dir.path())
            .status()
            .unwrap();
        let pg = Self { bin, dir, port };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres"]);
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    pub(crate) fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    pub(crate) fn down(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let bin = self.bin.join("pg_ctl");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&bin)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::process::Command::new(bin)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is uid 0).
fn unsafe_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[actix_rt::test]
async fn while_postgres_restarts_the_gateway_answers_503_then_recovers_and_no_task_is_lost() {
    let pg = Postgres::start();
    let prefix = unique("p");
    let env = cluster_env(&pg.url(), &prefix);
    migrate(&env);
    let (_processes, base) = two_nodes_and_a_gateway(&env, ["a", "b"]).await;
    let client = client_as("admin");
    let repo = fixture_repo();
    let repo = repo.path().to_string_lossy().into_owned();

    let submitting = submit_all(&client, &base, &repo, "pg");
    let outage = async {
        let done = completed_at_least(&pg.url(), 50).await;
        pg.down();
        // Meanwhile: 503, as problem+json, from readiness and from a submission.
        let ready = eventually(
            "the gateway to say 503",
            Duration::from_secs(20),
            || async {
                let mut response = client.get(format!("{base}/readyz")).send().await.ok()?;
                let body: Value = response.json().await.ok()?;
                (response.status().as_u16() == 503).then_some(body)
            },
        )
        .await;
        assert_eq!(ready["code"], "service_unavailable", "{ready}");
        // The gateway waits for a pooled connection for up to 5 s before it says 503.
        let mut refused = client
            .post(format!("{base}/v1/tasks"))
            .timeout(Duration::from_secs(15))
            .send_json(&json!({ "kind": "analyze", "repo": repo }))
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 503);
        assert_eq!(
            refused.json::<Value>().await.unwrap()["code"],
            "service_unavailable"
        );
        pg.up();
        done
    };
    let (submitted, done_at_outage) = futures_util::join!(submitting, outage);
    assert!(done_at_outage < TASKS / 2, "{done_at_outage} done");
    assert_eq!(submitted.len(), TASKS);
    eventually(
        "the gateway to be ready again",
        Duration::from_secs(30),
        || async {
            let response = client.get(format!("{base}/readyz")).send().await.ok()?;
            (response.status().as_u16() == 200).then_some(())
        },
    )
    .await;
    every_task_completes_once(&pg.url()).await;
    delete_streams(prefix).await;
}
