//! The write side of version control: a clone per task, a deterministic branch, commits,
//! diffs, pushes, and the merge on approval.
//!
//! Each repository has one cached clone (bare, under `<work>/.repos/`), fetched before use;
//! each task works in a worktree of it, so tasks share objects and fetches. The repository
//! the task names is the cache's `origin`, so a local path is the remote: the branch
//! `orion/<task>` is pushed there and an approved merge lands on its base branch. Every operation is safe to repeat
//! (a redelivered step finds the clone, the branch and the commits it left).

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{BranchType, IndexAddOption, Oid, Repository, Signature};
use serde::{Deserialize, Serialize};

use super::VcsError;

/// The largest patch text kept with a pull request.
const MAX_PATCH_BYTES: usize = 512 * 1024;

/// A task's clone, on its branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub path: PathBuf,
    pub branch: String,
    pub base_branch: String,
    /// The base commit the branch started from.
    pub base_oid: String,
}

/// The size of a change and its patch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStats {
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    pub patch: String,
}

/// How an approved branch reached its base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MergeOutcome {
    FastForward {
        head: String,
    },
    /// The base already contained the approved commit: nothing was pushed.
    Contained {
        head: String,
    },
    MergeCommit {
        head: String,
    },
    /// Nothing was changed on the remote.
    Conflict {
        paths: Vec<String>,
    },
}

/// The branch of a task.
pub fn task_branch(task: impl std::fmt::Display) -> String {
    format!("orion/{task}")
}

/// Where a task's commit `head` waits for its tests on the remote: outside `refs/heads`, so
/// no branch appears before the tests pass, and deleted once they have run. Named by the
/// commit too: two runs of one step (one taken for lost, still going) push each its own
/// commit, and the one that loses the record cannot move the winner's ref away from the
/// commit under test.
pub fn candidate_ref(task: impl std::fmt::Display, head: &str) -> String {
    format!("{}{head}", candidate_prefix(task))
}

/// What the names of a task's candidate refs start with: every run's, any round's.
pub fn candidate_prefix(task: impl std::fmt::Display) -> String {
    format!("refs/orion/candidates/{task}-")
}

/// Git work on one cached clone (and on the worktrees of it) runs one operation at a time in
/// this process: libgit2 guards its files with lock files and fails, rather than waits, when
/// two writers meet. The first time a process takes a cache, it removes the lock files a
/// process killed mid-operation left (no other process works in a node's directory).
struct CacheGuard(PathBuf);

static BUSY: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());
static FREED: std::sync::Condvar = std::sync::Condvar::new();
static SWEPT: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl CacheGuard {
    fn take(cache: PathBuf) -> Self {
        let cache = cache.canonicalize().unwrap_or(cache);
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(&cache) {
            busy = FREED.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.insert(cache.clone());
        drop(busy);
        if SWEPT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache.clone())
        {
            remove_stale_locks(&cache);
        }
        Self(cache)
    }

    /// The guard of the cached clone a worktree (or a clone) at `path` belongs to.
    fn of(path: &Path) -> Self {
        Self::take(cache_of(path))
    }
}

impl Drop for CacheGuard {
    fn drop(&mut self) {
        BUSY.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
        FREED.notify_all();
    }
}

/// The repository whose objects and refs the checkout at `path` uses: for a worktree, the
/// cached clone its `.git` file points into; for anything else, the checkout's own.
fn cache_of(path: &Path) -> PathBuf {
    let dot_git = path.join(".git");
    match std::fs::read_to_string(&dot_git) {
        Ok(link) => link
            .trim()
            .strip_prefix("gitdir:")
            .map(|d| PathBuf::from(d.trim()))
            .and_then(|admin| Some(admin.parent()?.parent()?.to_owned()))
            .unwrap_or(dot_git),
        Err(_) if dot_git.is_dir() => dot_git,
        Err(_) => path.to_owned(),
    }
}

