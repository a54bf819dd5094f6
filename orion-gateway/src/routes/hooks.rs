//! `POST /v1/hooks/{forge}`: webhooks in. A delivery is believed only with the forge's
//! signature (see `orion_services::forge::hooks`); what it asks for becomes a task, once per
//! event: the same event again (the same delivery, or its body under another delivery id) is
//! `409 hook_replayed` and makes no task.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use orion_bus::{Priority, TaskKind, TaskSpec};
use orion_services::forge::hooks::{self, HookError, HookTask};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Reads the body whole, up to the gateway's limit.
async fn body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The task a verified delivery asks for, as a submission would be checked.
fn spec_of(ask: HookTask) -> Result<TaskSpec, ApiError> {
    let kind: TaskKind = ask.kind.parse()?;
    let spec = TaskSpec::new(kind, ask.repo, ask.prompt, ask.git_ref, Priority::Normal)?;
    let spec = match ask.diff {
        Some(diff) => spec.with_diff(diff)?,
        None => spec,
    };
    Ok(spec.with_origin(ask.origin))
}

pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let Some((config, _)) = state.config.forges.named(&name) else {
        return Err(ApiError::ForgeNotFound(name));
    };
    let body = body(payload, state.config.max_body_bytes).await?;
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok());
    let delivery = hooks::receive(&name, config, header, &body).map_err(|e| match e {
        HookError::NoSecret | HookError::BadSignature => ApiError::HookUnverified(e),
        HookError::MissingHeader(_) | HookError::Unreadable(_) => ApiError::HookMalformed(e),
    })?;
    let forge = Principal::forge(&name);
    let ignored = |reason: String| {
        HttpResponse::Accepted()
            .json(serde_json::json!({ "delivery": delivery.id, "ignored": reason }))
    };
    let ask = match delivery.asks {
        Ok(ask) => ask,
        Err(reason) => return Ok(ignored(reason)),
    };
    // The task works on the repository the event is about, on this forge: a payload may not
    // point the task (and the bot's credentials) at another repository or forge.
    let here = state
        .config
        .forges
        .for_repo(&ask.repo)
        .is_some_and(|t| t.name == name && t.repository == ask.origin.repository);
    if !here {
        return Ok(ignored(format!(
            "the clone URL `{}` is not repository `{}` of forge `{name}`",
            ask.repo, ask.origin.repository
        )));
    }
    // The deliveries that make tasks count as the forge's submissions.
    state
        .submit_limiter
        .check(&forge.subject)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let event = ask.event.clone();
    let spec = match spec_of(ask) {
        Ok(spec) => spec,
        // A comment that names no kind Orion has, or a field out of bounds, makes no task.
        Err(e) => return Ok(ignored(e.to_string())),
    };
    state.config.plugins.check(&spec)?;
    let spec = super::tasks::admit(&state, &forge, spec)?;
    // The event (not the delivery id, which nothing signs) is the submission's idempotency
    // key: the same event sent again, under its delivery id or another, finds its task.
    let key = format!("{}\u{1f}{event}", forge.subject);
    let detail = serde_json::json!({ "delivery": delivery.id });
    let submission = super::tasks::submit_audited(&state, &forge, spec, Some(&key), detail).await?;
    if !submission.created {
        return Err(ApiError::HookReplayed {
            delivery: delivery.id,
            task: submission.task.id,
        });
    }
    if let Some(e) = submission.queue_error {
        tracing::warn!(task = %submission.task.id, error = %e, "task stored but not queued");
        return Err(ApiError::NotQueued(submission.task.id));
    }
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/tasks/{}", submission.task.id)))
        .json(serde_json::json!({ "delivery": delivery.id, "task": submission.task })))
}
