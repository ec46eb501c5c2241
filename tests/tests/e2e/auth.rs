//! Admin, workspace and org tokens; fail-open and development modes; the test-token route; the
//! CanvasOrBearer guard of the canvas viewport.

use molecule_e2e::{ADMIN_TOKEN, Api, DbBackend, TestApp, on_both_backends};
use molecule_host::config::Environment;
use serde_json::{Value, json};

on_both_backends!(
    a_fresh_install_is_open_until_the_first_token_exists_then_admin_routes_lock,
    registering_the_first_agent_locks_a_fresh_install,
    a_configured_admin_token_is_required_and_accepted,
    development_without_an_admin_token_leaves_everything_open,
    workspace_routes_admit_their_own_token_the_admin_and_org_tokens_only,
    workspace_tokens_are_listed_minted_and_revoked_without_showing_secrets,
    a_workspace_holds_at_most_50_live_tokens,
    org_tokens_are_listed_without_secrets_and_can_be_revoked,
    minting_org_tokens_is_limited_to_10_an_hour_per_client,
    the_test_token_route_is_closed_in_production_and_demands_the_admin_token,
    the_canvas_viewport_needs_an_allowed_origin_or_a_bearer_once_locked,
);

/// A host with no admin token in the ordinary environment: open until a token exists.
async fn spawn_without_admin_token(backend: DbBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.admin_token = None).await
}

/// Whether `client` may change workspace `id` (a WorkspaceAuth route).
async fn patch_status(client: &Api, id: &str) -> (u16, Value) {
    let reply = client
        .patch(&format!("/workspaces/{id}"), json!({ "collapsed": true }))
        .await;
    (reply.status.as_u16(), reply.body)
}

async fn mint_org_token(client: &Api) -> (String, String) {
    let minted = client
        .post("/org/tokens", json!({ "name": "ci" }))
        .await
        .expect(201);
    (
        minted["id"].as_str().expect("an id").to_owned(),
        minted["auth_token"].as_str().expect("a token").to_owned(),
    )
}

async fn a_fresh_install_is_open_until_the_first_token_exists_then_admin_routes_lock(
    backend: DbBackend,
) {
    // Arrange: nothing configured, no token anywhere.
    let app = spawn_without_admin_token(backend).await;
    let anon = app.anonymous();
    anon.get("/workspaces").await.expect(200);
    let id = anon.create_workspace("Agent", None).await;
    patch_status(&anon, &id).await;

    // Act: an org token minted while the install is still open...
    let minted = anon
        .post("/org/tokens", json!({ "name": "ops" }))
        .await
        .expect(201);
    for field in ["id", "prefix", "auth_token", "warning"] {
        assert!(minted[field].is_string(), "org token reply lacks {field}");
    }
    let org_token = minted["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(org_token.len(), 43);
    assert_eq!(minted["prefix"], &org_token[..8]);
    // ...and the first agent's token.
    let ws_token = anon
        .register(&id)
        .await
        .expect("the first agent gets a token");

    // Assert: the same calls now need admin rights.
    let reply = anon.get("/workspaces").await;
    assert_eq!(reply.expect(401), json!({ "error": "admin auth required" }));
    let reply = app.with_token("garbage-token").get("/workspaces").await;
    assert_eq!(
        reply.expect(401),
        json!({ "error": "invalid admin auth token" })
    );
    // A workspace token never grants admin (the original accepted any workspace token here).
    let reply = app.with_token(&ws_token).get("/workspaces").await;
    assert_eq!(
        reply.expect(401),
        json!({ "error": "invalid admin auth token" })
    );
    let reply = app
        .with_token(&ws_token)
        .post("/org/tokens", json!({}))
        .await;
    reply.expect(401);
    let listed = app
        .with_token(&org_token)
        .get("/workspaces")
        .await
        .expect(200);
    assert_eq!(listed[0]["id"], id.as_str());
    // The fresh-install door is shut for workspace routes too.
    let (status, body) = patch_status(&anon, &id).await;
    assert_eq!(
        (status, body),
        (401, json!({ "error": "missing workspace auth token" }))
    );
}

async fn registering_the_first_agent_locks_a_fresh_install(backend: DbBackend) {
    // Arrange
    let app = spawn_without_admin_token(backend).await;
    let anon = app.anonymous();
    let id = anon.create_workspace("Agent", None).await;
    anon.get("/workspaces").await.expect(200);
    anon.get(&format!("/events/{id}")).await.expect(200);

    // Act
    let token = anon.register(&id).await.expect("a token");

    // Assert
    anon.get("/workspaces").await.expect(401);
    anon.get(&format!("/events/{id}")).await.expect(401);
    anon.post("/workspaces", json!({ "name": "Late" }))
        .await
        .expect(401);
    app.with_token(&token)
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);
}

