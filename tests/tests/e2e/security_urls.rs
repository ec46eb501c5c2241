//! Attack specs for agent URLs (issue 17, item 7): in production, registration and workspace
//! creation refuse URLs that reach the host's own machine or a private network, however the
//! address is spelled and whatever a name resolves to; the runtime's own URLs still register;
//! and the proxy never connects to an address that a name rebinds to after the check.
//!
//! The names below are invented and answered through `Config::faults.dns`, so no spec asks the
//! machine's resolver. [`PUBLIC`] is only ever an answer at the check: nothing connects to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use molecule_e2e::{
    DbBackend, Fault, FaultAgent, Runtime, TestApp, eventually, id12, on_both_backends,
    process_runtime,
};
use molecule_host::Config;
use serde_json::{Value, json};

/// A public address (outside every special range); answered at checks, never connected to.
const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn production(config: &mut Config) {
    config.env = molecule_host::config::Environment::Production;
    config.secrets_encryption_key = Some("0123456789abcdef0123456789abcdef".to_owned().into());
}

/// Names the refusal spec invents, and what they answer.
fn invented_names(config: &mut Config) {
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    config
        .faults
        .dns
        .closed()
        .answer("loopback.agents.example", &[LOOPBACK])
        .answer("mapped.agents.example", &[mapped])
        .answer("six.agents.example", &[IpAddr::V6(Ipv6Addr::LOCALHOST)])
        .answer("private.agents.example", &["10.0.0.7".parse().unwrap()])
        .answer("lan.agents.example", &["192.168.1.20".parse().unwrap()])
        .answer("mixed.agents.example", &[PUBLIC, LOOPBACK])
        .answer(
            "metadata.agents.example",
            &["169.254.169.254".parse().unwrap()],
        )
        .answer("nowhere.agents.example", &[])
        .answer("public.agents.example", &[PUBLIC]);
}

/// Agent URLs a production host must refuse: loopback in every spelling the WHATWG parser
/// accepts, loopback and private names, private ranges and their IPv4-mapped forms.
const REFUSED: &[&str] = &[
    "http://2130706433:8000",
    "http://127.1:8000",
    "http://0x7f000001:8000",
    "http://0177.0.0.1:8000",
    "http://0x7f.0.0.1:8000",
    "http://127.0.0.1:8000",
    "http://127.9.9.9:8000",
    "http://127%2E0%2E0%2E1:8000",
    "http://0.0.0.0:8000",
    "http://0:8000",
    "http://localhost:8000",
    "http://LocalHost:8000",
    "http://localhost.:8000",
    "http://agent.localhost:8000",
    "http://[::1]:8000",
    "http://[0:0:0:0:0:0:0:1]:8000",
    "http://[::ffff:127.0.0.1]:8000",
    "http://[::ffff:7f00:1]:8000",
    "http://10.1.2.3:8000",
    "http://172.16.0.1:8000",
    "http://172.31.255.254:8000",
    "http://192.168.1.10:8000",
    "http://[fc00::1]:8000",
    "http://[fd12:3456::1]:8000",
    "http://[::ffff:10.0.0.1]:8000",
    "http://[::ffff:172.20.0.1]:8000",
    "http://[::ffff:192.168.0.1]:8000",
    "http://169.254.169.254/latest",
    "http://100.64.0.1:8000",
    "http://240.0.0.1:8000",
    "http://loopback.agents.example:8000",
    "http://LOOPBACK.agents.example.:8000",
    "http://mapped.agents.example:8000",
    "http://six.agents.example:8000",
    "http://private.agents.example:8000",
    "http://lan.agents.example:8000",
    "http://mixed.agents.example:8000",
    "http://metadata.agents.example:8000",
    "http://user@public.agents.example:8000",
];

async fn stored_url(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/workspaces/{id}")).await.expect(200)["url"].clone()
}

async fn production_refuses_agent_urls_that_reach_loopback_or_private_networks(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        production(c);
        invented_names(c);
    })
    .await;
    let id = app.create_workspace("Target", None).await;
    let (public_id, _) = app
        .workspace_at("Public", None, "http://public.agents.example:8000/a2a")
        .await;
    for url in REFUSED {
        let refused = app
            .post("/registry/register", json!({ "id": public_id, "url": url }))
            .await;
        assert_eq!(refused.status, 400, "registering {url}: {}", refused.text);
        let created = app
            .post(
                "/workspaces",
                json!({ "name": "External", "external": true, "url": url }),
            )
            .await;
        assert_eq!(created.status, 400, "creating at {url}: {}", created.text);
    }
    assert_eq!(
        stored_url(&app, &public_id).await,
        "http://public.agents.example:8000/a2a"
    );

    // A name that does not resolve is refused in every mode, and the answer says why.
    let nowhere = json!({ "id": id, "url": "http://nowhere.agents.example:8000" });
    let refused = app.post("/registry/register", nowhere).await.expect(400);
    assert_eq!(
        refused["error"],
        "agent url names a host that does not resolve"
    );
    assert_eq!(stored_url(&app, &id).await, Value::Null);
}

