//! Past one server: Orion on a three-server JetStream cluster with every stream kept on all
//! three (R3). The server that leads the work queue is killed with SIGKILL in the middle of a
//! run and started again later, then another one; every task completes exactly once, and no
//! Orion process is restarted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use orion_bus::{BusConfig, NatsBus, StreamFamily, Subjects};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::cluster::{analyzer_nodes, cluster_env, migrate, start_gateway};
use crate::support::{
    PgDatabase, Process, TempDir, client_as, eventually, free_port, git_fixture, listening, unique,
};

/// Three `nats-server`s clustered on loopback, each with a store directory of its own.
struct NatsCluster {
    servers: Vec<Option<Process>>,
    /// (client port, cluster port) of each.
    ports: Vec<(u16, u16)>,
    store: TempDir,
}

impl NatsCluster {
    /// Three servers on free ports; again on other ports if one cannot listen on its own
    /// (another process took the port between its choice and the server's start).
    async fn start() -> Self {
        for _ in 0..3 {
            let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
            let mut cluster = Self {
                servers: vec![None, None, None],
                ports,
                store: TempDir::new(),
            };
            let mut started = true;
            for i in 0..3 {
                started &= cluster.start_server(i).await;
            }
            if started {
                return cluster;
            }
        }
        panic!("no three nats-servers could start");
    }

    fn name(i: usize) -> String {
        format!("s{i}")
    }

    /// Starts server `i` on its ports and store; whether it listens within ten seconds (its
    /// log, in the store directory, says why not).
    async fn start_server(&mut self, i: usize) -> bool {
        let (client, route) = self.ports[i];
        let routes: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.ports[j].1))
            .collect();
        let store = self.store.path().join(Self::name(i));
        let log = self.store.path().join(format!("{}.log", Self::name(i)));
        let mut command = std::process::Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-p", &client.to_string(), "-n"])
            .arg(Self::name(i))
            .arg("-js")
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .args(["--cluster_name", "orion-test", "--cluster"])
            .arg(format!("nats://127.0.0.1:{route}"))
            .arg("--routes")
            .arg(routes.join(","));
        if let Some(server) = listening(command, client, Duration::from_secs(10)).await {
            self.servers[i] = Some(server);
            return true;
        }
        eprintln!(
            "nats-server {} did not listen on {client}: {}",
            Self::name(i),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        false
    }

    /// SIGKILL, as a machine that is lost.
    fn kill(&mut self, i: usize) {
        let mut server = self.servers[i].take().expect("the server runs");
        server.0.kill().expect("SIGKILL");
        server.0.wait().expect("reaped");
    }

    /// Every server's client URL, comma-separated.
    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until the servers have found one another: the cluster can place a stream on all
    /// three. A meta leader alone (two servers routed) already takes a stream of one replica,
    /// but not yet a change to three ("no suitable peers for placement").
    async fn formed(&self) {
        let url = self.url();
        let probe = unique("r3-probe");
        eventually(
            "the JetStream cluster to place three replicas",
            Duration::from_secs(60),
            || async {
                let js = jetstream_of(&url).await.ok()?;
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("{probe}.>")],
                    num_replicas: 3,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .ok()?;
                js.delete_stream(&probe).await.ok()?;
                Some(())
            },
        )
        .await;
    }

    /// Which server leads `family`'s stream of `prefix` now, asked of any server that runs.
    async fn leader(&self, prefix: &str, family: StreamFamily) -> Option<usize> {
        let url = self
            .ports
            .iter()
            .zip(&self.servers)
            .find(|(_, s)| s.is_some())
            .map(|((client, _), _)| format!("nats://127.0.0.1:{client}"))?;
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let name = Subjects::new(prefix.to_owned()).ok()?.stream(family);
        let mut stream = js.get_stream(name).await.ok()?;
        let leader = stream.info().await.ok()?.cluster.as_ref()?.leader.clone()?;
        (0..3).find(|i| Self::name(*i) == leader)
    }
}

/// How many of the tasks the database has `completed`, and how many `completed` events it
/// logged for each task that has any.
async fn completions(db_url: &str) -> Option<(usize, HashMap<String, i64>)> {
    let db = Database::connect(db_url).await.ok()?;
    let backend = db.get_database_backend();
    let done = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT count(*) AS n FROM tasks WHERE status = 'completed'",
        ))
        .await
        .ok()??
        .try_get::<i64>("", "n")
        .ok()?;
    let events = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT task_id::text AS task, count(*) AS n FROM task_events \
             WHERE event_type = 'completed' GROUP BY task_id",
        ))
        .await
        .ok()?;
    let _ = db.close().await;
    let events = events
        .iter()
        .map(|r| Some((r.try_get("", "task").ok()?, r.try_get("", "n").ok()?)))
        .collect::<Option<_>>()?;
    Some((done as usize, events))
}

