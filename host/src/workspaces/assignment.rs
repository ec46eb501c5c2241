//! Agent assignment: which model a workspace's agent runs, kept as a history (`agents`): assign
//! one, replace it, remove it, or move it to another workspace. The active assignment is the
//! workspace's model (`MODEL_PROVIDER`), so every change also sets (or clears) that and asks the
//! restart policy what the agent does about it, as choosing a model through `PUT …/model` does.

use serde_json::json;
use uuid::Uuid;

use super::{WorkspaceError, get_live, lifecycle};
use crate::events::names;
use crate::secrets::{self, SecretKey};
use crate::services::Services;
use crate::store::{self, StoreError, agents::AgentRow, agents::Change};

/// The longest model name.
const MAX_MODEL_CHARS: usize = 100;
/// The longest removal reason kept.
const MAX_REASON_CHARS: usize = 500;

/// Why an assignment change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the workspace already has an agent assigned; replace it (PATCH) or remove it first")]
    AlreadyAssigned,
    #[error("the workspace has no agent assigned")]
    NoneAssigned,
    #[error("the target workspace already has an agent assigned")]
    TargetAssigned,
    #[error("an agent cannot move to the workspace it is in")]
    SameWorkspace,
}

impl From<StoreError> for AssignmentError {
    fn from(err: StoreError) -> Self {
        AssignmentError::Workspace(WorkspaceError::Store(err))
    }
}

/// A checked model name.
pub fn check_model(model: &str) -> Result<&str, AssignmentError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(AssignmentError::Invalid("model is required"));
    }
    if model.chars().count() > MAX_MODEL_CHARS || model.chars().any(char::is_control) {
        return Err(AssignmentError::Invalid(
            "model must be at most 100 characters without control characters",
        ));
    }
    Ok(model)
}

fn reason(reason: Option<&str>, default: &'static str) -> String {
    reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect()
        })
        .unwrap_or_else(|| default.to_owned())
}

/// The workspace's assignments, newest first (the active one, if any, first).
pub async fn history(svc: &Services, id: Uuid) -> Result<Vec<AgentRow>, AssignmentError> {
    get_live(svc, id).await?;
    Ok(store::agents::history(&svc.db, id).await?)
}

/// Assigns an agent running `model` to a workspace that has none.
pub async fn assign(svc: &Services, id: Uuid, model: &str) -> Result<AgentRow, AssignmentError> {
    let model = check_model(model)?;
    get_live(svc, id).await?;
    let (_, started) = store::agents::change(
        &svc.db,
        Change {
            end: None,
            start: Some((id, model)),
        },
    )
    .await
    .map_err(|err| {
        if store::agents::is_already_active(&err) {
            AssignmentError::AlreadyAssigned
        } else {
            err.into()
        }
    })?;
    let started = started.expect("a started assignment");
    apply(svc, id, Some(model), "agent_assigned").await?;
    announce(
        svc,
        names::AGENT_ASSIGNED,
        id,
        json!({ "model": model, "agent_id": started.id }),
    )
    .await;
    Ok(started)
}

/// Replaces the workspace's active agent with one running `model`: the old assignment ends
/// (`replaced`, or the reason given) and the new one starts, in one transaction.
pub async fn replace(
    svc: &Services,
    id: Uuid,
    model: &str,
    why: Option<&str>,
) -> Result<(AgentRow, AgentRow), AssignmentError> {
    let model = check_model(model)?;
    get_live(svc, id).await?;
    if active(svc, id).await?.is_none() {
        return Err(AssignmentError::NoneAssigned);
    }
    let why = reason(why, "replaced");
    let (ended, started) = store::agents::change(
        &svc.db,
        Change {
            end: Some((id, &why)),
            start: Some((id, model)),
        },
    )
    .await?;
    let (Some(ended), Some(started)) = (ended, started) else {
        // Removed by another caller between the check and the change.
        return Err(AssignmentError::NoneAssigned);
    };
    apply(svc, id, Some(model), "agent_replaced").await?;
    announce(
        svc,
        names::AGENT_REPLACED,
        id,
        json!({ "model": model, "previous_model": ended.model, "agent_id": started.id, "reason": why }),
    )
    .await;
    Ok((ended, started))
}

