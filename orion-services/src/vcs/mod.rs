//! Version control over git2 (vendored libgit2): what history says about a repository.
//!
//! git2 calls are blocking; callers run them on blocking threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{DiffOptions, Repository, Sort};

/// How many commits back churn is counted, newest first.
pub const CHURN_COMMITS: usize = 1000;

/// A failure of a version-control operation.
#[derive(Debug, thiserror::Error)]
pub enum VcsError {
    #[error("`{0}` is not inside a git repository")]
    NotARepository(PathBuf),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Commits per file over the last `max_commits` non-merge commits reachable from HEAD, with
/// paths relative to `root` (which may be a folder inside the repository). Files outside
/// `root` are left out.
pub fn churn(root: &Path, max_commits: usize) -> Result<HashMap<String, u32>, VcsError> {
    let repo = Repository::discover(root).map_err(|_| VcsError::NotARepository(root.to_owned()))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| VcsError::NotARepository(root.to_owned()))?;
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let prefix = canonical(root)
        .strip_prefix(canonical(workdir))
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut counts = HashMap::new();
    let mut walk = repo.revwalk()?;
    if walk.push_head().is_err() {
        return Ok(counts); // no commits yet
    }
    walk.set_sorting(Sort::TIME)?;
    let mut options = DiffOptions::new();
    options.skip_binary_check(true);
    for oid in walk.take(max_commits) {
        let commit = repo.find_commit(oid?)?;
        if commit.parent_count() > 1 {
            continue;
        }
        let parent_tree = match commit.parent(0) {
            Ok(parent) => Some(parent.tree()?),
            Err(_) => None,
        };
        let diff = repo.diff_tree_to_tree(
            parent_tree.as_ref(),
            Some(&commit.tree()?),
            Some(&mut options),
        )?;
        for delta in diff.deltas() {
            let Some(path) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
                continue;
            };
            let path = path.to_string_lossy();
            if let Some(relative) = path.strip_prefix(prefix.as_str()) {
                *counts.entry(relative.to_owned()).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}
