//! Forges: GitHub, GitLab and Gitea (or Forgejo) behind one [`Forge`] trait. A pull request
//! stored in Orion is mirrored to the forge of its repository, and so are the test verdict (a
//! commit status), review decisions and review comments; a task that came from the forge gets
//! its outcome posted back. Webhooks in are read by [`hooks`].
//!
//! Which forge a task's repository lives on comes from its URL and the `[forges.<name>]`
//! configuration ([`Forges::for_repo`]), so any number of repositories on any number of
//! forges work at once.
//!
//! Orion's store stays the source of truth; the forge is a mirror. A mirror that fails is
//! reported to the caller, who records it and goes on: the review gate does not depend on it.

mod gitea;
mod github;
mod gitlab;
pub mod hooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secrets::{ExposeSecret, SecretString};

/// The API a forge speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// GitHub's REST API v3 (github.com, GitHub Enterprise Server).
    Github,
    /// GitLab's REST API v4.
    Gitlab,
    /// Gitea's and Forgejo's API v1.
    Gitea,
}

/// `[forges.<name>]`: one forge, the repositories it serves, and what its webhooks may ask.
#[derive(Clone, Debug, Deserialize)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// e.g. `https://api.github.com`, `https://gitlab.example.com/api/v4`,
    /// `https://gitea.example.com/api/v1`.
    pub api_url: String,
    /// A token allowed to open pull requests, review, comment and set commit statuses.
    pub token: SecretString,
    /// The host (and port) of the repository URLs this forge serves; the entry's name when
    /// absent, so `[forges."github.com"]` needs no `host`.
    pub host: Option<String>,
    /// More remotes this forge serves, as URL prefixes (a mirror, another clone host); the
    /// rest of the URL after the prefix is the repository's path on the forge.
    #[serde(default)]
    pub remotes: Vec<String>,
    /// The webhook's secret (GitHub's and Gitea's HMAC key, GitLab's token); absent: the
    /// forge's webhooks are refused.
    pub webhook_secret: Option<SecretString>,
    /// What the forge's webhooks turn into tasks.
    #[serde(default)]
    pub hooks: HookRules,
}

/// `[forges.<name>.hooks]`: which events of the forge become tasks.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HookRules {
    /// An issue given this label becomes a `develop` task with the issue's text as prompt.
    pub label: String,
    /// A pull request opened or updated (by anyone but Orion) becomes a `review` task: off
    /// unless asked, as on a public repository anyone may open one (and its review costs).
    pub review_pulls: bool,
    /// Who may ask for a task with a comment `/orion <kind> [words]`; nobody when empty.
    pub allowed_users: Vec<String>,
}

impl Default for HookRules {
    fn default() -> Self {
        Self {
            label: "orion".into(),
            review_pulls: false,
            allowed_users: Vec::new(),
        }
    }
}

/// A pull request (a merge request on GitLab) on the forge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgePull {
    /// GitHub's and Gitea's number, GitLab's `iid`.
    pub number: u64,
    pub html_url: String,
}

/// A review decision as Orion posts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForgeReviewEvent {
    Approve,
    RequestChanges,
    Comment,
}

/// What Orion posts on a forge's pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgePost {
    Review,
    LineComment,
}

/// Where a plain comment goes: an issue's thread or a pull request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", content = "number", rename_all = "snake_case")]
pub enum Thread {
    Issue(u64),
    Pull(u64),
}

/// A commit status's state, as Orion reports its test verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
}

/// A commit status: the verdict, a line that says it, and where to read more.
#[derive(Clone, Debug)]
pub struct CommitStatus {
    pub state: StatusState,
    pub description: String,
    pub target_url: Option<String>,
}

/// The context (GitHub, Gitea) or name (GitLab) Orion's statuses carry.
pub const STATUS_CONTEXT: &str = "orion/tests";

/// The mark a post carries in its body (an HTML comment, which the forge does not show), so
/// that it can be found again: the task and the effect's key.
pub fn post_mark(task: impl std::fmt::Display, key: &str) -> String {
    format!("<!-- orion:{task}:{key} -->")
}

/// The shortest webhook secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{0}")]
    Config(String),
    #[error("the forge could not be reached: {0}")]
    Unreachable(String),
    #[error("the forge refused ({status}): {message}")]
    Refused { status: u16, message: String },
}

impl ForgeError {
    /// Whether asking again cannot help: the forge refused the request itself, as a token
    /// without the permission or a repository that is not there is refused.
    pub fn is_definitive(&self) -> bool {
        match self {
            // A rate limit (GitHub's secondary one is a 403 that says so) passes; a 409 or 422
            // may be the forge not seeing a just-pushed commit yet.
            Self::Refused { status, message } => {
                matches!(status, 400 | 401 | 403 | 404 | 405 | 410 | 413 | 415)
                    && !message.to_ascii_lowercase().contains("rate limit")
            }
            Self::Config(_) | Self::Unreachable(_) => false,
        }
    }
}

