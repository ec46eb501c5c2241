//! Org template YAML: the typed template, and the expansion of `!include` and `!external` on the
//! YAML node tree before it is typed. Expansion is synchronous and reads only through a
//! [`RootDir`]: the org root for the org's own files, and a root of the cache entry for
//! everything `!external` content names, so fetched content cannot climb out of its entry.
//! `!external` sources come from an [`ExternalSource`] (the resolver-backed cache in production,
//! a fake in tests). One template's whole expansion runs on a [`Budget`].

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

/// The total work one template's expansion may do. Includes may be repeated (the same file in
/// several branches is allowed), so without a total a few small files including each other in
/// lists grow exponentially (16 levels of 8-way fan-out is 8^15 reads). The largest real
/// templates we know of have a few hundred workspaces in a few dozen files, a few thousand
/// nodes and well under a megabyte of YAML; each limit leaves more than an order of magnitude
/// above that, and each bounds a different cost: file opens, bytes parsed, memory of the tree.
pub const MAX_DOCUMENTS: usize = 1_000;
/// The total size of every document read (see [`MAX_DOCUMENTS`]); 16 files at the per-file cap.
pub const MAX_TOTAL_YAML_BYTES: u64 = 16 * MAX_YAML_BYTES;
/// Nodes (mappings, sequences, scalars) in the expanded tree (see [`MAX_DOCUMENTS`]); a
/// workspace entry is typically 20 to 50.
pub const MAX_NODES: usize = 250_000;
/// `!external` tags one template may expand; each costs a remote revision lookup.
pub const MAX_EXTERNALS: usize = 64;

/// The key expansion puts on every mapping that came from `!external` content, valued with the
/// cache entry (relative to the org root) that content's paths resolve in. It is removed from
/// every document as it is read, so no content can claim an origin, and read back by the plan.
pub const ORIGIN_KEY: &str = "__molecule_origin";

/// An org template as written in `org.yaml`, after expansion. Fields this host does not act on
/// (channels) are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OrgTemplate {
    pub name: String,
    pub description: String,
    pub defaults: Defaults,
    pub workspaces: Vec<OrgWorkspace>,
    pub required_env: Vec<EnvRequirement>,
    pub recommended_env: Vec<EnvRequirement>,
    /// Memories seeded with scope GLOBAL onto the first root workspace, when this import creates
    /// it (`scope` is ignored).
    pub global_memories: Vec<TemplateMemory>,
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
    /// Minutes of idleness before a workspace is hibernated (0: never).
    pub hibernation_idle_minutes: Option<i64>,
    /// Memories seeded onto every workspace without its own `initial_memories`.
    pub initial_memories: Vec<TemplateMemory>,
    /// The `!external` cache entry these defaults came from (see [`ORIGIN_KEY`]).
    #[serde(rename = "__molecule_origin")]
    pub origin: Option<String>,
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
    /// Minutes of idleness before this workspace is hibernated (0: never); falls back to the
    /// defaults'.
    pub hibernation_idle_minutes: Option<i64>,
    pub required_env: Vec<EnvRequirement>,
    pub recommended_env: Vec<EnvRequirement>,
    pub children: Vec<OrgWorkspace>,
    /// Cron schedules created with `source: template` (see [`TemplateSchedule`]).
    pub schedules: Vec<TemplateSchedule>,
    /// Memories seeded when this import creates the workspace; absent: the defaults', `[]`:
    /// none.
    pub initial_memories: Option<Vec<TemplateMemory>>,
    /// `false` skips this workspace and its whole subtree.
    pub spawning: bool,
    /// The `!external` cache entry this entry came from (see [`ORIGIN_KEY`]); `None` for the
    /// org's own files.
    #[serde(rename = "__molecule_origin")]
    pub origin: Option<String>,
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
            hibernation_idle_minutes: None,
            required_env: Vec::new(),
            recommended_env: Vec::new(),
            children: Vec::new(),
            schedules: Vec::new(),
            initial_memories: None,
            spawning: true,
            origin: None,
        }
    }
}

/// `schedules:` on a workspace entry: `{name, cron_expr, timezone (UTC), prompt | prompt_file,
/// enabled (true)}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TemplateSchedule {
    pub name: String,
    pub cron_expr: String,
    pub timezone: Option<String>,
    pub prompt: Option<String>,
    /// Read like `initial_prompt_file`: inside the content that named it, never out of it.
    pub prompt_file: Option<String>,
    pub enabled: Option<bool>,
}

/// `initial_memories:` / `global_memories:` entries: `{content, scope (LOCAL)}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TemplateMemory {
    pub content: String,
    pub scope: Option<String>,
}