/// Removes the `*.lock` files under `dir`: what a process killed mid-operation leaves.
fn remove_stale_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_stale_locks(&path),
            Ok(_) if path.extension().is_some_and(|e| e == "lock") => {
                tracing::warn!(lock = %path.display(), "removing a lock file a lost process left");
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// Forgets worktree `name` of `cache` whose checkout at `into` is not whole (a process was
/// killed while adding it): its admin entry and what there is of its directory.
fn forget_worktree(cache: &Repository, name: &str, into: &Path) -> Result<(), VcsError> {
    if let Ok(stale) = cache.find_worktree(name) {
        stale
            .prune(Some(
                git2::WorktreePruneOptions::new()
                    .valid(true)
                    .locked(true)
                    .working_tree(false),
            ))
            .map_err(|e| git_error("pruning a stale worktree", e))?;
    }
    let admin = cache.path().join("worktrees").join(name);
    if admin.exists() {
        std::fs::remove_dir_all(&admin)
            .map_err(|e| VcsError::Operation(format!("removing {}: {e}", admin.display())))?;
    }
    if into.exists() {
        std::fs::remove_dir_all(into)
            .map_err(|e| VcsError::Operation(format!("removing {}: {e}", into.display())))?;
    }
    Ok(())
}

fn git_error(context: &str, e: git2::Error) -> VcsError {
    VcsError::Operation(format!("{context}: {}", e.message()))
}

/// Where the cached clone of `remote` lives: beside the task worktrees, named by a hash of
/// the remote, so every task on one repository shares one object database.
fn cache_dir(remote: &str, into: &Path) -> PathBuf {
    // The first 12 bytes of the digest: short, and unique enough per machine.
    let name = &crate::digest::sha256_hex(&[remote.as_bytes()])[..24];
    into.parent()
        .unwrap_or(Path::new("."))
        .join(".repos")
        .join(format!("{name}.git"))
}

/// The cached (bare) clone of `remote`, created on first use and fetched on every use.
fn cached_clone(remote: &str, into: &Path) -> Result<Repository, VcsError> {
    let dir = cache_dir(remote, into);
    let repo = match Repository::open_bare(&dir) {
        Ok(repo) => repo,
        Err(_) => {
            // Cloned beside and renamed into place, so a clone cut short by a crash is never
            // taken for the cache; one that is there and does not open is cloned again.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| VcsError::Operation(format!("removing {}: {e}", dir.display())))?;
            }
            let partial = dir.with_extension(format!("partial-{}", std::process::id()));
            if partial.exists() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            let options = super::credentials::fetch_options();
            git2::build::RepoBuilder::new()
                .bare(true)
                .fetch_options(options)
                .clone(remote, &partial)
                .map_err(|e| {
                    VcsError::CloneFailed(format!("{remote}: {}", transfer_failure(&e)))
                })?;
            std::fs::rename(&partial, &dir)
                .map_err(|e| VcsError::Operation(format!("placing the cached clone: {e}")))?;
            Repository::open_bare(&dir).map_err(|e| git_error("opening the cached clone", e))?
        }
    };
    fetch(&repo)?;
    Ok(repo)
}

/// Opens the task's worktree on `branch` (a redelivery finds the one it left), adding it to
/// the repository's cached clone: the remote's branch where it exists (a revision round),
/// else a new branch from `base` (the remote's default branch when absent).
pub fn checkout(
    remote: &str,
    into: &Path,
    branch: &str,
    base: Option<&str>,
) -> Result<Workspace, VcsError> {
    let _one_at_a_time = CacheGuard::take(cache_dir(remote, into));
    let cache = cached_clone(remote, into)?;
    let base_branch = match base {
        Some(b) => b.to_owned(),
        None => default_branch(&cache)?,
    };
    let base_commit = cache
        .find_branch(&format!("origin/{base_branch}"), BranchType::Remote)
        .map_err(|_| VcsError::UnknownRevision(base_branch.clone()))?
        .get()
        .peel_to_commit()
        .map_err(|e| git_error("reading the base", e))?;
    let start = match cache.find_branch(&format!("origin/{branch}"), BranchType::Remote) {
        Ok(remote_branch) => remote_branch
            .get()
            .peel_to_commit()
            .map_err(|e| git_error("reading the branch", e))?,
        Err(_) => base_commit.clone(),
    };
    let name = into
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| branch.replace('/', "-"));
    let repo = open_or_add_worktree(&cache, &name, into, || {
        match cache.find_branch(branch, BranchType::Local) {
            Ok(b) => Ok(b),
            Err(_) => cache
                .branch(branch, &start, false)
                .map_err(|e| git_error("creating the branch", e)),
        }
    })?;
    repo.set_head(&format!("refs/heads/{branch}"))
        .map_err(|e| git_error("switching to the branch", e))?;
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| git_error("checking out the branch", e))?;
    let base_oid = cache
        .merge_base(base_commit.id(), start.id())
        .unwrap_or(base_commit.id())
        .to_string();
    Ok(Workspace {
        path: into.to_owned(),
        branch: branch.to_owned(),
        base_branch,
        base_oid,
    })
}

/// Opens the worktree at `into`. One that does not open (gone, or half made: a process
/// killed while adding it can leave the `.git` file before the clone's entry is whole) is
/// forgotten and added again as `name`, on the branch `branch` gives.
fn open_or_add_worktree<'r>(
    cache: &'r Repository,
    name: &str,
    into: &Path,
    branch: impl FnOnce() -> Result<git2::Branch<'r>, VcsError>,
) -> Result<Repository, VcsError> {
    match Repository::open(into) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            forget_worktree(cache, name, into)?;
            add_worktree(cache, name, into, &branch()?)
        }
    }
}

