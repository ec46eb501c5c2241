//! `GET /openapi.json`: served without a token behind the same layers as every route, and in
//! agreement with the router: every described operation reaches the handler of exactly that
//! route, and a described path answers 405 to every method it does not describe.

use std::collections::{BTreeMap, BTreeSet};

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::json;

on_both_backends!(
    the_description_is_public_json_behind_the_usual_layers,
    every_described_operation_is_routed_to_its_own_route_and_no_other_method_is,
);

async fn the_description_is_public_json_behind_the_usual_layers(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;

    // Act
    let reply = app.anonymous().get("/openapi.json").await;

    // Assert
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert_eq!(
        reply.headers["content-security-policy"],
        "default-src 'self'"
    );
    assert!(reply.headers.contains_key("x-ratelimit-limit"));
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Molecule host");
    assert!(doc["paths"]["/workspaces/{id}"]["get"].is_object());
    assert!(
        doc["paths"]["/openapi.json"]["get"]["security"].is_null(),
        "the description itself needs no token"
    );
    assert_eq!(
        doc["paths"]["/workspaces"]["get"]["security"],
        json!([{ "admin_token": [] }])
    );
}

/// A value for a path parameter that every handler parses without a 404 from the router.
fn placeholder(name: &str) -> &'static str {
    match name {
        "path" => "notes/readme.md",
        _ => "00000000-0000-4000-8000-000000000000",
    }
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => placeholder(name).to_owned(),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The host's request counter: `(METHOD, route, status)` to count. `route` is the matched axum
/// route template, `unmatched` when no route's path matched (the 404 fallback).
fn counted_routes(metrics: &str) -> BTreeMap<(String, String, u16), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("molecule_http_requests_total{") else {
            continue;
        };
        let (labels, count) = rest.split_once("} ").expect("a sample");
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).expect("a label") + name.len() + 2;
            let end = start + labels[start..].find('"').expect("a closing quote");
            labels[start..end].to_owned()
        };
        let count: u64 = count.trim().parse().expect("a count");
        let status = label("status").parse().expect("a status");
        *out.entry((label("method"), label("route"), status))
            .or_default() += count;
    }
    out
}

async fn every_described_operation_is_routed_to_its_own_route_and_no_other_method_is(
    backend: DbBackend,
) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let doc = app.get("/openapi.json").await.expect(200);
    let mut described: BTreeSet<(String, String)> = BTreeSet::new();
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            described.insert((method.to_uppercase(), path.clone()));
            by_path
                .entry(path.clone())
                .or_default()
                .insert(method.to_uppercase());
        }
    }
    assert!(described.len() > 60, "only {} operations", described.len());

    // Act: every described operation once, with placeholder parameters and an empty body.
    for (method, path) in &described {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let reply = app.call(method.clone(), &concrete(path), body, &[]).await;
        assert_ne!(reply.status, 405, "{method} {path}: {}", reply.text);
        assert!(
            reply.status.as_u16() < 500,
            "{method} {path}: {}",
            reply.text
        );
    }
    // ... and every other method on the described paths.
    let mut refused = 0;
    for (path, methods) in &by_path {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if methods.contains(method) {
                continue;
            }
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let reply = app.call(method.clone(), &concrete(path), None, &[]).await;
            assert_eq!(
                reply.status, 405,
                "{method} {path} is routed but not described"
            );
            assert_eq!(reply.body, json!({ "error": "method not allowed" }));
            refused += 1;
        }
    }
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);

    // Assert: each described operation was counted under exactly its own route template
    // (axum's catch-all `{*path}` is `{path}` in OpenAPI); the method probes matched a path but
    // no method (405); nothing fell to the 404 fallback.
    let counted = counted_routes(&metrics.text);
    let routed: BTreeSet<(String, String)> = counted
        .keys()
        .filter(|(_, route, status)| route != "unmatched" && *status != 405)
        .map(|(method, route, _)| (method.clone(), route.replace("{*", "{")))
        .collect();
    for operation in &described {
        assert!(
            routed.contains(operation),
            "{operation:?} did not reach its own route; routed: {routed:?}"
        );
    }
    for operation in &routed {
        assert!(
            described.contains(operation),
            "{operation:?} was routed but is not described"
        );
    }
    let count = |keep: &dyn Fn(&str, u16) -> bool| -> u64 {
        counted
            .iter()
            .filter(|((_, route, status), _)| keep(route, *status))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(
        count(&|route, _| route == "unmatched"),
        0,
        "requests fell to the 404 fallback"
    );
    assert_eq!(count(&|_, status| status == 405), refused);
}
