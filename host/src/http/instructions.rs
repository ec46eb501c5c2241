//! Platform instructions: the operator's list, create, change and delete, and what resolves for
//! one workspace (for the workspace itself, or the operator).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, WorkspaceAuth, WorkspaceIdParam};
use super::fields::{FieldErrorBody, flag, object, owned_text, required};
use super::openapi::{ErrorBody, StatusBody};
use super::workspaces::WorkspaceGone;
use crate::memory::FieldError;
use crate::memory::instructions::{self, Definition, InstructionError, Patch, Scope};
use crate::store::instructions::InstructionRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(update, delete))
        .routes(routes!(resolve))
}

impl From<InstructionError> for ApiError {
    fn from(err: InstructionError) -> Self {
        match err {
            InstructionError::Field(err) => err.into(),
            InstructionError::NotFound => ApiError::not_found("instruction not found"),
            InstructionError::Workspace(err) => err.into(),
            InstructionError::Store(err) => err.into(),
        }
    }
}

/// The `{id}` path segment of `/instructions/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct InstructionIdParam {
    /// The instruction's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    id: String,
}

impl InstructionIdParam {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.id).map_err(|_| ApiError::not_found("instruction not found"))
    }
}

/// An instruction as the operator sees it.
#[derive(Debug, Serialize, ToSchema)]
struct Instruction {
    id: Uuid,
    /// `global`, `team` or `workspace`.
    scope: String,
    /// The team's lead (`team`) or the workspace (`workspace`); `null` for `global`.
    scope_target: Option<Uuid>,
    title: String,
    content: String,
    /// Higher first within its scope.
    priority: i32,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Instruction {
    fn of(row: InstructionRow) -> Instruction {
        Instruction {
            id: row.id,
            scope: row.scope,
            scope_target: row.scope_target,
            title: row.title,
            content: row.content,
            priority: row.priority,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The body of `POST /instructions` (and, any subset of it, of `PUT /instructions/{id}`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct InstructionBody {
    /// `global`, `team` or `workspace`.
    scope: String,
    /// A live workspace id: required for `team` (the team's lead: it and its direct children)
    /// and `workspace`, refused for `global`.
    scope_target: Option<Uuid>,
    /// 1 to 200 characters.
    title: String,
    /// 1 to 8192 characters.
    content: String,
    /// Default 0; higher comes first within its scope.
    priority: Option<i32>,
    /// Default true.
    enabled: Option<bool>,
}

/// `scope_target`: absent (`None`), explicitly null (`Some(None)`) or a UUID.
fn target(body: &Map<String, Value>) -> ApiResult<Option<Option<Uuid>>> {
    match body.get("scope_target") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            Uuid::parse_str(s.trim())
                .map(|id| Some(Some(id)))
                .map_err(|_| {
                    FieldError::new("scope_target", "scope_target must be a workspace id").into()
                })
        }
        Some(_) => {
            Err(FieldError::new("scope_target", "scope_target must be a workspace id").into())
        }
    }
}

fn priority(body: &Map<String, Value>) -> ApiResult<Option<i32>> {
    match body.get("priority") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .map(Some)
            .ok_or_else(|| FieldError::new("priority", "priority must be a 32-bit integer").into()),
    }
}

/// Every instruction: global, team, then workspace ones, each by priority (higher first).
#[utoipa::path(
    get,
    path = "/instructions",
    tag = "instructions",
    responses((status = 200, body = Vec<Instruction>)),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = instructions::list(&state.svc).await?;
    Ok(axum::Json(
        rows.into_iter().map(Instruction::of).collect::<Vec<_>>(),
    ))
}

/// Creates an instruction.
#[utoipa::path(
    post,
    path = "/instructions",
    tag = "instructions",
    request_body = InstructionBody,
    responses(
        (status = 201, body = Instruction),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let body = object(body)?;
    let scope = Scope::parse(required(&body, "scope")?, target(&body)?.flatten())?;
    let definition = Definition {
        scope,
        title: required(&body, "title")?.to_owned(),
        content: required(&body, "content")?.to_owned(),
        priority: priority(&body)?.unwrap_or(0),
        enabled: flag(&body, "enabled")?.unwrap_or(true),
    };
    let row = instructions::create(&state.svc, definition).await?;
    Ok((StatusCode::CREATED, axum::Json(Instruction::of(row))))
}

/// Changes an instruction: the fields given replace the stored ones, and the result is checked
/// as a whole (a change to `global` drops the target unless one is given, which is refused).
#[utoipa::path(
    put,
    path = "/instructions/{id}",
    tag = "instructions",
    params(InstructionIdParam),
    request_body = InstructionBody,
    responses(
        (status = 200, body = Instruction),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such instruction", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn update(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(segment): Path<InstructionIdParam>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let id = segment.id()?;
    let body = object(body)?;
    let patch = Patch {
        scope: owned_text(&body, "scope")?,
        scope_target: target(&body)?,
        title: owned_text(&body, "title")?,
        content: owned_text(&body, "content")?,
        priority: priority(&body)?,
        enabled: flag(&body, "enabled")?,
    };
    let row = instructions::update(&state.svc, id, patch).await?;
    Ok(axum::Json(Instruction::of(row)))
}

/// Deletes an instruction.
#[utoipa::path(
    delete,
    path = "/instructions/{id}",
    tag = "instructions",
    params(InstructionIdParam),
    responses(
        (status = 200, body = StatusBody),
        (status = 404, description = "No such instruction", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(segment): Path<InstructionIdParam>,
) -> ApiResult<impl IntoResponse> {
    instructions::delete(&state.svc, segment.id()?).await?;
    Ok(axum::Json(StatusBody { status: "deleted" }))
}

/// One instruction as it applies to a workspace.
#[derive(Debug, Serialize, ToSchema)]
struct Applied {
    id: Uuid,
    scope: String,
    scope_target: Option<Uuid>,
    title: String,
    content: String,
    priority: i32,
}

#[derive(Debug, Serialize, ToSchema)]
struct Resolved {
    workspace_id: Uuid,
    /// Global, then the workspace's teams' (the one its parent leads and the one it leads),
    /// then its own; each by priority (higher first), then the older first. Enabled ones only.
    instructions: Vec<Applied>,
    /// The same as one text to paste into a prompt: `# Platform instructions`, then `## title`
    /// and content per instruction; empty when none apply.
    text: String,
}

/// What applies to this workspace, in the order an agent should read it.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/instructions/resolve",
    tag = "instructions",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Resolved),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn resolve(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let resolved = instructions::resolve(&state.svc, id).await?;
    Ok(axum::Json(Resolved {
        workspace_id: resolved.workspace_id,
        instructions: resolved
            .instructions
            .into_iter()
            .map(|row| Applied {
                id: row.id,
                scope: row.scope,
                scope_target: row.scope_target,
                title: row.title,
                content: row.content,
                priority: row.priority,
            })
            .collect(),
        text: resolved.text,
    }))
}
