//! Approvals: an agent (or the operator for it) asks a human before a risky action; the operator
//! decides once, `approved` or `denied`, and the agent is told with an A2A `message/send` from
//! `system:approvals`. The HTTP routes and the MCP tool `request_approval` both come here.
//!
//! A decision is one conditional update (`... WHERE status = 'pending'`): of two concurrent
//! deciders exactly one wins, the other gets [`ApprovalError::AlreadyDecided`]. Telling the
//! agent runs in the background after the decision is stored: its failure is logged on the
//! activity row the send path writes and never undoes the decision; a busy or hibernated agent
//! gets the message queued (and is woken) like any other `message/send`.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::agents::Caller;
use crate::agents::client::{self, Call, Message, OnBusy, Sent};
use crate::events::{activity, names};
use crate::services::Services;
use crate::store::activity::ActivityRow;
use crate::store::approvals::{ApprovalRow, Decision};
use crate::store::{self, StoreError};
use crate::workspaces::{WorkspaceError, get_live};

/// Who tells the agent about a decision, in the message's metadata and the activity row.
pub const CALLER: &str = "system:approvals";

/// The longest `action` (characters).
pub const ACTION_MAX: usize = 200;
/// The longest `reason` (characters).
pub const REASON_MAX: usize = 4_000;
/// The longest `task_id` (characters).
pub const TASK_ID_MAX: usize = 200;
/// The longest decision note (characters).
pub const NOTE_MAX: usize = 2_000;
/// The largest `context`, as compact JSON (bytes).
pub const CONTEXT_MAX_BYTES: usize = 16 * 1024;
/// The most rows a list answers.
pub const LIST_LIMIT: i64 = 500;

/// How long the host waits for the agent to take the decision message.
const TELL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("{message}")]
    Field {
        field: &'static str,
        message: &'static str,
    },
    #[error("approval not found")]
    NotFound,
    #[error("approval already decided")]
    AlreadyDecided { status: String },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn field(field: &'static str, message: &'static str) -> ApprovalError {
    ApprovalError::Field { field, message }
}

/// Who asked: the workspace's own agent, or the operator for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    Agent,
    Operator,
}

impl Requester {
    fn as_str(self) -> &'static str {
        match self {
            Requester::Agent => "agent",
            Requester::Operator => "operator",
        }
    }
}

/// A request as the caller gave it, before checks.
#[derive(Debug, Clone, Default)]
pub struct NewApproval {
    pub task_id: Option<String>,
    pub action: String,
    pub reason: String,
    pub context: Option<Value>,
}

/// The operator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Denied,
}

impl Verdict {
    /// `approved` or `denied`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "approved" => Some(Verdict::Approved),
            "denied" => Some(Verdict::Denied),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Denied => "denied",
        }
    }
}

/// Checks `new` and brings it into stored form.
fn checked(new: NewApproval) -> Result<NewApproval, ApprovalError> {
    let action = new.action.trim().to_owned();
    if action.is_empty() {
        return Err(field("action", "action is required"));
    }
    if action.chars().count() > ACTION_MAX {
        return Err(field("action", "action is longer than 200 characters"));
    }
    let reason = new.reason.trim().to_owned();
    if reason.chars().count() > REASON_MAX {
        return Err(field("reason", "reason is longer than 4000 characters"));
    }
    let task_id = new
        .task_id
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if task_id
        .as_ref()
        .is_some_and(|t| t.chars().count() > TASK_ID_MAX)
    {
        return Err(field("task_id", "task_id is longer than 200 characters"));
    }
    let context = new.context.filter(|c| !c.is_null());
    if context
        .as_ref()
        .is_some_and(|c| c.to_string().len() > CONTEXT_MAX_BYTES)
    {
        return Err(field("context", "context is larger than 16 KiB"));
    }
    Ok(NewApproval {
        task_id,
        action,
        reason,
        context,
    })
}

/// Records a pending request of `workspace_id` (which must be live), an `approval_request`
/// activity row and `APPROVAL_REQUESTED` with what the canvas's banner shows.
pub async fn request(
    svc: &Services,
    workspace_id: Uuid,
    new: NewApproval,
    by: Requester,
) -> Result<ApprovalRow, ApprovalError> {
    let new = checked(new)?;
    let workspace = get_live(svc, workspace_id).await?;
    let row = ApprovalRow {
        id: Uuid::new_v4(),
        workspace_id,
        task_id: new.task_id,
        action: new.action,
        reason: new.reason,
        context: new.context,
        status: "pending".to_owned(),
        requested_by: by.as_str().to_owned(),
        decided_by: None,
        decided_at: None,
        decision_note: None,
        created_at: Utc::now(),
    };
    store::approvals::insert(&svc.db, &row).await?;
    let mut logged = ActivityRow::new(workspace_id, "approval_request");
    logged.summary = Some(format!("approval requested: {}", row.action));
    logged.request_body = Some(json!({
        "approval_id": row.id, "action": row.action, "reason": row.reason,
        "task_id": row.task_id, "requested_by": row.requested_by,
    }));
    logged.status = "pending".to_owned();
    activity::record_deferred(svc, logged).await;
    svc.events
        .emit(
            names::APPROVAL_REQUESTED,
            Some(workspace_id),
            json!({
                "approval_id": row.id,
                "workspace_id": workspace_id,
                "workspace_name": workspace.name,
                "task_id": row.task_id,
                "action": row.action,
                "reason": row.reason,
                "context": row.context,
                "created_at": row.created_at,
            }),
        )
        .await;
    Ok(row)
}

