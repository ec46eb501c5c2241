//! Cross-cutting behaviour: activity and notify, error bodies, body limits, the rate limit,
//! security headers, CORS, health and metrics.

use molecule_e2e::{ADMIN_TOKEN, Api, DbBackend, Reply, TestApp, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    agents_report_the_seven_activity_types_and_nothing_else,
    activity_lists_filter_by_type_and_source_newest_first,
    a_repeated_idempotency_key_is_stored_once,
    notify_sends_a_message_and_records_an_a2a_receive_row,
    error_bodies_never_show_sql_or_internals_and_never_echo_input,
    malformed_json_is_400_a_wrong_content_type_415_and_an_oversized_body_413,
    non_uuid_workspace_ids_are_400,
    text_with_nul_characters_gets_the_same_answer_on_both_backends,
    the_rate_limit_answers_429_with_retry_after,
    every_response_carries_the_security_headers,
    cors_preflights_echo_allowed_origins_only,
    health_answers_ok_and_metrics_count_requests_by_route,
    a_second_host_on_one_sqlite_file_is_refused_and_postgres_takes_several,
);

const REPORTABLE: [&str; 7] = [
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
];

/// A request with a raw body and explicit content type, as a misbehaving client sends it.
async fn raw(
    api: &Api,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = api
        .client
        .request(method, api.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    Reply::read(request.send().await.expect("request sent")).await
}

async fn agents_report_the_seven_activity_types_and_nothing_else(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let other = app.create_workspace("Other", None).await;
    let token = app.register(&id).await.expect("a token");
    let agent = app.with_token(&token);
    let path = format!("/workspaces/{id}/activity");

    // Act / Assert: every reportable type is logged.
    for kind in REPORTABLE {
        let reply = agent
            .post(
                &path,
                json!({ "activity_type": kind, "summary": format!("did {kind}"), "source_id": id }),
            )
            .await;
        assert_eq!(reply.expect(200), json!({ "status": "logged" }), "{kind}");
    }
    let rows = agent.activity(&id, "").await;
    let mut kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["activity_type"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    let mut expected = REPORTABLE.to_vec();
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    assert!(rows.iter().all(|r| r["status"] == "ok"));

    // Anything else is refused and nothing is written.
    for kind in ["delegation", "", "A2A_SEND", "a2a_send "] {
        let reply = agent.post(&path, json!({ "activity_type": kind })).await;
        assert_eq!(reply.status, 400, "{kind:?}: {}", reply.text);
    }
    // An agent cannot report on behalf of another workspace.
    let reply = agent
        .post(
            &path,
            json!({ "activity_type": "agent_log", "source_id": other }),
        )
        .await;
    assert_eq!(
        reply.expect(403)["error"],
        "source_id must be the reporting workspace"
    );
    // Nor into another workspace's log.
    let reply = agent
        .post(
            &format!("/workspaces/{other}/activity"),
            json!({ "activity_type": "agent_log" }),
        )
        .await;
    reply.expect(401);
    assert_eq!(agent.activity(&id, "").await.len(), 7);
    assert!(app.activity(&other, "").await.is_empty());
}

async fn activity_lists_filter_by_type_and_source_newest_first(backend: DbBackend) {
    // Arrange: canvas rows have no source, agent rows name the reporting workspace.
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/workspaces/{id}/activity");
    let reports = [
        ("agent_log", Some(&id), "first"),
        ("task_update", None, "second"),
        ("agent_log", None, "third"),
        ("error", Some(&id), "fourth"),
        ("agent_log", Some(&id), "fifth"),
    ];
    for (kind, source, summary) in reports {
        let mut body = json!({ "activity_type": kind, "summary": summary });
        if let Some(source) = source {
            body["source_id"] = json!(source);
        }
        app.post(&path, body).await.expect(200);
    }
    let summaries = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["summary"].as_str().unwrap().to_owned())
            .collect()
    };

    // Act / Assert
    let all = app.activity(&id, "").await;
    assert_eq!(
        summaries(&all),
        ["fifth", "fourth", "third", "second", "first"]
    );
    for field in [
        "id",
        "workspace_id",
        "activity_type",
        "source_id",
        "target_id",
        "method",
        "summary",
        "request_body",
        "response_body",
        "tool_trace",
        "duration_ms",
        "status",
        "error_detail",
        "created_at",
    ] {
        assert!(all[0].get(field).is_some(), "activity rows lack {field}");
    }
    assert_eq!(
        summaries(&app.activity(&id, "?type=agent_log").await),
        ["fifth", "third", "first"]
    );
    assert_eq!(
        summaries(&app.activity(&id, "?source=agent").await),
        ["fifth", "fourth", "first"]
    );
    assert_eq!(
        summaries(&app.activity(&id, "?source=canvas").await),
        ["third", "second"]
    );
    assert_eq!(
        summaries(&app.activity(&id, "?type=agent_log&source=canvas").await),
        ["third"]
    );
    assert_eq!(
        summaries(&app.activity(&id, "?limit=2").await),
        ["fifth", "fourth"]
    );
    assert!(app.activity(&id, "?type=memory_write").await.is_empty());
    for bad in ["?source=bogus", "?limit=0", "?limit=501", "?limit=ten"] {
        let reply = app.get(&format!("{path}{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
    }
}

async fn a_repeated_idempotency_key_is_stored_once(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let other = app.create_workspace("Other", None).await;
    let report = json!({ "activity_type": "task_update", "summary": "once", "idempotency_key": "report-42" });

    // Act: the same report delivered twice.
    let first = app
        .post(&format!("/workspaces/{id}/activity"), report.clone())
        .await
        .expect(200);
    let retry = app
        .post(&format!("/workspaces/{id}/activity"), report.clone())
        .await
        .expect(200);

    // Assert: both answers say it landed; one row exists.
    assert_eq!(first["status"], "logged");
    assert_eq!(retry["status"], "logged");
    assert_eq!(app.activity(&id, "").await.len(), 1);
    // The key is scoped to the workspace; no key means no deduplication.
    app.post(&format!("/workspaces/{other}/activity"), report)
        .await
        .expect(200);
    assert_eq!(app.activity(&other, "").await.len(), 1);
    for _ in 0..2 {
        app.post(
            &format!("/workspaces/{id}/activity"),
            json!({ "activity_type": "task_update" }),
        )
        .await
        .expect(200);
    }
    assert_eq!(app.activity(&id, "").await.len(), 3);
    let reply = app
        .post(
            &format!("/workspaces/{id}/activity"),
            json!({ "activity_type": "task_update", "idempotency_key": "" }),
        )
        .await;
    reply.expect(400);
}

async fn notify_sends_a_message_and_records_an_a2a_receive_row(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let path = format!("/workspaces/{id}/notify");

    // Act
    let sent = app
        .post(
            &path,
            json!({
                "message": "build finished",
                "attachments": [{ "uri": "workspace:/out/report.pdf", "name": "report.pdf", "mimeType": "application/pdf", "size": 1234 }],
            }),
        )
        .await
        .expect(200);

    // Assert
    assert_eq!(sent, json!({ "status": "sent" }));
    let rows = app.activity(&id, "?type=a2a_receive").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["method"], "notify");
    assert_eq!(row["summary"], "build finished");
    assert_eq!(row["response_body"]["result"], "build finished");
    assert_eq!(
        row["response_body"]["parts"],
        json!([{ "kind": "file", "file": { "uri": "workspace:/out/report.pdf", "name": "report.pdf", "mimeType": "application/pdf", "size": 1234 } }])
    );
    assert!(row["source_id"].is_null(), "notify is a canvas-side row");
    app.post(&path, json!({ "message": "no attachments" }))
        .await
        .expect(200);
    for bad in [
        json!({ "message": "" }),
        json!({ "message": "   " }),
        json!({}),
        json!({ "message": "m", "attachments": [{ "uri": "", "name": "n" }] }),
        json!({ "message": "m", "attachments": [{ "uri": "u" }] }),
    ] {
        let reply = app.post(&path, bad.clone()).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
    }
    assert_eq!(app.activity(&id, "?type=a2a_receive").await.len(), 2);
    app.delete(&format!("/workspaces/{id}")).await.expect(200);
    app.post(&path, json!({ "message": "too late" }))
        .await
        .expect(404);
}

const INTERNALS: [&str; 10] = [
    "select",
    "insert",
    "update",
    "constraint",
    "sqlx",
    "sqlite",
    "postgres",
    "syntax",
    "panicked",
    "serde",
];

/// An error answer: JSON with an `error` message (or a designed structured body), nothing from
/// the database or the framework, and nothing the client sent.
#[track_caller]
fn assert_clean_error(what: &str, reply: &Reply, sent: &[&str]) {
    assert!(
        reply.status.is_client_error() || reply.status.is_server_error(),
        "{what}: expected an error, got {} {}",
        reply.status,
        reply.text
    );
    assert!(
        reply.body["error"].is_string() || reply.body["status"].is_string(),
        "{what}: error body is not our JSON: {}",
        reply.text
    );
    let lower = reply.text.to_lowercase();
    for word in INTERNALS {
        assert!(
            !lower.contains(word),
            "{what}: error body mentions {word:?}: {}",
            reply.text
        );
    }
    for input in sent {
        assert!(
            !reply.text.contains(input),
            "{what}: error body echoes the input: {}",
            reply.text
        );
    }
}

async fn error_bodies_never_show_sql_or_internals_and_never_echo_input(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let root = app.create_workspace("Root", None).await;
    let a = app.create_workspace("A", Some(&root)).await;
    app.create_workspace("B", Some(&root)).await;
    let echo = "zzECHOzz";
    let missing = "6d1c5a3e-0000-4000-8000-00000000dead";

    // Act / Assert: constraint paths.
    let reply = app
        .patch(&format!("/workspaces/{a}"), json!({ "name": "B" }))
        .await;
    assert_eq!(reply.status, 409);
    assert_clean_error("rename onto a sibling", &reply, &[]);
    let reply = app
        .post("/workspaces", json!({ "name": "X", "parent_id": missing }))
        .await;
    assert_clean_error("missing parent", &reply, &[missing]);
    let reply = app
        .patch(&format!("/workspaces/{a}"), json!({ "parent_id": missing }))
        .await;
    assert_clean_error("patch onto a missing parent", &reply, &[missing]);
    for (field, value) in [
        ("tier", json!(99)),
        ("tier", json!(-1)),
        ("tier", json!(i64::MAX)),
        ("max_concurrent_tasks", json!(i64::MAX)),
        ("budget_limit", json!(-5)),
        ("workspace_access", json!("zzECHOzz")),
        ("runtime", json!("zzECHOzz\n")),
        ("model", json!("zzECHOzz\r")),
    ] {
        let mut body = json!({ "name": "Bounds" });
        body[field] = value.clone();
        let reply = app.post("/workspaces", body).await;
        if reply.status.is_success() {
            continue;
        }
        assert_eq!(reply.status, 400, "{field}={value}: {}", reply.text);
        assert_clean_error(&format!("{field}={value}"), &reply, &[echo]);
    }
    for value in [json!(5), json!(-1), json!(i64::MIN), json!("3")] {
        let reply = app
            .patch(&format!("/workspaces/{a}"), json!({ "tier": value }))
            .await;
        assert_eq!(reply.status, 400, "tier {value}: {}", reply.text);
        assert_clean_error("patch tier", &reply, &[]);
    }
    let reply = app
        .post(
            &format!("/workspaces/{a}/activity"),
            json!({ "activity_type": "task_update", "duration_ms": i64::MAX }),
        )
        .await;
    assert_clean_error("duration out of range", &reply, &[]);

    // Bad inputs across routes: none is echoed back.
    let cases: Vec<(&str, Reply)> = vec![
        (
            "name with a newline",
            app.post("/workspaces", json!({ "name": "zzECHOzz\n" }))
                .await,
        ),
        (
            "name with brackets",
            app.post("/workspaces", json!({ "name": "zzECHOzz{}" }))
                .await,
        ),
        (
            "name of the wrong type",
            app.post("/workspaces", json!({ "name": ["zzECHOzz"] }))
                .await,
        ),
        (
            "unknown patch field",
            app.patch(&format!("/workspaces/{a}"), json!({ "zzECHOzz": 1 }))
                .await,
        ),
        (
            "parent id that is no uuid",
            app.patch(
                &format!("/workspaces/{a}"),
                json!({ "parent_id": "zzECHOzz" }),
            )
            .await,
        ),
        (
            "secret key",
            app.post(
                &format!("/workspaces/{a}/secrets"),
                json!({ "key": "zzECHOzz-", "value": "zzECHOzz" }),
            )
            .await,
        ),
        (
            "global secret key",
            app.put(
                "/settings/secrets",
                json!({ "key": "zzECHOzz!", "value": "v" }),
            )
            .await,
        ),
        (
            "activity type",
            app.post(
                &format!("/workspaces/{a}/activity"),
                json!({ "activity_type": "zzECHOzz' OR 1=1 --" }),
            )
            .await,
        ),
        (
            "activity source filter",
            app.get(&format!("/workspaces/{a}/activity?source=zzECHOzz"))
                .await,
        ),
        (
            "activity limit",
            app.get(&format!("/workspaces/{a}/activity?limit=zzECHOzz"))
                .await,
        ),
        (
            "token page",
            app.get(&format!("/workspaces/{a}/tokens?offset=zzECHOzz"))
                .await,
        ),
        (
            "include_removed flag",
            app.get(&format!("/workspaces/{a}?include_removed=zzECHOzz"))
                .await,
        ),
        ("workspace id", app.get("/workspaces/zzECHOzz").await),
        ("unknown route", app.get("/zzECHOzz").await),
        (
            "caller header",
            app.call(
                Method::GET,
                &format!("/registry/discover/{a}"),
                None,
                &[("x-workspace-id", "zzECHOzz")],
            )
            .await,
        ),
        (
            "agent url",
            app.post(
                "/registry/register",
                json!({ "id": a, "url": "ftp://zzECHOzz/a2a" }),
            )
            .await,
        ),
        (
            "heartbeat of an unknown workspace",
            app.post("/registry/heartbeat", json!({ "workspace_id": missing }))
                .await,
        ),
        (
            "model",
            app.put(
                &format!("/workspaces/{a}/model"),
                json!({ "model": "zzECHOzz\u{7}x" }),
            )
            .await,
        ),
        (
            "org token name",
            app.post("/org/tokens", json!({ "name": "zzECHOzz\u{7}" }))
                .await,
        ),
        (
            "viewport",
            app.put(
                "/canvas/viewport",
                json!({ "x": "zzECHOzz", "y": 0, "zoom": 1 }),
            )
            .await,
        ),
        (
            "config that is not an object",
            app.patch(&format!("/workspaces/{a}/config"), json!(["zzECHOzz"]))
                .await,
        ),
        (
            "wrong method",
            app.call(Method::PUT, "/health", None, &[]).await,
        ),
    ];
    for (what, reply) in &cases {
        assert_clean_error(what, reply, &[echo, missing]);
    }
    let malformed = raw(
        &app,
        Method::POST,
        "/workspaces",
        Some("application/json"),
        "{\"name\": \"zzECHOzz",
    )
    .await;
    assert_clean_error("truncated json", &malformed, &[echo]);
}

async fn malformed_json_is_400_a_wrong_content_type_415_and_an_oversized_body_413(
    backend: DbBackend,
) {
    // Arrange: a small body limit.
    let app = TestApp::spawn_with(backend, |c| c.max_body_bytes = 1024).await;
    let id = app.create_workspace("Agent", None).await;
    let json_type = Some("application/json");

    // Malformed JSON.
    for body in ["{\"name\":", "not json", "{\"name\": \"a\",}", ""] {
        let reply = raw(&app, Method::POST, "/workspaces", json_type, body).await;
        assert_eq!(
            reply.expect(400),
            json!({ "error": "invalid request body" }),
            "{body:?}"
        );
    }
    let reply = raw(
        &app,
        Method::POST,
        &format!("/workspaces/{id}/secrets"),
        json_type,
        "[1, 2",
    )
    .await;
    assert_eq!(
        reply.expect(400),
        json!({ "error": "invalid request body" })
    );

    // A wrong or missing content type.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let reply = raw(
            &app,
            Method::POST,
            "/workspaces",
            content_type,
            "{\"name\":\"Typed\"}",
        )
        .await;
        assert_eq!(reply.status, 415, "{content_type:?}: {}", reply.text);
        assert!(reply.body["error"].is_string());
    }

    // A body over the limit, on every kind of route.
    let big_name = "n".repeat(4096);
    for (method, path) in [
        (Method::POST, "/workspaces".to_owned()),
        (Method::POST, format!("/workspaces/{id}/secrets")),
        (Method::POST, format!("/workspaces/{id}/activity")),
        (Method::PATCH, format!("/workspaces/{id}/config")),
    ] {
        let body = json!({ "name": big_name, "key": "K", "value": big_name, "activity_type": "agent_log" });
        let reply = raw(&app, method, &path, json_type, body.to_string()).await;
        assert_eq!(reply.status, 413, "{path}: {}", reply.text);
        assert_eq!(
            reply.body,
            json!({ "error": "request body too large" }),
            "{path}"
        );
    }
    // Nothing over the limit was written; a body under it still works.
    assert_eq!(app.workspaces().await.len(), 1);
    app.post("/workspaces", json!({ "name": "Small" }))
        .await
        .expect(201);
}

