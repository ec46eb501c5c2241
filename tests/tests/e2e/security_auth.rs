//! Attack specs for authentication (issue 17, items 1, 2, 3, 4, 6 and 7): each performs an attack
//! that succeeded against the host before, exactly as an attacker on loopback would, and shows
//! it is refused now. Hosts run with an admin token unless a spec says otherwise.

use std::time::Duration;

use molecule_e2e::{
    Api, DbBackend, Fault, FaultAgent, Runtime, TestApp, builtin_extensions_dir, eventually,
    on_both_backends, on_both_runtimes, write_file,
};
use molecule_host::config::Environment;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    an_unauthenticated_register_cannot_take_over_a_workspace_that_holds_no_live_token,
    a_removed_workspace_is_never_a_caller,
    an_origin_header_is_not_a_credential,
    the_reads_that_were_open_need_a_credential,
    a_workspace_token_cannot_reparent_or_reconfigure_its_own_workspace,
    the_test_token_route_mints_nothing_in_the_default_environment,
    anonymous_traffic_from_one_address_cannot_starve_an_agents_heartbeats,
    clients_behind_a_trusted_proxy_are_told_apart_and_nobody_else_can_claim_to_be_one,
    a_workspace_token_cannot_multiply_itself,
    deleting_every_workspace_does_not_reopen_a_fresh_install,
    development_conveniences_stay_on_loopback_and_production_demands_an_admin_token,
);

on_both_runtimes!(
    the_token_file_cannot_be_replaced_through_a_path_inside_it,
    the_plugin_allow_list_is_the_org_roots_at_any_depth,
);

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A production host whose invented agent name resolves to a public address (never called).
async fn production_host(backend: DbBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.env = Environment::Production;
        c.secrets_encryption_key = Some(KEY.to_owned().into());
        c.faults
            .dns
            .closed()
            .answer("agent.partner.example", &["93.184.215.14".parse().unwrap()])
            .answer("evil.example", &["93.184.215.15".parse().unwrap()]);
    })
    .await
}

fn register_body(id: &str, url: &str) -> Value {
    json!({ "id": id, "url": url, "agent_card": { "name": "evil", "skills": [] } })
}

async fn an_unauthenticated_register_cannot_take_over_a_workspace_that_holds_no_live_token(
    backend: DbBackend,
) {
    // Arrange: production, an admin token; the admin creates an external workspace with a URL,
    // a workspace whose agent runs elsewhere (no runtime here), and gives one a secret.
    let app = production_host(backend).await;
    let anon = app.anonymous();
    let external = app
        .post(
            "/workspaces",
            json!({ "name": "Partner", "external": true, "url": "http://agent.partner.example:8000" }),
        )
        .await
        .expect(201);
    let external_id = external["id"].as_str().unwrap().to_owned();
    let pending = app.create_workspace("Pending", None).await;
    app.post(
        &format!("/workspaces/{external_id}/secrets"),
        json!({ "key": "PARTNER_KEY", "value": "partner-secret-value" }),
    )
    .await
    .expect(200);
    app.put(
        "/settings/secrets",
        json!({ "key": "GLOBAL_KEY", "value": "global-secret-value" }),
    )
    .await
    .expect(200);

    for id in [&external_id, &pending] {
        // Act: register with no credential at all, pointing the workspace elsewhere.
        let reply = anon
            .post(
                "/registry/register",
                register_body(id, "http://evil.example:8000"),
            )
            .await;

        // Assert: refused, no token handed out, the URL unchanged, and nothing to read.
        assert_eq!(reply.status, 401, "{}", reply.text);
        assert!(!reply.text.contains("auth_token"), "{}", reply.text);
        let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
        assert_ne!(row["url"], "http://evil.example:8000");
        let values = anon.get(&format!("/workspaces/{id}/secrets/values")).await;
        assert_eq!(values.status, 401);
        assert!(!values.text.contains("secret-value"), "{}", values.text);
        for (path, body) in [
            ("/registry/heartbeat", json!({ "workspace_id": id })),
            (
                "/registry/update-card",
                json!({ "workspace_id": id, "agent_card": { "name": "evil" } }),
            ),
        ] {
            anon.post(path, body).await.expect(401);
        }
        anon.get(&format!("/workspaces/{id}/state"))
            .await
            .expect(401);
    }

    // The token gap of a (re)provision is no opening either: with every token of the workspace
    // revoked, registering still needs one.
    let tokens = app
        .get(&format!("/workspaces/{external_id}/tokens"))
        .await
        .expect(200);
    for token in tokens["tokens"].as_array().unwrap() {
        let token_id = token["id"].as_str().unwrap();
        app.delete(&format!("/workspaces/{external_id}/tokens/{token_id}"))
            .await
            .expect(200);
    }
    anon.post(
        "/registry/register",
        register_body(&external_id, "http://evil.example:8000"),
    )
    .await
    .expect(401);
    // A workspace whose agent runs elsewhere got its credential once, at creation; a token the
    // operator mints works as its agent's would; a revoked one does not.
    let token = external["connection"]["auth_token"]
        .as_str()
        .expect("an external workspace gets its credential at creation");
    let fresh = app
        .post(&format!("/workspaces/{pending}/tokens"), json!({}))
        .await
        .expect(201);
    app.with_token(fresh["auth_token"].as_str().unwrap())
        .post(
            "/registry/register",
            register_body(&pending, "http://agent.partner.example:8000"),
        )
        .await
        .expect(200);
    app.with_token(token)
        .post(
            "/registry/register",
            register_body(&external_id, "http://agent.partner.example:8000"),
        )
        .await
        .expect(401);
}

