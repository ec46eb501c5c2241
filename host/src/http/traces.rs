//! `GET /workspaces/{id}/traces`: the recent traces a workspace took part in (see
//! [`crate::traces`]); `POST /workspaces/{id}/traces`: its agent's spans, as OTLP/HTTP
//! (protobuf or JSON), so a trace covers the agents as well as the host.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
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
use crate::traces::{Source, SpanRecord, SpanStatus, Trace};
use crate::workspaces::get_live_routed;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_traces, ingest_traces))
}

/// `limit` when none is given, and the largest allowed.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TracesQuery {
    /// 1 to 50, default 20.
    limit: Option<usize>,
    /// Only this trace (32 hex digits), if the workspace took part in it.
    trace_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Reporter {
    Host,
    Agent,
}

/// One span of a trace.
#[derive(Debug, Serialize, ToSchema)]
struct SpanView {
    /// 16 hex digits.
    span_id: String,
    /// `null` for the trace's root, or a span of a caller outside this host's view.
    parent_span_id: Option<String>,
    name: String,
    /// `server`, `client` or `internal` (also `producer`, `consumer` from agents).
    kind: &'static str,
    /// The reporter's `service.name` (`molecule-host`, `molecule-agent`, …).
    service: String,
    /// Whether the host or the workspace's agent reported it.
    reported_by: Reporter,
    /// The workspace it is about: the one called, or for an agent's span the agent's own.
    workspace_id: Option<Uuid>,
    start_time: DateTime<Utc>,
    /// Milliseconds from the trace's first span's start.
    offset_ms: f64,
    duration_ms: f64,
    /// `unset`, `ok` or `error`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<String>,
    /// Scalar attributes as text (at most 32, values cut at 256 characters).
    attributes: std::collections::BTreeMap<String, String>,
}

/// One trace: every span this host saw of it, its own and its agents'.
#[derive(Debug, Serialize, ToSchema)]
struct TraceView {
    /// 32 hex digits; the same id the caller's `traceparent` carried, and the `X-Trace-Id` of
    /// the request that started it.
    trace_id: String,
    /// The name of its earliest span whose parent the host did not see.
    name: String,
    started_at: DateTime<Utc>,
    /// From its first span's start to its last span's end.
    duration_ms: f64,
    span_count: usize,
    /// Spans past the 512 kept of one trace.
    dropped_spans: u32,
    /// Whether any span ended in error.
    error: bool,
    /// The workspaces it is filed under.
    workspaces: Vec<Uuid>,
    /// By start time.
    spans: Vec<SpanView>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Traces {
    workspace_id: Uuid,
    /// Newest first.
    traces: Vec<TraceView>,
}

fn nanos_to_time(nanos: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn millis(nanos: u64) -> f64 {
    // Microsecond precision is all a waterfall shows.
    (nanos / 1000) as f64 / 1000.0
}

fn span_view(span: SpanRecord, trace_start: u64) -> SpanView {
    SpanView {
        span_id: format!("{:016x}", span.span_id),
        parent_span_id: span.parent_span_id.map(|p| format!("{p:016x}")),
        name: span.name,
        kind: span.kind,
        service: span.service,
        reported_by: match span.source {
            Source::Host => Reporter::Host,
            Source::Agent => Reporter::Agent,
        },
        workspace_id: span.workspace_id,
        start_time: nanos_to_time(span.start_unix_nanos),
        offset_ms: millis(span.start_unix_nanos.saturating_sub(trace_start)),
        duration_ms: millis(span.end_unix_nanos.saturating_sub(span.start_unix_nanos)),
        status: match span.status {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error => "error",
        },
        status_message: span.status_message,
        attributes: span.attributes.into_iter().collect(),
    }
}

impl From<Trace> for TraceView {
    fn from(trace: Trace) -> Self {
        let mut spans = trace.spans;
        spans.sort_by_key(|s| (s.start_unix_nanos, s.end_unix_nanos));
        let start = spans.first().map_or(0, |s| s.start_unix_nanos);
        let end = spans
            .iter()
            .map(|s| s.end_unix_nanos)
            .max()
            .unwrap_or(start);
        let ids: std::collections::HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
        let name = spans
            .iter()
            .find(|s| s.parent_span_id.is_none_or(|p| !ids.contains(&p)))
            .or(spans.first())
            .map(|s| s.name.clone())
            .unwrap_or_default();
        TraceView {
            trace_id: format!("{:032x}", trace.trace_id),
            name,
            started_at: nanos_to_time(start),
            duration_ms: millis(end.saturating_sub(start)),
            span_count: spans.len(),
            dropped_spans: trace.dropped_spans,
            error: spans.iter().any(|s| s.status == SpanStatus::Error),
            workspaces: trace.workspaces,
            spans: spans.into_iter().map(|s| span_view(s, start)).collect(),
        }
    }
}

/// The traces the workspace took part in, newest first: requests that did work, A2A calls,
/// delegations, schedule runs and restart cycles on this host, with the spans its agents (and
/// the agents they delegated to) reported. Kept in this host's memory only (the last
/// `otel.traces_per_workspace`); a collector set as `otel.endpoint` gets them all.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/traces",
    tag = "activity",
    params(WorkspaceIdParam, TracesQuery),
    responses(
        (status = 200, body = Traces),
        (status = 400, description = "A limit out of range or a malformed trace id", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
    ),
    security(("workspace_token" = [])),
)]
async fn list_traces(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    ApiQuery(query): ApiQuery<TracesQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 50"));
    }
    get_live_routed(&state.svc, id).await?;
    let traces = match query.trace_id.as_deref() {
        Some(raw) => {
            let trace_id = (raw.len() == 32)
                .then(|| u128::from_str_radix(raw, 16).ok())
                .flatten()
                .ok_or_else(|| ApiError::bad_request("trace_id must be 32 hex digits"))?;
            state.svc.traces.get(id, trace_id).into_iter().collect()
        }
        None => state.svc.traces.list(id, limit),
    };
    Ok(axum::Json(Traces {
        workspace_id: id,
        traces: traces.into_iter().map(TraceView::from).collect(),
    }))
}

