//! Admin, workspace and org tokens; the fresh-install and development modes; the test-token
//! route; the canvas guard of the viewport.

use molecule_e2e::{ADMIN_TOKEN, Api, DbBackend, TestApp, on_both_backends};
use molecule_host::config::Environment;
use serde_json::{Value, json};

on_both_backends!(
    a_fresh_install_is_open_until_the_first_token_exists_then_admin_routes_lock,
    creating_the_first_agent_workspace_locks_a_fresh_install,
    a_configured_admin_token_is_required_and_accepted,
    development_without_an_admin_token_leaves_everything_open,
    workspace_routes_admit_their_own_token_the_admin_and_org_tokens_only,
    workspace_tokens_are_listed_minted_and_revoked_without_showing_secrets,
    a_workspace_holds_at_most_5_minted_tokens_and_each_expires,
    org_tokens_are_listed_without_secrets_and_can_be_revoked,
    minting_org_tokens_is_limited_to_10_an_hour_per_client,
    the_test_token_route_exists_only_in_development_or_when_enabled_and_demands_the_admin,
    the_canvas_viewport_belongs_to_the_operator_and_an_origin_counts_only_in_development,
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

    // Act: an org token minted while the install is still open.
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

    // Assert: the same calls now need admin rights.
    let reply = anon.get("/workspaces").await;
    assert_eq!(reply.expect(401), json!({ "error": "admin auth required" }));
    let reply = app.with_token("garbage-token").get("/workspaces").await;
    assert_eq!(
        reply.expect(401),
        json!({ "error": "invalid admin auth token" })
    );
    let operator = app.with_token(&org_token);
    let id = operator.create_workspace("Agent", None).await;
    let ws_token = operator.agent_token(&id).await;
    // A workspace token never grants admin (the original accepted any workspace token here).
    let reply = app.with_token(&ws_token).get("/workspaces").await;
    assert_eq!(
        reply.expect(401),
        json!({ "error": "invalid admin auth token" })
    );
    app.with_token(&ws_token)
        .post("/org/tokens", json!({}))
        .await
        .expect(401);
    let listed = operator.get("/workspaces").await.expect(200);
    assert_eq!(listed[0]["id"], id.as_str());
    // The fresh-install door is shut for workspace routes too.
    let (status, body) = patch_status(&anon, &id).await;
    assert_eq!(
        (status, body),
        (401, json!({ "error": "missing workspace auth token" }))
    );
}

async fn creating_the_first_agent_workspace_locks_a_fresh_install(backend: DbBackend) {
    // Arrange
    let app = spawn_without_admin_token(backend).await;
    let anon = app.anonymous();
    anon.get("/workspaces").await.expect(200);

    // Act: the workspace's agent is started elsewhere (no runtime here), so its creation answer
    // hands out its token: the first credential of this install.
    let created = anon
        .post("/workspaces", json!({ "name": "Agent" }))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .expect("the workspace's token, once")
        .to_owned();
    assert_eq!(created["connection"]["workspace_id"], id.as_str());

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
        assert_eq!(
            fields,
            ["created_at", "expires_at", "id", "last_used_at", "prefix"]
        );
    }
    let own_row = rows.iter().find(|t| t["prefix"] == first[..8]).unwrap();
    assert!(
        own_row["expires_at"].is_null(),
        "the agent's own token is rotated"
    );
    let minted_row = rows.iter().find(|t| t["prefix"] == second[..8]).unwrap();
    assert!(
        minted_row["expires_at"].is_string(),
        "a minted token expires"
    );
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

