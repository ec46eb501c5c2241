//! `/workspaces/:id/mcp`: MCP over HTTP for agents (JSON-RPC), and its SSE endpoint stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{WorkspaceAuth, contains_nul, nul_rejection};
use crate::delegation::mcp;
use crate::workspaces::get_live;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/mcp", post(call))
        .route("/workspaces/{id}/mcp/stream", get(stream))
}

/// Calls per minute are limited per workspace (the token was checked, so keying by the
/// workspace cannot be dodged with made-up tokens).
fn limit(state: &AppState, id: uuid::Uuid) -> ApiResult<()> {
    state
        .mcp_calls
        .check(&id.to_string())
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
}

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
