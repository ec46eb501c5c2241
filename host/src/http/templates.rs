//! `GET /templates` and `POST /templates/import` (admin): the workspace template catalogue.

use std::collections::BTreeMap;

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
use crate::workspaces::templates::{self, TemplateError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(import))
}

/// A model a template offers.
#[derive(Debug, Serialize, ToSchema)]
struct TemplateModel {
    id: String,
    name: String,
    required_env: Vec<String>,
}

/// One workspace template of the catalogue (its `config.yaml`).
#[derive(Debug, Serialize, ToSchema)]
struct WorkspaceTemplate {
    /// The directory name: what `template` on `POST /workspaces` names.
    id: String,
    name: String,
    description: String,
    tier: Option<i64>,
    /// The runtime a workspace created from it gets unless the request names one.
    runtime: Option<String>,
    model: Option<String>,
    models: Vec<TemplateModel>,
    required_env: Vec<String>,
    skills: Vec<String>,
    skill_count: usize,
    provision_timeout_seconds: Option<u64>,
    /// Only on a template that cannot be read (bad YAML, a symlink leaving the templates
    /// directory): why. Such a template is listed so it can be fixed, but cannot be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&templates::TemplateInfo> for WorkspaceTemplate {
    fn from(info: &templates::TemplateInfo) -> Self {
        WorkspaceTemplate {
            id: info.id.clone(),
            name: info.name.clone(),
            description: info.description.clone(),
            tier: info.tier,
            runtime: info.runtime.clone(),
            model: info.model.clone(),
            models: info
                .models
                .iter()
                .map(|m| TemplateModel {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    required_env: m.required_env.clone(),
                })
                .collect(),
            required_env: info.required_env.clone(),
            skills: info.skills.clone(),
            skill_count: info.skills.len(),
            provision_timeout_seconds: info.provision_timeout_seconds,
            error: info.error.clone(),
        }
    }
}

/// The 409 answer: a template of that directory name exists.
#[derive(Debug, Serialize, ToSchema)]
struct TemplateExists {
    error: &'static str,
    /// The directory name the request's `name` normalised to.
    id: String,
    hint: &'static str,
}

impl From<TemplateError> for ApiError {
    fn from(err: TemplateError) -> Self {
        match err {
            TemplateError::Invalid(message) => {
                ApiError::body(StatusCode::BAD_REQUEST, ErrorBody::new(message))
            }
            TemplateError::Exists(id) => ApiError::body(
                StatusCode::CONFLICT,
                TemplateExists {
                    error: "template already exists",
                    id,
                    hint: "pass \"overwrite\": true to replace it",
                },
            ),
            TemplateError::NotATemplate(id) => ApiError::body(
                StatusCode::CONFLICT,
                TemplateExists {
                    error: "the name is taken by something that is not a template directory",
                    id,
                    hint: "remove or rename that entry of the templates directory",
                },
            ),
            TemplateError::NotFound => ApiError::not_found("template not found"),
            TemplateError::NoCatalogue => ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                "no templates directory is configured (runtime.templates_dir)",
            ),
            err @ TemplateError::Io(_) => ApiError::internal(anyhow::anyhow!("{err}")),
        }
    }
}

/// The workspace templates under `runtime.templates_dir`, sorted by id. A directory without a
/// `config.yaml` is not listed; one that cannot be read is listed with `error`.
#[utoipa::path(
    get,
    path = "/templates",
    tag = "templates",
    responses((status = 200, body = Vec<WorkspaceTemplate>)),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let list = templates::list(&state.svc).await?;
    Ok(axum::Json(
        list.iter().map(WorkspaceTemplate::from).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
struct TemplateImportBody {
    /// The template's name; its directory is the name normalised (lowercase, spaces and `-` as
    /// `-`, only `[a-z0-9_-]` kept; empty becomes `unnamed`). At most 100 characters.
    name: Option<String>,
    /// Relative path → content; at most 200 files and 512 KiB in all. A `config.yaml` is
    /// generated when missing.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Replace an existing template of the same directory name (atomically).
    #[serde(default)]
    overwrite: bool,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
struct ImportedTemplate {
    /// `imported`.
    status: &'static str,
    id: String,
    name: String,
    /// Files written, a generated `config.yaml` included.
    files: usize,
    /// Whether an existing template was replaced (`overwrite`).
    replaced: bool,
}

/// Imports a workspace template into `runtime.templates_dir`: written into a fresh hidden
/// directory, then renamed into place (an overwrite swaps it in, so readers see the old
/// template or the new one, never a mix). Files are written 0600.
#[utoipa::path(
    post,
    path = "/templates/import",
    tag = "templates",
    request_body = TemplateImportBody,
    responses(
        (status = 201, body = ImportedTemplate),
        (status = 400, description = "Missing name, invalid path, too many files or too large", body = ErrorBody),
        (status = 409, description = "A template of that directory name exists (and overwrite is not set), or the name is taken by a symlink or file", body = TemplateExists),
        (status = 503, description = "No templates directory is configured", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn import(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiJson(body): ApiJson<TemplateImportBody>,
) -> ApiResult<impl IntoResponse> {
    let request = templates::ImportRequest {
        name: body.name.unwrap_or_default(),
        files: body.files,
        overwrite: body.overwrite,
    };
    let imported = templates::import(&state.svc, request).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ImportedTemplate {
            status: "imported",
            id: imported.id,
            name: imported.name,
            files: imported.files,
            replaced: imported.replaced,
        }),
    ))
}