async fn a_workspace_holds_at_most_5_minted_tokens_and_each_expires(backend: DbBackend) {
    // Arrange: minted tokens live two seconds here; the agent's own token does not count.
    let app = TestApp::spawn_with(backend, |c| c.workspace_token_ttl_secs = 2).await;
    let id = app.create_workspace("Agent", None).await;
    let own = app.agent_token(&id).await;
    let agent = app.with_token(&own);
    let path = format!("/workspaces/{id}/tokens");
    let mut minted = Vec::new();
    for _ in 0..5 {
        let reply = agent.post(&path, json!({})).await.expect(201);
        assert!(reply["expires_at"].is_string(), "{reply}");
        minted.push(reply["auth_token"].as_str().unwrap().to_owned());
    }

    // Act: a sixth, by the agent and by the operator alike.
    let refused = agent.post(&path, json!({})).await;

    // Assert
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(refused.body["auth_token"].is_null());
    app.post(&path, json!({})).await.expect(429);
    let listed = app.get(&format!("{path}?limit=200")).await.expect(200);
    assert_eq!(listed["count"], 6, "the agent's own token and five minted");
    let own_row = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == own[..8])
        .expect("the agent's token is listed");
    assert!(own_row["expires_at"].is_null(), "rotated, not expiring");
    // Revoking one makes room for one.
    let some_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == minted[2][..8])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{path}/{some_id}")).await.expect(200);
    app.post(&path, json!({})).await.expect(201);
    app.post(&path, json!({})).await.expect(429);
    app.get(&format!("{path}?limit=201")).await.expect(400);
    // Minted tokens stop working when they expire; the agent's own keeps working.
    let first = minted[0].clone();
    molecule_e2e::eventually(std::time::Duration::from_secs(10), || {
        let client = app.with_token(&first);
        let secrets = format!("/workspaces/{id}/secrets");
        async move { (client.get(&secrets).await.status == 401).then_some(()) }
    })
    .await;
    agent
        .get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200);
    // Once every minted token expired, only the agent's own is listed and there is room again.
    molecule_e2e::eventually(std::time::Duration::from_secs(10), || {
        let (agent, path) = (agent.clone(), path.clone());
        async move { (agent.get(&path).await.expect(200)["count"] == 1).then_some(()) }
    })
    .await;
    agent.post(&path, json!({})).await.expect(201);
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

async fn the_test_token_route_exists_only_in_development_or_when_enabled_and_demands_the_admin(
    backend: DbBackend,
) {
    let key = || Some("0123456789abcdef0123456789abcdef".to_owned().into());

    // The default environment (MOLECULE_ENV unset): the route does not exist, whoever asks.
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/admin/workspaces/{id}/test-token");
    assert_eq!(
        app.get(&path).await.expect(404),
        json!({ "error": "not found" })
    );
    app.anonymous().get(&path).await.expect(404);
    // Without an admin token either: forgetting MOLECULE_ENV never opens it.
    let open = spawn_without_admin_token(backend).await;
    let open_id = open.anonymous().create_workspace("Agent", None).await;
    open.anonymous()
        .get(&format!("/admin/workspaces/{open_id}/test-token"))
        .await
        .expect(404);

    // Development with an admin token: the route demands it.
    let dev = TestApp::spawn_with(backend, |c| c.env = Environment::Development).await;
    let dev_id = dev.create_workspace("Agent", None).await;
    let path = format!("/admin/workspaces/{dev_id}/test-token");
    let minted = dev.get(&path).await.expect(200);
    assert_eq!(minted["workspace_id"], dev_id.as_str());
    let token = minted["auth_token"].as_str().expect("a token").to_owned();
    dev.with_token(&token)
        .get(&format!("/workspaces/{dev_id}/secrets"))
        .await
        .expect(200);
    assert_eq!(
        dev.anonymous().get(&path).await.expect(401)["error"],
        "admin auth required"
    );
    assert_eq!(
        dev.with_token(&token).get(&path).await.expect(401)["error"],
        "invalid admin auth token"
    );
    let unknown = format!(
        "/admin/workspaces/{}/test-token",
        "6d1c5a3e-0000-4000-8000-000000000001"
    );
    dev.get(&unknown).await.expect(404);
    dev.get("/admin/workspaces/not-a-uuid/test-token")
        .await
        .expect(400);

    // Development without an admin token: open on loopback, as the original's CI flows expect.
    let dev_open = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Development;
        c.admin_token = None;
    })
    .await;
    let dev_open_id = dev_open.anonymous().create_workspace("Agent", None).await;
    let minted = dev_open
        .anonymous()
        .get(&format!("/admin/workspaces/{dev_open_id}/test-token"))
        .await
        .expect(200);
    assert!(minted["auth_token"].is_string());

    // Production: absent...
    let production = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Production;
        c.secrets_encryption_key = key();
    })
    .await;
    let prod_id = production.create_workspace("Agent", None).await;
    let reply = production
        .get(&format!("/admin/workspaces/{prod_id}/test-token"))
        .await;
    assert_eq!(reply.expect(404), json!({ "error": "not found" }));

    // ...unless explicitly enabled, and then for the operator only (in any environment).
    for env in [Environment::Production, Environment::Default] {
        let enabled = TestApp::spawn_with(backend, |c| {
            c.env = env;
            c.secrets_encryption_key = key();
            c.enable_test_tokens = true;
        })
        .await;
        let enabled_id = enabled.create_workspace("Agent", None).await;
        let path = format!("/admin/workspaces/{enabled_id}/test-token");
        enabled.get(&path).await.expect(200);
        enabled.anonymous().get(&path).await.expect(401);
        enabled.with_token("junk").get(&path).await.expect(401);
    }
}

