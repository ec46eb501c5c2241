//! A local OTLP/HTTP collector for the trace specs: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, kept for the spec to read. Only protobuf is taken, as the host
//! sends it; anything else is answered 415 and counted.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;

/// One span as the collector received it, with its resource's `service.name` and
/// `molecule.workspace_id`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub workspace_id: Option<String>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    refused: usize,
}

#[derive(Debug)]
pub struct OtlpReceiver {
    /// The base URL to set as `otel.endpoint`.
    pub endpoint: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

async fn export(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let request = protobuf
        .then(|| ExportTraceServiceRequest::decode(body).ok())
        .flatten();
    let mut received = received.lock().unwrap();
    let Some(request) = request else {
        received.refused += 1;
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    };
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service = string_attr(&attributes, "service.name").unwrap_or_default();
        let workspace_id = string_attr(&attributes, "molecule.workspace_id");
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(ReceivedSpan {
                    service: service.clone(),
                    workspace_id: workspace_id.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    name: span.name,
                });
            }
        }
    }
    StatusCode::OK
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            endpoint,
            received,
            task,
        }
    }

    /// The spans of `trace_id` received so far.
    pub fn spans_of(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let received = self.received.lock().unwrap();
        received
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Exports refused as not protobuf.
    pub fn refused(&self) -> usize {
        self.received.lock().unwrap().refused
    }
}
