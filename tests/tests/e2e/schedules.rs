//! Schedules: created, listed, changed and deleted with errors naming their field; fired by the
//! scheduler within a second of their tick with the prompt reaching the agent; fired now on
//! demand; recorded (history, `cron_run` activity, counters, health); fired once after a
//! downtime that missed several ticks; stopped when their workspace is removed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use molecule_e2e::{
    Api, DbBackend, Fault, FaultAgent, TestApp, eventually, on_both_backends, write_file,
};
use serde_json::{Value, json};

on_both_backends!(
    schedules_are_created_listed_changed_and_deleted_with_field_errors,
    a_schedule_fires_within_a_second_of_its_tick_and_is_recorded,
    missed_ticks_fire_once_after_a_downtime,
    a_slow_agent_never_delays_another_schedules_fires,
    an_import_seeds_template_schedules_and_reconcile_keeps_runtime_ones,
);

fn schedules(id: &str) -> String {
    format!("/workspaces/{id}/schedules")
}

async fn refused(api: &Api, path: &str, body: Value, field: &str) {
    let reply = api.post(path, body.clone()).await.expect(400);
    assert_eq!(reply["field"], field, "{body}: {reply}");
    assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
}

async fn listed(api: &Api, id: &str, schedule: &str) -> Value {
    let all = api.get(&schedules(id)).await.expect(200);
    all.as_array()
        .expect("a list")
        .iter()
        .find(|s| s["id"] == schedule)
        .cloned()
        .expect("the schedule is listed")
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("a time")
        .parse()
        .expect("an RFC 3339 time")
}

