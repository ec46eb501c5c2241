//! Registration, the token file and heartbeats, against a fake platform.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use support::{FakePlatform, agent, eventually};

#[tokio::test]
async fn registers_its_url_and_card_then_saves_the_issued_token_privately() {
    // Arrange
    let platform = FakePlatform::with(
        |_| {
            (
                StatusCode::OK,
                json!({ "status": "registered", "auth_token": "tok-issued" }),
            )
        },
        |_| StatusCode::OK,
    )
    .await;
    let agent = agent()
        .file(
            "config.yaml",
            "name: dev\ndescription: builds things\nversion: 2.1.0\ntier: 2\n",
        )
        .file(
            "skills/review/SKILL.md",
            "---\nname: Review\ndescription: Reviews diffs\ntags: [code]\n---\n",
        )
        .start(&platform)
        .await;

    // Act
    let registration = platform.first_registration().await;

    // Assert
    assert_eq!(registration.bearer, None, "no token exists yet");
    let body = &registration.body;
    assert_eq!(body["id"], json!(agent.id));
    assert_eq!(body["url"], json!(agent.url));
    assert_eq!(
        body["agent_card"],
        json!({
            "name": "dev",
            "description": "builds things",
            "version": "2.1.0",
            "url": agent.url,
            "tier": 2,
            "skills": [{ "id": "review", "name": "Review", "description": "Reviews diffs", "tags": ["code"] }],
            "capabilities": { "streaming": false, "pushNotifications": false },
        })
    );
    let token_path = agent.path(".auth_token");
    let token = eventually("the token file", || async {
        std::fs::read_to_string(&token_path).ok()
    })
    .await;
    assert_eq!(token, "tok-issued");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(agent.card().await, body["agent_card"]);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn heartbeats_carry_the_bearer_and_the_task_counters() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(".auth_token", "tok-existing\n")
        .start(&platform)
        .await;

    // Act
    let heartbeat = platform
        .heartbeat_where("a heartbeat", |h| h.bearer.is_some())
        .await;

    // Assert
    assert_eq!(
        platform.first_registration().await.bearer.as_deref(),
        Some("tok-existing")
    );
    assert_eq!(heartbeat.bearer.as_deref(), Some("tok-existing"));
    let body = heartbeat.body;
    assert_eq!(body["workspace_id"], json!(agent.id));
    assert_eq!(body["error_rate"], json!(0.0));
    assert_eq!(body["sample_error"], json!(null));
    assert_eq!(body["active_tasks"], json!(0));
    assert_eq!(body["current_task"], json!(""));
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn registration_is_retried_until_the_platform_accepts_it() {
    // Arrange
    let platform = FakePlatform::with(
        |attempt| {
            if attempt < 2 {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "starting" }),
                )
            } else {
                (StatusCode::OK, json!({ "status": "registered" }))
            }
        },
        |_| StatusCode::OK,
    )
    .await;

    // Act
    let agent = agent().start(&platform).await;
    platform.first_registration().await;

    // Assert
    let statuses: Vec<_> = platform.registrations().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        ]
    );
    platform
        .heartbeat_where("a heartbeat after registering", |_| true)
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_heartbeat_refused_with_401_is_retried_at_once_with_the_token_file_reread() {
    // Arrange: the fake host rotates the token when it sees the old one, as a host would after
    // revoking it, and answers 401.
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join(".auth_token");
    let rotate_at = token_path.clone();
    let platform = FakePlatform::with(
        |_| (StatusCode::OK, json!({ "status": "registered" })),
        move |bearer| {
            if bearer == Some("tok-new") {
                StatusCode::OK
            } else {
                std::fs::write(&rotate_at, "tok-new").unwrap();
                StatusCode::UNAUTHORIZED
            }
        },
    )
    .await;
    std::fs::write(&token_path, "tok-old").unwrap();

    // Act: the interval is long, so only the retry can bring a second heartbeat soon.
    let agent = agent()
        .dir(dir)
        .configure(|c| c.heartbeat_interval = Duration::from_secs(60))
        .start(&platform)
        .await;
    let accepted = platform
        .heartbeat_where("the retried heartbeat", |_| true)
        .await;

    // Assert
    let heartbeats = platform.heartbeats();
    assert_eq!(heartbeats.len(), 2);
    assert_eq!(heartbeats[0].bearer.as_deref(), Some("tok-old"));
    assert_eq!(heartbeats[0].status, StatusCode::UNAUTHORIZED);
    assert_eq!(accepted.bearer.as_deref(), Some("tok-new"));
    assert!(accepted.at - heartbeats[0].at < Duration::from_secs(5));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_agent_registers_again_when_the_platform_forgets_the_workspace() {
    // Arrange: the platform answers heartbeats 404 until the agent registered a second time
    // (a host restored from a backup), and refuses that second registration twice first.
    let registered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counted, asked) = (registered.clone(), registered.clone());
    let platform = FakePlatform::with(
        move |attempt| match attempt {
            1 | 2 => (
                StatusCode::NOT_FOUND,
                json!({ "error": "workspace not found" }),
            ),
            _ => {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (StatusCode::OK, json!({ "status": "registered" }))
            }
        },
        move |_| {
            if asked.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            }
        },
    )
    .await;
    let agent = agent().start(&platform).await;

    // Act
    eventually(
        "a registration after the refused heartbeat, then heartbeats",
        || async {
            let accepted = registered.load(std::sync::atomic::Ordering::SeqCst);
            let after = platform.heartbeats().len();
            (accepted == 2 && after >= 3).then_some(())
        },
    )
    .await;

    // Assert: one refused heartbeat led to registering again (retried with backoff through
    // two refusals), and the agent kept serving.
    assert_eq!(platform.registrations().len(), 4);
    let (status, body) = agent.get("/health").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
    agent.stop().await.unwrap();
}

/// The platform URL may name the host instead of giving its address (a Kubernetes Service, a
/// Docker network name): the agent resolves it.
#[tokio::test]
async fn a_platform_url_with_a_host_name_is_resolved() {
    let mut platform = FakePlatform::start().await;
    let by_name = platform.url.as_str().replace("127.0.0.1", "localhost");
    assert_ne!(by_name, platform.url.as_str());
    platform.url = molecule_agent::config::BaseUrl::parse(&by_name).unwrap();
    let agent = agent()
        .file("config.yaml", "name: dev\n")
        .start(&platform)
        .await;

    let registration = platform.first_registration().await;

    assert_eq!(registration.body["id"], json!(agent.id));
    agent.stop().await.unwrap();
}
