use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub task_id: Option<Uuid>,
    pub agent: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    #[sea_orm(column_type = "Double")]
    pub cost_usd: f64,
    pub created_at: DateTimeUtc,
    /// Who submitted the task the call served.
    pub caller: Option<String>,
    /// Answered from the response cache: no tokens were spent.
    pub cached: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
