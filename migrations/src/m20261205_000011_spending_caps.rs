//! Spending caps across tasks: who submitted a task, whose task a model call served, which
//! answers came from the cache, and the raises an operator gave a cap for its current period.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    SubmittedBy,
}

#[derive(DeriveIden)]
enum ModelUsage {
    Table,
    Caller,
    Cached,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CapRaises {
    Table,
    Name,
    Period,
    Usd,
    RaisedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            Table::alter()
                .table(Tasks::Table)
                .add_column(ColumnDef::new(Tasks::SubmittedBy).string().null())
                .to_owned(),
            Table::alter()
                .table(ModelUsage::Table)
                .add_column(ColumnDef::new(ModelUsage::Caller).string().null())
                .to_owned(),
            Table::alter()
                .table(ModelUsage::Table)
                .add_column(
                    ColumnDef::new(ModelUsage::Cached)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        ];
        for column in columns {
            manager.alter_table(column).await?;
        }
        // A cap's spend is the sum of a period's calls.
        manager
            .create_index(
                Index::create()
                    .name("model_usage_created_at")
                    .table(ModelUsage::Table)
                    .col(ModelUsage::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CapRaises::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CapRaises::Name).string().not_null())
                    .col(ColumnDef::new(CapRaises::Period).string().not_null())
                    .col(ColumnDef::new(CapRaises::Usd).double().not_null())
                    .col(
                        ColumnDef::new(CapRaises::RaisedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(CapRaises::Name).col(CapRaises::Period))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CapRaises::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("model_usage_created_at")
                    .table(ModelUsage::Table)
                    .to_owned(),
            )
            .await?;
        for column in [ModelUsage::Cached, ModelUsage::Caller] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ModelUsage::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::SubmittedBy)
                    .to_owned(),
            )
            .await
    }
}
