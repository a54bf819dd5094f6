//! Access records in the store: API keys (a hash of each secret, never the secret), the audit
//! log, and repository credentials (sealed; see [`crate::secrets`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entity::{api_key, audit_log, repo_credential};
use super::{AccessStore, SqlStore, StoreError};

/// An API key as stored and listed: everything but its secret, which is never kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// Extra permissions beyond the role (`review`).
    pub grants: Vec<String>,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to store: its SHA-256 `hash` (hex) stands in for the secret.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub name: String,
    pub role: String,
    pub grants: Vec<String>,
    pub hash: String,
    pub prefix: String,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who did what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    /// `task.submit`, `task.cancel`, `pull.review`, `api_key.create`, …
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

/// An entry to append to the audit log.
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub actor: String,
    pub role: String,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

/// A repository credential as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoCredential {
    pub id: Uuid,
    /// Remotes starting with this use the credential.
    pub repo_prefix: String,
    pub username: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

fn to_key(m: api_key::Model) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: m.id,
        name: m.name,
        role: m.role,
        grants: serde_json::from_value(m.grants)
            .map_err(|e| StoreError::Corrupt(format!("api key grants: {e}")))?,
        prefix: m.prefix,
        created_by: m.created_by,
        created_at: m.created_at,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
    })
}

pub(super) fn to_audit(m: audit_log::Model) -> AuditEntry {
    AuditEntry {
        seq: m.seq,
        at: m.at,
        actor: m.actor,
        role: m.role,
        action: m.action,
        target: m.target,
        detail: m.detail,
    }
}

fn to_credential(m: &repo_credential::Model) -> RepoCredential {
    RepoCredential {
        id: m.id,
        repo_prefix: m.repo_prefix.clone(),
        username: m.username.clone(),
        created_by: m.created_by.clone(),
        created_at: m.created_at,
    }
}

impl SqlStore {
    /// [`AccessStore::record_audit`] as a statement of its own.
    pub(super) async fn audit_one(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        insert_audit(self.connection(), entry).await
    }
}

/// Appends `entry` to the audit log through `db` (a transaction, where it belongs to one).
pub(super) async fn insert_audit(
    db: &impl sea_orm::ConnectionTrait,
    entry: NewAudit,
) -> Result<AuditEntry, StoreError> {
    let model = audit_log::ActiveModel {
        seq: sea_orm::NotSet,
        at: Set(Utc::now()),
        actor: Set(entry.actor),
        role: Set(entry.role),
        action: Set(entry.action.to_owned()),
        target: Set(entry.target),
        detail: Set(entry.detail),
    }
    .insert(db)
    .await?;
    Ok(to_audit(model))
}

#[async_trait]
impl AccessStore for SqlStore {
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let model = api_key::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(key.name),
            role: Set(key.role),
            grants: Set(serde_json::json!(key.grants)),
            hash: Set(key.hash),
            prefix: Set(key.prefix),
            created_by: Set(key.created_by),
            created_at: Set(Utc::now()),
            expires_at: Set(key.expires_at),
            revoked_at: Set(None),
        }
        .insert(self.connection())
        .await?;
        to_key(model)
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        api_key::Entity::find()
            .filter(api_key::Column::Hash.eq(hash))
            .one(self.connection())
            .await?
            .map(to_key)
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        api_key::Entity::find()
            .order_by_asc(api_key::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_key)
            .collect()
    }

    async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let found = api_key::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .ok_or(StoreError::ApiKeyNotFound(id))?;
        if found.revoked_at.is_some() {
            return to_key(found);
        }
        let mut active: api_key::ActiveModel = found.into();
        active.revoked_at = Set(Some(Utc::now()));
        to_key(active.update(self.connection()).await?)
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(super::group::Write::Audit(entry, tx)).await;
        rx.await.map_err(super::sql::writer_gone)?
    }

    async fn audit(&self, after_seq: i64, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(audit_log::Entity::find()
            .filter(audit_log::Column::Seq.gt(after_seq))
            .order_by_asc(audit_log::Column::Seq)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_audit)
            .collect())
    }

    async fn save_credential(
        &self,
        repo_prefix: &str,
        username: &str,
        sealed: String,
        created_by: &str,
    ) -> Result<RepoCredential, StoreError> {
        let existing = repo_credential::Entity::find()
            .filter(repo_credential::Column::RepoPrefix.eq(repo_prefix))
            .one(self.connection())
            .await?;
        let model = match existing {
            Some(found) => {
                let mut active: repo_credential::ActiveModel = found.into();
                active.username = Set(username.to_owned());
                active.sealed = Set(sealed);
                active.created_by = Set(created_by.to_owned());
                active.created_at = Set(Utc::now());
                active.update(self.connection()).await?
            }
            None => {
                repo_credential::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    repo_prefix: Set(repo_prefix.to_owned()),
                    username: Set(username.to_owned()),
                    sealed: Set(sealed),
                    created_by: Set(created_by.to_owned()),
                    created_at: Set(Utc::now()),
                }
                .insert(self.connection())
                .await?
            }
        };
        Ok(to_credential(&model))
    }

    async fn credentials(&self) -> Result<Vec<RepoCredential>, StoreError> {
        Ok(repo_credential::Entity::find()
            .order_by_asc(repo_credential::Column::RepoPrefix)
            .all(self.connection())
            .await?
            .iter()
            .map(to_credential)
            .collect())
    }

    async fn sealed_credentials(&self) -> Result<Vec<(RepoCredential, String)>, StoreError> {
        Ok(repo_credential::Entity::find()
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| (to_credential(&m), m.sealed))
            .collect())
    }

    async fn delete_credential(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = repo_credential::Entity::delete_by_id(id)
            .exec(self.connection())
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::CredentialNotFound(id));
        }
        Ok(())
    }
}
