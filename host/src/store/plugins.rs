//! `workspace_plugins` (what is installed where, from which source, tracking which ref) and
//! `org_plugin_allowlist`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspacePluginRow {
    pub workspace_id: Uuid,
    pub plugin_name: String,
    pub source_raw: String,
    pub tracked_ref: String,
    pub installed_sha: Option<String>,
    pub installed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Records an install: a new row, or the source, tracked ref and revision of an existing one
/// (its first install time kept).
pub async fn upsert(
    db: &Db,
    workspace_id: Uuid,
    plugin_name: &str,
    source_raw: &str,
    tracked_ref: &str,
    installed_sha: Option<&str>,
) -> StoreResult<()> {
    let now = Utc::now();
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO workspace_plugins
                 (workspace_id, plugin_name, source_raw, tracked_ref, installed_sha, installed_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (workspace_id, plugin_name) DO UPDATE SET
                 source_raw = excluded.source_raw,
                 tracked_ref = excluded.tracked_ref,
                 installed_sha = excluded.installed_sha,
                 updated_at = excluded.updated_at",
        )
        .bind(workspace_id)
        .bind(plugin_name)
        .bind(source_raw)
        .bind(tracked_ref)
        .bind(installed_sha)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(())
    })
}

pub async fn get(
    db: &Db,
    workspace_id: Uuid,
    plugin_name: &str,
) -> StoreResult<Option<WorkspacePluginRow>> {
    on_db!(db, pool => Ok(sqlx::query_as(
        "SELECT workspace_id, plugin_name, source_raw, tracked_ref, installed_sha, installed_at, updated_at
         FROM workspace_plugins WHERE workspace_id = $1 AND plugin_name = $2",
    )
    .bind(workspace_id)
    .bind(plugin_name)
    .fetch_optional(pool)
    .await?))
}

pub async fn list_for_workspace(
    db: &Db,
    workspace_id: Uuid,
) -> StoreResult<Vec<WorkspacePluginRow>> {
    on_db!(db, pool => Ok(sqlx::query_as(
        "SELECT workspace_id, plugin_name, source_raw, tracked_ref, installed_sha, installed_at, updated_at
         FROM workspace_plugins WHERE workspace_id = $1 ORDER BY plugin_name",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await?))
}

/// Deletes the tracking row; whether there was one.
pub async fn delete(db: &Db, workspace_id: Uuid, plugin_name: &str) -> StoreResult<bool> {
    on_db!(db, pool => {
        let done = sqlx::query("DELETE FROM workspace_plugins WHERE workspace_id = $1 AND plugin_name = $2")
            .bind(workspace_id)
            .bind(plugin_name)
            .execute(pool)
            .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// The org's allow-listed plugin names; empty means every plugin is allowed.
pub async fn allowlist(db: &Db, org_id: Uuid) -> StoreResult<Vec<String>> {
    on_db!(db, pool => Ok(sqlx::query_scalar(
        "SELECT plugin_name FROM org_plugin_allowlist WHERE org_id = $1 ORDER BY plugin_name",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?))
}

/// Replaces the org's allow-list in one transaction.
pub async fn set_allowlist(db: &Db, org_id: Uuid, names: &[String]) -> StoreResult<()> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = pool.begin_with(begin).await?;
        sqlx::query("DELETE FROM org_plugin_allowlist WHERE org_id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        for name in names {
            sqlx::query("INSERT INTO org_plugin_allowlist (org_id, plugin_name, created_at) VALUES ($1, $2, $3)")
                .bind(org_id)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}
