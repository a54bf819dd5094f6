//! The spine: tasks (with an optimistic version), their append-only event log, and agents'
//! state snapshots.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Kind,
    Repo,
    Prompt,
    GitRef,
    Priority,
    Status,
    Version,
    Attempts,
    Result,
    ErrorCode,
    ErrorMessage,
    IdempotencyKey,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TaskEvents {
    Table,
    Seq,
    TaskId,
    EventType,
    Status,
    Data,
    Node,
    At,
}

#[derive(DeriveIden)]
enum AgentSnapshots {
    Table,
    AgentId,
    AgentKind,
    Node,
    State,
    Version,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Tasks::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Tasks::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Tasks::Repo).text().not_null())
                    .col(ColumnDef::new(Tasks::Prompt).text().null())
                    .col(ColumnDef::new(Tasks::GitRef).string_len(255).null())
                    .col(ColumnDef::new(Tasks::Priority).string_len(16).not_null())
                    .col(ColumnDef::new(Tasks::Status).string_len(32).not_null())
                    .col(ColumnDef::new(Tasks::Version).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::Attempts).integer().not_null())
                    .col(ColumnDef::new(Tasks::Result).json_binary().null())
                    .col(ColumnDef::new(Tasks::ErrorCode).string_len(64).null())
                    .col(ColumnDef::new(Tasks::ErrorMessage).text().null())
                    .col(ColumnDef::new(Tasks::IdempotencyKey).string_len(255).null())
                    .col(ColumnDef::new(Tasks::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Tasks::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_idempotency_key")
                    .table(Tasks::Table)
                    .col(Tasks::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_status_kind")
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::Kind)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(TaskEvents::Seq).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(TaskEvents::TaskId).uuid().not_null())
                    .col(ColumnDef::new(TaskEvents::EventType).string_len(32).not_null())
                    .col(ColumnDef::new(TaskEvents::Status).string_len(32).null())
                    .col(ColumnDef::new(TaskEvents::Data).json_binary().not_null())
                    .col(ColumnDef::new(TaskEvents::Node).string_len(255).null())
                    .col(ColumnDef::new(TaskEvents::At).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("task_events_task")
                            .from(TaskEvents::Table, TaskEvents::TaskId)
                            .to(Tasks::Table, Tasks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_events_task_seq")
                    .table(TaskEvents::Table)
                    .col(TaskEvents::TaskId)
                    .col(TaskEvents::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AgentSnapshots::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AgentSnapshots::AgentId).string_len(255).not_null().primary_key())
                    .col(ColumnDef::new(AgentSnapshots::AgentKind).string_len(32).not_null())
                    .col(ColumnDef::new(AgentSnapshots::Node).string_len(255).not_null())
                    .col(ColumnDef::new(AgentSnapshots::State).json_binary().not_null())
                    .col(ColumnDef::new(AgentSnapshots::Version).big_integer().not_null())
                    .col(ColumnDef::new(AgentSnapshots::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AgentSnapshots::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(TaskEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Tasks::Table).to_owned()).await
    }
}
