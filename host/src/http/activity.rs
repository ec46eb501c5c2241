//! `/workspaces/:id/activity` and `/notify`: what agents report, and messages to the user.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
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
use crate::events::activity;
use crate::store::activity::{ActivityRow, SourceFilter};
use crate::store::{self, Constraint, StoreError};
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, report))
        .routes(routes!(notify))
        .routes(routes!(chat_history))
}

/// The activity types an agent may report; the host writes others (`delegation`, ...) itself.
const REPORTABLE_TYPES: &[&str] = &[
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
];

/// One activity row.
#[derive(Debug, Serialize, ToSchema)]
struct Activity {
    id: Uuid,
    workspace_id: Uuid,
    activity_type: String,
    source_id: Option<Uuid>,
    target_id: Option<Uuid>,
    method: Option<String>,
    summary: Option<String>,
    /// Free-form, as the agent reported it.
    request_body: Option<Value>,
    /// Free-form, as the agent reported it.
    response_body: Option<Value>,
    /// Free-form, as the agent reported it.
    tool_trace: Option<Value>,
    duration_ms: Option<i32>,
    status: String,
    error_detail: Option<String>,
    created_at: DateTime<Utc>,
}

fn activity_of(row: ActivityRow) -> Activity {
    Activity {
        id: row.id,
        workspace_id: row.workspace_id,
        activity_type: row.activity_type,
        source_id: row.source_id,
        target_id: row.target_id,
        method: row.method,
        summary: row.summary,
        request_body: row.request_body,
        response_body: row.response_body,
        tool_trace: row.tool_trace,
        duration_ms: row.duration_ms,
        status: row.status,
        error_detail: row.error_detail,
        created_at: row.created_at,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only rows of this activity type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    activity_type: Option<String>,
    /// `canvas` or `agent`.
    source: Option<String>,
    /// 1-500 (default 100).
    limit: Option<i64>,
}

/// The workspace's activity, newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/activity",
    tag = "activity",
    params(WorkspaceIdParam, ListQuery),
    responses(
        (status = 200, body = Vec<Activity>),
        (status = 400, description = "Invalid source, limit or workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let source = match q.source.as_deref() {
        None | Some("") => None,
        Some("canvas") => Some(SourceFilter::Canvas),
        Some("agent") => Some(SourceFilter::Agent),
        Some(_) => return Err(ApiError::bad_request("source must be canvas or agent")),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-500"));
    }
    get_live(&state.svc, id).await?;
    let kind = q.activity_type.as_deref().filter(|t| !t.is_empty());
    // Rows of A2A calls are stored in batches: what was recorded before this read is stored first.
    state.svc.writes.flush().await;
    let rows = store::activity::list(&state.svc.db, id, kind, source, limit).await?;
    Ok(axum::Json(
        rows.into_iter().map(activity_of).collect::<Vec<_>>(),
    ))
}

/// `?limit=&before=` of the chat history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChatQuery {
    /// Calls and agent messages per page, 1-200 (default 50).
    limit: Option<i64>,
    /// The `next_before` of the previous page: only what was said before it.
    before: Option<Uuid>,
}

/// One message of the conversation.
#[derive(Debug, Serialize, ToSchema)]
struct ChatMessage {
    /// The activity row it comes from (a call gives the user's message and the agent's answer).
    activity_id: Uuid,
    /// `user` or `agent`.
    role: &'static str,
    text: String,
    timestamp: DateTime<Utc>,
    /// `ok`; for the agent's side of a call also `error` (`text` says why) or `queued`.
    status: String,
    /// Files sent with it (`{uri, name, mimeType, size}`).
    #[schema(value_type = Vec<Object>)]
    files: Vec<Value>,
}

/// A page of the conversation, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct ChatPage {
    messages: Vec<ChatMessage>,
    /// Pass as `before` for the page before this one; `null` when this is the first.
    next_before: Option<Uuid>,
}

