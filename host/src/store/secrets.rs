//! `workspace_secrets` and `global_secrets`: ciphertext rows; encryption happens above the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db};

/// A stored secret: its key, ciphertext and how it was sealed. Never logged.
#[derive(Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub key: String,
    pub encrypted_value: Vec<u8>,
    pub encryption_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("key", &self.key)
            .field("encryption_version", &self.encryption_version)
            .finish_non_exhaustive()
    }
}

pub async fn list_workspace(db: &Db, workspace_id: Uuid) -> StoreResult<Vec<SecretRow>> {
    on_db!(db, pool => Ok(sqlx::query_as(
        "SELECT key, encrypted_value, encryption_version, created_at, updated_at
         FROM workspace_secrets WHERE workspace_id = $1 ORDER BY key",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?))
}

pub async fn list_global(db: &Db) -> StoreResult<Vec<SecretRow>> {
    on_db!(db, pool => Ok(sqlx::query_as(
        "SELECT key, encrypted_value, encryption_version, created_at, updated_at FROM global_secrets ORDER BY key",
    )
    .fetch_all(pool)
    .await?))
}

pub async fn get_workspace(
    db: &Db,
    workspace_id: Uuid,
    key: &str,
) -> StoreResult<Option<SecretRow>> {
    on_db!(db, pool => Ok(sqlx::query_as(
        "SELECT key, encrypted_value, encryption_version, created_at, updated_at
         FROM workspace_secrets WHERE workspace_id = $1 AND key = $2",
    )
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(pool)
    .await?))
}

pub async fn upsert_workspace(
    db: &Db,
    workspace_id: Uuid,
    key: &str,
    ciphertext: &[u8],
    version: i32,
) -> StoreResult<()> {
    let now = Utc::now();
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO workspace_secrets (id, workspace_id, key, encrypted_value, encryption_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (workspace_id, key) DO UPDATE SET encrypted_value = excluded.encrypted_value,
                 encryption_version = excluded.encryption_version, updated_at = excluded.updated_at",
        )
        .bind(Uuid::new_v4())
        .bind(workspace_id)
        .bind(key)
        .bind(ciphertext)
        .bind(version)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(())
    })
}

pub async fn delete_workspace(db: &Db, workspace_id: Uuid, key: &str) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = $1 AND key = $2")
        .bind(workspace_id)
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected() > 0))
}

pub async fn upsert_global(db: &Db, key: &str, ciphertext: &[u8], version: i32) -> StoreResult<()> {
    let now = Utc::now();
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO global_secrets (key, encrypted_value, encryption_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (key) DO UPDATE SET encrypted_value = excluded.encrypted_value,
                 encryption_version = excluded.encryption_version, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(ciphertext)
        .bind(version)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(())
    })
}

pub async fn delete_global(db: &Db, key: &str) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("DELETE FROM global_secrets WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected() > 0))
}

/// Live, restartable workspaces that have no workspace-level secret named `key`: the ones a
/// change of the global secret `key` affects.
pub async fn workspaces_inheriting_global(db: &Db, key: &str) -> StoreResult<Vec<Uuid>> {
    on_db!(db, pool => Ok(sqlx::query_scalar(
        "SELECT w.id FROM workspaces w
         WHERE w.status NOT IN ('removed', 'paused', 'hibernated', 'hibernating') AND w.runtime <> 'external'
           AND NOT EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.key = $1)
         ORDER BY w.created_at, w.id",
    )
    .bind(key)
    .fetch_all(pool)
    .await?))
}
