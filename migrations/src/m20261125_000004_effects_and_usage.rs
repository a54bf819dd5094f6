//! The effects ledger (one row per (task, step) that touched the outside world: model calls,
//! pushes, merges), and model usage per call.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Effects {
    Table,
    TaskId,
    Step,
    Kind,
    Result,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ModelUsage {
    Table,
    Id,
    TaskId,
    Agent,
    Model,
    PromptTokens,
    CompletionTokens,
    CostUsd,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Effects::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Effects::TaskId).uuid().not_null())
                    .col(ColumnDef::new(Effects::Step).string_len(255).not_null())
                    .col(ColumnDef::new(Effects::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Effects::Result).json_binary().not_null())
                    .col(
                        ColumnDef::new(Effects::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Effects::TaskId).col(Effects::Step))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelUsage::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ModelUsage::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ModelUsage::TaskId).uuid().null())
                    .col(ColumnDef::new(ModelUsage::Agent).string_len(32).not_null())
                    .col(ColumnDef::new(ModelUsage::Model).string_len(255).not_null())
                    .col(
                        ColumnDef::new(ModelUsage::PromptTokens)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ModelUsage::CompletionTokens)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ModelUsage::CostUsd).double().not_null())
                    .col(
                        ColumnDef::new(ModelUsage::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("model_usage_task")
                    .table(ModelUsage::Table)
                    .col(ModelUsage::TaskId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ModelUsage::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Effects::Table).to_owned())
            .await
    }
}
