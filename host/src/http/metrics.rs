//! `/metrics`: Prometheus text exposition of request counts and latencies by route. Each host
//! instance owns its registry (no global recorder), so several hosts in one test process never
//! mix their numbers. Later subsystems register their own families through [`Metrics::registry`].

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::ApiError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: String,
    route: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    process: ProcessGauges,
}

/// What the soak campaign and an operator watch for leaks, read when `/metrics` is scraped: the
/// process's resident memory and open file descriptors (from `/proc/self`, Linux only; absent
/// elsewhere) and the tokio runtime's live tasks (every task of the runtime the host runs on:
/// in a test process with several hosts, theirs together).
#[derive(Default)]
struct ProcessGauges {
    resident_bytes: Gauge,
    open_fds: Gauge,
    alive_tasks: Gauge,
}

impl ProcessGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the host process (VmRSS)",
            self.resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the host process",
            self.open_fds.clone(),
        );
        registry.register(
            "tokio_alive_tasks",
            "Tasks alive on the tokio runtime the host runs on",
            self.alive_tasks.clone(),
        );
    }

    fn sample(&self) {
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(vm_rss_kib)
        {
            self.resident_bytes.set(kib.saturating_mul(1024));
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle read_dir holds is one of the entries: not counted.
            let open = entries.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tasks = handle.metrics().num_alive_tasks();
            self.alive_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
    }
}

/// `VmRSS:   12345 kB` from `/proc/<pid>/status`.
fn vm_rss_kib(status: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("molecule");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        registry.register(
            "memory_redactions",
            "Secret-looking values redacted from agent memories before they were stored",
            crate::memories::REDACTIONS.clone(),
        );
        registry.register(
            "memory_embedding_failures",
            "Embedding calls for agent memories that failed (the memory or search went without)",
            crate::memories::embed::FAILURES.clone(),
        );
        let process = ProcessGauges::default();
        process.register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            process,
        }
    }

    /// Lets a subsystem register its own metric families at start-up.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.process.sample();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry())?;
        Ok(out)
    }
}

/// Prometheus text exposition (no auth: it carries counts and latencies, never ids or tokens).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)),
)]
pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = state.metrics.encode().map_err(ApiError::internal)?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_from_the_status_file() {
        let status = "Name:\tmolecule\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tmolecule\n"), None);
    }

    #[tokio::test]
    async fn a_scrape_reports_the_process_memory_descriptors_and_tasks() {
        let metrics = Metrics::new();
        let _held = std::fs::File::open("/proc/self/status").expect("an open file");
        let text = metrics.encode().expect("encodes");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(value("molecule_process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("molecule_process_open_fds") >= 1.0);
        assert!(value("molecule_tokio_alive_tasks") >= 0.0);
    }
}
