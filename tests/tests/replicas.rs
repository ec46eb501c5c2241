//! Scale-out: three `molecule serve` processes on one PostgreSQL database behave as one host.
//! Agents run in Docker, whose engine every replica shares.
//!
//! One spec in phases, because starting replicas and agents is the slow part:
//! 1. a workspace created through replica A is visible on C and streamed to a WebSocket on C;
//! 2. every sweeper has exactly one lease holder and only the holder's passes grow (counted from
//!    each replica's `/metrics`);
//! 3. an org import sent to B completes while A, the sweepers' holder, is killed (SIGKILL)
//!    meanwhile; the sweepers move to another replica within one interval; a re-run creates
//!    nothing;
//! 4. a replacement replica joins, and a 10-way restart storm spread over the three live
//!    replicas causes at most two restart cycles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{Api, eventually, restart_claimed};
use serde_json::json;

/// Every sweeper that takes a lease, and whether its interval (1 s here, the scheduler's 500 ms)
/// is short enough to count passes in a few seconds (`provision-timeout` sweeps every 30 s).
const SWEEPERS: &[(&str, bool)] = &[
    ("liveness", true),
    ("plugin-drift", true),
    ("a2a-queue-expiry", true),
    ("delayed-restarts", true),
    ("plugin-swap-dirs", true),
    ("provision-timeout", false),
    ("health", true),
    ("orphans", true),
    ("scheduler", true),
];
/// The sweep interval every replica is configured with.
const INTERVAL: Duration = Duration::from_secs(1);

const HELD: &str = "molecule_sweeper_lease_held";
const PASSES: &str = "molecule_sweeper_passes_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_postgres_behave_as_one_host() {
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../org-templates");
    let mut set = ReplicaSet::start(3, Agents::Docker, &templates).await;
    let (a, b, c) = (0, 1, 2);

    // 1. Created on A, visible and streamed on C.
    let mut stream_c = set[c].api.events().await;
    let id = set[a].api.create_workspace("Across", None).await;
    let row = set[c]
        .api
        .get(&format!("/workspaces/{id}"))
        .await
        .expect(200);
    assert_eq!(row["name"], "Across");
    let seen = stream_c.until("WORKSPACE_ONLINE").await;
    let about_it: Vec<&str> = seen
        .iter()
        .filter(|(_, frame)| frame["workspace_id"] == id.as_str())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        about_it.contains(&"WORKSPACE_PROVISIONING")
            && about_it.last() == Some(&"WORKSPACE_ONLINE"),
        "C streamed the workspace A created: {about_it:?}"
    );

    // 2. One holder per sweeper, and only the holder sweeps.
    let holders = wait_for_holders(&set, &[a, b, c], |_| true, Duration::from_secs(10)).await;
    let before = passes(&set, &[a, b, c]).await;
    tokio::time::sleep(INTERVAL * 4).await;
    let after = passes(&set, &[a, b, c]).await;
    for (sweeper, fast) in SWEEPERS {
        let holder = holders[*sweeper];
        for i in [a, b, c] {
            let grew = after[i].get(*sweeper).copied().unwrap_or(0.0)
                - before[i].get(*sweeper).copied().unwrap_or(0.0);
            if i == holder {
                if *fast {
                    assert!(grew >= 2.0, "{sweeper} ran on its holder ({grew} passes)");
                }
            } else {
                assert_eq!(grew, 0.0, "{sweeper} also ran on {}", set[i].name);
            }
        }
    }
    // A started first, so it took every lease; the kill below hands them all over.
    assert!(
        holders.values().all(|&h| h == a),
        "the first replica holds every lease: {holders:?}"
    );

    // 3. An import sent to B completes while A is killed; the sweepers move within an interval.
    let import = {
        let api = set[b].api.clone();
        tokio::spawn(async move { api.post("/org/import", json!({ "dir": "demo" })).await })
    };
    let mut stream_b = set[b].api.events().await;
    stream_b.until("WORKSPACE_PROVISIONING").await;
    set[a].kill();
    let killed = Instant::now();
    // Each sweeper moves at the next tick of another replica: 1 s here, except
    // provision-timeout's 30 s, checked once the import is done.
    let fast = |name: &str| SWEEPERS.iter().any(|(n, fast)| *n == name && *fast);
    let new_holders = wait_for_holders(&set, &[b, c], fast, Duration::from_secs(10)).await;
    let handover = killed.elapsed();
    println!("sweeper leases handed over {handover:?} after the holder was killed");
    assert!(
        handover <= INTERVAL * 2,
        "the leases moved within one interval (plus scrape time): {handover:?}"
    );
    // The new holder really sweeps.
    let liveness_holder = new_holders["liveness"];
    let start = set[liveness_holder].metric(PASSES).await["liveness"];
    eventually(Duration::from_secs(5), || async {
        (set[liveness_holder].metric(PASSES).await["liveness"] > start).then_some(())
    })
    .await;

    let first = import.await.expect("the import task").expect(201);
    let count = first["count"].as_u64().expect("a count");
    assert_eq!(first["created_count"].as_u64(), Some(count));
    let ids: Vec<String> = first["workspaces"]
        .as_array()
        .expect("workspaces")
        .iter()
        .map(|w| w["id"].as_str().expect("an id").to_owned())
        .collect();
    let live = set[c].api.clone();
    eventually(Duration::from_secs(120), || async {
        for id in &ids {
            let row = live.get(&format!("/workspaces/{id}")).await.expect(200);
            if row["status"] != "online" {
                return None;
            }
        }
        Some(())
    })
    .await;
    wait_for_holders(&set, &[b, c], |_| true, Duration::from_secs(35)).await;
    let again = set[c]
        .api
        .post("/org/import", json!({ "dir": "demo", "mode": "merge" }))
        .await
        .expect(201);
    assert_eq!(again["created_count"], 0, "a re-run is a no-op: {again}");
    assert_eq!(again["skipped_count"].as_u64(), Some(count));

    // 4. A replacement joins; a 10-way restart storm over three replicas: at most two cycles.
    let d = set.spawn().await;
    let target = ids[0].clone();
    let apis: Vec<Api> = [b, c, d].iter().map(|&i| set[i].api.clone()).collect();
    let storm: Vec<_> = (0..10)
        .map(|n| {
            let api = apis[n % apis.len()].clone();
            let path = format!("/workspaces/{target}/restart");
            tokio::spawn(async move { api.post(&path, json!({})).await.status.as_u16() })
        })
        .collect();
    for request in storm {
        let status = request.await.expect("a restart request");
        assert!(status < 300, "restart answered {status}");
    }
    eventually(Duration::from_secs(120), || async {
        let row = live.get(&format!("/workspaces/{target}")).await.expect(200);
        let claimed = restart_claimed(set.database_url(), &target).await;
        (row["status"] == "online" && !claimed).then_some(())
    })
    .await;
    let cycles = live.restart_count(&target).await;
    println!("10 restart requests over 3 replicas ran {cycles} cycle(s)");
    assert!((1..=2).contains(&cycles), "{cycles} restart cycles");
}

