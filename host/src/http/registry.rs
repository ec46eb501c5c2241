//! `/registry`: agents register, heartbeat and publish their cards; peers discover each other.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Caller, WorkspacePath};
use crate::auth;
use crate::store::workspaces::{HeartbeatReport, WorkspaceRow};
use crate::workspaces::access::{self, can_communicate};
use crate::workspaces::get_live;
use crate::workspaces::registry::{self, AgentUrl, Heartbeat};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/registry/register", post(register))
        .route("/registry/heartbeat", post(heartbeat))
        .route("/registry/update-card", post(update_card))
        .route("/registry/discover/{id}", get(discover))
        .route("/registry/{id}/peers", get(peers))
        .route("/registry/check-access", post(check_access))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    id: Uuid,
    url: String,
    agent_card: Option<Value>,
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    state
        .svc
        .guard
        .workspace_self(auth::bearer(&headers), body.id)
        .await?;
    let url = AgentUrl::parse(&body.url, &state.svc.config).map_err(ApiError::bad_request)?;
    if body.agent_card.as_ref().is_some_and(|c| !c.is_object()) {
        return Err(ApiError::bad_request("agent_card must be an object"));
    }
    let registered = registry::register(&state.svc, body.id, &url, body.agent_card).await?;
    let mut response = json!({ "status": "registered" });
    if let Some(token) = registered.auth_token {
        response["auth_token"] = json!(token.expose_secret());
    }
    Ok(axum::Json(response))
}

#[derive(Debug, Deserialize)]
struct HeartbeatBody {
    workspace_id: Uuid,
    #[serde(default)]
    error_rate: f64,
    sample_error: Option<String>,
    #[serde(default)]
    active_tasks: i64,
    current_task: Option<String>,
    #[serde(default)]
    uptime_seconds: i64,
    monthly_spend: Option<i64>,
    runtime_state: Option<String>,
}

async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<impl IntoResponse> {
    state
        .svc
        .guard
        .workspace_self(auth::bearer(&headers), body.workspace_id)
        .await?;
    if !(0.0..=1.0).contains(&body.error_rate) {
        return Err(ApiError::bad_request("error_rate must be between 0 and 1"));
    }
    if body.active_tasks < 0 || body.uptime_seconds < 0 || body.active_tasks > i64::from(i32::MAX) {
        return Err(ApiError::bad_request("counters must not be negative"));
    }
    let cap = |s: Option<String>| s.map(|s| s.chars().take(4096).collect::<String>());
    let hb = Heartbeat {
        report: HeartbeatReport {
            error_rate: body.error_rate,
            sample_error: cap(body.sample_error),
            active_tasks: body.active_tasks as i32,
            current_task: cap(body.current_task).filter(|t| !t.is_empty()),
            uptime_seconds: body.uptime_seconds,
            monthly_spend: body
                .monthly_spend
                .filter(|s| *s > 0)
                .map(|s| s.min(1_000_000_000_000)),
        },
        wedged: body.runtime_state.as_deref() == Some("wedged"),
    };
    registry::heartbeat(&state.svc, body.workspace_id, &hb).await?;
    Ok(axum::Json(json!({ "status": "ok" })))
}

#[derive(Debug, Deserialize)]
struct UpdateCardBody {
    workspace_id: Uuid,
    agent_card: Value,
}

async fn update_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateCardBody>,
) -> ApiResult<impl IntoResponse> {
    state
        .svc
        .guard
        .workspace_self(auth::bearer(&headers), body.workspace_id)
        .await?;
    if !body.agent_card.is_object() {
        return Err(ApiError::bad_request("agent_card must be an object"));
    }
    registry::update_card(&state.svc, body.workspace_id, body.agent_card).await?;
    Ok(axum::Json(json!({ "status": "updated" })))
}

fn peer_json(svc: &crate::Services, row: &WorkspaceRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "tier": row.tier,
        "status": row.status,
        "url": registry::peer_url(svc, row),
        "parent_id": row.parent_id,
        "agent_card": row.agent_card,
    })
}

/// Forwarding hops discovery follows before giving up.
const MAX_FORWARD_HOPS: usize = 5;

async fn discover(
    State(state): State<AppState>,
    WorkspacePath(target): WorkspacePath,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let Caller::Workspace(caller) = caller else {
        return Err(ApiError::bad_request("X-Workspace-ID header is required"));
    };
    state
        .svc
        .guard
        .workspace_self(auth::bearer(&headers), caller)
        .await?;
    if !can_communicate(&state.svc.db, caller, target).await? {
        return Err(ApiError::forbidden("workspaces may not communicate"));
    }
    let mut row = get_live(&state.svc, target)
        .await
        .map_err(|_| ApiError::not_found("workspace not found"))?;
    for _ in 0..MAX_FORWARD_HOPS {
        let Some(next) = row.forwarded_to else { break };
        match get_live(&state.svc, next).await {
            Ok(forwarded) => row = forwarded,
            Err(_) => break,
        }
    }
    Ok(axum::Json(peer_json(&state.svc, &row)))
}

/// The workspaces `id` may talk to: its parent, its children and its siblings.
async fn peers(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    match caller {
        Caller::Workspace(caller) => {
            state
                .svc
                .guard
                .workspace_self(auth::bearer(&headers), caller)
                .await?;
            if !can_communicate(&state.svc.db, caller, id).await? {
                return Err(ApiError::forbidden("workspaces may not communicate"));
            }
        }
        Caller::Canvas => state.svc.guard.canvas_or_bearer(&headers).await?,
    }
    let peers = access::peers(&state.svc, id).await?;
    Ok(axum::Json(Value::Array(
        peers.iter().map(|row| peer_json(&state.svc, row)).collect(),
    )))
}

#[derive(Debug, Deserialize)]
struct CheckAccessBody {
    caller_id: Uuid,
    target_id: Uuid,
}

async fn check_access(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CheckAccessBody>,
) -> ApiResult<impl IntoResponse> {
    let allowed = can_communicate(&state.svc.db, body.caller_id, body.target_id).await?;
    Ok(axum::Json(json!({ "allowed": allowed })))
}
