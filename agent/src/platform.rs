//! The platform side: registering this agent and sending heartbeats.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::BaseUrl;
use crate::tasks::{Snapshot, Tasks};
use crate::token::TokenStore;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why a platform call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("platform answered HTTP {0}")]
    Status(StatusCode),
    #[error("platform unreachable")]
    Transport(#[source] reqwest::Error),
}

/// Why an MCP tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Call(CallError),
    #[error("{0}")]
    Tool(String),
}

/// A client for the registry endpoints, authenticated with the workspace token.
#[derive(Debug, Clone)]
pub struct Platform {
    http: reqwest::Client,
    base: BaseUrl,
    workspace_id: Uuid,
    tokens: TokenStore,
}

#[derive(Debug, Serialize)]
struct RegisterBody<'a> {
    id: Uuid,
    url: &'a str,
    agent_card: &'a Value,
}

#[derive(Debug, Serialize)]
struct HeartbeatBody<'a> {
    workspace_id: Uuid,
    error_rate: f64,
    sample_error: Option<&'a str>,
    active_tasks: usize,
    current_task: &'a str,
    uptime_seconds: u64,
}

impl Platform {
    pub fn new(
        base: BaseUrl,
        workspace_id: Uuid,
        tokens: TokenStore,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
            base,
            workspace_id,
            tokens,
        })
    }

    /// One registration attempt; a token in the reply is saved to the token file.
    pub async fn register(&self, url: &str, card: &Value) -> Result<(), CallError> {
        let body = RegisterBody {
            id: self.workspace_id,
            url,
            agent_card: card,
        };
        let response = self.post("/registry/register", &body).await?;
        #[derive(serde::Deserialize)]
        struct Registered {
            auth_token: Option<String>,
        }
        // A 200 whose body is not what we expect still means "registered".
        let registered: Option<Registered> = response.json().await.ok();
        if let Some(token) = registered
            .and_then(|r| r.auth_token)
            .filter(|t| !t.is_empty())
        {
            match self.tokens.write(token.into()).await {
                Ok(()) => tracing::info!("saved the workspace token issued at registration"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot save the workspace token; keeping it in memory")
                }
            }
        }
        Ok(())
    }

    /// One heartbeat; after a 401 the token file is read again and the heartbeat retried once,
    /// since the host may have rotated the token.
    pub async fn heartbeat(&self, snapshot: &Snapshot) -> Result<(), CallError> {
        let body = HeartbeatBody {
            workspace_id: self.workspace_id,
            error_rate: snapshot.error_rate.clamp(0.0, 1.0),
            sample_error: snapshot.sample_error.as_deref(),
            active_tasks: snapshot.active_tasks,
            current_task: &snapshot.current_task,
            uptime_seconds: snapshot.uptime_seconds,
        };
        match self.post("/registry/heartbeat", &body).await {
            Err(CallError::Status(StatusCode::UNAUTHORIZED)) => {
                tracing::info!("heartbeat refused with 401; retrying with the token file re-read");
                self.post("/registry/heartbeat", &body).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    /// Reports an `agent_log` activity row for this workspace (what the canvas's activity
    /// feed shows).
    pub async fn log_activity(&self, summary: &str) -> Result<(), CallError> {
        let body = serde_json::json!({
            "activity_type": "agent_log",
            "source_id": self.workspace_id,
            "summary": summary,
        });
        let path = format!("/workspaces/{}/activity", self.workspace_id);
        self.post(&path, &body).await.map(drop)
    }

    /// Calls one of the host's MCP tools for this workspace and returns its text. Delegation
    /// waits for the other agent, so this call has no timeout of its own beyond `wait`.
    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }

    /// Sends finished spans to the host (`POST /workspaces/{id}/traces`, OTLP JSON).
    pub async fn export_spans(
        &self,
        request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    ) -> Result<(), CallError> {
        let path = format!("/workspaces/{}/traces", self.workspace_id);
        self.post(&path, request).await.map(drop)
    }

    /// `traceparent`: the span the call is made in, so the host's work joins its trace.
    pub async fn mcp_tool(
        &self,
        tool: &str,
        arguments: Value,
        wait: Duration,
        traceparent: Option<String>,
    ) -> Result<String, ToolError> {
        let path = format!("/workspaces/{}/mcp", self.workspace_id);
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": { "name": tool, "arguments": arguments },
        });
        let mut request = self
            .http
            .post(self.base.join(&path))
            .timeout(wait)
            .json(&body);
        if let Some(token) = self.tokens.read().await {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ToolError::Call(CallError::Transport(e)))?;
        if !response.status().is_success() {
            return Err(ToolError::Call(CallError::Status(response.status())));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| ToolError::Call(CallError::Transport(e)))?;
        if let Some(message) = answer.pointer("/error/message").and_then(Value::as_str) {
            return Err(ToolError::Tool(message.to_owned()));
        }
        let text = answer
            .pointer("/result/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(text)
    }

    async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<reqwest::Response, CallError> {
        let mut request = self.http.post(self.base.join(path)).json(body);
        if let Some(token) = self.tokens.read().await {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.map_err(CallError::Transport)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(CallError::Status(response.status()))
        }
    }
}

/// Registers (retrying with backoff), then heartbeats every `interval`, until `shutdown`; a
/// heartbeat the host answers 404 or 410 registers again first.
pub async fn run(
    platform: Platform,
    url: String,
    card: Value,
    tasks: Tasks,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if !register_until_accepted(&platform, &url, &card, &shutdown).await {
        return;
    }
    // `interval` panics on zero; a config built in code could carry one.
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick is immediate: the first heartbeat follows registration at once.
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let snapshot = tasks.snapshot();
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = platform.heartbeat(&snapshot) => match result {
                Ok(()) => tracing::debug!(active_tasks = snapshot.active_tasks, "heartbeat sent"),
                Err(CallError::Status(status @ (StatusCode::NOT_FOUND | StatusCode::GONE))) => {
                    // The host forgot this workspace (restored from a backup, the workspace
                    // re-created): register again, with the same backoff as at start.
                    tracing::warn!(
                        status = status.as_u16(),
                        "heartbeat refused: the host does not know this workspace; registering again"
                    );
                    if !register_until_accepted(&platform, &url, &card, &shutdown).await {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %display_error(&e), "heartbeat failed"),
            },
        }
    }
}

/// Returns false if shutdown came first.
async fn register_until_accepted(
    platform: &Platform,
    url: &str,
    card: &Value,
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = FIRST_RETRY;
    for attempt in 1u64.. {
        let result = tokio::select! {
            () = shutdown.cancelled() => return false,
            result = platform.register(url, card) => result,
        };
        match result {
            Ok(()) => {
                tracing::info!(url, attempt, "registered with the platform");
                return true;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %display_error(&e), retry_in_ms = delay.as_millis() as u64, "registration failed")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
    false
}

/// The error with its causes (connection refused, timeout), which reqwest keeps in sources.
pub fn display_error(e: &CallError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
