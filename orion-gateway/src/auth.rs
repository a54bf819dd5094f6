//! Who is calling, and what they may do.
//!
//! Two kinds of credential, both as `Authorization: Bearer <token>` (or `X-Api-Key: <key>`;
//! a browser's WebSocket may pass `?access_token=` on `/v1/stream`):
//!
//! - **JWT** (`auth.mode = "jwt"`): HS256 with a shared secret, or RS256/ES256 with a public
//!   key (PEM) or a JWKS file. Expiry, issuer and audience are checked with a configured clock
//!   skew; the role is the `role` claim (or the highest of a `roles` array); a `scope` claim
//!   holding `review` grants reviews to a submitter.
//! - **API keys** for internal tools: `orion_…` secrets made by `POST /v1/api-keys`, shown
//!   once; the store keeps only their SHA-256. They carry a role, optional grants and an
//!   optional expiry, and can be revoked.
//!
//! Every route needs a role ([`need`]): one table, checked by one middleware, so no handler
//! can forget. Failures are 401 (`WWW-Authenticate: Bearer`) or 403, as problem+json.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, web};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use orion_services::secrets::{ExposeSecret, SecretString};
use orion_services::store::AccessStore;
use serde::Deserialize;

use crate::error::{ApiError, AuthFailure};
use crate::state::AppState;

/// What every API key's secret starts with, so it is told from a JWT at a glance (and by
/// secret scanners).
pub const API_KEY_PREFIX: &str = "orion_";

/// Roles, each allowed what the ones before it are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads tasks, events, pull requests, agents and usage.
    Viewer,
    /// Also submits tasks.
    Submitter,
    /// Also reviews pull requests, cancels tasks, raises budgets and drains nodes.
    Operator,
    /// Also manages API keys and repository credentials, and reads the audit log.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Viewer, Role::Submitter, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role (viewer, submitter, operator, admin)"))
    }
}

