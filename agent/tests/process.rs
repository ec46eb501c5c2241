//! The built binary: the environment contract, startup errors and signals.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::FakePlatform;
use tokio::process::{Child, Command};
use uuid::Uuid;

fn agent_command(platform: &FakePlatform, config_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_molecule-agent"));
    command
        .env_clear()
        .env("WORKSPACE_ID", Uuid::new_v4().to_string())
        .env("PLATFORM_URL", platform.url.as_str())
        .env("WORKSPACE_CONFIG_PATH", config_dir)
        .env("MOLECULE_AGENT_LISTEN", "127.0.0.1:0")
        .env("HEARTBEAT_INTERVAL_SECS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Waits for the exit, failing the test after `limit`.
async fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("the agent exits in time")
        .unwrap()
}

#[tokio::test]
async fn sigterm_and_sigint_stop_a_registered_agent_with_exit_code_0() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // Arrange
        let platform = FakePlatform::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = agent_command(&platform, dir.path())
            .env("MOLECULE_AGENT_ROLE", "QA")
            .env("TIER", "3")
            .spawn()
            .unwrap();
        let registration = platform.first_registration().await;
        // Without MOLECULE_AGENT_URL the bound address and port are registered.
        let url = registration.body["url"].as_str().unwrap().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{url}"
        );
        assert_eq!(registration.body["agent_card"]["role"], "QA");
        assert_eq!(registration.body["agent_card"]["tier"], 3);
        let health = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);

        // Act
        let sent = Instant::now();
        kill(Pid::from_raw(child.id().unwrap() as i32), signal).unwrap();
        let status = exit_within(&mut child, Duration::from_secs(5)).await;

        // Assert
        assert_eq!(status.code(), Some(0), "{signal}");
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "{signal} took {:?}",
            sent.elapsed()
        );
    }
}

#[tokio::test]
async fn molecule_agent_url_is_what_gets_registered() {
    let platform = FakePlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = agent_command(&platform, dir.path())
        .env("MOLECULE_AGENT_URL", "http://10.1.2.3:8000")
        .spawn()
        .unwrap();

    let registration = platform.first_registration().await;

    assert_eq!(registration.body["url"], "http://10.1.2.3:8000");
    assert_eq!(
        registration.body["agent_card"]["url"],
        "http://10.1.2.3:8000"
    );
    child.kill().await.unwrap();
}

async fn failed_start(mut command: Command) -> String {
    let output = command.stderr(Stdio::piped()).output();
    let output = tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .expect("the agent exits at once")
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_missing_workspace_id_is_a_clear_startup_error() {
    let platform = FakePlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = agent_command(&platform, dir.path());
    command.env_remove("WORKSPACE_ID");

    let stderr = failed_start(command).await;

    assert!(stderr.contains("WORKSPACE_ID is required"), "{stderr}");
}

#[tokio::test]
async fn a_malformed_config_yaml_stops_startup_naming_the_file_and_the_line() {
    let platform = FakePlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "name: dev\ntier: [2,\n").unwrap();

    let stderr = failed_start(agent_command(&platform, dir.path())).await;

    let path = dir.path().join("config.yaml");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("line"), "{stderr}");
    assert!(platform.registrations().is_empty());
}
