//! `/workspaces/:id/a2a` (the A2A proxy), its queue, and the delegation routes.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{
    AdminAuth, ApiJson, ApiQuery, Caller, Creds, WorkspaceAuth, WorkspacePath, calling_workspace,
};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::agents::forward::TransportError;
use crate::auth::Credentials;
use crate::delegation;
use crate::delegation::proxy::{self, Call, Message, OnBusy, ProxyError, Sent};
use crate::delegation::tasks::{self, Created, Finished, NewDelegation};
use crate::store;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(proxy_a2a))
        .routes(routes!(queue_item))
        .routes(routes!(drop_stale))
        .routes(routes!(delegate))
        .routes(routes!(list_delegations))
        .routes(routes!(record))
        .routes(routes!(update))
}

/// The headers an A2A call may carry.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
struct A2aHeaders {
    /// The calling workspace (absent: the canvas or an operator).
    #[param(rename = "X-Workspace-ID", value_type = Option<Uuid>)]
    caller: Caller,
    /// How long to wait for the agent, in seconds (a positive integer).
    // Kept as the parse's result: an invalid value is refused only after the caller passed its
    // checks, so a request without a valid credential is a 401 whatever it carries.
    #[param(rename = "X-Timeout", value_type = Option<u64>)]
    timeout: ApiResult<Option<Duration>>,
}

impl<S: Send + Sync> FromRequestParts<S> for A2aHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(A2aHeaders {
            caller: Caller::from_headers(&parts.headers)?,
            timeout: caller_timeout(&parts.headers),
        })
    }
}

/// The proxy's own error answers (the agent's are passed on as they came).
#[derive(Debug, Default, Serialize, ToSchema)]
struct ProxyFailure {
    error: String,
    /// 503: the workspace's status when it has no URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarting: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    busy: Option<bool>,
    /// Seconds to wait before retrying.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    /// 502: why the agent could not be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// 502 after a 2xx that broke off: whether the agent confirmed delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_confirmed: Option<bool>,
}

impl From<ProxyError> for ApiError {
    fn from(err: ProxyError) -> Self {
        let failure = ProxyFailure {
            error: err.to_string(),
            ..ProxyFailure::default()
        };
        let (status, failure) = match err {
            ProxyError::Forbidden => (StatusCode::FORBIDDEN, failure),
            ProxyError::NotFound => (StatusCode::NOT_FOUND, failure),
            ProxyError::BudgetExceeded => (StatusCode::PAYMENT_REQUIRED, failure),
            ProxyError::NoUrl { status } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProxyFailure {
                    status: Some(status),
                    ..failure
                },
            ),
            ProxyError::UnsafeUrl => (StatusCode::BAD_GATEWAY, failure),
            ProxyError::Restarting => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProxyFailure {
                    restarting: Some(true),
                    retry_after: Some(15),
                    ..failure
                },
            ),
            ProxyError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProxyFailure {
                    busy: Some(true),
                    retry_after: Some(30),
                    ..failure
                },
            ),
            ProxyError::Unreachable(cause) => (
                StatusCode::BAD_GATEWAY,
                ProxyFailure {
                    detail: Some(cause.as_str().to_owned()),
                    ..failure
                },
            ),
            ProxyError::Store(err) => return err.into(),
        };
        ApiError::body(status, failure)
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Queued {
    queued: bool,
    queue_id: Uuid,
    queue_depth: i64,
    /// Present (true) when the workspace was hibernated: it is being woken, and the message is
    /// delivered once its agent is back online.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    waking: bool,
    message: &'static str,
}

/// A message for a poll-mode agent: stored in its inbox until it fetches it (the original's
/// `{status, delivery_mode, method}`, with the queue id to follow it by).
#[derive(Debug, Serialize, ToSchema)]
struct Polled {
    /// `queued`.
    status: &'static str,
    /// `poll`.
    delivery_mode: &'static str,
    method: String,
    queue_id: Uuid,
    queue_depth: i64,
}

