//! [`Store`] on sea-orm, for Postgres and SQLite alike.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use orion_bus::{EventType, Task, TaskEvent, TaskFailure, TaskId, TaskSpec, TaskStatus};
use orion_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use super::entity::{agent_snapshot, task, task_event, task_function};
use super::group;
use super::{AgentSnapshot, NewAudit, StoreError, TaskPage, TaskQuery, TaskStore, Transition};

/// How long a request waits for a pooled connection before the store reports unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest page a listing returns, whatever was asked.
pub const MAX_PAGE: u64 = 500;

/// The sea-orm store. Cheap to clone: it shares one connection pool, and on Postgres one
/// writer that commits the task log's writes in groups (see [`super::group`]).
#[derive(Clone, Debug)]
pub struct SqlStore {
    db: DatabaseConnection,
    /// The queue to the group writer (Postgres only; `None` in the writer's own copy). It is
    /// started on first use, on the caller's runtime, and again if that runtime has ended.
    writer: Option<Arc<Mutex<Option<group::Queue>>>>,
}

impl SqlStore {
    /// Connects to `url` (`postgres://…` or `sqlite://…?mode=rwc`) and applies pending
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.acquire_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer at a time is SQLite's model; a single connection serialises
            // transactions instead of failing them with "database is locked".
            options.max_connections(1);
        }
        let db = Database::connect(options).await?;
        Migrator::up(&db, None).await?;
        let writer = (db.get_database_backend() == sea_orm::DatabaseBackend::Postgres)
            .then(|| Arc::new(Mutex::new(None)));
        Ok(Self { db, writer })
    }

    /// Hands `write` to the group writer, or makes it alone where there is none (SQLite, or
    /// the writer itself); its outcome goes to the write's own answer either way. Awaits
    /// nothing when the writer takes it, so writes handed over in turn reach it together.
    pub(super) async fn write(&self, write: group::Write) {
        if let Some(write) = self.to_writer(write) {
            group::one_at_a_time(self, vec![write]).await;
        }
    }

    /// Hands `write` to the group writer; gives it back where there is none.
    fn to_writer(&self, write: group::Write) -> Option<group::Write> {
        let Some(writer) = &self.writer else {
            return Some(write);
        };
        let mut queue = writer.lock().unwrap_or_else(|e| e.into_inner());
        let live = queue.as_ref().filter(|q| !q.is_closed());
        let queue = match live {
            Some(queue) => queue,
            None => queue.insert(group::start(Self {
                db: self.db.clone(),
                writer: None,
            })),
        };
        queue.send(write).err().map(|e| e.0)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

pub(super) fn parse<T: FromStr>(value: &str, what: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} `{value}`")))
}

/// A task or agent kind: a built-in one, or a declared one, which is read back (and declared
/// in this process) even when the configuration no longer names it.
fn parse_kind<T: FromStr>(
    value: &str,
    what: &str,
    custom: fn(orion_bus::CustomKind) -> T,
) -> Result<T, StoreError> {
    parse(value, what).or_else(|e| {
        orion_bus::CustomKind::declare(value)
            .map(custom)
            .map_err(|_| e)
    })
}

