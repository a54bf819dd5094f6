//! The model service: chat completions from any OpenAI-compatible endpoint, behind the
//! [`ChatModel`] trait the agents depend on.
//!
//! [`OpenAiChat`] speaks the OpenAI wire format with openai-api-rs's request and response
//! types, and sends them with reqwest (the client openai-api-rs itself uses) so that the
//! status and the `Retry-After` header of a refusal are visible: openai-api-rs 10 folds both
//! into an error string. Around each call: a response cache (per request and call context,
//! so a redelivered step gets the answer it had), turns under the provider's limits in
//! requests and tokens per minute, shared by the cluster through Redis ([`limits`]), retries with exponential backoff and full jitter on 429, 5xx and timeouts that
//! honour `Retry-After`, a fallback model, and the call's token usage and cost.
//!
//! [`local::LocalChat`] (feature `local-model`) runs a GGUF model in-process on the CPU, and
//! writes the edit format's frame around its content itself ([`frame`]).

mod cache;
pub mod frame;
pub mod limits;
#[cfg(feature = "local-model")]
pub mod local;
mod openai;

pub use cache::{MemoryCache, RedisCache, ResponseCache};
pub use frame::EditFrame;
pub use openai::{OpenAiChat, OpenAiConfig, Price};

use async_trait::async_trait;
use orion_bus::TaskId;
use serde::{Deserialize, Serialize};

/// The default local model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0): its file name
/// under `<data_dir>/models/`, and the SHA-256 of that file.
pub const LOCAL_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const LOCAL_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Who is speaking in a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// What to ask the model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// The files the answer is to edit, in the edit format ([`frame`]): a model that can be
    /// steered token by token (the in-process one) writes the format itself, so that its
    /// answer always parses; an endpoint is told the format in the prompt instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<EditFrame>,
}

/// Which step of which task a call serves; part of the cache key, so a redelivered step
/// reads the answer of its first delivery instead of paying for a second one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    pub task: Option<TaskId>,
    pub agent: String,
    pub step: String,
    pub attempt: i32,
}

/// Tokens a call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A function the model asks to call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The model's answer and what it cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// The model that answered (the fallback, when the primary was unavailable).
    pub model: String,
    pub usage: Usage,
    /// In US dollars, from the configured price table (0 for unpriced models).
    pub cost_usd: f64,
    /// Answered from the cache: no tokens were spent this time.
    #[serde(default)]
    pub cached: bool,
    /// HTTP requests made for this answer.
    #[serde(default)]
    pub requests: u32,
}

/// Why a call produced no answer. Each variant maps to a stable task failure code.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model service is unavailable after {requests} requests: {last}")]
    Unavailable { requests: u32, last: String },
    #[error("the model service refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the model service answered something that is not a chat completion: {0}")]
    Malformed(String),
    #[error(
        "the next turn under the model's rate limits is {turn_secs} s away, past the longest wait of {max_wait_secs} s (llm.max_queue_wait_secs)"
    )]
    RateLimited { turn_secs: u64, max_wait_secs: u64 },
}

impl LlmError {
    /// The task failure code.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Unavailable { .. } => orion_bus::codes::MODEL_UNAVAILABLE,
            LlmError::Rejected { .. } => orion_bus::codes::MODEL_REJECTED,
            LlmError::Malformed(_) => orion_bus::codes::MODEL_MALFORMED_RESPONSE,
            LlmError::RateLimited { .. } => orion_bus::codes::RATE_LIMITED,
        }
    }
}

/// Where a streaming model sends the pieces of its answer as it writes them.
pub type TextSink = tokio::sync::mpsc::UnboundedSender<String>;

/// A chat model as the agents see it.
#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    async fn chat(
        &self,
        context: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, LlmError>;

    /// Like [`ChatModel::chat`], sending the answer's text to `sink` piece by piece while it
    /// is generated, where the model can (by default, nothing is sent before the answer).
    async fn chat_streaming(
        &self,
        context: &CallContext,
        request: &ChatRequest,
        sink: TextSink,
    ) -> Result<ChatResponse, LlmError> {
        drop(sink);
        self.chat(context, request).await
    }

    /// The models a call may be answered by, as configured (the primary, then a fallback):
    /// what a spending cap's `model` names.
    fn model_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The most a request may cost, in dollars, reserved against a task's budget before the
    /// call: its prompt (4 characters a token) and its whole answer allowance at the primary
    /// model's price. 0 for unpriced models.
    fn estimate_cost(&self, request: &ChatRequest) -> f64 {
        let _ = request;
        0.0
    }
}
