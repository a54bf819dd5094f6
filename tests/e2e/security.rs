//! Security at the gateway: every authentication failure (401) and role violation (403) as
//! problem+json, the permission matrix, API keys (shown once, stored hashed, revocable,
//! expiring), the audit log, limits (JSON depth, submission rate, WebSocket frames), sealed
//! repository credentials, and the modes that refuse to run open.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    JWT_SECRET, Process, TestApp, claims, eventually, fixture_repo, jwt_with, openssl, token,
    with_jwt_auth,
};

/// A request's answer: status, problem code (if any), the `WWW-Authenticate` header, body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    pub(crate) body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

pub(crate) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let client = awc::Client::new();
    let url = app.url(path);
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("method {other}"),
    };
    if let Some(auth) = auth {
        request = request.insert_header(("Authorization", auth));
    }
    let mut response = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    }
    .expect("the gateway answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, www_authenticate, retry_after) = (
        header("content-type").unwrap_or_default(),
        header("www-authenticate"),
        header("retry-after"),
    );
    let bytes = response.body().await.expect("a body");
    Answer {
        status: response.status().as_u16(),
        content_type,
        www_authenticate,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn secured_app() -> TestApp {
    TestApp::spawn_with(with_jwt_auth).await
}

fn analyze(repo: &str) -> Value {
    json!({ "kind": "analyze", "repo": repo })
}

#[actix_rt::test]
async fn every_authentication_failure_is_a_401_problem_with_its_own_code() {
    let app = secured_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let mut expired = claims("admin");
    expired["exp"] = json!(now - 3600);
    let mut wrong_issuer = claims("admin");
    wrong_issuer["iss"] = json!("https://someone.else");
    let mut wrong_audience = claims("admin");
    wrong_audience["aud"] = json!("another-service");
    let mut no_expiry = claims("admin");
    no_expiry.as_object_mut().unwrap().remove("exp");
    // Not valid for an hour yet (beyond the 30 s leeway), and not valid before a second from
    // now, which the leeway accepts.
    let mut not_yet = claims("admin");
    not_yet["nbf"] = json!(now + 3600);
    let mut nearly = claims("viewer");
    nearly["nbf"] = json!(now + 1);
    let mut no_subject = claims("admin");
    no_subject.as_object_mut().unwrap().remove("sub");
    let mut blank_subject = claims("admin");
    blank_subject["sub"] = json!(" ");
    let mut key_subject = claims("admin");
    key_subject["sub"] = json!("key:01a24302-2c67-7605-87bd-0a497841f1fd");
    // A forge's webhooks submit as `forge:<name>`: no token may take that name either.
    let mut forge_subject = claims("admin");
    forge_subject["sub"] = json!("forge:github");
    // The audit log names a caller by `sub`, in a column of 255 characters.
    let mut long_subject = claims("admin");
    long_subject["sub"] = json!("s".repeat(256));
    let mut no_issuer = claims("admin");
    no_issuer.as_object_mut().unwrap().remove("iss");
    let mut no_audience = claims("admin");
    no_audience.as_object_mut().unwrap().remove("aud");
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&claims("admin").to_string())
    );
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "unauthenticated"),
        ("not a JWT", Some(bearer("abc.def")), "invalid_token"),
        (
            "not bearer",
            Some("Basic dXNlcjpwYXNz".into()),
            "invalid_token",
        ),
        ("alg none", Some(bearer(&unsigned)), "invalid_token"),
        (
            "no exp",
            Some(bearer(&jwt_with(JWT_SECRET, &no_expiry))),
            "invalid_token",
        ),
        (
            "expired",
            Some(bearer(&jwt_with(JWT_SECRET, &expired))),
            "token_expired",
        ),
        (
            "not yet valid",
            Some(bearer(&jwt_with(JWT_SECRET, &not_yet))),
            "invalid_token",
        ),
        (
            "no sub",
            Some(bearer(&jwt_with(JWT_SECRET, &no_subject))),
            "invalid_token",
        ),
        (
            "sub of 256 characters",
            Some(bearer(&jwt_with(JWT_SECRET, &long_subject))),
            "invalid_token",
        ),
        (
            "blank sub",
            Some(bearer(&jwt_with(JWT_SECRET, &blank_subject))),
            "invalid_token",
        ),
        (
            "an API key's subject",
            Some(bearer(&jwt_with(JWT_SECRET, &key_subject))),
            "invalid_token",
        ),
        (
            "a forge's subject",
            Some(bearer(&jwt_with(JWT_SECRET, &forge_subject))),
            "invalid_token",
        ),
        (
            "no iss",
            Some(bearer(&jwt_with(JWT_SECRET, &no_issuer))),
            "invalid_token",
        ),
        (
            "no aud",
            Some(bearer(&jwt_with(JWT_SECRET, &no_audience))),
            "invalid_token",
        ),
        (
            "issuer",
            Some(bearer(&jwt_with(JWT_SECRET, &wrong_issuer))),
            "wrong_issuer",
        ),
        (
            "audience",
            Some(bearer(&jwt_with(JWT_SECRET, &wrong_audience))),
            "wrong_audience",
        ),
        (
            "signature",
            Some(bearer(&jwt_with(
                "another-secret-of-32-bytes-or-more!!",
                &claims("admin"),
            ))),
            "bad_signature",
        ),
        (
            "unknown key",
            Some(bearer("orion_not-a-key-that-exists")),
            "unknown_api_key",
        ),
    ];
    for (what, auth, code) in cases {
        let answer = call(&app, "GET", "/v1/tasks", auth.as_deref(), None).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(answer.code(), code, "{what}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json", "{what}");
        assert!(
            answer
                .www_authenticate
                .as_deref()
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}: a 401 says how to authenticate"
        );
    }
    let within_leeway = call(
        &app,
        "GET",
        "/v1/tasks",
        Some(&bearer(&jwt_with(JWT_SECRET, &nearly))),
        None,
    )
    .await;
    assert_eq!(within_leeway.status, 200, "{}", within_leeway.body);
    // A valid token without an Orion role is authenticated but may do nothing.
    let mut roleless = claims("admin");
    roleless.as_object_mut().unwrap().remove("role");
    let answer = call(
        &app,
        "GET",
        "/v1/tasks",
        Some(&bearer(&jwt_with(JWT_SECRET, &roleless))),
        None,
    )
    .await;
    assert_eq!((answer.status, answer.code()), (403, "no_role"));
    // Probes and the API's description stay open; metrics need a viewer unless configured.
    for path in [
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
        "/",
        "/docs",
        "/ui/app.js",
        "/ui/docs.js",
    ] {
        assert_eq!(
            call(&app, "GET", path, None, None).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(call(&app, "GET", "/metrics", None, None).await.status, 401);
    let viewer = bearer(&token("viewer"));
    assert_eq!(
        call(&app, "GET", "/metrics", Some(&viewer), None)
            .await
            .status,
        200
    );
    let open = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.server.public_metrics = true;
    })
    .await;
    assert_eq!(call(&open, "GET", "/metrics", None, None).await.status, 200);
    // A `roles` array works too; the highest known role counts.
    let mut roles = claims("viewer");
    roles.as_object_mut().unwrap().remove("role");
    roles["roles"] = json!(["auditor", "viewer"]);
    let answer = call(
        &app,
        "GET",
        "/v1/tasks",
        Some(&bearer(&jwt_with(JWT_SECRET, &roles))),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[actix_rt::test]
async fn each_role_may_do_what_the_matrix_says_and_the_audit_log_names_who_did_it() {
    // No analyzer runs: submitted tasks wait, so the operator's cancellation always applies.
    let app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.node.agents = vec![orion_bus::AgentKind::Coordinator];
    })
    .await;
    let repo = fixture_repo();
    let repo = repo.path().to_string_lossy().into_owned();
    let as_role = |role: &str| bearer(&token(role));

    // viewer: reads, cannot submit.
    assert_eq!(
        call(&app, "GET", "/v1/tasks", Some(&as_role("viewer")), None)
            .await
            .status,
        200
    );
    let refused = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&as_role("viewer")),
        Some(analyze(&repo)),
    )
    .await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "forbidden"),
        "{}",
        refused.body
    );
    assert_eq!(refused.content_type, "application/problem+json");

    // submitter: submits; cannot cancel, review (unless granted), or manage keys.
    let submitted = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&as_role("submitter")),
        Some(analyze(&repo)),
    )
    .await;
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    let id = submitted.body["id"].as_str().unwrap().to_owned();
    let cancel = format!("/v1/tasks/{id}/cancel");
    assert_eq!(
        call(&app, "POST", &cancel, Some(&as_role("submitter")), None)
            .await
            .status,
        403
    );
    // Spending caps: anyone reads them; a submitter may not raise one.
    assert_eq!(
        call(
            &app,
            "GET",
            "/v1/usage/budgets",
            Some(&as_role("viewer")),
            None
        )
        .await
        .status,
        200
    );
    let raise = json!({ "usd": 100.0 });
    let refused = call(
        &app,
        "POST",
        "/v1/usage/budgets/daily",
        Some(&as_role("submitter")),
        Some(raise.clone()),
    )
    .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
    let review = format!("/v1/pulls/{}/reviews", uuid::Uuid::new_v4());
    let approve = json!({ "decision": "approve" });
    let refused = call(
        &app,
        "POST",
        &review,
        Some(&as_role("submitter")),
        Some(approve.clone()),
    )
    .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
    let mut granted = claims("submitter");
    granted["scope"] = json!("review");
    let granted = bearer(&jwt_with(JWT_SECRET, &granted));
    // Past the gate: the pull request does not exist.
    let answer = call(&app, "POST", &review, Some(&granted), Some(approve.clone())).await;
    assert_eq!((answer.status, answer.code()), (404, "pull_not_found"));
    assert_eq!(
        call(
            &app,
            "GET",
            "/v1/api-keys",
            Some(&as_role("submitter")),
            None
        )
        .await
        .status,
        403
    );

    // operator: reviews and cancels; cannot manage keys or read the audit log.
    let answer = call(
        &app,
        "POST",
        &review,
        Some(&as_role("operator")),
        Some(approve),
    )
    .await;
    assert_eq!(answer.code(), "pull_not_found");
    // Past the gate: no such cap is configured.
    let answer = call(
        &app,
        "POST",
        "/v1/usage/budgets/daily",
        Some(&as_role("operator")),
        Some(raise),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (404, "budget_not_found"));
    let cancelled = call(&app, "POST", &cancel, Some(&as_role("operator")), None).await;
    assert_eq!(
        cancelled.status, 200,
        "the operator cancels: {}",
        cancelled.body
    );
    let key = json!({ "name": "ci", "role": "submitter" });
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/api-keys",
            Some(&as_role("operator")),
            Some(key.clone())
        )
        .await
        .status,
        403
    );
    assert_eq!(
        call(&app, "GET", "/v1/audit", Some(&as_role("operator")), None)
            .await
            .status,
        403
    );

    // admin: manages keys and reads the audit log, which names each actor.
    let created = call(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&as_role("admin")),
        Some(key),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let audit = call(&app, "GET", "/v1/audit", Some(&as_role("admin")), None).await;
    assert_eq!(audit.status, 200);
    let entries: Vec<(String, String)> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        entries.contains(&("task.submit".into(), "test-submitter".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("api_key.create".into(), "test-admin".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("task.cancel".into(), "test-operator".into())),
        "{entries:?}"
    );
    // The task's own log says who cancelled it.
    let events = call(
        &app,
        "GET",
        &format!("/v1/tasks/{id}/events"),
        Some(&as_role("viewer")),
        None,
    )
    .await;
    let cancelled_event = events.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(events.body.as_array().into_iter().flatten())
        .find(|e| e["type"] == "cancelled")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        cancelled_event["data"]["by"], "test-operator",
        "{}",
        events.body
    );
    assert!(
        !entries.iter().any(|(action, _)| action == "task.review"),
        "refused actions are not recorded as done"
    );
}

