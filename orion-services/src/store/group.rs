//! Group commit on Postgres: the task log's writes (new tasks, status changes, notes) from
//! many callers, committed together.
//!
//! Every write to the log takes the log's advisory lock and holds it until it commits (see
//! [`super::sql`]), so one-at-a-time writes are bounded by one commit (its WAL flush) each.
//! Here a single writer per store takes what has queued up while it was busy, up to
//! [`MAX_BATCH`] writes, and commits them in one transaction of a few multi-row statements:
//!
//! 1. new tasks, one `INSERT … ON CONFLICT DO NOTHING` in idempotency-key order (a repeated
//!    key inserts nothing, and the caller is given the task stored first; two groups with the
//!    same keys wait for each other in one order, not in a cycle);
//! 2. the status changes, one `UPDATE … FROM` guarded by version and status that first
//!    locks their rows in id order (`FOR NO KEY UPDATE`), so that two writers' groups cannot
//!    deadlock: a change whose task moved meanwhile (or is gone) updates nothing and fails
//!    alone, as [`StoreError::Conflict`] (or [`StoreError::NotFound`]), and the rest of the
//!    batch goes on. A second change of a task in the batch (the next step of a chain, see
//!    [`super::TaskStore::transitions`]) is made by a second statement, after the first, on
//!    rows the group holds already;
//! 3. the function lists of tasks that end, as a one-at-a-time change removes them;
//! 4. audit entries (new tasks' submissions', and those written alone), in one `INSERT`;
//! 5. every event of the batch in one `INSERT`, in the batch's order, under the log's
//!    advisory lock, taken once.
//!
//! Every statement finds the rows it reads, locks, changes or deletes by their key, through
//! `= ANY(ARRAY(…))` over the batch's ids, and is planned with sequential scans off. A
//! connection keeps one plan per statement after its first few runs (a generic plan), made
//! for the table as it was then. Made for a small table, or one Postgres had not analyzed
//! yet (a new database's), a plain join's plan scanned the whole table in every group, a
//! cost that grew with the table.
//!
//! Every wait of a group is bounded (10 s for a lock, 10 s idle in the transaction).
//! A caller is answered only after the batch commits, so what it acknowledges or publishes
//! next is stored. A batch the database refuses for one write's data is written again one
//! write at a time, so that only that write fails; any other failure (a lock not had in
//! time, a lost connection, a failed commit) fails the whole batch as an outage, to be tried
//! again (after a failed commit it may or may not have been stored, as a lone commit's).

use chrono::Utc;
use orion_bus::{EventType, Task, TaskEvent, TaskId, TaskSpec, TaskStatus};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult, Statement,
    TransactionTrait,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::access::to_audit;
use super::entity::{audit_log, task, task_event};
use super::sql::{SqlStore, to_event, to_task};
use super::{AuditEntry, NewAudit, StoreError, Transition};

/// The most writes one transaction carries.
pub(super) const MAX_BATCH: usize = 256;

/// A new task to store, with its first event and, where given, its audit entry (whose
/// target becomes the task's id).
pub(super) struct NewTask {
    pub spec: TaskSpec,
    pub key: Option<String>,
    pub node: Option<String>,
    pub audit: Option<NewAudit>,
}

/// What a new task's write came to.
pub(super) enum Created {
    Stored(Box<(Task, TaskEvent)>),
    /// Its idempotency key was taken (by a task stored earlier or in the same batch).
    KeyTaken,
}

/// A note that changes no status.
pub(super) struct Note {
    pub task: TaskId,
    pub event_type: EventType,
    pub data: Value,
    pub node: Option<String>,
}

/// One write, and where its outcome goes.
pub(super) enum Write {
    Create(Box<NewTask>, oneshot::Sender<Result<Created, StoreError>>),
    Move(
        Transition,
        oneshot::Sender<Result<(Task, TaskEvent), StoreError>>,
    ),
    Note(Note, oneshot::Sender<Result<TaskEvent, StoreError>>),
    /// An entry of the audit log written alone (a submission's travels with its task).
    Audit(NewAudit, oneshot::Sender<Result<AuditEntry, StoreError>>),
}

/// The queue to a store's writer; the writer runs while a sender is held.
pub(super) type Queue = mpsc::UnboundedSender<Write>;