pub(super) fn to_task(m: task::Model) -> Result<Task, StoreError> {
    let error = match (m.error_code, m.error_message) {
        (Some(code), message) => Some(TaskFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        (None, _) => None,
    };
    Ok(Task {
        id: TaskId::from_uuid(m.id),
        spec: TaskSpec {
            kind: parse_kind(&m.kind, "task kind", orion_bus::TaskKind::Custom)?,
            repo: m.repo,
            prompt: m.prompt,
            git_ref: m.git_ref,
            diff: m.diff,
            budget_usd: m.budget_usd,
            input: m.input,
            origin: m
                .origin
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("a task's origin: {e}")))?,
            submitted_by: m.submitted_by,
            priority: parse(&m.priority, "priority")?,
        },
        status: parse(&m.status, "status")?,
        version: m.version,
        attempts: m.attempts,
        result: m.result,
        error,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// The most snapshots [`Store::snapshots`] lists (one per node and agent kind).
const MAX_SNAPSHOTS: u64 = 10_000;

fn to_snapshot(m: agent_snapshot::Model) -> Result<AgentSnapshot, StoreError> {
    Ok(AgentSnapshot {
        agent_kind: parse_kind(&m.agent_kind, "agent kind", orion_bus::AgentKind::Custom)?,
        agent_id: m.agent_id,
        node: m.node,
        state: m.state,
        version: m.version,
        updated_at: m.updated_at,
    })
}

pub(super) fn to_event(m: task_event::Model) -> Result<TaskEvent, StoreError> {
    Ok(TaskEvent {
        seq: m.seq,
        task_id: TaskId::from_uuid(m.task_id),
        event_type: parse(&m.event_type, "event type")?,
        status: m
            .status
            .as_deref()
            .map(|s| parse(s, "status"))
            .transpose()?,
        data: m.data,
        node: m.node,
        at: m.at,
    })
}

/// Takes the lock that orders the event log on Postgres (an advisory lock, `orion` in ASCII)
/// for the rest of the transaction, waiting at most 10 s for it; the transaction, once it
/// holds the lock, may sit idle at most as long before Postgres ends it
/// (a writer frozen or cut off between its insert and its commit would otherwise stop every
/// other writer's events until its connection is found dead).
pub(super) const TAKE_EVENT_LOG_LOCK: &str = "SET LOCAL lock_timeout = '10s'; \
     SET LOCAL idle_in_transaction_session_timeout = '10s'; \
     SELECT pg_advisory_xact_lock(478660882286)";

/// Appends an event to the log, as the last write of the transaction `txn` (which commits
/// right after it).
///
/// The event log's `seq` is in commit order: an event with a greater `seq` commits after
/// every event with a smaller one, so a reader that has read up to a `seq` will never see
/// a smaller one appear later, and a cursor (a WebSocket stream's `since`) skips nothing.
/// A sequence alone does not give this on Postgres (two transactions can take their values
/// in one order and commit in the other); the transaction takes the log's advisory lock
/// first, which it holds until it commits, so appends to the log commit one at a time (the
/// cost is measured in docs/scaling.md). A writer that cannot take the lock in time fails
/// as an outage does, and is tried again. SQLite runs one writing transaction at a time.
async fn insert_event(
    txn: &DatabaseTransaction,
    task: TaskId,
    event_type: EventType,
    status: Option<TaskStatus>,
    data: serde_json::Value,
    node: Option<&str>,
) -> Result<TaskEvent, StoreError> {
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        txn.execute_unprepared(TAKE_EVENT_LOG_LOCK).await?;
    }
    let model = task_event::ActiveModel {
        seq: NotSet,
        task_id: Set(task.as_uuid()),
        event_type: Set(event_type.as_str().to_owned()),
        status: Set(status.map(|s| s.as_str().to_owned())),
        data: Set(data),
        node: Set(node.map(str::to_owned)),
        at: Set(Utc::now()),
    }
    .insert(txn)
    .await?;
    to_event(model)
}

/// The function list a task that ends keeps: the one its result names (an analyze task's).
pub(super) fn kept_function_list(result: Option<&serde_json::Value>) -> Option<uuid::Uuid> {
    result?
        .get("function_list")?
        .get("id")?
        .as_str()?
        .parse()
        .ok()
}

/// The group writer ended before it answered (its runtime shut down): the write may or may
/// not have been stored, as when a connection drops before a commit's answer.
pub(super) fn writer_gone(_: tokio::sync::oneshot::error::RecvError) -> StoreError {
    StoreError::Unavailable(sea_orm::DbErr::Custom(
        "the store's writer stopped before it answered".into(),
    ))
}

impl SqlStore {
    /// [`TaskStore::create_audited_task`] in a transaction of its own, after the caller looked
    /// for the key's task: a key stored since is found when the insert fails on it.
    pub(super) async fn create_one(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
        node: Option<&str>,
        audit: Option<NewAudit>,
    ) -> Result<(Task, Option<TaskEvent>), StoreError> {
        let now = Utc::now();
        let model = task::ActiveModel {
            id: Set(TaskId::new().as_uuid()),
            kind: Set(spec.kind.as_str().to_owned()),
            repo: Set(spec.repo),
            prompt: Set(spec.prompt),
            git_ref: Set(spec.git_ref),
            diff: Set(spec.diff),
            budget_usd: Set(spec.budget_usd),
            input: Set(spec.input),
            origin: Set(spec.origin.map(|o| serde_json::json!(o))),
            submitted_by: Set(spec.submitted_by),
            priority: Set(spec.priority.as_str().to_owned()),
            status: Set(TaskStatus::Queued.as_str().to_owned()),
            version: Set(1),
            attempts: Set(0),
            result: Set(None),
            error_code: Set(None),
            error_message: Set(None),
            idempotency_key: Set(idempotency_key.map(str::to_owned)),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = self.db.begin().await?;
        let inserted = match model.insert(&txn).await {
            Ok(m) => m,
            Err(e) => {
                drop(txn);
                // A concurrent submission with the same key won the unique index.
                if let Some(key) = idempotency_key
                    && let Some(existing) = self.find_by_key(key).await?
                {
                    return Ok((existing, None));
                }
                return Err(e.into());
            }
        };
        let task = to_task(inserted)?;
        let event = insert_event(
            &txn,
            task.id,
            EventType::Queued,
            Some(TaskStatus::Queued),
            serde_json::Value::Null,
            node,
        )
        .await?;
        if let Some(audit) = audit {
            let target = Some(task.id.to_string());
            super::access::insert_audit(&txn, NewAudit { target, ..audit }).await?;
        }
        txn.commit().await?;
        Ok((task, Some(event)))
    }

    /// [`TaskStore::transition`] in a transaction of its own.
    pub(super) async fn transition_one(
        &self,
        change: Transition,
    ) -> Result<(Task, TaskEvent), StoreError> {
        use sea_orm::sea_query::{Expr, ExprTrait};
        // One statement moves the task: an update guarded by the version the caller read
        // (whose status is then `change.from`), returning the row where the database can.
        change.from.check(change.to)?;
        let id = change.task.as_uuid();
        let mut update = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(change.to.as_str()))
            .col_expr(
                task::Column::Version,
                Expr::value(change.expected_version + 1),
            )
            .col_expr(
                task::Column::Attempts,
                Expr::col(task::Column::Attempts).add(i32::from(change.count_attempt)),
            )
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()));
        if let Some(result) = change.result {
            update = update.col_expr(task::Column::Result, Expr::value(result));
        }
        if let Some(kind) = change.kind {
            update = update.col_expr(task::Column::Kind, Expr::value(kind.as_str()));
        }
        if let Some(error) = change.error {
            update = update
                .col_expr(task::Column::ErrorCode, Expr::value(error.code))
                .col_expr(task::Column::ErrorMessage, Expr::value(error.message));
        }
        // The version guard in the WHERE clause is the referee between concurrent writers:
        // the row lock makes a second writer re-read the row and find the version moved on.
        // The status is checked too: a change made from a status the caller did not read
        // (a step of a chain whose step before it failed) moves nothing.
        let update = update
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Version.eq(change.expected_version))
            .filter(task::Column::Status.eq(change.from.as_str()));
        let txn = self.db.begin().await?;
        let updated = if self.db.support_returning() {
            update.exec_with_returning(&txn).await?.into_iter().next()
        } else {
            match update.exec(&txn).await?.rows_affected {
                1 => task::Entity::find_by_id(id).one(&txn).await?,
                _ => None,
            }
        };
        let Some(updated) = updated else {
            // Not moved: the task is gone, or another writer moved it first.
            let current = task::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or(StoreError::NotFound(change.task))?;
            return Err(StoreError::Conflict {
                task: change.task,
                expected: change.expected_version,
                actual: current.version,
            });
        };
        // A task that ends keeps only the function list its report names (an analyze task's):
        // those of its other measurements (a redelivery, a retry, a failed run) go with it.
        // Saving a list locks the task's row and is refused once it has ended, so none comes
        // after.
        if change.to.is_terminal() {
            let named_list = kept_function_list(updated.result.as_ref());
            let mut others =
                task_function::Entity::delete_many().filter(task_function::Column::TaskId.eq(id));
            if let Some(list) = named_list {
                others = others.filter(task_function::Column::ListId.ne(list));
            }
            others.exec(&txn).await?;
        }
        let event = insert_event(
            &txn,
            change.task,
            change.to.event(),
            Some(change.to),
            change.data,
            change.node.as_deref(),
        )
        .await?;
        txn.commit().await?;
        Ok((to_task(updated)?, event))
    }

    /// [`TaskStore::append_event`] in a transaction of its own.
    pub(super) async fn append_one(
        &self,
        task: TaskId,
        event_type: EventType,
        data: serde_json::Value,
        node: Option<&str>,
    ) -> Result<TaskEvent, StoreError> {
        if task::Entity::find_by_id(task.as_uuid())
            .one(&self.db)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(task));
        }
        let txn = self.db.begin().await?;
        let event = insert_event(&txn, task, event_type, None, data, node).await?;
        txn.commit().await?;
        Ok(event)
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<Task>, StoreError> {
        task::Entity::find()
            .filter(task::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .map(to_task)
            .transpose()
    }
}

