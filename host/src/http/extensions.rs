//! `/admin/extensions`: upload, list, activate, roll back, shadow and delete extension versions.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use super::openapi::{ErrorBody, StatusBody};
use crate::audit;
use crate::auth::Principal;
use crate::extensions::reason;
use crate::extensions::registry::{self, MAX_COMPONENT_BYTES, RegistryError, Slot};
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(
            // Base64 makes a component a third larger; leave room for the manifest.
            routes!(list, upload).layer(DefaultBodyLimit::max(
                MAX_COMPONENT_BYTES * 4 / 3 + 64 * 1024,
            )),
        )
        // One parameter name for both shapes: the router cannot tell `{id}` from `{slot}`.
        .routes(routes!(remove))
        .routes(routes!(activate))
        .routes(routes!(rollback))
        .routes(routes!(shadow, stop_shadow))
        .routes(routes!(shadow_report))
}

/// `{key}` as an extension version's id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct IdKey {
    /// The extension version's id (a UUID; anything else is a 400).
    #[param(value_type = Uuid)]
    key: String,
}

impl IdKey {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.key).map_err(|_| ApiError::bad_request("invalid extension ID"))
    }
}

/// `{key}` as a slot.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SlotKey {
    /// `classifier`, `restart-policy` or `resolver:<scheme>` (anything else is a 400).
    key: String,
}

impl SlotKey {
    fn slot(&self) -> ApiResult<Slot> {
        Slot::parse(&self.key).ok_or(ApiError::bad_request(
            "slot must be classifier, restart-policy or resolver:<scheme>",
        ))
    }
}

/// The 422 answer for a refused component, and the 409 for a duplicate.
#[derive(Debug, Serialize, ToSchema)]
struct Refused {
    error: &'static str,
    /// Why (for 422): the world, version or import at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The stored version (for 409).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::InvalidManifest(message) => ApiError::bad_request(message),
            // The operator must learn why their component was refused; the message names the
            // world, version or import at fault and nothing from the host's internals.
            // The detail is the inner reason only: `error` already says "component rejected",
            // and a client that joins the two must not read it twice.
            RegistryError::Rejected(inner) => ApiError::body(
                StatusCode::UNPROCESSABLE_ENTITY,
                Refused {
                    error: "component rejected",
                    detail: Some(reason::public(&inner.to_string())),
                    id: None,
                },
            ),
            RegistryError::SelfCheck(inner) => ApiError::body(
                StatusCode::UNPROCESSABLE_ENTITY,
                Refused {
                    error: "component rejected",
                    detail: Some(reason::public(&format!(
                        "it failed its self-check: {inner}"
                    ))),
                    id: None,
                },
            ),
            RegistryError::NotFound => ApiError::not_found("extension not found"),
            RegistryError::Duplicate(row) => ApiError::body(
                StatusCode::CONFLICT,
                Refused {
                    error: "this component is already stored for the slot",
                    detail: None,
                    id: Some(row.id),
                },
            ),
            RegistryError::Active => ApiError::Status(
                StatusCode::CONFLICT,
                "the active version of a slot cannot be deleted",
            ),
            RegistryError::Builtin => {
                ApiError::Status(StatusCode::CONFLICT, "a built-in version cannot be deleted")
            }
            RegistryError::NotShadowing => ApiError::Status(
                StatusCode::CONFLICT,
                "this version is not shadowing its slot",
            ),
            RegistryError::NoPrevious => {
                ApiError::Status(StatusCode::CONFLICT, "no earlier version to roll back to")
            }
            RegistryError::Unsupported(message) => ApiError::Status(StatusCode::CONFLICT, message),
            RegistryError::Store(err) => err.into(),
            RegistryError::Io(err) => ApiError::internal(err),
        }
    }
}

