//! The store, on Postgres and on SQLite: the same suite against both.

use std::sync::Arc;
use std::time::Duration;

use orion_bus::{EventType, Priority, TaskFailure, TaskKind, TaskSpec, TaskStatus};
use orion_services::store::traits::*;
use orion_services::store::{
    AgentSnapshot, Claim, Fence, PullState, PullVersion, SqlStore, StoreError, TaskQuery,
    Transition,
};

use orion_services::code::export::FunctionRow;
use orion_services::code::{FunctionMetrics, Language};
use sea_orm::ConnectionTrait;

use crate::support::{PgDatabase, TempDir};

struct Harness {
    store: Arc<SqlStore>,
    pg: Option<PgDatabase>,
    _dir: Option<TempDir>,
}

impl Harness {
    async fn postgres() -> Self {
        Self::on_postgres(PgDatabase::create().await).await
    }

    /// A store on `pg`, connected (and migrated) now.
    async fn on_postgres(pg: PgDatabase) -> Self {
        let store = SqlStore::connect(&pg.url).await.expect("migrate Postgres");
        Self {
            store: Arc::new(store),
            pg: Some(pg),
            _dir: None,
        }
    }

    async fn sqlite() -> Self {
        let dir = TempDir::new();
        let store = SqlStore::connect(&dir.sqlite_url())
            .await
            .expect("migrate SQLite");
        Self {
            store: Arc::new(store),
            pg: None,
            _dir: Some(dir),
        }
    }

    async fn finish(self) {
        self.store
            .connection()
            .clone()
            .close()
            .await
            .expect("close");
        if let Some(pg) = self.pg {
            pg.drop_now().await;
        }
    }
}

fn spec(kind: TaskKind) -> TaskSpec {
    TaskSpec::new(kind, "/repo", Some("do it".into()), None, Priority::High).unwrap()
}

async fn a_task_is_stored_with_its_first_event(h: Harness) {
    let (task, event) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, Some("n1"))
        .await
        .unwrap();
    assert_eq!(
        (task.status, task.version, task.attempts),
        (TaskStatus::Queued, 1, 0)
    );
    let read = h.store.task(task.id).await.unwrap();
    assert_eq!(read.spec, spec(TaskKind::Analyze));
    assert_eq!(read.id, task.id);
    let event = event.expect("a new task has its queued event");
    assert_eq!(
        (event.event_type, event.status, event.node.as_deref()),
        (EventType::Queued, Some(TaskStatus::Queued), Some("n1"))
    );
    assert_eq!(
        h.store.events(Some(task.id), 0, 100).await.unwrap(),
        vec![event]
    );
    h.finish().await;
}

async fn an_idempotency_key_returns_the_first_task(h: Harness) {
    let (first, created) = h
        .store
        .create_task(spec(TaskKind::Analyze), Some("key-1"), None)
        .await
        .unwrap();
    assert!(created.is_some());
    let (again, created) = h
        .store
        .create_task(spec(TaskKind::Develop), Some("key-1"), None)
        .await
        .unwrap();
    assert!(created.is_none());
    assert_eq!(again, first);
    assert_eq!(tasks_stored(&h).await, 1);
    h.finish().await;
}

