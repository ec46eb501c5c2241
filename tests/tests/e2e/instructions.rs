//! Platform instructions and workflow checkpoints: the operator's instruction routes with errors
//! naming their field and refused to workspace tokens; resolution in the order global, team,
//! workspace, by priority, enabled only, unbroken by a removed target; the reference agent
//! reading its instructions through the MCP tool `get_instructions`; checkpoints upserted by
//! step and read back in order and latest first.

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, TestApp, on_both_backends, process_runtime};
use serde_json::{Value, json};

on_both_backends!(
    instructions_are_created_listed_changed_and_deleted_with_field_errors,
    only_the_operator_manages_instructions_and_only_the_workspace_resolves_its_own,
    resolution_is_global_then_team_then_workspace_by_priority_and_enabled_only,
    the_reference_agent_reads_its_instructions_through_mcp,
    checkpoints_are_upserted_by_step_and_read_in_order_and_latest_first,
);

async fn refused(api: &Api, body: Value, field: &str) {
    let reply = api.post("/instructions", body.clone()).await.expect(400);
    assert_eq!(reply["field"], field, "{body}: {reply}");
    assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
}

async fn create(app: &Api, body: Value) -> String {
    let row = app.post("/instructions", body).await.expect(201);
    row["id"].as_str().expect("an id").to_owned()
}

fn resolve(id: &str) -> String {
    format!("/workspaces/{id}/instructions/resolve")
}

/// The titles that resolve for `id`, in order; checks the text form lists them the same way.
async fn titles(app: &Api, id: &str) -> Vec<String> {
    let resolved = app.get(&resolve(id)).await.expect(200);
    let titles: Vec<String> = resolved["instructions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    let text = resolved["text"].as_str().unwrap();
    let headings: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::to_owned)
        .collect();
    assert_eq!(headings, titles, "{text}");
    titles
}

async fn instructions_are_created_listed_changed_and_deleted_with_field_errors(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.create_workspace("target", None).await;
    let gone = "00000000-0000-4000-8000-000000000000";

    refused(&app, json!({ "title": "t", "content": "c" }), "scope").await;
    refused(
        &app,
        json!({ "scope": "org", "title": "t", "content": "c" }),
        "scope",
    )
    .await;
    refused(
        &app,
        json!({ "scope": "global", "scope_target": ws, "title": "t", "content": "c" }),
        "scope_target",
    )
    .await;
    for scope in ["team", "workspace"] {
        refused(
            &app,
            json!({ "scope": scope, "title": "t", "content": "c" }),
            "scope_target",
        )
        .await;
        refused(
            &app,
            json!({ "scope": scope, "scope_target": gone, "title": "t", "content": "c" }),
            "scope_target",
        )
        .await;
    }
    refused(
        &app,
        json!({ "scope": "workspace", "scope_target": "nope", "title": "t", "content": "c" }),
        "scope_target",
    )
    .await;
    refused(&app, json!({ "scope": "global", "content": "c" }), "title").await;
    refused(
        &app,
        json!({ "scope": "global", "title": "t".repeat(201), "content": "c" }),
        "title",
    )
    .await;
    refused(&app, json!({ "scope": "global", "title": "t" }), "content").await;
    refused(
        &app,
        json!({ "scope": "global", "title": "t", "content": "c".repeat(8193) }),
        "content",
    )
    .await;
    refused(
        &app,
        json!({ "scope": "global", "title": "t", "content": "c", "priority": "high" }),
        "priority",
    )
    .await;
    refused(
        &app,
        json!({ "scope": "global", "title": "t", "content": "c", "enabled": "yes" }),
        "enabled",
    )
    .await;
    assert_eq!(app.get("/instructions").await.expect(200), json!([]));

    // The longest title and content are accepted.
    let id = create(
        &app,
        json!({ "scope": "workspace", "scope_target": ws, "title": "t".repeat(200), "content": "c".repeat(8192) }),
    )
    .await;
    let listed = app.get("/instructions").await.expect(200);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["priority"], 0);
    assert_eq!(listed[0]["enabled"], true);
    assert_eq!(listed[0]["scope_target"], ws.as_str());

    let changed = app
        .put(
            &format!("/instructions/{id}"),
            json!({ "title": "Be brief", "priority": 7, "enabled": false }),
        )
        .await
        .expect(200);
    assert_eq!(changed["title"], "Be brief");
    assert_eq!(changed["priority"], 7);
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["scope"], "workspace");
    assert_eq!(changed["content"], "c".repeat(8192));
    // To global: the target goes; keeping one is refused.
    let bad = app
        .put(
            &format!("/instructions/{id}"),
            json!({ "scope": "global", "scope_target": ws }),
        )
        .await
        .expect(400);
    assert_eq!(bad["field"], "scope_target");
    let global = app
        .put(&format!("/instructions/{id}"), json!({ "scope": "global" }))
        .await
        .expect(200);
    assert_eq!(global["scope_target"], Value::Null);
    app.put(&format!("/instructions/{gone}"), json!({ "title": "x" }))
        .await
        .expect(404);

    app.delete(&format!("/instructions/{id}")).await.expect(200);
    app.delete(&format!("/instructions/{id}")).await.expect(404);
    assert_eq!(app.get("/instructions").await.expect(200), json!([]));
}

