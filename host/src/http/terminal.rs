//! `GET /workspaces/{id}/terminal`: an interactive shell in an agent's environment over a
//! WebSocket (Docker: an exec with a TTY in its container; the process runtime: a shell on a
//! pty under the agent's uid and in its sandbox), and `…/terminal/diagnose`, which says why one
//! cannot open. The operator only (the admin or an org token): a workspace's own token cannot
//! open a shell next to its agent.
//!
//! The socket carries the terminal's bytes in binary frames both ways, and JSON text frames for
//! the rest: from the client `{"type":"resize","cols":…,"rows":…}` (or `{"type":"input",
//! "data":…}` for clients that only send text), from the host `{"type":"exit"}` when the shell
//! ended and `{"type":"error","message":…}` for a frame it could not use. Closing either side,
//! the idle timeout or the host stopping ends the session: the shell and every process it
//! started are killed, and one `terminal_session` activity row says who, when and for how long
//! (never what was typed). Opening is also recorded in the audit ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::events::socket_credentials;
use super::extract::{AdminAuth, ApiQuery, Creds, WorkspaceIdParam, WorkspacePath};
use super::openapi::ErrorBody;
use super::workspaces::WorkspaceGone;
use crate::audit::{self, Entry};
use crate::auth::Principal;
use crate::events::activity::record_logged;
use crate::runtime::{RuntimeError, TermSize, Terminal, TerminalControl};
use crate::store::activity::ActivityRow;
use crate::store::workspaces::EXTERNAL_RUNTIME;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(terminal))
        .routes(routes!(diagnose))
}

/// The size a terminal starts at unless the client says otherwise.
const DEFAULT_SIZE: TermSize = TermSize { cols: 80, rows: 24 };
/// The largest terminal accepted, in each direction.
const MAX_COLS: u16 = 1000;
const MAX_ROWS: u16 = 500;

/// Terminals open on this host, per workspace.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<Uuid, usize>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        // Only counters live behind the lock; a panic cannot leave them half-updated.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count(&self, id: Uuid) -> usize {
        self.lock().get(&id).copied().unwrap_or(0)
    }

    /// A place for one more terminal into `id`, unless `max` are open.
    fn try_open(self: &Arc<Self>, id: Uuid, max: usize) -> Option<Slot> {
        let mut open = self.lock();
        let count = open.entry(id).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            sessions: Arc::clone(self),
            id,
        })
    }
}

/// One open terminal's place in [`Sessions`], given back when dropped.
#[derive(Debug)]
struct Slot {
    sessions: Arc<Sessions>,
    id: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        if let Some(count) = open.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}

/// An open session's control and slot: however the session ends (the socket closed, the
/// upgrade never completed, a panic), dropping it kills the shell and all it started.
struct Session {
    control: Option<Box<dyn TerminalControl>>,
    _slot: Slot,
}

