//! Traces across delegations: every request that does something, A2A call, delegation,
//! schedule run and restart cycle is an OpenTelemetry span; W3C `traceparent` comes in from
//! callers and goes out to agents, and agents send their own spans back
//! (`POST /workspaces/{id}/traces`), so one task is one trace across a whole tree.
//!
//! Each host has its own tracer provider (never the process-global one: the tests run several
//! hosts in one process). Its spans, and its agents', go to two places: the in-memory [`Store`]
//! that `GET /workspaces/{id}/traces` reads, and, when `otel.endpoint` is set, the OTLP exporter.
//!
//! The current span travels with a future (`opentelemetry::context::FutureExt::with_context`),
//! not with a thread: [`Traces::start`] makes a child of [`Context::current`], and a task spawned
//! with [`in_current`] keeps its parent's.

mod export;
pub mod propagation;
pub mod store;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Mutex;

use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanProcessor};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::OtelConfig;
pub use store::{Source, SpanRecord, SpanStatus, Store, Trace};

/// The attribute that files a span's trace under a workspace.
pub const WORKSPACE_ATTR: &str = "molecule.workspace_id";
/// The host's `service.name`.
pub const HOST_SERVICE: &str = "molecule-host";
/// An agent's `service.name` when it sends none.
pub const AGENT_SERVICE: &str = "molecule-agent";
/// The most spans one `POST /workspaces/{id}/traces` may carry.
pub const MAX_INGEST_SPANS: usize = 1000;

/// This host's tracer, its recent traces and its exporter.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    store: std::sync::Arc<Store>,
    export: Option<export::Queue>,
    exporter: Mutex<Option<export::Exporter>>,
}

/// Sends finished host spans to the store and the exporter.
#[derive(Debug)]
struct Processor {
    store: std::sync::Arc<Store>,
    export: Option<export::Queue>,
}

