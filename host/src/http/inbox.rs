//! Poll-mode delivery: an agent the host cannot reach (`delivery_mode: poll` at registration)
//! fetches the A2A messages waiting for it and the chat attachments sent to it, and acknowledges
//! each. Only the workspace's own token fetches or acknowledges (the operator reads messages in
//! the activity feed and attachments through `chat/download`), so nobody else can take a message
//! from under the agent.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
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
use super::extract::{ApiQuery, WorkspaceAccess, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::uploads::attachment;
use super::workspaces::WorkspaceGone;
use crate::auth::Principal;
use crate::delegation::proxy::Message;
use crate::delegation::tasks::{self, Finished, Via};
use crate::store::a2a_queue::{self, Acked};
use crate::store::pending_uploads::{self, Ack, UploadRow};
use crate::workspaces::get_live;

/// Messages one fetch returns at most, and by default.
const MAX_FETCH: i64 = 100;
const DEFAULT_FETCH: i64 = 10;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fetch_inbox))
        .routes(routes!(ack_message))
        .routes(routes!(list_pending_uploads))
        .routes(routes!(pending_upload_content))
        .routes(routes!(ack_pending_upload))
}

/// The workspace's agent itself: the operator is refused (403), since a fetch or an ack by
/// anyone else would take the message from under the agent.
fn agent_only(access: WorkspaceAccess) -> ApiResult<uuid::Uuid> {
    match access.principal {
        Principal::Workspace(id) if id == access.id => Ok(id),
        _ => Err(ApiError::forbidden(
            "only the workspace's own token fetches and acknowledges its deliveries",
        )),
    }
}

/// An id segment that is not a UUID names nothing.
fn parse_id(raw: &str, what: &'static str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InboxQuery {
    /// 1-100 (default 10).
    limit: Option<i64>,
}

/// A message waiting for the agent.
#[derive(Debug, Serialize, ToSchema)]
struct InboxMessage {
    /// The queue id: acknowledge it with `POST …/inbox/{queue_id}/ack`.
    id: Uuid,
    /// The workspace that sent it; `null` for the canvas or the host.
    caller_id: Option<Uuid>,
    method: Option<String>,
    /// The A2A message as it was sent (JSON-RPC or bare).
    #[schema(value_type = Object)]
    body: Value,
    priority: i32,
    /// How many times it was fetched, this time included.
    attempts: i32,
    enqueued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Inbox {
    messages: Vec<InboxMessage>,
    delivery_mode: &'static str,
}

/// Fetches the messages waiting for a poll-mode agent (highest priority, then oldest). Each is
/// handed out once; one not acknowledged within the delivery bound (`a2a.max_timeout_secs` plus
/// a margin) is offered again, so delivery is at least once. Messages expire after
/// `a2a.queue_ttl_secs` (24 h by default), as queued messages do.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/inbox",
    tag = "a2a",
    params(WorkspaceIdParam, InboxQuery),
    responses(
        (status = 200, body = Inbox),
        (status = 400, description = "limit outside 1-100", body = ErrorBody),
        (status = 403, description = "Not the workspace's own token", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The workspace's agent is sent its messages (push mode)", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn fetch_inbox(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> ApiResult<impl IntoResponse> {
    let id = agent_only(access)?;
    let limit = query.limit.unwrap_or(DEFAULT_FETCH);
    if !(1..=MAX_FETCH).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100"));
    }
    let row = get_live(&state.svc, id).await?;
    if !row.polls() {
        return Err(ApiError::body(
            StatusCode::CONFLICT,
            ErrorBody::new(
                "this workspace's agent is sent its messages (delivery_mode push); register with delivery_mode poll to fetch them",
            ),
        ));
    }
    let rows = a2a_queue::claim_batch(&state.svc.db, id, limit).await?;
    if !rows.is_empty() {
        tracing::info!(workspace_id = %id, fetched = rows.len(), "poll-mode agent fetched its messages");
    }
    Ok(axum::Json(Inbox {
        messages: rows
            .into_iter()
            .map(|r| InboxMessage {
                id: r.id,
                caller_id: r.caller_id,
                method: r.method,
                body: r.body.0,
                priority: r.priority,
                attempts: r.attempts,
                enqueued_at: r.enqueued_at,
                expires_at: r.expires_at,
            })
            .collect(),
        delivery_mode: "poll",
    }))
}

/// The `{id}` and `{queue_id}` of an inbox message.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct MessagePath {
    /// The workspace id.
    #[allow(dead_code)]
    id: String,
    /// The message's queue id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    queue_id: String,
}