/// Adds worktree `name` at `into` to the cached clone, on `branch`, and opens it.
fn add_worktree(
    cache: &Repository,
    name: &str,
    into: &Path,
    branch: &git2::Branch<'_>,
) -> Result<Repository, VcsError> {
    let mut options = git2::WorktreeAddOptions::new();
    options.reference(Some(branch.get()));
    let worktree = cache
        .worktree(name, into, Some(&options))
        .map_err(|e| git_error("adding a worktree", e))?;
    Repository::open_from_worktree(&worktree).map_err(|e| git_error("opening the worktree", e))
}

fn fetch(repo: &Repository) -> Result<(), VcsError> {
    fetch_spec(
        repo,
        "+refs/heads/*:refs/remotes/origin/*",
        "fetching",
        false,
    )
}

/// Fetches `spec` from origin, tried again as [`transfer`] does; `mirror` fetches a namespace
/// as the remote has it now (pruned, no tags followed). A failure says `what` was fetched, and
/// why ([`transfer_failure`]).
fn fetch_spec(repo: &Repository, spec: &str, what: &str, mirror: bool) -> Result<(), VcsError> {
    let mut origin = repo
        .find_remote("origin")
        .map_err(|e| git_error("finding origin", e))?;
    transfer(|| {
        let mut options = super::credentials::fetch_options();
        if mirror {
            options.prune(git2::FetchPrune::On);
            options.download_tags(git2::AutotagOption::None);
        }
        origin.fetch(&[spec], Some(&mut options), None)
    })
    .map_err(|e| VcsError::CloneFailed(format!("{what}: {}", transfer_failure(&e))))
}

/// What a failed transfer says, with what to do where the remote's certificate was not
/// trusted.
fn transfer_failure(e: &git2::Error) -> String {
    let message = e.message();
    if let Some(why) = super::transport::refusal() {
        return format!("{message}: {why}");
    }
    let certificate = e.code() == git2::ErrorCode::Certificate
        || (e.class() == git2::ErrorClass::Ssl && message.contains("certificate"));
    if certificate {
        format!(
            "{message} (the server's certificate is not signed by an authority Orion trusts: \
             the system's, or vcs.ca_file's)"
        )
    } else {
        message.to_owned()
    }
}

/// Runs a transfer again when it met the remote in the middle of another writer's update (a
/// ref gone while it was listed, a lock held): a remote on a local path is read file by file,
/// so another node's push can show half done. At most four tries, from 50 ms apart, doubling.
fn transfer(mut attempt: impl FnMut() -> Result<(), git2::Error>) -> Result<(), git2::Error> {
    let mut pause = std::time::Duration::from_millis(50);
    for _ in 0..3 {
        match attempt() {
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::NotFound | git2::ErrorCode::Locked
                ) || e.class() == git2::ErrorClass::Reference =>
            {
                std::thread::sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    attempt()
}

/// Fetches one ref of origin's under the same name.
fn fetch_ref(repo: &Repository, refname: &str) -> Result<(), VcsError> {
    let spec = format!("+{refname}:{refname}");
    fetch_spec(repo, &spec, &format!("fetching {refname}"), false)
}

fn default_branch(repo: &Repository) -> Result<String, VcsError> {
    if let Ok(reference) = repo.find_reference("refs/remotes/origin/HEAD")
        && let Ok(Some(target)) = reference.symbolic_target()
    {
        return Ok(target.trim_start_matches("refs/remotes/origin/").to_owned());
    }
    for candidate in ["main", "master"] {
        if repo
            .find_branch(&format!("origin/{candidate}"), BranchType::Remote)
            .is_ok()
        {
            return Ok(candidate.to_owned());
        }
    }
    let head = repo.head().map_err(|e| git_error("reading HEAD", e))?;
    Ok(head.shorthand().unwrap_or("main").to_owned())
}

/// Commits everything in the working tree; `None` when nothing changed.
pub fn commit_all(
    workspace: &Workspace,
    message: &str,
    author: (&str, &str),
) -> Result<Option<String>, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let mut index = repo
        .index()
        .map_err(|e| git_error("reading the index", e))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(|e| git_error("staging", e))?;
    index
        .update_all(["*"], None)
        .map_err(|e| git_error("staging deletions", e))?;
    index
        .write()
        .map_err(|e| git_error("writing the index", e))?;
    let tree_id = index
        .write_tree()
        .map_err(|e| git_error("writing the tree", e))?;
    let parent = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading HEAD", e))?;
    if parent.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("reading the tree", e))?;
    let signature = Signature::now(author.0, author.1).map_err(|e| git_error("signing", e))?;
    let oid = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &[&parent],
        )
        .map_err(|e| git_error("committing", e))?;
    Ok(Some(oid.to_string()))
}

