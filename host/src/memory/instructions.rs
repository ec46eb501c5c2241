//! Platform instructions: text the operator gives agents to put in their prompts, to every
//! workspace (`global`), to a team (`team`) or to one workspace (`workspace`).
//!
//! A team is a lead workspace and its direct children: the group the hierarchy already lets talk
//! to each other as parent and siblings. A team instruction names the lead in `scope_target`, so
//! a workspace belongs to two teams at most: the one its parent leads and the one it leads itself
//! (a root workspace only to the latter). What applies to a workspace is resolved in the order
//! global, team, workspace; within each, higher `priority` first, then the older first.

use chrono::Utc;
use uuid::Uuid;

use super::FieldError;
use crate::services::Services;
use crate::store::instructions::InstructionRow;
use crate::store::{self, StoreError};
use crate::workspaces::{WorkspaceError, get_live};

/// The original's limits: the title in characters, the content in characters.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_CHARS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum InstructionError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("instruction not found")]
    NotFound,
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an instruction applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// The team led by this workspace: it and its direct children.
    Team(Uuid),
    Workspace(Uuid),
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Team(_) => "team",
            Scope::Workspace(_) => "workspace",
        }
    }

    pub fn target(self) -> Option<Uuid> {
        match self {
            Scope::Global => None,
            Scope::Team(id) | Scope::Workspace(id) => Some(id),
        }
    }

    /// `scope` and `scope_target` as given; the target must be absent for `global` and present
    /// for the others.
    pub fn parse(scope: &str, target: Option<Uuid>) -> Result<Scope, FieldError> {
        match (scope, target) {
            ("global", None) => Ok(Scope::Global),
            ("global", Some(_)) => Err(FieldError::new(
                "scope_target",
                "scope_target must be absent for a global instruction",
            )),
            ("team", Some(id)) => Ok(Scope::Team(id)),
            ("workspace", Some(id)) => Ok(Scope::Workspace(id)),
            ("team" | "workspace", None) => Err(FieldError::new(
                "scope_target",
                format!("scope_target (a workspace id) is required for a {scope} instruction"),
            )),
            _ => Err(FieldError::new(
                "scope",
                "scope must be global, team or workspace",
            )),
        }
    }
}

/// An instruction's fields as the operator sets them.
#[derive(Debug, Clone)]
pub struct Definition {
    pub scope: Scope,
    pub title: String,
    pub content: String,
    pub priority: i32,
    pub enabled: bool,
}

/// The fields a change sets; `None` keeps the current value (`scope_target: Some(None)` clears
/// it; a change to `global` without a target clears it too).
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub scope: Option<String>,
    pub scope_target: Option<Option<Uuid>>,
    pub title: Option<String>,
    pub content: Option<String>,
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
}

async fn check(svc: &Services, def: &Definition) -> Result<(), InstructionError> {
    if def.title.trim().is_empty() {
        return Err(FieldError::new("title", "title must not be empty").into());
    }
    if def.title.chars().count() > MAX_TITLE_CHARS {
        return Err(FieldError::new(
            "title",
            format!("title is longer than {MAX_TITLE_CHARS} characters"),
        )
        .into());
    }
    if def.content.trim().is_empty() {
        return Err(FieldError::new("content", "content must not be empty").into());
    }
    if def.content.chars().count() > MAX_CONTENT_CHARS {
        return Err(FieldError::new(
            "content",
            format!("content is longer than {MAX_CONTENT_CHARS} characters"),
        )
        .into());
    }
    if let Some(target) = def.scope.target() {
        match get_live(svc, target).await {
            Ok(_) => {}
            Err(WorkspaceError::NotFound | WorkspaceError::Removed(_)) => {
                return Err(FieldError::new(
                    "scope_target",
                    "scope_target is not a live workspace",
                )
                .into());
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

pub async fn create(svc: &Services, def: Definition) -> Result<InstructionRow, InstructionError> {
    check(svc, &def).await?;
    let now = Utc::now();
    let row = InstructionRow {
        id: Uuid::new_v4(),
        scope: def.scope.name().to_owned(),
        scope_target: def.scope.target(),
        title: def.title,
        content: def.content,
        priority: def.priority,
        enabled: def.enabled,
        created_at: now,
        updated_at: now,
    };
    store::instructions::insert(&svc.db, &row).await?;
    Ok(row)
}

pub async fn update(
    svc: &Services,
    id: Uuid,
    patch: Patch,
) -> Result<InstructionRow, InstructionError> {
    let mut row = store::instructions::get(&svc.db, id)
        .await?
        .ok_or(InstructionError::NotFound)?;
    let scope_name = patch.scope.unwrap_or_else(|| row.scope.clone());
    let target = match patch.scope_target {
        Some(target) => target,
        None if scope_name == "global" => None,
        None => row.scope_target,
    };
    let def = Definition {
        scope: Scope::parse(&scope_name, target)?,
        title: patch.title.unwrap_or(row.title),
        content: patch.content.unwrap_or(row.content),
        priority: patch.priority.unwrap_or(row.priority),
        enabled: patch.enabled.unwrap_or(row.enabled),
    };
    check(svc, &def).await?;
    row.scope = def.scope.name().to_owned();
    row.scope_target = def.scope.target();
    row.title = def.title;
    row.content = def.content;
    row.priority = def.priority;
    row.enabled = def.enabled;
    if !store::instructions::update(&svc.db, &row).await? {
        return Err(InstructionError::NotFound);
    }
    store::instructions::get(&svc.db, id)
        .await?
        .ok_or(InstructionError::NotFound)
}

pub async fn list(svc: &Services) -> Result<Vec<InstructionRow>, InstructionError> {
    Ok(store::instructions::list(&svc.db).await?)
}

pub async fn delete(svc: &Services, id: Uuid) -> Result<(), InstructionError> {
    if store::instructions::delete(&svc.db, id).await? {
        Ok(())
    } else {
        Err(InstructionError::NotFound)
    }
}

/// What applies to a live workspace, in order, with the text an agent pastes into its prompt.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub workspace_id: Uuid,
    pub instructions: Vec<InstructionRow>,
    pub text: String,
}

/// The enabled instructions that apply to `workspace_id`: global, then its teams', then its
/// own; each by priority (higher first), then age. Both the HTTP route and the MCP tool call
/// this.
pub async fn resolve(svc: &Services, workspace_id: Uuid) -> Result<Resolved, InstructionError> {
    let workspace = get_live(svc, workspace_id).await?;
    let instructions =
        store::instructions::applicable(&svc.db, workspace_id, workspace.parent_id).await?;
    let text = combined_text(&instructions);
    Ok(Resolved {
        workspace_id,
        instructions,
        text,
    })
}

/// One block per instruction, in order: `## <title>` then its content; empty when none apply.
pub fn combined_text(instructions: &[InstructionRow]) -> String {
    if instructions.is_empty() {
        return String::new();
    }
    let mut text = String::from("# Platform instructions\n");
    for row in instructions {
        text.push_str(&format!(
            "\n## {}\n\n{}\n",
            row.title.trim(),
            row.content.trim()
        ));
    }
    text
}