async fn schedules_are_created_listed_changed_and_deleted_with_field_errors(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_workspace("planner", None).await;
    let path = schedules(&id);

    refused(&app, &path, json!({ "prompt": "hi" }), "cron_expr").await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": "61 * * * *", "prompt": "hi" }),
        "cron_expr",
    )
    .await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": "* * *", "prompt": "hi" }),
        "cron_expr",
    )
    .await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": 5, "prompt": "hi" }),
        "cron_expr",
    )
    .await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": "@hourly", "timezone": "Mars/Olympus", "prompt": "hi" }),
        "timezone",
    )
    .await;
    refused(&app, &path, json!({ "cron_expr": "@hourly" }), "prompt").await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": "@hourly", "prompt": " \r\n" }),
        "prompt",
    )
    .await;
    refused(
        &app,
        &path,
        json!({ "cron_expr": "@hourly", "prompt": "hi", "enabled": "yes" }),
        "enabled",
    )
    .await;

    // The preview checks without storing: the next three ticks, or the field at fault.
    let preview = app
        .post(
            &format!("{path}/preview"),
            json!({ "cron_expr": "*/15 * * * *" }),
        )
        .await
        .expect(200);
    let runs: Vec<DateTime<Utc>> = preview["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(time)
        .collect();
    assert_eq!(runs.len(), 3);
    assert!(
        runs.windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::minutes(15)),
        "{preview}"
    );
    refused(
        &app,
        &format!("{path}/preview"),
        json!({ "cron_expr": "*/15 * * *" }),
        "cron_expr",
    )
    .await;
    refused(
        &app,
        &format!("{path}/preview"),
        json!({ "cron_expr": "@daily", "timezone": "Moon/Base" }),
        "timezone",
    )
    .await;
    assert!(
        app.get(&path)
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .is_empty()
    );

    let created = app
        .post(&path, json!({ "name": "standup", "cron_expr": "30 9 * * 1-5", "timezone": "Europe/Berlin", "prompt": "Plan the day.\r\nBe brief.\r\n" }))
        .await
        .expect(201);
    assert_eq!(created["status"], "created");
    let sid = created["id"].as_str().expect("an id").to_owned();
    let next = time(&created["next_run_at"]);
    assert!(next > Utc::now());

    let row = listed(&app, &id, &sid).await;
    assert_eq!(row["name"], "standup");
    assert_eq!(
        row["prompt"], "Plan the day.\nBe brief.\n",
        "CRLF is stripped"
    );
    assert_eq!(row["timezone"], "Europe/Berlin");
    assert_eq!(row["source"], "runtime");
    assert_eq!(row["enabled"], true);
    assert_eq!(row["run_count"], 0);
    assert_eq!(row["consecutive_empty_runs"], 0);
    assert_eq!(row["upcoming"].as_array().expect("upcoming").len(), 3);
    assert_eq!(time(&row["upcoming"][0]), next);
    // 09:30 in Berlin is 07:30 or 08:30 UTC.
    assert!([7, 8].contains(&chrono::Timelike::hour(&next)), "{next}");

    let defaulted = app
        .post(
            &path,
            json!({ "name": "hourly", "cron_expr": "@hourly", "prompt": "tick" }),
        )
        .await
        .expect(201);
    let hourly = defaulted["id"].as_str().expect("an id").to_owned();
    assert_eq!(listed(&app, &id, &hourly).await["timezone"], "UTC");
    let taken = app
        .post(
            &path,
            json!({ "name": "standup", "cron_expr": "@daily", "prompt": "again" }),
        )
        .await;
    assert_eq!(taken.status, 409);

    let one = format!("{path}/{sid}");
    let reply = app
        .patch(&one, json!({ "cron_expr": "0 25 * * *" }))
        .await
        .expect(400);
    assert_eq!(reply["field"], "cron_expr");
    let reply = app
        .patch(&one, json!({ "timezone": "Nowhere" }))
        .await
        .expect(400);
    assert_eq!(reply["field"], "timezone");
    let reply = app.patch(&one, json!({ "enabled": 1 })).await.expect(400);
    assert_eq!(reply["field"], "enabled");
    assert_eq!(
        app.patch(&one, json!({ "name": "hourly" })).await.status,
        409
    );
    let paused = app
        .patch(&one, json!({ "enabled": false }))
        .await
        .expect(200);
    assert_eq!(paused["status"], "updated");
    assert!(
        paused["next_run_at"].is_null(),
        "a disabled schedule has no next run"
    );
    let resumed = app
        .patch(
            &one,
            json!({ "enabled": true, "cron_expr": "*/5 * * * *", "prompt": "a\r\nb" }),
        )
        .await
        .expect(200);
    let next = time(&resumed["next_run_at"]);
    assert_eq!(chrono::Timelike::minute(&next) % 5, 0);
    let row = listed(&app, &id, &sid).await;
    assert_eq!(row["cron_expr"], "*/5 * * * *");
    assert_eq!(row["prompt"], "a\nb");
    assert_eq!(
        row["name"], "standup",
        "a patch keeps what it does not name"
    );
    let missing = format!("{path}/00000000-0000-4000-8000-000000000000");
    assert_eq!(
        app.patch(&missing, json!({ "enabled": false }))
            .await
            .status,
        404
    );
    assert_eq!(
        app.patch(&format!("{path}/not-a-uuid"), json!({}))
            .await
            .status,
        404
    );

    let health = app.get(&format!("{path}/health")).await.expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["total"], 2);
    let admin = app.get("/admin/schedules/health").await.expect(200);
    assert_eq!(admin["enabled"], 2);

    assert_eq!(app.delete(&one).await.expect(200)["status"], "deleted");
    assert_eq!(app.delete(&one).await.status, 404);
    assert_eq!(
        app.get(&schedules(&id))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Removing the workspace stops its schedules.
    app.delete(&format!("/workspaces/{id}")).await.expect(200);
    let admin = app.get("/admin/schedules/health").await.expect(200);
    assert_eq!(admin["enabled"], 0, "{admin}");
    assert_eq!(app.get(&schedules(&id)).await.status, 410);
}

