//! GitLab's REST API v4: merge requests, notes, discussions on lines, approvals and commit
//! statuses (`docs.gitlab.com/api`). A project is named by its URL-encoded path.

use serde_json::json;

use super::{
    CommitStatus, Forge, ForgeError, ForgePost, ForgePull, ForgeReviewEvent, Http, STATUS_CONTEXT,
    StatusState, Thread, read_pull,
};

#[derive(Debug)]
pub(super) struct GitLab(pub(super) Http);

/// `projects/<group%2Fproject>`.
fn project(repo: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(repo.as_bytes()).collect();
    format!("projects/{id}")
}

/// The notes of an issue's or a merge request's thread.
fn notes(repo: &str, on: Thread) -> String {
    match on {
        Thread::Issue(n) => format!("{}/issues/{n}/notes", project(repo)),
        Thread::Pull(n) => format!("{}/merge_requests/{n}/notes", project(repo)),
    }
}

#[async_trait::async_trait]
impl Forge for GitLab {
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<ForgePull>, ForgeError> {
        let branch: String = url::form_urlencoded::byte_serialize(head.as_bytes()).collect();
        let listed = self
            .0
            .get(&format!(
                "{}/merge_requests?state=all&source_branch={branch}",
                project(repo)
            ))
            .await?;
        super::github::first_pull(&listed)
    }

    async fn open_pull(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<ForgePull, ForgeError> {
        let answer = self
            .0
            .post(
                &format!("{}/merge_requests", project(repo)),
                json!({ "title": title, "description": body, "source_branch": head, "target_branch": base }),
            )
            .await?;
        read_pull(&answer)
    }

    async fn posted(
        &self,
        repo: &str,
        number: u64,
        _: ForgePost,
        mark: &str,
    ) -> Result<bool, ForgeError> {
        // Reviews are notes, and so are the notes of line discussions.
        self.commented(repo, Thread::Pull(number), mark).await
    }

    async fn review(
        &self,
        repo: &str,
        number: u64,
        event: ForgeReviewEvent,
        body: &str,
    ) -> Result<(), ForgeError> {
        // An approval is GitLab's own; the decision's words are a note beside it (GitLab's
        // API has no request for changes: that is the note alone).
        if event == ForgeReviewEvent::Approve {
            self.0
                .post(
                    &format!("{}/merge_requests/{number}/approve", project(repo)),
                    json!({}),
                )
                .await?;
        }
        self.comment(repo, Thread::Pull(number), body).await
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
        let mr = format!("{}/merge_requests/{number}", project(repo));
        let refs = self.0.get(&mr).await?["diff_refs"].clone();
        let sha = |name: &str| refs[name].as_str().map(str::to_owned);
        let position = json!({
            "position_type": "text",
            "base_sha": sha("base_sha"),
            "start_sha": sha("start_sha"),
            "head_sha": sha("head_sha").unwrap_or_else(|| commit.to_owned()),
            "old_path": path,
            "new_path": path,
            "new_line": line,
        });
        self.0
            .post(
                &format!("{mr}/discussions"),
                json!({ "body": body, "position": position }),
            )
            .await?;
        Ok(())
    }

    async fn comment(&self, repo: &str, on: Thread, body: &str) -> Result<(), ForgeError> {
        self.0
            .post(&notes(repo, on), json!({ "body": body }))
            .await?;
        Ok(())
    }

    async fn commented(&self, repo: &str, on: Thread, mark: &str) -> Result<bool, ForgeError> {
        self.0.any_contains(&notes(repo, on), "/body", mark).await
    }

    async fn status(&self, repo: &str, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let state = match status.state {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failed",
        };
        let mut body =
            json!({ "state": state, "name": STATUS_CONTEXT, "description": status.description });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        self.0
            .post(&format!("{}/statuses/{sha}", project(repo)), body)
            .await?;
        Ok(())
    }
}
