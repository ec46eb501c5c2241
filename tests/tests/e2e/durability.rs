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

/// One host process on a fresh database, an echo agent as a workspace, and `CALLS` calls to it
/// answered; the host is `hosts[0]`, the echo agent lives as long as the returned guard.
async fn host_after_calls(
    backend: DbBackend,
) -> (ReplicaSet, String, FaultAgent, tempfile::TempDir) {
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(backend, Agents::None, templates.path()).await;
    let first = hosts.spawn().await;
    let api = hosts[first].api.clone();
    let (id, _) = api.workspace_at("echo", None, &agent.url).await;
    calls(&api, &id).await;
    (hosts, id, agent, templates)
}

/// The `a2a_receive` rows a fresh host on the same database finds.
async fn received_after_restart(hosts: &mut ReplicaSet, id: &str) -> usize {
    let next = hosts.spawn().await;
    let api = hosts[next].api.clone();
    received(&api, id).await
}

async fn a_graceful_stop_stores_every_queued_activity_row(backend: DbBackend) {
    let (mut hosts, id, _agent, _templates) = host_after_calls(backend).await;
    // No pause: whatever is still queued when the stop arrives is stored by the shutdown.
    hosts[0].stop();
    let kept = received_after_restart(&mut hosts, &id).await;
    assert_eq!(kept, CALLS, "{}", hosts[0].log());
}

async fn a_killed_host_keeps_the_activity_of_calls_answered_before_the_kill(backend: DbBackend) {
    let (mut hosts, id, _agent, _templates) = host_after_calls(backend).await;
    // A writer idle between calls stores each row within milliseconds of its answer; a second
    // is far beyond that, and anything lost here would be lost for good.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hosts[0].kill();
    assert_eq!(received_after_restart(&mut hosts, &id).await, CALLS);
}