async fn non_uuid_workspace_ids_are_400(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    for (method, path) in [
        (Method::GET, "/workspaces/not-a-uuid"),
        (Method::PATCH, "/workspaces/not-a-uuid"),
        (Method::DELETE, "/workspaces/123"),
        (Method::GET, "/workspaces/not-a-uuid/secrets"),
        (Method::GET, "/workspaces/not-a-uuid/secrets/values"),
        (Method::GET, "/workspaces/not-a-uuid/model"),
        (Method::GET, "/workspaces/not-a-uuid/tokens"),
        (Method::GET, "/workspaces/not-a-uuid/activity"),
        (Method::GET, "/workspaces/not-a-uuid/config"),
        (Method::GET, "/workspaces/not-a-uuid/state"),
        (Method::GET, "/events/not-a-uuid"),
        (Method::GET, "/admin/workspaces/not-a-uuid/test-token"),
        (Method::GET, "/registry/discover/not-a-uuid"),
    ] {
        let body = matches!(method, Method::PATCH).then(|| json!({ "name": "x" }));
        let reply = app.call(method.clone(), path, body, &[]).await;
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text);
        assert!(reply.body["error"].is_string(), "{method} {path}");
    }
    let reply = app.get("/workspaces/not-a-uuid").await;
    assert_eq!(reply.expect(400)["error"], "invalid workspace ID");
    // Uppercase UUIDs are still UUIDs.
    let id = app.create_workspace("Agent", None).await;
    app.get(&format!("/workspaces/{}", id.to_uppercase()))
        .await
        .expect(200);
}

