//! `extensions`, `extension_slots`, `extension_activations`, `extension_shadow_results`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExtensionRow {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub slot: String,
    pub digest: String,
    pub manifest: Value,
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SlotRow {
    pub slot: String,
    pub active_id: Option<Uuid>,
    pub shadow_id: Option<Uuid>,
}

const SELECT: &str =
    "SELECT id, name, version, slot, digest, manifest, builtin, created_at FROM extensions";

pub async fn insert(db: &Db, row: &ExtensionRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO extensions (id, name, version, slot, digest, manifest, builtin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.version)
        .bind(&row.slot)
        .bind(&row.digest)
        .bind(Json(&row.manifest))
        .bind(row.builtin)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

pub async fn list(db: &Db) -> StoreResult<Vec<ExtensionRow>> {
    let sql = format!("{SELECT} ORDER BY slot, created_at, id");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).fetch_all(pool).await?))
}

pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<ExtensionRow>> {
    let sql = format!("{SELECT} WHERE id = $1");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
}

pub async fn find_by_digest(
    db: &Db,
    slot: &str,
    digest: &str,
) -> StoreResult<Option<ExtensionRow>> {
    let sql = format!("{SELECT} WHERE slot = $1 AND digest = $2");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(slot).bind(digest).fetch_optional(pool).await?))
}

pub async fn delete(db: &Db, id: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("DELETE FROM extensions WHERE id = $1").bind(id).execute(pool).await?.rows_affected() > 0))
}

pub async fn slots(db: &Db) -> StoreResult<Vec<SlotRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as("SELECT slot, active_id, shadow_id FROM extension_slots ORDER BY slot")
        .fetch_all(pool)
        .await?))
}

/// Makes `id` the active version of `slot` and records it in the history, in one transaction.
/// A candidate in shadow that becomes active leaves the shadow.
pub async fn activate(db: &Db, slot: &str, id: Uuid, action: &str) -> StoreResult<()> {
    let begin = db.begin_write_sql();
    let now = Utc::now();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        sqlx::query(
            "INSERT INTO extension_slots (slot, active_id, shadow_id, updated_at) VALUES ($1, $2, NULL, $3)
             ON CONFLICT (slot) DO UPDATE SET active_id = excluded.active_id, updated_at = excluded.updated_at,
                 shadow_id = CASE WHEN extension_slots.shadow_id = excluded.active_id THEN NULL ELSE extension_slots.shadow_id END",
        )
        .bind(slot)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO extension_activations (id, slot, extension_id, action, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(Uuid::new_v4())
            .bind(slot)
            .bind(id)
            .bind(action)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}

pub async fn set_shadow(db: &Db, slot: &str, id: Option<Uuid>) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("UPDATE extension_slots SET shadow_id = $2, updated_at = $3 WHERE slot = $1")
        .bind(slot)
        .bind(id)
        .bind(Utc::now())
        .execute(pool)
        .await?
        .rows_affected() > 0))
}

/// Clears `slot`'s shadow if it is `id`; false when it was not (already stopped, or another
/// version shadows the slot now).
pub async fn clear_shadow(db: &Db, slot: &str, id: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("UPDATE extension_slots SET shadow_id = NULL, updated_at = $3 WHERE slot = $1 AND shadow_id = $2")
        .bind(slot)
        .bind(id)
        .bind(Utc::now())
        .execute(pool)
        .await?
        .rows_affected() > 0))
}

/// The extension ids activated in `slot`, newest first.
pub async fn activation_history(db: &Db, slot: &str) -> StoreResult<Vec<Uuid>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT extension_id FROM extension_activations WHERE slot = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(slot)
    .fetch_all(pool)
    .await?))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShadowResultRow {
    pub id: Uuid,
    pub slot: String,
    pub active_id: Uuid,
    pub candidate_id: Uuid,
    pub outcome: String,
    pub input: Option<Value>,
    pub active_answer: Option<Value>,
    pub candidate_answer: Option<Value>,
    pub active_us: i64,
    pub candidate_us: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_shadow_result(db: &Db, row: &ShadowResultRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO extension_shadow_results (id, slot, active_id, candidate_id, outcome, input, active_answer,
                 candidate_answer, active_us, candidate_us, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(row.id)
        .bind(&row.slot)
        .bind(row.active_id)
        .bind(row.candidate_id)
        .bind(&row.outcome)
        .bind(row.input.as_ref().map(Json))
        .bind(row.active_answer.as_ref().map(Json))
        .bind(row.candidate_answer.as_ref().map(Json))
        .bind(row.active_us)
        .bind(row.candidate_us)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Counts per outcome for a candidate in a slot: `(outcome, count)`.
pub async fn shadow_counts(
    db: &Db,
    slot: &str,
    candidate: Uuid,
) -> StoreResult<Vec<(String, i64)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT outcome, COUNT(*) FROM extension_shadow_results WHERE slot = $1 AND candidate_id = $2 GROUP BY outcome ORDER BY outcome",
    )
    .bind(slot)
    .bind(candidate)
    .fetch_all(pool)
    .await?))
}

/// The newest disagreements and candidate failures, for the operator to read.
pub async fn shadow_disagreements(
    db: &Db,
    slot: &str,
    candidate: Uuid,
    limit: i64,
) -> StoreResult<Vec<ShadowResultRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, slot, active_id, candidate_id, outcome, input, active_answer, candidate_answer, active_us, candidate_us, created_at
         FROM extension_shadow_results WHERE slot = $1 AND candidate_id = $2 AND outcome <> 'agree'
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(slot)
    .bind(candidate)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// Stores a component's bytes under its digest (a no-op when they are already there).
pub async fn put_blob(db: &Db, digest: &str, bytes: &[u8]) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO extension_blobs (digest, bytes, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(bytes)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// A component's bytes by digest.
pub async fn get_blob(db: &Db, digest: &str) -> StoreResult<Option<Vec<u8>>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar("SELECT bytes FROM extension_blobs WHERE digest = $1").bind(digest).fetch_optional(pool).await?))
}

/// Digests of stored versions whose bytes are not in the database yet (stored before it kept
/// them).
pub async fn digests_without_blob(db: &Db) -> StoreResult<Vec<String>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT DISTINCT digest FROM extensions e
         WHERE NOT EXISTS (SELECT 1 FROM extension_blobs b WHERE b.digest = e.digest)",
    ).fetch_all(pool).await?))
}

/// Forgets a digest's bytes once no version uses them.
pub async fn delete_unused_blob(db: &Db, digest: &str) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "DELETE FROM extension_blobs WHERE digest = $1
             AND NOT EXISTS (SELECT 1 FROM extensions WHERE digest = $1)",
        )
        .bind(digest)
        .execute(pool)
        .await?;
        Ok(())
    })
}
