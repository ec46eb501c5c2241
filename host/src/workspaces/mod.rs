//! Workspaces: the org tree's nodes, their lifecycle statuses, creation, edits and cascade delete.

pub mod access;
pub mod assignment;

pub mod bundles;
pub mod files;
pub mod lifecycle;
pub mod registry;
pub mod restart_context;
pub mod team;
pub mod templates;
pub mod uploads;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::events::{Invalidation, names};
use crate::secrets::{self, SecretKey};
use crate::services::Services;
use crate::store::{self, Constraint, StoreError, workspaces::WorkspaceRow};

pub use crate::store::workspaces::{EXTERNAL_RUNTIME, Status};

/// Errors of workspace operations; the HTTP layer maps each once.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace not found")]
    NotFound,
    #[error("workspace removed")]
    Removed(Box<WorkspaceRow>),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("workspace name already in use under this parent")]
    NameTaken,
    #[error("parent workspace not found")]
    ParentNotFound,
    #[error("parent_id would make the workspace its own ancestor")]
    Cycle,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkspaceError {
    fn from_constraint(err: StoreError) -> Self {
        match err {
            StoreError::Constraint(Constraint::WorkspaceNameTaken) => WorkspaceError::NameTaken,
            StoreError::Constraint(Constraint::WorkspaceParentMissing) => {
                WorkspaceError::ParentNotFound
            }
            StoreError::Constraint(Constraint::WorkspaceFieldInvalid) => {
                WorkspaceError::Invalid("invalid workspace fields")
            }
            other => WorkspaceError::Store(other),
        }
    }
}

/// Characters the original platform refuses in names and roles (they break YAML and prompts).
const FORBIDDEN_NAME_CHARS: &[char] = &['{', '}', '[', ']', '|', '>', '*', '&', '!'];

