//! The command and openai brains, end to end through `message/send`.

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use molecule_agent::config::BrainKind;
use secrecy::SecretString;
use serde_json::json;
use support::{FakeOpenAi, FakePlatform, agent, eventually};

#[tokio::test]
async fn the_command_brain_pipes_the_prompt_through_the_program() {
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(
            "config.yaml",
            "brain:\n  kind: command\n  command: [sh, -c, 'tr a-z A-Z']\n",
        )
        .start(&platform)
        .await;

    assert_eq!(agent.reply_text("hello world\n").await, "HELLO WORLD");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_command_brain_gets_the_system_prompt_in_its_environment() {
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(
            "config.yaml",
            "brain:\n  kind: command\n  command: [sh, -c, 'printf \"%s|\" \"$MOLECULE_SYSTEM_PROMPT\"; cat']\n",
        )
        .file("system-prompt.md", "Be brief.\n")
        .start(&platform)
        .await;

    assert_eq!(agent.reply_text("hi").await, "Be brief.|hi");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_brain_kind_from_the_environment_wins_over_config_yaml() {
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(
            "config.yaml",
            "name: dev\nbrain:\n  kind: command\n  command: [sh, -c, 'echo from-command']\n",
        )
        .configure(|c| c.brain_override = Some(BrainKind::Echo))
        .start(&platform)
        .await;

    assert_eq!(agent.reply_text("hi").await, "dev: hi");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_command_is_an_internal_error_that_the_heartbeat_reports() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file(
            "config.yaml",
            "brain:\n  kind: command\n  command: [sh, -c, 'echo it broke >&2; echo more >&2; exit 3']\n",
        )
        .start(&platform)
        .await;

    // Act
    let reply = agent.send("do it").await;

    // Assert
    assert_eq!(reply["error"]["code"], -32603);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("it broke"), "{message}");
    assert!(
        !message.contains("more"),
        "only the first stderr line: {message}"
    );
    let heartbeat = platform
        .heartbeat_where("a heartbeat with the failure", |h| {
            h.body["error_rate"] == json!(1.0)
        })
        .await;
    let sample = heartbeat.body["sample_error"].as_str().unwrap();
    assert!(sample.contains("exit code 3"), "{sample}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_command_that_overruns_its_timeout_is_killed_with_its_children() {
    // Arrange: the program starts a grandchild and records its pid, then never answers.
    let platform = FakePlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let config = format!(
        "brain:\n  kind: command\n  timeout_secs: 1\n  command: [sh, -c, 'sleep 60 & echo $! > {}; wait']\n",
        pid_file.display()
    );
    let agent = agent()
        .dir(dir)
        .file("config.yaml", &config)
        .start(&platform)
        .await;

    // Act
    let started = Instant::now();
    let reply = agent.send("wait forever").await;

    // Assert
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(reply["error"]["code"], -32603);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 1s"), "{message}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("the program wrote its grandchild's pid");
    eventually("the grandchild to die", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    agent.stop().await.unwrap();
}

/// Running, as opposed to gone or a zombie waiting for a reaper.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn the_openai_brain_sends_the_model_the_key_and_the_whole_system_prompt() {
    // Arrange
    let platform = FakePlatform::start().await;
    let openai = FakeOpenAi::start(StatusCode::OK).await;
    let base = openai.base_url.clone();
    let agent = agent()
        .file(
            "config.yaml",
            "model: from-config\nbrain:\n  kind: openai\n",
        )
        .file("system-prompt.md", "You are the QA lead.")
        .file(
            "skills/triage/SKILL.md",
            "---\nname: Triage\ndescription: Sorts bug reports\n---\n",
        )
        .file("plugins/kit/.complete", "")
        .file("plugins/kit/rules/style.md", "Cite your sources.")
        .configure(move |c| {
            c.openai_base_url = base;
            c.model = Some("gpt-test".into());
            c.openai_api_key = Some(SecretString::from("sk-test-key"));
        })
        .start(&platform)
        .await;

    // Act
    let reply = agent.reply_text("is this a bug?").await;

    // Assert
    assert_eq!(reply, "from the model");
    // The tokens the endpoint reported go back with the answer, where the host counts them.
    let answer = agent.send("is this a bug?").await;
    assert_eq!(
        answer["result"]["usage"],
        json!({ "input_tokens": 120, "output_tokens": 8, "model": "gpt-test-0613" }),
        "{answer}"
    );
    let requests = openai.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].bearer.as_deref(), Some("sk-test-key"));
    let body = &requests[0].body;
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["messages"][0]["role"], "system");
    let system = body["messages"][0]["content"].as_str().unwrap();
    for expected in [
        "You are the QA lead.",
        "Triage",
        "Sorts bug reports",
        "Cite your sources.",
    ] {
        assert!(
            system.contains(expected),
            "{expected:?} missing from {system:?}"
        );
    }
    assert_eq!(
        body["messages"][1],
        json!({ "role": "user", "content": "is this a bug?" })
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_openai_endpoint_failure_names_the_status_but_never_the_key() {
    let platform = FakePlatform::start().await;
    let openai = FakeOpenAi::start(StatusCode::UNAUTHORIZED).await;
    let base = openai.base_url.clone();
    let agent = agent()
        .file("config.yaml", "model: m\nbrain: {kind: openai}\n")
        .configure(move |c| {
            c.openai_base_url = base;
            c.openai_api_key = Some(SecretString::from("sk-test-key"));
        })
        .start(&platform)
        .await;

    let reply = agent.send("hi").await;

    assert_eq!(reply["error"]["code"], -32603);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("sk-"), "{message}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_openai_brain_without_a_model_refuses_to_start() {
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file("config.yaml", "brain: {kind: openai}\n")
        .start(&platform)
        .await;

    let err = agent.exit().await.unwrap_err();

    assert!(format!("{err:#}").contains("needs a model"), "{err:#}");
}