/// A monitor of the events as an external one would watch them: a plain NATS subscriber on
/// each of the three servers (one that is killed misses what comes while it is down; the
/// others do not), collecting the distinct `completed` events of each task, as the event's
/// `seq` names it (the bus carries an event at least once).
struct Monitor(Arc<Mutex<HashMap<String, HashSet<i64>>>>);

impl Monitor {
    async fn start(ports: &[(u16, u16)], prefix: &str) -> Self {
        let seen: Arc<Mutex<HashMap<String, HashSet<i64>>>> = Default::default();
        for (client, _) in ports {
            let connection = async_nats::connect(format!("nats://127.0.0.1:{client}"))
                .await
                .unwrap();
            let mut events = connection
                .subscribe(format!("{prefix}.events.*.completed"))
                .await
                .unwrap();
            connection.flush().await.unwrap();
            let seen = seen.clone();
            actix_rt::spawn(async move {
                let _connection = connection;
                while let Some(message) = events.next().await {
                    let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
                    let event = &envelope["payload"];
                    seen.lock()
                        .unwrap()
                        .entry(event["task_id"].as_str().unwrap().to_owned())
                        .or_default()
                        .insert(event["seq"].as_i64().unwrap());
                }
            });
        }
        Self(seen)
    }

    fn completed(&self) -> HashMap<String, HashSet<i64>> {
        self.0.lock().unwrap().clone()
    }
}

/// JetStream through any of the servers of `url` (comma-separated client URLs).
async fn jetstream_of(
    url: &str,
) -> Result<async_nats::jetstream::Context, async_nats::ConnectError> {
    let client = async_nats::connect(url.split(',').collect::<Vec<_>>().as_slice()).await?;
    Ok(async_nats::jetstream::new(client))
}

/// The number of replicas of each of `prefix`'s streams.
async fn replicas(url: &str, prefix: &str) -> Vec<usize> {
    let js = jetstream_of(url).await.unwrap();
    let subjects = Subjects::new(prefix.to_owned()).unwrap();
    let mut counts = Vec::new();
    for family in [
        StreamFamily::Tasks,
        StreamFamily::Work,
        StreamFamily::Results,
        StreamFamily::Events,
        StreamFamily::Dead,
    ] {
        let mut stream = js.get_stream(subjects.stream(family)).await.unwrap();
        counts.push(stream.info().await.unwrap().config.num_replicas);
    }
    counts
}

/// How many tasks are in each status.
async fn statuses(db_url: &str) -> Vec<(String, i64)> {
    let Ok(db) = Database::connect(db_url).await else {
        return Vec::new();
    };
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT status, count(*) AS n FROM tasks GROUP BY status ORDER BY status",
        ))
        .await
        .unwrap_or_default();
    let _ = db.close().await;
    rows.iter()
        .filter_map(|r| Some((r.try_get("", "status").ok()?, r.try_get("", "n").ok()?)))
        .collect()
}

/// Each of `prefix`'s streams: its messages and, per consumer, what waits and what is
/// delivered but unacknowledged.
async fn stream_states(url: &str, prefix: &str) -> Vec<String> {
    let Ok(js) = jetstream_of(url).await else {
        return vec!["no server answers".into()];
    };
    let subjects = Subjects::new(prefix.to_owned()).unwrap();
    let mut states = Vec::new();
    for family in [
        StreamFamily::Tasks,
        StreamFamily::Work,
        StreamFamily::Results,
    ] {
        let name = subjects.stream(family);
        let Ok(mut stream) = js.get_stream(&name).await else {
            states.push(format!("{name}: not found"));
            continue;
        };
        let messages = stream
            .info()
            .await
            .map(|i| i.state.messages)
            .unwrap_or(u64::MAX);
        let mut consumers = Vec::new();
        let mut names = stream.consumer_names();
        while let Some(Ok(consumer)) = names.next().await {
            if let Ok(mut c) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer)
                .await
                && let Ok(info) = c.info().await
            {
                consumers.push(format!(
                    "{consumer}: {} waiting, {} unacknowledged",
                    info.num_pending, info.num_ack_pending
                ));
            }
        }
        states.push(format!(
            "{name}: {messages} messages; {}",
            consumers.join("; ")
        ));
    }
    states
}

const TASKS: usize = 500;

