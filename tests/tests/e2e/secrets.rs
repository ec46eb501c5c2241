//! Workspace and global secrets, the decrypted bundle, encryption at rest, key rotation, the model
//! choice and the restarts secret changes request.

use molecule_e2e::{ADMIN_TOKEN, DbBackend, Reply, TestApp, on_both_backends};
use molecule_host::config::Environment;
use molecule_host::store::Db;
use serde_json::{Value, json};

use molecule_e2e::logs;

on_both_backends!(
    workspace_secrets_round_trip_and_no_reply_ever_shows_a_value,
    global_secrets_live_under_settings_and_admin_and_workspace_keys_shadow_them,
    secrets_values_returns_the_merged_plaintext_map_to_the_workspace_only,
    a_key_rotated_out_makes_the_bundle_refuse_without_returning_partial_data,
    values_are_encrypted_at_rest_when_a_key_is_configured_and_plain_otherwise,
    production_refuses_to_start_without_a_valid_key_and_a_bad_key_is_always_refused,
    the_model_choice_is_a_workspace_secret_with_a_default,
    secret_changes_request_restarts_of_exactly_the_affected_workspaces,
    no_secret_value_reaches_the_host_logs,
);

const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const KEY_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A value no other test uses, so finding it anywhere means this test leaked it.
fn unique_value(label: &str) -> String {
    format!("sv-{label}-{}", uuid::Uuid::new_v4().simple())
}

#[track_caller]
fn assert_hidden(reply: &Reply, values: &[&str]) {
    for value in values {
        assert!(
            !reply.text.contains(value),
            "a secret value appears in a response: {}",
            reply.text
        );
    }
}

fn keys_of(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().expect("a key").to_owned(),
                s["scope"].as_str().expect("a scope").to_owned(),
            )
        })
        .collect()
}

async fn workspace_secrets_round_trip_and_no_reply_ever_shows_a_value(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/workspaces/{id}/secrets");
    let (v1, v2, v3) = (unique_value("a"), unique_value("b"), unique_value("c"));

    // Act: POST and PUT both upsert.
    let saved = app
        .post(&path, json!({ "key": "API_KEY", "value": v1 }))
        .await;
    assert_hidden(&saved, &[&v1]);
    // The answer says what the change did to the agent: this host runs none.
    let no_runtime = json!({ "kind": "skipped", "reason": "no runtime" });
    assert_eq!(
        saved.expect(200),
        json!({ "status": "saved", "key": "API_KEY", "restart": no_runtime })
    );
    let saved = app.put(&path, json!({ "key": "OTHER", "value": v2 })).await;
    assert_hidden(&saved, &[&v2]);
    assert_eq!(
        saved.expect(200),
        json!({ "status": "saved", "key": "OTHER", "restart": no_runtime })
    );
    let created_at = app.get(&path).await.expect(200)[0]["created_at"].clone();
    let replaced = app
        .put(&path, json!({ "key": "API_KEY", "value": v3 }))
        .await;
    assert_hidden(&replaced, &[&v1, &v3]);
    replaced.expect(200);

    // Assert: listed by key with metadata, never with a value.
    let listed = app.get(&path).await;
    assert_hidden(&listed, &[&v1, &v2, &v3]);
    let listed = listed.expect(200);
    assert_eq!(
        keys_of(&listed),
        vec![
            ("API_KEY".to_owned(), "workspace".to_owned()),
            ("OTHER".to_owned(), "workspace".to_owned())
        ]
    );
    for secret in listed.as_array().unwrap() {
        assert_eq!(secret["has_value"], true);
        assert!(secret["created_at"].is_string() && secret["updated_at"].is_string());
        assert!(secret.get("value").is_none(), "{secret}");
    }
    // Replacing a value keeps the secret's creation time and moves its update time.
    assert_eq!(listed[0]["created_at"], created_at);
    assert_ne!(listed[0]["updated_at"], created_at);

    // Delete, then the key is gone.
    let deleted = app.delete(&format!("{path}/API_KEY")).await.expect(200);
    assert_eq!(deleted["status"], "deleted");
    assert_eq!(deleted["restart"], no_runtime);
    let again = app.delete(&format!("{path}/API_KEY")).await;
    assert_eq!(again.expect(404)["error"], "secret not found");
    assert_eq!(
        keys_of(&app.get(&path).await.expect(200)),
        vec![("OTHER".to_owned(), "workspace".to_owned())]
    );

    // Invalid key names and empty values are refused, without echoing anything back.
    let long = "K".repeat(200);
    for key in ["", "1ABC", "A-B", "A B", "A\nB", "ÄÖ", long.as_str()] {
        let value = unique_value("refused");
        let reply = app.post(&path, json!({ "key": key, "value": value })).await;
        assert_hidden(&reply, &[&value]);
        let body = reply.expect(400);
        assert_eq!(
            body["error"], "key must be an environment variable name",
            "{key:?}"
        );
    }
    let reply = app
        .post(&path, json!({ "key": "EMPTY", "value": "" }))
        .await;
    assert_eq!(reply.expect(400)["error"], "value is required");
    let reply = app.post(&path, json!({ "key": "NO_VALUE" })).await;
    assert_eq!(reply.expect(400)["error"], "invalid request body");
    assert_eq!(
        app.get(&path).await.expect(200).as_array().unwrap().len(),
        1
    );
}

