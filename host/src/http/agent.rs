//! `/workspaces/:id/agent`: which model a workspace's agent runs, as a history of assignments
//! (assign, replace, remove, move to another workspace).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, WorkspaceAccess, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::store::agents::AgentRow;
use crate::workspaces::assignment::{self, AssignmentError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            list_agents,
            assign_agent,
            replace_agent,
            remove_agent
        ))
        .routes(routes!(move_agent))
}

impl From<AssignmentError> for ApiError {
    fn from(err: AssignmentError) -> Self {
        let status = match err {
            AssignmentError::Workspace(err) => return err.into(),
            AssignmentError::Invalid(message) => return ApiError::bad_request(message),
            AssignmentError::AlreadyAssigned | AssignmentError::TargetAssigned => {
                StatusCode::CONFLICT
            }
            AssignmentError::NoneAssigned => StatusCode::NOT_FOUND,
            AssignmentError::SameWorkspace => StatusCode::BAD_REQUEST,
        };
        ApiError::body(status, ErrorBody::new(err.to_string()))
    }
}

/// One assignment.
#[derive(Debug, Serialize, ToSchema)]
struct Agent {
    id: Uuid,
    workspace_id: Uuid,
    model: String,
    /// `active` or `removed`.
    status: String,
    created_at: DateTime<Utc>,
    removed_at: Option<DateTime<Utc>>,
    /// `replaced`, `removed`, `moved to <workspace id>` or what the operator wrote.
    removal_reason: Option<String>,
}

impl Agent {
    fn of(row: AgentRow) -> Agent {
        Agent {
            id: row.id,
            workspace_id: row.workspace_id,
            model: row.model,
            status: row.status,
            created_at: row.created_at,
            removed_at: row.removed_at,
            removal_reason: row.removal_reason,
        }
    }
}

/// The active assignment and the history.
#[derive(Debug, Serialize, ToSchema)]
struct Assignments {
    current: Option<Agent>,
    /// Newest first, the active one included.
    history: Vec<Agent>,
}

/// The workspace's agent assignments.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/agent",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Assignments),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn list_agents(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let rows = assignment::history(&state.svc, id).await?;
    let current = rows
        .iter()
        .find(|row| row.status == "active")
        .cloned()
        .map(Agent::of);
    let history = rows.into_iter().map(Agent::of).collect();
    Ok(axum::Json(Assignments { current, history }))
}

/// The body of assign and replace.
#[derive(Debug, Deserialize, ToSchema)]
struct ModelBody {
    /// 1 to 100 characters.
    model: String,
    /// Why the previous assignment ended (replace only; default `replaced`).
    reason: Option<String>,
}

/// Assigns an agent running `model` to a workspace that has none; the workspace's model becomes
/// `model` and its agent restarts as the restart policy decides.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/agent",
    tag = "workspaces",
    params(WorkspaceIdParam),
    request_body = ModelBody,
    responses(
        (status = 201, body = Agent),
        (status = 400, description = "Invalid model", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "An agent is already assigned", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn assign_agent(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ModelBody>,
) -> ApiResult<impl IntoResponse> {
    let row = assignment::assign(&state.svc, id, &body.model).await?;
    Ok((StatusCode::CREATED, axum::Json(Agent::of(row))))
}

/// The assignment that ended and the one that started.
#[derive(Debug, Serialize, ToSchema)]
struct Replaced {
    previous: Agent,
    current: Agent,
}

/// Replaces the active agent with one running `model` (the old assignment ends with `reason`,
/// default `replaced`), in one transaction.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/agent",
    tag = "workspaces",
    params(WorkspaceIdParam),
    request_body = ModelBody,
    responses(
        (status = 200, body = Replaced),
        (status = 400, description = "Invalid model", body = ErrorBody),
        (status = 404, description = "No such workspace, or no agent assigned", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn replace_agent(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ModelBody>,
) -> ApiResult<impl IntoResponse> {
    let (previous, current) =
        assignment::replace(&state.svc, id, &body.model, body.reason.as_deref()).await?;
    Ok(axum::Json(Replaced {
        previous: Agent::of(previous),
        current: Agent::of(current),
    }))
}

/// `?reason=` of a removal.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveQuery {
    /// Why (default `removed`).
    reason: Option<String>,
}

/// Ends the active assignment; the workspace's model is cleared (its agent runs the default).
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/agent",
    tag = "workspaces",
    params(WorkspaceIdParam, RemoveQuery),
    responses(
        (status = 200, body = Agent),
        (status = 404, description = "No such workspace, or no agent assigned", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn remove_agent(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> ApiResult<impl IntoResponse> {
    let row = assignment::remove(&state.svc, id, query.reason.as_deref()).await?;
    Ok(axum::Json(Agent::of(row)))
}

/// The body of a move.
#[derive(Debug, Deserialize, ToSchema)]
struct MoveBody {
    /// The workspace the agent moves to (it must have none assigned).
    target_workspace_id: Uuid,
}

/// Moves the active agent to another workspace (the operator only: it changes a workspace the
/// caller's token is not for). Returns the target's new assignment.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/agent/move",
    tag = "workspaces",
    params(WorkspaceIdParam),
    request_body = MoveBody,
    responses(
        (status = 200, body = Agent),
        (status = 400, description = "The target is this workspace, or does not exist", body = ErrorBody),
        (status = 403, description = "A workspace token: only the operator moves agents", body = ErrorBody),
        (status = 404, description = "No such workspace, or no agent assigned", body = ErrorBody),
        (status = 409, description = "The target already has an agent assigned", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn move_agent(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiJson(body): ApiJson<MoveBody>,
) -> ApiResult<impl IntoResponse> {
    if !access.principal.is_admin() {
        return Err(ApiError::forbidden(
            "only the operator moves an agent to another workspace",
        ));
    }
    let row = assignment::move_to(&state.svc, access.id, body.target_workspace_id).await?;
    Ok(axum::Json(Agent::of(row)))
}
