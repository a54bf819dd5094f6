//! Orion's benchmarks: `orion bench analyze` and `orion bench cluster` (the binary parses
//! their arguments and prints what they write). Each figure is printed beside the baseline
//! it is measured against, in the same run on the same machine; none is a timed test.
//!
//! - [`analysis`]: lines per second of the full analysis against a bare tree-sitter parse
//!   (and lizard, where installed).
//! - [`context`]: a prompt's context selection with the co-change history kept per HEAD
//!   commit, against reading it for every prompt.
//! - [`cluster`]: the cluster runtime against bare NATS and JetStream on the same server.
//! - [`scaling`] (`--nodes`): a gateway and N node processes, tasks/s and each part's CPU per
//!   task as nodes are added, against one node.
//! - [`llm`]: node processes making model calls against a provider's rate limits, kept in
//!   Redis for the cluster, against each process keeping its own.
//! - [`model`] (feature `local-model`): the in-process model's token rates, against llama.cpp
//!   on the same file, prompts and threads (where llama-cpp-python is installed).

pub mod analysis;
pub mod cluster;
pub mod context;
pub mod llm;
#[cfg(feature = "local-model")]
pub mod model;
pub mod scaling;

use anyhow::Context;
use clap::Args;

/// Writes a line to the bench's output; a failed write ends the bench with the error.
macro_rules! say {
    ($out:expr) => {
        writeln!($out).map_err(anyhow::Error::from)?
    };
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(anyhow::Error::from)?
    };
}
pub(crate) use say;

/// The figures a child process printed: the JSON of its output's last line.
pub(crate) fn last_json_line<T: serde::de::DeserializeOwned>(
    stdout: &str,
    what: &str,
) -> anyhow::Result<T> {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("{what} printed {line:?}, not its figures: {e}"))
}

/// Submits an analyze task of `repo` to the gateway at `base` and reads the answer to its
/// end, so that the connection goes back to the client's pool (as a client that keeps its
/// connections does) instead of being closed and another opened for the next task.
pub(crate) async fn submit_analyze(
    http: &awc::Client,
    base: &str,
    repo: &str,
) -> anyhow::Result<()> {
    let mut response = http
        .post(format!("{base}/v1/tasks"))
        .send_json(&serde_json::json!({ "kind": "analyze", "repo": repo }))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        response.status().as_u16() == 202,
        "submission refused: {}",
        response.status()
    );
    response.body().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The JWT issuer and audience of the bench's gateways and tokens.
const BENCH_JWT_PARTY: &str = "orion-bench";

/// The JWT auth a bench's gateway runs with, as a gateway of a cluster must (it does not
/// start without auth), and the bench's token for it.
pub(crate) struct BenchAuth {
    secret: String,
}

impl BenchAuth {
    /// A new HS256 secret, for one bench run.
    pub(crate) fn new() -> Self {
        let part = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            secret: format!("{}{}", part(), part()),
        }
    }

    /// Turns this auth on in an `orion` process: whatever auth settings the bench's own
    /// environment holds (a secret file, a public key) are not passed on.
    pub(crate) fn apply<'a>(
        &self,
        command: &'a mut std::process::Command,
    ) -> &'a mut std::process::Command {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORION__AUTH__") {
                command.env_remove(name);
            }
        }
        command
            .env("ORION__AUTH__MODE", "jwt")
            .env("ORION__AUTH__JWT__SECRET", &self.secret)
            .env("ORION__AUTH__JWT__ISSUER", BENCH_JWT_PARTY)
            .env("ORION__AUTH__JWT__AUDIENCE", BENCH_JWT_PARTY)
    }

    /// The same auth for a gateway in this process.
    pub(crate) fn authenticator(&self) -> anyhow::Result<orion_gateway::auth::Authenticator> {
        use orion_gateway::auth::{AuthMode, AuthSettings, Authenticator, JwtSettings};
        Authenticator::new(&AuthSettings {
            mode: AuthMode::Jwt,
            jwt: JwtSettings {
                secret: Some(self.secret.clone().into()),
                issuer: Some(BENCH_JWT_PARTY.into()),
                audience: Some(BENCH_JWT_PARTY.into()),
                ..Default::default()
            },
        })
        .map_err(anyhow::Error::msg)
    }

    /// A submitter's token, minted by `orion token` (this binary) as an operator would.
    pub(crate) fn submitter_token(&self) -> anyhow::Result<String> {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        let token = self
            .apply(&mut command)
            .args(["token", "--role", "submitter", "--subject", "bench"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("while minting the bench's token")?;
        anyhow::ensure!(token.status.success(), "orion token failed");
        Ok(String::from_utf8_lossy(&token.stdout).trim().to_owned())
    }
}

/// Whether a target is met, judged on the unrounded figure, as the benches print it.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Whether `python3` can import `modules` (comma-separated): a baseline runs where it can.
pub(crate) fn python_imports(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A directory of the bench's own, removed when dropped.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("orion-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The median of `v` (sorted in place): the middle value, or the mean of the two middle ones.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let half = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[half - 1] + v[half]) / 2.0
    } else {
        v[half]
    }
}

