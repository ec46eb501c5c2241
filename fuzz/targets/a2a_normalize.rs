//! Fuzz target `a2a_normalize`: what `POST /workspaces/{id}/a2a` does with a body before it
//! forwards it ([`Message::normalize`]). Whatever JSON arrives, a message that is accepted is
//! JSON-RPC 2.0 by the function's own rules, and normalising it again changes nothing.

use molecule_host::agents::client::Message;
use serde_json::Value;

pub fn check(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(message) = Message::normalize(raw) else {
        return;
    };
    let body = &message.body;
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["method"].as_str(), Some(message.method.as_str()));
    assert!(!message.method.is_empty() && message.method.len() <= 200);
    assert!(
        body["id"].is_string() || body["id"].is_number(),
        "id {}",
        body["id"]
    );
    assert!(body["params"].is_object());
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(4),
        "only the four JSON-RPC keys"
    );
    if message.method == "message/send" {
        let sent = &body["params"]["message"];
        let id = message
            .message_id
            .as_deref()
            .expect("message/send has a message id");
        assert!(!id.is_empty() && id.len() <= 200);
        assert_eq!(sent["messageId"].as_str(), Some(id));
        assert!(sent["parts"].is_array());
        assert!(sent.get("role").is_some());
    } else {
        assert_eq!(message.message_id, None);
    }
    let _ = message.delegation_id();
    let again = Message::normalize(message.body.clone()).expect("a normalised body is accepted");
    assert_eq!(again, message, "normalising twice changes the message");
}
