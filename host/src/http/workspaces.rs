//! `/workspaces`: list, get, create, patch, cascade delete, state and the per-workspace config.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{
    AdminAuth, ApiJson, ApiQuery, Creds, WorkspaceAccess, WorkspaceAuth, WorkspacePath,
    contains_nul, nul_rejection,
};
use super::openapi::ErrorBody;
use crate::auth::Principal;
use crate::store;
use crate::store::workspaces::WorkspaceRow;
use crate::workspaces::{self, CreateRequest, PatchRequest, Status, WorkspaceError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(state))
        .routes(routes!(get_config, patch_config))
}

/// The fields the list and the single-workspace shapes share.
#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceFields {
    id: Uuid,
    name: String,
    role: Option<String>,
    tier: i32,
    /// `provisioning`, `online`, `offline`, `degraded`, `failed`, `paused`, `removed`, ...
    status: String,
    url: Option<String>,
    parent_id: Option<Uuid>,
    active_tasks: i32,
    max_concurrent_tasks: i32,
    last_error_rate: f64,
    uptime_seconds: i64,
    runtime: String,
    x: f64,
    y: f64,
    collapsed: bool,
    /// The agent's A2A card as it published it (free-form).
    agent_card: Option<Value>,
    update_tier: String,
    /// Minutes of idleness after which the agent is hibernated (`null` or 0: never).
    hibernation_idle_minutes: Option<i32>,
    /// `push` (the host sends messages to `url`) or `poll` (the agent fetches them from its
    /// inbox), as its agent registered.
    delivery_mode: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl WorkspaceFields {
    fn of(row: &WorkspaceRow) -> Self {
        WorkspaceFields {
            id: row.id,
            name: row.name.clone(),
            role: row.role.clone(),
            tier: row.tier,
            status: row.status.to_string(),
            url: row.url.clone(),
            parent_id: row.parent_id,
            active_tasks: row.active_tasks,
            max_concurrent_tasks: row.max_concurrent_tasks,
            last_error_rate: row.last_error_rate,
            uptime_seconds: row.uptime_seconds,
            runtime: row.runtime.clone(),
            x: row.x,
            y: row.y,
            collapsed: row.collapsed,
            agent_card: row.agent_card.clone(),
            update_tier: row.update_tier.clone(),
            hibernation_idle_minutes: row.hibernation_idle_minutes,
            delivery_mode: row.delivery_mode.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The list shape (reference §2.4): every field the canvas reads.
#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceSummary {
    #[serde(flatten)]
    fields: WorkspaceFields,
    last_sample_error: Option<String>,
    current_task: Option<String>,
    workspace_dir: Option<String>,
    monthly_spend: i64,
    budget_limit: Option<i64>,
}

fn summary(row: &WorkspaceRow) -> WorkspaceSummary {
    WorkspaceSummary {
        fields: WorkspaceFields::of(row),
        last_sample_error: row.last_sample_error.clone(),
        current_task: row.current_task.clone(),
        workspace_dir: row.workspace_dir.clone(),
        monthly_spend: row.spend_in(&crate::agents::budget::this_month()),
        budget_limit: row.budget_limit,
    }
}

/// The single-workspace shape: the list shape minus operator-only fields, plus activity times.
#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceDetail {
    #[serde(flatten)]
    fields: WorkspaceFields,
    last_outbound_at: Option<DateTime<Utc>>,
    last_heartbeat_at: Option<DateTime<Utc>>,
    /// Only on a removed workspace's tombstone (`?include_removed=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_at: Option<DateTime<Utc>>,
}

fn detail(row: &WorkspaceRow) -> WorkspaceDetail {
    WorkspaceDetail {
        fields: WorkspaceFields::of(row),
        last_outbound_at: row.last_outbound_at,
        last_heartbeat_at: row.last_heartbeat_at,
        removed_at: row.removed_at.filter(|_| row.status == Status::Removed),
    }
}

/// Every live workspace.
#[utoipa::path(
    get,
    path = "/workspaces",
    tag = "workspaces",
    responses((status = 200, body = Vec<WorkspaceSummary>)),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    // `last_outbound_at` is a deferred write: what was stamped before this read is stored first.
    state.svc.writes.flush().await;
    let rows = store::workspaces::list_live(&state.svc.db).await?;
    Ok(axum::Json(rows.iter().map(summary).collect::<Vec<_>>()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBody {
    /// Required (1-255 characters); a taken name under the same parent gets a " (n)" suffix.
    name: Option<String>,
    role: Option<String>,
    template: Option<String>,
    #[serde(default)]
    tier: i64,
    model: Option<String>,
    runtime: Option<String>,
    #[serde(default)]
    external: bool,
    url: Option<String>,
    workspace_dir: Option<String>,
    workspace_access: Option<String>,
    parent_id: Option<Uuid>,
    budget_limit: Option<i64>,
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    max_concurrent_tasks: i64,
    canvas: Option<CanvasPosition>,
    /// Minutes of idleness (no activity) after which the agent is hibernated; 0 to 43200,
    /// absent or 0: never.
    hibernation_idle_minutes: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct CanvasPosition {
    x: f64,
    y: f64,
}

/// What creation answers.
#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceCreated {
    id: Uuid,
    status: &'static str,
    awareness_namespace: String,
    workspace_access: String,
    /// Present (true) for an external workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    external: Option<bool>,
    /// For a workspace whose agent the host does not start (external, or no runtime): its
    /// credential and how its agent connects (shown once; an admin can mint another with
    /// `POST /workspaces/{id}/tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<Connection>,
}

/// How a workspace's agent connects to this host.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Connection {
    pub(super) workspace_id: Uuid,
    platform_url: String,
    /// The agent's bearer: present only where it is issued (creation, rotation).
    auth_token: Option<String>,
    pub(super) registry_endpoint: String,
    heartbeat_endpoint: String,
}

impl Connection {
    /// For workspace `id` as the client at `headers` reaches this host, with `token` when one
    /// was just issued.
    pub(super) fn new(
        state: &AppState,
        headers: &HeaderMap,
        id: Uuid,
        token: Option<&secrecy::SecretString>,
    ) -> Connection {
        let platform_url = platform_url(state, headers);
        Connection {
            workspace_id: id,
            auth_token: token.map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned()),
            registry_endpoint: format!("{platform_url}/registry/register"),
            heartbeat_endpoint: format!("{platform_url}/registry/heartbeat"),
            platform_url,
        }
    }
}

/// Creates a workspace (and provisions its agent unless it is external).
#[utoipa::path(
    post,
    path = "/workspaces",
    tag = "workspaces",
    request_body = CreateBody,
    responses(
        (status = 201, body = WorkspaceCreated),
        (status = 400, description = "Invalid fields, or the parent does not exist", body = ErrorBody),
        (status = 409, description = "The name is taken under this parent", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let created = workspaces::create(&state.svc, body.into_request()).await?;
    let connection = created
        .auth_token
        .as_ref()
        .map(|token| Connection::new(&state, &headers, created.id, Some(token)));
    let response = WorkspaceCreated {
        id: created.id,
        status: created.status.as_str(),
        awareness_namespace: created.awareness_namespace,
        workspace_access: created.workspace_access,
        external: created.external.then_some(true),
        connection,
    };
    Ok((StatusCode::CREATED, axum::Json(response)))
}

impl CreateBody {
    /// The creation request (checked by [`workspaces::check`] inside [`workspaces::create`]).
    pub fn into_request(self) -> CreateRequest {
        CreateRequest {
            name: self.name.unwrap_or_default(),
            role: self.role,
            template: self.template.filter(|t| !t.is_empty()),
            tier: self.tier,
            model: self.model,
            runtime: self.runtime,
            external: self.external,
            url: self.url.filter(|u| !u.is_empty()),
            workspace_dir: self.workspace_dir.filter(|d| !d.is_empty()),
            workspace_access: self.workspace_access.filter(|a| !a.is_empty()),
            parent_id: self.parent_id,
            budget_limit: self.budget_limit,
            secrets: self.secrets.into_iter().collect(),
            max_concurrent_tasks: self.max_concurrent_tasks,
            canvas: self.canvas.map(|c| (c.x, c.y)),
            hibernation_idle_minutes: self.hibernation_idle_minutes,
            ..CreateRequest::default()
        }
    }
}

/// The URL agents should call this host on, as seen by the client that asked.
fn platform_url(state: &AppState, headers: &HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    match header("x-forwarded-host").or_else(|| header("host")) {
        Some(host)
            if host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) =>
        {
            format!("{scheme}://{host}")
        }
        _ => format!(
            "http://{}",
            state
                .svc
                .config
                .listen_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        ),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GetQuery {
    /// Answer a removed workspace's tombstone instead of 410.
    #[serde(default)]
    include_removed: bool,
}

/// The `410 Gone` answer for a removed workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceGone {
    error: &'static str,
    id: Uuid,
    removed_at: Option<DateTime<Utc>>,
    hint: &'static str,
}

impl WorkspaceGone {
    pub fn of(row: &WorkspaceRow) -> Self {
        WorkspaceGone {
            error: "workspace removed",
            id: row.id,
            removed_at: row.removed_at,
            hint: "this workspace was deleted; pass ?include_removed=true to read its tombstone",
        }
    }
}

/// One workspace: for the operator, the workspace itself, or a workspace that may talk to it
/// (an agent reads its own row and its parent's). Open in development on loopback, where the
/// original's canvas reads it without a token.
#[utoipa::path(
    get,
    path = "/workspaces/{id}",
    tag = "workspaces",
    params(WorkspaceIdParam, GetQuery),
    responses(
        (status = 200, body = WorkspaceDetail),
        (status = 400, description = "Invalid workspace id or query", body = ErrorBody),
        (status = 403, description = "The caller's workspace may not talk to this one", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn get_one(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    Creds(creds): Creds,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> ApiResult<impl IntoResponse> {
    if !state.svc.guard.development(&creds) {
        match state.svc.guard.any(&creds).await? {
            Principal::Admin => {}
            Principal::Workspace(me) => {
                if !workspaces::access::can_communicate(&state.svc, me, id).await? {
                    return Err(ApiError::forbidden("workspaces may not communicate"));
                }
            }
        }
    }
    state.svc.writes.flush().await;
    match workspaces::get_live(&state.svc, id).await {
        Ok(row) => Ok(axum::Json(detail(&row))),
        Err(WorkspaceError::Removed(row)) if q.include_removed => Ok(axum::Json(detail(&row))),
        Err(err) => Err(err.into()),
    }
}

/// The fields PATCH accepts; any other key is refused (400).
// Read from the body's map by `parse_patch` rather than by `ApiJson` directly: the handler first
// looks at which keys came (a workspace token may send only some). A field sent as `null`
// (clear it) differs from one that is absent (keep it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "given")]
    name: Option<String>,
    /// `null` clears the role.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    role: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    tier: Option<i64>,
    #[serde(default, deserialize_with = "given")]
    runtime: Option<String>,
    /// `null` moves the workspace to the top level.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    parent_id: Option<Option<Uuid>>,
    /// Canvas position; `x` and `y` come together.
    #[serde(default, deserialize_with = "given")]
    x: Option<f64>,
    #[serde(default, deserialize_with = "given")]
    y: Option<f64>,
    #[serde(default, deserialize_with = "given")]
    collapsed: Option<bool>,
    #[serde(default, deserialize_with = "given")]
    update_tier: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    workspace_dir: Option<Option<String>>,
    /// Minutes of idleness before the agent is hibernated (0 to 43200); `null` or 0: never.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    hibernation_idle_minutes: Option<Option<i64>>,
    /// Ignored: only the admin's budget route changes the budget.
    #[serde(default, rename = "budget_limit")]
    _budget_limit: Option<Value>,
}

/// A field that, when present, must hold a value (`null` is refused).
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A field where `null` means "clear it": present-and-null is `Some(None)`.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Why a PATCH body did not parse: the first offending key, in key order, decides.
#[derive(Debug)]
enum PatchRefusal {
    Unsupported,
    InvalidParent,
    InvalidIdleMinutes,
    Invalid,
}

impl std::fmt::Display for PatchRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PatchRefusal {}

impl serde::de::Error for PatchRefusal {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        PatchRefusal::Invalid
    }
    fn unknown_field(_: &str, _: &'static [&'static str]) -> Self {
        PatchRefusal::Unsupported
    }
}

impl PatchRefusal {
    fn message(&self) -> &'static str {
        match self {
            PatchRefusal::Unsupported => "unsupported field in request body",
            PatchRefusal::InvalidParent => "invalid parent_id",
            PatchRefusal::InvalidIdleMinutes => {
                "hibernation_idle_minutes must be between 0 and 43200"
            }
            PatchRefusal::Invalid => "invalid workspace fields",
        }
    }
}

/// The body's entries for [`PatchBody`]'s derived visitor, with its errors told apart: an
/// unknown key, a bad `parent_id`, any other bad value.
struct PatchFields {
    entries: serde_json::map::IntoIter,
    value: Option<(String, Value)>,
}

impl<'de> serde::de::MapAccess<'de> for PatchFields {
    type Error = PatchRefusal;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PatchRefusal> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let field = seed.deserialize(
            serde::de::IntoDeserializer::<PatchRefusal>::into_deserializer(key.as_str()),
        )?;
        self.value = Some((key, value));
        Ok(Some(field))
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PatchRefusal> {
        let (key, value) = self.value.take().ok_or(PatchRefusal::Invalid)?;
        seed.deserialize(value).map_err(|_| match key.as_str() {
            "parent_id" => PatchRefusal::InvalidParent,
            "hibernation_idle_minutes" => PatchRefusal::InvalidIdleMinutes,
            _ => PatchRefusal::Invalid,
        })
    }
}

/// Parses the PATCH map into typed fields; unknown keys are refused.
fn parse_patch(body: Map<String, Value>) -> ApiResult<PatchRequest> {
    let fields = PatchFields {
        entries: body.into_iter(),
        value: None,
    };
    let body = PatchBody::deserialize(serde::de::value::MapAccessDeserializer::new(fields))
        .map_err(|refusal| ApiError::bad_request(refusal.message()))?;
    let position = match (body.x, body.y) {
        (Some(x), Some(y)) => Some((x, y)),
        (None, None) => None,
        _ => return Err(ApiError::bad_request("x and y must be given together")),
    };
    Ok(PatchRequest {
        name: body.name,
        role: body.role,
        tier: body.tier,
        runtime: body.runtime,
        parent_id: body.parent_id,
        position,
        collapsed: body.collapsed,
        workspace_dir: body.workspace_dir,
        update_tier: body.update_tier,
        hibernation_idle_minutes: body.hibernation_idle_minutes,
    })
}

#[derive(Debug, Serialize, ToSchema)]
struct Updated {
    status: &'static str,
    /// Present (true) when the change takes effect on the next restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_restart: Option<bool>,
}

/// The fields a workspace's own token may change: how it is shown. Where it sits in the tree,
/// what it runs with and what it may mount are the operator's.
const DISPLAY_FIELDS: &[&str] = &["name", "role", "x", "y", "collapsed"];

/// Changes a workspace's fields. The workspace's own token changes its display fields only
/// (`name`, `role`, canvas position, `collapsed`); `parent_id`, `tier`, `runtime`,
/// `update_tier` and `workspace_dir` need the operator's token (403 otherwise).
#[utoipa::path(
    patch,
    path = "/workspaces/{id}",
    tag = "workspaces",
    params(WorkspaceIdParam),
    request_body = PatchBody,
    responses(
        (status = 200, body = Updated),
        (status = 400, description = "Invalid or unknown fields, a cycle, or no such parent", body = ErrorBody),
        (status = 403, description = "A workspace token tried to change an operator's field", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The name is taken under this parent", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn patch(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<impl IntoResponse> {
    let id = access.id;
    // `budget_limit` is ignored whoever sends it (only PATCH /budget changes it).
    if !access.principal.is_admin()
        && body
            .keys()
            .any(|key| !DISPLAY_FIELDS.contains(&key.as_str()) && key != "budget_limit")
    {
        return Err(ApiError::forbidden(
            "a workspace token may change only name, role, x, y and collapsed; parent_id, tier, runtime, update_tier and workspace_dir need an admin or org token",
        ));
    }
    let patch = parse_patch(body)?;
    let moved_to = patch.parent_id;
    let patched = workspaces::patch(&state.svc, id, patch).await?;
    if let Some(parent) = moved_to {
        let entry = crate::audit::Entry::new("workspace.moved", access.principal)
            .workspace(id)
            .target(id.to_string())
            .detail(serde_json::json!({ "parent_id": parent }));
        crate::audit::record(&state.svc, entry).await;
    }
    Ok(axum::Json(Updated {
        status: "updated",
        needs_restart: patched.needs_restart.then_some(true),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Required when the workspace has children: deletes the whole subtree.
    #[serde(default)]
    confirm: bool,
    /// Hard-delete the rows instead of leaving tombstones.
    #[serde(default)]
    purge: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    /// `removed` or `purged`.
    status: &'static str,
    cascade_deleted: usize,
}

/// The 409 answer when the workspace has children and `confirm` was not given.
#[derive(Debug, Serialize, ToSchema)]
struct ConfirmationRequired {
    status: &'static str,
    message: &'static str,
    children: Vec<ChildRef>,
    children_count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChildRef {
    id: Uuid,
    name: String,
}

/// The 500 answer when some agents could not be stopped.
#[derive(Debug, Serialize, ToSchema)]
struct StopFailures {
    error: &'static str,
    removed_count: usize,
    stop_failures: Vec<Uuid>,
}

/// Deletes a workspace and its subtree, stopping their agents.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}",
    tag = "workspaces",
    params(WorkspaceIdParam, DeleteQuery),
    responses(
        (status = 200, body = Deleted),
        (status = 400, description = "Invalid workspace id or query", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The workspace has children; repeat with confirm=true", body = ConfirmationRequired),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 500, description = "Some agents could not be stopped; retry", body = StopFailures),
    ),
    security(("admin_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let children = store::workspaces::live_children(&state.svc.db, id).await?;
    if !children.is_empty() && !q.confirm {
        let children: Vec<ChildRef> = children
            .into_iter()
            .map(|(id, name)| ChildRef { id, name })
            .collect();
        return Err(ApiError::body(
            StatusCode::CONFLICT,
            ConfirmationRequired {
                status: "confirmation_required",
                message: "this workspace has children; repeat with ?confirm=true to delete the whole subtree",
                children_count: children.len(),
                children,
            },
        ));
    }
    let outcome = workspaces::cascade_delete(&state.svc, id, q.purge).await?;
    if !outcome.stop_failures.is_empty() {
        return Err(ApiError::body(
            StatusCode::INTERNAL_SERVER_ERROR,
            StopFailures {
                error: "some agents could not be stopped; the workspaces are removed, retry the delete to finish",
                removed_count: outcome.subtree.len(),
                stop_failures: outcome.stop_failures,
            },
        ));
    }
    Ok(axum::Json(Deleted {
        status: if outcome.purged { "purged" } else { "removed" },
        cascade_deleted: outcome.descendants_removed,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceState {
    workspace_id: Uuid,
    /// Absent when the row is gone; `removed` for a tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<bool>,
    deleted: bool,
}

/// What an agent polls to learn whether it should keep running: with its own token (or the
/// operator's).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/state",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = WorkspaceState),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "Deleted or removed (`deleted: true`)", body = WorkspaceState),
    ),
    security(("workspace_token" = [])),
)]
async fn state(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    Creds(creds): Creds,
) -> ApiResult<impl IntoResponse> {
    state.svc.guard.agent(&creds, id).await?;
    let (status, answer) = match store::workspaces::get(&state.svc.db, id).await? {
        None => (
            StatusCode::NOT_FOUND,
            WorkspaceState {
                workspace_id: id,
                status: None,
                paused: None,
                deleted: true,
            },
        ),
        Some(row) if row.status == Status::Removed => (
            StatusCode::NOT_FOUND,
            WorkspaceState {
                workspace_id: id,
                status: Some(row.status.to_string()),
                paused: None,
                deleted: true,
            },
        ),
        Some(row) => (
            StatusCode::OK,
            WorkspaceState {
                workspace_id: id,
                paused: Some(row.status == Status::Paused),
                status: Some(row.status.to_string()),
                deleted: false,
            },
        ),
    };
    Ok((status, axum::Json(answer)))
}

/// Largest config object PATCH accepts.
const MAX_CONFIG_BYTES: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
struct ConfigBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// The workspace's config object (free-form).
    #[schema(value_type = Object)]
    data: Value,
}

/// The workspace's free-form config object.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/config",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = ConfigBody),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn get_config(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    workspaces::get_live(&state.svc, id).await?;
    let data = store::workspace_config::get(&state.svc.db, id)
        .await?
        .unwrap_or_else(|| json!({}));
    Ok(axum::Json(ConfigBody { status: None, data }))
}

/// Merges keys into the config object (top level; `null` deletes a key).
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/config",
    tag = "workspaces",
    params(WorkspaceIdParam),
    request_body(content = Object, description = "Keys to merge (at most 256 KiB)"),
    responses(
        (status = 200, body = ConfigBody),
        (status = 400, description = "Not a JSON object, or invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn patch_config(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    // Over the host-wide body limit: the same answer every JSON route gives, not axum's text.
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::Status(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::bad_request("invalid request body")
        }
    })?;
    if body.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "config is larger than 256 KiB",
        ));
    }
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::bad_request("config must be a JSON object"));
    };
    if patch
        .iter()
        .any(|(k, v)| k.contains('\0') || contains_nul(v))
    {
        return Err(nul_rejection());
    }
    workspaces::get_live(&state.svc, id).await?;
    let data = store::workspace_config::merge(&state.svc.db, id, &patch).await?;
    Ok(axum::Json(ConfigBody {
        status: Some("updated"),
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_parsing_refuses_half_positions_and_unknown_fields() {
        let parse = |v: Value| parse_patch(v.as_object().unwrap().clone());
        assert!(parse(json!({ "x": 1.0 })).is_err());
        assert!(parse(json!({ "bogus": 1 })).is_err());
        assert!(parse(json!({ "parent_id": "not-a-uuid" })).is_err());
        let ok =
            parse(json!({ "x": 1.0, "y": 2, "parent_id": null, "role": null, "budget_limit": 5 }))
                .unwrap();
        assert_eq!(ok.position, Some((1.0, 2.0)));
        assert_eq!(ok.parent_id, Some(None));
        assert_eq!(ok.role, Some(None));
    }

    /// The first offending key in key order decides the message, as it did when the map was
    /// walked by hand; `null` clears only the fields that can be cleared.
    #[test]
    fn patch_refusals_name_the_first_offending_key() {
        let refusal = |v: Value| match parse_patch(v.as_object().unwrap().clone()) {
            Err(ApiError::Status(StatusCode::BAD_REQUEST, message)) => message,
            other => panic!("not a 400: {other:?}"),
        };
        let unsupported = "unsupported field in request body";
        let invalid = "invalid workspace fields";
        assert_eq!(refusal(json!({ "aaa": 1, "name": 5 })), unsupported);
        assert_eq!(refusal(json!({ "name": 5, "zzz": 1 })), invalid);
        assert_eq!(refusal(json!({ "name": null })), invalid);
        assert_eq!(refusal(json!({ "tier": 1.5 })), invalid);
        assert_eq!(refusal(json!({ "parent_id": 7 })), "invalid parent_id");
        assert_eq!(
            refusal(json!({ "x": 1, "y": null })),
            invalid,
            "null is not a coordinate"
        );
        let ok = parse_patch(
            json!({ "name": "n", "tier": 2, "workspace_dir": null, "collapsed": true, "x": 1, "y": 2.5 })
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("n"));
        assert_eq!(ok.tier, Some(2));
        assert_eq!(ok.workspace_dir, Some(None));
        assert_eq!(ok.collapsed, Some(true));
        assert_eq!(ok.position, Some((1.0, 2.5)));
        assert_eq!(ok.role, None);
    }
}
