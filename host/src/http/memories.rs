//! Agent memories: commit, search, change and delete (`/workspaces/{id}/memories`), the v2
//! listing with namespaces, and the operator's export and import of all memories as JSON lines.
//! Every rule lives in [`crate::memories`]; the MCP tools go through the same functions.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiQuery, WorkspaceAccess, WorkspaceIdParam};
use super::fields::{FieldErrorBody, field_error, object, required, text};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::auth::Principal;
use crate::memories::{self, MemoryError, NewMemory, Search};
use crate::memory::FieldError;
use crate::store;
use crate::store::memories::MemoryRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search, commit))
        .routes(routes!(update, delete))
        .routes(routes!(list_v2))
        .routes(routes!(delete_v2))
        .routes(routes!(namespaces))
        .routes(routes!(export))
        .routes(routes!(import))
}

/// The `{memory_id}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct MemoryIdParam {
    /// The memory's id (anything that is not a UUID is not found).
    #[param(value_type = Uuid)]
    memory_id: String,
}

impl MemoryIdParam {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.memory_id).map_err(|_| ApiError::not_found("memory not found"))
    }
}

impl From<MemoryError> for ApiError {
    fn from(err: MemoryError) -> Self {
        match err {
            MemoryError::Field { field, message } => field_error(field, message),
            MemoryError::TooLarge => {
                FieldError::too_large("content", "content is larger than 100000 bytes").into()
            }
            MemoryError::GlobalNeedsRoot => {
                ApiError::forbidden("only a root workspace may write GLOBAL memories")
            }
            MemoryError::NotFound => ApiError::not_found("memory not found"),
            MemoryError::Workspace(err) => err.into(),
            MemoryError::Store(err) => err.into(),
        }
    }
}

/// A memory as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
struct Memory {
    id: Uuid,
    /// The workspace that wrote it.
    workspace_id: Uuid,
    /// As stored (secret-looking values already replaced by `[REDACTED]`). For a workspace's own
    /// token, a GLOBAL memory comes inside a `[MEMORY id=… scope=GLOBAL from=…]…[/MEMORY]`
    /// wrapper that marks it as data, not instructions.
    content: String,
    /// `LOCAL`, `TEAM` or `GLOBAL`.
    scope: String,
    namespace: String,
    /// How many secret-looking values were removed before it was stored.
    redactions: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Memory {
    /// `row` for a reader: an agent (its workspace's token) gets GLOBAL memories wrapped.
    fn of(row: MemoryRow, principal: Principal) -> Memory {
        let content = match principal {
            Principal::Admin => row.content.clone(),
            _ => memories::for_agent(&row),
        };
        Memory {
            id: row.id,
            workspace_id: row.workspace_id,
            content,
            scope: row.scope,
            namespace: row.namespace,
            redactions: row.redactions,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The body of `POST /workspaces/{id}/memories`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct CommitBody {
    /// At most 100,000 bytes; secret-looking values are redacted before it is stored.
    content: String,
    /// `LOCAL` (the writer only), `TEAM` (the workspaces it may talk to in its org) or `GLOBAL`
    /// (its whole org; a root workspace only).
    scope: String,
    /// Default `general`.
    namespace: Option<String>,
}

/// Remembers something for the workspace.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/memories",
    tag = "memories",
    params(WorkspaceIdParam),
    request_body = CommitBody,
    responses(
        (status = 201, body = Memory),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 403, description = "GLOBAL from a workspace that is not a root", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The content is too large", body = FieldErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn commit(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let body = object(body)?;
    let content = required(&body, "content")?;
    let scope = text(&body, "scope")?.unwrap_or("LOCAL");
    let namespace = text(&body, "namespace")?;
    let row = memories::commit(
        &state.svc,
        (access.id, access.principal),
        NewMemory {
            content,
            scope,
            namespace,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Memory::of(row, access.principal)),
    ))
}

/// The query of the searches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// `LOCAL`, `TEAM` or `GLOBAL`; all three when absent.
    scope: Option<String>,
    /// Free text: ranked full-text search from 3 characters, a substring match below that or
    /// when no word matches.
    q: Option<String>,
    namespace: Option<String>,
    /// 1 to 200, default 20.
    limit: Option<i64>,
    /// Rows to skip (v2 paging), default 0.
    offset: Option<i64>,
}

impl SearchQuery {
    fn search(&self) -> Search<'_> {
        Search {
            scope: self.scope.as_deref(),
            namespace: self.namespace.as_deref(),
            q: self.q.as_deref(),
            limit: self.limit,
            offset: self.offset,
        }
    }
}

/// The memories this workspace may read that match the query, best first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/memories",
    tag = "memories",
    params(WorkspaceIdParam, SearchQuery),
    responses(
        (status = 200, body = Vec<Memory>),
        (status = 400, description = "A parameter is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn search(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let (rows, _) = memories::search(&state.svc, access.id, query.search()).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| Memory::of(r, access.principal))
            .collect::<Vec<_>>(),
    ))
}