async fn a_configured_admin_token_is_required_and_accepted(backend: DbBackend) {
    // Arrange: the default test host has ADMIN_TOKEN set, so it is never a fresh install.
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();

    // Act / Assert
    let reply = anon.get("/workspaces").await;
    assert_eq!(reply.expect(401)["error"], "admin auth required");
    let reply = app
        .with_token("not-the-admin-token")
        .get("/workspaces")
        .await;
    assert_eq!(reply.expect(401)["error"], "invalid admin auth token");
    // The prefix is exactly `Bearer `.
    let reply = anon
        .call(
            reqwest::Method::GET,
            "/workspaces",
            None,
            &[("authorization", &format!("bearer {ADMIN_TOKEN}"))],
        )
        .await;
    reply.expect(401);
    app.with_token(ADMIN_TOKEN)
        .get("/workspaces")
        .await
        .expect(200);
    let id = app.create_workspace("Agent", None).await;
    let ws_token = app.register(&id).await.expect("a token");
    let reply = app.with_token(&ws_token).get("/workspaces").await;
    assert_eq!(reply.expect(401)["error"], "invalid admin auth token");
}

async fn development_without_an_admin_token_leaves_everything_open(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Development;
        c.admin_token = None;
        c.rate_limit_per_minute = 3;
    })
    .await;
    let anon = app.anonymous();
    let id = anon.create_workspace("Agent", None).await;
    let token = anon.register(&id).await.expect("a token");
    anon.post("/org/tokens", json!({})).await.expect(201);

    // Act / Assert: tokens exist, yet nothing is locked and nothing is rate limited.
    for _ in 0..10 {
        let reply = anon.get("/workspaces").await;
        assert_eq!(reply.headers.get("x-ratelimit-limit").unwrap(), "unlimited");
        reply.expect(200);
    }
    assert_eq!(patch_status(&anon, &id).await.0, 200);
    app.with_token("garbage")
        .get("/workspaces")
        .await
        .expect(200);
    app.with_token(&token).get("/workspaces").await.expect(200);
    anon.get(&format!("/workspaces/{id}/secrets/values"))
        .await
        .expect(200);

    // The contrast: development with an admin token is not fail-open.
    let locked = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Development;
        c.rate_limit_per_minute = 100;
    })
    .await;
    let reply = locked.anonymous().get("/workspaces").await;
    assert_eq!(reply.headers.get("x-ratelimit-limit").unwrap(), "100");
    reply.expect(401);
}

async fn workspace_routes_admit_their_own_token_the_admin_and_org_tokens_only(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Mine", None).await;
    let other = app.create_workspace("Other", None).await;
    let own = app.register(&id).await.expect("a token");
    let foreign = app.register(&other).await.expect("a token");
    let (org_id, org_token) = mint_org_token(&app).await;

    // Act / Assert
    assert_eq!(patch_status(&app.with_token(&own), &id).await.0, 200);
    assert_eq!(
        patch_status(&app.with_token(&foreign), &id).await,
        (401, json!({ "error": "invalid workspace auth token" }))
    );
    assert_eq!(
        patch_status(&app.with_token("garbage"), &id).await,
        (401, json!({ "error": "invalid workspace auth token" }))
    );
    assert_eq!(
        patch_status(&app.anonymous(), &id).await,
        (401, json!({ "error": "missing workspace auth token" }))
    );
    assert_eq!(patch_status(&app.with_token(ADMIN_TOKEN), &id).await.0, 200);
    assert_eq!(patch_status(&app.with_token(&org_token), &id).await.0, 200);
    // The foreign token still works on its own workspace.
    assert_eq!(patch_status(&app.with_token(&foreign), &other).await.0, 200);

    // A revoked org token is just another invalid token.
    app.delete(&format!("/org/tokens/{org_id}"))
        .await
        .expect(200);
    assert_eq!(
        patch_status(&app.with_token(&org_token), &id).await,
        (401, json!({ "error": "invalid workspace auth token" }))
    );
}