async fn only_the_operator_manages_instructions_and_only_the_workspace_resolves_its_own(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let ws = app.create_workspace("agent", None).await;
    let other = app.create_workspace("other", None).await;
    let id = create(
        &app,
        json!({ "scope": "global", "title": "Hello", "content": "Be kind." }),
    )
    .await;
    let own = app.with_token(&app.agent_token(&ws).await);
    let stranger = app.with_token(&app.agent_token(&other).await);

    for api in [&app.anonymous(), &app.with_token("junk"), &own] {
        let replies = [
            api.get("/instructions").await,
            api.post(
                "/instructions",
                json!({ "scope": "global", "title": "t", "content": "c" }),
            )
            .await,
            api.put(&format!("/instructions/{id}"), json!({ "title": "mine" }))
                .await,
            api.delete(&format!("/instructions/{id}")).await,
        ];
        for reply in replies {
            assert!(
                [401, 403].contains(&reply.status.as_u16()),
                "{}",
                reply.text
            );
        }
    }
    for api in [&app.anonymous(), &app.with_token("junk"), &stranger] {
        let reply = api.get(&resolve(&ws)).await;
        assert!(
            [401, 403].contains(&reply.status.as_u16()),
            "{}",
            reply.text
        );
    }
    assert_eq!(titles(&own, &ws).await, ["Hello"]);
    assert_eq!(titles(&app, &ws).await, ["Hello"]);
    let listed = app.get("/instructions").await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["title"], "Hello");
}

