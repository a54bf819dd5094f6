//! Reading history without a checkout: the non-merge commits with the files each changed,
//! and the files of a commit's tree read straight from git's objects.

use std::path::Path;

use git2::{DiffOptions, ObjectType, Oid, Repository, Sort, TreeWalkMode, TreeWalkResult};

use super::{VcsError, open};

/// A non-merge commit and the files it changed (paths relative to the analysed root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitFiles {
    pub id: String,
    /// The first parent; `None` for a root commit.
    pub parent: Option<String>,
    pub message: String,
    pub files: Vec<String>,
}

/// A repository opened once, for reading many commits and blobs.
pub struct History {
    repo: Repository,
    prefix: String,
}

impl History {
    /// Opens the repository containing `root` (a working tree, a folder in one, or a bare
    /// repository).
    pub fn open(root: &Path) -> Result<Self, VcsError> {
        let (repo, prefix) = open(root)?;
        Ok(Self { repo, prefix })
    }

    /// What names the history [`History::commits`] reads: the HEAD commit, and the folder of
    /// the repository it is read under; `None` before the first commit.
    pub fn key(&self) -> Option<String> {
        let head = self.repo.head().ok()?.peel_to_commit().ok()?.id();
        Some(format!("{head}:{}", self.prefix))
    }

    /// Up to `max` non-merge commits reachable from HEAD, newest first, with the files each
    /// changed under the root.
    pub fn commits(&self, max: usize) -> Result<Vec<CommitFiles>, VcsError> {
        self.commits_from(None, max)
    }

    /// As [`History::commits`], from `rev` (a commit id or a name git resolves) where given.
    pub fn commits_from(
        &self,
        rev: Option<&str>,
        max: usize,
    ) -> Result<Vec<CommitFiles>, VcsError> {
        let mut walk = self.repo.revwalk()?;
        match rev {
            Some(rev) => {
                let commit = self.repo.revparse_single(rev)?.peel_to_commit()?;
                walk.push(commit.id())?;
            }
            None => {
                if walk.push_head().is_err() {
                    return Ok(Vec::new()); // no commits yet
                }
            }
        }
        walk.set_sorting(Sort::TIME)?;
        let mut options = DiffOptions::new();
        options.skip_binary_check(true);
        let mut commits = Vec::new();
        for oid in walk {
            if commits.len() >= max {
                break;
            }
            let commit = self.repo.find_commit(oid?)?;
            if commit.parent_count() > 1 {
                continue;
            }
            let parent = commit.parent(0).ok();
            let parent_tree = parent.as_ref().map(|p| p.tree()).transpose()?;
            let diff = self.repo.diff_tree_to_tree(
                parent_tree.as_ref(),
                Some(&commit.tree()?),
                Some(&mut options),
            )?;
            let files = diff
                .deltas()
                .filter_map(|delta| {
                    let path = delta
                        .new_file()
                        .path()
                        .or_else(|| delta.old_file().path())?;
                    let path = path.to_string_lossy();
                    path.strip_prefix(self.prefix.as_str()).map(str::to_owned)
                })
                .collect();
            commits.push(CommitFiles {
                id: commit.id().to_string(),
                parent: parent.map(|p| p.id().to_string()),
                message: commit.message().unwrap_or("").to_owned(),
                files,
            });
        }
        Ok(commits)
    }

    /// The files of `commit`'s tree under the root: (path relative to the root, blob id).
    pub fn files_at(&self, commit: &str) -> Result<Vec<(String, String)>, VcsError> {
        let oid = Oid::from_str(commit).map_err(|_| VcsError::UnknownRevision(commit.into()))?;
        let tree = self
            .repo
            .find_commit(oid)
            .map_err(|_| VcsError::UnknownRevision(commit.into()))?
            .tree()?;
        let mut files = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob)
                && entry.filemode() != i32::from(git2::FileMode::Link)
            {
                let path = format!("{dir}{}", entry.name().unwrap_or(""));
                if let Some(relative) = path.strip_prefix(self.prefix.as_str()) {
                    files.push((relative.to_owned(), entry.id().to_string()));
                }
            }
            TreeWalkResult::Ok
        })?;
        Ok(files)
    }

    /// The lines of blob `old` that a change to blob `new` touches: each hunk's first line
    /// and count on the old side (a count of 0 is an insertion after that line).
    pub fn changed_lines(&self, old: &str, new: &str) -> Result<Vec<(u32, u32)>, VcsError> {
        let blob = |id: &str| {
            let oid = Oid::from_str(id).map_err(|_| VcsError::UnknownRevision(id.into()))?;
            Ok::<_, VcsError>(self.repo.find_blob(oid)?)
        };
        let (old, new) = (blob(old)?, blob(new)?);
        let mut options = DiffOptions::new();
        options.context_lines(0);
        let mut hunks = Vec::new();
        self.repo.diff_blobs(
            Some(&old),
            None,
            Some(&new),
            None,
            Some(&mut options),
            None,
            None,
            Some(&mut |_, hunk| {
                hunks.push((hunk.old_start(), hunk.old_lines()));
                true
            }),
            None,
        )?;
        Ok(hunks)
    }

    /// A blob's bytes.
    pub fn blob(&self, id: &str) -> Result<Vec<u8>, VcsError> {
        let oid = Oid::from_str(id).map_err(|_| VcsError::UnknownRevision(id.into()))?;
        Ok(self.repo.find_blob(oid)?.content().to_vec())
    }
}
