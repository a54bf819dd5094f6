//! Webhooks in: a forge's delivery verified by its signature, and read into the task it asks
//! for by the forge's [`HookRules`].
//!
//! - GitHub signs the body with HMAC-SHA256 (`X-Hub-Signature-256: sha256=<hex>`), names the
//!   delivery in `X-GitHub-Delivery` and the event in `X-GitHub-Event`.
//! - Gitea and Forgejo sign the same way without the prefix (`X-Gitea-Signature`,
//!   `X-Forgejo-Signature`), with `X-Gitea-Delivery` and `X-Gitea-Event`.
//! - GitLab sends the secret itself (`X-Gitlab-Token`), with `Idempotency-Key` (the same for
//!   every retry of one delivery) or `X-Gitlab-Event-UUID`, and `X-Gitlab-Event`.
//!
//! What becomes a task: an issue given the rules' label (`develop`, the issue's text as the
//! prompt), a pull request opened or updated (`review` of its change), and a comment
//! `/orion <kind> [words]` by an allowed user (that kind, the words as the prompt). Orion's own
//! pull requests (branches `orion/…`) are not reviewed again.

use hmac::{Hmac, Mac};
use orion_bus::{OriginThread, TaskOrigin};
use serde_json::Value;
use sha2::Sha256;

use super::{ForgeConfig, ForgeKind, HookRules};
use crate::secrets::ExposeSecret;

/// The branches of Orion's own pull requests.
const ORION_BRANCHES: &str = "orion/";

/// Why a delivery is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The forge has no `webhook_secret`: nothing it sends is believed.
    #[error("this forge has no webhook secret configured, so its webhooks are refused")]
    NoSecret,
    #[error("the delivery's signature is missing or wrong")]
    BadSignature,
    #[error("the delivery has no {0} header")]
    MissingHeader(&'static str),
    #[error("the delivery's body does not read: {0}")]
    Unreadable(String),
}

/// A verified delivery: its id, and the task it asks for (or why it asks for none).
#[derive(Debug, PartialEq)]
pub struct HookDelivery {
    pub id: String,
    pub asks: Result<HookTask, String>,
}

/// The task a delivery asks for.
#[derive(Debug, PartialEq)]
pub struct HookTask {
    /// `develop`, `review` or the kind a comment names.
    pub kind: String,
    /// The repository's clone URL as the forge gives it.
    pub repo: String,
    pub prompt: Option<String>,
    /// `<base>..<head>` of a pull request to review.
    pub diff: Option<String>,
    /// The ref that holds a pull request's head (fetched to review it).
    pub git_ref: Option<String>,
    pub origin: TaskOrigin,
    /// What the event is, whatever delivery carries it: an issue's labelling (one task per
    /// issue), a pull request's head (one review per version), a comment's id. The task's
    /// idempotency key: a delivery sent again, under its id or another, makes no second task.
    pub event: String,
}

