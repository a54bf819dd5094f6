//! `/v1/tasks`: submit, read, list, events, cancel.

use actix_web::{HttpRequest, HttpResponse, web};
use orion_bus::{Priority, TaskId, TaskKind, TaskSpec, TaskStatus};
use orion_services::code::FunctionList;
use orion_services::lifecycle::{Change, LifecycleError, Submission};
use orion_services::store::{StoreError, TaskQuery, UsageGroup, UsageTotals};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{Caller, Principal, audit};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The default and the largest page size of listings.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 500;
const SUBMIT_FIELDS: &[&str] = &[
    "kind",
    "repo",
    "prompt",
    "ref",
    "priority",
    "diff",
    "budget_usd",
    "input",
];

fn string_field(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidField {
            field: field.into(),
            reason: "must be a string".into(),
        }),
    }
}

/// Reads a submission field by field, so each problem is named precisely.
fn parse_submission(body: JsonBody) -> Result<TaskSpec, ApiError> {
    let body = body.into_object_of(SUBMIT_FIELDS, "a task")?;
    let kind: TaskKind = string_field(&body, "kind")?
        .ok_or(ApiError::MissingField("kind"))?
        .parse()?;
    let repo = string_field(&body, "repo")?.ok_or(ApiError::MissingField("repo"))?;
    let priority = match string_field(&body, "priority")? {
        Some(p) => p.parse::<Priority>()?,
        None => Priority::default(),
    };
    let spec = TaskSpec::new(
        kind,
        repo,
        string_field(&body, "prompt")?,
        string_field(&body, "ref")?,
        priority,
    )?;
    let spec = match string_field(&body, "diff")? {
        Some(diff) => spec.with_diff(diff)?,
        None => spec,
    };
    let spec = match body.get("input") {
        None | Some(Value::Null) => spec,
        Some(input) => spec.with_input(input.clone())?,
    };
    Ok(match budget_field(&body)? {
        Some(budget) => spec.with_budget(budget)?,
        None => spec,
    })
}

fn budget_field(body: &Map<String, Value>) -> Result<Option<f64>, ApiError> {
    match body.get("budget_usd") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::InvalidField {
            field: "budget_usd".into(),
            reason: "must be a number of dollars".into(),
        }),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let invalid = || ApiError::InvalidParameter {
        name: "Idempotency-Key".into(),
        reason: "must be 1 to 255 visible ASCII characters".into(),
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse::<TaskId>()
        .map_err(|_| ApiError::InvalidTaskId(raw.to_owned()))
}

/// `POST /v1/tasks`: 202 with the new task; 200 with the earlier one for a repeated
/// `Idempotency-Key`.
pub async fn submit(
    req: HttpRequest,
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let spec = parse_submission(body)?;
    state.config.plugins.check(&spec)?;
    let spec = admit(&state, &caller, spec)?;
    // A key is its caller's: the same key from another caller is another request.
    let key = key.map(|k| format!("{}\u{1f}{k}", caller.subject));
    let submission = submit_audited(
        &state,
        &caller,
        spec.clone(),
        key.as_deref(),
        serde_json::json!({}),
    )
    .await?;
    if !submission.created && submission.task.spec != spec {
        return Err(ApiError::IdempotencyKeyReused);
    }
    submitted(submission)
}

/// What the caller may ask of a task beyond its role: a `repo` the policy allows
/// (`security.repo_roots`, `security.repo_hosts`), and a budget above the default only as an
/// operator. The task admitted, as submitted by the caller (whose spending caps count it).
pub(super) fn admit(
    state: &AppState,
    caller: &Principal,
    spec: TaskSpec,
) -> Result<TaskSpec, ApiError> {
    state
        .config
        .repos
        .check(&spec.repo)
        .map_err(|refused| ApiError::RepoNotAllowed(refused.to_string()))?;
    if let (Some(asked), Some(limit)) = (spec.budget_usd, state.config.default_budget_usd)
        && asked > limit
        && !caller.may(crate::auth::Need::Role(crate::auth::Role::Operator))
    {
        return Err(ApiError::BudgetNotAllowed { limit });
    }
    Ok(spec.submitted_by(caller.subject.clone()))
}

/// Submits `spec` as `caller`, its audit entry (`task.submit`, `detail` with the task's kind
/// and repository) stored in the task's own transaction: a stored task has its entry. A
/// repeated idempotency key audits nothing.
pub(super) async fn submit_audited(
    state: &AppState,
    caller: &Principal,
    spec: TaskSpec,
    key: Option<&str>,
    mut detail: Value,
) -> Result<Submission, ApiError> {
    detail["kind"] = spec.kind.as_str().into();
    detail["repo"] = spec.repo.clone().into();
    let audit = crate::auth::audit_entry(caller, "task.submit", None, detail);
    Ok(state
        .lifecycle
        .submit_audited(spec, key, Some(audit))
        .await?)
}

