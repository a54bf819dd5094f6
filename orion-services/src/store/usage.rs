//! Model usage in the store: every call's tokens and cost, and their sums.

use async_trait::async_trait;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orion_bus::TaskId;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entity::{cap_raise, model_usage};
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
    /// Who submitted the task the call served, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Answered from the response cache: no tokens were spent (the usage is the answer's
    /// first cost, not counted again).
    #[serde(default)]
    pub cached: bool,
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

/// Model calls summed: how many, their tokens and their cost; and the calls the response
/// cache answered instead, with the share of all calls they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    #[serde(default)]
    pub cache_hits: u64,
    /// `cache_hits / (calls + cache_hits)`; 0 with neither.
    #[serde(default)]
    pub cache_hit_ratio: f64,
}

impl UsageTotals {
    /// Counts one recorded call: a cache hit, or a call with its tokens and cost.
    pub fn add(&mut self, record: &UsageRecord) {
        if record.cached {
            self.cache_hits += 1;
            self.ratio();
        } else {
            self.add_call(
                record.prompt_tokens,
                record.completion_tokens,
                record.cost_usd,
            );
        }
    }

    fn ratio(&mut self) {
        let all = self.calls + self.cache_hits;
        self.cache_hit_ratio = if all == 0 {
            0.0
        } else {
            self.cache_hits as f64 / all as f64
        };
    }

    /// Counts one call.
    pub fn add_call(&mut self, prompt_tokens: u64, completion_tokens: u64, cost_usd: f64) {
        self.calls += 1;
        self.prompt_tokens += prompt_tokens;
        self.completion_tokens += completion_tokens;
        self.cost_usd += cost_usd;
        self.ratio();
    }

    /// The sum of recorded calls.
    pub fn of_calls<'a>(calls: impl IntoIterator<Item = &'a UsageRecord>) -> Self {
        let mut totals = Self::default();
        for c in calls {
            totals.add(c);
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
            totals.cache_hits += s.totals.cache_hits;
        }
        totals.ratio();
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
                let day = (group == UsageGroup::Day)
                    .then(|| row.created_at.format("%Y-%m-%d").to_string());
                let record = to_record(row);
                let key = match group {
                    UsageGroup::Task => record.task_id.map(|t| t.to_string()),
                    UsageGroup::Agent => Some(record.agent.clone()),
                    UsageGroup::Model => Some(record.model.clone()),
                    UsageGroup::Day => day,
                };
                let sum = sums.entry(key.clone()).or_insert(UsageSum {
                    key,
                    totals: UsageTotals::default(),
                });
                sum.totals.add(&record);
            }
        }
        Ok(sums.into_values().collect())
    }

    async fn spent(
        &self,
        from: DateTime<Utc>,
        caller: Option<&str>,
        model: Option<&str>,
    ) -> Result<f64, StoreError> {
        use sea_orm::sea_query::{Expr, Func};
        let mut query = model_usage::Entity::find()
            .select_only()
            .column_as(
                sea_orm::sea_query::SimpleExpr::from(Func::sum(Expr::col(
                    model_usage::Column::CostUsd,
                ))),
                "spent",
            )
            .filter(model_usage::Column::CreatedAt.gte(from))
            .filter(model_usage::Column::Cached.eq(false));
        if let Some(caller) = caller {
            query = query.filter(model_usage::Column::Caller.eq(caller));
        }
        if let Some(model) = model {
            query = query.filter(model_usage::Column::Model.eq(model));
        }
        let spent: Option<Option<f64>> = query.into_tuple().one(self.connection()).await?;
        Ok(spent.flatten().unwrap_or(0.0))
    }

    async fn raise_cap(&self, name: &str, period: &str, usd: f64) -> Result<(), StoreError> {
        use sea_orm::sea_query::OnConflict;
        cap_raise::Entity::insert(cap_raise::ActiveModel {
            name: Set(name.to_owned()),
            period: Set(period.to_owned()),
            usd: Set(usd),
            raised_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::columns([cap_raise::Column::Name, cap_raise::Column::Period])
                .update_columns([cap_raise::Column::Usd, cap_raise::Column::RaisedAt])
                .to_owned(),
        )
        .exec(self.connection())
        .await?;
        Ok(())
    }

    async fn cap_raise(&self, name: &str, period: &str) -> Result<Option<f64>, StoreError> {
        Ok(
            cap_raise::Entity::find_by_id((name.to_owned(), period.to_owned()))
                .one(self.connection())
                .await?
                .map(|m| m.usd),
        )
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
            caller: Set(usage.caller.clone()),
            cached: Set(usage.cached),
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
            .map(to_record)
            .collect())
    }
}

fn to_record(m: model_usage::Model) -> UsageRecord {
    UsageRecord {
        task_id: m.task_id.map(TaskId::from_uuid),
        agent: m.agent,
        model: m.model,
        prompt_tokens: m.prompt_tokens.max(0) as u64,
        completion_tokens: m.completion_tokens.max(0) as u64,
        cost_usd: m.cost_usd,
        caller: m.caller,
        cached: m.cached,
    }
}
