//! `/workspaces`: list, get, create, patch, cascade delete, state and the per-workspace config.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{
    AdminAuth, ApiJson, ApiQuery, WorkspaceAuth, WorkspacePath, contains_nul, nul_rejection,
};
use crate::store::workspaces::WorkspaceRow;
use crate::workspaces::{self, CreateRequest, PatchRequest, Status, WorkspaceError};
use crate::{auth, store};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces", get(list).post(create))
        .route("/workspaces/{id}", get(get_one).patch(patch).delete(delete))
        .route("/workspaces/{id}/state", get(state))
        .route(
            "/workspaces/{id}/config",
            get(get_config).patch(patch_config),
        )
}

/// The list shape (reference §2.4): every field the canvas reads.
fn list_json(row: &WorkspaceRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "tier": row.tier,
        "status": row.status,
        "url": row.url,
        "parent_id": row.parent_id,
        "active_tasks": row.active_tasks,
        "max_concurrent_tasks": row.max_concurrent_tasks,
        "last_error_rate": row.last_error_rate,
        "last_sample_error": row.last_sample_error,
        "uptime_seconds": row.uptime_seconds,
        "current_task": row.current_task,
        "runtime": row.runtime,
        "workspace_dir": row.workspace_dir,
        "monthly_spend": row.monthly_spend,
        "budget_limit": row.budget_limit,
        "x": row.x,
        "y": row.y,
        "collapsed": row.collapsed,
        "agent_card": row.agent_card,
        "update_tier": row.update_tier,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// The single-workspace shape: the list shape minus operator-only fields, plus activity times.
fn detail_json(row: &WorkspaceRow) -> Value {
    let mut value = list_json(row);
    if let Value::Object(map) = &mut value {
        for field in [
            "budget_limit",
            "monthly_spend",
            "current_task",
            "last_sample_error",
            "workspace_dir",
        ] {
            map.remove(field);
        }
        map.insert("last_outbound_at".into(), json!(row.last_outbound_at));
        map.insert("last_heartbeat_at".into(), json!(row.last_heartbeat_at));
        if row.status == Status::Removed.as_str() {
            map.insert("removed_at".into(), json!(row.removed_at));
        }
    }
    value
}

async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = store::workspaces::list_live(&state.svc.db).await?;
    Ok(axum::Json(Value::Array(
        rows.iter().map(list_json).collect(),
    )))
}

#[derive(Debug, Deserialize)]
struct CreateBody {
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
}

#[derive(Debug, Deserialize)]
struct CanvasPosition {
    x: f64,
    y: f64,
}

async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let request = CreateRequest {
        name: body.name.unwrap_or_default(),
        role: body.role,
        template: body.template.filter(|t| !t.is_empty()),
        tier: body.tier,
        model: body.model,
        runtime: body.runtime,
        external: body.external,
        url: body.url.filter(|u| !u.is_empty()),
        workspace_dir: body.workspace_dir.filter(|d| !d.is_empty()),
        workspace_access: body.workspace_access.filter(|a| !a.is_empty()),
        parent_id: body.parent_id,
        budget_limit: body.budget_limit,
        secrets: body.secrets.into_iter().collect(),
        max_concurrent_tasks: body.max_concurrent_tasks,
        canvas: body.canvas.map(|c| (c.x, c.y)),
        ..CreateRequest::default()
    };
    let created = workspaces::create(&state.svc, request).await?;
    let mut response = json!({
        "id": created.id,
        "status": created.status.as_str(),
        "awareness_namespace": created.awareness_namespace,
        "workspace_access": created.workspace_access,
    });
    if created.external {
        response["external"] = json!(true);
    }
    if let Some(token) = &created.auth_token {
        let platform_url = platform_url(&state, &headers);
        response["connection"] = json!({
            "workspace_id": created.id,
            "platform_url": platform_url,
            "auth_token": secrecy::ExposeSecret::expose_secret(token),
            "registry_endpoint": format!("{platform_url}/registry/register"),
            "heartbeat_endpoint": format!("{platform_url}/registry/heartbeat"),
        });
    }
    Ok((StatusCode::CREATED, axum::Json(response)))
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

#[derive(Debug, Deserialize)]
struct GetQuery {
    #[serde(default)]
    include_removed: bool,
}