async fn a_removed_workspace_is_never_a_caller(backend: DbBackend) {
    // Arrange: two sibling agents; the first is deleted.
    let app = TestApp::spawn(backend).await;
    let target_agent = FaultAgent::start(|_| Fault::Answer).await;
    let (gone, gone_token) = app
        .workspace_at("Gone", None, "http://127.0.0.1:9/a2a")
        .await;
    let (target, _) = app.workspace_at("Target", None, &target_agent.url).await;
    app.delete(&format!("/workspaces/{gone}")).await.expect(200);
    let anon = app.anonymous();
    let message = json!({ "params": { "message": { "content": "hello" } } });

    // Act / Assert: its id, with no bearer, with its old token, or with the operator's token.
    for client in [anon.clone(), app.with_token(&gone_token), app.api.clone()] {
        let caller = [("x-workspace-id", gone.as_str())];
        let a2a = client
            .call(
                Method::POST,
                &format!("/workspaces/{target}/a2a"),
                Some(message.clone()),
                &caller,
            )
            .await;
        assert!(matches!(a2a.status.as_u16(), 401 | 403), "{}", a2a.text);
        for path in [
            format!("/registry/{target}/peers"),
            format!("/registry/discover/{target}"),
        ] {
            let reply = client.call(Method::GET, &path, None, &caller).await;
            assert!(
                matches!(reply.status.as_u16(), 401 | 403),
                "{path}: {}",
                reply.text
            );
        }
        assert!(matches!(
            ws_status(&client, &[("x-workspace-id", gone.as_str())]).await,
            401 | 403
        ));
    }
    assert!(
        target_agent.requests().is_empty(),
        "the removed workspace's message never reached the agent"
    );
}

/// The status of a WebSocket upgrade of `/ws` with `headers` (101 when it opens).
async fn ws_status(api: &Api, headers: &[(&str, &str)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = api.ws_url("/ws").into_client_request().unwrap();
    if let Some(token) = &api.token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("websocket handshake failed: {other}"),
    }
}

