//! Signals from the host outside A2A: `POST /signals/restart_pending` says the host is about to
//! restart this agent, so it can let the operator know what is still running.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::platform::display_error;
use crate::server::AppState;

/// The drain an unspecified notification means (the host's default).
const DEFAULT_DRAIN_SECS: u64 = 20;

pub fn router() -> Router<AppState> {
    Router::new().route("/signals/restart_pending", post(restart_pending))
}

/// `signals/restart_pending` `{drain_seconds, workspace_id}` with `X-Restart-Signal: true`:
/// logs it and reports what is still running to the activity feed before answering, so the row
/// is written before the stop that follows. A notification for another workspace, or without
/// the header, is refused.
async fn restart_pending(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(notification): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let refuse = |why: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": why })));
    if headers
        .get("x-restart-signal")
        .and_then(|v| v.to_str().ok())
        != Some("true")
    {
        return refuse("X-Restart-Signal: true is required");
    }
    if notification.get("method").and_then(Value::as_str) != Some("signals/restart_pending") {
        return refuse("method must be signals/restart_pending");
    }
    let params = notification.get("params").cloned().unwrap_or(Value::Null);
    let for_us = params
        .get("workspace_id")
        .and_then(Value::as_str)
        .is_none_or(|id| id == state.workspace_id().to_string());
    if !for_us {
        return refuse("the signal is for another workspace");
    }
    let drain_seconds = params
        .get("drain_seconds")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_DRAIN_SECS);
    let snapshot = state.tasks().snapshot();
    tracing::info!(
        drain_seconds,
        active_tasks = snapshot.active_tasks,
        "the host is about to restart this agent"
    );
    let summary = if snapshot.active_tasks == 0 {
        "restart pending: idle".to_owned()
    } else {
        format!(
            "restart pending with {} task(s) running (latest: {})",
            snapshot.active_tasks, snapshot.current_task
        )
    };
    if let Err(e) = state.platform().log_activity(&summary).await {
        tracing::warn!(error = %display_error(&e), "could not report the pending restart");
    }
    (
        StatusCode::OK,
        Json(json!({
            "jsonrpc": "2.0",
            "result": { "acknowledged": true, "active_tasks": snapshot.active_tasks },
        })),
    )
}
