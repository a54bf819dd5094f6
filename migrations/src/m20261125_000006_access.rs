//! Access: API keys (only a hash of each secret is kept), the audit log of who did what, and
//! repository credentials (sealed with a key from the environment, never stored in clear).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Role,
    Grants,
    Hash,
    Prefix,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Seq,
    At,
    Actor,
    Role,
    Action,
    Target,
    Detail,
}

#[derive(DeriveIden)]
enum RepoCredentials {
    Table,
    Id,
    RepoPrefix,
    Username,
    Sealed,
    CreatedBy,
    CreatedAt,
}

fn timestamp<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::Name).string_len(255).not_null())
                    .col(ColumnDef::new(ApiKeys::Role).string_len(32).not_null())
                    .col(ColumnDef::new(ApiKeys::Grants).json_binary().not_null())
                    .col(
                        ColumnDef::new(ApiKeys::Hash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(32).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::CreatedBy)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(timestamp(ApiKeys::CreatedAt).not_null())
                    .col(timestamp(ApiKeys::ExpiresAt).null())
                    .col(timestamp(ApiKeys::RevokedAt).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditLog::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(timestamp(AuditLog::At).not_null())
                    .col(ColumnDef::new(AuditLog::Actor).string_len(255).not_null())
                    .col(ColumnDef::new(AuditLog::Role).string_len(32).not_null())
                    .col(ColumnDef::new(AuditLog::Action).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLog::Target).string_len(255).null())
                    .col(ColumnDef::new(AuditLog::Detail).json_binary().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RepoCredentials::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RepoCredentials::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RepoCredentials::RepoPrefix)
                            .string_len(1024)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(RepoCredentials::Username)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(RepoCredentials::Sealed).text().not_null())
                    .col(
                        ColumnDef::new(RepoCredentials::CreatedBy)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(timestamp(RepoCredentials::CreatedAt).not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RepoCredentials::Table.into_iden(),
            AuditLog::Table.into_iden(),
            ApiKeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
