//! Lifecycle load benchmarks against a real host (in-process, SQLite) and real agents:
//!
//! - create → online for 10 workspaces created at once, on the process runtime (the baseline)
//!   and on Docker, with the ratio between them;
//! - the restart-coalescing storm: 100 file writes to one online workspace at once, the restart
//!   cycles they caused (without coalescing it would be one per trigger) and how long the
//!   workspace took to settle online again.
//!
//! Each scenario runs `ROUNDS` times and reports the median. It needs `make agent` and, for the
//! Docker rows, `make image` (`make bench` runs both).

use std::time::{Duration, Instant};

use molecule_e2e::{DbBackend, Runtime, TestApp, eventually};
use serde_json::{Value, json};

const WORKSPACES: usize = 10;
const TRIGGERS: usize = 100;
const ROUNDS: usize = 3;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn statuses(app: &TestApp) -> Vec<Value> {
    app.get("/workspaces")
        .await
        .expect(200)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn all_online(app: &TestApp, ids: &[String]) -> bool {
    let rows = statuses(app).await;
    ids.iter().all(|id| {
        rows.iter()
            .any(|w| w["id"] == id.as_str() && w["status"] == "online")
    })
}

/// Seconds from the first create request until every one of `WORKSPACES` agents is online.
async fn create_to_online(runtime: Runtime) -> Duration {
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| {
        runtime.configure(c);
        c.runtime.provision_concurrency = WORKSPACES;
    })
    .await;
    let started = Instant::now();
    let creates = (0..WORKSPACES).map(|n| {
        let app = &app;
        async move { app.create_workspace(&format!("bench-{n}"), None).await }
    });
    let ids = futures::future::join_all(creates).await;
    eventually(Duration::from_secs(180), || async {
        all_online(&app, &ids).await.then_some(())
    })
    .await;
    started.elapsed()
}

/// (restart cycles caused, time until the workspace is online again) for `TRIGGERS` writes.
async fn storm(runtime: Runtime) -> (usize, Duration) {
    let app = TestApp::spawn_with(DbBackend::Sqlite, |c| runtime.configure(c)).await;
    let id = app.create_workspace("storm", None).await;
    eventually(Duration::from_secs(120), || async {
        all_online(&app, std::slice::from_ref(&id))
            .await
            .then_some(())
    })
    .await;
    let started = Instant::now();
    let writes = (0..TRIGGERS).map(|n| {
        let (app, id) = (&app, &id);
        async move {
            app.put(
                &format!("/workspaces/{id}/files/notes/{n}.md"),
                json!({ "content": format!("note {n}") }),
            )
            .await
            .expect(200);
        }
    });
    futures::future::join_all(writes).await;
    // Settled: online, and no cycle started for two seconds (the clamp delays a follow-up).
    let mut last_change = (usize::MAX, Instant::now());
    let mut online_since: Option<Instant> = None;
    loop {
        let cycles = app.restart_count(&id).await;
        if cycles != last_change.0 {
            last_change = (cycles, Instant::now());
            online_since = None;
        }
        if all_online(&app, std::slice::from_ref(&id)).await {
            let since = *online_since.get_or_insert_with(Instant::now);
            if cycles > 0 && last_change.1.elapsed() > Duration::from_secs(2) {
                return (cycles, since.duration_since(started));
            }
        } else {
            online_since = None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the storm never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn docker_ready() -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", molecule_e2e::AGENT_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let mut runtimes = vec![Runtime::Process];
    if docker_ready() {
        runtimes.push(Runtime::Docker);
    } else {
        println!(
            "lifecycle bench: no Docker engine or image; run `make image` for the Docker rows"
        );
    }
    let mut online = Vec::new();
    let mut storms = Vec::new();
    for runtime in &runtimes {
        let mut samples = Vec::new();
        for _ in 0..ROUNDS {
            samples.push(create_to_online(*runtime).await);
        }
        online.push((*runtime, median(samples)));
        let mut cycles = Vec::new();
        let mut settle = Vec::new();
        for _ in 0..ROUNDS {
            let (c, d) = storm(*runtime).await;
            cycles.push(c);
            settle.push(d);
        }
        cycles.sort_unstable();
        storms.push((*runtime, cycles, median(settle)));
    }

    println!();
    println!("lifecycle: create → online, {WORKSPACES} workspaces at once (median of {ROUNDS})");
    let baseline = online[0].1;
    for (runtime, took) in &online {
        println!(
            "  {:<8} {:>9.2} s   {:>6.2} s/workspace   ratio to process {:.2}x",
            format!("{runtime:?}").to_lowercase(),
            took.as_secs_f64(),
            took.as_secs_f64() / WORKSPACES as f64,
            took.as_secs_f64() / baseline.as_secs_f64(),
        );
    }
    println!(
        "lifecycle: restart storm, {TRIGGERS} file writes at once to one workspace ({ROUNDS} rounds)"
    );
    for (runtime, cycles, settle) in &storms {
        println!(
            "  {:<8} cycles {:?} (uncoalesced: {TRIGGERS} each)   settled online in {:.2} s (median)",
            format!("{runtime:?}").to_lowercase(),
            cycles,
            settle.as_secs_f64(),
        );
    }
}
