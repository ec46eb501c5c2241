//! Plugins: the local registry, the schemes resolvers serve, install/uninstall/list per
//! workspace, and the per-org allow-list.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceAuth, WorkspacePath};
use crate::plugins::drift::{self, ApplyError};
use crate::plugins::{self, InstallRequest, PluginError, Track};
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/plugins", get(registry))
        .route("/plugins/sources", get(sources))
        .route("/workspaces/{id}/plugins", get(list).post(install))
        .route("/workspaces/{id}/plugins/{name}", delete(uninstall))
        .route(
            "/orgs/{id}/plugins/allowlist",
            get(get_allowlist).put(put_allowlist),
        )
        .route("/admin/plugin-updates-pending", get(pending))
        .route("/admin/plugin-updates/check", post(check))
        .route("/admin/plugin-updates/apply-all", post(apply_all))
        .route("/admin/plugin-updates/{queue_id}/apply", post(apply))
        .route("/admin/plugin-updates/{queue_id}/dismiss", post(dismiss))
}

impl From<ApplyError> for ApiError {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::NotFound => ApiError::not_found("update not found"),
            ApplyError::Dismissed => {
                ApiError::Status(StatusCode::CONFLICT, "the update was dismissed")
            }
            ApplyError::Uninstalled => ApiError::not_found(
                "the plugin is no longer installed (it may have been uninstalled)",
            ),
            ApplyError::AlreadyApplied => {
                ApiError::Status(StatusCode::CONFLICT, "the update was already applied")
            }
            ApplyError::Install(err) => err.into(),
            ApplyError::Store(err) => ApiError::internal(err),
        }
    }
}

fn queue_id(raw: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found("update not found"))
}

async fn pending(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(
        store::plugins::pending_updates(&state.svc.db).await?,
    ))
}

/// Runs a drift sweep now (the sweeper runs one every `plugins.drift_interval_secs`).
async fn check(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let queued = drift::sweep(&state.svc).await?;
    Ok(axum::Json(json!({ "queued": queued })))
}

async fn apply(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(
        drift::apply(&state.svc, queue_id(&raw)?, 0).await?,
    ))
}

async fn dismiss(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = queue_id(&raw)?;
    let status = drift::dismiss(&state.svc, id).await?;
    Ok(axum::Json(json!({ "status": status, "queue_id": id })))
}

async fn apply_all(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(drift::apply_all(&state.svc).await?))
}

impl From<PluginError> for ApiError {
    fn from(err: PluginError) -> Self {
        match err {
            PluginError::InvalidSource => ApiError::bad_request("invalid plugin source"),
            PluginError::UnknownScheme { available } => ApiError::Body(
                StatusCode::BAD_REQUEST,
                json!({ "error": "unknown plugin source scheme", "available_schemes": available }),
            ),
            PluginError::InvalidName => ApiError::bad_request("invalid plugin name"),
            PluginError::NotFound => ApiError::not_found("plugin source not found"),
            PluginError::Denied(_) => {
                ApiError::Status(StatusCode::UNPROCESSABLE_ENTITY, "plugin source refused")
            }
            PluginError::Upstream => {
                ApiError::Status(StatusCode::BAD_GATEWAY, "fetching the plugin failed")
            }
            PluginError::Timeout => {
                ApiError::Status(StatusCode::GATEWAY_TIMEOUT, "fetching the plugin timed out")
            }
            PluginError::TooLarge => {
                ApiError::Status(StatusCode::PAYLOAD_TOO_LARGE, "plugin too large")
            }
            PluginError::Integrity(message) => {
                ApiError::Status(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            PluginError::NotAllowed(name) => ApiError::Body(
                StatusCode::FORBIDDEN,
                json!({ "error": format!("plugin {name:?} is not in the org allowlist") }),
            ),
            PluginError::NotInstalled(_) => ApiError::not_found("plugin not installed"),
            PluginError::External => ApiError::Status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "external workspaces have no config directory to install into",
            ),
            PluginError::Offline => ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                "workspace container not running",
            ),
            PluginError::Delivery(err) => {
                tracing::error!(error = %err, "plugin delivery failed");
                ApiError::Body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "plugin delivery failed", "code": "delivery_failed", "detail": err.public() }),
                )
            }
            PluginError::Workspace(err) => err.into(),
            PluginError::Internal(cause) => ApiError::internal(anyhow::anyhow!(cause)),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RegistryQuery {
    runtime: Option<String>,
}

async fn registry(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RegistryQuery>,
) -> impl IntoResponse {
    axum::Json(plugins::registry(&state.svc, q.runtime.as_deref()))
}

async fn sources(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({ "schemes": plugins::schemes(&state.svc) }))
}

#[derive(Debug, Deserialize)]
struct InstallBody {
    #[serde(default)]
    source: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    track: Option<String>,
}

async fn install(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<InstallBody>,
) -> ApiResult<impl IntoResponse> {
    let source = plugins::parse_source(&state.svc, &body.source)?;
    let track = Track::parse(body.track.as_deref()).ok_or(ApiError::bad_request(
        "track must be none, tag:<ref> or sha:<sha>",
    ))?;
    if let Some(sha) = &body.sha256
        && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad_request("sha256 must be 64 hex characters"));
    }
    let installed = plugins::install(
        &state.svc,
        id,
        InstallRequest {
            source_raw: body.source.trim().to_owned(),
            source,
            sha256: body.sha256,
            track,
            drift: None,
        },
    )
    .await?;
    Ok(axum::Json(installed))
}

async fn uninstall(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let restarting = plugins::uninstall(&state.svc, id, &name).await?;
    Ok(axum::Json(
        json!({ "status": "uninstalled", "plugin": name, "restarting": restarting }),
    ))
}

async fn list(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(plugins::list_installed(&state.svc, id).await?))
}

async fn get_allowlist(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    crate::workspaces::get_live(&state.svc, id).await?;
    let names = store::plugins::allowlist(&state.svc.db, id).await?;
    Ok(axum::Json(json!({ "org_id": id, "plugins": names })))
}

#[derive(Debug, Deserialize)]
struct AllowlistBody {
    plugins: Vec<String>,
}

async fn put_allowlist(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiJson(body): ApiJson<AllowlistBody>,
) -> ApiResult<impl IntoResponse> {
    crate::workspaces::get_live(&state.svc, id).await?;
    let mut names: Vec<String> = body.plugins.iter().map(|n| n.trim().to_owned()).collect();
    if names.iter().any(|n| !plugins::valid_name(n)) {
        return Err(ApiError::bad_request("invalid plugin name"));
    }
    names.sort();
    names.dedup();
    store::plugins::set_allowlist(&state.svc.db, id, &names).await?;
    Ok(axum::Json(json!({ "org_id": id, "plugins": names })))
}
