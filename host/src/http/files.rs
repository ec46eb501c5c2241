//! `/workspaces/:id/files`: list, read, write, delete and replace a workspace's template files.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{ApiJson, ApiQuery, WorkspaceAuth};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::extensions::types::Decision;
use crate::runtime::RuntimeError;
use crate::safefs::{self, RelPath};
use crate::workspaces::files::{self, FilesError, Written};
use crate::workspaces::lifecycle::RestartOutcome;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, replace))
        .routes(routes!(read, write, remove))
}

/// The file path after `/files/` (a relative path; `..`, absolute paths and the reserved
/// token file are refused).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct FilePathParam {
    /// Relative file path, e.g. `skills/notes.md`.
    path: String,
}

impl FilePathParam {
    fn rel(&self) -> Result<RelPath, ApiError> {
        parse_path(&self.path)
    }
}

impl From<FilesError> for ApiError {
    fn from(err: FilesError) -> Self {
        match err {
            FilesError::Workspace(err) => err.into(),
            FilesError::Invalid(message) => ApiError::bad_request(message),
            FilesError::TooMany(n) => ApiError::body(
                StatusCode::BAD_REQUEST,
                ErrorBody::new(format!(
                    "too many files ({n}), max {}",
                    files::MAX_REPLACE_FILES
                )),
            ),
            FilesError::Reserved => {
                ApiError::forbidden("the workspace token file is managed by the host")
            }
            FilesError::Runtime(err) => err.into(),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Offline => ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                "workspace offline — retry after it starts",
            ),
            RuntimeError::NotFound => ApiError::not_found("file not found"),
            RuntimeError::InvalidPath => ApiError::bad_request("invalid path"),
            RuntimeError::ImageMissing(_) | RuntimeError::Unavailable(_) => {
                tracing::warn!(error = %err, "runtime unavailable for a file operation");
                ApiError::Status(StatusCode::SERVICE_UNAVAILABLE, "runtime unavailable")
            }
            RuntimeError::Failed(_) => ApiError::internal(err),
        }
    }
}

fn parse_path(raw: &str) -> Result<RelPath, ApiError> {
    RelPath::parse(raw).map_err(|_| ApiError::bad_request("invalid path"))
}

/// What a change to the files did to the agent: the restart policy's decision (`kind`
/// `keep_running`, `hot_reload`, `restart_now`, `restart_after_ms` with `ms`), or `skipped`
/// (with `reason`) or `coalesced`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RestartReport {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

pub(super) fn restart_report(outcome: &RestartOutcome) -> RestartReport {
    let kind = |kind| RestartReport {
        kind,
        ms: None,
        reason: None,
    };
    match outcome {
        RestartOutcome::Decided(Decision::KeepRunning) => kind("keep_running"),
        RestartOutcome::Decided(Decision::HotReload) => kind("hot_reload"),
        RestartOutcome::Decided(Decision::RestartNow) | RestartOutcome::Started => {
            kind("restart_now")
        }
        RestartOutcome::Decided(Decision::RestartAfterMs(ms)) => RestartReport {
            ms: Some(*ms),
            ..kind("restart_after_ms")
        },
        RestartOutcome::Skipped(reason) => RestartReport {
            reason: Some(reason),
            ..kind("skipped")
        },
        RestartOutcome::Coalesced => kind("coalesced"),
    }
}

/// One entry of a listing.
#[derive(Debug, Serialize, ToSchema)]
struct ListedFile {
    path: String,
    size: u64,
    dir: bool,
}