/// The conversation between the operator (the canvas) and the agent: each message the canvas
/// sent with the agent's answer (or why there was none), and the messages the agent sent its
/// user, oldest first, a page at a time going back.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/chat-history",
    tag = "activity",
    params(WorkspaceIdParam, ChatQuery),
    responses(
        (status = 200, body = ChatPage),
        (status = 400, description = "Invalid limit or before", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn chat_history(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(q): ApiQuery<ChatQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-200"));
    }
    get_live(&state.svc, id).await?;
    state.svc.writes.flush().await;
    let rows = store::activity::chat(&state.svc.db, id, q.before, limit).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let messages = crate::agents::chat::conversation(&rows)
        .into_iter()
        .map(|m| ChatMessage {
            activity_id: m.activity_id,
            role: m.role.as_str(),
            text: m.text,
            timestamp: m.at,
            status: m.status,
            files: m.files,
        })
        .collect();
    Ok(axum::Json(ChatPage {
        messages,
        next_before,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ReportBody {
    /// `a2a_send`, `a2a_receive`, `task_update`, `agent_log`, `skill_promotion`,
    /// `memory_write` or `error`.
    activity_type: String,
    method: Option<String>,
    summary: Option<String>,
    target_id: Option<Uuid>,
    source_id: Option<Uuid>,
    status: Option<String>,
    error_detail: Option<String>,
    duration_ms: Option<i32>,
    request_body: Option<Value>,
    metadata: Option<Value>,
    response_body: Option<Value>,
    tool_trace: Option<Value>,
    /// 1-200 characters; a repeated key is stored once.
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Logged {
    status: &'static str,
    /// Present (true) when the idempotency key was seen before.
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
}

/// An agent reports what it did.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/activity",
    tag = "activity",
    params(WorkspaceIdParam),
    request_body = ReportBody,
    responses(
        (status = 200, body = Logged),
        (status = 400, description = "Not a reportable type, invalid key or workspace id", body = ErrorBody),
        (status = 403, description = "source_id is not the reporting workspace", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn report(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ReportBody>,
) -> ApiResult<impl IntoResponse> {
    if !REPORTABLE_TYPES.contains(&body.activity_type.as_str()) {
        return Err(ApiError::bad_request(
            "activity_type is not one of the reportable types",
        ));
    }
    if body.source_id.is_some_and(|source| source != id) {
        return Err(ApiError::forbidden(
            "source_id must be the reporting workspace",
        ));
    }
    if body
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(ApiError::bad_request("invalid idempotency_key"));
    }
    get_live(&state.svc, id).await?;
    let row = ActivityRow {
        id: Uuid::new_v4(),
        workspace_id: id,
        activity_type: body.activity_type,
        source_id: body.source_id,
        target_id: body.target_id,
        method: body.method,
        summary: body.summary,
        request_body: body.request_body.or(body.metadata),
        response_body: body.response_body,
        tool_trace: body.tool_trace,
        duration_ms: body.duration_ms,
        status: body
            .status
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ok".to_owned()),
        error_detail: body.error_detail,
        idempotency_key: body.idempotency_key,
        created_at: Utc::now(),
    };
    match activity::record(&state.svc, &row).await {
        Ok(()) => {}
        // The same report delivered twice is recorded once; the retry is told it landed.
        Err(StoreError::Constraint(Constraint::ActivityDuplicate)) => {
            return Ok(axum::Json(Logged {
                status: "logged",
                duplicate: Some(true),
            }));
        }
        Err(err) => return Err(err.into()),
    }
    Ok(axum::Json(Logged {
        status: "logged",
        duplicate: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct Attachment {
    uri: String,
    name: String,
    #[serde(rename = "mimeType")]
    mime_type: Option<String>,
    size: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct NotifyBody {
    message: String,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

/// An agent sends the user a message (shown on the canvas).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/notify",
    tag = "activity",
    params(WorkspaceIdParam),
    request_body = NotifyBody,
    responses(
        (status = 200, body = super::openapi::StatusBody),
        (status = 400, description = "Blank message, attachments without uri or name, invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn notify(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<NotifyBody>,
) -> ApiResult<impl IntoResponse> {
    if body.message.trim().is_empty() {
        return Err(ApiError::bad_request("message is required"));
    }
    if body.message.chars().count() > activity::USER_MESSAGE_MAX {
        return Err(ApiError::bad_request(
            "message is longer than 32000 characters",
        ));
    }
    if body
        .attachments
        .iter()
        .any(|a| a.uri.is_empty() || a.name.is_empty())
    {
        return Err(ApiError::bad_request("attachments need a uri and a name"));
    }
    let workspace = get_live(&state.svc, id)
        .await
        .map_err(|_| ApiError::not_found("workspace not found"))?;
    let files: Vec<Value> = body
        .attachments
        .iter()
        .map(|a| json!({ "uri": a.uri, "name": a.name, "mimeType": a.mime_type, "size": a.size }))
        .collect();
    activity::tell_user(&state.svc, &workspace, &body.message, files).await?;
    Ok(axum::Json(super::openapi::StatusBody { status: "sent" }))
}