async fn global_secrets_live_under_settings_and_admin_and_workspace_keys_shadow_them(
    backend: DbBackend,
) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let (g_shared, g_only, w_shared) = (
        unique_value("global-shared"),
        unique_value("global-only"),
        unique_value("ws-shared"),
    );

    // Act: the two route families write the same global table.
    let saved = app
        .put(
            "/settings/secrets",
            json!({ "key": "SHARED", "value": g_shared }),
        )
        .await;
    assert_hidden(&saved, &[&g_shared]);
    assert_eq!(
        saved.expect(200),
        json!({ "status": "saved", "key": "SHARED", "scope": "global" })
    );
    let saved = app
        .post(
            "/admin/secrets",
            json!({ "key": "ONLY_GLOBAL", "value": g_only }),
        )
        .await;
    assert_hidden(&saved, &[&g_only]);
    saved.expect(200);

    // Assert: both routes list both keys as global, without values.
    for path in ["/settings/secrets", "/admin/secrets"] {
        let listed = app.get(path).await;
        assert_hidden(&listed, &[&g_shared, &g_only]);
        let listed = listed.expect(200);
        assert_eq!(
            keys_of(&listed),
            vec![
                ("ONLY_GLOBAL".to_owned(), "global".to_owned()),
                ("SHARED".to_owned(), "global".to_owned())
            ],
            "{path}"
        );
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["has_value"] == true)
        );
    }
    let reply = app
        .post(
            "/settings/secrets",
            json!({ "key": "BAD-KEY", "value": "v" }),
        )
        .await;
    reply.expect(400);
    let reply = app.anonymous().get("/settings/secrets").await;
    assert_eq!(reply.expect(401)["error"], "admin auth required");

    // A workspace's own key shadows the global one, in the list and in the bundle.
    let id = app.create_workspace("Agent", None).await;
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "SHARED", "value": w_shared }),
    )
    .await
    .expect(200);
    let listed = app.get(&format!("/workspaces/{id}/secrets")).await;
    assert_hidden(&listed, &[&g_shared, &g_only, &w_shared]);
    assert_eq!(
        keys_of(&listed.expect(200)),
        vec![
            ("ONLY_GLOBAL".to_owned(), "global".to_owned()),
            ("SHARED".to_owned(), "workspace".to_owned())
        ]
    );
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);
    assert_eq!(values, json!({ "SHARED": w_shared, "ONLY_GLOBAL": g_only }));

    // Deleting through either route family; the global value shows through again.
    let deleted = app.delete("/admin/secrets/ONLY_GLOBAL").await.expect(200);
    assert_eq!(deleted["status"], "deleted");
    app.delete("/settings/secrets/ONLY_GLOBAL")
        .await
        .expect(404);
    app.delete(&format!("/workspaces/{id}/secrets/SHARED"))
        .await
        .expect(200);
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);
    assert_eq!(values, json!({ "SHARED": g_shared }));
    assert_eq!(
        keys_of(
            &app.get(&format!("/workspaces/{id}/secrets"))
                .await
                .expect(200)
        ),
        vec![("SHARED".to_owned(), "global".to_owned())]
    );
}

