//! `workspace_memory`: the key-value memory of a workspace, with a version per key for
//! optimistic concurrency and an optional expiry. Every read here leaves expired rows out; only
//! [`stored`] and [`sweep_expired`] see them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// One live key as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KvRow {
    pub key: String,
    pub value: Value,
    pub version: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "key, value, version, expires_at, created_at, updated_at";

/// "The row is live at `$now`" for the query whose `$now` is parameter `n`.
fn live(n: u8) -> String {
    format!("(expires_at IS NULL OR expires_at > ${n})")
}

/// The workspace's live keys, by key.
pub async fn list(db: &Db, workspace_id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<KvRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspace_memory WHERE workspace_id = $1 AND {} ORDER BY key",
        live(2)
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(now).fetch_all(pool).await?))
}

/// One live key.
pub async fn get(
    db: &Db,
    workspace_id: Uuid,
    key: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<KvRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspace_memory WHERE workspace_id = $1 AND key = $2 AND {}",
        live(3)
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(key).bind(now).fetch_optional(pool).await?))
}

/// The row as stored, expired or not (what the sweeper sees); for checks and tests.
pub async fn stored(db: &Db, workspace_id: Uuid, key: &str) -> StoreResult<Option<KvRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workspace_memory WHERE workspace_id = $1 AND key = $2");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(key).fetch_optional(pool).await?))
}

/// What a write is conditional on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Whatever is there (a new key starts at version 1).
    Any,
    /// Only when the key is absent or expired.
    Absent,
    /// Only when the live key is at this version.
    Version(i64),
}

/// A write to make.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    pub workspace_id: Uuid,
    pub key: &'a str,
    pub value: &'a Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub condition: Condition,
    pub now: DateTime<Utc>,
}

/// Writes `write` in one statement, so two writers racing on the same version cannot both win
/// (the conditional update or upsert is decided under the row's lock). The written row, or
/// `None` when the condition did not hold.
pub async fn put(db: &Db, write: &Write<'_>) -> StoreResult<Option<KvRow>> {
    let expired = "(workspace_memory.expires_at IS NOT NULL AND workspace_memory.expires_at <= $5)";
    let sql = match write.condition {
        Condition::Version(_) => format!(
            "UPDATE workspace_memory SET value = $3, expires_at = $4, version = version + 1, updated_at = $5
             WHERE workspace_id = $1 AND key = $2 AND version = $6 AND {}
             RETURNING {COLUMNS}",
            live(5)
        ),
        // An expired row is the same as no row: the write replaces it and starts at version 1.
        Condition::Absent => format!(
            "INSERT INTO workspace_memory (workspace_id, key, value, version, expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $5, $5)
             ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value, version = 1,
                 expires_at = excluded.expires_at, created_at = excluded.created_at, updated_at = excluded.updated_at
             WHERE {expired}
             RETURNING {COLUMNS}"
        ),
        Condition::Any => format!(
            "INSERT INTO workspace_memory (workspace_id, key, value, version, expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $5, $5)
             ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value,
                 version = CASE WHEN {expired} THEN 1 ELSE workspace_memory.version + 1 END,
                 created_at = CASE WHEN {expired} THEN excluded.created_at ELSE workspace_memory.created_at END,
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at
             RETURNING {COLUMNS}"
        ),
    };
    let version = match write.condition {
        Condition::Version(v) => v,
        _ => 0,
    };
    on_db!(db, pool => {
        let mut query = sqlx::query_as(&sql)
            .bind(write.workspace_id)
            .bind(write.key)
            .bind(Json(write.value))
            .bind(write.expires_at)
            .bind(write.now);
        if matches!(write.condition, Condition::Version(_)) {
            query = query.bind(version);
        }
        Ok(query.fetch_optional(pool).await?)
    })
}

/// Deletes a live key; false when there was none (an expired one is deleted too, but counts as
/// absent).
pub async fn delete(
    db: &Db,
    workspace_id: Uuid,
    key: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // Whether the deleted row was still live.
    let sql = "DELETE FROM workspace_memory WHERE workspace_id = $1 AND key = $2
               RETURNING (expires_at IS NULL OR expires_at > $3) AS live";
    on_db!(db, pool => {
        let live: Option<bool> = sqlx::query_scalar(sql)
            .bind(workspace_id)
            .bind(key)
            .bind(now)
            .fetch_optional(pool)
            .await?;
        Ok(live.unwrap_or(false))
    })
}

/// Deletes up to `limit` rows expired at `now`; how many went.
pub async fn sweep_expired(db: &Db, now: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
    on_db!(db, pool => Ok(sqlx::query(
        "DELETE FROM workspace_memory WHERE (workspace_id, key) IN (
             SELECT workspace_id, key FROM workspace_memory
             WHERE expires_at IS NOT NULL AND expires_at <= $1
             ORDER BY expires_at LIMIT $2)",
    )
    .bind(now)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected()))
}

/// Deletes every key of `ids` (their workspaces were removed).
pub async fn delete_for_workspaces(db: &Db, ids: &[Uuid]) -> StoreResult<()> {
    on_db!(db, pool => {
        for id in ids {
            sqlx::query("DELETE FROM workspace_memory WHERE workspace_id = $1")
                .bind(*id)
                .execute(pool)
                .await?;
        }
        Ok(())
    })
}