async fn a_transition_moves_the_version_and_logs_an_event(h: Harness) {
    let (task, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    let mut change = Transition::new(&task, TaskStatus::Assigned);
    change.count_attempt = true;
    change.data = serde_json::json!({ "agent": "analyzer" });
    let (moved, event) = h.store.transition(change).await.unwrap();
    assert_eq!(
        (moved.status, moved.version, moved.attempts),
        (TaskStatus::Assigned, 2, 1)
    );
    assert_eq!(event.data["agent"], "analyzer");
    let running = h
        .store
        .transition(Transition::new(&moved, TaskStatus::Running))
        .await
        .unwrap()
        .0;
    let mut fail = Transition::new(&running, TaskStatus::Failed);
    fail.error = Some(TaskFailure::new("boom", "it broke"));
    let (failed, _) = h.store.transition(fail).await.unwrap();
    assert_eq!(failed.error, Some(TaskFailure::new("boom", "it broke")));
    assert_eq!(
        event_types(&h, task.id).await,
        [
            EventType::Queued,
            EventType::Assigned,
            EventType::Running,
            EventType::Failed
        ]
    );
    h.finish().await;
}

async fn a_stale_version_is_rejected_and_changes_nothing(h: Harness) {
    let (task, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    h.store
        .transition(Transition::new(&task, TaskStatus::Assigned))
        .await
        .unwrap();
    // `task` is version 1; the stored one is version 2 now.
    let err = h
        .store
        .transition(Transition::new(&task, TaskStatus::Cancelled))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    let stored = h.store.task(task.id).await.unwrap();
    assert_eq!((stored.status, stored.version), (TaskStatus::Assigned, 2));
    assert_eq!(
        h.store.events(Some(task.id), 0, 100).await.unwrap().len(),
        2
    );
    h.finish().await;
}

async fn an_illegal_transition_is_rejected_and_changes_nothing(h: Harness) {
    let (task, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    let err = h
        .store
        .transition(Transition::new(&task, TaskStatus::Completed))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a task cannot go from `queued` to `completed`"
    );
    let stored = h.store.task(task.id).await.unwrap();
    assert_eq!((stored.status, stored.version), (TaskStatus::Queued, 1));
    assert_eq!(
        h.store.events(Some(task.id), 0, 100).await.unwrap().len(),
        1
    );
    h.finish().await;
}

async fn concurrent_writers_cannot_both_move_a_task(h: Harness) {
    let (task, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    let attempts = (0..8).map(|_| {
        let store = h.store.clone();
        let change = Transition::new(&task, TaskStatus::Assigned);
        tokio::spawn(async move { store.transition(change).await })
    });
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
    let stored = h.store.task(task.id).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        h.store.events(Some(task.id), 0, 100).await.unwrap().len(),
        2
    );
    h.finish().await;
}

async fn listing_filters_and_pages_newest_first(h: Harness) {
    let mut ids = Vec::new();
    for kind in [
        TaskKind::Analyze,
        TaskKind::Develop,
        TaskKind::Analyze,
        TaskKind::Analyze,
        TaskKind::Design,
    ] {
        ids.push(
            h.store
                .create_task(spec(kind), None, None)
                .await
                .unwrap()
                .0
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut query = TaskQuery {
        limit: 2,
        ..TaskQuery::default()
    };
    loop {
        let page = h.store.list_tasks(&query).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query.before = Some(cursor),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every task once, newest first");
    let analyze = h
        .store
        .list_tasks(&TaskQuery {
            kind: Some(TaskKind::Analyze),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(analyze.items.len(), 3);
    assert!(analyze.next_cursor.is_none());
    let queued = h
        .store
        .list_tasks(&TaskQuery {
            status: Some(TaskStatus::Completed),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert!(queued.items.is_empty());
    h.finish().await;
}

async fn events_resume_after_a_sequence_number(h: Harness) {
    let (a, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    let (b, _) = h
        .store
        .create_task(spec(TaskKind::Analyze), None, None)
        .await
        .unwrap();
    let note = h
        .store
        .append_event(
            a.id,
            EventType::Progress,
            serde_json::json!({ "m": 1 }),
            None,
        )
        .await
        .unwrap();
    let all = h.store.events(None, 0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let after = h.store.events(None, all[0].seq, 100).await.unwrap();
    assert_eq!(after, all[1..].to_vec());
    let only_a = h.store.events(Some(a.id), 0, 100).await.unwrap();
    assert_eq!(only_a.last(), Some(&note));
    assert!(only_a.iter().all(|e| e.task_id == a.id));
    assert!(
        h.store
            .events(Some(b.id), 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.task_id == b.id)
    );
    h.finish().await;
}

async fn snapshots_are_saved_and_replaced(h: Harness) {
    assert_eq!(h.store.snapshot("analyzer@n1").await.unwrap(), None);
    let mut snap = AgentSnapshot {
        agent_id: "analyzer@n1".into(),
        agent_kind: orion_bus::AgentKind::Analyzer,
        node: "n1".into(),
        state: serde_json::json!({ "done": 1 }),
        version: 1,
        updated_at: chrono::Utc::now(),
    };
    h.store.save_snapshot(&snap).await.unwrap();
    snap.state = serde_json::json!({ "done": 2 });
    snap.version = 2;
    h.store.save_snapshot(&snap).await.unwrap();
    let read = h.store.snapshot("analyzer@n1").await.unwrap().unwrap();
    assert_eq!(
        (read.state, read.version),
        (serde_json::json!({ "done": 2 }), 2)
    );
    h.finish().await;
}

fn fence(attempt: i32) -> Fence {
    Fence {
        attempt,
        run: uuid::Uuid::now_v7(),
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// How many tasks the store holds (at most 10 are counted).
async fn tasks_stored(h: &Harness) -> usize {
    let query = TaskQuery {
        limit: 10,
        ..TaskQuery::default()
    };
    h.store.list_tasks(&query).await.unwrap().items.len()
}

/// The types of a task's events, in the log's order.
async fn event_types(h: &Harness, task: orion_bus::TaskId) -> Vec<EventType> {
    let events = h.store.events(Some(task), 0, 100).await.unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

/// `n` new analyze tasks, queued.
async fn queued_tasks(h: &Harness, n: usize) -> Vec<orion_bus::Task> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (task, _) = h
            .store
            .create_task(spec(TaskKind::Analyze), None, None)
            .await
            .unwrap();
        tasks.push(task);
    }
    tasks
}

async fn stored_task(h: &Harness) -> orion_bus::TaskId {
    h.store
        .create_task(spec(TaskKind::Develop), None, Some("n1"))
        .await
        .unwrap()
        .0
        .id
}

/// Sixteen runs of one attempt claim one effect at the same moment: one acts, the others
/// wait; once the holder records the outcome, every run (of any attempt) reads it.
async fn of_runs_claiming_one_effect_at_once_exactly_one_acts(h: Harness) {
    let task = stored_task(&h).await;
    let runs: Vec<Fence> = (0..16).map(|_| fence(1)).collect();
    let claims = futures_util::future::join_all(
        runs.iter()
            .map(|run| h.store.claim_effect(task, "push:abc", "push", *run, LEASE)),
    )
    .await;
    let claims: Vec<Claim> = claims.into_iter().map(Result::unwrap).collect();
    let held: Vec<usize> = (0..16)
        .filter(|i| matches!(claims[*i], Claim::Held { .. }))
        .collect();
    assert_eq!(held.len(), 1, "{claims:?}");
    assert_eq!(
        claims.iter().filter(|c| **c == Claim::Busy).count(),
        15,
        "{claims:?}"
    );
    assert_eq!(
        h.store.effect(task, "push:abc").await.unwrap(),
        None,
        "a pending claim is not an outcome"
    );
    let holder = runs[held[0]];
    let outcome = serde_json::json!({ "head": "abc" });
    assert_eq!(
        h.store
            .settle_effect(task, "push:abc", holder, outcome.clone())
            .await
            .unwrap(),
        Some(outcome.clone())
    );
    for run in [runs[(held[0] + 1) % 16], fence(2)] {
        assert_eq!(
            h.store
                .claim_effect(task, "push:abc", "push", run, LEASE)
                .await
                .unwrap(),
            Claim::Done(outcome.clone())
        );
    }
    h.finish().await;
}

/// A run of a newer attempt takes over the claim an older attempt left pending; the older
/// run can then neither record an outcome nor claim again, and the first outcome stands.
async fn a_newer_attempt_fences_out_an_older_one(h: Harness) {
    let task = stored_task(&h).await;
    let (old, new) = (fence(1), fence(2));
    let key = "merge:p";
    let claim = |run| h.store.claim_effect(task, key, "merge", run, LEASE);
    assert_eq!(
        claim(old).await.unwrap(),
        Claim::Held {
            orphaned: false,
            tries: 1
        }
    );
    assert_eq!(
        claim(new).await.unwrap(),
        Claim::Held {
            orphaned: true,
            tries: 2
        }
    );
    assert_eq!(
        h.store
            .settle_effect(task, key, old, serde_json::json!("old"))
            .await
            .unwrap(),
        None,
        "the older run is fenced out"
    );
    assert_eq!(h.store.effect(task, key).await.unwrap(), None);
    assert_eq!(claim(old).await.unwrap(), Claim::Superseded { attempt: 2 });
    let outcome = serde_json::json!("new");
    assert_eq!(
        h.store
            .settle_effect(task, key, new, outcome.clone())
            .await
            .unwrap(),
        Some(outcome.clone())
    );
    assert_eq!(
        h.store
            .settle_effect(task, key, old, serde_json::json!("late"))
            .await
            .unwrap(),
        Some(outcome.clone()),
        "a late outcome does not replace the first"
    );
    assert_eq!(h.store.effect(task, key).await.unwrap(), Some(outcome));
    h.finish().await;
}

/// Another run of the same attempt waits while the holder's lease lasts, and takes the claim
/// over (as an orphan) once it ran out; of many runs that find the orphan at once, one does.
async fn a_claim_passes_on_when_its_lease_runs_out_and_only_once(h: Harness) {
    let task = stored_task(&h).await;
    let key = "model:edit";
    assert!(matches!(
        h.store
            .claim_effect(task, key, "model_call", fence(1), LEASE)
            .await
            .unwrap(),
        Claim::Held {
            orphaned: false,
            ..
        }
    ));
    assert_eq!(
        h.store
            .claim_effect(task, key, "model_call", fence(1), LEASE)
            .await
            .unwrap(),
        Claim::Busy
    );
    assert_eq!(
        h.store
            .claim_effect(task, key, "model_call", fence(1), Duration::ZERO)
            .await
            .unwrap(),
        Claim::Held {
            orphaned: true,
            tries: 2
        },
        "a lease that ran out"
    );
    // The same run claiming again starts over after a failure: as unsure as a lost run's.
    let again = fence(1);
    h.store
        .claim_effect(task, "push:again", "push", again, LEASE)
        .await
        .unwrap();
    assert_eq!(
        h.store
            .claim_effect(task, "push:again", "push", again, LEASE)
            .await
            .unwrap(),
        Claim::Held {
            orphaned: true,
            tries: 2
        },
        "a run claiming again"
    );
    // A live run renews its leases; another run's renewal touches none of them.
    assert_eq!(h.store.renew_claims(task, again.run).await.unwrap(), 1);
    assert_eq!(h.store.renew_claims(task, fence(1).run).await.unwrap(), 0);
    // Eight runs of the next attempt find the orphan at the same moment: one takes it over
    // (and its lease starts); the others then find a live run of their attempt holding it.
    let runs: Vec<Fence> = (0..8).map(|_| fence(2)).collect();
    let claims = futures_util::future::join_all(
        runs.iter()
            .map(|run| h.store.claim_effect(task, key, "model_call", *run, LEASE)),
    )
    .await;
    let claims: Vec<Claim> = claims.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        claims
            .iter()
            .filter(|c| **c
                == Claim::Held {
                    orphaned: true,
                    tries: 3
                })
            .count(),
        1,
        "{claims:?}"
    );
    assert_eq!(
        claims.iter().filter(|c| **c == Claim::Busy).count(),
        7,
        "{claims:?}"
    );
    h.finish().await;
}

fn function_rows(n: usize, tag: &str) -> Vec<FunctionRow> {
    (0..n)
        .map(|i| FunctionRow {
            path: format!("src/{tag}/m{}.rs", i / 10),
            language: Language::Rust,
            function: FunctionMetrics {
                name: format!("{tag}_{i}"),
                start_line: 1 + i as u32 % 10 * 7,
                end_line: 6 + i as u32 % 10 * 7,
                parameters: i as u32 % 4,
                cyclomatic: 1 + i as u32 % 13,
                cognitive: i as u32 % 17,
                max_nesting: i as u32 % 5,
            },
        })
        .collect()
}

/// Every function of a run, read back a page at a time.
async fn read_all(h: &Harness, task: orion_bus::TaskId, run: uuid::Uuid) -> Vec<FunctionRow> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = h.store.functions(task, run, after, 700).await.unwrap();
        let Some((last, _)) = page.last() else {
            return rows;
        };
        after = Some(*last);
        for (seq, row) in page {
            assert_eq!(seq as usize, rows.len(), "numbered from 0 without a gap");
            rows.push(row);
        }
    }
}

/// Two measurements of one analyze task store their functions at the same moment (more than
/// one insert statement each): each list reads back exactly as stored; storing a list again
/// replaces it; a store that fails part-way keeps nothing of it and loses nothing stored; a
/// NUL, which Postgres text cannot hold, is kept as U+FFFD; the transition that ends the task
/// keeps only the list its report names, and no list is stored after it.
async fn function_lists_are_whole_apart_and_end_with_their_task(h: Harness) {
    let task = stored_task(&h).await;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (rows_a, rows_b) = (function_rows(2500, "a"), function_rows(1200, "b"));
    let (saved_a, saved_b) = tokio::join!(
        h.store.save_functions(task, a, &rows_a),
        h.store.save_functions(task, b, &rows_b)
    );
    saved_a.unwrap();
    saved_b.unwrap();
    assert_eq!(read_all(&h, task, a).await, rows_a);
    assert_eq!(read_all(&h, task, b).await, rows_b);
    let other = stored_task(&h).await;
    assert!(read_all(&h, other, a).await.is_empty(), "by task and list");

    let again = function_rows(10, "again");
    h.store.save_functions(task, a, &again).await.unwrap();
    assert_eq!(read_all(&h, task, a).await, again);

    // A change that does not end the task (as a report's `running` before `completed`) keeps
    // every list.
    let current = h.store.task(task).await.unwrap();
    let mut change = Transition::new(&current, TaskStatus::Assigned);
    change.result = Some(serde_json::json!({ "function_list": { "id": b, "count": 1200 } }));
    h.store.transition(change).await.unwrap();
    assert_eq!(read_all(&h, task, a).await, again);
    assert_eq!(read_all(&h, task, b).await, rows_b);

    // The database refuses one row of the second insert statement: nothing of the list is
    // kept, and the list stored before under the same id is still whole.
    let refuse = if h.pg.is_some() {
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
           IF NEW.name = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; \
         END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse BEFORE INSERT ON task_functions \
           FOR EACH ROW EXECUTE FUNCTION refuse();"
    } else {
        "CREATE TRIGGER refuse BEFORE INSERT ON task_functions WHEN NEW.name = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused'); END;"
    };
    h.store
        .connection()
        .execute_unprepared(refuse)
        .await
        .unwrap();
    let mut broken = function_rows(1500, "broken");
    broken[1400].function.name = "refused".into();
    let result = h.store.save_functions(task, a, &broken).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(read_all(&h, task, a).await, again, "nothing stored is lost");

    let mut nul = function_rows(3, "nul");
    nul[1].function.name = "key\0name".into();
    nul[2].path = "src/\0.rs".into();
    let c = uuid::Uuid::now_v7();
    h.store.save_functions(task, c, &nul).await.unwrap();
    nul[1].function.name = "key\u{FFFD}name".into();
    nul[2].path = "src/\u{FFFD}.rs".into();
    assert_eq!(read_all(&h, task, c).await, nul);

    // The task ends, its stored result naming list b: a and c go, b stays, and no list can be
    // stored any more.
    let current = h.store.task(task).await.unwrap();
    h.store
        .transition(Transition::new(&current, TaskStatus::Cancelled))
        .await
        .unwrap();
    assert!(read_all(&h, task, a).await.is_empty());
    assert!(read_all(&h, task, c).await.is_empty());
    assert_eq!(read_all(&h, task, b).await, rows_b);
    let late = h.store.save_functions(task, a, &rows_a).await;
    assert!(
        matches!(late, Err(StoreError::TaskEnded(_, TaskStatus::Cancelled))),
        "{late:?}"
    );
    assert!(read_all(&h, task, a).await.is_empty());
    h.finish().await;
}

/// Moves `task` to `to`, counting an attempt when `count`.
async fn move_task(h: &Harness, task: orion_bus::TaskId, to: TaskStatus, count: bool) {
    let current = h.store.task(task).await.unwrap();
    let mut change = Transition::new(&current, to);
    change.count_attempt = count;
    h.store.transition(change).await.unwrap();
}

fn pull_version(task: orion_bus::TaskId, head: &str, attempt: i32) -> PullVersion {
    PullVersion {
        task_id: task,
        repo: "file:///repo".into(),
        branch: format!("orion/{task}"),
        base: "main".into(),
        base_oid: "0".repeat(40),
        head_oid: head.into(),
        files_changed: 1,
        insertions: 1,
        deletions: 0,
        diff: format!("diff of {head}"),
        tests: None,
        attempt,
    }
}

/// Pull requests read a page at a time, each page going on from the last one read, come out
/// newest first, every one once (the dataset export reads them all so, past one page).
async fn pulls_page_on_from_the_last_one_read_and_lose_none(h: Harness) {
    let mut ours = Vec::new();
    for head in ["p1", "p2", "p3"] {
        let task = stored_task(&h).await;
        move_task(&h, task, TaskStatus::Assigned, true).await;
        move_task(&h, task, TaskStatus::Running, false).await;
        ours.push(
            h.store
                .upsert_pull(pull_version(task, head, 1))
                .await
                .unwrap()
                .id,
        );
    }
    let (mut read, mut before) = (Vec::new(), None);
    loop {
        let page = h.store.list_pulls(None, before, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        read.extend(page.iter().map(|p| p.id));
    }
    let mut sorted = read.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(read, sorted, "newest first, none twice");
    for id in ours {
        assert!(read.contains(&id), "{id} was lost between pages");
    }
}

/// A copy of a publish step that runs late, after a review sent its version back and the
/// revision put up a newer one, must not put the old version back up for review (a reviewer
/// would then be shown the version it sent back, and the task would wait on it forever): a
/// version from a run of an older attempt, or of a task no longer at work, is refused and
/// changes nothing; copies of the current attempt's version at once make one version.
async fn a_pull_version_of_an_older_attempt_writes_nothing(h: Harness) {
    let task = stored_task(&h).await;
    move_task(&h, task, TaskStatus::Assigned, true).await;
    move_task(&h, task, TaskStatus::Running, false).await;
    let first = h
        .store
        .upsert_pull(pull_version(task, "h1", 1))
        .await
        .unwrap();
    assert_eq!((first.state, first.rounds), (PullState::Open, 0));
    move_task(&h, task, TaskStatus::AwaitingReview, false).await;
    let late = h.store.upsert_pull(pull_version(task, "h1", 1)).await;
    assert!(
        matches!(
            late,
            Err(StoreError::Superseded {
                current: 1,
                status: TaskStatus::AwaitingReview,
                ..
            })
        ),
        "{late:?}"
    );
    h.store
        .review_pull(first.id, "h1", orion_bus::Decision::RequestChanges, "more")
        .await
        .unwrap();
    move_task(&h, task, TaskStatus::Running, true).await;

    let stale = h.store.upsert_pull(pull_version(task, "h1", 1)).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Superseded {
                attempt: 1,
                current: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let pull = h.store.pull(first.id).await.unwrap();
    assert_eq!(
        (pull.state, pull.head_oid.as_str(), pull.rounds),
        (PullState::ChangesRequested, "h1", 0),
        "the version sent back stays sent back"
    );

    let store = &h.store;
    let (a, b) = tokio::join!(
        store.upsert_pull(pull_version(task, "h2", 2)),
        store.upsert_pull(pull_version(task, "h2", 2))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.id, a.rounds, b.rounds),
        (first.id, 1, 1),
        "one new round"
    );
    let stale = h.store.upsert_pull(pull_version(task, "h1", 1)).await;
    assert!(
        matches!(stale, Err(StoreError::Superseded { .. })),
        "{stale:?}"
    );
    let pull = h.store.pull(first.id).await.unwrap();
    assert_eq!(
        (
            pull.state,
            pull.head_oid.as_str(),
            pull.rounds,
            pull.diff.as_str()
        ),
        (PullState::Open, "h2", 1, "diff of h2")
    );

    move_task(&h, task, TaskStatus::Cancelled, false).await;
    let ended = h.store.upsert_pull(pull_version(task, "h3", 2)).await;
    assert!(
        matches!(
            ended,
            Err(StoreError::Superseded {
                status: TaskStatus::Cancelled,
                ..
            })
        ),
        "{ended:?}"
    );
    assert_eq!(h.store.pull(first.id).await.unwrap().head_oid, "h2");
    h.finish().await;
}

/// The log's `seq` is in commit order: a reader that reads after its cursor again and again
/// while sixteen writers append at once (transitions and plain events) ends with every event
/// logged, each once: none committed behind its cursor.
async fn a_reader_after_a_cursor_misses_no_event_of_concurrent_writers(h: Harness) {
    const WRITERS: usize = 16;
    const EACH: usize = 25;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, done) = (h.store.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let (task, _) = store
                .create_task(spec(TaskKind::Analyze), None, None)
                .await
                .unwrap();
            for i in 0..EACH {
                if w % 2 == 0 {
                    store
                        .append_event(
                            task.id,
                            EventType::Progress,
                            serde_json::json!({ "i": i }),
                            None,
                        )
                        .await
                        .unwrap();
                } else {
                    let current = store.task(task.id).await.unwrap();
                    let to = match current.status {
                        TaskStatus::Running => TaskStatus::Queued,
                        TaskStatus::Queued => TaskStatus::Assigned,
                        _ => TaskStatus::Running,
                    };
                    store
                        .transition(Transition::new(&current, to))
                        .await
                        .unwrap();
                }
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let (mut cursor, mut read) = (0, Vec::new());
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
        let batch = h.store.events(None, cursor, 1000).await.unwrap();
        if let Some(last) = batch.last() {
            cursor = last.seq;
        }
        read.extend(batch.iter().map(|e| e.seq));
        if finished && batch.is_empty() {
            break;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let all: Vec<i64> = h
        .store
        .events(None, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all.len(), WRITERS * (EACH + 1));
    assert_eq!(read, all, "the reader missed or repeated an event");
    h.finish().await;
}

/// A chain of changes of one task from where a message found it (its start, then its end),
/// given to the store at once: each step applies only where the task is at the status and
/// version the step before it leaves. Where the first step fails, the second moves a task
/// that another writer put at its status and version, and never one that is at that version
/// under another status (cancelled meanwhile); a single change that names the version a task
/// is at with a status it is not at moves nothing.
async fn a_chain_of_changes_moves_a_task_only_through_the_states_it_names(h: Harness) {
    let tasks = queued_tasks(&h, 3).await;
    let mut assigned = Vec::new();
    for task in &tasks {
        let (moved, _) = h
            .store
            .transition(Transition::new(task, TaskStatus::Assigned))
            .await
            .unwrap();
        assigned.push(moved);
    }
    // The second task is cancelled, the third started by another writer, after the message
    // that found them assigned.
    h.store
        .transition(Transition::new(&assigned[1], TaskStatus::Cancelled))
        .await
        .unwrap();
    h.store
        .transition(Transition::new(&assigned[2], TaskStatus::Running))
        .await
        .unwrap();
    let chain = |task: &orion_bus::Task| {
        let start = Transition::new(task, TaskStatus::Running);
        let mut end = Transition::new(task, TaskStatus::Completed);
        end.from = TaskStatus::Running;
        end.expected_version = task.version + 1;
        end.result = Some(serde_json::json!({ "done": true }));
        vec![start, end]
    };
    let (first, second, third) = tokio::join!(
        h.store.transitions(chain(&assigned[0])),
        h.store.transitions(chain(&assigned[1])),
        h.store.transitions(chain(&assigned[2])),
    );
    let story = |outcomes: &[Result<(orion_bus::Task, orion_bus::TaskEvent), StoreError>]| {
        outcomes
            .iter()
            .map(|o| match o {
                Ok((task, event)) => Ok((task.status, task.version, event.event_type)),
                Err(StoreError::Conflict { .. }) => Err("conflict"),
                Err(e) => panic!("unexpected error {e}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        story(&first),
        [
            Ok((TaskStatus::Running, 3, EventType::Running)),
            Ok((TaskStatus::Completed, 4, EventType::Completed)),
        ]
    );
    assert_eq!(story(&second), [Err("conflict"), Err("conflict")]);
    assert_eq!(
        story(&third),
        [
            Err("conflict"),
            Ok((TaskStatus::Completed, 4, EventType::Completed)),
        ]
    );
    let (Ok((_, running)), Ok((_, completed))) = (&first[0], &first[1]) else {
        unreachable!()
    };
    assert!(running.seq < completed.seq, "the start is logged first");
    let cancelled = h.store.task(assigned[1].id).await.unwrap();
    assert_eq!(
        (
            cancelled.status,
            cancelled.version,
            cancelled.result.clone()
        ),
        (TaskStatus::Cancelled, 3, None)
    );
    assert_eq!(
        event_types(&h, assigned[1].id).await,
        [EventType::Queued, EventType::Assigned, EventType::Cancelled]
    );
    // The version it is at, a status it is not at.
    let mut forged = Transition::new(&cancelled, TaskStatus::Completed);
    forged.from = TaskStatus::Running;
    let err = h.store.transition(forged).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let still = h.store.task(assigned[1].id).await.unwrap();
    assert_eq!((still.status, still.version), (TaskStatus::Cancelled, 3));
    h.finish().await;
}

/// The same chain (a report's start and outcome) given to the store twice at once, as two
/// coordinators would with two copies of one report: one moves the task through both
/// steps, the other moves nothing and fails as conflicts, and the log has each event once.
async fn the_same_chain_twice_at_once_moves_its_task_once(h: Harness) {
    let task = queued_tasks(&h, 1).await.remove(0);
    let (assigned, _) = h
        .store
        .transition(Transition::new(&task, TaskStatus::Assigned))
        .await
        .unwrap();
    let chain = || {
        let start = Transition::new(&assigned, TaskStatus::Running);
        let mut end = Transition::new(&assigned, TaskStatus::Completed);
        end.from = TaskStatus::Running;
        end.expected_version = assigned.version + 1;
        vec![start, end]
    };
    let (first, second) = tokio::join!(h.store.transitions(chain()), h.store.transitions(chain()));
    let applied = |outcomes: &[Result<_, StoreError>]| {
        outcomes
            .iter()
            .map(|o| match o {
                Ok(_) => true,
                Err(StoreError::Conflict { .. }) => false,
                Err(e) => panic!("unexpected error {e}"),
            })
            .collect::<Vec<bool>>()
    };
    let mut both = [applied(&first), applied(&second)];
    both.sort();
    assert_eq!(both, [vec![false, false], vec![true, true]]);
    let stored = h.store.task(task.id).await.unwrap();
    assert_eq!((stored.status, stored.version), (TaskStatus::Completed, 4));
    assert_eq!(
        event_types(&h, task.id).await,
        [
            EventType::Queued,
            EventType::Assigned,
            EventType::Running,
            EventType::Completed
        ]
    );
    h.finish().await;
}

fn submit_audit(actor: &str, role: &str) -> orion_services::store::NewAudit {
    orion_services::store::NewAudit {
        actor: actor.into(),
        role: role.into(),
        action: "task.submit",
        target: None,
        detail: serde_json::json!({ "by": actor }),
    }
}

/// A submission's audit entry is stored with its task, made together with others (in one
/// group on Postgres): each new task has exactly one entry, naming it; submissions with a key
/// used before (here six at once with one key) store no second task and no second entry.
async fn a_new_task_is_stored_with_its_audit_entry_and_a_repeated_key_audits_nothing(h: Harness) {
    let store = &h.store;
    let alone = (0..4).map(|n| {
        let actor = format!("alone-{n}");
        async move {
            let audit = submit_audit(&actor, "submitter");
            let created = store
                .create_audited_task(spec(TaskKind::Analyze), None, None, Some(audit))
                .await;
            (actor, created.unwrap())
        }
    });
    let keyed = (0..6).map(|n| {
        let audit = submit_audit(&format!("keyed-{n}"), "submitter");
        h.store
            .create_audited_task(spec(TaskKind::Analyze), Some("same-key"), None, Some(audit))
    });
    let (alone, keyed) = tokio::join!(
        futures_util::future::join_all(alone),
        futures_util::future::join_all(keyed)
    );
    let keyed: Vec<_> = keyed.into_iter().map(Result::unwrap).collect();
    assert_eq!(keyed.iter().filter(|(_, event)| event.is_some()).count(), 1);
    assert_eq!(tasks_stored(&h).await, 5);
    let log = h.store.audit(0, 100).await.unwrap();
    assert_eq!(log.len(), 5, "{log:?}");
    for (actor, (task, _)) in &alone {
        let entries: Vec<_> = log.iter().filter(|e| &e.actor == actor).collect();
        assert_eq!(entries.len(), 1, "{actor}: {log:?}");
        assert_eq!(entries[0].target, Some(task.id.to_string()));
        assert_eq!(entries[0].action, "task.submit");
        assert_eq!(entries[0].detail, serde_json::json!({ "by": actor }));
    }
    let keyed_task = keyed[0].0.id.to_string();
    let keyed_entries: Vec<_> = log
        .iter()
        .filter(|e| e.actor.starts_with("keyed-"))
        .collect();
    assert_eq!(keyed_entries.len(), 1, "{log:?}");
    assert_eq!(keyed_entries[0].target, Some(keyed_task));
    h.finish().await;
}

macro_rules! on_both_databases {
    ($($case:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Harness::postgres().await).await })+
        }
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Harness::sqlite().await).await })+
        }
    };
}

on_both_databases!(
    a_new_task_is_stored_with_its_audit_entry_and_a_repeated_key_audits_nothing,
    the_same_chain_twice_at_once_moves_its_task_once,
    a_chain_of_changes_moves_a_task_only_through_the_states_it_names,
    a_reader_after_a_cursor_misses_no_event_of_concurrent_writers,
    a_pull_version_of_an_older_attempt_writes_nothing,
    pulls_page_on_from_the_last_one_read_and_lose_none,
    a_task_is_stored_with_its_first_event,
    an_idempotency_key_returns_the_first_task,
    a_transition_moves_the_version_and_logs_an_event,
    a_stale_version_is_rejected_and_changes_nothing,
    an_illegal_transition_is_rejected_and_changes_nothing,
    concurrent_writers_cannot_both_move_a_task,
    listing_filters_and_pages_newest_first,
    events_resume_after_a_sequence_number,
    snapshots_are_saved_and_replaced,
    of_runs_claiming_one_effect_at_once_exactly_one_acts,
    a_newer_attempt_fences_out_an_older_one,
    a_claim_passes_on_when_its_lease_runs_out_and_only_once,
    function_lists_are_whole_apart_and_end_with_their_task,
);

/// A writer that holds the event log's lock and does not commit (frozen, or cut off from the
/// database) stops other writers' events for at most 10 s: they fail as in an outage, to be
/// tried again, and write nothing; once the lock is free, they write.
#[tokio::test]
async fn a_held_event_log_lock_makes_writers_fail_in_time_not_wait_forever() {
    let h = Harness::postgres().await;
    let task = stored_task(&h).await;
    let before = h.store.events(Some(task), 0, 100).await.unwrap().len();
    let url = h.pg.as_ref().unwrap().url.clone();
    let holder = sea_orm::Database::connect(&url).await.unwrap();
    holder
        .execute_unprepared("SELECT pg_advisory_lock(478660882286)")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let blocked = h
        .store
        .append_event(task, EventType::Progress, serde_json::json!({}), None)
        .await;
    assert!(
        matches!(blocked, Err(StoreError::Unavailable(_))),
        "{blocked:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        h.store.events(Some(task), 0, 100).await.unwrap().len(),
        before
    );
    holder.close().await.unwrap();
    h.store
        .append_event(task, EventType::Progress, serde_json::json!({}), None)
        .await
        .unwrap();
    assert_eq!(
        h.store.events(Some(task), 0, 100).await.unwrap().len(),
        before + 1
    );
    h.finish().await;
}

/// Postgres commits the task log's writes in groups. Writes made together (on this
/// single-threaded runtime, all of them reach the writer before it runs, so they share a
/// transaction): two changes of each task from the same version, notes, new tasks, and a
/// change of and a note on a task that does not exist. Of each task's two changes exactly one
/// moves it and the other fails alone as a conflict; the writes on the missing task fail as
/// not found; the rest of the group is stored, each write with its own event, in the order
/// the log gives them.
#[tokio::test]
async fn writes_committed_together_fail_only_where_their_own_row_does() {
    let h = Harness::postgres().await;
    let tasks = queued_tasks(&h, 30).await;
    let store = &h.store;
    let moves = tasks.iter().flat_map(|task| {
        [1, 2].map(|n| {
            let mut change = Transition::new(task, TaskStatus::Assigned);
            change.count_attempt = true;
            change.data = serde_json::json!({ "by": n });
            store.transition(change)
        })
    });
    let notes = tasks.iter().map(|task| {
        store.append_event(
            task.id,
            EventType::Progress,
            serde_json::json!({ "note": 1 }),
            None,
        )
    });
    let news = (0..10).map(|_| store.create_task(spec(TaskKind::Develop), None, Some("n2")));
    let missing = orion_bus::TaskId::new();
    let ghost = {
        let mut ghost = tasks[0].clone();
        ghost.id = missing;
        store.transition(Transition::new(&ghost, TaskStatus::Assigned))
    };
    let ghost_note = store.append_event(missing, EventType::Progress, serde_json::json!({}), None);
    let audits = (0..5).map(|n| {
        store.record_audit(orion_services::store::NewAudit {
            actor: format!("someone-{n}"),
            role: "submitter".into(),
            action: "task.submit",
            target: None,
            detail: serde_json::json!({ "n": n }),
        })
    });
    let (moved, noted, created, (ghost, ghost_note), audited) = tokio::join!(
        futures_util::future::join_all(moves),
        futures_util::future::join_all(notes),
        futures_util::future::join_all(news),
        async { tokio::join!(ghost, ghost_note) },
        futures_util::future::join_all(audits)
    );
    let audited: Vec<_> = audited.into_iter().map(Result::unwrap).collect();
    let log = h.store.audit(0, 100).await.unwrap();
    assert_eq!(
        log, audited,
        "the audit entries answered are the ones stored"
    );
    assert!(
        audited
            .iter()
            .enumerate()
            .all(|(n, e)| e.actor == format!("someone-{n}") && e.detail["n"] == n),
        "{audited:?}"
    );
    assert!(
        matches!(ghost, Err(StoreError::NotFound(id)) if id == missing),
        "{ghost:?}"
    );
    assert!(
        matches!(ghost_note, Err(StoreError::NotFound(id)) if id == missing),
        "{ghost_note:?}"
    );
    for (task, pair) in tasks.iter().zip(moved.chunks(2)) {
        let won: Vec<_> = pair.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{pair:?}");
        let lost = pair.iter().find_map(|r| r.as_ref().err()).expect("a loser");
        assert!(
            matches!(lost, StoreError::Conflict { task: t, expected: 1, actual: 2 } if *t == task.id),
            "{lost:?}"
        );
        let (moved, event) = won[0];
        assert_eq!(
            (moved.status, moved.version, moved.attempts),
            (TaskStatus::Assigned, 2, 1)
        );
        let stored = h.store.events(Some(task.id), 0, 100).await.unwrap();
        let kinds: Vec<_> = stored.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == EventType::Assigned).count(),
            1,
            "{kinds:?}"
        );
        assert!(
            stored.contains(event),
            "the answered event is the stored one"
        );
        assert_eq!(h.store.task(task.id).await.unwrap(), *moved);
    }
    for note in &noted {
        let note = note.as_ref().unwrap();
        assert_eq!((note.event_type, note.status), (EventType::Progress, None));
    }
    for new in &created {
        let (task, event) = new.as_ref().unwrap();
        let event = event.as_ref().expect("its queued event");
        assert_eq!(
            (event.task_id, event.node.as_deref()),
            (task.id, Some("n2"))
        );
        assert_eq!(h.store.task(task.id).await.unwrap(), *task);
    }
    // One group: its events were written together, in the order the writes were made
    // (the winning changes, the notes, the new tasks), with consecutive `seq`s and one time.
    let group: Vec<orion_bus::TaskEvent> = moved
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(_, e)| e.clone()))
        .chain(noted.iter().map(|r| r.as_ref().unwrap().clone()))
        .chain(
            created
                .iter()
                .map(|r| r.as_ref().unwrap().1.clone().unwrap()),
        )
        .collect();
    assert_eq!(group.len(), 70);
    assert!(
        group
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].at == w[0].at),
        "{:?}",
        group.iter().map(|e| (e.seq, e.at)).collect::<Vec<_>>()
    );
    // The log: every event once.
    let log = h.store.events(None, 0, 1000).await.unwrap();
    assert_eq!(log.len(), 30 + 30 + 30 + 10);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    h.finish().await;
}

/// A write of a group that the database refuses for its data (an error code longer than its
/// column) fails alone; the others of its group are stored.
#[tokio::test]
async fn a_write_refused_for_its_data_fails_alone_in_its_group() {
    let h = Harness::postgres().await;
    let tasks = queued_tasks(&h, 8).await;
    let changes = tasks.iter().enumerate().map(|(i, task)| {
        let mut change = Transition::new(task, TaskStatus::Failed);
        let code = if i == 3 {
            "x".repeat(100)
        } else {
            "boom".into()
        };
        change.error = Some(TaskFailure::new(code, "it failed"));
        h.store.transition(change)
    });
    let outcomes = futures_util::future::join_all(changes).await;
    for (i, (task, outcome)) in tasks.iter().zip(&outcomes).enumerate() {
        let stored = h.store.task(task.id).await.unwrap();
        let events = h.store.events(Some(task.id), 0, 100).await.unwrap().len();
        if i == 3 {
            assert!(
                matches!(outcome, Err(StoreError::Unavailable(_))),
                "{outcome:?}"
            );
            assert_eq!(
                (stored.status, stored.version, events),
                (TaskStatus::Queued, 1, 1)
            );
        } else {
            assert!(outcome.is_ok(), "{outcome:?}");
            assert_eq!(
                (stored.status, stored.version, events),
                (TaskStatus::Failed, 2, 2)
            );
        }
    }
    h.finish().await;
}

/// A new task whose audit entry the database refuses (a role longer than its column) is not
/// stored either, though it was sent with others in one group: it fails alone, with no task,
/// event or entry left of it, and the others are stored with their entries.
#[tokio::test]
async fn a_task_whose_audit_entry_is_refused_is_not_stored_and_fails_alone() {
    let h = Harness::postgres().await;
    let submissions = (0..6).map(|n| {
        let role = if n == 2 {
            "r".repeat(40)
        } else {
            "submitter".into()
        };
        let audit = submit_audit(&format!("actor-{n}"), &role);
        h.store
            .create_audited_task(spec(TaskKind::Analyze), None, None, Some(audit))
    });
    let answers = futures_util::future::join_all(submissions).await;
    for (n, answer) in answers.iter().enumerate() {
        if n == 2 {
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        } else {
            assert!(answer.is_ok(), "{answer:?}");
        }
    }
    assert_eq!(tasks_stored(&h).await, 5);
    assert_eq!(h.store.events(None, 0, 100).await.unwrap().len(), 5);
    let log = h.store.audit(0, 100).await.unwrap();
    let mut targets: Vec<_> = log.iter().filter_map(|e| e.target.clone()).collect();
    let mut stored: Vec<_> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|(task, _)| task.id.to_string())
        .collect();
    targets.sort();
    stored.sort();
    assert_eq!(targets, stored);
    assert!(log.iter().all(|e| e.actor != "actor-2"), "{log:?}");
    h.finish().await;
}

/// Submissions with one idempotency key, made together (in one group), store one task: every
/// one of them is answered with it, and one only as its creator.
#[tokio::test]
async fn one_idempotency_key_in_one_group_stores_one_task() {
    let h = Harness::postgres().await;
    let submissions = (0..6).map(|_| {
        h.store
            .create_task(spec(TaskKind::Analyze), Some("same-key"), None)
    });
    let answers: Vec<_> = futures_util::future::join_all(submissions)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        answers.iter().filter(|(_, event)| event.is_some()).count(),
        1
    );
    assert!(answers.iter().all(|(task, _)| task.id == answers[0].0.id));
    assert_eq!(tasks_stored(&h).await, 1);
    assert_eq!(h.store.events(None, 0, 100).await.unwrap().len(), 1);
    h.finish().await;
}