async fn text_with_nul_characters_gets_the_same_answer_on_both_backends(backend: DbBackend) {
    // PostgreSQL cannot store U+0000 in TEXT or JSONB; SQLite can. Whatever the host decides,
    // the answer must not depend on the backend, and must not be a 500.
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let token = app.register(&id).await.expect("a token");
    let agent = app.with_token(&token);
    let nul = "before\u{0}after";
    let cases: Vec<(&str, Reply)> = vec![
        (
            "activity summary",
            agent
                .post(
                    &format!("/workspaces/{id}/activity"),
                    json!({ "activity_type": "agent_log", "summary": nul }),
                )
                .await,
        ),
        (
            "activity body",
            agent
                .post(
                    &format!("/workspaces/{id}/activity"),
                    json!({ "activity_type": "agent_log", "request_body": { "text": nul } }),
                )
                .await,
        ),
        (
            "notify",
            agent
                .post(
                    &format!("/workspaces/{id}/notify"),
                    json!({ "message": nul }),
                )
                .await,
        ),
        (
            "heartbeat task",
            agent
                .post(
                    "/registry/heartbeat",
                    json!({ "workspace_id": id, "current_task": nul }),
                )
                .await,
        ),
        (
            "agent card",
            agent
                .post(
                    "/registry/update-card",
                    json!({ "workspace_id": id, "agent_card": { "name": nul } }),
                )
                .await,
        ),
        (
            "config",
            agent
                .patch(&format!("/workspaces/{id}/config"), json!({ "note": nul }))
                .await,
        ),
        (
            "secret value",
            agent
                .post(
                    &format!("/workspaces/{id}/secrets"),
                    json!({ "key": "NUL_VALUE", "value": nul }),
                )
                .await,
        ),
        (
            "workspace name",
            app.post("/workspaces", json!({ "name": nul })).await,
        ),
        (
            "activity filter",
            agent
                .get(&format!("/workspaces/{id}/activity?type=before%00after"))
                .await,
        ),
    ];
    for (what, reply) in &cases {
        assert_eq!(
            reply.status, 400,
            "{what}: text with NUL must be refused as a bad request: {}",
            reply.text
        );
        assert_clean_error(what, reply, &[nul]);
    }
    // Nothing was half-written.
    assert!(app.activity(&id, "").await.is_empty());
    assert_eq!(
        app.get(&format!("/workspaces/{id}/config"))
            .await
            .expect(200),
        json!({ "data": {} })
    );
}

