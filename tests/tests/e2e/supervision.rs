//! The host's own background loops, supervised: `GET /admin/liveness` lists every loop with its
//! last tick, and a loop whose pass hangs (a fault hook stalls one) shows as stale there while
//! `GET /health` says `degraded`; a healthy host says `ok` everywhere. Who may read it is the
//! route table's spec (`security_routes`).

use std::time::Duration;

use molecule_e2e::{DbBackend, TestApp, eventually, on_both_backends};
use serde_json::Value;

on_both_backends!(
    a_healthy_host_lists_every_loop_fresh,
    a_stalled_sweeper_shows_in_liveness_and_degrades_health,
);

async fn a_healthy_host_lists_every_loop_fresh(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    // Every loop has started its first pass (they start at once).
    let report = eventually(Duration::from_secs(20), || async {
        let report = app.get("/admin/liveness").await.expect(200);
        let subsystems = report["subsystems"].as_object()?;
        let ticked = ["liveness", "kv-expiry", "scheduler", "extension-sync"]
            .iter()
            .all(|name| {
                subsystems
                    .get(*name)
                    .is_some_and(|s| !s["last_tick_at"].is_null())
            });
        ticked.then_some(report)
    })
    .await;
    assert_eq!(report["status"], "ok", "{report}");
    let subsystems = report["subsystems"].as_object().expect("subsystems");
    for (name, subsystem) in subsystems {
        assert_eq!(subsystem["stale"], false, "{name}: {subsystem}");
        assert!(subsystem["seconds_ago"].is_u64(), "{name}: {subsystem}");
    }
    assert_eq!(subsystems["kv-expiry"]["interval_secs"], 60);
    // The relay between replicas is a loop only where there are replicas to relay for.
    assert_eq!(
        subsystems.contains_key("event-relay"),
        backend == DbBackend::Postgres,
        "{report}"
    );
    if backend == DbBackend::Postgres {
        assert_eq!(subsystems["event-relay"]["interval_secs"], Value::Null);
    }
    assert_eq!(app.get("/health").await.expect(200)["status"], "ok");
}

async fn a_stalled_sweeper_shows_in_liveness_and_degrades_health(backend: DbBackend) {
    // The key-value expiry sweep runs every second and hangs in its first pass; a loop is stale
    // after three intervals (at least two seconds here).
    let app = TestApp::spawn_with(backend, |c| {
        c.kv.expiry_sweep_secs = 1;
        c.supervision.stale_floor_secs = 2;
        c.faults.stalled_loop = Some("kv-expiry");
    })
    .await;
    let report = eventually(Duration::from_secs(20), || async {
        let report = app.get("/admin/liveness").await.expect(200);
        (report["subsystems"]["kv-expiry"]["stale"] == true).then_some(report)
    })
    .await;
    assert_eq!(report["status"], "degraded", "{report}");
    let stalled = &report["subsystems"]["kv-expiry"];
    assert!(
        stalled["seconds_ago"].as_u64().expect("seconds") >= 3,
        "{stalled}"
    );
    assert!(
        !stalled["last_tick_at"].is_null(),
        "it ticked once: {stalled}"
    );
    // Only that loop: the others keep ticking.
    assert_eq!(
        report["subsystems"]["extension-sync"]["stale"], false,
        "{report}"
    );
    // Health says so without naming the loop (it is public).
    let health = app.anonymous().get("/health").await.expect(200);
    assert_eq!(health, serde_json::json!({ "status": "degraded" }));
}
