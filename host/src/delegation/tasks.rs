//! The delegation lifecycle. A delegation is a task one workspace hands another; it lives as a
//! `delegation` row on the source workspace whose id is the delegation id (method `delegate`,
//! status pending → dispatched → completed | failed | queued), plus one `delegate_result` row
//! with the outcome (keyed `result:<delegation id>`, so a later delivery from the queue updates
//! it). Every step emits its event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Caller;
use super::proxy::{self, Call, Delivery, Message, OnBusy, ProxyError, Sent};
use crate::events::activity;
use crate::events::names;
use crate::services::Services;
use crate::store::activity::{ActivityRow, OwnedStatus, StatusUpdate};
use crate::store::events::EventRow;
use crate::store::{self, Constraint, StoreError};
use crate::workspaces::{WorkspaceError, get_live, get_live_routed};

/// The activity type of every delegation row.
pub const ACTIVITY_TYPE: &str = "delegation";
/// Longest task accepted, in bytes.
pub const MAX_TASK_BYTES: usize = 256 * 1024;
/// Statuses a delegation never leaves.
const FINAL: &[&str] = &["completed", "failed"];

/// A delegation being carried out.
#[derive(Debug, Clone)]
pub struct Delegation {
    pub id: Uuid,
    pub source: Uuid,
    pub target: Uuid,
    pub task: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("self-delegation not permitted")]
    SelfDelegation,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("target workspace not found")]
    TargetNotFound,
    #[error("delegation not found")]
    NotFound,
    #[error("delegation already finished")]
    AlreadyFinished,
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to start (or, for agent-initiated delegations, to record) a delegation.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    pub source: Uuid,
    pub target: Uuid,
    pub task: String,
    pub idempotency_key: Option<String>,
    /// The id the agent chose (recorded delegations); a fresh one otherwise.
    pub id: Option<Uuid>,
    /// `pending` for delegations the host carries out, `dispatched` for recorded ones.
    pub status: &'static str,
}

/// What [`create`] did.
#[derive(Debug, Clone)]
pub enum Created {
    New {
        delegation: Delegation,
        /// Set when the row could not be written: the delegation runs untracked.
        warning: Option<&'static str>,
    },
    /// A delegation with the same idempotency key (or id) exists and did not fail.
    Existing {
        delegation_id: Uuid,
        status: String,
        target_id: Option<Uuid>,
    },
}

/// Validates and records a new delegation (`DELEGATION_SENT`). A live delegation with the same
/// idempotency key is returned instead; a failed one is replaced. Hierarchy rules are enforced
/// when the message is sent, by the proxy.
pub async fn create(svc: &Services, req: NewDelegation) -> Result<Created, DelegationError> {
    if req.source == req.target {
        return Err(DelegationError::SelfDelegation);
    }
    if req.task.trim().is_empty() {
        return Err(DelegationError::Invalid("task is required"));
    }
    if req.task.len() > MAX_TASK_BYTES {
        return Err(DelegationError::Invalid("task is larger than 256 KiB"));
    }
    if req
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(DelegationError::Invalid("invalid idempotency_key"));
    }
    get_live_routed(svc, req.source).await?;
    let target = get_live_routed(svc, req.target)
        .await
        .map_err(|_| DelegationError::TargetNotFound)?;
    if let Some(key) = &req.idempotency_key
        && let Some(existing) = store::activity::find_by_key(&svc.db, req.source, key).await?
    {
        if existing.status != "failed" {
            return Ok(existing_of(&existing));
        }
        store::activity::delete_if_status(&svc.db, req.source, existing.id, "failed").await?;
    }
    let id = req.id.unwrap_or_else(Uuid::new_v4);
    let mut row = ActivityRow::new(req.source, ACTIVITY_TYPE);
    row.id = id;
    row.method = Some("delegate".into());
    row.source_id = Some(req.source);
    row.target_id = Some(req.target);
    row.summary = Some(format!("Delegating to {}", target.name));
    let mut request = json!({ "task": req.task, "delegation_id": id });
    if req.status == "pending" {
        // The host carries this one out: if the host stops hard, a sweep fails it (the agent
        // reports recorded ones itself).
        request["carrier"] = json!("host");
    }
    row.request_body = Some(request);
    row.response_body = Some(json!({ "delegation_id": id }));
    row.status = req.status.to_owned();
    row.idempotency_key = req.idempotency_key.clone();
    let mut warning = None;
    let sent = EventRow::new(
        names::DELEGATION_SENT,
        Some(req.source),
        json!({
            "delegation_id": id,
            "target_id": req.target,
            "task_preview": preview(&req.task, 100),
        }),
    );
    // The row and the event announcing it in one commit: the answer waits for one, not two.
    match svc.writes.store_with_event(row.clone(), sent.clone()).await {
        Ok(()) => {
            activity::announce(svc, &row);
            svc.events.publish_stored(sent);
        }
        Err(StoreError::Constraint(Constraint::ActivityDuplicate)) => {
            // Another request with the same key won the race: answer with its delegation.
            let key = req.idempotency_key.as_deref().unwrap_or_default();
            if let Some(winner) = store::activity::find_by_key(&svc.db, req.source, key).await? {
                return Ok(existing_of(&winner));
            }
            return Err(DelegationError::NotFound);
        }
        Err(StoreError::Constraint(Constraint::Other("activity_logs_pkey"))) => {
            if let Some(existing) = store::activity::get(&svc.db, req.source, id).await? {
                return Ok(existing_of(&existing));
            }
            return Err(DelegationError::Invalid("delegation_id is taken"));
        }
        Err(err) => {
            tracing::error!(source = %req.source, error = ?err, "recording a delegation failed; it runs untracked");
            warning = Some("delegation dispatched but status tracking unavailable");
            let EventRow {
                event_type,
                workspace_id,
                payload,
                ..
            } = sent;
            svc.events
                .emit(&event_type, workspace_id, payload.unwrap_or_default())
                .await;
        }
    }
    Ok(Created::New {
        delegation: Delegation {
            id,
            source: req.source,
            target: req.target,
            task: req.task,
        },
        warning,
    })
}