/// Validates a free-text field: no control characters, optional forbidden characters, a length cap.
fn check_text(value: &str, max_len: usize, forbid_special: bool) -> Result<(), WorkspaceError> {
    let bad_char =
        |c: char| c.is_control() || (forbid_special && FORBIDDEN_NAME_CHARS.contains(&c));
    if value.chars().count() > max_len || value.chars().any(bad_char) {
        return Err(WorkspaceError::Invalid("invalid workspace fields"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), WorkspaceError> {
    if name.trim().is_empty() {
        return Err(WorkspaceError::Invalid("name is required"));
    }
    check_text(name, 255, true)
}

fn check_tier(tier: i64) -> Result<i32, WorkspaceError> {
    match tier {
        0 => Ok(3),
        1..=4 => Ok(tier as i32),
        _ => Err(WorkspaceError::Invalid("tier must be between 1 and 4")),
    }
}

/// Directories a workspace may never mount from the host, nor anything below them.
const SYSTEM_DIRS: &[&str] = &[
    "/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/lib32", "/lib64",
    "/libx32", "/usr", "/root", "/run", "/snap",
];

/// Directories that hold everyone's files: a workspace may mount a directory below them, never
/// the whole of one.
const SHARED_ROOTS: &[&str] = &["/", "/home", "/tmp", "/mnt", "/media", "/opt", "/srv"];

const BAD_WORKSPACE_DIR: &str = "workspace_dir must be a normalised absolute path outside system \
     directories and the host's own data";

fn check_workspace_dir(dir: &str) -> Result<(), WorkspaceError> {
    let path = std::path::Path::new(dir);
    // The path as written must be its own normal form: no `.`, `..`, doubled or trailing
    // slashes, so what is checked here is exactly what gets mounted.
    let mut normal = String::new();
    for component in path.components() {
        match component {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(part) => {
                normal.push('/');
                normal.push_str(
                    part.to_str()
                        .ok_or(WorkspaceError::Invalid(BAD_WORKSPACE_DIR))?,
                );
            }
            _ => return Err(WorkspaceError::Invalid(BAD_WORKSPACE_DIR)),
        }
    }
    if normal.is_empty() {
        normal.push('/');
    }
    let system = SYSTEM_DIRS
        .iter()
        .any(|sys| dir == *sys || dir.starts_with(&format!("{sys}/")));
    if !path.is_absolute()
        || normal != dir
        || system
        || SHARED_ROOTS.contains(&dir)
        || dir.chars().any(char::is_control)
    {
        return Err(WorkspaceError::Invalid(BAD_WORKSPACE_DIR));
    }
    Ok(())
}

/// The host's own state must never be mountable: not its data directory (the database, tokens,
/// other workspaces' files), nothing inside it, and no directory containing it.
fn check_workspace_dir_against_host(
    dir: &str,
    data_dir: &std::path::Path,
) -> Result<(), WorkspaceError> {
    let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let data = data.canonicalize().unwrap_or(data);
    let dir = std::path::Path::new(dir);
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if data.starts_with(&dir) || dir.starts_with(&data) {
        return Err(WorkspaceError::Invalid(BAD_WORKSPACE_DIR));
    }
    Ok(())
}

/// The longest `hibernation_idle_minutes` accepted: thirty days.
pub const MAX_HIBERNATION_IDLE_MINUTES: i64 = 30 * 24 * 60;

/// `hibernation_idle_minutes` as stored: 0 (never) up to [`MAX_HIBERNATION_IDLE_MINUTES`].
pub fn check_hibernation_idle_minutes(minutes: Option<i64>) -> Result<Option<i32>, WorkspaceError> {
    match minutes {
        None => Ok(None),
        Some(m) if (0..=MAX_HIBERNATION_IDLE_MINUTES).contains(&m) => Ok(i32::try_from(m).ok()),
        Some(_) => Err(WorkspaceError::Invalid(
            "hibernation_idle_minutes must be between 0 and 43200",
        )),
    }
}

/// A validated request to create a workspace.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub role: Option<String>,
    pub template: Option<String>,
    pub tier: i64,
    pub model: Option<String>,
    pub runtime: Option<String>,
    pub external: bool,
    pub url: Option<String>,
    pub workspace_dir: Option<String>,
    pub workspace_access: Option<String>,
    pub parent_id: Option<Uuid>,
    pub budget_limit: Option<i64>,
    pub secrets: Vec<(String, String)>,
    pub max_concurrent_tasks: i64,
    pub canvas: Option<(f64, f64)>,
    /// Fail with [`WorkspaceError::NameTaken`] instead of suffixing a taken sibling name.
    pub unique_name: bool,
    /// The files of the first provision (instead of looking the template up then).
    pub seed_files: Option<crate::safefs::FileTree>,
    /// Extra keys stored in the workspace's config row.
    pub config: serde_json::Map<String, Value>,
    /// The position announced in `WORKSPACE_PROVISIONING` when it differs from the stored one
    /// (an org import announces children relative to their parent).
    pub announce_xy: Option<(f64, f64)>,
    /// Minutes of idleness before the hibernation monitor stops the agent (0 or `None`: never).
    pub hibernation_idle_minutes: Option<i64>,
}

/// What creation produced.
#[derive(Debug)]
pub struct Created {
    pub id: Uuid,
    pub status: Status,
    pub awareness_namespace: String,
    pub workspace_access: String,
    pub external: bool,
    /// For a workspace whose agent the host does not start (external, or no runtime): the
    /// token its agent registers and heartbeats with, shown once.
    pub auth_token: Option<secrecy::SecretString>,
}

const DEFAULT_RUNTIME: &str = "langgraph";
/// Suffixes tried when a sibling already has the requested name: "name (2)" .. "name (20)".
const NAME_ATTEMPTS: usize = 20;

/// The checks of [`create`] that need no database, so a caller creating many workspaces (an org
/// import) can refuse a bad one before creating any. Returns the workspace access in effect.
pub fn check(req: &CreateRequest) -> Result<String, WorkspaceError> {
    check_name(&req.name)?;
    if let Some(role) = &req.role {
        check_text(role, 1000, true)?;
    }
    if let Some(model) = &req.model {
        check_text(model, 100, false)?;
    }
    if let Some(runtime) = &req.runtime {
        check_text(runtime, 100, false)?;
    }
    if let Some(template) = &req.template {
        check_text(template, 255, false)?;
    }
    check_tier(req.tier)?;
    let access = req
        .workspace_access
        .clone()
        .unwrap_or_else(|| "none".to_owned());
    if !matches!(access.as_str(), "none" | "read_only" | "read_write") {
        return Err(WorkspaceError::Invalid(
            "workspace_access must be none, read_only or read_write",
        ));
    }
    if let Some(dir) = &req.workspace_dir {
        check_workspace_dir(dir)?;
    } else if access != "none" {
        return Err(WorkspaceError::Invalid(
            "workspace_access requires workspace_dir",
        ));
    }
    if req.budget_limit.is_some_and(|b| b < 0) {
        return Err(WorkspaceError::Invalid("budget_limit must not be negative"));
    }
    check_hibernation_idle_minutes(req.hibernation_idle_minutes)?;
    for (key, value) in &req.secrets {
        if SecretKey::parse(key).is_none() {
            return Err(WorkspaceError::Invalid(
                "secret keys must be environment variable names",
            ));
        }
        if value.len() > secrets::MAX_VALUE_BYTES {
            return Err(WorkspaceError::Invalid("secret value too large"));
        }
    }
    Ok(access)
}

/// A workspace ready to be stored: checked, its id chosen and its secrets sealed for that id.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The row; a caller placing it in a tree may still set `parent_id` (and `name`).
    pub row: store::workspaces::NewWorkspace,
    pub secrets: Vec<store::workspaces::SealedSecret>,
    pub config: Value,
    pub access: String,
    pub external: bool,
    model: Option<String>,
    announce_xy: Option<(f64, f64)>,
}

/// Everything [`create`] does before it writes: the checks, the parent check when the request
/// names a parent, the external URL check, the id, the sealed secrets and the row. A caller that
/// creates many workspaces at once prepares them all, stores them with [`store_many`] and then
/// calls [`announce`].
pub async fn prepare(svc: &Services, req: &CreateRequest) -> Result<Prepared, WorkspaceError> {
    let access = check(req)?;
    if let Some(dir) = &req.workspace_dir {
        check_workspace_dir_against_host(dir, &svc.config.data_dir)?;
    }
    let tier = check_tier(req.tier)?;
    // The id is the sealed values' associated data: a value opens only in this workspace's row.
    let id = Uuid::new_v4();
    let mut sealed = Vec::with_capacity(req.secrets.len() + 1);
    for (key, value) in &req.secrets {
        let (ciphertext, version) = svc.cipher.seal(secrets::Slot::Workspace(id, key), value);
        sealed.push(store::workspaces::SealedSecret {
            key: key.clone(),
            ciphertext,
            version,
        });
    }
    if let Some(model) = req.model.as_deref().filter(|m| !m.is_empty()) {
        let (ciphertext, version) = svc
            .cipher
            .seal(secrets::Slot::Workspace(id, secrets::MODEL_KEY), model);
        sealed.retain(|s| s.key != secrets::MODEL_KEY);
        sealed.push(store::workspaces::SealedSecret {
            key: secrets::MODEL_KEY.to_owned(),
            ciphertext,
            version,
        });
    }
    if let Some(parent) = req.parent_id {
        match store::workspaces::get(&svc.db, parent).await? {
            Some(row) if row.status != Status::Removed => {}
            _ => return Err(WorkspaceError::ParentNotFound),
        }
    }
    let external = req.external || req.runtime.as_deref() == Some(EXTERNAL_RUNTIME);
    if external && let Some(url) = &req.url {
        registry::check_url(svc, None, url)
            .await
            .map_err(WorkspaceError::Invalid)?;
    }
    let runtime = if external {
        EXTERNAL_RUNTIME.to_owned()
    } else {
        req.runtime
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned())
    };
    let status = match (external, &req.url) {
        (true, Some(_)) => Status::Online,
        (true, None) => Status::AwaitingAgent,
        (false, _) => Status::Provisioning,
    };
    let (x, y) = req.canvas.unwrap_or((0.0, 0.0));
    let mut config = req.config.clone();
    if let Some(template) = &req.template {
        config.insert("template".to_owned(), json!(template));
    }
    Ok(Prepared {
        row: store::workspaces::NewWorkspace {
            id,
            name: req.name.trim().to_owned(),
            role: req.role.clone(),
            tier,
            status,
            runtime,
            url: if external { req.url.clone() } else { None },
            parent_id: req.parent_id,
            workspace_dir: req.workspace_dir.clone(),
            workspace_access: access.clone(),
            budget_limit: req.budget_limit,
            max_concurrent_tasks: req.max_concurrent_tasks.clamp(1, i32::MAX as i64) as i32,
            hibernation_idle_minutes: check_hibernation_idle_minutes(req.hibernation_idle_minutes)?,
            x,
            y,
        },
        secrets: sealed,
        config: Value::Object(config),
        access,
        external,
        model: req.model.clone(),
        announce_xy: req.announce_xy,
    })
}