async fn an_origin_header_is_not_a_credential(backend: DbBackend) {
    // Arrange: the default environment, an admin token, an agent behind the host.
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, _) = app.workspace_at("Agent", None, &agent.url).await;
    let origin = [("origin", "http://localhost:3000")];
    let anon = app.anonymous();

    // Act / Assert: every door the original opened to that Origin stays shut.
    let a2a = anon
        .call(
            Method::POST,
            &format!("/workspaces/{id}/a2a"),
            Some(json!({ "params": { "message": { "content": "run your brain" } } })),
            &origin,
        )
        .await;
    assert_eq!(a2a.status, 401, "{}", a2a.text);
    assert!(agent.requests().is_empty(), "the agent's brain never ran");
    let peers = anon
        .call(Method::GET, &format!("/registry/{id}/peers"), None, &origin)
        .await;
    assert_eq!(peers.status, 401, "{}", peers.text);
    let viewport = anon
        .call(
            Method::PUT,
            "/canvas/viewport",
            Some(json!({ "x": 1.0, "y": 1.0, "zoom": 1.0 })),
            &origin,
        )
        .await;
    assert_eq!(viewport.status, 401, "{}", viewport.text);
    assert_eq!(ws_status(&anon, &origin).await, 401);
    // What a browser may read is still CORS's business: the allowed origin gets its header.
    let health = anon.call(Method::GET, "/health", None, &origin).await;
    assert_eq!(
        health.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

async fn the_reads_that_were_open_need_a_credential(backend: DbBackend) {
    // Arrange: two orgs; an agent in each.
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Acme", None).await;
    let (child, child_token) = app
        .workspace_at("Dev", Some(&root), "http://127.0.0.1:9/a2a")
        .await;
    let other_root = app.create_workspace("Other", None).await;
    let (stranger, stranger_token) = app
        .workspace_at("Stranger", Some(&other_root), "http://127.0.0.1:9/a2a")
        .await;
    let anon = app.anonymous();

    // Act / Assert: GET /workspaces/:id (URL, agent card, status).
    let reply = anon.get(&format!("/workspaces/{child}")).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert!(!reply.text.contains("127.0.0.1"), "{}", reply.text);
    app.with_token("junk")
        .get(&format!("/workspaces/{child}"))
        .await
        .expect(401);
    // An agent reads its own row and its parent's, not a stranger's.
    let own = app.with_token(&child_token);
    own.get(&format!("/workspaces/{child}")).await.expect(200);
    own.get(&format!("/workspaces/{root}")).await.expect(200);
    own.get(&format!("/workspaces/{stranger}"))
        .await
        .expect(403);
    // POST /registry/check-access: the operator, or a workspace asking about itself.
    let ask = |caller: &str, target: &str| json!({ "caller_id": caller, "target_id": target });
    anon.post("/registry/check-access", ask(&child, &root))
        .await
        .expect(401);
    app.with_token("junk")
        .post("/registry/check-access", ask(&child, &root))
        .await
        .expect(401);
    assert_eq!(
        own.post("/registry/check-access", ask(&child, &root))
            .await
            .expect(200),
        json!({ "allowed": true })
    );
    app.with_token(&stranger_token)
        .post("/registry/check-access", ask(&child, &root))
        .await
        .expect(401);
    app.post("/registry/check-access", ask(&child, &stranger))
        .await
        .expect(200);
    // The local plugin registry and its schemes.
    for path in ["/plugins", "/plugins/sources", "/canvas/viewport"] {
        anon.get(path).await.expect(401);
        app.with_token("junk").get(path).await.expect(401);
    }
    own.get("/plugins/sources").await.expect(200);
}

async fn a_workspace_token_cannot_reparent_or_reconfigure_its_own_workspace(backend: DbBackend) {
    // Arrange: two orgs; an external agent in the first, a team in the second.
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Acme", None).await;
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Agent", "parent_id": root, "external": true }),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_root = app.create_workspace("Rival", None).await;
    let rival_lead = app.create_workspace("Rival lead", Some(&other_root)).await;
    let rival_agent = FaultAgent::start(|_| Fault::Answer).await;
    let (rival_member, _) = app
        .workspace_at("Rival member", Some(&rival_lead), &rival_agent.url)
        .await;
    let agent = app.with_token(&token);

    // Act / Assert: each privileged field, alone, is refused to the workspace's own token.
    for body in [
        json!({ "parent_id": rival_lead }),
        json!({ "parent_id": null }),
        json!({ "tier": 4 }),
        json!({ "runtime": "langgraph" }),
        json!({ "update_tier": "canary" }),
        json!({ "workspace_dir": "/" }),
        json!({ "name": "Renamed", "tier": 4 }),
    ] {
        let reply = agent
            .patch(&format!("/workspaces/{id}"), body.clone())
            .await;
        assert_eq!(reply.status, 403, "{body}: {}", reply.text);
    }
    let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(
        (
            row["parent_id"].as_str(),
            &row["tier"],
            &row["runtime"],
            &row["update_tier"]
        ),
        (
            Some(root.as_str()),
            &json!(3),
            &json!("external"),
            &json!("production")
        )
    );
    // So it cannot reach the rival org's team through the hierarchy rules either.
    let reach = agent
        .call(
            Method::POST,
            &format!("/workspaces/{rival_member}/a2a"),
            Some(json!({ "params": { "message": { "content": "hi" } } })),
            &[("x-workspace-id", id.as_str())],
        )
        .await;
    assert_eq!(reach.status, 403, "{}", reach.text);
    assert!(rival_agent.requests().is_empty());
    // Its display fields are its own.
    agent
        .patch(
            &format!("/workspaces/{id}"),
            json!({ "name": "Partner", "role": "Liaison", "x": 10, "y": 20, "collapsed": true }),
        )
        .await
        .expect(200);
    // The operator may change the rest, within bounds: `/`, system directories and
    // non-normalised paths are refused even to the admin.
    for dir in ["/", "/etc", "/home//me", "/home/me/../../etc", "/srv/x/"] {
        let reply = app
            .patch(
                &format!("/workspaces/{id}"),
                json!({ "workspace_dir": dir }),
            )
            .await;
        assert_eq!(reply.status, 400, "{dir}: {}", reply.text);
    }
    app.patch(&format!("/workspaces/{id}"), json!({ "tier": 4 }))
        .await
        .expect(200);
}

async fn the_plugin_allow_list_is_the_org_roots_at_any_depth(runtime: Runtime, backend: DbBackend) {
    // Arrange: an org root whose allow-list names `allowed` only; a child; a grandchild.
    let registry = tempfile::tempdir().unwrap();
    for name in ["allowed", "forbidden"] {
        write_file(
            registry.path(),
            &format!("{name}/plugin.yaml"),
            &format!("name: {name}\nversion: 1.0.0\n"),
        );
    }
    let dir = registry.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| {
        runtime.configure(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.plugins_registry_dir = Some(dir);
    })
    .await;
    let root = app.create_workspace("Acme", None).await;
    let child = app.create_workspace("Lead", Some(&root)).await;
    let grandchild = app.create_workspace("Dev", Some(&child)).await;
    app.put(
        &format!("/orgs/{root}/plugins/allowlist"),
        json!({ "plugins": ["allowed"] }),
    )
    .await
    .expect(200);
    for id in [&root, &grandchild] {
        app.wait_settled(id, Duration::from_secs(90)).await;
    }

    // Act / Assert: the grandchild (two levels down; the original only looked one level up,
    // where its parent has no list) and the root itself are checked.
    for id in [&grandchild, &root] {
        let reply = app
            .post(
                &format!("/workspaces/{id}/plugins"),
                json!({ "source": "local://forbidden" }),
            )
            .await;
        assert_eq!(reply.status, 403, "{}", reply.text);
    }
    let allowed = app
        .post(
            &format!("/workspaces/{grandchild}/plugins"),
            json!({ "source": "local://allowed" }),
        )
        .await
        .expect(200);
    assert_eq!(allowed["plugin"], "allowed");
    // An allow-list belongs to a root: setting one on a child would check nothing.
    app.put(
        &format!("/orgs/{child}/plugins/allowlist"),
        json!({ "plugins": ["forbidden"] }),
    )
    .await
    .expect(400);
}

async fn the_test_token_route_mints_nothing_in_the_default_environment(backend: DbBackend) {
    // Arrange: MOLECULE_ENV unset and no admin token; an operator has already minted an org
    // token, so the install is no longer fresh.
    let app = TestApp::spawn_with(backend, |c| c.admin_token = None).await;
    let org_token = app
        .anonymous()
        .post("/org/tokens", json!({ "name": "ops" }))
        .await
        .expect(201)["auth_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app
        .with_token(&org_token)
        .create_workspace("Agent", None)
        .await;
    let path = format!("/admin/workspaces/{id}/test-token");

    // Act / Assert: no bearer, a junk bearer, even the org token.
    for client in [
        app.anonymous(),
        app.with_token("junk"),
        app.with_token(&org_token),
    ] {
        let reply = client.get(&path).await;
        assert_eq!(reply.status, 404, "{}", reply.text);
        assert!(!reply.text.contains("auth_token"));
    }
}

async fn anonymous_traffic_from_one_address_cannot_starve_an_agents_heartbeats(backend: DbBackend) {
    // Arrange: 30 requests per minute per client; an agent with its token on the same address.
    let app = TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 30).await;
    let id = app.create_workspace("Agent", None).await;
    let token = app.agent_token(&id).await;
    let agent = app.with_token(&token);
    agent
        .post(
            "/registry/register",
            json!({ "id": id, "url": "http://127.0.0.1:9/a2a", "agent_card": {} }),
        )
        .await
        .expect(200);

    // Act: anonymous traffic from this address uses up the address's budget.
    let anon = app.anonymous();
    let mut limited = false;
    for _ in 0..31 {
        limited |= anon.get("/health").await.status == 429;
    }
    assert!(limited, "the address ran out");

    // Assert: the agent's heartbeats count against its token, not the address.
    for _ in 0..5 {
        agent
            .post("/registry/heartbeat", json!({ "workspace_id": id }))
            .await
            .expect(200);
    }
    // A made-up bearer is not a credential: it counts against the address.
    app.with_token("made-up").get("/health").await.expect(429);
}

async fn clients_behind_a_trusted_proxy_are_told_apart_and_nobody_else_can_claim_to_be_one(
    backend: DbBackend,
) {
    // Arrange: the proxy in front is 127.0.0.1; the limit is two per minute per client.
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_per_minute = 2;
        c.trusted_proxies = vec!["127.0.0.1".to_owned()];
    })
    .await;
    let anon = app.anonymous();
    let via_proxy = |client: &'static str| {
        let anon = anon.clone();
        async move {
            anon.call(Method::GET, "/health", None, &[("x-forwarded-for", client)])
                .await
                .status
                .as_u16()
        }
    };

    // Act / Assert: each forwarded client has its own budget.
    assert_eq!(via_proxy("198.51.100.1").await, 200);
    assert_eq!(via_proxy("198.51.100.1").await, 200);
    assert_eq!(via_proxy("198.51.100.1").await, 429);
    assert_eq!(via_proxy("198.51.100.2").await, 200);
    // From a peer that is not a trusted proxy the header means nothing: 127.0.0.2 is one client
    // whatever it claims.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for claimed in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let reply = elsewhere
            .get(app.url("/health"))
            .header("x-forwarded-for", claimed)
            .send()
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

