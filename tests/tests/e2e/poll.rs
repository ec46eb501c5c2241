//! Poll-mode delivery: an external agent the host cannot reach registers with
//! `delivery_mode: poll` and no URL; A2A messages for it are stored (the caller is told so) and
//! the agent fetches and acknowledges them, an acknowledgement with a result finishing the
//! delegation the message carried. Chat attachments for an agent the host does not run wait in
//! the database until the agent downloads and acknowledges them, and the sweeper deletes them an
//! hour after the ack or a day after the upload. Only the agent's own token fetches or acks.

use std::time::Duration;

use molecule_e2e::{Api, DbBackend, TestApp, eventually, on_both_backends};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

on_both_backends!(
    a_poll_mode_agent_fetches_and_acknowledges_its_messages_and_finishes_a_delegation,
    attachments_wait_for_an_agent_the_host_does_not_run_until_it_downloads_and_acknowledges_them,
);

fn message(text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } },
    })
}

async fn fetch(agent: &Api, id: &str) -> Vec<Value> {
    let inbox = agent
        .get(&format!("/workspaces/{id}/inbox?limit=50"))
        .await
        .expect(200);
    assert_eq!(inbox["delivery_mode"], "poll", "{inbox}");
    inbox["messages"].as_array().unwrap().clone()
}

fn text_of(message: &Value) -> String {
    message["body"].to_string()
}

