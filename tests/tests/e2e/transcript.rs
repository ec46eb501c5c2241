//! The transcript: what an agent was sent and answered, read from the reference agent through
//! the host, in order and a page at a time; an agent that is not online, that serves no
//! transcript or answers garbage is reported as such. Who may call the route is the route
//! table's spec (`security_routes`); here a workspace token of another workspace is refused too.

use std::time::Duration;

use molecule_e2e::{
    DbBackend, Fault, FaultAgent, Runtime, TestApp, eventually, on_both_backends, on_both_runtimes,
};
use serde_json::{Value, json};

on_both_runtimes!(the_agents_conversation_is_read_in_order_and_a_page_at_a_time);
on_both_backends!(an_agent_that_cannot_give_its_transcript_is_reported_by_why);

const ONLINE: Duration = Duration::from_secs(120);

fn message(text: &str, context_id: Option<&str>) -> Value {
    let mut message = json!({ "role": "user", "parts": [{ "kind": "text", "text": text }] });
    if let Some(context_id) = context_id {
        message["contextId"] = json!(context_id);
    }
    json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": { "message": message } })
}

/// `(seq, role, text)` of each message of a page.
fn said(page: &Value) -> Vec<(u64, String, String)> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages: {page}"))
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn the_agents_conversation_is_read_in_order_and_a_page_at_a_time(
    runtime: Runtime,
    backend: DbBackend,
) {
    // Arrange: a running reference agent (the echo brain answers "<name>: <text>").
    let app = TestApp::spawn_with(backend, |c| runtime.configure(c)).await;
    let id = app.create_workspace("Scribe", None).await;
    let stranger = app.create_workspace("Stranger", None).await;
    app.wait_settled(&id, ONLINE).await;
    let path = format!("/workspaces/{id}/transcript");

    // Act: two messages, the first in a conversation context.
    for (text, context) in [("first question", Some("ctx-7")), ("second question", None)] {
        app.post(&format!("/workspaces/{id}/a2a"), message(text, context))
            .await
            .expect(200);
    }

    // Assert: both turns, in order, with who said what.
    let page = app.get(&path).await.expect(200);
    let all = said(&page);
    assert_eq!(
        all.iter()
            .map(|(_, role, text)| (role.as_str(), text.as_str()))
            .collect::<Vec<_>>(),
        [
            ("user", "first question"),
            ("agent", "Scribe: first question"),
            ("user", "second question"),
            ("agent", "Scribe: second question"),
        ],
        "{page}"
    );
    let seqs: Vec<u64> = all.iter().map(|(seq, _, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{page}");
    assert_eq!(page["next_since"], seqs[3]);
    assert_eq!(page["workspace_id"], id.as_str());
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages[0]["context_id"], "ctx-7");
    assert_eq!(messages[1]["context_id"], "ctx-7");
    assert!(messages[2].get("context_id").is_none(), "{page}");
    assert!(
        messages
            .iter()
            .all(|m| m["error"] == false && m["at"].is_string())
    );

    // Paged forward by `since` and `limit`, to an empty page that keeps its place.
    let first = app
        .get(&format!("{path}?since=0&limit=1"))
        .await
        .expect(200);
    assert_eq!(said(&first), all[..1]);
    assert_eq!(first["next_since"], seqs[0]);
    let middle = app
        .get(&format!("{path}?since={}&limit=2", seqs[0]))
        .await
        .expect(200);
    assert_eq!(said(&middle), all[1..3]);
    let rest = app
        .get(&format!("{path}?since={}&limit=200", middle["next_since"]))
        .await
        .expect(200);
    assert_eq!(said(&rest), all[3..]);
    let empty = app
        .get(&format!("{path}?since={}", seqs[3]))
        .await
        .expect(200);
    assert_eq!(said(&empty), []);
    assert_eq!(empty["next_since"], seqs[3]);
    for bad in ["limit=0", "limit=201", "since=-1"] {
        app.get(&format!("{path}?{bad}")).await.expect(400);
    }

    // The workspace's own token reads it; another workspace's token does not.
    let own = app.with_token(&app.agent_token(&id).await);
    assert_eq!(said(&own.get(&path).await.expect(200)), all);
    app.with_token(&app.agent_token(&stranger).await)
        .get(&path)
        .await
        .expect(401);

    // A paused agent is not asked.
    app.post(&format!("/workspaces/{id}/pause"), json!({}))
        .await
        .expect(200);
    let refused = eventually(Duration::from_secs(30), || async {
        let reply = app.get(&path).await;
        (reply.status == 503).then_some(reply.body)
    })
    .await;
    assert_eq!(refused["status"], "paused", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("agent"),
        "{refused}"
    );
}

async fn an_agent_that_cannot_give_its_transcript_is_reported_by_why(backend: DbBackend) {
    let app = TestApp::spawn(backend).await;

    // An agent other than the reference one, without the route: 501.
    let foreign = FaultAgent::start(|_| Fault::Status(404, "{}".to_owned())).await;
    let (id, _) = app.workspace_at("Foreign", None, &foreign.url).await;
    let reply = app
        .get(&format!("/workspaces/{id}/transcript"))
        .await
        .expect(501);
    assert!(
        reply["error"].as_str().unwrap().contains("no transcript"),
        "{reply}"
    );

    // An agent that answers something else than a page, or an error: 502.
    for answer in [
        Fault::Status(200, "not a transcript".to_owned()),
        Fault::Status(
            200,
            json!({ "messages": [{ "seq": 1 }], "next_since": 1 }).to_string(),
        ),
        Fault::Status(500, "{}".to_owned()),
    ] {
        let agent = FaultAgent::start(move |_| answer.clone()).await;
        let (id, _) = app.workspace_at("Garbled", None, &agent.url).await;
        app.get(&format!("/workspaces/{id}/transcript"))
            .await
            .expect(502);
        app.delete(&format!("/workspaces/{id}")).await.expect(200);
    }

    // What the agent answers is passed on as the host parsed it: unknown fields are dropped.
    let page = json!({ "messages": [
        { "seq": 8, "role": "user", "text": "hello", "at": "2026-01-02T03:04:05Z", "extra": 1 },
    ], "next_since": 8 });
    let agent = FaultAgent::start(move |_| Fault::Status(200, page.to_string())).await;
    let (id, _) = app.workspace_at("Faithful", None, &agent.url).await;
    let read = app
        .get(&format!("/workspaces/{id}/transcript?since=7&limit=3"))
        .await
        .expect(200);
    assert_eq!(said(&read), [(8, "user".to_owned(), "hello".to_owned())]);
    assert!(read["messages"][0].get("extra").is_none(), "{read}");

    // No agent URL yet (nothing registered): 503; no such workspace: 404.
    let silent = app.create_workspace("Silent", None).await;
    let reply = app
        .get(&format!("/workspaces/{silent}/transcript"))
        .await
        .expect(503);
    assert!(reply["status"].is_string(), "{reply}");
    app.get(&format!("/workspaces/{}/transcript", uuid::Uuid::new_v4()))
        .await
        .expect(404);
}