impl Session {
    async fn close(mut self) {
        if let Some(control) = self.control.take() {
            control.close().await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(control) = self.control.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move { control.close().await });
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TerminalQuery {
    /// Browsers cannot set headers on a WebSocket; they may pass the operator's token here.
    token: Option<String>,
    /// Columns to start with (1 to 1000, default 80).
    cols: Option<u16>,
    /// Rows to start with (1 to 500, default 24).
    rows: Option<u16>,
}

/// A control message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}

fn checked_size(cols: u16, rows: u16) -> Option<TermSize> {
    ((1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows))
        .then_some(TermSize { cols, rows })
}

/// Why a terminal cannot open into a workspace, if anything stops it before the runtime is asked.
enum Obstacle {
    External,
    NoRuntime,
    NoTerminal,
    NotRunning,
    NoContainer,
    Busy,
}

impl Obstacle {
    fn message(&self) -> &'static str {
        match self {
            Obstacle::External => {
                "an external workspace's agent runs elsewhere: the host has no shell there"
            }
            Obstacle::NoRuntime => "no runtime is configured: the host runs no agents",
            Obstacle::NoTerminal => {
                "this runtime cannot open a terminal (it has no exec with a TTY)"
            }
            Obstacle::NoContainer => {
                "the agent has no container or process (it has not been started)"
            }
            Obstacle::NotRunning => "the agent is not running: start or restart it first",
            Obstacle::Busy => {
                "too many terminals are open into this workspace (terminal.max_per_workspace)"
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Obstacle::External | Obstacle::NotRunning | Obstacle::NoContainer => {
                StatusCode::CONFLICT
            }
            Obstacle::NoRuntime => StatusCode::SERVICE_UNAVAILABLE,
            Obstacle::NoTerminal => StatusCode::NOT_IMPLEMENTED,
            Obstacle::Busy => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Obstacle::External => "external",
            Obstacle::NoRuntime => "no_runtime",
            Obstacle::NoTerminal => "no_exec",
            Obstacle::NoContainer => "no_container",
            Obstacle::NotRunning => "not_running",
            Obstacle::Busy => "too_many_terminals",
        }
    }

    fn error(self) -> ApiError {
        ApiError::Status(self.status(), self.message())
    }
}

/// Opens an interactive shell in the agent's environment (see the module docs for the frames).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/terminal",
    tag = "lifecycle",
    params(WorkspaceIdParam, TerminalQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: binary frames carry the terminal's bytes both ways; JSON text frames carry `resize`/`input` from the client and `exit`/`error` from the host"),
        (status = 400, description = "Not a WebSocket upgrade, or a size out of range", body = ErrorBody),
        (status = 401, description = "No operator credential (a workspace token is refused too)", body = ErrorBody),
        (status = 403, description = "A browser page of another origin", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "An external workspace, or its agent is not running", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 429, description = "Too many terminals open into this workspace", body = ErrorBody),
        (status = 501, description = "This runtime has no terminal", body = ErrorBody),
        (status = 503, description = "No runtime is configured", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn terminal(
    State(state): State<AppState>,
    WorkspacePath(id): WorkspacePath,
    headers: HeaderMap,
    Creds(creds): Creds,
    ApiQuery(query): ApiQuery<TerminalQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let creds = socket_credentials(&state, &headers, creds, query.token)?;
    state.svc.guard.admin(&creds).await?;
    let size = checked_size(
        query.cols.unwrap_or(DEFAULT_SIZE.cols),
        query.rows.unwrap_or(DEFAULT_SIZE.rows),
    )
    .ok_or_else(|| ApiError::bad_request("cols must be 1 to 1000 and rows 1 to 500"))?;
    // axum's own rejection is plain text; every answer of this API is a JSON error body.
    let upgrade =
        upgrade.map_err(|_| ApiError::bad_request("expected a WebSocket upgrade request"))?;
    let workspace = get_live(&state.svc, id).await?;
    if workspace.runtime == EXTERNAL_RUNTIME {
        return Err(Obstacle::External.error());
    }
    let runtime = state
        .svc
        .lifecycle
        .runtime()
        .ok_or_else(|| Obstacle::NoRuntime.error())?;
    if !runtime.has_terminal() {
        return Err(Obstacle::NoTerminal.error());
    }
    let max = state.svc.config.terminal.max_per_workspace;
    let slot = state
        .terminals
        .try_open(id, max)
        .ok_or_else(|| Obstacle::Busy.error())?;
    // Opened before the upgrade, so a refusal is an HTTP status the client can read.
    let session_id = Uuid::new_v4();
    let opened = runtime.open_terminal(id, session_id, size).await;
    let Terminal {
        output,
        input,
        control,
    } = opened.map_err(|err| match err {
        RuntimeError::Offline | RuntimeError::NotFound => Obstacle::NotRunning.error(),
        RuntimeError::Unavailable(_) => Obstacle::NoTerminal.error(),
        other => ApiError::internal(anyhow::anyhow!("opening a terminal: {other}")),
    })?;
    let session = Session {
        control: Some(control),
        _slot: slot,
    };
    audit::record(
        &state.svc,
        Entry::new("terminal.opened", Principal::Admin)
            .workspace(id)
            .target(session_id.to_string())
            .detail(json!({ "runtime": runtime.name() })),
    )
    .await;
    let opened_at = chrono::Utc::now();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let started = Instant::now();
        let end = serve(&state, socket, output, input, &session).await;
        session.close().await;
        let mut row = ActivityRow::new(id, "terminal_session");
        let secs = started.elapsed().as_secs();
        row.summary = Some(format!(
            "terminal session by the operator: {secs} s, {}",
            end.as_str()
        ));
        row.duration_ms = Some(i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX));
        row.request_body = Some(json!({
            "session_id": session_id,
            "actor": audit::actor(Principal::Admin),
            "opened_at": opened_at,
            "ended": end.as_str(),
        }));
        record_logged(&state.svc, &row).await;
    }))
}

