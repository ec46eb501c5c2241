//! The HTTP API: one router per resource, merged here with the cross-cutting layers (CORS,
//! security headers, rate limit, metrics, body limits, tracing).
//!
//! Handlers parse, authorise, call one domain function and format. They never touch SQL,
//! runtimes or the wasm engine.

mod a2a;
mod activity;
mod agent;
mod agent_logs;
mod approvals;
mod audit;
mod budget;
mod bundles;
mod checkpoints;
mod console;
pub mod error;
mod events;
mod extensions;
mod external;
mod extract;
mod fields;
mod files;
mod inbox;
mod instructions;
mod kv;
mod lifecycle;
mod mcp;
mod memories;
mod metrics;
pub mod openapi;
mod org;
mod plugins;
mod ratelimit;
mod registry;
mod schedules;
mod secrets;
mod session_search;
mod team;
mod templates;
mod terminal;
mod tokens;
mod traces;
mod transcript;
mod uploads;
mod workspaces;

/// The request bodies of the busiest routes with their checks, usable without a running host
/// (the fuzz targets in `fuzz/` and `host/tests/fuzz_corpora.rs` deserialize into them).
pub mod bodies {
    pub use super::a2a::{DelegateBody, parse_target};
    pub use super::registry::{HeartbeatBody, RegisterBody};
    pub use super::workspaces::CreateBody;
}

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::metrics::Metrics;
use self::ratelimit::{KeyedLimiter, RateLimiter};
use crate::services::Services;

/// What every handler can reach. One shared allocation: axum clones the state for every
/// extractor and middleware of every request, and this makes each clone one reference count
/// instead of one per service.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    pub svc: Services,
    pub metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    org_mints: Arc<KeyedLimiter>,
    mcp_calls: Arc<KeyedLimiter>,
    /// Terminals open on this host, per workspace.
    terminals: Arc<terminal::Sessions>,
    /// Cancelled when the host stops; long-lived streams end on it.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(
        svc: Services,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let limiter = Arc::new(RateLimiter::new(&svc.config)?);
        let mcp_calls = Arc::new(KeyedLimiter::new(
            governor::Quota::per_minute,
            svc.config.a2a.mcp_per_minute,
        ));
        Ok(AppState(Arc::new(Shared {
            svc,
            metrics,
            limiter,
            org_mints: Arc::new(KeyedLimiter::new(
                governor::Quota::per_hour,
                tokens::ORG_MINTS_PER_HOUR,
            )),
            mcp_calls,
            terminals: Arc::default(),
            shutdown,
        })))
    }

    /// Forgets rate-limit buckets of clients that have gone quiet.
    pub fn housekeep(&self) {
        self.limiter.retain_recent();
        self.svc.guard.forget_stale_limiter_keys();
        self.org_mints.retain_recent();
        self.mcp_calls.retain_recent();
    }
}

/// Every route, each registered together with its OpenAPI description (`routes!`).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(liveness))
        .routes(routes!(metrics::render))
        .routes(routes!(openapi::serve))
        .merge(workspaces::router())
        .merge(lifecycle::router())
        .merge(files::router())
        .merge(registry::router())
        .merge(secrets::router())
        .merge(tokens::router())
        .merge(activity::router())
        .merge(session_search::router())
        .merge(transcript::router())
        .merge(events::router())
        .merge(extensions::router())
        .merge(org::router())
        .merge(templates::router())
        .merge(plugins::router())
        .merge(a2a::router())
        .merge(mcp::router())
        .merge(schedules::router())
        .merge(approvals::router())
        .merge(audit::router())
        .merge(kv::router())
        .merge(instructions::router())
        .merge(agent::router())
        .merge(budget::router())
        .merge(bundles::router())
        .merge(external::router())
        .merge(uploads::router())
        .merge(inbox::router())
        .merge(team::router())
        .merge(checkpoints::router())
        .merge(memories::router())
        .merge(console::router())
        .merge(agent_logs::router())
        .merge(terminal::router())
        .merge(traces::router())
}

/// The OpenAPI 3.1 document of [`router`], as served at `GET /openapi.json`.
pub fn openapi() -> serde_json::Value {
    openapi::finish(api().into_openapi())
}

