use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "pull_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub task_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub repo: String,
    pub branch: String,
    pub base: String,
    pub base_oid: String,
    pub head_oid: String,
    pub files_changed: i64,
    pub insertions: i64,
    pub deletions: i64,
    #[sea_orm(column_type = "Text")]
    pub diff: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub tests: Option<Json>,
    pub state: String,
    pub rounds: i32,
    pub merge_commit: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