/// How a session ended.
#[derive(Debug, Clone, Copy)]
enum End {
    ShellExited,
    ClientClosed,
    Idle,
    HostStopping,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::ShellExited => "the shell exited",
            End::ClientClosed => "closed by the client",
            End::Idle => "closed after the idle timeout",
            End::HostStopping => "closed as the host stopped",
        }
    }
}

/// Copies bytes between the socket and the terminal until one side ends.
async fn serve(
    state: &AppState,
    socket: WebSocket,
    mut output: crate::runtime::LogStream,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    session: &Session,
) -> End {
    let (mut to_client, mut from_client) = socket.split();
    let idle = state.svc.config.terminal.idle_timeout();
    let mut deadline = tokio::time::Instant::now() + idle;
    let end = loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(bytes)) => {
                    deadline = tokio::time::Instant::now() + idle;
                    if to_client.send(Message::Binary(bytes.into())).await.is_err() {
                        break End::ClientClosed;
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "reading a terminal ended");
                    break End::ShellExited;
                }
                None => break End::ShellExited,
            },
            frame = from_client.next() => {
                let keys = match frame {
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                        Ok(ClientFrame::Input { data }) => data.into_bytes(),
                        Ok(ClientFrame::Resize { cols, rows }) => {
                            let resized = match (checked_size(cols, rows), &session.control) {
                                (Some(size), Some(control)) => control.resize(size).await.is_ok(),
                                _ => false,
                            };
                            if !resized {
                                let _ = to_client.send(error_frame("the terminal could not take that size (cols 1 to 1000, rows 1 to 500)")).await;
                            }
                            continue;
                        }
                        Err(_) => {
                            let _ = to_client.send(error_frame("text frames must be {\"type\":\"resize\",\"cols\":…,\"rows\":…} or {\"type\":\"input\",\"data\":…}")).await;
                            continue;
                        }
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::ClientClosed,
                    // Pings are answered by axum.
                    Some(Ok(_)) => continue,
                };
                deadline = tokio::time::Instant::now() + idle;
                if input.write_all(&keys).await.is_err() || input.flush().await.is_err() {
                    break End::ShellExited;
                }
            }
            () = tokio::time::sleep_until(deadline) => break End::Idle,
            () = state.shutdown.cancelled() => break End::HostStopping,
        }
    };
    if !matches!(end, End::ClientClosed) {
        if matches!(end, End::ShellExited) {
            let _ = to_client
                .send(Message::Text(json!({ "type": "exit" }).to_string().into()))
                .await;
        }
        let _ = to_client.send(Message::Close(None)).await;
    }
    end
}

fn error_frame(message: &str) -> Message {
    Message::Text(
        json!({ "type": "error", "message": message })
            .to_string()
            .into(),
    )
}

