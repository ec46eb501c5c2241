//! Restarts: asked of the restart policy, coalesced per workspace across replicas (a claim with a
//! renewed lease), run as cycles that wait for the agent to come back.

use super::*;

/// Why a workspace is not restarted, if it is not.
pub(super) async fn restart_blocker(
    svc: &Services,
    row: &WorkspaceRow,
) -> Result<Option<&'static str>, StoreError> {
    if svc.lifecycle.runtime.is_none() {
        return Ok(Some("no runtime"));
    }
    if row.runtime == "external" {
        return Ok(Some("external workspace"));
    }
    match Some(row.status) {
        Some(Status::Removed) => return Ok(Some("removed")),
        Some(Status::Paused) => return Ok(Some("paused")),
        Some(Status::Hibernated | Status::Hibernating) => return Ok(Some("hibernated")),
        _ => {}
    }
    if paused_ancestor(svc, row.id).await?.is_some() {
        return Ok(Some("an ancestor is paused"));
    }
    Ok(None)
}

/// The name of the nearest paused ancestor, if any.
pub(super) async fn paused_ancestor(
    svc: &Services,
    id: Uuid,
) -> Result<Option<String>, StoreError> {
    let chain = store::workspaces::ancestry(&svc.db, id, 64).await?;
    for (ancestor, _) in chain.into_iter().filter(|(a, _)| *a != id) {
        if let Some(row) = store::workspaces::get(&svc.db, ancestor).await?
            && row.status == Status::Paused
        {
            return Ok(Some(row.name));
        }
    }
    Ok(None)
}

/// An automatic restart: the active restart policy decides (clamped by the host, falling back to
/// the built-in default); its decision is recorded in the activity log and then carried out.
pub async fn request_restart(
    svc: &Services,
    id: Uuid,
    trigger: Trigger,
) -> Result<RestartOutcome, StoreError> {
    let Some(row) = store::workspaces::get(&svc.db, id).await? else {
        return Ok(RestartOutcome::Skipped("not found"));
    };
    if let Some(reason) = restart_blocker(svc, &row).await? {
        return Ok(RestartOutcome::Skipped(reason));
    }
    let info = WorkspaceInfo {
        id: id.to_string(),
        name: row.name.clone(),
        runtime: row.runtime.clone(),
        tier: u8::try_from(row.tier).unwrap_or(2),
        status: row.status.to_string(),
        update_tier: crate::extensions::types::UpdateTier::parse(&row.update_tier),
        recent_restarts: recent_restarts(svc, id).await,
    };
    let decision = svc.extensions.decide(info, trigger.clone()).await;
    record_activity(
        svc,
        id,
        "restart_decision",
        format!("restart policy: {}", decision_label(&decision)),
        json!({ "trigger": trigger, "decision": decision }),
    )
    .await;
    tracing::info!(workspace_id = %id, decision = decision_label(&decision), "restart policy decided");
    match decision {
        Decision::KeepRunning | Decision::HotReload => {}
        Decision::RestartNow => {
            restart_now(svc, id).await;
        }
        Decision::RestartAfterMs(ms) => {
            restart_after(svc, id, Duration::from_millis(u64::from(ms))).await;
        }
    }
    Ok(RestartOutcome::Decided(decision))
}

pub(super) fn decision_label(decision: &Decision) -> String {
    match decision {
        Decision::KeepRunning => "keep_running".into(),
        Decision::HotReload => "hot_reload".into(),
        Decision::RestartNow => "restart_now".into(),
        Decision::RestartAfterMs(ms) => format!("restart_after_ms({ms})"),
    }
}

/// Restarts a workspace has had within [`RESTART_WINDOW`], on any replica (from the activity
/// log, which every cycle writes to).
pub(super) async fn recent_restarts(svc: &Services, id: Uuid) -> u32 {
    let since = Utc::now() - RESTART_WINDOW;
    match store::activity::count_since(&svc.db, id, "restart", since).await {
        Ok(count) => u32::try_from(count).unwrap_or(u32::MAX),
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "counting recent restarts failed");
            0
        }
    }
}