#[derive(Debug, Args)]
pub struct NatsEchoArgs {
    #[arg(long)]
    pub nats: String,
    #[arg(long)]
    pub subject: String,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The NATS server (default: bus.url, else nats://127.0.0.1:4222).
    #[arg(long)]
    pub nats: Option<String>,
    /// The Postgres server, without a database; the bench makes and drops one of its own.
    #[arg(long)]
    pub postgres: Option<String>,
    /// How many tasks go through REST.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// Requests timed one at a time; ten times as many go 32 at a time (each count rounded
    /// up to a multiple of the six rounds in which the agent and bare NATS take turns).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// The Redis server of the Celery baseline (default: redis.url, else
    /// redis://127.0.0.1:6379).
    #[arg(long)]
    pub redis: Option<String>,
    /// Skip the Celery baseline even where Celery is installed.
    #[arg(long)]
    pub no_celery: bool,
    /// The nodes' `node.concurrency`, applied as `orion node` on Postgres applies it: the agent
    /// answers and handles this many at once, every consumer prefetches this many, and the
    /// coordinator handles this many and at least 64. The shipped default is 4; quick agents
    /// are run with more.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Instead: a gateway process and this many node processes for each count (e.g. 1,2,4),
    /// with tasks/s and each part's CPU per task; `--tasks` tasks each.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: Vec<u16>,
}

#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Node processes making calls.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Calls each node makes at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each round lasts.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(6..=3600))]
    pub seconds: u64,
    /// The provider's limit of requests a minute.
    #[arg(long, default_value_t = 3000)]
    pub requests_per_minute: u32,
    /// The provider's limit of tokens a minute.
    #[arg(long, default_value_t = 300_000)]
    pub tokens_per_minute: u32,
    /// The Redis server (default: redis.url, else redis://127.0.0.1:6379).
    #[arg(long)]
    pub redis: Option<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead: be one node, calling the provider at this address.
    #[arg(long, hide = true)]
    pub node: Option<String>,
    /// A node's limiter: `shared` or `per_process`.
    #[arg(long, hide = true, default_value = "shared")]
    pub limiter: String,
    /// A node's calls: `requests` (small) or `tokens` (large).
    #[arg(long, hide = true, default_value = "requests")]
    pub bound_by: String,
    /// A node's account prefix in Redis.
    #[arg(long, hide = true)]
    pub account: Option<String>,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The repository or directory to measure.
    #[arg(long)]
    pub repo: std::path::PathBuf,
    /// Threads for the parallel measurement (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rounds per measurement; the fastest counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the comparison with lizard even where it is installed.
    #[arg(long)]
    pub no_lizard: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The git repository whose prompts are measured.
    #[arg(long)]
    pub repo: std::path::PathBuf,
    /// Prompts per measurement; medians are reported.
    #[arg(long, default_value_t = 10)]
    pub prompts: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The GGUF file (default: the configured local model).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Tokens to generate per run.
    #[arg(long, default_value_t = 128)]
    pub tokens: u32,
    /// Runs to take the median of.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print the figures as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Measure Orion on this many threads in this process and print its figures as JSON:
    /// what the benchmark runs each of its measurements in.
    #[arg(long, hide = true)]
    pub threads: Option<usize>,
}
