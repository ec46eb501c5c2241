//! Export over OTLP/HTTP: the host's spans and its agents' spans, batched through one bounded
//! queue and POSTed as protobuf to `<otel.endpoint>/v1/traces`.
//!
//! Nothing here holds up a request: a span is queued with `try_send`, and a full queue (the
//! collector slower than the host, or down) drops it and counts it. A batch the collector
//! refuses is logged and dropped, not retried: traces are diagnostics, never the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;
use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::OtelConfig;

/// Spans waiting for the exporter; more are dropped (and counted).
const QUEUE: usize = 8192;
/// The most spans in one export request.
const BATCH: usize = 512;
/// How long a span may wait for a fuller batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export request, end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What waits to be exported.
#[derive(Debug)]
pub enum Item {
    Host(Box<SpanData>),
    /// An agent's spans, already checked and stamped with its workspace.
    Agent(ResourceSpans),
}

/// The sending side, held by the span processor and the agents' route.
#[derive(Debug, Clone)]
pub struct Queue {
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    pub fn push(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The exporting side: runs until the host stops, then sends what is left once.
#[derive(Debug)]
pub struct Exporter {
    rx: mpsc::Receiver<Item>,
    dropped: Arc<AtomicU64>,
    url: String,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    resource: ResourceAttributesWithSchema,
}

/// `<endpoint>/v1/traces`, unless the endpoint already names the traces path.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// The queue and its exporter, for `config.endpoint`.
pub fn channel(
    config: &OtelConfig,
    endpoint: &str,
    resource: &opentelemetry_sdk::Resource,
) -> anyhow::Result<(Queue, Exporter)> {
    let url = traces_url(endpoint);
    reqwest::Url::parse(&url)
        .map_err(|e| anyhow::anyhow!("otel.endpoint {endpoint:?} is not a URL: {e}"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("otel.headers: {name:?} is not a header name"))?;
        let mut value = reqwest::header::HeaderValue::from_str(value.expose_secret())
            .map_err(|_| anyhow::anyhow!("otel.headers: the value of {name} is not valid"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    Ok((
        Queue {
            tx,
            dropped: dropped.clone(),
        },
        Exporter {
            rx,
            dropped,
            url,
            headers,
            client,
            resource: ResourceAttributesWithSchema::from(resource),
        },
    ))
}

impl Exporter {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        let mut reported_drops = 0;
        loop {
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => {
                        batch.push(item);
                        if batch.len() >= BATCH {
                            self.send(std::mem::take(&mut batch)).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.send(std::mem::take(&mut batch)).await;
                    }
                    let dropped = self.dropped.load(Ordering::Relaxed);
                    if dropped > reported_drops {
                        tracing::warn!(
                            dropped = dropped - reported_drops,
                            "spans dropped: the OTLP export queue was full"
                        );
                        reported_drops = dropped;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        // Whatever is queued when the host stops goes out once.
        while let Ok(item) = self.rx.try_recv() {
            batch.push(item);
            if batch.len() >= BATCH {
                self.send(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.send(batch).await;
        }
    }

    async fn send(&self, items: Vec<Item>) {
        let mut host = Vec::new();
        let mut resource_spans = Vec::new();
        for item in items {
            match item {
                Item::Host(span) => host.push(*span),
                Item::Agent(spans) => resource_spans.push(spans),
            }
        }
        if !host.is_empty() {
            resource_spans.extend(group_spans_by_resource_and_scope(host, &self.resource));
        }
        let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::warn!(
                status = response.status().as_u16(),
                "the OTLP collector refused a batch of spans"
            ),
            Err(err) => tracing::warn!(
                error = %err.without_url(),
                "exporting spans to the OTLP collector failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://c:4318"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            traces_url("http://c:4318/"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces".to_owned()
        );
    }
}
