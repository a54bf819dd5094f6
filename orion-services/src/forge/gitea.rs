//! Gitea's and Forgejo's API v1: pull requests, reviews (whose comments are the line
//! comments), issue comments and commit statuses (`/api/swagger` of any Gitea).

use serde_json::json;

use super::{
    CommitStatus, Forge, ForgeError, ForgePost, ForgePull, ForgeReviewEvent, Http, Thread,
    read_pull,
};

#[derive(Debug)]
pub(super) struct Gitea(pub(super) Http);

/// A review event as Gitea names it.
fn event_name(event: ForgeReviewEvent) -> &'static str {
    match event {
        ForgeReviewEvent::Approve => "APPROVED",
        ForgeReviewEvent::RequestChanges => "REQUEST_CHANGES",
        ForgeReviewEvent::Comment => "COMMENT",
    }
}

#[async_trait::async_trait]
impl Forge for Gitea {
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<ForgePull>, ForgeError> {
        // Gitea's listing has no `head` filter: its pages are read for the branch.
        self.0
            .find_listed(&format!("repos/{repo}/pulls?state=all"), |p| {
                p["head"]["ref"] == head
            })
            .await?
            .map(|found| read_pull(&found))
            .transpose()
    }

    async fn open_pull(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<ForgePull, ForgeError> {
        super::github::open_pull(&self.0, repo, [title, body, head, base]).await
    }

    async fn posted(
        &self,
        repo: &str,
        number: u64,
        _: ForgePost,
        mark: &str,
    ) -> Result<bool, ForgeError> {
        // Line comments are posted as reviews too, their mark in the review's body.
        self.0
            .any_contains(
                &format!("repos/{repo}/pulls/{number}/reviews"),
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
                json!({ "event": event_name(event), "body": body }),
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
        let review = json!({
            "event": "COMMENT",
            "body": body,
            "commit_id": commit,
            "comments": [{ "path": path, "body": body, "new_position": line }],
        });
        self.0
            .post(&format!("repos/{repo}/pulls/{number}/reviews"), review)
            .await?;
        Ok(())
    }

    async fn comment(&self, repo: &str, on: Thread, body: &str) -> Result<(), ForgeError> {
        // A pull request's thread is its issue's.
        super::github::comment(&self.0, repo, on, body).await
    }

    async fn commented(&self, repo: &str, on: Thread, mark: &str) -> Result<bool, ForgeError> {
        super::github::commented(&self.0, repo, on, mark).await
    }

    async fn status(&self, repo: &str, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        super::github::status(&self.0, repo, sha, status).await
    }
}
