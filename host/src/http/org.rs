//! `GET /org/templates` and `POST /org/import` (admin).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use super::openapi::ErrorBody;
use crate::org::import::ImportOutcome;
use crate::org::{self, OrgError, TemplateSummary, import};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(templates))
        .routes(routes!(import_org))
}

/// An import refused with a reason (`detail`).
#[derive(Debug, Serialize, ToSchema)]
struct ImportRefused {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The 412 answer: environment variables the template requires are not set.
#[derive(Debug, Serialize, ToSchema)]
struct MissingEnv {
    error: &'static str,
    missing_env: Vec<String>,
    missing_workspace_env: Vec<crate::org::env::MissingWorkspaceEnv>,
    required_env: Vec<crate::org::template::EnvRequirement>,
    template: String,
    suggestion: &'static str,
}

impl From<OrgError> for ApiError {
    fn from(err: OrgError) -> Self {
        let detail = |status: StatusCode, error: &'static str, detail: String| {
            ApiError::body(
                status,
                ImportRefused {
                    error,
                    detail: Some(detail),
                },
            )
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
            } => ApiError::body(
                StatusCode::PRECONDITION_FAILED,
                MissingEnv {
                    error: "missing required environment variables",
                    missing_env,
                    missing_workspace_env,
                    required_env,
                    template,
                    suggestion: "set them as global secrets (PUT /settings/secrets) or in the org's .env files, then import again",
                },
            ),
            OrgError::Store(err) => ApiError::internal(err),
            err @ (OrgError::Cache(_) | OrgError::Aborted) => {
                ApiError::internal(anyhow::anyhow!("{err}"))
            }
        }
    }
}

/// The org templates under the templates directory.
#[utoipa::path(
    get,
    path = "/org/templates",
    tag = "org",
    responses((status = 200, body = Vec<TemplateSummary>)),
    security(("admin_token" = [])),
)]
async fn templates(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(org::list_templates(&state.svc).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ImportBody {
    /// A directory under the templates directory (wins over `template`).
    #[serde(default)]
    dir: Option<String>,
    /// An inline org template (the YAML document as JSON).
    #[serde(default)]
    template: Option<serde_json::Value>,
    /// `merge` (default; also an empty string) or `reconcile`.
    #[serde(default)]
    mode: Option<String>,
}

/// Imports an org template: creates its workspace tree (idempotently).
#[utoipa::path(
    post,
    path = "/org/import",
    tag = "org",
    request_body = ImportBody,
    responses(
        (status = 201, body = ImportOutcome),
        (status = 207, description = "Creation stopped part way (`error` says why)", body = ImportOutcome),
        (status = 400, description = "No source, invalid mode, directory or template", body = ImportRefused),
        (status = 403, description = "An external source was refused", body = ImportRefused),
        (status = 404, description = "No such template directory", body = ErrorBody),
        (status = 412, description = "Required environment variables are missing", body = MissingEnv),
        (status = 502, description = "Fetching an external source failed", body = ImportRefused),
    ),
    security(("admin_token" = [])),
)]
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
