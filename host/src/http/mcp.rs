//! `/workspaces/:id/mcp`: MCP over HTTP for agents (JSON-RPC), and its SSE endpoint stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{WorkspaceAuth, contains_nul, nul_rejection};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::delegation::mcp;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(call))
        .routes(routes!(stream))
}

/// Calls per minute are limited per workspace (the token was checked, so keying by the
/// workspace cannot be dodged with made-up tokens).
fn limit(state: &AppState, id: uuid::Uuid) -> ApiResult<()> {
    state
        .mcp_calls
        .check(&id.to_string())
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
}

/// One MCP JSON-RPC message from the workspace's agent (`initialize`, `tools/list`,
/// `tools/call`, ...). Protocol errors are JSON-RPC error objects with status 200.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/mcp",
    tag = "mcp",
    params(WorkspaceIdParam),
    request_body(content = Object, description = "A JSON-RPC 2.0 request or notification"),
    responses(
        (status = 200, description = "The JSON-RPC response", body = Object),
        (status = 202, description = "A notification: nothing to answer"),
        (status = 400, description = "Not JSON (a JSON-RPC parse error object), or invalid workspace id", body = Object),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn call(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    body: Bytes,
) -> ApiResult<Response> {
    limit(&state, id)?;
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            let error = mcp::error(Value::Null, mcp::codes::PARSE_ERROR, "parse error");
            return Ok((StatusCode::BAD_REQUEST, axum::Json(error)).into_response());
        }
    };
    if contains_nul(&request) {
        return Err(nul_rejection());
    }
    get_live(&state.svc, id).await?;
    Ok(match mcp::handle(&state.svc, id, request).await {
        Some(answer) => axum::Json(answer).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

/// SSE: one `endpoint` event naming where to POST, then a ping every 30 s until shutdown.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/mcp/stream",
    tag = "mcp",
    params(WorkspaceIdParam),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn stream(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    limit(&state, id)?;
    get_live(&state.svc, id).await?;
    let endpoint = SseEvent::default()
        .event("endpoint")
        .data(format!("/workspaces/{id}/mcp"));
    let shutdown = state.shutdown.clone();
    let first = futures::stream::once(async move { Ok::<_, Infallible>(endpoint) });
    let until_shutdown = futures::stream::once(async move {
        shutdown.cancelled().await;
        None
    })
    .filter_map(|end: Option<Result<SseEvent, Infallible>>| async move { end });
    Ok(Sse::new(first.chain(until_shutdown)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(30))
            .text("ping"),
    ))
}
