//! Hibernation with real agents (the process runtime, on both backends): a manual hibernate, a
//! message and a schedule's fire that wake the workspace and reach the woken agent, and the idle
//! monitor.

use std::time::Duration;

use molecule_e2e::{
    DbBackend, TestApp, builtin_extensions_dir, eventually, on_both_backends, process_runtime,
};
use serde_json::{Value, json};

on_both_backends!(
    a_message_for_a_hibernated_workspace_wakes_it_and_reaches_the_woken_agent,
    an_idle_agent_is_hibernated_by_the_monitor_and_one_set_to_never_is_not,
);

/// Long enough for an agent to start, register and heartbeat on a loaded machine.
const ONLINE: Duration = Duration::from_secs(60);

async fn spawn_with(
    backend: DbBackend,
    tweak: impl FnOnce(&mut molecule_host::config::Config),
) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        process_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        tweak(c);
    })
    .await
}

async fn row(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/workspaces/{id}")).await.expect(200)
}

async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(ONLINE, || async {
        let row = row(app, id).await;
        (row["status"] == status && (status != "online" || !row["last_heartbeat_at"].is_null()))
            .then_some(row)
    })
    .await
}

fn message(text: &str, id: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "messageId": id, "parts": [{ "kind": "text", "text": text }] } },
    })
}

async fn a_message_for_a_hibernated_workspace_wakes_it_and_reaches_the_woken_agent(
    backend: DbBackend,
) {
    let app = spawn_with(backend, |_| {}).await;
    let lead = app.create_workspace("Lead", None).await;
    let dev = app.create_workspace("Dev", Some(&lead)).await;
    app.wait_settled(&lead, ONLINE).await;
    app.wait_settled(&dev, ONLINE).await;
    let mut events = app.events().await;

    let hibernated = app
        .post(&format!("/workspaces/{lead}/hibernate"), json!({}))
        .await
        .expect(200);
    assert_eq!(hibernated, json!({ "status": "hibernated" }));
    let seen = events.until("WORKSPACE_HIBERNATED").await;
    let (_, frame) = seen.last().expect("the event");
    assert_eq!(frame["workspace_id"], lead.as_str());
    assert_eq!(frame["payload"]["name"], "Lead");
    let stored = row(&app, &lead).await;
    assert_eq!(stored["status"], "hibernated");
    assert!(stored["url"].is_null(), "{stored}");
    // Not cascading: the child keeps running, and a hibernated parent does not block it.
    assert_eq!(row(&app, &dev).await["status"], "online");
    // Only a running workspace hibernates; the original answered 404 here.
    assert_eq!(
        app.post(&format!("/workspaces/{lead}/hibernate"), json!({}))
            .await
            .expect(409),
        json!({ "error": "workspace is already hibernated" })
    );

    // The child's message to its hibernated parent is queued and wakes it: nothing depends on
    // the caller retrying.
    let dev_token = app.agent_token(&dev).await;
    let queued = app
        .with_token(&dev_token)
        .call(
            reqwest::Method::POST,
            &format!("/workspaces/{lead}/a2a"),
            Some(message("are you there?", "wake-1")),
            &[("X-Workspace-ID", dev.as_str())],
        )
        .await
        .expect(202);
    assert_eq!(queued["queued"], true, "{queued}");
    assert_eq!(queued["waking"], true, "{queued}");
    let queue_path = format!(
        "/workspaces/{lead}/a2a/queue/{}",
        queued["queue_id"].as_str().expect("a queue id")
    );
    eventually(ONLINE, || async {
        let item = app.get(&queue_path).await.expect(200);
        (item["status"] == "completed").then_some(item)
    })
    .await;
    // Delivered to the woken agent: its echo brain answered the queued message.
    let received = app
        .get(&format!("/workspaces/{lead}/activity?type=a2a_receive"))
        .await
        .expect(200);
    let answered = received
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["status"] == "ok")
        .filter(|r| {
            r["response_body"]
                .to_string()
                .contains("Lead: are you there?")
        })
        .count();
    assert_eq!(answered, 1, "{received}");
    let awake = wait_status(&app, &lead, "online").await;
    assert!(awake["url"].is_string(), "{awake}");
    let woken = app
        .get(&format!("/workspaces/{lead}/activity?type=wake"))
        .await
        .expect(200);
    assert_eq!(
        woken.as_array().map(Vec::len),
        Some(1),
        "woken once: {woken}"
    );

    // A restart wakes a hibernated workspace too.
    app.post(&format!("/workspaces/{lead}/hibernate"), json!({}))
        .await
        .expect(200);
    let restarted = app
        .post(&format!("/workspaces/{lead}/restart"), json!({}))
        .await
        .expect(200);
    assert_eq!(restarted["status"], "provisioning");
    app.wait_settled(&lead, ONLINE).await;

    // A schedule that fires for a hibernated workspace wakes it too, and its prompt is queued
    // and delivered to the woken agent rather than skipped.
    let schedule = app
        .post(
            &format!("/workspaces/{lead}/schedules"),
            json!({ "name": "standup", "cron_expr": "0 9 * * *", "prompt": "morning report" }),
        )
        .await
        .expect(201);
    let schedule_id = schedule["id"].as_str().expect("a schedule id");
    app.post(&format!("/workspaces/{lead}/hibernate"), json!({}))
        .await
        .expect(200);
    let fired = app
        .post(
            &format!("/workspaces/{lead}/schedules/{schedule_id}/run"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(fired["run"]["status"], "woken", "{fired}");
    eventually(ONLINE, || async {
        let received = app
            .get(&format!("/workspaces/{lead}/activity?type=a2a_receive"))
            .await
            .expect(200);
        received
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| {
                r["status"] == "ok"
                    && r["response_body"]
                        .to_string()
                        .contains("Lead: morning report")
            })
            .then_some(())
    })
    .await;
    wait_status(&app, &lead, "online").await;
}

