//! Delegation: the A2A proxy, the delegation lifecycle, the busy queue and the MCP tools, with
//! real agents (the reference agent on both runtimes) and with agents that fail on purpose.

use std::time::Duration;

use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{
    Api, DbBackend, Fault, FaultAgent, Runtime, TestApp, eventually, id12, kill_agent,
    on_both_backends, on_both_runtimes,
};
use molecule_host::Config;
use reqwest::Method;
use serde_json::{Value, json};

on_both_runtimes!(
    the_canvas_asks_the_root_which_delegates_to_its_child_through_mcp,
    a_dead_agent_is_marked_offline_and_restarted_through_the_policy,
);
on_both_backends!(
    hierarchy_rules_and_caller_identity_decide_who_may_call_whom,
    a_replayed_delegation_returns_the_first_and_a_failed_one_is_replaced,
    a_broken_off_2xx_answer_completes_the_delegation_without_a_retry,
    an_agent_error_with_a_body_fails_the_delegation_without_a_retry,
    an_empty_502_is_retried_once_then_fails,
    a_slow_agent_gets_its_messages_queued_and_drained_by_heartbeats,
    mcp_speaks_json_rpc_and_lists_the_tools,
    mcp_calls_are_limited_per_workspace,
    agents_record_their_own_delegations_and_report_how_they_ended,
    concurrent_requests_with_one_idempotency_key_start_one_delegation,
    a_message_that_expires_in_the_queue_fails_its_delegation,
    a_delegation_a_killed_host_was_carrying_fails_instead_of_hanging,
    a_busy_agent_that_heartbeats_is_waited_for_past_the_header_timeout,
);

const ONLINE: Duration = Duration::from_secs(120);

/// Fast retries and a short response-header timeout, so busy agents show up quickly.
fn quick(config: &mut Config) {
    config.a2a.delegation_retry_delay_ms = 100;
    config.a2a.response_header_timeout_secs = 1;
}

async fn wait_online(app: &TestApp, id: &str) {
    eventually(ONLINE, || async {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        (row["status"] == "online").then_some(())
    })
    .await;
}

fn message(text: &str) -> Value {
    json!({ "params": { "message": { "content": text } } })
}

/// The `delegate` row of a delegation as `GET /delegations` lists it.
async fn delegation(app: &Api, source: &str, id: &str) -> Value {
    let rows = app
        .get(&format!("/workspaces/{source}/delegations"))
        .await
        .expect(200);
    rows.as_array()
        .expect("a list")
        .iter()
        .find(|r| r["type"] == "delegate" && r["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_delegation(app: &Api, source: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let row = delegation(app, source, id).await;
        (row["status"] == status).then_some(row)
    })
    .await
}

async fn delegate(app: &Api, source: &str, target: &str, task: &str) -> String {
    let answer = app
        .post(
            &format!("/workspaces/{source}/delegate"),
            json!({ "target_id": target, "task": task }),
        )
        .await
        .expect(202);
    assert_eq!(answer["status"], "delegated");
    answer["delegation_id"].as_str().expect("an id").to_owned()
}

/// A root and a child whose agent is `agent`; returns (root, child, child's token).
async fn pair(app: &TestApp, agent: &FaultAgent) -> (String, String, String) {
    let (root, _) = app.workspace_at("root", None, &agent.url).await;
    let (child, token) = app.workspace_at("child", Some(&root), &agent.url).await;
    (root, child, token)
}

