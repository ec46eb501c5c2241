//! Registration, heartbeats, liveness and discovery.

use std::time::Duration;

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use serde_json::json;

on_both_backends!(
    register_heartbeat_degrade_and_recover,
    registering_an_unknown_or_removed_id_is_refused,
    a_registered_workspace_must_present_its_token,
    the_liveness_sweep_marks_silent_workspaces_offline,
    discover_and_peers_follow_the_hierarchy,
);

async fn register_heartbeat_degrade_and_recover(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let token = app
        .register(&id)
        .await
        .expect("first registration mints a token");
    assert_eq!(token.len(), 43);
    let ws = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(ws["status"], "online");
    assert_eq!(ws["url"], "http://127.0.0.1:9/a2a");
    assert_eq!(ws["agent_card"]["name"], "agent");

    let agent = app.with_token(&token);
    let beat = |rate: f64, task: &str| json!({ "workspace_id": id, "error_rate": rate, "active_tasks": 1, "current_task": task, "uptime_seconds": 5 });
    agent
        .post("/registry/heartbeat", beat(0.6, "triage"))
        .await
        .expect(200);
    assert_eq!(
        app.get(&format!("/workspaces/{id}")).await.expect(200)["status"],
        "degraded"
    );
    agent
        .post("/registry/heartbeat", beat(0.2, "triage"))
        .await
        .expect(200);
    assert_eq!(
        app.get(&format!("/workspaces/{id}")).await.expect(200)["status"],
        "degraded",
        "0.2 is not yet recovered"
    );
    agent
        .post("/registry/heartbeat", beat(0.05, "fix"))
        .await
        .expect(200);
    let ws = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(ws["status"], "online");
    assert_eq!(ws["active_tasks"], 1);
    assert_eq!(ws["uptime_seconds"], 5);
    let wedged = json!({ "workspace_id": id, "error_rate": 0.0, "runtime_state": "wedged" });
    agent.post("/registry/heartbeat", wedged).await.expect(200);
    assert_eq!(
        app.get(&format!("/workspaces/{id}")).await.expect(200)["status"],
        "degraded"
    );
    // A new registration is a new session: the last one's uptime does not stand for it.
    let again = json!({ "id": id, "url": "http://127.0.0.1:9/a2a", "agent_card": { "name": "agent", "skills": [] } });
    agent.post("/registry/register", again).await.expect(200);
    let ws = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(ws["status"], "online");
    assert_eq!(ws["uptime_seconds"], 0);

    let kinds: Vec<String> = app
        .get(&format!("/events/{id}"))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["WORKSPACE_ONLINE", "WORKSPACE_DEGRADED", "TASK_UPDATED"] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    assert_eq!(
        agent
            .post(
                "/registry/heartbeat",
                json!({ "workspace_id": id, "error_rate": 3.0 })
            )
            .await
            .status,
        400
    );
    // A second registration keeps the token the agent already has.
    let again = agent
        .post(
            "/registry/register",
            json!({ "id": id, "url": "http://127.0.0.1:9" }),
        )
        .await
        .expect(200);
    assert!(again.get("auth_token").is_none());
}

async fn registering_an_unknown_or_removed_id_is_refused(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let unknown =
        json!({ "id": "6f1c1d7e-0000-4000-8000-000000000000", "url": "http://127.0.0.1:9" });
    app.post("/registry/register", unknown).await.expect(404);
    let id = app.create_workspace("Gone", None).await;
    app.delete(&format!("/workspaces/{id}")).await.expect(200);
    app.post(
        "/registry/register",
        json!({ "id": id, "url": "http://127.0.0.1:9" }),
    )
    .await
    .expect(410);
    assert_eq!(
        app.get(&format!("/workspaces/{id}?include_removed=true"))
            .await
            .expect(200)["status"],
        "removed"
    );
    let live = app.create_workspace("Live", None).await;
    let metadata = json!({ "id": live, "url": "http://169.254.169.254/latest/meta-data" });
    app.post("/registry/register", metadata).await.expect(400);
}

