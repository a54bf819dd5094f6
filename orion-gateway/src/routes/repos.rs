//! `/v1/repos/{repo}`: what Orion knows of one repository across tasks.

use actix_web::{HttpResponse, web};
use orion_bus::{TaskKind, TaskStatus};
use orion_services::store::TaskQuery;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// How many analyses a trend covers at most, newest last.
const TREND_POINTS: u64 = 100;
/// The figures whose change between the last two analyses is reported.
const TREND_FIGURES: &[&str] = &[
    "lines",
    "functions",
    "todos",
    "average_cyclomatic",
    "max_cyclomatic",
    "complex_functions",
    "debt_minutes",
];

/// `GET /v1/repos/{repo}/trend`: the summaries of the completed whole-repository analyses of
/// `repo` (URL-encoded, exactly as submitted), oldest first, and the change since the one
/// before the last.
pub async fn trend(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let repo = path.into_inner();
    let query = TaskQuery {
        kind: Some(TaskKind::Analyze),
        status: Some(TaskStatus::Completed),
        repo: Some(repo.clone()),
        limit: TREND_POINTS,
        ..TaskQuery::default()
    };
    let page = state.tasks.list_tasks(&query).await?;
    let mut points: Vec<Value> = page
        .items
        .iter()
        .filter(|t| t.spec.diff.is_none())
        .filter_map(|t| {
            let summary = t.result.as_ref()?.get("summary")?.clone();
            Some(json!({ "task_id": t.id, "at": t.updated_at, "summary": summary }))
        })
        .collect();
    points.reverse();
    let change = match points.as_slice() {
        [.., before, last] => {
            let mut change = serde_json::Map::new();
            for figure in TREND_FIGURES {
                let (a, b) = (&before["summary"][figure], &last["summary"][figure]);
                if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
                    change.insert(
                        (*figure).to_owned(),
                        json!(((b - a) * 100.0).round() / 100.0),
                    );
                }
            }
            Value::Object(change)
        }
        _ => Value::Null,
    };
    Ok(HttpResponse::Ok().json(json!({ "repo": repo, "points": points, "change": change })))
}
