//! `orion bench cluster --nodes 1,2,4`: the cluster as it is deployed, one process per part,
//! measured as nodes are added on this machine.
//!
//! For each count of nodes: an `orion gateway` process and that many `orion node` processes
//! (coordinator and analyzer each) on the bench's NATS server and a Postgres database of their
//! own; analyze tasks of a small repository are submitted through REST, 32 at a time, and
//! counted as their `completed` events arrive on the bus. The CPU time each part spent meanwhile
//! (the gateway, the nodes, every `nats-server` and every `postgres` process of the machine,
//! read from `/proc`) is divided by the tasks: what one task costs each part. The row of one
//! node is the baseline of the others.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;

use crate::cluster::Child;
use crate::say;

/// One count of nodes: its rate and what a task cost each part, in CPU milliseconds.
#[derive(Debug, Serialize)]
pub struct Step {
    pub nodes: usize,
    pub tasks: usize,
    pub tasks_per_s: f64,
    pub cpu_ms_per_task: PartCosts,
}

#[derive(Debug, Default, Serialize)]
pub struct PartCosts {
    pub gateway: f64,
    pub nodes: f64,
    pub nats: f64,
    pub postgres: f64,
}

impl PartCosts {
    fn total(&self) -> f64 {
        self.gateway + self.nodes + self.nats + self.postgres
    }
}

/// The CPU time (user and system) process `pid` has spent, with that of its children it has
/// reaped (a Postgres server's ended backends, a node's git processes), in clock ticks; `None`
/// once it is gone.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: the fields start after the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    (11..=14).map(|i| fields.get(i)?.parse::<u64>().ok()).sum()
}

/// The processes of this machine whose command name is `name` (or starts with it).
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with(name))
        })
        .collect()
}

/// Clock ticks per second, as `/proc` counts them.
pub(crate) fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU ticks of each process of a part, by pid.
type Ticks = std::collections::HashMap<u32, u64>;

/// The CPU ticks of each part now: gateway, nodes, NATS, Postgres.
pub(crate) struct Reading {
    gateway: Ticks,
    nodes: Ticks,
    nats: Ticks,
    postgres: Ticks,
}

pub(crate) fn read_parts(gateway: u32, nodes: &[u32]) -> Reading {
    let ticks = |pids: &[u32]| -> Ticks {
        pids.iter()
            .filter_map(|p| Some((*p, cpu_ticks(*p)?)))
            .collect()
    };
    Reading {
        gateway: ticks(&[gateway]),
        nodes: ticks(nodes),
        nats: ticks(&processes_named("nats-server")),
        postgres: ticks(&processes_named("postgres")),
    }
}

/// What the processes alive at the second reading spent since the first (the whole life of
/// one that started in between). A Postgres backend that ended in between is counted in its
/// server's reaped children.
fn delta(before: &Ticks, after: &Ticks) -> u64 {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

pub(crate) fn spent(before: &Reading, after: &Reading, tasks: usize, tick: f64) -> PartCosts {
    let per_task = |ticks: u64| ticks as f64 * 1000.0 / tick / tasks.max(1) as f64;
    PartCosts {
        gateway: per_task(delta(&before.gateway, &after.gateway)),
        nodes: per_task(delta(&before.nodes, &after.nodes)),
        nats: per_task(delta(&before.nats, &after.nats)),
        postgres: per_task(delta(&before.postgres, &after.postgres)),
    }
}

/// What every process of one step shares.
struct Setup<'a> {
    nats: &'a str,
    db_url: String,
    prefix: String,
    repo_root: std::path::PathBuf,
    /// The auth the gateway verifies the bench's token with.
    auth: crate::BenchAuth,
}