/// How long a claim on a workspace's restart cycles holds without being renewed: four times the
/// renewal period of a running cycle, so only a holder that died loses it.
pub(super) fn claim_lease() -> chrono::Duration {
    chrono::Duration::from_std(CYCLE_ONLINE_WAIT * 2).unwrap_or(chrono::Duration::MAX)
}

/// Requests a restart cycle now. While a cycle runs — on this replica or any other on the same
/// database — further requests only mark one more cycle due, so any number of requests collapse
/// into at most two cycles and the last change is always picked up. A delayed restart still
/// waiting here is replaced by this one.
pub async fn restart_now(svc: &Services, id: Uuid) -> RestartOutcome {
    forget_delayed_restart(svc, id).await;
    let holder = svc.lifecycle.claimant();
    let now = Utc::now();
    match store::restarts::claim(&svc.db, id, &holder, now, now + claim_lease()).await {
        Ok(store::restarts::Claim::Won) => {
            spawn_cycles(svc, id, holder);
            RestartOutcome::Started
        }
        Ok(store::restarts::Claim::Joined) => RestartOutcome::Coalesced,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "claiming a restart failed");
            RestartOutcome::Skipped("the restart could not be recorded")
        }
    }
}

/// Requests a restart after `delay` (the policy's or the clamp's back-off). A cycle already
/// running (anywhere) or a delayed restart already due absorbs it: that cycle starts from the
/// files as they are then. The due time is recorded (`workspace_restart_due`): this replica
/// waits for it, and if this replica is gone by then, another's sweep ([`start_due`]) starts it.
pub(super) async fn restart_after(svc: &Services, id: Uuid, delay: Duration) {
    match store::restarts::join_running(&svc.db, id, Utc::now()).await {
        Ok(true) => return,
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "checking for a running restart failed")
        }
    }
    let ticket = Uuid::new_v4();
    let due_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    match store::restarts::schedule(&svc.db, id, ticket, due_at).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "recording a delayed restart failed");
            return;
        }
    }
    let task_svc = svc.clone();
    svc.lifecycle.spawn(async move {
        tokio::time::sleep(delay).await;
        // Otherwise superseded by a restart that started sooner, or started by a sweep.
        match store::restarts::take(&task_svc.db, id, ticket).await {
            Ok(true) => {
                restart_now(&task_svc, id).await;
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(workspace_id = %id, error = ?err, "taking a delayed restart failed; a sweep starts it")
            }
        }
    });
}

/// Starts every delayed restart past due whose replica did not (it stopped, or was killed):
/// the `delayed-restarts` sweep.
pub async fn start_due(svc: &Services) -> Result<usize, StoreError> {
    let due = store::restarts::take_due(&svc.db, Utc::now()).await?;
    for id in &due {
        tracing::info!(workspace_id = %id, "starting a delayed restart another replica left");
        restart_now(svc, *id).await;
    }
    Ok(due.len())
}

/// Runs cycles while this claim holds and one more is due, then releases it.
pub(super) fn spawn_cycles(svc: &Services, id: Uuid, holder: String) {
    let task_svc = svc.clone();
    // Each cycle is a span of the trace that asked for the restart, if any.
    let parent = opentelemetry::Context::current();
    svc.lifecycle.spawn(async move {
        let mut back = None;
        loop {
            let span = task_svc.traces.start_with_parent(
                "restart.cycle",
                opentelemetry::trace::SpanKind::Internal,
                &parent,
                vec![crate::traces::workspace(id)],
            );
            let cycle = crate::traces::within(span.clone(), restart_cycle(&task_svc, id));
            let restarted = renewing(&task_svc, id, &holder, cycle).await;
            opentelemetry::trace::TraceContextExt::span(&span).set_attribute(
                opentelemetry::KeyValue::new("molecule.restarted", restarted.is_some()),
            );
            crate::traces::finish(&span, None);
            back = restarted.or(back);
            let lease_until = Utc::now() + claim_lease();
            match store::restarts::next_cycle(&task_svc.db, id, &holder, lease_until).await {
                Ok(true) => continue,
                Ok(false) => {
                    // Told once the last cycle is done (an agent about to be stopped again
                    // would not keep it), and outside the claim: the answer may take a whole
                    // turn of the agent's model, and a new restart must not wait for it.
                    if let Some(restart) = back
                        && task_svc.config.runtime.restart_context
                    {
                        restart_context::send(&task_svc, id, restart).await;
                    }
                    break;
                }
                Err(err) => {
                    tracing::error!(workspace_id = %id, error = ?err, "releasing a restart claim failed; it expires");
                    break;
                }
            }
        }
    });
}

