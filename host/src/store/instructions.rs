//! `platform_instructions`: what the operator tells agents, globally, per team or per workspace.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// One instruction as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstructionRow {
    pub id: Uuid,
    pub scope: String,
    pub scope_target: Option<Uuid>,
    pub title: String,
    pub content: String,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, scope, scope_target, title, content, priority, enabled, created_at, updated_at";

/// Within a scope: higher priority first, then the older first.
const ORDER: &str = "priority DESC, created_at, id";

pub async fn insert(db: &Db, row: &InstructionRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO platform_instructions (id, scope, scope_target, title, content, priority, enabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(row.id)
        .bind(&row.scope)
        .bind(row.scope_target)
        .bind(&row.title)
        .bind(&row.content)
        .bind(row.priority)
        .bind(row.enabled)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Every instruction: global, team, workspace, each in resolution order.
pub async fn list(db: &Db) -> StoreResult<Vec<InstructionRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM platform_instructions
         ORDER BY CASE scope WHEN 'global' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, {ORDER}"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).fetch_all(pool).await?))
}

pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<InstructionRow>> {
    let sql = format!("SELECT {COLUMNS} FROM platform_instructions WHERE id = $1");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
}

/// Writes every field but the id and creation time; false when the row is gone.
pub async fn update(db: &Db, row: &InstructionRow) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE platform_instructions SET scope = $2, scope_target = $3, title = $4, content = $5,
             priority = $6, enabled = $7, updated_at = $8
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(&row.scope)
    .bind(row.scope_target)
    .bind(&row.title)
    .bind(&row.content)
    .bind(row.priority)
    .bind(row.enabled)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

pub async fn delete(db: &Db, id: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query("DELETE FROM platform_instructions WHERE id = $1")
        .bind(id).execute(pool).await?.rows_affected() > 0))
}

/// The enabled instructions that apply to a workspace: every global one, the team ones of the
/// two teams it belongs to (the one its parent leads, and the one it leads itself), and its own
/// workspace ones; in that order, each by priority (higher first) then age (older first).
pub async fn applicable(
    db: &Db,
    workspace_id: Uuid,
    parent_id: Option<Uuid>,
) -> StoreResult<Vec<InstructionRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM platform_instructions
         WHERE enabled AND (scope = 'global'
             OR (scope = 'team' AND scope_target IN ($1, $2))
             OR (scope = 'workspace' AND scope_target = $1))
         ORDER BY CASE scope WHEN 'global' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, {ORDER}"
    );
    let parent = parent_id.unwrap_or(workspace_id);
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(parent).fetch_all(pool).await?))
}
