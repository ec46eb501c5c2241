//! `/workspaces/:id/files`: list, read, write, delete and replace a workspace's template files.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, WorkspaceAuth};
use crate::runtime::RuntimeError;
use crate::safefs::RelPath;
use crate::workspaces::files::{self, FilesError, Written};
use crate::workspaces::lifecycle::RestartOutcome;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/files", get(list).put(replace))
        .route(
            "/workspaces/{id}/files/{*path}",
            get(read).put(write).delete(remove),
        )
}

impl From<FilesError> for ApiError {
    fn from(err: FilesError) -> Self {
        match err {
            FilesError::Workspace(err) => err.into(),
            FilesError::Invalid(message) => ApiError::bad_request(message),
            FilesError::TooMany(n) => ApiError::Body(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("too many files ({n}), max {}", files::MAX_REPLACE_FILES) }),
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

fn path_param(params: &HashMap<String, String>) -> Result<RelPath, ApiError> {
    parse_path(params.get("path").map_or("", String::as_str))
}

fn restart_json(outcome: &RestartOutcome) -> Value {
    match outcome {
        RestartOutcome::Decided(decision) => json!(decision),
        RestartOutcome::Skipped(reason) => json!({ "kind": "skipped", "reason": reason }),
        RestartOutcome::Started => json!({ "kind": "restart_now" }),
        RestartOutcome::Coalesced => json!({ "kind": "coalesced" }),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    root: Option<String>,
    path: Option<String>,
    depth: Option<usize>,
}

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
    Ok(axum::Json(listed))
}

#[derive(Debug, Deserialize)]
struct RootQuery {
    root: Option<String>,
}

async fn read(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(params): Path<HashMap<String, String>>,
    ApiQuery(q): ApiQuery<RootQuery>,
) -> ApiResult<impl IntoResponse> {
    let path = path_param(&params)?;
    let data = files::read(&state.svc, id, q.root.as_deref(), &path).await?;
    Ok(axum::Json(json!({
        "path": path.as_str(),
        "size": data.len(),
        "content": String::from_utf8_lossy(&data),
    })))
}

#[derive(Debug, Deserialize)]
struct WriteBody {
    content: String,
}

fn written_json(status: &str, path: &str, written: &Written) -> Value {
    json!({
        "status": status,
        "path": path,
        "source": written.target.as_str(),
        "restart": restart_json(&written.restart),
    })
}

async fn write(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(params): Path<HashMap<String, String>>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let path = path_param(&params)?;
    let shown = path.to_string();
    let written = files::write(&state.svc, id, path, body.content).await?;
    Ok(axum::Json(written_json("saved", &shown, &written)))
}

async fn remove(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(params): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let path = path_param(&params)?;
    let shown = path.to_string();
    let written = files::delete(&state.svc, id, path).await?;
    Ok(axum::Json(written_json("deleted", &shown, &written)))
}

#[derive(Debug, Deserialize)]
struct ReplaceBody {
    files: BTreeMap<String, String>,
}

async fn replace(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ReplaceBody>,
) -> ApiResult<impl IntoResponse> {
    let count = body.files.len();
    let written = files::replace(&state.svc, id, body.files).await?;
    Ok(axum::Json(json!({
        "status": "replaced",
        "workspace": id,
        "files": count,
        "source": written.target.as_str(),
        "restart": restart_json(&written.restart),
    })))
}
