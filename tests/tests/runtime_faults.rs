//! Runtime faults, injected with the real mechanisms: an agent container killed from outside
//! (`docker kill`), the Docker engine unreachable for a while (a socket proxy in front of
//! `/var/run/docker.sock`, cut and restored), agents that never answer or answer garbage, and
//! the data directory's disk full (a small tmpfs filled with a ballast file).
//!
//! Each spec prints `figure: <name> = <value>` lines; `make campaign-faults` gathers them into a
//! table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use molecule_e2e::faults::{DockerSocketProxy, Tmpfs};
use molecule_e2e::{
    Api, DbBackend, Fault, FaultAgent, Reply, TestApp, builtin_extensions_dir, docker,
    docker_runtime, eventually, id12,
};
use serde_json::{Value, json};

/// Long enough for an agent container to start, register and heartbeat on a loaded machine.
const ONLINE: Duration = Duration::from_secs(90);

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("figure: {name} = {value}");
}

/// Counts panics on the runtimes' worker threads, where the in-process host's tasks run (a
/// spec's own failed assertion panics on the test's thread instead): a fault must never make
/// the host panic, even in a background task whose panic nobody would otherwise see.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("tokio-runtime"))
            {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// `POST /workspaces/{id}/a2a` with a JSON-RPC `message/send` of `text`, and how long it took.
async fn a2a(api: &Api, id: &str, text: &str) -> (Reply, Duration) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "messageId": uuid::Uuid::new_v4().to_string(),
            "parts": [{ "kind": "text", "text": text }] } },
    });
    let began = Instant::now();
    let reply = api.post(&format!("/workspaces/{id}/a2a"), body).await;
    (reply, began.elapsed())
}