/// The change from the base commit to the branch head.
pub fn diff_stats(workspace: &Workspace) -> Result<DiffStats, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let base = repo
        .find_commit(
            Oid::from_str(&workspace.base_oid).map_err(|e| git_error("reading the base id", e))?,
        )
        .and_then(|c| c.tree())
        .map_err(|e| git_error("reading the base", e))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .map_err(|e| git_error("reading HEAD", e))?;
    let diff = repo
        .diff_tree_to_tree(Some(&base), Some(&head), None)
        .map_err(|e| git_error("diffing", e))?;
    let stats = diff.stats().map_err(|e| git_error("counting", e))?;
    let mut patch = String::new();
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if patch.len() < MAX_PATCH_BYTES {
            if matches!(line.origin(), '+' | '-' | ' ') {
                patch.push(line.origin());
            }
            patch.push_str(&String::from_utf8_lossy(line.content()));
        }
        true
    })
    .map_err(|e| git_error("printing the patch", e))?;
    Ok(DiffStats {
        files_changed: stats.files_changed() as u64,
        insertions: stats.insertions() as u64,
        deletions: stats.deletions() as u64,
        patch,
    })
}

fn push(repo: &Repository, refspec: &str) -> Result<(), VcsError> {
    let mut origin = repo
        .find_remote("origin")
        .map_err(|e| git_error("finding origin", e))?;
    let url = origin.url().unwrap_or_default().to_owned();
    let destination = refspec.rsplit(':').next().unwrap_or(refspec);
    // Orion's pushes set refs to given commits, so one tried again changes nothing more.
    let refused = std::cell::RefCell::new(None::<String>);
    let mut attempt = || {
        refused.replace(None);
        let mut options = super::credentials::push_options(|name, status| {
            if let Some(why) = status {
                *refused.borrow_mut() = Some(format!("{name}: {why}"));
            }
            Ok(())
        });
        origin.push(&[refspec], Some(&mut options))?;
        // A ref that libgit2 could not lock in a remote on a local path is tried again, as a
        // lock met in the transfer is.
        match refused.borrow().as_deref() {
            Some(why) if why.contains("failed to lock") => Err(git2::Error::new(
                git2::ErrorCode::Locked,
                git2::ErrorClass::Reference,
                why,
            )),
            _ => Ok(()),
        }
    };
    let until = std::time::Instant::now() + 2 * LOST_LOCK_AGE;
    let pushed = loop {
        match transfer(&mut attempt) {
            Err(e) if e.code() == git2::ErrorCode::Locked && std::time::Instant::now() < until => {
                // The remote on a local path is written by the nodes themselves.
                if let Some(remote) = local_remote_dir(&url) {
                    remove_lost_ref_locks(&remote, destination);
                }
                std::thread::sleep(LOST_LOCK_AGE / 8);
            }
            other => break other,
        }
    };
    pushed.map_err(|e| {
        let mut why = transfer_failure(&e);
        if why.contains("non-bare") {
            // libgit2 pushes to local repositories only when they are bare.
            why.push_str(&format!(
                " (give Orion a bare repository: `git clone --bare {url} {url}.git`, then \
                 --repo {url}.git)"
            ));
        }
        VcsError::PushFailed(why)
    })?;
    // A ref the remote refused (not a fast-forward, a protected branch) is a failed push,
    // though the transfer itself went through.
    match refused.into_inner() {
        Some(why) => Err(VcsError::PushFailed(why)),
        None => Ok(()),
    }
}

/// How long a ref's lock file in a remote on a local path must be seen unchanged to be taken
/// for one a killed process left: an update holds it while it writes one line and renames it.
const LOST_LOCK_AGE: Duration = Duration::from_secs(2);

/// The directory of the repository a remote on a local path names, as libgit2 opens it;
/// `None` for a remote reached over the network (its server keeps its own locks).
fn local_remote_dir(url: &str) -> Option<PathBuf> {
    if super::is_remote(url) {
        return None;
    }
    Some(open_local_remote(url).ok()?.path().to_owned())
}

/// The repository a remote on a local path (a path, or a `file://` URL) names.
fn open_local_remote(url: &str) -> Result<Repository, VcsError> {
    let path = super::policy::local_path(url).map_err(VcsError::Operation)?;
    Repository::open(path).map_err(|e| git_error("opening the remote", e))
}