/// The body of `PATCH /workspaces/{id}/memories/{memory_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
struct PatchBody {
    /// Redacted and capped as on commit.
    content: Option<String>,
    namespace: Option<String>,
}

/// Changes the content or namespace of one of the workspace's own memories.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/memories/{memory_id}",
    tag = "memories",
    params(WorkspaceIdParam, MemoryIdParam),
    request_body = PatchBody,
    responses(
        (status = 200, body = Memory),
        (status = 400, description = "A field is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such memory of this workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "The content is too large", body = FieldErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn update(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(param): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let memory = MemoryIdParam { memory_id: param.1 }.id()?;
    let body = object(body)?;
    let content = text(&body, "content")?;
    let namespace = text(&body, "namespace")?;
    if content.is_none() && namespace.is_none() {
        return Err(field_error("content", "content or namespace is required"));
    }
    let row = memories::patch(&state.svc, access.id, memory, content, namespace).await?;
    Ok(axum::Json(Memory::of(row, access.principal)))
}

/// What a delete answers.
#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    /// `deleted`.
    status: &'static str,
    id: Uuid,
}

async fn remove(state: &AppState, workspace: Uuid, memory: &str) -> ApiResult<axum::Json<Deleted>> {
    let memory = MemoryIdParam {
        memory_id: memory.to_owned(),
    }
    .id()?;
    let row = memories::delete(&state.svc, workspace, memory).await?;
    Ok(axum::Json(Deleted {
        status: "deleted",
        id: row.id,
    }))
}

/// Deletes one of the workspace's own memories.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/memories/{memory_id}",
    tag = "memories",
    params(WorkspaceIdParam, MemoryIdParam),
    responses(
        (status = 200, body = Deleted),
        (status = 404, description = "No such memory of this workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(param): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    remove(&state, access.id, &param.1).await
}

/// [`delete`] under the v2 path.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/v2/memories/{memory_id}",
    tag = "memories",
    params(WorkspaceIdParam, MemoryIdParam),
    responses(
        (status = 200, body = Deleted),
        (status = 404, description = "No such memory of this workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn delete_v2(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    Path(param): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    remove(&state, access.id, &param.1).await
}

/// One page of the v2 listing.
#[derive(Debug, Serialize, ToSchema)]
struct Page {
    memories: Vec<Memory>,
    /// Memories under the scope and namespace filters, all pages.
    total: i64,
    limit: i64,
    offset: i64,
}

/// The memories this workspace may read, a page at a time, with scope and namespace filters.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/v2/memories",
    tag = "memories",
    params(WorkspaceIdParam, SearchQuery),
    responses(
        (status = 200, body = Page),
        (status = 400, description = "A parameter is invalid; `field` names it", body = FieldErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list_v2(
    State(state): State<AppState>,
    access: WorkspaceAccess,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let search = query.search();
    let (prepared, visible) = memories::prepare(&state.svc, access.id, &search).await?;
    let rows = store::memories::search(&state.svc.db, &visible, &prepared).await?;
    let total = store::memories::count(&state.svc.db, &visible, &prepared).await?;
    Ok(axum::Json(Page {
        memories: rows
            .into_iter()
            .map(|r| Memory::of(r, access.principal))
            .collect(),
        total,
        limit: prepared.limit,
        offset: prepared.offset,
    }))
}

/// A namespace and how many memories the reader sees in it.
#[derive(Debug, Serialize, ToSchema)]
struct Namespace {
    namespace: String,
    count: i64,
}

/// The namespaces of the memories this workspace may read, with their counts.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/v2/namespaces",
    tag = "memories",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Vec<Namespace>),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn namespaces(
    State(state): State<AppState>,
    access: WorkspaceAccess,
) -> ApiResult<impl IntoResponse> {
    let (_, visible) = memories::prepare(&state.svc, access.id, &Search::default()).await?;
    let rows = store::memories::namespaces(&state.svc.db, &visible).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|(namespace, count)| Namespace { namespace, count })
            .collect::<Vec<_>>(),
    ))
}