impl Setup<'_> {
    fn orion(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(args)
            .env("ORION__BUS__URL", self.nats)
            .env("ORION__BUS__PREFIX", &self.prefix)
            .env("ORION__DATABASE__URL", &self.db_url)
            .env("ORION__SERVER__LISTEN", "127.0.0.1:0")
            .env("ORION__SERVER__SUBMISSIONS_PER_MINUTE", "0")
            .env(
                "ORION__SECURITY__REPO_ROOTS",
                format!("[{:?}]", self.repo_root),
            )
            // Errors only, on the bench's own stderr: why a part did not start.
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        self.auth.apply(&mut command);
        Ok(command)
    }
}

/// A small repository to analyze: a few files in three languages, one commit.
fn small_repository(root: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("src"))?;
    std::fs::write(
        repo.join("src/lib.rs"),
        "pub fn add(a: i32, b: i32) -> i32 {\n    if a > b { a + b } else { b + a }\n}\n",
    )?;
    std::fs::write(
        repo.join("app.py"),
        "def helper(x):\n    for i in range(x):\n        if i % 2:\n            return i\n    return 0\n",
    )?;
    std::fs::write(
        repo.join("main.go"),
        "package main\n\nfunc main() {\n\tprintln(\"hi\")\n}\n",
    )?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-q",
            "-m",
            "bench",
        ],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .stdout(Stdio::null())
            .status()
            .context("while running git for the bench's repository")?
            .success();
        anyhow::ensure!(ok, "git {args:?} failed in the bench's repository");
    }
    Ok(repo)
}

/// Waits until `seen` holds `n` distinct tasks with a `completed` event on `completed` (an
/// event may come twice on the bus, and a warm-up task's copy late).
async fn count(
    completed: &mut async_nats::Subscriber,
    seen: &mut HashSet<String>,
    n: usize,
) -> anyhow::Result<()> {
    while seen.len() < n {
        let message = completed.next().await.context("the bus ended")?;
        let envelope: serde_json::Value = serde_json::from_slice(&message.payload)?;
        if let Some(task) = envelope["payload"]["task_id"].as_str() {
            seen.insert(task.to_owned());
        }
    }
    Ok(())
}

/// Runs one step: `nodes` node processes and a gateway process, `tasks` analyze tasks.
async fn step(setup: &Setup<'_>, repo: &str, nodes: usize, tasks: usize) -> anyhow::Result<Step> {
    let migrated = setup
        .orion(&["migrate"])?
        .stdout(Stdio::null())
        .status()
        .context("while running orion migrate")?;
    anyhow::ensure!(migrated.success(), "orion migrate failed");
    let node_processes: Vec<Child> = (0..nodes)
        .map(|i| {
            let name = format!("bench-node-{i}");
            setup
                .orion(&["node", "--name", &name, "--agents", "coordinator,analyzer"])
                .and_then(|mut c| Ok(Child(c.stdout(Stdio::null()).spawn()?)))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut gateway = setup
        .orion(&["gateway"])?
        .stdout(Stdio::piped())
        .spawn()
        .context("while starting the gateway")?;
    let stdout = gateway.stdout.take().context("the gateway's output")?;
    let gateway = Child(gateway);
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout).lines().next()
        }),
    )
    .await
    .context("the gateway did not start within 30 s")??
    .context("the gateway did not start")??;
    let base = line
        .trim()
        .strip_prefix("gateway listening on ")
        .context("the gateway prints its address")?
        .to_owned();

    // Completions, as a monitor on the bus counts them.
    let client = async_nats::connect(setup.nats).await?;
    let mut completed = client
        .subscribe(format!("{}.events.*.completed", setup.prefix))
        .await?;
    client.flush().await?;
    let http = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .bearer_auth(setup.auth.submitter_token()?)
        .finish();
    // Four tasks per node, waited for, before the clock starts: the processes have connected,
    // migrated and taken work once.
    let submit = || crate::submit_analyze(&http, &base, repo);
    let warm = futures_util::future::try_join_all((0..nodes * 4).map(|_| submit()));
    let mut seen = HashSet::new();
    let (warmed, counted) = tokio::time::timeout(Duration::from_secs(120), async {
        futures_util::join!(warm, count(&mut completed, &mut seen, nodes * 4))
    })
    .await
    .context("the warm-up tasks did not complete within 2 minutes")?;
    warmed?;
    counted?;

    let node_pids: Vec<u32> = node_processes.iter().map(|c| c.0.id()).collect();
    let tick = ticks_per_second();
    let before = read_parts(gateway.0.id(), &node_pids);
    let started = Instant::now();
    let submitting = async {
        futures_util::stream::iter(0..tasks)
            .map(|_| submit())
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
    };
    let (submitted, counted) = tokio::time::timeout(Duration::from_secs(600), async {
        futures_util::join!(
            submitting,
            count(&mut completed, &mut seen, nodes * 4 + tasks)
        )
    })
    .await
    .context("the tasks did not complete within 10 minutes")?;
    submitted?;
    counted?;
    let elapsed = started.elapsed();
    let after = read_parts(gateway.0.id(), &node_pids);
    drop(gateway);
    drop(node_processes);
    Ok(Step {
        nodes,
        tasks,
        tasks_per_s: tasks as f64 / elapsed.as_secs_f64(),
        cpu_ms_per_task: spent(&before, &after, tasks, tick),
    })
}

