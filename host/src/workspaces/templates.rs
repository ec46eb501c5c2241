//! The workspace template catalogue: the templates under `runtime.templates_dir` (each a
//! directory with a `config.yaml`, skills and prompts), listed for the console and imported from
//! a request. Every path goes through [`crate::safefs`]: the templates directory is opened as a
//! [`RootDir`], so neither a request's paths nor a symlink already in the directory reach
//! outside it.
//!
//! An import is atomic: the files are written into a fresh hidden sibling directory
//! (`.import-<id>-<uuid>`), which is then renamed into place; an overwrite first renames the old
//! template aside (`.replaced-<id>-<uuid>`), renames the new one in, and only then removes the
//! old one. A failure at any step removes the staging directory and puts the old template back,
//! so a reader sees the old template or the new one, never a mix or nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_yaml_ng::{Mapping, Value};
use uuid::Uuid;

use crate::config::faults::TemplateImportStep;
use crate::safefs::{EntryKind, FileTree, RelPath, RootDir, SafeFsError};
use crate::services::Services;

/// At most this many files in one imported template (the original's limit).
pub const MAX_IMPORT_FILES: usize = 200;
/// At most this many bytes of file content in one imported template, below the default request
/// body limit (1 MiB) so that the host's own answer names the cause.
pub const MAX_IMPORT_BYTES: usize = 512 * 1024;
/// A directory name longer than this is refused (file systems stop at 255 bytes).
pub const MAX_NAME_CHARS: usize = 100;
/// The largest `config.yaml` the catalogue reads.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// The mode of every imported file (owner only, as the original wrote them).
const IMPORTED_FILE_MODE: u32 = 0o600;
/// The model of a generated `config.yaml` (the original's default for imports).
const DEFAULT_IMPORT_MODEL: &str = "anthropic:claude-haiku-4-5-20251001";
const DEFAULT_IMPORT_TIER: i64 = 3;
const CONFIG_FILE: &str = "config.yaml";

/// Why a template could not be listed, read or imported.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A field of the request is unusable; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// `runtime.templates_dir` is not set: there is no catalogue to import into.
    #[error("no templates directory is configured (runtime.templates_dir)")]
    NoCatalogue,
    /// A template of that directory name exists and `overwrite` was not set.
    #[error("template already exists")]
    Exists(String),
    /// The name is taken by something that is not a template directory (a symlink, a file).
    #[error("{0} is not a template directory")]
    NotATemplate(String),
    #[error("template not found")]
    NotFound,
    /// Reading or writing the templates directory failed; the detail is for the log.
    #[error("template files: {0}")]
    Io(String),
}

/// A model a template offers (`runtime_config.models`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub required_env: Vec<String>,
}

/// One entry of the catalogue, read from the template's `config.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// The directory name, what `template` on `POST /workspaces` names.
    pub id: String,
    pub name: String,
    pub description: String,
    pub tier: Option<i64>,
    pub runtime: Option<String>,
    pub model: Option<String>,
    pub models: Vec<ModelInfo>,
    pub required_env: Vec<String>,
    pub skills: Vec<String>,
    pub provision_timeout_seconds: Option<u64>,
    /// Set when the template cannot be read (bad YAML, a symlink leaving the directory): it is
    /// listed so the operator sees it, and nothing else about it is known.
    pub error: Option<String>,
}

impl TemplateInfo {
    fn broken(id: String, error: String) -> Self {
        TemplateInfo {
            name: id.clone(),
            id,
            description: String::new(),
            tier: None,
            runtime: None,
            model: None,
            models: Vec::new(),
            required_env: Vec::new(),
            skills: Vec::new(),
            provision_timeout_seconds: None,
            error: Some(error),
        }
    }
}

/// What a template's `config.yaml` says about creating a workspace from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateDefaults {
    pub runtime: Option<String>,
    pub model: Option<String>,
    /// The team it declares (`sub_workspaces`), which `POST /workspaces/:id/expand` creates.
    pub sub_workspaces: Vec<SubWorkspace>,
}

/// A child a template declares: `sub_workspaces: [name, or {name, role, template}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubWorkspace {
    pub name: String,
    pub role: Option<String>,
    /// The child's own template, when it names one.
    pub template: Option<String>,
}

