//! Pull requests (one per develop task, updated by each revision round) and their reviews:
//! the review gate is durable because it lives here.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PullRequests {
    Table,
    Id,
    TaskId,
    Repo,
    Branch,
    Base,
    BaseOid,
    HeadOid,
    FilesChanged,
    Insertions,
    Deletions,
    Diff,
    Tests,
    State,
    Rounds,
    MergeCommit,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Id,
    PullId,
    Decision,
    Comment,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PullRequests::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PullRequests::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::TaskId)
                            .uuid()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(PullRequests::Repo).text().not_null())
                    .col(
                        ColumnDef::new(PullRequests::Branch)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::Base)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::BaseOid)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::HeadOid)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::FilesChanged)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::Insertions)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::Deletions)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PullRequests::Diff).text().not_null())
                    .col(ColumnDef::new(PullRequests::Tests).json_binary().null())
                    .col(
                        ColumnDef::new(PullRequests::State)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(PullRequests::Rounds).integer().not_null())
                    .col(
                        ColumnDef::new(PullRequests::MergeCommit)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequests::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Reviews::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Reviews::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Reviews::PullId).uuid().not_null())
                    .col(ColumnDef::new(Reviews::Decision).string_len(32).not_null())
                    .col(ColumnDef::new(Reviews::Comment).text().not_null())
                    .col(
                        ColumnDef::new(Reviews::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("reviews_pull")
                            .from(Reviews::Table, Reviews::PullId)
                            .to(PullRequests::Table, PullRequests::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Reviews::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(PullRequests::Table).to_owned())
            .await
    }
}
