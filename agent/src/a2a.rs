//! A2A over JSON-RPC 2.0 at `POST /`: `message/send` answered by the brain.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use opentelemetry_proto::tonic::trace::v1::span;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::brain::{Answer, Prompt};
use crate::delegate::{Directive, ToolCall};
use crate::platform::{Platform, ToolError};
use crate::server::AppState;
use crate::trace::SpanContext;
use crate::transcript::Role;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// JSON-RPC 2.0 error codes.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(rpc))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A request that passed the envelope checks.
#[derive(Debug)]
struct Call {
    id: Value,
    method: String,
    params: Value,
}

impl Call {
    /// Checks the envelope; on failure returns the id to answer with (null if unusable).
    fn parse(value: Value) -> Result<Self, (Value, RpcError)> {
        let invalid = |id: Value, why: &str| Err((id, RpcError::new(codes::INVALID_REQUEST, why)));
        let Value::Object(mut object) = value else {
            return invalid(
                Value::Null,
                "the request must be a JSON object (batches are not supported)",
            );
        };
        let id = object.remove("id").unwrap_or(Value::Null);
        if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
            return invalid(Value::Null, "id must be a string, a number or null");
        }
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return invalid(id, "jsonrpc must be \"2.0\"");
        }
        let Some(Value::String(method)) = object.remove("method") else {
            return invalid(id, "method must be a string");
        };
        Ok(Self {
            id,
            method,
            params: object.remove("params").unwrap_or(Value::Null),
        })
    }
}

fn reply(status: StatusCode, id: Value, outcome: Result<Value, RpcError>) -> Response {
    let body = match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": e.code, "message": e.message },
        }),
    };
    (status, Json(body)).into_response()
}

async fn rpc(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let error = RpcError::new(codes::INVALID_REQUEST, rejection.body_text());
            return reply(status, Value::Null, Err(error));
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            let error = RpcError::new(codes::PARSE_ERROR, format!("parse error: {e}"));
            return reply(StatusCode::OK, Value::Null, Err(error));
        }
    };
    let call = match Call::parse(value) {
        Ok(call) => call,
        Err((id, error)) => return reply(StatusCode::OK, id, Err(error)),
    };
    let outcome = match call.method.as_str() {
        "message/send" => {
            let parent = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| metadata_traceparent(&call.params))
                .and_then(|t| SpanContext::parse(&t));
            let mut span = state.spans().start(
                "agent message/send",
                span::SpanKind::Server,
                parent.as_ref(),
            );
            span.attribute("molecule.workspace_id", state.workspace_id().to_string());
            let outcome = message_send(&state, call.params, &span.context).await;
            let error = outcome.as_ref().err().map(|e| e.message.clone());
            state.spans().end(span, error.as_deref());
            outcome
        }
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("method not found: {other}"),
        )),
    };
    reply(StatusCode::OK, call.id, outcome)
}

/// The parts of `message/send` params the agent uses.
#[derive(Debug)]
struct Incoming {
    text: String,
    context_id: Option<String>,
}