async fn the_canvas_asks_the_root_which_delegates_to_its_child_through_mcp(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, |c| runtime.configure(c)).await;
    let root = app.create_workspace("root", None).await;
    let child = app.create_workspace("child", Some(&root)).await;
    wait_online(&app, &root).await;
    wait_online(&app, &child).await;
    let mut events = app.events().await;

    let reply = app
        .post(
            &format!("/workspaces/{root}/a2a"),
            message(&format!("delegate {child}: hello child")),
        )
        .await
        .expect(200);

    assert_eq!(
        reply["result"]["parts"][0]["text"],
        format!("delegated to {child}: child: hello child"),
        "{reply}"
    );
    // Events in order, leaving out heartbeats and anything else unrelated.
    let seen = events.until("A2A_RESPONSE").await;
    let labels: Vec<String> = seen
        .iter()
        .filter_map(|(name, frame)| {
            let ws = frame["workspace_id"].as_str().unwrap_or_default();
            let who = if ws == root {
                "root"
            } else if ws == child {
                "child"
            } else {
                "?"
            };
            match name.as_str() {
                "ACTIVITY_LOGGED" => Some(format!(
                    "ACTIVITY_LOGGED {who} {}",
                    frame["payload"]["activity_type"]
                        .as_str()
                        .unwrap_or_default()
                )),
                "DELEGATION_STATUS" => Some(format!(
                    "DELEGATION_STATUS {who} {}",
                    frame["payload"]["status"].as_str().unwrap_or_default()
                )),
                n if n.starts_with("DELEGATION_") || n == "A2A_RESPONSE" => {
                    Some(format!("{n} {who}"))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        labels,
        [
            "ACTIVITY_LOGGED root delegation",
            "DELEGATION_SENT root",
            "DELEGATION_STATUS root dispatched",
            "ACTIVITY_LOGGED child a2a_receive",
            "ACTIVITY_LOGGED root delegation",
            "DELEGATION_COMPLETE root",
            "ACTIVITY_LOGGED root a2a_receive",
            "A2A_RESPONSE root",
        ],
        "{seen:?}"
    );
    // The child's record says the root called it; the root's, that the canvas did.
    let received = app.activity(&child, "?type=a2a_receive").await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["source_id"], root.as_str());
    assert_eq!(received[0]["status"], "ok");
    assert_eq!(
        received[0]["request_body"]["params"]["message"]["parts"][0]["text"],
        "hello child"
    );
    let asked = app.activity(&root, "?type=a2a_receive").await;
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["source_id"], Value::Null);
    assert!(asked[0]["duration_ms"].as_i64().is_some());
    // The delegation the root's MCP call started, recorded before the call went out.
    let rows = app
        .get(&format!("/workspaces/{root}/delegations"))
        .await
        .expect(200);
    let rows = rows.as_array().expect("a list");
    let delegate = rows
        .iter()
        .find(|r| r["type"] == "delegate")
        .expect("a delegate row");
    assert_eq!(delegate["status"], "completed");
    assert_eq!(delegate["target_id"], child.as_str());
    assert_eq!(delegate["task_preview"], "hello child");
    assert_eq!(delegate["response_preview"], "child: hello child");
    let result = rows
        .iter()
        .find(|r| r["type"] == "delegate_result")
        .expect("a result row");
    assert_eq!(result["status"], "completed");
    let root_row = app.get(&format!("/workspaces/{root}")).await.expect(200);
    assert!(root_row["last_outbound_at"].is_string(), "{root_row}");
    // Peers find each other where they run: inside the Docker network, by container name.
    let found = app
        .call(
            Method::GET,
            &format!("/registry/discover/{child}"),
            None,
            &[("X-Workspace-ID", &root)],
        )
        .await
        .expect(200);
    let url = found["url"].as_str().expect("a url");
    match runtime {
        Runtime::Docker => assert_eq!(url, format!("http://ws-{}:8000", id12(&child))),
        Runtime::Process => assert!(url.starts_with("http://127.0.0.1:"), "{url}"),
    }
}

async fn a_dead_agent_is_marked_offline_and_restarted_through_the_policy(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, |c| {
        runtime.configure(c);
        // The proxy, not the health sweep, must be the one to notice.
        c.runtime.health_sweep_secs = 3600;
    })
    .await;
    let id = app.create_workspace("solo", None).await;
    // Settled, not just online: a restart cycle still running would make the host leave the
    // dead agent to the cycle instead of reporting it.
    app.wait_settled(&id, ONLINE).await;
    kill_agent(&app, runtime, &id);

    let reply = app
        .post(&format!("/workspaces/{id}/a2a"), message("anyone?"))
        .await;

    assert_eq!(reply.status.as_u16(), 503, "{}", reply.text);
    assert_eq!(reply.body["restarting"], true);
    let decisions = app.activity(&id, "?type=restart_decision").await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(
        decisions[0]["request_body"]["trigger"]["kind"], "agent_exited",
        "{decisions:?}"
    );
    app.wait_settled(&id, ONLINE).await;
    let again = app
        .post(&format!("/workspaces/{id}/a2a"), message("back?"))
        .await
        .expect(200);
    assert_eq!(again["result"]["parts"][0]["text"], "solo: back?");
}

