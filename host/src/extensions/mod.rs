//! The WebAssembly extension platform: the engine, loading and calling components of the three
//! slot kinds under per-call limits, and the fallbacks that keep the host answering when an
//! extension fails. This module knows nothing of HTTP or of the domain modules; they call it.

mod bindings;
pub mod boundary;
pub mod engine;
pub mod metrics;
pub mod policy;
pub mod reason;
pub mod registry;
pub mod remote;
#[cfg(test)]
mod resolver_tests;
pub mod runtime;
#[cfg(test)]
mod tests;
pub mod types;

use std::sync::Arc;
use std::time::Instant;

pub use engine::ExtensionEngine;
pub use remote::{Credentials, RemoteConfig, RemoteHost};
pub use runtime::{CallError, Extension, Identity, Limits, LoadError, ResolverAccess};
use types::{Decision, FileChange, Reload, Trigger, WorkspaceInfo};

/// Runs the classifier on a blocking thread; any failure (trap, deadline, memory cap) becomes a
/// cold reload, logged and counted.
pub async fn classify_or_cold(
    ext: Arc<Extension>,
    metrics: &metrics::ExtensionMetrics,
    changes: Vec<FileChange>,
) -> Reload {
    let started = Instant::now();
    let call = ext.clone();
    let result = tokio::task::spawn_blocking(move || call.classify(&changes))
        .await
        .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
    metrics.observe(&ext, &result, started.elapsed());
    result.unwrap_or_else(|err| {
        metrics.fallback(&ext, &err);
        tracing::warn!(extension = %ext.identity, error = %err, "classifier failed; treating the change as cold");
        policy::classifier_fallback(err.label())
    })
}

/// Asks the restart policy on a blocking thread; a failure falls back to the built-in default
/// policy. The answer is clamped either way.
pub async fn decide_or_default(
    ext: Option<Arc<Extension>>,
    metrics: &metrics::ExtensionMetrics,
    clamp: &policy::Clamp,
    workspace: WorkspaceInfo,
    trigger: Trigger,
) -> Decision {
    let decision = match ext {
        None => policy::default_decide(&workspace, &trigger),
        Some(ext) => {
            let started = Instant::now();
            let call = ext.clone();
            let (ws, tr) = (workspace.clone(), trigger.clone());
            let result = tokio::task::spawn_blocking(move || call.decide(&ws, &tr))
                .await
                .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
            metrics.observe(&ext, &result, started.elapsed());
            result.unwrap_or_else(|err| {
                metrics.fallback(&ext, &err);
                tracing::warn!(extension = %ext.identity, error = %err, "restart policy failed; using the built-in default");
                policy::default_decide(&workspace, &trigger)
            })
        }
    };
    clamp.apply(&workspace, decision)
}