impl Incoming {
    /// Joins the text parts (`kind: "text"`, or the older `type: "text"`) with newlines.
    fn parse(params: &Value) -> Result<Self, RpcError> {
        let invalid = |why: &str| Err(RpcError::new(codes::INVALID_PARAMS, why));
        let Some(message) = params.get("message").and_then(Value::as_object) else {
            return invalid("params.message must be an object");
        };
        let Some(parts) = message.get("parts").and_then(Value::as_array) else {
            return invalid("params.message.parts must be an array");
        };
        let texts: Vec<&str> = parts
            .iter()
            .filter(|part| is_text_part(part))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect();
        if texts.is_empty() {
            return invalid("params.message has no text part");
        }
        Ok(Self {
            text: texts.join("\n"),
            context_id: message
                .get("contextId")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// `traceparent` in the message's or the call's metadata, where the original platform put it.
fn metadata_traceparent(params: &Value) -> Option<String> {
    ["/message/metadata/traceparent", "/metadata/traceparent"]
        .iter()
        .find_map(|pointer| params.pointer(pointer).and_then(Value::as_str))
        .map(str::to_owned)
}

fn is_text_part(part: &Value) -> bool {
    let tag = |key| part.get(key).and_then(Value::as_str);
    tag("kind").or_else(|| tag("type")) == Some("text")
}

/// How long a delegation through the host may take.
const DELEGATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// How long any other tool call through the host may take.
const TOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The reply: the brain's, or for a delegation directive, the other agent's through the host.
/// One MCP tool call through the host, as a client span of `trace`.
async fn traced_tool(
    state: &AppState,
    platform: &Platform,
    trace: &SpanContext,
    tool: &str,
    arguments: Value,
    wait: std::time::Duration,
) -> Result<String, ToolError> {
    let span = state.spans().start(
        &format!("mcp tools/call {tool}"),
        span::SpanKind::Client,
        Some(trace),
    );
    let traceparent = Some(span.context.traceparent());
    let outcome = platform.mcp_tool(tool, arguments, wait, traceparent).await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    state.spans().end(span, error.as_deref());
    outcome
}

async fn think(
    state: &AppState,
    text: String,
    system: String,
    trace: &SpanContext,
) -> Result<Answer, String> {
    if let Some(platform) = state.delegator()
        && let Some(directive) = Directive::parse(&text)
    {
        let arguments = json!({ "workspace_id": directive.target, "task": directive.task });
        return match traced_tool(
            state,
            platform,
            trace,
            "delegate_task",
            arguments,
            DELEGATION_WAIT,
        )
        .await
        {
            Ok(answer) => Ok(format!("delegated to {}: {answer}", directive.target).into()),
            Err(e) => Err(format!("delegation to {} failed: {e}", directive.target)),
        };
    }
    if let Some(platform) = state.delegator()
        && let Some(call) = ToolCall::parse(&text)
    {
        return match traced_tool(
            state,
            platform,
            trace,
            &call.name,
            call.arguments,
            TOOL_WAIT,
        )
        .await
        {
            Ok(answer) => Ok(format!("tool {}: {answer}", call.name).into()),
            Err(e) => Err(format!("tool {} failed: {e}", call.name)),
        };
    }
    state
        .brain()
        .reply(Prompt { text, system })
        .await
        .map_err(|e| e.to_string())
}

/// Answers `message/send` through the brain; the message and the answer (or the error) go to
/// the transcript.
async fn message_send(
    state: &AppState,
    params: Value,
    trace: &SpanContext,
) -> Result<Value, RpcError> {
    let incoming = Incoming::parse(&params)?;
    let transcript = state.transcript();
    let context_id = incoming.context_id.as_deref();
    transcript.record(Role::User, &incoming.text, context_id, false);
    // Dropped without `finish` if the caller disconnects: then it counts as neither outcome.
    let task = state.tasks().start(&incoming.text);
    let loadout = state.loadout().await;
    match think(state, incoming.text, loadout.system_prompt(), trace).await {
        Ok(Answer { text, usage }) => {
            task.finish(Ok(()));
            transcript.record(Role::Agent, &text, context_id, false);
            let mut result = Map::new();
            result.insert("kind".into(), json!("message"));
            result.insert("role".into(), json!("agent"));
            result.insert("messageId".into(), json!(Uuid::new_v4()));
            if let Some(context_id) = context_id {
                result.insert("contextId".into(), json!(context_id));
            }
            result.insert("parts".into(), json!([{ "kind": "text", "text": text }]));
            result.insert(
                "metadata".into(),
                json!({
                    "workspace_id": state.workspace_id(),
                    "skills": loadout.skill_ids(),
                    "plugins": loadout.plugin_names(),
                }),
            );
            // What the model used, where the host reads it for the workspace's budget.
            if let Some(usage) = usage {
                result.insert(
                    "usage".into(),
                    json!({
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "model": usage.model,
                    }),
                );
            }
            Ok(Value::Object(result))
        }
        Err(message) => {
            tracing::warn!(error = %message, "brain failed");
            task.finish(Err(message.clone()));
            transcript.record(Role::Agent, &message, context_id, true);
            Err(RpcError::new(codes::INTERNAL_ERROR, message))
        }
    }
}
