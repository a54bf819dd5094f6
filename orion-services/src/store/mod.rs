//! The store: tasks, their event log and agent snapshots, in Postgres or SQLite via sea-orm.
//!
//! One implementation, [`SqlStore`], serves both databases; the `Store` trait is what the
//! actors and the gateway depend on. Every status change is one database transaction that
//! checks the transition, compares the optimistic `version`, and appends to `task_events`,
//! so two coordinators can never both move one task and the log never misses a change.

mod access;
mod analysis;
mod effects;
mod entity;
mod group;
mod pulls;
mod sql;
mod usage;

pub use access::{ApiKey, AuditEntry, NewApiKey, NewAudit, RepoCredential};
pub use effects::{Claim, EffectKey, Fence};
pub use pulls::{PullRequest, PullState, PullVersion, Review};
pub use sql::{MAX_PAGE, SqlStore};
pub use usage::{UsageGroup, UsageRecord, UsageSum, UsageTotals};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orion_bus::{
    AgentKind, EventType, IllegalTransition, Task, TaskEvent, TaskFailure, TaskId, TaskKind,
    TaskSpec, TaskStatus,
};
use serde::{Deserialize, Serialize};

/// A failure of a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task {0} not found")]
    NotFound(TaskId),
    #[error("pull request {0} not found")]
    PullNotFound(uuid::Uuid),
    #[error("API key {0} not found")]
    ApiKeyNotFound(uuid::Uuid),
    #[error("repository credential {0} not found")]
    CredentialNotFound(uuid::Uuid),
    #[error("task {task} changed meanwhile (expected version {expected}, found {actual})")]
    Conflict {
        task: TaskId,
        expected: i64,
        actual: i64,
    },
    #[error("pull request {pull} is {state}, no longer open for review")]
    PullNotOpen { pull: uuid::Uuid, state: String },
    #[error("pull request {pull} has a newer version ({head}) than the one reviewed")]
    PullChanged { pull: uuid::Uuid, head: String },
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sea_orm::DbErr),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("task {0} has ended ({1}): what it stored is final")]
    TaskEnded(TaskId, TaskStatus),
    #[error(
        "task {task} is {status} at attempt {current}: a run of attempt {attempt} writes nothing"
    )]
    Superseded {
        task: TaskId,
        attempt: i32,
        current: i32,
        status: TaskStatus,
    },
}

/// Whether a run of attempt `attempt` is still its task's own: the task is at work (assigned
/// or running) at no newer attempt. A run that is not acts on a state that is past, and
/// writes nothing of its step.
pub fn run_is_current(status: TaskStatus, attempts: i32, attempt: i32) -> bool {
    attempts <= attempt && matches!(status, TaskStatus::Assigned | TaskStatus::Running)
}

impl From<sea_orm::DbErr> for StoreError {
    fn from(e: sea_orm::DbErr) -> Self {
        StoreError::Unavailable(e)
    }
}

/// A status change, applied only if the task is still at `expected_version`.
#[derive(Clone, Debug)]
pub struct Transition {
    pub task: TaskId,
    pub expected_version: i64,
    /// The task's status at `expected_version` (what the caller read): the version guard
    /// makes it the stored one whenever the change applies.
    pub from: TaskStatus,
    pub to: TaskStatus,
    /// Stored as the task's result (on completion).
    pub result: Option<serde_json::Value>,
    /// Stored as the task's error (on failure).
    pub error: Option<TaskFailure>,
    /// Count one more hand-over to an agent.
    pub count_attempt: bool,
    /// Stored as the task's kind (the coordinator's choice for an `auto` task).
    pub kind: Option<TaskKind>,
    /// Extra detail for the event.
    pub data: serde_json::Value,
    pub node: Option<String>,
}

