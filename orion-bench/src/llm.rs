//! `orion bench llm`: node processes making model calls at once against a provider's rate
//! limits, with the limits kept in Redis for the whole cluster, against the baseline of each
//! process keeping its own.
//!
//! The bench serves the OpenAI chat completions API itself, as a provider does: it allows so
//! many requests and so many tokens a minute, replenished continuously, in bursts of at most a
//! tenth of the minute's allowance, and answers 429 with `Retry-After` beyond them. Each
//! answer's usage is its prompt (4 characters a token) and an answer of between half and all
//! of the tokens asked for, so that a reservation is corrected by what was really used. Two
//! rounds: small calls, so that the requests run out first; large ones, so that the tokens do.
//! For each, the nodes first share the account in Redis, then each keeps its own (the baseline:
//! what the limits were before they were shared). Printed: the rate the provider admitted once
//! the first burst was spent, as a share of its limit, and the 429s it answered.

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::cluster::Child;
use crate::say;

/// How long after the start the first burst is taken to be spent: admissions before it are not
/// counted in the sustained rate.
const WARM_UP: Duration = Duration::from_secs(4);

/// A provider's limits, kept as two token buckets.
struct Provider {
    requests_per_minute: f64,
    tokens_per_minute: f64,
    state: Mutex<Buckets>,
}

struct Buckets {
    requests: f64,
    tokens: f64,
    at: Instant,
    /// When each admitted call came, and its tokens.
    admitted: Vec<(Instant, u64)>,
    refused: u64,
    calls: u64,
}

impl Provider {
    fn new(requests_per_minute: u32, tokens_per_minute: u32) -> Self {
        let (requests_per_minute, tokens_per_minute) =
            (f64::from(requests_per_minute), f64::from(tokens_per_minute));
        Self {
            requests_per_minute,
            tokens_per_minute,
            state: Mutex::new(Buckets {
                requests: requests_per_minute / 10.0,
                tokens: tokens_per_minute / 10.0,
                at: Instant::now(),
                admitted: Vec::new(),
                refused: 0,
                calls: 0,
            }),
        }
    }

    /// Admits a call of `tokens`, or says how long until it would be.
    fn admit(&self, tokens: u64) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let minutes = now.duration_since(s.at).as_secs_f64() / 60.0;
        s.at = now;
        s.requests =
            (s.requests + minutes * self.requests_per_minute).min(self.requests_per_minute / 10.0);
        s.tokens = (s.tokens + minutes * self.tokens_per_minute).min(self.tokens_per_minute / 10.0);
        s.calls += 1;
        let tokens_f = tokens as f64;
        if s.requests >= 1.0 && s.tokens >= tokens_f {
            s.requests -= 1.0;
            s.tokens -= tokens_f;
            s.admitted.push((now, tokens));
            return Ok(());
        }
        s.refused += 1;
        let short_requests = (1.0 - s.requests).max(0.0) / self.requests_per_minute;
        let short_tokens = (tokens_f - s.tokens).max(0.0) / self.tokens_per_minute;
        Err(Duration::from_secs_f64(
            short_requests.max(short_tokens) * 60.0,
        ))
    }
}

/// The answer's tokens: between half and all of `max_tokens`, varying from call to call.
fn answer_tokens(max_tokens: u64, call: u64) -> u64 {
    let half = max_tokens / 2;
    half + (call.wrapping_mul(2_654_435_761) % (max_tokens - half + 1))
}

async fn completions(
    provider: web::Data<Provider>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let characters: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .map(str::len)
                .sum()
        })
        .unwrap_or(0);
    let prompt = characters.div_ceil(4) as u64;
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(256).max(1);
    let call = provider.state.lock().map(|s| s.calls).unwrap_or(0);
    let completion = answer_tokens(max_tokens, call);
    match provider.admit(prompt + completion) {
        Ok(()) => HttpResponse::Ok().json(json!({
            "id": format!("chatcmpl-{call}"),
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": "ok" },
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion
            }
        })),
        Err(after) => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", format!("{:.3}", after.as_secs_f64())))
            .json(json!({ "error": { "message": "rate limit reached", "type": "requests" } })),
    }
}

