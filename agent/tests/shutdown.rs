//! Graceful shutdown: in-flight requests finish, new ones are refused.

mod support;

use serde_json::json;
use support::{FakePlatform, agent};

#[tokio::test]
async fn an_in_flight_request_finishes_after_shutdown_begins() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(
            "config.yaml",
            "brain:\n  kind: command\n  command: [sh, -c, 'sleep 1; echo finished']\n",
        )
        .start(&platform)
        .await;
    platform.first_registration().await;
    let agent = std::sync::Arc::new(agent);
    let sender = agent.clone();
    let request = tokio::spawn(async move { sender.reply_text("slow work").await });
    platform
        .heartbeat_where("the task in flight", |h| {
            h.body["active_tasks"] == json!(1) && h.body["current_task"] == "slow work"
        })
        .await;

    // Act
    agent.begin_shutdown();

    // Assert
    assert_eq!(request.await.unwrap(), "finished");
    let refused = reqwest::get(format!("{}/health", agent.url)).await;
    assert!(
        refused.is_err(),
        "new connections are refused after shutdown"
    );
    let agent = std::sync::Arc::into_inner(agent).unwrap();
    agent.stop().await.unwrap();
}
