//! What replicas hold in memory (live tokens, the A2A routing table) follows changes made on
//! another replica at once, through the event relay: the replicas here are told to trust what
//! they hold for a whole minute, so only the relay can make them let go within the second.

use std::time::{Duration, Instant};

use molecule_e2e::replicas::{Agents, ReplicaSet};
use molecule_e2e::{Api, Fault, FaultAgent};
use serde_json::json;

/// How soon a change on one replica must hold on every other.
const WITHIN: Duration = Duration::from_secs(1);

/// Polls `status_of` until it answers `want`; how long that took after `since`, or a failure
/// naming what it answered instead.
async fn until_status<F, Fut>(what: &str, since: Instant, want: u16, mut status_of: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    loop {
        let status = status_of().await;
        if status == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < WITHIN,
            "{what}: still {status} on the other replica {:?} after the change",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(api: &Api, path: &str) -> u16 {
    api.get(path).await.status.as_u16()
}

async fn send(api: &Api, id: &str) -> u16 {
    api.post(
        &format!("/workspaces/{id}/a2a"),
        json!({ "params": { "message": { "content": "hello" } } }),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_removed_workspaces_stop_working_on_every_replica_within_a_second() {
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let templates = tempfile::tempdir().expect("a templates dir");
    let mut hosts = ReplicaSet::new(
        molecule_host::store::Backend::Postgres,
        Agents::None,
        templates.path(),
    )
    .await;
    hosts.settings = "cache_revalidate_ms = 60000".into();
    let (a, b) = (hosts.spawn().await, hosts.spawn().await);
    let (on_a, on_b) = (hosts[a].api.clone(), hosts[b].api.clone());

    let (id, _) = on_a.workspace_at("echo", None, &agent.url).await;
    let minted = on_a
        .post(&format!("/workspaces/{id}/tokens"), json!({}))
        .await
        .expect(201);
    let workspace_token = minted["auth_token"].as_str().expect("a token").to_owned();
    let minted = on_a
        .post("/org/tokens", json!({ "name": "ci" }))
        .await
        .expect(201);
    let org_token = minted["auth_token"].as_str().expect("a token").to_owned();
    let org_token_id = minted["id"].as_str().expect("an id").to_owned();

    // B holds all three in memory now.
    let org_on_b = on_b.with_token(&org_token);
    let workspace_on_b = on_b.with_token(&workspace_token);
    let tokens_path = format!("/workspaces/{id}/tokens");
    assert_eq!(status(&org_on_b, "/org/tokens").await, 200);
    assert_eq!(status(&workspace_on_b, &tokens_path).await, 200);
    assert_eq!(send(&on_b, &id).await, 200);

    on_a.delete(&format!("/org/tokens/{org_token_id}"))
        .await
        .expect(200);
    let org_took = until_status("a revoked org token", Instant::now(), 401, || {
        status(&org_on_b, "/org/tokens")
    })
    .await;

    let listed = on_a.get(&tokens_path).await.expect(200);
    let token_id = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["expires_at"].is_string())
        .and_then(|t| t["id"].as_str())
        .expect("the minted token")
        .to_owned();
    on_a.delete(&format!("{tokens_path}/{token_id}"))
        .await
        .expect(200);
    let workspace_took = until_status("a revoked workspace token", Instant::now(), 401, || {
        status(&workspace_on_b, &tokens_path)
    })
    .await;

    on_a.delete(&format!("/workspaces/{id}")).await.expect(200);
    let route_took = until_status("a removed workspace's route", Instant::now(), 404, || {
        send(&on_b, &id)
    })
    .await;
    println!(
        "seen on the other replica after: org token {org_took:?}, workspace token {workspace_took:?}, removal {route_took:?}"
    );
}
