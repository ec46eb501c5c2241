//! The scheduler at scale: 10,000 schedules due in the same second, on SQLite and on PostgreSQL,
//! fired by one replica's scheduler to real agents over HTTP (a minimal A2A agent on loopback
//! that answers at once). Measures how long after the tick every prompt has reached an agent
//! and how long until every fire is recorded (history, counters, `cron_run` activity, events).
//! Prints the figures; asserts nothing about time. `SCHEDULES_BENCH_COUNT` changes the count.
//! PostgreSQL comes from `MOLECULE_TEST_PG_URL` (`make bench` starts it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::Utc;
use molecule_host::Services;
use molecule_host::config::{Config, RuntimeKind};
use molecule_host::schedules::Scheduler;
use molecule_host::store::Backend;
use molecule_host::store::schedules::{self, ScheduleRow};
use molecule_host::store::status::Status;
use molecule_host::store::testing::TestDatabase;
use molecule_host::store::workspaces::{self, NewWorkspace};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const WORKSPACES: usize = 100;

/// An agent that answers every `message/send` with a short text at once, counting them.
async fn agent(received: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().fallback(axum::routing::post(
        move |axum::Json(body): axum::Json<Value>| {
            let received = received.clone();
            async move {
                received.fetch_add(1, Ordering::Relaxed);
                axum::Json(json!({
                    "jsonrpc": "2.0",
                    "id": body.get("id").cloned().unwrap_or(Value::Null),
                    "result": { "kind": "message", "role": "agent", "parts": [{ "kind": "text", "text": "done" }] },
                }))
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn round(backend: Backend, count: usize) {
    let db = TestDatabase::create(backend).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        database_url: Some(db.url.clone().into()),
        data_dir: data.path().to_path_buf(),
        builtin_extensions_dir: None,
        ..Config::default()
    };
    config.runtime.kind = RuntimeKind::None;
    config.schedules.max_concurrent_fires = 64;
    let svc = Services::start_with_runtime(config, None)
        .await
        .expect("services start");

    let received = Arc::new(AtomicUsize::new(0));
    let url = agent(received.clone()).await;
    let mut ids = Vec::with_capacity(WORKSPACES);
    for w in 0..WORKSPACES {
        let ws = NewWorkspace {
            id: Uuid::new_v4(),
            name: format!("agent-{w}"),
            role: None,
            tier: 2,
            status: Status::Online,
            runtime: "external".into(),
            url: Some(url.clone()),
            parent_id: None,
            workspace_dir: None,
            workspace_access: "none".into(),
            budget_limit: None,
            max_concurrent_tasks: 1000,
            x: 0.0,
            y: 0.0,
            hibernation_idle_minutes: None,
        };
        workspaces::insert(&svc.db, &ws, &[], &json!({}))
            .await
            .unwrap();
        ids.push(ws.id);
    }
    // Every schedule's tick is the same whole second, a little ahead.
    let tick = chrono::DateTime::from_timestamp(Utc::now().timestamp() + 3, 0).unwrap();
    let started = Instant::now();
    for i in 0..count {
        let now = Utc::now();
        let row = ScheduleRow {
            id: Uuid::new_v4(),
            workspace_id: ids[i % WORKSPACES],
            name: format!("s{i}"),
            cron_expr: "0 0 1 1 *".into(),
            timezone: "UTC".into(),
            prompt: format!("job {i}"),
            enabled: true,
            source: "runtime".into(),
            last_run_at: None,
            next_run_at: Some(tick),
            run_count: 0,
            last_status: None,
            last_error: None,
            consecutive_empty_runs: 0,
            consecutive_failures: 0,
            created_at: now,
            updated_at: now,
        };
        schedules::insert(&svc.db, &row).await.unwrap();
    }
    println!(
        "{}: {count} schedules stored in {:.2} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );

    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let scheduler = Scheduler::new(&svc, &tracker, &shutdown);
    let poll = svc.config.schedules.poll_interval();
    let wait = (tick - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let at_tick = Instant::now();
    let mut delivered = None;
    loop {
        scheduler.sweep(&svc).await.expect("a sweep");
        if delivered.is_none() && received.load(Ordering::Relaxed) >= count {
            delivered = Some(at_tick.elapsed());
        }
        if schedules::due(&svc.db, Utc::now(), 1)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    tracker.close();
    tracker.wait().await;
    let recorded = at_tick.elapsed();
    let delivered = delivered.unwrap_or(recorded).min(recorded);
    let sample = schedules::history(
        &svc.db,
        schedules::list(&svc.db, ids[0]).await.unwrap()[0].id,
        10,
    )
    .await
    .unwrap();
    assert_eq!(sample.len(), 1, "each schedule fired once");
    assert_eq!(
        received.load(Ordering::Relaxed),
        count,
        "each prompt arrived once"
    );
    println!(
        "{}: {count} schedules due in the same second: every prompt delivered {:.2} s after the tick ({:.0} fires/s), every fire recorded after {:.2} s",
        backend.name(),
        delivered.as_secs_f64(),
        count as f64 / delivered.as_secs_f64(),
        recorded.as_secs_f64(),
    );
    svc.writes.close().await;
    svc.db.close().await;
}

fn main() {
    let count: usize = std::env::var("SCHEDULES_BENCH_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        round(Backend::Sqlite, count).await;
        round(Backend::Postgres, count).await;
    });
}