#[actix_rt::test]
async fn an_api_key_is_shown_once_stored_only_as_a_hash_and_stops_working_when_revoked_or_expired()
{
    let app = secured_app().await;
    let admin = bearer(&token("admin"));
    let created = call(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&admin),
        Some(json!({ "name": "nightly", "role": "submitter" })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("orion_") && secret.len() > 40);

    // The key works as a bearer token and as X-Api-Key, with its role.
    let repo = fixture_repo();
    let task = analyze(&repo.path().to_string_lossy());
    let with_key = bearer(&secret);
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/tasks",
            Some(&with_key),
            Some(task.clone())
        )
        .await
        .status,
        202
    );
    assert_eq!(
        call(&app, "GET", "/v1/api-keys", Some(&with_key), None)
            .await
            .status,
        403
    );
    let mut response = awc::Client::new()
        .get(app.url("/v1/tasks"))
        .insert_header(("X-Api-Key", secret.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let _ = response.body().await;

    // Listed without its secret; the database holds no copy of it.
    let listed = call(&app, "GET", "/v1/api-keys", Some(&admin), None).await;
    assert!(listed.body.to_string().contains(&id));
    assert!(!listed.body.to_string().contains(&secret));
    let db = std::fs::read(app.data.path().join("orion.db")).unwrap();
    let wal = std::fs::read(app.data.path().join("orion.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is not in the database"
        );
    }
    let hash = orion_gateway::auth::hash_api_key(&secret);
    assert!(
        db.windows(hash.len()).any(|w| w == hash.as_bytes())
            || wal.windows(hash.len()).any(|w| w == hash.as_bytes()),
        "its hash is"
    );

    // Revoked: refused at once.
    let revoked = call(
        &app,
        "DELETE",
        &format!("/v1/api-keys/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200);
    let answer = call(&app, "GET", "/v1/tasks", Some(&with_key), None).await;
    assert_eq!((answer.status, answer.code()), (401, "api_key_revoked"));
    let missing = call(
        &app,
        "DELETE",
        &format!("/v1/api-keys/{}", uuid::Uuid::new_v4()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((missing.status, missing.code()), (404, "api_key_not_found"));

    // A key with an expiry works until then, and not after.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expiring = call(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&admin),
        Some(json!({ "name": "brief", "role": "viewer", "expires_at": soon })),
    )
    .await;
    let expiring = bearer(expiring.body["secret"].as_str().unwrap());
    assert_eq!(
        call(&app, "GET", "/v1/tasks", Some(&expiring), None)
            .await
            .status,
        200
    );
    eventually("the key to expire", Duration::from_secs(10), || async {
        let answer = call(&app, "GET", "/v1/tasks", Some(&expiring), None).await;
        (answer.status == 401 && answer.code() == "api_key_expired").then_some(())
    })
    .await;

    // Bad key requests are refused by name.
    for (body, field) in [
        (json!({ "name": "x", "role": "root" }), "role"),
        (
            json!({ "name": "x", "role": "viewer", "grants": ["everything"] }),
            "grants",
        ),
        (
            json!({ "name": "x", "role": "viewer", "expires_at": "tomorrow" }),
            "expires_at",
        ),
        (json!({ "role": "viewer" }), "name"),
    ] {
        let answer = call(&app, "POST", "/v1/api-keys", Some(&admin), Some(body)).await;
        assert_eq!(answer.status, 422, "{}", answer.body);
        assert!(
            answer.body["detail"].as_str().unwrap().contains(field),
            "{}",
            answer.body
        );
    }
}

#[actix_rt::test]
async fn limits_refuse_deep_json_and_too_many_submissions_without_losing_what_was_stored() {
    let app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.server.submissions_per_minute = 2;
        s.server.max_json_depth = 8;
    })
    .await;
    let submitter = bearer(&token("submitter"));
    let repo = fixture_repo();
    let task = analyze(&repo.path().to_string_lossy());

    let mut deep = json!("leaf");
    for _ in 0..10 {
        deep = json!([deep]);
    }
    // Refused requests count against the rate too: the deep one is sent by another caller.
    let other = bearer(&token("operator"));
    let answer = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&other),
        Some(json!({ "kind": "analyze", "repo": "x", "prompt": deep })),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "json_too_deep"),
        "{}",
        answer.body
    );

    let first = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&submitter),
        Some(task.clone()),
    )
    .await;
    assert_eq!(first.status, 202);
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/tasks",
            Some(&submitter),
            Some(task.clone())
        )
        .await
        .status,
        202
    );
    let limited = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&submitter),
        Some(task.clone()),
    )
    .await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "rate_limited"),
        "{}",
        limited.body
    );
    assert_eq!(limited.content_type, "application/problem+json");
    let retry: u64 = limited.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    // The limit is per caller: another caller still submits; reads are not limited.
    assert_eq!(
        call(&app, "POST", "/v1/tasks", Some(&other), Some(task))
            .await
            .status,
        202
    );
    let id = first.body["id"].as_str().unwrap();
    let stored = call(
        &app,
        "GET",
        &format!("/v1/tasks/{id}"),
        Some(&submitter),
        None,
    )
    .await;
    assert_eq!(stored.status, 200, "the refused requests lost nothing");
    let all = call(&app, "GET", "/v1/tasks", Some(&submitter), None).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 3);
}