/// `POST /templates/import`.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub name: String,
    pub files: BTreeMap<String, String>,
    pub overwrite: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub id: String,
    pub name: String,
    /// Files written, the generated `config.yaml` included.
    pub files: usize,
    /// Whether an existing template was replaced.
    pub replaced: bool,
}

/// The directory name of a template called `name`, as the original's `normalizeName`: lowercase,
/// spaces and `-` become `-`, only `[a-z0-9_]` kept besides, so no `.`, `/` or `..` survives;
/// nothing left is `unnamed`.
pub fn normalize_name(name: &str) -> String {
    let out: String = name
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => Some(c),
            ' ' | '-' => Some('-'),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        "unnamed".to_owned()
    } else {
        out
    }
}

/// The templates directory, when one is configured and exists.
fn catalogue(svc: &Services) -> Option<PathBuf> {
    svc.config.runtime.templates_dir.clone()
}

/// Every template directory of the catalogue, sorted by id. A directory without `config.yaml` is
/// not a template and is left out; one whose `config.yaml` cannot be read or parsed, or that is a
/// symlink leaving the templates directory, is listed with `error` (and a warning is logged).
/// Hidden entries (a staging directory of an import in progress) are never listed.
pub async fn list(svc: &Services) -> Result<Vec<TemplateInfo>, TemplateError> {
    let Some(dir) = catalogue(svc) else {
        return Ok(Vec::new());
    };
    blocking(move || list_in(&dir)).await
}

fn list_in(dir: &std::path::Path) -> Result<Vec<TemplateInfo>, TemplateError> {
    let root = match RootDir::open(dir) {
        Ok(root) => root,
        Err(SafeFsError::NotFound) => return Ok(Vec::new()),
        Err(err) => {
            return Err(TemplateError::Io(format!(
                "opening the templates directory: {err}"
            )));
        }
    };
    let mut ids: Vec<String> = root
        .list(None, 1)
        .map_err(|err| TemplateError::Io(format!("listing the templates directory: {err}")))?
        .into_iter()
        .map(|entry| entry.path)
        .filter(|id| !id.starts_with('.'))
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        let Ok(rel) = RelPath::parse(&id) else {
            continue;
        };
        match read_info(&root, &rel) {
            Ok(Some(info)) => out.push(info),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(template = %id, %error, "a workspace template cannot be read; listed with its error");
                out.push(TemplateInfo::broken(id, error));
            }
        }
    }
    Ok(out)
}