/// Starts a writer for `store` on the current runtime.
pub(super) fn start(store: SqlStore) -> Queue {
    let (queue, writes) = mpsc::unbounded_channel();
    tokio::spawn(run(store, writes));
    queue
}

async fn run(store: SqlStore, mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = writes.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        write_batch(&store, batch).await;
    }
}

/// The outcome of each write of a batch, in the batch's order.
enum Outcome {
    Created(Result<Created, StoreError>),
    Moved(Result<Box<(Task, TaskEvent)>, StoreError>),
    Noted(Result<TaskEvent, StoreError>),
    Audited(Result<AuditEntry, StoreError>),
}

async fn write_batch(store: &SqlStore, batch: Vec<Write>) {
    let started = std::time::Instant::now();
    let writes = batch.len();
    write_group(store, batch).await;
    tracing::debug!(
        writes,
        took_us = started.elapsed().as_micros() as u64,
        "a group committed"
    );
}

async fn write_group(store: &SqlStore, batch: Vec<Write>) {
    let outcomes = match store.connection().begin().await {
        Ok(txn) => match in_transaction(&txn, &batch).await {
            Ok(outcomes) => match txn.commit().await {
                Ok(()) => Some(outcomes),
                Err(e) => {
                    // It may have been stored or not: every writer is told so, as one whose
                    // own commit failed would be.
                    let why = e.to_string();
                    answer_all(batch, || {
                        StoreError::Unavailable(sea_orm::DbErr::Custom(why.clone()))
                    });
                    return;
                }
            },
            Err(e) if refused_data(&e) && batch.len() > 1 => {
                // One write's data was refused (a value too long, say): each write is made
                // alone, so that only that one fails.
                tracing::debug!(error = %e, writes = batch.len(), "a batch was refused; its writes are made one at a time");
                drop(txn);
                None
            }
            Err(e) => {
                // The database failed (a lock not had in time, a lost connection): every
                // write of the batch would fail alike.
                let why = e.to_string();
                drop(txn);
                answer_all(batch, || {
                    StoreError::Unavailable(sea_orm::DbErr::Custom(why.clone()))
                });
                return;
            }
        },
        Err(e) => {
            let why = e.to_string();
            answer_all(batch, || {
                StoreError::Unavailable(sea_orm::DbErr::Custom(why.clone()))
            });
            return;
        }
    };
    let Some(outcomes) = outcomes else {
        one_at_a_time(store, batch).await;
        return;
    };
    for (write, outcome) in batch.into_iter().zip(outcomes) {
        // A caller that gave up waiting has nothing to be told.
        match (write, outcome) {
            (Write::Create(_, tx), Outcome::Created(r)) => drop(tx.send(r)),
            (Write::Move(_, tx), Outcome::Moved(r)) => drop(tx.send(r.map(|moved| *moved))),
            (Write::Note(_, tx), Outcome::Noted(r)) => drop(tx.send(r)),
            (Write::Audit(_, tx), Outcome::Audited(r)) => drop(tx.send(r)),
            _ => unreachable!("outcomes are made in the batch's order"),
        }
    }
}

/// Whether the database refused a statement for its data (SQLSTATE classes 22 and 23: a value
/// out of range or too long, a constraint), or the batch's own checks failed: a fault of one
/// write, not of the database.
fn refused_data(error: &StoreError) -> bool {
    let StoreError::Unavailable(
        sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)),
    ) = error
    else {
        return matches!(error, StoreError::Corrupt(_));
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

fn answer_all(batch: Vec<Write>, error: impl Fn() -> StoreError) {
    for write in batch {
        match write {
            Write::Create(_, tx) => drop(tx.send(Err(error()))),
            Write::Move(_, tx) => drop(tx.send(Err(error()))),
            Write::Note(_, tx) => drop(tx.send(Err(error()))),
            Write::Audit(_, tx) => drop(tx.send(Err(error()))),
        }
    }
}

pub(super) async fn one_at_a_time(store: &SqlStore, batch: Vec<Write>) {
    for write in batch {
        match write {
            Write::Create(new, tx) => {
                let r = store
                    .create_one(new.spec, new.key.as_deref(), new.node.as_deref(), new.audit)
                    .await
                    .map(|(task, event)| match event {
                        Some(event) => Created::Stored(Box::new((task, event))),
                        None => Created::KeyTaken,
                    });
                drop(tx.send(r));
            }
            Write::Move(change, tx) => drop(tx.send(store.transition_one(change).await)),
            Write::Note(note, tx) => {
                let r = store
                    .append_one(note.task, note.event_type, note.data, note.node.as_deref())
                    .await;
                drop(tx.send(r));
            }
            Write::Audit(entry, tx) => drop(tx.send(store.audit_one(entry).await)),
        }
    }
}

fn statement(sql: &str, rows: &[Value]) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [serde_json::to_string(rows)
            .expect("JSON values serialize")
            .into()],
    )
}

