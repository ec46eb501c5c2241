//! `POST /workspaces/:id/expand` and `/collapse`: the team a workspace's template declares,
//! created and removed (the operator only: both create or remove workspaces).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, WorkspaceIdParam, WorkspacePath};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::workspaces::team::{self, TeamError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(expand))
        .routes(routes!(collapse))
}

impl From<TeamError> for ApiError {
    fn from(err: TeamError) -> Self {
        match err {
            TeamError::Workspace(err) => err.into(),
            err => ApiError::body(StatusCode::CONFLICT, ErrorBody::new(err.to_string())),
        }
    }
}

/// A child expand created.
#[derive(Debug, Serialize, ToSchema)]
struct Member {
    id: Uuid,
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ExpandedBody {
    /// Children created now (they provision like any new workspace).
    created: Vec<Member>,
    /// Declared children that already existed (by name), left alone.
    existing: Vec<String>,
}

/// Creates the children the workspace's template declares (`sub_workspaces`) that it does not
/// have yet, in one transaction, and expands its card.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/expand",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = ExpandedBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "No template, or it declares no team, or it cannot be read", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn expand(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    let expanded = team::expand(&state.svc, id).await?;
    Ok(axum::Json(ExpandedBody {
        created: expanded
            .created
            .into_iter()
            .map(|(id, name)| Member { id, name })
            .collect(),
        existing: expanded.existing,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct CollapsedBody {
    /// The children expand had created, now stopped and removed (with anything under them).
    removed: Vec<Uuid>,
    collapsed: bool,
}

/// Stops and removes the children expand created (never one added otherwise) and collapses the
/// workspace's card.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/collapse",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = CollapsedBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn collapse(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    let removed = team::collapse(&state.svc, id).await?;
    Ok(axum::Json(CollapsedBody {
        removed,
        collapsed: true,
    }))
}