async fn an_idle_agent_is_hibernated_by_the_monitor_and_one_set_to_never_is_not(
    backend: DbBackend,
) {
    // One "minute" of idleness is a second here, and the monitor looks every second.
    let app = spawn_with(backend, |c| {
        c.faults.hibernation_minute = Some(Duration::from_secs(1));
        c.runtime.hibernation_sweep_secs = 1;
    })
    .await;
    // Bad values are refused, naming the field.
    for bad in [json!(-1), json!(43_201), json!("soon")] {
        let refused = app
            .post(
                "/workspaces",
                json!({ "name": "Bad", "hibernation_idle_minutes": bad }),
            )
            .await;
        assert_eq!(refused.status, 400, "{bad}: {:?}", refused.body);
        if bad.is_number() {
            assert!(
                refused.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("hibernation_idle_minutes"),
                "{:?}",
                refused.body
            );
        }
    }
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Sleepy", "hibernation_idle_minutes": 3 }),
        )
        .await
        .expect(201);
    app.remember_agent_token(&created);
    let sleepy = created["id"].as_str().expect("an id").to_owned();
    let awake = app.create_workspace("Awake", None).await;
    assert_eq!(row(&app, &sleepy).await["hibernation_idle_minutes"], 3);
    // PATCH sets it (and refuses a bad value by name); 0 means never.
    let refused = app
        .patch(
            &format!("/workspaces/{awake}"),
            json!({ "hibernation_idle_minutes": -5 }),
        )
        .await
        .expect(400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("hibernation_idle_minutes"),
        "{refused}"
    );
    app.patch(
        &format!("/workspaces/{awake}"),
        json!({ "hibernation_idle_minutes": 0 }),
    )
    .await
    .expect(200);
    assert_eq!(row(&app, &awake).await["hibernation_idle_minutes"], 0);

    // Heartbeats are not activity: the agent heartbeats every second and still hibernates.
    let hibernated = wait_status(&app, &sleepy, "hibernated").await;
    assert!(hibernated["url"].is_null(), "{hibernated}");
    // The row is recorded once the status says `hibernated` (a pause overtaking the stop has
    // the last word, and then no row is), just before `WORKSPACE_HIBERNATED` is announced: a
    // poller that saw the status may read the log a moment too soon.
    let rows = eventually(Duration::from_secs(10), || async {
        let rows = app
            .get(&format!("/workspaces/{sleepy}/activity?type=hibernate"))
            .await
            .expect(200);
        (rows.as_array().is_some_and(|r| !r.is_empty())).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["summary"], "workspace hibernated (idle)", "{rows}");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let heartbeats_since = row(&app, &awake).await;
    assert_eq!(
        heartbeats_since["status"], "online",
        "0 minutes: never hibernated"
    );
}