/// Verifies a delivery to forge `name` (`header` reads a request header by its lower-case
/// name) and reads what it asks for.
pub fn receive<'a>(
    name: &str,
    config: &ForgeConfig,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<HookDelivery, HookError> {
    let secret = config
        .webhook_secret
        .as_ref()
        .map(|s| s.expose_secret().as_bytes())
        .filter(|s| !s.is_empty())
        .ok_or(HookError::NoSecret)?;
    let (event, id) = match config.kind {
        ForgeKind::Github => {
            let signature = header("x-hub-signature-256")
                .and_then(|s| s.strip_prefix("sha256="))
                .ok_or(HookError::BadSignature)?;
            check_hmac(secret, body, signature)?;
            (
                header("x-github-event").ok_or(HookError::MissingHeader("X-GitHub-Event"))?,
                header("x-github-delivery").ok_or(HookError::MissingHeader("X-GitHub-Delivery"))?,
            )
        }
        ForgeKind::Gitea => {
            let signature = header("x-gitea-signature")
                .or(header("x-forgejo-signature"))
                .ok_or(HookError::BadSignature)?;
            check_hmac(secret, body, signature)?;
            (
                header("x-gitea-event")
                    .or(header("x-forgejo-event"))
                    .ok_or(HookError::MissingHeader("X-Gitea-Event"))?,
                header("x-gitea-delivery")
                    .or(header("x-forgejo-delivery"))
                    .ok_or(HookError::MissingHeader("X-Gitea-Delivery"))?,
            )
        }
        ForgeKind::Gitlab => {
            let token = header("x-gitlab-token").ok_or(HookError::BadSignature)?;
            if !same(token.as_bytes(), secret) {
                return Err(HookError::BadSignature);
            }
            (
                header("x-gitlab-event").ok_or(HookError::MissingHeader("X-Gitlab-Event"))?,
                header("idempotency-key")
                    .or(header("x-gitlab-event-uuid"))
                    .ok_or(HookError::MissingHeader("X-Gitlab-Event-UUID"))?,
            )
        }
    };
    if id.is_empty() || id.len() > 200 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HookError::MissingHeader("delivery id"));
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| HookError::Unreadable(e.to_string()))?;
    let rules = &config.hooks;
    let asks = match config.kind {
        ForgeKind::Github | ForgeKind::Gitea => github_like(config.kind, event, &payload, rules),
        ForgeKind::Gitlab => gitlab(event, &payload, rules),
    }
    .map(|mut t| {
        t.origin.forge = name.to_owned();
        t
    });
    Ok(HookDelivery {
        id: id.to_owned(),
        asks,
    })
}

/// Checks a hex HMAC-SHA256 of `body` under `secret`, in constant time.
fn check_hmac(secret: &[u8], body: &[u8], hex_signature: &str) -> Result<(), HookError> {
    let signature = hex::decode(hex_signature.trim()).map_err(|_| HookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| HookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| HookError::BadSignature)
}

/// Whether two byte strings are equal, in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// An issue's title and text as a prompt.
fn issue_prompt(title: &Value, body: &Value) -> Option<String> {
    match (text(title), text(body)) {
        (Some(t), Some(b)) => Some(format!("{t}\n\n{b}")),
        (t, b) => t.or(b),
    }
}

/// A comment `/orion <kind> [words]`: the kind and the words.
fn command(body: &str) -> Option<(String, Option<String>)> {
    let rest = body.trim().strip_prefix("/orion")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut parts = rest.trim().splitn(2, char::is_whitespace);
    let kind = parts.next().filter(|k| !k.is_empty())?.to_owned();
    let words = parts.next().map(str::trim).filter(|w| !w.is_empty());
    Some((kind, words.map(str::to_owned)))
}

/// A comment's task, where its author is allowed and it is a command.
fn commented(
    rules: &HookRules,
    author: &str,
    body: &str,
    comment_id: Option<u64>,
    repo: String,
    origin: TaskOrigin,
) -> Result<HookTask, String> {
    let (kind, words) = command(body).ok_or("the comment is not an `/orion` command")?;
    if !rules.allowed_users.iter().any(|u| u == author) {
        return Err(format!(
            "`{author}` is not among the users allowed to ask for tasks"
        ));
    }
    if kind == "review" {
        return Err("a review is asked by opening or updating a pull request".into());
    }
    let id = comment_id.ok_or("the comment has no id")?;
    Ok(HookTask {
        kind,
        repo,
        prompt: words,
        diff: None,
        git_ref: None,
        event: format!("comment:{}:{id}", origin.repository),
        origin,
    })
}

/// An issue's labelling, as one event however often the label comes and goes: one
/// `develop` task per issue (another is asked with a comment).
fn labelled_event(origin: &TaskOrigin) -> String {
    format!("labelled:{}#{}", origin.repository, origin.number)
}

fn origin(
    repository: Option<String>,
    thread: OriginThread,
    number: Option<u64>,
) -> Result<TaskOrigin, String> {
    Ok(TaskOrigin {
        forge: String::new(),
        repository: repository.ok_or("the payload names no repository")?,
        thread,
        number: number.ok_or("the payload names no issue or pull request number")?,
    })
}