async fn the_rate_limit_answers_429_with_retry_after(backend: DbBackend) {
    // Arrange: a limit of three per minute. The harness's readiness probe (anonymous) has spent
    // one of this address's three; the admin token has a bucket of its own.
    let app = TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 3).await;

    // Act / Assert: the token's requests pass and say how many remain.
    for remaining in [2, 1, 0] {
        let reply = app.get("/workspaces").await;
        assert_eq!(reply.headers.get("x-ratelimit-limit").unwrap(), "3");
        assert_eq!(
            reply.headers.get("x-ratelimit-remaining").unwrap(),
            &remaining.to_string()
        );
        reply.expect(200);
    }
    let limited = app.get("/workspaces").await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.body,
        json!({ "error": "rate limit exceeded", "retry_after": retry_after })
    );
    assert_eq!(limited.headers.get("x-ratelimit-remaining").unwrap(), "0");
    assert_eq!(
        limited.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    // Every route counts against the token, not just the one that ran out.
    app.get("/health").await.expect(429);
    // Anonymous callers from this address have their own budget (two left after the probe),
    // and a made-up bearer does not buy a fresh one: it counts by address too.
    app.anonymous().get("/health").await.expect(200);
    app.with_token("another-token")
        .get("/health")
        .await
        .expect(200);
    app.with_token("yet-another-token")
        .get("/health")
        .await
        .expect(429);
    app.anonymous().get("/health").await.expect(429);
    // Another client address has its own budget.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let reply = elsewhere.get(app.url("/health")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
}