async fn secrets_values_returns_the_merged_plaintext_map_to_the_workspace_only(backend: DbBackend) {
    // Arrange: secrets given at creation, set later, and global.
    let app = TestApp::spawn(backend).await;
    let (from_create, later, global, other) = (
        unique_value("create"),
        unique_value("later"),
        unique_value("global"),
        unique_value("other"),
    );
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Agent", "secrets": { "FROM_CREATE": from_create } }),
        )
        .await;
    assert_hidden(&created, &[&from_create]);
    let id = created.expect(201)["id"].as_str().unwrap().to_owned();
    let other_id = app.create_workspace("Other", None).await;
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "LATER", "value": later }),
    )
    .await
    .expect(200);
    app.post(
        &format!("/workspaces/{other_id}/secrets"),
        json!({ "key": "OTHERS_OWN", "value": other }),
    )
    .await
    .expect(200);
    app.put(
        "/settings/secrets",
        json!({ "key": "GLOBAL", "value": global }),
    )
    .await
    .expect(200);
    let token = app.register(&id).await.expect("a token");
    let other_token = app.register(&other_id).await.expect("a token");

    // Act
    let values = app
        .with_token(&token)
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);

    // Assert
    assert_eq!(
        values,
        json!({ "FROM_CREATE": from_create, "LATER": later, "GLOBAL": global })
    );
    let refused = app
        .with_token(&other_token)
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await;
    assert_hidden(&refused, &[&from_create, &later, &global]);
    assert_eq!(refused.expect(401)["error"], "invalid workspace auth token");
    let refused = app
        .anonymous()
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await;
    assert_eq!(refused.expect(401)["error"], "missing workspace auth token");
}

async fn a_key_rotated_out_makes_the_bundle_refuse_without_returning_partial_data(
    backend: DbBackend,
) {
    // Arrange: one workspace and one global secret sealed with key A.
    let mut app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(KEY_A.to_owned().into())
    })
    .await;
    let id = app.create_workspace("Agent", None).await;
    let values_path = format!("/workspaces/{id}/secrets/values");
    let (sealed_a, global_a, sealed_b) = (
        unique_value("sealed-a"),
        unique_value("global-a"),
        unique_value("sealed-b"),
    );
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "OLD", "value": sealed_a }),
    )
    .await
    .expect(200);
    app.put(
        "/settings/secrets",
        json!({ "key": "GLOBAL_OLD", "value": global_a }),
    )
    .await
    .expect(200);
    app.get(&values_path).await.expect(200);

    // Act: another key; a secret written now is readable, the old ones are not.
    app.restart_with(|c| c.secrets_encryption_key = Some(KEY_B.to_owned().into()))
        .await
        .expect("the host restarts with key B");
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "NEW", "value": sealed_b }),
    )
    .await
    .expect(200);
    let refused = app.get(&values_path).await;

    // Assert: all or nothing, with a generic error and the failed keys.
    assert_hidden(&refused, &[&sealed_a, &global_a, &sealed_b]);
    let body = refused.expect(500);
    assert_eq!(body["error"], "internal error");
    assert_eq!(body["code"], "secrets_undecryptable");
    assert_eq!(
        sorted(&body["failed_keys"]),
        vec!["global:GLOBAL_OLD", "workspace:OLD"]
    );
    // Listing still works: it never decrypts.
    app.get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);

    // Without any key nothing sealed can be opened.
    app.restart_with(|c| c.secrets_encryption_key = None)
        .await
        .expect("the host restarts without a key");
    let refused = app.get(&values_path).await;
    assert_hidden(&refused, &[&sealed_a, &global_a, &sealed_b]);
    let body = refused.expect(500);
    assert_eq!(body["error"], "internal error");
    assert_eq!(body["code"], "secrets_undecryptable");
    assert_eq!(
        sorted(&body["failed_keys"]),
        vec!["global:GLOBAL_OLD", "workspace:NEW", "workspace:OLD"]
    );
    let model = app.get(&format!("/workspaces/{id}/model")).await;
    model.expect(200);

    // Back on key A the old values open and the one sealed with B is the failure.
    app.restart_with(|c| c.secrets_encryption_key = Some(KEY_A.to_owned().into()))
        .await
        .expect("the host restarts with key A");
    let refused = app.get(&values_path).await;
    assert_hidden(&refused, &[&sealed_a, &global_a, &sealed_b]);
    assert_eq!(
        sorted(&refused.expect(500)["failed_keys"]),
        vec!["workspace:NEW"]
    );
    app.delete(&format!("/workspaces/{id}/secrets/NEW"))
        .await
        .expect(200);
    assert_eq!(
        app.get(&values_path).await.expect(200),
        json!({ "OLD": sealed_a, "GLOBAL_OLD": global_a })
    );
}

