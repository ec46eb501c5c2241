//! Chat attachments: `POST /workspaces/:id/chat/uploads` (multipart `files`) stores them in the
//! workspace's files, `GET /workspaces/:id/chat/download?path=` reads a workspace file back as
//! a download.

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, WorkspaceAuth, WorkspaceIdParam};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::store::pending_uploads;
use crate::workspaces::files;
use crate::workspaces::uploads::{self, MAX_UPLOAD_BYTES, Stored, UploadError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Room for the multipart framing around 50 MiB of files.
        .routes(routes!(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES + 1024 * 1024)))
        .routes(routes!(download))
}

impl From<UploadError> for ApiError {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::Files(err) => err.into(),
            err @ (UploadError::FileTooLarge(_) | UploadError::TooLarge) => ApiError::body(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(err.to_string()),
            ),
            err => ApiError::body(StatusCode::BAD_REQUEST, ErrorBody::new(err.to_string())),
        }
    }
}

/// A stored attachment, as a chat message's file part refers to it.
#[derive(Debug, Serialize, ToSchema)]
struct Attachment {
    /// `workspace:/configs/chat-uploads/…`, or `pending-upload:<file_id>` for an agent the host
    /// does not run: what a chat message's file part carries.
    uri: String,
    /// Relative to `/configs` (or the `pending-upload:` URI); `GET …/chat/download?path=` takes it.
    path: String,
    /// For an agent the host does not run: the file waits in the database, and the agent
    /// downloads it from `GET …/pending-uploads/{file_id}/content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<Uuid>,
    /// The stored name (a safe base name of the one sent).
    name: String,
    /// Read from the bytes, not taken from the client.
    #[serde(rename = "mimeType")]
    mime_type: &'static str,
    size: usize,
}

#[derive(Debug, Serialize, ToSchema)]
struct Uploaded {
    files: Vec<Attachment>,
}

/// Stores the files of a chat message (multipart fields named `files`; at most 20, 25 MiB each,
/// 50 MiB in all) in the workspace's files under `chat-uploads/`, where its agent reads them; for
/// an agent the host does not run (external or poll mode), in the database until the agent
/// downloads and acknowledges them (`pending-uploads`; unacknowledged ones expire after 24 h).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/chat/uploads",
    tag = "files",
    params(WorkspaceIdParam),
    request_body(content = String, content_type = "multipart/form-data", description = "Fields named `files`, each a file with its name"),
    responses(
        (status = 201, body = Uploaded),
        (status = 400, description = "No files, more than 20, another field, or not multipart", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 413, description = "A file over 25 MiB, or over 50 MiB in all", body = ErrorBody),
        (status = 503, description = "The workspace has no files to store into (no runtime)", body = ErrorBody),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn upload(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    mut multipart: Multipart,
) -> ApiResult<impl IntoResponse> {
    let refused = |err: axum::extract::multipart::MultipartError| match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::body(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorBody::new(UploadError::TooLarge.to_string()),
        ),
        _ => ApiError::bad_request("the body is not valid multipart/form-data"),
    };
    let mut received = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(refused)? {
        if field.name() != Some("files") {
            return Err(ApiError::bad_request(
                "unexpected field: send the files in fields named files",
            ));
        }
        let name = field.file_name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(refused)?;
        received.push((name, data.to_vec()));
        // Refused as soon as the request is over a limit, before reading the rest.
        if let Err(
            err @ (UploadError::TooMany | UploadError::FileTooLarge(_) | UploadError::TooLarge),
        ) = uploads::check_sizes(&received)
        {
            return Err(err.into());
        }
    }
    let stored = uploads::store(&state.svc, id, received).await?;
    tracing::info!(workspace_id = %id, files = stored.len(), "chat attachments stored");
    Ok((
        StatusCode::CREATED,
        axum::Json(Uploaded {
            files: stored
                .into_iter()
                .map(|u| Attachment {
                    uri: u.uri(),
                    path: match &u.stored {
                        Stored::File(path) => path.clone(),
                        Stored::Pending(_) => u.uri(),
                    },
                    file_id: match u.stored {
                        Stored::Pending(file_id) => Some(file_id),
                        Stored::File(_) => None,
                    },
                    name: u.name,
                    mime_type: u.mime_type,
                    size: u.size,
                })
                .collect(),
        }),
    ))
}

/// `?path=` of a download.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DownloadQuery {
    /// Relative to `/configs` (as an upload answers it), `workspace:/<root>/<path>` with a
    /// root of `/configs`, `/workspace`, `/home` or `/plugins`, or `pending-upload:<file_id>`.
    path: String,
}

/// A file of the workspace as a download (`Content-Disposition: attachment`, its type read from
/// the bytes): what an attachment's `uri` or `path` names, inside the workspace's file roots
/// only.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/chat/download",
    tag = "files",
    params(WorkspaceIdParam, DownloadQuery),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = String),
        (status = 400, description = "A path outside the workspace's files", body = ErrorBody),
        (status = 403, description = "The host's token file", body = ErrorBody),
        (status = 404, description = "No such workspace or file", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn download(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<impl IntoResponse> {
    if let Some(file_id) = query.path.strip_prefix(uploads::PENDING_SCHEME) {
        // An attachment waiting for an agent the host does not run; looking does not count as
        // the agent's download.
        let not_found = || ApiError::not_found("file not found");
        let file_id = Uuid::parse_str(file_id).map_err(|_| not_found())?;
        let (row, content) = pending_uploads::content(&state.svc.db, id, file_id, false)
            .await?
            .ok_or_else(not_found)?;
        return Ok(super::inbox::pending_download(&row, content).into_response());
    }
    let (root, path) = uploads::parse_target(&query.path)?;
    let data = files::read(&state.svc, id, Some(root), &path).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(uploads::served_type(&data)),
            ),
            (header::CONTENT_DISPOSITION, attachment(path.as_str())),
        ],
        data,
    )
        .into_response())
}

/// `Content-Disposition` of a download named after `name` (reduced to a safe base name).
pub(super) fn attachment(name: &str) -> HeaderValue {
    let name = uploads::safe_name(name);
    HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}
