//! A2A JSON-RPC at `POST /` with the echo brain, and skills and plugins read per request.

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakePlatform, agent};
use uuid::Uuid;

#[tokio::test]
async fn message_send_is_answered_by_the_echo_brain() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file("config.yaml", "name: dev\n")
        .start(&platform)
        .await;

    // Act
    let reply = agent.send("hello there").await;

    // Assert
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(reply["id"], 7);
    let result = &reply["result"];
    assert_eq!(result["kind"], "message");
    assert_eq!(result["role"], "agent");
    assert!(Uuid::parse_str(result["messageId"].as_str().unwrap()).is_ok());
    assert_eq!(
        result["parts"],
        json!([{ "kind": "text", "text": "dev: hello there" }])
    );
    assert_eq!(
        result["metadata"],
        json!({ "workspace_id": agent.id, "skills": [], "plugins": [] })
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn without_config_yaml_the_agent_is_named_after_its_workspace() {
    let platform = FakePlatform::start().await;
    let agent = agent().start(&platform).await;

    assert_eq!(agent.reply_text("hi").await, format!("{}: hi", agent.id));
    assert_eq!(agent.card().await["name"], json!(agent.id));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn json_rpc_errors_carry_the_standard_codes() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent().start(&platform).await;
    let cases: [(&str, Value, i64); 7] = [
        ("{not json", json!(null), -32700),
        ("[]", json!(null), -32600),
        (r#"{"id": 1, "method": "message/send"}"#, json!(1), -32600),
        (
            r#"{"jsonrpc": "2.0", "id": "a", "method": "tasks/get"}"#,
            json!("a"),
            -32601,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 2, "method": "message/send"}"#,
            json!(2),
            -32602,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 3, "method": "message/send",
                "params": {"message": {"role": "user", "parts": [{"kind": "file", "file": {"uri": "x"}}]}}}"#,
            json!(3),
            -32602,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": {"no": 1}, "method": "message/send"}"#,
            json!(null),
            -32600,
        ),
    ];

    for (body, id, code) in cases {
        // Act
        let (status, reply) = agent.rpc_raw(body).await;

        // Assert
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(reply["jsonrpc"], "2.0", "{body}");
        assert_eq!(reply["id"], id, "{body}");
        assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
        assert!(reply["error"]["message"].is_string(), "{body}");
        assert!(reply.get("result").is_none(), "{body}");
    }
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn older_type_text_parts_are_accepted_and_joined() {
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file("config.yaml", "name: dev\n")
        .start(&platform)
        .await;
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [
            { "type": "text", "text": "one" }, { "kind": "text", "text": "two" },
        ]}},
    });

    let (_, reply) = agent.rpc_raw(body.to_string()).await;

    assert_eq!(reply["result"]["parts"][0]["text"], "dev: one\ntwo");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused() {
    let platform = FakePlatform::start().await;
    let agent = agent().start(&platform).await;
    let text = "x".repeat(1024 * 1024 + 1);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } },
    });

    let (status, reply) = agent.rpc_raw(body.to_string()).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply["error"]["code"], -32600);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_skill_written_while_running_shows_up_in_the_next_reply_and_the_card() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file("skills/review/SKILL.md", "---\nname: Review\n---\n")
        .start(&platform)
        .await;
    let before = agent.send("first").await;
    assert_eq!(before["result"]["metadata"]["skills"], json!(["review"]));

    // Act
    agent.write(
        "skills/deploy/SKILL.md",
        "---\nname: Deploy\ndescription: Ships it\n---\n",
    );

    // Assert
    let after = agent.send("second").await;
    assert_eq!(
        after["result"]["metadata"]["skills"],
        json!(["deploy", "review"])
    );
    let card = agent.card().await;
    assert_eq!(card["skills"][0]["name"], "Deploy");
    assert_eq!(card["skills"][0]["description"], "Ships it");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_plugin_without_its_complete_marker_is_ignored_until_the_marker_appears() {
    // Arrange
    let platform = FakePlatform::start().await;
    let agent = agent()
        .file("plugins/done/.complete", "")
        .file(
            "plugins/done/skills/lint/SKILL.md",
            "---\nname: Lint\n---\n",
        )
        .file(
            "plugins/half/skills/deploy/SKILL.md",
            "---\nname: Deploy\n---\n",
        )
        .file("plugins/.staging/.complete", "")
        .file(
            "plugins/.staging/skills/staged/SKILL.md",
            "---\nname: Staged\n---\n",
        )
        .start(&platform)
        .await;

    // Act
    let reply = agent.send("hi").await;

    // Assert
    let metadata = &reply["result"]["metadata"];
    assert_eq!(metadata["plugins"], json!(["done"]));
    assert_eq!(metadata["skills"], json!(["lint"]));

    // Act: the host finishes installing the second plugin.
    agent.write("plugins/half/.complete", "");

    // Assert
    let reply = agent.send("again").await;
    assert_eq!(
        reply["result"]["metadata"]["plugins"],
        json!(["done", "half"])
    );
    assert_eq!(
        reply["result"]["metadata"]["skills"],
        json!(["lint", "deploy"])
    );
    agent.stop().await.unwrap();
}
