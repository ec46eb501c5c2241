//! `/workspaces/:id/restart`, `/pause`, `/resume`, `/hibernate` and
//! `/admin/workspaces/:id/bootstrap-failed`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceAuth, WorkspacePath};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::workspaces::lifecycle::{self, LifecycleError, RestartOutcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(restart))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(hibernate))
        .routes(routes!(bootstrap_failed))
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::AncestorPaused(name) => ApiError::body(
                StatusCode::CONFLICT,
                ErrorBody::new(format!(
                    "parent workspace {name:?} is paused — resume it first"
                )),
            ),
            LifecycleError::Conflict(message) => ApiError::Status(StatusCode::CONFLICT, message),
            LifecycleError::NoRuntime => {
                ApiError::Status(StatusCode::SERVICE_UNAVAILABLE, "provisioner not available")
            }
            LifecycleError::Busy { active_tasks } => ApiError::body(
                StatusCode::CONFLICT,
                Busy {
                    error: "workspace is busy — pass ?force=true to hibernate anyway",
                    active_tasks,
                },
            ),
            LifecycleError::Workspace(err) => err.into(),
        }
    }
}

/// A busy workspace's refusal to hibernate without `force`.
#[derive(Debug, Serialize, ToSchema)]
struct Busy {
    error: &'static str,
    active_tasks: i32,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HibernateQuery {
    /// Hibernate a busy agent too: it is told first (`signals/restart_pending`), then stopped.
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct Hibernated {
    /// `hibernated`.
    status: &'static str,
}

/// Hibernates the workspace: its agent is stopped until a message, a schedule, a resume or a
/// restart wakes it. Only an online or degraded workspace the host runs; not cascading.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/hibernate",
    tag = "lifecycle",
    params(WorkspaceIdParam, HibernateQuery),
    responses(
        (status = 200, body = Hibernated),
        (status = 400, description = "Invalid workspace id or query", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "Busy without force (with `active_tasks`), already hibernated, not running, or external", body = Busy),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "No runtime", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn hibernate(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(q): ApiQuery<HibernateQuery>,
) -> ApiResult<impl IntoResponse> {
    lifecycle::hibernate(&state.svc, id, q.force).await?;
    Ok(axum::Json(Hibernated {
        status: "hibernated",
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Restarting {
    /// `provisioning`, or `noop` when nothing needed doing.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_dir: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset_session: Option<bool>,
    /// Present (true) when a restart already under way absorbed this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    coalesced: Option<bool>,
}

/// Restarts the workspace's agent.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/restart",
    tag = "lifecycle",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Restarting),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "Paused, or an ancestor is paused", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "No runtime to provision with", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn restart(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let outcome = lifecycle::manual_restart(&state.svc, id).await?;
    let provisioning = |coalesced: Option<bool>| Restarting {
        status: "provisioning",
        message: None,
        config_dir: Some("existing-volume"),
        reset_session: Some(false),
        coalesced,
    };
    Ok(axum::Json(match outcome {
        RestartOutcome::Skipped(reason) => Restarting {
            status: "noop",
            message: Some(reason),
            config_dir: None,
            reset_session: None,
            coalesced: None,
        },
        RestartOutcome::Coalesced => provisioning(Some(true)),
        _ => provisioning(None),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Paused {
    status: &'static str,
    /// The workspace and its descendants that were paused.
    paused_count: usize,
}

/// Pauses the workspace and its subtree (their agents stop).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/pause",
    tag = "lifecycle",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Paused),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The workspace cannot be paused now", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "No runtime", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn pause(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let paused = lifecycle::pause(&state.svc, id).await?;
    Ok(axum::Json(Paused {
        status: "paused",
        paused_count: paused,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Resumed {
    status: &'static str,
    resumed_count: usize,
}

/// Resumes a paused workspace and its subtree.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/resume",
    tag = "lifecycle",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Resumed),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "Not paused, or an ancestor is paused", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "No runtime", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn resume(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let resumed = lifecycle::resume(&state.svc, id).await?;
    Ok(axum::Json(Resumed {
        status: "provisioning",
        resumed_count: resumed,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct BootstrapFailedBody {
    /// Why the agent could not start (required, not blank).
    error: String,
    log_tail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct BootstrapRecorded {
    ok: bool,
    /// Present (true) when the workspace was not provisioning, so nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    no_change: Option<bool>,
}

/// The agent's launcher reports that the agent could not start; the workspace is marked failed.
#[utoipa::path(
    post,
    path = "/admin/workspaces/{id}/bootstrap-failed",
    tag = "lifecycle",
    params(WorkspaceIdParam),
    request_body = BootstrapFailedBody,
    responses(
        (status = 200, body = BootstrapRecorded),
        (status = 400, description = "Blank error, or invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
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
    Ok(axum::Json(BootstrapRecorded {
        ok: true,
        no_change: (!moved).then_some(true),
    }))
}