impl From<&safefs::ListedFile> for ListedFile {
    fn from(file: &safefs::ListedFile) -> Self {
        ListedFile {
            path: file.path.clone(),
            size: file.size,
            dir: file.dir,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `/configs` (default) or another allowed root.
    root: Option<String>,
    /// A directory under the root to list.
    path: Option<String>,
    /// 1-5 (default 1).
    depth: Option<usize>,
}

/// Lists the workspace's files (empty when the agent has none yet).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/files",
    tag = "files",
    params(WorkspaceIdParam, ListQuery),
    responses(
        (status = 200, body = Vec<ListedFile>),
        (status = 400, description = "Invalid root, path, depth or workspace id", body = ErrorBody),
        (status = 403, description = "The token file is managed by the host", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is offline or the runtime unavailable", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let path = match q.path.as_deref().filter(|p| !p.is_empty() && *p != "/") {
        Some(raw) => Some(parse_path(raw)?),
        None => None,
    };
    let listed = files::list(
        &state.svc,
        id,
        q.root.as_deref(),
        path.as_ref(),
        q.depth.unwrap_or(1),
    )
    .await?;
    Ok(axum::Json(
        listed.iter().map(ListedFile::from).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RootQuery {
    /// `/configs` (default) or another allowed root.
    root: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct FileContent {
    path: String,
    size: usize,
    /// The file as text (invalid UTF-8 replaced).
    content: String,
}

/// Reads one file.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    params(WorkspaceIdParam, FilePathParam, RootQuery),
    responses(
        (status = 200, body = FileContent),
        (status = 400, description = "Invalid path, root or workspace id", body = ErrorBody),
        (status = 403, description = "The token file is managed by the host", body = ErrorBody),
        (status = 404, description = "No such workspace or file", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is offline or the runtime unavailable", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn read(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<FilePathParam>,
    ApiQuery(q): ApiQuery<RootQuery>,
) -> ApiResult<impl IntoResponse> {
    let path = segment.rel()?;
    let data = files::read(&state.svc, id, q.root.as_deref(), &path).await?;
    Ok(axum::Json(FileContent {
        path: path.as_str().to_owned(),
        size: data.len(),
        content: String::from_utf8_lossy(&data).into_owned(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct WriteBody {
    content: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct FileWritten {
    /// `saved` or `deleted`.
    status: &'static str,
    path: String,
    /// Where the change went: `container` (the running agent) or `volume` (stored files).
    source: &'static str,
    restart: RestartReport,
}

fn written(status: &'static str, path: String, written: &Written) -> FileWritten {
    FileWritten {
        status,
        path,
        source: written.target.as_str(),
        restart: restart_report(&written.restart),
    }
}

/// Writes one file; the restart policy decides what the agent does.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    params(WorkspaceIdParam, FilePathParam),
    request_body = WriteBody,
    responses(
        (status = 200, body = FileWritten),
        (status = 400, description = "Invalid path or workspace id", body = ErrorBody),
        (status = 403, description = "The token file is managed by the host", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is offline or the runtime unavailable", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn write(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<FilePathParam>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let path = segment.rel()?;
    let shown = path.to_string();
    let done = files::write(&state.svc, id, path, body.content).await?;
    Ok(axum::Json(written("saved", shown, &done)))
}

/// Deletes one file.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/files/{*path}",
    tag = "files",
    params(WorkspaceIdParam, FilePathParam),
    responses(
        (status = 200, body = FileWritten),
        (status = 400, description = "Invalid path or workspace id", body = ErrorBody),
        (status = 403, description = "The token file is managed by the host", body = ErrorBody),
        (status = 404, description = "No such workspace or file", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is offline or the runtime unavailable", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn remove(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<FilePathParam>,
) -> ApiResult<impl IntoResponse> {
    let path = segment.rel()?;
    let shown = path.to_string();
    let done = files::delete(&state.svc, id, path).await?;
    Ok(axum::Json(written("deleted", shown, &done)))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ReplaceBody {
    /// Relative path to content; replaces every template file.
    files: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct FilesReplaced {
    status: &'static str,
    workspace: Uuid,
    files: usize,
    source: &'static str,
    restart: RestartReport,
}

/// Replaces all of the workspace's template files at once.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/files",
    tag = "files",
    params(WorkspaceIdParam),
    request_body = ReplaceBody,
    responses(
        (status = 200, body = FilesReplaced),
        (status = 400, description = "Invalid paths, too many files, or invalid workspace id", body = ErrorBody),
        (status = 403, description = "The token file is managed by the host", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is offline or the runtime unavailable", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn replace(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ReplaceBody>,
) -> ApiResult<impl IntoResponse> {
    let count = body.files.len();
    let done = files::replace(&state.svc, id, body.files).await?;
    Ok(axum::Json(FilesReplaced {
        status: "replaced",
        workspace: id,
        files: count,
        source: done.target.as_str(),
        restart: restart_report(&done.restart),
    }))
}