impl Transition {
    pub fn new(task: &Task, to: TaskStatus) -> Self {
        Self {
            task: task.id,
            expected_version: task.version,
            from: task.status,
            to,
            result: None,
            error: None,
            count_attempt: false,
            kind: None,
            data: serde_json::Value::Null,
            node: None,
        }
    }
}

/// Which tasks to list, and where the previous page ended.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
    /// Tasks on exactly this repository.
    pub repo: Option<String>,
    /// Tasks older than this one (ids are time-ordered); the first page when absent.
    pub before: Option<TaskId>,
    pub limit: u64,
}

/// One page of tasks, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct TaskPage {
    pub items: Vec<Task>,
    /// Pass as `before` to get the next page; absent on the last page.
    pub next_cursor: Option<TaskId>,
}

/// An agent's state, saved so a restarted agent resumes where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent_id: String,
    pub agent_kind: AgentKind,
    pub node: String,
    pub state: serde_json::Value,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// Tasks, their event log, their budgets, and the agents' snapshots.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a new task in `queued` with its first event. With an idempotency key that was
    /// used before, returns the task stored then and `false`.
    async fn create_task(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
        node: Option<&str>,
    ) -> Result<(Task, Option<TaskEvent>), StoreError> {
        self.create_audited_task(spec, idempotency_key, node, None)
            .await
    }

    /// [`TaskStore::create_task`], and `audit` (its target set to the new task's id) in the
    /// same transaction: a task is stored with its audit entry or not at all. Nothing is
    /// audited for a repeated idempotency key.
    async fn create_audited_task(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
        node: Option<&str>,
        audit: Option<NewAudit>,
    ) -> Result<(Task, Option<TaskEvent>), StoreError>;

    async fn task(&self, id: TaskId) -> Result<Task, StoreError>;

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError>;

    /// Applies a checked, version-guarded status change and appends its event. The change
    /// applies only where the task is at `expected_version` and, there, at `from`.
    async fn transition(&self, change: Transition) -> Result<(Task, TaskEvent), StoreError>;

    /// A chain of changes of one task, each from the version and status the one before it
    /// leaves, written together where the store can; one outcome per change, in order. Each
    /// is guarded on its own, so a step whose step before it failed applies only where the
    /// task is at that step's `from` and version all the same (moved there by another
    /// writer).
    async fn transitions(
        &self,
        chain: Vec<Transition>,
    ) -> Vec<Result<(Task, TaskEvent), StoreError>> {
        let mut outcomes = Vec::with_capacity(chain.len());
        for change in chain {
            outcomes.push(self.transition(change).await);
        }
        outcomes
    }

    /// Appends an event that changes no status (progress notes).
    async fn append_event(
        &self,
        task: TaskId,
        event_type: EventType,
        data: serde_json::Value,
        node: Option<&str>,
    ) -> Result<TaskEvent, StoreError>;

    /// The `seq` of the last event committed (0 when there is none). The log's `seq` is in
    /// commit order: no event committed later has a smaller one.
    async fn last_event_seq(&self) -> Result<i64, StoreError>;

    /// Events after `after_seq`, oldest first, of one task or of all.
    async fn events(
        &self,
        task: Option<TaskId>,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<TaskEvent>, StoreError>;

    /// Tasks in the given statuses, oldest first, and if `untouched_since` is given only
    /// those not moved since then (for reconciliation).
    async fn tasks_in(
        &self,
        statuses: &[TaskStatus],
        untouched_since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<Vec<Task>, StoreError>;

    async fn save_snapshot(&self, snapshot: &AgentSnapshot) -> Result<(), StoreError>;

    async fn snapshot(&self, agent_id: &str) -> Result<Option<AgentSnapshot>, StoreError>;

    /// Every agent's snapshot, by id.
    async fn snapshots(&self) -> Result<Vec<AgentSnapshot>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Sets a task's budget for model calls (a person raising it for a paused task). The
    /// version is left alone: the budget is not part of the task's state machine.
    async fn set_budget(&self, id: TaskId, budget_usd: f64) -> Result<Task, StoreError>;
}

/// Pull requests and their reviews (the review gate's state).
#[async_trait]
pub trait PullStore: Send + Sync + 'static {
    /// Opens a task's pull request, or records its next version.
    async fn upsert_pull(&self, version: PullVersion) -> Result<PullRequest, StoreError>;

    async fn pull(&self, id: uuid::Uuid) -> Result<PullRequest, StoreError>;

    /// Newest first, without their diffs; `before` pages on from the id of the last one read
    /// (a page holds at most [`MAX_PAGE`]).
    async fn list_pulls(
        &self,
        state: Option<PullState>,
        before: Option<uuid::Uuid>,
        limit: u64,
    ) -> Result<Vec<PullRequest>, StoreError>;

    async fn set_pull_state(
        &self,
        id: uuid::Uuid,
        state: PullState,
        merge_commit: Option<String>,
    ) -> Result<PullRequest, StoreError>;

    /// Decides an open pull request at `head_oid` by a review, once: the pull request moves
    /// to the decision's state and the review is recorded, in one transaction; a pull request
    /// that is no longer open (another review won) is [`StoreError::PullNotOpen`], one with a
    /// newer version [`StoreError::PullChanged`].
    async fn review_pull(
        &self,
        pull: uuid::Uuid,
        head_oid: &str,
        decision: orion_bus::Decision,
        comment: &str,
    ) -> Result<Review, StoreError>;

    /// The review `id` of pull request `pull`, if there is one.
    async fn review(&self, pull: uuid::Uuid, id: uuid::Uuid) -> Result<Option<Review>, StoreError>;

    async fn reviews(&self, pull: uuid::Uuid) -> Result<Vec<Review>, StoreError>;
}

