//! `GET /workspaces/{id}/session-search`: what a workspace's activity and its own memories said
//! about a few words (see [`crate::session_search`]).

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::session_search::{self, Hit, HitKind, SearchQuery};
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionSearchQuery {
    /// The words to find (all of them, as whole words; PostgreSQL also matches English stems):
    /// 1 to 500 characters with at least one letter or digit.
    q: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<i64>,
}

/// What a result is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ResultKind {
    Activity,
    Memory,
}

/// One match.
#[derive(Debug, Serialize, ToSchema)]
struct SearchResult {
    kind: ResultKind,
    /// The activity row's id (as in `GET /workspaces/{id}/activity`) or the memory's.
    id: Uuid,
    created_at: DateTime<Utc>,
    /// About 200 characters around the first match (`…` where the text was cut). For activity,
    /// from what the index holds of the row: its summary, its error and the text of its request
    /// and response bodies, the first 4 KiB.
    snippet: String,
    /// For activity: `a2a_receive`, `agent_log`, `delegation`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    activity_type: Option<String>,
    /// For a memory: `LOCAL`, `TEAM` or `GLOBAL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// For a memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

impl From<Hit> for SearchResult {
    fn from(hit: Hit) -> Self {
        let (kind, activity_type, scope, namespace) = match hit.kind {
            HitKind::Activity { activity_type } => {
                (ResultKind::Activity, Some(activity_type), None, None)
            }
            HitKind::Memory { scope, namespace } => {
                (ResultKind::Memory, None, Some(scope), Some(namespace))
            }
        };
        SearchResult {
            kind,
            id: hit.id,
            created_at: hit.created_at,
            snippet: hit.snippet,
            activity_type,
            scope,
            namespace,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct SessionSearch {
    /// Newest first, activity and memories merged.
    results: Vec<SearchResult>,
    /// The query as searched (trimmed).
    query: String,
    limit: i64,
}

/// Finds words in the workspace's activity (summaries, errors, the text of A2A messages and
/// answers) and in the memories it wrote itself, newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/session-search",
    tag = "activity",
    params(WorkspaceIdParam, SessionSearchQuery),
    responses(
        (status = 200, body = SessionSearch),
        (status = 400, description = "A blank q, a q over 500 characters or without a word, a limit out of range", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn search(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<SessionSearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let query = SearchQuery::parse(query.q.as_deref(), query.limit)
        .map_err(|invalid| ApiError::bad_request(invalid.message()))?;
    get_live(&state.svc, id).await?;
    let hits = session_search::search(&state.svc, id, &query).await?;
    Ok(axum::Json(SessionSearch {
        results: hits.into_iter().map(SearchResult::from).collect(),
        query: query.text().to_owned(),
        limit: query.limit(),
    }))
}
