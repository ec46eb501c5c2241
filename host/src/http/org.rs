//! `GET /org/templates` and `POST /org/import` (admin).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use super::openapi::ErrorBody;
use crate::org::{self, OrgError, env, external, import, template};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(templates))
        .routes(routes!(import_org))
}

/// One entry of `GET /org/templates`.
#[derive(Debug, Serialize, ToSchema)]
struct TemplateSummary {
    dir: String,
    name: String,
    description: String,
    /// Every workspace entry, `spawning: false` subtrees included.
    workspaces: usize,
    required_env: Vec<EnvRequirement>,
    recommended_env: Vec<EnvRequirement>,
}

impl From<&org::TemplateSummary> for TemplateSummary {
    fn from(summary: &org::TemplateSummary) -> Self {
        TemplateSummary {
            dir: summary.dir.clone(),
            name: summary.name.clone(),
            description: summary.description.clone(),
            workspaces: summary.workspaces,
            required_env: summary.required_env.iter().map(Into::into).collect(),
            recommended_env: summary.recommended_env.iter().map(Into::into).collect(),
        }
    }
}

/// `NAME` or `{any_of: [A, B]}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum EnvRequirement {
    Name(String),
    AnyOf { any_of: Vec<String> },
}

impl From<&template::EnvRequirement> for EnvRequirement {
    fn from(requirement: &template::EnvRequirement) -> Self {
        match requirement {
            template::EnvRequirement::Name(name) => EnvRequirement::Name(name.clone()),
            template::EnvRequirement::AnyOf { any_of } => EnvRequirement::AnyOf {
                any_of: any_of.clone(),
            },
        }
    }
}

/// A workspace whose own requirements are not met.
#[derive(Debug, Serialize, ToSchema)]
struct MissingWorkspaceEnv {
    workspace: String,
    files_dir: Option<String>,
    unsatisfied_env: Vec<String>,
}

impl From<&env::MissingWorkspaceEnv> for MissingWorkspaceEnv {
    fn from(missing: &env::MissingWorkspaceEnv) -> Self {
        MissingWorkspaceEnv {
            workspace: missing.workspace.clone(),
            files_dir: missing.files_dir.clone(),
            unsatisfied_env: missing.unsatisfied_env.clone(),
        }
    }
}

/// What to do with workspaces the template no longer places.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Create what is missing, keep everything else.
    Merge,
    /// Merge, then remove live workspaces an import of this template created whose name is in
    /// the template but which the template no longer places.
    Reconcile,
}

impl From<import::Mode> for Mode {
    fn from(mode: import::Mode) -> Self {
        match mode {
            import::Mode::Merge => Mode::Merge,
            import::Mode::Reconcile => Mode::Reconcile,
        }
    }
}

/// One workspace of the result.
#[derive(Debug, Serialize, ToSchema)]
struct ImportedWorkspace {
    id: Uuid,
    name: String,
    tier: i64,
    status: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skipped: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    plugins_missing: Vec<String>,
}

impl From<&import::ImportedWorkspace> for ImportedWorkspace {
    fn from(workspace: &import::ImportedWorkspace) -> Self {
        ImportedWorkspace {
            id: workspace.id,
            name: workspace.name.clone(),
            tier: workspace.tier,
            status: workspace.status.clone(),
            skipped: workspace.skipped,
            plugins_missing: workspace.plugins_missing.clone(),
        }
    }
}

/// What one import did with an external (reported to the caller).
#[derive(Debug, Serialize, ToSchema)]
struct ExternalReport {
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
    /// Whether the cache already held this revision (no fetch ran).
    cached: bool,
}

impl From<&external::ExternalReport> for ExternalReport {
    fn from(report: &external::ExternalReport) -> Self {
        ExternalReport {
            repo: report.repo.clone(),
            reference: report.reference.clone(),
            sha: report.sha.clone(),
            cached: report.cached,
        }
    }
}

/// What an import did (its new workspaces were stored in one transaction).
#[derive(Debug, Serialize, ToSchema)]
struct ImportOutcome {
    org: String,
    mode: Mode,
    workspaces: Vec<ImportedWorkspace>,
    count: usize,
    created_count: usize,
    skipped_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    reconcile_removed_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reconcile_errors: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    externals: Vec<ExternalReport>,
    duration_ms: u64,
}

impl From<&import::ImportOutcome> for ImportOutcome {
    fn from(outcome: &import::ImportOutcome) -> Self {
        ImportOutcome {
            org: outcome.org.clone(),
            mode: outcome.mode.into(),
            workspaces: outcome.workspaces.iter().map(Into::into).collect(),
            count: outcome.count,
            created_count: outcome.created_count,
            skipped_count: outcome.skipped_count,
            reconcile_removed_count: outcome.reconcile_removed_count,
            reconcile_errors: outcome.reconcile_errors.clone(),
            externals: outcome.externals.iter().map(Into::into).collect(),
            duration_ms: outcome.duration_ms,
        }
    }
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
    missing_workspace_env: Vec<MissingWorkspaceEnv>,
    required_env: Vec<EnvRequirement>,
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
                    missing_workspace_env: missing_workspace_env.iter().map(Into::into).collect(),
                    required_env: required_env.iter().map(Into::into).collect(),
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
    let templates = org::list_templates(&state.svc).await?;
    Ok(axum::Json(
        templates
            .iter()
            .map(TemplateSummary::from)
            .collect::<Vec<_>>(),
    ))
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
    Ok((
        StatusCode::CREATED,
        axum::Json(ImportOutcome::from(&outcome)),
    ))
}
