//! Model usage in the store: every call's tokens and cost, and their sums.

use async_trait::async_trait;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orion_bus::TaskId;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entity::model_usage;
use super::{SqlStore, StoreError, UsageStore};

/// One model call's tokens and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub task_id: Option<TaskId>,
    pub agent: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// Model-usage rows read per query when summing.
const USAGE_PAGE: u64 = 1000;

/// How usage is summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    Task,
    Agent,
    Model,
    /// The UTC day of the call, `YYYY-MM-DD`.
    Day,
}

/// Model calls summed: how many, their tokens and their cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl UsageTotals {
    /// Counts one call.
    pub fn add_call(&mut self, prompt_tokens: u64, completion_tokens: u64, cost_usd: f64) {
        self.calls += 1;
        self.prompt_tokens += prompt_tokens;
        self.completion_tokens += completion_tokens;
        self.cost_usd += cost_usd;
    }

    /// The sum of recorded calls.
    pub fn of_calls<'a>(calls: impl IntoIterator<Item = &'a UsageRecord>) -> Self {
        let mut totals = Self::default();
        for c in calls {
            totals.add_call(c.prompt_tokens, c.completion_tokens, c.cost_usd);
        }
        totals
    }

    /// The sum of sums.
    pub fn of_sums<'a>(sums: impl IntoIterator<Item = &'a UsageSum>) -> Self {
        let mut totals = Self::default();
        for s in sums {
            totals.calls += s.totals.calls;
            totals.prompt_tokens += s.totals.prompt_tokens;
            totals.completion_tokens += s.totals.completion_tokens;
            totals.cost_usd += s.totals.cost_usd;
        }
        totals
    }
}

/// The sums of one group of model calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageSum {
    /// The task id, agent, model or day; `null` for calls made outside any task.
    pub key: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn usage(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        group: UsageGroup,
    ) -> Result<Vec<UsageSum>, StoreError> {
        let mut query = model_usage::Entity::find();
        if let Some(from) = from {
            query = query.filter(model_usage::Column::CreatedAt.gte(from));
        }
        if let Some(to) = to {
            query = query.filter(model_usage::Column::CreatedAt.lt(to));
        }
        let mut sums: BTreeMap<Option<String>, UsageSum> = BTreeMap::new();
        // Read a page at a time: memory stays bounded however many calls there were.
        let mut pages = query
            .order_by_asc(model_usage::Column::Id)
            .paginate(self.connection(), USAGE_PAGE);
        while let Some(page) = pages.fetch_and_next().await? {
            for row in page {
                let key = match group {
                    UsageGroup::Task => row.task_id.map(|t| t.to_string()),
                    UsageGroup::Agent => Some(row.agent),
                    UsageGroup::Model => Some(row.model),
                    UsageGroup::Day => Some(row.created_at.format("%Y-%m-%d").to_string()),
                };
                let sum = sums.entry(key.clone()).or_insert(UsageSum {
                    key,
                    totals: UsageTotals::default(),
                });
                sum.totals.add_call(
                    row.prompt_tokens.max(0) as u64,
                    row.completion_tokens.max(0) as u64,
                    row.cost_usd,
                );
            }
        }
        Ok(sums.into_values().collect())
    }

    async fn record_usage(&self, usage: &UsageRecord) -> Result<(), StoreError> {
        model_usage::ActiveModel {
            id: Set(Uuid::now_v7()),
            task_id: Set(usage.task_id.map(|t| t.as_uuid())),
            agent: Set(usage.agent.clone()),
            model: Set(usage.model.clone()),
            prompt_tokens: Set(usage.prompt_tokens as i64),
            completion_tokens: Set(usage.completion_tokens as i64),
            cost_usd: Set(usage.cost_usd),
            created_at: Set(Utc::now()),
        }
        .insert(self.connection())
        .await?;
        Ok(())
    }

    async fn task_usage(&self, task: TaskId) -> Result<Vec<UsageRecord>, StoreError> {
        Ok(model_usage::Entity::find()
            .filter(model_usage::Column::TaskId.eq(task.as_uuid()))
            .order_by_asc(model_usage::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| UsageRecord {
                task_id: m.task_id.map(TaskId::from_uuid),
                agent: m.agent,
                model: m.model,
                prompt_tokens: m.prompt_tokens.max(0) as u64,
                completion_tokens: m.completion_tokens.max(0) as u64,
                cost_usd: m.cost_usd,
            })
            .collect())
    }
}