/// A lock file as first seen: which file it is (a new lock at the same path is another) and
/// when, by this process's clock.
type SeenLocks =
    std::collections::BTreeMap<PathBuf, ((u64, u64, std::time::SystemTime), std::time::Instant)>;

static SEEN_LOCKS: std::sync::Mutex<SeenLocks> = std::sync::Mutex::new(SeenLocks::new());

/// Removes the lock of `refname` (and of `packed-refs`) in the repository at `remote` once
/// this process has seen the same lock file there, unchanged, for [`LOST_LOCK_AGE`]: a
/// process killed in the middle of an update left it, and every later update of the ref
/// would fail on it. A lock that is younger, or that changed, is left to its writer; the
/// file's own times are not trusted (another machine's clock may have written them).
fn remove_lost_ref_locks(remote: &Path, refname: &str) {
    let mut locks = vec![remote.join("packed-refs.lock")];
    if refname.starts_with("refs/") && git2::Reference::is_valid_name(refname) {
        locks.push(remote.join(format!("{refname}.lock")));
    }
    let mut seen = SEEN_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    seen.retain(|_, (_, first)| first.elapsed() < 30 * LOST_LOCK_AGE);
    for lock in locks {
        use std::os::unix::fs::MetadataExt;
        let Some(which) = std::fs::symlink_metadata(&lock)
            .ok()
            .and_then(|m| Some((m.dev(), m.ino(), m.modified().ok()?)))
        else {
            seen.remove(&lock);
            continue;
        };
        match seen.get(&lock) {
            Some((same, first)) if *same == which => {
                if first.elapsed() >= LOST_LOCK_AGE {
                    tracing::warn!(lock = %lock.display(), "removing a ref lock of the remote's that a lost process left");
                    let _ = std::fs::remove_file(&lock);
                    seen.remove(&lock);
                }
            }
            _ => {
                seen.insert(lock, (which, std::time::Instant::now()));
            }
        }
    }
}

/// Pushes the task's branch to the remote (forced: the branch is the task's alone).
pub fn push_branch(workspace: &Workspace) -> Result<(), VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let b = &workspace.branch;
    push(&repo, &format!("+refs/heads/{b}:refs/heads/{b}"))
}

/// Pushes the workspace's HEAD to `refname` on the remote (forced: the ref is the task's).
pub fn push_head_to(workspace: &Workspace, refname: &str) -> Result<(), VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading HEAD", e))?;
    // A ref of the worktree's own names the commit for the push.
    let staging = format!("refs/orion/staging/{}", workspace.branch.replace('/', "-"));
    repo.reference(&staging, head.id(), true, "candidate")
        .map_err(|e| git_error("staging the candidate", e))?;
    push(&repo, &format!("+{staging}:{refname}"))
}

/// Moves the workspace's branch to commit `oid`, fetched from `refname` on the remote where
/// the clone lacks it (the commit was made on another node). A repeat changes nothing.
pub fn adopt(workspace: &Workspace, refname: &str, oid: &str) -> Result<(), VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let target = Oid::from_str(oid).map_err(|_| VcsError::UnknownRevision(oid.to_owned()))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading HEAD", e))?;
    if head.id() == target {
        return Ok(());
    }
    if repo.find_commit(target).is_err() {
        fetch_ref(&repo, refname)?;
    }
    let commit = repo
        .find_commit(target)
        .map_err(|_| VcsError::UnknownRevision(oid.to_owned()))?;
    repo.reference(
        &format!("refs/heads/{}", workspace.branch),
        commit.id(),
        true,
        "adopt the tested candidate",
    )
    .map_err(|e| git_error("moving the branch", e))?;
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| git_error("checking out the candidate", e))
}

/// Deletes `refname` on the remote; deleting a ref that is gone already succeeds.
pub fn delete_remote_ref(workspace: &Workspace, refname: &str) -> Result<(), VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    push(&repo, &format!(":{refname}"))
}

/// Fetches the remote's refs under `namespace` (`refs/heads/`, say: it ends in `/`) into a
/// mirror in the clone, `refs/orion/remote/…`, as the remote has them now (pruned); the
/// mirror's prefix.
fn mirrored(repo: &Repository, namespace: &str) -> Result<String, VcsError> {
    let mirror = format!("refs/orion/remote/{}", &namespace["refs/".len()..]);
    let spec = format!("+{namespace}*:{mirror}*");
    fetch_spec(repo, &spec, &format!("fetching {namespace}"), true)?;
    Ok(mirror)
}

