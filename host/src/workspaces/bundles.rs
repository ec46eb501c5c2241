//! Bundles: a workspace and its whole subtree as one portable JSON document (`.bundle.json`),
//! and that document imported again as a new tree.
//!
//! A bundle carries what makes each agent what it is: name, role, tier, runtime, model, system
//! prompt, skills with their files, the other `/configs` files (its `config.yaml` with tools and
//! prompt files among them), the config row, the agent card, budget and limits, and the names of
//! its secrets, never their values (an import says which ones to set). Files are read through
//! the runtime's archive of `/configs` (the running agent's, or its stored files), text only;
//! the host's token file, dot directories and installed plugins (`plugins/`, which come from
//! their sources) stay out.
//!
//! An import is checked whole before anything is written (schema, names, sibling duplicates,
//! paths, sizes, depth), then every row goes in one transaction ([`super::store_many`]) and the
//! agents are provisioned with their files after the commit: a refused bundle leaves nothing,
//! and a bundle imported twice is two trees (the second root's name gets a " (2)" suffix).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::files::{MAX_FILE_BYTES, MAX_REPLACE_FILES};
use super::{CreateRequest, Prepared, WorkspaceError, announce, get_live, prepare, store_many};
use crate::runtime::{CONFIGS_ROOT, RuntimeError};
use crate::safefs::{FileTree, RelPath};
use crate::secrets;
use crate::services::Services;
use crate::store::{self, workspaces::Status};

/// The `schema` every bundle carries.
pub const SCHEMA: &str = "molecule.bundle/1";
/// The deepest tree a bundle may hold (the root is depth 1).
pub const MAX_DEPTH: usize = 16;
/// The most workspaces one bundle may hold.
pub const MAX_WORKSPACES: usize = 500;
/// The largest bundle accepted, in bytes of JSON.
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;
/// Suffixes tried when the root's name is taken under its new parent.
const NAME_ATTEMPTS: usize = 20;
/// The file a system prompt lives in.
const SYSTEM_PROMPT: &str = "system-prompt.md";

/// A bundle: its root workspace, with the document's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub schema: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub root: Node,
}