/// The grant that lets a submitter review pull requests.
pub const GRANT_REVIEW: &str = "review";
/// Every grant there is.
pub const GRANTS: &[&str] = &[GRANT_REVIEW];

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`, or `key:<id>` for an API key, or `anonymous` with auth off.
    pub subject: String,
    pub role: Role,
    pub grants: Vec<String>,
    /// When the credential stops being valid (a token's `exp`, a key's expiry), if ever: a
    /// long-lived connection (the event stream) ends then.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The SHA-256 of the API key the caller used, so that a long-lived connection can see
    /// the key revoked.
    pub api_key_hash: Option<String>,
}

impl Principal {
    /// A forge whose webhook delivery verified: it may submit tasks, as `forge:<name>`.
    pub(crate) fn forge(name: &str) -> Self {
        Self {
            subject: format!("forge:{name}"),
            role: Role::Submitter,
            grants: Vec::new(),
            expires_at: None,
            api_key_hash: None,
        }
    }

    fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            role: Role::Admin,
            grants: Vec::new(),
            expires_at: None,
            api_key_hash: None,
        }
    }

    /// Whether the caller's credential still holds: not expired, and an API key still stored
    /// and not revoked. Asked again by long-lived connections.
    pub async fn still_valid(&self, store: &dyn AccessStore) -> Result<bool, ApiError> {
        if self.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Ok(false);
        }
        let Some(hash) = &self.api_key_hash else {
            return Ok(true);
        };
        Ok(store
            .api_key_by_hash(hash)
            .await?
            .is_some_and(|key| key.revoked_at.is_none()))
    }

    pub fn may(&self, need: Need) -> bool {
        match need {
            Need::Nothing => true,
            Need::Role(role) => self.role >= role,
            Need::Review => {
                self.role >= Role::Operator
                    || (self.role >= Role::Submitter
                        && self.grants.iter().any(|g| g == GRANT_REVIEW))
            }
        }
    }
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: probes, metrics and the API's own description.
    Nothing,
    Role(Role),
    /// An operator, or a submitter granted `review`.
    Review,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Nothing => f.write_str("nothing"),
            Need::Role(role) => write!(f, "role {} or higher", role.as_str()),
            Need::Review => f.write_str("role operator, or submitter with the review grant"),
        }
    }
}

/// The permission matrix (docs/security.md shows it as a table): what each route needs,
/// by method and route pattern. A route missing here needs `admin`, so a new route is
/// closed until it is placed. `/metrics` needs a viewer unless `server.public_metrics` opens
/// it ([`gate`]).
pub fn need(method: &Method, pattern: &str) -> Need {
    let read = method == Method::GET || method == Method::HEAD;
    match pattern {
        "/healthz" | "/readyz" | "/v1/openapi.json" => Need::Nothing,
        // A forge's webhook: its signature, checked by the route, is its credential.
        HOOK_ROUTE if method == Method::POST => Need::Nothing,
        MCP_ROUTE => Need::Role(Role::Viewer),
        // The dashboard's own files; what it shows comes from the API, which checks.
        "/" | "/docs" | "/ui/{file}" if read => Need::Nothing,
        p if p.starts_with("/v1/api-keys")
            || p.starts_with("/v1/credentials")
            || p.starts_with("/v1/audit") =>
        {
            Need::Role(Role::Admin)
        }
        _ if read => Need::Role(Role::Viewer),
        "/v1/tasks" | "/v1/tasks/{id}/suggestions/{n}/submit" => Need::Role(Role::Submitter),
        "/v1/pulls/{id}/reviews" => Need::Review,
        "/v1/tasks/{id}/cancel"
        | "/v1/tasks/{id}/budget"
        | "/v1/usage/budgets/{name}"
        | "/v1/agents/{node}/drain" => Need::Role(Role::Operator),
        _ => Need::Role(Role::Admin),
    }
}

/// Whether a route submits work (and so counts against the caller's submission rate).
fn submits(method: &Method, pattern: &str) -> bool {
    method == Method::POST
        && matches!(
            pattern,
            "/v1/tasks" | "/v1/tasks/{id}/suggestions/{n}/submit"
        )
}

/// `auth.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credentials; every caller is an anonymous admin. Embedded mode on loopback only.
    #[default]
    None,
    /// JWT bearer tokens and API keys.
    Jwt,
}

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthSettings {
    #[serde(default)]
    pub mode: AuthMode,
    #[serde(default)]
    pub jwt: JwtSettings,
}

/// `[auth.jwt]`: exactly one of `secret`, `public_key_file`, `jwks_file`.
#[derive(Clone, Debug, Deserialize)]
pub struct JwtSettings {
    /// HS256 shared secret, at least 32 bytes (better from `ORION__AUTH__JWT__SECRET` or
    /// `ORION__AUTH__JWT__SECRET_FILE`).
    pub secret: Option<SecretString>,
    /// An RSA or EC public key, PEM (RS256 / ES256).
    pub public_key_file: Option<PathBuf>,
    /// A JSON Web Key Set; the token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_leeway() -> u64 {
    30
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            secret: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: default_leeway(),
        }
    }
}

/// Keys that verify tokens: one, or a set picked by `kid`.
/// A key that verifies tokens, with the checks a token signed by it must pass; both are
/// settled once, at start.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    fn pick(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => Some(&self.keys[0]),
            None => None,
        }
    }
}

/// What a token verified by `key` must pass: its family's algorithms (HS256 only for a
/// shared secret), `exp` and `nbf` (within the leeway), a `sub`, and the configured issuer
/// and audience.
fn validation_for(key: &DecodingKey, settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new_for_family(key.family());
    if key.family() == AlgorithmFamily::Hmac {
        validation.algorithms = vec![jsonwebtoken::Algorithm::HS256];
    }
    validation.leeway = settings.leeway_secs;
    validation.validate_nbf = true;
    let mut required: HashSet<String> = ["exp".to_owned(), "sub".to_owned()].into();
    match &settings.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &settings.issuer {
        validation.set_issuer(&[iss]);
        required.insert("iss".into());
    }
    validation.required_spec_claims = required;
    validation
}

/// Checks credentials; built once from `[auth]`.
pub struct Authenticator {
    mode: AuthMode,
    jwt: Option<Keys>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            jwt: None,
        }
    }
}

