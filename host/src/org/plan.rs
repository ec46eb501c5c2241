//! From a typed template to a plan: defaults applied, `spawning: false` subtrees dropped, canvas
//! positions laid out, prompts, `.env` layers, persona env and file trees read, and every field
//! checked — all before anything is created, so a bad entry refuses the whole import.
//!
//! Every path is resolved in the root of the content that named it: the org root for the org's
//! own files, the cache entry for `!external` content (its mappings carry
//! [`template::ORIGIN_KEY`]), so fetched content can neither climb out of its entry nor name the
//! org's other files.

use std::ops::Deref;
use std::path::PathBuf;

use serde_yaml_ng::{Mapping, Value};

use super::env::{self, MissingWorkspaceEnv};
use super::template::{self, EnvRequirement, OrgTemplate, OrgWorkspace, root_name};
use super::{OrgError, RootDir};
use crate::safefs::{FileTree, RelPath, SafeFsError};
use crate::workspaces::{self, CreateRequest};

/// The default tier of an imported workspace.
pub const DEFAULT_TIER: i64 = 2;
/// The default runtime of an imported workspace.
pub const DEFAULT_RUNTIME: &str = "langgraph";
/// Prompt files larger than this are refused.
const MAX_PROMPT_BYTES: u64 = 256 * 1024;
/// Canvas grid: child cells, gutter, parent header and side padding, in pixels.
const CELL_W: f64 = 240.0;
const CELL_H: f64 = 130.0;
const GUTTER: f64 = 14.0;
const HEADER: f64 = 130.0;
const PAD: f64 = 16.0;
/// Space between root subtrees laid out side by side.
const ROOT_GAP: f64 = 60.0;

/// What the plan needs from the host beyond the org root.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Workspace templates (`<dir>/<template>`), when configured.
    pub templates_dir: Option<PathBuf>,
    /// The local plugin registry plugins are copied from.
    pub plugins_registry: PathBuf,
    /// Persona env files: `<persona_root>/<files_dir>/env`.
    pub persona_root: PathBuf,
    /// `${VAR}` lookups that fall through the `.env` layers.
    pub host_env: fn(&str) -> Option<String>,
}

/// One workspace to create, in creation order (parents before children).
#[derive(Debug, Clone)]
pub struct PlannedWorkspace {
    /// Index of the parent in [`Plan::workspaces`].
    pub parent: Option<usize>,
    pub files_dir: Option<String>,
    /// The creation request (parent id filled in at creation time).
    pub request: CreateRequest,
    /// Requirements of this workspace alone.
    pub required_env: Vec<EnvRequirement>,
    /// Plugins named but not found in the registry.
    pub plugins_missing: Vec<String>,
    /// Its template schedules, checked (expression, zone, prompt read).
    pub schedules: Vec<crate::schedules::Definition>,
    /// Its `initial_memories` (or the defaults'), checked and redacted.
    pub memories: Vec<crate::memories::Seed>,
}

/// A whole import, ready to execute.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub workspaces: Vec<PlannedWorkspace>,
    /// Template-level requirements.
    pub required_env: Vec<EnvRequirement>,
    /// Keys of `<org>/.env` (they reach every workspace).
    pub org_env_keys: Vec<String>,
    /// `global_memories`, checked and redacted, for the first root.
    pub global_memories: Vec<crate::memories::Seed>,
}

impl Plan {
    /// Which requirements no global secret (`global`) or the workspace's own `.env` layers meet.
    pub fn missing_env(
        &self,
        global: &dyn Fn(&str) -> bool,
    ) -> (Vec<String>, Vec<MissingWorkspaceEnv>) {
        let org_level = env::unsatisfied(&self.required_env, |name| {
            global(name) || self.org_env_keys.iter().any(|k| k == name)
        });
        let per_workspace = self
            .workspaces
            .iter()
            .filter_map(|w| {
                let unsatisfied = env::unsatisfied(&w.required_env, |name| {
                    global(name) || w.request.secrets.iter().any(|(k, _)| k == name)
                });
                (!unsatisfied.is_empty()).then(|| MissingWorkspaceEnv {
                    workspace: w.request.name.clone(),
                    files_dir: w.files_dir.clone(),
                    unsatisfied_env: unsatisfied,
                })
            })
            .collect();
        (org_level, per_workspace)
    }