async fn resolution_is_global_then_team_then_workspace_by_priority_and_enabled_only(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    // An org: root R leads P, which leads C and S; X is a root of another org.
    let r = app.create_workspace("R", None).await;
    let p = app.create_workspace("P", Some(&r)).await;
    let c = app.create_workspace("C", Some(&p)).await;
    let s = app.create_workspace("S", Some(&p)).await;
    let x = app.create_workspace("X", None).await;

    let instruction = |scope: &str, target: Option<&str>, title: &str, priority: i32| {
        json!({ "scope": scope, "scope_target": target, "title": title,
                "content": format!("{title} body"), "priority": priority })
    };
    // Created in an order unlike the one they resolve in.
    create(&app, instruction("workspace", Some(&c), "own C", 9)).await;
    create(&app, instruction("team", Some(&p), "team P low", 1)).await;
    create(&app, instruction("global", None, "global low", 0)).await;
    create(&app, instruction("team", Some(&r), "team R", 4)).await;
    create(&app, instruction("team", Some(&p), "team P high", 8)).await;
    create(&app, instruction("global", None, "global high", 5)).await;
    create(&app, instruction("global", None, "global low later", 0)).await;
    create(&app, instruction("workspace", Some(&s), "own S", 0)).await;
    let off = create(&app, instruction("global", None, "disabled", 99)).await;
    app.put(&format!("/instructions/{off}"), json!({ "enabled": false }))
        .await
        .expect(200);
    create(&app, instruction("workspace", Some(&x), "own X", 0)).await;

    let globals = ["global high", "global low", "global low later"];
    let with = |rest: &[&str]| -> Vec<String> {
        globals.iter().chain(rest).map(|t| t.to_string()).collect()
    };
    // C: a member of P's team, and its own.
    assert_eq!(
        titles(&app, &c).await,
        with(&["team P high", "team P low", "own C"])
    );
    assert_eq!(
        titles(&app, &s).await,
        with(&["team P high", "team P low", "own S"])
    );
    // P: a member of R's team and the lead of its own, merged by priority.
    assert_eq!(
        titles(&app, &p).await,
        with(&["team P high", "team R", "team P low"])
    );
    // R: the lead of its team; no parent.
    assert_eq!(titles(&app, &r).await, with(&["team R"]));
    // X, in another org: only the global ones and its own.
    assert_eq!(titles(&app, &x).await, with(&["own X"]));

    // A removed target: its workspace instructions stop applying to anyone, and a purged one's
    // go altogether; every other workspace still resolves.
    app.delete(&format!("/workspaces/{s}?confirm=true"))
        .await
        .expect(200);
    app.get(&resolve(&s)).await.expect(410);
    assert_eq!(
        titles(&app, &c).await,
        with(&["team P high", "team P low", "own C"])
    );
    app.delete(&format!("/workspaces/{p}?confirm=true&purge=true"))
        .await
        .expect(200);
    let left: Vec<String> = app
        .get("/instructions")
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !left
            .iter()
            .any(|t| t.starts_with("team P") || t.ends_with(" C") || t.ends_with(" S")),
        "{left:?}"
    );
    assert_eq!(titles(&app, &r).await, with(&["team R"]));
    assert_eq!(titles(&app, &x).await, with(&["own X"]));
}

async fn the_reference_agent_reads_its_instructions_through_mcp(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, process_runtime).await;
    let root = app.create_workspace("root", None).await;
    let child = app.create_workspace("child", Some(&root)).await;
    create(
        &app,
        json!({ "scope": "global", "title": "House rules", "content": "Answer in English." }),
    )
    .await;
    create(
        &app,
        json!({ "scope": "workspace", "scope_target": child, "title": "Your job", "content": "Write tests.", "priority": 3 }),
    )
    .await;
    app.wait_settled(&child, Duration::from_secs(60)).await;

    let reply = app
        .post(
            &format!("/workspaces/{child}/a2a"),
            json!({ "params": { "message": { "content": "tool get_instructions {}" } } }),
        )
        .await
        .expect(200);

    let text = reply["result"]["parts"][0]["text"]
        .as_str()
        .expect("a text answer");
    assert_eq!(
        text,
        "tool get_instructions: # Platform instructions\n\n## House rules\n\nAnswer in English.\n\n## Your job\n\nWrite tests.\n",
        "{reply}"
    );
    // The same text the resolve route answers.
    let resolved = app.get(&resolve(&child)).await.expect(200);
    assert_eq!(
        text.strip_prefix("tool get_instructions: ").unwrap(),
        resolved["text"]
    );
    // A workspace nothing applies to is told so.
    app.delete(&format!("/workspaces/{child}?confirm=true"))
        .await
        .expect(200);
    let all = app.get("/instructions").await.expect(200);
    let global = all[0]["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/instructions/{global}"))
        .await
        .expect(200);
    app.wait_settled(&root, Duration::from_secs(60)).await;
    let reply = app
        .post(
            &format!("/workspaces/{root}/a2a"),
            json!({ "params": { "message": { "content": "tool get_instructions {}" } } }),
        )
        .await
        .expect(200);
    assert_eq!(
        reply["result"]["parts"][0]["text"],
        "tool get_instructions: no platform instructions apply to this workspace"
    );
}

