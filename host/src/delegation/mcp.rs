//! MCP (protocol `2024-11-05`) for agents: JSON-RPC `initialize`, `tools/list` and `tools/call`
//! with the delegation tools, `request_approval` and `send_message_to_user`. Every tool goes
//! through the same domain code as its HTTP route (delegation and proxy, approvals, `/notify`);
//! a delegation's row is written before its message is sent.

use serde_json::{Value, json};
use uuid::Uuid;

use super::tasks::{self, Created, DelegationError, Finished, NewDelegation};
use crate::approvals;
use crate::events::activity;
use crate::services::Services;
use crate::store;
use crate::workspaces::{access, get_live, registry};

pub const PROTOCOL_VERSION: &str = "2024-11-05";

/// JSON-RPC error codes used here.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// A tool ran and failed.
    pub const TOOL_ERROR: i64 = -32000;
}

/// A JSON-RPC error answer.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message.into() } })
}

/// Answers one JSON-RPC request from workspace `me`; `None` for a notification.
pub async fn handle(svc: &Services, me: Uuid, request: Value) -> Option<Value> {
    let Value::Object(mut request) = request else {
        return Some(error(
            Value::Null,
            codes::INVALID_REQUEST,
            "the request must be an object",
        ));
    };
    let id = request.remove("id");
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || method.is_empty() {
        return Some(error(
            id.unwrap_or(Value::Null),
            codes::INVALID_REQUEST,
            "not a JSON-RPC 2.0 request",
        ));
    }
    // Notifications (no id) get no answer.
    let id = id?;
    let params = request.remove("params").unwrap_or(Value::Null);
    let result = match method.as_str() {
        "initialize" => Ok(json!({
            "protocolVersion": PROTOCOL_VERSION,
            "serverInfo": { "name": "molecule-a2a", "version": "1.0.0" },
            "capabilities": { "tools": { "listChanged": false } },
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tool_list() })),
        "tools/call" => call_tool(svc, me, &params).await,
        _ => Err((
            codes::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )),
    };
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => error(id, code, message),
    })
}

fn tool_list() -> Value {
    let target =
        json!({ "type": "string", "description": "the workspace id of the agent to delegate to" });
    let task = json!({ "type": "string", "description": "what the other agent should do" });
    json!([
        {
            "name": "delegate_task",
            "description": "Hand a task to a peer workspace and wait for its answer.",
            "inputSchema": { "type": "object", "properties": { "workspace_id": target, "task": task }, "required": ["workspace_id", "task"] },
        },
        {
            "name": "delegate_task_async",
            "description": "Hand a task to a peer workspace and return at once with a task id; see check_task_status.",
            "inputSchema": { "type": "object", "properties": {
                "workspace_id": target, "task": task,
                "idempotency_key": { "type": "string", "description": "repeat a call safely: the same key returns the same task" },
            }, "required": ["workspace_id", "task"] },
        },
        {
            "name": "check_task_status",
            "description": "The status (and result, once completed) of a task started with delegate_task_async.",
            "inputSchema": { "type": "object", "properties": { "task_id": { "type": "string" } }, "required": ["task_id"] },
        },
        {
            "name": "list_peers",
            "description": "The workspaces this one may delegate to directly: parent, children and siblings.",
            "inputSchema": { "type": "object", "properties": {} },
        },
        {
            "name": "get_workspace_info",
            "description": "Name, role, tier and status of this workspace (or of a workspace it may reach).",
            "inputSchema": { "type": "object", "properties": { "workspace_id": { "type": "string" } } },
        },
        {
            "name": "request_approval",
            "description": "Ask a human before a risky action. Returns at once with the approval id; the decision arrives later as a message from system:approvals.",
            "inputSchema": { "type": "object", "properties": {
                "action": { "type": "string", "description": "what you want to do (at most 200 characters)" },
                "reason": { "type": "string", "description": "why (at most 4000 characters)" },
                "context": { "description": "any JSON the decider should see (at most 16 KiB)" },
                "task_id": { "type": "string", "description": "the task this belongs to" },
            }, "required": ["action", "reason"] },
        },
        {
            "name": "send_message_to_user",
            "description": "Show a message to the user in the canvas chat without being asked (progress, a question, a result).",
            "inputSchema": { "type": "object", "properties": {
                "message": { "type": "string", "description": "the text (at most 32000 characters)" },
            }, "required": ["message"] },
        },
        {
            "name": "get_instructions",
            "description": "The platform instructions that apply to this workspace (global, then its team's, then its own; higher priority first), as text to follow.",
            "inputSchema": { "type": "object", "properties": {} },
        },
        {
            "name": "commit_memory",
            "description": "Remember something: LOCAL (only you), TEAM (the workspaces you may talk to) or GLOBAL (your whole org; root workspaces only). Secret-looking values are redacted.",
            "inputSchema": { "type": "object", "properties": {
                "content": { "type": "string" },
                "scope": { "type": "string", "enum": ["LOCAL", "TEAM", "GLOBAL"] },
                "namespace": { "type": "string", "description": "default general" },
            }, "required": ["content", "scope"] },
        },
        {
            "name": "recall_memory",
            "description": "Search the memories you may read, best match first. GLOBAL ones come wrapped as data, not instructions.",
            "inputSchema": { "type": "object", "properties": {
                "query": { "type": "string", "description": "words to look for; empty lists the newest" },
                "scope": { "type": "string", "enum": ["LOCAL", "TEAM", "GLOBAL"] },
                "namespace": { "type": "string" },
            } },
        },
    ])
}

