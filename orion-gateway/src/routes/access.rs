//! `/v1/api-keys`, `/v1/credentials` and `/v1/audit`: admin-only management of who and what
//! may get in, and the record of who did what.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use orion_services::secrets::SecretString;
use orion_services::store::NewApiKey;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{Caller, GRANTS, Role, audit, hash_api_key, new_api_key_secret};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The longest name of a key, username or repository prefix.
const NAME_MAX_BYTES: usize = 255;
const PREFIX_MAX_BYTES: usize = 1024;
/// The longest secret a repository credential may hold.
const SECRET_MAX_BYTES: usize = 4096;
/// How many characters of a key's secret are kept to tell keys apart.
const SHOWN_PREFIX: usize = 10;

fn text(
    body: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= max => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidField {
            field: field.into(),
            reason: format!("must be a non-empty string of at most {max} bytes"),
        }),
    }
}

/// `POST /v1/api-keys` `{"name", "role", "grants"?, "expires_at"?}`: 201 with the key and its
/// `secret`, shown this once.
pub async fn create_key(
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_object_of(&["name", "role", "grants", "expires_at"], "an API key")?;
    let name = text(&body, "name", NAME_MAX_BYTES)?.ok_or(ApiError::MissingField("name"))?;
    let role: Role = text(&body, "role", 32)?
        .ok_or(ApiError::MissingField("role"))?
        .parse()
        .map_err(|reason| ApiError::InvalidField {
            field: "role".into(),
            reason,
        })?;
    let grants = match body.get("grants") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| match g.as_str() {
                Some(g) if GRANTS.contains(&g) => Ok(g.to_owned()),
                _ => Err(ApiError::InvalidField {
                    field: "grants".into(),
                    reason: format!("each grant must be one of {GRANTS:?}"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::InvalidField {
                field: "grants".into(),
                reason: "must be an array".into(),
            });
        }
    };
    let expires_at = match text(&body, "expires_at", 64)? {
        None => None,
        Some(at) => Some(
            DateTime::parse_from_rfc3339(&at)
                .map_err(|e| ApiError::InvalidField {
                    field: "expires_at".into(),
                    reason: format!("must be an RFC 3339 time: {e}"),
                })?
                .with_timezone(&Utc),
        ),
    };
    let secret = new_api_key_secret();
    let key = state
        .access
        .create_api_key(NewApiKey {
            name,
            role: role.as_str().to_owned(),
            grants,
            hash: hash_api_key(&secret),
            prefix: secret[..SHOWN_PREFIX].to_owned(),
            created_by: caller.subject.clone(),
            expires_at,
        })
        .await?;
    let detail = serde_json::json!({ "name": key.name, "role": key.role, "grants": key.grants });
    audit(
        &state,
        &caller,
        "api_key.create",
        Some(key.id.to_string()),
        detail,
    )
    .await;
    let mut answer = serde_json::to_value(&key).map_err(ApiError::internal)?;
    answer["secret"] = secret.into();
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/api-keys/{}", key.id)))
        .insert_header(("Cache-Control", "no-store"))
        .json(answer))
}

/// `GET /v1/api-keys`: every key, revoked ones too, never a secret.
pub async fn list_keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state.access.list_api_keys().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": keys })))
}

/// `DELETE /v1/api-keys/{id}`: revokes the key; it stops working at once.
pub async fn revoke_key(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path_id(&path, "a UUID")?;
    let key = state.access.revoke_api_key(id).await?;
    audit(
        &state,
        &caller,
        "api_key.revoke",
        Some(id.to_string()),
        Value::Null,
    )
    .await;
    Ok(HttpResponse::Ok().json(key))
}

/// `POST /v1/credentials` `{"repo_prefix", "username", "secret"}`: stores a credential for
/// remotes starting with the prefix, sealed; 201 without the secret.
pub async fn save_credential(
    body: JsonBody,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sealer = state.sealer.as_ref().ok_or(ApiError::Unavailable(
        "credential sealing (secrets.credentials_key)",
    ))?;
    let body = body.into_object_of(&["repo_prefix", "username", "secret"], "a credential")?;
    let prefix = text(&body, "repo_prefix", PREFIX_MAX_BYTES)?
        .ok_or(ApiError::MissingField("repo_prefix"))?;
    let username =
        text(&body, "username", NAME_MAX_BYTES)?.ok_or(ApiError::MissingField("username"))?;
    let secret = SecretString::from(
        text(&body, "secret", SECRET_MAX_BYTES)?.ok_or(ApiError::MissingField("secret"))?,
    );
    let credential = state
        .access
        .save_credential(&prefix, &username, sealer.seal(&secret), &caller.subject)
        .await?;
    let detail = serde_json::json!({ "repo_prefix": credential.repo_prefix });
    audit(
        &state,
        &caller,
        "credential.save",
        Some(credential.id.to_string()),
        detail,
    )
    .await;
    Ok(HttpResponse::Created().json(credential))
}

/// `GET /v1/credentials`: prefixes and usernames, never secrets.
pub async fn list_credentials(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.access.credentials().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// `DELETE /v1/credentials/{id}`: 204.
pub async fn delete_credential(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path_id(&path, "a UUID")?;
    state.access.delete_credential(id).await?;
    audit(
        &state,
        &caller,
        "credential.delete",
        Some(id.to_string()),
        Value::Null,
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
pub struct AuditParams {
    after: Option<i64>,
    limit: Option<u64>,
}

/// `GET /v1/audit?after=<seq>&limit=<n>`: who did what, oldest first.
pub async fn audit_log(
    params: web::Query<AuditParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let items = state.access.audit(params.after.unwrap_or(0), limit).await?;
    let next = (items.len() as u64 == limit).then(|| items.last().map(|e| e.seq));
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({ "items": items, "next_after": next.flatten() })),
    )
}

/// `GET /v1/me`: who the caller is, and what their role lets them do (the dashboard offers
/// only that; every route still checks).
pub async fn me(caller: Caller) -> HttpResponse {
    use crate::auth::Need;
    let principal = caller.into_inner();
    let may = serde_json::json!({
        "submit": principal.may(Need::Role(Role::Submitter)),
        "review": principal.may(Need::Review),
        "operate": principal.may(Need::Role(Role::Operator)),
        "admin": principal.may(Need::Role(Role::Admin)),
    });
    HttpResponse::Ok().json(serde_json::json!({
        "subject": principal.subject,
        "role": principal.role.as_str(),
        "grants": principal.grants,
        "may": may,
    }))
}
