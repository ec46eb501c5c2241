//! Workspace secrets, the decrypted bundle, the model choice, and global secrets (with the
//! `/admin/secrets` alias). Values are accepted, never returned, except by `/secrets/values` to
//! the workspace itself.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{AdminAuth, ApiJson, WorkspaceAccess, WorkspaceAuth};
use super::files::{RestartReport, restart_report};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::audit;
use crate::auth::Principal;
use crate::secrets::{self, Bundle, Scope, SecretInfo, SecretKey};
use crate::workspaces::get_live;
use crate::workspaces::lifecycle;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, set))
        .routes(routes!(values))
        .routes(routes!(remove))
        .routes(routes!(get_model, put_model))
        .routes(routes!(list_global, set_global))
        .routes(routes!(remove_global))
        .routes(routes!(admin_list_global, admin_set_global))
        .routes(routes!(admin_remove_global))
}

/// A secret's metadata; values are never returned here.
#[derive(Debug, Serialize, ToSchema)]
struct SecretMeta {
    key: String,
    has_value: bool,
    /// `workspace` or `global` (a global the workspace does not override).
    scope: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn meta(info: &SecretInfo) -> SecretMeta {
    SecretMeta {
        key: info.key.clone(),
        has_value: true,
        scope: match info.scope {
            Scope::Workspace => "workspace",
            Scope::Global => "global",
        },
        created_at: info.created_at,
        updated_at: info.updated_at,
    }
}

/// The `{key}` path segment: an environment variable name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SecretKeyParam {
    /// `[A-Za-z_][A-Za-z0-9_]*`; anything else is answered as not found.
    key: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct SecretSaved {
    /// `saved` or `deleted`.
    status: &'static str,
    key: String,
    /// `global` on the global routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    /// What the change did to the agent (the workspace routes): the restart policy's decision,
    /// as a file write reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<RestartReport>,
}

#[derive(Deserialize, ToSchema)]
struct SecretBody {
    /// An environment variable name.
    key: String,
    /// Not empty; at most 64 KiB.
    value: String,
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBody")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn parse_secret(body: &SecretBody) -> ApiResult<SecretKey> {
    let key = SecretKey::parse(&body.key).ok_or(ApiError::bad_request(
        "key must be an environment variable name",
    ))?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request("value is required"));
    }
    if body.value.len() > secrets::MAX_VALUE_BYTES {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "secret value too large",
        ));
    }
    Ok(key)
}

/// A secret change: announced, then the restart policy decides what the workspace does.
async fn request_restart(
    state: &AppState,
    workspace_id: Uuid,
    reason: &str,
    key: &str,
) -> Option<RestartReport> {
    lifecycle::secrets_changed(&state.svc, workspace_id, reason, key)
        .await
        .as_ref()
        .map(restart_report)
}

/// The workspace's secrets and the global ones it inherits (names only).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/secrets",
    tag = "secrets",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<SecretMeta>),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let listed = secrets::list_for_workspace(&state.svc.db, id).await?;
    Ok(axum::Json(listed.iter().map(meta).collect::<Vec<_>>()))
}