#[actix_rt::test]
async fn the_event_stream_needs_a_token_and_closes_on_an_oversized_frame() {
    use futures_util::{SinkExt, StreamExt};
    let app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.server.streams.ws_max_frame_bytes = 1024;
    })
    .await;
    let url = app.url("/v1/stream").replacen("http", "ws", 1);
    let refused = awc::Client::new().ws(url.as_str()).connect().await;
    assert!(refused.is_err(), "no token, no stream");
    // Browsers cannot set headers on a WebSocket: the token may come in the query.
    let with_token = format!("{url}?access_token={}", token("viewer"));
    let (_, mut socket) = awc::Client::new()
        .ws(with_token.as_str())
        .connect()
        .await
        .expect("a viewer may watch");
    socket
        .send(awc::ws::Message::Text("x".repeat(4096).into()))
        .await
        .unwrap();
    // Frames until the close (the server may ping first), within a deadline.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = socket.next().await {
            if let Ok(awc::ws::Frame::Close(reason)) = frame {
                return reason;
            }
        }
        None
    })
    .await
    .expect("the server closes within 10 s");
    assert_eq!(
        closed.map(|r| r.code),
        Some(awc::ws::CloseCode::Size),
        "closed as too large"
    );
}

/// Reads frames until the server closes, within `deadline`; the close reason.
async fn closed_within(
    socket: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    deadline: Duration,
) -> Option<awc::ws::CloseReason> {
    use futures_util::StreamExt;
    tokio::time::timeout(deadline, async {
        while let Some(frame) = socket.next().await {
            if let Ok(awc::ws::Frame::Close(reason)) = frame {
                return reason;
            }
        }
        None
    })
    .await
    .expect("the server closes the stream in time")
}