async fn the_canvas_viewport_belongs_to_the_operator_and_an_origin_counts_only_in_development(
    backend: DbBackend,
) {
    // Arrange: a fresh install with one allowed canvas origin; anyone is the operator until a
    // credential exists.
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

    // Act: the first credential locks the install.
    let (_, org_token) = mint_org_token(&anon).await;
    let id = app
        .with_token(&org_token)
        .create_workspace("Agent", None)
        .await;
    let ws_token = app.with_token(&org_token).agent_token(&id).await;

    // Assert: an allowed Origin is no credential; a workspace token is not the canvas.
    let body = json!({ "x": 1.0, "y": 2.0, "zoom": 0.5 });
    let reply = anon.put("/canvas/viewport", body.clone()).await;
    assert_eq!(reply.expect(401)["error"], "admin auth required");
    anon.get("/canvas/viewport").await.expect(401);
    let from_canvas = anon
        .call(
            reqwest::Method::PUT,
            "/canvas/viewport",
            Some(body.clone()),
            &[("origin", "http://canvas.test")],
        )
        .await;
    from_canvas.expect(401);
    app.with_token("garbage")
        .put("/canvas/viewport", body.clone())
        .await
        .expect(401);
    app.with_token(&ws_token)
        .put("/canvas/viewport", body.clone())
        .await
        .expect(401);
    let canvas = app.with_token(&org_token);
    canvas
        .put(
            "/canvas/viewport",
            json!({ "x": 3.0, "y": 4.0, "zoom": 2.0 }),
        )
        .await
        .expect(200);
    assert_eq!(
        canvas.get("/canvas/viewport").await.expect(200),
        json!({ "x": 3.0, "y": 4.0, "zoom": 2.0 })
    );
    canvas
        .put(
            "/canvas/viewport",
            json!({ "x": 3.0, "y": 4.0, "zoom": 0.0 }),
        )
        .await
        .expect(400);

    // In development (with an admin token set), the original's canvas is recognised by its
    // allowed Origin, from loopback; any other origin is not.
    let dev = TestApp::spawn_with(backend, |c| {
        c.env = Environment::Development;
        c.cors_origins = vec!["http://canvas.test".to_owned()];
    })
    .await;
    let dev_anon = dev.anonymous();
    dev_anon.get("/canvas/viewport").await.expect(200);
    dev_anon
        .call(
            reqwest::Method::PUT,
            "/canvas/viewport",
            Some(body.clone()),
            &[("origin", "http://canvas.test")],
        )
        .await
        .expect(200);
    dev_anon
        .call(
            reqwest::Method::PUT,
            "/canvas/viewport",
            Some(body),
            &[("origin", "http://evil.test")],
        )
        .await
        .expect(401);
}