    /// Every requirement of the template and its workspaces, normalised.
    pub fn all_required(&self) -> Vec<EnvRequirement> {
        let mut all = self.required_env.clone();
        for w in &self.workspaces {
            all.extend(w.required_env.iter().cloned());
        }
        env::normalise(&all)
    }
}

/// Builds the plan. Reads only through `root` and the cache entries under it (and the persona
/// and registry roots).
pub fn build(
    template: &OrgTemplate,
    root: &RootDir,
    settings: &PlanSettings,
) -> Result<Plan, OrgError> {
    let org_env = read_env(root, &RelPath::parse(".env").expect("static path"), None)?;
    let registry = RootDir::open(&settings.plugins_registry).ok();
    let personas = RootDir::open(&settings.persona_root).ok();
    let mut planner = Planner {
        template,
        root,
        settings,
        org_env: &org_env,
        registry,
        personas,
        plan: Plan {
            required_env: template.required_env.clone(),
            org_env_keys: org_env.iter().map(|(k, _)| k.clone()).collect(),
            ..Plan::default()
        },
    };
    for (i, memory) in template.global_memories.iter().enumerate() {
        let seed = crate::memories::check_seed(&memory.content, Some("GLOBAL"), true)
            .map_err(|why| OrgError::Invalid(format!("global_memories[{i}]: {why}")))?;
        planner.plan.global_memories.push(seed);
    }
    let mut next_x = 0.0;
    for entry in template.workspaces.iter().filter(|w| w.spawning) {
        let (width, _) = size(entry);
        let at = entry.canvas.map_or((next_x, 0.0), |c| (c.x, c.y));
        planner.add(entry, None, at, None)?;
        next_x = next_x.max(at.0 + width + ROOT_GAP);
    }
    Ok(planner.plan)
}

/// The canvas size of an entry's card with its spawning children laid out inside it.
fn size(entry: &OrgWorkspace) -> (f64, f64) {
    let children: Vec<(f64, f64)> = entry
        .children
        .iter()
        .filter(|c| c.spawning)
        .map(size)
        .collect();
    if children.is_empty() {
        return (CELL_W, CELL_H);
    }
    let (columns, rows) = grid(&children);
    let width = PAD * 2.0 + columns.iter().sum::<f64>() + GUTTER * (columns.len() - 1) as f64;
    let height = HEADER + rows.iter().sum::<f64>() + GUTTER * (rows.len() - 1) as f64 + PAD;
    (width, height)
}

/// Column widths and row heights of a two-column grid of `cells`.
fn grid(cells: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    let mut columns = vec![0.0f64; cells.len().min(2)];
    let mut rows = vec![0.0f64; cells.len().div_ceil(2)];
    for (i, (w, h)) in cells.iter().enumerate() {
        columns[i % 2] = columns[i % 2].max(*w);
        rows[i / 2] = rows[i / 2].max(*h);
    }
    (columns, rows)
}

/// Positions of the spawning children of `entry`, relative to it.
fn child_offsets(entry: &OrgWorkspace) -> Vec<(f64, f64)> {
    let cells: Vec<(f64, f64)> = entry
        .children
        .iter()
        .filter(|c| c.spawning)
        .map(size)
        .collect();
    let (columns, rows) = grid(&cells);
    (0..cells.len())
        .map(|i| {
            let x = PAD + if i % 2 == 1 { columns[0] + GUTTER } else { 0.0 };
            let y = HEADER + rows[..i / 2].iter().map(|h| h + GUTTER).sum::<f64>();
            (x, y)
        })
        .collect()
}

/// A path a template names, with the root it resolves in.
#[derive(Debug, Clone)]
struct Located {
    /// The `!external` cache entry (relative to the org root); `None` for the org root.
    origin: Option<RelPath>,
    path: RelPath,
}

impl Located {
    /// The path relative to the org root, as reported (`.external-cache/<repo>/<sha>/<path>`
    /// for external content).
    fn shown(&self) -> String {
        match &self.origin {
            None => self.path.to_string(),
            Some(origin) => format!("{origin}/{}", self.path),
        }
    }
}

