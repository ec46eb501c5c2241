//! Event history (`/events`), the live streams (`/ws` WebSocket, per-workspace SSE) and the canvas
//! viewport.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::WorkspaceIdParam;
use super::extract::{
    AdminAuth, ApiJson, Caller, CallerHeader, CanvasAuth, Creds, WorkspaceAuth, calling_workspace,
    parse_workspace_id,
};
use super::openapi::{ErrorBody, StatusBody};
use crate::events::{Event, Lagged, Subscription};
use crate::store;
use crate::workspaces::access::can_communicate;
use crate::workspaces::get_live;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(recent))
        .routes(routes!(recent_for_workspace))
        .routes(routes!(websocket))
        .routes(routes!(sse))
        .routes(routes!(get_viewport, put_viewport))
}

/// How many events the history routes return.
const HISTORY_LIMIT: i64 = 100;

/// One stored event.
#[derive(Debug, Serialize, ToSchema)]
struct EventEntry {
    id: Uuid,
    event_type: String,
    workspace_id: Option<Uuid>,
    /// Free-form, per event type.
    payload: Option<Value>,
    created_at: DateTime<Utc>,
}

fn history(rows: Vec<store::events::EventRow>) -> Vec<EventEntry> {
    rows.into_iter()
        .map(|r| EventEntry {
            id: r.id,
            event_type: r.event_type,
            workspace_id: r.workspace_id,
            payload: r.payload,
            created_at: r.created_at,
        })
        .collect()
}

/// The latest 100 events, newest first.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    responses((status = 200, body = Vec<EventEntry>)),
    security(("admin_token" = [])),
)]
async fn recent(State(state): State<AppState>, _: AdminAuth) -> ApiResult<impl IntoResponse> {
    let rows = store::events::recent(&state.svc.db, None, HISTORY_LIMIT).await?;
    Ok(axum::Json(history(rows)))
}

/// The `{workspace_id}` segment of `/events/{workspace_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct EventsWorkspaceParam {
    /// Workspace id (a UUID; anything else is a 400).
    #[param(value_type = Uuid)]
    workspace_id: String,
}

/// The latest 100 events of one workspace, newest first.
#[utoipa::path(
    get,
    path = "/events/{workspace_id}",
    tag = "events",
    params(EventsWorkspaceParam),
    responses(
        (status = 200, body = Vec<EventEntry>),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn recent_for_workspace(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(EventsWorkspaceParam { workspace_id }): Path<EventsWorkspaceParam>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_workspace_id(&workspace_id)?;
    let rows = store::events::recent(&state.svc.db, Some(id), HISTORY_LIMIT).await?;
    Ok(axum::Json(history(rows)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    /// Browsers cannot set headers on a WebSocket; they may pass the bearer here instead.
    token: Option<String>,
}

/// The live event stream over WebSocket: every event for the canvas (the operator's token), or
/// the events of the workspaces an agent may talk to (`X-Workspace-ID` with its own token). The
/// token may come as `?token=`, since browsers cannot set WebSocket headers.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "events",
    params(CallerHeader, WsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; one JSON text frame per event"),
        (status = 400, description = "Not a WebSocket upgrade request, or an invalid X-Workspace-ID", body = ErrorBody),
        (status = 403, description = "Origin not allowed, or a reserved caller id", body = ErrorBody),
    ),
    security(("admin_token" = []), ("workspace_token" = [])),
)]
async fn websocket(
    State(state): State<AppState>,
    CallerHeader { caller }: CallerHeader,
    headers: HeaderMap,
    Creds(creds): Creds,
    Query(q): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let creds = socket_credentials(&state, &headers, creds, q.token)?;
    // Without `X-Workspace-ID` this is the canvas's stream of every event: the operator's
    // token only (a workspace token is not the canvas).
    let client = match caller {
        Caller::Workspace(_) => calling_workspace(&state, &caller, &creds).await?,
        Caller::Canvas => {
            state.svc.guard.canvas(&creds).await?;
            None
        }
    };
    // axum's own rejection is plain text; every answer of this API is a JSON error body.
    let upgrade =
        upgrade.map_err(|_| ApiError::bad_request("expected a WebSocket upgrade request"))?;
    let subscription = state.svc.events.subscribe();
    Ok(upgrade.on_upgrade(move |socket| serve_socket(state, client, subscription, socket)))
}

/// The credentials of a WebSocket upgrade. A browser page of another origin than `CORS_ORIGINS`
/// lists (or the host's own) is refused: a page elsewhere must not open a socket with a token it
/// was handed; a client without `Origin` is not a browser and passes. Browsers cannot set
/// headers on a WebSocket, so the bearer may come as `?token=` (`token`) instead.
pub(super) fn socket_credentials(
    state: &AppState,
    headers: &HeaderMap,
    mut creds: crate::auth::Credentials,
    token: Option<String>,
) -> Result<crate::auth::Credentials, ApiError> {
    let cors = &state.svc.config.cors_origins;
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !cors.is_empty()
        && !cors.iter().any(|allowed| allowed == origin)
        && !same_origin(origin, headers)
    {
        return Err(ApiError::forbidden("origin not allowed"));
    }
    if creds.bearer.is_none() {
        creds.bearer = token.filter(|t| !t.is_empty()).map(Into::into);
    }
    Ok(creds)
}

/// Whether a browser's `Origin` names the host it is talking to: the console the host serves
/// itself opens `/ws` from the host's own origin, whatever address the operator reaches it at.
/// Only the authority is compared (the scheme depends on a proxy in front), and only when the
/// origin is an `http`/`https` URL with nothing after the authority.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    !authority.is_empty()
        && !authority.contains(['/', '@', '?', '#'])
        && authority.eq_ignore_ascii_case(host)
}