async fn workspace_tokens_are_listed_minted_and_revoked_without_showing_secrets(
    backend: DbBackend,
) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let first = app.register(&id).await.expect("a token");
    let agent = app.with_token(&first);
    let path = format!("/workspaces/{id}/tokens");

    // Act: the agent mints a second token for itself.
    let minted = agent.post(&path, json!({})).await.expect(201);
    assert_eq!(minted["workspace_id"], id.as_str());
    assert!(minted["message"].is_string());
    let second = minted["auth_token"].as_str().expect("a token").to_owned();
    assert_eq!(second.len(), 43);
    app.with_token(&second)
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);

    // Assert: listed by id and prefix, never the token itself.
    let listed = agent.get(&path).await;
    for token in [&first, &second] {
        assert!(!listed.text.contains(token.as_str()), "{}", listed.text);
    }
    let listed = listed.expect(200);
    assert_eq!(listed["count"], 2);
    let rows = listed["tokens"].as_array().expect("a list");
    let mut prefixes: Vec<&str> = rows.iter().map(|t| t["prefix"].as_str().unwrap()).collect();
    prefixes.sort_unstable();
    let mut expected = vec![&first[..8], &second[..8]];
    expected.sort_unstable();
    assert_eq!(prefixes, expected);
    for row in rows {
        let mut fields: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["created_at", "id", "last_used_at", "prefix"]);
    }
    let used = rows.iter().find(|t| t["prefix"] == first[..8]).unwrap();
    assert!(used["last_used_at"].is_string(), "the first token was used");

    // Revoking one token: it stops working at once, the other keeps working.
    let second_id = rows.iter().find(|t| t["prefix"] == second[..8]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = agent
        .delete(&format!("{path}/{second_id}"))
        .await
        .expect(200);
    assert_eq!(revoked, json!({ "status": "revoked" }));
    let reply = app
        .with_token(&second)
        .get(&format!("/workspaces/{id}/secrets"))
        .await;
    assert_eq!(reply.expect(401)["error"], "invalid workspace auth token");
    agent
        .delete(&format!("{path}/{second_id}"))
        .await
        .expect(404);
    agent
        .delete(&format!("{path}/not-a-token-id"))
        .await
        .expect(404);
    assert_eq!(agent.get(&path).await.expect(200)["count"], 1);
    // Another workspace cannot revoke this one's tokens, even with its own valid token.
    let other = app.create_workspace("Other", None).await;
    let other_token = app.register(&other).await.expect("a token");
    let first_id = agent.get(&path).await.expect(200)["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.with_token(&other_token)
        .delete(&format!("{path}/{first_id}"))
        .await
        .expect(401);
    app.with_token(&other_token)
        .delete(&format!("/workspaces/{other}/tokens/{first_id}"))
        .await
        .expect(404);
    agent.get(&path).await.expect(200);
}

async fn a_workspace_holds_at_most_50_live_tokens(backend: DbBackend) {
    // Arrange: registration minted the first.
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    app.register(&id).await.expect("a token");
    let path = format!("/workspaces/{id}/tokens");
    for _ in 1..50 {
        app.post(&path, json!({})).await.expect(201);
    }

    // Act
    let refused = app.post(&path, json!({})).await;

    // Assert
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(refused.body["auth_token"].is_null());
    let test_token = app.get(&format!("/admin/workspaces/{id}/test-token")).await;
    assert_eq!(test_token.status, 429);
    let listed = app.get(&format!("{path}?limit=200")).await.expect(200);
    assert_eq!(listed["count"], 50);
    // Revoking one makes room for one.
    let some_id = listed["tokens"][7]["id"].as_str().unwrap().to_owned();
    app.delete(&format!("{path}/{some_id}")).await.expect(200);
    app.post(&path, json!({})).await.expect(201);
    app.post(&path, json!({})).await.expect(429);
    app.get(&format!("{path}?limit=201")).await.expect(400);
}

async fn org_tokens_are_listed_without_secrets_and_can_be_revoked(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let (first_id, first) = mint_org_token(&app).await;
    let (_, second) = mint_org_token(&app).await;

    // Act
    let listed = app.get("/org/tokens").await;

    // Assert
    for token in [&first, &second] {
        assert!(!listed.text.contains(token.as_str()), "{}", listed.text);
    }
    let listed = listed.expect(200);
    assert_eq!(listed["count"], 2);
    for row in listed["tokens"].as_array().unwrap() {
        assert!(row.get("auth_token").is_none() && row.get("token_hash").is_none());
        assert_eq!(row["name"], "ci");
        assert!(row["prefix"].is_string() && row["created_at"].is_string());
    }
    app.with_token(&first).get("/workspaces").await.expect(200);

    let revoked = app
        .delete(&format!("/org/tokens/{first_id}"))
        .await
        .expect(200);
    assert_eq!(revoked, json!({ "status": "revoked" }));
    let reply = app.with_token(&first).get("/workspaces").await;
    assert_eq!(reply.expect(401)["error"], "invalid admin auth token");
    app.with_token(&second).get("/workspaces").await.expect(200);
    app.delete(&format!("/org/tokens/{first_id}"))
        .await
        .expect(404);
    assert_eq!(app.get("/org/tokens").await.expect(200)["count"], 1);
    // Org token routes are admin routes.
    app.anonymous().get("/org/tokens").await.expect(401);
    app.anonymous()
        .post("/org/tokens", json!({}))
        .await
        .expect(401);
    app.post("/org/tokens", json!({ "name": "a\nb" }))
        .await
        .expect(400);
}

async fn minting_org_tokens_is_limited_to_10_an_hour_per_client(backend: DbBackend) {
    // Arrange: ten mints in a row are fine.
    let app = TestApp::spawn(backend).await;
    let mut org_token = String::new();
    for _ in 0..10 {
        org_token = mint_org_token(&app).await.1;
    }

    // Act: the 11th from the same client, even with another valid admin credential.
    let refused = app
        .with_token(&org_token)
        .post("/org/tokens", json!({ "name": "ci" }))
        .await;

    // Assert
    assert_eq!(refused.status, 429, "{}", refused.text);
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.body["error"], "rate limit exceeded");
    assert_eq!(refused.body["retry_after"], retry_after);
    assert!(refused.body.get("auth_token").is_none());
    assert_eq!(app.get("/org/tokens").await.expect(200)["count"], 10);
}