async fn a_workspace_token_cannot_multiply_itself(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let token = app.agent_token(&id).await;
    let agent = app.with_token(&token);
    let path = format!("/workspaces/{id}/tokens");

    // Act: the token mints as many of itself as it can.
    let mut minted = 0;
    for _ in 0..49 {
        match agent.post(&path, json!({})).await.status.as_u16() {
            201 => minted += 1,
            429 => break,
            other => panic!("unexpected status {other}"),
        }
    }

    // Assert: a few, each expiring.
    assert_eq!(minted, 5);
    let listed = agent.get(&path).await.expect(200);
    let expiring = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["expires_at"].is_string())
        .count();
    assert_eq!(expiring, 5);
}

async fn deleting_every_workspace_does_not_reopen_a_fresh_install(backend: DbBackend) {
    // Arrange: no admin token; the operator's first org token ends the fresh-install mode.
    let mut app = TestApp::spawn_with(backend, |c| c.admin_token = None).await;
    let anon = app.anonymous();
    let minted = anon
        .post("/org/tokens", json!({ "name": "ops" }))
        .await
        .expect(201);
    let (org_id, org_token) = (
        minted["id"].as_str().unwrap().to_owned(),
        minted["auth_token"].as_str().unwrap().to_owned(),
    );
    let operator = app.with_token(&org_token);
    let id = operator.create_workspace("Only", None).await;

    // Act: the last workspace is deleted and the last org token revoked.
    operator
        .delete(&format!("/workspaces/{id}?purge=true"))
        .await
        .expect(200);
    operator
        .delete(&format!("/org/tokens/{org_id}"))
        .await
        .expect(200);

    // Assert: still locked, and after a restart too.
    anon.get("/workspaces").await.expect(401);
    anon.post("/org/tokens", json!({})).await.expect(401);
    app.restart_with(|_| {}).await.unwrap();
    let anon = app.anonymous();
    anon.get("/workspaces").await.expect(401);
    anon.post("/workspaces", json!({ "name": "Mine" }))
        .await
        .expect(401);
}