fn text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
}

/// An event to insert, and which write it is the event of.
struct NewEvent {
    write: usize,
    task: TaskId,
    event_type: EventType,
    status: Option<TaskStatus>,
    data: Value,
    node: Option<String>,
}

/// The bounds of a group's waits, the log's lock's too (as
/// [`super::sql::TAKE_EVENT_LOG_LOCK`] bounds one write's); and no sequential scan in the
/// plans of the group's statements (see the module's documentation).
const GROUP_SETTINGS: &str = "SET LOCAL lock_timeout = '10s'; \
     SET LOCAL idle_in_transaction_session_timeout = '10s'; \
     SET LOCAL enable_seqscan = off";

const INSERT_TASKS: &str = "INSERT INTO tasks (id, kind, repo, prompt, git_ref, diff, budget_usd, \
     input, origin, submitted_by, priority, status, version, attempts, idempotency_key, \
     created_at, updated_at) \
     SELECT i.id, i.kind, i.repo, i.prompt, i.git_ref, i.diff, i.budget_usd, i.input::jsonb, \
     i.origin::jsonb, i.submitted_by, i.priority, 'queued', 1, 0, i.key, i.at, i.at \
     FROM jsonb_to_recordset($1::jsonb) AS i(ord int, id uuid, kind text, repo text, \
     prompt text, git_ref text, diff text, budget_usd double precision, input text, \
     origin text, submitted_by text, priority text, key text, at timestamptz) \
     ORDER BY i.key, i.ord \
     ON CONFLICT DO NOTHING \
     RETURNING *";

/// Which of the tasks exist, at which version (read for the changes that moved nothing, and
/// for the notes).
const TASK_VERSIONS: &str = "SELECT id, version FROM tasks \
     WHERE id = ANY(ARRAY(SELECT value::uuid FROM jsonb_array_elements_text($1::jsonb)))";

/// The version-guarded changes. The rows are locked first, in id order (`l`): the update
/// can only join a row once `l` has locked it, so any wait for another writer's row comes in
/// id order, and two groups cannot wait for each other in a cycle. The guard reads the row
/// as `l` locked it (its latest version), and `t` is joined by its key alone: a condition on
/// `t.status` would let Postgres reach `t` through the index on status, reading every task
/// of that status.
const MOVE_TASKS: &str = "UPDATE tasks t SET status = i.status, version = i.expected + 1, \
     attempts = t.attempts + i.add_attempt, updated_at = i.at, \
     result = CASE WHEN i.set_result THEN i.result::jsonb ELSE t.result END, \
     kind = COALESCE(i.kind, t.kind), \
     error_code = CASE WHEN i.set_error THEN i.error_code ELSE t.error_code END, \
     error_message = CASE WHEN i.set_error THEN i.error_message ELSE t.error_message END \
     FROM jsonb_to_recordset($1::jsonb) AS i(ord int, id uuid, expected bigint, \
     from_status text, status text, add_attempt int, set_result bool, result text, kind text, set_error bool, \
     error_code text, error_message text, at timestamptz), \
     (SELECT id, version, status FROM tasks WHERE id = \
     ANY(ARRAY(SELECT (x->>'id')::uuid FROM jsonb_array_elements($1::jsonb) x)) \
     ORDER BY id FOR NO KEY UPDATE) l \
     WHERE t.id = i.id AND t.id = l.id AND l.version = i.expected \
     AND l.status = i.from_status \
     RETURNING t.*, i.ord AS batch_ord";