/// How the agent finished with a message: `result` (its answer, which completes a delegation
/// the message carried) or `error` (which fails it); neither just says it was handled.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageAck {
    result: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AckBody {
    acked: bool,
    /// Present when it had been settled already (a retried ack, or it expired first).
    #[serde(skip_serializing_if = "Option::is_none")]
    raced: Option<bool>,
    /// The message's status now: `completed` or `failed` (or `dropped`, when it expired first).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

/// Acknowledges a message the agent fetched (or settles one it has not fetched yet): it is no
/// longer offered. A delegation the message carried completes with `result` or fails with
/// `error`. A second ack answers `raced: true` and changes nothing.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/inbox/{queue_id}/ack",
    tag = "a2a",
    params(MessagePath),
    request_body(content = MessageAck, description = "Optional: `{}` acknowledges"),
    responses(
        (status = 200, body = AckBody),
        (status = 400, description = "Both result and error, or an invalid body", body = ErrorBody),
        (status = 403, description = "Not the workspace's own token", body = ErrorBody),
        (status = 404, description = "No such workspace or message", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn ack_message(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(MessagePath { queue_id, .. }): Path<MessagePath>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let id = agent_only(access)?;
    let queue_id = parse_id(&queue_id, "message not found")?;
    // No body at all acknowledges, as `{}` does.
    let MessageAck { result, error } = if body.iter().all(u8::is_ascii_whitespace) {
        MessageAck::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::body(
                StatusCode::BAD_REQUEST,
                ErrorBody::new(format!("invalid ack: {err}")),
            )
        })?
    };
    if result.is_some() && error.is_some() {
        return Err(ApiError::bad_request("give result or error, not both"));
    }
    let acked = a2a_queue::ack(&state.svc.db, id, queue_id, error.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("message not found"))?;
    let row = match acked {
        Acked::Already(status) => {
            return Ok(axum::Json(AckBody {
                acked: true,
                raced: Some(true),
                status: Some(status),
            }));
        }
        Acked::Now(row) => *row,
    };
    tracing::info!(workspace_id = %id, %queue_id, status = %row.status, "poll-mode agent acknowledged a message");
    let delegation_id = Message::normalize(row.body.0)
        .ok()
        .and_then(|m| m.delegation_id());
    if let (Some(delegation_id), Some(source)) = (delegation_id, row.caller_id)
        && let Some(delegation) = tasks::load(&state.svc, source, delegation_id).await?
    {
        let finished = match error {
            Some(error) => Finished::Failed { error },
            None => Finished::Completed {
                text: result.unwrap_or_default(),
            },
        };
        tasks::finish(&state.svc, &delegation, finished, Via::Agent).await;
    }
    Ok(axum::Json(AckBody {
        acked: true,
        raced: None,
        status: Some(row.status),
    }))
}

/// A chat attachment waiting for a poll-mode agent.
#[derive(Debug, Serialize, ToSchema)]
struct PendingUpload {
    file_id: Uuid,
    filename: String,
    /// Read from the bytes when it was uploaded.
    mimetype: String,
    size_bytes: i64,
    created_at: DateTime<Utc>,
    /// When the agent first downloaded it.
    fetched_at: Option<DateTime<Utc>>,
    /// Unacknowledged files are deleted then.
    expires_at: DateTime<Utc>,
}

impl From<UploadRow> for PendingUpload {
    fn from(r: UploadRow) -> Self {
        PendingUpload {
            file_id: r.file_id,
            filename: r.filename,
            mimetype: r.mimetype,
            size_bytes: r.size_bytes,
            created_at: r.created_at,
            fetched_at: r.fetched_at,
            expires_at: r.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct PendingUploads {
    files: Vec<PendingUpload>,
}

/// The chat attachments waiting for the workspace's poll-mode agent (not yet acknowledged, not
/// expired), oldest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/pending-uploads",
    tag = "files",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = PendingUploads),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn list_pending_uploads(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let files = pending_uploads::waiting(&state.svc.db, id).await?;
    Ok(axum::Json(PendingUploads {
        files: files.into_iter().map(PendingUpload::from).collect(),
    }))
}

/// The `{id}` and `{file_id}` of a pending upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct UploadPath {
    /// The workspace id.
    #[allow(dead_code)]
    id: String,
    /// The file's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    file_id: String,
}

/// Downloads a chat attachment waiting for the agent (`Content-Disposition: attachment`, the
/// type read from the bytes when it was uploaded). The first download is recorded. An
/// acknowledged or expired file is gone (404).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/pending-uploads/{file_id}/content",
    tag = "files",
    params(UploadPath),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = String),
        (status = 403, description = "Not the workspace's own token", body = ErrorBody),
        (status = 404, description = "No such workspace or file, or it was acknowledged or expired", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn pending_upload_content(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(UploadPath { file_id, .. }): Path<UploadPath>,
) -> ApiResult<impl IntoResponse> {
    let id = agent_only(access)?;
    let file_id = parse_id(&file_id, "file not found")?;
    let (row, content) = pending_uploads::content(&state.svc.db, id, file_id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("file not found"))?;
    Ok(pending_download(&row, content))
}

/// A pending upload as a download: served as the type sniffed at upload, except types a browser
/// would run.
pub(super) fn pending_download(row: &UploadRow, content: Vec<u8>) -> impl IntoResponse + use<> {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::workspaces::uploads::served_type(&content)),
            ),
            (header::CONTENT_DISPOSITION, attachment(&row.filename)),
        ],
        content,
    )
}

#[derive(Debug, Serialize, ToSchema)]
struct UploadAcked {
    acked: bool,
    /// Present when it had been acknowledged already.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    raced: bool,
}

/// Acknowledges a chat attachment: it is no longer offered, and is deleted an hour later. A
/// second ack answers `raced: true`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/pending-uploads/{file_id}/ack",
    tag = "files",
    params(UploadPath),
    responses(
        (status = 200, body = UploadAcked),
        (status = 403, description = "Not the workspace's own token", body = ErrorBody),
        (status = 404, description = "No such workspace or file", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn ack_pending_upload(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(UploadPath { file_id, .. }): Path<UploadPath>,
) -> ApiResult<impl IntoResponse> {
    let id = agent_only(access)?;
    let file_id = parse_id(&file_id, "file not found")?;
    let acked = pending_uploads::ack(&state.svc.db, id, file_id)
        .await?
        .ok_or_else(|| ApiError::not_found("file not found"))?;
    Ok(axum::Json(UploadAcked {
        acked: true,
        raced: acked == Ack::AlreadyAcked,
    }))
}