/// A table's counters in Postgres's statistics: sequential scans, index entries read, rows
/// inserted, updated and deleted. A backend reports them when it goes idle after a commit,
/// within a second or so (a minute at most).
async fn table_counters(h: &Harness, table: &str) -> [i64; 5] {
    let row = h
        .store
        .connection()
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT seq_scan, (SELECT COALESCE(sum(idx_tup_read), 0)::bigint \
             FROM pg_stat_user_indexes i WHERE i.relid = t.relid) AS idx_tup_read, \
             n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables t WHERE relname = $1",
            [table.into()],
        ))
        .await
        .unwrap()
        .expect("a table of the store");
    [
        "seq_scan",
        "idx_tup_read",
        "n_tup_ins",
        "n_tup_upd",
        "n_tup_del",
    ]
    .map(|c| row.try_get("", c).unwrap())
}

/// Waits until `table`'s rows inserted, updated and deleted are `rows` (so that what the
/// transactions that wrote them read is counted too), and answers its sequential scans and
/// index entries read.
async fn reads_once_counted(h: &Harness, table: &str, rows: [i64; 3]) -> [i64; 2] {
    crate::support::eventually(
        &format!("{table}'s statistics to count {rows:?}"),
        Duration::from_secs(70),
        || async {
            let [seq_scan, index_read, ins, upd, del] = table_counters(h, table).await;
            ([ins, upd, del] == rows).then_some([seq_scan, index_read])
        },
    )
    .await
}

