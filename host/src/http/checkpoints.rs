//! Workflow checkpoints of a workspace: record a step (upserted by workflow and step name), read
//! the latest step, read or delete a workflow's steps.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, WorkspaceAuth, WorkspaceIdParam};
use super::fields::{FieldErrorBody, object, required};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::memory::FieldError;
use crate::memory::checkpoints::{self, CheckpointError, Step};
use crate::store::checkpoints::CheckpointRow;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(save))
        .routes(routes!(latest))
        .routes(routes!(workflow, delete))
}

impl From<CheckpointError> for ApiError {
    fn from(err: CheckpointError) -> Self {
        match err {
            CheckpointError::Field(err) => err.into(),
            CheckpointError::NotFound => ApiError::not_found("no checkpoint found"),
            CheckpointError::Store(err) => err.into(),
        }
    }
}

/// One recorded step.
#[derive(Debug, Serialize, ToSchema)]
struct Checkpoint {
    id: Uuid,
    workspace_id: Uuid,
    workflow_id: String,
    step_name: String,
    step_index: i32,
    #[schema(value_type = Object)]
    payload: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Checkpoint {
    fn of(row: CheckpointRow) -> Checkpoint {
        Checkpoint {
            id: row.id,
            workspace_id: row.workspace_id,
            workflow_id: row.workflow_id,
            step_name: row.step_name,
            step_index: row.step_index,
            payload: row.payload,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The body of `POST /workspaces/{id}/checkpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct SaveBody {
    /// 1 to 256 characters, no control characters.
    workflow_id: String,
    /// 1 to 256 characters, no control characters; the same step written again is replaced.
    step_name: String,
    /// 0 or more; orders the steps.
    step_index: i32,
    /// Any JSON (default `{}`), at most 256 KiB of JSON text.
    #[schema(value_type = Object)]
    payload: Option<Value>,
}

/// Records a step: a new row, or the same `(workflow_id, step_name)` replaced.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/checkpoints",
    tag = "checkpoints",
    params(WorkspaceIdParam),
    request_body = SaveBody,
    responses(
        (status = 200, body = Checkpoint),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The payload is over 256 KiB", body = FieldErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn save(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let mut body = object(body)?;
    let workflow_id = required(&body, "workflow_id")?.to_owned();
    let step_name = required(&body, "step_name")?.to_owned();
    let step_index = match body.get("step_index") {
        None | Some(Value::Null) => {
            return Err(FieldError::new("step_index", "step_index is required").into());
        }
        Some(v) => v
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| FieldError::new("step_index", "step_index must be an integer"))?,
    };
    let payload = match body.remove("payload") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v,
    };
    get_live(&state.svc, id).await?;
    let row = checkpoints::save(
        &state.svc,
        id,
        Step {
            workflow_id,
            step_name,
            step_index,
            payload,
        },
    )
    .await?;
    Ok(axum::Json(Checkpoint::of(row)))
}

/// `?workflow_id=` of `GET .../checkpoints/latest`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LatestQuery {
    /// The workflow; absent: any workflow of the workspace.
    workflow_id: Option<String>,
}

/// The latest step: the highest `step_index` (the most recently written among equals) of the
/// workflow, or of any workflow of the workspace.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/checkpoints/latest",
    tag = "checkpoints",
    params(WorkspaceIdParam, LatestQuery),
    responses(
        (status = 200, body = Checkpoint),
        (status = 400, description = "The workflow id is invalid", body = FieldErrorBody),
        (status = 404, description = "No such workspace, or no checkpoint", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn latest(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<LatestQuery>,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let row = checkpoints::latest(&state.svc, id, query.workflow_id.as_deref()).await?;
    Ok(axum::Json(Checkpoint::of(row)))
}

/// The `{wfid}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct WorkflowParam {
    /// The workflow id (percent-encoded in the path).
    wfid: String,
}

/// Every step of a workflow, by `step_index` (empty when it has none).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/checkpoints/{wfid}",
    tag = "checkpoints",
    params(WorkspaceIdParam, WorkflowParam),
    responses(
        (status = 200, body = Vec<Checkpoint>),
        (status = 400, description = "The workflow id is invalid", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn workflow(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<WorkflowParam>,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let rows = checkpoints::workflow(&state.svc, id, &segment.wfid).await?;
    Ok(axum::Json(
        rows.into_iter().map(Checkpoint::of).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    /// `deleted`.
    status: &'static str,
    /// How many steps went.
    deleted: u64,
}

/// Deletes every step of a workflow.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/checkpoints/{wfid}",
    tag = "checkpoints",
    params(WorkspaceIdParam, WorkflowParam),
    responses(
        (status = 200, body = Deleted),
        (status = 400, description = "The workflow id is invalid", body = FieldErrorBody),
        (status = 404, description = "No such workspace, or the workflow has no checkpoint", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<WorkflowParam>,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let deleted = checkpoints::delete(&state.svc, id, &segment.wfid).await?;
    Ok(axum::Json(Deleted {
        status: "deleted",
        deleted,
    }))
}