/// Whether the host hands this workspace its credential at creation: its agent is not one the
/// host starts itself (external, or no runtime here), so nothing is ever open to whoever
/// registers first. Managed agents get theirs in `/configs/.auth_token` at provision.
fn gets_token_at_creation(svc: &Services, prepared: &Prepared) -> bool {
    prepared.external || svc.lifecycle.runtime().is_none()
}

/// Whether `row`'s agent connects by itself with a credential the operator hands it (external,
/// or no runtime here) rather than being started by the host with one.
pub fn agent_connects_itself(svc: &Services, row: &WorkspaceRow) -> bool {
    row.runtime == EXTERNAL_RUNTIME || svc.lifecycle.runtime().is_none()
}

/// Creates a workspace with its layout, config row and initial secrets in one transaction, then
/// announces it. A name already used by a live sibling gets a numbered suffix.
pub async fn create(svc: &Services, mut req: CreateRequest) -> Result<Created, WorkspaceError> {
    if let Some(template) = req.template.clone() {
        apply_template_defaults(svc, &template, &mut req).await?;
    }
    let mut prepared = prepare(svc, &req).await?;
    let base_name = prepared.row.name.clone();
    let mut attempt = 1;
    loop {
        match store::workspaces::insert(&svc.db, &prepared.row, &prepared.secrets, &prepared.config)
            .await
        {
            Ok(()) => break,
            Err(StoreError::Constraint(Constraint::WorkspaceNameTaken))
                if attempt < NAME_ATTEMPTS && !req.unique_name =>
            {
                attempt += 1;
                prepared.row.name = format!("{base_name} ({attempt})");
            }
            Err(err) => return Err(WorkspaceError::from_constraint(err)),
        }
    }

    let id = prepared.row.id;
    let auth_token = if gets_token_at_creation(svc, &prepared) {
        crate::auth::issue_workspace_token(&svc.db, id, crate::auth::Lifetime::Rotated)
            .await?
            .map(|t| t.plaintext)
    } else {
        None
    };
    let created = Created {
        id,
        status: prepared.row.status,
        awareness_namespace: format!("workspace:{id}"),
        workspace_access: prepared.access.clone(),
        external: prepared.external,
        auth_token,
    };
    announce(svc, vec![(prepared, req.seed_files)]).await;
    Ok(created)
}