/// The prompts the agent received from the scheduler, as `(tick_at, text)`.
fn scheduled(agent: &FaultAgent) -> Vec<(Option<String>, String)> {
    agent
        .requests()
        .iter()
        .filter(|r| r.pointer("/params/message/metadata/source") == Some(&json!("system:schedule")))
        .map(|r| {
            (
                r.pointer("/params/message/metadata/tick_at")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                r.pointer("/params/message/parts/0/text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn a_schedule_fires_within_a_second_of_its_tick_and_is_recorded(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, _) = app.workspace_at("reporter", None, &agent.url).await;
    let mut events = app.events().await;

    // Every second: the first tick is at most a second away.
    let created = app
        .post(
            &schedules(&id),
            json!({ "name": "pulse", "cron_expr": "* * * * * *", "prompt": "status report" }),
        )
        .await
        .expect(201);
    let sid = created["id"].as_str().expect("an id").to_owned();
    let one = format!("{}/{sid}", schedules(&id));
    let fired = eventually(Duration::from_secs(10), || async {
        let got = scheduled(&agent);
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(fired[0].1, "status report");
    app.patch(&one, json!({ "enabled": false }))
        .await
        .expect(200);
    let seen = events.until("CRON_COMPLETED").await;
    assert!(
        seen.iter()
            .any(|(name, f)| name == "CRON_STARTED" && f["payload"]["schedule_id"] == sid.as_str())
    );

    let history = eventually(Duration::from_secs(10), || async {
        let h = app.get(&format!("{one}/history")).await.expect(200);
        (!h.as_array().unwrap().is_empty()).then_some(h)
    })
    .await;
    let first = history
        .as_array()
        .unwrap()
        .last()
        .expect("the first fire")
        .clone();
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["request"]["prompt"], "status report");
    let late = time(&first["timestamp"]) - time(&first["tick_at"]);
    println!("fired {} ms after its tick", late.num_milliseconds());
    assert!(
        late < chrono::Duration::seconds(1),
        "fired {late} after its tick"
    );
    let row = listed(&app, &id, &sid).await;
    assert!(row["run_count"].as_i64().unwrap() >= 1);
    assert_eq!(row["last_status"], "ok");
    let cron_runs = app.activity(&id, "?type=cron_run").await;
    assert!(
        cron_runs
            .iter()
            .any(|r| r["request_body"]["schedule_id"] == sid.as_str()),
        "{cron_runs:?}"
    );

    // Fire now: the host sends the prompt itself and says how it went; the schedule stays off.
    let before = scheduled(&agent).len();
    let now = app.post(&format!("{one}/run"), json!({})).await.expect(200);
    assert_eq!(now["status"], "fired");
    assert_eq!(now["prompt"], "status report");
    assert_eq!(now["workspace_id"], id.as_str());
    assert_eq!(now["run"]["status"], "ok", "{now}");
    let after = scheduled(&agent);
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap().0, None, "a manual run has no tick");

    // An agent that answers without text: empty runs are counted and reported by health.
    let mute = FaultAgent::start(|_| {
        Fault::Status(200, json!({ "jsonrpc": "2.0", "id": "1", "result": { "kind": "message", "role": "agent", "parts": [] } }).to_string())
    })
    .await;
    let (quiet, _) = app.workspace_at("quiet", None, &mute.url).await;
    let created = app
        .post(
            &schedules(&quiet),
            json!({ "name": "nudge", "cron_expr": "@yearly", "prompt": "anything?" }),
        )
        .await
        .expect(201);
    let nudge = format!("{}/{}", schedules(&quiet), created["id"].as_str().unwrap());
    for _ in 0..3 {
        let run = app
            .post(&format!("{nudge}/run"), json!({}))
            .await
            .expect(200);
        assert_eq!(run["run"]["status"], "empty", "{run}");
    }
    let health = app
        .get(&format!("{}/health", schedules(&quiet)))
        .await
        .expect(200);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["empty"][0]["consecutive_empty_runs"], 3, "{health}");
    assert!(health["scheduler_last_tick_at"].is_string(), "{health}");
    let admin = app.get("/admin/schedules/health").await.expect(200);
    assert_eq!(admin["empty"].as_array().unwrap().len(), 1, "{admin}");

    // A busy agent (it closes without answering): the prompt is queued like any message.
    let busy = FaultAgent::start(|_| Fault::Close).await;
    let (occupied, _) = app.workspace_at("occupied", None, &busy.url).await;
    let created = app
        .post(
            &schedules(&occupied),
            json!({ "name": "later", "cron_expr": "@weekly", "prompt": "when you can" }),
        )
        .await
        .expect(201);
    let later = format!(
        "{}/{}",
        schedules(&occupied),
        created["id"].as_str().unwrap()
    );
    let run = app
        .post(&format!("{later}/run"), json!({}))
        .await
        .expect(200);
    assert_eq!(run["run"]["status"], "queued", "{run}");
    assert_eq!(scheduled(&busy).len(), 1, "the agent was tried once");
    assert_eq!(
        listed(&app, &occupied, created["id"].as_str().unwrap()).await["last_status"],
        "queued"
    );

    // A workspace without a live agent: skipped, not sent.
    let absent = app.create_workspace("absent", None).await;
    let created = app
        .post(
            &schedules(&absent),
            json!({ "cron_expr": "@daily", "prompt": "hello?" }),
        )
        .await
        .expect(201);
    let run = app
        .post(
            &format!(
                "{}/{}/run",
                schedules(&absent),
                created["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(run["run"]["status"], "skipped", "{run}");
    assert!(
        run["run"]["error"]
            .as_str()
            .unwrap()
            .starts_with("workspace is"),
        "{run}"
    );
    // A paused one too.
    app.post(&format!("/workspaces/{quiet}/pause"), json!({}))
        .await
        .expect(200);
    let run = app
        .post(&format!("{nudge}/run"), json!({}))
        .await
        .expect(200);
    assert_eq!(run["run"]["status"], "skipped", "{run}");
    assert_eq!(run["run"]["error"], "workspace is paused");
}

async fn missed_ticks_fire_once_after_a_downtime(backend: DbBackend) {
    let mut app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, _) = app.workspace_at("sleeper", None, &agent.url).await;
    let created = app
        .post(
            &schedules(&id),
            json!({ "name": "minutely", "cron_expr": "* * * * *", "prompt": "wake" }),
        )
        .await
        .expect(201);
    let sid: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    app.stop().await.expect("the host stops");

    // While the host was down, three ticks passed: the row says it was due 3.5 minutes ago.
    let db = molecule_host::store::Db::connect(app.database_url(), 1)
        .await
        .expect("the database");
    let workspace: uuid::Uuid = id.parse().unwrap();
    let row = molecule_host::store::schedules::get(&db, workspace, sid)
        .await
        .unwrap()
        .unwrap();
    let missed = Utc::now() - chrono::Duration::seconds(210);
    assert!(
        molecule_host::store::schedules::claim(&db, sid, row.next_run_at.unwrap(), Some(missed))
            .await
            .unwrap()
    );
    // Rows an older version could have left: an expression this one refuses, and enabled
    // schedules without a next run. None may stall the scheduler.
    let broken = molecule_host::store::schedules::ScheduleRow {
        id: uuid::Uuid::new_v4(),
        name: "broken".into(),
        cron_expr: "every tuesday".into(),
        next_run_at: Some(missed),
        ..row.clone()
    };
    molecule_host::store::schedules::insert(&db, &broken)
        .await
        .unwrap();
    let unscheduled = molecule_host::store::schedules::ScheduleRow {
        id: uuid::Uuid::new_v4(),
        name: "unscheduled".into(),
        next_run_at: None,
        ..row.clone()
    };
    molecule_host::store::schedules::insert(&db, &unscheduled)
        .await
        .unwrap();
    let zone_gone = molecule_host::store::schedules::ScheduleRow {
        id: uuid::Uuid::new_v4(),
        name: "zone-gone".into(),
        timezone: "Atlantis/Capital".into(),
        next_run_at: None,
        ..row.clone()
    };
    molecule_host::store::schedules::insert(&db, &zone_gone)
        .await
        .unwrap();
    db.close().await;

    app.restart_with(|_| {})
        .await
        .expect("the host starts again");
    let one = format!("{}/{sid}", schedules(&id));
    let history = eventually(Duration::from_secs(10), || async {
        let h = app.get(&format!("{one}/history")).await.expect(200);
        (!h.as_array().unwrap().is_empty()).then_some(h)
    })
    .await;
    let row = listed(&app, &id, &sid.to_string()).await;
    let next = time(&row["next_run_at"]);
    assert!(
        next > Utc::now() - chrono::Duration::seconds(1),
        "next_run_at moved to the future: {next}"
    );
    assert!(next <= Utc::now() + chrono::Duration::seconds(60));
    // Until that next tick nothing more fires: one fire for the three missed ticks.
    if next > Utc::now() + chrono::Duration::seconds(2) {
        let history = app.get(&format!("{one}/history")).await.expect(200);
        assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
        assert_eq!(scheduled(&agent).len(), 1);
    }
    assert_eq!(history[0]["status"], "ok", "{history}");
    assert_eq!(time(&history[0]["tick_at"]).timestamp(), missed.timestamp());

    let broken = eventually(Duration::from_secs(10), || async {
        let row = listed(&app, &id, &broken.id.to_string()).await;
        (row["enabled"] == false).then_some(row)
    })
    .await;
    assert!(
        broken["last_error"].as_str().unwrap().contains("cron_expr"),
        "{broken}"
    );
    assert!(broken["next_run_at"].is_null());
    let repaired = listed(&app, &id, &unscheduled.id.to_string()).await;
    assert!(repaired["next_run_at"].is_string(), "{repaired}");
    let gone = eventually(Duration::from_secs(10), || async {
        let row = listed(&app, &id, &zone_gone.id.to_string()).await;
        (row["enabled"] == false).then_some(row)
    })
    .await;
    assert!(
        gone["last_error"].as_str().unwrap().contains("timezone"),
        "{gone}"
    );
}

/// One agent takes far longer than the fire timeout; another schedule's every-second fires go
/// on meanwhile, and the slow fire ends when its timeout says.
async fn a_slow_agent_never_delays_another_schedules_fires(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.schedules.fire_timeout_secs = 1;
        c.schedules.max_concurrent_fires = 4;
    })
    .await;
    let slow = FaultAgent::start(|_| Fault::Slow(Duration::from_secs(30))).await;
    let fast = FaultAgent::start(|_| Fault::Answer).await;
    let (slow_id, _) = app.workspace_at("slow", None, &slow.url).await;
    let (fast_id, _) = app.workspace_at("fast", None, &fast.url).await;
    let created = app
        .post(
            &schedules(&slow_id),
            json!({ "name": "slow", "cron_expr": "@yearly", "prompt": "take your time" }),
        )
        .await
        .expect(201);
    let slow_one = format!(
        "{}/{}",
        schedules(&slow_id),
        created["id"].as_str().unwrap()
    );
    // The slow fire starts first, and is still waiting for its agent while the fast ones run.
    let run = {
        let api = app.api.clone();
        let path = format!("{slow_one}/run");
        tokio::spawn(async move { api.post(&path, json!({})).await })
    };
    eventually(Duration::from_secs(10), || async {
        (!slow.requests().is_empty()).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    app.post(
        &schedules(&fast_id),
        json!({ "name": "fast", "cron_expr": "* * * * * *", "prompt": "quick" }),
    )
    .await
    .expect(201);
    eventually(Duration::from_secs(10), || async {
        (scheduled(&fast).len() >= 3).then_some(())
    })
    .await;
    println!(
        "3 fast fires {:?} after the slow one began",
        started.elapsed()
    );
    let answered = run.await.expect("the run returns");
    let outcome = answered.body["run"].clone();
    assert_ne!(outcome["status"], "ok", "{outcome}");
    assert!(
        outcome["duration_ms"].as_i64().unwrap() < 15_000,
        "bounded by the fire timeout: {outcome}"
    );
}

/// Two replicas on one PostgreSQL database: an every-second schedule fires each of 20 ticks
/// exactly once (the lease picks the firing replica; the claim on `next_run_at` would stop a
/// second one even if both held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_each_tick_of_a_schedule_exactly_once() {
    use molecule_e2e::replicas::{Agents, ReplicaSet};
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(
        molecule_host::store::Backend::Postgres,
        Agents::None,
        templates.path(),
    )
    .await;
    hosts.settings = "schedules.poll_interval_ms = 100".into();
    let (a, b) = (hosts.spawn().await, hosts.spawn().await);
    let (on_a, on_b) = (hosts[a].api.clone(), hosts[b].api.clone());
    let (id, _) = on_a.workspace_at("metronome", None, &agent.url).await;
    let created = on_b
        .post(
            &schedules(&id),
            json!({ "name": "beat", "cron_expr": "* * * * * *", "prompt": "beat" }),
        )
        .await
        .expect(201);
    let one = format!("{}/{}", schedules(&id), created["id"].as_str().unwrap());
    eventually(Duration::from_secs(60), || async {
        (scheduled(&agent).len() >= 20).then_some(())
    })
    .await;
    on_a.patch(&one, json!({ "enabled": false }))
        .await
        .expect(200);

    // Fires in flight when it was disabled finish; then the agent's count and the history agree.
    let (received, history) = eventually(Duration::from_secs(10), || async {
        let received = scheduled(&agent);
        let history = on_b.get(&format!("{one}/history")).await.expect(200);
        let history = history.as_array().unwrap().clone();
        (received.len() == history.len()).then_some((received, history))
    })
    .await;
    let ticks: std::collections::BTreeSet<String> = received
        .iter()
        .map(|(tick, _)| tick.clone().expect("a tick"))
        .collect();
    assert_eq!(
        ticks.len(),
        received.len(),
        "a tick was fired twice: {received:?}"
    );
    assert!(received.len() >= 20);
    let recorded: std::collections::BTreeSet<String> = history
        .iter()
        .map(|h| h["tick_at"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recorded.len(), history.len(), "a tick was recorded twice");
    assert!(history.iter().all(|h| h["status"] == "ok"), "{history:?}");
}

fn by_name<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array().unwrap().iter().find(|r| r["name"] == name)
}

async fn an_import_seeds_template_schedules_and_reconcile_keeps_runtime_ones(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    let root = templates.path();
    write_file(
        root,
        "ops/org.yaml",
        "name: Ops\nworkspaces:\n  - name: Watch\n    files_dir: watch\n    schedules:\n      - name: nightly\n        cron_expr: \"0 2 * * *\"\n        timezone: Europe/Berlin\n        prompt_file: nightly.md\n      - name: hourly\n        cron_expr: \"@hourly\"\n        prompt: check in\n",
    );
    write_file(
        root,
        "ops/watch/nightly.md",
        "Run the nightly review.\r\nReport back.\r\n",
    );
    let dir = root.to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| c.org.templates_dir = dir).await;
    let imported = app
        .post("/org/import", json!({ "dir": "ops" }))
        .await
        .expect(201);
    let id = imported["workspaces"][0]["id"].as_str().unwrap().to_owned();
    let rows = app.get(&schedules(&id)).await.expect(200);
    let nightly = by_name(&rows, "nightly").expect("nightly is seeded");
    assert_eq!(nightly["source"], "template");
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    assert_eq!(nightly["prompt"], "Run the nightly review.\nReport back.\n");
    assert!(nightly["next_run_at"].is_string());
    assert_eq!(by_name(&rows, "hourly").unwrap()["timezone"], "UTC");

    // One made through the API, and one that shares a template schedule's future name.
    app.post(
        &schedules(&id),
        json!({ "name": "mine", "cron_expr": "@daily", "prompt": "mine" }),
    )
    .await
    .expect(201);
    app.post(
        &schedules(&id),
        json!({ "name": "weekly", "cron_expr": "@daily", "prompt": "by hand" }),
    )
    .await
    .expect(201);

    // The template drops `hourly`, changes `nightly` and adds `weekly`.
    write_file(
        root,
        "ops/org.yaml",
        "name: Ops\nworkspaces:\n  - name: Watch\n    files_dir: watch\n    schedules:\n      - name: nightly\n        cron_expr: \"0 3 * * *\"\n        prompt: shorter review\n      - name: weekly\n        cron_expr: \"@weekly\"\n        prompt: from the template\n",
    );
    let merged = app
        .post("/org/import", json!({ "dir": "ops" }))
        .await
        .expect(201);
    assert_eq!(merged["created_count"], 0);
    let rows = app.get(&schedules(&id)).await.expect(200);
    assert!(by_name(&rows, "hourly").is_some(), "merge removes nothing");
    assert_eq!(by_name(&rows, "nightly").unwrap()["cron_expr"], "0 3 * * *");
    app.post("/org/import", json!({ "dir": "ops", "mode": "reconcile" }))
        .await
        .expect(201);
    let rows = app.get(&schedules(&id)).await.expect(200);
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["mine", "nightly", "weekly"], "{rows}");
    let nightly = by_name(&rows, "nightly").unwrap();
    assert_eq!(
        (nightly["prompt"].as_str(), nightly["timezone"].as_str()),
        (Some("shorter review"), Some("UTC"))
    );
    let weekly = by_name(&rows, "weekly").unwrap();
    assert_eq!(
        (weekly["source"].as_str(), weekly["prompt"].as_str()),
        (Some("runtime"), Some("by hand")),
        "a runtime schedule is never overwritten"
    );
    assert_eq!(by_name(&rows, "mine").unwrap()["source"], "runtime");

    // A bad expression or a prompt_file outside the template refuses the import, naming it.
    write_file(
        root,
        "bad/org.yaml",
        "name: Bad\nworkspaces:\n  - name: Broken\n    schedules:\n      - name: oops\n        cron_expr: \"99 * * * *\"\n        prompt: hi\n",
    );
    let refused = app.post("/org/import", json!({ "dir": "bad" })).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.text.contains("oops") && refused.text.contains("cron_expr"),
        "{}",
        refused.text
    );
    write_file(
        root,
        "escape/org.yaml",
        "name: Escape\nworkspaces:\n  - name: Sneaky\n    schedules:\n      - name: leak\n        cron_expr: \"@daily\"\n        prompt_file: ../ops/watch/nightly.md\n",
    );
    let refused = app.post("/org/import", json!({ "dir": "escape" })).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("prompt_file"), "{}", refused.text);
}
