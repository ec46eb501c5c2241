//! [`send`]: the one way a message reaches an agent. It resolves and checks the target's URL,
//! forwards the JSON-RPC call, queues it when the agent is busy or hibernated (and has a
//! hibernated one woken), has an agent that died checked (and restarted) through
//! [`super::Supervision`], and records the exchange. Whether the caller
//! may reach the target is the caller's to check first (`delegation::proxy::send` does).

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::addresses::url_owner;
use super::budget;
use super::forward::{self, Forwarded, Timeouts, TransportError};
use super::{AgentCheck, Caller};
use crate::events::{activity, names};
use crate::services::Services;
use crate::store::activity::ActivityRow;
use crate::store::workspaces::{EXTERNAL_RUNTIME, Status, WorkspaceRow};
use crate::store::{self, StoreError, a2a_queue};

/// A JSON-RPC 2.0 request ready to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub body: Value,
    pub method: String,
    /// `params.message.messageId` of a `message/send`: the queue's idempotency key.
    pub message_id: Option<String>,
}

impl Message {
    /// Brings what callers send into JSON-RPC 2.0 form:
    /// - a body without `jsonrpc` is wrapped as `{jsonrpc, id, method, params}` from its own
    ///   `method` and `params`; a missing `id` is generated; a missing `method` is `message/send`;
    /// - for `message/send`, `params.message` gets a generated `messageId` and role `user` when
    ///   missing, and a string `content` becomes a text part. A message with neither `parts`
    ///   nor `content` is refused.
    pub fn normalize(raw: Value) -> Result<Message, &'static str> {
        let Value::Object(mut object) = raw else {
            return Err("the body must be a JSON object");
        };
        let method = match object.get("method") {
            None => "message/send".to_owned(),
            Some(Value::String(m)) if !m.is_empty() && m.len() <= 200 => m.clone(),
            Some(_) => return Err("method must be a non-empty string"),
        };
        let id = match object.remove("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => id,
            _ => json!(Uuid::new_v4().to_string()),
        };
        let mut params = match object.remove("params") {
            None => Value::Object(Map::new()),
            Some(params @ Value::Object(_)) => params,
            Some(_) => return Err("params must be an object"),
        };
        let mut message_id = None;
        if method == "message/send" {
            let Some(message) = params.get_mut("message").and_then(Value::as_object_mut) else {
                return Err("params.message is required");
            };
            if !message.contains_key("parts") {
                match message.remove("content") {
                    Some(Value::String(text)) => {
                        message.insert("parts".into(), json!([{ "kind": "text", "text": text }]));
                    }
                    _ => return Err("params.message needs parts or a string content"),
                }
            }
            if !message.get("parts").is_some_and(Value::is_array) {
                return Err("params.message.parts must be an array");
            }
            let given = message
                .get("messageId")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty() && m.len() <= 200)
                .map(str::to_owned);
            let generated = given.unwrap_or_else(|| Uuid::new_v4().to_string());
            message.insert("messageId".into(), json!(generated));
            message.entry("role").or_insert_with(|| json!("user"));
            message_id = Some(generated);
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        Ok(Message {
            body,
            method,
            message_id,
        })
    }

    /// `params.message.metadata.<key>` or `params.metadata.<key>`.
    fn metadata(&self, key: &str) -> Option<&Value> {
        let params = self.body.get("params")?;
        params
            .pointer(&format!("/message/metadata/{key}"))
            .or_else(|| params.pointer(&format!("/metadata/{key}")))
    }

    /// The delegation this message carries, if it is one.
    pub fn delegation_id(&self) -> Option<Uuid> {
        self.metadata("delegation_id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
    }

    /// Queue priority: `metadata.priority` as a number (0–100) or `critical` (100), `task`
    /// (50, the default) or `info` (10).
    fn priority(&self) -> i32 {
        match self.metadata("priority") {
            Some(Value::Number(n)) => n.as_i64().map_or(50, |n| n.clamp(0, 100) as i32),
            Some(Value::String(s)) if s == "critical" => 100,
            Some(Value::String(s)) if s == "info" => 10,
            _ => 50,
        }
    }

    /// How long a queued copy stays deliverable: `metadata.queue_ttl_secs`, else the default.
    fn queue_ttl(&self, default_secs: u64) -> Duration {
        let secs = self
            .metadata("queue_ttl_secs")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .unwrap_or(default_secs);
        Duration::from_secs(secs.min(30 * 24 * 3600))
    }
}

