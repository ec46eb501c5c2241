//! W3C Trace Context (`traceparent`, `tracestate`) in and out of HTTP headers.

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context, or an empty context when it sent none (or a malformed one).
pub fn extract(headers: &HeaderMap) -> Context {
    let well_formed = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(well_formed);
    if !well_formed {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The shape W3C Trace Context requires: `version-trace_id-parent_id-flags` as 2, 32, 16 and 2
/// hex digits (a later version may add fields). The propagator alone pads short ids.
fn well_formed(traceparent: &str) -> bool {
    let fields: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len && field.bytes().all(|b| b.is_ascii_hexdigit())
    };
    fields.len() >= 4
        && (fields[0] != "00" || fields.len() == 4)
        && hex(fields[0], 2)
        && hex(fields[1], 32)
        && hex(fields[2], 16)
        && hex(fields[3], 2)
}

/// Whether the caller sent a `traceparent` the host could read.
pub fn has_parent(cx: &Context) -> bool {
    cx.span().span_context().is_valid()
}

/// The `traceparent` header for calls made within `cx`'s span, if it has one.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The trace id of `cx`'s span as 32 hex digits, if it has one.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers
    }

    #[test]
    fn a_callers_traceparent_is_read_and_passed_on_with_its_trace_id() {
        let cx = extract(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert!(has_parent(&cx));
        assert_eq!(
            traceparent(&cx).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            trace_id(&cx).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn a_malformed_or_missing_traceparent_starts_nothing() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "",
        ] {
            assert!(!has_parent(&extract(&headers(bad))), "{bad:?}");
        }
        assert!(!has_parent(&extract(&HeaderMap::new())));
        assert_eq!(traceparent(&Context::new()), None);
    }
}
