//! The write side of version control against a real bare remote: a task's clone and branch,
//! commits, pushes, and merges by fast-forward, by merge commit, and refused on conflict.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use orion_services::vcs::{self, MergeOutcome, VcsError};

use crate::support::{TempDir, bare_remote, git_rev};

const AUTHOR: (&str, &str) = ("Orion", "orion@orion.invalid");

fn rev(remote: &Path, name: &str) -> String {
    let out = Command::new("git")
        .args(["--git-dir"])
        .arg(remote)
        .args(["rev-parse", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote made from the git fixture, and a scratch directory for clones.
fn remote() -> (TempDir, TempDir, String) {
    let (dir, bare) = bare_remote();
    (dir, TempDir::new(), bare.to_string_lossy().into_owned())
}

#[test]
fn a_task_branch_is_committed_pushed_and_fast_forwarded() {
    let (_keep, work, remote) = remote();
    let ws = vcs::checkout(&remote, &work.path().join("t1"), "orion/t1", None).unwrap();
    assert_eq!(
        (ws.branch.as_str(), ws.base_branch.as_str()),
        ("orion/t1", "main")
    );
    assert_eq!(ws.base_oid, rev(Path::new(&remote), "main"));
    std::fs::write(
        ws.path.join("app/util.py"),
        "def helper(x):\n    return x * 2\n",
    )
    .unwrap();
    std::fs::write(ws.path.join("NEW.md"), "new\n").unwrap();
    let commit = vcs::commit_all(&ws, "double it", AUTHOR)
        .unwrap()
        .expect("a commit");
    assert_eq!(
        vcs::commit_all(&ws, "again", AUTHOR).unwrap(),
        None,
        "nothing left to commit"
    );
    let stats = vcs::diff_stats(&ws).unwrap();
    assert_eq!(
        (stats.files_changed, stats.insertions, stats.deletions),
        (2, 2, 1)
    );
    assert!(stats.patch.contains("+    return x * 2"), "{}", stats.patch);
    vcs::push_branch(&ws).unwrap();
    assert_eq!(rev(Path::new(&remote), "orion/t1"), commit);

    // Opening the same task again (a redelivery) finds the clone and its commit.
    let again = vcs::checkout(&remote, &work.path().join("t1"), "orion/t1", None).unwrap();
    assert_eq!(again.base_oid, ws.base_oid);
    assert_eq!(
        vcs::merge(&again, AUTHOR, &commit).unwrap(),
        MergeOutcome::FastForward {
            head: commit.clone()
        }
    );
    assert_eq!(rev(Path::new(&remote), "main"), commit);
}

/// A task's worktree that a killed process left half made (its `.git` file written, the
/// cached clone's entry for it missing or without its HEAD) is made again by the next
/// checkout, not taken for the task's worktree; the task then commits and pushes as usual.
#[test]
fn a_worktree_a_killed_process_left_half_made_is_made_again() {
    let (_keep, work, remote) = remote();
    let into = work.path().join("t8");
    let first = vcs::checkout(&remote, &into, "orion/t8", None).unwrap();
    let link = std::fs::read_to_string(into.join(".git")).unwrap();
    let entry = std::path::PathBuf::from(link.trim().strip_prefix("gitdir:").unwrap().trim());
    assert!(entry.join("HEAD").exists(), "{}", entry.display());

    // Killed after the `.git` file, before the entry; then after the entry, before its HEAD.
    for half_made in [&entry, &entry.join("HEAD")] {
        if half_made.is_dir() {
            std::fs::remove_dir_all(half_made).unwrap();
        } else {
            std::fs::remove_file(half_made).unwrap();
        }
        let again = vcs::checkout(&remote, &into, "orion/t8", None).unwrap();
        assert_eq!(again.base_oid, first.base_oid);
        assert!(entry.join("HEAD").exists(), "the entry is whole again");
    }
    let ws = vcs::checkout(&remote, &into, "orion/t8", None).unwrap();
    std::fs::write(ws.path.join("NEW.md"), "after the crash\n").unwrap();
    let commit = vcs::commit_all(&ws, "after the crash", AUTHOR)
        .unwrap()
        .expect("a commit");
    vcs::push_branch(&ws).unwrap();
    assert_eq!(rev(Path::new(&remote), "orion/t8"), commit);
}

/// A task's candidate refs (every run's, as lost runs leave them) are deleted together, and
/// no other task's: not one whose id the first's starts like, nor a branch.
#[test]
fn a_tasks_candidate_refs_go_together_and_no_other_tasks() {
    let (_keep, work, remote) = remote();
    let remote_path = Path::new(&remote);
    let ws = vcs::checkout(&remote, &work.path().join("t6"), "orion/t6", None).unwrap();
    std::fs::write(ws.path.join("NEW.md"), "x\n").unwrap();
    let head = vcs::commit_all(&ws, "x", AUTHOR)
        .unwrap()
        .expect("a commit");
    let refs = [
        vcs::candidate_ref("t6", &head),
        vcs::candidate_ref("t6", "lost-run"),
        vcs::candidate_ref("t66", &head),
        vcs::candidate_ref("u6", &head),
    ];
    for refname in &refs {
        vcs::push_head_to(&ws, refname).unwrap();
    }
    vcs::push_branch(&ws).unwrap();
    let mut deleted = vcs::delete_remote_refs_under(&ws, &vcs::candidate_prefix("t6")).unwrap();
    deleted.sort();
    let mut expected = vec![refs[0].clone(), refs[1].clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    for (refname, stays) in refs.iter().zip([false, false, true, true]) {
        assert_eq!(git_rev(remote_path, refname).is_some(), stays, "{refname}");
    }
    assert_eq!(rev(remote_path, "orion/t6"), head, "the branch stays");
    // Again: nothing left to delete, and that is no error.
    assert!(
        vcs::delete_remote_refs_under(&ws, &vcs::candidate_prefix("t6"))
            .unwrap()
            .is_empty()
    );
}

/// A push that finds its ref locked in a remote on a local path: a lock a killed process left
/// (the same file, unchanged, for longer than any update holds one) is removed and the push
/// goes through; a writer's that is still at work is waited for and never taken; one that a
/// writer keeps changing past the wait fails the push with the reason, and stays.
#[test]
fn a_push_waits_out_a_writers_ref_lock_and_clears_one_a_killed_process_left() {
    let (_keep, work, remote) = remote();
    let remote_path = Path::new(&remote);
    let ws = vcs::checkout(&remote, &work.path().join("t9"), "orion/t9", None).unwrap();
    let lock = remote_path.join("refs/heads/orion/t9.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let commit = |text: &str| {
        std::fs::write(ws.path.join("NEW.md"), text).unwrap();
        vcs::commit_all(&ws, text, AUTHOR)
            .unwrap()
            .expect("a commit")
    };
    // Touches a lock that must still be there (its writer would notice it taken).
    let touch = |lock: &Path| {
        std::fs::File::options()
            .write(true)
            .open(lock)?
            .set_modified(SystemTime::now())
    };

    // Left ten seconds ago by a process killed in the middle of its push.
    let first = commit("one\n");
    std::fs::File::create(&lock)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
    vcs::push_branch(&ws).unwrap();
    assert_eq!(rev(remote_path, "orion/t9"), first);
    assert!(!lock.exists(), "the lost lock is removed");

    // Held by a writer for a second (past the push's first tries, short of a lost lock's
    // two seconds): the push waits, and the writer removes its own lock (it would fail to,
    // had the push taken it).
    let second = commit("two\n");
    std::fs::File::create(&lock).unwrap();
    let writer = std::thread::spawn({
        let lock = lock.clone();
        move || {
            std::thread::sleep(Duration::from_secs(1));
            std::fs::remove_file(&lock)
        }
    });
    vcs::push_branch(&ws).unwrap();
    writer
        .join()
        .unwrap()
        .expect("the writer's lock was still its own");
    assert_eq!(rev(remote_path, "orion/t9"), second);

    // Held throughout by a writer still at work on it: the push fails and says why; the
    // writer finds its lock there every time.
    let third = commit("three\n");
    std::fs::File::create(&lock).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (lock, done) = (lock.clone(), done.clone());
        move || -> std::io::Result<()> {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                touch(&lock)?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
    });
    let refused = vcs::push_branch(&ws).unwrap_err();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    writer
        .join()
        .unwrap()
        .expect("the writer's lock was never taken");
    assert!(
        matches!(&refused, VcsError::PushFailed(why) if why.contains("t9.lock")),
        "{refused}"
    );
    assert!(lock.exists());
    assert_ne!(rev(remote_path, "orion/t9"), third);
    assert_eq!(rev(remote_path, "orion/t9"), second);
}

/// The commit a workspace's branch points at, as a review would have approved it.
fn head_of(ws: &vcs::Workspace) -> String {
    vcs::resolve(&ws.path, "HEAD").unwrap()
}

#[test]
fn a_moved_base_gets_a_merge_commit_and_a_conflict_changes_nothing() {
    let (_keep, work, remote) = remote();
    let a = vcs::checkout(&remote, &work.path().join("a"), "orion/a", None).unwrap();
    let b = vcs::checkout(&remote, &work.path().join("b"), "orion/b", None).unwrap();
    let c = vcs::checkout(&remote, &work.path().join("c"), "orion/c", None).unwrap();
    // Three tasks, one cached clone: each task is a worktree of it.
    let caches: Vec<_> = std::fs::read_dir(work.path().join(".repos"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(caches.len(), 1, "one cached clone per repository");
    assert!(
        [&a, &b, &c].iter().all(|ws| ws.path.join(".git").is_file()),
        "tasks are worktrees"
    );
    std::fs::write(
        a.path.join("app/util.py"),
        "def helper(x):\n    return x + 1\n",
    )
    .unwrap();
    std::fs::write(b.path.join("OTHER.md"), "other\n").unwrap();
    std::fs::write(
        c.path.join("app/util.py"),
        "def helper(x):\n    return x - 1\n",
    )
    .unwrap();
    for ws in [&a, &b, &c] {
        vcs::commit_all(ws, "change", AUTHOR).unwrap().unwrap();
        vcs::push_branch(ws).unwrap();
    }
    let after_a = match vcs::merge(&a, AUTHOR, &head_of(&a)).unwrap() {
        MergeOutcome::FastForward { head } => head,
        other => panic!("expected a fast-forward, got {other:?}"),
    };
    let merged = match vcs::merge(&b, AUTHOR, &head_of(&b)).unwrap() {
        MergeOutcome::MergeCommit { head } => head,
        other => panic!("expected a merge commit, got {other:?}"),
    };
    assert_eq!(rev(Path::new(&remote), "main"), merged);
    assert_eq!(rev(Path::new(&remote), &format!("{merged}^1")), after_a);
    // A merge made again (its first run lost before it recorded it) pushes nothing, and names
    // the commit that merged it, not whatever the base holds now.
    assert_eq!(
        vcs::merge(&a, AUTHOR, &head_of(&a)).unwrap(),
        MergeOutcome::Contained {
            head: after_a.clone()
        }
    );
    assert_eq!(
        vcs::merge(&b, AUTHOR, &head_of(&b)).unwrap(),
        MergeOutcome::Contained {
            head: merged.clone()
        }
    );
    assert_eq!(
        rev(Path::new(&remote), "main"),
        merged,
        "nothing was pushed"
    );
    assert_eq!(
        vcs::merge(&c, AUTHOR, &head_of(&c)).unwrap(),
        MergeOutcome::Conflict {
            paths: vec!["app/util.py".into()]
        }
    );
    assert_eq!(
        rev(Path::new(&remote), "main"),
        merged,
        "a conflict leaves the remote as it was"
    );
}

#[test]
fn a_repository_that_will_not_clone_says_so() {
    let work = TempDir::new();
    let err = vcs::checkout(
        "/no/such/repository",
        &work.path().join("x"),
        "orion/x",
        None,
    )
    .unwrap_err();
    assert!(matches!(err, VcsError::CloneFailed(_)), "{err}");
    let (_keep, work, remote) = remote();
    let err = vcs::checkout(
        &remote,
        &work.path().join("y"),
        "orion/y",
        Some("no-such-branch"),
    )
    .unwrap_err();
    assert!(
        matches!(err, VcsError::UnknownRevision(ref b) if b == "no-such-branch"),
        "{err}"
    );
}