impl Authenticator {
    /// Reads the keys `settings` name; an error says which setting is wrong (never its value).
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        if settings.mode == AuthMode::None {
            return Ok(Self::default());
        }
        let jwt = &settings.jwt;
        let sources = [
            jwt.secret.is_some(),
            jwt.public_key_file.is_some(),
            jwt.jwks_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err("auth.mode = \"jwt\" needs exactly one of auth.jwt.secret, \
                 auth.jwt.public_key_file and auth.jwt.jwks_file"
                .into());
        }
        let read = |file: &PathBuf, what: &str| {
            std::fs::read(file).map_err(|e| format!("{what} {}: {e}", file.display()))
        };
        let keys = if let Some(secret) = &jwt.secret {
            if secret.expose_secret().len() < 32 {
                return Err("auth.jwt.secret must be at least 32 bytes".into());
            }
            vec![(
                None,
                DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            )]
        } else if let Some(file) = &jwt.public_key_file {
            let pem = read(file, "auth.jwt.public_key_file")?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .map_err(|_| {
                    format!(
                        "auth.jwt.public_key_file {} is not an RSA or EC public key in PEM",
                        file.display()
                    )
                })?;
            vec![(None, key)]
        } else {
            let file = jwt.jwks_file.as_ref().expect("one source is set");
            let set: JwkSet = serde_json::from_slice(&read(file, "auth.jwt.jwks_file")?)
                .map_err(|e| format!("auth.jwt.jwks_file {}: {e}", file.display()))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwt.jwks_file {}: {e}", file.display()))?;
                keys.push((jwk.common.key_id.clone(), key));
            }
            if keys.is_empty() {
                return Err(format!("auth.jwt.jwks_file {} has no keys", file.display()));
            }
            keys
        };
        Ok(Self {
            mode: settings.mode,
            jwt: Some(Keys {
                keys: keys
                    .into_iter()
                    .map(|(kid, key)| Key {
                        validation: validation_for(&key, jwt),
                        kid,
                        key,
                    })
                    .collect(),
            }),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller of `req` (served by the route `pattern`, `None` when none serves it), or
    /// why it is not let in.
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        pattern: Option<&str>,
        store: &dyn AccessStore,
    ) -> Result<Principal, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::anonymous());
        }
        let token = credential(req, pattern)?.ok_or(ApiError::from(AuthFailure::Missing))?;
        if token.starts_with(API_KEY_PREFIX) {
            return api_key(store, &token).await;
        }
        self.verify_jwt(&token)
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let keys = self
            .jwt
            .as_ref()
            .ok_or(ApiError::from(AuthFailure::Missing))?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid_token("not a JWT"))?;
        let key = keys
            .pick(header.kid.as_deref())
            .ok_or(invalid_token("no configured key has this `kid`"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::from(AuthFailure::TokenExpired),
                ErrorKind::ImmatureSignature => invalid_token("not valid yet"),
                ErrorKind::InvalidIssuer => ApiError::from(AuthFailure::WrongIssuer),
                ErrorKind::InvalidAudience => ApiError::from(AuthFailure::WrongAudience),
                ErrorKind::InvalidSignature => ApiError::from(AuthFailure::BadSignature),
                ErrorKind::InvalidAlgorithm => invalid_token("its algorithm is not accepted"),
                ErrorKind::MissingRequiredClaim(claim) => {
                    invalid_token(format!("claim `{claim}` is missing"))
                }
                _ => invalid_token("malformed"),
            },
        )?;
        let claims = data.claims;
        let role = claims.role()?;
        let grants = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| GRANTS.contains(s))
            .map(str::to_owned)
            .collect();
        let subject = claims
            .sub
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid_token("claim `sub` is missing"))?;
        // The audit log names the caller by it, in a column of 255 characters.
        if subject.chars().count() > 255 {
            return Err(invalid_token("claim `sub` is longer than 255 characters"));
        }
        // `key:…` names API keys and `forge:…` a forge's webhooks (their limits, idempotency
        // keys, audit rows): no token may take one's place.
        if let Some(reserved) = ["key:", "forge:"].iter().find(|p| subject.starts_with(**p)) {
            return Err(invalid_token(format!(
                "claim `sub` may not start with `{reserved}`"
            )));
        }
        Ok(Principal {
            subject,
            role,
            grants,
            expires_at: claims
                .exp
                .and_then(|exp| chrono::DateTime::from_timestamp(exp as i64, 0)),
            api_key_hash: None,
        })
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    scope: Option<String>,
}

