//! Approvals: requested by an agent (over HTTP or MCP) or the operator, listed per workspace and
//! across the host, decided once by the operator only (concurrent deciders: one wins), the agent
//! told by `system:approvals`; a removed workspace's requests leave the pending list and a purge
//! takes them away. `send_message_to_user` reaches the canvas as `AGENT_MESSAGE`.

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, TestApp, eventually, on_both_backends, process_runtime};
use serde_json::{Value, json};

on_both_backends!(
    approvals_are_requested_listed_and_decided_once_by_the_operator,
    of_concurrent_decisions_exactly_one_wins,
    a_removed_workspaces_approvals_leave_the_pending_list_and_a_purge_deletes_them,
    the_agent_requests_approval_over_mcp_and_is_told_the_decision,
    the_agent_sends_a_message_to_its_user_over_mcp,
);

const SETTLED: Duration = Duration::from_secs(120);

fn approvals(id: &str) -> String {
    format!("/workspaces/{id}/approvals")
}

fn decide_path(id: &str, approval: &str) -> String {
    format!("/workspaces/{id}/approvals/{approval}/decide")
}

async fn refused(api: &Api, path: &str, body: Value, field: &str) {
    let reply = api.post(path, body.clone()).await.expect(400);
    assert_eq!(reply["field"], field, "{body}: {reply}");
    assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
}

/// Approval `id` as `GET /approvals/pending` lists it (it must be there).
async fn pending_row(app: &TestApp, id: &str) -> Value {
    let pending = app.get("/approvals/pending").await.expect(200);
    pending
        .as_array()
        .expect("a list")
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("approval {id} is pending: {pending}"))
}

async fn pending_ids(app: &TestApp) -> Vec<String> {
    let pending = app.get("/approvals/pending").await.expect(200);
    pending
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| a["id"].as_str().expect("an id").to_owned())
        .collect()
}

