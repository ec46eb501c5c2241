//! `GET /workspaces/{id}/console`: the agent's recent log lines (Docker's logs, the process
//! runtime's `agent.log`, the Pod's log), or with `follow=true` those and then every line as it is
//! written, with every secret value the host holds for the workspace masked.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiQuery, WorkspaceIdParam, WorkspacePath};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::runtime::RuntimeError;
use crate::secrets::{self, Bundle};
use crate::store::workspaces::EXTERNAL_RUNTIME;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(console))
}

/// How many lines an answer holds by default, and at most.
const DEFAULT_TAIL: usize = 200;
const MAX_TAIL: usize = 10_000;
/// What a masked secret becomes.
const MASK: &str = "[masked]";
/// Secret values shorter than this are not masked: masking every `1` or `on` would make the
/// log unreadable and protect nothing.
const MASK_MIN_CHARS: usize = 4;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConsoleQuery {
    /// Lines from the end (1 to 10000, default 200).
    tail: Option<usize>,
    /// Keep the answer open and stream each new line as the agent writes it (`text/plain`).
    #[serde(default)]
    follow: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct ConsoleLines {
    workspace_id: Uuid,
    /// Oldest first, secret values masked as `[masked]`.
    lines: Vec<String>,
}

/// Replaces the workspace's secret values (global and its own) in log text.
struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl Masker {
    fn new(mut values: Vec<String>) -> Masker {
        values.retain(|v| v.chars().count() >= MASK_MIN_CHARS);
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }
}

fn runtime_error(err: RuntimeError) -> ApiError {
    match err {
        RuntimeError::NotFound | RuntimeError::Offline => {
            ApiError::not_found("the agent has no log yet (it has not been started)")
        }
        RuntimeError::Unavailable(_) => ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime cannot read this agent's log right now",
        ),
        other => ApiError::internal(anyhow::anyhow!("reading the agent's log: {other}")),
    }
}

/// The agent's recent log lines with the workspace's secret values masked; `follow=true` keeps
/// the answer open and streams new lines (`text/plain`, one per line) until the client goes away
/// or the host stops. The operator only: an agent's output is the operator's to read.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/console",
    tag = "lifecycle",
    params(WorkspaceIdParam, ConsoleQuery),
    responses(
        (status = 200, description = "The lines (JSON), or with `follow=true` a `text/plain` stream of lines", body = ConsoleLines),
        (status = 400, description = "A tail out of range", body = ErrorBody),
        (status = 404, description = "No such workspace, or its agent has no log yet", body = ErrorBody),
        (status = 409, description = "An external workspace: the host does not run its agent", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 500, description = "Some secrets cannot be decrypted, so the log cannot be masked; nothing is shown", body = ErrorBody),
        (status = 503, description = "No runtime is configured, or it cannot read logs now", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn console(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
    ApiQuery(query): ApiQuery<ConsoleQuery>,
) -> ApiResult<Response> {
    let tail = query.tail.unwrap_or(DEFAULT_TAIL);
    if !(1..=MAX_TAIL).contains(&tail) {
        return Err(ApiError::bad_request("tail must be between 1 and 10000"));
    }
    let workspace = get_live(&state.svc, id).await?;
    if workspace.runtime == EXTERNAL_RUNTIME {
        return Err(ApiError::Status(
            StatusCode::CONFLICT,
            "an external workspace's agent runs elsewhere: the host has no log of it",
        ));
    }
    let Some(runtime) = state.svc.lifecycle.runtime() else {
        return Err(ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            "no runtime is configured: the host runs no agents",
        ));
    };
    // Nothing is shown unless every secret can be masked.
    let masker = match secrets::bundle(&state.svc.db, &state.svc.cipher, id).await? {
        Bundle::Complete(values) => Masker::new(
            values
                .values()
                .map(|v| v.expose_secret().to_owned())
                .collect(),
        ),
        Bundle::Refused { .. } => {
            return Err(ApiError::Status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "some secrets cannot be decrypted, so the log cannot be masked",
            ));
        }
    };
    if !query.follow {
        let text = runtime.logs(id, tail).await.map_err(runtime_error)?;
        let lines = text.lines().map(|l| masker.mask(l)).collect();
        return Ok(axum::Json(ConsoleLines {
            workspace_id: id,
            lines,
        })
        .into_response());
    }
    let stream = runtime.follow_logs(id, tail).await.map_err(runtime_error)?;
    let lines = masked_lines(stream, masker).take_until(state.shutdown.clone().cancelled_owned());
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `stream` cut into whole lines (a secret split across two chunks is still masked), each
/// masked and ended with a newline; a last line without one is sent when the stream ends.
fn masked_lines(
    stream: crate::runtime::LogStream,
    masker: Masker,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> + Send {
    futures::stream::unfold(
        (stream, masker, Vec::<u8>::new(), false),
        |(mut stream, masker, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let complete: Vec<u8> = pending.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&complete);
                    let out: String = text.lines().map(|line| masker.mask(line) + "\n").collect();
                    return Some((Ok(out), (stream, masker, pending, false)));
                }
                match stream.next().await {
                    Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                    end => {
                        if let Some(Err(err)) = end {
                            tracing::debug!(error = %err, "following an agent's log ended");
                        }
                        let rest = masker.mask(&String::from_utf8_lossy(&pending));
                        return Some((Ok(rest), (stream, masker, Vec::new(), true)));
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_longest_first_and_short_values_left_alone() {
        let masker = Masker::new(vec![
            "sk-abc".into(),
            "sk-abcdef".into(),
            "on".into(),
            "sk-abc".into(),
        ]);
        assert_eq!(
            masker.mask("key sk-abcdef and sk-abc, on"),
            "key [masked] and [masked], on"
        );
    }

    #[tokio::test]
    async fn a_secret_split_across_chunks_is_still_masked() {
        let chunks: Vec<Result<Vec<u8>, RuntimeError>> = vec![
            Ok(b"first line\nthe key is sk-se".to_vec()),
            Ok(b"cret-9 ok\nlast without newline".to_vec()),
        ];
        let stream: crate::runtime::LogStream = Box::pin(futures::stream::iter(chunks));
        let out: Vec<String> = masked_lines(stream, Masker::new(vec!["sk-secret-9".into()]))
            .map(|r| r.expect("text"))
            .collect()
            .await;
        assert_eq!(
            out.concat(),
            "first line\nthe key is [masked] ok\nlast without newline"
        );
        assert!(!out.concat().contains("sk-se"));
    }
}