/// One stored extension version.
#[derive(Debug, Serialize, ToSchema)]
struct ExtensionVersion {
    id: Uuid,
    name: String,
    version: String,
    slot: String,
    /// sha256 of the component.
    digest: String,
    /// The grants the manifest asked for.
    grants: Option<Value>,
    builtin: bool,
    active: bool,
    shadow: bool,
    created_at: DateTime<Utc>,
}

fn version(row: &store::extensions::ExtensionRow, active: bool, shadow: bool) -> ExtensionVersion {
    ExtensionVersion {
        id: row.id,
        name: row.name.clone(),
        version: row.version.clone(),
        slot: row.slot.clone(),
        digest: row.digest.clone(),
        grants: row.manifest.get("grants").cloned(),
        builtin: row.builtin,
        active,
        shadow,
        created_at: row.created_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct SlotState {
    slot: String,
    active_id: Option<Uuid>,
    shadow_id: Option<Uuid>,
    /// The version a rollback would re-activate; `null` when the slot has no earlier one.
    previous_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Extensions {
    slots: Vec<SlotState>,
    extensions: Vec<ExtensionVersion>,
}

/// Every slot and every stored version.
#[utoipa::path(
    get,
    path = "/admin/extensions",
    tag = "extensions",
    responses((status = 200, body = Extensions)),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let host = &state.svc.extensions;
    let slots = host.slot_versions();
    let rows = store::extensions::list(&state.svc.db).await?;
    let extensions: Vec<ExtensionVersion> = rows
        .iter()
        .map(|row| {
            let active = slots.iter().any(|(_, a, _)| *a == Some(row.id));
            let shadow = slots.iter().any(|(_, _, s)| *s == Some(row.id));
            version(row, active, shadow)
        })
        .collect();
    let mut states = Vec::with_capacity(slots.len());
    for (slot, active, shadow) in &slots {
        states.push(SlotState {
            slot: slot.as_str().to_owned(),
            active_id: *active,
            shadow_id: *shadow,
            previous_id: host.previous(slot).await?,
        });
    }
    let slots = states;
    Ok(axum::Json(Extensions { slots, extensions }))
}

/// What an extension asks for; the operator's confirmation and the host's maximum cut it down.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
struct Grants {
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    /// Resolvers only: hosts (`name` or `name:port`) `remote` calls may reach.
    allowed_hosts: Vec<String>,
    /// Resolvers only: directories mounted read-only, by the name the host offers them under
    /// (`plugins-registry`) or by their path.
    read_only_dirs: Vec<String>,
}

impl From<Grants> for registry::Grants {
    fn from(grants: Grants) -> Self {
        registry::Grants {
            deadline_ms: grants.deadline_ms,
            memory_mb: grants.memory_mb,
            allowed_hosts: grants.allowed_hosts,
            read_only_dirs: grants.read_only_dirs,
        }
    }
}

/// The manifest uploaded with a component.
#[derive(Debug, Deserialize, ToSchema)]
struct Manifest {
    name: String,
    version: String,
    slot: String,
    #[serde(default)]
    grants: Grants,
}

impl From<Manifest> for registry::Manifest {
    fn from(manifest: Manifest) -> Self {
        registry::Manifest {
            name: manifest.name,
            version: manifest.version,
            slot: manifest.slot,
            grants: manifest.grants.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct UploadBody {
    manifest: Manifest,
    /// The component's bytes, base64 (standard alphabet).
    component: String,
    /// The grants the operator confirms; the effective grant is the intersection.
    confirm: Option<Grants>,
}

/// Stores a new extension version (checked against its world and the host's self-test).
#[utoipa::path(
    post,
    path = "/admin/extensions",
    tag = "extensions",
    request_body = UploadBody,
    responses(
        (status = 201, body = ExtensionVersion),
        (status = 400, description = "Invalid manifest or base64", body = ErrorBody),
        (status = 409, description = "This component is already stored for the slot", body = Refused),
        (status = 422, description = "The component was refused", body = Refused),
    ),
    security(("admin_token" = [])),
)]
async fn upload(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<UploadBody>,
) -> ApiResult<impl IntoResponse> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.component.as_bytes())
        .map_err(|_| ApiError::bad_request("component must be base64"))?;
    let row = state
        .svc
        .extensions
        .upload(
            body.manifest.into(),
            bytes,
            body.confirm.map(Into::into),
            false,
        )
        .await?;
    let entry = audit::Entry::new("extension.installed", Principal::Admin)
        .target(row.id.to_string())
        .detail(json!({ "slot": row.slot, "name": row.name, "version": row.version, "digest": row.digest }));
    audit::record(&state.svc, entry).await;
    Ok((StatusCode::CREATED, axum::Json(version(&row, false, false))))
}

#[derive(Debug, Serialize, ToSchema)]
struct SlotChanged {
    /// `activated`, `rolled_back`, `shadowing` or `shadow_stopped`.
    status: &'static str,
    slot: String,
    id: Uuid,
    /// On rollback: the version now active.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

/// `changed` as the answer, after recording it in the audit ledger as `event_type`.
async fn audited(
    state: &AppState,
    event_type: &'static str,
    changed: SlotChanged,
) -> axum::Json<SlotChanged> {
    let entry = audit::Entry::new(event_type, Principal::Admin)
        .target(changed.id.to_string())
        .detail(json!({ "slot": changed.slot, "version": changed.version }));
    audit::record(&state.svc, entry).await;
    axum::Json(changed)
}

/// Makes a version the active one of its slot.
#[utoipa::path(
    post,
    path = "/admin/extensions/{key}/activate",
    tag = "extensions",
    params(IdKey),
    responses(
        (status = 200, body = SlotChanged),
        (status = 400, description = "Invalid extension id", body = ErrorBody),
        (status = 404, description = "No such extension", body = ErrorBody),
        (status = 409, description = "Not possible for this slot", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn activate(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<IdKey>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.activate(key.id()?).await?;
    Ok(audited(
        &state,
        "extension.activated",
        SlotChanged {
            status: "activated",
            slot: row.slot,
            id: row.id,
            version: None,
        },
    )
    .await)
}

/// Re-activates the slot's previous version.
#[utoipa::path(
    post,
    path = "/admin/extensions/{key}/rollback",
    tag = "extensions",
    params(SlotKey),
    responses(
        (status = 200, body = SlotChanged),
        (status = 400, description = "Invalid slot", body = ErrorBody),
        (status = 404, description = "No such extension", body = ErrorBody),
        (status = 409, description = "No earlier version", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn rollback(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<SlotKey>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.rollback(&key.slot()?).await?;
    Ok(audited(
        &state,
        "extension.rolled_back",
        SlotChanged {
            status: "rolled_back",
            slot: row.slot,
            id: row.id,
            version: Some(row.version),
        },
    )
    .await)
}

/// Runs a version beside the active one, comparing their answers.
#[utoipa::path(
    post,
    path = "/admin/extensions/{key}/shadow",
    tag = "extensions",
    params(IdKey),
    responses(
        (status = 200, body = SlotChanged),
        (status = 400, description = "Invalid extension id", body = ErrorBody),
        (status = 404, description = "No such extension", body = ErrorBody),
        (status = 409, description = "Not possible for this slot", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn shadow(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<IdKey>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.shadow(key.id()?).await?;
    Ok(audited(
        &state,
        "extension.shadowed",
        SlotChanged {
            status: "shadowing",
            slot: row.slot,
            id: row.id,
            version: None,
        },
    )
    .await)
}

/// Stops a version running in shadow (the slot keeps its active version; the candidate's
/// results are kept).
#[utoipa::path(
    delete,
    path = "/admin/extensions/{key}/shadow",
    tag = "extensions",
    params(IdKey),
    responses(
        (status = 200, body = SlotChanged),
        (status = 400, description = "Invalid extension id", body = ErrorBody),
        (status = 404, description = "No such extension", body = ErrorBody),
        (status = 409, description = "The version is not shadowing its slot", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn stop_shadow(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<IdKey>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.stop_shadow(key.id()?).await?;
    Ok(audited(
        &state,
        "extension.unshadowed",
        SlotChanged {
            status: "shadow_stopped",
            slot: row.slot,
            id: row.id,
            version: None,
        },
    )
    .await)
}

/// How the slot's shadow candidate compares with the active version.
// The fields here and in `ShadowDisagreement` are in alphabetical order: the report used to be a
// `json!` map, whose keys go out sorted, and clients see the same bytes.
#[derive(Debug, Serialize, ToSchema)]
struct ShadowReport {
    active_id: Option<Uuid>,
    agree: i64,
    calls: i64,
    candidate_failed: i64,
    candidate_id: Uuid,
    disagree: i64,
    /// The latest disagreements (and candidate failures), newest first, at most 20.
    recent: Vec<ShadowDisagreement>,
    slot: String,
}

impl From<&registry::ShadowReport> for ShadowReport {
    fn from(report: &registry::ShadowReport) -> Self {
        ShadowReport {
            active_id: report.active_id,
            agree: report.agree,
            calls: report.calls(),
            candidate_failed: report.candidate_failed,
            candidate_id: report.candidate_id,
            disagree: report.disagree,
            recent: report.recent.iter().map(Into::into).collect(),
            slot: report.slot.as_str().to_owned(),
        }
    }
}

/// One call on which the candidate disagreed with the active version, or failed.
#[derive(Debug, Serialize, ToSchema)]
struct ShadowDisagreement {
    /// The active version's answer.
    active: Option<Value>,
    /// How long the active version took, in microseconds.
    active_us: i64,
    at: DateTime<Utc>,
    /// The candidate's answer.
    candidate: Option<Value>,
    candidate_us: i64,
    /// What both were asked.
    input: Option<Value>,
    /// `disagree` or `candidate_failed`.
    outcome: String,
}

impl From<&store::extensions::ShadowResultRow> for ShadowDisagreement {
    fn from(row: &store::extensions::ShadowResultRow) -> Self {
        ShadowDisagreement {
            active: row.active_answer.clone(),
            active_us: row.active_us,
            at: row.created_at,
            candidate: row.candidate_answer.clone(),
            candidate_us: row.candidate_us,
            input: row.input.clone(),
            outcome: row.outcome.clone(),
        }
    }
}

/// The shadow report of a slot.
#[utoipa::path(
    get,
    path = "/admin/extensions/{key}/shadow-report",
    tag = "extensions",
    params(SlotKey),
    responses(
        (status = 200, body = ShadowReport),
        (status = 400, description = "Invalid slot", body = ErrorBody),
        (status = 404, description = "No shadow candidate for the slot", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn shadow_report(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<SlotKey>,
) -> ApiResult<impl IntoResponse> {
    let report = state.svc.extensions.shadow_report(&key.slot()?).await?;
    Ok(axum::Json(ShadowReport::from(&report)))
}

/// Deletes a stored version (not the active one, not a built-in one).
#[utoipa::path(
    delete,
    path = "/admin/extensions/{key}",
    tag = "extensions",
    params(IdKey),
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "Invalid extension id", body = ErrorBody),
        (status = 404, description = "No such extension", body = ErrorBody),
        (status = 409, description = "The version is active or built in", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn remove(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<IdKey>,
) -> ApiResult<impl IntoResponse> {
    let id = key.id()?;
    state.svc.extensions.delete(id).await?;
    let entry = audit::Entry::new("extension.deleted", Principal::Admin).target(id.to_string());
    audit::record(&state.svc, entry).await;
    Ok(axum::Json(StatusBody { status: "deleted" }))
}