/// Streams are capped per caller and in all, end when the caller's token expires or API key
/// is revoked, and replay a bounded number of events per connection.
#[actix_rt::test]
async fn event_streams_are_capped_and_end_with_their_credential() {
    use futures_util::StreamExt;
    let app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.server.streams.ws_max_per_caller = 2;
        s.server.streams.ws_max = 3;
        s.server.streams.ws_max_replay = 3;
        s.server.streams.ws_recheck_secs = 1;
    })
    .await;
    let url = app.url("/v1/stream").replacen("http", "ws", 1);
    let open = |token: String| {
        let url = url.clone();
        async move {
            awc::Client::new()
                .ws(format!("{url}?access_token={token}"))
                .connect()
                .await
        }
    };
    let status_of = |e: awc::error::WsClientError| match e {
        awc::error::WsClientError::InvalidResponseStatus(status) => status.as_u16(),
        other => panic!("{other}"),
    };
    let viewer = token("viewer");
    let (_, first) = open(viewer.clone()).await.expect("one");
    let (_, _second) = open(viewer.clone()).await.expect("two");
    let third = open(viewer.clone())
        .await
        .err()
        .expect("a third is refused");
    assert_eq!(status_of(third), 429);
    let mut other = claims("viewer");
    other["sub"] = json!("another-viewer");
    let other = jwt_with(JWT_SECRET, &other);
    let (_, _theirs) = open(other.clone()).await.expect("another caller's first");
    let over = open(other.clone()).await.err().expect("the gateway's cap");
    assert_eq!(status_of(over), 429);
    // A closed stream frees its place.
    drop(first);
    eventually("a place to free up", Duration::from_secs(10), || async {
        open(viewer.clone()).await.ok()
    })
    .await;

    // A token that expires in two seconds: its stream ends then.
    let app2 = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.server.streams.ws_max_replay = 3;
        s.server.streams.ws_recheck_secs = 1;
    })
    .await;
    let url2 = app2.url("/v1/stream").replacen("http", "ws", 1);
    let mut short = claims("viewer");
    short["exp"] = json!(jsonwebtoken::get_current_timestamp() + 2);
    let (_, mut socket) = awc::Client::new()
        .ws(format!(
            "{url2}?access_token={}",
            jwt_with(JWT_SECRET, &short)
        ))
        .connect()
        .await
        .unwrap();
    let reason = closed_within(&mut socket, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(reason.code, awc::ws::CloseCode::Policy);
    assert_eq!(
        reason.description.as_deref(),
        Some("credential expired or revoked")
    );

    // An API key revoked while its stream is open: the stream ends.
    let admin = bearer(&token("admin"));
    let made = call(
        &app2,
        "POST",
        "/v1/api-keys",
        Some(&admin),
        Some(json!({ "name": "watcher", "role": "viewer" })),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let (_, mut socket) = awc::Client::new()
        .ws(url2.as_str())
        .set_header("X-Api-Key", made.body["secret"].as_str().unwrap())
        .connect()
        .await
        .unwrap();
    let revoked = call(
        &app2,
        "DELETE",
        &format!("/v1/api-keys/{}", made.body["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert!(revoked.status < 300, "{}", revoked.body);
    let reason = closed_within(&mut socket, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(
        reason.description.as_deref(),
        Some("credential expired or revoked")
    );

    // A replay stops at three events and says where to resume; resuming there goes on.
    let repo = fixture_repo();
    for _ in 0..2 {
        let id = call(
            &app2,
            "POST",
            "/v1/tasks",
            Some(&admin),
            Some(analyze(&repo.path().to_string_lossy())),
        )
        .await
        .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(
            "the analysis to complete",
            Duration::from_secs(30),
            || async {
                let task = call(&app2, "GET", &format!("/v1/tasks/{id}"), Some(&admin), None).await;
                (task.body["status"] == "completed").then_some(())
            },
        )
        .await;
    }
    let mut since = 0i64;
    let mut seen = Vec::new();
    for round in 0..2 {
        let (_, mut socket) = awc::Client::new()
            .ws(format!(
                "{url2}?since={since}&access_token={}",
                token("viewer")
            ))
            .connect()
            .await
            .unwrap();
        let mut events = Vec::new();
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(awc::ws::Frame::Text(text)) => {
                        events.push(serde_json::from_slice::<Value>(&text).unwrap())
                    }
                    Ok(awc::ws::Frame::Close(reason)) => return reason,
                    _ => {}
                }
            }
            None
        })
        .await
        .expect("the replay ends with a close")
        .unwrap();
        assert_eq!(events.len(), 3, "round {round}");
        let description = reason.description.unwrap();
        let resume: i64 = description
            .strip_prefix("replay limit reached: resume with since=")
            .unwrap_or_else(|| panic!("{description}"))
            .parse()
            .unwrap();
        assert_eq!(resume, events[2]["seq"].as_i64().unwrap());
        seen.extend(events.iter().map(|e| e["seq"].as_i64().unwrap()));
        since = resume;
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted, seen, "no event twice: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
}

#[actix_rt::test]
async fn repository_credentials_are_sealed_at_rest_and_never_returned() {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let sealing = key.clone();
    let app = TestApp::spawn_with(move |s| {
        with_jwt_auth(s);
        s.secrets.credentials_key = Some(sealing.into());
    })
    .await;
    let admin = bearer(&token("admin"));
    let secret = "ghp_private-remote-token-1234567890";
    let body = json!({ "repo_prefix": "https://git.example.com/acme/", "username": "bot", "secret": secret });
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/credentials",
            Some(&bearer(&token("operator"))),
            Some(body.clone())
        )
        .await
        .status,
        403
    );
    let saved = call(&app, "POST", "/v1/credentials", Some(&admin), Some(body)).await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    assert!(!saved.body.to_string().contains(secret));
    let listed = call(&app, "GET", "/v1/credentials", Some(&admin), None).await;
    assert_eq!(listed.body["items"][0]["username"], "bot");
    assert!(!listed.body.to_string().contains(secret));
    let db = [
        std::fs::read(app.data.path().join("orion.db")).unwrap(),
        std::fs::read(app.data.path().join("orion.db-wal")).unwrap_or_default(),
    ]
    .concat();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "not in clear at rest"
    );
    // What the VCS service reads opens with the key, and only with it.
    let sealer = orion_services::secrets::Sealer::from_base64(&key.into()).unwrap();
    let store = app.services.lifecycle.store();
    let plain = json!({ "repo_prefix": "http://git.example.com/acme/", "username": "bot", "secret": secret });
    let saved = call(&app, "POST", "/v1/credentials", Some(&admin), Some(plain)).await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    let cache = orion_services::vcs::CredentialCache::new(sealer.clone(), store.clone(), vec![]);
    cache.refresh().await.unwrap();
    assert_eq!(
        cache.lookup("https://git.example.com/acme/widgets.git"),
        Some(("bot".to_owned(), secret.to_owned()))
    );
    // Matched on the parsed URL: look-alike hosts, users, ports and paths get nothing.
    for elsewhere in [
        "https://elsewhere.example.com/x.git",
        "https://git.example.com.evil.net/acme/widgets.git",
        "https://git.example.com@evil.net/acme/widgets.git",
        "https://git.example.com:8443/acme/widgets.git",
        "https://git.example.com/acmecorp/widgets.git",
        "https://git.example.com/other/../acme2/widgets.git",
    ] {
        assert_eq!(cache.lookup(elsewhere), None, "{elsewhere}");
    }
    // Over plain HTTP, only to a host listed as insecure.
    assert_eq!(
        cache.lookup("http://git.example.com/acme/widgets.git"),
        None
    );
    let insecure = orion_services::vcs::CredentialCache::new(
        sealer,
        store.clone(),
        vec!["git.example.com".to_owned()],
    );
    insecure.refresh().await.unwrap();
    assert_eq!(
        insecure.lookup("http://git.example.com/acme/widgets.git"),
        Some(("bot".to_owned(), secret.to_owned()))
    );
    let other_key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let other = orion_services::secrets::Sealer::from_base64(&other_key.into()).unwrap();
    let wrong = orion_services::vcs::CredentialCache::new(other, store.clone(), vec![]);
    wrong.refresh().await.unwrap();
    assert_eq!(
        wrong.lookup("https://git.example.com/acme/widgets.git"),
        None,
        "another key opens nothing"
    );

    // Without a key, nothing is stored.
    let keyless = secured_app().await;
    let answer = call(
        &keyless,
        "POST",
        "/v1/credentials",
        Some(&admin),
        Some(json!({ "repo_prefix": "https://x/", "username": "u", "secret": "s" })),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (503, "service_unavailable"));
}

