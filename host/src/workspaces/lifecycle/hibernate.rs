//! Hibernation: an idle agent is stopped (`hibernating` → `hibernated`, URL cleared) and woken
//! again on demand (a message, a schedule, a resume or a restart), plus the idle monitor.

use super::*;

/// `POST /workspaces/:id/hibernate`: stops the agent of an online or degraded workspace.
///
/// A busy agent (`active_tasks > 0`) is refused unless `force`; a forced hibernate first tells
/// the agent, as a restart does (`signals/restart_pending`), then stops it. The original's
/// forced hibernate still required `active_tasks = 0` in its claim, so it silently did nothing.
pub async fn hibernate(svc: &Services, id: Uuid, force: bool) -> Result<(), LifecycleError> {
    let row = get_live(svc, id).await?;
    match row.status {
        Status::Online | Status::Degraded => {}
        Status::Hibernated | Status::Hibernating => {
            return Err(LifecycleError::Conflict("workspace is already hibernated"));
        }
        // The original answered 404 here, which sent operators looking for a workspace that
        // was right there.
        _ => {
            return Err(LifecycleError::Conflict(
                "only an online or degraded workspace can be hibernated",
            ));
        }
    }
    if row.runtime == "external" {
        return Err(LifecycleError::Conflict(
            "an external workspace's agent is not run by the host and cannot be hibernated",
        ));
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    if row.active_tasks > 0 && !force {
        return Err(LifecycleError::Busy {
            active_tasks: row.active_tasks,
        });
    }
    if !hibernate_row(svc, &row, "manual").await? {
        return Err(LifecycleError::Conflict(
            "the workspace changed meanwhile; it is no longer online",
        ));
    }
    Ok(())
}

/// Claims `row` for hibernation (`hibernating`, from online or degraded), tells a busy agent,
/// stops it and marks it `hibernated` (`WORKSPACE_HIBERNATED`). False when the claim found the
/// workspace in another status. A message queued for it meanwhile wakes it at once.
async fn hibernate_row(
    svc: &Services,
    row: &WorkspaceRow,
    reason: &str,
) -> Result<bool, StoreError> {
    let id = row.id;
    // Marked before the agent stops, so the health sweep never mistakes the stop for a crash.
    if !transition(svc, id, None, Status::Hibernating, Cause::Hibernate, None).await? {
        return Ok(false);
    }
    // A delayed restart still waiting would start the agent again.
    forget_delayed_restart(svc, id).await;
    if row.active_tasks > 0 {
        // The agent hears first, so it can wind down what it is doing before the stop.
        crate::agents::client::signal_restart_pending(svc, row).await;
    }
    if let Some(runtime) = &svc.lifecycle.runtime
        && let Err(err) = runtime.stop(id).await
    {
        tracing::warn!(workspace_id = %id, error = %err, "stopping a hibernating agent failed");
    }
    if !transition(
        svc,
        id,
        Some(Status::Hibernating),
        Status::Hibernated,
        Cause::Hibernate,
        None,
    )
    .await?
    {
        // Paused or deleted while the agent stopped: that move has the last word.
        tracing::info!(workspace_id = %id, "hibernation overtaken by another status change");
        return Ok(true);
    }
    record_activity(
        svc,
        id,
        "hibernate",
        format!("workspace hibernated ({reason})"),
        json!({ "reason": reason, "active_tasks": row.active_tasks }),
    )
    .await;
    svc.events
        .emit(
            names::WORKSPACE_HIBERNATED,
            Some(id),
            json!({ "name": row.name, "tier": row.tier }),
        )
        .await;
    // A message that arrived while the agent was stopping is queued for the wake it asked for,
    // which found the workspace still `hibernating`: wake it now so the message is not stranded.
    if store::a2a_queue::waiting(&svc.db, id).await? > 0
        && let Err(err) = wake(svc, id).await
    {
        tracing::warn!(workspace_id = %id, error = ?err, "waking for a message queued during hibernation failed");
    }
    Ok(true)
}

/// Wakes a hibernated workspace: `hibernated` → `provisioning` and the usual provision from its
/// existing files. True when it woke it; false when it was not hibernated (already awake, or
/// woken by another caller first). The queued messages are delivered once the agent registers
/// and heartbeats with room.
pub async fn wake(svc: &Services, id: Uuid) -> Result<bool, LifecycleError> {
    let Some(row) = store::workspaces::get(&svc.db, id).await? else {
        return Err(LifecycleError::Workspace(WorkspaceError::NotFound));
    };
    if row.status != Status::Hibernated {
        return Ok(false);
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    if !transition(
        svc,
        id,
        Some(Status::Hibernated),
        Status::Provisioning,
        Cause::Wake,
        None,
    )
    .await?
    {
        return Ok(false);
    }
    record_activity(
        svc,
        id,
        "wake",
        "workspace woken from hibernation".to_owned(),
        json!({}),
    )
    .await;
    svc.events
        .emit(
            names::WORKSPACE_PROVISIONING,
            Some(id),
            json!({ "name": row.name, "tier": row.tier, "runtime": row.runtime, "waking": true }),
        )
        .await;
    schedule_provision(svc, id, None, None);
    Ok(true)
}

/// The hibernation monitor's pass: every online or degraded workspace the host runs, with no
/// task running and a positive `hibernation_idle_minutes`, whose last activity is older than
/// that many minutes is hibernated. Returns the ids it hibernated.
///
/// "Activity" is the newest row of the workspace's activity log (messages received, its own
/// reports, lifecycle steps such as its last wake) or its last outbound call, whichever is newer,
/// else its creation: never its heartbeat, which a live agent sends every few seconds (the
/// original compared heartbeats, so its monitor never fired).
pub async fn sweep_idle(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    if svc.lifecycle.runtime.is_none() {
        return Ok(Vec::new());
    }
    // Deferred `last_outbound_at` stamps and activity rows count: stored first.
    svc.writes.flush().await;
    let minute = svc.config.faults.hibernation_minute.unwrap_or(MINUTE);
    let now = Utc::now();
    let mut hibernated = Vec::new();
    for candidate in store::workspaces::idle_candidates(&svc.db).await? {
        let newest = store::activity::newest_at(&svc.db, candidate.id).await?;
        let last = [
            Some(candidate.created_at),
            newest,
            candidate.last_outbound_at,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(candidate.created_at);
        let idle_for = minute * u32::try_from(candidate.hibernation_idle_minutes).unwrap_or(0);
        let Ok(idle_for) = chrono::Duration::from_std(idle_for) else {
            continue;
        };
        if now - last < idle_for {
            continue;
        }
        // Read again: a task may have started since the candidates were listed.
        let Some(row) = store::workspaces::get(&svc.db, candidate.id).await? else {
            continue;
        };
        if row.active_tasks > 0 {
            continue;
        }
        if hibernate_row(svc, &row, "idle").await? {
            tracing::info!(workspace_id = %row.id, minutes = candidate.hibernation_idle_minutes, "idle workspace hibernated");
            hibernated.push(row.id);
        }
    }
    Ok(hibernated)
}

/// The unit of `hibernation_idle_minutes` (a spec shortens it through `Faults`).
const MINUTE: Duration = Duration::from_secs(60);