/// Records the operator's `verdict` on request `id` of `workspace_id`, emits `APPROVAL_DECIDED`
/// and has the agent told in the background. A request that is not there, or whose workspace
/// was removed, is [`ApprovalError::NotFound`]; one already decided is
/// [`ApprovalError::AlreadyDecided`].
pub async fn decide(
    svc: &Services,
    workspace_id: Uuid,
    id: Uuid,
    verdict: Verdict,
    note: Option<String>,
    decided_by: &str,
) -> Result<ApprovalRow, ApprovalError> {
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > NOTE_MAX) {
        return Err(field("note", "note is longer than 2000 characters"));
    }
    let won = store::approvals::decide(
        &svc.db,
        &Decision {
            workspace_id,
            id,
            status: verdict.as_str(),
            decided_by,
            note: note.as_deref(),
            at: Utc::now(),
        },
    )
    .await?;
    let row = store::approvals::get(&svc.db, workspace_id, id)
        .await?
        .ok_or(ApprovalError::NotFound)?;
    if !won {
        return match row.status.as_str() {
            // Still pending yet not decided: its workspace was removed.
            "pending" => Err(ApprovalError::NotFound),
            status => Err(ApprovalError::AlreadyDecided {
                status: status.to_owned(),
            }),
        };
    }
    let mut logged = ActivityRow::new(workspace_id, "approval_decision");
    logged.summary = Some(format!("approval {}: {}", verdict.as_str(), row.action));
    logged.request_body = Some(json!({
        "approval_id": row.id, "action": row.action, "decision": verdict.as_str(),
        "note": row.decision_note, "decided_by": decided_by,
    }));
    logged.status = verdict.as_str().to_owned();
    activity::record_deferred(svc, logged).await;
    svc.events
        .emit(
            names::APPROVAL_DECIDED,
            Some(workspace_id),
            json!({
                "approval_id": row.id,
                "workspace_id": workspace_id,
                "task_id": row.task_id,
                "action": row.action,
                "decision": verdict.as_str(),
                "note": row.decision_note,
                "decided_by": decided_by,
                "decided_at": row.decided_at,
            }),
        )
        .await;
    let told = row.clone();
    let task_svc = svc.clone();
    svc.a2a.spawn(async move { tell(&task_svc, &told).await });
    Ok(row)
}

/// The text the agent is told.
pub fn decision_text(row: &ApprovalRow) -> String {
    let mut text = format!(
        "Approval {} for \"{}\" was {}",
        row.id, row.action, row.status
    );
    if let Some(task) = &row.task_id {
        text.push_str(&format!(" (task {task})"));
    }
    text.push('.');
    if let Some(note) = &row.decision_note {
        text.push_str(&format!(" Note: {note}"));
    }
    text
}

/// Sends the decision to the agent through the one send path (`a2a_receive` row, busy queue,
/// wake of a hibernated agent). Failures are logged; the decision stands.
async fn tell(svc: &Services, row: &ApprovalRow) {
    let body = json!({
        "jsonrpc": "2.0",
        "method": "message/send",
        "params": { "message": {
            "role": "user",
            "messageId": format!("approval-{}", row.id.simple()),
            "parts": [{ "kind": "text", "text": decision_text(row) }],
            "metadata": {
                "source": CALLER,
                "approval_id": row.id,
                "task_id": row.task_id,
                "action": row.action,
                "decision": row.status,
                "note": row.decision_note,
            },
        } },
    });
    let message = match Message::normalize(body) {
        Ok(message) => message,
        Err(err) => {
            tracing::warn!(approval_id = %row.id, error = err, "building the decision message failed");
            return;
        }
    };
    let call = Call {
        caller: Caller::System(CALLER),
        target: row.workspace_id,
        message,
        timeout: Some(TELL_TIMEOUT),
        on_busy: OnBusy::Enqueue,
    };
    match client::send(svc, call).await {
        Ok(Sent::Delivered(delivery)) => {
            if let Some(failure) = delivery.failure() {
                tracing::warn!(approval_id = %row.id, %failure, "the agent did not take the decision");
            }
        }
        Ok(Sent::Queued { .. }) => {}
        Err(err) => {
            tracing::warn!(approval_id = %row.id, error = %err, "telling the agent the decision failed");
        }
    }
}

/// The workspace's requests (of one status, if given), newest first.
pub async fn list(
    svc: &Services,
    workspace_id: Uuid,
    status: Option<&str>,
) -> Result<Vec<ApprovalRow>, ApprovalError> {
    if let Some(status) = status
        && !matches!(status, "pending" | "approved" | "denied" | "escalated")
    {
        return Err(field(
            "status",
            "status must be pending, approved, denied or escalated",
        ));
    }
    get_live(svc, workspace_id).await?;
    Ok(store::approvals::list(&svc.db, workspace_id, status, LIST_LIMIT).await?)
}
