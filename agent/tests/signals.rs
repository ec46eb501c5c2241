//! `POST /signals/restart_pending`: the host's notice that a restart is coming.

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakePlatform, agent};
use uuid::Uuid;

async fn signal(url: &str, header: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/signals/restart_pending"))
        .json(&body);
    if let Some(value) = header {
        request = request.header("X-Restart-Signal", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn notification(workspace_id: impl ToString) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "signals/restart_pending",
        "params": { "drain_seconds": 20, "workspace_id": workspace_id.to_string() },
    })
}

#[tokio::test]
async fn a_restart_signal_is_acknowledged_and_reported_to_the_activity_feed() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent().start(&platform).await;

    // Act
    let (status, reply) = signal(&agent.url, Some("true"), notification(agent.id)).await;

    // Assert: reported before the answer, so the row is written before the host stops us.
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply,
        json!({ "jsonrpc": "2.0", "result": { "acknowledged": true, "active_tasks": 0 } })
    );
    let reported: Vec<Value> = platform.activities().into_iter().map(|r| r.body).collect();
    assert_eq!(
        reported,
        [json!({
            "activity_type": "agent_log",
            "source_id": agent.id,
            "summary": "restart pending: idle",
        })]
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_signal_without_the_header_or_for_another_workspace_is_refused() {
    let platform = FakePlatform::start().await;
    let agent = agent().start(&platform).await;
    let cases = [
        (
            None,
            notification(agent.id),
            "X-Restart-Signal: true is required",
        ),
        (
            Some("yes"),
            notification(agent.id),
            "X-Restart-Signal: true is required",
        ),
        (
            Some("true"),
            notification(Uuid::new_v4()),
            "the signal is for another workspace",
        ),
        (
            Some("true"),
            json!({ "jsonrpc": "2.0", "method": "message/send" }),
            "method must be signals/restart_pending",
        ),
    ];
    for (header, body, error) in cases {
        let (status, reply) = signal(&agent.url, header, body).await;
        assert_eq!(
            (status, reply),
            (StatusCode::BAD_REQUEST, json!({ "error": error }))
        );
    }
    assert!(platform.activities().is_empty());
    agent.stop().await.unwrap();
}