/// A root paths resolve in: the org root, or one cache entry opened as a root of its own.
enum Root<'a> {
    Org(&'a RootDir),
    Entry(RootDir),
}

impl Deref for Root<'_> {
    type Target = RootDir;
    fn deref(&self) -> &RootDir {
        match self {
            Root::Org(root) => root,
            Root::Entry(root) => root,
        }
    }
}

/// The origin a mapping carries. Only expansion writes it (content's own is removed as it is
/// read), so an invalid one is a bug, not a user error.
fn origin_of(raw: Option<&str>) -> Result<Option<RelPath>, OrgError> {
    raw.map(|raw| {
        RelPath::parse(raw).map_err(|_| {
            tracing::error!(
                origin = raw,
                "an expanded template carries an invalid origin"
            );
            OrgError::Cache("the template's external origin is invalid".to_owned())
        })
    })
    .transpose()
}

struct Planner<'a> {
    template: &'a OrgTemplate,
    root: &'a RootDir,
    settings: &'a PlanSettings,
    org_env: &'a [(String, String)],
    registry: Option<RootDir>,
    personas: Option<RootDir>,
    plan: Plan,
}

impl Planner<'_> {
    /// Plans `entry` at absolute position `at` (relative `rel` to its parent), then its children.
    fn add(
        &mut self,
        entry: &OrgWorkspace,
        parent: Option<usize>,
        at: (f64, f64),
        rel: Option<(f64, f64)>,
    ) -> Result<(), OrgError> {
        let planned = self.plan_one(entry, parent, at, rel)?;
        self.plan.workspaces.push(planned);
        let index = self.plan.workspaces.len() - 1;
        let offsets = child_offsets(entry);
        for (child, offset) in entry.children.iter().filter(|c| c.spawning).zip(offsets) {
            let (child_at, child_rel) = match child.canvas {
                Some(c) => ((c.x, c.y), (c.x - at.0, c.y - at.1)),
                None => ((at.0 + offset.0, at.1 + offset.1), offset),
            };
            self.add(child, Some(index), child_at, Some(child_rel))?;
        }
        Ok(())
    }

    fn plan_one(
        &self,
        entry: &OrgWorkspace,
        parent: Option<usize>,
        at: (f64, f64),
        rel: Option<(f64, f64)>,
    ) -> Result<PlannedWorkspace, OrgError> {
        let name = entry.name.trim().to_owned();
        let fail = |message: String| OrgError::Invalid(format!("workspace {name:?}: {message}"));
        if name.is_empty() {
            return Err(OrgError::Invalid("a workspace has no name".to_owned()));
        }
        let defaults = &self.template.defaults;
        let origin = origin_of(entry.origin.as_deref())?;
        let defaults_origin = origin_of(defaults.origin.as_deref())?;
        // files_dir names a directory of the content the entry came from.
        let files_dir = match entry
            .files_dir
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => None,
            Some(raw) => Some(Located {
                path: RelPath::resolve(None, raw).map_err(|err| match err {
                    SafeFsError::Escapes(_) => fail(format!(
                        "files_dir {raw:?} escapes {}",
                        root_name(origin.as_ref())
                    )),
                    _ => fail(format!("files_dir {raw:?} is not a valid path")),
                })?,
                origin: origin.clone(),
            }),
        };

        // Env layers, later wins: persona, org `.env`, files_dir `.env`. Persona files are the
        // operator's, named after the org's own files_dirs: external content never selects one.
        let persona = match (&files_dir, &self.personas) {
            (Some(dir), Some(personas))
                if dir.origin.is_none() && env::valid_persona_name(dir.path.as_str()) =>
            {
                read_env(
                    personas,
                    &dir.path.join("env").expect("a valid segment"),
                    None,
                )?
            }
            _ => Vec::new(),
        };
        let own = match &files_dir {
            Some(dir) => read_env(
                &*self.root_of(dir.origin.as_ref())?,
                &dir.path.join(".env").expect("a valid segment"),
                dir.origin.as_ref(),
            )?,
            None => Vec::new(),
        };
        let secrets = env::layer(&[&persona, self.org_env, &own]);

        let workspace_dir = match entry
            .workspace_dir
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => None,
            // A host directory is the operator's choice; remote content does not get to pick
            // one (nor to expand host variables into a stored field).
            Some(_) if origin.is_some() => {
                return Err(fail(
                    "workspace_dir cannot be set by !external content".to_owned(),
                ));
            }
            Some(raw) => Some(
                env::expand_vars(raw, |var| {
                    secrets
                        .get(var)
                        .cloned()
                        .or_else(|| (self.settings.host_env)(var))
                })
                .map_err(|why| fail(format!("workspace_dir: {why}")))?,
            ),
        };

        let runtime = entry
            .runtime
            .clone()
            .or_else(|| defaults.runtime.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned());
        let tier = entry.tier.or(defaults.tier).unwrap_or(DEFAULT_TIER);
        let model = entry
            .model
            .clone()
            .or_else(|| defaults.model.clone())
            .filter(|m| !m.is_empty());
        let external = entry.external || runtime == "external";
        let plugins = merge_plugins(&defaults.plugins, &entry.plugins);

        let mut request = CreateRequest {
            name: name.clone(),
            role: entry.role.clone().filter(|r| !r.is_empty()),
            template: entry.template.clone().filter(|t| !t.is_empty()),
            tier,
            model: model.clone(),
            runtime: Some(runtime.clone()),
            external,
            url: entry.url.clone().filter(|u| !u.is_empty()),
            workspace_dir,
            workspace_access: entry.workspace_access.clone().filter(|a| !a.is_empty()),
            parent_id: None,
            budget_limit: None,
            secrets: secrets.into_iter().collect(),
            max_concurrent_tasks: entry.max_concurrent_tasks.unwrap_or(1),
            canvas: Some(at),
            unique_name: true,
            seed_files: None,
            config: serde_json::Map::new(),
            announce_xy: rel,
            hibernation_idle_minutes: entry
                .hibernation_idle_minutes
                .or(defaults.hibernation_idle_minutes),
        };
        workspaces::check(&request).map_err(|err| fail(err.to_string()))?;

        let mut plugins_missing = Vec::new();
        if !external {
            let dir = files_dir.as_ref();
            let initial = self
                .prompt(
                    entry.initial_prompt.as_ref(),
                    entry.initial_prompt_file.as_ref(),
                    "initial_prompt_file",
                    origin.as_ref(),
                    dir,
                )
                .or_else(|| {
                    self.prompt(
                        defaults.initial_prompt.as_ref(),
                        defaults.initial_prompt_file.as_ref(),
                        "defaults.initial_prompt_file",
                        defaults_origin.as_ref(),
                        dir,
                    )
                })
                .transpose();
            let idle = self
                .prompt(
                    entry.idle_prompt.as_ref(),
                    entry.idle_prompt_file.as_ref(),
                    "idle_prompt_file",
                    origin.as_ref(),
                    dir,
                )
                .or_else(|| {
                    self.prompt(
                        defaults.idle_prompt.as_ref(),
                        defaults.idle_prompt_file.as_ref(),
                        "defaults.idle_prompt_file",
                        defaults_origin.as_ref(),
                        dir,
                    )
                })
                .transpose();
            let prompts = Prompts {
                initial: initial.map_err(&fail)?,
                idle: idle.map_err(&fail)?,
                idle_interval: entry
                    .idle_interval_seconds
                    .or(defaults.idle_interval_seconds),
            };
            let mut files = self
                .base_files(files_dir.as_ref(), request.template.as_deref(), &runtime)
                .map_err(&fail)?
                .unwrap_or_default();
            let config = files
                .get("config.yaml")
                .map(|f| f.data.clone())
                .map(|data| {
                    String::from_utf8(data).map_err(|_| fail("config.yaml is not UTF-8".into()))
                })
                .transpose()?
                .unwrap_or_else(|| {
                    crate::workspaces::lifecycle::generated_config(
                        &name,
                        request.role.as_deref(),
                        i32::try_from(tier).unwrap_or(2),
                        &runtime,
                        model.as_deref(),
                    )
                });
            let config = with_prompts(&config, &prompts).map_err(fail)?;
            files.insert(
                RelPath::parse("config.yaml").expect("static path"),
                config,
                0o644,
            );
            if let Some(prompt) = entry
                .system_prompt
                .as_deref()
                .filter(|p| !p.trim().is_empty())
            {
                files.insert(
                    RelPath::parse("system-prompt.md").expect("static path"),
                    prompt,
                    0o644,
                );
            }
            for plugin in &plugins {
                match self.plugin_files(plugin) {
                    Ok(Some(tree)) => {
                        for file in tree.files() {
                            let path = RelPath::parse(&format!("plugins/{plugin}/{}", file.path))
                                .map_err(|_| {
                                fail(format!("plugin {plugin} holds an invalid path"))
                            })?;
                            files.insert(path, file.data.clone(), file.mode);
                        }
                        files.insert(
                            RelPath::parse(&format!("plugins/{plugin}/.complete"))
                                .expect("a valid plugin path"),
                            "import\n",
                            0o644,
                        );
                    }
                    Ok(None) => plugins_missing.push(plugin.clone()),
                    Err(why) => return Err(fail(why)),
                }
            }
            request.seed_files = Some(files);
        }
        let mut imported = serde_json::Map::new();
        imported.insert("template".to_owned(), serde_json::json!(self.template.name));
        if let Some(dir) = &files_dir {
            imported.insert("files_dir".to_owned(), serde_json::json!(dir.shown()));
        }
        request
            .config
            .insert("org".to_owned(), serde_json::Value::Object(imported));
        if !plugins.is_empty() {
            request
                .config
                .insert("plugins".to_owned(), serde_json::json!(plugins));
        }
        let mut required_env = entry.required_env.clone();
        required_env.retain(|r| !matches!(r, EnvRequirement::Name(n) if n.is_empty()));
        let schedules = self
            .schedules(entry, origin.as_ref(), files_dir.as_ref())
            .map_err(fail)?;
        let memories = self.memories(entry, parent.is_none()).map_err(fail)?;
        Ok(PlannedWorkspace {
            parent,
            files_dir: files_dir.map(|d| d.shown()),
            request,
            required_env,
            plugins_missing,
            schedules,
            memories,
        })
    }

    /// The entry's `initial_memories` (absent: `defaults.initial_memories`), each checked like a
    /// memory written through the API; a bad one (GLOBAL on a non-root among them) refuses the
    /// import, naming the field.
    fn memories(
        &self,
        entry: &OrgWorkspace,
        root: bool,
    ) -> Result<Vec<crate::memories::Seed>, String> {
        let (label, list) = match &entry.initial_memories {
            Some(own) => ("initial_memories", own),
            None => (
                "defaults.initial_memories",
                &self.template.defaults.initial_memories,
            ),
        };
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                crate::memories::check_seed(&m.content, m.scope.as_deref(), root)
                    .map_err(|why| format!("{label}[{i}]: {why}"))
            })
            .collect()
    }

    /// The entry's `schedules:`, each checked like one created through the API; a bad one refuses
    /// the import (naming it), an unreadable `prompt_file` too. Names are unique per workspace.
    fn schedules(
        &self,
        entry: &OrgWorkspace,
        origin: Option<&RelPath>,
        files_dir: Option<&Located>,
    ) -> Result<Vec<crate::schedules::Definition>, String> {
        let mut out: Vec<crate::schedules::Definition> = Vec::new();
        for (i, schedule) in entry.schedules.iter().enumerate() {
            let label = match schedule.name.trim() {
                "" => format!("schedules[{i}]"),
                name => format!("schedule {name:?}"),
            };
            let prompt = self
                .prompt(
                    schedule.prompt.as_ref(),
                    schedule.prompt_file.as_ref(),
                    "prompt_file",
                    origin,
                    files_dir,
                )
                .transpose()
                .map_err(|why| format!("{label}: {why}"))?
                .unwrap_or_default();
            let definition = crate::schedules::Definition {
                name: schedule.name.clone(),
                cron_expr: schedule.cron_expr.clone(),
                timezone: schedule.timezone.clone().unwrap_or_default(),
                prompt,
                enabled: schedule.enabled.unwrap_or(true),
            };
            let (definition, _) = definition
                .check()
                .map_err(|why| format!("{label}: {why}"))?;
            if out.iter().any(|d| d.name == definition.name) {
                return Err(format!("{label} is named twice"));
            }
            out.push(definition);
        }
        Ok(out)
    }

    /// The root `origin`'s paths resolve in.
    fn root_of(&self, origin: Option<&RelPath>) -> Result<Root<'_>, OrgError> {
        match origin {
            None => Ok(Root::Org(self.root)),
            Some(entry) => self.root.open_dir(entry).map(Root::Entry).map_err(|err| {
                tracing::error!(cache = %entry, error = %err, "opening an external cache entry failed");
                OrgError::Cache("an external cache entry cannot be read".to_owned())
            }),
        }
    }

    /// An inline prompt, else the file `key` names; `None` when neither is given. The file is
    /// read in the root of the content that named it (`namer`): relative to files_dir when
    /// files_dir lives there too (or the org itself names the file, which may point into a
    /// fetched files_dir), else from the top of that root.
    fn prompt(
        &self,
        inline: Option<&String>,
        file: Option<&String>,
        key: &str,
        namer: Option<&RelPath>,
        files_dir: Option<&Located>,
    ) -> Option<Result<String, String>> {
        if let Some(text) = inline.filter(|t| !t.trim().is_empty()) {
            return Some(Ok(text.clone()));
        }
        let raw = file.map(|f| f.trim()).filter(|f| !f.is_empty())?;
        let (origin, base) = match files_dir {
            Some(dir) if namer.is_none() || namer == dir.origin.as_ref() => {
                (dir.origin.as_ref(), Some(&dir.path))
            }
            _ => (namer, None),
        };
        Some((|| {
            let path = RelPath::resolve(base, raw).map_err(|err| match err {
                SafeFsError::Escapes(_) => format!("{key} {raw:?} escapes {}", root_name(origin)),
                _ => format!("{key} {raw:?} is not a valid path"),
            })?;
            let root = self.root_of(origin).map_err(|err| err.to_string())?;
            let data = root
                .read_regular(&path, MAX_PROMPT_BYTES)
                .map_err(|err| format!("{key}: {}", template::fs_detail(&path, err, origin)))?;
            String::from_utf8(data).map_err(|_| format!("{key} {raw:?} is not UTF-8"))
        })())
    }

    /// The copy source: files_dir when it is a directory, else the workspace template.
    fn base_files(
        &self,
        files_dir: Option<&Located>,
        template: Option<&str>,
        runtime: &str,
    ) -> Result<Option<FileTree>, String> {
        if let Some(dir) = files_dir {
            let root = self
                .root_of(dir.origin.as_ref())
                .map_err(|err| err.to_string())?;
            if root.is_dir(&dir.path) {
                let mut tree = root.collect(&dir.path).map_err(|err| {
                    format!(
                        "files_dir {}: {}",
                        dir.path,
                        template::fs_detail(&dir.path, err, dir.origin.as_ref())
                    )
                })?;
                // Secrets reach the agent as encrypted workspace secrets, never as a file.
                tree.remove(".env");
                return Ok(Some(tree));
            }
        }
        match &self.settings.templates_dir {
            Some(templates) => {
                crate::workspaces::lifecycle::find_template(templates, template, runtime)
                    .map_err(|(name, err)| format!("template {name}: {err}"))
            }
            None => Ok(None),
        }
    }

    /// A plugin's files from the local registry; `None` when it has no entry.
    fn plugin_files(&self, name: &str) -> Result<Option<FileTree>, String> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        let Ok(rel) = RelPath::parse(name) else {
            return Err(format!("plugin name {name:?} is invalid"));
        };
        if !registry.is_dir(&rel) {
            return Ok(None);
        }
        registry
            .collect(&rel)
            .map(Some)
            .map_err(|err| format!("plugin {name}: {err}"))
    }
}