/// Whether a terminal could open now, and if not why.
#[derive(Debug, Serialize, ToSchema)]
struct Diagnosis {
    workspace_id: Uuid,
    /// `docker`, `process` or `kubernetes`; `null` when no runtime is configured.
    runtime: Option<&'static str>,
    /// A terminal would open now.
    ready: bool,
    /// What stops it: `external`, `no_runtime`, `no_exec`, `no_container`, `not_running`,
    /// `too_many_terminals`; absent when ready.
    code: Option<&'static str>,
    /// The same in words.
    reason: Option<&'static str>,
    /// The agent's container (or process) exists.
    container_exists: bool,
    /// It is running.
    running: bool,
    /// Terminals open into this workspace on this host, and the most allowed.
    open_terminals: usize,
    max_terminals: usize,
}

/// Says whether a terminal could open into the workspace now and, if not, why (an external
/// workspace, no runtime, a runtime without exec, no container, an agent not running, too many
/// terminals). The operator only.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/terminal/diagnose",
    tag = "lifecycle",
    params(WorkspaceIdParam),
    responses(
        (status = 200, body = Diagnosis),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("admin_token" = [])),
)]
async fn diagnose(
    State(state): State<AppState>,
    _: AdminAuth,
    WorkspacePath(id): WorkspacePath,
) -> ApiResult<impl IntoResponse> {
    let workspace = get_live(&state.svc, id).await?;
    let runtime = state.svc.lifecycle.runtime();
    let inspection = match &runtime {
        Some(runtime) if workspace.runtime != EXTERNAL_RUNTIME => runtime
            .inspect(id)
            .await
            .map_err(|err| ApiError::internal(anyhow::anyhow!("inspecting the agent: {err}")))?,
        _ => crate::runtime::Inspection::default(),
    };
    let open_terminals = state.terminals.count(id);
    let max_terminals = state.svc.config.terminal.max_per_workspace;
    let obstacle = if workspace.runtime == EXTERNAL_RUNTIME {
        Some(Obstacle::External)
    } else {
        match &runtime {
            None => Some(Obstacle::NoRuntime),
            Some(runtime) if !runtime.has_terminal() => Some(Obstacle::NoTerminal),
            Some(_) if !inspection.exists => Some(Obstacle::NoContainer),
            Some(_) if !inspection.running => Some(Obstacle::NotRunning),
            Some(_) if open_terminals >= max_terminals => Some(Obstacle::Busy),
            Some(_) => None,
        }
    };
    Ok(axum::Json(Diagnosis {
        workspace_id: id,
        runtime: runtime.as_ref().map(|r| r.name()),
        ready: obstacle.is_none(),
        code: obstacle.as_ref().map(Obstacle::code),
        reason: obstacle.as_ref().map(Obstacle::message),
        container_exists: inspection.exists,
        running: inspection.running,
        open_terminals,
        max_terminals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert_eq!(checked_size(80, 24), Some(TermSize { cols: 80, rows: 24 }));
        assert_eq!(checked_size(0, 24), None);
        assert_eq!(checked_size(80, 0), None);
        assert_eq!(checked_size(1001, 24), None);
        assert_eq!(checked_size(80, 501), None);
    }

    #[test]
    fn slots_are_counted_per_workspace_and_given_back() {
        let sessions = Arc::new(Sessions::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = sessions.try_open(a, 2).expect("a first slot");
        let second = sessions.try_open(a, 2).expect("a second slot");
        assert!(sessions.try_open(a, 2).is_none(), "a third is refused");
        assert!(
            sessions.try_open(b, 2).is_some(),
            "another workspace has its own"
        );
        drop(first);
        assert_eq!(sessions.count(a), 1);
        assert!(sessions.try_open(a, 2).is_some());
        drop(second);
        assert_eq!(sessions.count(a), 0);
    }

    #[test]
    fn control_frames_parse_and_unknown_ones_do_not() {
        let resize: ClientFrame =
            serde_json::from_str(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap();
        assert!(matches!(
            resize,
            ClientFrame::Resize {
                cols: 100,
                rows: 30
            }
        ));
        let input: ClientFrame = serde_json::from_str(r#"{"type":"input","data":"ls\n"}"#).unwrap();
        assert!(matches!(input, ClientFrame::Input { data } if data == "ls\n"));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"exec","cmd":"x"}"#).is_err());
    }
}