/// One workspace of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The agent card's description, when it has one (informative; not imported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "default_tier")]
    pub tier: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `system-prompt.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// `skills/<id>/…`, each with its files (paths relative to the skill's directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<Skill>,
    /// Every other file of `/configs` (relative paths).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// The workspace's config row.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    /// Names of its secrets (values never travel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_card: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_limit: Option<i64>,
    #[serde(default)]
    pub max_concurrent_tasks: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernation_idle_minutes: Option<i64>,
    /// Its position relative to the bundle's root.
    #[serde(default)]
    pub x: f64,
    #[serde(default)]
    pub y: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_workspaces: Vec<Node>,
}

fn default_tier() -> i64 {
    1
}

/// A skill directory and its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skill {
    pub id: String,
    pub files: BTreeMap<String, String>,
}

/// Why a bundle could not be exported or imported.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is refused whole; the message names what is wrong and where.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The workspace's files could not be read.
    #[error("reading the files of {name}: {source}")]
    Files { name: String, source: RuntimeError },
}

impl From<store::StoreError> for BundleError {
    fn from(err: store::StoreError) -> Self {
        BundleError::Workspace(WorkspaceError::Store(err))
    }
}

/// Exports `root` and its live subtree.
pub async fn export(svc: &Services, root: Uuid) -> Result<Bundle, BundleError> {
    let root_row = get_live(svc, root).await?;
    let mut rows = HashMap::new();
    for id in store::workspaces::subtree(&svc.db, root).await? {
        if let Some(row) = store::workspaces::get(&svc.db, id).await?
            && row.status != Status::Removed
        {
            rows.insert(id, row);
        }
    }
    let mut children: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for row in rows.values() {
        if row.id != root
            && let Some(parent) = row.parent_id
        {
            children.entry(parent).or_default().push(row.id);
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| rows[a].name.cmp(&rows[b].name));
    }
    let origin = (root_row.x, root_row.y);
    let node = export_node(svc, root, &rows, &children, origin, 1).await?;
    Ok(Bundle {
        schema: SCHEMA.to_owned(),
        author: None,
        version: None,
        exported_at: Some(Utc::now()),
        root: node,
    })
}

async fn export_node(
    svc: &Services,
    id: Uuid,
    rows: &HashMap<Uuid, store::workspaces::WorkspaceRow>,
    children: &HashMap<Uuid, Vec<Uuid>>,
    origin: (f64, f64),
    depth: usize,
) -> Result<Node, BundleError> {
    let row = &rows[&id];
    if depth > MAX_DEPTH {
        return Err(BundleError::Invalid(format!(
            "workspace {:?} is deeper than {MAX_DEPTH} levels: a bundle cannot hold it",
            row.name
        )));
    }
    let mut secret_keys: Vec<String> = store::secrets::list_workspace(&svc.db, id)
        .await?
        .into_iter()
        .map(|s| s.key)
        .filter(|k| k != secrets::MODEL_KEY)
        .collect();
    secret_keys.sort();
    let model = secrets::get_workspace_value(&svc.db, &svc.cipher, id, secrets::MODEL_KEY)
        .await?
        .and_then(Result::ok);
    let mut config = match store::workspace_config::get(&svc.db, id).await? {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    config.remove("template");
    let (system_prompt, skills, files) = split_files(read_configs(svc, row).await?);
    let mut sub_workspaces = Vec::new();
    for child in children.get(&id).into_iter().flatten() {
        sub_workspaces
            .push(Box::pin(export_node(svc, *child, rows, children, origin, depth + 1)).await?);
    }
    Ok(Node {
        name: row.name.clone(),
        role: row.role.clone(),
        description: row
            .agent_card
            .as_ref()
            .and_then(|c| c.get("description"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        tier: i64::from(row.tier),
        runtime: Some(row.runtime.clone()),
        model,
        system_prompt,
        skills,
        files,
        config,
        secret_keys,
        agent_card: row.agent_card.clone(),
        budget_limit: row.budget_limit,
        max_concurrent_tasks: i64::from(row.max_concurrent_tasks),
        hibernation_idle_minutes: row.hibernation_idle_minutes.map(i64::from),
        x: row.x - origin.0,
        y: row.y - origin.1,
        sub_workspaces,
    })
}

/// The text files of the workspace's `/configs` that a bundle carries, by relative path.
async fn read_configs(
    svc: &Services,
    row: &store::workspaces::WorkspaceRow,
) -> Result<BTreeMap<String, String>, BundleError> {
    let Some(runtime) = svc.lifecycle.runtime() else {
        return Ok(BTreeMap::new());
    };
    let entries = match runtime.archive(row.id, CONFIGS_ROOT, None).await {
        Ok(entries) => entries,
        // Never provisioned: no files yet.
        Err(RuntimeError::NotFound) => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(BundleError::Files {
                name: row.name.clone(),
                source,
            });
        }
    };
    Ok(entries
        .into_iter()
        .filter_map(|(path, data)| {
            let data = data?;
            carried(path.as_str()).then_some(())?;
            String::from_utf8(data)
                .ok()
                .map(|text| (path.as_str().to_owned(), text))
        })
        .collect())
}

/// Whether a `/configs` path travels in a bundle: not the host's token file, nothing under a
/// dot directory or dot file (install staging, the token), not installed plugins, not chat
/// attachments (conversation data, not what the agent is).
fn carried(path: &str) -> bool {
    !path.split('/').any(|part| part.starts_with('.'))
        && !matches!(
            path.split('/').next(),
            Some("plugins" | super::uploads::UPLOADS_DIR)
        )
}

/// Splits `/configs` files into the system prompt, the skills and the rest.
fn split_files(
    mut files: BTreeMap<String, String>,
) -> (Option<String>, Vec<Skill>, BTreeMap<String, String>) {
    let system_prompt = files.remove(SYSTEM_PROMPT);
    let mut skills: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    files.retain(
        |path, text| match path.strip_prefix("skills/").and_then(|p| p.split_once('/')) {
            Some((id, rest)) => {
                skills
                    .entry(id.to_owned())
                    .or_default()
                    .insert(rest.to_owned(), std::mem::take(text));
                false
            }
            None => true,
        },
    );
    let skills = skills
        .into_iter()
        .map(|(id, files)| Skill { id, files })
        .collect();
    (system_prompt, skills, files)
}

/// What an import created.
#[derive(Debug, Clone)]
pub struct Imported {
    pub root_id: Uuid,
    /// Every workspace created, root first: `(id, name)`.
    pub workspaces: Vec<(Uuid, String)>,
    /// Secrets the bundle's workspaces had, which the operator should set again: by workspace
    /// id, the key names.
    pub missing_secrets: BTreeMap<Uuid, Vec<String>>,
}

/// A node checked and turned into what creation needs, with its files.
struct Planned {
    request: CreateRequest,
    files: FileTree,
    secret_keys: Vec<String>,
    /// Index of its parent in the plan (`None`: the root).
    parent: Option<usize>,
}

/// Checks `bundle` whole and creates its tree under `parent` (or as a root).
pub async fn import(
    svc: &Services,
    bundle: Bundle,
    parent: Option<Uuid>,
) -> Result<Imported, BundleError> {
    if bundle.schema != SCHEMA {
        return Err(BundleError::Invalid(format!(
            "schema must be {SCHEMA:?} (got {:?})",
            bundle.schema
        )));
    }
    let mut plan = Vec::new();
    plan_node(bundle.root, None, 1, &mut plan)?;
    let origin = match parent {
        Some(parent) => {
            let row = get_live(svc, parent).await.map_err(|err| match err {
                WorkspaceError::NotFound | WorkspaceError::Removed(_) => {
                    BundleError::Workspace(WorkspaceError::ParentNotFound)
                }
                other => BundleError::Workspace(other),
            })?;
            (row.x, row.y + 160.0)
        }
        None => (0.0, 0.0),
    };
    let mut prepared: Vec<Prepared> = Vec::with_capacity(plan.len());
    for (i, item) in plan.iter_mut().enumerate() {
        let (x, y) = item.request.canvas.unwrap_or((0.0, 0.0));
        item.request.canvas = Some((origin.0 + x, origin.1 + y));
        let mut ready = prepare(svc, &item.request).await?;
        ready.row.parent_id = match item.parent {
            Some(index) => Some(prepared[index].row.id),
            None => parent,
        };
        debug_assert_eq!(prepared.len(), i);
        prepared.push(ready);
    }
    let base = prepared[0].row.name.clone();
    let mut attempt = 1;
    loop {
        match store_many(svc, &prepared.iter().collect::<Vec<_>>()).await {
            Ok(()) => break,
            // Another tree (or this bundle imported before) holds the name: a copy.
            Err(WorkspaceError::NameTaken) if attempt < NAME_ATTEMPTS => {
                attempt += 1;
                prepared[0].row.name = format!("{base} ({attempt})");
            }
            Err(err) => return Err(err.into()),
        }
    }
    let imported = Imported {
        root_id: prepared[0].row.id,
        workspaces: prepared
            .iter()
            .map(|p| (p.row.id, p.row.name.clone()))
            .collect(),
        missing_secrets: prepared
            .iter()
            .zip(&plan)
            .filter(|(_, item)| !item.secret_keys.is_empty())
            .map(|(p, item)| (p.row.id, item.secret_keys.clone()))
            .collect(),
    };
    let created = prepared
        .into_iter()
        .zip(plan)
        .map(|(p, item)| (p, (!item.files.is_empty()).then_some(item.files)))
        .collect();
    announce(svc, created).await;
    Ok(imported)
}

/// Checks `node` (at `depth`) and its subtree and appends them to `plan`, parents first.
fn plan_node(
    node: Node,
    parent: Option<usize>,
    depth: usize,
    plan: &mut Vec<Planned>,
) -> Result<(), BundleError> {
    let at = |what: String| BundleError::Invalid(format!("workspace {:?}: {what}", node.name));
    if depth > MAX_DEPTH {
        return Err(at(format!("deeper than {MAX_DEPTH} levels")));
    }
    if plan.len() >= MAX_WORKSPACES {
        return Err(BundleError::Invalid(format!(
            "more than {MAX_WORKSPACES} workspaces"
        )));
    }
    let mut files = FileTree::new();
    let mut add = |path: String, text: String| -> Result<(), BundleError> {
        let rel = RelPath::parse(&path)
            .ok()
            .filter(|p| carried(p.as_str()))
            .ok_or_else(|| {
                at(format!(
                    "file {path:?} is not a relative path inside /configs"
                ))
            })?;
        if text.len() > MAX_FILE_BYTES {
            return Err(at(format!("file {path:?} is over 1 MiB")));
        }
        if files.contains(rel.as_str()) {
            return Err(at(format!("file {path:?} appears twice")));
        }
        files.insert(rel, text, 0o644);
        Ok(())
    };
    if let Some(prompt) = node.system_prompt.clone() {
        add(SYSTEM_PROMPT.to_owned(), prompt)?;
    }
    for skill in &node.skills {
        if skill.id.is_empty() || skill.id.contains('/') {
            return Err(at(format!(
                "skill id {:?} must be one path segment",
                skill.id
            )));
        }
        for (path, text) in &skill.files {
            add(format!("skills/{}/{path}", skill.id), text.clone())?;
        }
    }
    for (path, text) in &node.files {
        add(path.clone(), text.clone())?;
    }
    if files.len() > MAX_REPLACE_FILES {
        return Err(at(format!("more than {MAX_REPLACE_FILES} files")));
    }
    let mut seen = BTreeSet::new();
    for child in &node.sub_workspaces {
        if !seen.insert(child.name.as_str()) {
            return Err(at(format!("two sub-workspaces are named {:?}", child.name)));
        }
    }
    let request = CreateRequest {
        name: node.name.clone(),
        role: node.role.clone(),
        tier: node.tier,
        model: node.model.clone(),
        runtime: node.runtime.clone().filter(|r| !r.is_empty()),
        budget_limit: node.budget_limit,
        max_concurrent_tasks: node.max_concurrent_tasks,
        hibernation_idle_minutes: node.hibernation_idle_minutes,
        canvas: Some((node.x, node.y)),
        unique_name: true,
        config: node.config.clone(),
        ..CreateRequest::default()
    };
    super::check(&request).map_err(|err| at(err.to_string()))?;
    let index = plan.len();
    plan.push(Planned {
        request,
        files,
        secret_keys: node.secret_keys.clone(),
        parent,
    });
    for child in node.sub_workspaces {
        plan_node(child, Some(index), depth + 1, plan)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
    }

    #[test]
    fn configs_files_split_into_prompt_skills_and_the_rest() {
        let files: BTreeMap<String, String> = [
            ("system-prompt.md", "Be brief."),
            ("skills/triage/SKILL.md", "---\nname: Triage\n---"),
            ("skills/triage/notes/a.md", "a"),
            ("config.yaml", "model: m"),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .collect();
        let (prompt, skills, rest) = split_files(files);
        assert_eq!(prompt.as_deref(), Some("Be brief."));
        assert_eq!(skills.len(), 1);
        assert_eq!(skills[0].id, "triage");
        assert_eq!(
            skills[0].files.keys().collect::<Vec<_>>(),
            ["SKILL.md", "notes/a.md"]
        );
        assert_eq!(rest.keys().collect::<Vec<_>>(), ["config.yaml"]);
    }

    #[test]
    fn tokens_dot_directories_and_plugins_never_travel() {
        for kept in ["config.yaml", "skills/a/SKILL.md", "prompts/x.md"] {
            assert!(carried(kept), "{kept}");
        }
        for left in [
            ".auth_token",
            ".staging/x",
            "skills/.previous/a",
            "plugins/kit/rule.md",
        ] {
            assert!(!carried(left), "{left}");
        }
    }

    #[test]
    fn a_bad_bundle_is_refused_naming_the_workspace_and_the_problem() {
        let refused = |root: Node| {
            let mut plan = Vec::new();
            match plan_node(root, None, 1, &mut plan) {
                Err(BundleError::Invalid(message)) => message,
                other => panic!("not refused: {:?}", other.map(|()| plan.len())),
            }
        };
        let mut escape = node("Lead");
        escape.files.insert("../etc/passwd".into(), "x".into());
        assert!(refused(escape).contains("\"../etc/passwd\" is not a relative path"));
        let mut token = node("Lead");
        token.files.insert(".auth_token".into(), "x".into());
        assert!(refused(token).contains(".auth_token"));
        let mut twins = node("Lead");
        twins.sub_workspaces = vec![node("Kid"), node("Kid")];
        assert!(refused(twins).contains("two sub-workspaces are named \"Kid\""));
        let mut deep = node("L17");
        for level in (1..=16).rev() {
            let mut parent = node(&format!("L{level}"));
            parent.sub_workspaces = vec![deep];
            deep = parent;
        }
        assert!(refused(deep).contains("workspace \"L17\": deeper than 16 levels"));
        let mut big = node("Lead");
        big.files
            .insert("big.md".into(), "x".repeat(MAX_FILE_BYTES + 1));
        assert!(refused(big).contains("over 1 MiB"));
        let mut skill = node("Lead");
        skill.skills = vec![Skill {
            id: "a/b".into(),
            files: BTreeMap::new(),
        }];
        assert!(refused(skill).contains("one path segment"));
        assert!(refused(node("")).starts_with("workspace \"\":"));
    }

    #[test]
    fn a_sixteen_level_tree_is_accepted_parents_first() {
        let mut deep = node("L16");
        for level in (1..=15).rev() {
            let mut parent = node(&format!("L{level}"));
            parent.sub_workspaces = vec![deep];
            deep = parent;
        }
        let mut plan = Vec::new();
        plan_node(deep, None, 1, &mut plan).unwrap();
        assert_eq!(plan.len(), 16);
        assert_eq!(plan[0].parent, None);
        assert!(
            plan.iter()
                .skip(1)
                .enumerate()
                .all(|(i, p)| p.parent == Some(i))
        );
    }
}
