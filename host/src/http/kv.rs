//! The key-value memory of a workspace: list, write (optionally conditional on a version, with
//! an optional time to live), read one, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, WorkspaceAuth, WorkspaceIdParam};
use super::fields::{FieldErrorBody, integer, object};
use super::openapi::{ErrorBody, StatusBody};
use super::workspaces::WorkspaceGone;
use crate::memory::FieldError;
use crate::memory::kv::{self, KvError, Put};
use crate::store::kv::KvRow;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, put))
        .routes(routes!(get_one, delete))
}

/// A write whose `if_version` did not match.
#[derive(Debug, Serialize, ToSchema)]
struct ConflictBody {
    /// `version conflict`.
    error: &'static str,
    /// `if_version`.
    field: &'static str,
    /// The key's live version; `null` when the key is absent (or expired).
    current_version: Option<i64>,
}

impl From<KvError> for ApiError {
    fn from(err: KvError) -> Self {
        match err {
            KvError::Field(err) => err.into(),
            KvError::NotFound => ApiError::not_found("key not found"),
            KvError::Conflict { current } => ApiError::body(
                StatusCode::CONFLICT,
                ConflictBody {
                    error: "version conflict",
                    field: "if_version",
                    current_version: current,
                },
            ),
            KvError::Store(err) => err.into(),
        }
    }
}

/// The `{key}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct KeyParam {
    /// The key (percent-encoded in the path).
    key: String,
}

/// One live key.
#[derive(Debug, Serialize, ToSchema)]
struct Entry {
    key: String,
    /// Any JSON value.
    #[schema(value_type = Object)]
    value: Value,
    /// 1 when written first; one more at every write.
    version: i64,
    /// When the key expires; `null`: never.
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Entry {
    fn of(row: KvRow) -> Entry {
        Entry {
            key: row.key,
            value: row.value,
            version: row.version,
            expires_at: row.expires_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The workspace's live keys, by key (expired keys are left out).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/memory",
    tag = "memory",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<Entry>),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let rows = kv::list(&state.svc, id).await?;
    Ok(axum::Json(
        rows.into_iter().map(Entry::of).collect::<Vec<_>>(),
    ))
}

/// The body of `POST /workspaces/{id}/memory`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct PutBody {
    /// 1 to 256 characters, no control characters.
    key: String,
    /// Any JSON value, at most 64 KiB of JSON text.
    #[schema(value_type = Object)]
    value: Value,
    /// Seconds until the key expires (1 to 31536000); absent: never. Every write sets it anew.
    ttl_seconds: Option<i64>,
    /// Write only over this version (409 with the current one otherwise); 0: only when the key
    /// is absent.
    if_version: Option<i64>,
}

/// Writes a key: creates it at version 1 or replaces its value, one version up.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/memory",
    tag = "memory",
    params(WorkspaceIdParam),
    request_body = PutBody,
    responses(
        (status = 200, body = Entry),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "`if_version` is not the key's version", body = ConflictBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The value is over 64 KiB", body = FieldErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn put(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let mut body = object(body)?;
    let key = match body.get("key") {
        Some(Value::String(key)) => key.clone(),
        None | Some(Value::Null) => return Err(FieldError::new("key", "key is required").into()),
        Some(_) => return Err(FieldError::new("key", "key must be a string").into()),
    };
    let ttl_seconds = integer(&body, "ttl_seconds")?;
    let if_version = integer(&body, "if_version")?;
    let value = body
        .remove("value")
        .ok_or_else(|| FieldError::new("value", "value is required"))?;
    get_live(&state.svc, id).await?;
    let row = kv::put(
        &state.svc,
        id,
        Put {
            key,
            value,
            ttl_seconds,
            if_version,
        },
    )
    .await?;
    Ok(axum::Json(Entry::of(row)))
}

/// One live key.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/memory/{key}",
    tag = "memory",
    params(WorkspaceIdParam, KeyParam),
    responses(
        (status = 200, body = Entry),
        (status = 400, description = "The key is invalid", body = FieldErrorBody),
        (status = 404, description = "No such workspace, or the key is absent or expired", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn get_one(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<KeyParam>,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let row = kv::get(&state.svc, id, &segment.key).await?;
    Ok(axum::Json(Entry::of(row)))
}

/// Deletes a key.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/memory/{key}",
    tag = "memory",
    params(WorkspaceIdParam, KeyParam),
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "The key is invalid", body = FieldErrorBody),
        (status = 404, description = "No such workspace, or the key is absent or expired", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(segment): Path<KeyParam>,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    kv::delete(&state.svc, id, &segment.key).await?;
    Ok(axum::Json(StatusBody { status: "deleted" }))
}
