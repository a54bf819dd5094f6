//! The effects ledger in the store: what happened once, by (task, key).

use async_trait::async_trait;

use chrono::Utc;
use orion_bus::TaskId;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use uuid::Uuid;

use super::entity::effect;
use super::{EffectStore, SqlStore, StoreError};

/// The key of an effect in the ledger, per task: what may happen once. One constructor a
/// kind of effect; the formats are stored, so they do not change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EffectKey(String);

impl EffectKey {
    /// A model call of a step, in an attempt.
    pub fn model_call(step: &str, attempt: i32) -> Self {
        Self(format!("model:{step}:{attempt}"))
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
    /// A request for changes mirrored to the forge, per revision round (attempt).
    pub fn forge_review(attempt: i32) -> Self {
        Self(format!("forge:review:{attempt}"))
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
                .one(self.connection())
                .await?
                .map(|m| m.result),
        )
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
}
