//! Scale-out (PostgreSQL, release build of `molecule`): requests per second through 1, 2 and 3
//! replicas behind nginx (Debian's, round robin with upstream keepalive), and how long an event
//! takes to reach a WebSocket subscriber on another replica compared with one on the replica
//! that recorded it.
//!
//! The load is `GET /workspaces` with the admin token (auth, one query over 50 workspaces, JSON),
//! 2 wrk threads and 32 connections, a 2 s warm-up then 10 s measured per setup. Fan-out: 100
//! renames through replica A, each timed until `WORKSPACE_UPDATED` arrives on A's `/ws` and on C's.
//! Every replica, nginx and wrk run on this machine, so on few cores the replicas share the CPUs
//! the load generator needs: the rps ratios show the overhead of spreading, not a cluster's gain.
//!
//! Needs `make bench-tools` (wrk, nginx) and the private PostgreSQL (`make bench` does both).

use std::time::{Duration, Instant};

use molecule_e2e::load::{Stats, run_wrk, start_nginx, tool, wrk_script};
use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{ADMIN_TOKEN, EventStream, free_port};
use serde_json::json;

const CONNECTIONS: u32 = 32;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(10);
const WORKSPACES: usize = 50;
const RENAMES: usize = 100;

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(bench());
}

async fn bench() {
    assert!(
        molecule_host::config::test_postgres_url().is_some(),
        "MOLECULE_TEST_PG_URL is not set: run `make bench` (it starts the private PostgreSQL)"
    );
    let (wrk, nginx) = (tool("wrk"), tool("nginx"));
    let templates = tempfile::tempdir().expect("a templates dir");
    let set = ReplicaSet::start(3, Agents::None, templates.path()).await;
    let mut ids = Vec::new();
    for n in 0..WORKSPACES {
        ids.push(set[0].api.create_workspace(&format!("ws-{n}"), None).await);
    }

    let dir = tempfile::tempdir().expect("a scratch dir");
    let script = dir.path().join("get.lua");
    std::fs::write(&script, wrk_script("GET", None, Some(ADMIN_TOKEN))).expect("a wrk script");
    let mut rows: Vec<(usize, Stats)> = Vec::new();
    for count in 1..=3 {
        let upstreams: Vec<String> = (0..count).map(|i| set[i].api.addr.to_string()).collect();
        let nginx_dir = dir.path().join(format!("nginx-{count}"));
        std::fs::create_dir_all(&nginx_dir).expect("an nginx dir");
        let port = free_port();
        let mut guard = start_nginx(&nginx, &nginx_dir, port, &upstreams);
        let url = format!("http://127.0.0.1:{port}/workspaces");
        let client = reqwest::Client::new();
        let ready = Instant::now();
        loop {
            let answered = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(guard.exited().is_none(), "nginx exited");
            assert!(
                ready.elapsed() < Duration::from_secs(10),
                "nginx never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (wrk, script, url2) = (wrk.clone(), script.clone(), url.clone());
        let stats = tokio::task::spawn_blocking(move || {
            run_wrk(&wrk, &script, &url2, WARMUP, CONNECTIONS);
            run_wrk(&wrk, &script, &url2, MEASURED, CONNECTIONS)
        })
        .await
        .expect("wrk ran");
        assert_eq!(stats.not_ok(), 0, "every request answered 200: {stats:?}");
        assert_eq!(stats.socket_errors, 0, "no socket errors: {stats:?}");
        rows.push((count, stats));
        drop(guard);
    }

    let mut on_a = set[0].api.events().await;
    let mut on_c = set[2].api.events().await;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for n in 0..RENAMES {
        let id = &ids[n % ids.len()];
        let started = Instant::now();
        set[0]
            .api
            .patch(
                &format!("/workspaces/{id}"),
                json!({ "name": format!("renamed-{n}") }),
            )
            .await
            .expect(200);
        let (on_a_at, on_c_at) = tokio::join!(
            arrival(&mut on_a, id, started),
            arrival(&mut on_c, id, started)
        );
        local.push(on_a_at);
        remote.push(on_c_at);
    }

    println!(
        "\nGET /workspaces ({WORKSPACES} rows) through nginx, wrk 2 threads x {CONNECTIONS} connections, {}s after a {}s warm-up",
        MEASURED.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "replicas", "req/s", "vs 1", "p50 ms", "p90 ms", "p99 ms"
    );
    let base = rows[0].1.rps;
    for (count, stats) in &rows {
        println!(
            "{:<10} {:>10.0} {:>8.2}x {:>9.2} {:>9.2} {:>9.2}",
            count,
            stats.rps,
            stats.rps / base,
            stats.p50 / 1e3,
            stats.p90 / 1e3,
            stats.p99 / 1e3
        );
    }
    let (l50, l99) = percentiles(&mut local);
    let (r50, r99) = percentiles(&mut remote);
    println!(
        "\nevent fan-out: PATCH on replica A until WORKSPACE_UPDATED arrives ({RENAMES} renames)"
    );
    println!("{:<26} {:>9} {:>9}", "subscriber", "p50 ms", "p99 ms");
    println!("{:<26} {:>9.2} {:>9.2}", "on A (same replica)", l50, l99);
    println!("{:<26} {:>9.2} {:>9.2}", "on C (via NOTIFY)", r50, r99);
    println!("cross-replica cost at p50: {:.2} ms", r50 - l50);
}

/// How long after `started` the stream delivered `WORKSPACE_UPDATED` for `id`, in ms.
async fn arrival(stream: &mut EventStream, id: &str, started: Instant) -> f64 {
    loop {
        let frame = stream.next().await;
        if frame["event"] == "WORKSPACE_UPDATED" && frame["workspace_id"] == id {
            return started.elapsed().as_secs_f64() * 1e3;
        }
    }
}

fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}