async fn a_poll_mode_agent_fetches_and_acknowledges_its_messages_and_finishes_a_delegation(
    backend: DbBackend,
) {
    let app = TestApp::spawn(backend).await;
    let (lead, lead_token) = app.create_external("Lead", None).await;
    let (id, token) = app.create_external("Behind NAT", Some(&lead)).await;
    let agent = app.with_token(&token);

    // A push-mode agent must say where it serves; a poll-mode one need not.
    agent
        .post("/registry/register", json!({ "id": id }))
        .await
        .expect(400);
    agent
        .post(
            "/registry/register",
            json!({ "id": id, "delivery_mode": "carrier-pigeon" }),
        )
        .await
        .expect(400);
    let registered = agent
        .post(
            "/registry/register",
            json!({ "id": id, "delivery_mode": "poll", "agent_card": { "name": "nat", "skills": [] } }),
        )
        .await
        .expect(200);
    assert_eq!(registered["status"], "registered");
    assert_eq!(registered["delivery_mode"], "poll");
    let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(row["delivery_mode"], "poll", "{row}");
    assert_eq!(row["status"], "online", "{row}");
    // A later registration that does not name a mode keeps it, still without a URL.
    agent
        .post("/registry/register", json!({ "id": id }))
        .await
        .expect(200);

    // The canvas's message is stored, and the caller told so (the original's shape).
    let queued = app
        .post(&format!("/workspaces/{id}/a2a"), message("first"))
        .await
        .expect(200);
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["delivery_mode"], "poll");
    assert_eq!(queued["method"], "message/send");
    let first = queued["queue_id"].as_str().unwrap().to_owned();
    // A heartbeat with room delivers nothing to a poll-mode agent: it fetches.
    agent
        .post(
            "/registry/heartbeat",
            json!({ "workspace_id": id, "active_tasks": 0 }),
        )
        .await
        .expect(200);
    let second = app
        .post(&format!("/workspaces/{id}/a2a"), message("second"))
        .await
        .expect(200)["queue_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nobody but the agent fetches: not the operator, not another workspace, not a stranger.
    let inbox = format!("/workspaces/{id}/inbox");
    app.get(&inbox).await.expect(403);
    app.with_token(&lead_token).get(&inbox).await.expect(401);
    app.anonymous().get(&inbox).await.expect(401);
    agent.get(&format!("{inbox}?limit=0")).await.expect(400);
    // A push-mode agent has no inbox to fetch.
    app.with_token(&lead_token)
        .get(&format!("/workspaces/{lead}/inbox"))
        .await
        .expect(409);

    let messages = fetch(&agent, &id).await;
    let ids: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "oldest first");
    assert!(text_of(&messages[0]).contains("first"), "{}", messages[0]);
    assert_eq!(messages[0]["method"], "message/send");
    assert_eq!(messages[0]["caller_id"], Value::Null, "from the canvas");
    assert_eq!(messages[0]["attempts"], 1);
    // Handed out once.
    assert!(fetch(&agent, &id).await.is_empty());
    let state = app
        .get(&format!("/workspaces/{id}/a2a/queue/{first}"))
        .await
        .expect(200);
    assert_eq!(state["status"], "dispatched", "{state}");

    // Acknowledged once; a retried ack changes nothing and says so.
    let ack = |queue_id: String, body: Value| {
        let agent = agent.clone();
        let path = format!("/workspaces/{id}/inbox/{queue_id}/ack");
        async move { agent.post(&path, body).await }
    };
    app.post(&format!("/workspaces/{id}/inbox/{first}/ack"), json!({}))
        .await
        .expect(403);
    let acked = ack(first.clone(), json!({})).await.expect(200);
    assert_eq!(acked, json!({ "acked": true, "status": "completed" }));
    let again = ack(first.clone(), json!({})).await.expect(200);
    assert_eq!(
        again,
        json!({ "acked": true, "raced": true, "status": "completed" })
    );
    let failed = ack(second.clone(), json!({ "error": "could not parse it" }))
        .await
        .expect(200);
    assert_eq!(failed["status"], "failed");
    let state = app
        .get(&format!("/workspaces/{id}/a2a/queue/{second}"))
        .await
        .expect(200);
    assert_eq!(state["status"], "failed");
    assert_eq!(state["last_error"], "could not parse it");
    ack(second.clone(), json!({ "result": "x", "error": "y" }))
        .await
        .expect(400);
    ack(uuid::Uuid::new_v4().to_string(), json!({}))
        .await
        .expect(404);
    ack("not-a-uuid".to_owned(), json!({})).await.expect(404);
    // The exchange is in the agent's activity feed, as queued.
    eventually(Duration::from_secs(10), || async {
        let rows = app
            .get(&format!("/workspaces/{id}/activity?type=a2a_receive"))
            .await
            .body;
        let queued = rows
            .as_array()
            .map(|rows| rows.iter().filter(|r| r["status"] == "queued").count())
            .unwrap_or(0);
        (queued == 2).then_some(())
    })
    .await;

    // A delegation to the agent waits in its inbox and completes with the result it acks.
    let delegated = app
        .post(
            &format!("/workspaces/{lead}/delegate"),
            json!({ "target_id": id, "task": "Summarise the report" }),
        )
        .await
        .expect(202);
    let delegation_id = delegated["delegation_id"].as_str().unwrap().to_owned();
    let task = eventually(Duration::from_secs(30), || async {
        fetch(&agent, &id).await.into_iter().next()
    })
    .await;
    assert!(text_of(&task).contains("Summarise the report"), "{task}");
    assert_eq!(task["caller_id"], lead.as_str());
    ack(
        task["id"].as_str().unwrap().to_owned(),
        json!({ "result": "The report, in one line." }),
    )
    .await
    .expect(200);
    let done = eventually(Duration::from_secs(30), || async {
        let rows = app
            .get(&format!("/workspaces/{lead}/delegations"))
            .await
            .body;
        rows.as_array()?
            .iter()
            .find(|r| r["type"] == "delegate" && r["id"] == delegation_id.as_str())
            .filter(|r| r["status"] == "completed")
            .cloned()
    })
    .await;
    assert!(
        done.to_string().contains("The report, in one line."),
        "{done}"
    );
}

fn file(name: &str, bytes: &[u8]) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")
        .unwrap()
}

async fn waiting(app: &TestApp, id: &str) -> Vec<Value> {
    app.get(&format!("/workspaces/{id}/pending-uploads"))
        .await
        .expect(200)["files"]
        .as_array()
        .unwrap()
        .clone()
}