/// What to do when the agent is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBusy {
    /// Queue the message for the next heartbeat with spare capacity.
    Enqueue,
    /// Report [`ProxyError::Busy`] (deliveries from the queue itself).
    Report,
}

/// One call to an agent.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub target: Uuid,
    pub message: Message,
    /// The caller's own deadline (`X-Timeout`), clamped to the configured ceiling.
    pub timeout: Option<Duration>,
    pub on_busy: OnBusy,
}

/// The agent's answer as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub status: Option<u16>,
    pub body: Vec<u8>,
    pub error: Option<TransportError>,
    pub duration_ms: i32,
    /// The body parsed as JSON, once, the first time anything asks.
    parsed: std::sync::OnceLock<Option<Value>>,
}

/// The most of an answer the activity log (and the canvas's `A2A_RESPONSE`) keeps: a larger
/// answer is stored as a preview of its text, not as a second copy of the whole body.
pub const STORED_BODY_MAX: usize = 64 * 1024;

/// The success rule: the agent answered 2xx with a body that is not empty. Whether the
/// connection then broke does not matter; an empty 2xx and any non-2xx are failures.
pub fn delivered(
    status: Option<u16>,
    body: &[u8],
    _transport_error: Option<TransportError>,
) -> bool {
    status.is_some_and(|s| (200..300).contains(&s)) && !body.iter().all(u8::is_ascii_whitespace)
}

impl Delivery {
    pub fn new(
        status: Option<u16>,
        body: Vec<u8>,
        error: Option<TransportError>,
        duration_ms: i32,
    ) -> Delivery {
        Delivery {
            status,
            body,
            error,
            duration_ms,
            parsed: std::sync::OnceLock::new(),
        }
    }

    pub fn delivered(&self) -> bool {
        delivered(self.status, &self.body, self.error)
    }

    /// Whether the body parses as JSON.
    pub fn is_json(&self) -> bool {
        self.json().is_some()
    }

    fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_slice(&self.body).ok())
            .as_ref()
    }

    /// Why this delivery failed, or `None` when it succeeded: the transport, the agent's HTTP
    /// status, or a JSON-RPC error in a complete answer.
    pub fn failure(&self) -> Option<String> {
        if !self.delivered() {
            return Some(match (self.status, self.error) {
                (None, error) => error.unwrap_or(TransportError::Other).as_str().to_owned(),
                (Some(status), _) if (200..300).contains(&status) => {
                    "workspace agent returned empty response".to_owned()
                }
                (Some(status), _) => match self.json().and_then(error_text) {
                    Some(text) => format!("agent answered {status}: {text}"),
                    None => format!("agent answered {status}"),
                },
            });
        }
        let Some(json) = self.json() else {
            // A complete 2xx answer that is not JSON is no A2A answer at all (one that broke off
            // or was cut at the size limit is judged by its transport error instead).
            return self.error.is_none().then(|| {
                format!(
                    "agent answered {} with a body that is not JSON",
                    self.status.unwrap_or_default()
                )
            });
        };
        json.get("error")
            .filter(|e| !e.is_null())
            .map(|_| format!("agent error: {}", error_text(json).unwrap_or_default()))
    }

    /// The text of the agent's answer: `result.parts` (or `result.artifacts[].parts`) text parts,
    /// or the raw body when it is not a complete JSON-RPC answer.
    pub fn text(&self) -> String {
        let raw = || String::from_utf8_lossy(&self.body).into_owned();
        let Some(json) = self.json() else {
            return raw();
        };
        let Some(result) = json.get("result") else {
            return raw();
        };
        let mut texts: Vec<&str> = text_parts(result.get("parts"));
        if let Some(artifacts) = result.get("artifacts").and_then(Value::as_array) {
            for artifact in artifacts {
                texts.extend(text_parts(artifact.get("parts")));
            }
        }
        if texts.is_empty() {
            return raw();
        }
        texts.join("\n")
    }

    /// Whether a delivered answer carries no text at all: no non-blank text part in `result`
    /// or its artifacts. A scheduled prompt answered like this counts as an empty run.
    pub fn is_empty_answer(&self) -> bool {
        let Some(result) = self.json().and_then(|j| j.get("result")) else {
            return self.body.iter().all(u8::is_ascii_whitespace);
        };
        let mut texts = text_parts(result.get("parts"));
        if let Some(artifacts) = result.get("artifacts").and_then(Value::as_array) {
            for artifact in artifacts {
                texts.extend(text_parts(artifact.get("parts")));
            }
        }
        texts.iter().all(|t| t.trim().is_empty())
    }

    /// The body as stored in the activity log: the JSON as sent, or the text when it is not JSON.
    ///
    /// An answer over [`STORED_BODY_MAX`] bytes is kept as a preview of its first bytes
    /// (`{"preview", "bytes", "truncated": true}`).
    fn stored_body(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        if self.body.len() > STORED_BODY_MAX {
            let preview = String::from_utf8_lossy(&self.body[..STORED_BODY_MAX]);
            return Some(json!({
                "preview": preview.trim_end_matches('\u{fffd}'),
                "bytes": self.body.len(),
                "truncated": true,
            }));
        }
        Some(self.json().cloned().unwrap_or_else(
            || json!({ "raw": String::from_utf8_lossy(&self.body), "truncated": self.error.is_some() }),
        ))
    }
}

pub(super) fn text_parts(parts: Option<&Value>) -> Vec<&str> {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            let tag = |k| p.get(k).and_then(Value::as_str);
            tag("kind").or_else(|| tag("type")) == Some("text")
        })
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

/// `error` as a string, or `error.message`.
pub(super) fn error_text(json: &Value) -> Option<String> {
    let error = json.get("error")?;
    error
        .as_str()
        .or_else(|| error.get("message").and_then(Value::as_str))
        .map(|s| s.chars().take(500).collect())
}

/// How a call ended when it did not fail.
#[derive(Debug, Clone)]
pub enum Sent {
    /// The agent answered (perhaps only partly, perhaps with an error status).
    Delivered(Delivery),
    /// The agent was busy, or hibernated (`waking`: a wake was started), or fetches its
    /// messages itself (`polled`: a poll-mode agent); the message waits in the queue.
    Queued {
        queue_id: Uuid,
        depth: i64,
        waking: bool,
        polled: bool,
    },
}

/// Why a call did not reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("access denied: workspaces cannot communicate per hierarchy rules")]
    Forbidden,
    #[error("workspace not found")]
    NotFound,
    #[error("workspace budget limit exceeded")]
    BudgetExceeded,
    #[error("workspace has no URL")]
    NoUrl { status: String },
    #[error("workspace URL is not publicly routable")]
    UnsafeUrl,
    #[error("workspace agent is not running — container restart triggered")]
    Restarting,
    #[error("workspace agent busy — retry later")]
    Busy,
    #[error("failed to reach workspace agent")]
    Unreachable(TransportError),
    #[error("store error")]
    Store(#[from] StoreError),
}

impl ProxyError {
    /// Failures worth one more try after a pause: the agent was unreachable or restarting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Restarting | Self::Busy | Self::NoUrl { .. }
        )
    }
}