#[async_trait]
impl TaskStore for SqlStore {
    async fn create_audited_task(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
        node: Option<&str>,
        audit: Option<NewAudit>,
    ) -> Result<(Task, Option<TaskEvent>), StoreError> {
        if let Some(key) = idempotency_key
            && let Some(existing) = self.find_by_key(key).await?
        {
            return Ok((existing, None));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let new = group::NewTask {
            spec,
            key: idempotency_key.map(str::to_owned),
            node: node.map(str::to_owned),
            audit,
        };
        self.write(group::Write::Create(Box::new(new), tx)).await;
        match rx.await.map_err(writer_gone)?? {
            group::Created::Stored(stored) => Ok((stored.0, Some(stored.1))),
            // A concurrent submission with the same key was stored first.
            group::Created::KeyTaken => {
                let key = idempotency_key.unwrap_or_default();
                match self.find_by_key(key).await? {
                    Some(existing) => Ok((existing, None)),
                    None => Err(StoreError::Corrupt(format!(
                        "idempotency key `{key}` was taken by no stored task"
                    ))),
                }
            }
        }
    }

    async fn task(&self, id: TaskId) -> Result<Task, StoreError> {
        let model = task::Entity::find_by_id(id.as_uuid()).one(&self.db).await?;
        to_task(model.ok_or(StoreError::NotFound(id))?)
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut select = task::Entity::find();
        if let Some(status) = query.status {
            select = select.filter(task::Column::Status.eq(status.as_str()));
        }
        if let Some(kind) = query.kind {
            select = select.filter(task::Column::Kind.eq(kind.as_str()));
        }
        if let Some(repo) = &query.repo {
            select = select.filter(task::Column::Repo.eq(repo.as_str()));
        }
        if let Some(before) = query.before {
            select = select.filter(task::Column::Id.lt(before.as_uuid()));
        }
        let mut rows = select
            .order_by_desc(task::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let items = rows
            .into_iter()
            .map(to_task)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            items.last().map(|t| t.id)
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    async fn transition(&self, change: Transition) -> Result<(Task, TaskEvent), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(group::Write::Move(change, tx)).await;
        rx.await.map_err(writer_gone)?
    }

    async fn transitions(
        &self,
        chain: Vec<Transition>,
    ) -> Vec<Result<(Task, TaskEvent), StoreError>> {
        // Queued to the writer together, so that they commit in one group where they fit.
        let mut answers = Vec::with_capacity(chain.len());
        for change in chain {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.write(group::Write::Move(change, tx)).await;
            answers.push(rx);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.map_err(writer_gone).and_then(|r| r));
        }
        outcomes
    }

    async fn append_event(
        &self,
        task: TaskId,
        event_type: EventType,
        data: serde_json::Value,
        node: Option<&str>,
    ) -> Result<TaskEvent, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let note = group::Note {
            task,
            event_type,
            data,
            node: node.map(str::to_owned),
        };
        self.write(group::Write::Note(note, tx)).await;
        rx.await.map_err(writer_gone)?
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        let last = task_event::Entity::find()
            .order_by_desc(task_event::Column::Seq)
            .one(&self.db)
            .await?;
        Ok(last.map_or(0, |e| e.seq))
    }

