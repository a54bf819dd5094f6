//! The effects ledger in the store: what happened once, by (task, key).

use async_trait::async_trait;

use chrono::Utc;
use orion_bus::TaskId;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

use super::entity::effect;
use super::{EffectStore, SqlStore, StoreError};

const PENDING: &str = "pending";
const DONE: &str = "done";

/// Who acts on an effect: the fencing token of a claim. `attempt` is the task's attempt the
/// run works for (a newer attempt fences an older one out); `run` is the one delivery's work
/// that holds the claim (a redelivery of the same attempt is another run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub attempt: i32,
    pub run: Uuid,
}

/// What a claim on an effect says the run may do.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// The run holds the claim: it acts, then records the outcome. `orphaned` when a run
    /// that is gone (or this run, starting over) left the claim pending: the effect may have
    /// happened, so the outside world is asked first. `tries` counts the times a run set out
    /// to act on it.
    Held { orphaned: bool, tries: i32 },
    /// It happened; this is its recorded outcome.
    Done(serde_json::Value),
    /// A run of a newer attempt holds it: this run stops.
    Superseded { attempt: i32 },
    /// Another run of the same attempt holds it and its lease has not run out.
    Busy,
}

/// The key of an effect in the ledger, per task: what may happen once. One constructor a
/// kind of effect; the formats are stored, so they do not change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EffectKey(String);

impl EffectKey {
    /// A model call of a step: one answer per step, whichever attempt asks (a reclaimed
    /// task reads the answer an earlier attempt paid for). A step asked anew (a revision
    /// round) names itself anew.
    pub fn model_call(step: &str) -> Self {
        Self(format!("model:{step}"))
    }
    /// The commit a step made and pushed for testing (outside the branches).
    pub fn candidate(step: &str) -> Self {
        Self(format!("candidate:{step}"))
    }
    /// A push of a commit to the task's branch.
    pub fn push(head: &str) -> Self {
        Self(format!("push:{head}"))
    }
    /// The merge of an approved pull request.
    pub fn merge(pull: Uuid) -> Self {
        Self(format!("merge:{pull}"))
    }
    /// The task's pull request opened on the forge.
    pub fn forge_pull() -> Self {
        Self("forge:pull".into())
    }
    /// The forge's approval of a pull request.
    pub fn forge_approval(pull: Uuid) -> Self {
        Self(format!("forge:approve:{pull}"))
    }
    /// A request for changes mirrored to the forge, per review.
    pub fn forge_review(review: Uuid) -> Self {
        Self(format!("forge:review:{review}"))
    }
    /// The test verdict set as a commit status on a pushed head.
    pub fn forge_status(head: &str) -> Self {
        Self(format!("forge:status:{head}"))
    }
    /// The task's outcome (`what`) posted on the forge's thread it came from.
    pub fn forge_reply(what: &str) -> Self {
        Self(format!("forge:reply:{what}"))
    }
    /// A review comment mirrored to the forge.
    pub fn forge_comment(index: usize) -> Self {
        Self(format!("forge:comment:{index}"))
    }
    /// A release's plan (version and changelog), fixed once.
    pub fn release_plan() -> Self {
        Self("release:plan".into())
    }
    /// A release's tag pushed.
    pub fn tag(tag: &str) -> Self {
        Self(format!("tag:{tag}"))
    }
}

impl std::ops::Deref for EffectKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[async_trait]
impl EffectStore for SqlStore {
    async fn effect(
        &self,
        task: TaskId,
        step: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(
            effect::Entity::find_by_id((task.as_uuid(), step.to_owned()))
                .filter(effect::Column::State.eq(DONE))
                .one(self.connection())
                .await?
                .map(|m| m.result),
        )
    }