async fn get_one(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> ApiResult<impl IntoResponse> {
    match workspaces::get_live(&state.svc, id).await {
        Ok(row) => Ok(axum::Json(detail_json(&row))),
        Err(WorkspaceError::Removed(row)) if q.include_removed => Ok(axum::Json(detail_json(&row))),
        Err(err) => Err(err.into()),
    }
}

/// Parses the free-form PATCH map into typed fields; unknown keys are refused.
fn parse_patch(body: Map<String, Value>) -> ApiResult<PatchRequest> {
    const BAD: &str = "invalid workspace fields";
    let mut req = PatchRequest::default();
    let (mut x, mut y) = (None, None);
    for (key, value) in body {
        match key.as_str() {
            "name" => req.name = Some(value.as_str().ok_or(ApiError::bad_request(BAD))?.to_owned()),
            "role" => {
                req.role = Some(match value {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    _ => return Err(ApiError::bad_request(BAD)),
                })
            }
            "tier" => req.tier = Some(value.as_i64().ok_or(ApiError::bad_request(BAD))?),
            "runtime" => {
                req.runtime = Some(value.as_str().ok_or(ApiError::bad_request(BAD))?.to_owned())
            }
            "parent_id" => {
                req.parent_id = Some(match value {
                    Value::Null => None,
                    Value::String(s) => Some(
                        Uuid::parse_str(&s)
                            .map_err(|_| ApiError::bad_request("invalid parent_id"))?,
                    ),
                    _ => return Err(ApiError::bad_request("invalid parent_id")),
                })
            }
            "x" => x = Some(value.as_f64().ok_or(ApiError::bad_request(BAD))?),
            "y" => y = Some(value.as_f64().ok_or(ApiError::bad_request(BAD))?),
            "collapsed" => req.collapsed = Some(value.as_bool().ok_or(ApiError::bad_request(BAD))?),
            "update_tier" => {
                req.update_tier = Some(value.as_str().ok_or(ApiError::bad_request(BAD))?.to_owned())
            }
            "workspace_dir" => {
                req.workspace_dir = Some(match value {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    _ => return Err(ApiError::bad_request(BAD)),
                })
            }
            // Only PATCH /budget (admin) may change the budget; the canvas sends it along anyway.
            "budget_limit" => {}
            _ => return Err(ApiError::bad_request("unsupported field in request body")),
        }
    }
    req.position = match (x, y) {
        (Some(x), Some(y)) => Some((x, y)),
        (None, None) => None,
        _ => return Err(ApiError::bad_request("x and y must be given together")),
    };
    Ok(req)
}

async fn patch(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<impl IntoResponse> {
    let patched = workspaces::patch(&state.svc, id, parse_patch(body)?).await?;
    let mut response = json!({ "status": "updated" });
    if patched.needs_restart {
        response["needs_restart"] = json!(true);
    }
    Ok(axum::Json(response))
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    purge: bool,
}

async fn delete(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let children = store::workspaces::live_children(&state.svc.db, id).await?;
    if !children.is_empty() && !q.confirm {
        let listed: Vec<Value> = children
            .iter()
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .collect();
        return Err(ApiError::Body(
            StatusCode::CONFLICT,
            json!({
                "status": "confirmation_required",
                "message": "this workspace has children; repeat with ?confirm=true to delete the whole subtree",
                "children": listed,
                "children_count": children.len(),
            }),
        ));
    }
    let outcome = workspaces::cascade_delete(&state.svc, id, q.purge).await?;
    if !outcome.stop_failures.is_empty() {
        return Err(ApiError::Body(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": "some agents could not be stopped; the workspaces are removed, retry the delete to finish",
                "removed_count": outcome.subtree.len(),
                "stop_failures": outcome.stop_failures,
            }),
        ));
    }
    Ok(axum::Json(json!({
        "status": if outcome.purged { "purged" } else { "removed" },
        "cascade_deleted": outcome.descendants_removed,
    })))
}

async fn state(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    state
        .svc
        .guard
        .workspace_self(auth::bearer(&headers), id)
        .await?;
    match store::workspaces::get(&state.svc.db, id).await? {
        None => Ok((
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "workspace_id": id, "deleted": true })),
        )),
        Some(row) if row.status == Status::Removed.as_str() => Ok((
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "workspace_id": id, "status": "removed", "deleted": true })),
        )),
        Some(row) => Ok((
            StatusCode::OK,
            axum::Json(json!({
                "workspace_id": id,
                "status": row.status,
                "paused": row.status == Status::Paused.as_str(),
                "deleted": false,
            })),
        )),
    }
}

/// Largest config object PATCH accepts.
const MAX_CONFIG_BYTES: usize = 256 * 1024;

async fn get_config(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<impl IntoResponse> {
    workspaces::get_live(&state.svc, id).await?;
    let data = store::workspace_config::get(&state.svc.db, id)
        .await?
        .unwrap_or_else(|| json!({}));
    Ok(axum::Json(json!({ "data": data })))
}

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
    Ok(axum::Json(json!({ "status": "updated", "data": data })))
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
}