async fn the_test_token_route_is_closed_in_production_and_demands_the_admin_token(
    backend: DbBackend,
) {
    // Outside production, with an admin token configured: the route demands it.
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/admin/workspaces/{id}/test-token");
    let minted = app.get(&path).await.expect(200);
    assert_eq!(minted["workspace_id"], id.as_str());
    let token = minted["auth_token"].as_str().expect("a token").to_owned();
    app.with_token(&token)
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);
    assert_eq!(
        app.anonymous().get(&path).await.expect(401)["error"],
        "admin auth required"
    );
    assert_eq!(
        app.with_token(&token).get(&path).await.expect(401)["error"],
        "invalid admin auth token"
    );
    let unknown = format!(
        "/admin/workspaces/{}/test-token",
        "6d1c5a3e-0000-4000-8000-000000000001"
    );
    app.get(&unknown).await.expect(404);
    app.get("/admin/workspaces/not-a-uuid/test-token")
        .await
        .expect(400);

    // Without an admin token the route is deliberately open, so tests can get a first token.
    let open = spawn_without_admin_token(backend).await;
    let open_id = open.anonymous().create_workspace("Agent", None).await;
    open.anonymous().register(&open_id).await.expect("a token");
    let minted = open
        .anonymous()
        .get(&format!("/admin/workspaces/{open_id}/test-token"))
        .await
        .expect(200);
    assert!(minted["auth_token"].is_string());

    // In production the route does not exist, whoever asks...
    let production = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Production;
        c.secrets_encryption_key = Some("0123456789abcdef0123456789abcdef".to_owned().into());
    })
    .await;
    let prod_id = production.create_workspace("Agent", None).await;
    let reply = production
        .get(&format!("/admin/workspaces/{prod_id}/test-token"))
        .await;
    assert_eq!(reply.expect(404), json!({ "error": "not found" }));

    // ...unless explicitly enabled.
    let enabled = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Production;
        c.secrets_encryption_key = Some("0123456789abcdef0123456789abcdef".to_owned().into());
        c.enable_test_tokens = true;
    })
    .await;
    let enabled_id = enabled.create_workspace("Agent", None).await;
    let path = format!("/admin/workspaces/{enabled_id}/test-token");
    enabled.get(&path).await.expect(200);
    enabled.anonymous().get(&path).await.expect(401);
}

