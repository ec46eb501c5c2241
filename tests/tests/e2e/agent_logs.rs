//! An agent's log through `GET /workspaces/{id}/console`, on Docker and on the process runtime:
//! a line the agent writes reaches a follower at once and is in the tail afterwards, with the
//! workspace's secret value masked in both; bad input and an external workspace are refused.
//! Who may read it is the route table's spec (`security_routes`).

use std::time::Duration;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, Runtime, TestApp, docker, id12, on_both_runtimes};
use serde_json::json;

on_both_runtimes!(an_agents_log_is_tailed_and_followed_with_its_secrets_masked);

const SECRET: &str = "sk-log-secret-4242";
const ONLINE: Duration = Duration::from_secs(120);

/// Writes `line` to the agent's output, as the agent itself would print it.
fn print_as_the_agent(runtime: Runtime, app: &TestApp, id: &str, line: &str) {
    match runtime {
        Runtime::Process => {
            use std::io::Write as _;
            let path = app.data_dir().join("workspaces").join(id).join("agent.log");
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            writeln!(log, "{line}").expect("writing the agent's log");
        }
        Runtime::Docker => {
            let container = format!("ws-{}", id12(id));
            let script = format!("echo '{line}' > /proc/1/fd/1");
            docker(&["exec", &container, "sh", "-c", &script]);
        }
    }
}

async fn an_agents_log_is_tailed_and_followed_with_its_secrets_masked(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, |c| runtime.configure(c)).await;
    // A global secret, set before the workspace exists: the agent starts with it, and no
    // restart for a secret change can end the follow below.
    app.put(
        "/settings/secrets",
        json!({ "key": "LOG_SECRET", "value": SECRET }),
    )
    .await
    .expect(200);
    let id = app.create_workspace("Logger", None).await;
    app.wait_settled(&id, ONLINE).await;

    // A follower sees a line as soon as the agent writes it, masked.
    let mut follower = reqwest::Client::new()
        .get(app.url(&format!("/workspaces/{id}/console?follow=true&tail=1")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("following the log");
    assert_eq!(follower.status(), 200);
    assert!(
        follower.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    print_as_the_agent(runtime, &app, &id, &format!("marker {SECRET} end"));
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("marker") {
        let chunk = tokio::time::timeout_at(deadline, follower.chunk())
            .await
            .unwrap_or_else(|_| panic!("the line never arrived; seen: {seen:?}"))
            .expect("reading the stream")
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("marker [masked] end"), "{seen:?}");
    assert!(!seen.contains(SECRET), "{seen:?}");
    drop(follower);

    // The tail has it too, masked.
    let tail = app
        .get(&format!("/workspaces/{id}/console?tail=50"))
        .await
        .expect(200);
    let lines: Vec<&str> = tail["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l.as_str().expect("a line"))
        .collect();
    assert!(lines.contains(&"marker [masked] end"), "{tail}");
    assert!(!tail.to_string().contains(SECRET), "{tail}");
    assert!(lines.len() <= 50);

    // Bad input, and an agent the host does not run.
    app.get(&format!("/workspaces/{id}/console?tail=0"))
        .await
        .expect(400);
    app.get(&format!("/workspaces/{id}/console?tail=10001"))
        .await
        .expect(400);
    let (external, _) = app.create_external("Elsewhere", None).await;
    app.get(&format!("/workspaces/{external}/console"))
        .await
        .expect(409);
}
