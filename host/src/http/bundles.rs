//! Bundles: a workspace subtree exported as a portable `.bundle.json`, and a bundle imported as
//! a new tree (the operator only, both ways).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceIdParam, WorkspacePath};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::workspaces::bundles::{self, Bundle, BundleError, MAX_BUNDLE_BYTES};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(import).layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES)))
}

impl From<BundleError> for ApiError {
    fn from(err: BundleError) -> Self {
        match err {
            BundleError::Invalid(message) => {
                ApiError::body(StatusCode::BAD_REQUEST, ErrorBody::new(message))
            }
            BundleError::Workspace(err) => err.into(),
            err @ BundleError::Files { .. } => {
                tracing::warn!(error = %err, "a bundle export could not read a workspace's files");
                ApiError::body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(err.to_string()),
                )
            }
        }
    }
}

/// The workspace and its whole live subtree as a `.bundle.json` (schema `molecule.bundle/1`):
/// names, roles, tiers, runtimes, models, system prompts, skills with their files, the other
/// `/configs` text files, config, agent cards, budgets, and secret key names (never values).
#[utoipa::path(
    get,
    path = "/bundles/export/{id}",
    tag = "workspaces",
    params(WorkspaceIdParam),
    responses(
        (status = 200, description = "The bundle (free-form JSON, schema `molecule.bundle/1`)", body = Object),
        (status = 400, description = "The subtree is deeper than a bundle may be", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 503, description = "A workspace's files could not be read", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn export(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    let bundle = bundles::export(&state.svc, id).await?;
    let disposition = super::uploads::attachment(&format!("{}.bundle.json", bundle.root.name));
    Ok((
        [(header::CONTENT_DISPOSITION, disposition)],
        axum::Json(bundle),
    ))
}

/// `?parent_id=` of an import.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// The live workspace the tree goes under; absent: a new root.
    parent_id: Option<Uuid>,
}

/// A workspace the import created.
#[derive(Debug, Serialize, ToSchema)]
struct ImportedWorkspace {
    id: Uuid,
    name: String,
}

/// Secrets a workspace had where the bundle came from: set them again.
#[derive(Debug, Serialize, ToSchema)]
struct MissingSecrets {
    workspace_id: Uuid,
    keys: Vec<String>,
}

/// What an import created.
#[derive(Debug, Serialize, ToSchema)]
struct ImportedBundle {
    root_id: Uuid,
    /// Root first, parents before children.
    workspaces: Vec<ImportedWorkspace>,
    missing_secrets: Vec<MissingSecrets>,
}

/// Creates the bundle's tree (under `parent_id`, or as a new root): checked whole first, every
/// row in one transaction, the agents provisioned with their files after the commit. A bundle
/// with a path escape, a file over 1 MiB, two siblings of one name or more than 16 levels is
/// refused whole with 400 naming the problem. Importing a bundle again makes a second copy
/// (its root named "… (2)").
#[utoipa::path(
    post,
    path = "/bundles/import",
    tag = "workspaces",
    params(ImportQuery),
    request_body(content = Object, description = "A bundle (schema `molecule.bundle/1`), at most 32 MiB"),
    responses(
        (status = 201, body = ImportedBundle),
        (status = 400, description = "Not a bundle, or a part of it is refused (the message says which)", body = ErrorBody),
        (status = 413, description = "Over 32 MiB", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn import(
    State(state): State<AppState>,
    _: AdminAuth,
    ApiQuery(query): ApiQuery<ImportQuery>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let bundle: Bundle = serde_json::from_value(body).map_err(|err| {
        ApiError::body(
            StatusCode::BAD_REQUEST,
            ErrorBody::new(format!("not a bundle: {err}")),
        )
    })?;
    let imported = bundles::import(&state.svc, bundle, query.parent_id).await?;
    tracing::info!(root_id = %imported.root_id, workspaces = imported.workspaces.len(), "bundle imported");
    Ok((
        StatusCode::CREATED,
        axum::Json(ImportedBundle {
            root_id: imported.root_id,
            workspaces: imported
                .workspaces
                .iter()
                .map(|(id, name)| ImportedWorkspace {
                    id: *id,
                    name: name.clone(),
                })
                .collect(),
            missing_secrets: imported
                .missing_secrets
                .into_iter()
                .map(|(workspace_id, keys)| MissingSecrets { workspace_id, keys })
                .collect(),
        }),
    ))
}
