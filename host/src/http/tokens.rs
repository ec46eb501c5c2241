//! Workspace tokens, org API tokens and the test-token route.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{
    AdminAuth, ApiJson, ApiQuery, Creds, WorkspaceAccess, WorkspaceAuth, WorkspacePath,
};
use super::openapi::{ErrorBody, StatusBody};
use super::workspaces::WorkspaceGone;
use crate::audit;
use crate::auth::Principal;
use crate::events::Invalidation;
use crate::workspaces::get_live;
use crate::{auth, store};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(list_org, create_org))
        .routes(routes!(revoke_org))
        .routes(routes!(test_token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// 1-200 (default 50).
    limit: Option<i64>,
    /// Not negative (default 0).
    offset: Option<i64>,
}

/// The `{token_id}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenIdParam {
    /// The token's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    token_id: String,
}

impl TokenIdParam {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.token_id).map_err(|_| ApiError::not_found("token not found"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceToken {
    id: Uuid,
    /// The first 8 characters, to recognise it.
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    /// When it stops working; `null` for the agent's own token, which the host rotates at every
    /// (re)provision instead.
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceTokens {
    count: usize,
    tokens: Vec<WorkspaceToken>,
}

/// The workspace's live tokens (never their values).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/tokens",
    tag = "tokens",
    params(WorkspaceIdParam, Page),
    responses(
        (status = 200, body = WorkspaceTokens),
        (status = 400, description = "Invalid page or workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
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
    // `last_used_at` is a deferred write: what was stamped before this read is stored first.
    state.svc.writes.flush().await;
    let rows = store::tokens::list_workspace_tokens(&state.svc.db, id, limit, offset).await?;
    let tokens: Vec<WorkspaceToken> = rows
        .into_iter()
        .map(|t| WorkspaceToken {
            id: t.id,
            prefix: t.prefix,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        })
        .collect();
    Ok(axum::Json(WorkspaceTokens {
        count: tokens.len(),
        tokens,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct TokenMinted {
    /// The token; shown once.
    auth_token: String,
    workspace_id: Uuid,
    /// When it stops working (`workspace_token_ttl_secs` after minting).
    expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

/// The 429 answer when a workspace already holds the maximum of minted tokens.
fn too_many_tokens() -> ApiError {
    ApiError::Status(
        StatusCode::TOO_MANY_REQUESTS,
        "this workspace holds the maximum of 5 live minted tokens; revoke one first",
    )
}

/// Mints a token for the workspace and answers it (shown once).
async fn mint_for(
    state: &AppState,
    (id, principal): (Uuid, Principal),
    message: Option<&'static str>,
) -> ApiResult<TokenMinted> {
    get_live(&state.svc, id).await?;
    let lifetime = auth::Lifetime::Expires(state.svc.config.workspace_token_ttl());
    let Some(token) = auth::issue_workspace_token(&state.svc.db, id, lifetime).await? else {
        return Err(too_many_tokens());
    };
    let entry = audit::Entry::new("token.minted", principal)
        .workspace(id)
        .target(token.prefix.clone())
        .detail(json!({ "expires_at": token.expires_at }));
    audit::record(&state.svc, entry).await;
    Ok(TokenMinted {
        auth_token: token.plaintext.expose_secret().to_owned(),
        workspace_id: id,
        expires_at: token.expires_at,
        message,
    })
}

/// Mints another token for the workspace: for tools, or for an external agent's credential
/// (the operator re-mints it here). At most 5 minted tokens live at once, each expiring after
/// `workspace_token_ttl_secs`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/tokens",
    tag = "tokens",
    params(WorkspaceIdParam),
    responses(
        (status = 201, body = TokenMinted),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 429, description = "The workspace holds the maximum of live minted tokens", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn create(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
) -> ApiResult<impl IntoResponse> {
    let minted = mint_for(
        &state,
        (id, principal),
        Some("store this token now; it cannot be shown again"),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(minted)))
}

/// Revokes one of the workspace's tokens.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/tokens/{token_id}",
    tag = "tokens",
    params(WorkspaceIdParam, TokenIdParam),
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn revoke(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
    Path(segment): Path<TokenIdParam>,
) -> ApiResult<impl IntoResponse> {
    let token_id = segment.id()?;
    if !store::tokens::revoke_workspace_token(&state.svc.db, id, token_id).await? {
        return Err(ApiError::not_found("token not found"));
    }
    // It stops working on every replica within the relay's delivery time.
    state.svc.events.invalidate(Invalidation::Token(token_id));
    let entry = audit::Entry::new("token.revoked", principal)
        .workspace(id)
        .target(token_id.to_string());
    audit::record(&state.svc, entry).await;
    Ok(axum::Json(StatusBody { status: "revoked" }))
}

#[derive(Debug, Serialize, ToSchema)]
struct OrgToken {
    id: Uuid,
    prefix: String,
    name: Option<String>,
    org_id: Option<Uuid>,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OrgTokens {
    count: usize,
    tokens: Vec<OrgToken>,
}

/// The live org API tokens (never their values).
#[utoipa::path(
    get,
    path = "/org/tokens",
    tag = "tokens",
    responses((status = 200, body = OrgTokens)),
    security(("admin_token" = [])),
)]
async fn list_org(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    // `last_used_at` is a deferred write: what was stamped before this read is stored first.
    state.svc.writes.flush().await;
    let rows = store::tokens::list_org_tokens(&state.svc.db).await?;
    let tokens: Vec<OrgToken> = rows
        .into_iter()
        .map(|t| OrgToken {
            id: t.id,
            prefix: t.prefix,
            name: t.name,
            org_id: t.org_id,
            created_by: t.created_by,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
        })
        .collect();
    Ok(axum::Json(OrgTokens {
        count: tokens.len(),
        tokens,
    }))
}

#[derive(Debug, Deserialize, Default, ToSchema)]
struct OrgTokenBody {
    /// At most 100 characters, no control characters.
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OrgTokenMinted {
    id: Uuid,
    prefix: String,
    name: Option<String>,
    /// The token; shown once.
    auth_token: String,
    warning: &'static str,
}

/// Minting org tokens is limited per client address, on top of the global limit.
pub const ORG_MINTS_PER_HOUR: u32 = 10;

/// Mints an org API token (admin rights; at most 10 per hour per client address).
#[utoipa::path(
    post,
    path = "/org/tokens",
    tag = "tokens",
    request_body = OrgTokenBody,
    responses(
        (status = 201, body = OrgTokenMinted),
        (status = 400, description = "Invalid name", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn create_org(
    State(state): State<AppState>,
    _: AdminAuth,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
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
    let client = super::ratelimit::client_address(&state, &headers, peer.ip()).to_string();
    if let Err(retry_after_secs) = state.org_mints.check(&client) {
        return Err(ApiError::RateLimited { retry_after_secs });
    }
    let (id, token) = auth::issue_org_token(&state.svc.db, name.as_deref(), Some("admin")).await?;
    let entry = audit::Entry::new("org_token.minted", Principal::Admin)
        .target(id.to_string())
        .detail(json!({ "prefix": token.prefix, "name": name }));
    audit::record(&state.svc, entry).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(OrgTokenMinted {
            id,
            auth_token: token.plaintext.expose_secret().to_owned(),
            prefix: token.prefix,
            name,
            warning: "store this token now; it cannot be shown again",
        }),
    ))
}

/// Revokes an org API token.
#[utoipa::path(
    delete,
    path = "/org/tokens/{token_id}",
    tag = "tokens",
    params(TokenIdParam),
    responses(
        (status = 200, body = StatusBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn revoke_org(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(segment): Path<TokenIdParam>,
) -> ApiResult<impl IntoResponse> {
    let token_id = segment.id()?;
    if !store::tokens::revoke_org_token(&state.svc.db, token_id).await? {
        return Err(ApiError::not_found("token not found"));
    }
    // It stops working on every replica within the relay's delivery time.
    state.svc.events.invalidate(Invalidation::Token(token_id));
    let entry =
        audit::Entry::new("org_token.revoked", Principal::Admin).target(token_id.to_string());
    audit::record(&state.svc, entry).await;
    Ok(axum::Json(StatusBody { status: "revoked" }))
}

/// Mints a token for tests and local tooling, as the original's own CI flows do. It exists only
/// in development or when `enable_test_tokens` is set (404 otherwise: forgetting `MOLECULE_ENV`
/// never opens it), and always demands the operator's credentials (in development on loopback
/// without an admin token, the operator is anyone there).
#[utoipa::path(
    get,
    path = "/admin/workspaces/{id}/test-token",
    tag = "tokens",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = TokenMinted),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace, or the route is disabled (outside development without enable_test_tokens)", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 429, description = "The workspace holds the maximum of live minted tokens", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn test_token(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    Creds(creds): Creds,
) -> ApiResult<impl IntoResponse> {
    if !state.svc.config.test_tokens_enabled() {
        return Err(ApiError::not_found("not found"));
    }
    state.svc.guard.admin(&creds).await?;
    Ok(axum::Json(
        mint_for(&state, (id, Principal::Admin), None).await?,
    ))
}