async fn approvals_are_requested_listed_and_decided_once_by_the_operator(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("deployer", None).await;
    let other = app.create_workspace("bystander", None).await;
    let agent = app.with_token(&app.agent_token(&id).await);
    let path = approvals(&id);

    refused(&agent, &path, json!({ "reason": "why" }), "action").await;
    refused(&agent, &path, json!({ "action": "  " }), "action").await;
    refused(&agent, &path, json!({ "action": 5 }), "action").await;
    refused(
        &agent,
        &path,
        json!({ "action": "x".repeat(201) }),
        "action",
    )
    .await;
    refused(
        &agent,
        &path,
        json!({ "action": "a", "reason": [] }),
        "reason",
    )
    .await;
    refused(
        &agent,
        &path,
        json!({ "action": "a", "task_id": 7 }),
        "task_id",
    )
    .await;
    refused(
        &agent,
        &path,
        json!({ "action": "a", "context": { "blob": "x".repeat(17 * 1024) } }),
        "context",
    )
    .await;
    let reply = agent.get(&format!("{path}?status=maybe")).await.expect(400);
    assert_eq!(reply["field"], "status", "{reply}");

    // The agent asks with its own token; the canvas hears of it with what its banner shows.
    let mut events = app.events().await;
    let created = agent
        .post(
            &path,
            json!({
                "action": "deploy to production",
                "reason": "the release is tagged",
                "context": { "version": "1.2.3", "services": ["api", "web"] },
                "task_id": "task-42",
            }),
        )
        .await
        .expect(201);
    assert_eq!(created["status"], "pending", "{created}");
    let approval = created["id"].as_str().expect("an id").to_owned();
    let seen = events.until("APPROVAL_REQUESTED").await;
    let (_, frame) = seen.last().expect("the event");
    assert_eq!(frame["workspace_id"], id.as_str());
    let payload = &frame["payload"];
    assert_eq!(payload["approval_id"], approval.as_str(), "{frame}");
    assert_eq!(payload["workspace_name"], "deployer");
    assert_eq!(payload["action"], "deploy to production");
    assert_eq!(payload["reason"], "the release is tagged");
    assert_eq!(payload["context"]["version"], "1.2.3");
    assert_eq!(payload["task_id"], "task-42");

    // The operator may ask for a workspace too.
    let by_operator = app
        .post(
            &path,
            json!({ "action": "rotate the key", "reason": "scheduled" }),
        )
        .await
        .expect(201);
    let second = by_operator["id"].as_str().unwrap().to_owned();

    let listed = agent
        .get(&format!("{path}?status=pending"))
        .await
        .expect(200);
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let first = listed
        .iter()
        .find(|a| a["id"] == approval.as_str())
        .unwrap();
    assert_eq!(first["requested_by"], "agent");
    assert_eq!(first["context"]["services"][1], "web");
    let mine = listed.iter().find(|a| a["id"] == second.as_str()).unwrap();
    assert_eq!(mine["requested_by"], "operator");

    // Across the host, with the workspace's name; another workspace's token reads nothing here.
    let row = pending_row(&app, &approval).await;
    assert_eq!(row["workspace_name"], "deployer");
    assert_eq!(row["workspace_id"], id.as_str());
    let stranger = app.with_token(&app.agent_token(&other).await);
    assert!(matches!(
        stranger.get(&path).await.status.as_u16(),
        401 | 403
    ));

    // Who may decide: only the operator. A workspace cannot approve its own request.
    let decide = decide_path(&id, &approval);
    let body = json!({ "decision": "approved", "note": "go ahead" });
    assert_eq!(
        app.anonymous().post(&decide, body.clone()).await.status,
        401
    );
    assert_eq!(
        app.with_token("not-a-token")
            .post(&decide, body.clone())
            .await
            .status,
        401
    );
    let own = agent.post(&decide, body.clone()).await.expect(403);
    assert!(own["error"].as_str().unwrap().contains("operator"), "{own}");
    assert!(matches!(
        agent.get("/approvals/pending").await.status.as_u16(),
        401 | 403
    ));
    assert_eq!(app.anonymous().get("/approvals/pending").await.status, 401);
    assert!(matches!(
        stranger.post(&decide, body.clone()).await.status.as_u16(),
        401 | 403
    ));
    refused(&app, &decide, json!({ "decision": "maybe" }), "decision").await;
    refused(&app, &decide, json!({}), "decision").await;
    refused(
        &app,
        &decide,
        json!({ "decision": "denied", "note": 3 }),
        "note",
    )
    .await;
    app.post(
        &decide_path(&id, &uuid::Uuid::new_v4().to_string()),
        body.clone(),
    )
    .await
    .expect(404);
    app.post(&decide_path(&other, &approval), body.clone())
        .await
        .expect(404);
    assert!(
        pending_ids(&app).await.contains(&approval),
        "refusals decide nothing"
    );

    let decided = app.post(&decide, body.clone()).await.expect(200);
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["note"], "go ahead");
    assert_eq!(decided["decided_by"], "operator");
    assert!(decided["decided_at"].is_string());
    let seen = events.until("APPROVAL_DECIDED").await;
    let (_, frame) = seen.last().unwrap();
    assert_eq!(frame["payload"]["approval_id"], approval.as_str());
    assert_eq!(frame["payload"]["decision"], "approved");
    assert_eq!(frame["payload"]["note"], "go ahead");

    // Once: a second decision, either way, is a 409 naming the one that stands.
    let again = app
        .post(&decide, json!({ "decision": "denied" }))
        .await
        .expect(409);
    assert_eq!(again["status"], "approved", "{again}");
    let pending = pending_ids(&app).await;
    assert!(
        !pending.contains(&approval) && pending.contains(&second),
        "{pending:?}"
    );

    let denied = app
        .post(&decide_path(&id, &second), json!({ "decision": "denied" }))
        .await
        .expect(200);
    assert_eq!(denied["status"], "denied");
    assert!(denied["note"].is_null());
    let approved = agent
        .get(&format!("{path}?status=approved"))
        .await
        .expect(200);
    assert_eq!(approved.as_array().unwrap().len(), 1);
    assert_eq!(approved[0]["id"], approval.as_str());
    let all = agent.get(&path).await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let logged = app.activity(&id, "?type=approval_decision").await;
    assert_eq!(logged.len(), 2, "{logged:?}");
}

