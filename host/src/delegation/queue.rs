//! Draining the busy queue: a heartbeat that reports spare capacity delivers one waiting message.

use chrono::Utc;
use uuid::Uuid;

use super::Caller;
use super::proxy::{self, Call, Message, OnBusy, Sent};
use super::tasks::{self, Finished};
use crate::services::Services;
use crate::store::a2a_queue::{self, Settled};
use crate::store::{self, StoreError};

/// Delivers the next queued message of `workspace_id`, if any, in the background.
pub fn drain_soon(svc: &Services, workspace_id: Uuid) {
    let task_svc = svc.clone();
    svc.a2a.spawn(async move {
        if let Err(err) = drain_one(&task_svc, workspace_id).await {
            tracing::warn!(%workspace_id, error = ?err, "draining the busy queue failed");
        }
    });
}

/// Takes the next deliverable message of `workspace_id` and delivers it through the proxy as its
/// original caller. A busy or unreachable agent puts it back (until the attempts run out); an
/// agent that answered settles it either way. A message that carries a delegation finishes that
/// delegation. Returns how the message was settled, or `None` when nothing was waiting.
pub async fn drain_one(svc: &Services, workspace_id: Uuid) -> Result<Option<Settled>, StoreError> {
    // A poll-mode agent fetches its messages itself (`GET /workspaces/{id}/inbox`).
    let target = svc.a2a.routes().row(&svc.db, workspace_id).await?;
    if target.is_some_and(|row| row.polls()) {
        return Ok(None);
    }
    // A read first: most heartbeats find nothing waiting, and need not take the write lock.
    if a2a_queue::waiting(&svc.db, workspace_id).await? == 0 {
        return Ok(None);
    }
    let Some(item) = a2a_queue::claim_next(&svc.db, workspace_id).await? else {
        return Ok(None);
    };
    let message = match Message::normalize(item.body.0.clone()) {
        Ok(message) => message,
        Err(why) => {
            a2a_queue::settle(&svc.db, item.id, Settled::Failed, Some(why)).await?;
            return Ok(Some(Settled::Failed));
        }
    };
    let call = Call {
        caller: item.caller_id.map_or(Caller::Canvas, Caller::Workspace),
        target: workspace_id,
        message: message.clone(),
        timeout: None,
        on_busy: OnBusy::Report,
    };
    let sent = tokio::select! {
        sent = proxy::send(svc, call) => sent,
        () = svc.a2a.stopping().cancelled() => {
            // Back in the queue: the next host delivers it.
            let why = "the host stopped during delivery";
            a2a_queue::settle(&svc.db, item.id, Settled::Retry, Some(why)).await?;
            return Ok(Some(Settled::Retry));
        }
    };
    let (settled, finished) = match sent {
        Ok(Sent::Delivered(delivery)) => match delivery.failure() {
            None => (
                Settled::Completed,
                Some(Finished::Completed {
                    text: delivery.text(),
                }),
            ),
            Some(error) => (Settled::Failed, Some(Finished::Failed { error })),
        },
        Ok(Sent::Queued { .. }) => (Settled::Retry, None),
        Err(proxy::ProxyError::Store(err)) => return Err(err),
        Err(err) if err.is_transient() && item.attempts < svc.config.a2a.queue_max_attempts => {
            a2a_queue::settle(&svc.db, item.id, Settled::Retry, Some(&err.to_string())).await?;
            return Ok(Some(Settled::Retry));
        }
        Err(err) => (
            Settled::Failed,
            Some(Finished::Failed {
                error: err.to_string(),
            }),
        ),
    };
    let error = match &finished {
        Some(Finished::Failed { error }) => Some(error.as_str()),
        _ => None,
    };
    a2a_queue::settle(&svc.db, item.id, settled, error).await?;
    tracing::info!(%workspace_id, queue_id = %item.id, attempts = item.attempts, outcome = ?settled, "queued message delivered");
    if let (Some(delegation_id), Some(source), Some(finished)) =
        (message.delegation_id(), item.caller_id, finished)
        && let Some(delegation) = tasks::load(svc, source, delegation_id).await?
    {
        tasks::finish(svc, &delegation, finished, tasks::Via::QueueDrain).await;
    }
    Ok(Some(settled))
}

/// Drops queued messages that expired before their agent had capacity; a delegation among them
/// fails, so no delegation waits forever. Also requeues deliveries and fails delegations that a
/// host stopped hard in the middle of, once no live replica can still be running them. Returns
/// how many queued messages were dropped.
pub async fn sweep_expired(svc: &Services) -> Result<usize, StoreError> {
    let requeued =
        a2a_queue::requeue_interrupted(&svc.db, Utc::now() - longest_delivery(svc)).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "messages left mid-delivery by a host that stopped are queued again"
        );
    }
    let stranded = tasks::fail_stranded(svc, Utc::now() - tasks::longest_run(svc)).await?;
    if stranded > 0 {
        tracing::info!(
            stranded,
            "delegations left unfinished by a host that stopped are marked failed"
        );
    }
    let expired = a2a_queue::expire(&svc.db).await?;
    for item in &expired {
        tracing::info!(workspace_id = %item.workspace_id, queue_id = %item.id, "a queued message expired undelivered");
        let delegation_id = Message::normalize(item.body.0.clone())
            .ok()
            .and_then(|m| m.delegation_id());
        if let (Some(delegation_id), Some(source)) = (delegation_id, item.caller_id)
            && let Some(delegation) = tasks::load(svc, source, delegation_id).await?
        {
            let error = "the target agent stayed busy until the queued message expired".to_owned();
            tasks::finish(
                svc,
                &delegation,
                Finished::Failed { error },
                tasks::Via::QueueDrain,
            )
            .await;
        }
    }
    Ok(expired.len())
}

/// Longer than any one delivery can take (connect, then the overall deadline), plus a margin: a
/// message dispatched longer ago than this is no longer being delivered by anyone.
fn longest_delivery(svc: &Services) -> chrono::Duration {
    let a2a = &svc.config.a2a;
    chrono::Duration::seconds(
        i64::try_from(a2a.connect_timeout_secs + a2a.max_timeout_secs + 60).unwrap_or(i64::MAX / 2),
    )
}

/// Whether a heartbeat with `active_tasks` leaves room for one more message.
pub fn has_capacity(active_tasks: i32, max_concurrent_tasks: i32) -> bool {
    active_tasks < max_concurrent_tasks.max(1)
}

/// Called after every heartbeat: spare capacity drains one waiting message.
pub fn after_heartbeat(
    svc: &Services,
    workspace_id: Uuid,
    report: &store::workspaces::HeartbeatReport,
    max_concurrent_tasks: i32,
) {
    if has_capacity(report.active_tasks, max_concurrent_tasks) {
        drain_soon(svc, workspace_id);
    }
}
