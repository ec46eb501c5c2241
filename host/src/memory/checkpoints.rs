//! Workflow checkpoints: an agent running a multi-step workflow records each step it finished,
//! so after a restart it can read where it got to. Writing the same step again replaces it.

use serde_json::Value;
use uuid::Uuid;

use super::{FieldError, check_name};
use crate::services::Services;
use crate::store::checkpoints::CheckpointRow;
use crate::store::{self, StoreError};

/// Longest workflow id and step name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Largest payload, in bytes of its JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("no checkpoint found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parsed step to record.
#[derive(Debug, Clone)]
pub struct Step {
    pub workflow_id: String,
    pub step_name: String,
    pub step_index: i32,
    pub payload: Value,
}

pub fn check_workflow_id(workflow_id: &str) -> Result<(), FieldError> {
    check_name("workflow_id", workflow_id, MAX_NAME_CHARS)
}

/// Records a step of `workspace_id` (whose liveness the caller checked).
pub async fn save(
    svc: &Services,
    workspace_id: Uuid,
    step: Step,
) -> Result<CheckpointRow, CheckpointError> {
    check_workflow_id(&step.workflow_id)?;
    check_name("step_name", &step.step_name, MAX_NAME_CHARS)?;
    if step.step_index < 0 {
        return Err(FieldError::new("step_index", "step_index must not be negative").into());
    }
    let size = serde_json::to_vec(&step.payload)
        .map(|v| v.len())
        .unwrap_or(0);
    if size > MAX_PAYLOAD_BYTES {
        return Err(FieldError::too_large(
            "payload",
            format!("payload is {size} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES}"),
        )
        .into());
    }
    Ok(store::checkpoints::upsert(
        &svc.db,
        workspace_id,
        &step.workflow_id,
        &step.step_name,
        step.step_index,
        &step.payload,
    )
    .await?)
}

/// The latest step of one workflow, or of any workflow of the workspace.
pub async fn latest(
    svc: &Services,
    workspace_id: Uuid,
    workflow_id: Option<&str>,
) -> Result<CheckpointRow, CheckpointError> {
    if let Some(wf) = workflow_id {
        check_workflow_id(wf)?;
    }
    store::checkpoints::latest(&svc.db, workspace_id, workflow_id)
        .await?
        .ok_or(CheckpointError::NotFound)
}

/// Every step of a workflow, in step order.
pub async fn workflow(
    svc: &Services,
    workspace_id: Uuid,
    workflow_id: &str,
) -> Result<Vec<CheckpointRow>, CheckpointError> {
    check_workflow_id(workflow_id)?;
    Ok(store::checkpoints::workflow(&svc.db, workspace_id, workflow_id).await?)
}

/// Deletes a workflow's steps; how many there were (none is [`CheckpointError::NotFound`]).
pub async fn delete(
    svc: &Services,
    workspace_id: Uuid,
    workflow_id: &str,
) -> Result<u64, CheckpointError> {
    check_workflow_id(workflow_id)?;
    match store::checkpoints::delete_workflow(&svc.db, workspace_id, workflow_id).await? {
        0 => Err(CheckpointError::NotFound),
        n => Ok(n),
    }
}