async fn every_response_carries_the_security_headers(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let replies = [
        ("/health", app.get("/health").await),
        ("/workspaces", app.get("/workspaces").await),
        ("/workspaces/x", app.get("/workspaces/x").await),
        ("/workspaces/id", app.anonymous().get("/workspaces").await),
        (
            "/workspaces/id/secrets",
            app.get(&format!("/workspaces/{id}/secrets")).await,
        ),
        ("/metrics", app.get("/metrics").await),
        ("/canvas/viewport", app.get("/canvas/viewport").await),
        ("/events", app.get("/events").await),
        ("/", app.get("/").await),
        ("/nowhere", app.get("/nowhere").await),
        (
            "/workspaces (preflight)",
            app.call(
                Method::OPTIONS,
                "/workspaces",
                None,
                &[
                    ("origin", "http://localhost:3000"),
                    ("access-control-request-method", "POST"),
                ],
            )
            .await,
        ),
    ];
    for (path, reply) in &replies {
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{path} ({}) lacks {name}", reply.status))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(
            header("strict-transport-security"),
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
        assert_eq!(
            header("referrer-policy"),
            "strict-origin-when-cross-origin",
            "{path}"
        );
        let permissions = header("permissions-policy");
        for feature in ["camera=()", "microphone=()", "geolocation=()"] {
            assert!(permissions.contains(feature), "{path}: {permissions}");
        }
        let csp = header("content-security-policy");
        if ["/", "/nowhere"].contains(path) {
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        } else {
            assert_eq!(csp, "default-src 'self'", "{path}");
        }
    }
}

