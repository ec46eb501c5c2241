//! `approval_requests`: what agents ask a human before a risky action, and the one decision each
//! gets (a conditional update, so concurrent deciders cannot both win).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::workspaces::Status;
use super::{Db, StoreResult, on_db, on_db_read};

/// One approval request as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub task_id: Option<String>,
    pub action: String,
    pub reason: String,
    pub context: Option<Value>,
    /// `pending`, `approved`, `denied` or `escalated`.
    pub status: String,
    /// `agent` (the workspace's own token) or `operator`.
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A pending request with the name of its (live) workspace, as the pending list shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRow {
    #[sqlx(flatten)]
    pub approval: ApprovalRow,
    pub workspace_name: String,
}

const COLUMNS: &str = "a.id, a.workspace_id, a.task_id, a.action, a.reason, a.context, a.status, \
     a.requested_by, a.decided_by, a.decided_at, a.decision_note, a.created_at";

/// Inserts a new (pending) request.
pub async fn insert(db: &Db, row: &ApprovalRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO approval_requests (id, workspace_id, task_id, action, reason, context,
                 status, requested_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.id)
        .bind(row.workspace_id)
        .bind(&row.task_id)
        .bind(&row.action)
        .bind(&row.reason)
        .bind(row.context.as_ref().map(Json))
        .bind(&row.status)
        .bind(&row.requested_by)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// The workspace's requests, newest first, optionally only those of one status; at most `limit`.
pub async fn list(
    db: &Db,
    workspace_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ApprovalRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approval_requests a
         WHERE a.workspace_id = $1 AND ($2 IS NULL OR a.status = $2)
         ORDER BY a.created_at DESC, a.id LIMIT $3"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql)
        .bind(workspace_id)
        .bind(status)
        .bind(limit)
        .fetch_all(pool)
        .await?))
}

/// One request of the workspace.
pub async fn get(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<Option<ApprovalRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approval_requests a WHERE a.workspace_id = $1 AND a.id = $2"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(id).fetch_optional(pool).await?))
}

/// Every pending request of a live workspace across the host, oldest first, at most `limit`:
/// one read of the `status = 'pending'` partial index joined to the workspaces by key.
pub async fn pending(db: &Db, limit: i64) -> StoreResult<Vec<PendingRow>> {
    let sql = format!(
        "SELECT {COLUMNS}, w.name AS workspace_name
         FROM approval_requests a JOIN workspaces w ON w.id = a.workspace_id
         WHERE a.status = 'pending' AND w.status <> $1
         ORDER BY a.created_at, a.id LIMIT $2"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(Status::Removed).bind(limit).fetch_all(pool).await?))
}

/// A decision to record.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub workspace_id: Uuid,
    pub id: Uuid,
    /// `approved` or `denied`.
    pub status: &'a str,
    pub decided_by: &'a str,
    pub note: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Records `decision` if the request is still pending and its workspace is not removed; false
/// otherwise (the caller reads the row to say why). One conditional update: of two concurrent
/// deciders, exactly one sees a row changed.
pub async fn decide(db: &Db, decision: &Decision<'_>) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE approval_requests SET status = $3, decided_by = $4, decision_note = $5, decided_at = $6
         WHERE workspace_id = $1 AND id = $2 AND status = 'pending'
           AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = $1 AND w.status <> $7)",
    )
    .bind(decision.workspace_id)
    .bind(decision.id)
    .bind(decision.status)
    .bind(decision.decided_by)
    .bind(decision.note)
    .bind(decision.at)
    .bind(Status::Removed)
    .execute(pool)
    .await?
    .rows_affected() > 0))
}
