//! GitHub's REST API v3: pull requests, reviews, review comments, issue comments and commit
//! statuses (`docs.github.com/rest`).

use serde_json::json;

use super::{
    CommitStatus, Forge, ForgeError, ForgePost, ForgePull, ForgeReviewEvent, Http, STATUS_CONTEXT,
    StatusState, Thread, read_pull,
};

#[derive(Debug)]
pub(super) struct GitHub(pub(super) Http);

/// The pull request list of a `head` filter, read.
pub(super) fn first_pull(listed: &serde_json::Value) -> Result<Option<ForgePull>, ForgeError> {
    listed
        .as_array()
        .and_then(|a| a.first())
        .map(read_pull)
        .transpose()
}

/// A commit status as GitHub and Gitea take it (a description of at most 140 characters).
pub(super) fn status_body(status: &CommitStatus) -> serde_json::Value {
    let state = match status.state {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
    };
    let description: String = status.description.chars().take(140).collect();
    let mut body = json!({ "state": state, "context": STATUS_CONTEXT, "description": description });
    if let Some(url) = &status.target_url {
        body["target_url"] = json!(url);
    }
    body
}

/// Opens a pull request where GitHub and Gitea take it (`repos/{repo}/pulls`).
pub(super) async fn open_pull(
    http: &Http,
    repo: &str,
    pull: [&str; 4],
) -> Result<ForgePull, ForgeError> {
    let [title, body, head, base] = pull;
    let answer = http
        .post(
            &format!("repos/{repo}/pulls"),
            json!({ "title": title, "body": body, "head": head, "base": base }),
        )
        .await?;
    read_pull(&answer)
}

/// The comments of an issue's thread, which is also its pull request's, on GitHub and Gitea.
fn comments(repo: &str, on: Thread) -> String {
    let (Thread::Issue(n) | Thread::Pull(n)) = on;
    format!("repos/{repo}/issues/{n}/comments")
}

pub(super) async fn comment(
    http: &Http,
    repo: &str,
    on: Thread,
    body: &str,
) -> Result<(), ForgeError> {
    http.post(&comments(repo, on), json!({ "body": body }))
        .await?;
    Ok(())
}

pub(super) async fn commented(
    http: &Http,
    repo: &str,
    on: Thread,
    mark: &str,
) -> Result<bool, ForgeError> {
    http.any_contains(&comments(repo, on), "/body", mark).await
}

pub(super) async fn status(
    http: &Http,
    repo: &str,
    sha: &str,
    status: &CommitStatus,
) -> Result<(), ForgeError> {
    http.post(&format!("repos/{repo}/statuses/{sha}"), status_body(status))
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Forge for GitHub {
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<ForgePull>, ForgeError> {
        let owner = repo.split('/').next().unwrap_or_default();
        let listed = self
            .0
            .get(&format!("repos/{repo}/pulls?state=all&head={owner}:{head}"))
            .await?;
        first_pull(&listed)
    }

    async fn open_pull(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<ForgePull, ForgeError> {
        self::open_pull(&self.0, repo, [title, body, head, base]).await
    }

    async fn posted(
        &self,
        repo: &str,
        number: u64,
        what: ForgePost,
        mark: &str,
    ) -> Result<bool, ForgeError> {
        let listing = match what {
            ForgePost::Review => "reviews",
            ForgePost::LineComment => "comments",
        };
        self.0
            .any_contains(
                &format!("repos/{repo}/pulls/{number}/{listing}"),
                "/body",
                mark,
            )
            .await
    }

    async fn review(
        &self,
        repo: &str,
        number: u64,
        event: ForgeReviewEvent,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.0
            .post(
                &format!("repos/{repo}/pulls/{number}/reviews"),
                json!({ "event": event, "body": body }),
            )
            .await?;
        Ok(())
    }

    async fn line_comment(
        &self,
        repo: &str,
        number: u64,
        commit: &str,
        path: &str,
        line: u32,
        body: &str,
    ) -> Result<(), ForgeError> {
        let comment = json!({ "commit_id": commit, "path": path, "line": line, "side": "RIGHT", "body": body });
        self.0
            .post(&format!("repos/{repo}/pulls/{number}/comments"), comment)
            .await?;
        Ok(())
    }

    async fn comment(&self, repo: &str, on: Thread, body: &str) -> Result<(), ForgeError> {
        // A pull request's thread is its issue's.
        self::comment(&self.0, repo, on, body).await
    }

    async fn commented(&self, repo: &str, on: Thread, mark: &str) -> Result<bool, ForgeError> {
        self::commented(&self.0, repo, on, mark).await
    }

    async fn status(&self, repo: &str, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        self::status(&self.0, repo, sha, status).await
    }
}
