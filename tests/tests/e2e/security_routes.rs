//! The route table of `SECURITY.md`, called: every route that is not public refuses a request
//! without a credential and one with a junk bearer (401), the operator's routes refuse a
//! workspace's token, a workspace's routes refuse another workspace's token, and the peer routes
//! refuse a caller the hierarchy does not allow (403). The table itself is checked against the
//! router by a host unit test, so no route escapes this spec.

use molecule_e2e::{Api, DbBackend, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(every_route_refuses_a_missing_or_wrong_credential);

/// `(METHOD, path, owners)` per row of the table in `SECURITY.md`.
fn table() -> Vec<(Method, String, Vec<String>)> {
    molecule_host::http::openapi::security_route_table(include_str!("../../../SECURITY.md"))
        .into_iter()
        .map(|(method, path, owners, _)| {
            (
                Method::from_bytes(method.as_bytes()).expect("a method"),
                path,
                owners,
            )
        })
        .collect()
}

/// The workspaces a request is aimed at: `target` (the `{id}` of every path) in one org, and a
/// stranger in another org whose token is "the wrong credential".
struct Scene {
    target: String,
    stranger_token: String,
}

/// `path` with its parameters filled: workspace ids with the target, anything else with a
/// well-formed value.
fn concrete(path: &str, scene: &Scene) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{id}" | "{workspace_id}" => scene.target.clone(),
            "{path}" => "notes/readme.md".to_owned(),
            "{key}" => "SOME_KEY".to_owned(),
            "{name}" => "helper".to_owned(),
            s if s.starts_with('{') => "00000000-0000-4000-8000-000000000000".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A body the route reads before it decides (the agent routes name their workspace in it; the
/// A2A proxy checks the hierarchy once it has a message), or an empty object.
fn body(path: &str, scene: &Scene) -> Value {
    let id = scene.target.as_str();
    match path {
        "/registry/register" => json!({ "id": id, "url": "http://127.0.0.1:9/a2a" }),
        "/registry/heartbeat" => json!({ "workspace_id": id }),
        "/registry/update-card" => json!({ "workspace_id": id, "agent_card": {} }),
        "/registry/check-access" => json!({ "caller_id": id, "target_id": id }),
        "/workspaces/{id}/a2a" => json!({ "params": { "message": { "content": "hello" } } }),
        _ => json!({}),
    }
}

async fn status(api: &Api, method: &Method, path: &str, scene: &Scene) -> u16 {
    let url = concrete(path, scene);
    let payload = (method != Method::GET && method != Method::DELETE).then(|| body(path, scene));
    api.call(method.clone(), &url, payload, &[])
        .await
        .status
        .as_u16()
}

async fn every_route_refuses_a_missing_or_wrong_credential(backend: DbBackend) {
    // Arrange: the default environment with an admin token; the target is a child in one org,
    // the stranger an agent in another.
    let app = TestApp::spawn(backend).await;
    let org = app.create_workspace("Acme", None).await;
    let target = app.create_workspace("Target", Some(&org)).await;
    let other_org = app.create_workspace("Rival", None).await;
    let stranger = app.create_workspace("Stranger", Some(&other_org)).await;
    let scene = Scene {
        target: target.clone(),
        stranger_token: app.agent_token(&stranger).await,
    };
    let anonymous = app.anonymous();
    let junk = app.with_token("junk-0000000000000000000000000000000000000");
    let wrong = app.with_token(&scene.stranger_token);

    // Act / Assert
    let mut checked = 0;
    for (method, path, owners) in table() {
        let at = format!("{method} {path}");
        if owners == ["public"] {
            let got = status(&anonymous, &method, &path, &scene).await;
            assert_ne!(got, 401, "{at} is public");
            continue;
        }
        // The test-token route does not exist in the default environment, for anyone.
        let refused = if path.ends_with("/test-token") {
            404
        } else {
            401
        };
        for (who, client) in [("no credential", &anonymous), ("a junk bearer", &junk)] {
            let got = status(client, &method, &path, &scene).await;
            assert_eq!(got, refused, "{at} with {who}");
        }
        // Another workspace's token is the wrong credential for anything that is not "any".
        if !owners.iter().any(|o| o == "any") {
            let got = status(&wrong, &method, &path, &scene).await;
            let expected = if path.ends_with("/test-token") {
                404
            } else if owners.iter().any(|o| o == "peer") {
                403
            } else {
                401
            };
            assert_eq!(got, expected, "{at} with another org's workspace token");
        }
        checked += 1;
    }
    assert!(checked > 80, "only {checked} routes were checked");
}