async fn hierarchy_rules_and_caller_identity_decide_who_may_call_whom(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (root, _) = app.workspace_at("root", None, &agent.url).await;
    let (a, _) = app.workspace_at("a", Some(&root), &agent.url).await;
    let (b, _) = app.workspace_at("b", Some(&root), &agent.url).await;
    let (a1, a1_token) = app.workspace_at("a1", Some(&a), &agent.url).await;
    let (b1, b1_token) = app.workspace_at("b1", Some(&b), &agent.url).await;
    let as_a1 = app.with_token(&a1_token);
    let call = |api: &molecule_e2e::Api, target: &str, caller: Option<&str>| {
        let (api, path) = (api.clone(), format!("/workspaces/{target}/a2a"));
        let caller = caller.map(str::to_owned);
        async move {
            let headers: Vec<(&str, &str)> = caller
                .iter()
                .map(|c| ("X-Workspace-ID", c.as_str()))
                .collect();
            api.call(Method::POST, &path, Some(message("hi")), &headers)
                .await
        }
    };

    // Cousins may not talk; a parent may.
    let cousin = call(&as_a1, &b1, Some(&a1)).await;
    assert_eq!(cousin.status.as_u16(), 403, "{}", cousin.text);
    assert_eq!(
        cousin.body["error"],
        "access denied: workspaces cannot communicate per hierarchy rules"
    );
    call(&as_a1, &a, Some(&a1)).await.expect(200);
    // The bearer alone names the caller when no X-Workspace-ID is sent.
    assert_eq!(call(&as_a1, &b1, None).await.status.as_u16(), 403);
    call(&as_a1, &a, None).await.expect(200);
    // A caller must bring its own token, and internal caller ids are not for outsiders.
    assert_eq!(
        call(&app.anonymous(), &a, Some(&a1)).await.status.as_u16(),
        401
    );
    assert_eq!(
        call(&app.with_token(&b1_token), &a, Some(&a1))
            .await
            .status
            .as_u16(),
        401
    );
    assert_eq!(
        call(&app, &a, Some("system:restart-context"))
            .await
            .status
            .as_u16(),
        403
    );
    assert_eq!(
        agent.requests().len(),
        2,
        "refused calls never reach the agent"
    );
    // The canvas may call anyone.
    let canvas = app
        .post(&format!("/workspaces/{b1}/a2a"), message("from the canvas"))
        .await
        .expect(200);
    assert_eq!(
        canvas["result"]["parts"][0]["text"],
        "echo: from the canvas"
    );

    // A delegation to a cousin is accepted, then refused by the proxy.
    let id = delegate(&app, &a1, &b1, "cross the tree").await;
    let failed = wait_delegation(&app, &a1, &id, "failed").await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("access denied"),
        "{failed}"
    );
    // Bad requests.
    let delegate_path = format!("/workspaces/{a1}/delegate");
    let bad = |body: Value| app.post(&delegate_path, body);
    assert_eq!(
        bad(json!({ "target_id": a1, "task": "me" })).await.body["error"],
        "self-delegation not permitted"
    );
    assert_eq!(
        bad(json!({ "target_id": "nope", "task": "x" })).await.body["error"],
        "target_id must be a valid UUID"
    );
    assert_eq!(
        bad(json!({ "target_id": a, "task": " " }))
            .await
            .status
            .as_u16(),
        400
    );
    assert_eq!(
        bad(json!({ "target_id": uuid::Uuid::new_v4(), "task": "x" }))
            .await
            .status
            .as_u16(),
        404
    );
    let no_parts = app
        .post(
            &format!("/workspaces/{a}/a2a"),
            json!({ "params": { "message": {} } }),
        )
        .await;
    assert_eq!(no_parts.status.as_u16(), 400, "{}", no_parts.text);
    let unknown = app
        .post(
            &format!("/workspaces/{}/a2a", uuid::Uuid::new_v4()),
            message("x"),
        )
        .await;
    assert_eq!(unknown.status.as_u16(), 404);
}