/// Outside production, local agents stay allowed: loopback and private addresses register; a
/// name that does not resolve still does not.
async fn outside_production_local_agents_register_but_unresolvable_names_do_not(
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, invented_names).await;
    let id = app.create_workspace("Local", None).await;
    for url in [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://10.1.2.3:8000",
        "http://[fd12:3456::1]:8000",
        "http://loopback.agents.example:8000",
        "http://private.agents.example:8000",
    ] {
        let body = json!({ "id": id, "url": url });
        let registered = app.post("/registry/register", body).await;
        assert_eq!(registered.status, 200, "{url}: {}", registered.text);
    }
    for url in [
        "http://169.254.169.254/latest",
        "http://metadata.agents.example:8000",
        "http://nowhere.agents.example:8000",
    ] {
        let body = json!({ "id": id, "url": url });
        let refused = app.post("/registry/register", body).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.text);
    }
}

/// The rebinding attack: the name answers a public address when the proxy checks it and
/// 127.0.0.1 when the host connects, where a listener waits. The host must not connect.
async fn a_name_that_rebinds_to_loopback_after_the_check_is_never_connected_to(backend: DbBackend) {
    let listener = FaultAgent::start(|_| Fault::Answer).await;
    let port = listener.url.rsplit(':').next().unwrap().to_owned();
    let app = TestApp::spawn_with(backend, |c| {
        production(c);
        c.faults
            .dns
            .closed()
            .rebind("rebind.agents.example", &[PUBLIC], &[LOOPBACK]);
    })
    .await;
    let url = format!("http://rebind.agents.example:{port}");
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Rebinder", "external": true, "url": url }),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    let reply = app
        .post(
            &format!("/workspaces/{id}/a2a"),
            json!({ "params": { "message": { "content": "hello" } } }),
        )
        .await;
    assert_ne!(reply.status, 200, "the call went through: {}", reply.text);
    assert!(
        listener.requests().is_empty(),
        "the host connected to the loopback listener: {:?}",
        listener.requests()
    );
}

on_both_backends!(
    production_refuses_agent_urls_that_reach_loopback_or_private_networks,
    outside_production_local_agents_register_but_unresolvable_names_do_not,
    a_name_that_rebinds_to_loopback_after_the_check_is_never_connected_to,
);

/// A production host's own runtimes keep working: a process agent registers at the loopback URL
/// the host assigned it, and the host calls it there; any other loopback URL is refused.
async fn production_process_agents_register_at_the_url_their_runtime_assigned(backend: DbBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        process_runtime(c);
        production(c);
    })
    .await;
    let id = app.create_workspace("Local", None).await;
    let assigned = online_url(&app, &id).await;
    assert!(assigned.starts_with("http://127.0.0.1:"), "{assigned}");
    assert_replies(&app, &id).await;
    let elsewhere = json!({ "id": id, "url": "http://127.0.0.1:9/a2a" });
    app.post("/registry/register", elsewhere).await.expect(400);
    assert_eq!(stored_url(&app, &id).await, assigned.as_str());
}

on_both_backends!(production_process_agents_register_at_the_url_their_runtime_assigned);

/// A Docker agent registers its name on the shared network (`http://ws-<id12>:8000`), which
/// the host cannot resolve: a production host accepts it for that workspace alone, keeps calling
/// the published loopback port, and refuses the same name for any other workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_docker_agents_register_their_network_name() {
    let app = TestApp::spawn_with(DbBackend::Postgres, |c| {
        Runtime::Docker.configure(c);
        production(c);
        c.faults.dns.closed();
    })
    .await;
    let id = app.create_workspace("Boxed", None).await;
    let stored = online_url(&app, &id).await;
    assert!(stored.starts_with("http://127.0.0.1:"), "{stored}");
    assert_replies(&app, &id).await;
    let own = format!("http://ws-{}:8000", id12(&id));
    app.post("/registry/register", json!({ "id": id, "url": own }))
        .await
        .expect(200);
    let other = app.create_workspace("Other", None).await;
    let borrowed = json!({ "id": other, "url": own });
    app.post("/registry/register", borrowed).await.expect(400);
}

/// Waits until `id`'s agent registered (its card is stored) and is online; its stored URL.
async fn online_url(app: &TestApp, id: &str) -> String {
    eventually(Duration::from_secs(60), || async {
        let row = app.get(&format!("/workspaces/{id}")).await.expect(200);
        (row["status"] == "online" && row["agent_card"].is_object())
            .then(|| row["url"].as_str().unwrap_or_default().to_owned())
    })
    .await
}

async fn assert_replies(app: &TestApp, id: &str) {
    let reply = app
        .post(
            &format!("/workspaces/{id}/a2a"),
            json!({ "params": { "message": { "content": "hello" } } }),
        )
        .await
        .expect(200);
    let text = reply["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.ends_with("hello"), "{reply}");
}