/// Sets a workspace secret (the agent restarts as the policy decides).
#[utoipa::path(
    method(post, put),
    path = "/workspaces/{id}/secrets",
    tag = "secrets",
    params(WorkspaceIdParam),
    request_body = SecretBody,
    responses(
        (status = 200, body = SecretSaved),
        (status = 400, description = "Invalid key, empty value, or invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The value is too large", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn set(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
    ApiJson(body): ApiJson<SecretBody>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_secret(&body)?;
    get_live(&state.svc, id).await?;
    secrets::set_workspace(&state.svc.db, &state.svc.cipher, id, &key, &body.value).await?;
    let entry = audit::Entry::new("secret.set", principal)
        .workspace(id)
        .target(key.as_str());
    audit::record(&state.svc, entry).await;
    let restart = request_restart(&state, id, "secret_changed", key.as_str()).await;
    Ok(axum::Json(SecretSaved {
        status: "saved",
        key: key.as_str().to_owned(),
        scope: None,
        restart,
    }))
}

/// Deletes a workspace secret.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/secrets/{key}",
    tag = "secrets",
    params(WorkspaceIdParam, SecretKeyParam),
    responses(
        (status = 200, body = SecretSaved),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace or secret", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn remove(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
    Path(SecretKeyParam { key }): Path<SecretKeyParam>,
) -> ApiResult<impl IntoResponse> {
    let key = SecretKey::parse(&key).ok_or(ApiError::not_found("secret not found"))?;
    get_live(&state.svc, id).await?;
    if !crate::store::secrets::delete_workspace(&state.svc.db, id, key.as_str()).await? {
        return Err(ApiError::not_found("secret not found"));
    }
    let entry = audit::Entry::new("secret.deleted", principal)
        .workspace(id)
        .target(key.as_str());
    audit::record(&state.svc, entry).await;
    let restart = request_restart(&state, id, "secret_deleted", key.as_str()).await;
    Ok(axum::Json(SecretSaved {
        status: "deleted",
        key: key.as_str().to_owned(),
        scope: None,
        restart,
    }))
}

/// The 500 answer when some secrets cannot be decrypted.
#[derive(Debug, Serialize, ToSchema)]
struct Undecryptable {
    error: &'static str,
    code: &'static str,
    message: &'static str,
    failed_keys: Vec<String>,
}

/// Every secret the workspace would receive, decrypted; all or nothing.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/secrets/values",
    tag = "secrets",
    params(WorkspaceIdParam),
    responses(
        (status = 200, description = "Name to value", body = BTreeMap<String, String>),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 500, description = "Some secrets cannot be decrypted (`code: secrets_undecryptable`)", body = Undecryptable),
    ),
    security(("workspace_token" = [])),
)]
async fn values(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    match secrets::bundle(&state.svc.db, &state.svc.cipher, id).await? {
        Bundle::Complete(values) => {
            let map: BTreeMap<String, String> = values
                .into_iter()
                .map(|(k, v)| (k, v.expose_secret().to_owned()))
                .collect();
            Ok(axum::Json(map))
        }
        Bundle::Refused { failed_keys } => Err(ApiError::body(
            StatusCode::INTERNAL_SERVER_ERROR,
            Undecryptable {
                error: "internal error",
                code: "secrets_undecryptable",
                message: "some secrets cannot be decrypted with the configured key; refusing to return a partial bundle",
                failed_keys,
            },
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Model {
    /// Empty when none is chosen.
    model: String,
    /// `workspace_secrets` or `default`.
    source: &'static str,
}

/// The workspace's model choice.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/model",
    tag = "secrets",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Model),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn get_model(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    match secrets::get_workspace_value(&state.svc.db, &state.svc.cipher, id, secrets::MODEL_KEY)
        .await?
    {
        Some(Ok(model)) => Ok(axum::Json(Model {
            model,
            source: "workspace_secrets",
        })),
        Some(Err(err)) => Err(ApiError::internal(err)),
        None => Ok(axum::Json(Model {
            model: String::new(),
            source: "default",
        })),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct ModelBody {
    /// At most 100 characters; empty clears the choice.
    #[serde(default)]
    model: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ModelSaved {
    /// `saved` or `cleared`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

/// Chooses (or clears) the workspace's model; the agent restarts as the policy decides.
#[utoipa::path(
    put,
    path = "/workspaces/{id}/model",
    tag = "secrets",
    params(WorkspaceIdParam),
    request_body = ModelBody,
    responses(
        (status = 200, body = ModelSaved),
        (status = 400, description = "Invalid model or workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn put_model(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<ModelBody>,
) -> ApiResult<impl IntoResponse> {
    let model = body.model.trim();
    if model.chars().count() > 100 || model.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid model"));
    }
    get_live(&state.svc, id).await?;
    let key = SecretKey::parse(secrets::MODEL_KEY).expect("MODEL_PROVIDER is a valid key");
    let response = if model.is_empty() {
        crate::store::secrets::delete_workspace(&state.svc.db, id, key.as_str()).await?;
        ModelSaved {
            status: "cleared",
            model: None,
        }
    } else {
        secrets::set_workspace(&state.svc.db, &state.svc.cipher, id, &key, model).await?;
        ModelSaved {
            status: "saved",
            model: Some(model.to_owned()),
        }
    };
    request_restart(&state, id, "model_changed", key.as_str()).await;
    Ok(axum::Json(response))
}

/// The global secrets (names only).
#[utoipa::path(
    get,
    path = "/settings/secrets",
    tag = "secrets",
    responses((status = 200, body = Vec<SecretMeta>)),
    security(("admin_token" = [])),
)]
async fn list_global(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let listed = secrets::list_global(&state.svc.db).await?;
    Ok(axum::Json(listed.iter().map(meta).collect::<Vec<_>>()))
}

/// `GET /admin/secrets`: an alias of `GET /settings/secrets`.
#[utoipa::path(
    get,
    path = "/admin/secrets",
    tag = "secrets",
    responses((status = 200, body = Vec<SecretMeta>)),
    security(("admin_token" = [])),
)]
async fn admin_list_global(
    state: State<AppState>,
    auth: AdminAuth,
) -> ApiResult<impl IntoResponse> {
    list_global(state, auth).await
}

/// Sets a global secret; every workspace inheriting it restarts as the policy decides.
#[utoipa::path(
    method(put, post),
    path = "/settings/secrets",
    tag = "secrets",
    request_body = SecretBody,
    responses(
        (status = 200, body = SecretSaved),
        (status = 400, description = "Invalid key or empty value", body = ErrorBody),
        (status = 413, description = "The value is too large", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn set_global(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<SecretBody>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_secret(&body)?;
    secrets::set_global(&state.svc.db, &state.svc.cipher, &key, &body.value).await?;
    let entry = audit::Entry::new("global_secret.set", Principal::Admin).target(key.as_str());
    audit::record(&state.svc, entry).await;
    // Every workspace inheriting it restarts as the policy decides.
    lifecycle::global_secret_changed(&state.svc, "global_secret_changed", key.as_str()).await?;
    Ok(axum::Json(SecretSaved {
        status: "saved",
        key: key.as_str().to_owned(),
        scope: Some("global"),
        restart: None,
    }))
}

/// `PUT|POST /admin/secrets`: an alias of `/settings/secrets`.
#[utoipa::path(
    method(put, post),
    path = "/admin/secrets",
    tag = "secrets",
    request_body = SecretBody,
    responses(
        (status = 200, body = SecretSaved),
        (status = 400, description = "Invalid key or empty value", body = ErrorBody),
        (status = 413, description = "The value is too large", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn admin_set_global(
    state: State<AppState>,
    auth: AdminAuth,
    body: ApiJson<SecretBody>,
) -> ApiResult<impl IntoResponse> {
    set_global(state, auth, body).await
}

/// Deletes a global secret.
#[utoipa::path(
    delete,
    path = "/settings/secrets/{key}",
    tag = "secrets",
    params(SecretKeyParam),
    responses(
        (status = 200, body = SecretSaved),
        (status = 404, description = "No such secret", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn remove_global(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(SecretKeyParam { key }): Path<SecretKeyParam>,
) -> ApiResult<impl IntoResponse> {
    let key = SecretKey::parse(&key).ok_or(ApiError::not_found("secret not found"))?;
    if !crate::store::secrets::delete_global(&state.svc.db, key.as_str()).await? {
        return Err(ApiError::not_found("secret not found"));
    }
    let entry = audit::Entry::new("global_secret.deleted", Principal::Admin).target(key.as_str());
    audit::record(&state.svc, entry).await;
    // Every workspace inheriting it restarts as the policy decides.
    lifecycle::global_secret_changed(&state.svc, "global_secret_deleted", key.as_str()).await?;
    Ok(axum::Json(SecretSaved {
        status: "deleted",
        key: key.as_str().to_owned(),
        scope: Some("global"),
        restart: None,
    }))
}

/// `DELETE /admin/secrets/{key}`: an alias of `/settings/secrets/{key}`.
#[utoipa::path(
    delete,
    path = "/admin/secrets/{key}",
    tag = "secrets",
    params(SecretKeyParam),
    responses(
        (status = 200, body = SecretSaved),
        (status = 404, description = "No such secret", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn admin_remove_global(
    state: State<AppState>,
    auth: AdminAuth,
    key: Path<SecretKeyParam>,
) -> ApiResult<impl IntoResponse> {
    remove_global(state, auth, key).await
}