/// What a forge does for Orion. `repo` is the repository's path on the forge
/// (`owner/name`, or GitLab's `group/subgroup/project`).
#[async_trait::async_trait]
pub trait Forge: Send + Sync + std::fmt::Debug {
    /// The pull request open (or closed) for branch `head`, if the forge has one: how a claim
    /// to open it, left pending by a lost run, is settled.
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<ForgePull>, ForgeError>;

    /// Opens the pull request of `head` into `base`.
    async fn open_pull(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<ForgePull, ForgeError>;

    /// Whether a post of kind `what` on pull request `number` carries `mark`: how a claim to
    /// post one, left pending by a lost run, is settled.
    async fn posted(
        &self,
        repo: &str,
        number: u64,
        what: ForgePost,
        mark: &str,
    ) -> Result<bool, ForgeError>;

    /// Records a review decision (with its comment) on pull request `number`.
    async fn review(
        &self,
        repo: &str,
        number: u64,
        event: ForgeReviewEvent,
        body: &str,
    ) -> Result<(), ForgeError>;

    /// A comment anchored to `line` of `path` in the pull request's new version, `commit`.
    async fn line_comment(
        &self,
        repo: &str,
        number: u64,
        commit: &str,
        path: &str,
        line: u32,
        body: &str,
    ) -> Result<(), ForgeError>;

    /// A plain comment on an issue's or a pull request's thread.
    async fn comment(&self, repo: &str, on: Thread, body: &str) -> Result<(), ForgeError>;

    /// Whether a comment on the thread carries `mark`.
    async fn commented(&self, repo: &str, on: Thread, mark: &str) -> Result<bool, ForgeError>;

    /// Sets Orion's commit status ([`STATUS_CONTEXT`]) on `sha`; setting it again replaces it.
    async fn status(&self, repo: &str, sha: &str, status: &CommitStatus) -> Result<(), ForgeError>;
}

/// A task's repository on its forge.
#[derive(Clone, Debug)]
pub struct ForgeTarget {
    /// The `[forges.<name>]` entry.
    pub name: String,
    pub forge: Arc<dyn Forge>,
    /// The repository's path on the forge.
    pub repository: String,
}

/// Every configured forge, by name.
#[derive(Clone, Debug, Default)]
pub struct Forges {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    config: ForgeConfig,
    forge: Arc<dyn Forge>,
}

impl Forges {
    /// A client for each entry of `[forges]`.
    pub fn new(configs: &BTreeMap<String, ForgeConfig>) -> Result<Self, ForgeError> {
        let entries = configs
            .iter()
            .map(|(name, config)| {
                if let Some(secret) = &config.webhook_secret
                    && secret.expose_secret().len() < MIN_SECRET_BYTES
                {
                    return Err(ForgeError::Config(format!(
                        "forges.{name}.webhook_secret must be at least {MIN_SECRET_BYTES} bytes \
                         (leave it out to refuse the forge's webhooks)"
                    )));
                }
                let http = Http::new(config)?;
                let forge: Arc<dyn Forge> = match config.kind {
                    ForgeKind::Github => Arc::new(github::GitHub(http)),
                    ForgeKind::Gitlab => Arc::new(gitlab::GitLab(http)),
                    ForgeKind::Gitea => Arc::new(gitea::Gitea(http)),
                };
                Ok(Entry {
                    name: name.clone(),
                    config: config.clone(),
                    forge,
                })
            })
            .collect::<Result<_, ForgeError>>()?;
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The forge entry `name` and its configuration (for its webhooks).
    pub fn named(&self, name: &str) -> Option<(&ForgeConfig, ForgeTarget)> {
        self.entries.iter().find(|e| e.name == name).map(|e| {
            (
                &e.config,
                ForgeTarget {
                    name: e.name.clone(),
                    forge: e.forge.clone(),
                    repository: String::new(),
                },
            )
        })
    }

    /// The forge that serves repository `repo` (a URL or `git@host:path`) and the
    /// repository's path on it: the first entry one of whose `remotes` prefixes `repo`, else
    /// the first whose host is the URL's (with the same port, where the entry names one).
    pub fn for_repo(&self, repo: &str) -> Option<ForgeTarget> {
        let repo = repo.trim();
        let target = |e: &Entry, path: &str| {
            let path = path
                .trim_matches('/')
                .trim_end_matches(".git")
                .trim_matches('/');
            // The path goes into the forge's API URLs: only plain names, no `.` or `..`.
            let plain = |segment: &str| {
                !segment.is_empty()
                    && !segment.starts_with('.')
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            };
            let valid = path.split('/').count() >= 2 && path.split('/').all(plain);
            valid.then(|| ForgeTarget {
                name: e.name.clone(),
                forge: e.forge.clone(),
                repository: path.to_owned(),
            })
        };
        // A prefix ends at a path boundary: `/srv/mirrors` is not a prefix of
        // `/srv/mirrors-evil/…`.
        let under = |prefix: &str| {
            let rest = repo.strip_prefix(prefix)?;
            (prefix.ends_with('/') || rest.starts_with('/')).then_some(rest)
        };
        let by_prefix = self.entries.iter().find_map(|e| {
            e.config
                .remotes
                .iter()
                .find_map(|p| under(p))
                .and_then(|rest| target(e, rest))
        });
        by_prefix.or_else(|| {
            let (host, _) = crate::vcs::remote_host(repo)?;
            let url = url::Url::parse(&crate::vcs::as_url(repo)).ok()?;
            // The port the remote is reached on, a scheme's default spelled out or not.
            let port = url.port_or_known_default().or(match url.scheme() {
                "ssh" => Some(22),
                "git" => Some(9418),
                _ => None,
            });
            let path = url.path().to_owned();
            self.entries.iter().find_map(|e| {
                let spec = e.config.host.as_deref().unwrap_or(&e.name);
                let (want, _) = crate::vcs::remote_host(&format!("https://{spec}/"))?;
                // A port the entry spells out (`:443` included) must be the remote's.
                let want_port = spec
                    .rsplit_once(':')
                    .filter(|_| !spec.ends_with(']'))
                    .and_then(|(_, p)| p.parse::<u16>().ok());
                let port_matches = want_port.is_none() || want_port == port;
                (want == host && port_matches)
                    .then(|| target(e, &path))
                    .flatten()
            })
        })
    }
}

/// A forge's HTTP API: its base URL and how its token is sent.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    kind: ForgeKind,
    token: SecretString,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// How many items a listing asks for per page (Gitea gives at most 50 by default), and how
/// many pages it reads at most.
const PER_PAGE: usize = 50;
const MAX_PAGES: usize = 100;

impl Http {
    fn new(config: &ForgeConfig) -> Result<Self, ForgeError> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("orion")
            .build()
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        Ok(Self {
            client,
            base: config.api_url.trim_end_matches('/').to_owned(),
            kind: config.kind,
            token: config.token.clone(),
        })
    }

