//! Workspace CRUD, hierarchy edits and cascade delete.

use molecule_e2e::{DbBackend, TestApp, on_both_backends};
use serde_json::json;

on_both_backends!(
    creating_a_workspace_answers_201_provisioning_with_defaults,
    invalid_create_bodies_get_a_clear_400_and_write_nothing,
    sibling_names_get_a_numbered_suffix,
    listing_and_getting_show_the_canvas_fields,
    patch_updates_fields_and_refuses_cycles,
    delete_asks_for_confirmation_then_cascades,
    purge_hard_deletes_the_subtree,
    unknown_and_malformed_ids_are_4xx,
    workspace_config_merges_and_caps_its_size,
);

async fn creating_a_workspace_answers_201_provisioning_with_defaults(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Dev Lead", "role": "leads" }),
        )
        .await
        .expect(201);
    assert_eq!(created["status"], "provisioning");
    assert_eq!(created["workspace_access"], "none");
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["awareness_namespace"], format!("workspace:{id}"));
    let ws = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(ws["tier"], 3);
    assert_eq!(ws["runtime"], "langgraph");
    assert_eq!(ws["status"], "provisioning");
    assert_eq!(ws["max_concurrent_tasks"], 1);
    let events = app.get(&format!("/events/{id}")).await.expect(200);
    assert_eq!(events[0]["event_type"], "WORKSPACE_PROVISIONING");
    assert_eq!(events[0]["payload"]["name"], "Dev Lead");
}

async fn invalid_create_bodies_get_a_clear_400_and_write_nothing(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    for body in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": "a\nb" }),
        json!({ "name": "bell\u{7}" }),
        json!({ "name": "x{y}" }),
        json!({ "name": "ok", "role": "a\rb" }),
        json!({ "name": "ok", "tier": 9 }),
        json!({ "name": "ok", "workspace_access": "read_only" }),
        json!({ "name": "ok", "workspace_dir": "/etc/passwd" }),
        json!({ "name": "ok", "workspace_dir": "relative/dir" }),
        json!({ "name": "ok", "parent_id": "00000000-0000-0000-0000-00000000beef" }),
        json!({ "name": "ok", "parent_id": "not-a-uuid" }),
        json!({ "name": "ok", "secrets": { "BAD-KEY": "v" } }),
        json!({ "name": "x".repeat(300) }),
    ] {
        let reply = app.post("/workspaces", body.clone()).await;
        assert_eq!(reply.status, 400, "{body} -> {}", reply.text);
        assert!(reply.body["error"].is_string());
    }
    let malformed = app
        .call(
            reqwest::Method::POST,
            "/workspaces",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(
        app.get("/workspaces").await.expect(200),
        json!([]),
        "nothing half-written"
    );
}

async fn sibling_names_get_a_numbered_suffix(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Org", None).await;
    let a = app.create_workspace("QA", Some(&root)).await;
    let b = app.create_workspace("QA", Some(&root)).await;
    assert_eq!(
        app.get(&format!("/workspaces/{a}")).await.expect(200)["name"],
        "QA"
    );
    assert_eq!(
        app.get(&format!("/workspaces/{b}")).await.expect(200)["name"],
        "QA (2)"
    );
    // Renaming onto a live sibling's name is a conflict, mapped from the constraint.
    let reply = app
        .patch(&format!("/workspaces/{b}"), json!({ "name": "QA" }))
        .await;
    assert_eq!(
        reply.expect(409)["error"],
        "workspace name already in use under this parent"
    );
    // A removed sibling frees its name.
    app.delete(&format!("/workspaces/{a}")).await.expect(200);
    app.patch(&format!("/workspaces/{b}"), json!({ "name": "QA" }))
        .await
        .expect(200);
}

