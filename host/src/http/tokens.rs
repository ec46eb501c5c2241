//! Workspace tokens, org API tokens and the test-token route.

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceAuth, WorkspacePath};
use crate::workspaces::get_live;
use crate::{auth, store};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/tokens", get(list).post(create))
        .route("/workspaces/{id}/tokens/{token_id}", delete(revoke))
        .route("/org/tokens", get(list_org).post(create_org))
        .route("/org/tokens/{token_id}", delete(revoke_org))
        .route("/admin/workspaces/{id}/test-token", get(test_token))
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let limit = page.limit.unwrap_or(50);
    let offset = page.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request(
            "limit must be 1-200 and offset not negative",
        ));
    }
    get_live(&state.svc, id).await?;
    let rows = store::tokens::list_workspace_tokens(&state.svc.db, id, limit, offset).await?;
    let tokens: Vec<Value> = rows
        .iter()
        .map(|t| json!({ "id": t.id, "prefix": t.prefix, "created_at": t.created_at, "last_used_at": t.last_used_at }))
        .collect();
    Ok(axum::Json(
        json!({ "count": tokens.len(), "tokens": tokens }),
    ))
}

async fn create(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let Some(token) = auth::issue_workspace_token(&state.svc.db, id).await? else {
        return Err(ApiError::Status(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live tokens for this workspace; revoke some first",
        ));
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "auth_token": token.plaintext.expose_secret(),
            "workspace_id": id,
            "message": "store this token now; it cannot be shown again",
        })),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path((_, token_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let token_id =
        Uuid::parse_str(&token_id).map_err(|_| ApiError::not_found("token not found"))?;
    if !store::tokens::revoke_workspace_token(&state.svc.db, id, token_id).await? {
        return Err(ApiError::not_found("token not found"));
    }
    Ok(axum::Json(json!({ "status": "revoked" })))
}

async fn list_org(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = store::tokens::list_org_tokens(&state.svc.db).await?;
    let tokens: Vec<Value> = rows
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "prefix": t.prefix, "name": t.name, "org_id": t.org_id,
                "created_by": t.created_by, "created_at": t.created_at, "last_used_at": t.last_used_at,
            })
        })
        .collect();
    Ok(axum::Json(
        json!({ "count": tokens.len(), "tokens": tokens }),
    ))
}

#[derive(Debug, Deserialize, Default)]
struct OrgTokenBody {
    name: Option<String>,
}

/// Minting org tokens is limited per client address, on top of the global limit.
pub const ORG_MINTS_PER_HOUR: u32 = 10;

async fn create_org(
    State(state): State<AppState>,
    _: AdminAuth,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ApiJson(body): ApiJson<OrgTokenBody>,
) -> ApiResult<impl IntoResponse> {
    let name = body
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if name
        .as_deref()
        .is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("invalid token name"));
    }
    let client = peer.ip().to_string();
    if let Err(retry_after_secs) = state.org_mints.check(&client) {
        return Err(ApiError::RateLimited { retry_after_secs });
    }
    let (id, token) = auth::issue_org_token(&state.svc.db, name.as_deref(), Some("admin")).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id,
            "prefix": token.prefix,
            "name": name,
            "auth_token": token.plaintext.expose_secret(),
            "warning": "store this token now; it cannot be shown again",
        })),
    ))
}

async fn revoke_org(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(token_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let token_id =
        Uuid::parse_str(&token_id).map_err(|_| ApiError::not_found("token not found"))?;
    if !store::tokens::revoke_org_token(&state.svc.db, token_id).await? {
        return Err(ApiError::not_found("token not found"));
    }
    Ok(axum::Json(json!({ "status": "revoked" })))
}

/// Mints a token for tests and local tooling. Hidden (404) in production unless explicitly
/// enabled; demands the admin token when one is configured.
async fn test_token(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    if !state.svc.config.test_tokens_enabled() {
        return Err(ApiError::not_found("not found"));
    }
    state.svc.guard.admin_token_required(&headers)?;
    get_live(&state.svc, id).await?;
    let Some(token) = auth::issue_workspace_token(&state.svc.db, id).await? else {
        return Err(ApiError::Status(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live tokens for this workspace; revoke some first",
        ));
    };
    Ok(axum::Json(
        json!({ "auth_token": token.plaintext.expose_secret(), "workspace_id": id }),
    ))
}
