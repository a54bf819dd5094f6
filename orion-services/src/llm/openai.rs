//! [`ChatModel`] for OpenAI-compatible endpoints (OpenAI, Ollama, llama.cpp server, vLLM).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::metrics;
use async_trait::async_trait;
use openai_api_rs::v1::chat_completion::chat_completion::{
    ChatCompletionRequest, ChatCompletionResponse,
};
use openai_api_rs::v1::chat_completion::{ChatCompletionMessage, Content, MessageRole};
use serde::{Deserialize, Serialize};

use super::limits::{Limits, LocalRateLimiter, RateLimiter, Refusal};
use super::{
    CallContext, ChatModel, ChatRequest, ChatResponse, LlmError, ResponseCache, Role, ToolCall,
    Usage,
};

/// Dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// Where and how to call the model.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as a bearer token; local servers often need none.
    pub api_key: Option<crate::secrets::SecretString>,
    pub model: String,
    /// Asked once the primary model stays unavailable through its retries.
    pub fallback_model: Option<String>,
    /// One whole request, connection to last byte.
    pub timeout: Duration,
    /// Requests per model before giving up on it.
    pub max_attempts: u32,
    /// The first retry's backoff ceiling; doubled per retry, capped by `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    /// The longest a call waits for its turn under the rate limits before its step fails
    /// with `rate_limited`.
    pub max_queue_wait: Duration,
    /// Prices by model name.
    pub prices: HashMap<String, Price>,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            fallback_model: None,
            timeout: Duration::from_secs(120),
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            requests_per_minute: 500,
            tokens_per_minute: 200_000,
            max_queue_wait: Duration::from_secs(120),
            prices: HashMap::new(),
        }
    }
}

/// The answer allowance assumed for a request that sets none.
const DEFAULT_ANSWER_TOKENS: u32 = 256;

/// The OpenAI-compatible chat model with cache, limits, retries and accounting.
pub struct OpenAiChat {
    http: reqwest::Client,
    config: OpenAiConfig,
    cache: Arc<dyn ResponseCache>,
    /// Where calls take their turns under the provider's limits (this process's own account
    /// unless one shared by the cluster is given).
    limiter: Arc<dyn RateLimiter>,
    /// This process's own account: the limiter when none is shared, and where calls take
    /// their turns while the shared one is out of reach.
    local: Arc<LocalRateLimiter>,
    /// The provider's part of its rate-limit accounts (see [`OpenAiChat::account`]).
    provider: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How one request went.
enum Attempt {
    Answer(ChatResponse),
    /// Worth retrying, after at least this long (from `Retry-After`) where the server said.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fail(LlmError),
}

/// The most tokens a request can use: its prompt (4 characters a token) and its whole answer
/// allowance. The rate limiter waits for it and the budget reserves it.
fn estimate_usage(request: &ChatRequest) -> Usage {
    let characters: usize = request.messages.iter().map(|m| m.content.len()).sum();
    Usage {
        prompt_tokens: characters.div_ceil(4) as u64,
        completion_tokens: u64::from(request.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS)),
    }
}

/// The longest `Retry-After` taken as given: a longer one (or `inf`) is read as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds (the form model APIs send), at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds = value.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

/// A call's turn under the rate limits: where it was taken, and what it reserved.
struct Turn<'a> {
    limiter: &'a dyn RateLimiter,
    account: String,
    reserved: u64,
}