/// An absolute canvas position.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Canvas {
    pub x: f64,
    pub y: f64,
}

/// `NAME` or `{any_of: [A, B]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    let mut expander = Expander::new(root, externals);
    let scope = Scope {
        dir: root,
        origin: None,
    };
    let raw = expander.read(&scope, &file).map_err(|err| match err {
        OrgError::Expansion(message) if message.ends_with("not found") => OrgError::NotFound,
        other => other,
    })?;
    let expanded = expander.expand(raw, &scope, None)?;
    typed(expanded)
}

/// Types an already expanded template.
pub fn typed(value: Value) -> Result<OrgTemplate, OrgError> {
    serde_yaml_ng::from_value(value).map_err(|err| OrgError::Invalid(err.to_string()))
}

/// Types an inline template (it has no files and no origin, whatever it claims).
pub fn typed_inline(mut value: Value) -> Result<OrgTemplate, OrgError> {
    strip_origins(&mut value);
    typed(value)
}

/// A filesystem refusal as an expansion error naming the path (never its content), read in the
/// scope of `origin` (see [`root_name`]).
pub(super) fn fs_error(path: &RelPath, err: SafeFsError, origin: Option<&RelPath>) -> OrgError {
    OrgError::Expansion(fs_detail(path, err, origin))
}

/// What [`fs_error`] says.
pub(super) fn fs_detail(path: &RelPath, err: SafeFsError, origin: Option<&RelPath>) -> String {
    match err {
        SafeFsError::NotFound => format!("{path} not found"),
        SafeFsError::Escapes(_) => format!("{path} escapes {}", root_name(origin)),
        SafeFsError::NotRegular(_) => format!("{path} is not a regular file"),
        SafeFsError::TooLarge(detail) => detail,
        SafeFsError::InvalidPath => format!("{path} is not a valid path"),
        SafeFsError::Io(err) => format!("{path}: {}", err.kind()),
    }
}

/// What a path named by `origin`'s content must stay inside, for error messages.
pub(super) fn root_name(origin: Option<&RelPath>) -> &'static str {
    match origin {
        None => "the org root",
        Some(_) => "its !external content",
    }
}

/// Where the paths of the document being expanded resolve: the org root (`origin` `None`) or
/// the root of one `!external` cache entry (`origin` is the entry, relative to the org root).
struct Scope<'r> {
    dir: &'r RootDir,
    origin: Option<&'r RelPath>,
}

impl Scope<'_> {
    /// A path of this scope as a key unique across scopes (cycle detection).
    fn key(&self, path: &RelPath) -> String {
        match self.origin {
            None => path.to_string(),
            Some(origin) => format!("{origin}/{path}"),
        }
    }
}

/// What one template's expansion has used so far (see [`MAX_DOCUMENTS`]).
#[derive(Debug, Default)]
struct Budget {
    documents: usize,
    bytes: u64,
    nodes: usize,
    externals: usize,
}

fn over_budget(what: String) -> OrgError {
    OrgError::Expansion(format!(
        "the template expands beyond its budget: {what} (!include and !external count)"
    ))
}

impl Budget {
    fn document(&mut self) -> Result<(), OrgError> {
        self.documents += 1;
        if self.documents > MAX_DOCUMENTS {
            return Err(over_budget(format!(
                "more than {MAX_DOCUMENTS} documents read"
            )));
        }
        Ok(())
    }

    fn bytes(&mut self, read: usize) -> Result<(), OrgError> {
        self.bytes = self.bytes.saturating_add(read as u64);
        if self.bytes > MAX_TOTAL_YAML_BYTES {
            return Err(over_budget(format!(
                "more than {MAX_TOTAL_YAML_BYTES} bytes of YAML read"
            )));
        }
        Ok(())
    }

    fn node(&mut self) -> Result<(), OrgError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(over_budget(format!("more than {MAX_NODES} nodes")));
        }
        Ok(())
    }

    fn external(&mut self) -> Result<(), OrgError> {
        self.externals += 1;
        if self.externals > MAX_EXTERNALS {
            return Err(over_budget(format!(
                "more than {MAX_EXTERNALS} !external tags"
            )));
        }
        Ok(())
    }
}

/// Where an included file came from, for cycle detection.
struct Frame {
    key: String,
}

struct Expander<'a> {
    /// The org root: where the `!external` cache lives.
    root: &'a RootDir,
    externals: &'a dyn ExternalSource,
    stack: Vec<Frame>,
    budget: Budget,
}

