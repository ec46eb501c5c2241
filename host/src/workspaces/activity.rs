//! Recording activity: one path that stores a row and tells subscribers (`ACTIVITY_LOGGED`).

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::events::names;
use crate::services::Services;
use crate::store::{self, StoreError, activity::ActivityRow};

/// A row of `activity_type` for `workspace_id` with status `ok` and nothing else filled in.
pub fn row(workspace_id: Uuid, activity_type: &str) -> ActivityRow {
    ActivityRow {
        id: Uuid::new_v4(),
        workspace_id,
        activity_type: activity_type.to_owned(),
        source_id: None,
        target_id: None,
        method: None,
        summary: None,
        request_body: None,
        response_body: None,
        tool_trace: None,
        duration_ms: None,
        status: "ok".to_owned(),
        error_detail: None,
        idempotency_key: None,
        created_at: Utc::now(),
    }
}

/// Stores `row`, then broadcasts `ACTIVITY_LOGGED` with its summary fields (never its bodies).
pub async fn record(svc: &Services, row: &ActivityRow) -> Result<(), StoreError> {
    store::activity::insert(&svc.db, row).await?;
    svc.events.broadcast_only(
        names::ACTIVITY_LOGGED,
        Some(row.workspace_id),
        json!({
            "id": row.id,
            "activity_type": row.activity_type,
            "method": row.method,
            "status": row.status,
            "source_id": row.source_id,
            "target_id": row.target_id,
            "duration_ms": row.duration_ms,
            "summary": row.summary,
        }),
    );
    Ok(())
}

/// [`record`] for rows that follow work already done: a failure is logged, not returned.
pub async fn record_logged(svc: &Services, row: &ActivityRow) {
    if let Err(err) = record(svc, row).await {
        tracing::warn!(workspace_id = %row.workspace_id, activity_type = %row.activity_type, error = ?err, "recording activity failed");
    }
}