/// Rows per read of the export.
const EXPORT_PAGE: i64 = 1000;

/// Every memory of every workspace as JSON lines (one memory object a line, oldest first), as
/// stored: the operator's backup, read back by the import.
#[utoipa::path(
    get,
    path = "/admin/memories/export",
    tag = "memories",
    responses((status = 200, description = "One memory object a line", content_type = "application/x-ndjson", body = String)),
    security(("admin_token" = [])),
)]
async fn export(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let mut out = String::new();
    let mut after = None;
    loop {
        let rows = store::memories::page_all(&state.svc.db, after, EXPORT_PAGE).await?;
        for row in &rows {
            out.push_str(&serde_json::to_string(row).map_err(ApiError::internal)?);
            out.push('\n');
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == EXPORT_PAGE => {
                after = Some((last.created_at, last.id))
            }
            _ => break,
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out))
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
struct Imported {
    /// Memories written.
    imported: u64,
    /// Lines whose memory id was already stored (a re-import writes nothing twice).
    existing: u64,
    /// Lines whose workspace does not exist here.
    unknown_workspace: u64,
}

/// A refused import line.
#[derive(Debug, Serialize, ToSchema)]
struct LineError {
    error: &'static str,
    /// 1-based line number.
    line: usize,
}

fn line_error(line: usize, error: &'static str) -> ApiError {
    ApiError::body(StatusCode::BAD_REQUEST, LineError { error, line })
}

/// Writes memories from JSON lines (the export's format). Idempotent: a memory whose id is
/// already stored is left as it is. Content is capped and redacted as on commit; lines of
/// workspaces this host does not have are counted and skipped. Nothing is written when a line
/// is malformed.
#[utoipa::path(
    post,
    path = "/admin/memories/import",
    tag = "memories",
    request_body(content = String, content_type = "application/x-ndjson", description = "One memory object a line"),
    responses(
        (status = 200, body = Imported),
        (status = 400, description = "A line is malformed; `line` says which", body = LineError),
    ),
    security(("admin_token" = [])),
)]
async fn import(
    State(state): State<AppState>,
    _: AdminAuth,
    body: String,
) -> ApiResult<impl IntoResponse> {
    let mut rows = Vec::new();
    for (n, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row: MemoryRow = serde_json::from_str(line)
            .map_err(|_| line_error(n + 1, "not a memory object (id, workspace_id, content, scope, namespace, created_at, updated_at)"))?;
        let scope = memories::parse_scope(&row.scope)
            .ok_or_else(|| line_error(n + 1, "scope must be LOCAL, TEAM or GLOBAL"))?;
        row.scope = scope.to_owned();
        row.namespace = memories::parse_namespace(Some(&row.namespace)).map_err(|_| {
            line_error(
                n + 1,
                "namespace must be 1 to 64 letters, digits or _ - . : /",
            )
        })?;
        if row.content.len() > memories::MAX_CONTENT_BYTES {
            return Err(line_error(n + 1, "content is larger than 100000 bytes"));
        }
        let (content, count) = memories::redact(&row.content);
        row.content = content;
        row.redactions = row
            .redactions
            .saturating_add(i32::try_from(count).unwrap_or(i32::MAX));
        rows.push(row);
    }
    let mut known = std::collections::HashMap::new();
    let mut unknown = 0;
    let mut keep = Vec::with_capacity(rows.len());
    for row in rows {
        let exists = match known.get(&row.workspace_id) {
            Some(exists) => *exists,
            None => {
                let exists = store::workspaces::get(&state.svc.db, row.workspace_id)
                    .await?
                    .is_some();
                known.insert(row.workspace_id, exists);
                exists
            }
        };
        if exists {
            keep.push(row);
        } else {
            unknown += 1;
        }
    }
    let imported = store::memories::insert_many(&state.svc.db, &keep, true).await?;
    Ok(axum::Json(Imported {
        imported,
        existing: keep.len() as u64 - imported,
        unknown_workspace: unknown,
    }))
}
