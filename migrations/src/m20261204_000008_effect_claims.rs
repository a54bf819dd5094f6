//! Effects are claimed before they happen: a row is inserted `pending` under the effect's key
//! with a fencing token (the task's attempt and the run that holds it), the holder acts, and
//! the outcome is recorded on the row (`done`). Rows written before this migration were
//! recorded after the fact, so they are `done`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Effects {
    Table,
    State,
    Attempt,
    Holder,
    Tries,
    ClaimedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one change at a time.
        let columns = [
            ColumnDef::new(Effects::State)
                .string_len(16)
                .not_null()
                .default("done")
                .to_owned(),
            ColumnDef::new(Effects::Attempt)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Effects::Holder).uuid().null().to_owned(),
            ColumnDef::new(Effects::Tries)
                .integer()
                .not_null()
                .default(1)
                .to_owned(),
            ColumnDef::new(Effects::ClaimedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Effects::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Effects::State,
            Effects::Attempt,
            Effects::Holder,
            Effects::Tries,
            Effects::ClaimedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Effects::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