async fn a_replayed_delegation_returns_the_first_and_a_failed_one_is_replaced(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (root, child, _) = pair(&app, &agent).await;
    let body = json!({ "target_id": child, "task": "once", "idempotency_key": "k1" });
    let path = format!("/workspaces/{root}/delegate");

    let first = app.post(&path, body.clone()).await.expect(202);
    let id = first["delegation_id"].as_str().expect("an id");
    wait_delegation(&app, &root, id, "completed").await;
    let replay = app.post(&path, body).await.expect(200);

    assert_eq!(replay["idempotent_hit"], true);
    assert_eq!(replay["delegation_id"], id);
    assert_eq!(replay["status"], "completed");
    assert_eq!(agent.requests().len(), 1, "the replay sent nothing");
    assert_eq!(
        agent.requests()[0]["params"]["message"]["messageId"],
        id,
        "the delegation id is the message id"
    );

    // A delegation that failed is replaced by the next request with its key.
    let (gone, _) = app
        .workspace_at("gone", Some(&root), "http://127.0.0.1:9")
        .await;
    let failing = json!({ "target_id": gone, "task": "lost", "idempotency_key": "k2" });
    let failed = app.post(&path, failing.clone()).await.expect(202);
    let failed_id = failed["delegation_id"].as_str().expect("an id").to_owned();
    let row = wait_delegation(&app, &root, &failed_id, "failed").await;
    assert!(
        row["error"]
            .as_str()
            .unwrap_or_default()
            .contains("failed to reach"),
        "{row}"
    );
    let again = app.post(&path, failing).await.expect(202);
    assert_ne!(again["delegation_id"], failed_id.as_str());
    assert_eq!(
        delegation(&app, &root, &failed_id).await,
        Value::Null,
        "the failed row was replaced"
    );
}

async fn a_broken_off_2xx_answer_completes_the_delegation_without_a_retry(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::PartialThenReset).await;
    let (root, child, _) = pair(&app, &agent).await;

    let id = delegate(&app, &root, &child, "start talking").await;

    let row = wait_delegation(&app, &root, &id, "completed").await;
    assert!(
        row["response_preview"]
            .as_str()
            .is_some_and(|text| text.starts_with('{') && text.contains("\"jsonrpc\":\"2.0\"")),
        "{row}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.requests().len(),
        1,
        "a delivered message is not sent again"
    );
    // Through the proxy directly, the caller learns that the agent did receive it.
    let direct = app
        .post(&format!("/workspaces/{child}/a2a"), message("again"))
        .await;
    assert_eq!(direct.status.as_u16(), 502);
    assert_eq!(direct.body["delivery_confirmed"], true, "{}", direct.text);
    let rows = app.activity(&child, "?type=a2a_receive").await;
    assert!(
        rows.iter().all(|r| r["status"] == "ok"),
        "a delivered answer counts as ok: {rows:?}"
    );
}