/// A task that ends keeps only the function list its result names.
const DROP_FUNCTIONS: &str = "DELETE FROM task_functions f \
     USING jsonb_to_recordset($1::jsonb) AS k(task_id uuid, keep uuid) \
     WHERE f.task_id = ANY(ARRAY(SELECT (x->>'task_id')::uuid \
     FROM jsonb_array_elements($1::jsonb) x)) \
     AND f.task_id = k.task_id AND (k.keep IS NULL OR f.list_id <> k.keep)";

/// The events, under the log's lock (taken once, before any row is inserted and so before
/// any `seq` is drawn: the sort needs every row of the join with `l` first), stamped with
/// the time the lock was had. The group's first statement bounds the wait for the lock.
const INSERT_EVENTS: &str = "WITH l AS MATERIALIZED \
     (SELECT pg_advisory_xact_lock(478660882286) AS locked, clock_timestamp() AS at) \
     INSERT INTO task_events (task_id, event_type, status, data, node, at) \
     SELECT e.task_id, e.event_type, e.status, e.data::jsonb, e.node, l.at \
     FROM jsonb_to_recordset($1::jsonb) AS e(ord int, task_id uuid, event_type text, \
     status text, data text, node text), l \
     ORDER BY e.ord \
     RETURNING *";

const INSERT_AUDIT: &str = "INSERT INTO audit_log (at, actor, role, action, target, detail) \
     SELECT a.at, a.actor, a.role, a.action, a.target, a.detail::jsonb \
     FROM jsonb_to_recordset($1::jsonb) AS a(ord int, at timestamptz, actor text, role text, \
     action text, target text, detail text) \
     ORDER BY a.ord \
     RETURNING *";