async fn listing_and_getting_show_the_canvas_fields(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .post("/workspaces", json!({ "name": "PM", "tier": 2, "canvas": { "x": 10.5, "y": -3 }, "budget_limit": 500 }))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    let list = app.get("/workspaces").await.expect(200);
    let row = &list[0];
    for field in [
        "id",
        "name",
        "role",
        "tier",
        "status",
        "url",
        "parent_id",
        "active_tasks",
        "max_concurrent_tasks",
        "last_error_rate",
        "last_sample_error",
        "uptime_seconds",
        "current_task",
        "runtime",
        "workspace_dir",
        "monthly_spend",
        "budget_limit",
        "x",
        "y",
        "collapsed",
        "agent_card",
    ] {
        assert!(row.get(field).is_some(), "list row lacks {field}");
    }
    assert_eq!(
        (row["x"].as_f64(), row["y"].as_f64()),
        (Some(10.5), Some(-3.0))
    );
    assert_eq!(row["budget_limit"], 500);
    let one = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert!(one.get("budget_limit").is_none() && one.get("last_outbound_at").is_some());
}

async fn patch_updates_fields_and_refuses_cycles(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Root", None).await;
    let child = app.create_workspace("Child", Some(&root)).await;
    let grandchild = app.create_workspace("Grandchild", Some(&child)).await;

    let reply = app
        .patch(
            &format!("/workspaces/{child}"),
            json!({ "name": "Kid", "role": "r", "tier": 4, "x": 1, "y": 2, "collapsed": true }),
        )
        .await
        .expect(200);
    assert_eq!(reply, json!({ "status": "updated" }));
    let ws = app.get(&format!("/workspaces/{child}")).await.expect(200);
    assert_eq!(
        (
            ws["name"].as_str(),
            ws["tier"].as_i64(),
            ws["collapsed"].as_bool()
        ),
        (Some("Kid"), Some(4), Some(true))
    );

    for parent in [&grandchild, &child] {
        let reply = app
            .patch(
                &format!("/workspaces/{child}"),
                json!({ "parent_id": parent }),
            )
            .await;
        assert_eq!(reply.status, 400, "{}", reply.text);
    }
    let reply = app
        .patch(
            &format!("/workspaces/{root}"),
            json!({ "parent_id": grandchild }),
        )
        .await;
    assert_eq!(
        reply.expect(400)["error"],
        "parent_id would make the workspace its own ancestor"
    );
    // A failed PATCH changes nothing, not even the fields before the bad one.
    let reply = app
        .patch(
            &format!("/workspaces/{child}"),
            json!({ "name": "Renamed", "parent_id": grandchild }),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        app.get(&format!("/workspaces/{child}")).await.expect(200)["name"],
        "Kid"
    );

    app.patch(
        &format!("/workspaces/{grandchild}"),
        json!({ "parent_id": null }),
    )
    .await
    .expect(200);
    assert_eq!(
        app.get(&format!("/workspaces/{grandchild}"))
            .await
            .expect(200)["parent_id"],
        json!(null)
    );
    let reply = app
        .patch(
            &format!("/workspaces/{child}"),
            json!({ "workspace_dir": "/srv/code" }),
        )
        .await
        .expect(200);
    assert_eq!(reply["needs_restart"], true);
    assert_eq!(
        app.patch(&format!("/workspaces/{child}"), json!({ "x": 5 }))
            .await
            .status,
        400
    );
    assert_eq!(
        app.patch(&format!("/workspaces/{child}"), json!({ "tier": "high" }))
            .await
            .status,
        400
    );
}