async fn an_agent_error_with_a_body_fails_the_delegation_without_a_retry(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent =
        FaultAgent::start(|_| Fault::Status(500, r#"{"error":"out of ideas"}"#.into())).await;
    let (root, child, _) = pair(&app, &agent).await;

    let id = delegate(&app, &root, &child, "think").await;

    let row = wait_delegation(&app, &root, &id, "failed").await;
    assert_eq!(row["error"], "agent answered 500: out of ideas");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(agent.requests().len(), 1);
    let direct = app
        .post(&format!("/workspaces/{child}/a2a"), message("x"))
        .await;
    assert_eq!(direct.status.as_u16(), 500);
    assert_eq!(direct.body["error"], "agent answered 500: out of ideas");
}

async fn an_empty_502_is_retried_once_then_fails(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Status(502, String::new())).await;
    let (root, child, _) = pair(&app, &agent).await;
    let mut events = app.events().await;

    let id = delegate(&app, &root, &child, "anyone there").await;

    let row = wait_delegation(&app, &root, &id, "failed").await;
    assert_eq!(row["error"], "agent answered 502");
    assert_eq!(agent.requests().len(), 2, "one retry, no more");
    let seen = events.until("DELEGATION_FAILED").await;
    let (_, failed) = seen.last().expect("the event");
    assert_eq!(failed["payload"]["delegation_id"], id.as_str());
    assert_eq!(failed["payload"]["error"], "agent answered 502");
}

async fn a_slow_agent_gets_its_messages_queued_and_drained_by_heartbeats(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    // The first three requests outlast the 1 s response-header timeout.
    let agent = FaultAgent::start(|n| {
        if n < 3 {
            Fault::Slow(Duration::from_secs(3))
        } else {
            Fault::Answer
        }
    })
    .await;
    let (root, child, child_token) = pair(&app, &agent).await;
    let mut events = app.events().await;
    let send =
        json!({ "params": { "message": { "messageId": "m-1", "content": "when you can" } } });
    let path = format!("/workspaces/{child}/a2a");

    let queued = app.post(&path, send.clone()).await.expect(202);
    let again = app.post(&path, send).await.expect(202);
    let id = delegate(&app, &root, &child, "later is fine").await;
    wait_delegation(&app, &root, &id, "queued").await;

    assert_eq!(queued["queued"], true);
    assert_eq!(queued["queue_depth"], 1);
    assert_eq!(
        again["queue_id"], queued["queue_id"],
        "the same message is queued once"
    );
    assert_eq!(again["queue_depth"], 1);
    let queue_path = format!(
        "/workspaces/{child}/a2a/queue/{}",
        queued["queue_id"].as_str().unwrap()
    );
    assert_eq!(app.get(&queue_path).await.expect(200)["status"], "queued");
    // A heartbeat with spare capacity delivers one message; the next one the other.
    let beat = json!({ "workspace_id": child, "active_tasks": 0 });
    let as_child = app.with_token(&child_token);
    as_child
        .post("/registry/heartbeat", beat.clone())
        .await
        .expect(200);
    eventually(Duration::from_secs(15), || async {
        (app.get(&queue_path).await.body["status"] == "completed").then_some(())
    })
    .await;
    as_child.post("/registry/heartbeat", beat).await.expect(200);
    let row = wait_delegation(&app, &root, &id, "completed").await;
    assert_eq!(row["response_preview"], "echo: later is fine");
    let seen = events.until("DELEGATION_COMPLETE").await;
    let (_, complete) = seen.last().expect("the event");
    assert_eq!(complete["payload"]["via"], "queue_drain");
    assert_eq!(agent.requests().len(), 5);
    // A heartbeat that reports no spare capacity drains nothing.
    let full = json!({ "workspace_id": child, "active_tasks": 1 });
    app.post(&path, message("busy again")).await;
    as_child.post("/registry/heartbeat", full).await.expect(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.requests().len(),
        6,
        "only the direct call reached the agent"
    );
}

async fn mcp_speaks_json_rpc_and_lists_the_tools(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (root, child, child_token) = pair(&app, &agent).await;
    let (other, _) = app.workspace_at("other", None, &agent.url).await;
    let (stranger, _) = app.workspace_at("stranger", Some(&other), &agent.url).await;
    let mcp = app.with_token(&child_token);
    let path = format!("/workspaces/{child}/mcp");
    let rpc = |method: &str, params: Value| json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let tool = |name: &str, arguments: Value| {
        rpc(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
    };
    let text = |answer: &Value| -> Value {
        serde_json::from_str(
            answer["result"]["content"][0]["text"]
                .as_str()
                .expect("text"),
        )
        .unwrap_or(Value::Null)
    };

    let init = mcp
        .post(&path, rpc("initialize", json!({})))
        .await
        .expect(200);
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(init["result"]["serverInfo"]["name"], "molecule-a2a");
    let tools = mcp
        .post(&path, rpc("tools/list", json!({})))
        .await
        .expect(200);
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "delegate_task",
            "delegate_task_async",
            "check_task_status",
            "list_peers",
            "get_workspace_info",
            "request_approval",
            "send_message_to_user",
            "get_instructions",
            "commit_memory",
            "recall_memory",
        ]
    );
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(mcp.post(&path, notification).await.status.as_u16(), 202);
    let garbage = mcp.call(Method::POST, &path, None, &[]).await;
    assert_eq!(garbage.status.as_u16(), 400);
    assert_eq!(garbage.body["error"]["code"], -32700);
    // Another workspace's token does not open this endpoint.
    let (_, other_token) = app.workspace_at("third", None, &agent.url).await;
    assert_eq!(
        app.with_token(&other_token)
            .post(&path, rpc("tools/list", json!({})))
            .await
            .status
            .as_u16(),
        401
    );

    let sync = mcp
        .post(
            &path,
            tool(
                "delegate_task",
                json!({ "workspace_id": root, "task": "up the tree" }),
            ),
        )
        .await
        .expect(200);
    assert_eq!(sync["result"]["content"][0]["text"], "echo: up the tree");
    let started = mcp
        .post(
            &path,
            tool(
                "delegate_task_async",
                json!({ "workspace_id": root, "task": "later" }),
            ),
        )
        .await
        .expect(200);
    let started = text(&started);
    assert_eq!(started["status"], "dispatched");
    let task_id = started["task_id"].as_str().expect("a task id").to_owned();
    let done = eventually(Duration::from_secs(15), || async {
        let answer = mcp
            .post(
                &path,
                tool("check_task_status", json!({ "task_id": task_id })),
            )
            .await
            .body;
        let status = text(&answer);
        (status["status"] == "completed").then_some(status)
    })
    .await;
    assert_eq!(done["result"], "echo: later");
    let peers = text(
        &mcp.post(&path, tool("list_peers", json!({})))
            .await
            .expect(200),
    );
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(peers[0]["id"], root.as_str());
    let info = text(
        &mcp.post(&path, tool("get_workspace_info", json!({})))
            .await
            .expect(200),
    );
    assert_eq!(
        (info["name"].as_str(), info["parent_id"].as_str()),
        (Some("child"), Some(root.as_str()))
    );
    let denied = mcp
        .post(
            &path,
            tool(
                "delegate_task",
                json!({ "workspace_id": stranger, "task": "x" }),
            ),
        )
        .await
        .expect(200);
    assert_eq!(denied["error"]["code"], -32000);
    let rows = app
        .get(&format!("/workspaces/{child}/delegations"))
        .await
        .expect(200);
    assert_eq!(
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["type"] == "delegate")
            .count(),
        2,
        "the refused one was never recorded"
    );
    // Every MCP delegation went through the proxy: the root's agent saw both.
    assert_eq!(app.activity(&root, "?type=a2a_receive").await.len(), 2);
    let stream = reqwest::Client::new()
        .get(app.url(&format!("/workspaces/{child}/mcp/stream")))
        .bearer_auth(&child_token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status().as_u16(), 200);
    let mut body = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut body))
        .await
        .expect("the endpoint event")
        .expect("a chunk")
        .expect("bytes");
    let first = String::from_utf8_lossy(&first);
    assert!(
        first.contains("event: endpoint")
            && first.contains(&format!("data: /workspaces/{child}/mcp")),
        "{first}"
    );
}

