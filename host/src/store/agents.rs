//! `agents`: the history of which model a workspace's agent runs (at most one active row per
//! workspace, enforced by the `agents_active_uniq` partial index).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Constraint, Db, StoreError, StoreResult, on_db, on_db_read};

/// One assignment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub model: String,
    /// `active` or `removed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removal_reason: Option<String>,
}

const COLUMNS: &str = "id, workspace_id, model, status, created_at, removed_at, removal_reason";

/// Whether `err` is a second active assignment for a workspace.
pub fn is_already_active(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Constraint(Constraint::Other("agents_active_uniq"))
    )
}

/// The workspace's assignments, newest first.
pub async fn history(db: &Db, workspace_id: Uuid) -> StoreResult<Vec<AgentRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM agents WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).fetch_all(pool).await?))
}

/// What one change does: end the active assignment of `end` (with its reason), then start a new
/// active one for `start` (a workspace and a model). Either part may be absent; both happen in
/// one transaction ([`change`] returns the row ended, if one was active, and the row started).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub end: Option<(Uuid, &'a str)>,
    pub start: Option<(Uuid, &'a str)>,
}

pub async fn change(
    db: &Db,
    change: Change<'_>,
) -> StoreResult<(Option<AgentRow>, Option<AgentRow>)> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    let end_sql = format!(
        "UPDATE agents SET status = 'removed', removed_at = $2, removal_reason = $3
         WHERE workspace_id = $1 AND status = 'active' RETURNING {COLUMNS}"
    );
    let start_sql = format!(
        "INSERT INTO agents (id, workspace_id, model, status, created_at)
         VALUES ($1, $2, $3, 'active', $4) RETURNING {COLUMNS}"
    );
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let ended: Option<AgentRow> = match change.end {
            Some((workspace, reason)) => sqlx::query_as(&end_sql)
                .bind(workspace)
                .bind(now)
                .bind(reason)
                .fetch_optional(&mut *tx)
                .await?,
            None => None,
        };
        let started: Option<AgentRow> = match change.start {
            Some((workspace, model)) => Some(
                sqlx::query_as(&start_sql)
                    .bind(Uuid::new_v4())
                    .bind(workspace)
                    .bind(model)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?,
            ),
            None => None,
        };
        tx.commit().await?;
        Ok((ended, started))
    })
}