/// One round's figures.
#[derive(Debug, Serialize)]
pub struct Round {
    /// `requests` or `tokens`: which limit runs out first.
    pub bound_by: &'static str,
    /// `shared` (Redis) or `per_process` (the baseline).
    pub limiter: &'static str,
    /// The bound limit's unit admitted a minute after the warm-up.
    pub sustained_per_minute: f64,
    pub limit_per_minute: f64,
    /// `sustained_per_minute / limit_per_minute`.
    pub share_of_limit: f64,
    pub responses_429: u64,
    pub calls_admitted: usize,
    pub calls_failed: u64,
}

/// What a node process reports when its time is up.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
pub struct NodeReport {
    pub ok: u64,
    pub failed: u64,
}

/// `orion bench llm`.
pub async fn llm(
    args: crate::LlmArgs,
    redis: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    if let Some(base_url) = &args.node {
        return node(&args, base_url, out).await;
    }
    let redis = args
        .redis
        .clone()
        .or(redis)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    if !args.json {
        say!(
            out,
            "orion bench llm: {} node processes, {} calls at once each, {} s a round, against a \
             provider allowing {} requests and {} tokens a minute (bursts of a tenth) that \
             answers 429 beyond them; sustained = after the first {} s",
            args.nodes,
            args.concurrency,
            args.seconds,
            args.requests_per_minute,
            args.tokens_per_minute,
            WARM_UP.as_secs()
        );
        say!(
            out,
            "{:<9} {:<24} {:>14} {:>10} {:>7} {:>9} {:>7}",
            "bound by",
            "limiter",
            "sustained/min",
            "of limit",
            "429s",
            "admitted",
            "failed"
        );
    }
    let mut rounds = Vec::new();
    for bound_by in ["requests", "tokens"] {
        for limiter in ["shared", "per_process"] {
            let round = run_round(&args, &redis, bound_by, limiter).await?;
            if !args.json {
                say!(
                    out,
                    "{:<9} {:<24} {:>14.0} {:>9.1}% {:>7} {:>9} {:>7}",
                    round.bound_by,
                    if limiter == "shared" {
                        "shared (Redis)"
                    } else {
                        "per process (baseline)"
                    },
                    round.sustained_per_minute,
                    round.share_of_limit * 100.0,
                    round.responses_429,
                    round.calls_admitted,
                    round.calls_failed
                );
            }
            rounds.push(round);
        }
    }
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&rounds)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The prompt's characters and the answer's allowance of a call in a round bound by `bound_by`.
fn call_size(bound_by: &str) -> (usize, u32) {
    match bound_by {
        // 25 + at most 20 tokens.
        "requests" => (100, 20),
        // 500 + at most 500 tokens.
        _ => (2_000, 500),
    }
}