async fn mcp_calls_are_limited_per_workspace(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| c.a2a.mcp_per_minute = 2).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (_, child, child_token) = pair(&app, &agent).await;
    let (other, other_token) = app.workspace_at("other", None, &agent.url).await;
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });
    let as_child = app.with_token(&child_token);
    let path = format!("/workspaces/{child}/mcp");

    as_child.post(&path, list.clone()).await.expect(200);
    as_child.post(&path, list.clone()).await.expect(200);
    let limited = as_child.post(&path, list.clone()).await;

    assert_eq!(limited.status.as_u16(), 429, "{}", limited.text);
    assert!(limited.headers.contains_key("retry-after"));
    // The limit is per workspace: another one is not affected.
    let as_other = app.with_token(&other_token);
    as_other
        .post(&format!("/workspaces/{other}/mcp"), list)
        .await
        .expect(200);
}

async fn agents_record_their_own_delegations_and_report_how_they_ended(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (root, child, _) = pair(&app, &agent).await;
    let mut events = app.events().await;
    let id = uuid::Uuid::new_v4().to_string();
    let record = json!({ "target_id": child, "task": "done by me", "delegation_id": id });
    let record_path = format!("/workspaces/{root}/delegations/record");

    let recorded = app.post(&record_path, record.clone()).await.expect(202);
    let again = app.post(&record_path, record).await.expect(200);

    assert_eq!(
        recorded,
        json!({ "delegation_id": id, "status": "recorded" })
    );
    assert_eq!(again["idempotent_hit"], true);
    assert_eq!(delegation(&app, &root, &id).await["status"], "dispatched");
    let update_path = format!("/workspaces/{root}/delegations/{id}/update");
    let wrong = app.post(&update_path, json!({ "status": "running" })).await;
    assert_eq!(wrong.status.as_u16(), 400);
    let unknown = format!(
        "/workspaces/{root}/delegations/{}/update",
        uuid::Uuid::new_v4()
    );
    let missing = app.post(&unknown, json!({ "status": "completed" })).await;
    assert_eq!(missing.status.as_u16(), 404);
    let done = json!({ "status": "completed", "response_preview": "all good" });
    let updated = app.post(&update_path, done).await.expect(200);
    assert_eq!(
        updated,
        json!({ "status": "completed", "delegation_id": id })
    );
    let row = delegation(&app, &root, &id).await;
    assert_eq!(
        (row["status"].as_str(), row["response_preview"].as_str()),
        (Some("completed"), Some("all good"))
    );
    let seen = events.until("DELEGATION_COMPLETE").await;
    assert!(
        seen.iter()
            .any(|(name, f)| name == "DELEGATION_SENT"
                && f["payload"]["delegation_id"] == id.as_str())
    );
    let (_, complete) = seen.last().expect("the event");
    assert_eq!(complete["payload"]["via"], "agent");
    // A finished delegation stays as it ended.
    let late = app
        .post(&update_path, json!({ "status": "failed", "error": "late" }))
        .await;
    assert_eq!(late.status.as_u16(), 409);
    assert_eq!(delegation(&app, &root, &id).await["status"], "completed");
    assert!(
        agent.requests().is_empty(),
        "the host sent nothing for a recorded delegation"
    );
}