/// Runs a step for each count in `counts`, each on a database and a bus prefix of its own
/// made under `postgres` (a server URL without a database) and dropped after.
pub async fn scaling(
    nats: &str,
    postgres: &str,
    counts: &[usize],
    tasks: usize,
) -> anyhow::Result<Vec<Step>> {
    use sea_orm::{ConnectionTrait, Database};
    let dir = crate::TempDir::new()?;
    let repo = small_repository(dir.path())?;
    let repo = repo.to_string_lossy().into_owned();
    let admin = Database::connect(format!("{postgres}/postgres"))
        .await
        .context("while connecting to Postgres (--postgres)")?;
    let mut steps = Vec::new();
    for &nodes in counts {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("orion_bench_{}", &run[..12]);
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
            .await?;
        let setup = Setup {
            nats,
            db_url: format!("{postgres}/{database}"),
            prefix: format!("bench{}", &run[..12]),
            repo_root: dir.path().canonicalize()?,
            auth: crate::BenchAuth::new(),
        };
        let result = step(&setup, &repo, nodes, tasks).await;
        let subjects = orion_bus::Subjects::new(setup.prefix.clone())?;
        if let Ok(bus) =
            orion_bus::NatsBus::connect(nats, subjects, orion_bus::BusConfig::default()).await
        {
            let _ = bus.delete_streams().await;
        }
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .await?;
        steps.push(result.with_context(|| format!("with {nodes} nodes"))?);
    }
    Ok(steps)
}

pub fn print(steps: &[Step], out: &mut dyn Write) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    say!(
        out,
        "scaling on this machine ({cores} cores): a gateway process and N node processes, analyze tasks of a 3-file repository, 32 in flight"
    );
    say!(
        out,
        "{:>5} {:>7} {:>9} {:>9} | CPU ms per task: {:>8} {:>8} {:>8} {:>8} {:>8}",
        "nodes",
        "tasks",
        "tasks/s",
        "vs 1 node",
        "gateway",
        "nodes",
        "NATS",
        "Postgres",
        "total"
    );
    let baseline = steps.first().map_or(1.0, |s| s.tasks_per_s);
    for s in steps {
        let c = &s.cpu_ms_per_task;
        say!(
            out,
            "{:>5} {:>7} {:>9.1} {:>8.2}× | {:>16} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            s.nodes,
            s.tasks,
            s.tasks_per_s,
            s.tasks_per_s / baseline,
            "",
            c.gateway,
            c.nodes,
            c.nats,
            c.postgres,
            c.total()
        );
    }
    Ok(())
}
