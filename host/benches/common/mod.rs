//! Reading criterion's results back after a run, shared by the benchmarks' summary tables.

use std::path::PathBuf;

/// Where criterion writes its reports: `$CARGO_TARGET_DIR/criterion` or the workspace's
/// `target/criterion`.
pub fn report_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("criterion")
}

/// The median of one benchmark from this run's estimates, in nanoseconds.
pub fn median_ns(group: &str, function: &str) -> Option<f64> {
    let path = report_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

pub fn human(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.2} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}