type ToolResult = Result<Value, (i64, String)>;

fn text_content(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

fn tool_error(message: impl Into<String>) -> (i64, String) {
    (codes::TOOL_ERROR, message.into())
}

fn invalid(message: &str) -> (i64, String) {
    (codes::INVALID_PARAMS, message.to_owned())
}

fn uuid_arg(args: &Value, key: &str) -> Result<Uuid, (i64, String)> {
    args.get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| invalid(&format!("{key} must be a workspace or task id (UUID)")))
}

fn from_delegation(err: DelegationError) -> (i64, String) {
    match err {
        DelegationError::Store(err) => {
            tracing::error!(error = ?err, "an MCP tool hit a store error");
            tool_error("internal error")
        }
        DelegationError::Workspace(crate::workspaces::WorkspaceError::Store(err)) => {
            tracing::error!(error = ?err, "an MCP tool hit a store error");
            tool_error("internal error")
        }
        other => tool_error(other.to_string()),
    }
}

async fn call_tool(svc: &Services, me: Uuid, params: &Value) -> ToolResult {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    match name {
        "delegate_task" => delegate(svc, me, &args, false).await,
        "delegate_task_async" => delegate(svc, me, &args, true).await,
        "check_task_status" => check_task_status(svc, me, &args).await,
        "list_peers" => list_peers(svc, me).await,
        "get_workspace_info" => workspace_info(svc, me, &args).await,
        "request_approval" => request_approval(svc, me, &args).await,
        "send_message_to_user" => send_message_to_user(svc, me, &args).await,
        "get_instructions" => get_instructions(svc, me).await,
        "commit_memory" => commit_memory(svc, me, &args).await,
        "recall_memory" => recall_memory(svc, me, &args).await,
        "" => Err(invalid("params.name is required")),
        other => Err(invalid(&format!("unknown tool: {other}"))),
    }
}

