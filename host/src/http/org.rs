//! `GET /org/templates` and `POST /org/import` (admin).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use crate::org::{self, OrgError, import};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/org/templates", get(templates))
        .route("/org/import", post(import_org))
}

impl From<OrgError> for ApiError {
    fn from(err: OrgError) -> Self {
        let detail = |status: StatusCode, error: &str, detail: String| {
            ApiError::Body(status, json!({ "error": error, "detail": detail }))
        };
        match err {
            OrgError::NoSource => ApiError::bad_request("provide 'dir' or 'template'"),
            OrgError::InvalidDir => ApiError::bad_request("invalid org directory"),
            OrgError::NotFound => ApiError::not_found("org template not found"),
            OrgError::Expansion(d) => {
                detail(StatusCode::BAD_REQUEST, "org template expansion failed", d)
            }
            OrgError::Invalid(d) => detail(StatusCode::BAD_REQUEST, "invalid org template", d),
            OrgError::Forbidden(d) => detail(StatusCode::FORBIDDEN, "external source refused", d),
            OrgError::Upstream(d) => detail(
                StatusCode::BAD_GATEWAY,
                "fetching an external source failed",
                d,
            ),
            OrgError::MissingEnv {
                missing_env,
                missing_workspace_env,
                required_env,
                template,
            } => ApiError::Body(
                StatusCode::PRECONDITION_FAILED,
                json!({
                    "error": "missing required environment variables",
                    "missing_env": missing_env,
                    "missing_workspace_env": missing_workspace_env,
                    "required_env": required_env,
                    "template": template,
                    "suggestion": "set them as global secrets (PUT /settings/secrets) or in the org's .env files, then import again",
                }),
            ),
            OrgError::Store(err) => ApiError::internal(err),
            err @ (OrgError::Cache(_) | OrgError::Aborted) => {
                ApiError::internal(anyhow::anyhow!("{err}"))
            }
        }
    }
}

async fn templates(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(org::list_templates(&state.svc).await?))
}

#[derive(Debug, Deserialize)]
struct ImportBody {
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    template: Option<serde_json::Value>,
    /// `merge` (default; also an empty string) or `reconcile`.
    #[serde(default)]
    mode: Option<String>,
}

async fn import_org(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult<impl IntoResponse> {
    let mode = match body.mode.as_deref().map(str::trim) {
        None | Some("" | "merge") => import::Mode::Merge,
        Some("reconcile") => import::Mode::Reconcile,
        Some(_) => return Err(ApiError::bad_request("mode must be merge or reconcile")),
    };
    let source = match (body.dir.filter(|d| !d.trim().is_empty()), body.template) {
        (Some(dir), _) => import::Source::Dir(dir),
        (None, Some(template)) if !template.is_null() => {
            let value = serde_yaml_ng::to_value(&template)
                .map_err(|_| ApiError::bad_request("invalid org template"))?;
            import::Source::Inline(value)
        }
        _ => return Err(OrgError::NoSource.into()),
    };
    let outcome = import::import(&state.svc, import::ImportRequest { source, mode }).await?;
    let status = if outcome.error.is_some() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(outcome)))
}