/// Sends `call` to its target agent. See the module docs for the steps.
pub async fn send(svc: &Services, call: Call) -> Result<Sent, ProxyError> {
    let target = svc
        .a2a
        .routes()
        .row(&svc.db, call.target)
        .await?
        .filter(|row| row.status != Status::Removed)
        .ok_or(ProxyError::NotFound)?;
    if budget::over_budget(&target) {
        return Err(ProxyError::BudgetExceeded);
    }
    // A poll-mode agent is never called: the message waits in its inbox (the queue) until it
    // fetches it. Durable before the answer, since the caller is told it is queued.
    if target.polls() {
        let outcome =
            enqueue(svc, &call, &target, "poll-mode agent")
                .await
                .map(|(queue_id, depth)| Sent::Queued {
                    queue_id,
                    depth,
                    waking: false,
                    polled: true,
                });
        record(svc, call, &target, &outcome).await;
        return outcome;
    }
    // Wake on demand: one comparison on the cached row, nothing more, for a running target.
    if matches!(target.status, Status::Hibernated | Status::Hibernating)
        && call.on_busy == OnBusy::Enqueue
    {
        let outcome = enqueue(svc, &call, &target, "hibernated")
            .await
            .map(|(queue_id, depth)| Sent::Queued {
                queue_id,
                depth,
                waking: true,
                polled: false,
            });
        if outcome.is_ok() {
            svc.a2a.supervision().wake(svc, target.id);
        }
        record(svc, call, &target, &outcome).await;
        return outcome;
    }
    let Some(url) = target.url.clone().filter(|u| !u.is_empty()) else {
        return Err(ProxyError::NoUrl {
            status: target.status.to_string(),
        });
    };
    let Some(url) = url_allowed(svc, &target, &url).await else {
        tracing::warn!(workspace_id = %target.id, "refusing to proxy to an agent URL in a blocked range");
        return Err(ProxyError::UnsafeUrl);
    };
    let settings = &svc.config.a2a;
    let ceiling = Duration::from_secs(settings.max_timeout_secs.max(1));
    let timeouts = Timeouts {
        header: Duration::from_secs(settings.response_header_timeout_secs.max(1)),
        idle: Duration::from_secs(settings.idle_timeout_secs.max(1)),
        deadline: Instant::now() + call.timeout.map_or(ceiling, |t| t.min(ceiling)),
    };
    let payload = serde_json::to_vec(&call.message.body).unwrap_or_default();
    let alive = svc.events.signs_of_life(target.id);
    let span = svc.traces.start(
        "a2a.forward",
        opentelemetry::trace::SpanKind::Client,
        vec![
            crate::traces::workspace(target.id),
            opentelemetry::KeyValue::new(
                "molecule.caller_id",
                match call.caller {
                    Caller::Canvas => "canvas".to_owned(),
                    Caller::Workspace(id) => id.to_string(),
                    Caller::System(name) => name.to_owned(),
                },
            ),
            opentelemetry::KeyValue::new("rpc.method", call.message.method.clone()),
        ],
    );
    let traceparent = crate::traces::propagation::traceparent(&span);
    let forwarded =
        forward::forward(svc.a2a.client(), url, payload, traceparent, timeouts, alive).await;
    end_forward_span(&span, &forwarded);
    let outcome = settle(svc, &call, &target, forwarded).await;
    record(svc, call, &target, &outcome).await;
    outcome
}