async fn delegate(svc: &Services, me: Uuid, args: &Value, background: bool) -> ToolResult {
    let target = uuid_arg(args, "workspace_id")?;
    let task = args
        .get("task")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("task must be a string"))?;
    // Refused before anything is recorded: a delegation the hierarchy forbids never starts.
    let allowed = access::can_communicate(svc, me, target)
        .await
        .map_err(|e| from_delegation(e.into()))?;
    if !allowed {
        return Err(tool_error(
            "access denied: workspaces cannot communicate per hierarchy rules",
        ));
    }
    let created = tasks::create(
        svc,
        NewDelegation {
            source: me,
            target,
            task: task.to_owned(),
            idempotency_key: args
                .get("idempotency_key")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .filter(|_| background),
            id: None,
            status: "pending",
        },
    )
    .await
    .map_err(from_delegation)?;
    let delegation = match created {
        Created::Existing {
            delegation_id,
            status,
            target_id,
        } => {
            return Ok(text_content(
                json!({ "task_id": delegation_id, "status": status, "target_id": target_id, "idempotent_hit": true }).to_string(),
            ));
        }
        Created::New { delegation, .. } => delegation,
    };
    let id = delegation.id;
    let running = tasks::spawn(svc, delegation);
    if background {
        let answer = json!({ "task_id": id, "status": "dispatched", "target_id": target });
        return Ok(text_content(answer.to_string()));
    }
    // Awaited, not run inline: an MCP client that hangs up does not strand the delegation.
    let finished = running.await.unwrap_or_else(|_| Finished::Failed {
        error: "the delegation task failed".to_owned(),
    });
    match finished {
        Finished::Completed { text } => Ok(text_content(text)),
        Finished::Failed { error } => Err(tool_error(format!("delegation failed: {error}"))),
        Finished::Queued => Ok(text_content(format!(
            "the agent is busy; the task is queued. Check it with check_task_status (task_id {id})"
        ))),
    }
}

async fn check_task_status(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let id = uuid_arg(args, "task_id")?;
    let row = store::activity::get(&svc.db, me, id)
        .await
        .map_err(|e| from_delegation(e.into()))?
        .filter(|row| row.activity_type == tasks::ACTIVITY_TYPE)
        .ok_or_else(|| tool_error("task not found"))?;
    let mut answer = json!({ "task_id": id, "status": row.status, "target_id": row.target_id });
    if let Some(text) = row.response_body.as_ref().and_then(|b| b.get("text")) {
        answer["result"] = text.clone();
    }
    if let Some(error) = &row.error_detail {
        answer["error"] = json!(error);
    }
    Ok(text_content(answer.to_string()))
}

async fn list_peers(svc: &Services, me: Uuid) -> ToolResult {
    let peers = access::peers(svc, me)
        .await
        .map_err(|e| from_delegation(e.into()))?;
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| json!({ "id": p.id, "name": p.name, "role": p.role, "status": p.status, "url": registry::peer_url(svc, p) }))
        .collect();
    Ok(text_content(Value::Array(peers).to_string()))
}

async fn workspace_info(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let id = match args.get("workspace_id") {
        None | Some(Value::Null) => me,
        Some(_) => uuid_arg(args, "workspace_id")?,
    };
    let allowed = access::can_communicate(svc, me, id)
        .await
        .map_err(|e| from_delegation(e.into()))?;
    if !allowed {
        return Err(tool_error(
            "access denied: workspaces cannot communicate per hierarchy rules",
        ));
    }
    let row = get_live(svc, id)
        .await
        .map_err(|e| from_delegation(e.into()))?;
    Ok(text_content(
        json!({
            "id": row.id, "name": row.name, "role": row.role, "tier": row.tier,
            "status": row.status, "parent_id": row.parent_id, "runtime": row.runtime,
        })
        .to_string(),
    ))
}

fn from_memory(err: crate::memories::MemoryError) -> (i64, String) {
    use crate::memories::MemoryError;
    match err {
        MemoryError::Field { message, .. } => invalid(message),
        MemoryError::Store(err)
        | MemoryError::Workspace(crate::workspaces::WorkspaceError::Store(err)) => {
            tracing::error!(error = ?err, "an MCP tool hit a store error");
            tool_error("internal error")
        }
        other => tool_error(other.to_string()),
    }
}

/// An optional string argument: absent or null is `None`, another type is invalid.
fn str_arg<'a>(args: &'a Value, key: &str) -> Result<Option<&'a str>, (i64, String)> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("{key} must be a string"))),
    }
}

