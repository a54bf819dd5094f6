//! Pull requests and reviews in the store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orion_bus::{Decision, TaskId, TaskStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entity::{pull_request, review, task};
use super::{PullStore, SqlStore, StoreError};

/// Where a pull request is in review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    /// Waiting for a review.
    Open,
    /// A reviewer asked for changes; a revision is under way.
    ChangesRequested,
    /// Approved, and being merged.
    Approved,
    Merged,
    /// Approved, but the base moved in a way that conflicts.
    Conflict,
}

impl PullState {
    /// The state a review's decision moves an open pull request to.
    pub fn decided_by(decision: Decision) -> Self {
        match decision {
            Decision::Approve => PullState::Approved,
            Decision::RequestChanges => PullState::ChangesRequested,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::ChangesRequested => "changes_requested",
            PullState::Approved => "approved",
            PullState::Merged => "merged",
            PullState::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            PullState::Open,
            PullState::ChangesRequested,
            PullState::Approved,
            PullState::Merged,
            PullState::Conflict,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// The table of a pull request's moves, the one place they are decided (as
    /// `TaskStatus::can_move_to` is for tasks): a review decides an open one, a revision opens
    /// it again, an approved one is merged or found in conflict; merged and conflict are final.
    pub fn can_move_to(self, next: PullState) -> bool {
        use PullState::*;
        matches!(
            (self, next),
            (Open, Approved | ChangesRequested | Open)
                | (ChangesRequested, Open)
                | (Approved, Merged | Conflict)
        )
    }
}

/// A pull request: a task's branch against its base, with what the change and its tests say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub id: Uuid,
    pub task_id: TaskId,
    pub repo: String,
    pub branch: String,
    pub base: String,
    pub base_oid: String,
    pub head_oid: String,
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub diff: String,
    pub tests: Option<serde_json::Value>,
    pub state: PullState,
    /// Rounds of revision after the first version.
    pub rounds: i32,
    pub merge_commit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new version of a task's pull request says.
#[derive(Clone, Debug)]
pub struct PullVersion {
    pub task_id: TaskId,
    pub repo: String,
    pub branch: String,
    pub base: String,
    pub base_oid: String,
    pub head_oid: String,
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    pub diff: String,
    pub tests: Option<serde_json::Value>,
    /// The attempt of the run that made the version: only the task's current attempt may
    /// write it.
    pub attempt: i32,
}

/// A reviewer's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub id: Uuid,
    pub pull_id: Uuid,
    pub decision: Decision,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

fn to_pull(m: pull_request::Model) -> Result<PullRequest, StoreError> {
    Ok(PullRequest {
        id: m.id,
        task_id: TaskId::from_uuid(m.task_id),
        repo: m.repo,
        branch: m.branch,
        base: m.base,
        base_oid: m.base_oid,
        head_oid: m.head_oid,
        files_changed: m.files_changed.max(0) as u64,
        insertions: m.insertions.max(0) as u64,
        deletions: m.deletions.max(0) as u64,
        diff: m.diff,
        tests: m.tests,
        state: PullState::parse(&m.state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown pull state `{}`", m.state)))?,
        rounds: m.rounds,
        merge_commit: m.merge_commit,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Writes `version` over the task's pull request (or opens it) in `txn`; `None` when another
/// writer moved the pull request between the read and the write.
async fn write_version(
    txn: &sea_orm::DatabaseTransaction,
    version: &PullVersion,
) -> Result<Option<pull_request::Model>, StoreError> {
    let now = Utc::now();
    let existing = pull_request::Entity::find()
        .filter(pull_request::Column::TaskId.eq(version.task_id.as_uuid()))
        .one(txn)
        .await?;
    let model = match existing {
        // A decided pull request (approved, merged, in conflict) is not opened again: the
        // same head is a redelivered step, another one has no place.
        Some(current)
            if !matches!(
                PullState::parse(&current.state),
                Some(PullState::Open | PullState::ChangesRequested)
            ) =>
        {
            if current.head_oid == version.head_oid {
                current
            } else {
                return Err(StoreError::PullNotOpen {
                    pull: current.id,
                    state: current.state,
                });
            }
        }
        // The same head again is a redelivered step, not a new round: nothing changes (but
        // a revision that changed nothing puts its version up for review again).
        Some(current)
            if current.head_oid == version.head_oid
                && current.state != PullState::ChangesRequested.as_str() =>
        {
            current
        }
        Some(current) => {
            // A new version, written only over the version and the state read: a review
            // decided meanwhile (or another writer) wins, and this writer reads again.
            let (id, state, head) = (current.id, current.state.clone(), current.head_oid.clone());
            let moved = pull_request::Entity::update_many()
                .set(pull_request::ActiveModel {
                    head_oid: Set(version.head_oid.clone()),
                    files_changed: Set(version.files_changed as i64),
                    insertions: Set(version.insertions as i64),
                    deletions: Set(version.deletions as i64),
                    diff: Set(version.diff.clone()),
                    tests: Set(version.tests.clone()),
                    state: Set(PullState::Open.as_str().to_owned()),
                    rounds: Set(if current.head_oid == version.head_oid {
                        current.rounds
                    } else {
                        current.rounds + 1
                    }),
                    updated_at: Set(now),
                    ..Default::default()
                })
                .filter(pull_request::Column::Id.eq(id))
                .filter(pull_request::Column::State.eq(state))
                .filter(pull_request::Column::HeadOid.eq(head))
                .exec(txn)
                .await?;
            if moved.rows_affected != 1 {
                return Ok(None);
            }
            pull_request::Entity::find_by_id(id)
                .one(txn)
                .await?
                .ok_or(StoreError::PullNotFound(id))?
        }
        None => {
            pull_request::ActiveModel {
                id: Set(Uuid::now_v7()),
                task_id: Set(version.task_id.as_uuid()),
                repo: Set(version.repo.clone()),
                branch: Set(version.branch.clone()),
                base: Set(version.base.clone()),
                base_oid: Set(version.base_oid.clone()),
                head_oid: Set(version.head_oid.clone()),
                files_changed: Set(version.files_changed as i64),
                insertions: Set(version.insertions as i64),
                deletions: Set(version.deletions as i64),
                diff: Set(version.diff.clone()),
                tests: Set(version.tests.clone()),
                state: Set(PullState::Open.as_str().to_owned()),
                rounds: Set(0),
                merge_commit: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?
        }
    };
    Ok(Some(model))
}

fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Approve => "approve",
        Decision::RequestChanges => "request_changes",
    }
}

#[async_trait]
impl PullStore for SqlStore {
    /// Opens the task's pull request, or records its next version (one more round), for the
    /// run of attempt `version.attempt`: only while that attempt is the task's own and the task
    /// is at work. The task's row is share-locked meanwhile (on Postgres; SQLite runs one
    /// transaction at a time), so a review's move of the task to a newer attempt waits for the
    /// write or the write sees it; a run of an older attempt (a copy of its step that ran
    /// late) is [`StoreError::Superseded`] and changes nothing.
    async fn upsert_pull(&self, version: PullVersion) -> Result<PullRequest, StoreError> {
        use sea_orm::TransactionTrait;
        loop {
            let txn = self.connection().begin().await?;
            let task = task::Entity::find_by_id(version.task_id.as_uuid())
                .lock_shared()
                .one(&txn)
                .await?
                .ok_or(StoreError::NotFound(version.task_id))?;
            let status: TaskStatus = super::sql::parse(&task.status, "status")?;
            if !super::run_is_current(status, task.attempts, version.attempt) {
                return Err(StoreError::Superseded {
                    task: version.task_id,
                    attempt: version.attempt,
                    current: task.attempts,
                    status,
                });
            }
            if let Some(model) = write_version(&txn, &version).await? {
                txn.commit().await?;
                return to_pull(model);
            }
            // Another writer moved the pull request meanwhile: read it again.
        }
    }

    async fn pull(&self, id: Uuid) -> Result<PullRequest, StoreError> {
        let model = pull_request::Entity::find_by_id(id)
            .one(self.connection())
            .await?;
        to_pull(model.ok_or(StoreError::PullNotFound(id))?)
    }

    async fn list_pulls(
        &self,
        state: Option<PullState>,
        before: Option<uuid::Uuid>,
        limit: u64,
    ) -> Result<Vec<PullRequest>, StoreError> {
        let mut select = pull_request::Entity::find();
        if let Some(state) = state {
            select = select.filter(pull_request::Column::State.eq(state.as_str()));
        }
        if let Some(before) = before {
            select = select.filter(pull_request::Column::Id.lt(before));
        }
        select
            .order_by_desc(pull_request::Column::Id)
            .limit(limit.clamp(1, super::sql::MAX_PAGE))
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| {
                to_pull(m).map(|mut p| {
                    p.diff.clear();
                    p
                })
            })
            .collect()
    }

    async fn set_pull_state(
        &self,
        id: Uuid,
        state: PullState,
        merge_commit: Option<String>,
    ) -> Result<PullRequest, StoreError> {
        let current = pull_request::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .ok_or(StoreError::PullNotFound(id))?;
        let from = PullState::parse(&current.state)
            .ok_or_else(|| StoreError::Corrupt(format!("pull state `{}`", current.state)))?;
        if from == state {
            return to_pull(current);
        }
        if !from.can_move_to(state) {
            return Err(StoreError::PullNotOpen {
                pull: id,
                state: current.state,
            });
        }
        // The state read is the guard: a writer that moved it meanwhile wins, this one fails.
        let mut update = pull_request::ActiveModel {
            state: Set(state.as_str().to_owned()),
            updated_at: Set(Utc::now()),
            ..Default::default()
        };
        if merge_commit.is_some() {
            update.merge_commit = Set(merge_commit);
        }
        let moved = pull_request::Entity::update_many()
            .set(update)
            .filter(pull_request::Column::Id.eq(id))
            .filter(pull_request::Column::State.eq(from.as_str()))
            .exec(self.connection())
            .await?;
        let now = pull_request::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .ok_or(StoreError::PullNotFound(id))?;
        // Another writer moved it first: to the same state is the same outcome (two runs of
        // one merge); to another state is this writer's loss.
        if moved.rows_affected != 1 && now.state != state.as_str() {
            return Err(StoreError::PullNotOpen {
                pull: id,
                state: now.state,
            });
        }
        to_pull(now)
    }

    /// A review decides the pull request once, for the version it saw: in one transaction,
    /// the pull request moves from `open` at `head_oid` to the decision's state
    /// (`WHERE state = 'open' AND head_oid = …` is the referee between concurrent reviewers
    /// and a new version: the row lock makes a second one find it moved on), and the review
    /// is recorded. A pull request that is not open is [`StoreError::PullNotOpen`]; one with
    /// another head now, [`StoreError::PullChanged`].
    async fn review_pull(
        &self,
        pull: Uuid,
        head_oid: &str,
        decision: Decision,
        comment: &str,
    ) -> Result<Review, StoreError> {
        use sea_orm::TransactionTrait;
        let next = PullState::decided_by(decision);
        let now = Utc::now();
        let txn = self.connection().begin().await?;
        let moved = pull_request::Entity::update_many()
            .set(pull_request::ActiveModel {
                state: Set(next.as_str().to_owned()),
                updated_at: Set(now),
                ..Default::default()
            })
            .filter(pull_request::Column::Id.eq(pull))
            .filter(pull_request::Column::State.eq(PullState::Open.as_str()))
            .filter(pull_request::Column::HeadOid.eq(head_oid))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            let current = pull_request::Entity::find_by_id(pull)
                .one(&txn)
                .await?
                .ok_or(StoreError::PullNotFound(pull))?;
            if current.head_oid != head_oid {
                return Err(StoreError::PullChanged {
                    pull,
                    head: current.head_oid,
                });
            }
            return Err(StoreError::PullNotOpen {
                pull,
                state: current.state,
            });
        }
        let model = review::ActiveModel {
            id: Set(Uuid::now_v7()),
            pull_id: Set(pull),
            decision: Set(decision_str(decision).to_owned()),
            comment: Set(comment.to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(Review {
            id: model.id,
            pull_id: model.pull_id,
            decision,
            comment: model.comment,
            created_at: model.created_at,
        })
    }

    /// One review of a pull request, if it is that pull request's.
    async fn review(&self, pull: Uuid, id: Uuid) -> Result<Option<Review>, StoreError> {
        Ok(self.reviews(pull).await?.into_iter().find(|r| r.id == id))
    }

    async fn reviews(&self, pull: Uuid) -> Result<Vec<Review>, StoreError> {
        review::Entity::find()
            .filter(review::Column::PullId.eq(pull))
            .order_by_asc(review::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| {
                let decision = match m.decision.as_str() {
                    "approve" => Decision::Approve,
                    "request_changes" => Decision::RequestChanges,
                    other => {
                        return Err(StoreError::Corrupt(format!("unknown decision `{other}`")));
                    }
                };
                Ok(Review {
                    id: m.id,
                    pull_id: m.pull_id,
                    decision,
                    comment: m.comment,
                    created_at: m.created_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::PullState::{self, *};

    #[test]
    fn a_pull_request_moves_only_by_its_table() {
        let all = [Open, ChangesRequested, Approved, Merged, Conflict];
        let allowed: Vec<(PullState, PullState)> = all
            .iter()
            .flat_map(|&a| all.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.can_move_to(b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Open, Open),
                (Open, ChangesRequested),
                (Open, Approved),
                (ChangesRequested, Open),
                (Approved, Merged),
                (Approved, Conflict),
            ]
        );
    }
}