    async fn events(
        &self,
        task: Option<TaskId>,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let mut select = task_event::Entity::find().filter(task_event::Column::Seq.gt(after_seq));
        if let Some(task) = task {
            select = select.filter(task_event::Column::TaskId.eq(task.as_uuid()));
        }
        select
            .order_by_asc(task_event::Column::Seq)
            .limit(limit.clamp(1, 10 * MAX_PAGE))
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }

    async fn tasks_in(
        &self,
        statuses: &[TaskStatus],
        untouched_since: Option<chrono::DateTime<Utc>>,
        limit: u64,
    ) -> Result<Vec<Task>, StoreError> {
        let mut query = task::Entity::find()
            .filter(task::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
        if let Some(since) = untouched_since {
            query = query.filter(task::Column::UpdatedAt.lt(since));
        }
        query
            .order_by_asc(task::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_task)
            .collect()
    }

    async fn save_snapshot(&self, snapshot: &AgentSnapshot) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let existing = agent_snapshot::Entity::find_by_id(snapshot.agent_id.clone())
            .one(&txn)
            .await?;
        let model = agent_snapshot::ActiveModel {
            agent_id: Set(snapshot.agent_id.clone()),
            agent_kind: Set(snapshot.agent_kind.as_str().to_owned()),
            node: Set(snapshot.node.clone()),
            state: Set(snapshot.state.clone()),
            version: Set(snapshot.version),
            updated_at: Set(snapshot.updated_at),
        };
        if existing.is_some() {
            model.update(&txn).await?;
        } else {
            model.insert(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn snapshot(&self, agent_id: &str) -> Result<Option<AgentSnapshot>, StoreError> {
        agent_snapshot::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .map(to_snapshot)
            .transpose()
    }

    async fn snapshots(&self) -> Result<Vec<AgentSnapshot>, StoreError> {
        agent_snapshot::Entity::find()
            .order_by_asc(agent_snapshot::Column::AgentId)
            .limit(MAX_SNAPSHOTS)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_snapshot)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::from)
    }

    async fn set_budget(&self, id: TaskId, budget_usd: f64) -> Result<Task, StoreError> {
        let current = task::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let mut active = current.into_active_model();
        active.budget_usd = Set(Some(budget_usd));
        active.updated_at = Set(Utc::now());
        to_task(active.update(&self.db).await?)
    }
}
