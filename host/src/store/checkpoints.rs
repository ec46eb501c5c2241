//! `workflow_checkpoints`: one row per step of a workflow a workspace's agent runs, upserted by
//! `(workspace, workflow, step name)`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// One step as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub workflow_id: String,
    pub step_name: String,
    pub step_index: i32,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, workspace_id, workflow_id, step_name, step_index, payload, created_at, updated_at";

/// Writes a step: a new row, or the same step's row with its index and payload replaced.
pub async fn upsert(
    db: &Db,
    workspace_id: Uuid,
    workflow_id: &str,
    step_name: &str,
    step_index: i32,
    payload: &Value,
) -> StoreResult<CheckpointRow> {
    let sql = format!(
        "INSERT INTO workflow_checkpoints (id, workspace_id, workflow_id, step_name, step_index, payload, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (workspace_id, workflow_id, step_name) DO UPDATE SET
             step_index = excluded.step_index, payload = excluded.payload, updated_at = excluded.updated_at
         RETURNING {COLUMNS}"
    );
    on_db!(db, pool => Ok(sqlx::query_as(&sql)
        .bind(Uuid::new_v4())
        .bind(workspace_id)
        .bind(workflow_id)
        .bind(step_name)
        .bind(step_index)
        .bind(Json(payload))
        .bind(Utc::now())
        .fetch_one(pool)
        .await?))
}

/// The steps of one workflow, in step order (then by when they were first written).
pub async fn workflow(
    db: &Db,
    workspace_id: Uuid,
    workflow_id: &str,
) -> StoreResult<Vec<CheckpointRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workflow_checkpoints WHERE workspace_id = $1 AND workflow_id = $2
         ORDER BY step_index, created_at, id"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(workflow_id).fetch_all(pool).await?))
}

/// The latest step: the highest index, the most recently written among equals; of one workflow
/// or, with `None`, of any workflow of the workspace.
pub async fn latest(
    db: &Db,
    workspace_id: Uuid,
    workflow_id: Option<&str>,
) -> StoreResult<Option<CheckpointRow>> {
    let order = "ORDER BY step_index DESC, updated_at DESC, id DESC LIMIT 1";
    on_db_read!(db, pool => Ok(match workflow_id {
        Some(wf) => sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM workflow_checkpoints WHERE workspace_id = $1 AND workflow_id = $2 {order}"
        )).bind(workspace_id).bind(wf).fetch_optional(pool).await?,
        None => sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM workflow_checkpoints WHERE workspace_id = $1 {order}"
        )).bind(workspace_id).fetch_optional(pool).await?,
    }))
}

/// Deletes every step of a workflow; how many there were.
pub async fn delete_workflow(db: &Db, workspace_id: Uuid, workflow_id: &str) -> StoreResult<u64> {
    on_db!(db, pool => Ok(sqlx::query(
        "DELETE FROM workflow_checkpoints WHERE workspace_id = $1 AND workflow_id = $2",
    ).bind(workspace_id).bind(workflow_id).execute(pool).await?.rows_affected()))
}

/// Deletes every checkpoint of `ids` (their workspaces were removed).
pub async fn delete_for_workspaces(db: &Db, ids: &[Uuid]) -> StoreResult<()> {
    on_db!(db, pool => {
        for id in ids {
            sqlx::query("DELETE FROM workflow_checkpoints WHERE workspace_id = $1")
                .bind(*id)
                .execute(pool)
                .await?;
        }
        Ok(())
    })
}

/// How many checkpoints the workspace has (removed or not); for checks and tests.
pub async fn count(db: &Db, workspace_id: Uuid) -> StoreResult<i64> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM workflow_checkpoints WHERE workspace_id = $1",
    ).bind(workspace_id).fetch_one(pool).await?))
}
