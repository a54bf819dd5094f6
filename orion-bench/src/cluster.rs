//! `orion bench cluster`: the cluster runtime's speed against the NATS server it runs on,
//! measured in the same run on the same server.
//!
//! (a) An agent request (`orion_actors::ask` → an `orion node` process's bridge → its agent
//!     actor → the reply) against a bare NATS request to a bare responder in a process of its
//!     own, with a payload of the same size: latency p50/p99 one at a time, and throughput
//!     with 1 and 32 in flight. Both responders run throughout, and the two sides take turns
//!     in six rounds, so that a change in the machine's load falls on both alike.
//! (b) Tasks per second through REST (with JWT, as a cluster's gateway runs), the coordinator,
//!     an instant agent and Postgres, each task counted once as its completion arrives on the
//!     bus and every one found completed in Postgres afterwards; the CPU per task of this
//!     process, of NATS and of Postgres. Against bare JetStream (async publishes per second,
//!     and pulls with acknowledgement per second), and against Celery where it is installed,
//!     run once before Orion and once after, with the CPU per task of its client, its worker
//!     and Redis; Orion is compared with the faster Celery run.
//! (c) The resident memory of an idle `orion node` process.

use crate::say;
use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::Context;
use futures_util::StreamExt;
use orion_actors::{Agent, AgentActor, BusBridge, Coordinator, Work, WorkContext, ask};
use orion_bus::{AgentKind, Body, Bus, BusConfig, EventType, NatsBus, Subjects, Task, TaskFailure};
use orion_services::lifecycle::Lifecycle;
use orion_services::store::SqlStore;
use sea_orm::{ConnectionTrait, Database};
use serde::Serialize;

use crate::ClusterArgs;