impl SpanProcessor for Processor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.store.add(host_record(&span));
        if let Some(export) = &self.export {
            export.push(export::Item::Host(Box::new(span)));
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(
        &self,
        _timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// What `POST /workspaces/{id}/traces` took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: usize,
    /// Spans with malformed ids or times, or beyond [`MAX_INGEST_SPANS`].
    pub rejected: usize,
}

impl Traces {
    pub fn new(config: &OtelConfig, replica: Uuid) -> anyhow::Result<Self> {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(HOST_SERVICE)
            .with_attribute(KeyValue::new("service.instance.id", replica.to_string()))
            .build();
        let store = std::sync::Arc::new(Store::new(config.traces_per_workspace));
        let (export, exporter) = match config.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            Some(endpoint) => {
                let (queue, exporter) = export::channel(config, endpoint.trim(), &resource)?;
                (Some(queue), Some(exporter))
            }
            None => (None, None),
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            // A caller that marks its trace unsampled is followed; everything else is kept.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_span_processor(Processor {
                store: store.clone(),
                export: export.clone(),
            })
            .build();
        let tracer = provider.tracer(HOST_SERVICE);
        Ok(Traces {
            provider,
            tracer,
            store,
            export,
            exporter: Mutex::new(exporter),
        })
    }

    /// Starts the exporter, when `otel.endpoint` is set; it sends what is queued when `stop`
    /// fires.
    pub fn spawn_export(&self, tracker: &TaskTracker, stop: &CancellationToken) {
        let exporter = self
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(exporter) = exporter {
            tracker.spawn(exporter.run(stop.clone()));
        }
    }

    /// A span named `name`, child of `parent` (a root span for `&Context::new()`), as the
    /// context to run its work in. It ends when [`finish`] is called or its last context drops.
    pub fn start_with_parent(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// [`start_with_parent`](Self::start_with_parent) under the current span.
    pub fn start(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Context {
        self.start_with_parent(name, kind, &Context::current(), attributes)
    }

    /// Files an agent's spans under `workspace` (the workspace whose token sent them, whatever
    /// they claim) and queues them for export.
    pub fn ingest(&self, workspace: Uuid, mut request: ExportTraceServiceRequest) -> Ingested {
        let mut outcome = Ingested::default();
        let workspace_value = workspace.to_string();
        for resource_spans in &mut request.resource_spans {
            let resource = resource_spans.resource.get_or_insert_with(Default::default);
            resource.attributes.retain(|kv| kv.key != WORKSPACE_ATTR);
            resource
                .attributes
                .push(string_kv(WORKSPACE_ATTR, &workspace_value));
            let service = match resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| proto_string(kv.value.as_ref()))
            {
                Some(service) => bounded(&service),
                None => {
                    resource
                        .attributes
                        .push(string_kv("service.name", AGENT_SERVICE));
                    AGENT_SERVICE.to_owned()
                }
            };
            for scope in &mut resource_spans.scope_spans {
                scope.spans.retain(|span| {
                    let record = (outcome.accepted < MAX_INGEST_SPANS)
                        .then(|| agent_record(span, workspace, &service))
                        .flatten();
                    match record {
                        Some(record) => {
                            self.store.add(record);
                            outcome.accepted += 1;
                            true
                        }
                        None => {
                            outcome.rejected += 1;
                            false
                        }
                    }
                });
            }
            resource_spans.scope_spans.retain(|s| !s.spans.is_empty());
        }
        if let Some(export) = &self.export {
            for resource_spans in request.resource_spans {
                if !resource_spans.scope_spans.is_empty() {
                    export.push(export::Item::Agent(resource_spans));
                }
            }
        }
        outcome
    }

    /// The newest traces filed under `workspace`, newest first.
    pub fn list(&self, workspace: Uuid, limit: usize) -> Vec<Trace> {
        self.store.list(workspace, limit)
    }

    /// One trace, if it is filed under `workspace`.
    pub fn get(&self, workspace: Uuid, trace_id: u128) -> Option<Trace> {
        self.store.get(workspace, trace_id)
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Ends the span of `cx`, with an error status when `error` is given.
pub fn finish(cx: &Context, error: Option<String>) {
    let span = cx.span();
    if let Some(error) = error {
        span.set_status(Status::error(error));
    }
    span.end();
}

/// Runs `future` with the current span as its parent context: for work handed to another task.
pub fn in_current<F: Future>(future: F) -> opentelemetry::context::WithContext<F> {
    opentelemetry::context::FutureExt::with_context(future, Context::current())
}

/// `future` run with `cx` as its current context.
pub fn within<F: Future>(cx: Context, future: F) -> opentelemetry::context::WithContext<F> {
    opentelemetry::context::FutureExt::with_context(future, cx)
}

/// The workspace attribute of a span.
pub fn workspace(id: Uuid) -> KeyValue {
    KeyValue::new(WORKSPACE_ATTR, id.to_string())
}

fn bounded(value: &str) -> String {
    match value.char_indices().nth(store::MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn unix_nanos(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn host_record(span: &SpanData) -> SpanRecord {
    let parent = span.parent_span_id;
    let mut workspace_id = None;
    let attributes = span
        .attributes
        .iter()
        .take(store::MAX_ATTRIBUTES)
        .map(|kv| {
            let value = kv.value.as_str();
            if kv.key.as_str() == WORKSPACE_ATTR {
                workspace_id = Uuid::parse_str(&value).ok();
            }
            (kv.key.as_str().to_owned(), bounded(&value))
        })
        .collect();
    let (status, status_message) = match &span.status {
        Status::Unset => (SpanStatus::Unset, None),
        Status::Ok => (SpanStatus::Ok, None),
        Status::Error { description } => (SpanStatus::Error, Some(bounded(description))),
    };
    SpanRecord {
        trace_id: u128::from_be_bytes(span.span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span.span_context.span_id().to_bytes()),
        parent_span_id: (parent != opentelemetry::trace::SpanId::INVALID)
            .then(|| u64::from_be_bytes(parent.to_bytes())),
        name: bounded(&span.name),
        kind: kind_name(&span.span_kind),
        service: HOST_SERVICE.to_owned(),
        source: Source::Host,
        workspace_id,
        start_unix_nanos: unix_nanos(span.start_time),
        end_unix_nanos: unix_nanos(span.end_time),
        status,
        status_message,
        attributes,
    }
}

fn string_kv(key: &str, value: &str) -> ProtoKeyValue {
    ProtoKeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A scalar attribute value as text (`None` for arrays, maps, bytes and nothing).
fn proto_string(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// An agent's span as kept, or `None` when its ids or times are malformed.
fn agent_record(span: &ProtoSpan, workspace: Uuid, service: &str) -> Option<SpanRecord> {
    let trace_id = u128::from_be_bytes(span.trace_id.as_slice().try_into().ok()?);
    let span_id = u64::from_be_bytes(span.span_id.as_slice().try_into().ok()?);
    if trace_id == 0 || span_id == 0 || span.end_time_unix_nano < span.start_time_unix_nano {
        return None;
    }
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => Some(u64::from_be_bytes(
            span.parent_span_id.as_slice().try_into().ok()?,
        ))
        .filter(|id| *id != 0),
        _ => return None,
    };
    let kind = match span.kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    };
    let (status, status_message) = match &span.status {
        Some(s) if s.code == 2 => (
            SpanStatus::Error,
            Some(bounded(&s.message)).filter(|m| !m.is_empty()),
        ),
        Some(s) if s.code == 1 => (SpanStatus::Ok, None),
        _ => (SpanStatus::Unset, None),
    };
    let attributes = span
        .attributes
        .iter()
        .filter(|kv| kv.key != WORKSPACE_ATTR)
        .filter_map(|kv| Some((bounded(&kv.key), bounded(&proto_string(kv.value.as_ref())?))))
        .take(store::MAX_ATTRIBUTES)
        .collect();
    let name = if span.name.trim().is_empty() {
        "(unnamed)".to_owned()
    } else {
        bounded(&span.name)
    };
    Some(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        name,
        kind,
        service: service.to_owned(),
        source: Source::Agent,
        workspace_id: Some(workspace),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano,
        status,
        status_message,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OtelConfig {
        OtelConfig::default()
    }

    #[tokio::test]
    async fn a_child_span_joins_its_parents_trace_and_both_are_kept() {
        let traces = Traces::new(&config(), Uuid::new_v4()).unwrap();
        let ws = Uuid::new_v4();
        let root = traces.start_with_parent(
            "POST /workspaces/{id}/a2a",
            SpanKind::Server,
            &Context::new(),
            vec![workspace(ws)],
        );
        let child = within(root.clone(), async {
            traces.start("a2a.forward", SpanKind::Client, vec![])
        })
        .await;
        finish(&child, Some("the agent did not answer".into()));
        finish(&root, None);
        let listed = traces.list(ws, 10);
        assert_eq!(listed.len(), 1);
        let spans = &listed[0].spans;
        assert_eq!(spans.len(), 2);
        let (forward, server) = (&spans[0], &spans[1]);
        assert_eq!(forward.parent_span_id, Some(server.span_id));
        assert_eq!(forward.status, SpanStatus::Error);
        assert_eq!(server.kind, "server");
        assert_eq!(server.workspace_id, Some(ws));
    }

    fn proto_span(trace: u8, span: u8, parent: Option<u8>) -> ProtoSpan {
        ProtoSpan {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: "agent message/send".into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes: vec![string_kv(WORKSPACE_ATTR, &Uuid::nil().to_string())],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_agents_spans_are_filed_under_its_own_workspace_whatever_they_claim() {
        let traces = Traces::new(&config(), Uuid::new_v4()).unwrap();
        let ws = Uuid::new_v4();
        let mut bad_ids = proto_span(1, 3, None);
        bad_ids.trace_id = vec![1; 5];
        let mut backwards = proto_span(1, 4, None);
        backwards.end_time_unix_nano = 1;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![string_kv(WORKSPACE_ATTR, &Uuid::nil().to_string())],
                    ..Default::default()
                }),
                scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                    spans: vec![proto_span(1, 2, Some(9)), bad_ids, backwards],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let outcome = traces.ingest(ws, request);
        assert_eq!(
            outcome,
            Ingested {
                accepted: 1,
                rejected: 2
            }
        );
        assert!(traces.list(Uuid::nil(), 10).is_empty());
        let trace = &traces.list(ws, 10)[0];
        let span = &trace.spans[0];
        assert_eq!(span.service, AGENT_SERVICE);
        assert_eq!(span.source, Source::Agent);
        assert_eq!(span.parent_span_id, Some(u64::from_be_bytes([9; 8])));
        assert!(span.attributes.iter().all(|(k, _)| k != WORKSPACE_ATTR));
    }
}