/// Remembers recent access decisions so a busy stream does not query the tree per event.
struct AccessCache {
    client: Uuid,
    decisions: HashMap<Uuid, (bool, Instant)>,
}

const ACCESS_TTL: Duration = Duration::from_secs(5);

impl AccessCache {
    async fn allows(&mut self, state: &AppState, event: &Event) -> bool {
        let Some(target) = event.workspace_id else {
            return false;
        };
        if let Some((allowed, at)) = self.decisions.get(&target)
            && at.elapsed() < ACCESS_TTL
        {
            return *allowed;
        }
        let allowed = can_communicate(&state.svc, self.client, target)
            .await
            .unwrap_or(false);
        self.decisions.insert(target, (allowed, Instant::now()));
        allowed
    }
}

/// How long one frame may wait for a client that has stopped reading. A write blocked on a full
/// socket also blocks reading the bus, so without this bound such a client would never be seen
/// to lag and would hold its connection forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the host tries to say goodbye with a close frame before simply hanging up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes one frame; false when the client is gone, stuck for [`SEND_TIMEOUT`], or the host is
/// stopping (a shutdown must not wait for a client that does not read).
async fn send_frame(socket: &mut WebSocket, frame: Message, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)) => matches!(sent, Ok(Ok(()))),
    }
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(frame)).await;
}

/// Streams events to one subscriber: every event to the canvas (`client` `None`), the events of
/// the workspaces it may talk to for an agent.
async fn serve_socket(
    state: AppState,
    client: Option<Uuid>,
    mut subscription: Subscription,
    mut socket: WebSocket,
) {
    let mut access = client.map(|client| AccessCache {
        client,
        decisions: HashMap::new(),
    });
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                send_close(&mut socket, 1001, "host shutting down").await;
                break;
            }
            inbound = socket.recv() => match inbound {
                // Inbound frames carry nothing for the host; they are read so pings and closes work.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            next = subscription.next() => match next {
                Ok(Some(event)) => {
                    if let Some(cache) = access.as_mut() && !cache.allows(&state, &event).await {
                        continue;
                    }
                    let frame = Message::Text(event.ws_frame().to_string().into());
                    if !send_frame(&mut socket, frame, &state.shutdown).await {
                        if state.shutdown.is_cancelled() {
                            send_close(&mut socket, 1001, "host shutting down").await;
                        } else {
                            tracing::warn!("dropping a WebSocket subscriber that stopped reading");
                        }
                        break;
                    }
                }
                Ok(None) => break,
                Err(Lagged) => {
                    tracing::warn!("dropping a WebSocket subscriber that fell behind");
                    send_close(&mut socket, 1008, "subscriber too slow").await;
                    break;
                }
            }
        }
    }
}

/// The live events of one workspace as Server-Sent Events (a `ping` comment first, then one
/// `data:` frame per event).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/events/stream",
    tag = "events",
    params(WorkspaceIdParam),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid workspace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn sse(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
) -> ApiResult<Response> {
    get_live(&state.svc, id)
        .await
        .map_err(|_| ApiError::not_found("workspace not found"))?;
    let stream = workspace_stream(state.svc.events.subscribe(), id, state.shutdown.clone());
    let first =
        futures::stream::once(async { Ok::<_, Infallible>(SseEvent::default().comment("ping")) });
    let mut response = Sse::new(first.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The events of one workspace as SSE frames, until shutdown or until the subscriber lags.
fn workspace_stream(
    subscription: Subscription,
    workspace_id: Uuid,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(subscription, move |mut subscription| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    next = subscription.next() => next,
                };
                match next {
                    Ok(Some(event)) if event.workspace_id == Some(workspace_id) => {
                        let frame = SseEvent::default().data(event.sse_data().to_string());
                        return Some((Ok(frame), subscription));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(Lagged) => {
                        tracing::warn!(%workspace_id, "dropping an SSE subscriber that fell behind");
                        return None;
                    }
                }
            }
        }
    })
}

/// The canvas viewport, for the canvas (the operator's token; open in development on loopback,
/// as the original's canvas reads it without one).
#[utoipa::path(
    get,
    path = "/canvas/viewport",
    tag = "events",
    responses((status = 200, body = Viewport)),
    security(("admin_token" = [])),
)]
async fn get_viewport(
    State(state): State<AppState>,
    Creds(creds): Creds,
) -> ApiResult<impl IntoResponse> {
    if !state.svc.guard.development(&creds) {
        state.svc.guard.canvas(&creds).await?;
    }
    let (x, y, zoom) = store::canvas::viewport(&state.svc.db)
        .await?
        .unwrap_or((0.0, 0.0, 1.0));
    Ok(axum::Json(Viewport { x, y, zoom }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct Viewport {
    x: f64,
    y: f64,
    zoom: f64,
}

/// Saves the canvas viewport: the canvas only (the operator's token; in development on
/// loopback, also a browser on an allowed origin). An `Origin` is never a credential elsewhere.
#[utoipa::path(
    put,
    path = "/canvas/viewport",
    tag = "events",
    request_body = Viewport,
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "Not finite, or zoom not positive", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn put_viewport(
    State(state): State<AppState>,
    _: CanvasAuth,
    ApiJson(body): ApiJson<Viewport>,
) -> ApiResult<impl IntoResponse> {
    if !(body.x.is_finite() && body.y.is_finite() && body.zoom.is_finite() && body.zoom > 0.0) {
        return Err(ApiError::bad_request(
            "x, y and zoom must be finite and zoom positive",
        ));
    }
    store::canvas::save_viewport(&state.svc.db, body.x, body.y, body.zoom).await?;
    Ok((StatusCode::OK, axum::Json(StatusBody { status: "saved" })))
}
