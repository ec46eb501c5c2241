//! Teams: a workspace created from a template that declares `sub_workspaces` can expand into
//! that team (the children are created under it, each from its own template when it names one)
//! and collapse again (the children expand created are stopped and removed, and the workspace's
//! card is collapsed on the canvas).
//!
//! Expand creates only the declared children missing by name, all in one transaction, and marks
//! each in its config (`expanded_from`), so collapse removes exactly those and never a child the
//! operator added by hand.

use serde_json::{Value, json};
use uuid::Uuid;

use super::templates::{self, TemplateError};
use super::{
    CreateRequest, PatchRequest, WorkspaceError, announce, cascade_delete, get_live, patch,
    prepare, store_many,
};
use crate::services::Services;
use crate::store;

/// The config key that marks a child expand created, holding its parent's id.
pub const EXPANDED_FROM: &str = "expanded_from";
/// How far below its parent an expanded child is placed, and how far apart siblings are.
const ROW_GAP: f64 = 160.0;
const COLUMN_GAP: f64 = 240.0;

/// Why a team could not expand or collapse.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("the workspace was not created from a template, so it declares no team")]
    NoTemplate,
    #[error("its template declares no sub_workspaces")]
    NothingDeclared,
    #[error("its template cannot be read: {0}")]
    Template(String),
}

impl From<store::StoreError> for TeamError {
    fn from(err: store::StoreError) -> Self {
        TeamError::Workspace(WorkspaceError::Store(err))
    }
}

/// What an expand did.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    /// `(id, name)` of each child created.
    pub created: Vec<(Uuid, String)>,
    /// Names the template declares that were already children.
    pub existing: Vec<String>,
}

/// Creates the children `id`'s template declares that it does not have yet.
pub async fn expand(svc: &Services, id: Uuid) -> Result<Expanded, TeamError> {
    let row = get_live(svc, id).await?;
    let template = match store::workspace_config::get(&svc.db, id).await? {
        Some(Value::Object(config)) => config
            .get("template")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
    .ok_or(TeamError::NoTemplate)?;
    let declared = match templates::defaults(svc, &template).await {
        Ok(Some(defaults)) => defaults.sub_workspaces,
        Ok(None) => {
            return Err(TeamError::Template(
                "no template catalogue is configured".into(),
            ));
        }
        Err(TemplateError::NotFound) => {
            return Err(TeamError::Template(format!(
                "{template:?} is not in the catalogue"
            )));
        }
        Err(err) => return Err(TeamError::Template(err.to_string())),
    };
    if declared.is_empty() {
        return Err(TeamError::NothingDeclared);
    }
    let children = store::workspaces::live_children(&svc.db, id).await?;
    let mut expanded = Expanded::default();
    let mut prepared = Vec::new();
    for (i, sub) in declared.iter().enumerate() {
        if children.iter().any(|(_, name)| *name == sub.name) {
            expanded.existing.push(sub.name.clone());
            continue;
        }
        let mut config = serde_json::Map::new();
        config.insert(EXPANDED_FROM.to_owned(), json!(id));
        let mut request = CreateRequest {
            name: sub.name.clone(),
            role: sub.role.clone(),
            template: sub.template.clone(),
            tier: i64::from(row.tier),
            canvas: Some((row.x + i as f64 * COLUMN_GAP, row.y + ROW_GAP)),
            unique_name: true,
            config,
            ..CreateRequest::default()
        };
        if let Some(child_template) = &sub.template
            && let Ok(Some(defaults)) = templates::defaults(svc, child_template).await
        {
            request.runtime = defaults.runtime;
            request.model = defaults.model;
        }
        let mut ready = prepare(svc, &request).await?;
        ready.row.parent_id = Some(id);
        prepared.push(ready);
    }
    if !prepared.is_empty() {
        store_many(svc, &prepared.iter().collect::<Vec<_>>()).await?;
        expanded.created = prepared
            .iter()
            .map(|p| (p.row.id, p.row.name.clone()))
            .collect();
        announce(svc, prepared.into_iter().map(|p| (p, None)).collect()).await;
    }
    if row.collapsed {
        patch(
            svc,
            id,
            PatchRequest {
                collapsed: Some(false),
                ..PatchRequest::default()
            },
        )
        .await?;
    }
    Ok(expanded)
}

/// Stops and removes the children expand created (with whatever is under them) and collapses
/// the workspace's card. Returns the ids of the children removed.
pub async fn collapse(svc: &Services, id: Uuid) -> Result<Vec<Uuid>, TeamError> {
    get_live(svc, id).await?;
    let mut removed = Vec::new();
    for (child, _) in store::workspaces::live_children(&svc.db, id).await? {
        let made_by_expand = matches!(
            store::workspace_config::get(&svc.db, child).await?,
            Some(Value::Object(config))
                if config.get(EXPANDED_FROM).and_then(Value::as_str) == Some(id.to_string().as_str())
        );
        if made_by_expand {
            cascade_delete(svc, child, false).await?;
            removed.push(child);
        }
    }
    patch(
        svc,
        id,
        PatchRequest {
            collapsed: Some(true),
            ..PatchRequest::default()
        },
    )
    .await?;
    Ok(removed)
}