/// Deletes every ref of the remote whose name starts with `prefix` (whose namespace ends at
/// its last `/`, as `refs/orion/candidates/<task>-`); the refs it deleted.
pub fn delete_remote_refs_under(
    workspace: &Workspace,
    prefix: &str,
) -> Result<Vec<String>, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let (namespace, leaf) = prefix
        .rsplit_once('/')
        .filter(|(namespace, _)| namespace.starts_with("refs/") && !namespace.contains('*'))
        .ok_or_else(|| VcsError::Operation(format!("{prefix} is not under refs/")))?;
    let mirror = mirrored(&repo, &format!("{namespace}/"))?;
    let mut found = Vec::new();
    for reference in repo
        .references_glob(&format!("{mirror}*"))
        .map_err(|e| git_error("listing the remote's refs", e))?
        .flatten()
    {
        if let Some(name) = reference.name().ok().and_then(|n| n.strip_prefix(&mirror))
            && name.starts_with(leaf)
        {
            found.push(format!("{namespace}/{name}"));
        }
    }
    for refname in &found {
        push(&repo, &format!(":{refname}"))?;
    }
    Ok(found)
}

/// Checks out commit `oid`, fetched from `refname` on `remote`, in a worktree at `into`
/// (of the remote's cached clone), for running tests on it. A repeat finds the worktree.
pub fn checkout_commit(
    remote: &str,
    into: &Path,
    refname: &str,
    oid: &str,
) -> Result<PathBuf, VcsError> {
    let _one_at_a_time = CacheGuard::take(cache_dir(remote, into));
    let cache = cached_clone(remote, into)?;
    fetch_ref(&cache, refname)?;
    let commit = Oid::from_str(oid)
        .and_then(|id| cache.find_commit(id))
        .map_err(|_| VcsError::UnknownRevision(oid.to_owned()))?;
    let name = into
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| oid.to_owned());
    let branch = format!("orion-test/{name}");
    let repo = open_or_add_worktree(&cache, &name, into, || {
        cache
            .branch(&branch, &commit, true)
            .map_err(|e| git_error("creating the test branch", e))
    })?;
    repo.set_head_detached(commit.id())
        .map_err(|e| git_error("switching to the candidate", e))?;
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| git_error("checking out the candidate", e))?;
    Ok(into.to_owned())
}

/// Removes a worktree made by [`checkout_commit`], with its branch and fetched ref.
pub fn remove_checkout(remote: &str, into: &Path, refname: &str) -> Result<(), VcsError> {
    let cache_path = cache_dir(remote, into);
    let _one_at_a_time = CacheGuard::take(cache_path.clone());
    if into.exists() {
        std::fs::remove_dir_all(into)
            .map_err(|e| VcsError::Operation(format!("removing {}: {e}", into.display())))?;
    }
    let Ok(cache) = Repository::open_bare(&cache_path) else {
        return Ok(());
    };
    if let Some(name) = into.file_name().map(|n| n.to_string_lossy().into_owned()) {
        if let Ok(worktree) = cache.find_worktree(&name) {
            worktree
                .prune(Some(git2::WorktreePruneOptions::new().valid(true)))
                .map_err(|e| git_error("pruning the test worktree", e))?;
        }
        if let Ok(mut branch) = cache.find_branch(&format!("orion-test/{name}"), BranchType::Local)
        {
            branch
                .delete()
                .map_err(|e| git_error("deleting the test branch", e))?;
        }
    }
    if let Ok(mut reference) = cache.find_reference(refname) {
        reference
            .delete()
            .map_err(|e| git_error("deleting the fetched ref", e))?;
    }
    Ok(())
}

