//! The agent's recent conversation, kept in memory, and `GET /transcript?since=&limit=` that
//! pages through it for the host (`GET /workspaces/{id}/transcript` proxies here).
//!
//! A bounded ring: the last [`CAPACITY`] messages, each text cut at [`MAX_TEXT_CHARS`], so a
//! long-running agent holds a few megabytes at most. Every message gets the next `seq` (from 1);
//! the ring starts again empty when the agent restarts. Like the A2A route, this one takes no
//! bearer: the host keeps only hashes of the workspace's tokens, so it has none to present (see
//! SECURITY.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::server::AppState;

/// How many messages the ring keeps.
pub const CAPACITY: usize = 500;
/// The longest text kept, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// `limit` when none is given, and the largest allowed.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub seq: u64,
    pub role: Role,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// When it was recorded (RFC 3339, UTC).
    pub at: String,
    /// The answer was an error (its text is the error's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// The text was cut at [`MAX_TEXT_CHARS`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A page: the messages after `since`, oldest first, and what to pass as `since` next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next_since: u64,
}

/// The ring, shared by the A2A handler (which records) and the route (which reads).
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    messages: VecDeque<Message>,
}

impl Transcript {
    /// Appends a message, dropping the oldest when the ring is full.
    pub fn record(&self, role: Role, text: &str, context_id: Option<&str>, error: bool) {
        let (text, truncated) = match text.char_indices().nth(MAX_TEXT_CHARS) {
            Some((cut, _)) => (text[..cut].to_owned(), true),
            None => (text.to_owned(), false),
        };
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut ring = self.lock();
        ring.last_seq += 1;
        let message = Message {
            seq: ring.last_seq,
            role,
            text,
            context_id: context_id.map(str::to_owned),
            at,
            error,
            truncated,
        };
        if ring.messages.len() == CAPACITY {
            ring.messages.pop_front();
        }
        ring.messages.push_back(message);
    }

    /// At most `limit` messages with a `seq` above `since`, oldest first. A `since` beyond the
    /// newest message (this agent restarted since the caller's last page) pages from the oldest
    /// kept; messages that fell out of the ring are simply not there.
    pub fn page(&self, since: u64, limit: usize) -> Page {
        let ring = self.lock();
        let since = if since > ring.last_seq { 0 } else { since };
        let messages: Vec<Message> = ring
            .messages
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .cloned()
            .collect();
        let next_since = messages.last().map_or(since, |m| m.seq);
        Page {
            messages,
            next_since,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Every change is a push and a pop; a panic cannot leave the ring half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/transcript", get(transcript))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn transcript(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, (StatusCode, Json<Value>)> {
    let refuse = |why: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": why })));
    let Ok(Query(query)) = query else {
        return Err(refuse("since and limit must be non-negative integers"));
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(refuse("limit must be between 1 and 200"));
    }
    Ok(Json(
        state.transcript().page(query.since.unwrap_or(0), limit),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(page: &Page) -> Vec<(u64, &str)> {
        page.messages
            .iter()
            .map(|m| (m.seq, m.text.as_str()))
            .collect()
    }

    #[test]
    fn messages_are_numbered_in_order_and_paged_after_since() {
        let transcript = Transcript::default();
        assert_eq!(
            transcript.page(0, 10),
            Page {
                messages: vec![],
                next_since: 0
            }
        );
        transcript.record(Role::User, "hello", Some("ctx-1"), false);
        transcript.record(Role::Agent, "hi there", Some("ctx-1"), false);
        transcript.record(Role::User, "and now?", None, false);
        transcript.record(Role::Agent, "the brain failed", None, true);

        let all = transcript.page(0, 10);
        assert_eq!(
            texts(&all),
            [
                (1, "hello"),
                (2, "hi there"),
                (3, "and now?"),
                (4, "the brain failed")
            ]
        );
        assert_eq!(all.next_since, 4);
        assert_eq!(all.messages[0].role, Role::User);
        assert_eq!(all.messages[1].role, Role::Agent);
        assert_eq!(all.messages[1].context_id.as_deref(), Some("ctx-1"));
        assert!(all.messages[3].error && !all.messages[2].error);
        assert!(chrono::DateTime::parse_from_rfc3339(&all.messages[0].at).is_ok());

        let first = transcript.page(0, 3);
        assert_eq!(first.next_since, 3);
        let rest = transcript.page(first.next_since, 3);
        assert_eq!(texts(&rest), [(4, "the brain failed")]);
        let none = transcript.page(rest.next_since, 3);
        assert!(none.messages.is_empty());
        assert_eq!(none.next_since, 4, "an empty page keeps its since");
        // A since from before a restart (beyond the newest) pages from the oldest.
        assert_eq!(texts(&transcript.page(99, 1)), [(1, "hello")]);
    }

    #[test]
    fn the_ring_keeps_the_newest_messages_and_cuts_long_texts() {
        let transcript = Transcript::default();
        for n in 1..=CAPACITY + 3 {
            transcript.record(Role::User, &format!("message {n}"), None, false);
        }
        let page = transcript.page(0, MAX_LIMIT);
        assert_eq!(page.messages.len(), MAX_LIMIT);
        assert_eq!(
            texts(&page)[0],
            (4, "message 4"),
            "the three oldest fell out"
        );
        let mut since = 0;
        let mut kept = 0;
        loop {
            let page = transcript.page(since, MAX_LIMIT);
            if page.messages.is_empty() {
                break;
            }
            kept += page.messages.len();
            since = page.next_since;
        }
        assert_eq!(kept, CAPACITY);
        assert_eq!(since, (CAPACITY + 3) as u64);

        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        transcript.record(Role::Agent, &long, None, false);
        let last = transcript.page(since, 1).messages.remove(0);
        assert!(last.truncated);
        assert_eq!(last.text.chars().count(), MAX_TEXT_CHARS);
        let short = transcript.page(0, 1).messages.remove(0);
        assert!(!short.truncated);
    }

    #[test]
    fn messages_serialize_without_empty_optional_fields() {
        let transcript = Transcript::default();
        transcript.record(Role::Agent, "done", None, false);
        let json = serde_json::to_value(transcript.page(0, 1)).unwrap();
        let message = &json["messages"][0];
        assert_eq!(message["role"], "agent");
        assert_eq!(message["seq"], 1);
        assert!(message.get("context_id").is_none() && message.get("error").is_none());
        assert_eq!(json["next_since"], 1);
    }
}
