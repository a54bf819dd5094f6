//! The forge adapter: a pull request stored in Orion is mirrored to a GitHub-compatible REST
//! API (GitHub, Gitea, Forgejo speak it), and so are review decisions and review comments.
//!
//! Orion's store stays the source of truth; the forge is a mirror. A mirror that fails is
//! reported to the caller, who records it and goes on: the review gate does not depend on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secrets::{ExposeSecret, SecretString};

/// Where the forge is and which repository mirrors Orion's pull requests.
#[derive(Clone, Debug, Deserialize)]
pub struct ForgeConfig {
    /// e.g. `https://api.github.com`.
    pub api_url: String,
    /// A token allowed to open pull requests and review them; sent as a bearer token.
    pub token: SecretString,
    pub owner: String,
    pub repo: String,
}

/// A pull request on the forge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgePull {
    pub number: u64,
    pub html_url: String,
}

/// A review decision as the forge names it.
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

impl ForgePost {
    fn path(self) -> &'static str {
        match self {
            Self::Review => "reviews",
            Self::LineComment => "comments",
        }
    }
}

/// The mark a post carries in its body (an HTML comment, which the forge does not show), so
/// that it can be found again: the task and the effect's key.
pub fn post_mark(task: impl std::fmt::Display, key: &str) -> String {
    format!("<!-- orion:{task}:{key} -->")
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("the forge could not be reached: {0}")]
    Unreachable(String),
    #[error("the forge refused ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// The GitHub-compatible forge client.
#[derive(Clone, Debug)]
pub struct GitHubForge {
    http: reqwest::Client,
    config: ForgeConfig,
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl GitHubForge {
    pub fn new(config: ForgeConfig) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("orion")
            .build()
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        Ok(Self { http, config })
    }

    fn url(&self, rest: &str) -> String {
        format!(
            "{}/repos/{}/{}/{rest}",
            self.config.api_url.trim_end_matches('/'),
            self.config.owner,
            self.config.repo
        )
    }

    /// Reads one answer: the body of a success, or the refusal.
    async fn answer(response: reqwest::Response) -> Result<serde_json::Value, ForgeError> {
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
        serde_json::from_str(&text).map_err(|e| ForgeError::Refused {
            status: status.as_u16(),
            message: e.to_string(),
        })
    }

    async fn get(&self, rest: &str) -> Result<serde_json::Value, ForgeError> {
        let response = self
            .http
            .get(self.url(rest))
            .bearer_auth(self.config.token.expose_secret())
            .header("accept", "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        Self::answer(response).await
    }

    async fn post(
        &self,
        rest: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ForgeError> {
        let response = self
            .http
            .post(self.url(rest))
            .bearer_auth(self.config.token.expose_secret())
            .header("accept", "application/vnd.github+json")
            .json(&body)
            .send()
            .await
            .map_err(|e| ForgeError::Unreachable(e.to_string()))?;
        Self::answer(response).await
    }

    /// The pull request open (or closed) for branch `head`, if the forge has one: how a
    /// claim to open it, left pending by a lost run, is settled.
    pub async fn find_pull(&self, head: &str) -> Result<Option<ForgePull>, ForgeError> {
        let owner = &self.config.owner;
        let found = self
            .get(&format!("pulls?state=all&head={owner}:{head}"))
            .await?;
        let pulls: Vec<ForgePull> =
            serde_json::from_value(found).map_err(|e| ForgeError::Refused {
                status: 200,
                message: e.to_string(),
            })?;
        Ok(pulls.into_iter().next())
    }

    /// Whether a review (`reviews`) or a line comment (`comments`) of pull request `number`
    /// carries `mark` in its body: how a claim to post one, left pending by a lost run, is
    /// settled.
    pub async fn posted(
        &self,
        number: u64,
        what: ForgePost,
        mark: &str,
    ) -> Result<bool, ForgeError> {
        // Page by page (100 a page), up to the last page or 5,000 posts.
        for page in 1..=50 {
            let listed = self
                .get(&format!(
                    "pulls/{number}/{}?per_page=100&page={page}",
                    what.path()
                ))
                .await?;
            let items = listed.as_array().cloned().unwrap_or_default();
            if items
                .iter()
                .any(|i| i["body"].as_str().is_some_and(|b| b.contains(mark)))
            {
                return Ok(true);
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(false)
    }

    /// Opens the pull request of `head` into `base`.
    pub async fn open_pull(
        &self,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<ForgePull, ForgeError> {
        let answer = self
            .post(
                "pulls",
                serde_json::json!({ "title": title, "body": body, "head": head, "base": base }),
            )
            .await?;
        serde_json::from_value(answer).map_err(|e| ForgeError::Refused {
            status: 200,
            message: e.to_string(),
        })
    }

    /// Records a review decision (with its comment) on the forge's pull request.
    pub async fn review(
        &self,
        number: u64,
        event: ForgeReviewEvent,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.post(
            &format!("pulls/{number}/reviews"),
            serde_json::json!({ "event": event, "body": body }),
        )
        .await?;
        Ok(())
    }

    /// A comment anchored to a line of the pull request's new version.
    pub async fn line_comment(
        &self,
        number: u64,
        commit: &str,
        path: &str,
        line: u32,
        body: &str,
    ) -> Result<(), ForgeError> {
        let comment = serde_json::json!({ "commit_id": commit, "path": path, "line": line, "side": "RIGHT", "body": body });
        self.post(&format!("pulls/{number}/comments"), comment)
            .await?;
        Ok(())
    }
}