async fn of_concurrent_decisions_exactly_one_wins(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("racer", None).await;
    let created = app
        .post(
            &approvals(&id),
            json!({ "action": "drop the table", "reason": "cleanup" }),
        )
        .await
        .expect(201);
    let decide = decide_path(&id, created["id"].as_str().unwrap());

    let calls = (0..8).map(|i| {
        let decision = if i % 2 == 0 { "approved" } else { "denied" };
        app.post(
            &decide,
            json!({ "decision": decision, "note": format!("decider {i}") }),
        )
    });
    let replies = futures::future::join_all(calls).await;
    let winners: Vec<&Value> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| &r.body)
        .collect();
    let losers: Vec<&Value> = replies
        .iter()
        .filter(|r| r.status == 409)
        .map(|r| &r.body)
        .collect();
    assert_eq!(winners.len(), 1, "{replies:?}");
    assert_eq!(losers.len(), 7, "{replies:?}");
    let stood = &winners[0]["status"];
    assert!(losers.iter().all(|l| &l["status"] == stood), "{losers:?}");
    let stored = app.get(&approvals(&id)).await.expect(200);
    assert_eq!(&stored[0]["status"], stood);
    assert_eq!(stored[0]["note"], winners[0]["note"]);
}

async fn a_removed_workspaces_approvals_leave_the_pending_list_and_a_purge_deletes_them(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let gone = app.create_workspace("gone", None).await;
    let purged = app.create_workspace("purged", None).await;
    let staying = app.create_workspace("staying", None).await;
    let mut ids = Vec::new();
    for ws in [&gone, &purged, &staying] {
        let created = app
            .post(
                &approvals(ws),
                json!({ "action": "act", "reason": "because" }),
            )
            .await
            .expect(201);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(pending_ids(&app).await.len(), 3);

    app.delete(&format!("/workspaces/{gone}")).await.expect(200);
    app.delete(&format!("/workspaces/{purged}?purge=true"))
        .await
        .expect(200);

    assert_eq!(pending_ids(&app).await, vec![ids[2].clone()]);
    // Deciding for a removed workspace finds nothing to decide.
    app.post(
        &decide_path(&gone, &ids[0]),
        json!({ "decision": "approved" }),
    )
    .await
    .expect(404);
    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    let get = |ws: &str, id: &str| {
        let (ws, id) = (ws.parse().unwrap(), id.parse().unwrap());
        molecule_host::store::approvals::get(&db, ws, id)
    };
    let kept = get(&gone, &ids[0])
        .await
        .unwrap()
        .expect("a removed workspace's row stays");
    assert_eq!(kept.status, "pending");
    assert!(
        get(&purged, &ids[1]).await.unwrap().is_none(),
        "a purge deletes the rows"
    );
    db.close().await;
}

/// Sends the agent of `id` one text message as the canvas does and answers its reply's text (or
/// its JSON-RPC error's message, for a tool that failed).
async fn say(app: &TestApp, id: &str, text: &str) -> String {
    let reply = app
        .post(
            &format!("/workspaces/{id}/a2a"),
            json!({ "params": { "message": { "content": text } } }),
        )
        .await
        .body;
    reply["result"]["parts"][0]["text"]
        .as_str()
        .or_else(|| reply["error"]["message"].as_str())
        .unwrap_or_else(|| panic!("a text answer: {reply}"))
        .to_owned()
}

async fn the_agent_requests_approval_over_mcp_and_is_told_the_decision(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, process_runtime).await;
    let id = app.create_workspace("careful", None).await;
    app.wait_settled(&id, SETTLED).await;

    let answer = say(
        &app,
        &id,
        r#"tool request_approval {"action":"delete the backups","reason":"disk full","context":{"gb":40},"task_id":"t-1"}"#,
    )
    .await;
    let result = answer
        .strip_prefix("tool request_approval: ")
        .unwrap_or_else(|| panic!("the tool's answer: {answer}"));
    let result: Value = serde_json::from_str(result).expect("the tool answers JSON");
    assert_eq!(result["status"], "pending", "{result}");
    let approval = result["approval_id"].as_str().unwrap().to_owned();
    let row = pending_row(&app, &approval).await;
    assert_eq!(row["requested_by"], "agent");
    assert_eq!(row["action"], "delete the backups");
    assert_eq!(row["context"]["gb"], 40);
    assert_eq!(row["task_id"], "t-1");

    // A missing field is the tool's error, named, and nothing is recorded.
    let refused = say(&app, &id, r#"tool request_approval {"reason":"no action"}"#).await;
    assert!(refused.contains("action is required"), "{refused}");

    app.post(
        &decide_path(&id, &approval),
        json!({ "decision": "denied", "note": "keep them" }),
    )
    .await
    .expect(200);

    // The agent is told by the host, through the send path that records what the agent got.
    let told = eventually(Duration::from_secs(60), || async {
        app.activity(&id, "?type=a2a_receive")
            .await
            .into_iter()
            .find(|row| {
                row["request_body"]["params"]["message"]["metadata"]["source"] == "system:approvals"
            })
    })
    .await;
    let message = &told["request_body"]["params"]["message"];
    let text = message["parts"][0]["text"].as_str().unwrap();
    assert!(text.contains(&approval), "{text}");
    assert!(text.contains("delete the backups"), "{text}");
    assert!(text.contains("denied"), "{text}");
    assert!(text.contains("keep them"), "{text}");
    assert_eq!(message["metadata"]["decision"], "denied");
    assert_eq!(told["status"], "ok", "{told}");
    // The echo brain answered it, so the agent read it.
    let answer = told["response_body"].to_string();
    assert!(answer.contains(&approval), "{answer}");
    assert_eq!(
        app.get(&approvals(&id))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn the_agent_sends_a_message_to_its_user_over_mcp(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, process_runtime).await;
    let id = app.create_workspace("chatty", None).await;
    app.wait_settled(&id, SETTLED).await;
    let mut events = app.events().await;

    let answer = say(
        &app,
        &id,
        r#"tool send_message_to_user {"message":"the build is green"}"#,
    )
    .await;
    assert_eq!(answer, "tool send_message_to_user: sent");
    let seen = events.until("AGENT_MESSAGE").await;
    let (_, frame) = seen.last().unwrap();
    assert_eq!(frame["workspace_id"], id.as_str());
    assert_eq!(frame["payload"]["message"], "the build is green");
    assert_eq!(frame["payload"]["workspace_id"], id.as_str());
    let notes: Vec<Value> = app
        .activity(&id, "?type=a2a_receive")
        .await
        .into_iter()
        .filter(|row| row["method"] == "notify")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["response_body"]["result"], "the build is green");

    // Bounded and never blank: refused by the tool, nothing shown.
    let long = format!(
        r#"tool send_message_to_user {{"message":"{}"}}"#,
        "x".repeat(32_001)
    );
    let refused = say(&app, &id, &long).await;
    assert!(refused.contains("longer than 32000"), "{refused}");
    let blank = say(&app, &id, r#"tool send_message_to_user {"message":"  "}"#).await;
    assert!(blank.contains("message is required"), "{blank}");
    let notes = app.activity(&id, "?type=a2a_receive").await;
    assert_eq!(
        notes.iter().filter(|row| row["method"] == "notify").count(),
        1
    );
}