async fn the_canvas_viewport_needs_an_allowed_origin_or_a_bearer_once_locked(backend: DbBackend) {
    // Arrange: a fresh install with one allowed canvas origin.
    let app = TestApp::spawn_with(backend, |c| {
        c.admin_token = None;
        c.cors_origins = vec!["http://canvas.test".to_owned()];
    })
    .await;
    let anon = app.anonymous();
    assert_eq!(
        anon.get("/canvas/viewport").await.expect(200),
        json!({ "x": 0.0, "y": 0.0, "zoom": 1.0 })
    );
    let saved = anon
        .put(
            "/canvas/viewport",
            json!({ "x": 10.5, "y": -4.0, "zoom": 1.5 }),
        )
        .await
        .expect(200);
    assert_eq!(saved, json!({ "status": "saved" }));
    assert_eq!(
        anon.get("/canvas/viewport").await.expect(200),
        json!({ "x": 10.5, "y": -4.0, "zoom": 1.5 })
    );

    // Act: the first token locks the install.
    let id = anon.create_workspace("Agent", None).await;
    let token = anon.register(&id).await.expect("a token");

    // Assert
    let body = json!({ "x": 1.0, "y": 2.0, "zoom": 0.5 });
    let reply = anon.put("/canvas/viewport", body.clone()).await;
    assert_eq!(reply.expect(401)["error"], "auth required");
    let from_canvas = anon
        .call(
            reqwest::Method::PUT,
            "/canvas/viewport",
            Some(body.clone()),
            &[("origin", "http://canvas.test")],
        )
        .await;
    from_canvas.expect(200);
    let from_elsewhere = anon
        .call(
            reqwest::Method::PUT,
            "/canvas/viewport",
            Some(json!({ "x": 9.0, "y": 9.0, "zoom": 9.0 })),
            &[("origin", "http://evil.test")],
        )
        .await;
    from_elsewhere.expect(401);
    app.with_token("garbage")
        .put(
            "/canvas/viewport",
            json!({ "x": 9.0, "y": 9.0, "zoom": 9.0 }),
        )
        .await
        .expect(401);
    app.with_token(&token)
        .put(
            "/canvas/viewport",
            json!({ "x": 3.0, "y": 4.0, "zoom": 2.0 }),
        )
        .await
        .expect(200);
    assert_eq!(
        anon.get("/canvas/viewport").await.expect(200),
        json!({ "x": 3.0, "y": 4.0, "zoom": 2.0 })
    );
    app.with_token(&token)
        .put(
            "/canvas/viewport",
            json!({ "x": 3.0, "y": 4.0, "zoom": 0.0 }),
        )
        .await
        .expect(400);
}
