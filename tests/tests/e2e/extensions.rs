//! The extension admin API: upload with validation, activation, rollback, shadow, delete.

use base64::Engine as _;
use molecule_e2e::{DbBackend, TestApp, builtin_extensions_dir, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    the_default_extensions_are_installed_and_active_on_first_start,
    an_uploaded_version_can_be_activated_rolled_back_and_deleted,
    components_that_do_not_fit_the_slot_are_rejected_with_a_clear_reason,
    shadowing_can_be_stopped_and_built_in_versions_are_never_deleted,
);

fn component(name: &str) -> String {
    let path = builtin_extensions_dir().join(format!("{}.wasm", name.replace('-', "_")));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{} ({e}): run `make plugins`", path.display()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn upload_body(name: &str, slot: &str, file: &str) -> Value {
    json!({
        "manifest": { "name": name, "version": "2.0.0", "slot": slot, "grants": { "deadline_ms": 100, "memory_mb": 16 } },
        "component": component(file),
    })
}

async fn spawn_with_defaults(backend: DbBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.builtin_extensions_dir = Some(builtin_extensions_dir())
    })
    .await
}

async fn the_default_extensions_are_installed_and_active_on_first_start(backend: DbBackend) {
    let app = spawn_with_defaults(backend).await;
    let listed = app.get("/admin/extensions").await.expect(200);
    let names: Vec<(&str, bool)> = listed["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["active"].as_bool().unwrap()))
        .collect();
    assert!(names.contains(&("skill-classifier", true)), "{names:?}");
    assert!(
        names.contains(&("default-restart-policy", true)),
        "{names:?}"
    );
    // classifier, restart-policy, resolver:local, resolver:github and resolver:git.
    assert_eq!(listed["slots"].as_array().unwrap().len(), 5);
    assert!(names.contains(&("local-resolver", true)), "{names:?}");
    assert!(names.contains(&("git-resolver", true)), "{names:?}");
}

async fn an_uploaded_version_can_be_activated_rolled_back_and_deleted(backend: DbBackend) {
    let app = spawn_with_defaults(backend).await;
    let uploaded = app
        .post(
            "/admin/extensions",
            upload_body("strict", "classifier", "answer-classifier"),
        )
        .await
        .expect(201);
    let id = uploaded["id"].as_str().unwrap().to_owned();
    assert_eq!(uploaded["active"], false);
    assert!(uploaded["digest"].as_str().unwrap().starts_with("sha256:"));
    // The same bytes again are recognised.
    let dup = app
        .post(
            "/admin/extensions",
            upload_body("strict", "classifier", "answer-classifier"),
        )
        .await
        .expect(409);
    assert_eq!(dup["id"], id.as_str());

    app.post(&format!("/admin/extensions/{id}/shadow"), json!({}))
        .await
        .expect(200);
    let report = app
        .get("/admin/extensions/classifier/shadow-report")
        .await
        .expect(200);
    assert_eq!(report["candidate_id"], id.as_str());
    assert_eq!(report["calls"], 0);

    let activated = app
        .post(&format!("/admin/extensions/{id}/activate"), json!({}))
        .await
        .expect(200);
    assert_eq!(activated["slot"], "classifier");
    let events = app.get("/events").await.expect(200);
    assert_eq!(events[0]["event_type"], "EXTENSION_ACTIVATED");
    assert_eq!(events[0]["payload"]["name"], "strict");
    app.delete(&format!("/admin/extensions/{id}"))
        .await
        .expect(409);

    let rolled = app
        .post("/admin/extensions/classifier/rollback", json!({}))
        .await
        .expect(200);
    assert_eq!(rolled["status"], "rolled_back");
    let listed = app.get("/admin/extensions").await.expect(200);
    let active: Vec<&str> = listed["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["active"] == true && e["slot"] == "classifier")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(active, ["skill-classifier"]);
    assert_eq!(
        app.get("/events").await.expect(200)[0]["event_type"],
        "EXTENSION_ROLLED_BACK"
    );
    app.delete(&format!("/admin/extensions/{id}"))
        .await
        .expect(200);
    app.delete(&format!("/admin/extensions/{id}"))
        .await
        .expect(404);
    // Admin only.
    app.anonymous().get("/admin/extensions").await.expect(401);
}

async fn components_that_do_not_fit_the_slot_are_rejected_with_a_clear_reason(backend: DbBackend) {
    let app = spawn_with_defaults(backend).await;
    let wrong = app
        .post(
            "/admin/extensions",
            upload_body("p", "restart-policy", "skill-classifier"),
        )
        .await
        .expect(422);
    assert!(
        wrong["detail"]
            .as_str()
            .unwrap()
            .contains("molecule:plugin/restart"),
        "{wrong}"
    );
    let trap = app
        .post(
            "/admin/extensions",
            upload_body("t", "classifier", "trap-classifier"),
        )
        .await
        .expect(422);
    assert!(
        trap["detail"].as_str().unwrap().contains("self-check"),
        "{trap}"
    );
    // The detail says why, not "component rejected" a second time after the error.
    for refused in [&wrong, &trap] {
        assert_eq!(refused["error"], "component rejected");
        let detail = refused["detail"].as_str().unwrap();
        assert!(!detail.contains("component rejected"), "{refused}");
        assert!(!detail.contains('\n'), "one line: {refused}");
    }
    let mut junk = upload_body("j", "classifier", "skill-classifier");
    junk["component"] = json!(base64::engine::general_purpose::STANDARD.encode(b"not wasm"));
    app.post("/admin/extensions", junk).await.expect(422);
    let mut bad_slot = upload_body("s", "classifier", "skill-classifier");
    bad_slot["manifest"]["slot"] = json!("scheduler");
    app.post("/admin/extensions", bad_slot).await.expect(400);
    let mut not_base64 = upload_body("b", "classifier", "skill-classifier");
    not_base64["component"] = json!("%%%");
    app.post("/admin/extensions", not_base64).await.expect(400);
    app.post("/admin/extensions/not-a-slot/rollback", json!({}))
        .await
        .expect(400);
    app.post("/admin/extensions/restart-policy/rollback", json!({}))
        .await
        .expect(409);
    // Nothing rejected was stored.
    let listed = app.get("/admin/extensions").await.expect(200);
    assert_eq!(listed["extensions"].as_array().unwrap().len(), 5);
}

async fn shadowing_can_be_stopped_and_built_in_versions_are_never_deleted(backend: DbBackend) {
    // Arrange: the defaults, and a second classifier in shadow.
    let app = spawn_with_defaults(backend).await;
    let slot_of = |listed: &Value, name: &str| {
        listed["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("slot {name} in {listed}"))
    };
    let listed = app.get("/admin/extensions").await.expect(200);
    assert_eq!(
        slot_of(&listed, "classifier")["previous_id"],
        Value::Null,
        "nothing to roll back to on a fresh host"
    );
    let builtin = listed["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "skill-classifier")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app
        .post(
            "/admin/extensions",
            upload_body("strict", "classifier", "answer-classifier"),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(&format!("/admin/extensions/{id}/shadow"), json!({}))
        .await
        .expect(200);

    // Only the operator may stop it.
    let path = format!("/admin/extensions/{id}/shadow");
    app.anonymous().delete(&path).await.expect(401);
    let agent = app.create_workspace("Agent", None).await;
    let agent_token = app.agent_token(&agent).await;
    app.with_token(&agent_token).delete(&path).await.expect(401);
    app.with_token("junk-0000000000000000000000000000000000000")
        .delete(&path)
        .await
        .expect(401);
    assert_eq!(
        slot_of(
            &app.get("/admin/extensions").await.expect(200),
            "classifier"
        )["shadow_id"],
        id.as_str(),
        "refused calls changed nothing"
    );

    // Act: stop shadowing.
    let stopped = app.delete(&path).await.expect(200);

    // Assert: the slot has no shadow, its report is gone, other replicas are told, and a
    // second stop (a stale page) is refused rather than stopping something else.
    assert_eq!(stopped["status"], "shadow_stopped");
    assert_eq!(stopped["slot"], "classifier");
    let listed = app.get("/admin/extensions").await.expect(200);
    assert_eq!(slot_of(&listed, "classifier")["shadow_id"], Value::Null);
    app.get("/admin/extensions/classifier/shadow-report")
        .await
        .expect(404);
    let events = app.get("/events").await.expect(200);
    assert_eq!(events[0]["event_type"], "EXTENSION_SHADOW_STOPPED");
    assert_eq!(events[0]["payload"]["id"], id.as_str());
    let again = app.delete(&path).await.expect(409);
    assert_eq!(again["error"], "this version is not shadowing its slot");
    app.delete("/admin/extensions/not-an-id/shadow")
        .await
        .expect(400);
    app.delete("/admin/extensions/00000000-0000-4000-8000-000000000000/shadow")
        .await
        .expect(404);

    // A built-in version is never deleted, active or not; an uploaded one that is not active is.
    let refused = app
        .delete(&format!("/admin/extensions/{builtin}"))
        .await
        .expect(409);
    assert_eq!(
        refused["error"],
        "the active version of a slot cannot be deleted"
    );
    app.post(&format!("/admin/extensions/{id}/activate"), json!({}))
        .await
        .expect(200);
    let listed = app.get("/admin/extensions").await.expect(200);
    assert_eq!(
        slot_of(&listed, "classifier")["previous_id"],
        builtin.as_str(),
        "a rollback would bring the built-in back"
    );
    let refused = app
        .delete(&format!("/admin/extensions/{builtin}"))
        .await
        .expect(409);
    assert_eq!(refused["error"], "a built-in version cannot be deleted");
    app.post("/admin/extensions/classifier/rollback", json!({}))
        .await
        .expect(200);
    app.delete(&format!("/admin/extensions/{id}"))
        .await
        .expect(200);
    let listed = app.get("/admin/extensions").await.expect(200);
    assert_eq!(
        slot_of(&listed, "classifier")["previous_id"],
        Value::Null,
        "the deleted version left the history"
    );
    assert!(
        listed["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == builtin.as_str() && e["active"] == true)
    );
}
