//! Pause and resume (cascading over the subtree), and an agent's own report that it cannot boot.

use super::*;

/// Pauses a workspace and every live descendant not already paused: agents stopped, status
/// `paused`. Returns how many were paused.
pub async fn pause(svc: &Services, id: Uuid) -> Result<usize, LifecycleError> {
    let row = get_live(svc, id).await?;
    if row.status == Status::Paused {
        // The original answered 404 "workspace not found" here, which sent operators looking
        // for a workspace that was right there.
        return Err(LifecycleError::Conflict("workspace is already paused"));
    }
    let subtree = store::workspaces::subtree(&svc.db, id).await?;
    let mut paused = 0;
    for member in subtree.iter().rev() {
        let Some(member_row) = store::workspaces::get(&svc.db, *member).await? else {
            continue;
        };
        let Some(status) = Some(member_row.status) else {
            continue;
        };
        if matches!(status, Status::Removed | Status::Paused) {
            continue;
        }
        // Marked before the agent stops, so the health sweep never mistakes the stop for a crash.
        if transition(
            svc,
            *member,
            Some(status),
            Status::Paused,
            Cause::Pause,
            None,
        )
        .await?
        {
            if let Some(runtime) = &svc.lifecycle.runtime
                && let Err(err) = runtime.stop(*member).await
            {
                tracing::warn!(workspace_id = %member, error = %err, "stopping a paused agent failed");
            }
            paused += 1;
            svc.events
                .emit(
                    names::WORKSPACE_PAUSED,
                    Some(*member),
                    json!({ "name": member_row.name }),
                )
                .await;
        }
    }
    Ok(paused)
}

/// Resumes a paused workspace and its paused descendants: each goes back to `provisioning` and
/// starts from its existing files. Refused while an ancestor is paused. A hibernated workspace
/// is woken instead (only itself: hibernation does not cascade).
pub async fn resume(svc: &Services, id: Uuid) -> Result<usize, LifecycleError> {
    let row = get_live(svc, id).await?;
    if row.status == Status::Hibernated {
        return Ok(usize::from(super::wake(svc, id).await?));
    }
    if row.status != Status::Paused {
        return Err(LifecycleError::Conflict("workspace is not paused"));
    }
    if let Some(name) = paused_ancestor(svc, id).await? {
        return Err(LifecycleError::AncestorPaused(name));
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    let subtree = store::workspaces::subtree(&svc.db, id).await?;
    let mut resumed = 0;
    for member in subtree {
        let Some(member_row) = store::workspaces::get(&svc.db, member).await? else {
            continue;
        };
        if transition(svc, member, None, Status::Provisioning, Cause::Resume, None).await? {
            resumed += 1;
            svc.events
                .emit(
                    names::WORKSPACE_PROVISIONING,
                    Some(member),
                    json!({ "name": member_row.name, "tier": member_row.tier, "runtime": member_row.runtime }),
                )
                .await;
            schedule_provision(svc, member, None, None);
        }
    }
    Ok(resumed)
}

/// `POST /admin/workspaces/:id/bootstrap-failed`: the agent (or its supervisor) reports that it
/// cannot boot. True when the workspace moved from `provisioning` to `failed`.
pub async fn bootstrap_failed(
    svc: &Services,
    id: Uuid,
    error: &str,
    log_tail: Option<&str>,
) -> Result<bool, LifecycleError> {
    get_live(svc, id).await?;
    let message = sanitize(error, &[]);
    let moved = transition(
        svc,
        id,
        None,
        Status::Failed,
        Cause::ProvisionFailed,
        Some(&message),
    )
    .await?;
    if moved {
        let tail: Option<String> = log_tail.map(|t| {
            let clean = sanitize(t, &[]);
            clean
                .chars()
                .rev()
                .take(MAX_SAMPLE_ERROR)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        });
        svc.events
            .emit(
                names::WORKSPACE_PROVISION_FAILED,
                Some(id),
                json!({ "error": message, "log_tail": tail, "source": "bootstrap_failed" }),
            )
            .await;
    }
    Ok(moved)
}