async fn attachments_wait_for_an_agent_the_host_does_not_run_until_it_downloads_and_acknowledges_them(
    backend: DbBackend,
) {
    // The sweeper runs every second: only what is acknowledged an hour ago or expired goes.
    let app = TestApp::spawn_with(backend, |c| c.a2a.queue_expiry_sweep_secs = 1).await;
    let (id, token) = app.create_external("Remote", None).await;
    let (_, stranger) = app.create_external("Stranger", None).await;
    let agent = app.with_token(&token);

    let form = Form::new()
        .part("files", file("../notes.txt", b"remember the milk\n"))
        .part(
            "files",
            file("page.html", b"<html><script>x</script></html>"),
        );
    let stored = app.upload_chat_files(&id, form).await.expect(201);
    let files = stored["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{stored}");
    let notes = files[0]["file_id"].as_str().unwrap().to_owned();
    let page = files[1]["file_id"].as_str().unwrap().to_owned();
    assert_eq!(files[0]["name"], "notes.txt");
    assert_eq!(files[0]["uri"], format!("pending-upload:{notes}"));
    assert_eq!(files[0]["mimeType"], "text/plain");
    let listed = waiting(&app, &id).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["fetched_at"], Value::Null);
    assert_eq!(listed[0]["size_bytes"], 18);

    // Only the agent downloads (the operator looks through chat/download, which is no fetch).
    let content = format!("/workspaces/{id}/pending-uploads/{notes}/content");
    app.get(&content).await.expect(403);
    app.with_token(&stranger).get(&content).await.expect(401);
    app.anonymous().get(&content).await.expect(401);
    let look = app
        .get(&format!(
            "/workspaces/{id}/chat/download?path=pending-upload:{notes}"
        ))
        .await;
    assert_eq!(look.status, 200, "{}", look.text);
    assert_eq!(look.text, "remember the milk\n");
    assert_eq!(waiting(&app, &id).await[0]["fetched_at"], Value::Null);
    let got = agent.get(&content).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.text, "remember the milk\n");
    assert_eq!(
        got.headers["content-disposition"],
        "attachment; filename=\"notes.txt\""
    );
    let html = agent
        .get(&format!("/workspaces/{id}/pending-uploads/{page}/content"))
        .await;
    assert_eq!(
        html.headers["content-type"], "text/plain",
        "never served as a page a browser runs"
    );
    assert_ne!(waiting(&app, &id).await[0]["fetched_at"], Value::Null);

    // Acknowledged once; then it is no longer offered.
    let ack = format!("/workspaces/{id}/pending-uploads/{notes}/ack");
    app.post(&ack, json!({})).await.expect(403);
    app.with_token(&stranger)
        .post(&ack, json!({}))
        .await
        .expect(401);
    assert_eq!(
        agent.post(&ack, json!({})).await.expect(200),
        json!({ "acked": true })
    );
    assert_eq!(
        agent.post(&ack, json!({})).await.expect(200),
        json!({ "acked": true, "raced": true })
    );
    agent.get(&content).await.expect(404);
    assert_eq!(waiting(&app, &id).await.len(), 1);
    agent
        .post(
            &format!(
                "/workspaces/{id}/pending-uploads/{}/ack",
                uuid::Uuid::new_v4()
            ),
            json!({}),
        )
        .await
        .expect(404);

    // An oversize upload stores nothing.
    let big = Form::new()
        .part("files", file("small.txt", b"fine"))
        .part("files", file("big.bin", &vec![b'a'; 25 * 1024 * 1024 + 1]));
    app.upload_chat_files(&id, big).await.expect(413);
    assert_eq!(waiting(&app, &id).await.len(), 1);

    // A sweep an hour after the ack, and a day after the upload of the unacknowledged one,
    // deletes both (the rows are moved into the past behind the host's back).
    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the test database");
    for (file, hours) in [(&notes, 2), (&page, 25)] {
        molecule_host::store::pending_uploads::backdate(
            &db,
            file.parse().unwrap(),
            chrono::Duration::hours(hours),
        )
        .await
        .expect("backdating");
    }
    db.close().await;
    eventually(Duration::from_secs(15), || async {
        let gone = agent.post(&ack, json!({})).await.status == 404;
        (gone && waiting(&app, &id).await.is_empty()).then_some(())
    })
    .await;
}
