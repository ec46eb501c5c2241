//! Recording activity: one path that stores a row and tells subscribers (`ACTIVITY_LOGGED`).

use serde_json::{Value, json};

use crate::events::names;
use crate::services::Services;
use crate::store::workspaces::WorkspaceRow;
use crate::store::{self, StoreError, activity::ActivityRow};

/// Stores `row`, then broadcasts `ACTIVITY_LOGGED` with its summary fields (never its bodies).
/// The row is durable when this returns; under load it shares a commit with others (see
/// [`store::batch::Writer::store`]).
pub async fn record(svc: &Services, row: &ActivityRow) -> Result<(), StoreError> {
    svc.writes.store(row.clone()).await?;
    announce(svc, row);
    Ok(())
}

/// Broadcasts `ACTIVITY_LOGGED` for a row already stored (with others, in one transaction).
pub fn announce(svc: &Services, row: &ActivityRow) {
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
}

/// Queues `row` with the deferred writes (stored within milliseconds, in a batch; see
/// [`store::batch`]) and broadcasts `ACTIVITY_LOGGED` at once. For rows that follow work
/// already done and that no answer depends on: a failure to store is logged by the writer.
pub async fn record_deferred(svc: &Services, row: ActivityRow) {
    announce(svc, &row);
    svc.writes
        .write(store::batch::Write::Activity(Box::new(row)))
        .await;
}

/// [`record`] for rows that follow work already done: a failure is logged, not returned.
pub async fn record_logged(svc: &Services, row: &ActivityRow) {
    if let Err(err) = record(svc, row).await {
        tracing::warn!(workspace_id = %row.workspace_id, activity_type = %row.activity_type, error = ?err, "recording activity failed");
    }
}

/// The longest message an agent may send its user (characters), over `/notify` or MCP.
pub const USER_MESSAGE_MAX: usize = 32_000;

/// A message from the agent of `workspace` to its user (`POST /workspaces/{id}/notify` and the
/// MCP tool `send_message_to_user`): an `a2a_receive` row with method `notify` (the chat's
/// history reads it) and `AGENT_MESSAGE`, which the canvas shows in the chat at once. `files`
/// are attachment objects (`uri`, `name`, `mimeType`, `size`).
pub async fn tell_user(
    svc: &Services,
    workspace: &WorkspaceRow,
    message: &str,
    files: Vec<Value>,
) -> Result<(), StoreError> {
    let parts: Vec<Value> = files
        .iter()
        .map(|f| json!({ "kind": "file", "file": f }))
        .collect();
    let mut row = ActivityRow::new(workspace.id, "a2a_receive");
    row.method = Some("notify".to_owned());
    row.summary = Some(message.chars().take(200).collect());
    row.response_body = Some(json!({ "result": message, "parts": parts }));
    store::activity::insert(&svc.db, &row).await?;
    let mut payload =
        json!({ "message": message, "workspace_id": workspace.id, "name": workspace.name });
    if !files.is_empty() {
        payload["attachments"] = Value::Array(files);
    }
    svc.events
        .broadcast_only(names::AGENT_MESSAGE, Some(workspace.id), payload);
    Ok(())
}