fn answer_text(reply: &Reply) -> &str {
    reply.body["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// An error answer the caller can act on: the status the spec allows and a non-empty message.
#[track_caller]
fn assert_clear_error(reply: &Reply, allowed: &[u16], what: &str) {
    assert!(
        allowed.contains(&reply.status.as_u16()),
        "{what}: answered {} (allowed {allowed:?}): {}",
        reply.status,
        reply.text
    );
    let message = reply.body["error"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "{what}: {} without an error message: {}",
        reply.status,
        reply.text
    );
}

async fn status_of(api: &Api, id: &str) -> Value {
    api.get(&format!("/workspaces/{id}")).await.expect(200)
}

async fn docker_app(tweak: impl FnOnce(&mut molecule_host::Config)) -> TestApp {
    TestApp::spawn_with(DbBackend::Sqlite, |c| {
        docker_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.a2a.connect_timeout_secs = 2;
        tweak(c);
    })
    .await
}

/// A container killed from outside: the health sweep notices and marks the workspace, the
/// policy restarts it; meanwhile A2A calls get a 502/503 with a message, then work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_is_noticed_restarted_and_answers_again() {
    count_panics();
    let before_panics = panics();
    let app = docker_app(|_| {}).await;
    let id = app.create_workspace("Sturdy", None).await;
    app.wait_settled(&id, ONLINE).await;
    let (reply, _) = a2a(&app, &id, "before").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(answer_text(&reply), "Sturdy: before");

    docker(&["kill", &format!("ws-{}", id12(&id))]);
    let killed = Instant::now();

    // Until an answer comes back: every call fails clearly, and promptly.
    let (mut detected, mut errors, mut slowest) = (None, Vec::new(), Duration::ZERO);
    let recovered = loop {
        assert!(
            killed.elapsed() < ONLINE * 2,
            "no answer {:?} after the kill; errors {errors:?}",
            killed.elapsed()
        );
        if detected.is_none() && status_of(&app, &id).await["status"] != "online" {
            detected = Some(killed.elapsed());
        }
        let (reply, took) = a2a(&app, &id, "during").await;
        if reply.status == 200 && answer_text(&reply) == "Sturdy: during" {
            break killed.elapsed();
        }
        // The agent's own answer while it starts up is not the host's error; the host's
        // answers must say what is wrong.
        assert_clear_error(&reply, &[502, 503], "A2A to a killed agent");
        slowest = slowest.max(took);
        errors.push(reply.status.as_u16());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let detected = detected.expect("the host marked the killed agent");
    assert!(
        slowest < Duration::from_secs(5),
        "an A2A error took {slowest:?}"
    );
    assert!(
        app.restart_count(&id).await >= 1,
        "the policy restarted the agent"
    );
    let offline = app
        .get(&format!("/events/{id}"))
        .await
        .expect(200)
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["event_type"] == "WORKSPACE_OFFLINE");
    assert!(offline, "WORKSPACE_OFFLINE was recorded");
    assert_eq!(panics(), before_panics, "nothing panicked");

    figure(
        "killed container: detected after",
        format!("{detected:.1?}"),
    );
    figure(
        "killed container: answering again after",
        format!("{recovered:.1?}"),
    );
    figure(
        "killed container: A2A errors meanwhile",
        format!(
            "{} (502: {}, 503: {}; slowest {slowest:.0?})",
            errors.len(),
            errors.iter().filter(|s| **s == 502).count(),
            errors.iter().filter(|s| **s == 503).count()
        ),
    );
}

/// The Docker engine unreachable for a while: creates and restarts during the outage fail with
/// a clear error (or wait and succeed), nothing panics, the host keeps answering, no workspace
/// stays stuck, and everything recovers once the engine is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_docker_engine_fails_clearly_and_everything_recovers_when_it_returns() {
    count_panics();
    let before_panics = panics();
    let engine = DockerSocketProxy::start();
    let url = engine.url();
    let app = docker_app(move |c| c.runtime.docker_host = Some(url)).await;
    let running = app.create_workspace("Steady", None).await;
    app.wait_settled(&running, ONLINE).await;

    engine.cut();
    let cut = Instant::now();
    let created = app.create_workspace("Newcomer", None).await;
    let restart = app
        .post(&format!("/workspaces/{running}/restart"), json!({}))
        .await;
    assert!(
        restart.status.as_u16() < 300 || restart.status.as_u16() >= 500,
        "a restart during the outage: {} {}",
        restart.status,
        restart.text
    );
    if !restart.status.is_success() {
        assert_clear_error(&restart, &[500, 502, 503], "a restart during the outage");
    }
    // The host stays responsive, and the new workspace either fails with a message or waits.
    let mut slowest_read = Duration::ZERO;
    let outage = Duration::from_secs(8);
    while cut.elapsed() < outage {
        let began = Instant::now();
        app.workspaces().await;
        assert_eq!(app.get("/health").await.status, 200);
        slowest_read = slowest_read.max(began.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during_new = status_of(&app, &created).await;
    let during_old = status_of(&app, &running).await;
    // A provision that failed says why, in its `WORKSPACE_PROVISION_FAILED` event.
    let events = app.get(&format!("/events/{created}")).await.expect(200);
    let why: Vec<String> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
        .map(|e| {
            e["payload"]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    println!(
        "during the outage: new workspace {}, running one {}; provision failures: {why:?}",
        during_new["status"], during_old["status"]
    );
    if during_new["status"] == "failed" {
        assert!(
            why.iter().any(|w| !w.trim().is_empty()),
            "a failed provision says why: {events}"
        );
    }
    assert!(
        slowest_read < Duration::from_secs(2),
        "reads took {slowest_read:?} during the outage"
    );

    engine.restore();
    let restored = Instant::now();
    // Nothing stays stuck: a workspace the outage failed is restarted by its operator (that is
    // the documented way out of `failed`); one still waiting comes online by itself.
    let recovered = eventually(ONLINE * 2, || async {
        let mut all_up = true;
        for id in [&created, &running] {
            let row = status_of(&app, id).await;
            match row["status"].as_str().unwrap_or_default() {
                "online" if !row["last_heartbeat_at"].is_null() => {}
                "failed" | "offline" => {
                    app.post(&format!("/workspaces/{id}/restart"), json!({}))
                        .await;
                    all_up = false;
                }
                _ => all_up = false,
            }
        }
        all_up.then(|| restored.elapsed())
    })
    .await;
    for (id, name) in [(&created, "Newcomer"), (&running, "Steady")] {
        app.wait_settled(id, ONLINE).await;
        let (reply, _) = a2a(&app, id, "after").await;
        assert_eq!(reply.status, 200, "{name} after the outage: {}", reply.text);
        assert_eq!(answer_text(&reply), format!("{name}: after"));
    }
    let answering = restored.elapsed();
    assert_eq!(panics(), before_panics, "nothing panicked");

    figure("engine outage: length", format!("{outage:.0?}"));
    figure(
        "engine outage: new workspace during it",
        during_new["status"].as_str().unwrap_or("?"),
    );
    figure(
        "engine outage: slowest read during it",
        format!("{slowest_read:.0?}"),
    );
    figure(
        "engine outage: all online after return",
        format!("{recovered:.1?}"),
    );
    figure(
        "engine outage: all answering after return",
        format!("{answering:.1?}"),
    );
}

/// An agent that never answers and one that answers garbage: the proxy answers with the
/// documented shapes promptly (busy: 202 queued after the header timeout; garbage: 502), the
/// host stays responsive meanwhile, and the activity log records each failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_agents_get_prompt_documented_answers_and_are_recorded() {
    count_panics();
    let before_panics = panics();
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        c.a2a.response_header_timeout_secs = 2;
        c.a2a.idle_timeout_secs = 2;
    })
    .await;
    let silent = FaultAgent::start(|_| Fault::Slow(Duration::from_secs(3600))).await;
    let garbage = FaultAgent::start(|_| Fault::Garbage).await;
    let (silent_id, _) = app.workspace_at("Silent", None, &silent.url).await;
    let (garbage_id, _) = app.workspace_at("Garbled", None, &garbage.url).await;

    // The silent agent: several callers at once, and the host answers others meanwhile.
    let calls: Vec<_> = (0..3)
        .map(|n| {
            let (api, id) = (app.api.clone(), silent_id.clone());
            tokio::spawn(async move { a2a(&api, &id, &format!("hello {n}")).await })
        })
        .collect();
    let mut slowest_read = Duration::ZERO;
    while calls.iter().any(|c| !c.is_finished()) {
        let began = Instant::now();
        assert_eq!(app.get("/health").await.status, 200);
        app.workspaces().await;
        slowest_read = slowest_read.max(began.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut silent_took = Duration::ZERO;
    for call in calls {
        let (reply, took) = call.await.expect("a call");
        silent_took = silent_took.max(took);
        assert_eq!(reply.status, 202, "a silent agent: {}", reply.text);
        assert_eq!(reply.body["queued"], true, "{}", reply.text);
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            reply.text
        );
    }
    assert!(
        silent_took < Duration::from_secs(6),
        "the header timeout is 2 s; the answer took {silent_took:?}"
    );
    assert!(
        slowest_read < Duration::from_secs(1),
        "reads took {slowest_read:?} while agents hung"
    );

    // The garbage agent: a 502 that says so, at once.
    let (reply, garbage_took) = a2a(&app, &garbage_id, "hello").await;
    assert_clear_error(&reply, &[502], "an agent answering garbage");
    assert!(garbage_took < Duration::from_secs(2), "{garbage_took:?}");

    // Both are in the activity log: the silent agent's calls as queued (it did not answer in
    // time), the garbage as an error saying what was wrong.
    let recorded = |id: String, status: &'static str| {
        let api = app.api.clone();
        async move {
            eventually(Duration::from_secs(10), || async {
                let rows = api.activity(&id, "?type=a2a_receive&limit=50").await;
                rows.into_iter().find(|a| a["status"] == status)
            })
            .await
        }
    };
    let silent_row = recorded(silent_id.clone(), "queued").await;
    let garbage_row = recorded(garbage_id.clone(), "error").await;
    println!("silent agent recorded: {silent_row}\ngarbage agent recorded: {garbage_row}");
    assert_eq!(
        garbage_row["error_detail"], "agent answered 200 with a body that is not JSON",
        "{garbage_row}"
    );
    assert_eq!(panics(), before_panics, "nothing panicked");

    figure(
        "silent agent: 202 queued after",
        format!("{silent_took:.1?}"),
    );
    figure("garbage agent: 502 after", format!("{garbage_took:.0?}"));
    figure(
        "silent agents: slowest read meanwhile",
        format!("{slowest_read:.0?}"),
    );
}

/// The data directory's disk full (a 4 MiB tmpfs holding the SQLite database, filled with a
/// ballast file): writes fail with a clear 5xx and a message, reads keep working, the database
/// stays intact, and once the ballast is gone writes work again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_fails_writes_clearly_keeps_reads_and_recovers_without_a_restart() {
    count_panics();
    let before_panics = panics();
    let disk = Tmpfs::mount("4m");
    let database = disk.path().join("molecule.db");
    let url = format!("sqlite://{}", database.display());
    let dir = disk.path().to_path_buf();
    let mut app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        c.data_dir = dir;
        c.database_url = Some(url.clone().into());
    })
    .await;
    let first = app.create_workspace("Before", None).await;

    let (ballast, bytes) = disk.fill("ballast");
    let full = Instant::now();
    // SQLite reuses its log's space after a checkpoint, so the first writes may still fit;
    // write until a few have been refused.
    let (mut failures, mut written) = (Vec::new(), 0);
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while failures.len() < 6 && full.elapsed() < Duration::from_secs(60) {
        n += 1;
        let began = Instant::now();
        let created = app
            .post("/workspaces", json!({ "name": format!("During {n}") }))
            .await;
        let renamed = app
            .patch(
                &format!("/workspaces/{first}"),
                json!({ "name": format!("Renamed {n}") }),
            )
            .await;
        slowest = slowest.max(began.elapsed());
        for reply in [created, renamed] {
            if reply.status.is_success() {
                written += 1;
                continue;
            }
            assert_clear_error(&reply, &[507], "a write on a full disk");
            failures.push(reply.status.as_u16());
        }
        // Reads keep working.
        let listed = app.workspaces().await;
        assert!(listed.iter().any(|w| w["id"] == first.as_str()));
        assert_eq!(status_of(&app, &first).await["id"], first.as_str());
        assert_eq!(app.get("/health").await.status, 200);
    }
    assert!(
        failures.len() >= 6,
        "with the disk full ({bytes} bytes of ballast) writes were refused: {written} went \
         through, {} failed",
        failures.len()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a write on a full disk took {slowest:?}"
    );
    assert_eq!(integrity(&database).await, "ok", "the database is intact");

    std::fs::remove_file(&ballast).expect("deleting the ballast");
    let freed = Instant::now();
    let again = eventually(Duration::from_secs(15), || async {
        let created = app.post("/workspaces", json!({ "name": "After" })).await;
        created.status.is_success().then(|| freed.elapsed())
    })
    .await;
    app.patch(
        &format!("/workspaces/{first}"),
        json!({ "name": "Renamed after" }),
    )
    .await
    .expect(200);
    assert_eq!(status_of(&app, &first).await["name"], "Renamed after");
    app.stop().await.expect("the host stops cleanly");
    assert_eq!(integrity(&database).await, "ok", "the database is intact");
    assert_eq!(panics(), before_panics, "nothing panicked");

    figure("disk full: ballast", format!("{bytes} bytes"));
    figure(
        "disk full: writes refused (507) / still fitting",
        format!("{} / {written}", failures.len()),
    );
    figure("disk full: slowest write", format!("{slowest:.0?}"));
    figure(
        "disk full: writes again after the ballast went",
        format!("{again:.1?}"),
    );
    figure("disk full: window", format!("{:.1?}", freed - full));
}

/// `PRAGMA integrity_check` through a read-only connection of its own.
async fn integrity(database: &std::path::Path) -> String {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .read_only(true)
        .connect()
        .await
        .expect("opening the database read-only");
    let result: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("running the integrity check");
    result
}
