//! The audit ledger (see [`crate::audit`]): a workspace's rows, paged newest first, and the
//! operator's check of the whole chain.

use axum::extract::State;
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
use super::extract::{AdminAuth, ApiQuery, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::audit::{self, KeyOrigin, Verdict};
use crate::store::audit::AuditRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(verify))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// 1 to 200, default 50.
    limit: Option<i64>,
    /// Only rows of this type (`secret.set`, `token.minted`, …).
    event_type: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One row of the ledger.
#[derive(Debug, Serialize, ToSchema)]
struct AuditEvent {
    id: Uuid,
    /// Its place in the chain (from 1, without gaps).
    seq: i64,
    event_type: String,
    /// `admin` (the admin token or an org token) or `workspace:<id>`.
    actor: String,
    workspace_id: Option<Uuid>,
    /// What the action was done to: a token id, a secret's key, a plugin's name.
    target: Option<String>,
    #[schema(value_type = Object)]
    detail: Value,
    created_at: DateTime<Utc>,
    prev_hmac: String,
    hmac: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        AuditEvent {
            id: row.id,
            seq: row.seq,
            event_type: row.event_type,
            actor: row.actor,
            workspace_id: row.workspace_id,
            target: row.target,
            detail: serde_json::from_str(&row.detail).unwrap_or(Value::Null),
            created_at: row.created_at,
            prev_hmac: row.prev_hmac,
            hmac: row.hmac,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct AuditPage {
    events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    next_cursor: Option<String>,
}

/// The workspace's rows of the audit ledger, newest first (kept after the workspace is removed).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/audit",
    tag = "audit",
    params(WorkspaceIdParam, AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "A limit out of range or a cursor this route did not give", body = ErrorBody),
        (status = 410, description = "Never: a removed workspace's ledger stays readable", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| ApiError::bad_request("invalid cursor"))?,
        ),
    };
    let event_type = query.event_type.as_deref().filter(|t| !t.is_empty());
    let rows = crate::store::audit::list(&state.svc.db, id, event_type, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let events: Vec<AuditEvent> = rows
        .into_iter()
        .take(limit as usize)
        .map(AuditEvent::from)
        .collect();
    let next_cursor = more
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(axum::Json(AuditPage {
        events,
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Verification {
    /// Whether every link holds.
    ok: bool,
    /// Rows whose links were checked and hold.
    rows_checked: u64,
    /// The first broken link, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<BrokenLink>,
    /// `derived` (from `SECRETS_ENCRYPTION_KEY`) or `development` (no key is configured: the
    /// chain detects accidents, not someone who can read the host's source).
    key: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
struct BrokenLink {
    seq: i64,
    /// The row's id (`null` when the row is missing).
    id: Option<Uuid>,
    reason: &'static str,
}

/// Walks the whole audit ledger and reports the first broken link: an edited row, a row that
/// does not follow the one before, or a missing row.
#[utoipa::path(
    get,
    path = "/admin/audit/verify",
    tag = "audit",
    responses((status = 200, body = Verification)),
    security(("admin_token" = [])),
)]
async fn verify(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let verdict = audit::verify(&state.svc.db, &state.svc.audit).await?;
    let key = match state.svc.audit.origin {
        KeyOrigin::Derived => "derived",
        KeyOrigin::Development => "development",
    };
    Ok(axum::Json(match verdict {
        Verdict::Intact { rows } => Verification {
            ok: true,
            rows_checked: rows,
            broken: None,
            key,
        },
        Verdict::Broken {
            rows_checked,
            seq,
            id,
            reason,
        } => Verification {
            ok: false,
            rows_checked,
            broken: Some(BrokenLink { seq, id, reason }),
            key,
        },
    }))
}
