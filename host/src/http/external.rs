//! External agents' connection: what an agent the host does not start needs to reach it, and a
//! new credential for it with every old one revoked at once.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{WorkspaceAccess, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::workspaces::{Connection, WorkspaceGone};
use crate::events::Invalidation;
use crate::workspaces::{agent_connects_itself, get_live};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connection))
        .routes(routes!(rotate))
}

/// How an agent connects, and a ready-made registration call.
#[derive(Debug, Serialize, ToSchema)]
struct ConnectionBody {
    #[serde(flatten)]
    connection: Connection,
    /// How the agent authenticates every call: `Authorization: Bearer <auth_token>`.
    auth_scheme: &'static str,
    /// A `curl` registration with `<AUTH_TOKEN>` and `<AGENT_URL>` left for the agent to fill.
    curl_register_template: String,
    /// Present after a rotation: how many earlier credentials stopped working.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<u64>,
}

impl ConnectionBody {
    fn of(connection: Connection, revoked: Option<u64>) -> ConnectionBody {
        let curl_register_template = format!(
            "curl -sS -X POST {} -H 'Authorization: Bearer <AUTH_TOKEN>' \
             -H 'Content-Type: application/json' \
             -d '{{\"id\": \"{}\", \"url\": \"<AGENT_URL>\", \"agent_card\": {{\"name\": \"my-agent\", \"skills\": []}}}}'",
            connection.registry_endpoint, connection.workspace_id
        );
        ConnectionBody {
            connection,
            auth_scheme: "bearer",
            curl_register_template,
            revoked,
        }
    }
}

/// Refuses a workspace whose agent the host starts and hands its credential itself.
fn external_only(state: &AppState, row: &crate::store::workspaces::WorkspaceRow) -> ApiResult<()> {
    if agent_connects_itself(&state.svc, row) {
        Ok(())
    } else {
        Err(ApiError::Status(
            axum::http::StatusCode::CONFLICT,
            "the host starts this workspace's agent and gives it its credential; a restart issues a new one",
        ))
    }
}

/// What an external agent needs to connect: the host's URL, the registration and heartbeat
/// endpoints and a registration template. The credential itself is shown only when it is
/// issued (at creation, or by `POST …/external/rotate`).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/external/connection",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = ConnectionBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The host starts this workspace's agent itself", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn connection(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let row = get_live(&state.svc, id).await?;
    external_only(&state, &row)?;
    let connection = Connection::new(&state, &headers, id, None);
    Ok(axum::Json(ConnectionBody::of(connection, None)))
}

/// Issues the external agent a new credential (shown once, here) and revokes every other token
/// of the workspace at once, on every replica. The operator only: a workspace token is refused
/// with 403, so a leaked one cannot lock the real agent out.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/external/rotate",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = ConnectionBody),
        (status = 403, description = "A workspace token: only the operator rotates", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The host starts this workspace's agent itself", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn rotate(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    if !access.principal.is_admin() {
        return Err(ApiError::forbidden(
            "only the operator rotates a workspace's credential",
        ));
    }
    let id = access.id;
    let row = get_live(&state.svc, id).await?;
    external_only(&state, &row)?;
    let (token, revoked) = crate::auth::rotate_workspace_credential(&state.svc.db, id).await?;
    // Every replica's token cache forgets the workspace's tokens now.
    state.svc.events.invalidate(Invalidation::Workspace(id));
    tracing::info!(workspace_id = %id, revoked, "external agent credential rotated");
    let connection = Connection::new(&state, &headers, id, Some(&token.plaintext));
    Ok(axum::Json(ConnectionBody::of(connection, Some(revoked))))
}