fn sorted(list: &Value) -> Vec<String> {
    let mut items: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    items.sort();
    items
}

/// The stored bytes and `encryption_version` of a secret, read straight from the database.
async fn stored(app: &TestApp, global: bool, key: &str) -> (Vec<u8>, i32) {
    let sql = if global {
        "SELECT encrypted_value, encryption_version FROM global_secrets WHERE key = $1"
    } else {
        "SELECT encrypted_value, encryption_version FROM workspace_secrets WHERE key = $1"
    };
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("opening the test database");
    let row = match &db {
        Db::Sqlite(sqlite) => {
            sqlx::query_as(sql)
                .bind(key)
                .fetch_one(&sqlite.reader)
                .await
        }
        Db::Postgres(pool) => sqlx::query_as(sql).bind(key).fetch_one(pool).await,
    }
    .expect("the secret row");
    db.close().await;
    row
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn values_are_encrypted_at_rest_when_a_key_is_configured_and_plain_otherwise(
    backend: DbBackend,
) {
    // Arrange
    let mut app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(KEY_A.to_owned().into())
    })
    .await;
    let id = app.create_workspace("Agent", None).await;
    let (ws_value, global_value, plain_value) = (
        unique_value("at-rest"),
        unique_value("at-rest-global"),
        unique_value("plain"),
    );

    // Act
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "SEALED", "value": ws_value }),
    )
    .await
    .expect(200);
    app.put(
        "/settings/secrets",
        json!({ "key": "SEALED_GLOBAL", "value": global_value }),
    )
    .await
    .expect(200);

    // Assert: AES-GCM rows bound to their row (version 2: nonce + ciphertext + tag), never the
    // plaintext.
    for (global, key, value) in [
        (false, "SEALED", &ws_value),
        (true, "SEALED_GLOBAL", &global_value),
    ] {
        let (bytes, version) = stored(&app, global, key).await;
        assert_eq!(version, 2, "{key}");
        assert!(!contains(&bytes, value), "{key} is stored in plaintext");
        assert_eq!(bytes.len(), 12 + value.len() + 16, "{key}");
    }

    // Without a key the host stores version 0, and still reads what it wrote.
    app.restart_with(|c| c.secrets_encryption_key = None)
        .await
        .expect("the host restarts without a key");
    app.post(
        &format!("/workspaces/{id}/secrets"),
        json!({ "key": "PLAIN", "value": plain_value }),
    )
    .await
    .expect(200);
    let (bytes, version) = stored(&app, false, "PLAIN").await;
    assert_eq!((bytes.as_slice(), version), (plain_value.as_bytes(), 0));
    // A keyed host reads rows written before it had a key: it re-seals them when it starts.
    app.restart_with(|c| c.secrets_encryption_key = Some(KEY_A.to_owned().into()))
        .await
        .expect("the host restarts with key A");
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);
    assert_eq!(values["PLAIN"], plain_value.as_str());
    assert_eq!(values["SEALED"], ws_value.as_str());
}

async fn production_refuses_to_start_without_a_valid_key_and_a_bad_key_is_always_refused(
    backend: DbBackend,
) {
    let mut app = TestApp::spawn(backend).await;
    let bad_key = "zzBADKEYzz";

    let no_key = app
        .run_once_with(|c| {
            c.env = Environment::Production;
            c.secrets_encryption_key = None;
        })
        .await;
    let err = no_key.expect_err("production without a key must not start");
    assert!(
        format!("{err:#}").contains("SECRETS_ENCRYPTION_KEY"),
        "{err:#}"
    );
    let empty_key = app
        .run_once_with(|c| {
            c.env = Environment::Production;
            c.secrets_encryption_key = Some(String::new().into());
        })
        .await;
    assert!(empty_key.is_err(), "an empty key is no key");

    for env in [
        Environment::Production,
        Environment::Default,
        Environment::Development,
    ] {
        for key in [bad_key, "short", "not base64 and not 32 characters!!"] {
            let result = app
                .run_once_with(|c| {
                    c.env = env;
                    c.secrets_encryption_key = Some(key.to_owned().into());
                })
                .await;
            let err = result.expect_err("an invalid key must not start the host");
            assert!(!format!("{err:#}").contains(bad_key), "the key is echoed");
        }
    }

    // The contrast: a valid key (base64 of 32 bytes, or 32 raw characters) starts production
    // (once the first host has stopped: a SQLite file serves one host at a time).
    app.stop().await.expect("the first host stops");
    for key in [KEY_A, "0123456789abcdef0123456789abcdef"] {
        app.run_once_with(|c| {
            c.env = Environment::Production;
            c.secrets_encryption_key = Some(key.to_owned().into());
        })
        .await
        .expect("production starts with a valid key");
    }
}