fn existing_of(row: &ActivityRow) -> Created {
    Created::Existing {
        delegation_id: row.id,
        status: row.status.clone(),
        target_id: row.target_id,
    }
}

/// The delegation `id` of `source`, if there is one.
pub async fn load(
    svc: &Services,
    source: Uuid,
    id: Uuid,
) -> Result<Option<Delegation>, StoreError> {
    let Some(row) = store::activity::get(&svc.db, source, id).await? else {
        return Ok(None);
    };
    if row.activity_type != ACTIVITY_TYPE || row.method.as_deref() != Some("delegate") {
        return Ok(None);
    }
    Ok(Some(Delegation {
        id,
        source,
        target: row.target_id.unwrap_or_default(),
        task: row
            .request_body
            .as_ref()
            .and_then(|b| b.get("task"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }))
}

/// How a delegation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Completed {
        text: String,
    },
    Failed {
        error: String,
    },
    /// The target was busy; the message waits in its queue and a drain finishes the delegation.
    Queued,
}

/// Which path finished a delegation (carried in `DELEGATION_COMPLETE` as `via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    QueueDrain,
    /// The agent reported the outcome itself (`/delegations/:id/update`).
    Agent,
}

/// Runs `delegation` in the background (a caller that disconnects does not stop it); a host
/// that stops first records it as failed. The handle yields how it ended.
pub fn spawn(svc: &Services, delegation: Delegation) -> tokio::task::JoinHandle<Finished> {
    let task_svc = svc.clone();
    let stopping = svc.a2a.stopping().clone();
    svc.a2a.spawn(async move {
        tokio::select! {
            finished = run(&task_svc, &delegation) => finished,
            () = stopping.cancelled() => {
                let error = "the host stopped before the delegation finished".to_owned();
                let finished = Finished::Failed { error };
                finish(&task_svc, &delegation, finished.clone(), Via::Direct).await;
                finished
            }
        }
    })
}

/// Carries out `delegation`: dispatched → `message/send` through the proxy with the delegation
/// id as message id → one retry after a pause when the failure was transient and nothing came
/// back → completed, failed or queued. One `delegation` span, in the caller's trace.
pub async fn run(svc: &Services, delegation: &Delegation) -> Finished {
    let span = svc.traces.start(
        "delegation",
        opentelemetry::trace::SpanKind::Internal,
        vec![
            crate::traces::workspace(delegation.source),
            opentelemetry::KeyValue::new("molecule.delegation_id", delegation.id.to_string()),
            opentelemetry::KeyValue::new("molecule.target_id", delegation.target.to_string()),
        ],
    );
    let finished = crate::traces::within(span.clone(), run_traced(svc, delegation)).await;
    let error = match &finished {
        Finished::Failed { error } => Some(error.clone()),
        Finished::Completed { .. } | Finished::Queued => None,
    };
    crate::traces::finish(&span, error);
    finished
}

