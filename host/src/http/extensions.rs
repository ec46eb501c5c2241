//! `/admin/extensions`: upload, list, activate, roll back, shadow and delete extension versions.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use crate::extensions::registry::{Grants, MAX_COMPONENT_BYTES, Manifest, RegistryError, Slot};
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/extensions",
            // Base64 makes a component a third larger; leave room for the manifest.
            get(list).post(upload).layer(DefaultBodyLimit::max(
                MAX_COMPONENT_BYTES * 4 / 3 + 64 * 1024,
            )),
        )
        // One parameter name for both shapes: the router cannot tell `{id}` from `{slot}`.
        .route("/admin/extensions/{key}", axum::routing::delete(remove))
        .route("/admin/extensions/{key}/activate", post(activate))
        .route("/admin/extensions/{key}/rollback", post(rollback))
        .route("/admin/extensions/{key}/shadow", post(shadow))
        .route("/admin/extensions/{key}/shadow-report", get(shadow_report))
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::InvalidManifest(message) => ApiError::bad_request(message),
            // The operator must learn why their component was refused; the message names the
            // world, version or import at fault and nothing from the host's internals.
            RegistryError::Rejected(_) | RegistryError::SelfCheck(_) => ApiError::Body(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "component rejected", "detail": err.to_string() }),
            ),
            RegistryError::NotFound => ApiError::not_found("extension not found"),
            RegistryError::Duplicate(row) => ApiError::Body(
                StatusCode::CONFLICT,
                json!({ "error": "this component is already stored for the slot", "id": row.id }),
            ),
            RegistryError::Active => ApiError::Status(
                StatusCode::CONFLICT,
                "the active version of a slot cannot be deleted",
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

fn row_json(row: &store::extensions::ExtensionRow, active: bool, shadow: bool) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "slot": row.slot,
        "digest": row.digest,
        "grants": row.manifest.get("grants"),
        "builtin": row.builtin,
        "active": active,
        "shadow": shadow,
        "created_at": row.created_at,
    })
}

async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let host = &state.svc.extensions;
    let slots = host.slot_versions();
    let rows = store::extensions::list(&state.svc.db).await?;
    let extensions: Vec<Value> = rows
        .iter()
        .map(|row| {
            let active = slots.iter().any(|(_, a, _)| *a == Some(row.id));
            let shadow = slots.iter().any(|(_, _, s)| *s == Some(row.id));
            row_json(row, active, shadow)
        })
        .collect();
    let slots: Vec<Value> = slots
        .iter()
        .map(|(slot, active, shadow)| json!({ "slot": slot.as_str(), "active_id": active, "shadow_id": shadow }))
        .collect();
    Ok(axum::Json(
        json!({ "slots": slots, "extensions": extensions }),
    ))
}

#[derive(Debug, Deserialize)]
struct UploadBody {
    manifest: Manifest,
    /// The component's bytes, base64 (standard alphabet).
    component: String,
    /// The grants the operator confirms; the effective grant is the intersection.
    confirm: Option<Grants>,
}

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
        .upload(body.manifest, bytes, body.confirm, false)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(row_json(&row, false, false)),
    ))
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("invalid extension ID"))
}

fn parse_slot(raw: &str) -> ApiResult<Slot> {
    Slot::parse(raw).ok_or(ApiError::bad_request(
        "slot must be classifier, restart-policy or resolver:<scheme>",
    ))
}

async fn activate(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.activate(parse_id(&key)?).await?;
    Ok(axum::Json(
        json!({ "status": "activated", "slot": row.slot, "id": row.id }),
    ))
}

async fn rollback(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.rollback(&parse_slot(&key)?).await?;
    Ok(axum::Json(
        json!({ "status": "rolled_back", "slot": row.slot, "id": row.id, "version": row.version }),
    ))
}

async fn shadow(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let row = state.svc.extensions.shadow(parse_id(&key)?).await?;
    Ok(axum::Json(
        json!({ "status": "shadowing", "slot": row.slot, "id": row.id }),
    ))
}

async fn shadow_report(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let report = state
        .svc
        .extensions
        .shadow_report(&parse_slot(&key)?)
        .await?;
    Ok(axum::Json(report))
}

async fn remove(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(key): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.svc.extensions.delete(parse_id(&key)?).await?;
    Ok(axum::Json(json!({ "status": "deleted" })))
}
