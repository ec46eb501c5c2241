//! The chat between the operator (the canvas) and a workspace's agent, read back from the
//! activity log: each canvas call is the operator's message and the agent's answer (or why there
//! was none), and each `notify` row is a message the agent sent its user on its own.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::client::{error_text, text_parts};
use crate::store::activity::ActivityRow;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Agent => "agent",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The activity row it was read from (a call gives two messages with the same id).
    pub activity_id: Uuid,
    pub role: Role,
    pub text: String,
    pub at: DateTime<Utc>,
    /// The row's status for an agent message (`ok`, `error`, `queued`); `ok` for the user's.
    pub status: String,
    /// File parts (`{uri, name, mimeType, size}` objects) sent with the message.
    pub files: Vec<Value>,
}

/// The messages of `rows` (newest first, as [`crate::store::activity::chat`] reads them), in
/// the order they were said.
pub fn conversation(rows: &[ActivityRow]) -> Vec<Message> {
    let mut out = Vec::with_capacity(rows.len() * 2);
    for row in rows.iter().rev() {
        let message = |role: Role, text: String, files: Vec<Value>, status: &str, at| Message {
            activity_id: row.id,
            role,
            text,
            at,
            status: status.to_owned(),
            files,
        };
        if row.method.as_deref() == Some("notify") {
            let body = row.response_body.as_ref();
            let text = body
                .and_then(|b| b.get("result"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let files = file_parts(body.and_then(|b| b.get("parts")));
            out.push(message(Role::Agent, text, files, "ok", row.created_at));
            continue;
        }
        let asked = row
            .request_body
            .as_ref()
            .and_then(|b| b.pointer("/params/message/parts"));
        // A call's row is written when it ends: the question was asked its duration earlier.
        let asked_at = row.created_at
            - chrono::Duration::milliseconds(i64::from(row.duration_ms.unwrap_or(0)));
        out.push(message(
            Role::User,
            text_parts(asked).join("\n"),
            file_parts(asked),
            "ok",
            asked_at,
        ));
        let (text, files) = match (row.status.as_str(), row.response_body.as_ref()) {
            ("queued", _) => (
                "The agent was busy; the message is queued and will be delivered when it has room."
                    .to_owned(),
                Vec::new(),
            ),
            ("error", _) => (
                row.error_detail
                    .clone()
                    .or_else(|| row.response_body.as_ref().and_then(error_text))
                    .unwrap_or_else(|| "the agent did not answer".to_owned()),
                Vec::new(),
            ),
            (_, Some(body)) => answer(body),
            (_, None) => (String::new(), Vec::new()),
        };
        out.push(message(
            Role::Agent,
            text,
            files,
            &row.status,
            row.created_at,
        ));
    }
    out
}

/// The text and files of a stored JSON-RPC answer (`result.parts` and its artifacts' parts), or
/// what was kept of an answer too large or not JSON.
fn answer(body: &Value) -> (String, Vec<Value>) {
    let Some(result) = body.get("result") else {
        let kept = body
            .get("preview")
            .or_else(|| body.get("raw"))
            .and_then(Value::as_str)
            .map_or_else(|| body.to_string(), str::to_owned);
        return (kept, Vec::new());
    };
    let mut parts: Vec<&Value> = Vec::new();
    parts.push(result.get("parts").unwrap_or(&Value::Null));
    if let Some(artifacts) = result.get("artifacts").and_then(Value::as_array) {
        parts.extend(artifacts.iter().filter_map(|a| a.get("parts")));
    }
    let text = parts
        .iter()
        .flat_map(|p| text_parts(Some(p)))
        .collect::<Vec<_>>()
        .join("\n");
    let files = parts.iter().flat_map(|p| file_parts(Some(p))).collect();
    (text, files)
}

/// The `file` objects of `parts` of kind `file`.
fn file_parts(parts: Option<&Value>) -> Vec<Value> {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("kind").and_then(Value::as_str) == Some("file"))
        .filter_map(|p| p.get("file").cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(
        method: &str,
        status: &str,
        request: Option<Value>,
        response: Option<Value>,
    ) -> ActivityRow {
        let mut row = ActivityRow::new(Uuid::new_v4(), "a2a_receive");
        row.method = Some(method.to_owned());
        row.status = status.to_owned();
        row.request_body = request;
        row.response_body = response;
        row.duration_ms = Some(1500);
        row
    }

    fn ask(text: &str) -> Value {
        json!({ "jsonrpc": "2.0", "method": "message/send", "params": { "message": {
            "role": "user", "parts": [
                { "kind": "text", "text": text },
                { "kind": "file", "file": { "uri": "workspace:/uploads/a.txt", "name": "a.txt" } }] } } })
    }

    #[test]
    fn a_call_is_the_question_then_the_answer_and_a_notify_is_the_agent_alone() {
        let answered = row(
            "message/send",
            "ok",
            Some(ask("hello")),
            Some(json!({ "jsonrpc": "2.0",
            "result": { "parts": [{ "kind": "text", "text": "hi" }],
                "artifacts": [{ "parts": [{ "kind": "text", "text": "more" }] }] } })),
        );
        let told = row(
            "notify",
            "ok",
            None,
            Some(json!({ "result": "done", "parts": [
            { "kind": "file", "file": { "uri": "workspace:/out.md", "name": "out.md" } }] })),
        );
        let mut failed = row("message/send", "error", Some(ask("again")), None);
        failed.error_detail = Some("failed to reach workspace agent".into());
        let queued = row(
            "message/send",
            "queued",
            Some(ask("later")),
            Some(json!({ "queued": true })),
        );
        // Newest first, as the store reads them.
        let rows = [queued, failed, told, answered];
        let said: Vec<String> = conversation(&rows)
            .iter()
            .map(|m| format!("{} {}: {}", m.role.as_str(), m.status, m.text))
            .collect();
        assert_eq!(
            said,
            [
                "user ok: hello",
                "agent ok: hi\nmore",
                "agent ok: done",
                "user ok: again",
                "agent error: failed to reach workspace agent",
                "user ok: later",
                "agent queued: The agent was busy; the message is queued and will be delivered when it has room.",
            ]
        );
        let messages = conversation(&rows);
        assert_eq!(
            messages[0].files,
            [json!({ "uri": "workspace:/uploads/a.txt", "name": "a.txt" })]
        );
        assert_eq!(
            messages[2].files,
            [json!({ "uri": "workspace:/out.md", "name": "out.md" })]
        );
        assert_eq!(
            messages[1].at - messages[0].at,
            chrono::Duration::milliseconds(1500)
        );
    }

    #[test]
    fn an_answer_kept_as_a_preview_or_raw_text_still_reads() {
        assert_eq!(
            answer(&json!({ "preview": "long…", "bytes": 90000, "truncated": true })).0,
            "long…"
        );
        assert_eq!(
            answer(&json!({ "raw": "not json", "truncated": false })).0,
            "not json"
        );
    }
}
