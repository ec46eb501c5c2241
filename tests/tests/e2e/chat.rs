//! The chat history: the operator's messages with the agent's answers and the agent's own
//! messages to its user, oldest first, a page at a time going back; calls from other workspaces
//! are not part of it.

use molecule_e2e::{DbBackend, Fault, FaultAgent, TestApp, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(the_chat_history_pages_back_through_the_conversation_and_only_it);

fn message(text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "role": "user", "parts": [{ "kind": "text", "text": text }] } } })
}

fn said(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["text"].as_str().unwrap()
            )
        })
        .collect()
}

async fn the_chat_history_pages_back_through_the_conversation_and_only_it(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, token) = app.workspace_at("Talker", None, &agent.url).await;
    let (peer, peer_token) = app.workspace_at("Peer", Some(&id), &agent.url).await;
    let a2a = format!("/workspaces/{id}/a2a");
    for text in ["one", "two", "three"] {
        app.post(&a2a, message(text)).await.expect(200);
    }
    // A peer's call is the agents' business, not the operator's conversation.
    app.with_token(&peer_token)
        .call(
            reqwest::Method::POST,
            &a2a,
            Some(message("from the peer")),
            &[("X-Workspace-ID", &peer)],
        )
        .await
        .expect(200);
    app.with_token(&token)
        .post(
            &format!("/workspaces/{id}/notify"),
            json!({ "message": "all done" }),
        )
        .await
        .expect(200);

    let history = format!("/workspaces/{id}/chat-history");
    let newest = app.get(&format!("{history}?limit=2")).await.expect(200);
    assert_eq!(
        said(&newest),
        ["user: three", "agent: echo: three", "agent: all done"],
        "{newest}"
    );
    let before = newest["next_before"]
        .as_str()
        .expect("an earlier page")
        .to_owned();
    let earlier = app
        .get(&format!("{history}?limit=2&before={before}"))
        .await
        .expect(200);
    assert_eq!(
        said(&earlier),
        [
            "user: one",
            "agent: echo: one",
            "user: two",
            "agent: echo: two"
        ],
        "{earlier}"
    );
    let first = earlier["next_before"]
        .as_str()
        .expect("a full page")
        .to_owned();
    let none = app
        .get(&format!("{history}?before={first}"))
        .await
        .expect(200);
    assert_eq!(none, json!({ "messages": [], "next_before": null }));
    // The whole conversation in one page, read by the agent itself.
    let all = app.with_token(&token).get(&history).await.expect(200);
    assert_eq!(all["messages"].as_array().unwrap().len(), 7, "{all}");
    assert_eq!(all["next_before"], Value::Null);
    let stamps: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["timestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");

    app.get(&format!("{history}?limit=0")).await.expect(400);
    app.get(&format!("{history}?before=yesterday"))
        .await
        .expect(400);
    app.with_token(&peer_token).get(&history).await.expect(401);
    app.anonymous().get(&history).await.expect(401);
    app.delete(&format!("/workspaces/{peer}")).await.expect(200);
    app.get(&format!("/workspaces/{peer}/chat-history"))
        .await
        .expect(410);
}