/// Lands `approved` (the commit a review approved, on the task's branch) on the remote's base
/// branch: fast-forward where the base has not moved,
/// a merge commit where it has, and nothing at all on a conflict.
pub fn merge(
    workspace: &Workspace,
    author: (&str, &str),
    approved: &str,
) -> Result<MergeOutcome, VcsError> {
    let mut tries = 1;
    loop {
        // The clone is held for one try at a time, not over the pause between tries.
        let tried = {
            let _one_at_a_time = CacheGuard::of(&workspace.path);
            let repo =
                Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
            merge_once(&repo, workspace, author, approved)
        };
        match tried {
            // The base moved between the fetch and the push (another merge landed): the push
            // is refused, as it is not forced, and the merge is made again on the new base,
            // after a random pause that grows with the tries (merges that lost together to
            // one that landed do not all try again at the same moment).
            Err(VcsError::PushFailed(why)) if tries < MERGE_TRIES => {
                tracing::info!(%why, tries, "the base moved while merging; merging again");
                std::thread::sleep(crate::jitter::jitter(MERGE_PAUSE * tries));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Moves the remote's `target` from `from` to `commit`, only if it is still at `from`: a base
/// that moved meanwhile (another merge landed) refuses it, as `PushFailed`, and nothing is
/// lost. A remote server refuses a push that is not a fast-forward by itself. A remote on a
/// local path is written by libgit2 directly, which would not: the commit is pushed beside
/// (`refs/orion/landing/…`), then the ref is moved with a compare-and-swap in the remote.
fn land(repo: &Repository, target: &str, commit: Oid, from: Oid) -> Result<(), VcsError> {
    let url = repo
        .find_remote("origin")
        .map_err(|e| git_error("finding origin", e))?
        .url()
        .unwrap_or_default()
        .to_owned();
    if super::is_remote(&url) {
        return push(repo, &format!("{commit}:{target}"));
    }
    let remote = open_local_remote(&url)?;
    let landing = format!("refs/orion/landing/{commit}");
    let moved = push(repo, &format!("+{commit}:{landing}")).and_then(|()| {
        remote
            .reference_matching(target, commit, true, from, "orion: merge")
            .map(|_| ())
            .map_err(|e| {
                if e.code() == git2::ErrorCode::Locked {
                    // A lock a killed process left would refuse every later try.
                    remove_lost_ref_locks(remote.path(), target);
                    VcsError::PushFailed(format!("{target} is locked: {}", e.message()))
                } else {
                    VcsError::PushFailed(format!("{target} moved meanwhile: {}", e.message()))
                }
            })
    });
    // The landing ref goes whatever happened (one a crash left is harmless: outside the
    // branches, and pushed over by the next landing of the same commit).
    if let Ok(mut staged) = remote.find_reference(&landing) {
        let _ = staged.delete();
    }
    moved
}

/// How often a merge is made on a base that moves meanwhile, before it fails: many merges
/// at once into one base (25 approvals within a second across three nodes, in the chaos test)
/// lost five tries in a row.
const MERGE_TRIES: u32 = 12;
/// The longest pause before the second try; the n-th waits up to n − 1 times it.
const MERGE_PAUSE: Duration = Duration::from_millis(100);

fn merge_once(
    repo: &Repository,
    workspace: &Workspace,
    author: (&str, &str),
    approved: &str,
) -> Result<MergeOutcome, VcsError> {
    fetch(repo)?;
    let base = repo
        .find_branch(
            &format!("origin/{}", workspace.base_branch),
            BranchType::Remote,
        )
        .map_err(|_| VcsError::UnknownRevision(workspace.base_branch.clone()))?
        .get()
        .peel_to_commit()
        .map_err(|e| git_error("reading the base", e))?;
    // Exactly the approved commit, whatever the branch points at now.
    let head = git2::Oid::from_str(approved)
        .and_then(|oid| repo.find_commit(oid))
        .map_err(|_| VcsError::UnknownRevision(approved.to_owned()))?;
    let target = format!("refs/heads/{}", workspace.base_branch);
    // Merged already (by a run that was lost before it recorded the merge, or a push that
    // landed though it was reported failed): nothing is pushed again.
    let contains = |commit: Oid| {
        commit == head.id() || repo.graph_descendant_of(commit, head.id()).unwrap_or(false)
    };
    if contains(base.id()) {
        // The merge is the oldest commit of the base's first-parent line that contains the
        // approved one (later merges of other work came after it).
        let mut merged = base.clone();
        while let Ok(parent) = merged.parent(0)
            && contains(parent.id())
        {
            merged = parent;
        }
        return Ok(MergeOutcome::Contained {
            head: merged.id().to_string(),
        });
    }
    if repo
        .graph_descendant_of(head.id(), base.id())
        .unwrap_or(false)
    {
        land(repo, &target, head.id(), base.id())?;
        return Ok(MergeOutcome::FastForward {
            head: head.id().to_string(),
        });
    }
    let mut index = repo
        .merge_commits(&base, &head, None)
        .map_err(|e| git_error("merging", e))?;
    if index.has_conflicts() {
        let mut paths: Vec<String> = index
            .conflicts()
            .map_err(|e| git_error("listing conflicts", e))?
            .flatten()
            .filter_map(|c| {
                c.our
                    .or(c.their)
                    .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            })
            .collect();
        paths.sort();
        paths.dedup();
        return Ok(MergeOutcome::Conflict { paths });
    }
    let tree_id = index
        .write_tree_to(repo)
        .map_err(|e| git_error("writing the merged tree", e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("reading the merged tree", e))?;
    let signature = Signature::now(author.0, author.1).map_err(|e| git_error("signing", e))?;
    let message = format!("Merge {} into {}", workspace.branch, workspace.base_branch);
    let merged = repo
        .commit(
            None,
            &signature,
            &signature,
            &message,
            &tree,
            &[&base, &head],
        )
        .map_err(|e| git_error("committing the merge", e))?;
    land(repo, &target, merged, base.id())?;
    Ok(MergeOutcome::MergeCommit {
        head: merged.to_string(),
    })
}

/// The commit `refname` (`refs/heads/…` or `refs/tags/…`) names on the remote now, if the
/// remote has it: read from a fresh, pruning fetch of that namespace, not from what the clone
/// saw last. This is how a claim left pending by a lost run is settled: the push, or the tag,
/// either reached the remote or it did not.
pub fn remote_ref(workspace: &Workspace, refname: &str) -> Result<Option<String>, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let (namespace, name) = ["refs/heads/", "refs/tags/"]
        .into_iter()
        .find_map(|n| refname.strip_prefix(n).map(|rest| (n, rest)))
        .ok_or_else(|| VcsError::Operation(format!("{refname} is not a branch or a tag")))?;
    let mirror = mirrored(&repo, namespace)?;
    match repo.find_reference(&format!("{mirror}{name}")) {
        Ok(found) => found
            .peel_to_commit()
            .map(|c| Some(c.id().to_string()))
            .map_err(|e| git_error("reading the remote ref", e)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_error("reading the remote ref", e)),
    }
}

/// The commit a tag names (through an annotated tag object).
fn tagged_commit(repo: &Repository, name: &str) -> Result<Oid, VcsError> {
    repo.revparse_single(&format!("refs/tags/{name}"))
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|_| VcsError::UnknownRevision(name.to_owned()))
}

/// The remote's tags (fetched first) that name a commit of the workspace's history.
pub fn tags_on_head(workspace: &Workspace) -> Result<Vec<String>, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    fetch_spec(&repo, "+refs/tags/*:refs/tags/*", "fetching tags", false)?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading HEAD", e))?
        .id();
    let names = repo
        .tag_names(None)
        .map_err(|e| git_error("listing tags", e))?;
    let mut on_head = Vec::new();
    for name in names.iter().flatten().flatten() {
        let commit = tagged_commit(&repo, name)?;
        if commit == head || repo.graph_descendant_of(head, commit).unwrap_or(false) {
            on_head.push(name.to_owned());
        }
    }
    Ok(on_head)
}

/// The most commits [`messages_since`] reads.
const MAX_RELEASE_COMMITS: usize = 10_000;

/// The id and message of each commit on HEAD's history since tag `since` (all of them when
/// `None`), newest first.
pub fn messages_since(
    workspace: &Workspace,
    since: Option<&str>,
) -> Result<Vec<(String, String)>, VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let mut walk = repo
        .revwalk()
        .map_err(|e| git_error("walking history", e))?;
    walk.push_head().map_err(|e| git_error("reading HEAD", e))?;
    if let Some(tag) = since {
        walk.hide(tagged_commit(&repo, tag)?)
            .map_err(|e| git_error("walking history", e))?;
    }
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
        .map_err(|e| git_error("walking history", e))?;
    walk.take(MAX_RELEASE_COMMITS)
        .map(|oid| {
            let commit = oid
                .and_then(|oid| repo.find_commit(oid))
                .map_err(|e| git_error("reading a commit", e))?;
            Ok((
                commit.id().to_string(),
                String::from_utf8_lossy(commit.message_bytes()).into_owned(),
            ))
        })
        .collect()
}

/// Tags commit `oid` as `name` (an annotated tag by `author` saying `message`) and pushes the
/// tag. A repeat finds the tag at `oid` and pushes it again; a tag of that name on another
/// commit is refused.
pub fn tag_and_push(
    workspace: &Workspace,
    name: &str,
    oid: &str,
    message: &str,
    author: (&str, &str),
) -> Result<(), VcsError> {
    let _one_at_a_time = CacheGuard::of(&workspace.path);
    let repo = Repository::open(&workspace.path).map_err(|e| git_error("opening the clone", e))?;
    let target = Oid::from_str(oid).map_err(|_| VcsError::UnknownRevision(oid.to_owned()))?;
    match tagged_commit(&repo, name) {
        Ok(existing) if existing == target => {}
        Ok(existing) => {
            return Err(VcsError::Operation(format!(
                "tag {name} exists already, on {existing}"
            )));
        }
        Err(_) => {
            let object = repo
                .find_object(target, None)
                .map_err(|_| VcsError::UnknownRevision(oid.to_owned()))?;
            let signature =
                Signature::now(author.0, author.1).map_err(|e| git_error("signing", e))?;
            repo.tag(name, &object, &signature, message, false)
                .map_err(|e| git_error("tagging", e))?;
        }
    }
    push(&repo, &format!("refs/tags/{name}:refs/tags/{name}"))
}