/// Every configured secret, through a whole develop task in a real `orion up` process with
/// debug logs: none appears in its output, in what the API returns, or in the test sandbox.
#[actix_rt::test]
async fn no_configured_secret_appears_in_logs_answers_or_the_test_sandbox() {
    use crate::support::{PgDatabase, TempDir, bare_remote, model_answering};
    use std::process::{Command, Stdio};
    let model_key = "sk-live-model-key-0f9e8d7c6b5a";
    let db_password = "db-password-7a6b5c4d3e2f";
    let credentials_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    let server =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 5\n=== END\n").await;
    let (_keep, remote) = bare_remote();
    let db = PgDatabase::create().await;
    // Trust authentication accepts any password: the URL carries one that must stay hidden.
    let url = db
        .url
        .replacen("postgres@", &format!("postgres:{db_password}@"), 1);
    assert!(
        url.contains(db_password),
        "the test's Postgres URL has the expected form"
    );
    let dir = TempDir::new();
    let config = crate::support::model_config(dir.path(), &server, "env | sort");
    let (stdout, stderr) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_orion"));
    command
        .arg("--config")
        .arg(&config)
        .args(["up", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .env("ORION__LLM__API_KEY", model_key)
        .env("ORION__DATABASE__URL", &url)
        .env("ORION__SECRETS__CREDENTIALS_KEY", &credentials_key)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (key, value) in crate::support::auth_env() {
        command.env(key, value);
    }
    let child = Process(command.spawn().unwrap());
    let base = eventually("orion up to listen", Duration::from_secs(30), || async {
        let out = std::fs::read_to_string(&stdout).ok()?;
        let line = out.lines().find(|l| l.starts_with("Orion listening on "))?;
        line.split_whitespace().nth(3).map(str::to_owned)
    })
    .await;
    let admin = awc::Client::builder().bearer_auth(token("admin")).finish();
    let id = crate::support::submit_to(&admin, &base, &json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "quintuple the helper" })).await;
    let get = |path: String| {
        let admin = admin.clone();
        let base = base.clone();
        async move {
            let mut r = admin.get(format!("{base}{path}")).send().await.ok()?;
            r.json::<Value>().limit(16 << 20).await.ok()
        }
    };
    eventually(
        "the task to reach review",
        Duration::from_secs(60),
        || async {
            let task = get(format!("/v1/tasks/{id}")).await?;
            assert_ne!(task["status"], "failed", "{task}");
            (task["status"] == "awaiting_review").then_some(())
        },
    )
    .await;
    let mut answers = String::new();
    for path in [
        format!("/v1/tasks/{id}"),
        format!("/v1/tasks/{id}/events"),
        "/v1/pulls".into(),
    ] {
        answers.push_str(&get(path).await.unwrap().to_string());
    }
    let pull = get("/v1/pulls".into()).await.unwrap()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.push_str(&get(format!("/v1/pulls/{pull}")).await.unwrap().to_string());
    drop(child);
    let logs =
        std::fs::read_to_string(&stdout).unwrap() + &std::fs::read_to_string(&stderr).unwrap();
    assert!(logs.contains("DEBUG"), "the logs are at debug level");
    assert!(
        answers.contains("CI=true"),
        "the sandbox's environment is in the test report the API returns"
    );
    for secret in [
        model_key,
        db_password,
        crate::support::JWT_SECRET,
        credentials_key.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(
            !answers.contains(secret),
            "a secret is in an API answer or the sandbox"
        );
    }
    db.drop_now().await;
}

/// A NATS server of the test's own, with JetStream in `dir` and `extra` configuration
/// (authorization, TLS); its port.
async fn private_nats(dir: &std::path::Path, extra: &str) -> (Process, u16) {
    let port = crate::support::free_port();
    let conf = dir.join("nats.conf");
    let js = dir.join("js");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
            js.display()
        ),
    )
    .unwrap();
    let server = crate::support::nats_server(port, &["-c".as_ref(), conf.as_os_str()]).await;
    (server, port)
}

