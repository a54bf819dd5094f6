//! Where a task's repository is, and git work on the agents' behalf: the local path or the
//! remote a task names, git calls on blocking threads, and their failures as task failures.

use orion_bus::codes;
use std::path::PathBuf;

use orion_bus::{Task, TaskFailure};
use orion_services::code::CodeError;
use orion_services::vcs::{self, VcsError, Workspace};

/// The local path a task's `repo` names (`file://` or a plain path), or why it names none
/// the agents can reach.
pub(crate) fn repository_path(task: &Task) -> Result<PathBuf, TaskFailure> {
    let repo = task.spec.repo.trim();
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if path.contains("://") || path.starts_with("git@") {
        return Err(TaskFailure::new(
            codes::REPO_UNSUPPORTED,
            format!("`{repo}` is a remote repository; agents read local paths only so far"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// The remote a writing agent clones: a local path, or a URL (`http://` and `file://` here;
/// private ones with the credential stored for them).
pub(crate) fn remote_url(task: &Task) -> Result<String, TaskFailure> {
    let repo = task.spec.repo.trim();
    if repo.contains("://") || repo.starts_with("git@") {
        return Ok(repo.to_owned());
    }
    Ok(repository_path(task)?.to_string_lossy().into_owned())
}

/// The working tree a read-only agent measures: the repository as it is, so a `ref` (which
/// would need a checkout) is refused.
pub(crate) fn local_repository(task: &Task) -> Result<PathBuf, TaskFailure> {
    let path = repository_path(task)?;
    if task.spec.git_ref.is_some() {
        return Err(TaskFailure::new(
            codes::REF_UNSUPPORTED,
            "agents measure the working tree (or a `diff`); working on another ref is not supported yet",
        ));
    }
    Ok(path)
}

pub(crate) fn code_failure(e: CodeError) -> TaskFailure {
    match e {
        CodeError::NotFound(_) | CodeError::NotADirectory(_) => {
            TaskFailure::new(codes::REPO_NOT_FOUND, e.to_string())
        }
        CodeError::Io(_) => TaskFailure::new(codes::REPO_UNREADABLE, e.to_string()),
        CodeError::Interrupted(_) => TaskFailure::new(codes::INTERRUPTED, e.to_string()),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VcsError> + Send + 'static,
) -> Result<T, TaskFailure> {
    // Git work is a span of the step's trace, though it runs on another thread.
    let span = tracing::info_span!("git");
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))?
        .map_err(vcs_failure)
}

/// Whether a lost run's push of `head` to `refname` (a branch or a tag) landed: asked of the
/// remote only where the claim was `orphaned`; a claim of this run's own has not pushed yet.
pub(crate) async fn landed(
    ws: &Workspace,
    orphaned: bool,
    refname: String,
    head: &str,
) -> Result<bool, TaskFailure> {
    if !orphaned {
        return Ok(false);
    }
    let ws = ws.clone();
    let there = blocking(move || vcs::remote_ref(&ws, &refname)).await?;
    Ok(there.as_deref() == Some(head))
}

pub(crate) async fn head_of(ws: &Workspace) -> Result<String, TaskFailure> {
    let path = ws.path.clone();
    blocking(move || vcs::resolve(&path, "HEAD")).await
}

pub(crate) fn vcs_failure(e: VcsError) -> TaskFailure {
    match e {
        VcsError::CloneFailed(_) | VcsError::NotARepository(_) => {
            TaskFailure::new(codes::REPO_UNREACHABLE, e.to_string())
        }
        VcsError::UnknownRevision(_) => TaskFailure::new(codes::UNKNOWN_REVISION, e.to_string()),
        VcsError::PushFailed(_) => TaskFailure::new(codes::PUSH_REFUSED, e.to_string()),
        _ => TaskFailure::new(codes::VCS_ERROR, e.to_string()),
    }
}