async fn concurrent_requests_with_one_idempotency_key_start_one_delegation(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (root, child, _) = pair(&app, &agent).await;
    let path = format!("/workspaces/{root}/delegate");
    let body = json!({ "target_id": child, "task": "exactly once", "idempotency_key": "race" });

    let replies = futures::future::join_all((0..8).map(|_| app.post(&path, body.clone()))).await;

    let started: Vec<_> = replies
        .iter()
        .filter(|r| r.status.as_u16() == 202)
        .collect();
    assert_eq!(started.len(), 1, "{replies:?}");
    let id = started[0].body["delegation_id"].clone();
    for reply in replies.iter().filter(|r| r.status.as_u16() != 202) {
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
        assert_eq!(reply.body["delegation_id"], id);
        assert_eq!(reply.body["idempotent_hit"], true);
    }
    wait_delegation(&app, &root, id.as_str().unwrap(), "completed").await;
    assert_eq!(agent.requests().len(), 1);
}

async fn a_message_that_expires_in_the_queue_fails_its_delegation(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        quick(c);
        c.a2a.queue_ttl_secs = 1;
        c.a2a.queue_expiry_sweep_secs = 1;
    })
    .await;
    let agent = FaultAgent::start(|_| Fault::Slow(Duration::from_secs(3))).await;
    let (root, child, _) = pair(&app, &agent).await;

    let id = delegate(&app, &root, &child, "whenever").await;
    wait_delegation(&app, &root, &id, "queued").await;

    // No heartbeat ever reports capacity: the message expires and the delegation fails.
    let row = wait_delegation(&app, &root, &id, "failed").await;
    assert_eq!(
        row["error"],
        "the target agent stayed busy until the queued message expired"
    );
    assert_eq!(agent.requests().len(), 1);
}