/// Ends the `a2a.forward` span with what came back: an error status for a transport failure
/// or an answer other than 2xx.
fn end_forward_span(span: &opentelemetry::Context, forwarded: &Forwarded) {
    use opentelemetry::trace::TraceContextExt as _;
    if let Some(status) = forwarded.status {
        span.span().set_attribute(opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    let error = match (forwarded.status, forwarded.error) {
        (_, Some(error)) => Some(error.as_str().to_owned()),
        (Some(status), None) if !(200..300).contains(&status) => {
            Some(format!("the agent answered {status}"))
        }
        _ => None,
    };
    crate::traces::finish(span, error);
}

/// Turns what came back into the call's outcome: an answer, a queued message, or an error.
async fn settle(
    svc: &Services,
    call: &Call,
    target: &WorkspaceRow,
    forwarded: Forwarded,
) -> Result<Sent, ProxyError> {
    let delivery = Delivery::new(
        forwarded.status,
        forwarded.body,
        forwarded.error,
        i32::try_from(forwarded.elapsed.as_millis()).unwrap_or(i32::MAX),
    );
    if delivery.status.is_some() {
        return Ok(Sent::Delivered(delivery));
    }
    let error = delivery.error.unwrap_or(TransportError::Other);
    if target.runtime != EXTERNAL_RUNTIME
        && let AgentCheck::Exited { .. } = svc.a2a.supervision().check_agent(svc, target.id).await?
    {
        return Err(ProxyError::Restarting);
    }
    if !error.is_busy() {
        return Err(ProxyError::Unreachable(error));
    }
    if call.on_busy == OnBusy::Report {
        return Err(ProxyError::Busy);
    }
    enqueue(svc, call, target, error.as_str())
        .await
        .map(|(queue_id, depth)| Sent::Queued {
            queue_id,
            depth,
            waking: false,
            polled: false,
        })
}

/// Puts `call`'s message into `target`'s durable queue (delivered on a heartbeat with room):
/// its id and the queue's depth.
async fn enqueue(
    svc: &Services,
    call: &Call,
    target: &WorkspaceRow,
    reason: &str,
) -> Result<(Uuid, i64), ProxyError> {
    let ttl = call.message.queue_ttl(svc.config.a2a.queue_ttl_secs);
    let item = a2a_queue::NewItem {
        workspace_id: target.id,
        caller_id: call.caller.workspace(),
        priority: call.message.priority(),
        body: call.message.body.clone(),
        method: call.message.method.clone(),
        idempotency_key: call.message.message_id.clone(),
        expires_at: chrono::Duration::from_std(ttl)
            .ok()
            .map(|ttl| chrono::Utc::now() + ttl),
    };
    match svc.writes.enqueue(item).await {
        Ok((queue_id, depth)) => {
            tracing::info!(workspace_id = %target.id, %queue_id, depth, reason, "message queued for the agent");
            Ok((queue_id, depth))
        }
        Err(err) => {
            tracing::error!(workspace_id = %target.id, error = ?err, "queueing a message failed");
            Err(ProxyError::Busy)
        }
    }
}

/// How long an agent has to finish its work once told a restart is coming (the
/// `signals/restart_pending` notification's `drain_seconds`).
pub const RESTART_DRAIN_SECS: u64 = 20;
/// The longest the host waits for an agent to take the restart signal.
const RESTART_SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells `target`'s agent a restart is coming: `POST <url>/signals/restart_pending` with
/// `X-Restart-Signal: true` and the JSON-RPC notification `signals/restart_pending`
/// `{drain_seconds, workspace_id}`. Best effort: waits at most 10 s, and an agent that is gone,
/// refuses or answers with an error does not hold the restart up. Whether the agent took it.
pub async fn signal_restart_pending(svc: &Services, target: &WorkspaceRow) -> bool {
    let Some(url) = target.url.as_deref().filter(|u| !u.is_empty()) else {
        return false;
    };
    if url_allowed(svc, target, url).await.is_none() {
        return false;
    }
    let notification = json!({
        "jsonrpc": "2.0",
        "method": "signals/restart_pending",
        "params": { "drain_seconds": RESTART_DRAIN_SECS, "workspace_id": target.id },
    });
    let sent = svc
        .a2a
        .client()
        .post(format!(
            "{}/signals/restart_pending",
            url.trim_end_matches('/')
        ))
        .header("X-Restart-Signal", "true")
        .timeout(RESTART_SIGNAL_TIMEOUT)
        .json(&notification)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::debug!(workspace_id = %target.id, status = %response.status(), "the agent refused the restart signal");
            false
        }
        Err(err) => {
            tracing::debug!(workspace_id = %target.id, error = %err, "the restart signal did not reach the agent");
            false
        }
    }
}

/// `url` as parsed when the host may call it for `target`, under the address policy (see
/// [`super::url`]): the runtime's own URLs for the target may reach its loopback port or
/// its private network name in production; any other URL only public addresses (or the
/// operator's listed private networks). The client's resolver applies the same policy again
/// when it connects.
pub(super) async fn url_allowed(
    svc: &Services,
    target: &WorkspaceRow,
    url: &str,
) -> Option<reqwest::Url> {
    let owner = url_owner(svc, target, url);
    svc.a2a.policy().permits(url, owner).await.ok()
}