/// Runs `cycle` while renewing `holder`'s claim every half [`CYCLE_ONLINE_WAIT`], so a cycle
/// held up (a provisioning backlog, a slow stop) keeps its claim and no other replica starts a
/// concurrent one. A claim lost anyway is logged; the cycle under way still finishes, and
/// [`store::restarts::next_cycle`] then ends this holder's cycles.
pub(super) async fn renewing<T>(
    svc: &Services,
    id: Uuid,
    holder: &str,
    cycle: impl Future<Output = T>,
) -> T {
    let every = CYCLE_ONLINE_WAIT / 2;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(cycle);
    loop {
        tokio::select! {
            done = &mut cycle => return done,
            _ = renew.tick() => {
                let lease_until = Utc::now() + claim_lease();
                match store::restarts::renew(&svc.db, id, holder, lease_until).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(workspace_id = %id, "a restart claim was lost during a cycle"),
                    Err(err) => tracing::warn!(workspace_id = %id, error = ?err, "renewing a restart claim failed"),
                }
            }
        }
    }
}

/// One restart: stop the agent, `provisioning`, start it again from its existing files, and wait
/// (bounded) for it to register, so requests arriving meanwhile coalesce. What the agent is told
/// about it, when it came back online.
pub(super) async fn restart_cycle(svc: &Services, id: Uuid) -> Option<Restart> {
    let runtime = svc.lifecycle.runtime.clone()?;
    // Held until the new agent is started: a first provision still under way finishes first,
    // and one that comes later finds the agent started.
    let lock = svc.lifecycle.starting.get(id);
    let starting = lock.lock().await;
    let row = match store::workspaces::get(&svc.db, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "loading a workspace to restart");
            return None;
        }
    };
    match restart_blocker(svc, &row).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            tracing::info!(workspace_id = %id, reason, "restart skipped");
            return None;
        }
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "checking a restart");
            return None;
        }
    }
    svc.lifecycle.cycles.fetch_add(1, Ordering::Relaxed);
    let cycle = recent_restarts(svc, id).await + 1;
    // Marked before the agent stops, so the health sweep never mistakes the stop for a crash.
    match transition(svc, id, None, Status::Provisioning, Cause::Restart, None).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(workspace_id = %id, "restart skipped: the workspace changed meanwhile");
            return None;
        }
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "marking a restart");
            return None;
        }
    }
    // The agent hears first, so it can wind down what it is doing before the stop.
    crate::agents::client::signal_restart_pending(svc, &row).await;
    if let Err(err) = runtime.stop(id).await {
        tracing::warn!(workspace_id = %id, error = %err, "stopping the agent before a restart failed");
    }
    let restart = Restart {
        at: Utc::now(),
        previous: Session::of(&row),
    };
    record_activity(
        svc,
        id,
        "restart",
        format!("workspace restarted ({})", runtime.name()),
        json!({ "runtime": runtime.name(), "recent_restarts": cycle }),
    )
    .await;
    svc.events
        .emit(
            names::WORKSPACE_PROVISIONING,
            Some(id),
            json!({ "name": row.name, "tier": row.tier, "runtime": row.runtime, "restart": true }),
        )
        .await;
    // Listening before the agent starts, so its registration cannot slip past.
    let events = svc.events.subscribe();
    provision_locked(svc, id, None, None, Start::Restart).await;
    drop(starting);
    wait_back(svc, id, events).await.then_some(restart)
}

