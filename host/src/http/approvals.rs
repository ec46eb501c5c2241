//! Approvals: an agent (or the operator) requests one, the operator lists what is pending across
//! the host and decides. A workspace token may request and read its own workspace's approvals
//! but never decide one (403): an agent must not approve its own request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
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
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceAccess, WorkspaceIdParam};
use super::fields::{FieldErrorBody, field_error, object, owned_text, required};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::approvals::{self, ApprovalError, NewApproval, Requester, Verdict};
use crate::store;
use crate::store::approvals::ApprovalRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(pending))
        .routes(routes!(decide))
}

/// The `{approval_id}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ApprovalIdParam {
    /// The approval's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    approval_id: String,
}

/// The 409 of a decision on a decided request.
#[derive(Debug, Serialize, ToSchema)]
struct AlreadyDecided {
    error: &'static str,
    /// The decision that stands.
    status: String,
}

impl From<ApprovalError> for ApiError {
    fn from(err: ApprovalError) -> Self {
        match err {
            ApprovalError::Field { field, message } => field_error(field, message),
            ApprovalError::NotFound => ApiError::not_found("approval not found"),
            ApprovalError::AlreadyDecided { status } => ApiError::body(
                StatusCode::CONFLICT,
                AlreadyDecided {
                    error: "approval already decided",
                    status,
                },
            ),
            ApprovalError::Workspace(err) => err.into(),
            ApprovalError::Store(err) => err.into(),
        }
    }
}

/// An approval request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
struct Approval {
    id: Uuid,
    workspace_id: Uuid,
    task_id: Option<String>,
    action: String,
    reason: String,
    /// Whatever JSON the requester attached.
    context: Option<Value>,
    /// `pending`, `approved`, `denied` or `escalated`.
    status: String,
    /// `agent` or `operator`.
    requested_by: String,
    decided_by: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    /// The operator's note with the decision.
    note: Option<String>,
    created_at: DateTime<Utc>,
}

impl Approval {
    fn of(row: ApprovalRow) -> Approval {
        Approval {
            id: row.id,
            workspace_id: row.workspace_id,
            task_id: row.task_id,
            action: row.action,
            reason: row.reason,
            context: row.context,
            status: row.status,
            requested_by: row.requested_by,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            note: row.decision_note,
            created_at: row.created_at,
        }
    }
}

/// A pending request with its workspace's name (the canvas's banner).
#[derive(Debug, Serialize, ToSchema)]
struct PendingApproval {
    #[serde(flatten)]
    approval: Approval,
    workspace_name: String,
}

/// `?status=` of the workspace list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only requests of this status: `pending`, `approved`, `denied` or `escalated`.
    status: Option<String>,
}

/// The workspace's approval requests, newest first (at most 500).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/approvals",
    tag = "approvals",
    params(WorkspaceIdParam, ListQuery),
    responses(
        (status = 200, body = Vec<Approval>),
        (status = 400, description = "Unknown `status`; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    let rows = approvals::list(&state.svc, access.id, status).await?;
    Ok(axum::Json(
        rows.into_iter().map(Approval::of).collect::<Vec<_>>(),
    ))
}

/// The body of `POST /workspaces/{id}/approvals`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct CreateApproval {
    /// What the agent wants to do (1 to 200 characters).
    action: String,
    /// Why (at most 4000 characters).
    reason: Option<String>,
    /// Any JSON the decider should see (at most 16 KiB).
    context: Option<Value>,
    /// The task the request belongs to (at most 200 characters).
    task_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Created {
    id: Uuid,
    /// `pending`.
    status: String,
}

/// Requests an approval for the workspace (its own agent, or the operator for it): a pending
/// request and `APPROVAL_REQUESTED`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/approvals",
    tag = "approvals",
    params(WorkspaceIdParam),
    request_body = CreateApproval,
    responses(
        (status = 201, body = Created),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn create(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let body = object(body)?;
    let new = NewApproval {
        action: required(&body, "action")?.to_owned(),
        reason: owned_text(&body, "reason")?.unwrap_or_default(),
        task_id: owned_text(&body, "task_id")?,
        context: body.get("context").cloned(),
    };
    let by = if access.principal.is_admin() {
        Requester::Operator
    } else {
        Requester::Agent
    };
    let row = approvals::request(&state.svc, access.id, new, by).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Created {
            id: row.id,
            status: row.status,
        }),
    ))
}

/// Every pending request of a live workspace across the host, oldest first (at most 500), with
/// the workspace's name. The canvas's approval banner polls this.
#[utoipa::path(
    get,
    path = "/approvals/pending",
    tag = "approvals",
    responses((status = 200, body = Vec<PendingApproval>)),
    security(("admin_token" = [])),
)]
async fn pending(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = store::approvals::pending(&state.svc.db, approvals::LIST_LIMIT).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|row| PendingApproval {
                approval: Approval::of(row.approval),
                workspace_name: row.workspace_name,
            })
            .collect::<Vec<_>>(),
    ))
}

/// The body of `.../decide`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct DecideBody {
    /// `approved` or `denied`.
    decision: String,
    /// Told to the agent with the decision (at most 2000 characters).
    note: Option<String>,
}

/// Decides a pending request (the operator only: a workspace token is refused with 403). The
/// agent is told with an A2A message from `system:approvals`; a failed delivery does not undo
/// the decision.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/approvals/{approval_id}/decide",
    tag = "approvals",
    params(WorkspaceIdParam, ApprovalIdParam),
    request_body = DecideBody,
    responses(
        (status = 200, body = Approval),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 403, description = "A workspace token: only the operator decides", body = ErrorBody),
        (status = 404, description = "No such approval, or its workspace was removed", body = ErrorBody),
        (status = 409, description = "Already decided; `status` is the decision that stands", body = AlreadyDecided),
    ),
    security(("admin_token" = [])),
)]
async fn decide(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(segment): Path<ApprovalIdParam>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    if !access.principal.is_admin() {
        return Err(ApiError::forbidden(
            "only the operator decides approvals; a workspace cannot decide its own",
        ));
    }
    let approval_id = Uuid::parse_str(&segment.approval_id)
        .map_err(|_| ApiError::not_found("approval not found"))?;
    let body = object(body)?;
    let decision = required(&body, "decision")?;
    let verdict = Verdict::parse(decision)
        .ok_or_else(|| field_error("decision", "decision must be approved or denied"))?;
    let note = owned_text(&body, "note")?;
    let row = approvals::decide(
        &state.svc,
        access.id,
        approval_id,
        verdict,
        note,
        "operator",
    )
    .await?;
    let entry = crate::audit::Entry::new("approval.decided", access.principal)
        .workspace(access.id)
        .target(approval_id.to_string())
        .detail(serde_json::json!({ "decision": decision, "action": row.action }));
    crate::audit::record(&state.svc, entry).await;
    Ok(axum::Json(Approval::of(row)))
}
