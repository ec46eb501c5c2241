//! `/workspaces/:id/restart`, `/pause`, `/resume` and `/admin/workspaces/:id/bootstrap-failed`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, WorkspaceAuth, WorkspacePath};
use crate::workspaces::lifecycle::{self, LifecycleError, RestartOutcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/restart", post(restart))
        .route("/workspaces/{id}/pause", post(pause))
        .route("/workspaces/{id}/resume", post(resume))
        .route(
            "/admin/workspaces/{id}/bootstrap-failed",
            post(bootstrap_failed),
        )
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::AncestorPaused(name) => ApiError::Body(
                StatusCode::CONFLICT,
                json!({ "error": format!("parent workspace {name:?} is paused — resume it first") }),
            ),
            LifecycleError::Conflict(message) => ApiError::Status(StatusCode::CONFLICT, message),
            LifecycleError::NoRuntime => {
                ApiError::Status(StatusCode::SERVICE_UNAVAILABLE, "provisioner not available")
            }
            LifecycleError::Workspace(err) => err.into(),
        }
    }
}

async fn restart(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let outcome = lifecycle::manual_restart(&state.svc, id).await?;
    Ok(axum::Json(match outcome {
        RestartOutcome::Skipped(reason) => json!({ "status": "noop", "message": reason }),
        RestartOutcome::Coalesced => json!({
            "status": "provisioning", "config_dir": "existing-volume", "reset_session": false, "coalesced": true,
        }),
        _ => {
            json!({ "status": "provisioning", "config_dir": "existing-volume", "reset_session": false })
        }
    }))
}

async fn pause(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let paused = lifecycle::pause(&state.svc, id).await?;
    Ok(axum::Json(
        json!({ "status": "paused", "paused_count": paused }),
    ))
}

async fn resume(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let resumed = lifecycle::resume(&state.svc, id).await?;
    Ok(axum::Json(
        json!({ "status": "provisioning", "resumed_count": resumed }),
    ))
}

#[derive(Debug, Deserialize)]
struct BootstrapFailedBody {
    error: String,
    log_tail: Option<String>,
}

async fn bootstrap_failed(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiJson(body): ApiJson<BootstrapFailedBody>,
) -> ApiResult<impl IntoResponse> {
    if body.error.trim().is_empty() {
        return Err(ApiError::bad_request("error is required"));
    }
    let moved =
        lifecycle::bootstrap_failed(&state.svc, id, &body.error, body.log_tail.as_deref()).await?;
    Ok(axum::Json(if moved {
        json!({ "ok": true })
    } else {
        json!({ "ok": true, "no_change": true })
    }))
}