struct Prompts {
    initial: Option<String>,
    idle: Option<String>,
    idle_interval: Option<u64>,
}

/// `config.yaml` with the prompt keys set (replacing any the file had).
fn with_prompts(config: &str, prompts: &Prompts) -> Result<String, String> {
    if prompts.initial.is_none() && prompts.idle.is_none() {
        return Ok(config.to_owned());
    }
    let mut map = match serde_yaml_ng::from_str::<Value>(config) {
        Ok(Value::Mapping(map)) => map,
        Ok(Value::Null) => Mapping::new(),
        _ => return Err("config.yaml is not a YAML mapping".to_owned()),
    };
    if let Some(initial) = &prompts.initial {
        map.insert("initial_prompt".into(), Value::String(initial.clone()));
    }
    if let Some(idle) = &prompts.idle {
        map.insert(
            "idle_interval_seconds".into(),
            Value::Number(prompts.idle_interval.unwrap_or(600).into()),
        );
        map.insert("idle_prompt".into(), Value::String(idle.clone()));
    }
    serde_yaml_ng::to_string(&map).map_err(|err| format!("config.yaml: {err}"))
}

/// The defaults' plugins then the entry's, in order and without duplicates; `!name` or `-name`
/// removes one.
pub fn merge_plugins(defaults: &[String], own: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut removed: Vec<&str> = Vec::new();
    for item in own {
        if let Some(name) = item.strip_prefix('!').or_else(|| item.strip_prefix('-')) {
            removed.push(name.trim());
        }
    }
    for item in defaults.iter().chain(own) {
        let item = item.trim();
        if item.is_empty() || item.starts_with('!') || item.starts_with('-') {
            continue;
        }
        if !removed.contains(&item) && !out.iter().any(|p| p == item) {
            out.push(item.to_owned());
        }
    }
    out
}