/// Connects a bus to `url` with `security`.
async fn connect_bus(
    url: String,
    security: orion_bus::NatsSecurity,
) -> Result<(), orion_bus::BusError> {
    orion_bus::NatsBus::connect_with(
        &url,
        orion_bus::Subjects::new("sec").unwrap(),
        orion_bus::BusConfig::default(),
        &security,
    )
    .await
    .map(|_| ())
}

/// A NATS server that demands a user and password: Orion connects with them and is refused
/// without them or with a wrong one, each with a clear error.
#[actix_rt::test]
async fn the_bus_connects_to_a_nats_server_that_demands_credentials_only_with_them() {
    use orion_bus::NatsSecurity;
    let dir = crate::support::TempDir::new();
    let (_server, port) = private_nats(
        dir.path(),
        "authorization { user: orion, password: \"bus-password-1\" }",
    )
    .await;
    let url = format!("nats://127.0.0.1:{port}");
    let connect = |security: NatsSecurity| connect_bus(url.clone(), security);
    let anonymous = connect(NatsSecurity::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(anonymous.contains("connecting to NATS"), "{anonymous}");
    let wrong = NatsSecurity {
        user: Some("orion".into()),
        password: Some("guess".into()),
        ..NatsSecurity::default()
    };
    assert!(connect(wrong).await.is_err());
    let right = NatsSecurity {
        user: Some("orion".into()),
        password: Some("bus-password-1".into()),
        ..NatsSecurity::default()
    };
    connect(right.clone())
        .await
        .expect("the right credentials connect");
    let both = NatsSecurity {
        token: Some("t".into()),
        ..right
    };
    let refused = connect(both).await.unwrap_err().to_string();
    assert!(refused.contains("reading the NATS settings"), "{refused}");
    assert!(
        !format!(
            "{:?}",
            NatsSecurity {
                password: Some("bus-password-1".into()),
                ..NatsSecurity::default()
            }
        )
        .contains("bus-password-1"),
        "Debug hides the password"
    );
}

/// Tokens signed with a private key verify with its public key (PEM, ES256) or a JWKS file
/// (RS256, picked by `kid`); a token that claims HS256 with the public key as its secret (the
/// algorithm-confusion attack) is refused.
#[actix_rt::test]
async fn public_key_and_jwks_verification_accept_their_signatures_only() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk};
    let dir = crate::support::TempDir::new();
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-out", "ec8.pem",
        ],
    );
    openssl(d, &["ec", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    let ec = EncodingKey::from_ec_pem(&std::fs::read(d.join("ec8.pem")).unwrap()).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(d.join("rsa.pem")).unwrap()).unwrap();
    let mut key = jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    key.common.key_id = Some("k1".into());
    std::fs::write(
        d.join("jwks.json"),
        serde_json::to_vec(&jwk::JwkSet { keys: vec![key] }).unwrap(),
    )
    .unwrap();

    let public_pem = d.join("ec.pub.pem");
    let pem_app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.auth.jwt.secret = None;
        s.auth.jwt.public_key_file = Some(public_pem);
    })
    .await;
    let es256 = encode(&Header::new(Algorithm::ES256), &claims("viewer"), &ec).unwrap();
    assert_eq!(
        call(&pem_app, "GET", "/v1/tasks", Some(&bearer(&es256)), None)
            .await
            .status,
        200
    );
    let confused = jwt_with(
        &std::fs::read_to_string(d.join("ec.pub.pem")).unwrap(),
        &claims("admin"),
    );
    let answer = call(&pem_app, "GET", "/v1/tasks", Some(&bearer(&confused)), None).await;
    assert_eq!(
        (answer.status, answer.code()),
        (401, "invalid_token"),
        "{}",
        answer.body
    );

    let jwks = d.join("jwks.json");
    let jwks_app = TestApp::spawn_with(|s| {
        with_jwt_auth(s);
        s.auth.jwt.secret = None;
        s.auth.jwt.jwks_file = Some(jwks);
    })
    .await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let rs256 = encode(&header, &claims("viewer"), &rsa).unwrap();
    assert_eq!(
        call(&jwks_app, "GET", "/v1/tasks", Some(&bearer(&rs256)), None)
            .await
            .status,
        200
    );
    header.kid = Some("k2".into());
    let unknown = encode(&header, &claims("viewer"), &rsa).unwrap();
    let answer = call(&jwks_app, "GET", "/v1/tasks", Some(&bearer(&unknown)), None).await;
    assert_eq!(
        (answer.status, answer.code()),
        (401, "invalid_token"),
        "{}",
        answer.body
    );
    // The EC key's token does not pass as the RSA key's.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let wrong = encode(&header, &claims("viewer"), &ec).unwrap();
    assert_eq!(
        call(&jwks_app, "GET", "/v1/tasks", Some(&bearer(&wrong)), None)
            .await
            .status,
        401
    );
}