impl Claims {
    fn role(&self) -> Result<Role, ApiError> {
        let named = self.role.iter().chain(&self.roles);
        let known: Vec<Role> = named.filter_map(|r| r.parse().ok()).collect();
        known.into_iter().max().ok_or(ApiError::NoRole)
    }
}

/// The bearer token or API key of a request, if it carries one.
fn credential(req: &HttpRequest, pattern: Option<&str>) -> Result<Option<String>, ApiError> {
    if let Some(value) = req.headers().get("authorization") {
        let value = value
            .to_str()
            .map_err(|_| invalid_token("the Authorization header is not text"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(invalid_token(
                "the Authorization header must be `Bearer <token>`",
            ));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(value) = req.headers().get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| invalid_token("the X-Api-Key header is not text"))?;
        return Ok(Some(key.trim().to_owned()));
    }
    // Browsers cannot set headers on a WebSocket: the stream takes the token in its query.
    if pattern == Some(STREAM_ROUTE) {
        let query = web::Query::<StreamToken>::from_query(req.query_string())
            .map_err(|_| invalid_token("the query is malformed"))?;
        return Ok(query.into_inner().access_token);
    }
    Ok(None)
}

#[derive(Deserialize)]
struct StreamToken {
    access_token: Option<String>,
}

/// SHA-256 of an API key's secret, hex: what the store keeps and looks keys up by.
pub fn hash_api_key(secret: &str) -> String {
    orion_services::digest::sha256_hex(&[secret.as_bytes()])
}

/// A new API key's secret: the prefix and 32 random bytes.
pub fn new_api_key_secret() -> String {
    format!(
        "{API_KEY_PREFIX}{}",
        orion_services::secrets::random_token(32)
    )
}

async fn api_key(store: &dyn AccessStore, secret: &str) -> Result<Principal, ApiError> {
    let hash = hash_api_key(secret);
    let key = store
        .api_key_by_hash(&hash)
        .await?
        .ok_or(ApiError::from(AuthFailure::UnknownApiKey))?;
    if key.revoked_at.is_some() {
        return Err(ApiError::from(AuthFailure::ApiKeyRevoked));
    }
    if key.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
        return Err(ApiError::from(AuthFailure::ApiKeyExpired));
    }
    let role = key
        .role
        .parse()
        .map_err(|e: String| ApiError::internal(format!("api key {}: {e}", key.id)))?;
    Ok(Principal {
        subject: format!("key:{}", key.id),
        role,
        grants: key.grants,
        expires_at: key.expires_at,
        api_key_hash: Some(hash),
    })
}

/// How many callers the submission limiter tracks before it forgets the idle ones.
const REMEMBERED_CALLERS: usize = 10_000;

/// Submissions per caller per minute; `None` when unlimited.
pub struct SubmitLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for SubmitLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubmitLimiter")
    }
}