async fn the_model_choice_is_a_workspace_secret_with_a_default(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/workspaces/{id}/model");
    assert_eq!(
        app.get(&path).await.expect(200),
        json!({ "model": "", "source": "default" })
    );

    // Act / Assert
    let saved = app
        .put(&path, json!({ "model": "anthropic:claude-x" }))
        .await
        .expect(200);
    assert_eq!(
        saved,
        json!({ "status": "saved", "model": "anthropic:claude-x" })
    );
    assert_eq!(
        app.get(&path).await.expect(200),
        json!({ "model": "anthropic:claude-x", "source": "workspace_secrets" })
    );
    let listed = app
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);
    assert_eq!(
        keys_of(&listed),
        vec![("MODEL_PROVIDER".to_owned(), "workspace".to_owned())]
    );

    let cleared = app.put(&path, json!({ "model": "" })).await.expect(200);
    assert_eq!(cleared, json!({ "status": "cleared" }));
    assert_eq!(app.get(&path).await.expect(200)["source"], "default");
    let reply = app.put(&path, json!({ "model": "a\nb" })).await;
    reply.expect(400);
    assert_eq!(app.get(&path).await.expect(200)["source"], "default");
}

/// The `WORKSPACE_RESTART_REQUESTED` events recorded for `id`, as their `reason`s.
async fn restart_reasons(app: &TestApp, id: &str) -> Vec<String> {
    let events = app.get(&format!("/events/{id}")).await.expect(200);
    let mut reasons: Vec<String> = events
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["event_type"] == "WORKSPACE_RESTART_REQUESTED")
        .map(|e| {
            assert_eq!(e["workspace_id"], id);
            e["payload"]["reason"]
                .as_str()
                .expect("a reason")
                .to_owned()
        })
        .collect();
    reasons.sort();
    reasons
}

async fn secret_changes_request_restarts_of_exactly_the_affected_workspaces(backend: DbBackend) {
    // Arrange: `inherits` has no own SHARED, `overrides` has one, `gone` is removed.
    let app = TestApp::spawn(backend).await;
    let inherits = app.create_workspace("Inherits", None).await;
    let overrides = app.create_workspace("Overrides", None).await;
    let gone = app.create_workspace("Gone", None).await;
    app.delete(&format!("/workspaces/{gone}")).await.expect(200);

    // Act / Assert: each workspace-level change requests one restart of that workspace.
    let secrets = format!("/workspaces/{overrides}/secrets");
    app.post(
        &secrets,
        json!({ "key": "SHARED", "value": unique_value("o") }),
    )
    .await
    .expect(200);
    app.put(
        &secrets,
        json!({ "key": "SHARED", "value": unique_value("o") }),
    )
    .await
    .expect(200);
    assert_eq!(
        restart_reasons(&app, &overrides).await,
        vec!["secret_changed", "secret_changed"]
    );
    app.delete(&format!("{secrets}/SHARED")).await.expect(200);
    app.delete(&format!("{secrets}/SHARED")).await.expect(404);
    assert_eq!(
        restart_reasons(&app, &overrides).await,
        vec!["secret_changed", "secret_changed", "secret_deleted"]
    );
    app.post(
        &secrets,
        json!({ "key": "SHARED", "value": unique_value("o") }),
    )
    .await
    .expect(200);
    let model = format!("/workspaces/{inherits}/model");
    app.put(&model, json!({ "model": "m" })).await.expect(200);
    app.put(&model, json!({ "model": "" })).await.expect(200);
    assert_eq!(
        restart_reasons(&app, &inherits).await,
        vec!["model_changed", "model_changed"]
    );

    // A global change restarts every live workspace without its own override, and no other.
    app.put(
        "/settings/secrets",
        json!({ "key": "SHARED", "value": unique_value("g") }),
    )
    .await
    .expect(200);
    app.delete("/admin/secrets/SHARED").await.expect(200);
    assert_eq!(
        restart_reasons(&app, &inherits).await,
        vec![
            "global_secret_changed",
            "global_secret_deleted",
            "model_changed",
            "model_changed"
        ]
    );
    assert_eq!(
        restart_reasons(&app, &overrides).await.len(),
        4,
        "an override is not affected by the global key"
    );
    assert!(restart_reasons(&app, &gone).await.is_empty());
    // A global key the override does not shadow restarts it too.
    app.post(
        "/admin/secrets",
        json!({ "key": "UNSHADOWED", "value": unique_value("g") }),
    )
    .await
    .expect(200);
    assert!(
        restart_reasons(&app, &overrides)
            .await
            .contains(&"global_secret_changed".to_owned())
    );
    assert!(restart_reasons(&app, &gone).await.is_empty());
    // Refused changes request nothing.
    let before = restart_reasons(&app, &inherits).await.len();
    app.post(
        &format!("/workspaces/{inherits}/secrets"),
        json!({ "key": "BAD-KEY", "value": "v" }),
    )
    .await
    .expect(400);
    assert_eq!(restart_reasons(&app, &inherits).await.len(), before);
}