async fn development_conveniences_stay_on_loopback_and_production_demands_an_admin_token(
    backend: DbBackend,
) {
    // Development refuses to listen beyond loopback.
    let dev = TestApp::spawn_with(backend, |c| c.env = Environment::Development).await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let mut config = dev.config.clone();
    config.data_dir = tempfile::tempdir().unwrap().keep();
    config.database_url = None;
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        molecule_host::run(config, listener, async {}),
    )
    .await
    .expect("run returns")
    .expect_err("a development host on 0.0.0.0 is refused");
    assert!(format!("{refused:#}").contains("loopback"), "{refused:#}");
    // On loopback it opens the original's conveniences: the workspace read and check-access
    // without a token, and the canvas by its Origin.
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, _) = dev.workspace_at("Agent", None, &agent.url).await;
    let anon = dev.anonymous();
    anon.get(&format!("/workspaces/{id}")).await.expect(200);
    anon.post(
        "/registry/check-access",
        json!({ "caller_id": id, "target_id": id }),
    )
    .await
    .expect(200);
    anon.call(
        Method::POST,
        &format!("/workspaces/{id}/a2a"),
        Some(json!({ "params": { "message": { "content": "hi" } } })),
        &[("origin", "http://localhost:3000")],
    )
    .await
    .expect(200);
    // Never the agent's routes: registration still needs the workspace's token.
    anon.post(
        "/registry/register",
        register_body(&id, "http://127.0.0.1:9/a2a"),
    )
    .await
    .expect(401);

    // Production without an admin token does not start.
    let refused = dev
        .run_once_with(|c| {
            c.env = Environment::Production;
            c.secrets_encryption_key = Some(KEY.to_owned().into());
            c.admin_token = None;
        })
        .await
        .expect_err("production without an admin token is refused");
    assert!(
        format!("{refused:#}").contains("admin token"),
        "{refused:#}"
    );
}

