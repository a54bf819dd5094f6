//! Version control over git2 (vendored libgit2): what history says about a repository.
//!
//! git2 calls are blocking; callers run them on blocking threads.

mod credentials;
mod history;
mod path;
mod policy;
mod transport;
mod workspace;

pub use credentials::{CredentialCache, as_url, credential_applies, set_credential_source};
pub use history::{CommitFiles, History};
pub use path::{PathError, RelativePath};
pub use policy::{RepoPolicy, RepoRefused, is_remote, remote_host};
pub use transport::{TransportConfig, set_transport};
pub use workspace::{
    DiffStats, MergeOutcome, Workspace, adopt, candidate_prefix, candidate_ref, checkout,
    checkout_commit, commit_all, delete_remote_ref, delete_remote_refs_under, diff_stats, merge,
    messages_since, push_branch, push_head_to, remote_ref, remove_checkout, tag_and_push,
    tags_on_head, task_branch,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{DiffOptions, Patch, Repository, Tree};

/// How many commits back churn is counted, newest first.
pub const CHURN_COMMITS: usize = 1000;

/// A failure of a version-control operation.
#[derive(Debug, thiserror::Error)]
pub enum VcsError {
    #[error("`{0}` is not inside a git repository")]
    NotARepository(PathBuf),
    #[error("unknown revision `{0}`")]
    UnknownRevision(String),
    #[error("could not clone or fetch the repository: {0}")]
    CloneFailed(String),
    #[error("the push was refused: {0}")]
    PushFailed(String),
    #[error("{0}")]
    Operation(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Opens the repository containing `root`, and `root`'s path inside it (`""` or `dir/`).
fn open(root: &Path) -> Result<(Repository, String), VcsError> {
    let repo = Repository::discover(root).map_err(|_| VcsError::NotARepository(root.to_owned()))?;
    // A bare repository (a remote) has no working tree: paths are from its root.
    let Some(workdir) = repo.workdir().map(Path::to_owned) else {
        return Ok((repo, String::new()));
    };
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let prefix = canonical(root)
        .strip_prefix(canonical(&workdir))
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((repo, prefix))
}

/// One file changed between two revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the analysed root.
    pub path: String,
    /// Line ranges (1-based, inclusive) added or changed in the head version.
    pub added_lines: Vec<(u32, u32)>,
    /// The content at base and at head (absent where the file did not exist).
    pub base: Option<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

fn tree_of<'r>(repo: &'r Repository, revision: &str) -> Result<Tree<'r>, VcsError> {
    let object = repo
        .revparse_single(revision)
        .map_err(|_| VcsError::UnknownRevision(revision.to_owned()))?;
    Ok(object.peel_to_tree()?)
}

fn blob_at(repo: &Repository, tree: &Tree<'_>, path: &Path) -> Option<Vec<u8>> {
    let entry = tree.get_path(path).ok()?;
    let blob = entry.to_object(repo).ok()?.peel_to_blob().ok()?;
    Some(blob.content().to_vec())
}

/// The files under `root` that changed from `base` to `head`, with their added line ranges
/// and both versions' content (read from git's objects, not the working tree).
pub fn changes(root: &Path, base: &str, head: &str) -> Result<Vec<FileChange>, VcsError> {
    let (repo, prefix) = open(root)?;
    let base_tree = tree_of(&repo, base)?;
    let head_tree = tree_of(&repo, head)?;
    let mut options = DiffOptions::new();
    options.context_lines(0);
    let diff = repo.diff_tree_to_tree(Some(&base_tree), Some(&head_tree), Some(&mut options))?;
    let mut changes = Vec::new();
    for index in 0..diff.deltas().len() {
        let Some(delta) = diff.get_delta(index) else {
            continue;
        };
        let Some(full) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
            continue;
        };
        let full_text = full.to_string_lossy().into_owned();
        let Some(relative) = full_text.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let mut added_lines = Vec::new();
        if let Some(patch) = Patch::from_diff(&diff, index)? {
            for h in 0..patch.num_hunks() {
                let (hunk, _) = patch.hunk(h)?;
                if hunk.new_lines() > 0 {
                    added_lines.push((hunk.new_start(), hunk.new_start() + hunk.new_lines() - 1));
                }
            }
        }
        changes.push(FileChange {
            path: relative.to_owned(),
            added_lines,
            base: delta
                .old_file()
                .path()
                .and_then(|p| blob_at(&repo, &base_tree, p)),
            head: delta
                .new_file()
                .path()
                .and_then(|p| blob_at(&repo, &head_tree, p)),
        });
    }
    Ok(changes)
}

/// The commit a revision names, as a full id.
pub fn resolve(root: &Path, revision: &str) -> Result<String, VcsError> {
    let (repo, _) = open(root)?;
    let object = repo
        .revparse_single(revision)
        .map_err(|_| VcsError::UnknownRevision(revision.to_owned()))?;
    let commit = object
        .peel_to_commit()
        .map_err(|_| VcsError::UnknownRevision(revision.to_owned()))?;
    Ok(commit.id().to_string())
}

/// Commits per file over the last `max_commits` non-merge commits reachable from HEAD, with
/// paths relative to `root` (which may be a folder inside the repository). Files outside
/// `root` are left out.
pub fn churn(root: &Path, max_commits: usize) -> Result<HashMap<String, u32>, VcsError> {
    let mut counts = HashMap::new();
    for commit in History::open(root)?.commits(max_commits)? {
        for file in commit.files {
            *counts.entry(file).or_insert(0) += 1;
        }
    }
    Ok(counts)
}