impl SubmitLimiter {
    pub fn per_minute(n: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(n)
                .map(|n| governor::RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// `Err(seconds to wait)` when `who` has used up its submissions.
    pub(crate) fn check(&self, who: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Callers whose quota is whole again are forgotten, so the map stays bounded.
        if limiter.len() > REMEMBERED_CALLERS {
            limiter.retain_recent();
        }
        limiter.check_key(&who.to_owned()).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

/// The MCP server: any role may reach it; each tool is an API call with the caller's own
/// credential, which the route it calls checks.
pub const MCP_ROUTE: &str = "/mcp";

/// The webhook route, whose deliveries are signed by the forge rather than authenticated.
pub const HOOK_ROUTE: &str = "/v1/hooks/{forge}";

/// The WebSocket route, whose token may come in the query (browsers cannot set its headers).
pub const STREAM_ROUTE: &str = "/v1/stream";

/// The gate in front of every route: authenticates, checks the route's need and the
/// submission rate, and hands the [`Principal`] to the handler. It wraps each resource (see
/// `routes::configure`), so it runs after the router has chosen the resource and decides on
/// that resource's `pattern`, never on a reading of the path of its own: `/v1/%61udit` is
/// `/v1/audit` to the gate as it is to the router.
pub async fn gate(
    pattern: &'static str,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.error_response(ApiError::internal("the app has no state")));
    };
    let need = if pattern == "/metrics" && state.config.public_metrics {
        Need::Nothing
    } else {
        need(req.method(), pattern)
    };
    if need == Need::Nothing {
        return next.call(req).await;
    }
    let admitted = async {
        let principal = state
            .auth
            .authenticate(req.request(), Some(pattern), state.access.as_ref())
            .await?;
        if !principal.may(need) {
            return Err(ApiError::Forbidden {
                need: need.to_string(),
            });
        }
        if submits(req.method(), pattern) {
            state
                .submit_limiter
                .check(&principal.subject)
                .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        }
        Ok(principal)
    }
    .await;
    match admitted {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req).await
        }
        Err(e) => {
            if matches!(e, ApiError::Forbidden { .. } | ApiError::RateLimited { .. }) {
                tracing::info!(error = %e, route = %pattern, "request refused");
            }
            Ok(req.error_response(e))
        }
    }
}

/// What a path no route serves is answered: 404 to a caller with valid credentials (or with
/// auth off), else the 401 every protected route gives, so an unrouted spelling tells an
/// anonymous caller nothing and nothing is passed on.
pub async fn unrouted(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    state
        .auth
        .authenticate(&req, None, state.access.as_ref())
        .await?;
    Err(ApiError::RouteNotFound)
}

fn invalid_token(why: impl Into<String>) -> ApiError {
    AuthFailure::InvalidToken(why.into()).into()
}

/// The caller as the handlers see it.
pub type Caller = web::ReqData<Principal>;

/// The audit entry of `who` doing `action`.
pub fn audit_entry(
    who: &Principal,
    action: &'static str,
    target: Option<String>,
    detail: serde_json::Value,
) -> orion_services::store::NewAudit {
    orion_services::store::NewAudit {
        actor: who.subject.clone(),
        role: who.role.as_str().to_owned(),
        action,
        target,
        detail,
    }
}

/// Records who did what in the audit log. The action has happened; a failure to record it is
/// logged, not returned, so the client's answer matches what was done.
pub async fn audit(
    state: &AppState,
    who: &Principal,
    action: &'static str,
    target: Option<String>,
    detail: serde_json::Value,
) {
    let entry = audit_entry(who, action, target, detail);
    if let Err(e) = state.access.record_audit(entry).await {
        tracing::warn!(error = %e, action, "could not record an audit entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_closes_unknown_routes_and_opens_only_probes() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/v1/tasks"), Need::Role(Role::Viewer));
        assert_eq!(
            need(&Method::POST, "/v1/tasks"),
            Need::Role(Role::Submitter)
        );
        assert_eq!(need(&Method::GET, "/v1/api-keys"), Need::Role(Role::Admin));
        assert_eq!(need(&Method::POST, "/v1/pulls/{id}/reviews"), Need::Review);
        assert_eq!(
            need(&Method::POST, "/v1/something-new"),
            Need::Role(Role::Admin)
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/tasks/{id}"),
            Need::Role(Role::Admin)
        );
    }

    #[test]
    fn a_submitter_reviews_only_when_granted() {
        let mut p = Principal {
            subject: "s".into(),
            role: Role::Submitter,
            grants: vec![],
            expires_at: None,
            api_key_hash: None,
        };
        assert!(!p.may(Need::Review));
        p.grants.push(GRANT_REVIEW.into());
        assert!(p.may(Need::Review));
        p.role = Role::Viewer;
        assert!(!p.may(Need::Review), "a grant does not lift a viewer");
    }
}