/// How often a waiting cycle reads the row even without an event of its workspace: a net for an
/// event this replica missed, not the way the wait learns the outcome.
const RECHECK: Duration = Duration::from_secs(5);

/// Waits, at most [`CYCLE_ONLINE_WAIT`], until the agent provisioned for `id` is back (online or
/// degraded: true) or its cycle ended otherwise (failed, paused, removed: false). The bus says
/// when to look: each event of the workspace (`WORKSPACE_ONLINE` when the new agent registers,
/// `WORKSPACE_PROVISION_FAILED`, …) has the row read again, which has the last word.
async fn wait_back(svc: &Services, id: Uuid, mut events: crate::events::Subscription) -> bool {
    let deadline = tokio::time::Instant::now() + CYCLE_ONLINE_WAIT;
    loop {
        match store::workspaces::get(&svc.db, id).await {
            Ok(Some(now)) if now.status != Status::Provisioning => {
                return matches!(now.status, Status::Online | Status::Degraded);
            }
            Ok(Some(_)) => {}
            _ => return false,
        }
        let look_again = (tokio::time::Instant::now() + RECHECK).min(deadline);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(look_again) => break,
                next = events.next() => match next {
                    Ok(Some(event)) if event.workspace_id == Some(id) => break,
                    Ok(Some(_)) => {}
                    // A subscriber that fell behind may have missed it: read the row.
                    Err(_) => break,
                    // No bus any more (the host is stopping): the re-read period still holds.
                    Ok(None) => {
                        tokio::time::sleep_until(look_again).await;
                        break;
                    }
                },
            }
        }
        if tokio::time::Instant::now() >= deadline {
            // One last look: the agent may have registered just now.
            return store::workspaces::get(&svc.db, id)
                .await
                .ok()
                .flatten()
                .is_some_and(|now| matches!(now.status, Status::Online | Status::Degraded));
        }
    }
}

/// `POST /workspaces/:id/restart`: a manual restart (no policy), refused under a paused
/// ancestor.
pub async fn manual_restart(svc: &Services, id: Uuid) -> Result<RestartOutcome, LifecycleError> {
    let row = get_live(svc, id).await?;
    if let Some(name) = paused_ancestor(svc, id).await? {
        return Err(LifecycleError::AncestorPaused(name));
    }
    if row.runtime == "external" {
        return Ok(RestartOutcome::Skipped("external workspace"));
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    if row.status == Status::Paused {
        return Err(LifecycleError::Conflict(
            "workspace is paused — resume it instead",
        ));
    }
    // A restart of a hibernated workspace wakes it (the stopped agent starts again); the
    // restart cycle itself skips hibernated workspaces.
    if row.status == Status::Hibernated {
        super::wake(svc, id).await?;
        return Ok(RestartOutcome::Started);
    }
    Ok(restart_now(svc, id).await)
}

/// A secret (or the model) of a workspace changed: the change is announced and the restart
/// policy decides what the workspace does about it (`None` when that could not be asked).
pub async fn secrets_changed(
    svc: &Services,
    id: Uuid,
    reason: &str,
    key: &str,
) -> Option<RestartOutcome> {
    svc.events
        .emit(
            names::WORKSPACE_RESTART_REQUESTED,
            Some(id),
            json!({ "reason": reason, "key": key }),
        )
        .await;
    let trigger = Trigger::SecretsChanged(vec![key.to_owned()]);
    match request_restart(svc, id, trigger).await {
        Ok(outcome) => Some(outcome),
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "restart after a secret change failed");
            None
        }
    }
}

/// A global secret changed: every live workspace that inherits `key` (no own override of it)
/// hears of it through [`secrets_changed`], so the policy decides about each.
pub async fn global_secret_changed(
    svc: &Services,
    reason: &str,
    key: &str,
) -> Result<(), StoreError> {
    for workspace in store::secrets::workspaces_inheriting_global(&svc.db, key).await? {
        secrets_changed(svc, workspace, reason, key).await;
    }
    Ok(())
}