/// Checks the template a creation names against the catalogue and, as the original did, takes
/// the runtime and model the request left empty from its `config.yaml` (`runtime`, then
/// `runtime_config.model` or the legacy `model`). Without a templates directory nothing is
/// checked (provisioning then delivers no template files).
async fn apply_template_defaults(
    svc: &Services,
    template: &str,
    req: &mut CreateRequest,
) -> Result<(), WorkspaceError> {
    use templates::TemplateError;
    let defaults = match templates::defaults(svc, template).await {
        Ok(Some(defaults)) => defaults,
        Ok(None) => return Ok(()),
        Err(TemplateError::NotFound) => return Err(WorkspaceError::Invalid("template not found")),
        Err(TemplateError::Invalid(_)) => return Err(WorkspaceError::Invalid("invalid template")),
        Err(err) => {
            tracing::warn!(%err, "reading a workspace template failed");
            return Err(WorkspaceError::Invalid("invalid template"));
        }
    };
    let empty = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
    if empty(&req.runtime) && !req.external {
        req.runtime = defaults.runtime;
    }
    if empty(&req.model) {
        req.model = defaults.model;
    }
    Ok(())
}

/// Stores many prepared workspaces (parents before children) with their layouts, config rows,
/// secrets and, where [`create`] would issue one, a workspace token, all in one transaction:
/// either every one of them exists afterwards or none does. Names are not suffixed: a live
/// sibling with the same name fails the whole batch with [`WorkspaceError::NameTaken`].
pub async fn store_many(svc: &Services, prepared: &[&Prepared]) -> Result<(), WorkspaceError> {
    let needed = prepared
        .iter()
        .filter(|p| gets_token_at_creation(svc, p))
        .count();
    let mut minted = crate::auth::mint_workspace_tokens(&svc.db, needed)
        .await?
        .into_iter()
        .map(|token| store::workspaces::NewToken {
            id: Uuid::new_v4(),
            hash: token.hash,
            prefix: token.prefix,
        });
    let tokens: Vec<Option<store::workspaces::NewToken>> = prepared
        .iter()
        .map(|p| {
            if gets_token_at_creation(svc, p) {
                minted.next()
            } else {
                None
            }
        })
        .collect();
    let items: Vec<store::workspaces::BatchItem<'_>> = prepared
        .iter()
        .zip(&tokens)
        .map(|(p, token)| store::workspaces::BatchItem {
            row: &p.row,
            config: &p.config,
            secrets: &p.secrets,
            token: token.as_ref(),
        })
        .collect();
    store::workspaces::insert_many(&svc.db, &items)
        .await
        .map_err(WorkspaceError::from_constraint)
}

