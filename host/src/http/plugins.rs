//! Plugins: the local registry, the schemes resolvers serve, install/uninstall/list per
//! workspace, and the per-org allow-list.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{
    AdminAuth, AnyAuth, ApiJson, ApiQuery, WorkspaceAccess, WorkspaceAuth, WorkspacePath,
};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use chrono::{DateTime, Utc};

use crate::plugins::drift::{self, ApplyError};
use crate::plugins::{self, InstallRequest, PluginError, Track};
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(registry))
        .routes(routes!(sources))
        .routes(routes!(list, install))
        .routes(routes!(uninstall))
        .routes(routes!(get_allowlist, put_allowlist))
        .routes(routes!(pending))
        .routes(routes!(check))
        .routes(routes!(sweep_times))
        .routes(routes!(apply_all))
        .routes(routes!(apply))
        .routes(routes!(dismiss))
}

/// The `{queue_id}` segment of the update routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct QueueIdParam {
    /// The queued update's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    queue_id: String,
}

impl QueueIdParam {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.queue_id).map_err(|_| ApiError::not_found("update not found"))
    }
}

/// The `{name}` segment: a plugin's directory name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct PluginNameParam {
    name: String,
}

/// Plugin answers with more than a message.
#[derive(Debug, Default, Serialize, ToSchema)]
struct PluginRefused {
    error: String,
    /// For an unknown scheme: the schemes on offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    available_schemes: Option<Vec<String>>,
    /// `delivery_failed` when the files could not be delivered to the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

// A queued plugin update, as `plugin_update_queue` stores it (the row itself is never served).
#[derive(Debug, Serialize, ToSchema)]
struct UpdateRow {
    id: Uuid,
    workspace_id: Uuid,
    plugin_name: String,
    tracked_ref: String,
    current_sha: Option<String>,
    latest_sha: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&store::plugins::UpdateRow> for UpdateRow {
    fn from(row: &store::plugins::UpdateRow) -> Self {
        UpdateRow {
            id: row.id,
            workspace_id: row.workspace_id,
            plugin_name: row.plugin_name.clone(),
            tracked_ref: row.tracked_ref.clone(),
            current_sha: row.current_sha.clone(),
            latest_sha: row.latest_sha.clone(),
            status: row.status.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// When drift was last checked and when the sweeper checks next.
#[derive(Debug, Serialize, ToSchema)]
struct SweepTimes {
    /// `plugins.drift_interval_secs`.
    interval_secs: u64,
    /// When the last finished pass (scheduled or manual) started; `null` before the first.
    last_run_at: Option<DateTime<Utc>>,
    /// `scheduled` or `manual`.
    last_trigger: Option<String>,
    /// What the last pass did.
    last_checked: Option<u64>,
    last_queued: Option<u64>,
    last_failed: Option<u64>,
    /// The last scheduled pass's start plus the interval: when the sweeper (on whichever
    /// replica holds its lease) runs next. `null` before the first scheduled pass; a time in
    /// the past means the pass is due.
    next_run_at: Option<DateTime<Utc>>,
}

impl From<&drift::SweepTimes> for SweepTimes {
    fn from(times: &drift::SweepTimes) -> Self {
        SweepTimes {
            interval_secs: times.interval_secs,
            last_run_at: times.last_run_at,
            last_trigger: times.last_trigger.clone(),
            last_checked: times.last_checked,
            last_queued: times.last_queued,
            last_failed: times.last_failed,
            next_run_at: times.next_run_at,
        }
    }
}

/// What applying an update did.
#[derive(Debug, Serialize, ToSchema)]
struct Applied {
    status: &'static str,
    queue_id: Uuid,
    workspace_id: Uuid,
    plugin_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    installed_sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarting: Option<bool>,
}

impl From<&drift::Applied> for Applied {
    fn from(applied: &drift::Applied) -> Self {
        Applied {
            status: applied.status,
            queue_id: applied.queue_id,
            workspace_id: applied.workspace_id,
            plugin_name: applied.plugin_name.clone(),
            installed_sha: applied.installed_sha.clone(),
            restarting: applied.restarting,
        }
    }
}

/// The result of a rollout.
#[derive(Debug, Serialize, ToSchema)]
struct Rollout {
    /// Updates applied, in order (canary workspaces first).
    applied: Vec<Applied>,
    /// The update that failed, if any, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<RolloutFailure>,
    /// Whether production workspaces were left alone because a canary failed.
    stopped: bool,
}

impl From<&drift::Rollout> for Rollout {
    fn from(rollout: &drift::Rollout) -> Self {
        Rollout {
            applied: rollout.applied.iter().map(Into::into).collect(),
            failed: rollout.failed.as_ref().map(Into::into),
            stopped: rollout.stopped,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct RolloutFailure {
    queue_id: Uuid,
    workspace_id: Uuid,
    plugin_name: String,
    update_tier: String,
    error: String,
}

impl From<&drift::RolloutFailure> for RolloutFailure {
    fn from(failure: &drift::RolloutFailure) -> Self {
        RolloutFailure {
            queue_id: failure.queue_id,
            workspace_id: failure.workspace_id,
            plugin_name: failure.plugin_name.clone(),
            update_tier: failure.update_tier.clone(),
            error: failure.error.clone(),
        }
    }
}

/// What an install did.
#[derive(Debug, Serialize, ToSchema)]
struct Installed {
    status: &'static str,
    plugin: String,
    source: String,
    reload: &'static str,
    restarting: bool,
    installed_sha: String,
}

impl From<&plugins::Installed> for Installed {
    fn from(installed: &plugins::Installed) -> Self {
        Installed {
            status: installed.status,
            plugin: installed.plugin.clone(),
            source: installed.source.clone(),
            reload: installed.reload,
            restarting: installed.restarting,
            installed_sha: installed.installed_sha.clone(),
        }
    }
}

/// One installed plugin.
#[derive(Debug, Serialize, ToSchema)]
struct InstalledPlugin {
    name: String,
    complete: bool,
    source: Option<String>,
    tracked_ref: Option<String>,
    installed_sha: Option<String>,
}

impl From<&plugins::InstalledPlugin> for InstalledPlugin {
    fn from(plugin: &plugins::InstalledPlugin) -> Self {
        InstalledPlugin {
            name: plugin.name.clone(),
            complete: plugin.complete,
            source: plugin.source.clone(),
            tracked_ref: plugin.tracked_ref.clone(),
            installed_sha: plugin.installed_sha.clone(),
        }
    }
}

/// An entry of the local registry.
#[derive(Debug, Serialize, ToSchema)]
struct RegistryPlugin {
    name: String,
    version: Option<String>,
    description: Option<String>,
    author: Option<String>,
    tags: Vec<String>,
    skills: Vec<String>,
    runtimes: Vec<String>,
}

impl From<&plugins::RegistryPlugin> for RegistryPlugin {
    fn from(plugin: &plugins::RegistryPlugin) -> Self {
        RegistryPlugin {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            description: plugin.description.clone(),
            author: plugin.author.clone(),
            tags: plugin.tags.clone(),
            skills: plugin.skills.clone(),
            runtimes: plugin.runtimes.clone(),
        }
    }
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

/// Plugin updates waiting to be applied.
#[utoipa::path(
    get,
    path = "/admin/plugin-updates-pending",
    tag = "plugins",
    responses((status = 200, body = Vec<UpdateRow>)),
    security(("admin_token" = [])),
)]
async fn pending(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = store::plugins::pending_updates(&state.svc.db).await?;
    Ok(axum::Json(
        rows.iter().map(UpdateRow::from).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct UpdatesQueued {
    /// Updates queued by this sweep.
    queued: usize,
}

/// Runs a drift sweep now (the sweeper runs one every `plugins.drift_interval_secs`).
#[utoipa::path(
    post,
    path = "/admin/plugin-updates/check",
    tag = "plugins",
    responses((status = 200, body = UpdatesQueued)),
    security(("admin_token" = [])),
)]
async fn check(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let swept = drift::sweep_recorded(&state.svc, drift::SweepTrigger::Manual).await?;
    Ok(axum::Json(UpdatesQueued {
        queued: swept.queued,
    }))
}

/// When drift was last checked (by the sweeper or `check`) and when the sweeper runs next.
#[utoipa::path(
    get,
    path = "/admin/plugin-updates/sweep",
    tag = "plugins",
    responses((status = 200, body = SweepTimes)),
    security(("admin_token" = [])),
)]
async fn sweep_times(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let times = drift::sweep_times(&state.svc).await?;
    Ok(axum::Json(SweepTimes::from(&times)))
}

/// Applies one queued update (reinstalls the plugin at the new revision).
#[utoipa::path(
    post,
    path = "/admin/plugin-updates/{queue_id}/apply",
    tag = "plugins",
    params(QueueIdParam),
    responses(
        (status = 200, body = Applied),
        (status = 404, description = "No such update, or the plugin is no longer installed", body = ErrorBody),
        (status = 409, description = "Dismissed or already applied", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn apply(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(segment): Path<QueueIdParam>,
) -> ApiResult<impl IntoResponse> {
    let applied = drift::apply(&state.svc, segment.id()?, 0).await?;
    Ok(axum::Json(Applied::from(&applied)))
}

#[derive(Debug, Serialize, ToSchema)]
struct Dismissed {
    status: &'static str,
    queue_id: Uuid,
}

/// Dismisses one queued update.
#[utoipa::path(
    post,
    path = "/admin/plugin-updates/{queue_id}/dismiss",
    tag = "plugins",
    params(QueueIdParam),
    responses(
        (status = 200, body = Dismissed),
        (status = 404, description = "No such update", body = ErrorBody),
        (status = 409, description = "Already applied", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn dismiss(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(segment): Path<QueueIdParam>,
) -> ApiResult<impl IntoResponse> {
    let id = segment.id()?;
    let status = drift::dismiss(&state.svc, id).await?;
    Ok(axum::Json(Dismissed {
        status,
        queue_id: id,
    }))
}

/// Applies every pending update, canary workspaces first.
#[utoipa::path(
    post,
    path = "/admin/plugin-updates/apply-all",
    tag = "plugins",
    responses((status = 200, body = Rollout)),
    security(("admin_token" = [])),
)]
async fn apply_all(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rollout = drift::apply_all(&state.svc).await?;
    Ok(axum::Json(Rollout::from(&rollout)))
}

/// A refusal with the host's message and the reason it was given.
fn refused(status: StatusCode, error: &'static str, detail: String) -> ApiError {
    ApiError::body(
        status,
        PluginRefused {
            error: error.to_owned(),
            detail: Some(detail),
            ..PluginRefused::default()
        },
    )
}

impl From<PluginError> for ApiError {
    fn from(err: PluginError) -> Self {
        match err {
            PluginError::InvalidSource => ApiError::bad_request("invalid plugin source"),
            PluginError::UnknownScheme { available } => ApiError::body(
                StatusCode::BAD_REQUEST,
                PluginRefused {
                    error: "unknown plugin source scheme".to_owned(),
                    available_schemes: Some(available),
                    ..PluginRefused::default()
                },
            ),
            PluginError::InvalidName => ApiError::bad_request("invalid plugin name"),
            // The message is ours; the detail is the resolver's or git's reason, made safe where
            // it left the extension platform (`extensions::reason`).
            PluginError::BadSource(why) => {
                refused(StatusCode::BAD_REQUEST, "invalid plugin source", why)
            }
            PluginError::NotFound(why) => {
                refused(StatusCode::NOT_FOUND, "plugin source not found", why)
            }
            PluginError::Denied(why) => refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin source refused",
                why,
            ),
            PluginError::Upstream(why) => {
                refused(StatusCode::BAD_GATEWAY, "fetching the plugin failed", why)
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
            PluginError::NotAllowed(name) => ApiError::body(
                StatusCode::FORBIDDEN,
                ErrorBody::new(format!("plugin {name:?} is not in the org allowlist")),
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
                ApiError::body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PluginRefused {
                        error: "plugin delivery failed".to_owned(),
                        code: Some("delivery_failed"),
                        detail: Some(err.public()),
                        ..PluginRefused::default()
                    },
                )
            }
            PluginError::Workspace(err) => err.into(),
            PluginError::Internal(cause) => ApiError::internal(anyhow::anyhow!(cause)),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RegistryQuery {
    /// Only plugins that support this workspace runtime.
    runtime: Option<String>,
}

/// The local plugin registry (any live credential).
#[utoipa::path(
    get,
    path = "/plugins",
    tag = "plugins",
    params(RegistryQuery),
    responses(
        (status = 200, body = Vec<RegistryPlugin>),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn registry(
    State(state): State<AppState>,
    _: AnyAuth,
    ApiQuery(q): ApiQuery<RegistryQuery>,
) -> impl IntoResponse {
    let plugins = plugins::registry(&state.svc, q.runtime.as_deref());
    axum::Json(plugins.iter().map(RegistryPlugin::from).collect::<Vec<_>>())
}

#[derive(Debug, Serialize, ToSchema)]
struct Schemes {
    /// The source schemes installs accept (`local`, `github`, ...).
    schemes: Vec<String>,
}

/// The plugin source schemes on offer (any live credential).
#[utoipa::path(
    get,
    path = "/plugins/sources",
    tag = "plugins",
    responses((status = 200, body = Schemes)),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn sources(State(state): State<AppState>, _: AnyAuth) -> impl IntoResponse {
    axum::Json(Schemes {
        schemes: plugins::schemes(&state.svc),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
struct InstallBody {
    /// `<scheme>://<spec>`, e.g. `local://echo-skill`.
    #[serde(default)]
    source: String,
    /// The expected sha256 of the plugin's content (64 hex characters).
    #[serde(default)]
    sha256: Option<String>,
    /// `none`, `tag:<ref>` or `sha:<sha>`.
    #[serde(default)]
    track: Option<String>,
}

/// Installs a plugin into the workspace.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/plugins",
    tag = "plugins",
    params(WorkspaceIdParam),
    request_body = InstallBody,
    responses(
        (status = 200, body = Installed),
        (status = 400, description = "Invalid source, scheme, track or sha256", body = PluginRefused),
        (status = 403, description = "Not in the org allow-list", body = ErrorBody),
        (status = 404, description = "No such workspace or plugin source", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The plugin is too large", body = ErrorBody),
        (status = 422, description = "Source refused, integrity mismatch, or an external workspace", body = ErrorBody),
        (status = 500, description = "Delivery to the agent failed (`code: delivery_failed`)", body = PluginRefused),
        (status = 502, description = "Fetching the plugin failed", body = ErrorBody),
        (status = 503, description = "The agent is not running", body = ErrorBody),
        (status = 504, description = "Fetching the plugin timed out", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn install(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
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
    let answer = Installed::from(&installed);
    let entry = crate::audit::Entry::new("plugin.installed", principal)
        .workspace(id)
        .target(answer.plugin.clone())
        .detail(serde_json::json!({ "source": answer.source, "sha": answer.installed_sha }));
    crate::audit::record(&state.svc, entry).await;
    Ok(axum::Json(answer))
}

#[derive(Debug, Serialize, ToSchema)]
struct Uninstalled {
    status: &'static str,
    plugin: String,
    restarting: bool,
}

/// Removes a plugin from the workspace.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/plugins/{name}",
    tag = "plugins",
    params(WorkspaceIdParam, PluginNameParam),
    responses(
        (status = 200, body = Uninstalled),
        (status = 400, description = "Invalid plugin name or workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace, or the plugin is not installed", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "The agent is not running", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn uninstall(
    State(state): State<AppState>,
    WorkspaceAccess { id, principal }: WorkspaceAccess,
    Path(PluginNameParam { name }): Path<PluginNameParam>,
) -> ApiResult<impl IntoResponse> {
    let restarting = plugins::uninstall(&state.svc, id, &name).await?;
    let entry = crate::audit::Entry::new("plugin.uninstalled", principal)
        .workspace(id)
        .target(name.clone());
    crate::audit::record(&state.svc, entry).await;
    Ok(axum::Json(Uninstalled {
        status: "uninstalled",
        plugin: name,
        restarting,
    }))
}

/// The plugins installed in the workspace (empty while its agent is not running).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/plugins",
    tag = "plugins",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<InstalledPlugin>),
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
    let installed = plugins::list_installed(&state.svc, id).await?;
    Ok(axum::Json(
        installed
            .iter()
            .map(InstalledPlugin::from)
            .collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
struct Allowlist {
    org_id: Uuid,
    /// Plugin names the org's workspaces may install; empty allows all.
    plugins: Vec<String>,
}

/// The org's plugin allow-list (`{id}` is the org's root workspace).
#[utoipa::path(
    get,
    path = "/orgs/{id}/plugins/allowlist",
    tag = "plugins",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Allowlist),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn get_allowlist(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    crate::workspaces::get_live(&state.svc, id).await?;
    let names = store::plugins::allowlist(&state.svc.db, id).await?;
    Ok(axum::Json(Allowlist {
        org_id: id,
        plugins: names,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct AllowlistBody {
    plugins: Vec<String>,
}

/// Replaces the org's plugin allow-list.
#[utoipa::path(
    put,
    path = "/orgs/{id}/plugins/allowlist",
    tag = "plugins",
    params(WorkspaceIdParam),
    request_body = AllowlistBody,
    responses(
        (status = 200, body = Allowlist),
        (status = 400, description = "Invalid plugin name or workspace id, or not an org root", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn put_allowlist(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiJson(body): ApiJson<AllowlistBody>,
) -> ApiResult<impl IntoResponse> {
    let org = crate::workspaces::get_live(&state.svc, id).await?;
    if org.parent_id.is_some() {
        return Err(ApiError::bad_request(
            "an allow-list belongs to an org's root workspace; this workspace has a parent",
        ));
    }
    let mut names: Vec<String> = body.plugins.iter().map(|n| n.trim().to_owned()).collect();
    if names.iter().any(|n| !plugins::valid_name(n)) {
        return Err(ApiError::bad_request("invalid plugin name"));
    }
    names.sort();
    names.dedup();
    store::plugins::set_allowlist(&state.svc.db, id, &names).await?;
    Ok(axum::Json(Allowlist {
        org_id: id,
        plugins: names,
    }))
}