/// The answer to a submission: 202 for a new task, 200 for the one an idempotency key names,
/// 503 when it is stored but could not be queued.
fn submitted(submission: Submission) -> Result<HttpResponse, ApiError> {
    let task = submission.task;
    if let Some(e) = submission.queue_error {
        tracing::warn!(task = %task.id, error = %e, "task stored but not queued");
        return Err(ApiError::NotQueued(task.id));
    }
    let mut response = if submission.created {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(response
        .insert_header(("Location", format!("/v1/tasks/{}", task.id)))
        .json(task))
}

pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    let task = state.tasks.task(id).await?;
    let calls = state.usage.task_usage(id).await?;
    let mut body = serde_json::to_value(&task).map_err(ApiError::internal)?;
    body["usage"] =
        serde_json::to_value(UsageTotals::of_calls(&calls)).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// `GET /v1/usage?from&to&group_by=task|agent|model|day`: model tokens and cost summed per
/// group over `[from, to)` (RFC 3339 times; either may be left open).
pub async fn usage_summary(
    params: web::Query<UsageParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let time = |name: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| ApiError::InvalidParameter {
                        name: name.into(),
                        reason: format!("`{v}` is not an RFC 3339 time: {e}"),
                    })
            })
            .transpose()
    };
    let (from, to) = (time("from", &params.from)?, time("to", &params.to)?);
    let group_by = params.group_by.as_deref().unwrap_or("model");
    let group =
        serde_json::from_value::<UsageGroup>(Value::String(group_by.to_owned())).map_err(|_| {
            ApiError::InvalidParameter {
                name: "group_by".into(),
                reason: format!("`{group_by}` is not one of task, agent, model, day"),
            }
        })?;
    let groups = state.usage.usage(from, to, group).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "group_by": group,
        "from": from,
        "to": to,
        "totals": UsageTotals::of_sums(&groups),
        "groups": groups,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    kind: Option<String>,
    repo: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
}

