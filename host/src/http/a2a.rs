//! `/workspaces/:id/a2a` (the A2A proxy), its queue, and the delegation routes.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiQuery, Caller, WorkspaceAuth, WorkspacePath};
use crate::delegation::proxy::{self, Call, Message, OnBusy, Sent};
use crate::delegation::tasks::{self, Created, Finished, NewDelegation};
use crate::delegation::{self, forward::TransportError};
use crate::store;
use crate::workspaces::get_live;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/a2a", post(proxy_a2a))
        .route("/workspaces/{id}/a2a/queue/{queue_id}", get(queue_item))
        .route("/admin/a2a-queue/drop-stale", post(drop_stale))
        .route("/workspaces/{id}/delegate", post(delegate))
        .route("/workspaces/{id}/delegations", get(list_delegations))
        .route("/workspaces/{id}/delegations/record", post(record))
        .route(
            "/workspaces/{id}/delegations/{delegation_id}/update",
            post(update),
        )
}

/// The caller of an A2A request: `X-Workspace-ID` (which must bring its own token when it holds
/// any), else the workspace whose token is the bearer, else the canvas.
async fn a2a_caller(
    state: &AppState,
    caller: Caller,
    headers: &HeaderMap,
) -> ApiResult<delegation::Caller> {
    let guard = &state.svc.guard;
    match caller {
        Caller::Workspace(id) => {
            guard
                .workspace_self(crate::auth::bearer(headers), id)
                .await?;
            Ok(delegation::Caller::Workspace(id))
        }
        Caller::Canvas => match guard.token_workspace(headers).await? {
            Some(id) => Ok(delegation::Caller::Workspace(id)),
            None => {
                guard.canvas_or_bearer(headers).await?;
                Ok(delegation::Caller::Canvas)
            }
        },
    }
}

/// `X-Timeout: <seconds>`, when given.
fn caller_timeout(headers: &HeaderMap) -> ApiResult<Option<Duration>> {
    let Some(raw) = headers.get("x-timeout") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| ApiError::bad_request("X-Timeout must be a positive number of seconds"))
}

async fn proxy_a2a(
    State(state): State<AppState>,
    WorkspacePath(target): WorkspacePath,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let caller = a2a_caller(&state, caller, &headers).await?;
    let timeout = caller_timeout(&headers)?;
    let message = Message::normalize(body).map_err(ApiError::bad_request)?;
    let call = Call {
        caller,
        target,
        message,
        timeout,
        on_busy: OnBusy::Enqueue,
    };
    // The call runs in its own task: a client that disconnects does not cut off the agent or
    // the record of what it answered.
    let svc = state.svc.clone();
    let sent = tokio::spawn(async move { proxy::send(&svc, call).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(match sent {
        Sent::Queued { queue_id, depth } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "queued": true,
                "queue_id": queue_id,
                "queue_depth": depth,
                "message": "the agent is busy; the message is queued and will be delivered when it has capacity",
            })),
        )
            .into_response(),
        Sent::Delivered(delivery) => answer(delivery),
    })
}

