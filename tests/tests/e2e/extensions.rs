//! The extension admin API: upload with validation, activation, rollback, shadow, delete.

use base64::Engine as _;
use molecule_e2e::{DbBackend, TestApp, builtin_extensions_dir, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    the_default_extensions_are_installed_and_active_on_first_start,
    an_uploaded_version_can_be_activated_rolled_back_and_deleted,
    components_that_do_not_fit_the_slot_are_rejected_with_a_clear_reason,
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