#[actix_rt::test]
async fn on_three_nats_servers_losing_the_work_queue_leader_twice_loses_and_repeats_no_task() {
    let mut nats = NatsCluster::start().await;
    let url = nats.url();
    let prefix = unique("r3");
    nats.formed().await;
    // Streams made with one replica (as by an earlier release) once the servers have found
    // one another; a process configured for three changes them when it connects.
    eventually(
        "the JetStream cluster to take streams",
        Duration::from_secs(60),
        || async {
            let subjects = Subjects::new(prefix.clone()).unwrap();
            NatsBus::connect(&url, subjects, BusConfig::default())
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(replicas(&url, &prefix).await, [1; 5]);
    let replicated = BusConfig {
        replicas: 3,
        ..BusConfig::default()
    };
    let subjects = Subjects::new(prefix.clone()).unwrap();
    NatsBus::connect(&url, subjects, replicated).await.unwrap();
    assert_eq!(replicas(&url, &prefix).await, [3; 5]);

    let monitor = Monitor::start(&nats.ports, &prefix).await;
    let db = PgDatabase::create().await;
    let mut env = cluster_env(&db.url, &prefix);
    env.retain(|(key, _)| *key != "ORION__BUS__URL");
    env.extend([
        ("ORION__BUS__URL", url.clone()),
        ("ORION__BUS__REPLICAS", "3".to_owned()),
        (
            "RUST_LOG",
            "warn,orion_bus::transport::nats=debug".to_owned(),
        ),
        // An assignment whose node lost its server is handed on soon.
        ("ORION__BUS__ACK_WAIT_MS", "5000".to_owned()),
        ("ORION__BUS__MAX_DELIVER", "20".to_owned()),
        ("ORION__NODE__TASK_LEASE_SECS", "10".to_owned()),
    ]);
    migrate(&env);
    let mut nodes = analyzer_nodes(&env, &["node-a", "node-b"]);
    let (mut gateway, base) = start_gateway(&env).await;

    // Submitted from another task, each with its key, again until the gateway takes it.
    let repo = git_fixture();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let submitter = actix_rt::spawn({
        let base = base.clone();
        async move {
            let client = client_as("submitter");
            let mut ids = Vec::new();
            for i in 0..TASKS {
                let key = format!("replicated-{i}");
                let body = json!({ "kind": "analyze", "repo": repo_path });
                let id = eventually(
                    &format!("the gateway to take task {i}"),
                    Duration::from_secs(60),
                    || async {
                        let mut response = client
                            .post(format!("{base}/v1/tasks"))
                            .insert_header(("Idempotency-Key", key.as_str()))
                            .send_json(&body)
                            .await
                            .ok()?;
                        if !response.status().is_success() {
                            return None;
                        }
                        let task: Value = response.json().await.ok()?;
                        task["id"].as_str().map(str::to_owned)
                    },
                )
                .await;
                ids.push(id);
            }
            ids
        }
    });

    let done = |at_least: usize| {
        let db_url = db.url.clone();
        async move {
            let (done, _) = completions(&db_url).await?;
            (done >= at_least).then_some(done)
        }
    };
    let mut victims = Vec::new();
    for (after, family) in [(100, StreamFamily::Work), (300, StreamFamily::Work)] {
        eventually(
            &format!("{after} tasks to complete"),
            Duration::from_secs(180),
            || done(after),
        )
        .await;
        let leader = eventually(
            "a leader of the work queue",
            Duration::from_secs(30),
            || nats.leader(&prefix, family),
        )
        .await;
        // The second time, another server than the first, whoever leads now.
        let victim = if victims.contains(&leader) {
            (leader + 1) % 3
        } else {
            leader
        };
        let (done_then, _) = completions(&db.url).await.unwrap();
        eprintln!(
            "killing server {victim} ({} leads {family:?}) with {done_then} of {TASKS} completed",
            NatsCluster::name(leader)
        );
        nats.kill(victim);
        victims.push(victim);
        eventually(
            &format!("{} more tasks to complete without server {victim}", 50),
            Duration::from_secs(180),
            || done(after + 50),
        )
        .await;
        assert!(nats.start_server(victim).await, "server {victim} restarts");
    }
    assert_ne!(victims[0], victims[1], "two different servers were lost");

    let ids = submitter.await.unwrap();
    assert_eq!(ids.len(), TASKS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let events = loop {
        if let Some((TASKS, events)) = completions(&db.url).await {
            break events;
        }
        if tokio::time::Instant::now() > deadline {
            // What is left, and where: the tasks by status, and what each stream holds.
            panic!(
                "not every task completed within 240 s: tasks by status {:?}; streams {:?}",
                statuses(&db.url).await,
                stream_states(&url, &prefix).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Exactly once: one `completed` in the task log of each, and in the replicated stream.
    assert_eq!(events.len(), TASKS);
    assert!(events.values().all(|n| *n == 1), "{events:?}");
    // An event whose publication failed over is published again: the monitor sees every
    // task's completion, and each task completed once (one distinct `completed` event).
    let seen = eventually(
        "every task's completion seen by the monitor",
        Duration::from_secs(100),
        || async {
            let seen = monitor.completed();
            ids.iter().all(|id| seen.contains_key(id)).then_some(seen)
        },
    )
    .await;
    assert_eq!(seen.len(), TASKS);
    let twice: Vec<_> = seen.iter().filter(|(_, seqs)| seqs.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "completed more than once on the bus: {twice:?}"
    );
    // No Orion process was restarted: all of them ran through both losses.
    for process in nodes.iter_mut().chain([&mut gateway]) {
        assert!(
            process.0.try_wait().unwrap().is_none(),
            "an Orion process exited"
        );
    }
    drop(gateway);
    drop(nodes);
    db.drop_now().await;
}