/// The whole API with its layers.
pub fn router(state: AppState) -> Router {
    let (api, _) = api().split_for_parts();
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    api.layer(DefaultBodyLimit::max(state.svc.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), trace_request))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(cors(&state.svc.config.cors_origins))
        // Outside CORS, so the preflight answers the CORS layer writes itself carry them too.
        .layer(middleware::from_fn(security_headers))
        .layer(
            // The span carries the path only: query strings may hold tokens (`/ws?token=`).
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    trace_id = tracing::field::Empty,
                )
            }),
        )
        .with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok`, or `degraded` while a background loop of this replica is stalled (which ones:
    /// `GET /admin/liveness`).
    status: &'static str,
}

/// Liveness: answers as long as the process serves HTTP; `degraded` (still 200: the host serves)
/// while one of its background loops is stalled.
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, body = Health)))]
async fn health(State(state): State<AppState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: health_status(!state.svc.liveness.stale().is_empty()),
    })
}

/// `degraded` while any background loop is stale, else `ok`.
fn health_status(any_stale: bool) -> &'static str {
    if any_stale { "degraded" } else { "ok" }
}

#[derive(Debug, Serialize, ToSchema)]
struct LivenessReport {
    /// `ok`, or `degraded` when any loop is stale.
    status: &'static str,
    /// Every background loop of this replica (sweepers, the scheduler, the extension sync, the
    /// event relay on PostgreSQL), by name.
    subsystems: std::collections::BTreeMap<&'static str, Subsystem>,
}

/// One background loop.
#[derive(Debug, Serialize, ToSchema)]
struct Subsystem {
    /// When its last pass started (`null`: none yet).
    last_tick_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds since then (since the loop started, when it has not ticked yet).
    seconds_ago: u64,
    /// Its interval, for periodic loops; `null` for the event relay, driven by notifications.
    interval_secs: Option<u64>,
    /// Whether it is overdue, or reports itself down.
    stale: bool,
    /// Why it reports itself down.
    #[serde(skip_serializing_if = "Option::is_none")]
    down: Option<String>,
}

impl From<crate::liveness::Subsystem> for Subsystem {
    fn from(s: crate::liveness::Subsystem) -> Self {
        Subsystem {
            last_tick_at: s.last_tick_at,
            seconds_ago: s.seconds_ago,
            interval_secs: s.interval_secs,
            stale: s.stale,
            down: s.down,
        }
    }
}

/// This replica's background loops: when each last started a pass and whether it is overdue
/// (more than three intervals, and at least `supervision.stale_floor_secs`) or down.
#[utoipa::path(
    get,
    path = "/admin/liveness",
    tag = "meta",
    responses((status = 200, body = LivenessReport)),
    security(("admin_token" = [])),
)]
async fn liveness(
    State(state): State<AppState>,
    _: extract::AdminAuth,
) -> axum::Json<LivenessReport> {
    let subsystems: std::collections::BTreeMap<_, Subsystem> = state
        .svc
        .liveness
        .report()
        .into_iter()
        .map(|(name, s)| (name, s.into()))
        .collect();
    let status = health_status(subsystems.values().any(|s| s.stale));
    axum::Json(LivenessReport { status, subsystems })
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("not found")
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::Status(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| match HeaderValue::from_str(origin) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!("ignoring a CORS origin that is not a valid header value");
                None
            }
        })
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-workspace-id"),
            HeaderName::from_static("x-timeout"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([HeaderName::from_static(TRACE_ID_HEADER)])
        .allow_credentials(true)
}

/// Path prefixes that only ever serve JSON; they get the strictest content security policy.
const API_PREFIXES: &[&str] = &[
    "/workspaces",
    "/registry",
    "/health",
    "/admin",
    "/metrics",
    "/settings",
    "/bundles",
    "/org",
    "/orgs",
    "/templates",
    "/plugins",
    "/webhooks",
    "/channels",
    "/ws",
    "/events",
    "/approvals",
    "/canvas",
    "/openapi.json",
];

async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    );
    set(
        headers,
        header::REFERRER_POLICY,
        "strict-origin-when-cross-origin",
    );
    set(
        headers,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    let api = API_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let csp = if api {
        "default-src 'self'"
    } else {
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:"
    };
    set(headers, header::CONTENT_SECURITY_POLICY, csp);
    response
}

/// Routes never traced: probes, heartbeats, event streams and the agents' span uploads (tracing
/// those would make spans about spans forever).
const UNTRACED_ROUTES: &[&str] = &[
    "/health",
    "/metrics",
    "/admin/liveness",
    "/registry/heartbeat",
    "/ws",
    "/workspaces/{id}/traces",
];

/// The response header that names a traced request's trace (32 hex digits).
const TRACE_ID_HEADER: &str = "x-trace-id";

/// Makes a request a server span: a child of the caller's `traceparent` when it sent one, the
/// root of a new trace otherwise. Reads (`GET`, `HEAD`) are traced only when the caller sent a
/// `traceparent`: the canvas polls them, and a trace is about work done.
async fn trace_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let parent = crate::traces::propagation::extract(req.headers());
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .filter(|route| !UNTRACED_ROUTES.contains(&route.as_str()))
        .filter(|_| !reads || crate::traces::propagation::has_parent(&parent));
    let Some(route) = route else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_owned();
    let mut attributes = vec![
        opentelemetry::KeyValue::new("http.request.method", method.clone()),
        opentelemetry::KeyValue::new("http.route", route.clone()),
    ];
    if let Some(id) = workspace_in_path(req.uri().path()) {
        attributes.push(crate::traces::workspace(id));
    }
    if let Ok(extract::Caller::Workspace(caller)) = extract::Caller::from_headers(req.headers()) {
        attributes.push(opentelemetry::KeyValue::new(
            "molecule.caller_id",
            caller.to_string(),
        ));
    }
    let cx = state.svc.traces.start_with_parent(
        format!("{method} {route}"),
        opentelemetry::trace::SpanKind::Server,
        &parent,
        attributes,
    );
    let trace_id = crate::traces::propagation::trace_id(&cx);
    if let Some(id) = &trace_id {
        tracing::Span::current().record("trace_id", id.as_str());
    }
    let mut response = crate::traces::within(cx.clone(), next.run(req)).await;
    let status = response.status();
    opentelemetry::trace::TraceContextExt::span(&cx).set_attribute(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    crate::traces::finish(&cx, status.is_server_error().then(|| status.to_string()));
    if let Some(value) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// The `{id}` of a `/workspaces/{id}/…` path.
fn workspace_in_path(path: &str) -> Option<uuid::Uuid> {
    let rest = path.strip_prefix("/workspaces/")?;
    uuid::Uuid::parse_str(rest.split('/').next()?).ok()
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