/// The caller of an A2A request: `X-Workspace-ID` (with its own token, or the operator's; a
/// removed workspace is never a caller), else the workspace whose token is the bearer, else the
/// canvas, which must hold the operator's token (an `Origin` is no credential outside
/// development).
async fn a2a_caller(
    state: &AppState,
    caller: Caller,
    creds: &Credentials,
) -> ApiResult<delegation::Caller> {
    match calling_workspace(state, &caller, creds).await? {
        Some(id) => Ok(delegation::Caller::Workspace(id)),
        None => {
            state.svc.guard.canvas(creds).await?;
            Ok(delegation::Caller::Canvas)
        }
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

/// Sends an A2A message (JSON-RPC `message/send`, or a bare message) to the workspace's agent
/// and answers what the agent answered; a busy agent's message is queued (202), and so is a
/// hibernated one's, which is woken (202 with `waking: true`). A poll-mode agent's message is
/// stored in its inbox (200 `{status: "queued", delivery_mode: "poll", method, queue_id}`).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/a2a",
    tag = "a2a",
    params(WorkspaceIdParam, A2aHeaders),
    request_body(content = Object, description = "An A2A JSON-RPC request or message (free-form)"),
    responses(
        (status = 200, description = "The agent's answer, verbatim (free-form JSON); for a poll-mode agent, that the message waits in its inbox", body = Object),
        (status = 202, description = "The agent is busy, or hibernated and being woken; the message is queued", body = Queued),
        (status = 400, description = "Not an A2A message, an invalid X-Timeout or X-Workspace-ID", body = ErrorBody),
        (status = 402, description = "The workspace's budget is spent", body = ProxyFailure),
        (status = 403, description = "The caller may not talk to the target", body = ProxyFailure),
        (status = 404, description = "No such workspace", body = ProxyFailure),
        (status = 502, description = "The agent could not be reached or answered badly", body = ProxyFailure),
        (status = 503, description = "The agent is busy, restarting or has no URL", body = ProxyFailure),
        (status = "default", description = "The agent's own error status, passed on", body = ErrorBody),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn proxy_a2a(
    State(state): State<AppState>,
    WorkspacePath(target): WorkspacePath,
    A2aHeaders { caller, timeout }: A2aHeaders,
    Creds(creds): Creds,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let caller = a2a_caller(&state, caller, &creds).await?;
    let timeout = timeout?;
    let message = Message::normalize(body).map_err(ApiError::bad_request)?;
    let method = message.method.clone();
    let call = Call {
        caller,
        target,
        message,
        timeout,
        on_busy: OnBusy::Enqueue,
    };
    // The call runs in its own task: a client that disconnects does not cut off the agent or
    // the record of what it answered, and host shutdown waits for it (the A2A hub's tasks).
    let task_state = state.clone();
    let sent = state
        .svc
        .a2a
        .spawn(async move { proxy::send(&task_state.svc, call).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(match sent {
        Sent::Queued {
            queue_id,
            depth,
            polled: true,
            ..
        } => axum::Json(Polled {
            status: "queued",
            delivery_mode: "poll",
            method,
            queue_id,
            queue_depth: depth,
        })
        .into_response(),
        Sent::Queued {
            queue_id,
            depth,
            waking,
            polled: false,
        } => (
            StatusCode::ACCEPTED,
            axum::Json(Queued {
                queued: true,
                queue_id,
                queue_depth: depth,
                waking,
                message: if waking {
                    "the workspace is waking from hibernation; the message is queued and will be delivered once its agent is online"
                } else {
                    "the agent is busy; the message is queued and will be delivered when it has capacity"
                },
            }),
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
            let error = if truncated {
                "agent response too large"
            } else {
                "failed to read agent response"
            };
            return ApiError::body(
                StatusCode::BAD_GATEWAY,
                ProxyFailure {
                    error: error.to_owned(),
                    delivery_confirmed: Some(delivery.delivered()),
                    ..ProxyFailure::default()
                },
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
        // Passed on verbatim it would go out as `application/json` that is not JSON.
        if !delivery.is_json() {
            return ApiError::body(
                StatusCode::BAD_GATEWAY,
                ProxyFailure {
                    error: "workspace agent answered with a body that is not JSON".to_owned(),
                    delivery_confirmed: Some(true),
                    ..ProxyFailure::default()
                },
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
    (status, axum::Json(ErrorBody::new(error))).into_response()
}

/// The `{queue_id}` segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct QueueIdParam {
    /// The queued message's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    queue_id: String,
}

/// A queued A2A message's state.
#[derive(Debug, Serialize, ToSchema)]
struct QueueItem {
    id: Uuid,
    workspace_id: Uuid,
    caller_id: Option<Uuid>,
    priority: i32,
    method: Option<String>,
    /// `queued`, `dispatched`, `completed`, `failed` or `dropped`.
    status: String,
    attempts: i32,
    last_error: Option<String>,
    enqueued_at: DateTime<Utc>,
    dispatched_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

/// One queued message of the workspace.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/a2a/queue/{queue_id}",
    tag = "a2a",
    params(WorkspaceIdParam, QueueIdParam),
    responses(
        (status = 200, body = QueueItem),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such queue item", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn queue_item(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path(QueueIdParam { queue_id }): Path<QueueIdParam>,
) -> ApiResult<impl IntoResponse> {
    let not_found = || ApiError::not_found("queue item not found");
    let queue_id = Uuid::parse_str(&queue_id).map_err(|_| not_found())?;
    let row = store::a2a_queue::get(&state.svc.db, id, queue_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(axum::Json(QueueItem {
        id: row.id,
        workspace_id: row.workspace_id,
        caller_id: row.caller_id,
        priority: row.priority,
        method: row.method,
        status: row.status,
        attempts: row.attempts,
        last_error: row.last_error,
        enqueued_at: row.enqueued_at,
        dispatched_at: row.dispatched_at,
        completed_at: row.completed_at,
        expires_at: row.expires_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DropStaleQuery {
    /// 1-525600 (default 60).
    max_age_minutes: Option<i64>,
    /// Only this workspace's queue.
    workspace_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DroppedCount {
    dropped: u64,
}

/// Drops queued messages older than `max_age_minutes`.
#[utoipa::path(
    post,
    path = "/admin/a2a-queue/drop-stale",
    tag = "a2a",
    params(DropStaleQuery),
    responses(
        (status = 200, body = DroppedCount),
        (status = 400, description = "max_age_minutes out of range, or an invalid query", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
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
    Ok(axum::Json(DroppedCount { dropped }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DelegateBody {
    target_id: String,
    task: String,
    idempotency_key: Option<String>,
}

/// A delegation's `target_id`: a workspace id.
pub fn parse_target(target_id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(target_id.trim())
        .map_err(|_| ApiError::bad_request("target_id must be a valid UUID"))
}

impl DelegateBody {
    /// The target workspace.
    pub fn target(&self) -> ApiResult<Uuid> {
        parse_target(&self.target_id)
    }
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
    let target = parse_target(target_id)?;
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

#[derive(Debug, Serialize, ToSchema)]
struct Delegated {
    delegation_id: Uuid,
    /// `delegated` for a new delegation; the stored status on an idempotent hit.
    status: String,
    target_id: Option<Uuid>,
    /// Present (true) when the idempotency key named an existing delegation.
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent_hit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

/// Delegates a task from the workspace to another; the host carries it out (202).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/delegate",
    tag = "a2a",
    params(WorkspaceIdParam),
    request_body = DelegateBody,
    responses(
        (status = 200, description = "An idempotent hit: the existing delegation", body = Delegated),
        (status = 202, body = Delegated),
        (status = 400, description = "Invalid target, task, self-delegation, or invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace or target", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
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
        } => axum::Json(Delegated {
            delegation_id,
            status,
            target_id,
            idempotent_hit: Some(true),
            warning: None,
        })
        .into_response(),
        Created::New {
            delegation,
            warning,
        } => {
            let answer = Delegated {
                delegation_id: delegation.id,
                status: "delegated".to_owned(),
                target_id: Some(delegation.target),
                idempotent_hit: None,
                warning,
            };
            tasks::spawn(&state.svc, delegation);
            (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
        }
    })
}

/// One delegation the workspace started, newest first.
// The fields are in alphabetical order: the rows used to be `json!` maps, whose keys go out
// sorted, and clients see the same bytes.
#[derive(Debug, Serialize, ToSchema)]
struct DelegationEntry {
    created_at: DateTime<Utc>,
    delegation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The activity row's id.
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_preview: Option<String>,
    source_id: Option<Uuid>,
    status: String,
    summary: Option<String>,
    target_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_preview: Option<String>,
    /// `delegate` or `delegate_result`, ...
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl From<&tasks::Listed> for DelegationEntry {
    fn from(listed: &tasks::Listed) -> Self {
        DelegationEntry {
            created_at: listed.created_at,
            delegation_id: listed.delegation_id,
            error: listed.error.clone(),
            id: listed.id,
            response_preview: listed.response_preview.clone(),
            source_id: listed.source_id,
            status: listed.status.clone(),
            summary: listed.summary.clone(),
            target_id: listed.target_id,
            task_preview: listed.task_preview.clone(),
            kind: listed.kind.clone(),
        }
    }
}

/// The workspace's delegations (at most 50).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/delegations",
    tag = "a2a",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<DelegationEntry>),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list_delegations(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    let listed = tasks::list(&state.svc, source).await?;
    Ok(axum::Json(
        listed.iter().map(DelegationEntry::from).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
struct RecordBody {
    target_id: String,
    task: String,
    delegation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Recorded {
    delegation_id: Uuid,
    /// `recorded`; the stored status on an idempotent hit.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent_hit: Option<bool>,
}

/// Records a delegation the agent carries out itself (it reports the end via `update`).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/delegations/record",
    tag = "a2a",
    params(WorkspaceIdParam),
    request_body = RecordBody,
    responses(
        (status = 200, description = "Already recorded", body = Recorded),
        (status = 202, body = Recorded),
        (status = 400, description = "Invalid ids or task, self-delegation", body = ErrorBody),
        (status = 404, description = "No such workspace or target", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn record(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
    ApiJson(body): ApiJson<RecordBody>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(body.delegation_id.trim())
        .map_err(|_| ApiError::bad_request("delegation_id must be a valid UUID"))?;
    let created = create(&state, source, &body.target_id, body.task, None, Some(id)).await?;
    Ok(match created {
        Created::Existing { status, .. } => axum::Json(Recorded {
            delegation_id: id,
            status,
            idempotent_hit: Some(true),
        })
        .into_response(),
        Created::New { .. } => (
            StatusCode::ACCEPTED,
            axum::Json(Recorded {
                delegation_id: id,
                status: "recorded".to_owned(),
                idempotent_hit: None,
            }),
        )
            .into_response(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
struct UpdateBody {
    /// `completed` or `failed`.
    status: String,
    error: Option<String>,
    response_preview: Option<String>,
}

/// The `{delegation_id}` segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct DelegationIdParam {
    /// The delegation's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    delegation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct DelegationUpdated {
    status: String,
    delegation_id: Uuid,
}

/// The agent reports how a delegation it carried out itself ended.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/delegations/{delegation_id}/update",
    tag = "a2a",
    params(WorkspaceIdParam, DelegationIdParam),
    request_body = UpdateBody,
    responses(
        (status = 200, body = DelegationUpdated),
        (status = 400, description = "status is not completed or failed", body = ErrorBody),
        (status = 404, description = "No such workspace or delegation", body = ErrorBody),
        (status = 409, description = "The delegation already finished", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn update(
    State(state): State<AppState>,
    WorkspaceAuth(source): WorkspaceAuth,
    Path(DelegationIdParam { delegation_id }): Path<DelegationIdParam>,
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
    Ok(axum::Json(DelegationUpdated {
        status: body.status,
        delegation_id: id,
    }))
}