async fn checkpoints_are_upserted_by_step_and_read_in_order_and_latest_first(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let ws = app.create_workspace("runner", None).await;
    let other = app.create_workspace("other", None).await;
    let path = format!("/workspaces/{ws}/checkpoints");
    let own = app.with_token(&app.agent_token(&ws).await);
    let stranger = app.with_token(&app.agent_token(&other).await);

    let first = own
        .post(
            &path,
            json!({ "workflow_id": "deploy", "step_name": "fetch", "step_index": 0, "payload": { "n": 1 } }),
        )
        .await
        .expect(200);
    let again = own
        .post(
            &path,
            json!({ "workflow_id": "deploy", "step_name": "fetch", "step_index": 0, "payload": { "n": 2 } }),
        )
        .await
        .expect(200);
    assert_eq!(again["id"], first["id"], "the same step is one row");
    assert_eq!(again["payload"], json!({ "n": 2 }));
    own.post(
        &path,
        json!({ "workflow_id": "deploy", "step_name": "build", "step_index": 1 }),
    )
    .await
    .expect(200);

    let steps = own.get(&format!("{path}/deploy")).await.expect(200);
    let names: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fetch", "build"]);
    assert_eq!(steps[0]["payload"], json!({ "n": 2 }));
    assert_eq!(steps[1]["payload"], json!({}));
    let latest = own
        .get(&format!("{path}/latest?workflow_id=deploy"))
        .await
        .expect(200);
    assert_eq!(latest["step_name"], "build");

    own.post(
        &path,
        json!({ "workflow_id": "report", "step_name": "draft", "step_index": 5, "payload": [1] }),
    )
    .await
    .expect(200);
    let latest = own.get(&format!("{path}/latest")).await.expect(200);
    assert_eq!(latest["workflow_id"], "report");
    assert_eq!(
        own.get(&format!("{path}/latest?workflow_id=deploy"))
            .await
            .expect(200)["step_name"],
        "build"
    );
    own.get(&format!("{path}/latest?workflow_id=none"))
        .await
        .expect(404);

    for (body, field) in [
        (json!({ "step_name": "s", "step_index": 0 }), "workflow_id"),
        (
            json!({ "workflow_id": "", "step_name": "s", "step_index": 0 }),
            "workflow_id",
        ),
        (json!({ "workflow_id": "w", "step_index": 0 }), "step_name"),
        (
            json!({ "workflow_id": "w", "step_name": "s\u{7}", "step_index": 0 }),
            "step_name",
        ),
        (
            json!({ "workflow_id": "w", "step_name": "s" }),
            "step_index",
        ),
        (
            json!({ "workflow_id": "w", "step_name": "s", "step_index": "one" }),
            "step_index",
        ),
        (
            json!({ "workflow_id": "w", "step_name": "s", "step_index": -1 }),
            "step_index",
        ),
    ] {
        let reply = own.post(&path, body.clone()).await.expect(400);
        assert_eq!(reply["field"], field, "{body}: {reply}");
    }
    let big = json!({ "workflow_id": "w", "step_name": "s", "step_index": 0, "payload": "x".repeat(256 * 1024) });
    assert_eq!(own.post(&path, big).await.expect(413)["field"], "payload");

    for api in [&app.anonymous(), &app.with_token("junk"), &stranger] {
        let replies = [
            api.post(
                &path,
                json!({ "workflow_id": "w", "step_name": "s", "step_index": 0 }),
            )
            .await,
            api.get(&format!("{path}/latest")).await,
            api.get(&format!("{path}/deploy")).await,
            api.delete(&format!("{path}/deploy")).await,
        ];
        for reply in replies {
            assert!(
                [401, 403].contains(&reply.status.as_u16()),
                "{}",
                reply.text
            );
        }
    }

    let deleted = app.delete(&format!("{path}/deploy")).await.expect(200);
    assert_eq!(deleted["deleted"], 2);
    app.delete(&format!("{path}/deploy")).await.expect(404);
    assert_eq!(
        app.get(&format!("{path}/deploy")).await.expect(200),
        json!([])
    );
    assert_eq!(
        app.get(&format!("{path}/latest")).await.expect(200)["workflow_id"],
        "report"
    );
}
