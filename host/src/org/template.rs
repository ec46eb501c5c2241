//! Org template YAML: the typed template, and the expansion of `!include` and `!external` on the
//! YAML node tree before it is typed. Expansion is synchronous and reads only through the org
//! root's [`RootDir`]; `!external` sources come from an [`ExternalSource`] (the resolver-backed
//! cache in production, a fake in tests).

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::external::{CachedExternal, ExternalRef, ExternalSource};
use super::{OrgError, RootDir};
use crate::safefs::{RelPath, SafeFsError};

/// How deep `!include`s may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// How deep (on the same counter) an `!external` may still appear.
pub const MAX_EXTERNAL_DEPTH: usize = 4;
/// The largest YAML file read as a template or an include.
pub const MAX_YAML_BYTES: u64 = 1024 * 1024;
/// The template file of an org directory.
pub const ORG_FILE: &str = "org.yaml";

/// An org template as written in `org.yaml`, after expansion. Fields this host does not act on
/// (schedules, channels, memories) are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OrgTemplate {
    pub name: String,
    pub description: String,
    pub defaults: Defaults,
    pub workspaces: Vec<OrgWorkspace>,
    pub required_env: Vec<EnvRequirement>,
    pub recommended_env: Vec<EnvRequirement>,
}

/// Values a workspace entry falls back to when it leaves a field empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Defaults {
    pub runtime: Option<String>,
    pub tier: Option<i64>,
    pub model: Option<String>,
    pub plugins: Vec<String>,
    pub initial_prompt: Option<String>,
    pub initial_prompt_file: Option<String>,
    pub idle_prompt: Option<String>,
    pub idle_prompt_file: Option<String>,
    pub idle_interval_seconds: Option<u64>,
}

/// One workspace of the tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrgWorkspace {
    pub name: String,
    pub role: Option<String>,
    pub runtime: Option<String>,
    pub tier: Option<i64>,
    pub model: Option<String>,
    pub template: Option<String>,
    pub files_dir: Option<String>,
    pub system_prompt: Option<String>,
    /// Merged with the defaults; `!name` or `-name` removes a default.
    pub plugins: Vec<String>,
    pub initial_prompt: Option<String>,
    pub initial_prompt_file: Option<String>,
    pub idle_prompt: Option<String>,
    pub idle_prompt_file: Option<String>,
    pub idle_interval_seconds: Option<u64>,
    pub workspace_dir: Option<String>,
    pub workspace_access: Option<String>,
    pub external: bool,
    pub url: Option<String>,
    pub canvas: Option<Canvas>,
    pub max_concurrent_tasks: Option<i64>,
    pub required_env: Vec<EnvRequirement>,
    pub recommended_env: Vec<EnvRequirement>,
    pub children: Vec<OrgWorkspace>,
    /// `false` skips this workspace and its whole subtree.
    pub spawning: bool,
}

impl Default for OrgWorkspace {
    fn default() -> Self {
        OrgWorkspace {
            name: String::new(),
            role: None,
            runtime: None,
            tier: None,
            model: None,
            template: None,
            files_dir: None,
            system_prompt: None,
            plugins: Vec::new(),
            initial_prompt: None,
            initial_prompt_file: None,
            idle_prompt: None,
            idle_prompt_file: None,
            idle_interval_seconds: None,
            workspace_dir: None,
            workspace_access: None,
            external: false,
            url: None,
            canvas: None,
            max_concurrent_tasks: None,
            required_env: Vec::new(),
            recommended_env: Vec::new(),
            children: Vec::new(),
            spawning: true,
        }
    }
}

/// An absolute canvas position.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Canvas {
    pub x: f64,
    pub y: f64,
}

/// `NAME` or `{any_of: [A, B]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EnvRequirement {
    Name(String),
    AnyOf { any_of: Vec<String> },
}

impl OrgTemplate {
    /// Every workspace entry, `spawning: false` subtrees included.
    pub fn total_workspaces(&self) -> usize {
        fn count(list: &[OrgWorkspace]) -> usize {
            list.iter().map(|w| 1 + count(&w.children)).sum()
        }
        count(&self.workspaces)
    }
}

/// Reads `org.yaml` at the root of `root`, expands it and types it.
pub fn load(root: &RootDir, externals: &dyn ExternalSource) -> Result<OrgTemplate, OrgError> {
    let file = RelPath::parse(ORG_FILE).expect("static path");
    let raw = read_yaml(root, &file).map_err(|err| match err {
        OrgError::Expansion(message) if message.ends_with("not found") => OrgError::NotFound,
        other => other,
    })?;
    let expanded = Expander::new(root, externals).expand_document(raw, None)?;
    typed(expanded)
}

/// Types an already expanded (or inline) template.
pub fn typed(value: Value) -> Result<OrgTemplate, OrgError> {
    serde_yaml_ng::from_value(value).map_err(|err| OrgError::Invalid(err.to_string()))
}

fn read_yaml(root: &RootDir, path: &RelPath) -> Result<Value, OrgError> {
    let bytes = root
        .read_regular(path, MAX_YAML_BYTES)
        .map_err(|err| fs_error(path, err))?;
    serde_yaml_ng::from_slice(&bytes)
        .map_err(|err| OrgError::Expansion(format!("{path}: invalid YAML: {err}")))
}