/// What the host took of an export (OTLP's `ExportTraceServiceResponse`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExportResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PartialSuccess {
    rejected_spans: u64,
    error_message: String,
}

/// The workspace's agent reports its spans here, as an OTLP/HTTP trace export
/// (`ExportTraceServiceRequest`) in protobuf (`application/x-protobuf`) or JSON
/// (`application/json`): any OpenTelemetry SDK's OTLP exporter, pointed here with the
/// workspace's token as bearer, works. The spans are filed under this workspace whatever their
/// resource claims, and go on to `otel.endpoint` when one is set.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/traces",
    tag = "activity",
    params(WorkspaceIdParam),
    request_body(content = String, description = "An OTLP `ExportTraceServiceRequest`, protobuf or JSON", content_type = "application/x-protobuf"),
    responses(
        (status = 200, description = "Taken; spans with malformed ids or times, or past 1,000, are counted as rejected", body = ExportResponse),
        (status = 400, description = "Not a trace export", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 410, description = "The workspace was removed", body = WorkspaceGone),
        (status = 415, description = "Neither protobuf nor JSON", body = ErrorBody),
    ),
    security(("workspace_token" = [])),
)]
async fn ingest_traces(
    State(state): State<AppState>,
    WorkspaceAuth(id): WorkspaceAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    get_live_routed(&state.svc, id).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let request = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => {
            ExportTraceServiceRequest::decode(body)
                .map_err(|_| ApiError::bad_request("not an OTLP trace export (protobuf)"))?
        }
        "application/json" => serde_json::from_slice(&body)
            .map_err(|_| ApiError::bad_request("not an OTLP trace export (JSON)"))?,
        _ => {
            return Err(ApiError::Status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/x-protobuf or application/json",
            ));
        }
    };
    let outcome = state.svc.traces.ingest(id, request);
    Ok(axum::Json(ExportResponse {
        partial_success: (outcome.rejected > 0).then(|| PartialSuccess {
            rejected_spans: outcome.rejected as u64,
            error_message: "spans with malformed ids or times, or past 1000 in one export"
                .to_owned(),
        }),
    }))
}
