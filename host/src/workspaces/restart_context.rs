//! The restart context: once a restarted agent is back online, the host tells it what happened,
//! as the original platform did, with an A2A `message/send` from `system:restart-context`:
//! when it was restarted, when its previous session started and was last heard from, and which
//! environment keys it has now (secret names, never values), marking those set after that
//! session started (its environment was fixed then, so it never saw them).
//!
//! An agent keeps its files across a restart but not what it held in memory; without this
//! message it cannot tell a fresh start from a restart, nor that the secret it was waiting for
//! has arrived. The message goes through [`client::send`] like any other (URL check, busy queue,
//! `a2a_receive` row), so the feed shows it and its answer. Operators turn it off with
//! `runtime.restart_context = false`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::agents::Caller;
use crate::agents::client::{self, Call, Message, OnBusy, Sent};
use crate::secrets::{self, SecretInfo};
use crate::services::Services;
use crate::store::workspaces::WorkspaceRow;

/// Who the message comes from, in its metadata and in the activity row's summary.
pub const SOURCE: &str = "system:restart-context";

/// How long the host waits for the agent to take the message (its answer is recorded).
const TIMEOUT: Duration = Duration::from_secs(120);

/// What the host knows about one restart.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// When the agent was stopped for the restart.
    pub at: DateTime<Utc>,
    /// The session the restart ended, if its agent ever registered.
    pub previous: Option<Session>,
}

/// A session as its heartbeats describe it.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub started: DateTime<Utc>,
    pub last_heard: DateTime<Utc>,
}

impl Session {
    /// The session a workspace row describes (its last heartbeat less the uptime the agent
    /// reported, and that heartbeat): `None` when its agent never registered.
    pub fn of(row: &WorkspaceRow) -> Option<Session> {
        Session::from_heartbeat(row.last_heartbeat_at, row.uptime_seconds)
    }

    /// Agents report whole seconds (truncated), so the session may have started up to a second
    /// before `last - uptime`; the earlier bound is taken, so a secret set in that second counts
    /// as one the session lacked rather than one it had. The uptime is the agent's own report:
    /// one too large for a date goes back to the earliest date there is rather than failing.
    fn from_heartbeat(last: Option<DateTime<Utc>>, uptime_seconds: i64) -> Option<Session> {
        let last_heard = last?;
        let started = chrono::Duration::try_seconds(uptime_seconds.max(0).saturating_add(1))
            .and_then(|uptime| last_heard.checked_sub_signed(uptime))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Some(Session {
            started,
            last_heard,
        })
    }
}

/// The `message/send` body telling an agent about `restart`, given the secrets it has now.
pub fn message(restart: Restart, keys: &[SecretInfo]) -> Value {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    // The previous session's environment was fixed when it started; without one, only keys
    // set since the restart began count as new.
    let since = restart.previous.map_or(restart.at, |s| s.started);
    let changed: Vec<&str> = keys
        .iter()
        .filter(|k| k.updated_at > since)
        .map(|k| k.key.as_str())
        .collect();
    let mut text = format!("Your workspace was restarted at {}.", time(restart.at));
    match restart.previous {
        Some(session) => text.push_str(&format!(
            " Your previous session started at {} and was last heard from at {}.",
            time(session.started),
            time(session.last_heard)
        )),
        None => text.push_str(" Your previous session never registered."),
    }
    text.push_str(
        " Your files are as you left them; anything held only in memory, including tasks in \
         progress, is gone.",
    );
    if names.is_empty() {
        text.push_str(" No secrets are set as environment keys.");
    } else {
        text.push_str(&format!(
            " Environment keys available now: {}.",
            names.join(", ")
        ));
    }
    if !changed.is_empty() {
        text.push_str(&format!(
            " Set or changed since your previous session started: {}.",
            changed.join(", ")
        ));
    }
    json!({
        "jsonrpc": "2.0",
        "method": "message/send",
        "params": { "message": {
            "role": "user",
            "parts": [{ "kind": "text", "text": text }],
            "metadata": {
                "source": SOURCE,
                "priority": "info",
                "restarted_at": time(restart.at),
                "previous_session_started_at": restart.previous.map(|s| time(s.started)),
                "previous_heartbeat_at": restart.previous.map(|s| time(s.last_heard)),
                "env_keys": names,
                "changed_env_keys": changed,
            },
        } },
    })
}