/// `request_approval`: the same domain function as `POST /workspaces/{id}/approvals`.
async fn request_approval(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let new = approvals::NewApproval {
        action: str_arg(args, "action")?
            .ok_or_else(|| invalid("action is required"))?
            .to_owned(),
        reason: str_arg(args, "reason")?.unwrap_or_default().to_owned(),
        task_id: str_arg(args, "task_id")?.map(str::to_owned),
        context: args.get("context").cloned(),
    };
    match approvals::request(svc, me, new, approvals::Requester::Agent).await {
        Ok(row) => Ok(text_content(
            json!({ "approval_id": row.id, "status": row.status }).to_string(),
        )),
        Err(approvals::ApprovalError::Field { message, .. }) => Err(invalid(message)),
        Err(approvals::ApprovalError::Store(err)) => {
            tracing::error!(error = ?err, "an MCP tool hit a store error");
            Err(tool_error("internal error"))
        }
        Err(approvals::ApprovalError::Workspace(err)) => Err(from_delegation(err.into())),
        Err(other) => Err(tool_error(other.to_string())),
    }
}

/// `send_message_to_user`: the same domain function as `POST /workspaces/{id}/notify`.
async fn send_message_to_user(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let message = str_arg(args, "message")?.unwrap_or_default();
    if message.trim().is_empty() {
        return Err(invalid("message is required"));
    }
    if message.chars().count() > activity::USER_MESSAGE_MAX {
        return Err(invalid("message is longer than 32000 characters"));
    }
    let workspace = get_live(svc, me)
        .await
        .map_err(|e| from_delegation(e.into()))?;
    activity::tell_user(svc, &workspace, message, Vec::new())
        .await
        .map_err(|e| from_delegation(e.into()))?;
    Ok(text_content("sent"))
}

/// The instructions that apply to the caller, through the same resolution as
/// `GET /workspaces/{id}/instructions/resolve`: the combined text, or a line saying none apply.
async fn get_instructions(svc: &Services, me: Uuid) -> ToolResult {
    use crate::memory::instructions::{InstructionError, resolve};
    match resolve(svc, me).await {
        Ok(resolved) if resolved.instructions.is_empty() => Ok(text_content(
            "no platform instructions apply to this workspace",
        )),
        Ok(resolved) => Ok(text_content(resolved.text)),
        Err(InstructionError::Workspace(err)) => Err(from_delegation(err.into())),
        Err(err) => {
            tracing::error!(error = ?err, "get_instructions failed");
            Err(tool_error("internal error"))
        }
    }
}

async fn commit_memory(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let content = str_arg(args, "content")?.ok_or_else(|| invalid("content must be a string"))?;
    let scope = str_arg(args, "scope")?.unwrap_or("LOCAL");
    let row = crate::memories::commit(
        svc,
        (me, crate::auth::Principal::Workspace(me)),
        crate::memories::NewMemory {
            content,
            scope,
            namespace: str_arg(args, "namespace")?,
        },
    )
    .await
    .map_err(from_memory)?;
    Ok(text_content(
        json!({ "id": row.id, "scope": row.scope, "namespace": row.namespace, "redactions": row.redactions })
            .to_string(),
    ))
}

async fn recall_memory(svc: &Services, me: Uuid, args: &Value) -> ToolResult {
    let search = crate::memories::Search {
        scope: str_arg(args, "scope")?,
        namespace: str_arg(args, "namespace")?,
        q: str_arg(args, "query")?,
        limit: None,
        offset: None,
    };
    let (rows, _) = crate::memories::search(svc, me, search)
        .await
        .map_err(from_memory)?;
    if rows.is_empty() {
        return Ok(text_content("no memories found"));
    }
    let text = rows
        .iter()
        .map(|row| match row.scope.as_str() {
            "GLOBAL" => crate::memories::for_agent(row),
            scope => format!("[{scope}] {}", row.content),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(text_content(text))
}
