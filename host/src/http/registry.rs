//! `/registry`: agents register, heartbeat and publish their cards; peers discover each other.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{ApiJson, Caller, CallerHeader, Creds, WorkspacePath, calling_workspace};
use super::openapi::{ErrorBody, StatusBody};
use super::workspaces::WorkspaceGone;
use crate::auth::{AuthError, Principal};
use crate::store::{
    self,
    workspaces::{HeartbeatReport, WorkspaceRow},
};
use crate::workspaces::access::{self, can_communicate};
use crate::workspaces::get_live;
use crate::workspaces::registry::{self, Heartbeat};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(update_card))
        .routes(routes!(discover))
        .routes(routes!(peers))
        .routes(routes!(check_access))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    id: Uuid,
    /// Where the agent serves A2A (http or https); optional for `delivery_mode: poll`.
    url: Option<String>,
    /// The agent's A2A card (a free-form object).
    agent_card: Option<Value>,
    /// `push` (the host sends messages to `url`) or `poll` (the agent fetches them from
    /// `GET /workspaces/{id}/inbox`); absent keeps the mode the workspace has (at first `push`).
    delivery_mode: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Registered {
    status: &'static str,
    /// The delivery mode now in force.
    delivery_mode: String,
}

/// An agent announces where it serves, with its workspace's own token (written to
/// `/configs/.auth_token` for managed agents, returned at creation for others). Registration
/// never mints a token. An agent that cannot be reached registers with `delivery_mode: poll`
/// and no URL, and fetches its messages instead.
#[utoipa::path(
    post,
    path = "/registry/register",
    tag = "registry",
    request_body = RegisterBody,
    responses(
        (status = 200, body = Registered),
        (status = 400, description = "Invalid URL, card or delivery mode, or no URL for push delivery", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn register(
    State(state): State<AppState>,
    Creds(creds): Creds,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    state.svc.guard.agent(&creds, body.id).await?;
    let row = store::workspaces::get(&state.svc.db, body.id).await?;
    let mode = body.delivery_mode()?;
    let polls = mode.map_or_else(
        || row.as_ref().is_some_and(|r| r.polls()),
        |m| m == store::workspaces::POLL,
    );
    let url = match body.url.as_deref().filter(|u| !u.is_empty()) {
        Some(raw) => Some(
            registry::check_url(&state.svc, row.as_ref(), raw)
                .await
                .map_err(ApiError::bad_request)?,
        ),
        None if polls => None,
        None => {
            return Err(ApiError::bad_request(
                "url is required unless delivery_mode is poll",
            ));
        }
    };
    body.check_card()?;
    let delivery_mode =
        registry::register(&state.svc, body.id, url.as_ref(), body.agent_card, mode).await?;
    Ok(axum::Json(Registered {
        status: "registered",
        delivery_mode,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HeartbeatBody {
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

/// An agent reports that it is alive and how it is doing.
#[utoipa::path(
    post,
    path = "/registry/heartbeat",
    tag = "registry",
    request_body = HeartbeatBody,
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "error_rate outside 0-1, or negative counters", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn heartbeat(
    State(state): State<AppState>,
    Creds(creds): Creds,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<impl IntoResponse> {
    state.svc.guard.agent(&creds, body.workspace_id).await?;
    let workspace_id = body.workspace_id;
    let hb = body.check()?;
    registry::heartbeat(&state.svc, workspace_id, &hb).await?;
    Ok(axum::Json(StatusBody { status: "ok" }))
}

impl RegisterBody {
    /// The delivery mode asked for (`None`: keep the workspace's).
    pub fn delivery_mode(&self) -> ApiResult<Option<&'static str>> {
        match self.delivery_mode.as_deref() {
            None => Ok(None),
            Some(store::workspaces::PUSH) => Ok(Some(store::workspaces::PUSH)),
            Some(store::workspaces::POLL) => Ok(Some(store::workspaces::POLL)),
            Some(_) => Err(ApiError::bad_request("delivery_mode must be push or poll")),
        }
    }

    /// The card, when given, must be an object.
    pub fn check_card(&self) -> ApiResult<()> {
        if self.agent_card.as_ref().is_some_and(|c| !c.is_object()) {
            return Err(ApiError::bad_request("agent_card must be an object"));
        }
        Ok(())
    }
}

impl HeartbeatBody {
    /// The heartbeat as the registry applies it: counters checked, texts capped.
    pub fn check(self) -> ApiResult<Heartbeat> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(ApiError::bad_request("error_rate must be between 0 and 1"));
        }
        if self.active_tasks < 0
            || self.uptime_seconds < 0
            || self.active_tasks > i64::from(i32::MAX)
        {
            return Err(ApiError::bad_request("counters must not be negative"));
        }
        let cap = |s: Option<String>| s.map(|s| s.chars().take(4096).collect::<String>());
        Ok(Heartbeat {
            report: HeartbeatReport {
                error_rate: self.error_rate,
                sample_error: cap(self.sample_error),
                active_tasks: self.active_tasks as i32,
                current_task: cap(self.current_task).filter(|t| !t.is_empty()),
                uptime_seconds: self.uptime_seconds,
                monthly_spend: self
                    .monthly_spend
                    .filter(|s| *s > 0)
                    .map(|s| s.min(1_000_000_000_000)),
            },
            wedged: self.runtime_state.as_deref() == Some("wedged"),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct UpdateCardBody {
    workspace_id: Uuid,
    /// The agent's A2A card (a free-form object).
    agent_card: Value,
}

/// An agent publishes a new card.
#[utoipa::path(
    post,
    path = "/registry/update-card",
    tag = "registry",
    request_body = UpdateCardBody,
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "The card is not an object", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn update_card(
    State(state): State<AppState>,
    Creds(creds): Creds,
    ApiJson(body): ApiJson<UpdateCardBody>,
) -> ApiResult<impl IntoResponse> {
    state.svc.guard.agent(&creds, body.workspace_id).await?;
    if !body.agent_card.is_object() {
        return Err(ApiError::bad_request("agent_card must be an object"));
    }
    registry::update_card(&state.svc, body.workspace_id, body.agent_card).await?;
    Ok(axum::Json(StatusBody { status: "updated" }))
}

/// A workspace as its peers see it.
#[derive(Debug, Serialize, ToSchema)]
struct Peer {
    id: Uuid,
    name: String,
    role: Option<String>,
    tier: i32,
    status: String,
    /// Where to reach the agent (the host's proxy or its own URL).
    url: Option<String>,
    parent_id: Option<Uuid>,
    agent_card: Option<Value>,
}

fn peer(svc: &crate::services::Services, row: &WorkspaceRow) -> Peer {
    Peer {
        id: row.id,
        name: row.name.clone(),
        role: row.role.clone(),
        tier: row.tier,
        status: row.status.to_string(),
        url: registry::peer_url(svc, row),
        parent_id: row.parent_id,
        agent_card: row.agent_card.clone(),
    }
}

/// Forwarding hops discovery follows before giving up.
const MAX_FORWARD_HOPS: usize = 5;

/// Another workspace, for an agent that may talk to it (following forwards). The caller is
/// `X-Workspace-ID` with its own token, or the workspace whose token is the bearer.
#[utoipa::path(
    get,
    path = "/registry/discover/{id}",
    tag = "registry",
    params(WorkspaceIdParam, CallerHeader),
    responses(
        (status = 200, body = Peer),
        (status = 400, description = "No calling workspace, or an invalid id or X-Workspace-ID", body = ErrorBody),
        (status = 403, description = "The workspaces may not communicate, a removed caller, or a reserved caller id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn discover(
    State(state): State<AppState>,
    WorkspacePath(target): WorkspacePath,
    CallerHeader { caller }: CallerHeader,
    Creds(creds): Creds,
) -> ApiResult<impl IntoResponse> {
    if matches!(caller, Caller::Canvas) && creds.bearer.is_none() {
        return Err(ApiError::Status(
            axum::http::StatusCode::UNAUTHORIZED,
            "missing workspace auth token",
        ));
    }
    let Some(caller) = calling_workspace(&state, &caller, &creds).await? else {
        return Err(ApiError::bad_request("X-Workspace-ID header is required"));
    };
    if !can_communicate(&state.svc, caller, target).await? {
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
    Ok(axum::Json(peer(&state.svc, &row)))
}

/// The workspaces `id` may talk to: its parent, its children and its siblings. For an agent
/// (`X-Workspace-ID` with its own token, or its token as the bearer) that may talk to `id`, or
/// the canvas (the operator's token).
#[utoipa::path(
    get,
    path = "/registry/{id}/peers",
    tag = "registry",
    params(WorkspaceIdParam, CallerHeader),
    responses(
        (status = 200, body = Vec<Peer>),
        (status = 400, description = "Invalid id or X-Workspace-ID", body = ErrorBody),
        (status = 403, description = "The workspaces may not communicate, a removed caller, or a reserved caller id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = []), ("admin_token" = [])),
)]
async fn peers(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    CallerHeader { caller }: CallerHeader,
    Creds(creds): Creds,
) -> ApiResult<impl IntoResponse> {
    match calling_workspace(&state, &caller, &creds).await? {
        Some(caller) => {
            if !can_communicate(&state.svc, caller, id).await? {
                return Err(ApiError::forbidden("workspaces may not communicate"));
            }
        }
        None => state.svc.guard.canvas(&creds).await?,
    }
    let peers = access::peers(&state.svc, id).await?;
    Ok(axum::Json(
        peers
            .iter()
            .map(|row| peer(&state.svc, row))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
struct CheckAccessBody {
    caller_id: Uuid,
    target_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
struct Access {
    allowed: bool,
}

/// Whether two workspaces may communicate (parent, child or sibling): for the operator, or for
/// a workspace asking about itself as the caller (open in development, on loopback).
#[utoipa::path(
    post,
    path = "/registry/check-access",
    tag = "registry",
    request_body = CheckAccessBody,
    responses(
        (status = 200, body = Access),
        (status = 401, description = "A workspace token asked about another caller than its own workspace", body = ErrorBody),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn check_access(
    State(state): State<AppState>,
    Creds(creds): Creds,
    ApiJson(body): ApiJson<CheckAccessBody>,
) -> ApiResult<impl IntoResponse> {
    if !state.svc.guard.development(&creds) {
        match state.svc.guard.any(&creds).await? {
            Principal::Admin => {}
            Principal::Workspace(me) if me == body.caller_id => {}
            // Like every agent route: a token of another workspace than the one the request
            // names is the wrong credential.
            Principal::Workspace(_) => return Err(AuthError::InvalidWorkspace.into()),
        }
    }
    let allowed = can_communicate(&state.svc, body.caller_id, body.target_id).await?;
    Ok(axum::Json(Access { allowed }))
}