fn param<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .map(|v| {
            v.parse::<T>().map_err(|e| ApiError::InvalidParameter {
                name: name.into(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// `GET /v1/tasks?status&kind&limit&cursor`: newest first; `next_cursor` continues.
pub async fn list(
    params: web::Query<ListParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::InvalidParameter {
            name: "limit".into(),
            reason: format!("must be 1 to {MAX_PAGE}"),
        });
    }
    let query = TaskQuery {
        status: param::<TaskStatus>("status", params.status.as_deref())?,
        kind: param::<TaskKind>("kind", params.kind.as_deref())?,
        repo: params.repo.clone(),
        before: param::<TaskId>("cursor", params.cursor.as_deref())?,
        limit,
    };
    Ok(HttpResponse::Ok().json(state.tasks.list_tasks(&query).await?))
}

#[derive(Debug, Deserialize)]
pub struct EventParams {
    after: Option<i64>,
    limit: Option<u64>,
}

/// `GET /v1/tasks/{id}/events?after&limit`: the task's log, oldest first.
pub async fn events(
    path: web::Path<String>,
    params: web::Query<EventParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    let store = &state.tasks;
    store.task(id).await?;
    let limit = params.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let items = store
        .events(Some(id), params.after.unwrap_or(0), limit)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
pub struct FunctionParams {
    after: Option<u32>,
    limit: Option<u64>,
}

/// Functions answered per page: by default, and at most.
const FUNCTION_PAGE: u64 = 200;
const MAX_FUNCTION_PAGE: u64 = 2000;

/// `GET /v1/tasks/{id}/functions?after&limit`: every function an analyze task measured (the
/// rows its stored report names), by path and then in file order, a page at a time;
/// `next_cursor` continues.
pub async fn functions(
    path: web::Path<String>,
    params: web::Query<FunctionParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    let limit = params.limit.unwrap_or(FUNCTION_PAGE);
    if limit == 0 || limit > MAX_FUNCTION_PAGE {
        return Err(ApiError::InvalidParameter {
            name: "limit".into(),
            reason: format!("must be 1 to {MAX_FUNCTION_PAGE}"),
        });
    }
    let task = state.tasks.task(id).await?;
    // Only an analyze task of a whole repository has one, once its report is stored.
    let list = (task.spec.kind == TaskKind::Analyze && task.spec.diff.is_none())
        .then(|| task.result.as_ref()?.get("function_list").cloned())
        .flatten()
        .and_then(|list| serde_json::from_value::<FunctionList>(list).ok())
        .ok_or(ApiError::NoFunctionList(id, task.status))?;
    let rows = state
        .analysis
        .functions(id, list.id, params.after, limit)
        .await?;
    let next_cursor = rows
        .last()
        .map(|(seq, _)| *seq)
        .filter(|seq| u64::from(*seq) + 1 < list.count);
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(seq, row)| {
            let mut item = serde_json::to_value(row).map_err(ApiError::internal)?;
            item["seq"] = seq.into();
            Ok(item)
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "count": list.count,
        "items": items,
        "next_cursor": next_cursor,
    })))
}

/// `POST /v1/tasks/{id}/cancel`: 200 with the cancelled task; 409 when it already ended.
pub async fn cancel(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    let lifecycle = &state.lifecycle;
    let change = Change {
        data: serde_json::json!({ "by": caller.subject }),
        ..Change::default()
    };
    match lifecycle.advance(id, TaskStatus::Cancelled, change).await {
        Ok(Some(task)) => {
            stop_work(&state, id).await;
            audit(
                &state,
                &caller,
                "task.cancel",
                Some(id.to_string()),
                Value::Null,
            )
            .await;
            Ok(HttpResponse::Ok().json(task))
        }
        Ok(None) => Err(ApiError::NotCancellable(state.tasks.task(id).await?.status)),
        Err(LifecycleError::Store(StoreError::NotFound(id))) => Err(ApiError::TaskNotFound(id)),
        Err(e) => Err(e.into()),
    }
}

/// Orders every node the gateway hears from to stop working on a cancelled task (each
/// checks whether it is). An order that cannot be sent is logged: the task is cancelled
/// either way, and a node's later reports about it change nothing.
async fn stop_work(state: &AppState, task: TaskId) {
    for node in state.nodes.nodes() {
        let cancel = orion_bus::ControlCommand::Cancel { task_id: task };
        if let Err(e) = crate::nodes::order(&state.lifecycle, &node.node, cancel).await {
            tracing::warn!(%task, node = %node.node, error = %e, "could not send a cancel order");
        }
    }
}

/// `POST /v1/tasks/{id}/suggestions/{n}/submit`: turns suggestion `n` of a finished analysis
/// into a `develop` task. Submitting the same suggestion again returns the same task.
pub async fn submit_suggestion(
    path: web::Path<(String, usize)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (raw, n) = path.into_inner();
    let id = task_id(&raw)?;
    let analysis = state.tasks.task(id).await?;
    // The analysis's report, read as the type the Analyzer wrote.
    let report = analysis
        .result
        .clone()
        .and_then(|r| serde_json::from_value::<orion_services::code::RepoReport>(r).ok());
    let prompt = report
        .and_then(|r| r.suggestions.into_iter().nth(n))
        .map(|s| s.prompt)
        .ok_or(ApiError::SuggestionNotFound { task: id, index: n })?;
    let spec = TaskSpec::new(
        TaskKind::Develop,
        analysis.spec.repo.clone(),
        Some(prompt),
        None,
        Priority::Normal,
    )?;
    let spec = admit(&state, &caller, spec)?;
    let key = format!("suggestion-{id}-{n}");
    let detail = serde_json::json!({ "from_analysis": id, "suggestion": n });
    let submission = submit_audited(&state, &caller, spec, Some(&key), detail).await?;
    submitted(submission)
}

/// `GET /v1/tasks/{id}/usage`: the task's model calls, and their sums.
pub async fn usage(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    state.tasks.task(id).await?;
    let calls = state.usage.task_usage(id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "totals": UsageTotals::of_calls(&calls),
        "calls": calls,
    })))
}

/// `POST /v1/tasks/{id}/budget` `{"budget_usd": n}`: sets the task's budget; a task paused
/// in `awaiting_approval` resumes the step that paused (202), any other keeps running (200).
pub async fn budget(
    path: web::Path<String>,
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = task_id(&path)?;
    let body = body.into_object()?;
    let budget = budget_field(&body)?.ok_or(ApiError::MissingField("budget_usd"))?;
    orion_bus::check_budget(budget)?;
    let raised = state.lifecycle.raise_budget(id, budget).await?;
    let detail = serde_json::json!({ "budget_usd": budget });
    audit(&state, &caller, "task.budget", Some(id.to_string()), detail).await;
    if !raised.resumed {
        return Ok(HttpResponse::Ok().json(raised.task));
    }
    let task = raised.task;
    Ok(HttpResponse::Accepted().json(task))
}