/// The catalogue entry of `<root>/<id>`: `None` when it is not a template directory (a file, or
/// no `config.yaml`), `Err` with a reason when it is one but cannot be read.
fn read_info(root: &RootDir, id: &RelPath) -> Result<Option<TemplateInfo>, String> {
    let dir = match root.open_dir(id) {
        Ok(dir) => dir,
        Err(SafeFsError::NotFound) => return Ok(None),
        Err(SafeFsError::Escapes(_)) => {
            return Err("it is a symlink leaving the templates directory".to_owned());
        }
        Err(err) => return Err(err.to_string()),
    };
    let config = match read_config(&dir) {
        Ok(Some(config)) => config,
        Ok(None) => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok(Some(info_from(id.as_str(), &config, &dir)))
}

/// The template's `config.yaml` as a YAML mapping; `None` when it has none.
fn read_config(dir: &RootDir) -> Result<Option<Mapping>, String> {
    let path = RelPath::parse(CONFIG_FILE).map_err(|e| e.to_string())?;
    let bytes = match dir.read_regular(&path, MAX_CONFIG_BYTES) {
        Ok(bytes) => bytes,
        Err(SafeFsError::NotFound) => return Ok(None),
        Err(SafeFsError::Escapes(_)) => {
            return Err("config.yaml is a symlink leaving the template".to_owned());
        }
        Err(err) => return Err(format!("config.yaml: {err}")),
    };
    let text = String::from_utf8(bytes).map_err(|_| "config.yaml is not UTF-8".to_owned())?;
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(Some(Mapping::new())),
        Ok(_) => Err("config.yaml is not a YAML mapping".to_owned()),
        Err(err) => Err(format!("config.yaml is not valid YAML: {err}")),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn texts(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().filter_map(|v| text(Some(v))).collect(),
        _ => Vec::new(),
    }
}

fn push_unique(out: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
}

/// What creating a workspace from this config uses: top-level `runtime`; `runtime_config.model`,
/// else the legacy top-level `model`.
fn defaults_of(config: &Mapping) -> TemplateDefaults {
    let runtime_config = config.get("runtime_config");
    let sub_workspaces = match config.get("sub_workspaces") {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::Mapping(_) => Some(SubWorkspace {
                    name: text(item.get("name"))?,
                    role: text(item.get("role")),
                    template: text(item.get("template")),
                }),
                other => Some(SubWorkspace {
                    name: text(Some(other))?,
                    role: None,
                    template: None,
                }),
            })
            .filter(|sub| !sub.name.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    TemplateDefaults {
        runtime: text(config.get("runtime")),
        model: text(runtime_config.and_then(|r| r.get("model")))
            .or_else(|| text(config.get("model"))),
        sub_workspaces,
    }
}

fn info_from(id: &str, config: &Mapping, dir: &RootDir) -> TemplateInfo {
    let runtime_config = config.get("runtime_config");
    let defaults = defaults_of(config);
    let models = match runtime_config.and_then(|r| r.get("models")) {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|item| {
                let id = text(item.get("id"))?;
                Some(ModelInfo {
                    name: text(item.get("name")).unwrap_or_else(|| id.clone()),
                    required_env: texts(item.get("required_env")),
                    id,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut required_env = texts(runtime_config.and_then(|r| r.get("required_env")));
    push_unique(
        &mut required_env,
        texts(config.get("env").and_then(|e| e.get("required"))),
    );
    let mut skills = texts(config.get("skills"));
    if skills.is_empty() {
        skills = skill_dirs(dir);
    }
    TemplateInfo {
        id: id.to_owned(),
        name: text(config.get("name")).unwrap_or_else(|| id.to_owned()),
        description: text(config.get("description")).unwrap_or_default(),
        tier: config.get("tier").and_then(Value::as_i64),
        runtime: defaults.runtime,
        model: defaults.model,
        models,
        required_env,
        skills,
        provision_timeout_seconds: runtime_config
            .and_then(|r| r.get("provision_timeout_seconds"))
            .and_then(Value::as_u64),
        error: None,
    }
}

/// The skills a template ships: `skills/<name>/SKILL.md`.
fn skill_dirs(dir: &RootDir) -> Vec<String> {
    let Ok(skills) = RelPath::parse("skills") else {
        return Vec::new();
    };
    let Ok(entries) = dir.list(Some(&skills), 2) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .iter()
        .filter_map(|entry| {
            let rest = entry.path.strip_prefix("skills/")?;
            let (skill, file) = rest.split_once('/')?;
            (file == "SKILL.md" && !entry.dir).then(|| skill.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The runtime and model `template` gives a new workspace. `Ok(None)` when no catalogue is
/// configured; [`TemplateError::Invalid`] for a name that is not one plain directory name or that
/// names a symlink leaving the directory, [`TemplateError::NotFound`] when it does not exist.
pub async fn defaults(
    svc: &Services,
    template: &str,
) -> Result<Option<TemplateDefaults>, TemplateError> {
    let Some(dir) = catalogue(svc) else {
        return Ok(None);
    };
    let template = template.to_owned();
    blocking(move || {
        let invalid = || TemplateError::Invalid("invalid template".to_owned());
        let rel = RelPath::parse(&template).map_err(|_| invalid())?;
        if rel.as_str().contains('/') || rel.as_str().starts_with('.') {
            return Err(invalid());
        }
        let root = RootDir::open(&dir).map_err(|_| TemplateError::NotFound)?;
        let template = match root.open_dir(&rel) {
            Ok(template) => template,
            Err(SafeFsError::NotFound) => return Err(TemplateError::NotFound),
            Err(_) => return Err(invalid()),
        };
        match read_config(&template) {
            Ok(Some(config)) => Ok(Some(defaults_of(&config))),
            Ok(None) => Ok(Some(TemplateDefaults::default())),
            Err(_) => Err(TemplateError::Invalid(
                "invalid template: its config.yaml cannot be read".to_owned(),
            )),
        }
    })
    .await
}

/// Imports a template: checks the request, then writes it atomically (see the module comment).
pub async fn import(svc: &Services, req: ImportRequest) -> Result<Imported, TemplateError> {
    // The request is checked first: a bad one is the caller's to fix whatever the host's setup.
    let checked = check_import(&req)?;
    let dir = catalogue(svc).ok_or(TemplateError::NoCatalogue)?;
    let fault = svc.config.faults.template_import;
    // One import at a time in this host: the existence check and the renames form one step.
    // Replicas sharing the directory are kept apart by the renames themselves: a rename onto a
    // template another replica just wrote fails, and is answered as the conflict it is.
    let lock = Arc::clone(&IMPORTS);
    blocking(move || {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        write_template(&dir, &checked, fault)
    })
    .await
}

static IMPORTS: std::sync::LazyLock<Arc<Mutex<()>>> =
    std::sync::LazyLock::new(|| Arc::new(Mutex::new(())));

/// A request that passed every check: its directory name and the tree to write.
#[derive(Debug)]
struct CheckedImport {
    id: String,
    name: String,
    tree: FileTree,
    overwrite: bool,
}

fn check_import(req: &ImportRequest) -> Result<CheckedImport, TemplateError> {
    let invalid = |message: String| Err(TemplateError::Invalid(message));
    let name = req.name.trim();
    if name.is_empty() {
        return invalid("name is required".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return invalid(format!(
            "name must be at most {MAX_NAME_CHARS} characters without control characters"
        ));
    }
    if req.files.len() > MAX_IMPORT_FILES {
        return invalid(format!(
            "too many files ({}), max {MAX_IMPORT_FILES}",
            req.files.len()
        ));
    }
    let total: usize = req.files.values().map(String::len).sum();
    if total > MAX_IMPORT_BYTES {
        return invalid(format!(
            "files too large ({total} bytes), max {MAX_IMPORT_BYTES} bytes in all"
        ));
    }
    let mut tree = FileTree::new();
    let mut paths: Vec<RelPath> = Vec::with_capacity(req.files.len());
    for (raw, content) in &req.files {
        let path = RelPath::parse(raw).map_err(|_| {
            TemplateError::Invalid(
                "files: every path must be relative, without '..', '.', empty segments, \
                 backslashes or control characters"
                    .to_owned(),
            )
        })?;
        if path
            .as_str()
            .split('/')
            .any(|part| part.ends_with(".molecule-tmp"))
        {
            return invalid("files: a path uses the reserved suffix .molecule-tmp".to_owned());
        }
        paths.push(path.clone());
        tree.insert(path, content.as_bytes(), IMPORTED_FILE_MODE);
    }
    // `a` and `a/b` cannot both be files.
    for path in &paths {
        if paths
            .iter()
            .any(|other| other != path && other.starts_with(path))
        {
            return invalid(
                "files: a path is both a file and the directory of another file".to_owned(),
            );
        }
    }
    if !tree.contains(CONFIG_FILE) {
        let config = generated_config(name, &paths);
        tree.insert(
            RelPath::parse(CONFIG_FILE).map_err(|e| TemplateError::Io(e.to_string()))?,
            config,
            IMPORTED_FILE_MODE,
        );
    }
    Ok(CheckedImport {
        id: normalize_name(name),
        name: name.to_owned(),
        tree,
        overwrite: req.overwrite,
    })
}

/// The `config.yaml` of an import that brought none, as the original generated it: tier 3, the
/// default model, the root-level `.md` files as prompt files, `skills/<name>/SKILL.md` as
/// skills, and `ANTHROPIC_API_KEY` required.
fn generated_config(name: &str, paths: &[RelPath]) -> String {
    #[derive(serde::Serialize)]
    struct Env {
        required: Vec<&'static str>,
    }
    #[derive(serde::Serialize)]
    struct Generated<'a> {
        name: &'a str,
        description: &'a str,
        version: &'a str,
        tier: i64,
        model: &'a str,
        prompt_files: Vec<&'a str>,
        skills: Vec<&'a str>,
        env: Env,
    }
    let prompt_files = paths
        .iter()
        .map(RelPath::as_str)
        .filter(|p| !p.contains('/') && p.ends_with(".md"))
        .collect();
    let mut skills: Vec<&str> = paths
        .iter()
        .filter_map(|p| {
            let rest = p.as_str().strip_prefix("skills/")?;
            let (skill, file) = rest.split_once('/')?;
            (file == "SKILL.md").then_some(skill)
        })
        .collect();
    skills.dedup();
    serde_yaml_ng::to_string(&Generated {
        name,
        description: "Imported template",
        version: "1.0.0",
        tier: DEFAULT_IMPORT_TIER,
        model: DEFAULT_IMPORT_MODEL,
        prompt_files,
        skills,
        env: Env {
            required: vec!["ANTHROPIC_API_KEY"],
        },
    })
    .unwrap_or_default()
}

fn io(what: &str) -> impl FnOnce(SafeFsError) -> TemplateError + '_ {
    move |err| TemplateError::Io(format!("{what}: {err}"))
}

fn injected(step: TemplateImportStep) -> TemplateError {
    TemplateError::Io(format!("injected failure at the {step:?} step"))
}

/// Writes `checked` into `<dir>/<id>` atomically; see the module comment.
fn write_template(
    dir: &std::path::Path,
    checked: &CheckedImport,
    fault: Option<TemplateImportStep>,
) -> Result<Imported, TemplateError> {
    let root = RootDir::open_or_create(dir).map_err(io("opening the templates directory"))?;
    let target = RelPath::parse(&checked.id)
        .map_err(|_| TemplateError::Invalid("invalid name".to_owned()))?;
    let existing = root
        .entry_kind(&target)
        .map_err(io("reading the templates directory"))?;
    match existing {
        None => {}
        Some(EntryKind::Dir) if checked.overwrite => {}
        Some(EntryKind::Dir) => return Err(TemplateError::Exists(checked.id.clone())),
        // A symlink (wherever it points), a file or a device is never replaced or written
        // through: a link leaving the directory would otherwise carry the import outside it.
        Some(_) => return Err(TemplateError::NotATemplate(checked.id.clone())),
    }
    let stamp = Uuid::new_v4().simple().to_string();
    let staging = RelPath::parse(&format!(".import-{}-{stamp}", checked.id))
        .map_err(|_| TemplateError::Invalid("invalid name".to_owned()))?;
    root.create_dir(&staging)
        .map_err(io("creating the staging directory"))?;
    let discard_staging = |root: &RootDir| {
        if let Err(err) = root.remove(&staging) {
            tracing::warn!(staging = %staging, %err, "a template import's staging directory could not be removed");
        }
    };
    let staged = root
        .open_dir(&staging)
        .and_then(|staged| staged.write_tree(&checked.tree))
        .map_err(io("writing the staged template"))
        .and_then(|()| match fault {
            Some(TemplateImportStep::Stage) => Err(injected(TemplateImportStep::Stage)),
            _ => Ok(()),
        });
    if let Err(err) = staged {
        discard_staging(&root);
        return Err(err);
    }
    let replaced = existing.is_some();
    if !replaced {
        if let Err(err) = root.rename(&staging, &target) {
            discard_staging(&root);
            // Another replica's import of the same name got there first.
            if matches!(root.entry_kind(&target), Ok(Some(_))) {
                return Err(TemplateError::Exists(checked.id.clone()));
            }
            return Err(io("moving the template into place")(err));
        }
    } else {
        let aside = RelPath::parse(&format!(".replaced-{}-{stamp}", checked.id))
            .map_err(|_| TemplateError::Invalid("invalid name".to_owned()))?;
        if let Err(err) = root.rename(&target, &aside) {
            discard_staging(&root);
            return Err(io("moving the old template aside")(err));
        }
        let swapped = match fault {
            Some(TemplateImportStep::Swap) => Err(injected(TemplateImportStep::Swap)),
            _ => root
                .rename(&staging, &target)
                .map_err(io("moving the new template into place")),
        };
        if let Err(err) = swapped {
            if let Err(restore) = root.rename(&aside, &target) {
                tracing::error!(template = %target, aside = %aside, %restore, "the old template could not be put back; it is kept under the aside name");
            }
            discard_staging(&root);
            return Err(err);
        }
        if let Err(err) = root.remove(&aside) {
            tracing::warn!(aside = %aside, %err, "the replaced template could not be removed");
        }
    }
    Ok(Imported {
        id: checked.id.clone(),
        name: checked.name.clone(),
        files: checked.tree.len(),
        replaced,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TemplateError> + Send + 'static,
) -> Result<T, TemplateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| TemplateError::Io(format!("the template task stopped: {err}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_as_the_original_did() {
        assert_eq!(normalize_name("My Agent"), "my-agent");
        assert_eq!(normalize_name("  Data-Bot_2 "), "data-bot_2");
        assert_eq!(normalize_name("../../etc"), "etc");
        assert_eq!(normalize_name("a/b\\c.d"), "abcd");
        assert_eq!(normalize_name("..."), "unnamed");
        assert_eq!(normalize_name("Ünïcode"), "ncode");
    }

    fn request(files: &[(&str, &str)]) -> ImportRequest {
        ImportRequest {
            name: "Helper Bot".to_owned(),
            files: files
                .iter()
                .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
                .collect(),
            overwrite: false,
        }
    }

    #[test]
    fn a_missing_config_is_generated_from_the_files() {
        let checked = check_import(&request(&[
            ("system-prompt.md", "be brief"),
            ("docs/notes.md", "not a prompt file"),
            ("skills/search/SKILL.md", "# Search"),
        ]))
        .unwrap();
        assert_eq!(checked.id, "helper-bot");
        let config = checked.tree.get("config.yaml").unwrap();
        let config: Value = serde_yaml_ng::from_slice(&config.data).unwrap();
        assert_eq!(config["name"], Value::from("Helper Bot"));
        assert_eq!(config["tier"], Value::from(3));
        assert_eq!(config["model"], Value::from(DEFAULT_IMPORT_MODEL));
        assert_eq!(
            config["prompt_files"],
            Value::from(vec!["system-prompt.md"])
        );
        assert_eq!(config["skills"], Value::from(vec!["search"]));
        assert_eq!(
            config["env"]["required"],
            Value::from(vec!["ANTHROPIC_API_KEY"])
        );
        assert!(checked.tree.files().iter().all(|f| f.mode == 0o600));
    }

    #[test]
    fn bad_paths_and_limits_are_refused_naming_the_field() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "",
            "a//b",
            "a\\b",
            "x.molecule-tmp",
        ] {
            let err = check_import(&request(&[(bad, "x")])).unwrap_err();
            assert!(
                matches!(&err, TemplateError::Invalid(m) if m.starts_with("files")),
                "{bad}: {err}"
            );
        }
        let err = check_import(&request(&[("a", "x"), ("a/b", "y")])).unwrap_err();
        assert!(
            err.to_string().contains("both a file and the directory"),
            "{err}"
        );
        let many: Vec<(String, String)> = (0..=MAX_IMPORT_FILES)
            .map(|i| (format!("f{i}.txt"), String::new()))
            .collect();
        let req = ImportRequest {
            files: many.into_iter().collect(),
            ..request(&[])
        };
        let err = check_import(&req).unwrap_err();
        assert_eq!(err.to_string(), "too many files (201), max 200");
        let big = "x".repeat(MAX_IMPORT_BYTES + 1);
        let err = check_import(&request(&[("big.txt", &big)])).unwrap_err();
        assert!(err.to_string().starts_with("files too large"), "{err}");
        let err = check_import(&ImportRequest {
            name: "  ".to_owned(),
            ..request(&[])
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "name is required");
    }

    #[test]
    fn the_catalogue_reads_what_the_original_listed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "coder/config.yaml",
            "name: Coder\ndescription: writes code\ntier: 2\nruntime: claude-code\n\
             runtime_config:\n  model: sonnet\n  required_env: [ANTHROPIC_API_KEY]\n  \
             provision_timeout_seconds: 900\n  models:\n    - id: sonnet\n      name: Claude Sonnet\n      \
             required_env: [ANTHROPIC_API_KEY]\nenv:\n  required: [GITHUB_TOKEN, ANTHROPIC_API_KEY]\n",
        );
        write("coder/skills/review/SKILL.md", "# Review");
        write("broken/config.yaml", "name: [unclosed\n");
        write("notes/readme.txt", "no config here");
        write(".import-x-1/config.yaml", "name: half written\n");
        std::os::unix::fs::symlink("/etc", dir.path().join("outside")).unwrap();
        let list = list_in(dir.path()).unwrap();
        let ids: Vec<&str> = list.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["broken", "coder", "outside"]);
        let coder = &list[1];
        assert_eq!(coder.name, "Coder");
        assert_eq!(coder.tier, Some(2));
        assert_eq!(coder.runtime.as_deref(), Some("claude-code"));
        assert_eq!(coder.model.as_deref(), Some("sonnet"));
        assert_eq!(coder.required_env, ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]);
        assert_eq!(coder.skills, ["review"]);
        assert_eq!(coder.provision_timeout_seconds, Some(900));
        assert_eq!(coder.models[0].name, "Claude Sonnet");
        assert!(list[0].error.as_deref().unwrap().contains("not valid YAML"));
        assert!(
            list[2]
                .error
                .as_deref()
                .unwrap()
                .contains("symlink leaving")
        );
    }
}
