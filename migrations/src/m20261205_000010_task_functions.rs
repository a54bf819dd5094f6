//! Every function an analyze task measured, one row each, under the run that measured it: the
//! per-function data of the task's report, paged through the API.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TaskFunctions {
    Table,
    TaskId,
    ListId,
    Seq,
    Path,
    Language,
    Name,
    StartLine,
    EndLine,
    Parameters,
    Cyclomatic,
    Cognitive,
    MaxNesting,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use TaskFunctions as F;
        let int = |c: F| ColumnDef::new(c).integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(F::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(F::TaskId).uuid().not_null())
                    .col(ColumnDef::new(F::ListId).uuid().not_null())
                    .col(int(F::Seq))
                    .col(ColumnDef::new(F::Path).text().not_null())
                    .col(ColumnDef::new(F::Language).string_len(32).not_null())
                    .col(ColumnDef::new(F::Name).text().not_null())
                    .col(int(F::StartLine))
                    .col(int(F::EndLine))
                    .col(int(F::Parameters))
                    .col(int(F::Cyclomatic))
                    .col(int(F::Cognitive))
                    .col(int(F::MaxNesting))
                    .primary_key(Index::create().col(F::TaskId).col(F::ListId).col(F::Seq))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TaskFunctions::Table).to_owned())
            .await
    }
}