async fn a_registered_workspace_must_present_its_token(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_workspace("A", None).await;
    let b = app.create_workspace("B", None).await;
    let token_a = app.register(&a).await.unwrap();
    let token_b = app.register(&b).await.unwrap();
    let beat = json!({ "workspace_id": a, "error_rate": 0.0 });
    app.anonymous()
        .post("/registry/heartbeat", beat.clone())
        .await
        .expect(401);
    let as_b = app.with_token(&token_b);
    as_b.post("/registry/heartbeat", beat.clone())
        .await
        .expect(401);
    let as_a = app.with_token(&token_a);
    as_a.post("/registry/heartbeat", beat).await.expect(200);
    as_a.post(
        "/registry/update-card",
        json!({ "workspace_id": a, "agent_card": { "name": "new" } }),
    )
    .await
    .expect(200);
    assert_eq!(
        app.get(&format!("/workspaces/{a}")).await.expect(200)["agent_card"]["name"],
        "new"
    );
}

async fn the_liveness_sweep_marks_silent_workspaces_offline(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.liveness.heartbeat_ttl_secs = 1;
        c.liveness.sweep_interval_secs = 0; // the floor: 100 ms
    })
    .await;
    let id = app.create_workspace("Sleepy", None).await;
    let token = app.register(&id).await.unwrap();
    let status = |app: &molecule_e2e::Api| {
        let path = format!("/workspaces/{id}");
        let app = app.clone();
        async move {
            app.get(&path).await.body["status"]
                .as_str()
                .map(str::to_owned)
        }
    };
    molecule_e2e::eventually(Duration::from_secs(10), || async {
        (status(&app).await.as_deref() == Some("offline")).then_some(())
    })
    .await;
    let events = app.get(&format!("/events/{id}")).await.expect(200);
    assert_eq!(events[0]["event_type"], "WORKSPACE_OFFLINE");
    // A heartbeat brings it back.
    let agent = app.with_token(&token);
    agent
        .post(
            "/registry/heartbeat",
            json!({ "workspace_id": id, "error_rate": 0.0 }),
        )
        .await
        .expect(200);
    assert_eq!(status(&app).await.as_deref(), Some("online"));
}

async fn discover_and_peers_follow_the_hierarchy(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    //  root ── a ── a1
    //       └─ b ── b1
    let root = app.create_workspace("Root", None).await;
    let a = app.create_workspace("A", Some(&root)).await;
    let b = app.create_workspace("B", Some(&root)).await;
    let a1 = app.create_workspace("A1", Some(&a)).await;
    let b1 = app.create_workspace("B1", Some(&b)).await;
    let discover = |caller: &str, target: &str| {
        let (app, caller, target) = (app.api.clone(), caller.to_owned(), target.to_owned());
        async move {
            app.call(
                reqwest::Method::GET,
                &format!("/registry/discover/{target}"),
                None,
                &[("x-workspace-id", &caller)],
            )
            .await
        }
    };
    assert_eq!(discover(&a, &b).await.expect(200)["name"], "B", "siblings");
    assert_eq!(
        discover(&a1, &root).await.status,
        200,
        "grandchild to grandparent"
    );
    assert_eq!(
        discover(&root, &b1).await.status,
        200,
        "ancestor to descendant"
    );
    assert_eq!(discover(&a1, &b1).await.status, 403, "cousins");
    assert_eq!(discover(&a1, &b).await.status, 403, "aunt");
    assert_eq!(
        app.get(&format!("/registry/discover/{b}")).await.status,
        400,
        "caller header required"
    );
    let reserved = app
        .call(
            reqwest::Method::GET,
            &format!("/registry/discover/{b}"),
            None,
            &[("x-workspace-id", "system:x")],
        )
        .await;
    assert_eq!(reserved.status, 403);

    let names = |v: serde_json::Value| {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(app.get(&format!("/registry/{a}/peers")).await.expect(200)),
        ["A1", "B", "Root"]
    );
    let peers = app
        .call(
            reqwest::Method::GET,
            &format!("/registry/{a1}/peers"),
            None,
            &[("x-workspace-id", &b1)],
        )
        .await;
    assert_eq!(peers.status, 403, "a cousin may not list my peers");
    let check = app
        .post(
            "/registry/check-access",
            json!({ "caller_id": a1, "target_id": b1 }),
        )
        .await
        .expect(200);
    assert_eq!(check, json!({ "allowed": false }));
    let check = app
        .post(
            "/registry/check-access",
            json!({ "caller_id": a, "target_id": b }),
        )
        .await
        .expect(200);
    assert_eq!(check, json!({ "allowed": true }));
}