impl<'a> Expander<'a> {
    fn new(root: &'a RootDir, externals: &'a dyn ExternalSource) -> Self {
        Expander {
            root,
            externals,
            stack: Vec::new(),
            budget: Budget::default(),
        }
    }

    /// Reads and parses one document of `scope`, on the budget, without any origin it claims.
    fn read(&mut self, scope: &Scope<'_>, path: &RelPath) -> Result<Value, OrgError> {
        self.budget.document()?;
        let bytes = scope
            .dir
            .read_regular(path, MAX_YAML_BYTES)
            .map_err(|err| fs_error(path, err, scope.origin))?;
        self.budget.bytes(bytes.len())?;
        let mut value: Value = serde_yaml_ng::from_slice(&bytes)
            .map_err(|err| OrgError::Expansion(format!("{path}: invalid YAML: {err}")))?;
        strip_origins(&mut value);
        Ok(value)
    }

    /// Expands `value`, a node of a document of `scope` whose directory is `dir` (the scope's
    /// root when `None`).
    fn expand(
        &mut self,
        value: Value,
        scope: &Scope<'_>,
        dir: Option<&RelPath>,
    ) -> Result<Value, OrgError> {
        self.budget.node()?;
        match value {
            Value::Mapping(map) => {
                let mut out = Mapping::with_capacity(map.len());
                for (key, value) in map {
                    out.insert(key, self.expand(value, scope, dir)?);
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => items
                .into_iter()
                .map(|item| self.expand(item, scope, dir))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Sequence),
            Value::Tagged(tagged) => {
                if tagged.tag == "include" {
                    self.include(tagged.value, scope, dir)
                } else if tagged.tag == "external" {
                    self.external(tagged.value)
                } else {
                    let tag = tagged.tag.to_string();
                    if tag.starts_with("!!") || tag.starts_with("tag:yaml.org,2002:") {
                        self.expand(tagged.value, scope, dir)
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

    fn include(
        &mut self,
        value: Value,
        scope: &Scope<'_>,
        dir: Option<&RelPath>,
    ) -> Result<Value, OrgError> {
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
        // Lexically first (so `..` past the scope's root is refused before anything is opened),
        // then opened through the scope's root (so no symlink leaves it either).
        let path = RelPath::resolve(dir, &raw).map_err(|err| match err {
            SafeFsError::Escapes(_) => OrgError::Expansion(format!(
                "!include {raw}: path escapes {}",
                root_name(scope.origin)
            )),
            _ => OrgError::Expansion(format!("!include {raw}: invalid path")),
        })?;
        self.enter(scope.key(&path))?;
        let expanded = self
            .read(scope, &path)
            .and_then(|parsed| self.expand(parsed, scope, path.parent().as_ref()));
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
        self.budget.external()?;
        let CachedExternal { dir: cache, .. } = self.externals.fetch(&reference)?;
        // The entry is a root of its own: whatever its content names (includes, nested
        // documents, and later files_dir and prompt files) stays inside it.
        let entry = self.root.open_dir(&cache).map_err(|err| {
            tracing::error!(cache = %cache, error = %err, "opening an external cache entry failed");
            OrgError::Cache(format!(
                "the external cache for {} cannot be read",
                reference.repo_key()
            ))
        })?;
        let scope = Scope {
            dir: &entry,
            origin: Some(&cache),
        };
        let path = reference.path.clone();
        self.enter(scope.key(&path))?;
        let expanded = self
            .read(&scope, &path)
            .and_then(|parsed| self.expand(parsed, &scope, path.parent().as_ref()));
        self.stack.pop();
        let mut expanded = expanded?;
        mark_origin(&mut expanded, &cache);
        Ok(expanded)
    }
}

/// Puts [`ORIGIN_KEY`]`: cache` on every mapping in `value` that has no origin yet (a nested
/// `!external` marked its own mappings first).
fn mark_origin(value: &mut Value, cache: &RelPath) {
    match value {
        Value::Mapping(map) => {
            for (_, value) in map.iter_mut() {
                mark_origin(value, cache);
            }
            if !map.contains_key(ORIGIN_KEY) {
                map.insert(
                    Value::String(ORIGIN_KEY.to_owned()),
                    Value::String(cache.to_string()),
                );
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|item| mark_origin(item, cache)),
        Value::Tagged(tagged) => mark_origin(&mut tagged.value, cache),
        _ => {}
    }
}

/// Removes every [`ORIGIN_KEY`] from `value`.
fn strip_origins(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.remove(ORIGIN_KEY);
            for (_, value) in map.iter_mut() {
                strip_origins(value);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_origins),
        Value::Tagged(tagged) => strip_origins(&mut tagged.value),
        _ => {}
    }
}
