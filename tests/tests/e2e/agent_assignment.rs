//! Agent assignment: a workspace's agent model as a history of assignments (assign, replace,
//! remove, move), one active at a time, each change setting the workspace's model; moving an
//! agent is the operator's alone.

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    an_agent_is_assigned_replaced_moved_and_removed_with_its_history,
    assignment_changes_are_checked_and_a_move_is_the_operators,
);

async fn model_of(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/workspaces/{id}/model"))
        .await
        .expect(200)["model"]
        .clone()
}

async fn an_agent_is_assigned_replaced_moved_and_removed_with_its_history(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_workspace("Alpha", None).await;
    let b = app.create_workspace("Beta", None).await;
    let agent = |id: &str| format!("/workspaces/{id}/agent");
    assert_eq!(
        app.get(&agent(&a)).await.expect(200),
        json!({ "current": null, "history": [] })
    );

    let assigned = app
        .post(&agent(&a), json!({ "model": "m-1" }))
        .await
        .expect(201);
    assert_eq!(assigned["model"], "m-1");
    assert_eq!(assigned["status"], "active");
    assert_eq!(
        model_of(&app, &a).await,
        "m-1",
        "the assignment is the workspace's model"
    );
    app.post(&agent(&a), json!({ "model": "m-9" }))
        .await
        .expect(409);

    let replaced = app
        .patch(&agent(&a), json!({ "model": "m-2", "reason": "faster" }))
        .await
        .expect(200);
    assert_eq!(replaced["previous"]["model"], "m-1");
    assert_eq!(replaced["previous"]["status"], "removed");
    assert_eq!(replaced["previous"]["removal_reason"], "faster");
    assert_eq!(replaced["current"]["model"], "m-2");
    assert_eq!(model_of(&app, &a).await, "m-2");

    let moved = app
        .post(
            &format!("/workspaces/{a}/agent/move"),
            json!({ "target_workspace_id": b }),
        )
        .await
        .expect(200);
    assert_eq!(moved["workspace_id"], b.as_str());
    assert_eq!(moved["model"], "m-2");
    assert_eq!(
        model_of(&app, &a).await,
        "",
        "the source runs the default again"
    );
    assert_eq!(model_of(&app, &b).await, "m-2");
    let history = app.get(&agent(&a)).await.expect(200);
    assert_eq!(history["current"], Value::Null);
    let reasons: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["removal_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, [format!("moved to {b}").as_str(), "faster"]);
    assert_eq!(
        app.get(&agent(&b)).await.expect(200)["current"]["model"],
        "m-2"
    );

    let removed = app
        .delete(&format!("/workspaces/{b}/agent?reason=done"))
        .await
        .expect(200);
    assert_eq!(removed["removal_reason"], "done");
    assert_eq!(model_of(&app, &b).await, "");
    app.delete(&agent(&b)).await.expect(404);

    // Every change was announced.
    let events: Vec<String> = app
        .get(&format!("/events/{a}"))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_type"].as_str().map(str::to_owned))
        .collect();
    for expected in ["AGENT_ASSIGNED", "AGENT_REPLACED", "AGENT_MOVED"] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected}: {events:?}"
        );
    }
}

async fn assignment_changes_are_checked_and_a_move_is_the_operators(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_workspace("Alpha", None).await;
    let b = app.create_workspace("Beta", None).await;
    let own = app.with_token(&app.agent_token(&a).await);
    let agent = format!("/workspaces/{a}/agent");
    let mv = format!("/workspaces/{a}/agent/move");

    for bad in [
        json!({ "model": "" }),
        json!({ "model": "x".repeat(101) }),
        json!({}),
    ] {
        app.post(&agent, bad).await.expect(400);
    }
    app.patch(&agent, json!({ "model": "m" })).await.expect(404);
    app.delete(&agent).await.expect(404);
    app.post(&mv, json!({ "target_workspace_id": b }))
        .await
        .expect(404);

    // The workspace manages its own assignment, but never moves it elsewhere.
    own.post(&agent, json!({ "model": "m-1" }))
        .await
        .expect(201);
    own.post(&mv, json!({ "target_workspace_id": b }))
        .await
        .expect(403);
    app.anonymous().get(&agent).await.expect(401);
    app.with_token(&app.agent_token(&b).await)
        .get(&agent)
        .await
        .expect(401);

    app.post(&mv, json!({ "target_workspace_id": a }))
        .await
        .expect(400);
    app.post(&mv, json!({ "target_workspace_id": uuid::Uuid::new_v4() }))
        .await
        .expect(400);
    app.post(&format!("/workspaces/{b}/agent"), json!({ "model": "m-b" }))
        .await
        .expect(201);
    app.post(&mv, json!({ "target_workspace_id": b }))
        .await
        .expect(409);
    // A refused move changed nothing.
    assert_eq!(app.get(&agent).await.expect(200)["current"]["model"], "m-1");
    app.delete(&format!("/workspaces/{a}")).await.expect(200);
    app.get(&agent).await.expect(410);
}