async fn no_secret_value_reaches_the_host_logs(backend: DbBackend) {
    // Arrange: capture every host's logs; this host is identified by its workspace id.
    let logs = logs::capture();
    let mut app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(KEY_A.to_owned().into())
    })
    .await;
    let (ws_value, global_value, model) = (
        unique_value("log-ws"),
        unique_value("log-global"),
        unique_value("log-model"),
    );
    let key = format!("LOGGED_KEY_{}", uuid::Uuid::new_v4().simple()).to_uppercase();
    let id = app.create_workspace("Agent", None).await;
    let token = app.register(&id).await.expect("a token");
    let agent = app.with_token(&token);
    let org_token = app
        .post("/org/tokens", json!({ "name": "logs" }))
        .await
        .expect(201)["auth_token"]
        .as_str()
        .expect("an org token")
        .to_owned();
    let test_token = app
        .with_token(ADMIN_TOKEN)
        .post(&format!("/workspaces/{id}/tokens"), json!({}))
        .await
        .expect(201)["auth_token"]
        .as_str()
        .expect("a minted token")
        .to_owned();
    app.with_token(&org_token)
        .get("/workspaces")
        .await
        .expect(200);
    app.with_token(&test_token)
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);
    app.with_token("zzWRONGTOKENzz")
        .get("/workspaces")
        .await
        .expect(401);

    // Act: every operation that carries a value, then a bundle that fails to decrypt.
    let secrets = format!("/workspaces/{id}/secrets");
    agent
        .post(&secrets, json!({ "key": key, "value": ws_value }))
        .await
        .expect(200);
    app.put(
        "/settings/secrets",
        json!({ "key": "LOG_GLOBAL", "value": global_value }),
    )
    .await
    .expect(200);
    agent
        .put(
            &format!("/workspaces/{id}/model"),
            json!({ "model": model }),
        )
        .await
        .expect(200);
    agent
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);
    agent
        .post(&secrets, json!({ "key": "BAD-KEY", "value": ws_value }))
        .await
        .expect(400);
    app.restart_with(|c| c.secrets_encryption_key = Some(KEY_B.to_owned().into()))
        .await
        .expect("the host restarts with key B");
    let refused = app
        .with_token(&token)
        .get(&format!("/workspaces/{id}/secrets/values"))
        .await;
    assert_hidden(&refused, &[&ws_value, &global_value, &model]);
    refused.expect(500);
    app.stop().await.expect("the host stops");

    // Assert: the capture saw this host (the failed key is logged by name), never a value.
    let text = logs.text();
    assert!(text.contains(&id), "the log capture did not see this host");
    assert!(
        text.contains(&key),
        "the undecryptable key is logged by name"
    );
    for secret in [
        ws_value.as_str(),
        &global_value,
        &model,
        &token,
        &org_token,
        &test_token,
        ADMIN_TOKEN,
        "zzWRONGTOKENzz",
    ] {
        assert!(!text.contains(secret), "a secret or token reached the log");
    }
    for key in [KEY_A, KEY_B] {
        assert!(!text.contains(key), "the encryption key reached the log");
    }
}