/// Moves each of `tasks` to assigned by two changes from one version at once (one loses as a
/// conflict), notes on each, then ends each: every statement a group can run on `tasks`.
async fn move_note_and_end(h: &Harness, tasks: &[orion_bus::Task]) {
    let store = &h.store;
    let moves = tasks.iter().flat_map(|task| {
        [1, 2].map(|n| {
            let mut change = Transition::new(task, TaskStatus::Assigned);
            change.data = serde_json::json!({ "by": n });
            store.transition(change)
        })
    });
    let moved = futures_util::future::join_all(moves).await;
    assert_eq!(
        moved.iter().filter(|r| r.is_ok()).count(),
        tasks.len(),
        "{moved:?}"
    );
    let notes = tasks
        .iter()
        .map(|task| store.append_event(task.id, EventType::Progress, serde_json::json!({}), None));
    for noted in futures_util::future::join_all(notes).await {
        noted.unwrap();
    }
    let ends = moved
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(task, _)| store.transition(Transition::new(task, TaskStatus::Cancelled)));
    for ended in futures_util::future::join_all(ends).await {
        ended.unwrap();
    }
}

/// A group finds its rows by their key, not by scanning the table or an index of it, however
/// small the table was when Postgres planned the group's statements, and though it has never
/// analyzed it (a new database's: here autovacuum is kept off it). Every statement is planned
/// once for good on its first run (`force_generic_plan`), in groups on a table of a few
/// tasks; then, with a backlog of 10,000 other tasks, queued and assigned as the group's own
/// are, and 50,000 function rows stored, groups that move tasks, note on them and end them
/// (dropping their function lists) scan neither `tasks` nor `task_functions` and read a few
/// index entries per write, not the backlog's.
#[tokio::test]
async fn a_group_reads_its_rows_by_key_not_by_scanning_the_table() {
    let pg = PgDatabase::create().await;
    let admin = sea_orm::Database::connect(&pg.url).await.unwrap();
    admin
        .execute_unprepared(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = \
             force_generic_plan', current_database()); END $$",
        )
        .await
        .unwrap();
    admin.close().await.unwrap();
    // Connected after the setting, so every connection of the store has it.
    let h = Harness::on_postgres(pg).await;
    h.store
        .connection()
        .execute_unprepared(
            "ALTER TABLE tasks SET (autovacuum_enabled = false); \
             ALTER TABLE task_functions SET (autovacuum_enabled = false);",
        )
        .await
        .unwrap();
    for _ in 0..12 {
        let few = queued_tasks(&h, 3).await;
        move_note_and_end(&h, &few).await;
    }
    // The backlog's ids sort before the tasks' own (time-ordered) ones, so that a walk of the
    // key's index up to them would read it all.
    h.store
        .connection()
        .execute_unprepared(
            "INSERT INTO tasks (id, kind, repo, priority, status, version, attempts, \
               created_at, updated_at) \
             SELECT overlay(md5(g::text) placing '00' from 1)::uuid, 'analyze', '.', 'normal', \
               CASE WHEN g % 2 = 0 THEN 'queued' ELSE 'assigned' END, 1, 0, now(), now() \
             FROM generate_series(1, 10000) g; \
             INSERT INTO task_functions SELECT t.id, t.id, g, 'a.rs', 'rust', 'f', 1, 2, 0, 1, \
               1, 1 FROM tasks t, generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let tasks = queued_tasks(&h, 40).await;
    for task in &tasks {
        let rows = function_rows(3, "kept");
        h.store
            .save_functions(task.id, uuid::Uuid::now_v7(), &rows)
            .await
            .unwrap();
    }
    // The warm-up's 36 tasks were moved twice each; their function rows, none.
    let (inserted, functions) = (36 + 10_000 + 40, (36 + 10_000) * 5 + 120);
    let [tasks_scanned, tasks_read] = reads_once_counted(&h, "tasks", [inserted, 72, 0]).await;
    let [functions_scanned, functions_read] =
        reads_once_counted(&h, "task_functions", [functions, 0, 0]).await;

    move_note_and_end(&h, &tasks).await;

    let [scanned, read] = reads_once_counted(&h, "tasks", [inserted, 72 + 80, 0]).await;
    assert_eq!(scanned, tasks_scanned, "no sequential scan of tasks");
    assert!(
        read - tasks_read < 2_000,
        "{} index entries of tasks read for 40 tasks' groups",
        read - tasks_read
    );
    let [scanned, read] = reads_once_counted(&h, "task_functions", [functions, 0, 120]).await;
    assert_eq!(
        scanned, functions_scanned,
        "no sequential scan of task_functions"
    );
    assert!(
        read - functions_read < 2_000,
        "{} index entries of task_functions read for 40 tasks' groups",
        read - functions_read
    );
    h.finish().await;
}

/// Two processes' groups (two stores, each with its writer) that move the same tasks and
/// submit with the same idempotency keys, made in opposite orders at once: rows are locked in
/// id order and new tasks inserted in key order, so neither group waits on the other in a
/// cycle. Every write lands or loses a race (a conflict); none fails as a deadlock would, and
/// each key stores one task that every submission with it is answered with.
#[tokio::test]
async fn two_processes_groups_over_the_same_rows_and_keys_in_opposite_orders_all_land() {
    let h = Harness::postgres().await;
    let other = SqlStore::connect(&h.pg.as_ref().unwrap().url)
        .await
        .expect("a second process's store");
    let tasks = queued_tasks(&h, 20).await;
    let keys: Vec<String> = (0..50).map(|k| format!("key-{k:02}")).collect();
    let ((moves_a, news_a), (moves_b, news_b)) = tokio::join!(
        opposite_group(&h.store, &tasks, &keys, false),
        opposite_group(&other, &tasks, &keys, true)
    );
    let mut won = std::collections::HashMap::new();
    for outcome in moves_a.iter().chain(&moves_b) {
        match outcome {
            Ok((task, _)) => *won.entry(task.id).or_insert(0) += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("a write failed instead of landing or losing a race: {e}"),
        }
    }
    assert_eq!(won.len(), tasks.len());
    assert!(won.values().all(|n| *n == 1), "{won:?}");
    let mut by_key = std::collections::HashMap::new();
    let mut created = 0;
    for (k, outcome) in (0..keys.len())
        .chain((0..keys.len()).rev())
        .zip(news_a.iter().chain(&news_b))
    {
        let (task, event) = match outcome {
            Ok(answer) => answer,
            Err(e) => panic!("a submission failed: {e}"),
        };
        created += usize::from(event.is_some());
        assert_eq!(*by_key.entry(k).or_insert(task.id), task.id, "key {k}");
    }
    assert_eq!(created, keys.len());
    other.connection().clone().close().await.expect("close");
    h.finish().await;
}

type Moved = Result<(orion_bus::Task, orion_bus::TaskEvent), StoreError>;
type Created = Result<(orion_bus::Task, Option<orion_bus::TaskEvent>), StoreError>;

/// Moves every task from its version and submits with every key, made together, in order or
/// in reverse.
async fn opposite_group(
    store: &SqlStore,
    tasks: &[orion_bus::Task],
    keys: &[String],
    reverse: bool,
) -> (Vec<Moved>, Vec<Created>) {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    let mut key_order: Vec<usize> = (0..keys.len()).collect();
    if reverse {
        order.reverse();
        key_order.reverse();
    }
    let moves = order
        .into_iter()
        .map(|i| store.transition(Transition::new(&tasks[i], TaskStatus::Assigned)));
    let news = key_order
        .into_iter()
        .map(|k| store.create_task(spec(TaskKind::Develop), Some(keys[k].as_str()), None));
    tokio::join!(
        futures_util::future::join_all(moves),
        futures_util::future::join_all(news)
    )
}
