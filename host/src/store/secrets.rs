//! `workspace_secrets` and `global_secrets`: ciphertext rows; encryption happens above the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Backend, Db, StoreResult, on_db, on_db_read};

/// Serialises the start-up re-seal across replicas sharing one PostgreSQL database (a one-key
/// advisory lock, like the migrator's). "molecule" with "seal" in its second half.
const RESEAL_LOCK: i64 = 0x6d6f_6c65_7365_616c;

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
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT key, encrypted_value, encryption_version, created_at, updated_at
         FROM workspace_secrets WHERE workspace_id = $1 ORDER BY key",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?))
}

pub async fn list_global(db: &Db) -> StoreResult<Vec<SecretRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
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
    on_db_read!(db, pool => Ok(sqlx::query_as(
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
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT w.id FROM workspaces w
         WHERE w.status NOT IN ('removed', 'paused', 'hibernated', 'hibernating') AND w.runtime <> 'external'
           AND NOT EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.key = $1)
         ORDER BY w.created_at, w.id",
    )
    .bind(key)
    .fetch_all(pool)
    .await?))
}

/// A row as the re-seal at start sees it: which table (`workspace_id` `None` is
/// `global_secrets`), key, stored bytes and version. Never logged with its bytes.
pub struct StoredRow {
    pub workspace_id: Option<Uuid>,
    pub key: String,
    pub encrypted_value: Vec<u8>,
    pub encryption_version: i32,
}

impl std::fmt::Debug for StoredRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRow")
            .field("workspace_id", &self.workspace_id)
            .field("key", &self.key)
            .field("encryption_version", &self.encryption_version)
            .finish_non_exhaustive()
    }
}

/// What the re-seal does with one row: new bytes and version, or `None` to leave it.
pub type Reseal<'a> = dyn FnMut(&StoredRow) -> Option<(Vec<u8>, i32)> + Send + 'a;

/// In one write transaction, hands every row of both tables whose `encryption_version` is below
/// `version` to `reseal`, and stores what it returns (new bytes and version) where the row is
/// still exactly as it was read; `None` leaves the row alone. On PostgreSQL an advisory lock
/// makes replicas that start together take turns, so the second finds nothing left. Returns how
/// many workspace and global rows were rewritten.
pub async fn reseal_below(
    db: &Db,
    version: i32,
    reseal: &mut Reseal<'_>,
) -> StoreResult<(usize, usize)> {
    let begin = db.begin_write_sql();
    let postgres = db.backend() == Backend::Postgres;
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(RESEAL_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let own: Vec<(Uuid, String, Vec<u8>, i32)> = sqlx::query_as(
            "SELECT workspace_id, key, encrypted_value, encryption_version FROM workspace_secrets
             WHERE encryption_version < $1 ORDER BY workspace_id, key",
        )
        .bind(version)
        .fetch_all(&mut *tx)
        .await?;
        let mut workspace = 0usize;
        for (workspace_id, key, encrypted_value, encryption_version) in own {
            let row = StoredRow { workspace_id: Some(workspace_id), key, encrypted_value, encryption_version };
            let Some((sealed, new_version)) = reseal(&row) else { continue };
            let done = sqlx::query(
                "UPDATE workspace_secrets SET encrypted_value = $1, encryption_version = $2
                 WHERE workspace_id = $3 AND key = $4 AND encryption_version = $5 AND encrypted_value = $6",
            )
            .bind(&sealed)
            .bind(new_version)
            .bind(workspace_id)
            .bind(&row.key)
            .bind(row.encryption_version)
            .bind(&row.encrypted_value)
            .execute(&mut *tx)
            .await?;
            workspace += done.rows_affected() as usize;
        }
        let global_rows: Vec<(String, Vec<u8>, i32)> = sqlx::query_as(
            "SELECT key, encrypted_value, encryption_version FROM global_secrets
             WHERE encryption_version < $1 ORDER BY key",
        )
        .bind(version)
        .fetch_all(&mut *tx)
        .await?;
        let mut global = 0usize;
        for (key, encrypted_value, encryption_version) in global_rows {
            let row = StoredRow { workspace_id: None, key, encrypted_value, encryption_version };
            let Some((sealed, new_version)) = reseal(&row) else { continue };
            let done = sqlx::query(
                "UPDATE global_secrets SET encrypted_value = $1, encryption_version = $2
                 WHERE key = $3 AND encryption_version = $4 AND encrypted_value = $5",
            )
            .bind(&sealed)
            .bind(new_version)
            .bind(&row.key)
            .bind(row.encryption_version)
            .bind(&row.encrypted_value)
            .execute(&mut *tx)
            .await?;
            global += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok((workspace, global))
    })
}