    async fn effects_of_kind(
        &self,
        task: TaskId,
        kind: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        Ok(effect::Entity::find()
            .filter(effect::Column::TaskId.eq(task.as_uuid()))
            .filter(effect::Column::Kind.eq(kind))
            .filter(effect::Column::State.eq(DONE))
            .order_by_asc(effect::Column::CreatedAt)
            .order_by_asc(effect::Column::Step)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| (m.step, m.result))
            .collect())
    }

    async fn record_effect(
        &self,
        task: TaskId,
        step: &str,
        kind: &str,
        result: serde_json::Value,
    ) -> Result<serde_json::Value, StoreError> {
        let inserted = effect::ActiveModel {
            task_id: Set(task.as_uuid()),
            step: Set(step.to_owned()),
            kind: Set(kind.to_owned()),
            result: Set(result.clone()),
            created_at: Set(Utc::now()),
            state: Set(DONE.to_owned()),
            attempt: Set(0),
            holder: Set(None),
            tries: Set(1),
            claimed_at: Set(None),
        }
        .insert(self.connection())
        .await;
        match inserted {
            Ok(_) => Ok(result),
            // Recorded already (a concurrent or earlier delivery): the first record stands.
            Err(e) => self
                .effect(task, step)
                .await?
                .ok_or(StoreError::Unavailable(e)),
        }
    }

    async fn claim_effect(
        &self,
        task: TaskId,
        key: &str,
        kind: &str,
        fence: Fence,
        lease: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        let db = self.connection();
        let now = Utc::now();
        let inserted = effect::Entity::insert(effect::ActiveModel {
            task_id: Set(task.as_uuid()),
            step: Set(key.to_owned()),
            kind: Set(kind.to_owned()),
            result: Set(serde_json::json!({})),
            created_at: Set(now),
            state: Set(PENDING.to_owned()),
            attempt: Set(fence.attempt),
            holder: Set(Some(fence.run)),
            tries: Set(1),
            claimed_at: Set(Some(now)),
        })
        .on_conflict(
            OnConflict::columns([effect::Column::TaskId, effect::Column::Step])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        if inserted == 1 {
            return Ok(Claim::Held {
                orphaned: false,
                tries: 1,
            });
        }
        // Taken already: by whom decides. A takeover is a guarded update, so of two runs
        // that find the same orphan, one wins and the other reads again.
        loop {
            let Some(row) = effect::Entity::find_by_id((task.as_uuid(), key.to_owned()))
                .one(db)
                .await?
            else {
                return Err(StoreError::Corrupt(format!(
                    "the effect {key} of task {task} vanished while claimed"
                )));
            };
            if row.state == DONE {
                return Ok(Claim::Done(row.result));
            }
            if row.attempt > fence.attempt {
                return Ok(Claim::Superseded {
                    attempt: row.attempt,
                });
            }
            // The same run claiming again starts over after a failure (an outage): whether
            // its effect happened is as unknown as after a lost run's.
            let again = row.holder == Some(fence.run);
            let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
            let leased = row.claimed_at.is_some_and(|at| at + lease > Utc::now());
            if !again && row.attempt == fence.attempt && leased {
                return Ok(Claim::Busy);
            }
            let mut guard = effect::Entity::update_many()
                .col_expr(effect::Column::Holder, Expr::value(fence.run))
                .col_expr(effect::Column::Attempt, Expr::value(fence.attempt))
                .col_expr(effect::Column::ClaimedAt, Expr::value(Utc::now()))
                .col_expr(
                    effect::Column::Tries,
                    Expr::col(effect::Column::Tries).add(1),
                )
                .filter(effect::Column::TaskId.eq(task.as_uuid()))
                .filter(effect::Column::Step.eq(key))
                .filter(effect::Column::State.eq(PENDING))
                .filter(effect::Column::Attempt.eq(row.attempt));
            guard = match row.holder {
                Some(holder) => guard.filter(effect::Column::Holder.eq(holder)),
                None => guard.filter(effect::Column::Holder.is_null()),
            };
            if guard.exec(db).await?.rows_affected == 1 {
                return Ok(Claim::Held {
                    orphaned: true,
                    tries: row.tries + 1,
                });
            }
        }
    }

    async fn settle_effect(
        &self,
        task: TaskId,
        key: &str,
        fence: Fence,
        result: serde_json::Value,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let db = self.connection();
        let settled = effect::Entity::update_many()
            .col_expr(effect::Column::State, Expr::value(DONE))
            .col_expr(effect::Column::Result, Expr::value(result.clone()))
            .filter(effect::Column::TaskId.eq(task.as_uuid()))
            .filter(effect::Column::Step.eq(key))
            .filter(effect::Column::State.eq(PENDING))
            .filter(effect::Column::Holder.eq(fence.run))
            .exec(db)
            .await?;
        if settled.rows_affected == 1 {
            return Ok(Some(result));
        }
        // Settled already (the first outcome stands), or the claim passed to another run.
        Ok(self.effect(task, key).await?)
    }

    async fn renew_claims(&self, task: TaskId, run: Uuid) -> Result<u64, StoreError> {
        Ok(effect::Entity::update_many()
            .col_expr(effect::Column::ClaimedAt, Expr::value(Utc::now()))
            .filter(effect::Column::TaskId.eq(task.as_uuid()))
            .filter(effect::Column::Holder.eq(run))
            .filter(effect::Column::State.eq(PENDING))
            .exec(self.connection())
            .await?
            .rows_affected)
    }
}
