//! The one registry of API errors: each variant has a stable code and an HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use orion_bus::{BusError, ProtocolError, TaskId, TaskStatus};
use orion_services::lifecycle::LifecycleError;
use orion_services::store::StoreError;

/// Why a request is not let in (401), each with its stable code.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("this request needs credentials: `Authorization: Bearer <token or API key>`")]
    Missing,
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token's issuer is not the configured one")]
    WrongIssuer,
    #[error("the token's audience is not the configured one")]
    WrongAudience,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("no such API key")]
    UnknownApiKey,
    #[error("the API key has been revoked")]
    ApiKeyRevoked,
    #[error("the API key has expired")]
    ApiKeyExpired,
}

impl AuthFailure {
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "unauthenticated",
            AuthFailure::InvalidToken(_) => "invalid_token",
            AuthFailure::TokenExpired => "token_expired",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnknownApiKey => "unknown_api_key",
            AuthFailure::ApiKeyRevoked => "api_key_revoked",
            AuthFailure::ApiKeyExpired => "api_key_expired",
        }
    }
}

/// An error answered to a client as `application/problem+json`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("field `{0}` is required")]
    MissingField(&'static str),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{0}")]
    UnknownTaskKind(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("query parameter `{name}` is invalid: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error("`{0}` is not a task id (a UUID)")]
    InvalidTaskId(String),
    #[error("task {0} does not exist")]
    TaskNotFound(TaskId),
    #[error(
        "task {0} ({1}) has no function list: only a completed analyze task of a whole repository has one"
    )]
    NoFunctionList(TaskId, TaskStatus),
    #[error("task {task} has no suggestion {index}")]
    SuggestionNotFound { task: TaskId, index: usize },
    #[error("pull request {0} does not exist")]
    PullNotFound(uuid::Uuid),
    #[error("pull request {pull} is {state}, not waiting for a review")]
    NotAwaitingReview {
        pull: uuid::Uuid,
        state: &'static str,
    },
    #[error("pull request {pull} has been revised {rounds} times; approve it or cancel the task")]
    RoundsExhausted { pull: uuid::Uuid, rounds: i32 },
    #[error("task is {0} and can no longer be cancelled")]
    NotCancellable(TaskStatus),
    #[error("no route for this method and path")]
    RouteNotFound,
    #[error("a service the gateway needs is unavailable: {0}")]
    Unavailable(&'static str),
    #[error(
        "the task {0} is stored but could not be queued yet; retry with the same Idempotency-Key"
    )]
    NotQueued(TaskId),
    #[error(transparent)]
    Unauthorized(#[from] AuthFailure),
    #[error("the token carries no Orion role (claim `role` or `roles`)")]
    NoRole,
    #[error("this needs {need}")]
    Forbidden { need: String },
    #[error("too many submissions; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the JSON body nests deeper than {limit} levels")]
    JsonTooDeep { limit: usize },
    #[error("no node `{0}` has been heard from")]
    NodeNotFound(String),
    #[error("API key {0} does not exist")]
    ApiKeyNotFound(uuid::Uuid),
    #[error("repository credential {0} does not exist")]
    CredentialNotFound(uuid::Uuid),
    #[error("{0}")]
    RepoNotAllowed(String),
    #[error(
        "pull request {pull} has a newer version ({head}) than the one reviewed; review it again"
    )]
    PullChanged { pull: uuid::Uuid, head: String },
    #[error("this Idempotency-Key was used for a different request; use a new key")]
    IdempotencyKeyReused,
    #[error("a budget above {limit} USD needs an operator")]
    BudgetNotAllowed { limit: f64 },
    #[error("no forge `{0}` is configured")]
    ForgeNotFound(String),
    #[error("no spending cap `{0}` is configured (llm.budgets)")]
    CapNotFound(String),
    #[error("{0}")]
    HookUnverified(orion_services::forge::hooks::HookError),
    #[error("{0}")]
    HookMalformed(orion_services::forge::hooks::HookError),
    #[error("delivery `{delivery}` was received before: it made task {task}")]
    HookReplayed {
        delivery: String,
        task: orion_bus::TaskId,
    },
    #[error("too many event streams open ({open} of {limit} {scope}); close one first")]
    TooManyStreams {
        open: usize,
        limit: usize,
        scope: &'static str,
    },
    /// Anything the client cannot act on; the cause (with its whole chain) is logged, never
    /// answered.
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// The cause of an internal error, kept whole for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and every error it was caused by, outermost first, as the log shows them.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ApiError {
    /// An internal error caused by `cause` (an error, kept with its sources, or a message).
    pub fn internal(cause: impl Into<Cause>) -> Self {
        ApiError::Internal(cause.into())
    }

    /// The registry: each error's stable code (clients switch on it), HTTP status and title,
    /// one row per error.
    fn entry(&self) -> (&'static str, StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => {
                ("malformed_json", StatusCode::BAD_REQUEST, "Malformed JSON")
            }
            ApiError::PayloadTooLarge { .. } => (
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                "unsupported_media_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            ApiError::MissingField(_) => (
                "missing_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Missing field",
            ),
            ApiError::InvalidField { .. } => (
                "invalid_field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid field",
            ),
            ApiError::UnknownTaskKind(_) => (
                "unknown_task_kind",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unknown task kind",
            ),
            ApiError::InvalidInput(_) => (
                "invalid_input",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid input",
            ),
            ApiError::InvalidParameter { .. } => (
                "invalid_parameter",
                StatusCode::BAD_REQUEST,
                "Invalid parameter",
            ),
            ApiError::InvalidTaskId(_) => (
                "invalid_task_id",
                StatusCode::BAD_REQUEST,
                "Invalid task id",
            ),
            ApiError::TaskNotFound(_) => {
                ("task_not_found", StatusCode::NOT_FOUND, "Task not found")
            }
            ApiError::NoFunctionList(..) => (
                "no_function_list",
                StatusCode::NOT_FOUND,
                "No function list",
            ),
            ApiError::SuggestionNotFound { .. } => (
                "suggestion_not_found",
                StatusCode::NOT_FOUND,
                "Suggestion not found",
            ),
            ApiError::PullNotFound(_) => (
                "pull_not_found",
                StatusCode::NOT_FOUND,
                "Pull request not found",
            ),
            ApiError::NotAwaitingReview { .. } => (
                "pull_not_awaiting_review",
                StatusCode::CONFLICT,
                "Pull request not awaiting review",
            ),
            ApiError::RoundsExhausted { .. } => (
                "review_rounds_exhausted",
                StatusCode::CONFLICT,
                "Revision rounds exhausted",
            ),
            ApiError::NotCancellable(_) => (
                "task_not_cancellable",
                StatusCode::CONFLICT,
                "Task not cancellable",
            ),
            ApiError::RouteNotFound => ("route_not_found", StatusCode::NOT_FOUND, "Not found"),
            ApiError::Unavailable(_) => (
                "service_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
            ),
            ApiError::NotQueued(_) => (
                "task_not_queued",
                StatusCode::SERVICE_UNAVAILABLE,
                "Task not queued",
            ),
            ApiError::Unauthorized(failure) => {
                (failure.code(), StatusCode::UNAUTHORIZED, "Unauthorized")
            }
            ApiError::NoRole => ("no_role", StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::Forbidden { .. } => ("forbidden", StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::RateLimited { .. } => (
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
            ),
            ApiError::JsonTooDeep { .. } => (
                "json_too_deep",
                StatusCode::BAD_REQUEST,
                "JSON nested too deeply",
            ),
            ApiError::NodeNotFound(_) => {
                ("node_not_found", StatusCode::NOT_FOUND, "Node not found")
            }
            ApiError::ApiKeyNotFound(_) => (
                "api_key_not_found",
                StatusCode::NOT_FOUND,
                "API key not found",
            ),
            ApiError::CredentialNotFound(_) => (
                "credential_not_found",
                StatusCode::NOT_FOUND,
                "Credential not found",
            ),
            ApiError::RepoNotAllowed(_) => (
                "repo_not_allowed",
                StatusCode::FORBIDDEN,
                "Repository not allowed",
            ),
            ApiError::PullChanged { .. } => {
                ("pull_changed", StatusCode::CONFLICT, "Pull request changed")
            }
            ApiError::IdempotencyKeyReused => (
                "idempotency_key_reused",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused",
            ),
            ApiError::BudgetNotAllowed { .. } => (
                "budget_not_allowed",
                StatusCode::FORBIDDEN,
                "Budget not allowed",
            ),
            ApiError::ForgeNotFound(_) => {
                ("forge_not_found", StatusCode::NOT_FOUND, "Forge not found")
            }
            ApiError::CapNotFound(_) => (
                "budget_not_found",
                StatusCode::NOT_FOUND,
                "Spending cap not found",
            ),
            ApiError::HookUnverified(_) => (
                "hook_unverified",
                StatusCode::UNAUTHORIZED,
                "Webhook not verified",
            ),
            ApiError::HookMalformed(_) => (
                "hook_malformed",
                StatusCode::BAD_REQUEST,
                "Malformed webhook",
            ),
            ApiError::HookReplayed { .. } => (
                "hook_replayed",
                StatusCode::CONFLICT,
                "Webhook delivery replayed",
            ),
            ApiError::TooManyStreams { .. } => (
                "too_many_streams",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many streams",
            ),
            ApiError::Internal(_) => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
        }
    }

    /// The stable machine-readable code; clients switch on it.
    pub fn code(&self) -> &'static str {
        self.entry().0
    }

    fn title(&self) -> &'static str {
        self.entry().2
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.entry().1
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(cause) = self {
            // The client sees the code only; the cause chain goes to the log.
            tracing::error!(cause = %chain(cause.as_ref()), "internal error");
        }
        let body = serde_json::json!({
            "type": format!("https://orion.dev/problems/{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": self.code(),
        });
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if status == StatusCode::UNAUTHORIZED {
            let error = match self {
                ApiError::Unauthorized(AuthFailure::Missing) => "Bearer realm=\"orion\"".to_owned(),
                _ => format!(
                    "Bearer realm=\"orion\", error=\"invalid_token\", error_description=\"{}\"",
                    self.code()
                ),
            };
            response.insert_header(("WWW-Authenticate", error));
        }
        if let ApiError::RateLimited { retry_after } = self {
            response.insert_header(("Retry-After", retry_after.to_string()));
        }
        response.body(body.to_string())
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::UnknownTaskKind(_) => ApiError::UnknownTaskKind(e.to_string()),
            ProtocolError::InvalidInput(_) => ApiError::InvalidInput(e.to_string()),
            ProtocolError::InvalidField { field, reason } => ApiError::InvalidField {
                field: field.to_owned(),
                reason,
            },
            ProtocolError::InvalidTaskId(id) => ApiError::InvalidTaskId(id),
            ProtocolError::UnknownPriority(_) => ApiError::InvalidField {
                field: "priority".into(),
                reason: e.to_string(),
            },
            other => ApiError::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::TaskNotFound(id),
            StoreError::PullNotFound(id) => ApiError::PullNotFound(id),
            StoreError::ApiKeyNotFound(id) => ApiError::ApiKeyNotFound(id),
            StoreError::CredentialNotFound(id) => ApiError::CredentialNotFound(id),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::Unavailable("database")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<orion_services::review_gate::GateError> for ApiError {
    fn from(e: orion_services::review_gate::GateError) -> Self {
        use orion_services::review_gate::GateError;
        match e {
            GateError::NotAwaitingReview { pull, state } => {
                ApiError::NotAwaitingReview { pull, state }
            }
            GateError::RoundsExhausted { pull, rounds } => {
                ApiError::RoundsExhausted { pull, rounds }
            }
            GateError::PullChanged { pull, head } => ApiError::PullChanged { pull, head },
            GateError::CommentRequired => ApiError::InvalidField {
                field: "comment".into(),
                reason: "say what to change".into(),
            },
            GateError::Lifecycle(e) => e.into(),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Protocol(why) => ApiError::internal(why),
            unavailable => {
                tracing::warn!(error = %unavailable, "bus unavailable");
                ApiError::Unavailable("message bus")
            }
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Bus(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log gets the whole chain; the client (whose problem's `detail` is the error's
    /// Display) gets the code and the title only.
    #[test]
    fn an_internal_error_keeps_its_cause_for_the_log_and_not_for_the_client() {
        let error = ApiError::from(StoreError::Corrupt("row 7 has no status".into()));
        assert!(
            chain(&error).contains("row 7 has no status"),
            "{}",
            chain(&error)
        );
        assert_eq!(error.to_string(), "internal error");
        assert_eq!(error.code(), "internal");
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let protocol = ApiError::from(BusError::Protocol(ProtocolError::UnknownStatus(
            "sideways".into(),
        )));
        assert!(
            chain(&protocol).contains("sideways"),
            "{}",
            chain(&protocol)
        );
        assert_eq!(protocol.to_string(), "internal error");
        let raised = ApiError::internal(std::io::Error::other("disk on fire"));
        assert!(chain(&raised).ends_with("disk on fire"));
    }
}