impl OpenAiChat {
    pub fn new(config: OpenAiConfig, cache: Arc<dyn ResponseCache>) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Unavailable {
                requests: 0,
                last: e.to_string(),
            })?;
        let local = Arc::new(LocalRateLimiter::new());
        // The provider, by its address and key, the key by its digest only.
        let key = config
            .api_key
            .as_ref()
            .map(|k| crate::secrets::ExposeSecret::expose_secret(k).to_owned())
            .unwrap_or_default();
        let provider = crate::digest::sha256_hex(&[
            config.base_url.trim_end_matches('/').as_bytes(),
            key.as_bytes(),
        ])[..16]
            .to_owned();
        Ok(Self {
            limiter: local.clone(),
            local,
            provider,
            http,
            config,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Takes turns under the provider's limits in `limiter` (one shared by every node).
    pub fn with_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The account of `model`'s limits: the provider and the model.
    fn account(&self, model: &str) -> String {
        format!("{}:{model}", self.provider)
    }

    fn limits(&self) -> Limits {
        Limits {
            requests_per_minute: self.config.requests_per_minute,
            tokens_per_minute: self.config.tokens_per_minute,
        }
    }

    /// Cache hits and misses since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn cache_key(&self, context: &CallContext, request: &ChatRequest) -> String {
        crate::digest::sha256_hex(&[
            self.config.model.as_bytes(),
            &serde_json::to_vec(context).unwrap_or_default(),
            &serde_json::to_vec(request).unwrap_or_default(),
        ])
    }

    fn body(model: &str, request: &ChatRequest) -> ChatCompletionRequest {
        let messages = request
            .messages
            .iter()
            .map(|m| ChatCompletionMessage {
                role: match m.role {
                    Role::System => MessageRole::system,
                    Role::User => MessageRole::user,
                    Role::Assistant => MessageRole::assistant,
                },
                content: Content::Text(m.content.clone()),
                name: None,
                tool_calls: None,
                tool_call_id: None,
            })
            .collect();
        let mut body = ChatCompletionRequest::new(model.to_owned(), messages);
        body.max_tokens = request.max_tokens.map(i64::from);
        body.temperature = request.temperature.map(f64::from);
        body
    }

    fn cost(&self, model: &str, usage: Usage) -> f64 {
        let price = self.config.prices.get(model).copied().unwrap_or_default();
        (usage.prompt_tokens as f64 * price.input_per_million
            + usage.completion_tokens as f64 * price.output_per_million)
            / 1_000_000.0
    }

    /// Waits for `model`'s turn under the rate limits: one request, and an estimate of its
    /// tokens (4 characters a token, plus the answer's allowance). The turn: the tokens it
    /// reserved, and the account that gave it (the shared one, or this process's own while the
    /// shared one is out of reach), which the answer's usage then corrects.
    async fn admit(&self, model: &str, request: &ChatRequest) -> Result<Turn<'_>, LlmError> {
        let usage = estimate_usage(request);
        let estimate = usage.prompt_tokens + usage.completion_tokens;
        let account = self.account(model);
        let too_far = |turn: Duration| LlmError::RateLimited {
            turn_secs: turn.as_secs(),
            max_wait_secs: self.config.max_queue_wait.as_secs(),
        };
        let max_wait = self.config.max_queue_wait;
        let shared = self
            .limiter
            .admit(&account, self.limits(), estimate, max_wait)
            .await;
        let limiter: &dyn RateLimiter = match shared {
            Ok(()) => self.limiter.as_ref(),
            Err(Refusal::TooFar(turn)) => return Err(too_far(turn)),
            Err(Refusal::Unavailable(e)) => {
                // The shared account is out of reach: this process's own keeps the call from
                // running unmetered (a cluster may then exceed the limit, and retries on 429).
                tracing::warn!(error = %e, "the shared rate limiter is unavailable; limiting in this process");
                match self
                    .local
                    .admit(&account, self.limits(), estimate, max_wait)
                    .await
                {
                    Err(Refusal::TooFar(turn)) => return Err(too_far(turn)),
                    _ => self.local.as_ref(),
                }
            }
        };
        Ok(Turn {
            limiter,
            account,
            reserved: estimate,
        })
    }

    /// A `Retry-After` of `after`: every caller of `model`'s account waits it out. Kept in
    /// this process's account as well (which always keeps it), so that it holds while the
    /// shared one is out of reach.
    async fn pause(&self, model: &str, after: Duration) {
        let account = self.account(model);
        self.local.pause(&account, after).await;
        self.limiter.pause(&account, after).await;
    }

    async fn attempt(&self, model: &str, request: &ChatRequest) -> Attempt {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut call = self.http.post(url).json(&Self::body(model, request));
        if let Some(key) = &self.config.api_key {
            call = call.bearer_auth(crate::secrets::ExposeSecret::expose_secret(key));
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry {
                    reason: "timed out".into(),
                    after: None,
                };
            }
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("request failed: {e}"),
                    after: None,
                };
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry {
                    reason: "timed out reading the answer".into(),
                    after: None,
                };
            }
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("reading the answer failed: {e}"),
                    after: None,
                };
            }
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry {
                reason: format!("{status}: {}", text.chars().take(200).collect::<String>()),
                after,
            };
        }
        if !status.is_success() {
            return Attempt::Fail(LlmError::Rejected {
                status: status.as_u16(),
                message: text.chars().take(500).collect(),
            });
        }
        let parsed: ChatCompletionResponse = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => return Attempt::Fail(LlmError::Malformed(e.to_string())),
        };
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Attempt::Fail(LlmError::Malformed("no choices in the answer".into()));
        };
        let usage = Usage {
            prompt_tokens: parsed.usage.prompt_tokens.max(0) as u64,
            completion_tokens: parsed.usage.completion_tokens.max(0) as u64,
        };
        let tool_calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name.unwrap_or_default(),
                arguments: c.function.arguments.unwrap_or_default(),
            })
            .collect();
        Attempt::Answer(ChatResponse {
            content: choice.message.content.unwrap_or_default(),
            tool_calls,
            // The model as asked for and configured (prices, usage and spending caps are kept
            // by that name), not the provider's name for it (often a dated version).
            model: model.to_owned(),
            cost_usd: self.cost(model, usage),
            usage,
            cached: false,
            requests: 0,
        })
    }

    /// Up to `max_attempts` requests to one model; backoff doubles from `base_backoff`, with
    /// full jitter, and never waits less than the server's `Retry-After`.
    async fn with_retries(
        &self,
        model: &str,
        request: &ChatRequest,
        requests: &mut u32,
    ) -> Result<ChatResponse, LlmError> {
        let mut last = String::new();
        for attempt in 0..self.config.max_attempts.max(1) {
            if attempt > 0 {
                let ceiling = self
                    .config
                    .base_backoff
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(self.config.max_backoff);
                tokio::time::sleep(crate::jitter::jitter(ceiling)).await;
            }
            let turn = self.admit(model, request).await?;
            *requests += 1;
            match self.attempt(model, request).await {
                Attempt::Answer(answer) => {
                    let used = answer.usage.prompt_tokens + answer.usage.completion_tokens;
                    let delta = used as i64 - turn.reserved as i64;
                    if delta != 0 {
                        turn.limiter
                            .correct(&turn.account, self.limits(), delta)
                            .await;
                    }
                    return Ok(answer);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { reason, after } => {
                    tracing::warn!(model, attempt = attempt + 1, %reason, "model call failed; retrying");
                    if let Some(after) = after {
                        // Every caller of the account waits it out, not only this one.
                        self.pause(model, after).await;
                    }
                    last = reason;
                }
            }
        }
        Err(LlmError::Unavailable {
            requests: *requests,
            last,
        })
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    fn model_names(&self) -> Vec<String> {
        std::iter::once(self.config.model.clone())
            .chain(self.config.fallback_model.clone())
            .collect()
    }

    /// At the dearer of the primary and the fallback model's prices: either may answer.
    fn estimate_cost(&self, request: &ChatRequest) -> f64 {
        self.model_names()
            .iter()
            .map(|model| self.cost(model, estimate_usage(request)))
            .fold(0.0, f64::max)
    }

    #[tracing::instrument(
        name = "chat",
        skip_all,
        fields(
            gen_ai.operation.name = "chat",
            gen_ai.system = "openai",
            gen_ai.request.model = %self.config.model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            orion.cached = tracing::field::Empty,
            orion.agent = %context.agent,
            orion.step = %context.step,
        )
    )]
    async fn chat(
        &self,
        context: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, LlmError> {
        let key = self.cache_key(context, request);
        if let Some(cached) = self.cache.get(&key).await
            && let Ok(mut answer) = serde_json::from_str::<ChatResponse>(&cached)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics()
                .cache_lookups
                .with_label_values(&[super::cache::MODEL_RESPONSES, "hit"])
                .inc();
            answer.cached = true;
            answer.requests = 0;
            metrics()
                .model_requests
                .with_label_values(&[&answer.model, "cached"])
                .inc();
            return Ok(answer);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics()
            .cache_lookups
            .with_label_values(&[super::cache::MODEL_RESPONSES, "miss"])
            .inc();
        let mut requests = 0;
        let answered = match self
            .with_retries(&self.config.model, request, &mut requests)
            .await
        {
            Err(LlmError::Unavailable { last, .. }) if self.config.fallback_model.is_some() => {
                let fallback = self.config.fallback_model.clone().unwrap_or_default();
                tracing::warn!(primary = %self.config.model, %fallback, reason = %last, "falling back to another model");
                self.with_retries(&fallback, request, &mut requests).await
            }
            other => other,
        };
        let m = metrics();
        let mut answer = match answered {
            Ok(answer) => answer,
            Err(e) => {
                m.model_requests
                    .with_label_values(&[&self.config.model, "error"])
                    .inc();
                return Err(e);
            }
        };
        let model = answer.model.as_str();
        let span = tracing::Span::current();
        span.record("gen_ai.response.model", model);
        span.record("gen_ai.usage.input_tokens", answer.usage.prompt_tokens);
        span.record("gen_ai.usage.output_tokens", answer.usage.completion_tokens);
        span.record("orion.cached", false);
        m.model_requests.with_label_values(&[model, "ok"]).inc();
        m.model_tokens
            .with_label_values(&[model, "prompt"])
            .inc_by(answer.usage.prompt_tokens);
        m.model_tokens
            .with_label_values(&[model, "completion"])
            .inc_by(answer.usage.completion_tokens);
        m.model_cost_microdollars
            .with_label_values(&[model])
            .inc_by((answer.cost_usd * 1e6).round() as u64);
        answer.requests = requests;
        if let Ok(text) = serde_json::to_string(&answer) {
            self.cache.put(&key, &text).await;
        }
        Ok(answer)
    }
}