/// A host SIGKILLed while carrying out a delegation cannot record how it ended. On SQLite the
/// next run fails it at start; on PostgreSQL another replica's sweep fails it once no host can
/// still be running it. Either way nothing is sent twice and the delegation does not hang.
async fn a_delegation_a_killed_host_was_carrying_fails_instead_of_hanging(backend: DbBackend) {
    let agent = FaultAgent::start(|_| Fault::Slow(Duration::from_secs(600))).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::None, templates.path()).await;
    // A delivery lasts at most 1 + 10 s, so another replica may fail the delegation
    // 2 × 11 s + the retry pause + a 2 s margin after it began.
    hosts.a2a_settings = "connect_timeout_secs = 1\nmax_timeout_secs = 10\n\
        delegation_retry_delay_ms = 100\nstranded_margin_secs = 2"
        .into();
    let first = hosts.spawn().await;
    // PostgreSQL: a second replica is up before the delegation starts, so the kill falls well
    // within the delivery (which would otherwise time out and fail on its own).
    let standby = match backend {
        DbBackend::Postgres => Some(hosts.spawn().await),
        DbBackend::Sqlite => None,
    };
    let carrier = hosts[first].api.clone();
    let (root, _) = carrier.workspace_at("root", None, &agent.url).await;
    let (child, _) = carrier.workspace_at("child", Some(&root), &agent.url).await;
    let id = delegate(&carrier, &root, &child, "never answered").await;
    wait_delegation(&carrier, &root, &id, "dispatched").await;
    eventually(Duration::from_secs(5), || async {
        (!agent.requests().is_empty()).then_some(())
    })
    .await;

    hosts[first].kill();
    // SQLite: the next run on the file.
    let survivor = match standby {
        Some(standby) => standby,
        None => hosts.spawn().await,
    };

    let api = hosts[survivor].api.clone();
    let row = eventually(Duration::from_secs(120), || async {
        let row = delegation(&api, &root, &id).await;
        (row["status"] == "failed").then_some(row)
    })
    .await;
    assert_eq!(
        row["error"],
        "the host carrying out the delegation stopped before it finished",
        "{}",
        hosts[survivor].log()
    );
    let rows = api
        .get(&format!("/workspaces/{root}/delegations"))
        .await
        .expect(200);
    let result = rows
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["type"] == "delegate_result" && r["delegation_id"] == id.as_str())
        .cloned()
        .expect("a delegate_result row");
    assert_eq!(result["status"], "failed");
    assert_eq!(agent.requests().len(), 1, "nothing is sent twice");
}

/// The header timeout (1 s here) is for an agent that has gone quiet: one still heartbeating
/// while it works (every 300 ms, for its 3 s task) is waited for, and its answer arrives.
async fn a_busy_agent_that_heartbeats_is_waited_for_past_the_header_timeout(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, quick).await;
    let agent = FaultAgent::start(|_| Fault::Slow(Duration::from_secs(3))).await;
    let (_, child, child_token) = pair(&app, &agent).await;
    let as_child = app.with_token(&child_token);
    let working = json!({ "workspace_id": child, "active_tasks": 1, "current_task": "thinking" });
    let beating = tokio::spawn(async move {
        loop {
            as_child
                .post("/registry/heartbeat", working.clone())
                .await
                .expect(200);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let started = std::time::Instant::now();
    let answer = app
        .post(
            &format!("/workspaces/{child}/a2a"),
            message("take your time"),
        )
        .await;
    beating.abort();

    let answer = answer.expect(200);
    assert_eq!(
        answer["result"]["parts"][0]["text"], "echo: take your time",
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(agent.requests().len(), 1, "answered once, not queued");
}