/// Ends the workspace's active assignment (`removed`, or the reason given); the workspace's
/// model is cleared, so its agent runs the default again.
pub async fn remove(
    svc: &Services,
    id: Uuid,
    why: Option<&str>,
) -> Result<AgentRow, AssignmentError> {
    get_live(svc, id).await?;
    let why = reason(why, "removed");
    let (ended, _) = store::agents::change(
        &svc.db,
        Change {
            end: Some((id, &why)),
            start: None,
        },
    )
    .await?;
    let ended = ended.ok_or(AssignmentError::NoneAssigned)?;
    apply(svc, id, None, "agent_removed").await?;
    announce(
        svc,
        names::AGENT_REMOVED,
        id,
        json!({ "model": ended.model, "agent_id": ended.id, "reason": why }),
    )
    .await;
    Ok(ended)
}

/// Moves the active agent of `from` to `to` (which must have none): `from`'s assignment ends
/// (`moved to <to>`) and `to` gets one with the same model, in one transaction.
pub async fn move_to(svc: &Services, from: Uuid, to: Uuid) -> Result<AgentRow, AssignmentError> {
    if from == to {
        return Err(AssignmentError::SameWorkspace);
    }
    get_live(svc, from).await?;
    get_live(svc, to).await.map_err(|err| match err {
        WorkspaceError::NotFound | WorkspaceError::Removed(_) => {
            AssignmentError::Invalid("the target workspace does not exist")
        }
        other => other.into(),
    })?;
    let Some(current) = active(svc, from).await? else {
        return Err(AssignmentError::NoneAssigned);
    };
    let why = format!("moved to {to}");
    let (ended, started) = store::agents::change(
        &svc.db,
        Change {
            end: Some((from, &why)),
            start: Some((to, &current.model)),
        },
    )
    .await
    .map_err(|err| {
        if store::agents::is_already_active(&err) {
            AssignmentError::TargetAssigned
        } else {
            err.into()
        }
    })?;
    let (Some(_), Some(started)) = (ended, started) else {
        return Err(AssignmentError::NoneAssigned);
    };
    apply(svc, from, None, "agent_moved").await?;
    apply(svc, to, Some(&current.model), "agent_moved").await?;
    announce(
        svc,
        names::AGENT_MOVED,
        from,
        json!({ "model": current.model, "to": to, "agent_id": started.id }),
    )
    .await;
    Ok(started)
}

async fn active(svc: &Services, id: Uuid) -> Result<Option<AgentRow>, AssignmentError> {
    Ok(store::agents::history(&svc.db, id)
        .await?
        .into_iter()
        .find(|row| row.status == "active"))
}

/// Makes the workspace's model `model` (or clears it) and asks the restart policy what its
/// agent does about it.
async fn apply(
    svc: &Services,
    id: Uuid,
    model: Option<&str>,
    why: &str,
) -> Result<(), AssignmentError> {
    let key = SecretKey::parse(secrets::MODEL_KEY).expect("MODEL_PROVIDER is a valid key");
    match model {
        Some(model) => secrets::set_workspace(&svc.db, &svc.cipher, id, &key, model).await?,
        None => {
            store::secrets::delete_workspace(&svc.db, id, key.as_str()).await?;
        }
    }
    lifecycle::secrets_changed(svc, id, why, key.as_str()).await;
    Ok(())
}

async fn announce(svc: &Services, event: &str, id: Uuid, payload: serde_json::Value) {
    svc.events.emit(event, Some(id), payload).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_reasons_are_checked_and_bounded() {
        assert_eq!(check_model("  gpt-4o ").unwrap(), "gpt-4o");
        assert!(check_model("").is_err());
        assert!(check_model(&"m".repeat(101)).is_err());
        assert!(check_model("a\nb").is_err());
        assert_eq!(reason(None, "replaced"), "replaced");
        assert_eq!(reason(Some("  "), "removed"), "removed");
        assert_eq!(reason(Some("too slow\n"), "removed"), "too slow");
        assert_eq!(reason(Some(&"r".repeat(600)), "x").len(), 500);
    }
}
