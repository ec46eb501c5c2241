//! `workspace_plugins` (what is installed where, from which source, tracking which ref) and
//! `org_plugin_allowlist`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

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
    on_db_read!(db, pool => Ok(sqlx::query_as(
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
    on_db_read!(db, pool => Ok(sqlx::query_as(
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
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
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
        let mut tx = super::begin(pool, Some(begin)).await?;
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

/// Rows whose tracked ref drift detection follows.
pub async fn tracked(db: &Db) -> StoreResult<Vec<WorkspacePluginRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT p.workspace_id, p.plugin_name, p.source_raw, p.tracked_ref, p.installed_sha, p.installed_at, p.updated_at
         FROM workspace_plugins p JOIN workspaces w ON w.id = p.workspace_id
         WHERE p.tracked_ref <> 'none' AND p.installed_sha IS NOT NULL AND w.status <> 'removed'
         ORDER BY p.workspace_id, p.plugin_name",
    )
    .fetch_all(pool)
    .await?))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UpdateRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub plugin_name: String,
    pub tracked_ref: String,
    pub current_sha: Option<String>,
    pub latest_sha: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT_UPDATE: &str = "SELECT id, workspace_id, plugin_name, tracked_ref, current_sha, latest_sha, status, created_at, updated_at FROM plugin_update_queue";

/// Queues an update unless one is already pending for the workspace and plugin; whether a row
/// was inserted.
pub async fn queue_update(
    db: &Db,
    workspace_id: Uuid,
    plugin_name: &str,
    tracked_ref: &str,
    current_sha: Option<&str>,
    latest_sha: &str,
) -> StoreResult<bool> {
    let now = Utc::now();
    on_db!(db, pool => {
        let done = sqlx::query(
            "INSERT INTO plugin_update_queue
                 (id, workspace_id, plugin_name, tracked_ref, current_sha, latest_sha, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)
             ON CONFLICT (workspace_id, plugin_name) WHERE status = 'pending' DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(workspace_id)
        .bind(plugin_name)
        .bind(tracked_ref)
        .bind(current_sha)
        .bind(latest_sha)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// Pending updates, newest first.
pub async fn pending_updates(db: &Db) -> StoreResult<Vec<UpdateRow>> {
    let sql = format!("{SELECT_UPDATE} WHERE status = 'pending' ORDER BY created_at DESC, id");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).fetch_all(pool).await?))
}

pub async fn get_update(db: &Db, id: Uuid) -> StoreResult<Option<UpdateRow>> {
    let sql = format!("{SELECT_UPDATE} WHERE id = $1");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
}

/// Moves a pending update to `status`; whether it was pending.
pub async fn settle_update(db: &Db, id: Uuid, status: &str) -> StoreResult<bool> {
    on_db!(db, pool => {
        let done = sqlx::query(
            "UPDATE plugin_update_queue SET status = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}