async fn cors_preflights_echo_allowed_origins_only(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn_with(backend, |c| {
        c.cors_origins = vec!["http://canvas.test".into(), "http://localhost:3000".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        let app = app.anonymous();
        async move {
            app.client
                .request(Method::OPTIONS, app.url("/workspaces"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .expect("preflight sent")
        }
    };

    // Act / Assert: an allowed origin is echoed, with credentials.
    let allowed = preflight("http://canvas.test").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers.get("access-control-allow-origin").unwrap(),
        "http://canvas.test"
    );
    assert_eq!(
        headers.get("access-control-allow-credentials").unwrap(),
        "true"
    );
    let methods = headers
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed_headers = headers
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in ["authorization", "content-type", "x-workspace-id"] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }
    let second = preflight("http://localhost:3000").await;
    assert_eq!(
        second.headers().get("access-control-allow-origin").unwrap(),
        "http://localhost:3000"
    );

    // A disallowed origin gets no CORS grant at all.
    for origin in ["http://evil.test", "http://canvas.test.evil.test", "null"] {
        let refused = preflight(origin).await;
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin}"
        );
    }
    // Simple requests follow the same rule.
    let simple = app
        .call(
            Method::GET,
            "/health",
            None,
            &[("origin", "http://canvas.test")],
        )
        .await;
    assert_eq!(
        simple.headers.get("access-control-allow-origin").unwrap(),
        "http://canvas.test"
    );
    let simple = app
        .call(
            Method::GET,
            "/health",
            None,
            &[("origin", "http://evil.test")],
        )
        .await;
    assert!(simple.headers.get("access-control-allow-origin").is_none());
}

