//! The agent's part of a trace. A message that arrives with a W3C `traceparent` (the header, or
//! `traceparent` in the message's metadata as the original platform sent it) is handled in a
//! server span of that trace; a delegation or tool call made while handling it is a client span
//! whose context goes to the host in `traceparent`, so the host's delegation and the next agent
//! join the same trace. The spans go to the host (`POST /workspaces/{id}/traces`, OTLP JSON)
//! about once a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::platform::{Platform, display_error};

/// Spans waiting for the next export; more are dropped.
const MAX_PENDING: usize = 2048;
/// How often spans go to the host.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// A span's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `sampled` flag); unrecorded ones are passed on only.
    pub sampled: bool,
}

impl SpanContext {
    /// A `traceparent` as W3C Trace Context reads it, or `None` when it is missing or malformed.
    pub fn parse(traceparent: &str) -> Option<Self> {
        use opentelemetry::propagation::TextMapPropagator as _;
        use opentelemetry::trace::TraceContextExt as _;
        let carrier =
            std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| Self {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        })
    }

    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// A span under way.
#[derive(Debug)]
pub struct Active {
    pub context: SpanContext,
    parent: Option<[u8; 8]>,
    name: String,
    kind: span::SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

impl Active {
    pub fn attribute(&mut self, key: &str, value: impl Into<String>) {
        self.attributes.push(string_kv(key, value.into()));
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The agent's finished spans, until the next export.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    pending: Arc<Mutex<Vec<Span>>>,
}

impl Spans {
    /// A span: the child of `parent`, or the root of a new trace.
    pub fn start(&self, name: &str, kind: span::SpanKind, parent: Option<&SpanContext>) -> Active {
        let ids = RandomIdGenerator::default();
        let context = SpanContext {
            trace_id: parent.map_or_else(|| ids.new_trace_id().to_bytes(), |p| p.trace_id),
            span_id: ids.new_span_id().to_bytes(),
            sampled: parent.is_none_or(|p| p.sampled),
        };
        Active {
            context,
            parent: parent.map(|p| p.span_id),
            name: name.to_owned(),
            kind,
            start: SystemTime::now(),
            attributes: Vec::new(),
        }
    }

    /// Ends `span`, with an error status when `error` is given, and keeps it for export (when its
    /// trace is recorded).
    pub fn end(&self, span: Active, error: Option<&str>) {
        if !span.context.sampled {
            return;
        }
        let status = error.map(|message| Status {
            message: message.chars().take(256).collect(),
            code: 2,
        });
        let finished = Span {
            trace_id: span.context.trace_id.to_vec(),
            span_id: span.context.span_id.to_vec(),
            parent_span_id: span.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: span.name,
            kind: span.kind as i32,
            start_time_unix_nano: unix_nanos(span.start),
            end_time_unix_nano: unix_nanos(SystemTime::now()),
            attributes: span.attributes,
            status,
            ..Default::default()
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING {
            pending.push(finished);
        }
    }

    fn take(&self) -> Vec<Span> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One OTLP export of `spans`, from `workspace_id`'s agent.
pub fn export_request(workspace_id: Uuid, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", "molecule-agent".to_owned()),
                    string_kv("molecule.workspace_id", workspace_id.to_string()),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "molecule-agent".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends the finished spans to the host about once a second, and once more at shutdown. Spans
/// the host does not take are dropped: traces are diagnostics.
pub async fn export(platform: Platform, spans: Spans, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EXPORT_EVERY);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let batch = spans.take();
        if !batch.is_empty()
            && let Err(e) = platform
                .export_spans(&export_request(platform.workspace_id(), batch))
                .await
        {
            tracing::debug!(error = %display_error(&e), "sending spans to the host failed");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_written_back_the_same() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = SpanContext::parse(text).unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.traceparent(), text);
        let unsampled =
            SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.unwrap().sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_span_keeps_the_trace_and_names_its_parent() {
        let spans = Spans::default();
        let parent =
            SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let server = spans.start("agent message/send", span::SpanKind::Server, Some(&parent));
        assert_eq!(server.context.trace_id, parent.trace_id);
        let client = spans.start(
            "mcp delegate_task",
            span::SpanKind::Client,
            Some(&server.context),
        );
        let client_id = client.context.span_id;
        spans.end(client, Some("no answer"));
        spans.end(server, None);
        let taken = spans.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].span_id, client_id.to_vec());
        assert_eq!(taken[0].status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(taken[1].parent_span_id, parent.span_id.to_vec());
        let json = serde_json::to_value(export_request(Uuid::nil(), taken)).unwrap();
        assert_eq!(
            json["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(spans.take().is_empty());
    }

    #[test]
    fn an_unsampled_trace_is_passed_on_but_not_kept() {
        let spans = Spans::default();
        let parent =
            SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let server = spans.start("agent message/send", span::SpanKind::Server, Some(&parent));
        assert!(server.context.traceparent().ends_with("-00"));
        spans.end(server, None);
        assert!(spans.take().is_empty());
    }
}