/// Sends the restart context to `id`'s agent. Best effort: a failure is logged and recorded
/// on the workspace's feed like any other A2A call, and changes nothing else.
pub async fn send(svc: &Services, id: Uuid, restart: Restart) {
    let keys = match secrets::list_for_workspace(&svc.db, id).await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "listing secrets for the restart context failed");
            return;
        }
    };
    let message = match Message::normalize(message(restart, &keys)) {
        Ok(message) => message,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = err, "the restart context is not a valid message");
            return;
        }
    };
    let call = Call {
        caller: Caller::System(SOURCE),
        target: id,
        message,
        timeout: Some(TIMEOUT),
        on_busy: OnBusy::Enqueue,
    };
    match client::send(svc, call).await {
        Ok(Sent::Delivered(_)) => {
            tracing::debug!(workspace_id = %id, "restart context delivered");
        }
        Ok(Sent::Queued { queue_id, .. }) => {
            tracing::debug!(workspace_id = %id, %queue_id, "restart context queued: the agent is busy");
        }
        Err(err) => {
            tracing::info!(workspace_id = %id, error = %err, "the restart context did not reach the agent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Scope;

    fn key(name: &str, updated_at: &str) -> SecretInfo {
        let at = DateTime::parse_from_rfc3339(updated_at)
            .unwrap()
            .with_timezone(&Utc);
        SecretInfo {
            key: name.to_owned(),
            scope: Scope::Workspace,
            created_at: at,
            updated_at: at,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_message_names_times_and_keys_and_marks_what_the_last_session_lacked() {
        let restart = Restart {
            at: at("2026-11-30T10:00:05Z"),
            previous: Some(Session {
                started: at("2026-11-30T09:00:00Z"),
                last_heard: at("2026-11-30T10:00:04Z"),
            }),
        };
        // MODEL was set while the previous session ran, before its last heartbeat: that
        // session never had it.
        let body = message(
            restart,
            &[
                key("API_KEY", "2026-11-29T08:00:00Z"),
                key("MODEL", "2026-11-30T10:00:03Z"),
            ],
        );
        let message = &body["params"]["message"];
        let text = message["parts"][0]["text"].as_str().unwrap();
        assert!(text.contains("restarted at 2026-11-30T10:00:05Z"), "{text}");
        assert!(
            text.contains(
                "started at 2026-11-30T09:00:00Z and was last heard from at 2026-11-30T10:00:04Z"
            ),
            "{text}"
        );
        assert!(text.contains("available now: API_KEY, MODEL."), "{text}");
        assert!(
            text.contains("since your previous session started: MODEL."),
            "{text}"
        );
        assert_eq!(message["metadata"]["source"], SOURCE);
        assert_eq!(message["metadata"]["env_keys"], json!(["API_KEY", "MODEL"]));
        assert_eq!(message["metadata"]["changed_env_keys"], json!(["MODEL"]));
        assert_eq!(
            message["metadata"]["previous_session_started_at"],
            "2026-11-30T09:00:00Z"
        );
        assert!(Message::normalize(body).is_ok());
    }

    #[test]
    fn without_a_previous_session_or_secrets_it_says_so() {
        let restart = Restart {
            at: at("2026-11-30T10:00:05Z"),
            previous: None,
        };
        let body = message(restart, &[]);
        let text = body["params"]["message"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert!(text.contains("never registered"), "{text}");
        assert!(text.contains("No secrets are set"), "{text}");
        assert!(!text.contains("changed since"), "{text}");
        assert_eq!(
            body["params"]["message"]["metadata"]["previous_heartbeat_at"],
            Value::Null
        );
    }

    #[test]
    fn a_session_starts_its_reported_uptime_before_its_last_heartbeat() {
        assert!(Session::from_heartbeat(None, 90).is_none());
        let absurd = Session::from_heartbeat(Some(at("2026-11-30T10:00:00Z")), i64::MAX).unwrap();
        assert_eq!(absurd.started, DateTime::<Utc>::MIN_UTC);
        let session = Session::from_heartbeat(Some(at("2026-11-30T10:00:00Z")), 90).unwrap();
        // 90 s reported means 90 to 91 s: the earlier start.
        assert_eq!(session.started, at("2026-11-30T09:58:29Z"));
        assert_eq!(session.last_heard, at("2026-11-30T10:00:00Z"));
    }
}