async fn health_answers_ok_and_metrics_count_requests_by_route(backend: DbBackend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("Agent", None).await;
    let health = app.anonymous().get("/health").await;
    assert_eq!(health.text, r#"{"status":"ok"}"#);
    for _ in 0..3 {
        app.get(&format!("/workspaces/{id}")).await.expect(200);
    }
    app.get("/workspaces/not-a-uuid").await.expect(400);

    // Act
    let metrics = app.anonymous().get("/metrics").await;

    // Assert
    assert_eq!(metrics.status, 200);
    let content_type = metrics.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = &metrics.text;
    let counter = |route: &str, status: u16| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("molecule_http_requests_total{"))
            .filter(|l| {
                l.contains(&format!("route=\"{route}\""))
                    && l.contains("method=\"GET\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("a sample value: {l}"))
            })
            .sum()
    };
    assert_eq!(counter("/workspaces/{id}", 200), 3.0, "{text}");
    assert_eq!(counter("/workspaces/{id}", 400), 1.0, "{text}");
    assert!(counter("/health", 200) >= 1.0, "{text}");
    assert!(
        text.contains("# TYPE molecule_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("molecule_http_request_duration_seconds_bucket{")
                && l.contains("route=\"/workspaces/{id}\"")
        ),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("molecule_http_request_duration_seconds_count{")
                && l.contains("route=\"/workspaces/{id}\"")
        ),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    // The workspace id itself never becomes a label (unbounded cardinality).
    assert!(!text.contains(&id), "{text}");
}

/// SQLite serves one host process: a second one on the same file is refused with a message that
/// names the fix, until the first stops. PostgreSQL takes any number.
async fn a_second_host_on_one_sqlite_file_is_refused_and_postgres_takes_several(
    backend: DbBackend,
) {
    let mut app = TestApp::spawn(backend).await;
    let second = app.run_once_with(|_| {}).await;
    match backend {
        DbBackend::Sqlite => {
            let err = format!(
                "{:#}",
                second.expect_err("a second host on the file is refused")
            );
            assert!(
                err.contains("another molecule host is already running on the SQLite database"),
                "{err}"
            );
            assert!(
                err.contains("PostgreSQL"),
                "the message names the way out: {err}"
            );
            app.stop().await.expect("the first host stops");
            app.run_once_with(|_| {})
                .await
                .expect("once the first host stopped, the file is free");
        }
        DbBackend::Postgres => {
            second.expect("a second replica on PostgreSQL starts and stops");
            app.get("/health").await.expect(200);
        }
    }
}
