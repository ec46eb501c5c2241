//! A workspace agent's recent conversation, read from the agent itself: `GET <agent
//! URL>/transcript?since=&limit=` (the reference agent keeps it in memory). The agent's URL goes
//! through the same address policy as every A2A call ([`super::client::url_allowed`], and the
//! A2A client's resolver again at connect time); the call has a deadline and its answer a size
//! cap, and what comes back is parsed into typed messages before anyone sees it: an agent is
//! not trusted to answer well.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::client::url_allowed;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::workspaces::{Status, WorkspaceRow};

/// The longest the host waits for an agent's transcript.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest transcript answer read (200 messages of 4,000 characters, with room to spare).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

/// One message as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub role: Role,
    pub text: String,
    #[serde(default)]
    pub context_id: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub error: bool,
    #[serde(default)]
    pub truncated: bool,
}

/// A page of the transcript: messages after `since`, oldest first, and the next `since`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next_since: u64,
}

/// Why no transcript came back.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("workspace not found")]
    NotFound,
    #[error("workspace removed")]
    Removed(Box<WorkspaceRow>),
    #[error("store error")]
    Store(#[from] StoreError),
    /// The workspace has no agent URL to call (not started, or an agent that polls).
    #[error("the workspace's agent has no URL")]
    NoUrl { status: Status },
    /// The agent is not online (starting, stopped, paused, hibernated, failed).
    #[error("the workspace's agent is not online")]
    NotOnline { status: Status },
    /// The URL is outside the address policy.
    #[error("the workspace's agent URL is not allowed")]
    UnsafeUrl,
    /// The agent has no `GET /transcript` (404 or 405): an agent other than the reference one.
    #[error("the workspace's agent serves no transcript")]
    Unsupported,
    /// The call failed or timed out.
    #[error("failed to reach the workspace's agent")]
    Unreachable,
    /// The agent answered with an error status, too much, or something that is not a page.
    #[error("the workspace's agent answered with an invalid transcript")]
    BadAnswer,
}

/// Reads `limit` messages after `since` from the agent of the live workspace `id`.
pub async fn fetch(
    svc: &Services,
    id: Uuid,
    since: u64,
    limit: u32,
) -> Result<Page, TranscriptError> {
    let target = svc
        .a2a
        .routes()
        .row(&svc.db, id)
        .await?
        .ok_or(TranscriptError::NotFound)?;
    if target.status == Status::Removed {
        return Err(TranscriptError::Removed(Box::new((*target).clone())));
    }
    let Some(url) = target.url.as_deref().filter(|u| !u.is_empty()) else {
        return Err(TranscriptError::NoUrl {
            status: target.status,
        });
    };
    if !matches!(target.status, Status::Online | Status::Degraded) {
        return Err(TranscriptError::NotOnline {
            status: target.status,
        });
    }
    if url_allowed(svc, &target, url).await.is_none() {
        tracing::warn!(workspace_id = %id, "refusing to read a transcript from an agent URL in a blocked range");
        return Err(TranscriptError::UnsafeUrl);
    }
    let mut response = svc
        .a2a
        .client()
        .get(format!("{}/transcript", url.trim_end_matches('/')))
        .query(&[("since", since.to_string()), ("limit", limit.to_string())])
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|err| {
            tracing::debug!(workspace_id = %id, error = %err, "the transcript call did not reach the agent");
            TranscriptError::Unreachable
        })?;
    let status = response.status();
    if matches!(status.as_u16(), 404 | 405) {
        return Err(TranscriptError::Unsupported);
    }
    if !status.is_success() {
        tracing::debug!(workspace_id = %id, %status, "the agent refused its transcript");
        return Err(TranscriptError::BadAnswer);
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(TranscriptError::BadAnswer);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| {
        tracing::debug!(workspace_id = %id, error = %err, "reading the agent's transcript failed");
        TranscriptError::Unreachable
    })? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(TranscriptError::BadAnswer);
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body, limit)
}

/// The agent's answer as a page: valid JSON of the right shape, with no more messages than
/// were asked for.
fn parse(body: &[u8], limit: u32) -> Result<Page, TranscriptError> {
    let page: Page = serde_json::from_slice(body).map_err(|_| TranscriptError::BadAnswer)?;
    if page.messages.len() > limit as usize {
        return Err(TranscriptError::BadAnswer);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_a_page_of_typed_messages_or_bad() {
        let page = parse(
            br#"{"messages":[{"seq":1,"role":"user","text":"hi","at":"2026-01-02T03:04:05.678Z"},
                {"seq":2,"role":"agent","text":"oops","context_id":"c","at":"2026-01-02T03:04:06Z","error":true}],
                "next_since":2}"#,
            10,
        )
        .unwrap();
        assert_eq!(page.next_since, 2);
        assert_eq!(page.messages[0].role, Role::User);
        assert!(!page.messages[0].error && page.messages[1].error);
        assert_eq!(page.messages[1].context_id.as_deref(), Some("c"));

        for bad in [
            &b"not json"[..],
            br#"{"messages":[]}"#,
            br#"{"messages":[{"seq":1,"role":"system","text":"x","at":"2026-01-02T03:04:05Z"}],"next_since":1}"#,
            br#"{"messages":[{"seq":1,"role":"user","text":"x","at":"yesterday"}],"next_since":1}"#,
            br#"{"messages":[{"seq":-1,"role":"user","text":"x","at":"2026-01-02T03:04:05Z"}],"next_since":1}"#,
        ] {
            assert!(
                matches!(parse(bad, 10), Err(TranscriptError::BadAnswer)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let two = br#"{"messages":[{"seq":1,"role":"user","text":"a","at":"2026-01-02T03:04:05Z"},{"seq":2,"role":"user","text":"b","at":"2026-01-02T03:04:05Z"}],"next_since":2}"#;
        assert!(matches!(parse(two, 1), Err(TranscriptError::BadAnswer)));
    }
}