/// Announces workspaces just stored, in order and in one events transaction, then schedules the
/// first provision of each one the host starts (with its seed files, when given).
pub async fn announce(svc: &Services, created: Vec<(Prepared, Option<crate::safefs::FileTree>)>) {
    let events = created
        .iter()
        .map(|(p, _)| {
            let ws = &p.row;
            match ws.status {
                Status::Online => (
                    names::WORKSPACE_ONLINE,
                    Some(ws.id),
                    json!({ "name": ws.name, "external": true, "url": ws.url }),
                ),
                Status::AwaitingAgent => (
                    names::WORKSPACE_AWAITING_AGENT,
                    Some(ws.id),
                    json!({ "name": ws.name, "external": true }),
                ),
                _ => {
                    let (x, y) = p.announce_xy.unwrap_or((ws.x, ws.y));
                    (
                        names::WORKSPACE_PROVISIONING,
                        Some(ws.id),
                        json!({ "name": ws.name, "tier": ws.tier, "runtime": ws.runtime, "parent_id": ws.parent_id, "x": x, "y": y }),
                    )
                }
            }
        })
        .collect();
    svc.events.emit_all(events).await;
    for (prepared, seed) in created {
        let ws = prepared.row;
        if ws.status == Status::Provisioning {
            lifecycle::schedule_provision(svc, ws.id, prepared.model, seed);
        }
        tracing::info!(workspace_id = %ws.id, status = ws.status.as_str(), "workspace created");
    }
}

/// A live workspace, or the reason there is none.
pub async fn get_live(svc: &Services, id: Uuid) -> Result<WorkspaceRow, WorkspaceError> {
    match store::workspaces::get(&svc.db, id).await? {
        None => Err(WorkspaceError::NotFound),
        Some(row) if row.status == Status::Removed => Err(WorkspaceError::Removed(Box::new(row))),
        Some(row) => Ok(row),
    }
}

/// [`get_live`] from the routing table ([`crate::agents::routes`]) instead of the database: for
/// the paths every call takes (a caller's identity, a delegation's two ends).
pub async fn get_live_routed(
    svc: &Services,
    id: Uuid,
) -> Result<std::sync::Arc<WorkspaceRow>, WorkspaceError> {
    match svc.a2a.routes().row(&svc.db, id).await? {
        None => Err(WorkspaceError::NotFound),
        Some(row) if row.status == Status::Removed => {
            Err(WorkspaceError::Removed(Box::new((*row).clone())))
        }
        Some(row) => Ok(row),
    }
}

/// A validated PATCH: `None` leaves the field alone.
#[derive(Debug, Clone, Default)]
pub struct PatchRequest {
    pub name: Option<String>,
    pub role: Option<Option<String>>,
    pub tier: Option<i64>,
    pub runtime: Option<String>,
    pub parent_id: Option<Option<Uuid>>,
    pub position: Option<(f64, f64)>,
    pub collapsed: Option<bool>,
    pub workspace_dir: Option<Option<String>>,
    /// `canary` (updated first in a plugin rollout) or `production`.
    pub update_tier: Option<String>,
    /// `Some(None)` clears it (never hibernate).
    pub hibernation_idle_minutes: Option<Option<i64>>,
}

/// What a PATCH changed that the caller should know.
#[derive(Debug, Clone, Copy)]
pub struct Patched {
    pub needs_restart: bool,
}