/// GitHub's payloads, which Gitea's follow (with its own action names).
fn github_like(
    kind: ForgeKind,
    event: &str,
    p: &Value,
    rules: &HookRules,
) -> Result<HookTask, String> {
    let repository = text(&p["repository"]["full_name"]);
    let repo = text(&p["repository"]["clone_url"]).ok_or("the payload has no clone URL")?;
    let action = p["action"].as_str().unwrap_or_default();
    match event {
        "issues" => {
            let labelled = match kind {
                // GitHub names the label added; Gitea sends the issue's labels after the change.
                ForgeKind::Github => {
                    action == "labeled" && p["label"]["name"] == rules.label.as_str()
                }
                _ => {
                    action == "label_updated"
                        && p["issue"]["labels"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|l| l["name"] == rules.label.as_str()))
                }
            };
            if !labelled {
                return Err(format!("not an issue labelled `{}`", rules.label));
            }
            let issue = &p["issue"];
            let origin = origin(repository, OriginThread::Issue, issue["number"].as_u64())?;
            Ok(HookTask {
                kind: "develop".into(),
                repo,
                prompt: issue_prompt(&issue["title"], &issue["body"]),
                diff: None,
                git_ref: None,
                event: labelled_event(&origin),
                origin,
            })
        }
        "pull_request" => {
            let updated = matches!(
                action,
                "opened" | "reopened" | "synchronize" | "synchronized"
            );
            let pull = &p["pull_request"];
            if !rules.review_pulls || !updated {
                return Err("not a pull request opened or updated".into());
            }
            if pull["head"]["ref"]
                .as_str()
                .is_some_and(|r| r.starts_with(ORION_BRANCHES))
            {
                return Err("Orion's own pull request".into());
            }
            let number = pull["number"].as_u64();
            let (base, head) = (text(&pull["base"]["sha"]), text(&pull["head"]["sha"]));
            let (Some(base), Some(head), Some(n)) = (base, head, number) else {
                return Err("the pull request names no base and head commits".into());
            };
            let origin = origin(repository, OriginThread::Pull, Some(n))?;
            Ok(HookTask {
                kind: "review".into(),
                repo,
                prompt: issue_prompt(&pull["title"], &pull["body"]),
                event: format!("pull:{}#{n}:{head}", origin.repository),
                diff: Some(format!("{base}..{head}")),
                git_ref: Some(format!("refs/pull/{n}/head")),
                origin,
            })
        }
        "issue_comment" if action == "created" => {
            let issue = &p["issue"];
            let on_pull = !issue["pull_request"].is_null() || p["is_pull"] == true;
            let thread = if on_pull {
                OriginThread::Pull
            } else {
                OriginThread::Issue
            };
            commented(
                rules,
                p["comment"]["user"]["login"].as_str().unwrap_or_default(),
                p["comment"]["body"].as_str().unwrap_or_default(),
                p["comment"]["id"].as_u64(),
                repo,
                origin(repository, thread, issue["number"].as_u64())?,
            )
        }
        other => Err(format!("`{other}` events make no task")),
    }
}