async fn run_round(
    args: &crate::LlmArgs,
    redis: &str,
    bound_by: &'static str,
    limiter: &'static str,
) -> anyhow::Result<Round> {
    let provider = web::Data::new(Provider::new(
        args.requests_per_minute,
        args.tokens_per_minute,
    ));
    let served = provider.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(served.clone())
            .app_data(web::JsonConfig::default().limit(1 << 20))
            .route("/v1/chat/completions", web::post().to(completions))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .context("while starting the bench's provider")?;
    let address = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let base_url = format!("http://{address}/v1");
    // A Redis account of this run's own.
    let account = format!("orion-bench-{}", uuid::Uuid::now_v7().simple());
    let start = Instant::now();
    let mut nodes = Vec::new();
    for _ in 0..args.nodes {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["bench", "llm", "--node", &base_url, "--bound-by", bound_by])
            .args([
                "--limiter",
                limiter,
                "--redis",
                redis,
                "--account",
                &account,
            ])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args([
                "--requests-per-minute",
                &args.requests_per_minute.to_string(),
            ])
            .args(["--tokens-per-minute", &args.tokens_per_minute.to_string()])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        nodes.push(Child(
            command.spawn().context("while starting a node process")?,
        ));
    }
    let mut reports = Vec::new();
    for mut node in nodes {
        let stdout = node.0.stdout.take().context("a node's output")?;
        let report = actix_rt::task::spawn_blocking(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut text)
                .map(|_| text)
        })
        .await??;
        let status = actix_rt::task::spawn_blocking(move || node.0.wait()).await??;
        anyhow::ensure!(status.success(), "a node process failed: {status}");
        let report: NodeReport = serde_json::from_str(report.trim())
            .with_context(|| format!("a node's report: {report}"))?;
        reports.push(report);
    }
    handle.stop(true).await;
    let buckets = provider.state.lock().unwrap_or_else(|p| p.into_inner());
    let from = start + WARM_UP;
    let to = start + Duration::from_secs(args.seconds);
    let counted: Vec<u64> = buckets
        .admitted
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, tokens)| *tokens)
        .collect();
    let minutes = to.duration_since(from).as_secs_f64() / 60.0;
    let (sustained, limit) = if bound_by == "requests" {
        (counted.len() as f64, f64::from(args.requests_per_minute))
    } else {
        (
            counted.iter().sum::<u64>() as f64,
            f64::from(args.tokens_per_minute),
        )
    };
    let sustained = sustained / minutes;
    Ok(Round {
        bound_by,
        limiter,
        sustained_per_minute: sustained,
        limit_per_minute: limit,
        share_of_limit: sustained / limit,
        responses_429: buckets.refused,
        calls_admitted: buckets.admitted.len(),
        calls_failed: reports.iter().map(|r| r.failed).sum(),
    })
}

/// One node process: `concurrency` callers making calls until the time is up, then a JSON
/// line of what came of them.
async fn node(
    args: &crate::LlmArgs,
    base_url: &str,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    use orion_services::llm::limits::{LocalRateLimiter, RateLimiter, RedisRateLimiter};
    use orion_services::llm::{
        CallContext, ChatMessage, ChatModel, ChatRequest, MemoryCache, OpenAiChat, OpenAiConfig,
    };
    let mut config = OpenAiConfig::new(base_url, "bench-model");
    config.requests_per_minute = args.requests_per_minute;
    config.tokens_per_minute = args.tokens_per_minute;
    config.max_queue_wait = Duration::from_secs(60);
    config.base_backoff = Duration::from_millis(100);
    let limiter: Arc<dyn RateLimiter> = if args.limiter == "shared" {
        let redis = args.redis.as_deref().context("--redis")?;
        Arc::new(
            RedisRateLimiter::connect(redis, args.account.as_deref().unwrap_or("orion-bench"))
                .map_err(anyhow::Error::msg)?,
        )
    } else {
        Arc::new(LocalRateLimiter::new())
    };
    let model = Arc::new(
        OpenAiChat::new(config, Arc::new(MemoryCache::new(1)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_limiter(limiter),
    );
    let (characters, max_tokens) = call_size(&args.bound_by);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let node = uuid::Uuid::now_v7().simple().to_string();
    let callers = (0..args.concurrency).map(|caller| {
        let model = model.clone();
        let node = node.clone();
        async move {
            let mut report = NodeReport::default();
            let mut call = 0u64;
            while Instant::now() < deadline {
                call += 1;
                // Distinct, so that no answer comes from the cache.
                let head = format!("{node} {caller} {call} ");
                let prompt = format!(
                    "{head}{}",
                    "x".repeat(characters.saturating_sub(head.len()))
                );
                let request = ChatRequest {
                    messages: vec![ChatMessage::user(prompt)],
                    max_tokens: Some(max_tokens),
                    ..ChatRequest::default()
                };
                match model.chat(&CallContext::default(), &request).await {
                    Ok(_) => report.ok += 1,
                    Err(_) => report.failed += 1,
                }
            }
            report
        }
    });
    let reports = futures_util::future::join_all(callers).await;
    let report = NodeReport {
        ok: reports.iter().map(|r| r.ok).sum(),
        failed: reports.iter().map(|r| r.failed).sum(),
    };
    say!(out, "{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}
