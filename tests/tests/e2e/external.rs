//! External agents' connection: the snippet an external agent needs (never its credential), and
//! a rotation that hands out a new credential once and stops every old one at once; only the
//! operator rotates, and a workspace whose agent the host starts has neither.

use molecule_e2e::{DbBackend, TestApp, on_both_backends, process_runtime};
use serde_json::{Value, json};

on_both_backends!(
    an_external_agent_connects_with_its_credential_and_a_rotation_stops_the_old_one_at_once,
    only_the_operator_rotates_and_nobody_else_reads_the_connection,
);

fn beat(id: &str) -> Value {
    json!({ "workspace_id": id })
}

async fn an_external_agent_connects_with_its_credential_and_a_rotation_stops_the_old_one_at_once(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let (id, first) = app.create_external("Outside", None).await;

    // The snippet: where to register and beat, how to authenticate; never the credential.
    let connection = app
        .get(&format!("/workspaces/{id}/external/connection"))
        .await
        .expect(200);
    assert_eq!(connection["workspace_id"], id.as_str(), "{connection}");
    assert_eq!(connection["auth_token"], Value::Null, "{connection}");
    assert_eq!(connection["auth_scheme"], "bearer");
    let register = connection["registry_endpoint"].as_str().unwrap();
    assert!(register.ends_with("/registry/register"), "{connection}");
    assert!(
        connection["heartbeat_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/registry/heartbeat")
    );
    let curl = connection["curl_register_template"].as_str().unwrap();
    assert!(
        curl.contains(&id) && curl.contains("<AUTH_TOKEN>"),
        "{curl}"
    );
    assert!(
        !connection.to_string().contains(&first),
        "the credential leaked"
    );
    // The agent itself may read it too.
    app.with_token(&first)
        .get(&format!("/workspaces/{id}/external/connection"))
        .await
        .expect(200);

    let agent = app.with_token(&first);
    agent
        .post("/registry/heartbeat", beat(&id))
        .await
        .expect(200);

    let rotated = app
        .post(&format!("/workspaces/{id}/external/rotate"), json!({}))
        .await
        .expect(200);
    let second = rotated["auth_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(rotated["revoked"], 1, "{rotated}");
    assert_eq!(rotated["workspace_id"], id.as_str());

    // The old credential stops at once, for every call an agent makes; the new one works.
    agent
        .post("/registry/heartbeat", beat(&id))
        .await
        .expect(401);
    agent
        .post(
            "/registry/register",
            json!({ "id": id, "url": "http://127.0.0.1:9", "agent_card": { "name": "x", "skills": [] } }),
        )
        .await
        .expect(401);
    app.with_token(&second)
        .post("/registry/heartbeat", beat(&id))
        .await
        .expect(200);
    // Shown once: the connection never repeats it.
    let again = app
        .get(&format!("/workspaces/{id}/external/connection"))
        .await
        .expect(200);
    assert!(!again.to_string().contains(&second));
}

async fn only_the_operator_rotates_and_nobody_else_reads_the_connection(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let (id, token) = app.create_external("Guarded", None).await;
    let (_, other) = app.create_external("Stranger", None).await;
    let rotate = format!("/workspaces/{id}/external/rotate");
    let connection = format!("/workspaces/{id}/external/connection");

    app.with_token(&token)
        .post(&rotate, json!({}))
        .await
        .expect(403);
    app.with_token(&other)
        .post(&rotate, json!({}))
        .await
        .expect(401);
    app.anonymous().post(&rotate, json!({})).await.expect(401);
    app.with_token(&other).get(&connection).await.expect(401);
    app.anonymous().get(&connection).await.expect(401);
    // None of that rotated anything: the agent's credential still works.
    app.with_token(&token)
        .post("/registry/heartbeat", beat(&id))
        .await
        .expect(200);

    app.get(&format!(
        "/workspaces/{}/external/connection",
        uuid::Uuid::new_v4()
    ))
    .await
    .expect(404);
    app.delete(&format!("/workspaces/{id}")).await.expect(200);
    app.post(&rotate, json!({})).await.expect(410);
}

/// A workspace whose agent the host starts gets its credential from the host: no connection
/// snippet, no rotation (a restart issues a new one).
#[tokio::test]
async fn a_workspace_the_host_runs_has_no_external_connection() {
    let app = TestApp::spawn_with(DbBackend::Sqlite, process_runtime).await;
    let id = app.create_workspace("Inside", None).await;
    let refused = app
        .get(&format!("/workspaces/{id}/external/connection"))
        .await
        .expect(409);
    assert!(
        refused["error"].as_str().unwrap().contains("restart"),
        "{refused}"
    );
    app.post(&format!("/workspaces/{id}/external/rotate"), json!({}))
        .await
        .expect(409);
}