async fn the_token_file_cannot_be_replaced_through_a_path_inside_it(
    runtime: Runtime,
    backend: DbBackend,
) {
    // Arrange: an agent that is online with the token the host wrote for it.
    let app = TestApp::spawn_with(backend, |c| runtime.configure(c)).await;
    let id = app.create_workspace("Agent", None).await;
    app.wait_settled(&id, Duration::from_secs(90)).await;

    // Act: write a file "inside" the token file, and delete through it.
    let write = app
        .put(
            &format!("/workspaces/{id}/files/.auth_token/x"),
            json!({ "content": "attacker-controlled" }),
        )
        .await;
    let replace = app
        .put(
            &format!("/workspaces/{id}/files"),
            json!({ "files": { ".auth_token/y": "attacker-controlled" } }),
        )
        .await;
    let delete = app
        .delete(&format!("/workspaces/{id}/files/.auth_token/x"))
        .await;

    // Assert: refused, and the agent keeps heartbeating with its token (no restart was
    // triggered, the file is still a file).
    for reply in [&write, &replace, &delete] {
        assert_eq!(reply.status, 403, "{}", reply.text);
    }
    let before =
        app.get(&format!("/workspaces/{id}")).await.expect(200)["last_heartbeat_at"].clone();
    eventually(Duration::from_secs(30), || async {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        (row["status"] == "online" && row["last_heartbeat_at"] != before).then_some(())
    })
    .await;
    assert_eq!(app.restart_count(&id).await, 0);
}