/// `.env`-style pairs from `path` under `root` (the root of `origin`); a missing file is no
/// pairs.
fn read_env(
    root: &RootDir,
    path: &RelPath,
    origin: Option<&RelPath>,
) -> Result<Vec<(String, String)>, OrgError> {
    match root.read_regular(path, env::MAX_ENV_FILE_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| OrgError::Invalid(format!("{path} is not UTF-8")))?;
            let (pairs, rejected) = env::parse_dotenv(&text);
            if !rejected.is_empty() {
                tracing::warn!(file = %path, lines = ?rejected, "env file lines without a valid KEY=VALUE were skipped");
            }
            Ok(pairs)
        }
        Err(SafeFsError::NotFound) => Ok(Vec::new()),
        Err(err) => Err(template::fs_error(path, err, origin)),
    }
}

/// A lookup of host environment variables for templates (see
/// [`crate::config::template_env_var`]).
pub fn host_env(name: &str) -> Option<String> {
    crate::config::template_env_var(name)
}

/// Settings from the host configuration.
pub fn settings(config: &crate::Config) -> PlanSettings {
    PlanSettings {
        templates_dir: config.runtime.templates_dir.clone(),
        plugins_registry: config
            .plugins_registry_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("plugins-registry")),
        persona_root: config.org.persona_root.clone(),
        host_env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_merge_in_order_and_removals_apply() {
        let defaults = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let own = vec![
            "d".to_owned(),
            "!b".to_owned(),
            "-c".to_owned(),
            "a".to_owned(),
        ];
        assert_eq!(merge_plugins(&defaults, &own), vec!["a", "d"]);
        assert_eq!(merge_plugins(&defaults, &[]), vec!["a", "b", "c"]);
    }

    #[test]
    fn children_are_laid_out_in_two_columns_inside_their_parent() {
        let leaf = |name: &str| OrgWorkspace {
            name: name.to_owned(),
            ..OrgWorkspace::default()
        };
        let parent = OrgWorkspace {
            name: "p".into(),
            children: vec![leaf("a"), leaf("b"), leaf("c")],
            ..OrgWorkspace::default()
        };
        let offsets = child_offsets(&parent);
        assert_eq!(offsets[0], (PAD, HEADER));
        assert_eq!(offsets[1], (PAD + CELL_W + GUTTER, HEADER));
        assert_eq!(offsets[2], (PAD, HEADER + CELL_H + GUTTER));
        let (w, h) = size(&parent);
        assert_eq!(w, PAD * 2.0 + CELL_W * 2.0 + GUTTER);
        assert_eq!(h, HEADER + CELL_H * 2.0 + GUTTER + PAD);
    }
}