async fn run_traced(svc: &Services, delegation: &Delegation) -> Finished {
    mark_dispatched(svc, delegation).await;
    let traceparent = crate::traces::propagation::traceparent(&opentelemetry::Context::current());
    let message = Message::normalize(json!({
        "jsonrpc": "2.0",
        "id": delegation.id.to_string(),
        "method": "message/send",
        "params": { "message": {
            "role": "user",
            "messageId": delegation.id.to_string(),
            "parts": [{ "kind": "text", "text": delegation.task }],
            "metadata": {
                "delegation_id": delegation.id.to_string(),
                "source_workspace_id": delegation.source.to_string(),
                "traceparent": traceparent,
            },
        }},
    }))
    .expect("a well-formed message/send");
    let call = Call {
        caller: Caller::Workspace(delegation.source),
        target: delegation.target,
        message,
        timeout: None,
        on_busy: OnBusy::Enqueue,
    };
    let mut result = proxy::send(svc, call.clone()).await;
    if worth_retrying(&result) {
        tokio::time::sleep(Duration::from_millis(
            svc.config.a2a.delegation_retry_delay_ms,
        ))
        .await;
        tracing::info!(delegation_id = %delegation.id, "retrying a delegation after a transient failure");
        result = proxy::send(svc, call).await;
    }
    let finished = match result {
        Ok(Sent::Queued { .. }) => Finished::Queued,
        Ok(Sent::Delivered(delivery)) => outcome_of(&delivery),
        Err(err) => Finished::Failed {
            error: err.to_string(),
        },
    };
    finish(svc, delegation, finished.clone(), Via::Direct).await;
    finished
}

/// A transient failure where nothing came back: the agent was unreachable or restarting, or
/// answered 502/503/504 without a body. Anything the agent said counts as its answer.
fn worth_retrying(result: &Result<Sent, ProxyError>) -> bool {
    match result {
        Err(err) => err.is_transient(),
        Ok(Sent::Delivered(delivery)) => {
            delivery.body.is_empty() && matches!(delivery.status, Some(502..=504))
        }
        Ok(Sent::Queued { .. }) => false,
    }
}

fn outcome_of(delivery: &Delivery) -> Finished {
    match delivery.failure() {
        None => Finished::Completed {
            text: delivery.text(),
        },
        Some(error) => Finished::Failed { error },
    }
}

async fn mark_dispatched(svc: &Services, delegation: &Delegation) {
    update_row(
        svc,
        delegation,
        delegation.id,
        &StatusUpdate {
            status: "dispatched",
            ..Default::default()
        },
    )
    .await;
    svc.events
        .emit(
            names::DELEGATION_STATUS,
            Some(delegation.source),
            json!({ "delegation_id": delegation.id, "target_id": delegation.target, "status": "dispatched" }),
        )
        .await;
}

async fn update_row(
    svc: &Services,
    delegation: &Delegation,
    id: Uuid,
    update: &StatusUpdate<'_>,
) -> bool {
    // Through the group-commit writer, in order with the delegation's other changes.
    let moved = svc
        .writes
        .move_delegation(delegation.source, id, OwnedStatus::of(update), FINAL)
        .await;
    match moved {
        Ok(moved) => moved,
        Err(err) => {
            tracing::error!(delegation_id = %delegation.id, error = ?err, "updating a delegation row failed");
            false
        }
    }
}

/// Records how `delegation` ended on its row and its `delegate_result` row, and emits the event.
/// A delegation that already completed or failed is left as it is (and `false` returned).
pub async fn finish(svc: &Services, delegation: &Delegation, finished: Finished, via: Via) -> bool {
    let (status, error, result_body) = match &finished {
        Finished::Completed { text } => (
            "completed",
            None,
            json!({ "text": text, "delegation_id": delegation.id }),
        ),
        Finished::Failed { error } => (
            "failed",
            Some(error.as_str()),
            json!({ "delegation_id": delegation.id, "error": error }),
        ),
        Finished::Queued => (
            "queued",
            None,
            json!({ "delegation_id": delegation.id, "queued": true }),
        ),
    };
    let update = StatusUpdate {
        status,
        error_detail: error,
        response_body: Some(&result_body),
        duration_ms: None,
    };
    // Both rows in one transaction (the writer's batch): a reader never sees the delegation ended
    // without its result.
    let result = result_row(delegation, &update);
    let stored = svc
        .writes
        .finish_delegation(
            delegation.source,
            delegation.id,
            OwnedStatus::of(&update),
            FINAL,
            result,
        )
        .await;
    match stored {
        Ok(store::activity::Finished::AlreadyFinal) => return false,
        Ok(store::activity::Finished::Written { inserted }) => {
            if let Some(row) = inserted {
                activity::announce(svc, &row);
            }
        }
        Err(err) => {
            tracing::error!(delegation_id = %delegation.id, error = ?err, "recording how a delegation ended failed");
        }
    }
    let payload = match &finished {
        Finished::Completed { text } => {
            let mut payload = json!({
                "delegation_id": delegation.id,
                "target_id": delegation.target,
                "response_preview": preview(text, 200),
            });
            match via {
                Via::QueueDrain => payload["via"] = json!("queue_drain"),
                Via::Agent => payload["via"] = json!("agent"),
                Via::Direct => {}
            }
            (names::DELEGATION_COMPLETE, payload)
        }
        Finished::Failed { error } => (
            names::DELEGATION_FAILED,
            json!({ "delegation_id": delegation.id, "target_id": delegation.target, "error": error }),
        ),
        Finished::Queued => (
            names::DELEGATION_STATUS,
            json!({ "delegation_id": delegation.id, "target_id": delegation.target, "status": "queued" }),
        ),
    };
    svc.events
        .emit(payload.0, Some(delegation.source), payload.1)
        .await;
    true
}