/// GitLab's payloads.
fn gitlab(event: &str, p: &Value, rules: &HookRules) -> Result<HookTask, String> {
    let repository = text(&p["project"]["path_with_namespace"]);
    let repo = text(&p["project"]["git_http_url"]).ok_or("the payload has no clone URL")?;
    let attributes = &p["object_attributes"];
    let action = attributes["action"].as_str().unwrap_or_default();
    let has_label = |labels: &Value| {
        labels
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["title"] == rules.label.as_str()))
    };
    match event {
        "Issue Hook" => {
            let changes = &p["changes"]["labels"];
            let labelled = if changes.is_null() {
                action == "open" && has_label(&p["labels"])
            } else {
                has_label(&changes["current"]) && !has_label(&changes["previous"])
            };
            if !labelled {
                return Err(format!("not an issue labelled `{}`", rules.label));
            }
            let origin = origin(repository, OriginThread::Issue, attributes["iid"].as_u64())?;
            Ok(HookTask {
                kind: "develop".into(),
                repo,
                prompt: issue_prompt(&attributes["title"], &attributes["description"]),
                diff: None,
                git_ref: None,
                event: labelled_event(&origin),
                origin,
            })
        }
        "Merge Request Hook" => {
            let updated = matches!(action, "open" | "reopen" | "update");
            if !rules.review_pulls || !updated {
                return Err("not a merge request opened or updated".into());
            }
            if attributes["source_branch"]
                .as_str()
                .is_some_and(|r| r.starts_with(ORION_BRANCHES))
            {
                return Err("Orion's own merge request".into());
            }
            let n = attributes["iid"].as_u64();
            let head = text(&attributes["last_commit"]["id"]);
            let target = text(&attributes["target_branch"]);
            let (Some(head), Some(target), Some(n)) = (head, target, n) else {
                return Err("the merge request names no head commit and target branch".into());
            };
            let origin = origin(repository, OriginThread::Pull, Some(n))?;
            Ok(HookTask {
                kind: "review".into(),
                repo,
                prompt: issue_prompt(&attributes["title"], &attributes["description"]),
                event: format!("pull:{}#{n}:{head}", origin.repository),
                // The target branch as the clone knows it: what the change would merge into.
                diff: Some(format!("origin/{target}..{head}")),
                git_ref: Some(format!("refs/merge-requests/{n}/head")),
                origin,
            })
        }
        "Note Hook" => {
            let (thread, number) = match attributes["noteable_type"].as_str() {
                Some("Issue") => (OriginThread::Issue, p["issue"]["iid"].as_u64()),
                Some("MergeRequest") => (OriginThread::Pull, p["merge_request"]["iid"].as_u64()),
                _ => return Err("a note on neither an issue nor a merge request".into()),
            };
            commented(
                rules,
                p["user"]["username"].as_str().unwrap_or_default(),
                attributes["note"].as_str().unwrap_or_default(),
                attributes["id"].as_u64(),
                repo,
                origin(repository, thread, number)?,
            )
        }
        other => Err(format!("`{other}` events make no task")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_the_word_orion_then_a_kind_and_words() {
        assert_eq!(
            command("/orion develop  add a flag \n"),
            Some(("develop".into(), Some("add a flag".into())))
        );
        assert_eq!(command("/orion analyze"), Some(("analyze".into(), None)));
        assert_eq!(command("/orionx develop"), None);
        assert_eq!(command("/orion"), None);
        assert_eq!(command("please /orion develop"), None);
    }

    fn gitlab_config() -> ForgeConfig {
        ForgeConfig {
            kind: ForgeKind::Gitlab,
            api_url: "https://gitlab.invalid/api/v4".into(),
            token: "t".into(),
            host: None,
            remotes: Vec::new(),
            webhook_secret: Some("s3cret".into()),
            hooks: HookRules {
                allowed_users: vec!["alice".into()],
                review_pulls: true,
                ..HookRules::default()
            },
        }
    }

    fn gitlab(event: &str, payload: serde_json::Value) -> Result<HookDelivery, HookError> {
        let body = payload.to_string();
        let header = |h: &str| match h {
            "x-gitlab-token" => Some("s3cret"),
            "x-gitlab-event" => Some(event),
            "x-gitlab-event-uuid" => Some("u-1"),
            _ => None,
        };
        receive("lab", &gitlab_config(), header, body.as_bytes())
    }

    fn project() -> serde_json::Value {
        serde_json::json!({ "path_with_namespace": "g/sub/p", "git_http_url": "https://lab/g/sub/p.git" })
    }

    #[test]
    fn gitlab_merge_requests_and_notes_read_as_tasks() {
        let opened = gitlab(
            "Merge Request Hook",
            serde_json::json!({
                "project": project(),
                "object_attributes": { "iid": 4, "action": "open", "title": "t", "source_branch": "feature",
                    "target_branch": "main", "last_commit": { "id": "abc123" } },
            }),
        )
        .unwrap();
        let task = opened.asks.unwrap();
        assert_eq!(
            (
                task.kind.as_str(),
                task.diff.as_deref(),
                task.git_ref.as_deref()
            ),
            (
                "review",
                Some("origin/main..abc123"),
                Some("refs/merge-requests/4/head")
            )
        );
        assert_eq!(task.origin.forge, "lab");
        assert_eq!(task.origin.repository, "g/sub/p");
        assert_eq!(task.event, "pull:g/sub/p#4:abc123");
        // Off by default: on a public repository anyone opens pull requests.
        let mut config = gitlab_config();
        config.hooks = HookRules::default();
        let body = serde_json::json!({
            "project": project(),
            "object_attributes": { "iid": 4, "action": "open", "source_branch": "feature",
                "target_branch": "main", "last_commit": { "id": "abc123" } },
        })
        .to_string();
        let header = |h: &str| match h {
            "x-gitlab-token" => Some("s3cret"),
            "x-gitlab-event" => Some("Merge Request Hook"),
            "x-gitlab-event-uuid" => Some("u-2"),
            _ => None,
        };
        assert!(
            receive("lab", &config, header, body.as_bytes())
                .unwrap()
                .asks
                .is_err()
        );
        // Closed, or Orion's own branch: no task.
        for (action, branch) in [("close", "feature"), ("update", "orion/x")] {
            let d = gitlab(
                "Merge Request Hook",
                serde_json::json!({
                    "project": project(),
                    "object_attributes": { "iid": 4, "action": action, "source_branch": branch,
                        "target_branch": "main", "last_commit": { "id": "abc123" } },
                }),
            )
            .unwrap();
            assert!(d.asks.is_err(), "{action} {branch}");
        }
        let note = |user: &str, text: &str| {
            gitlab(
                "Note Hook",
                serde_json::json!({
                    "project": project(), "user": { "username": user },
                    "object_attributes": { "id": 77, "note": text, "noteable_type": "Issue" },
                    "issue": { "iid": 9 },
                }),
            )
            .unwrap()
            .asks
        };
        let asked = note("alice", "/orion design the storage layer").unwrap();
        assert_eq!(
            (
                asked.kind.as_str(),
                asked.prompt.as_deref(),
                asked.origin.number
            ),
            ("design", Some("the storage layer"), 9)
        );
        assert!(note("mallory", "/orion design x").is_err());
        assert!(
            note("alice", "/orion review").is_err(),
            "a review needs a pull request"
        );
        assert!(note("alice", "thanks!").is_err());
        // Labels kept, not added: no task.
        let kept = gitlab(
            "Issue Hook",
            serde_json::json!({
                "project": project(),
                "object_attributes": { "iid": 9, "action": "update", "title": "t" },
                "labels": [{ "title": "orion" }],
                "changes": { "labels": { "previous": [{ "title": "orion" }], "current": [{ "title": "orion" }] } },
            }),
        )
        .unwrap();
        assert!(kept.asks.is_err());
    }

    #[test]
    fn a_wrong_token_an_absent_secret_and_a_missing_delivery_id_are_refused() {
        let body = b"{}";
        let mut config = gitlab_config();
        let wrong = |h: &str| match h {
            "x-gitlab-token" => Some("s3creT"),
            "x-gitlab-event" => Some("Issue Hook"),
            "x-gitlab-event-uuid" => Some("u-1"),
            _ => None,
        };
        assert_eq!(
            receive("lab", &config, wrong, body),
            Err(HookError::BadSignature)
        );
        let unnamed = |h: &str| match h {
            "x-gitlab-token" => Some("s3cret"),
            "x-gitlab-event" => Some("Issue Hook"),
            _ => None,
        };
        assert!(matches!(
            receive("lab", &config, unnamed, body),
            Err(HookError::MissingHeader(_))
        ));
        config.webhook_secret = None;
        assert_eq!(
            receive("lab", &config, |_| Some("anything"), body),
            Err(HookError::NoSecret)
        );
    }

    #[test]
    fn equal_secrets_are_the_same_and_others_are_not() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
    }
}