async fn in_transaction(
    txn: &DatabaseTransaction,
    batch: &[Write],
) -> Result<Vec<Outcome>, StoreError> {
    // Every wait of the group is bounded, not only the log's lock: a row held by a frozen
    // writer fails the group as an outage (its writes are tried again), and does not stop
    // the writer, and every write queued behind it, for good.
    txn.execute_unprepared(GROUP_SETTINGS).await?;
    let now = Utc::now();
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut events: Vec<NewEvent> = Vec::new();
    let mut tasks: Vec<Option<Task>> = batch.iter().map(|_| None).collect();

    // 1. New tasks.
    let mut new_rows = Vec::new();
    for (i, write) in batch.iter().enumerate() {
        if let Write::Create(new, _) = write {
            let spec = &new.spec;
            new_rows.push(json!({
                "ord": i,
                "id": TaskId::new().as_uuid(),
                "kind": spec.kind.as_str(),
                "repo": spec.repo,
                "prompt": spec.prompt,
                "git_ref": spec.git_ref,
                "diff": spec.diff,
                "budget_usd": spec.budget_usd,
                "input": text(&spec.input),
                "origin": spec.origin.as_ref().map(|o| json!(o).to_string()),
                "submitted_by": spec.submitted_by,
                "priority": spec.priority.as_str(),
                "key": new.key,
                "at": now,
            }));
        }
    }
    if !new_rows.is_empty() {
        let inserted = task::Entity::find()
            .from_raw_sql(statement(INSERT_TASKS, &new_rows))
            .all(txn)
            .await?;
        let mut by_id: std::collections::HashMap<uuid::Uuid, task::Model> =
            inserted.into_iter().map(|m| (m.id, m)).collect();
        for row in &new_rows {
            let i = row["ord"].as_u64().unwrap_or_default() as usize;
            let id: uuid::Uuid = serde_json::from_value(row["id"].clone())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match by_id.remove(&id) {
                Some(model) => {
                    let task = to_task(model)?;
                    events.push(NewEvent {
                        write: i,
                        task: task.id,
                        event_type: EventType::Queued,
                        status: Some(TaskStatus::Queued),
                        data: Value::Null,
                        node: node_of(&batch[i]),
                    });
                    tasks[i] = Some(task);
                }
                None => outcomes[i] = Some(Outcome::Created(Ok(Created::KeyTaken))),
            }
        }
    }

    // 2–3. Status changes, and the function lists of tasks that end.
    let mut move_rows: Vec<(TaskId, Value)> = Vec::new();
    for (i, write) in batch.iter().enumerate() {
        if let Write::Move(change, _) = write {
            if let Err(e) = change.from.check(change.to) {
                outcomes[i] = Some(Outcome::Moved(Err(e.into())));
                continue;
            }
            move_rows.push((
                change.task,
                json!({
                    "ord": i,
                    "id": change.task.as_uuid(),
                    "expected": change.expected_version,
                    "from_status": change.from.as_str(),
                    "status": change.to.as_str(),
                    "add_attempt": i32::from(change.count_attempt),
                    "set_result": change.result.is_some(),
                    "result": text(&change.result),
                    "kind": change.kind.map(|k| k.as_str().to_owned()),
                    "set_error": change.error.is_some(),
                    "error_code": change.error.as_ref().map(|e| e.code.clone()),
                    "error_message": change.error.as_ref().map(|e| e.message.clone()),
                    "at": now,
                }),
            ));
        }
    }
    if !move_rows.is_empty() {
        let mut ending = Vec::new();
        // One statement per round, a task's changes in rounds of their own in the batch's
        // order: a chain of changes of one task (each from the version the one before it
        // leaves) applies step by step, in one transaction.
        let mut rest = move_rows;
        while !rest.is_empty() {
            let mut in_round = std::collections::HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) = rest
                .into_iter()
                .partition(|(task, _)| in_round.insert(*task));
            rest = later;
            let rows: Vec<Value> = round.into_iter().map(|(_, row)| row).collect();
            let moved = txn.query_all_raw(statement(MOVE_TASKS, &rows)).await?;
            for row in moved {
                let i: i32 = row.try_get("", "batch_ord")?;
                let i = i as usize;
                let model = task::Model::from_query_result(&row, "")?;
                let Some(Write::Move(change, _)) = batch.get(i) else {
                    return Err(StoreError::Corrupt("a moved task outside the batch".into()));
                };
                if change.to.is_terminal() {
                    let keep = super::sql::kept_function_list(model.result.as_ref());
                    ending.push(json!({ "task_id": model.id, "keep": keep }));
                }
                events.push(NewEvent {
                    write: i,
                    task: change.task,
                    event_type: change.to.event(),
                    status: Some(change.to),
                    data: change.data.clone(),
                    node: change.node.clone(),
                });
                tasks[i] = Some(to_task(model)?);
            }
        }
        if !ending.is_empty() {
            txn.execute_raw(statement(DROP_FUNCTIONS, &ending)).await?;
        }
        // The changes that moved nothing: their task moved first (or another change of it
        // in this batch did), or is gone.
        let unmoved: Vec<Value> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, write)| match (write, &tasks[i], &outcomes[i]) {
                (Write::Move(change, _), None, None) => Some(json!(change.task.as_uuid())),
                _ => None,
            })
            .collect();
        let mut versions = std::collections::HashMap::new();
        if !unmoved.is_empty() {
            for row in txn
                .query_all_raw(statement(TASK_VERSIONS, &unmoved))
                .await?
            {
                let id: uuid::Uuid = row.try_get("", "id")?;
                let version: i64 = row.try_get("", "version")?;
                versions.insert(id, version);
            }
        }
        for (i, write) in batch.iter().enumerate() {
            if let (Write::Move(change, _), None, None) = (write, &tasks[i], &outcomes[i]) {
                let error = match versions.get(&change.task.as_uuid()) {
                    Some(&actual) => StoreError::Conflict {
                        task: change.task,
                        expected: change.expected_version,
                        actual: if actual == change.expected_version {
                            actual + 1
                        } else {
                            actual
                        },
                    },
                    None => StoreError::NotFound(change.task),
                };
                outcomes[i] = Some(Outcome::Moved(Err(error)));
            }
        }
    }

    // Notes, on tasks that exist.
    let note_ids: Vec<Value> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Note(note, _) => Some(json!(note.task.as_uuid())),
            _ => None,
        })
        .collect();
    if !note_ids.is_empty() {
        let existing: std::collections::HashSet<uuid::Uuid> = txn
            .query_all_raw(statement(TASK_VERSIONS, &note_ids))
            .await?
            .into_iter()
            .map(|row| row.try_get("", "id"))
            .collect::<Result<_, _>>()?;
        for (i, write) in batch.iter().enumerate() {
            if let Write::Note(note, _) = write {
                if existing.contains(&note.task.as_uuid()) {
                    events.push(NewEvent {
                        write: i,
                        task: note.task,
                        event_type: note.event_type,
                        status: None,
                        data: note.data.clone(),
                        node: note.node.clone(),
                    });
                } else {
                    outcomes[i] = Some(Outcome::Noted(Err(StoreError::NotFound(note.task))));
                }
            }
        }
    }

    // Audit entries, in the batch's order: those written alone, and those of the new tasks
    // stored above (none for a key that was taken), whose target is the new task.
    let audit_rows: Vec<Value> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let (entry, target) = match w {
                Write::Audit(entry, _) => (entry, entry.target.clone()),
                Write::Create(new, _) => {
                    (new.audit.as_ref()?, Some(tasks[i].as_ref()?.id.to_string()))
                }
                _ => return None,
            };
            Some(json!({
                "ord": i,
                "at": now,
                "actor": entry.actor,
                "role": entry.role,
                "action": entry.action,
                "target": target,
                "detail": entry.detail.to_string(),
            }))
        })
        .collect();
    if !audit_rows.is_empty() {
        let mut stored = audit_log::Entity::find()
            .from_raw_sql(statement(INSERT_AUDIT, &audit_rows))
            .all(txn)
            .await?;
        stored.sort_by_key(|m| m.seq);
        if stored.len() != audit_rows.len() {
            return Err(StoreError::Corrupt("an audit entry was not written".into()));
        }
        for (row, model) in audit_rows.iter().zip(stored) {
            let same = row["actor"].as_str() == Some(model.actor.as_str())
                && row["action"].as_str() == Some(model.action.as_str())
                && row["target"].as_str() == model.target.as_deref();
            if !same {
                return Err(StoreError::Corrupt(
                    "the audit entries came back in another order".into(),
                ));
            }
            let i = row["ord"].as_u64().unwrap_or_default() as usize;
            // A new task's entry is part of its creation, whose outcome comes with its event.
            if let Write::Audit(..) = batch[i] {
                outcomes[i] = Some(Outcome::Audited(Ok(to_audit(model))));
            }
        }
    }

    // 5. The events, under the log's lock, in the batch's order.
    if !events.is_empty() {
        events.sort_by_key(|e| e.write);
        let rows: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(ord, e)| {
                json!({
                    "ord": ord,
                    "task_id": e.task.as_uuid(),
                    "event_type": e.event_type.as_str(),
                    "status": e.status.map(|s| s.as_str()),
                    "data": e.data.to_string(),
                    "node": e.node,
                })
            })
            .collect();
        let mut stored = task_event::Entity::find()
            .from_raw_sql(statement(INSERT_EVENTS, &rows))
            .all(txn)
            .await?;
        // Sequence values are taken in insertion order, which is the batch's.
        stored.sort_by_key(|m| m.seq);
        if stored.len() != events.len() {
            return Err(StoreError::Corrupt(format!(
                "{} events written of {}",
                stored.len(),
                events.len()
            )));
        }
        for (event, model) in events.iter().zip(stored) {
            if model.task_id != event.task.as_uuid() {
                return Err(StoreError::Corrupt(
                    "the events came back in another order".into(),
                ));
            }
            let i = event.write;
            let stored_event = to_event(model)?;
            outcomes[i] = Some(match &batch[i] {
                Write::Create(..) => Outcome::Created(Ok(Created::Stored(Box::new((
                    tasks[i].take().expect("a stored task"),
                    stored_event,
                ))))),
                Write::Move(..) => Outcome::Moved(Ok(Box::new((
                    tasks[i].take().expect("a moved task"),
                    stored_event,
                )))),
                Write::Note(..) => Outcome::Noted(Ok(stored_event)),
                Write::Audit(..) => unreachable!("an audit entry has no event"),
            });
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::Corrupt("a write of a batch had no outcome".into())))
        .collect()
}

fn node_of(write: &Write) -> Option<String> {
    match write {
        Write::Create(new, _) => new.node.clone(),
        Write::Move(change, _) => change.node.clone(),
        Write::Note(note, _) => note.node.clone(),
        Write::Audit(..) => None,
    }
}