async fn delete_asks_for_confirmation_then_cascades(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Root", None).await;
    let a = app.create_workspace("A", Some(&root)).await;
    let b = app.create_workspace("B", Some(&root)).await;
    let a1 = app.create_workspace("A1", Some(&a)).await;
    let token = app.register(&a1).await.expect("a token for a fresh agent");

    let reply = app.delete(&format!("/workspaces/{root}")).await.expect(409);
    assert_eq!(reply["status"], "confirmation_required");
    assert_eq!(reply["children_count"], 2);
    assert_eq!(reply["children"][0]["name"], "A");
    assert_eq!(app.workspaces().await.len(), 4, "nothing removed yet");

    let reply = app
        .delete(&format!("/workspaces/{root}?confirm=true"))
        .await
        .expect(200);
    assert_eq!(reply, json!({ "status": "removed", "cascade_deleted": 3 }));
    assert_eq!(app.get("/workspaces").await.expect(200), json!([]));
    for id in [&root, &a, &b, &a1] {
        let gone = app.get(&format!("/workspaces/{id}")).await.expect(410);
        assert_eq!(gone["error"], "workspace removed");
        let tomb = app
            .get(&format!("/workspaces/{id}?include_removed=true"))
            .await
            .expect(200);
        assert_eq!(tomb["status"], "removed");
    }
    // The removed agent's token no longer works, and its state says it was deleted.
    let mut agent = app.get(&format!("/workspaces/{a1}/state")).await;
    assert_eq!(agent.status, 404);
    assert_eq!(agent.body["deleted"], true);
    agent = app
        .with_token(&token)
        .get(&format!("/workspaces/{a1}/activity"))
        .await;
    assert_eq!(agent.status, 401);
    let events = app.get(&format!("/events/{root}")).await.expect(200);
    assert_eq!(events[0]["event_type"], "WORKSPACE_REMOVED");
    assert_eq!(events[0]["payload"]["cascade_deleted"], 3);
    // Removals are announced leaves first, the root last (the log lists newest first).
    let log = app.get("/events").await.expect(200);
    let removed: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "WORKSPACE_REMOVED")
        .map(|e| e["workspace_id"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 4);
    assert_eq!(removed[0], root);
    assert_eq!(removed[3], a1, "the grandchild goes first");
    // Deleting again is harmless.
    let again = app
        .delete(&format!("/workspaces/{root}?confirm=true"))
        .await
        .expect(200);
    assert_eq!(again["cascade_deleted"], 0);
}

async fn purge_hard_deletes_the_subtree(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Root", None).await;
    let child = app.create_workspace("Child", Some(&root)).await;
    let keep = app.create_workspace("Keep", None).await;
    app.post(
        &format!("/workspaces/{child}/secrets"),
        json!({ "key": "K", "value": "v" }),
    )
    .await
    .expect(200);
    let reply = app
        .delete(&format!("/workspaces/{root}?confirm=true&purge=true"))
        .await
        .expect(200);
    assert_eq!(reply, json!({ "status": "purged", "cascade_deleted": 1 }));
    for id in [&root, &child] {
        app.get(&format!("/workspaces/{id}?include_removed=true"))
            .await
            .expect(404);
        let state = app
            .get(&format!("/workspaces/{id}/state"))
            .await
            .expect(404);
        assert_eq!(state, json!({ "workspace_id": id, "deleted": true }));
    }
    app.get(&format!("/workspaces/{keep}")).await.expect(200);
}

async fn unknown_and_malformed_ids_are_4xx(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let unknown = "6f1c1d7e-0000-4000-8000-000000000000";
    assert_eq!(
        app.get("/workspaces/not-a-uuid").await.expect(400)["error"],
        "invalid workspace ID"
    );
    app.get(&format!("/workspaces/{unknown}")).await.expect(404);
    app.delete(&format!("/workspaces/{unknown}"))
        .await
        .expect(404);
    app.patch(&format!("/workspaces/{unknown}"), json!({ "name": "x" }))
        .await
        .expect(404);
    app.delete("/workspaces/1234").await.expect(400);
    app.get("/no/such/route").await.expect(404);
}

async fn workspace_config_merges_and_caps_its_size(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Cfg", None).await;
    assert_eq!(
        app.get(&format!("/workspaces/{id}/config"))
            .await
            .expect(200),
        json!({ "data": {} })
    );
    app.patch(
        &format!("/workspaces/{id}/config"),
        json!({ "a": 1, "nested": { "x": 1 } }),
    )
    .await
    .expect(200);
    app.patch(
        &format!("/workspaces/{id}/config"),
        json!({ "b": 2, "nested": { "y": 2 } }),
    )
    .await
    .expect(200);
    let data = app
        .get(&format!("/workspaces/{id}/config"))
        .await
        .expect(200);
    assert_eq!(
        data,
        json!({ "data": { "a": 1, "b": 2, "nested": { "y": 2 } } }),
        "shallow merge"
    );
    let big = json!({ "blob": "x".repeat(300 * 1024) });
    assert_eq!(
        app.patch(&format!("/workspaces/{id}/config"), big)
            .await
            .status,
        413
    );
    assert_eq!(
        app.patch(&format!("/workspaces/{id}/config"), json!([1, 2]))
            .await
            .status,
        400
    );
}
