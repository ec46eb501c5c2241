//! `GET /workspaces/{id}/transcript`: the agent's recent conversation, read from the agent (see
//! [`crate::agents::transcript`]).

use axum::extract::State;
use axum::http::StatusCode;
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
use crate::agents::transcript::{self, Message, Page, Role, TranscriptError};
use crate::workspaces::WorkspaceError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read))
}

/// `limit` when none is given, and the largest allowed.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TranscriptQuery {
    /// Only messages after this `seq` (default 0: from the oldest the agent keeps); pass the
    /// previous page's `next_since`.
    since: Option<u64>,
    /// 1 to 200, default 50.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Speaker {
    User,
    Agent,
}

/// One message of the conversation.
#[derive(Debug, Serialize, ToSchema)]
struct TranscriptMessage {
    /// Numbers the agent's messages from 1, in order; starts again when the agent restarts.
    seq: u64,
    /// `user`: what the agent was sent; `agent`: its answer.
    role: Speaker,
    /// As the agent kept it (the reference agent cuts texts at 4,000 characters).
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_id: Option<String>,
    at: DateTime<Utc>,
    /// The answer was an error; its text is the error's.
    error: bool,
    /// The agent cut the text.
    truncated: bool,
}

impl From<Message> for TranscriptMessage {
    fn from(message: Message) -> Self {
        TranscriptMessage {
            seq: message.seq,
            role: match message.role {
                Role::User => Speaker::User,
                Role::Agent => Speaker::Agent,
            },
            text: message.text,
            context_id: message.context_id,
            at: message.at,
            error: message.error,
            truncated: message.truncated,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Transcript {
    workspace_id: Uuid,
    /// Oldest first.
    messages: Vec<TranscriptMessage>,
    /// Pass as `since` for the next page (the last message's `seq`, or `since` itself when the
    /// page is empty).
    next_since: u64,
}

/// Why the agent could not be asked: it has no URL or is not online.
#[derive(Debug, Serialize, ToSchema)]
struct AgentUnavailable {
    error: &'static str,
    /// The workspace's status (`offline`, `provisioning`, `paused`, …).
    status: String,
}

impl From<TranscriptError> for ApiError {
    fn from(err: TranscriptError) -> Self {
        let unavailable = |error, status: crate::store::workspaces::Status| {
            ApiError::body(
                StatusCode::SERVICE_UNAVAILABLE,
                AgentUnavailable {
                    error,
                    status: status.to_string(),
                },
            )
        };
        match err {
            TranscriptError::NotFound => WorkspaceError::NotFound.into(),
            TranscriptError::Removed(row) => WorkspaceError::Removed(row).into(),
            TranscriptError::Store(err) => err.into(),
            TranscriptError::NoUrl { status } => {
                unavailable("the workspace's agent has no URL to call", status)
            }
            TranscriptError::NotOnline { status } => {
                unavailable("the workspace's agent is not online", status)
            }
            TranscriptError::Unsupported => ApiError::Status(
                StatusCode::NOT_IMPLEMENTED,
                "the workspace's agent serves no transcript (GET /transcript)",
            ),
            TranscriptError::UnsafeUrl => ApiError::Status(
                StatusCode::BAD_GATEWAY,
                "the workspace's agent URL is not publicly routable",
            ),
            TranscriptError::Unreachable => ApiError::Status(
                StatusCode::BAD_GATEWAY,
                "failed to reach the workspace's agent",
            ),
            TranscriptError::BadAnswer => ApiError::Status(
                StatusCode::BAD_GATEWAY,
                "the workspace's agent answered with an error or an invalid transcript",
            ),
        }
    }
}

/// The agent's recent conversation (what it was sent and what it answered), a page at a time
/// going forward, read from the agent itself through the same URL rules as A2A.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/transcript",
    tag = "activity",
    params(WorkspaceIdParam, TranscriptQuery),
    responses(
        (status = 200, body = Transcript),
        (status = 400, description = "A limit out of range", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 501, description = "The agent serves no transcript (an agent other than the reference one)", body = ErrorBody),
        (status = 502, description = "The agent could not be reached, or answered with an error or an invalid transcript", body = ErrorBody),
        (status = 503, description = "The agent has no URL or is not online", body = AgentUnavailable),
    ),
    security(("workspace_token" = [])),
)]
async fn read(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<TranscriptQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let Page {
        messages,
        next_since,
    } = transcript::fetch(&state.svc, id, query.since.unwrap_or(0), limit).await?;
    Ok(axum::Json(Transcript {
        workspace_id: id,
        messages: messages.into_iter().map(TranscriptMessage::from).collect(),
        next_since,
    }))
}
