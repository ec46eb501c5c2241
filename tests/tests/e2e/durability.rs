//! What the host keeps when it stops: the activity rows of A2A calls are stored in batches off
//! the answer path, so a graceful stop stores every one still queued, and a host killed with
//! SIGKILL loses only those of the last moments before the kill.

use std::time::Duration;

use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{Api, DbBackend, Fault, FaultAgent};
use serde_json::json;

molecule_e2e::on_both_backends!(
    a_graceful_stop_stores_every_queued_activity_row,
    a_killed_host_keeps_the_activity_of_calls_answered_before_the_kill,
);

const CALLS: usize = 60;

/// `CALLS` A2A calls from the canvas to an echo agent, all answered 200.
async fn calls(api: &Api, id: &str) {
    for n in 0..CALLS {
        api.post(
            &format!("/workspaces/{id}/a2a"),
            json!({ "params": { "message": { "content": format!("call {n}") } } }),
        )
        .await
        .expect(200);
    }
}

async fn received(api: &Api, id: &str) -> usize {
    api.get(&format!(
        "/workspaces/{id}/activity?type=a2a_receive&limit=500"
    ))
    .await
    .expect(200)
    .as_array()
    .expect("a list")
    .len()
}

async fn a_graceful_stop_stores_every_queued_activity_row(backend: DbBackend) {
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::None, templates.path()).await;
    let first = hosts.spawn().await;
    let api = hosts[first].api.clone();
    let (id, _) = api.workspace_at("echo", None, &agent.url).await;
    calls(&api, &id).await;
    // No pause: whatever is still queued when the stop arrives is stored by the shutdown.
    hosts[first].stop();
    let next = hosts.spawn().await;
    let api = hosts[next].api.clone();
    assert_eq!(received(&api, &id).await, CALLS, "{}", hosts[first].log());
}

async fn a_killed_host_keeps_the_activity_of_calls_answered_before_the_kill(backend: DbBackend) {
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::None, templates.path()).await;
    let first = hosts.spawn().await;
    let api = hosts[first].api.clone();
    let (id, _) = api.workspace_at("echo", None, &agent.url).await;
    calls(&api, &id).await;
    // A writer idle between calls stores each row within milliseconds of its answer; a second
    // is far beyond that, and anything lost here would be lost for good.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hosts[first].kill();
    let next = hosts.spawn().await;
    let api = hosts[next].api.clone();
    assert_eq!(received(&api, &id).await, CALLS);
}
