//! The sweeps that keep the database honest about what runs: provision timeouts, agents that
//! exited, orphaned agents, heartbeats lost; and removing the agents of deleted workspaces.

use super::*;

/// Stops and removes the agents of workspaces that were just removed (leaves first). Returns the
/// ids whose removal failed; retrying is safe.
pub async fn remove_agents(svc: &Services, ids: &[Uuid]) -> Vec<Uuid> {
    let Some(runtime) = &svc.lifecycle.runtime else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for id in ids.iter().rev() {
        forget_delayed_restart(svc, *id).await;
        if let Err(err) = runtime.remove(*id).await {
            tracing::warn!(workspace_id = %id, error = %err, "removing the agent of a removed workspace failed");
            failures.push(*id);
        }
    }
    failures
}

/// Provision-timeout sweep: workspaces stuck in `provisioning` fail.
pub async fn sweep_provision_timeouts(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let timeout = svc.config.runtime.provision_timeout_secs;
    let cutoff =
        Utc::now() - chrono::Duration::seconds(i64::try_from(timeout).unwrap_or(i64::MAX / 1000));
    let stuck = store::workspaces::in_status_since(&svc.db, Status::Provisioning, cutoff).await?;
    let mut failed = Vec::new();
    for (id, runtime) in stuck {
        let message = format!(
            "provisioning timed out — the agent started but never called /registry/register within {timeout} s"
        );
        fail_provision(
            svc,
            id,
            &message,
            json!({ "timeout_secs": timeout, "runtime": runtime, "source": "provision_timeout_sweep" }),
        )
        .await;
        failed.push(id);
    }
    Ok(failed)
}

/// Health sweep: a running workspace whose container or process is gone goes offline, and the
/// restart policy is asked what to do about the exit.
pub async fn sweep_health(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return Ok(Vec::new());
    };
    let mut gone = Vec::new();
    for id in store::workspaces::running_ids(&svc.db).await? {
        if let AgentCheck::Exited { went_offline: true } =
            check_agent(svc, runtime.as_ref(), id).await?
        {
            gone.push(id);
        }
    }
    Ok(gone)
}

pub use crate::agents::AgentCheck;

/// Asks the runtime whether the agent of `id` still runs. When it stopped, an online or degraded
/// workspace goes offline (`WORKSPACE_OFFLINE`) and the restart policy decides what follows.
pub async fn check_agent(
    svc: &Services,
    runtime: &dyn ContainerRuntime,
    id: Uuid,
) -> Result<AgentCheck, StoreError> {
    let inspection = match runtime.inspect(id).await {
        Ok(inspection) => inspection,
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = %err, "agent check skipped: runtime error");
            return Ok(AgentCheck::Unknown);
        }
    };
    if inspection.running {
        return Ok(AgentCheck::Running);
    }
    // A restart cycle stops the agent on purpose, and an agent that registered while the cycle
    // was stopping it shows `online` until the cycle starts the next one: the cycle, not this
    // check, decides what follows.
    if store::restarts::cycle_running(&svc.db, id, Utc::now()).await? {
        return Ok(AgentCheck::Unknown);
    }
    let code = inspection.exit_code.unwrap_or(-1);
    let moved = transition(
        svc,
        id,
        None,
        Status::Offline,
        Cause::AgentExited,
        Some(&format!("agent exited with code {code}")),
    )
    .await?;
    if moved {
        svc.events
            .emit(
                names::WORKSPACE_OFFLINE,
                Some(id),
                json!({ "exit_code": code }),
            )
            .await;
        let code = i32::try_from(code).unwrap_or(-1);
        request_restart(svc, id, Trigger::AgentExited(code)).await?;
    }
    Ok(AgentCheck::Exited {
        went_offline: moved,
    })
}

/// Orphan sweep: agents (containers, volumes, directories) whose workspace is removed or unknown
/// to this database are removed.
pub async fn sweep_orphans(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return Ok(Vec::new());
    };
    let managed = match runtime.managed().await {
        Ok(ids) => ids,
        Err(err) => {
            tracing::warn!(error = %err, "orphan sweep skipped: runtime error");
            return Ok(Vec::new());
        }
    };
    let mut removed = Vec::new();
    for id in managed {
        let orphan = match store::workspaces::get(&svc.db, id).await? {
            None => true,
            Some(row) => row.status == Status::Removed,
        };
        if !orphan {
            continue;
        }
        match runtime.remove(id).await {
            Ok(()) => {
                tracing::info!(workspace_id = %id, "orphaned agent removed");
                forget_delayed_restart(svc, id).await;
                removed.push(id);
            }
            Err(err) => {
                tracing::warn!(workspace_id = %id, error = %err, "removing an orphaned agent failed")
            }
        }
    }
    Ok(removed)
}

/// After the liveness sweep marked silent workspaces offline, the policy decides about each.
pub async fn after_heartbeat_loss(svc: &Services, ids: &[Uuid]) {
    for id in ids {
        if let Err(err) = request_restart(svc, *id, Trigger::AgentExited(-1)).await {
            tracing::warn!(workspace_id = %id, error = ?err, "restart after heartbeat loss failed");
        }
    }
}
