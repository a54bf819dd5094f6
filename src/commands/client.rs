//! Commands that talk to a running gateway: `submit` and `watch`.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;

use crate::cli::{PullsArgs, ReviewArgs, ReviewDecision, SubmitArgs, UsageArgs, WatchArgs};
use orion_services::secrets::ExposeSecret;

use crate::settings::Settings;

/// The gateway to talk to: `--server`, else `client.url`.
fn gateway(server: Option<&str>, settings: &Settings) -> String {
    server.unwrap_or(&settings.client.url).to_owned()
}

/// An HTTP client that sends `client.token` as the bearer token, where one is set.
fn http(settings: &Settings) -> awc::Client {
    let mut builder = awc::Client::builder();
    if let Some(token) = &settings.client.token {
        builder = builder.bearer_auth(token.expose_secret());
    }
    builder.finish()
}

pub async fn submit(args: SubmitArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let server = gateway(args.server.as_deref(), &settings);
    let t = args.task;
    let mut body = serde_json::json!({ "kind": t.kind, "repo": t.repo, "priority": t.priority });
    if let Some(prompt) = t.prompt {
        body["prompt"] = prompt.into();
    }
    if let Some(git_ref) = t.git_ref {
        body["ref"] = git_ref.into();
    }
    if let Some(diff) = t.diff {
        body["diff"] = diff.into();
    }
    let mut request = http(&settings).post(format!("{}/v1/tasks", server.trim_end_matches('/')));
    if let Some(key) = &args.idempotency_key {
        request = request.insert_header(("Idempotency-Key", key.as_str()));
    }
    let mut response = request
        .send_json(&body)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("while submitting to {server}"))?;
    let body = response.body().await.context("while reading the answer")?;
    print_answer(response.status(), &body)
}

pub async fn watch(args: WatchArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let server = gateway(args.server.as_deref(), &settings);
    let mut url = format!(
        "{}/v1/stream",
        server.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let mut query = Vec::new();
    if let Some(task) = &args.task {
        query.push(format!("task={task}"));
    }
    if let Some(since) = args.since {
        query.push(format!("since={since}"));
    }
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let (_, mut frames) = http(&settings)
        .ws(url.as_str())
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("while connecting to {url}"))?;
    let mut seen = 0;
    while let Some(frame) = frames.next().await {
        match frame.context("while reading the stream")? {
            awc::ws::Frame::Text(text) => {
                say!("{}", String::from_utf8_lossy(&text));
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            awc::ws::Frame::Close(reason) => {
                eprintln!("stream closed: {reason:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints an answer's body and turns its status into the exit code.
fn print_answer(status: awc::http::StatusCode, body: &[u8]) -> anyhow::Result<ExitCode> {
    say!("{}", String::from_utf8_lossy(body));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn pulls(args: PullsArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let server = gateway(args.server.as_deref(), &settings);
    let query: Vec<(&str, String)> = args.state.map(|s| ("state", s)).into_iter().collect();
    get(&settings, &server, "/v1/pulls", &query).await
}

pub async fn usage(args: UsageArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let server = gateway(args.server.as_deref(), &settings);
    let mut query = vec![("group_by", args.group_by)];
    query.extend(args.from.map(|f| ("from", f)));
    query.extend(args.to.map(|t| ("to", t)));
    get(&settings, &server, "/v1/usage", &query).await
}

/// `GET server + path ? query` and prints the answer (non-zero exit on an error status).
async fn get(
    settings: &Settings,
    server: &str,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<ExitCode> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut response = http(settings)
        .get(&url)
        .query(&query)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("while asking {server}"))?;
    let body = response.body().await.context("while reading the answer")?;
    print_answer(response.status(), &body)
}

pub async fn review(args: ReviewArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let server = gateway(args.server.as_deref(), &settings);
    let decision = match args.decision {
        ReviewDecision::Approve => "approve",
        ReviewDecision::RequestChanges => "request_changes",
    };
    let url = format!(
        "{}/v1/pulls/{}/reviews",
        server.trim_end_matches('/'),
        args.id
    );
    let mut response = http(&settings)
        .post(&url)
        .send_json(&serde_json::json!({ "decision": decision, "comment": args.comment }))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("while reviewing on {server}"))?;
    let body = response.body().await.context("while reading the answer")?;
    print_answer(response.status(), &body)
}