/// The holder of each sweeper's lease among `replicas`, checking there is never more than one.
/// `sweepers` says which must have one; `within` how soon.
async fn wait_for_holders(
    set: &ReplicaSet,
    replicas: &[usize],
    sweepers: impl Fn(&str) -> bool,
    within: Duration,
) -> BTreeMap<&'static str, usize> {
    let deadline = Instant::now() + within;
    loop {
        let held = holders_of(set, replicas).await;
        if SWEEPERS
            .iter()
            .all(|(name, _)| !sweepers(name) || held.contains_key(name))
        {
            return held;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for &i in replicas {
                report += &format!("{}: {:?}\n", set[i].name, set[i].metric(HELD).await);
            }
            panic!("not every sweeper has a holder: {held:?}\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Who holds which lease now; panics when two replicas claim one.
async fn holders_of(set: &ReplicaSet, replicas: &[usize]) -> BTreeMap<&'static str, usize> {
    let mut held = BTreeMap::new();
    for &i in replicas {
        let gauges = set[i].metric(HELD).await;
        for (sweeper, _) in SWEEPERS {
            if gauges.get(*sweeper) == Some(&1.0)
                && let Some(other) = held.insert(*sweeper, i)
            {
                panic!(
                    "{sweeper} is held by {} and {}",
                    set[other].name, set[i].name
                );
            }
        }
    }
    held
}

async fn passes(set: &ReplicaSet, replicas: &[usize]) -> Vec<BTreeMap<String, f64>> {
    let mut all = vec![BTreeMap::new(); set.replicas.len()];
    for &i in replicas {
        all[i] = set[i].metric(PASSES).await;
    }
    all
}