/// Applies a PATCH in one transaction; re-parenting is refused when it would create a cycle.
pub async fn patch(svc: &Services, id: Uuid, req: PatchRequest) -> Result<Patched, WorkspaceError> {
    get_live(svc, id).await?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    if let Some(Some(role)) = &req.role {
        check_text(role, 1000, true)?;
    }
    if let Some(runtime) = &req.runtime {
        check_text(runtime, 100, false)?;
        if runtime.trim().is_empty() {
            return Err(WorkspaceError::Invalid("runtime must not be empty"));
        }
    }
    let tier = req.tier.map(check_tier).transpose()?;
    let hibernation_idle_minutes = req
        .hibernation_idle_minutes
        .map(check_hibernation_idle_minutes)
        .transpose()?;
    if req
        .update_tier
        .as_deref()
        .is_some_and(|t| !matches!(t, "canary" | "production"))
    {
        return Err(WorkspaceError::Invalid(
            "update_tier must be canary or production",
        ));
    }
    if let Some(Some(dir)) = &req.workspace_dir {
        check_workspace_dir(dir)?;
        check_workspace_dir_against_host(dir, &svc.config.data_dir)?;
    }
    if let Some(Some(parent)) = req.parent_id {
        if parent == id {
            return Err(WorkspaceError::Cycle);
        }
        match store::workspaces::get(&svc.db, parent).await? {
            Some(row) if row.status != Status::Removed => {}
            _ => return Err(WorkspaceError::ParentNotFound),
        }
        // The new parent must not sit below the workspace being moved.
        let chain = store::workspaces::ancestry(&svc.db, parent, i64::from(u16::MAX)).await?;
        if chain.iter().any(|(ancestor, _)| *ancestor == id) {
            return Err(WorkspaceError::Cycle);
        }
    }
    let store_patch = store::workspaces::WorkspacePatch {
        name: req.name.as_ref().map(|n| n.trim().to_owned()),
        role: req.role.clone(),
        tier,
        runtime: req.runtime.clone(),
        parent_id: req.parent_id,
        workspace_dir: req.workspace_dir.clone(),
        position: req.position,
        collapsed: req.collapsed,
        update_tier: req.update_tier.clone(),
        hibernation_idle_minutes,
    };
    if !store::workspaces::update(&svc.db, id, &store_patch)
        .await
        .map_err(WorkspaceError::from_constraint)?
    {
        return Err(WorkspaceError::NotFound);
    }
    svc.events.invalidate(Invalidation::Workspace(id));
    let mut changed = serde_json::Map::new();
    if let Some(name) = &store_patch.name {
        changed.insert("name".into(), json!(name));
    }
    if let Some(role) = &store_patch.role {
        changed.insert("role".into(), json!(role));
    }
    if let Some(tier) = tier {
        changed.insert("tier".into(), json!(tier));
    }
    if let Some(update_tier) = &store_patch.update_tier {
        changed.insert("update_tier".into(), json!(update_tier));
    }
    if let Some(minutes) = store_patch.hibernation_idle_minutes {
        changed.insert("hibernation_idle_minutes".into(), json!(minutes));
    }
    if let Some(runtime) = &store_patch.runtime {
        changed.insert("runtime".into(), json!(runtime));
    }
    if let Some(parent) = store_patch.parent_id {
        changed.insert("parent_id".into(), json!(parent));
    }
    if !changed.is_empty() {
        svc.events
            .emit(names::WORKSPACE_UPDATED, Some(id), Value::Object(changed))
            .await;
    }
    // What the agent runs with changed (limits, image, mounts): the restart policy decides.
    let config_changed =
        tier.is_some() || store_patch.runtime.is_some() || req.workspace_dir.is_some();
    if config_changed {
        lifecycle::request_restart(svc, id, crate::extensions::types::Trigger::ConfigChanged)
            .await?;
    }
    Ok(Patched {
        needs_restart: req.workspace_dir.is_some(),
    })
}

/// What a cascade delete touched.
#[derive(Debug, Clone)]
pub struct CascadeOutcome {
    /// Every id in the subtree, root first.
    pub subtree: Vec<Uuid>,
    /// Descendants (not counting the root) that this call moved to `removed`.
    pub descendants_removed: usize,
    /// Whether the rows were hard-deleted.
    pub purged: bool,
    /// Workspaces whose agent could not be stopped and removed (retrying is safe).
    pub stop_failures: Vec<Uuid>,
}