/// A filesystem refusal as an expansion error naming the path.
pub(super) fn fs_error(path: &RelPath, err: SafeFsError) -> OrgError {
    OrgError::Expansion(match err {
        SafeFsError::NotFound => format!("{path} not found"),
        SafeFsError::Escapes(_) => format!("{path} escapes the org root"),
        SafeFsError::NotRegular(_) => format!("{path} is not a regular file"),
        SafeFsError::TooLarge(detail) => detail,
        SafeFsError::InvalidPath => format!("{path} is not a valid path"),
        SafeFsError::Io(err) => format!("{path}: {}", err.kind()),
    })
}

/// Where an included file came from, for cycle detection.
struct Frame {
    key: String,
}

struct Expander<'a> {
    root: &'a RootDir,
    externals: &'a dyn ExternalSource,
    stack: Vec<Frame>,
}

impl<'a> Expander<'a> {
    fn new(root: &'a RootDir, externals: &'a dyn ExternalSource) -> Self {
        Expander {
            root,
            externals,
            stack: Vec::new(),
        }
    }

    /// Expands one parsed file whose directory is `dir` (the org root when `None`).
    fn expand_document(&mut self, value: Value, dir: Option<&RelPath>) -> Result<Value, OrgError> {
        self.expand(value, dir)
    }

    fn expand(&mut self, value: Value, dir: Option<&RelPath>) -> Result<Value, OrgError> {
        match value {
            Value::Mapping(map) => {
                let mut out = Mapping::with_capacity(map.len());
                for (key, value) in map {
                    out.insert(key, self.expand(value, dir)?);
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => items
                .into_iter()
                .map(|item| self.expand(item, dir))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Sequence),
            Value::Tagged(tagged) => {
                if tagged.tag == "include" {
                    self.include(tagged.value, dir)
                } else if tagged.tag == "external" {
                    self.external(tagged.value)
                } else {
                    let tag = tagged.tag.to_string();
                    if tag.starts_with("!!") || tag.starts_with("tag:yaml.org,2002:") {
                        self.expand(tagged.value, dir)
                    } else {
                        Err(OrgError::Expansion(format!("unknown tag {tag}")))
                    }
                }
            }
            scalar => Ok(scalar),
        }
    }

    fn depth(&self) -> usize {
        self.stack.len()
    }

    fn enter(&mut self, key: String) -> Result<(), OrgError> {
        if self.stack.iter().any(|frame| frame.key == key) {
            return Err(OrgError::Expansion(format!(
                "!include cycle detected at {key}"
            )));
        }
        self.stack.push(Frame { key });
        Ok(())
    }

    fn include(&mut self, value: Value, dir: Option<&RelPath>) -> Result<Value, OrgError> {
        let Value::String(raw) = value else {
            return Err(OrgError::Expansion(
                "!include takes a relative path".to_owned(),
            ));
        };
        if raw.trim().is_empty() {
            return Err(OrgError::Expansion(
                "!include with an empty path".to_owned(),
            ));
        }
        if self.depth() >= MAX_INCLUDE_DEPTH {
            return Err(OrgError::Expansion(format!(
                "!include max depth {MAX_INCLUDE_DEPTH} exceeded at {raw}"
            )));
        }
        let path = RelPath::resolve(dir, &raw).map_err(|err| match err {
            SafeFsError::Escapes(_) => {
                OrgError::Expansion(format!("!include {raw}: path escapes the org root"))
            }
            _ => OrgError::Expansion(format!("!include {raw}: invalid path")),
        })?;
        self.enter(path.to_string())?;
        let parsed = read_yaml(self.root, &path)?;
        let expanded = self.expand_document(parsed, path.parent().as_ref());
        self.stack.pop();
        expanded
    }

    fn external(&mut self, value: Value) -> Result<Value, OrgError> {
        let reference = ExternalRef::from_yaml(&value, self.externals.default_host())?;
        if self.depth() >= MAX_EXTERNAL_DEPTH {
            return Err(OrgError::Expansion(format!(
                "!external max depth {MAX_EXTERNAL_DEPTH} exceeded at {}",
                reference.repo_key()
            )));
        }
        let CachedExternal { dir: cache, sha } = self.externals.fetch(&reference)?;
        let target = cache.join(reference.path.as_str()).map_err(|_| {
            OrgError::Expansion(format!("!external path {} is invalid", reference.path))
        })?;
        self.enter(format!("{}@{sha}/{}", reference.repo_key(), reference.path))?;
        let parsed = read_yaml(self.root, &target)?;
        let expanded = self.expand_document(parsed, target.parent().as_ref());
        self.stack.pop();
        let mut expanded = expanded?;
        rewrite_files_dirs(&mut expanded, &cache);
        Ok(expanded)
    }
}

/// Points every `files_dir` in `value` into `cache` (relative to the org root), unless it already
/// does, so later resolution against the org root lands in the fetched copy.
pub fn rewrite_files_dirs(value: &mut Value, cache: &RelPath) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                if key.as_str() == Some("files_dir")
                    && let Value::String(dir) = value
                {
                    let already = RelPath::resolve(None, dir).is_ok_and(|p| p.starts_with(cache));
                    if !already {
                        *dir = format!("{cache}/{}", dir.trim_start_matches("./"));
                    }
                } else {
                    rewrite_files_dirs(value, cache);
                }
            }
        }
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|item| rewrite_files_dirs(item, cache)),
        Value::Tagged(tagged) => rewrite_files_dirs(&mut tagged.value, cache),
        _ => {}
    }
}