/// A private remote over HTTP that demands a password: a develop task fails to clone it with
/// a clear error until an admin stores its credential, then clones, pushes its branch and
/// opens a pull request with it; the credential never leaves the server.
#[actix_rt::test]
async fn a_develop_task_reaches_a_private_remote_with_the_stored_credential() {
    use crate::support::{git_rev, model_answering};
    use base64::Engine;
    let root = crate::remotes::private_repo();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/git_http_server.py");
    let mut server = Process(
        std::process::Command::new("python3")
            .arg(script)
            .arg(root.path())
            .args(["bot", "remote-password-42"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let port = crate::support::first_line(&mut server.0, "the git server").await;
    let remote = format!("http://127.0.0.1:{}/private.git", port.trim());
    let model =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 7\n=== END\n").await;
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let model_url = format!("{}/v1", model.uri());
    // A remote that redirects every request to the private one: its credential must not
    // follow the redirect there.
    let mut redirector = Process(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(REDIRECTOR)
            .arg(port.trim())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let redirect_port = crate::support::first_line(&mut redirector.0, "the redirector").await;
    let redirect_port = redirect_port.trim().to_owned();
    let hosts = vec![
        format!("127.0.0.1:{}", port.trim()),
        format!("127.0.0.1:{redirect_port}"),
    ];
    let app = TestApp::spawn_with(move |s| {
        with_jwt_auth(s);
        // A loopback remote is allowed only when listed, and a credential goes over plain
        // HTTP only to a host listed as insecure.
        s.security.repo_hosts = Some(hosts);
        s.security.insecure_hosts = vec!["127.0.0.1".into()];
        s.secrets.credentials_key = Some(key.into());
        s.llm.base_url = Some(model_url);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
    })
    .await;
    let admin = bearer(&token("admin"));
    let develop = json!({ "kind": "develop", "repo": remote, "prompt": "septuple the helper" });
    let wait = |id: String, statuses: &'static [&'static str]| {
        let app = &app;
        let admin = admin.clone();
        async move {
            eventually("the task to settle", Duration::from_secs(60), || async {
                let task = call(app, "GET", &format!("/v1/tasks/{id}"), Some(&admin), None)
                    .await
                    .body;
                statuses.contains(&task["status"].as_str()?).then_some(task)
            })
            .await
        }
    };

    let first = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&admin),
        Some(develop.clone()),
    )
    .await;
    let failed = wait(
        first.body["id"].as_str().unwrap().to_owned(),
        &["failed", "awaiting_review"],
    )
    .await;
    assert_eq!(
        failed["status"], "failed",
        "no credential, no clone: {failed}"
    );
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("credentials"),
        "the failure says why: {failed}"
    );

    let saved = call(
        &app,
        "POST",
        "/v1/credentials",
        Some(&admin),
        Some(json!({ "repo_prefix": format!("http://127.0.0.1:{}/", port.trim()), "username": "bot", "secret": "remote-password-42" })),
    )
    .await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    let second = call(&app, "POST", "/v1/tasks", Some(&admin), Some(develop)).await;
    let id = second.body["id"].as_str().unwrap().to_owned();
    let done = wait(id.clone(), &["failed", "awaiting_review"]).await;
    assert_eq!(done["status"], "awaiting_review", "{done}");
    let branch = format!("refs/heads/orion/{id}");
    assert!(
        git_rev(&root.path().join("private.git"), &branch).is_some(),
        "the branch was pushed to the private remote"
    );

    // A remote that redirects to the private one (same host, another port, which git
    // follows): only the redirecting remote has a credential now. A client that answered the
    // private server's challenge with the credential of the URL it was given would clone;
    // Orion answers for the URL it is talking to, for which nothing is stored.
    let removed = call(
        &app,
        "DELETE",
        &format!("/v1/credentials/{}", saved.body["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert!(removed.status < 300, "{}", removed.body);
    let saved = call(
        &app,
        "POST",
        "/v1/credentials",
        Some(&admin),
        Some(json!({ "repo_prefix": format!("http://127.0.0.1:{redirect_port}/"), "username": "bot", "secret": "remote-password-42" })),
    )
    .await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    let redirected = json!({
        "kind": "develop",
        "repo": format!("http://127.0.0.1:{redirect_port}/private.git"),
        "prompt": "septuple the helper",
    });
    let third = call(&app, "POST", "/v1/tasks", Some(&admin), Some(redirected)).await;
    let failed = wait(
        third.body["id"].as_str().unwrap().to_owned(),
        &["failed", "awaiting_review"],
    )
    .await;
    assert_eq!(
        failed["status"], "failed",
        "no credential crosses a redirect: {failed}"
    );
    assert_eq!(failed["error"]["code"], "repo_unreachable", "{failed}");
}

/// A web server that answers every request with a redirect to the same path on the port it
/// is given; prints its own port.
const REDIRECTOR: &str = r#"
import http.server, sys
target = sys.argv[1]
class Redirect(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def answer(self):
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:%s%s" % (target, self.path))
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = answer
    do_POST = answer
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Draining is an operator's order: a submitter may not give it; an operator's reaches the
/// node over the bus, and the node then reports itself draining.
#[actix_rt::test]
async fn an_operator_drains_a_node_and_a_submitter_may_not() {
    let app = secured_app().await;
    let viewer = bearer(&token("viewer"));
    let node = eventually(
        "the node's first heartbeat",
        Duration::from_secs(10),
        || async {
            let agents = call(&app, "GET", "/v1/agents", Some(&viewer), None)
                .await
                .body;
            agents["nodes"][0]["node"].as_str().map(str::to_owned)
        },
    )
    .await;
    let path = format!("/v1/agents/{node}/drain");
    let refused = call(
        &app,
        "POST",
        &path,
        Some(&bearer(&token("submitter"))),
        None,
    )
    .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
    let operator = bearer(&token("operator"));
    let unknown = call(
        &app,
        "POST",
        "/v1/agents/no-such-node/drain",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!((unknown.status, unknown.code()), (404, "node_not_found"));
    let ordered = call(&app, "POST", &path, Some(&operator), None).await;
    assert_eq!(ordered.status, 202, "{}", ordered.body);
    eventually(
        "the node to report draining",
        Duration::from_secs(10),
        || async {
            let agents = call(&app, "GET", "/v1/agents", Some(&viewer), None)
                .await
                .body;
            (agents["nodes"][0]["state"] == "draining").then_some(())
        },
    )
    .await;
    let agents = call(&app, "GET", "/v1/agents", Some(&viewer), None)
        .await
        .body;
    assert_eq!(
        agents["agents"]["developer"]["healthy_nodes"], 0,
        "{agents}"
    );
    let audit = call(
        &app,
        "GET",
        "/v1/audit",
        Some(&bearer(&token("admin"))),
        None,
    )
    .await
    .body;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.drain"
                && e["actor"] == "test-operator"
                && e["target"] == node.as_str()),
        "{audit}"
    );
}

/// A NATS server that speaks only TLS: Orion connects when it trusts the server's CA, and
/// is refused (with a clear error) when it does not.
#[actix_rt::test]
async fn the_bus_connects_over_tls_to_a_server_whose_ca_it_is_given() {
    use orion_bus::NatsSecurity;
    let dir = crate::support::TempDir::new();
    let d = dir.path();
    crate::support::test_authority(d);
    let tls = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
        d.join("server.pem").display(),
        d.join("server.key").display()
    );
    let (_server, port) = private_nats(d, &tls).await;
    let url = format!("tls://127.0.0.1:{port}");
    let connect = |security: NatsSecurity| connect_bus(url.clone(), security);
    let untrusted = connect(NatsSecurity {
        require_tls: true,
        ..NatsSecurity::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(untrusted.contains("connecting to NATS"), "{untrusted}");
    connect(NatsSecurity {
        tls_ca_file: Some(d.join("ca.pem")),
        require_tls: true,
        ..NatsSecurity::default()
    })
    .await
    .expect("trusting the CA, the bus connects over TLS");
}

/// A submission is checked for where it points (`security.repo_roots`, `repo_hosts`, never
/// the data directory), its idempotency key is its caller's own, and only an operator may
/// ask for more than the default budget. A refused submission stores nothing; a task that
/// reaches the bus without a gateway is refused by the node.
#[actix_rt::test]
async fn submissions_are_checked_for_where_they_point_whose_key_and_what_budget() {
    use crate::support::TempDir;
    let allowed = TempDir::new();
    let repo = allowed.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("a.py"), "def f():\n    return 1\n").unwrap();
    let outside = fixture_repo();
    let roots = vec![allowed.path().to_owned()];
    let app = TestApp::spawn_with(move |s| {
        with_jwt_auth(s);
        s.security.repo_roots = Some(roots);
        s.security.repo_hosts = Some(vec!["git.corp".into()]);
        s.llm.task_budget_usd = Some(1.0);
    })
    .await;
    let admin = bearer(&token("admin"));
    let submitter = bearer(&token("submitter"));
    let count = || async {
        call(&app, "GET", "/v1/tasks", Some(&admin), None)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len()
    };
    let refused = [
        outside.path().to_string_lossy().into_owned(),
        format!(
            "{}/../{}",
            allowed.path().display(),
            outside.path().display()
        ),
        format!("{}/repo/../../", allowed.path().display()),
        app.data.path().to_string_lossy().into_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://2130706433/x.git".to_owned(),
        "https://git.corp.evil.net/x.git".to_owned(),
        "https://git.corp@evil.net/x.git".to_owned(),
        "relative/repo".to_owned(),
    ];
    for repo in &refused {
        let answer = call(
            &app,
            "POST",
            "/v1/tasks",
            Some(&submitter),
            Some(analyze(repo)),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code(), answer.content_type.as_str()),
            (403, "repo_not_allowed", "application/problem+json"),
            "{repo}: {}",
            answer.body
        );
    }
    assert_eq!(count().await, 0, "nothing refused is stored");
    let ok = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&submitter),
        Some(analyze(&repo.to_string_lossy())),
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.body);

    // Idempotency keys are the caller's own.
    let keyed = |who: String, body: Value| {
        let app = &app;
        async move {
            let response = awc::Client::new()
                .post(app.url("/v1/tasks"))
                .insert_header(("Authorization", who))
                .insert_header(("Idempotency-Key", "k-1"))
                .send_json(&body)
                .await;
            let mut response = response.unwrap();
            let body: Value = response.json().await.unwrap();
            (response.status().as_u16(), body)
        }
    };
    let body = analyze(&repo.to_string_lossy());
    let (s1, first) = keyed(submitter.clone(), body.clone()).await;
    let mut another = claims("submitter");
    another["sub"] = json!("someone-else");
    let someone_else = bearer(&jwt_with(JWT_SECRET, &another));
    let (s2, theirs) = keyed(someone_else, body.clone()).await;
    assert_eq!((s1, s2), (202, 202), "{first} {theirs}");
    assert_ne!(
        first["id"], theirs["id"],
        "another caller's key is another task"
    );
    let (s3, again) = keyed(submitter.clone(), body.clone()).await;
    assert_eq!((s3, &again["id"]), (200, &first["id"]));
    let mut changed = body.clone();
    changed["priority"] = json!("high");
    let (s4, reused) = keyed(submitter.clone(), changed).await;
    assert_eq!(
        (s4, reused["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );

    // Budgets: a submitter up to the default, an operator beyond.
    let mut rich = analyze(&repo.to_string_lossy());
    rich["budget_usd"] = json!(2.5);
    let answer = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&submitter),
        Some(rich.clone()),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "budget_not_allowed"),
        "{}",
        answer.body
    );
    let operator = bearer(&token("operator"));
    let answer = call(&app, "POST", "/v1/tasks", Some(&operator), Some(rich)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let mut modest = analyze(&repo.to_string_lossy());
    modest["budget_usd"] = json!(0.5);
    let answer = call(&app, "POST", "/v1/tasks", Some(&submitter), Some(modest)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    // Straight onto the bus, past the gateway: the node refuses to touch it.
    let spec = orion_bus::TaskSpec::new(
        orion_bus::TaskKind::Analyze,
        outside.path().to_string_lossy(),
        None,
        None,
        orion_bus::Priority::Normal,
    )
    .unwrap();
    let forged = app.services.lifecycle.submit(spec, None).await.unwrap();
    let id = forged.task.id.to_string();
    let failed = eventually(
        "the node to refuse the task",
        Duration::from_secs(30),
        || async {
            let task = call(&app, "GET", &format!("/v1/tasks/{id}"), Some(&admin), None).await;
            (task.body["status"] == "failed").then_some(task.body)
        },
    )
    .await;
    assert_eq!(failed["error"]["code"], "repo_not_allowed", "{failed}");
}

/// A cluster allows no repository until told where they may be; embedded mode allows any
/// local path, never one inside its data directory.
#[test]
fn a_cluster_points_nowhere_until_configured() {
    let repo = fixture_repo();
    let path = repo.path().to_string_lossy().into_owned();
    let mut cluster = crate::support::test_settings();
    cluster.bus.url = Some("nats://127.0.0.1:4222".into());
    let policy = cluster.repo_policy();
    assert!(policy.check(&path).is_err(), "no root configured");
    assert!(policy.check("https://github.com/acme/widgets.git").is_err());
    cluster.security.repo_roots = Some(vec![repo.path().parent().unwrap().to_owned()]);
    cluster.security.repo_hosts = Some(vec!["github.com".into()]);
    let policy = cluster.repo_policy();
    assert_eq!(policy.check(&path), Ok(()));
    assert_eq!(policy.check("https://github.com/acme/widgets.git"), Ok(()));
    let mut embedded = crate::support::test_settings();
    embedded.data_dir = repo.path().join(".orion");
    std::fs::create_dir_all(&embedded.data_dir).unwrap();
    let policy = embedded.repo_policy();
    assert_eq!(policy.check(&path), Ok(()));
    assert!(policy.check(&embedded.data_dir.to_string_lossy()).is_err());
}