/// The effects ledger: what happened once, by (task, key). An effect is claimed before it
/// happens ([`EffectStore::claim_effect`]), and its outcome is recorded on the claim by the
/// run that holds it ([`EffectStore::settle_effect`]).
#[async_trait]
pub trait EffectStore: Send + Sync + 'static {
    /// The recorded outcome of (task, key), if it happened.
    async fn effect(
        &self,
        task: TaskId,
        step: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// The recorded outcomes of `task`'s effects of `kind` (e.g. `model_call`), by key, in
    /// the order they were claimed.
    async fn effects_of_kind(
        &self,
        task: TaskId,
        kind: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Records what (task, step) did, with no claim before (a value fixed once, such as a
    /// release's plan); if it was recorded already, the first record stands and is returned.
    async fn record_effect(
        &self,
        task: TaskId,
        step: &str,
        kind: &str,
        result: serde_json::Value,
    ) -> Result<serde_json::Value, StoreError>;

    /// Claims (task, key) for the run `fence` names: who may act on the effect now. A claim
    /// left pending by a run of an older attempt, or whose `lease` ran out, passes to this
    /// run, marked orphaned.
    async fn claim_effect(
        &self,
        task: TaskId,
        key: &str,
        kind: &str,
        fence: Fence,
        lease: std::time::Duration,
    ) -> Result<Claim, StoreError>;

    /// Records the outcome of a claimed effect, if `fence` still holds the claim: returns the
    /// recorded outcome (the first, when it was settled already), or `None` when the claim
    /// passed to another run meanwhile.
    async fn settle_effect(
        &self,
        task: TaskId,
        key: &str,
        fence: Fence,
        result: serde_json::Value,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// Starts the leases of the pending claims `run` holds on `task` again (a live run does
    /// every third of a lease); returns how many it renewed.
    async fn renew_claims(&self, task: TaskId, run: uuid::Uuid) -> Result<u64, StoreError>;
}

/// Model usage: every call's tokens and cost, and their sums.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    async fn record_usage(&self, usage: &UsageRecord) -> Result<(), StoreError>;

    async fn task_usage(&self, task: TaskId) -> Result<Vec<UsageRecord>, StoreError>;

    /// The cost of the calls made since `from` (cache hits cost nothing), of tasks `caller`
    /// submitted and of `model` where given.
    async fn spent(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        caller: Option<&str>,
        model: Option<&str>,
    ) -> Result<f64, StoreError>;

    /// Sets spending cap `name` to `usd` for `period` (`YYYY-MM-DD` or `YYYY-MM`).
    async fn raise_cap(&self, name: &str, period: &str, usd: f64) -> Result<(), StoreError>;

    /// What cap `name` was raised to for `period`, if it was.
    async fn cap_raise(&self, name: &str, period: &str) -> Result<Option<f64>, StoreError>;

    /// Model calls made in `[from, to)`, summed by `group`, in key order.
    async fn usage(
        &self,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
        group: UsageGroup,
    ) -> Result<Vec<UsageSum>, StoreError>;
}

/// Every function an analyze task measured, as lists: one per measurement, under an id of its
/// own, so measurements of one task (a redelivery, a retry) never mix; the stored report
/// names its list, and storing that report deletes the task's other lists.
#[async_trait]
pub trait AnalysisStore: Send + Sync + 'static {
    /// Stores `rows` as list `list` of `task`, numbered from 0 in their order, in one
    /// transaction: all of them or none, replacing a list of the same id. A NUL, which
    /// Postgres text cannot hold, is stored as U+FFFD. Refused (`TaskEnded`) once the task
    /// has ended: its report, and the list it names, are final.
    async fn save_functions(
        &self,
        task: TaskId,
        list: uuid::Uuid,
        rows: &[crate::code::export::FunctionRow],
    ) -> Result<(), StoreError>;

    /// Up to `limit` of list `list`'s functions, in order, with their numbers: from the
    /// first, or from the one after number `after`.
    async fn functions(
        &self,
        task: TaskId,
        list: uuid::Uuid,
        after: Option<u32>,
        limit: u64,
    ) -> Result<Vec<(u32, crate::code::export::FunctionRow)>, StoreError>;
}

/// Who may call: API keys, the audit log, sealed repository credentials.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError>;

    /// The key whose secret hashes to `hash` (SHA-256, hex), revoked and expired ones too.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Marks a key revoked (once: revoking again changes nothing).
    async fn revoke_api_key(&self, id: uuid::Uuid) -> Result<ApiKey, StoreError>;

    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError>;

    /// Audit entries after `after_seq`, oldest first.
    async fn audit(&self, after_seq: i64, limit: u64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores (or replaces) the credential for remotes starting with `repo_prefix`; `sealed`
    /// is the secret as sealed by [`crate::secrets::Sealer`].
    async fn save_credential(
        &self,
        repo_prefix: &str,
        username: &str,
        sealed: String,
        created_by: &str,
    ) -> Result<RepoCredential, StoreError>;

    async fn credentials(&self) -> Result<Vec<RepoCredential>, StoreError>;

    /// Every credential with its sealed secret (for the VCS service only).
    async fn sealed_credentials(&self) -> Result<Vec<(RepoCredential, String)>, StoreError>;

    async fn delete_credential(&self, id: uuid::Uuid) -> Result<(), StoreError>;
}

/// Durable state: every aggregate's trait, as one object for whoever needs several. Each is
/// implemented by [`SqlStore`] in its own file, with no forwarding between them.
pub trait Store:
    TaskStore + PullStore + EffectStore + UsageStore + AccessStore + AnalysisStore
{
}

impl<T: TaskStore + PullStore + EffectStore + UsageStore + AccessStore + AnalysisStore> Store
    for T
{
}

/// The aggregate traits, for `use orion_services::store::traits::*` where a `dyn Store`'s
/// methods are called.
pub mod traits {
    pub use super::{
        AccessStore, AnalysisStore, EffectStore, PullStore, Store, TaskStore, UsageStore,
    };
}