/// The `delegate_result` row for `delegation` ending as `update` says (keyed `result:<id>`).
fn result_row(delegation: &Delegation, update: &StatusUpdate<'_>) -> ActivityRow {
    let mut row = ActivityRow::new(delegation.source, ACTIVITY_TYPE);
    row.method = Some("delegate_result".into());
    row.source_id = Some(delegation.source);
    row.target_id = Some(delegation.target);
    row.summary = Some(format!("Delegation {}", update.status));
    row.response_body = update.response_body.cloned();
    row.status = update.status.to_owned();
    row.error_detail = update.error_detail.map(str::to_owned);
    row.idempotency_key = Some(format!("result:{}", delegation.id));
    row
}

/// The first `chars` characters of `text`.
pub fn preview(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// One delegation a workspace started, as its activity row records it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The activity row's id.
    pub id: Uuid,
    /// The row's method (`delegate`, `delegate_result`, ...).
    pub kind: Option<String>,
    pub source_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub summary: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub delegation_id: Uuid,
    pub error: Option<String>,
    /// The first 300 characters of the answer, when there is one.
    pub response_preview: Option<String>,
    /// The first 300 characters of the task.
    pub task_preview: Option<String>,
}

/// The delegation rows of `source`, newest first (at most 50).
pub async fn list(svc: &Services, source: Uuid) -> Result<Vec<Listed>, DelegationError> {
    get_live(svc, source).await?;
    let rows = store::activity::list(&svc.db, source, Some(ACTIVITY_TYPE), None, 50).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let body = row.response_body.as_ref();
            let text = |value: Option<&Value>, key: &str| {
                value
                    .and_then(|v| v.get(key))
                    .and_then(Value::as_str)
                    .map(|t| preview(t, 300))
            };
            Listed {
                id: row.id,
                kind: row.method.clone(),
                source_id: row.source_id,
                target_id: row.target_id,
                summary: row.summary.clone(),
                status: row.status.clone(),
                created_at: row.created_at,
                // The host writes the id into every row it creates; rows from before it did
                // are their own delegation.
                delegation_id: body
                    .and_then(|b| b.get("delegation_id"))
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .unwrap_or(row.id),
                error: row.error_detail.clone(),
                response_preview: text(body, "text"),
                task_preview: text(row.request_body.as_ref(), "task"),
            }
        })
        .collect())
}

/// Fails the delegations a host was carrying out when it stopped hard (killed, or its machine
/// lost): those still `pending` or `dispatched` though created before `created_before`, when no
/// live host can still be running them. Returns how many there were.
pub async fn fail_stranded(
    svc: &Services,
    created_before: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let stranded = store::activity::stranded_delegations(&svc.db, created_before).await?;
    for (source, id) in &stranded {
        let Some(delegation) = load(svc, *source, *id).await? else {
            continue;
        };
        tracing::warn!(delegation_id = %id, %source, "a delegation was left unfinished by a host that stopped");
        let error = "the host carrying out the delegation stopped before it finished".to_owned();
        finish(svc, &delegation, Finished::Failed { error }, Via::Direct).await;
    }
    Ok(stranded.len())
}

/// The longest a host can carry a delegation out: two deliveries (connect, then the overall
/// deadline) with the retry pause between them, plus `a2a.stranded_margin_secs`.
pub fn longest_run(svc: &Services) -> chrono::Duration {
    let a2a = &svc.config.a2a;
    let delivery = a2a
        .connect_timeout_secs
        .saturating_add(a2a.max_timeout_secs);
    chrono::Duration::seconds(i64::try_from(delivery.saturating_mul(2)).unwrap_or(i64::MAX / 4))
        + chrono::Duration::milliseconds(
            i64::try_from(a2a.delegation_retry_delay_ms).unwrap_or(i64::MAX / 4),
        )
        + chrono::Duration::seconds(i64::try_from(a2a.stranded_margin_secs).unwrap_or(i64::MAX / 4))
}

/// An agent reports how a delegation it carried out itself ended.
pub async fn report(
    svc: &Services,
    source: Uuid,
    id: Uuid,
    finished: Finished,
) -> Result<(), DelegationError> {
    get_live(svc, source).await?;
    let delegation = load(svc, source, id)
        .await?
        .ok_or(DelegationError::NotFound)?;
    if finish(svc, &delegation, finished, Via::Agent).await {
        Ok(())
    } else {
        Err(DelegationError::AlreadyFinished)
    }
}