    /// A request to `path` (under the API's base URL) with the forge's credentials.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}/{path}", self.base));
        let token = self.token.expose_secret();
        match self.kind {
            ForgeKind::Github => request
                .bearer_auth(token)
                .header("accept", "application/vnd.github+json"),
            ForgeKind::Gitlab => request.header("PRIVATE-TOKEN", token),
            ForgeKind::Gitea => request.header("authorization", format!("token {token}")),
        }
    }

    /// Sends a request and reads the answer: the body of a success, or the refusal.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ForgeError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(ForgeError::Refused {
                status: status.as_u16(),
                message: text.chars().take(500).collect(),
            });
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| unreadable(status.as_u16(), e))
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, ForgeError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ForgeError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Whether an item of the listing at `path` (paged, `per_page` and `page` appended) has a
    /// `field` (a JSON pointer) that contains `mark`.
    async fn any_contains(&self, path: &str, field: &str, mark: &str) -> Result<bool, ForgeError> {
        let carries = |i: &serde_json::Value| {
            i.pointer(field)
                .and_then(|b| b.as_str())
                .is_some_and(|b| b.contains(mark))
        };
        Ok(self.find_listed(path, carries).await?.is_some())
    }

    /// The first item of the listing at `path` (paged, the page size and number appended as
    /// the forge names them) for which `wanted` holds.
    async fn find_listed(
        &self,
        path: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<serde_json::Value>, ForgeError> {
        let join = if path.contains('?') { '&' } else { '?' };
        let size = match self.kind {
            ForgeKind::Gitea => "limit",
            ForgeKind::Github | ForgeKind::Gitlab => "per_page",
        };
        for page in 1..=MAX_PAGES {
            let listed = self
                .get(&format!("{path}{join}{size}={PER_PAGE}&page={page}"))
                .await?;
            let items = listed.as_array().cloned().unwrap_or_default();
            if let Some(found) = items.iter().find(|i| wanted(i)) {
                return Ok(Some(found.clone()));
            }
            if items.len() < PER_PAGE {
                break;
            }
        }
        Ok(None)
    }
}

/// An answer that does not read as the forge's API documents it.
fn unreadable(status: u16, e: impl std::fmt::Display) -> ForgeError {
    ForgeError::Refused {
        status,
        message: format!("the answer does not read: {e}"),
    }
}