/// A child process, killed when dropped.
pub(crate) struct Child(pub(crate) std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `orion bench nats-echo`: answers every request on `subject` with its own payload; prints a
/// line once it listens.
pub async fn nats_echo(args: crate::NatsEchoArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = async_nats::connect(&args.nats).await?;
    let mut requests = client
        .queue_subscribe(args.subject.clone(), "raw".into())
        .await?;
    client.flush().await?;
    say!(out, "listening on {}", args.subject);
    while let Some(message) = requests.next().await {
        if let Some(reply) = message.reply {
            client.publish(reply, message.payload).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An agent that does nothing: what is measured is everything around the work.
struct Instant0;

#[async_trait::async_trait]
impl Work for Instant0 {
    async fn perform(&self, _: &Task, _: &WorkContext) -> Result<serde_json::Value, TaskFailure> {
        Ok(serde_json::json!({}))
    }
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    per_s_1: f64,
    per_s_32: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    agent_request: Latency,
    raw_nats_request: Latency,
    /// agent p50 ÷ raw p50 (target ≤ 1.5).
    p50_ratio: f64,
    /// agent ÷ raw throughput with 32 in flight (target ≥ 0.6).
    throughput_32_ratio: f64,
    /// The same ratio in each round.
    rounds_32_ratio: Vec<f64>,
    tasks: usize,
    /// The nodes' `node.concurrency` (`--concurrency`).
    concurrency: usize,
    tasks_per_s: f64,
    jetstream_publish_per_s: f64,
    jetstream_pull_ack_per_s: f64,
    /// tasks/s ÷ JetStream async publishes/s: context, not a target (bare publishes store no
    /// task's state; Celery's rate is the yardstick).
    tasks_vs_publish: f64,
    /// CPU of Orion's gateway and node (this process, with the bench's client) per task
    /// through REST.
    orion_cpu_ms_per_task: f64,
    /// CPU of the machine's NATS server per task, meanwhile.
    nats_cpu_ms_per_task: f64,
    /// CPU of the machine's Postgres processes per task, meanwhile.
    postgres_cpu_ms_per_task: f64,
    /// The same tasks through Celery, where it is installed: a run before Orion's and one
    /// after.
    celery: Vec<CeleryFigures>,
    /// Orion's tasks/s ÷ the faster Celery run's (target ≥ 2).
    tasks_vs_celery: Option<f64>,
    idle_node_rss_mb: Option<f64>,
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Rounds in which the agent and the bare responder take turns, so that a change in the
/// machine's load during the run falls on both sides alike. The side that goes first
/// alternates, and the count is even: each side's 32-in-flight phase follows a phase one at
/// a time as often as it follows the other side's 32 in flight.
const ROUNDS: usize = 6;

/// One side's timings, summed over the rounds.
#[derive(Default)]
struct Timings {
    /// Each call's latency, one at a time.
    took: Vec<Duration>,
    /// The time of the calls one at a time.
    one: Duration,
    /// The calls made 32 at a time, and their time.
    many: usize,
    thirty_two: Duration,
}

impl Timings {
    /// Times `n` calls one at a time.
    async fn one_at_a_time<F, Fut>(&mut self, n: usize, call: &F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let start = Instant::now();
        for _ in 0..n {
            let one = Instant::now();
            call().await?;
            self.took.push(one.elapsed());
        }
        self.one += start.elapsed();
        Ok(())
    }

    /// Times `n` calls 32 at a time; answers their time.
    async fn thirty_two_at_a_time<F, Fut>(&mut self, n: usize, call: &F) -> anyhow::Result<Duration>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let start = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
            .map(|_| call())
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let took = start.elapsed();
        (self.many, self.thirty_two) = (self.many + n, self.thirty_two + took);
        Ok(took)
    }

    fn latency(mut self) -> Latency {
        self.took.sort();
        Latency {
            p50_us: quantile(&self.took, 0.5),
            p99_us: quantile(&self.took, 0.99),
            per_s_1: self.took.len() as f64 / self.one.as_secs_f64(),
            per_s_32: self.many as f64 / self.thirty_two.as_secs_f64(),
        }
    }
}

/// Times, for each of `agent` and `raw`, `n` calls one at a time and `n32` calls 32 at a
/// time, both split over [`ROUNDS`] rounds (each count rounded up to a multiple of them);
/// gives both sides' figures and each round's 32-in-flight ratio (agent ÷ raw).
async fn measure<A, AFut, R, RFut>(
    n: usize,
    n32: usize,
    agent: A,
    raw: R,
) -> anyhow::Result<(Latency, Latency, Vec<f64>)>
where
    A: Fn() -> AFut,
    AFut: std::future::Future<Output = anyhow::Result<()>>,
    R: Fn() -> RFut,
    RFut: std::future::Future<Output = anyhow::Result<()>>,
{
    const ON_AGENT: &str = "while asking the agent";
    const ON_RAW: &str = "while asking the bare responder";
    for _ in 0..n / 10 {
        agent().await.context(ON_AGENT)?;
        raw().await.context(ON_RAW)?;
    }
    let (n, n32) = (n.div_ceil(ROUNDS), n32.div_ceil(ROUNDS));
    let (mut a, mut r) = (Timings::default(), Timings::default());
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // Whether the agent takes each turn: it goes first in even rounds.
        let turns = [round % 2 == 0, round % 2 == 1];
        for agent_turn in turns {
            match agent_turn {
                true => a.one_at_a_time(n, &agent).await.context(ON_AGENT)?,
                false => r.one_at_a_time(n, &raw).await.context(ON_RAW)?,
            }
        }
        let (mut many_a, mut many_r) = (Duration::ZERO, Duration::ZERO);
        for agent_turn in turns {
            match agent_turn {
                true => {
                    many_a = a
                        .thirty_two_at_a_time(n32, &agent)
                        .await
                        .context(ON_AGENT)?
                }
                false => many_r = r.thirty_two_at_a_time(n32, &raw).await.context(ON_RAW)?,
            }
        }
        // Rates of the same count: agent ÷ raw is raw's time ÷ the agent's.
        ratios.push(many_r.as_secs_f64() / many_a.as_secs_f64());
    }
    Ok((a.latency(), r.latency(), ratios))
}

fn agent(bus: Arc<dyn Bus>, store: Arc<dyn orion_services::store::Store>, node: &str) -> Agent {
    Agent {
        context: WorkContext {
            node: node.to_owned(),
            agent: AgentKind::Analyzer,
            bus,
            repos: Default::default(),
            run: Default::default(),
        },
        work: Arc::new(Instant0),
        store,
    }
}

/// Runs the cluster bench against `args.nats`, else `bus_url` (the configured bus), else the
/// local server; writes its figures to `out`.
pub async fn cluster(
    args: ClusterArgs,
    bus_url: Option<String>,
    redis_url: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let nats = args
        .nats
        .clone()
        .or(bus_url)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let postgres = args
        .postgres
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    if !args.nodes.is_empty() {
        let counts: Vec<usize> = args.nodes.iter().map(|n| usize::from(*n)).collect();
        let steps = crate::scaling::scaling(&nats, &postgres, &counts, args.tasks).await?;
        if args.json {
            say!(out, "{}", serde_json::to_string_pretty(&steps)?);
        } else {
            crate::scaling::print(&steps, out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Celery runs before Orion and after it, and Orion is compared with the faster of the two:
    // neither side has the machine in a state the other left it in.
    let redis = args
        .redis
        .clone()
        .or(redis_url)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let mut celery = Vec::new();
    if !args.no_celery {
        celery.extend(celery_baseline(&redis, args.tasks).await?);
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{}", &run[..12]);
    let database = format!("orion_bench_{}", &run[..12]);
    let admin = Database::connect(format!("{postgres}/postgres"))
        .await
        .context("while connecting to Postgres (--postgres)")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
        .await?;
    let result = run_all(&args, &nats, &format!("{postgres}/{database}"), &prefix).await;
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .await?;
    let mut figures = result?;
    if !celery.is_empty() {
        celery.extend(celery_baseline(&redis, args.tasks).await?);
    }
    figures.tasks_vs_celery = celery
        .iter()
        .map(|c| c.tasks_per_s)
        .reduce(f64::max)
        .map(|fastest| figures.tasks_per_s / fastest);
    figures.celery = celery;
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print(&figures, args.no_celery, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_all(
    args: &ClusterArgs,
    nats: &str,
    db_url: &str,
    prefix: &str,
) -> anyhow::Result<Figures> {
    let tasks = &args.tasks;
    let (n, n32) = (args.requests.max(1), args.requests.max(1) * 10);
    let auth = crate::BenchAuth::new();
    let subjects = || Subjects::new(prefix.to_owned()).expect("a valid prefix");
    let concurrency = usize::from(args.concurrency);
    // As `orion node` sets it from `node.concurrency`.
    let config = BusConfig {
        prefetch: concurrency,
        ..BusConfig::default()
    };
    let node_bus: Arc<dyn Bus> =
        Arc::new(NatsBus::connect(nats, subjects(), config.clone()).await?);
    let client_bus = NatsBus::connect(nats, subjects(), config.clone()).await?;
    let store: Arc<dyn orion_services::store::Store> = Arc::new(SqlStore::connect(db_url).await?);

    // (a) An agent on another node (an `orion node` process) against a bare responder in a
    // process of its own; this process only asks.
    let exe = std::env::current_exe()?;
    let answerer = Child(
        orion_node(nats, db_url, prefix, "bench-answerer")?
            .args(["--agents", "analyzer"])
            .env("ORION__NODE__CONCURRENCY", concurrency.to_string())
            .spawn()
            .context("while starting the answering node")?,
    );
    let asked = || async {
        ask(
            &client_bus,
            "bench",
            AgentKind::Analyzer,
            "ping",
            serde_json::Value::Null,
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
        .map_err(anyhow::Error::from)
    };
    // The node subscribes as it starts: wait for its first answer.
    let ready = Instant::now();
    while asked().await.is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "the agent never answered"
        );
    }

    let raw = async_nats::connect(nats).await?;
    let raw_subject = format!("{prefix}.raw");
    let mut echo = std::process::Command::new(&exe)
        .args([
            "bench",
            "nats-echo",
            "--nats",
            nats,
            "--subject",
            &raw_subject,
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .context("while starting the bare responder")?;
    let stdout = echo.stdout.take().context("the responder's output")?;
    let echo = Child(echo);
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().next()
    })
    .await?
    .context("the responder did not start")??;
    // A payload the size of an agent request.
    let payload: bytes::Bytes = orion_bus::Envelope::new(
        "bench",
        Body::Request(orion_bus::AgentRequest {
            agent: AgentKind::Analyzer,
            op: "ping".into(),
            args: serde_json::Value::Null,
        }),
    )
    .encode(usize::MAX)?;
    let raw_request = || async {
        raw.request(raw_subject.clone(), payload.clone())
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    };
    let (agent_request, raw_nats_request, rounds_32_ratio) =
        measure(n, n32, asked, raw_request).await?;
    drop((answerer, echo));

    // The node of (b), a coordinator and the instant agent, on a thread of its own with its
    // own connections, as a node is a process of its own beside the gateway.
    let node_thread = actix::Arbiter::new();
    let (started, node_ready) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let (nats_url, node_db) = (nats.to_owned(), db_url.to_owned());
    let (node_subjects, node_config) = (subjects(), config.clone());
    node_thread.spawn(async move {
        let connected = async {
            let bus: Arc<dyn Bus> =
                Arc::new(NatsBus::connect(&nats_url, node_subjects, node_config).await?);
            let store: Arc<dyn orion_services::store::Store> =
                Arc::new(SqlStore::connect(&node_db).await?);
            anyhow::Ok((bus, store))
        };
        let (bus, store) = match connected.await {
            Ok(connections) => connections,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let analyzer = actix::Supervisor::start({
            let agent = agent(bus.clone(), store.clone(), "bench-node");
            move |_| AgentActor::new(agent)
        });
        let lifecycle = Lifecycle::new(store, bus.clone(), "bench-node");
        let coordinator = Coordinator::new(lifecycle, Default::default()).start();
        BusBridge::new(
            bus,
            "bench-node".into(),
            Some(coordinator),
            [(AgentKind::Analyzer, analyzer)].into(),
            concurrency,
            // As `orion node` on Postgres sets it.
            [(
                AgentKind::Coordinator,
                orion_actors::coordinator_concurrency(concurrency),
            )]
            .into(),
        )
        .start();
        let _ = started.send(Ok(()));
    });
    node_ready.await??;
    let lifecycle = Lifecycle::new(store.clone(), node_bus.clone(), "bench-gateway");

    // (b) tasks through REST, the coordinator, the instant agent and Postgres.
    // Only the completions are counted (decoding every event would load this process, which
    // is Orion's gateway and node, with the client's work).
    let mut events = node_bus
        .subscribe(&node_bus.subjects().events_of_type(EventType::Completed))
        .await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let state = orion_gateway::AppState::new(
        lifecycle.clone(),
        orion_gateway::GatewayConfig {
            submissions_per_minute: 0,
            ..Default::default()
        },
        // JWT, as a gateway of a cluster must run: every submission's token is verified.
        auth.authenticator()?,
        None,
    );
    actix_rt::spawn(orion_gateway::run(listener, state)?);
    let http = awc::Client::builder()
        .bearer_auth(auth.submitter_token()?)
        .finish();
    let base = format!("http://{addr}");
    let tick = crate::scaling::ticks_per_second();
    let cpu_before = crate::scaling::read_parts(std::process::id(), &[]);
    let started = Instant::now();
    let counting = async {
        // Each task once, however often its completion is announced.
        let mut done = std::collections::HashSet::with_capacity(*tasks);
        while done.len() < *tasks {
            match events.next().await {
                Some((_, envelope)) => {
                    if let Body::Event(e) = envelope.body
                        && e.event_type == EventType::Completed
                    {
                        done.insert(e.task_id);
                    }
                }
                None => anyhow::bail!("the event stream ended"),
            }
        }
        Ok(())
    };
    let submitting = async {
        let answers: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..*tasks)
            .map(|_| crate::submit_analyze(&http, &base, "/bench"))
            .buffer_unordered(32)
            .collect()
            .await;
        answers.into_iter().collect::<anyhow::Result<Vec<()>>>()
    };
    let (counted, submitted) = tokio::time::timeout(Duration::from_secs(600), async {
        futures_util::join!(counting, submitting)
    })
    .await
    .context("the tasks did not complete within 10 minutes")?;
    counted?;
    submitted?;
    let tasks_per_s = *tasks as f64 / started.elapsed().as_secs_f64();
    // This process is Orion's gateway and node (and the bench's client, a small part); the
    // NATS server and Postgres are the machine's.
    let cpu = crate::scaling::spent(
        &cpu_before,
        &crate::scaling::read_parts(std::process::id(), &[]),
        *tasks,
        tick,
    );
    node_thread.stop();
    // Every task is stored completed, once: what was counted on the bus is in Postgres.
    let stored = store_counts(db_url).await?;
    anyhow::ensure!(
        stored == (*tasks, *tasks),
        "Postgres holds {} tasks, {} of them completed, after {tasks} were submitted",
        stored.0,
        stored.1
    );

    let (jetstream_publish_per_s, jetstream_pull_ack_per_s) =
        jetstream_rates(nats, &format!("{prefix}_raw"), n32, payload.len())
            .await
            .context("while measuring bare JetStream")?;
    let idle_node_rss_mb = idle_node_rss(nats, db_url, prefix).await;
    client_bus
        .delete_streams()
        .await
        .context("while deleting the bench's streams")?;
    Ok(Figures {
        p50_ratio: agent_request.p50_us / raw_nats_request.p50_us,
        throughput_32_ratio: agent_request.per_s_32 / raw_nats_request.per_s_32,
        rounds_32_ratio,
        agent_request,
        raw_nats_request,
        tasks: *tasks,
        concurrency,
        tasks_per_s,
        jetstream_publish_per_s,
        jetstream_pull_ack_per_s,
        tasks_vs_publish: tasks_per_s / jetstream_publish_per_s,
        orion_cpu_ms_per_task: cpu.gateway,
        nats_cpu_ms_per_task: cpu.nats,
        postgres_cpu_ms_per_task: cpu.postgres,
        celery: Vec::new(),
        tasks_vs_celery: None,
        idle_node_rss_mb,
    })
}

/// The Celery baseline's figures.
#[derive(Debug, serde::Deserialize, Serialize)]
struct CeleryFigures {
    celery: String,
    tasks: usize,
    tasks_per_s: f64,
    cpu_ms_per_task: CeleryCpu,
}

/// What a task cost each part of the Celery run, in CPU milliseconds.
#[derive(Debug, serde::Deserialize, Serialize)]
struct CeleryCpu {
    /// The process that sends the tasks and waits for their results.
    client: f64,
    /// The worker of 8 threads.
    worker: f64,
    /// The machine's Redis server, broker and result store.
    redis: f64,
}

/// The same number of empty tasks through Celery (Redis broker, acks late, 8 threads, Redis
/// results), where Celery is installed for `python3`; `None` where it is not.
async fn celery_baseline(redis: &str, tasks: usize) -> anyhow::Result<Option<CeleryFigures>> {
    if !crate::python_imports("celery, redis") {
        return Ok(None);
    }
    // Removed when dropped, however the run ends.
    let dir = crate::TempDir::new()?;
    std::fs::write(
        dir.path().join("celery_baseline.py"),
        include_str!("celery_baseline.py"),
    )?;
    let queue = format!("orion-bench-{}", uuid::Uuid::new_v4().simple());
    let dir_for_run = dir.path().to_owned();
    let redis = redis.to_owned();
    let output = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("celery_baseline.py")
            .arg(tasks.to_string())
            .current_dir(&dir_for_run)
            .env("ORION_BENCH_BROKER", redis)
            .env("ORION_BENCH_QUEUE", queue)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await??;
    anyhow::ensure!(
        output.status.success(),
        "the Celery baseline failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(Some(crate::last_json_line(&text, "the Celery baseline")?))
}

/// Publishes in flight at once in the bare JetStream measurement.
const PUBLISH_WINDOW: usize = 1000;

/// Bare JetStream on the same server: `n` async publishes ([`PUBLISH_WINDOW`] in flight,
/// then their acks), and `n` pulls each acknowledged.
async fn jetstream_rates(
    nats: &str,
    stream: &str,
    n: usize,
    size: usize,
) -> anyhow::Result<(f64, f64)> {
    use async_nats::jetstream;
    let js = jetstream::new(async_nats::connect(nats).await?);
    let subject = format!("{stream}.x");
    let s = js
        .get_or_create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![subject.clone()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    // A window of publishes in flight, then their acks (the client bounds acks in flight).
    for _ in 0..n.div_ceil(PUBLISH_WINDOW) {
        let mut acks = Vec::with_capacity(PUBLISH_WINDOW);
        for _ in 0..PUBLISH_WINDOW {
            acks.push(
                js.publish(subject.clone(), payload.clone())
                    .await
                    .context("publishing")?,
            );
        }
        for ack in acks {
            ack.await.context("waiting for a publish's ack")?;
        }
    }
    let n = n.div_ceil(PUBLISH_WINDOW) * PUBLISH_WINDOW;
    let publish = n as f64 / start.elapsed().as_secs_f64();
    let consumer = s
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(64)
        .messages()
        .await?;
    let start = Instant::now();
    for _ in 0..n {
        let message = messages.next().await.context("the raw stream ended")??;
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let pull = n as f64 / start.elapsed().as_secs_f64();
    js.delete_stream(stream).await?;
    Ok((publish, pull))
}

/// `orion node --name <name>` (this binary) on the bench's bus and database, quiet.
fn orion_node(
    nats: &str,
    db_url: &str,
    prefix: &str,
    name: &str,
) -> anyhow::Result<std::process::Command> {
    let mut node = std::process::Command::new(std::env::current_exe()?);
    node.args(["node", "--name", name])
        .env("ORION__BUS__URL", nats)
        .env("ORION__BUS__PREFIX", prefix)
        .env("ORION__DATABASE__URL", db_url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(node)
}

/// Starts `orion node` (this binary) with every agent kind on the bench's bus and database,
/// lets it settle, and reads its resident memory.
async fn idle_node_rss(nats: &str, db_url: &str, prefix: &str) -> Option<f64> {
    let node = Child(
        orion_node(nats, db_url, prefix, "bench-idle")
            .ok()?
            .spawn()
            .ok()?,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.0.id())).ok();
    drop(node);
    let kb: f64 = status?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// How many tasks the bench's database holds, and how many of them are completed.
async fn store_counts(db_url: &str) -> anyhow::Result<(usize, usize)> {
    let db = Database::connect(db_url).await?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS stored, count(*) FILTER (WHERE status = 'completed') AS completed \
             FROM tasks",
        ))
        .await?
        .context("counting the stored tasks")?;
    let count = |column: &str| -> anyhow::Result<usize> {
        Ok(usize::try_from(row.try_get::<i64>("", column)?)?)
    };
    Ok((count("stored")?, count("completed")?))
}

fn print(f: &Figures, celery_skipped: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut row = |name: &str, l: &Latency| -> anyhow::Result<()> {
        say!(
            out,
            "{name:<22} p50 {:>8.0} µs   p99 {:>8.0} µs   1 in flight {:>8.0}/s   32 in flight {:>8.0}/s",
            l.p50_us,
            l.p99_us,
            l.per_s_1,
            l.per_s_32
        );
        Ok(())
    };
    row("agent request", &f.agent_request)?;
    row("raw NATS request", &f.raw_nats_request)?;
    let rounds = f.rounds_32_ratio.iter().map(|r| format!("{r:.2}"));
    say!(
        out,
        "  p50 ratio {:.3} (target ≤ 1.5: {}); 32-in-flight throughput ratio {:.3} (target ≥ 0.6: {}; by round {})",
        f.p50_ratio,
        crate::verdict(f.p50_ratio <= 1.5),
        f.throughput_32_ratio,
        crate::verdict(f.throughput_32_ratio >= 0.6),
        rounds.collect::<Vec<_>>().join(" ")
    );
    say!(
        out,
        "tasks through REST     {:>8.0} tasks/s ({} tasks, JWT, node.concurrency {}, instant agent, Postgres)\n  CPU per task: {:.2} ms in Orion's gateway and node (this process), {:.2} ms NATS, {:.2} ms Postgres",
        f.tasks_per_s,
        f.tasks,
        f.concurrency,
        f.orion_cpu_ms_per_task,
        f.nats_cpu_ms_per_task,
        f.postgres_cpu_ms_per_task
    );
    match (f.celery.as_slice(), f.tasks_vs_celery) {
        (runs @ [first, ..], Some(ratio)) => {
            for (run, c) in ["before Orion", "after Orion"].iter().zip(runs) {
                say!(
                    out,
                    "Celery {:<15} {:>8.0} tasks/s, {run} (Redis broker, acks late, 8 threads, Redis results; not durable)\n  CPU per task: {:.2} ms client, {:.2} ms worker, {:.2} ms Redis",
                    c.celery,
                    c.tasks_per_s,
                    c.cpu_ms_per_task.client,
                    c.cpu_ms_per_task.worker,
                    c.cpu_ms_per_task.redis
                );
            }
            say!(
                out,
                "  Orion ÷ Celery's faster run {ratio:.3} (target ≥ 2: {}; {} tasks each)",
                crate::verdict(ratio >= 2.0),
                first.tasks
            );
        }
        _ if celery_skipped => say!(out, "Celery                 (skipped: --no-celery)"),
        _ => say!(
            out,
            "Celery                 (not installed for python3: pip install 'celery[redis]==5.7.0'; or --no-celery)"
        ),
    }
    say!(
        out,
        "raw JetStream          {:>8.0} async publishes/s   {:>8.0} pulls+acks/s",
        f.jetstream_publish_per_s,
        f.jetstream_pull_ack_per_s
    );
    say!(
        out,
        "  tasks/s ÷ publishes/s {:.3} (context, not a target: bare publishes store no task's state)",
        f.tasks_vs_publish
    );
    match f.idle_node_rss_mb {
        Some(mb) => say!(
            out,
            "idle node              {mb:>8.1} MB resident (target ≤ 30: {})",
            crate::verdict(mb <= 30.0)
        ),
        None => say!(
            out,
            "idle node              (resident memory not readable here)"
        ),
    }
    Ok(())
}