/// Records the exchange on the target (`a2a_receive`), stamps the caller's last outbound call
/// and, for the canvas, broadcasts the answer (`A2A_RESPONSE`).
async fn record(
    svc: &Services,
    call: Call,
    target: &WorkspaceRow,
    outcome: &Result<Sent, ProxyError>,
) {
    if matches!(
        outcome,
        Err(ProxyError::Forbidden | ProxyError::NotFound | ProxyError::Store(_))
    ) {
        return;
    }
    let mut row = ActivityRow::new(target.id, "a2a_receive");
    row.source_id = call.caller.workspace();
    row.target_id = Some(target.id);
    row.method = Some(call.message.method.clone());
    row.summary = Some(match call.caller {
        Caller::System(source) => {
            format!("{} from {source} → {}", call.message.method, target.name)
        }
        _ => format!("{} → {}", call.message.method, target.name),
    });
    // The call ends here: its body moves into the row instead of being copied.
    row.request_body = Some(call.message.body);
    match outcome {
        Ok(Sent::Delivered(delivery)) => {
            if let Some(answer) = delivery.json() {
                budget::count(svc, target.id, answer).await;
            }
            row.response_body = delivery.stored_body();
            row.duration_ms = Some(delivery.duration_ms);
            row.tool_trace = delivery
                .json()
                .and_then(|j| j.pointer("/result/metadata/tool_trace").cloned());
            if let Some(failure) = delivery.failure() {
                row.status = "error".into();
                row.error_detail = Some(failure);
            }
        }
        Ok(Sent::Queued {
            queue_id,
            depth,
            waking,
            polled,
        }) => {
            row.status = "queued".into();
            row.response_body = Some(if *polled {
                json!({ "status": "queued", "delivery_mode": "poll", "queue_id": queue_id, "queue_depth": depth })
            } else {
                json!({ "queued": true, "queue_id": queue_id, "queue_depth": depth, "waking": waking })
            });
        }
        Err(err) => {
            row.status = "error".into();
            row.error_detail = Some(err.to_string());
        }
    }
    // The canvas sees the same stored body (built once) in `A2A_RESPONSE`.
    let for_canvas = (call.caller == Caller::Canvas && matches!(outcome, Ok(Sent::Delivered(_))))
        .then(|| row.response_body.clone());
    activity::record_deferred(svc, row).await;
    if let Some(caller) = call.caller.workspace() {
        svc.writes
            .write(store::batch::Write::Outbound {
                workspace: caller,
                at: chrono::Utc::now(),
            })
            .await;
    }
    if let (Some(response_body), Ok(Sent::Delivered(delivery))) = (for_canvas, outcome) {
        svc.events.broadcast_only(
            names::A2A_RESPONSE,
            Some(target.id),
            json!({
                "response_body": response_body,
                "method": call.message.method,
                "duration_ms": delivery.duration_ms,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_rule() {
        use TransportError::*;
        // (status, body, transport error) → delivered?
        let table: &[(Option<u16>, &str, Option<TransportError>, bool)] = &[
            (Some(200), "{\"result\":1}", None, true),
            (Some(200), "{\"resu", Some(Reset), true),
            (Some(201), "partial", Some(Eof), true),
            (Some(200), "", None, false),
            (Some(200), "  \n", None, false),
            (Some(200), "", Some(Reset), false),
            (Some(500), "{\"error\":\"boom\"}", None, false),
            (Some(502), "", None, false),
            (Some(302), "moved", None, false),
            (None, "", Some(HeaderTimeout), false),
            (None, "", Some(Connect), false),
        ];
        for (status, body, error, expected) in table {
            assert_eq!(
                delivered(*status, body.as_bytes(), *error),
                *expected,
                "{status:?} {body:?} {error:?}"
            );
        }
    }

    #[test]
    fn bodies_are_brought_into_json_rpc_form() {
        let plain = Message::normalize(json!({ "params": { "message": { "content": "hi" } } }))
            .expect("wrapped");
        assert_eq!(plain.method, "message/send");
        assert_eq!(plain.body["jsonrpc"], "2.0");
        assert!(plain.body["id"].is_string());
        let message = &plain.body["params"]["message"];
        assert_eq!(message["parts"], json!([{ "kind": "text", "text": "hi" }]));
        assert_eq!(message["role"], "user");
        assert_eq!(plain.message_id.as_deref(), message["messageId"].as_str());

        let given = Message::normalize(json!({
            "jsonrpc": "2.0", "id": 7, "method": "message/send",
            "params": { "message": { "messageId": "m-1", "parts": [{ "kind": "text", "text": "x" }] } }
        }))
        .expect("kept");
        assert_eq!(given.body["id"], 7);
        assert_eq!(given.message_id.as_deref(), Some("m-1"));

        for bad in [
            json!([]),
            json!({ "params": { "message": {} } }),
            json!({ "params": { "message": { "content": 3 } } }),
            json!({ "params": {} }),
            json!({ "method": 3 }),
            json!({ "params": "x" }),
        ] {
            assert!(Message::normalize(bad.clone()).is_err(), "{bad}");
        }
        let other = Message::normalize(json!({ "method": "tasks/get", "params": { "id": "t" } }))
            .expect("other methods pass through");
        assert_eq!(other.message_id, None);
    }

    #[test]
    fn a_large_answer_is_stored_as_a_bounded_preview_and_a_small_one_whole() {
        let small = Delivery::new(Some(200), br#"{"result":{"x":1}}"#.to_vec(), None, 1);
        assert_eq!(small.stored_body(), Some(json!({ "result": { "x": 1 } })));
        let text = format!(
            r#"{{"result":{{"text":"{}"}}}}"#,
            "é".repeat(STORED_BODY_MAX)
        );
        let large = Delivery::new(Some(200), text.clone().into_bytes(), None, 1);
        let stored = large.stored_body().expect("a stored body");
        assert_eq!(stored["truncated"], true);
        assert_eq!(stored["bytes"], text.len());
        let preview = stored["preview"].as_str().expect("a preview");
        assert!(preview.len() <= STORED_BODY_MAX && text.starts_with(preview));
        // The answer itself is still read in full.
        assert_eq!(large.failure(), None);
        assert!(large.text().len() > STORED_BODY_MAX);
    }

    #[test]
    fn answers_yield_their_text_and_failures_their_reason() {
        let delivery =
            |status, body: &str, error| Delivery::new(status, body.as_bytes().to_vec(), error, 1);
        let ok = delivery(
            Some(200),
            r#"{"jsonrpc":"2.0","id":1,"result":{"parts":[{"kind":"text","text":"hello"}]}}"#,
            None,
        );
        assert_eq!((ok.text().as_str(), ok.failure()), ("hello", None));
        let artifacts = delivery(
            Some(200),
            r#"{"result":{"artifacts":[{"parts":[{"type":"text","text":"a"}]}]}}"#,
            None,
        );
        assert_eq!(artifacts.text(), "a");
        let partial = delivery(Some(200), r#"{"result":{"par"#, Some(TransportError::Reset));
        assert_eq!(
            (partial.text().as_str(), partial.failure()),
            (r#"{"result":{"par"#, None)
        );
        let rpc_error = delivery(
            Some(200),
            r#"{"error":{"code":-1,"message":"brain failed"}}"#,
            None,
        );
        assert_eq!(
            rpc_error.failure().as_deref(),
            Some("agent error: brain failed")
        );
        let server_error = delivery(Some(500), r#"{"error":"boom"}"#, None);
        assert_eq!(
            server_error.failure().as_deref(),
            Some("agent answered 500: boom")
        );
        let garbage = delivery(Some(200), "<html>not an answer", None);
        assert_eq!(
            garbage.failure().as_deref(),
            Some("agent answered 200 with a body that is not JSON")
        );
        let empty = delivery(Some(200), "", None);
        assert_eq!(
            empty.failure().as_deref(),
            Some("workspace agent returned empty response")
        );
    }
}