/// Removes `root` and its whole subtree: the database is marked first (status, layout, tokens),
/// then each removal is announced, leaves before the root; with `purge` the rows are then
/// deleted. Calling it again on a removed subtree is harmless. Later callers (org reconcile,
/// runtimes stopping containers) build on this one function.
pub async fn cascade_delete(
    svc: &Services,
    root: Uuid,
    purge: bool,
) -> Result<CascadeOutcome, WorkspaceError> {
    if store::workspaces::get(&svc.db, root).await?.is_none() {
        return Err(WorkspaceError::NotFound);
    }
    let subtree = store::workspaces::subtree(&svc.db, root).await?;
    let changed = store::workspaces::mark_removed(&svc.db, &subtree).await?;
    // A removed workspace's key-value memory and checkpoints go at once (nothing can read them
    // any more); a purge would take them with the rows anyway.
    store::kv::delete_for_workspaces(&svc.db, &subtree).await?;
    store::checkpoints::delete_for_workspaces(&svc.db, &subtree).await?;
    // At once: the announcements wait until the agents are stopped, and until then no call
    // may be routed to them (nor any of their tokens accepted) from memory.
    for id in &changed {
        svc.events.invalidate(Invalidation::Workspace(*id));
    }
    let changed: std::collections::HashSet<Uuid> = changed.into_iter().collect();
    let descendants_removed = changed.iter().filter(|id| **id != root).count();
    // Leaves before the root, so a subscriber never sees a child outlive its removed parent.
    let mut announcements: Vec<(&str, Option<Uuid>, Value)> = subtree
        .iter()
        .rev()
        .filter(|id| **id != root && changed.contains(id))
        .map(|id| (names::WORKSPACE_REMOVED, Some(*id), json!({})))
        .collect();
    if changed.contains(&root) {
        announcements.push((
            names::WORKSPACE_REMOVED,
            Some(root),
            json!({ "cascade_deleted": descendants_removed }),
        ));
    }
    // The database is marked first, so nothing restarts what is being stopped.
    let stop_failures = lifecycle::remove_agents(svc, &subtree).await;
    svc.events.emit_all(announcements).await;
    if purge && stop_failures.is_empty() {
        store::workspaces::purge(&svc.db, &subtree).await?;
    }
    tracing::info!(workspace_id = %root, subtree = subtree.len(), purge, "workspace subtree removed");
    Ok(CascadeOutcome {
        subtree,
        descendants_removed,
        purged: purge && stop_failures.is_empty(),
        stop_failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_or_template_characters_are_refused() {
        assert!(check_name("Dev Lead").is_ok());
        for bad in [
            "",
            "  ",
            "a\nb",
            "a\rb",
            "a\u{0}b",
            "a{b",
            "a|b",
            "a!b",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tier_zero_means_the_default_and_out_of_range_is_refused() {
        assert_eq!(check_tier(0).unwrap(), 3);
        assert_eq!(check_tier(4).unwrap(), 4);
        assert!(check_tier(5).is_err() && check_tier(-1).is_err());
    }

    #[test]
    fn workspace_dir_must_be_absolute_normalised_and_outside_system_directories() {
        assert!(check_workspace_dir("/home/me/project").is_ok());
        assert!(check_workspace_dir("/srv/agents/qa").is_ok());
        for bad in [
            "relative",
            "/",
            "//",
            "/etc",
            "/usr/lib/x",
            "/home/../etc",
            "/var/lib",
            "/root/.ssh",
            "/run/docker.sock",
            "/home",
            "/tmp",
            "/home/me/",
            "/home//me",
            "/home/./me",
            "/home/me/..",
        ] {
            assert!(check_workspace_dir(bad).is_err(), "{bad}");
        }
        assert!(
            check_workspace_dir("/variable").is_ok(),
            "prefix match is by path component"
        );
    }

    #[test]
    fn workspace_dir_may_neither_hold_nor_sit_in_the_hosts_data() {
        let data = std::path::Path::new("/srv/molecule/data");
        assert!(check_workspace_dir_against_host("/srv/agents", data).is_ok());
        for bad in [
            "/srv",
            "/srv/molecule",
            "/srv/molecule/data",
            "/srv/molecule/data/x",
        ] {
            assert!(
                check_workspace_dir_against_host(bad, data).is_err(),
                "{bad}"
            );
        }
    }
}