/// The agent's answer for the caller: a complete 2xx body verbatim; a 2xx that broke off says
/// that delivery was confirmed; any other status is passed on with the agent's error.
fn answer(delivery: proxy::Delivery) -> Response {
    let status = delivery
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_success() {
        if let Some(error) = delivery.error {
            let truncated = error == TransportError::TooLarge;
            return ApiError::Body(
                StatusCode::BAD_GATEWAY,
                json!({
                    "error": if truncated { "agent response too large" } else { "failed to read agent response" },
                    "delivery_confirmed": delivery.delivered(),
                }),
            )
            .into_response();
        }
        if !delivery.delivered() {
            return ApiError::Status(
                StatusCode::BAD_GATEWAY,
                "workspace agent returned empty response",
            )
            .into_response();
        }
        let mut response = Response::new(Body::from(delivery.body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let error = delivery.failure().unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("agent error")
            .to_owned()
    });
    (status, axum::Json(json!({ "error": error }))).into_response()
}

async fn queue_item(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path((_, queue_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let not_found = || ApiError::not_found("queue item not found");
    let queue_id = Uuid::parse_str(&queue_id).map_err(|_| not_found())?;
    let row = store::a2a_queue::get(&state.svc.db, id, queue_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(axum::Json(json!({
        "id": row.id,
        "workspace_id": row.workspace_id,
        "caller_id": row.caller_id,
        "priority": row.priority,
        "method": row.method,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "enqueued_at": row.enqueued_at,
        "dispatched_at": row.dispatched_at,
        "completed_at": row.completed_at,
        "expires_at": row.expires_at,
    })))
}

#[derive(Debug, Deserialize)]
struct DropStaleQuery {
    max_age_minutes: Option<i64>,
    workspace_id: Option<Uuid>,
}

async fn drop_stale(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(q): ApiQuery<DropStaleQuery>,
) -> ApiResult<impl IntoResponse> {
    let minutes = q.max_age_minutes.unwrap_or(60);
    if !(1..=60 * 24 * 365).contains(&minutes) {
        return Err(ApiError::bad_request(
            "max_age_minutes must be between 1 and 525600",
        ));
    }
    let cutoff = Utc::now() - chrono::Duration::minutes(minutes);
    let dropped = store::a2a_queue::drop_stale(&state.svc.db, cutoff, q.workspace_id).await?;
    Ok(axum::Json(json!({ "dropped": dropped })))
}

#[derive(Debug, Deserialize)]
struct DelegateBody {
    target_id: String,
    task: String,
    idempotency_key: Option<String>,
}

/// Starts (`id: None`, status `pending`) or records (`id` given, status `dispatched`) a
/// delegation from `source` to the workspace named by `target_id`.
async fn create(
    state: &AppState,
    source: Uuid,
    target_id: &str,
    task: String,
    idempotency_key: Option<String>,
    id: Option<Uuid>,
) -> ApiResult<Created> {
    let target = Uuid::parse_str(target_id.trim())
        .map_err(|_| ApiError::bad_request("target_id must be a valid UUID"))?;
    let request = NewDelegation {
        source,
        target,
        task,
        idempotency_key,
        id,
        status: if id.is_some() {
            "dispatched"
        } else {
            "pending"
        },
    };
    Ok(tasks::create(&state.svc, request).await?)
}

async fn delegate(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
    ApiJson(body): ApiJson<DelegateBody>,
) -> ApiResult<Response> {
    let created = create(
        &state,
        source,
        &body.target_id,
        body.task,
        body.idempotency_key,
        None,
    )
    .await?;
    Ok(match created {
        Created::Existing {
            delegation_id,
            status,
            target_id,
        } => axum::Json(json!({
            "delegation_id": delegation_id,
            "status": status,
            "target_id": target_id,
            "idempotent_hit": true,
        }))
        .into_response(),
        Created::New {
            delegation,
            warning,
        } => {
            let mut answer = json!({
                "delegation_id": delegation.id,
                "status": "delegated",
                "target_id": delegation.target,
            });
            if let Some(warning) = warning {
                answer["warning"] = json!(warning);
            }
            tasks::spawn(&state.svc, delegation);
            (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
        }
    })
}

async fn list_delegations(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(Value::Array(
        tasks::list(&state.svc, source).await?,
    )))
}

#[derive(Debug, Deserialize)]
struct RecordBody {
    target_id: String,
    task: String,
    delegation_id: String,
}

async fn record(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
    ApiJson(body): ApiJson<RecordBody>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(body.delegation_id.trim())
        .map_err(|_| ApiError::bad_request("delegation_id must be a valid UUID"))?;
    let created = create(&state, source, &body.target_id, body.task, None, Some(id)).await?;
    Ok(match created {
        Created::Existing { status, .. } => axum::Json(json!({
            "delegation_id": id,
            "status": status,
            "idempotent_hit": true,
        }))
        .into_response(),
        Created::New { .. } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "delegation_id": id, "status": "recorded" })),
        )
            .into_response(),
    })
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    status: String,
    error: Option<String>,
    response_preview: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
    Path((_, delegation_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<impl IntoResponse> {
    let id =
        Uuid::parse_str(&delegation_id).map_err(|_| ApiError::not_found("delegation not found"))?;
    let cap = |s: Option<String>| s.unwrap_or_default().chars().take(4096).collect::<String>();
    let finished = match body.status.as_str() {
        "completed" => Finished::Completed {
            text: cap(body.response_preview),
        },
        "failed" => Finished::Failed {
            error: Some(cap(body.error))
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the agent reported a failure".to_owned()),
        },
        _ => return Err(ApiError::bad_request("status must be completed or failed")),
    };
    get_live(&state.svc, source).await?;
    tasks::report(&state.svc, source, id, finished).await?;
    Ok(axum::Json(
        json!({ "status": body.status, "delegation_id": id }),
    ))
}
