//! `activity_logs`: what agents and the host report a workspace did.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub activity_type: String,
    pub source_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub method: Option<String>,
    pub summary: Option<String>,
    pub request_body: Option<Value>,
    pub response_body: Option<Value>,
    pub tool_trace: Option<Value>,
    pub duration_ms: Option<i32>,
    pub status: String,
    pub error_detail: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(db: &Db, row: &ActivityRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, target_id, method, summary,
                 request_body, response_body, tool_trace, duration_ms, status, error_detail, idempotency_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(row.id)
        .bind(row.workspace_id)
        .bind(&row.activity_type)
        .bind(row.source_id)
        .bind(row.target_id)
        .bind(&row.method)
        .bind(&row.summary)
        .bind(row.request_body.as_ref().map(Json))
        .bind(row.response_body.as_ref().map(Json))
        .bind(row.tool_trace.as_ref().map(Json))
        .bind(row.duration_ms)
        .bind(&row.status)
        .bind(&row.error_detail)
        .bind(&row.idempotency_key)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Who reported an activity: the canvas (no source) or an agent (a source workspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFilter {
    Canvas,
    Agent,
}

/// Newest first, optionally filtered by type and source.
pub async fn list(
    db: &Db,
    workspace_id: Uuid,
    activity_type: Option<&str>,
    source: Option<SourceFilter>,
    limit: i64,
) -> StoreResult<Vec<ActivityRow>> {
    on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT id, workspace_id, activity_type, source_id, target_id, method, summary, request_body,
                 response_body, tool_trace, duration_ms, status, error_detail, idempotency_key, created_at
             FROM activity_logs WHERE workspace_id = ",
        );
        q.push_bind(workspace_id);
        if let Some(t) = activity_type {
            q.push(" AND activity_type = ").push_bind(t.to_owned());
        }
        match source {
            Some(SourceFilter::Canvas) => { q.push(" AND source_id IS NULL"); }
            Some(SourceFilter::Agent) => { q.push(" AND source_id IS NOT NULL"); }
            None => {}
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
        Ok(q.build_query_as().fetch_all(pool).await?)
    })
}
