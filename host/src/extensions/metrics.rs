//! Extension metrics: calls, latency, traps, timeouts and fallbacks per slot and digest.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::runtime::{CallError, Extension};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    slot: String,
    digest: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    slot: String,
    digest: String,
}

/// The families, registered once into the host's registry.
#[derive(Clone, Debug)]
pub struct ExtensionMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<SlotLabels, Histogram>,
    fallbacks: Family<CallLabels, Counter>,
}

impl Default for ExtensionMetrics {
    fn default() -> Self {
        ExtensionMetrics {
            calls: Family::default(),
            // 10 µs .. ~5 s
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 3.0, 13))
            }),
            fallbacks: Family::default(),
        }
    }
}

impl ExtensionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "extension_calls",
            "Extension calls by slot, digest and outcome (ok, trap, timeout, memory)",
            self.calls.clone(),
        );
        registry.register(
            "extension_call_duration_seconds",
            "Extension call latency by slot and digest",
            self.latency.clone(),
        );
        registry.register(
            "extension_fallbacks",
            "Answers the host substituted for a failed extension call",
            self.fallbacks.clone(),
        );
    }

    pub fn observe<T>(&self, ext: &Extension, result: &Result<T, CallError>, elapsed: Duration) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => err.label(),
        };
        self.calls.get_or_create(&labels(ext, outcome)).inc();
        self.latency
            .get_or_create(&SlotLabels {
                slot: ext.kind.as_str().to_owned(),
                digest: ext.identity.digest.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn fallback(&self, ext: &Extension, err: &CallError) {
        self.fallbacks
            .get_or_create(&labels(ext, err.label()))
            .inc();
    }

    /// A call that completed but whose answer the host could not use (e.g. `malformed`).
    pub fn failed(&self, ext: &Extension, reason: &str) {
        self.fallbacks.get_or_create(&labels(ext, reason)).inc();
    }

    /// Calls counted for `outcome` (tests and the shadow report read these).
    pub fn calls(&self, ext: &Extension, outcome: &str) -> u64 {
        self.calls.get_or_create(&labels(ext, outcome)).get()
    }

    pub fn fallbacks(&self, ext: &Extension, reason: &str) -> u64 {
        self.fallbacks.get_or_create(&labels(ext, reason)).get()
    }
}

fn labels(ext: &Extension, outcome: &str) -> CallLabels {
    CallLabels {
        slot: ext.kind.as_str().to_owned(),
        digest: ext.identity.digest.clone(),
        outcome: outcome.to_owned(),
    }
}