/// A pull request read from an answer: `number` and `html_url` (GitHub, Gitea) or `iid` and
/// `web_url` (GitLab).
fn read_pull(answer: &serde_json::Value) -> Result<ForgePull, ForgeError> {
    let number = answer["number"].as_u64().or(answer["iid"].as_u64());
    let url = answer["html_url"].as_str().or(answer["web_url"].as_str());
    match (number, url) {
        (Some(number), Some(url)) => Ok(ForgePull {
            number,
            html_url: url.to_owned(),
        }),
        _ => Err(unreadable(200, "no pull request number and address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forges(entries: &[(&str, ForgeKind, Option<&str>, &[&str])]) -> Forges {
        let configs = entries
            .iter()
            .map(|(name, kind, host, remotes)| {
                let config = ForgeConfig {
                    kind: *kind,
                    api_url: "https://api.invalid".into(),
                    token: "t".into(),
                    host: host.map(str::to_owned),
                    remotes: remotes.iter().map(|r| (*r).to_owned()).collect(),
                    webhook_secret: None,
                    hooks: HookRules::default(),
                };
                ((*name).to_owned(), config)
            })
            .collect();
        Forges::new(&configs).unwrap()
    }

    #[test]
    fn a_webhook_secret_shorter_than_sixteen_bytes_is_refused_at_start() {
        let mut config = ForgeConfig {
            kind: ForgeKind::Gitlab,
            api_url: "https://lab.invalid/api/v4".into(),
            token: "t".into(),
            host: None,
            remotes: Vec::new(),
            webhook_secret: Some("".into()),
            hooks: HookRules::default(),
        };
        for short in ["", "fifteen-bytes!!"] {
            config.webhook_secret = Some(short.into());
            let refused = Forges::new(&[("lab".to_owned(), config.clone())].into()).unwrap_err();
            assert!(
                refused.to_string().contains("forges.lab.webhook_secret"),
                "{refused}"
            );
        }
        config.webhook_secret = Some("sixteen-bytes!!!".into());
        assert!(Forges::new(&[("lab".to_owned(), config)].into()).is_ok());
    }

    #[test]
    fn a_repository_url_names_its_forge_and_its_path_on_it() {
        let forges = forges(&[
            ("github.com", ForgeKind::Github, None, &[]),
            (
                "work",
                ForgeKind::Gitlab,
                Some("git.corp:8443"),
                &["/srv/mirrors/"],
            ),
            ("gitea", ForgeKind::Gitea, Some("gitea.local"), &[]),
        ]);
        let found = |repo: &str| forges.for_repo(repo).map(|t| (t.name, t.repository));
        let want = |name: &str, path: &str| Some((name.to_owned(), path.to_owned()));
        assert_eq!(
            found("https://github.com/acme/widgets.git"),
            want("github.com", "acme/widgets")
        );
        assert_eq!(
            found("git@github.com:acme/widgets.git"),
            want("github.com", "acme/widgets")
        );
        assert_eq!(
            found("ssh://git@GitHub.com./acme/widgets"),
            want("github.com", "acme/widgets")
        );
        assert_eq!(
            found("https://git.corp:8443/group/sub/project.git"),
            want("work", "group/sub/project")
        );
        assert_eq!(
            found("/srv/mirrors/group/project.git"),
            want("work", "group/project")
        );
        assert_eq!(
            found("https://gitea.local/team/app"),
            want("gitea", "team/app")
        );
        // Another port of the same host, a look-alike host, a bare host and a local path
        // are no forge's.
        assert_eq!(found("https://git.corp:9000/group/project.git"), None);
        assert_eq!(found("https://github.com.evil.net/acme/widgets"), None);
        assert_eq!(found("https://github.com/"), None);
        assert_eq!(found("/home/me/widgets"), None);
        // A prefix ends at a path boundary; a default port spelled out is that port only.
        assert_eq!(found("/srv/mirrors-evil/acme/widgets.git"), None);
        let corp =
            super::tests::forges(&[("corp", ForgeKind::Github, Some("git.corp:443"), &["/srv/m"])]);
        let corp = |repo: &str| corp.for_repo(repo).map(|t| t.repository);
        assert_eq!(corp("https://git.corp/a/b.git"), Some("a/b".to_owned()));
        assert_eq!(corp("https://git.corp:443/a/b.git"), Some("a/b".to_owned()));
        assert_eq!(corp("https://git.corp:8443/a/b.git"), None);
        assert_eq!(corp("/srv/mx/a/b.git"), None);
        assert_eq!(corp("/srv/m/a/b.git"), Some("a/b".to_owned()));
        // A path that would climb out of the repository's API, or is no owner/name: none.
        assert_eq!(found("/srv/mirrors/../../user/keys"), None);
        assert_eq!(found("/srv/mirrors/acme/%2e%2e"), None);
        assert_eq!(found("/srv/mirrors/widgets.git"), None);
        assert_eq!(found("https://github.com/acme/wid%2F..%2F..%2Fusers"), None);
    }
}
