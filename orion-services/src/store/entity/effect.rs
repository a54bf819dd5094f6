use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "effects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub step: String,
    pub kind: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub result: Json,
    pub created_at: DateTimeUtc,
    /// `pending` while its holder acts, `done` once the outcome is recorded.
    pub state: String,
    /// The task's attempt that holds (or held) the claim: the fencing token.
    pub attempt: i32,
    /// The run (one delivery's work) that holds the claim.
    pub holder: Option<Uuid>,
    /// How often a run set out to act on it (more than once only after a run was lost).
    pub tries: i32,
    /// When the holder claimed it: the start of its lease.
    pub claimed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
