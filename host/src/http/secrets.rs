//! Workspace secrets, the decrypted bundle, the model choice, and global secrets (with the
//! `/admin/secrets` alias). Values are accepted, never returned, except by `/secrets/values` to
//! the workspace itself.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, WorkspaceAuth};
use crate::secrets::{self, Bundle, Scope, SecretInfo, SecretKey};
use crate::workspaces::get_live;

pub fn router() -> Router<AppState> {
    let global = || get(list_global).put(set_global).post(set_global);
    Router::new()
        .route("/workspaces/{id}/secrets", get(list).post(set).put(set))
        .route("/workspaces/{id}/secrets/values", get(values))
        .route("/workspaces/{id}/secrets/{key}", delete(remove))
        .route("/workspaces/{id}/model", get(get_model).put(put_model))
        .route("/settings/secrets", global())
        .route("/settings/secrets/{key}", delete(remove_global))
        .route("/admin/secrets", global())
        .route("/admin/secrets/{key}", delete(remove_global))
}

fn info_json(info: &SecretInfo) -> Value {
    json!({
        "key": info.key,
        "has_value": true,
        "scope": match info.scope { Scope::Workspace => "workspace", Scope::Global => "global" },
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    })
}

#[derive(Deserialize)]
struct SecretBody {
    key: String,
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
async fn request_restart(state: &AppState, workspace_id: Uuid, reason: &str, key: &str) {
    crate::workspaces::lifecycle::secrets_changed(&state.svc, workspace_id, reason, key).await;
}

async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    let listed = secrets::list_for_workspace(&state.svc.db, id).await?;
    Ok(axum::Json(Value::Array(
        listed.iter().map(info_json).collect(),
    )))
}

async fn set(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<SecretBody>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_secret(&body)?;
    get_live(&state.svc, id).await?;
    secrets::set_workspace(&state.svc.db, &state.svc.cipher, id, &key, &body.value).await?;
    request_restart(&state, id, "secret_changed", key.as_str()).await;
    Ok(axum::Json(
        json!({ "status": "saved", "key": key.as_str() }),
    ))
}

async fn remove(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let key = SecretKey::parse(&key).ok_or(ApiError::not_found("secret not found"))?;
    get_live(&state.svc, id).await?;
    if !crate::store::secrets::delete_workspace(&state.svc.db, id, key.as_str()).await? {
        return Err(ApiError::not_found("secret not found"));
    }
    request_restart(&state, id, "secret_deleted", key.as_str()).await;
    Ok(axum::Json(
        json!({ "status": "deleted", "key": key.as_str() }),
    ))
}

/// Every secret the workspace would receive, decrypted; all or nothing.
async fn values(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    match secrets::bundle(&state.svc.db, &state.svc.cipher, id).await? {
        Bundle::Complete(values) => {
            let map: Map<String, Value> = values
                .into_iter()
                .map(|(k, v)| (k, Value::String(v.expose_secret().to_owned())))
                .collect();
            Ok(axum::Json(Value::Object(map)))
        }
        Bundle::Refused { failed_keys } => Err(ApiError::Body(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": "internal error",
                "code": "secrets_undecryptable",
                "message": "some secrets cannot be decrypted with the configured key; refusing to return a partial bundle",
                "failed_keys": failed_keys,
            }),
        )),
    }
}

async fn get_model(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    get_live(&state.svc, id).await?;
    match secrets::get_workspace_value(&state.svc.db, &state.svc.cipher, id, secrets::MODEL_KEY)
        .await?
    {
        Some(Ok(model)) => Ok(axum::Json(
            json!({ "model": model, "source": "workspace_secrets" }),
        )),
        Some(Err(err)) => Err(ApiError::internal(err)),
        None => Ok(axum::Json(json!({ "model": "", "source": "default" }))),
    }
}

#[derive(Debug, Deserialize)]
struct ModelBody {
    #[serde(default)]
    model: String,
}

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
        json!({ "status": "cleared" })
    } else {
        secrets::set_workspace(&state.svc.db, &state.svc.cipher, id, &key, model).await?;
        json!({ "status": "saved", "model": model })
    };
    request_restart(&state, id, "model_changed", key.as_str()).await;
    Ok(axum::Json(response))
}

async fn list_global(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let listed = secrets::list_global(&state.svc.db).await?;
    Ok(axum::Json(Value::Array(
        listed.iter().map(info_json).collect(),
    )))
}

/// Every live workspace that inherits global `key` (no own override) needs a restart.
async fn request_restarts_for_global(
    state: &AppState,
    key: &SecretKey,
    reason: &str,
) -> ApiResult<()> {
    for workspace in
        crate::store::secrets::workspaces_inheriting_global(&state.svc.db, key.as_str()).await?
    {
        request_restart(state, workspace, reason, key.as_str()).await;
    }
    Ok(())
}

async fn set_global(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<SecretBody>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_secret(&body)?;
    secrets::set_global(&state.svc.db, &state.svc.cipher, &key, &body.value).await?;
    request_restarts_for_global(&state, &key, "global_secret_changed").await?;
    Ok(axum::Json(
        json!({ "status": "saved", "key": key.as_str(), "scope": "global" }),
    ))
}

async fn remove_global(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let key = SecretKey::parse(&key).ok_or(ApiError::not_found("secret not found"))?;
    if !crate::store::secrets::delete_global(&state.svc.db, key.as_str()).await? {
        return Err(ApiError::not_found("secret not found"));
    }
    request_restarts_for_global(&state, &key, "global_secret_deleted").await?;
    Ok(axum::Json(
        json!({ "status": "deleted", "key": key.as_str(), "scope": "global" }),
    ))
}
