//! Installing plugins into workspaces: the active resolver fetches into a fresh staging
//! directory, the staged tree is checked (name, size, `manifest.json`, the caller's `sha256`,
//! the org allow-list), the classifier extension says whether the change is hot or cold, the
//! tree is swapped in atomically through the runtime, the restart policy decides what happens to
//! the agent, and `workspace_plugins` records the source, tracked ref and revision.

pub mod deliver;
pub mod drift;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde_json::json;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::extensions::registry::FetchFailure;
use crate::extensions::types::{
    ChangeKind, DriftApplied, FetchError, FileChange, PluginInstalled, Reload, Source, Trigger,
};
use crate::locks::KeyedLocks;
use crate::runtime::{CONFIGS_ROOT, ContainerRuntime, RuntimeError};
use crate::safefs::{self, FileTree, RelPath, SafeFsError};
use crate::services::Services;
use crate::store::{self, StoreError};
use crate::workspaces::lifecycle::{self, RestartOutcome};
use crate::workspaces::{self, WorkspaceError};
use deliver::DeliveryError;

/// Largest staged plugin tree.
pub const MAX_PLUGIN_BYTES: u64 = 100 * 1024 * 1024;

/// What `track` asks drift detection to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Track {
    None,
    Tag(String),
    Sha(String),
}

impl Track {
    /// `none` (or empty), `tag:<x>` or `sha:<x>`, where `x` is 1-255 of `[A-Za-z0-9_./-]`
    /// without `..`.
    pub fn parse(raw: Option<&str>) -> Option<Track> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() || raw == "none" {
            return Some(Track::None);
        }
        let (kind, value) = raw.split_once(':')?;
        let ok = !value.is_empty()
            && value.len() <= 255
            && !value.contains("..")
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
        match (kind, ok) {
            ("tag", true) => Some(Track::Tag(value.to_owned())),
            ("sha", true) => Some(Track::Sha(value.to_owned())),
            _ => None,
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Track::None => "none".to_owned(),
            Track::Tag(tag) => format!("tag:{tag}"),
            Track::Sha(sha) => format!("sha:{sha}"),
        }
    }
}

/// A checked install request.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// As the caller wrote it (recorded for drift detection).
    pub source_raw: String,
    pub source: Source,
    /// Hex SHA-256 of `plugin.yaml` the caller expects.
    pub sha256: Option<String>,
    pub track: Track,
    /// Set when a drift update is applied: how many workspaces of the rollout were already
    /// updated (the restart policy sees a `drift-applied` trigger).
    pub drift: Option<u32>,
}

/// Why an install or uninstall failed; the HTTP edge maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid plugin source")]
    InvalidSource,
    #[error("unknown plugin source scheme")]
    UnknownScheme { available: Vec<String> },
    #[error("invalid plugin name")]
    InvalidName,
    /// The reasons below are the resolver's or git's words, made safe for an error body by
    /// `extensions::reason` (one line, bounded, no control characters, credentials, URL
    /// userinfo or local paths), or built from the host's own parts.
    #[error("invalid plugin source: {0}")]
    BadSource(String),
    #[error("plugin source not found: {0}")]
    NotFound(String),
    #[error("plugin source refused: {0}")]
    Denied(String),
    #[error("fetching the plugin failed: {0}")]
    Upstream(String),
    #[error("fetching the plugin timed out")]
    Timeout,
    #[error("plugin too large")]
    TooLarge,
    #[error("{0}")]
    Integrity(&'static str),
    #[error("plugin {0:?} is not in the org allowlist")]
    NotAllowed(String),
    #[error("plugin {0:?} is not installed")]
    NotInstalled(String),
    #[error("external workspaces have no config directory to install into")]
    External,
    #[error("workspace container not running")]
    Offline,
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for PluginError {
    fn from(err: StoreError) -> Self {
        PluginError::Workspace(WorkspaceError::Store(err))
    }
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub status: &'static str,
    pub plugin: String,
    pub source: String,
    pub reload: &'static str,
    pub restarting: bool,
    pub installed_sha: String,
}

/// Whether `name` may name a plugin directory: 1-128 of `[A-Za-z0-9._-]`, not starting with a
/// dot (dot directories are the swap's own).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Serialises installs and uninstalls of one plugin in one workspace, across every replica.
/// `wait: false` gives `None` at once when someone holds it.
pub(crate) async fn install_lock(
    svc: &Services,
    id: Uuid,
    name: &str,
    wait: bool,
) -> Result<Option<crate::cluster::KeyGuard>, StoreError> {
    static LOCKS: LazyLock<KeyedLocks<(Uuid, String)>> = LazyLock::new(KeyedLocks::default);
    let local = LOCKS.get((id, name.to_owned()));
    let key = format!("{id}/{name}");
    crate::cluster::lock_key(
        &svc.db,
        local,
        crate::cluster::PLUGIN_LOCK_CLASS,
        &key,
        wait,
    )
    .await
    .map_err(StoreError::from)
}

/// Where resolvers fetch into: one fresh temporary directory per install.
fn fetch_staging_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("plugin-staging")
}

/// Removes fetch directories a previous run of the host left behind (a crash mid-install);
/// called once at start, before any install can run.
pub fn clear_fetch_staging(data_dir: &std::path::Path) {
    let dir = fetch_staging_dir(data_dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::debug!(dir = %dir.display(), "cleared leftover plugin fetch directories")
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "clearing leftover plugin fetch directories failed")
        }
    }
}

/// The schemes the active resolvers serve.
pub fn schemes(svc: &Services) -> Vec<String> {
    let mut schemes: Vec<String> = svc
        .extensions
        .slot_versions()
        .into_iter()
        .filter(|(_, active, _)| active.is_some())
        .filter_map(|(slot, _, _)| slot.scheme().map(str::to_owned))
        .collect();
    schemes.sort();
    schemes.dedup();
    schemes
}

/// Parses `source` (a bare name is `local://name`) against the active schemes.
pub fn parse_source(svc: &Services, raw: &str) -> Result<Source, PluginError> {
    parse_source_among(schemes(svc), raw)
}

/// [`parse_source`] against the schemes `available` (what the active resolvers serve).
pub fn parse_source_among(available: Vec<String>, raw: &str) -> Result<Source, PluginError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(PluginError::InvalidSource);
    }
    let source = Source::parse(raw).ok_or(PluginError::InvalidSource)?;
    if !available.contains(&source.scheme) {
        return Err(PluginError::UnknownScheme { available });
    }
    if source.scheme == "local" && !valid_name(&source.location) {
        return Err(PluginError::InvalidName);
    }
    Ok(source)
}

/// The live workspace and the runtime that holds its files. The agent need not be running: a
/// plugin that arrives while a restart cycle replaces the agent, or while it is stopped, goes
/// into the workspace's stored files the way file writes do (the swap's steps work on both, and
/// the agent loads only plugins carrying `.complete`); a workspace with neither an agent nor
/// stored files is `Offline` (503) when the swap first touches them.
async fn with_files(
    svc: &Services,
    id: Uuid,
) -> Result<(store::workspaces::WorkspaceRow, Arc<dyn ContainerRuntime>), PluginError> {
    let row = workspaces::get_live(svc, id).await?;
    if row.runtime == "external" {
        return Err(PluginError::External);
    }
    let runtime = svc
        .lifecycle
        .runtime()
        .cloned()
        .ok_or(PluginError::Offline)?;
    Ok((row, runtime))
}

/// Installs (or reinstalls) a plugin into a workspace.
pub async fn install(
    svc: &Services,
    id: Uuid,
    req: InstallRequest,
) -> Result<Installed, PluginError> {
    let (row, runtime) = with_files(svc, id).await?;

    // Fetch into a fresh directory that only this install uses.
    let staging_root = fetch_staging_dir(&svc.config.data_dir);
    std::fs::create_dir_all(&staging_root).map_err(internal)?;
    let staging = tempfile::Builder::new()
        .prefix("molecule-plugin-fetch-")
        .tempdir_in(&staging_root)
        .map_err(internal)?;
    let fetched = svc
        .extensions
        .fetch(
            &req.source.scheme.clone(),
            req.source.clone(),
            staging.path(),
        )
        .await
        .map_err(fetch_error)?;
    if !valid_name(&fetched.name) {
        return Err(PluginError::InvalidName);
    }
    let name = fetched.name.clone();
    let path = staging.path().to_path_buf();
    let tree = tokio::task::spawn_blocking(move || safefs::collect_template(&path))
        .await
        .map_err(internal)?
        .map_err(|err| match err {
            SafeFsError::TooLarge(_) => PluginError::TooLarge,
            other => internal(other),
        })?;
    drop(staging);
    check_tree(&tree, req.sha256.as_deref())?;
    check_allowlist(svc, &row, &name).await?;

    let _held = install_lock(svc, id, &name, true).await?;
    let live = rel(&format!("plugins/{name}"));
    // Whether a live copy exists decides the snapshot step, so it must be known, not guessed
    // from a failed read.
    let live_exists = match runtime
        .list_files(id, CONFIGS_ROOT, Some(&rel("plugins")), 1)
        .await
    {
        Ok(entries) => entries.iter().any(|e| e.dir && e.path == live.as_str()),
        Err(RuntimeError::NotFound) => false,
        Err(RuntimeError::Offline) => return Err(PluginError::Offline),
        Err(err) => return Err(internal(err)),
    };
    let reload = if !live_exists {
        Reload::Cold("first install".to_owned())
    } else {
        match runtime.digests(id, Some(&live)).await {
            Err(err) => Reload::Cold(format!("the installed copy cannot be read: {err}")),
            Ok(live_digests) => {
                let changes = changes(&live_digests, &tree);
                if changes.is_empty() {
                    Reload::Hot
                } else {
                    svc.extensions.classify(changes).await
                }
            }
        }
    };
    let fault = svc.config.faults.plugin_reinstall.filter(|_| live_exists);
    deliver::swap(&runtime, id, &name, &tree, live_exists, fault).await?;

    store::plugins::upsert(
        &svc.db,
        id,
        &name,
        &req.source_raw,
        &req.track.as_string(),
        Some(&fetched.revision),
    )
    .await?;
    let trigger = match req.drift {
        Some(already_updated) => Trigger::DriftApplied(DriftApplied {
            plugin: name.clone(),
            already_updated,
        }),
        None => Trigger::PluginInstalled(PluginInstalled {
            name: name.clone(),
            reload: reload.clone(),
        }),
    };
    let outcome = lifecycle::request_restart(svc, id, trigger).await?;
    let restarting = matches!(outcome, RestartOutcome::Decided(d) if d.restarts());
    let reload_label = match reload {
        Reload::Hot => "hot",
        Reload::Cold(_) => "cold",
    };
    svc.events
        .emit(
            "PLUGIN_INSTALLED",
            Some(id),
            json!({ "plugin": name, "source": req.source_raw, "reload": reload_label, "installed_sha": fetched.revision }),
        )
        .await;
    tracing::info!(workspace_id = %id, plugin = %name, reload = reload_label, restarting, "plugin installed");
    Ok(Installed {
        status: "installed",
        plugin: name,
        source: req.source_raw,
        reload: reload_label,
        restarting,
        installed_sha: fetched.revision,
    })
}

/// Removes an installed plugin (and the skills its `plugin.yaml` lists), forgets its tracking
/// row and asks the restart policy.
pub async fn uninstall(svc: &Services, id: Uuid, name: &str) -> Result<bool, PluginError> {
    if !valid_name(name) {
        return Err(PluginError::InvalidName);
    }
    let (_, runtime) = with_files(svc, id).await?;
    let _held = install_lock(svc, id, name, true).await?;
    let live = rel(&format!("plugins/{name}"));
    let manifest = runtime
        .read_file(
            id,
            CONFIGS_ROOT,
            &live.join("plugin.yaml").expect("a valid path"),
        )
        .await;
    let installed = match &manifest {
        Ok(_) => true,
        Err(RuntimeError::NotFound) => runtime
            .digests(id, Some(&live))
            .await
            .is_ok_and(|d| !d.is_empty()),
        Err(_) => true,
    };
    if !installed {
        store::plugins::delete(&svc.db, id, name).await?;
        return Err(PluginError::NotInstalled(name.to_owned()));
    }
    for skill in manifest
        .ok()
        .map(|m| declared_skills(&m))
        .unwrap_or_default()
    {
        if let Ok(path) = RelPath::parse(&format!("skills/{skill}")) {
            let _ = runtime.remove_path(id, &path).await;
        }
    }
    runtime
        .remove_path(id, &live)
        .await
        .map_err(|err| match err {
            RuntimeError::Offline => PluginError::Offline,
            other => internal(other),
        })?;
    store::plugins::delete(&svc.db, id, name).await?;
    let trigger = Trigger::PluginInstalled(PluginInstalled {
        name: name.to_owned(),
        reload: Reload::Cold("uninstalled".to_owned()),
    });
    let outcome = lifecycle::request_restart(svc, id, trigger).await?;
    svc.events
        .emit("PLUGIN_UNINSTALLED", Some(id), json!({ "plugin": name }))
        .await;
    Ok(matches!(outcome, RestartOutcome::Decided(d) if d.restarts()))
}

/// One installed plugin.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    pub name: String,
    pub complete: bool,
    pub source: Option<String>,
    pub tracked_ref: Option<String>,
    pub installed_sha: Option<String>,
}

/// The plugins in the workspace's `/configs/plugins` (never the swap's dot directories), with
/// their tracking rows; empty when the agent is not running.
pub async fn list_installed(svc: &Services, id: Uuid) -> Result<Vec<InstalledPlugin>, PluginError> {
    workspaces::get_live(svc, id).await?;
    let Some(runtime) = svc.lifecycle.runtime().cloned() else {
        return Ok(Vec::new());
    };
    let plugins = rel("plugins");
    let listed = match runtime
        .list_files(id, CONFIGS_ROOT, Some(&plugins), 2)
        .await
    {
        Ok(listed) => listed,
        Err(_) => return Ok(Vec::new()),
    };
    let rows: HashMap<String, store::plugins::WorkspacePluginRow> =
        store::plugins::list_for_workspace(&svc.db, id)
            .await?
            .into_iter()
            .map(|r| (r.plugin_name.clone(), r))
            .collect();
    let mut out: Vec<InstalledPlugin> = Vec::new();
    for entry in listed.iter().filter(|e| e.dir) {
        let Some(name) = entry
            .path
            .strip_prefix("plugins/")
            .filter(|n| !n.contains('/'))
        else {
            continue;
        };
        if !valid_name(name) {
            continue;
        }
        let row = rows.get(name);
        out.push(InstalledPlugin {
            name: name.to_owned(),
            complete: deliver::is_marked(&listed, name),
            source: row.map(|r| r.source_raw.clone()),
            tracked_ref: row.map(|r| r.tracked_ref.clone()),
            installed_sha: row.and_then(|r| r.installed_sha.clone()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An entry of the local registry.
#[derive(Debug, Clone)]
pub struct RegistryPlugin {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub skills: Vec<String>,
    pub runtimes: Vec<String>,
}

/// `plugin.yaml` keys the listing shows.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PluginYaml {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    author: Option<String>,
    tags: Vec<String>,
    skills: Vec<String>,
    runtimes: Vec<String>,
}

/// The local registry's plugins (what `local://` sources name), optionally only those that
/// support `runtime` (an empty `runtimes` list means all; `-` and `_` match).
pub fn registry(svc: &Services, runtime: Option<&str>) -> Vec<RegistryPlugin> {
    let dir = svc
        .config
        .plugins_registry_dir
        .clone()
        .unwrap_or_else(|| svc.config.data_dir.join("plugins-registry"));
    let Ok(root) = safefs::RootDir::open(&dir) else {
        return Vec::new();
    };
    let entries = root.list(None, 1).unwrap_or_default();
    let norm = |s: &str| s.replace('-', "_").to_ascii_lowercase();
    let mut out = Vec::new();
    for entry in entries.iter().filter(|e| e.dir && valid_name(&e.path)) {
        let yaml = root
            .read_regular(&rel(&format!("{}/plugin.yaml", entry.path)), 256 * 1024)
            .ok()
            .and_then(|bytes| serde_yaml_ng::from_slice::<PluginYaml>(&bytes).ok())
            .unwrap_or_default();
        if let Some(want) = runtime
            && !yaml.runtimes.is_empty()
            && !yaml.runtimes.iter().any(|r| norm(r) == norm(want))
        {
            continue;
        }
        out.push(RegistryPlugin {
            name: yaml
                .name
                .clone()
                .filter(|n| valid_name(n))
                .unwrap_or_else(|| entry.path.clone()),
            version: yaml.version,
            description: yaml.description,
            author: yaml.author,
            tags: yaml.tags,
            skills: yaml.skills,
            runtimes: yaml.runtimes,
        });
    }
    out
}

fn declared_skills(plugin_yaml: &[u8]) -> Vec<String> {
    serde_yaml_ng::from_slice::<PluginYaml>(plugin_yaml)
        .map(|y| y.skills)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| valid_name(s))
        .collect()
}

fn rel(path: &str) -> RelPath {
    RelPath::parse(path).expect("a path built from a validated name")
}

fn internal(err: impl std::fmt::Display) -> PluginError {
    tracing::error!(error = %err, "plugin operation failed");
    PluginError::Internal(err.to_string())
}

/// A resolver failure as an install error. Messages from `FetchFailure::Fetch` were made safe
/// where they left the extension platform; a failed call is named by its label only (a trap's
/// text is the guest's backtrace, for the log).
fn fetch_error(err: FetchFailure) -> PluginError {
    match err {
        FetchFailure::NoResolver(_) => PluginError::InvalidSource,
        FetchFailure::Fetch(FetchError::NotFound(why)) => PluginError::NotFound(why),
        FetchFailure::Fetch(FetchError::InvalidSource(why)) => PluginError::BadSource(why),
        FetchFailure::Fetch(FetchError::Denied(why)) => PluginError::Denied(why),
        FetchFailure::Fetch(FetchError::TooLarge(_)) => PluginError::TooLarge,
        FetchFailure::Fetch(FetchError::Timeout) => PluginError::Timeout,
        FetchFailure::Fetch(FetchError::Upstream(why)) => PluginError::Upstream(why),
        FetchFailure::Failed { extension, error } => PluginError::Upstream(format!(
            "the resolver {extension} failed ({})",
            error.label()
        )),
        FetchFailure::Malformed { extension, reason } => {
            PluginError::Upstream(format!("the resolver {extension} answered {reason}"))
        }
    }
}

/// The size cap, `manifest.json` integrity and the caller's `plugin.yaml` digest.
fn check_tree(tree: &FileTree, sha256: Option<&str>) -> Result<(), PluginError> {
    let total: u64 = tree.files().iter().map(|f| f.data.len() as u64).sum();
    if total > MAX_PLUGIN_BYTES {
        return Err(PluginError::TooLarge);
    }
    if let Some(manifest) = tree.get("manifest.json") {
        let declared = serde_json::from_slice::<serde_json::Value>(&manifest.data)
            .ok()
            .and_then(|v| {
                v.get("sha256")
                    .and_then(|s| s.as_str())
                    .map(str::to_ascii_lowercase)
            });
        if let Some(declared) = declared {
            let mut files: Vec<_> = tree
                .files()
                .iter()
                .filter(|f| f.path.as_str() != "manifest.json")
                .collect();
            files.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
            let mut hasher = Sha256::new();
            for file in files {
                hasher.update(file.path.as_str().as_bytes());
                hasher.update([0u8]);
                hasher.update(&file.data);
            }
            if hex::encode(hasher.finalize()) != declared {
                return Err(PluginError::Integrity(
                    "plugin manifest integrity check failed",
                ));
            }
        }
    }
    if let Some(expected) = sha256 {
        let yaml = tree.get("plugin.yaml").ok_or(PluginError::Integrity(
            "sha256 given but the plugin has no plugin.yaml",
        ))?;
        if hex::encode(Sha256::digest(&yaml.data)) != expected.trim().to_ascii_lowercase() {
            return Err(PluginError::Integrity(
                "plugin.yaml does not match the given sha256",
            ));
        }
    }
    Ok(())
}

/// The org (the workspace's parent, else itself) may restrict which plugins it installs.
async fn check_allowlist(
    svc: &Services,
    row: &store::workspaces::WorkspaceRow,
    name: &str,
) -> Result<(), PluginError> {
    // The org is the tree's root, however deep the workspace sits (the original looked one level
    // up, so a grandchild was never checked).
    let chain = store::workspaces::ancestry(&svc.db, row.id, i64::from(u16::MAX)).await?;
    let org = chain.last().map_or(row.id, |(root, _)| *root);
    let allowed = store::plugins::allowlist(&svc.db, org).await?;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == name) {
        return Err(PluginError::NotAllowed(name.to_owned()));
    }
    Ok(())
}

/// File changes between the live plugin and the staged tree (`.complete` ignored).
fn changes(live: &BTreeMap<String, String>, staged: &FileTree) -> Vec<FileChange> {
    let staged: BTreeMap<&str, String> = staged
        .files()
        .iter()
        .filter(|f| f.path.as_str() != deliver::COMPLETE)
        .map(|f| (f.path.as_str(), safefs::digest(&f.data)))
        .collect();
    let mut out = Vec::new();
    for (path, digest) in &staged {
        match live.get(*path) {
            None => out.push(FileChange {
                path: (*path).to_owned(),
                kind: ChangeKind::Added,
                old_digest: None,
                new_digest: Some(digest.clone()),
            }),
            Some(old) if old != digest => out.push(FileChange {
                path: (*path).to_owned(),
                kind: ChangeKind::Modified,
                old_digest: Some(old.clone()),
                new_digest: Some(digest.clone()),
            }),
            Some(_) => {}
        }
    }
    for (path, old) in live {
        if path != deliver::COMPLETE && !staged.contains_key(path.as_str()) {
            out.push(FileChange {
                path: path.clone(),
                kind: ChangeKind::Removed,
                old_digest: Some(old.clone()),
                new_digest: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_fetch_directories_are_cleared_at_start() {
        let data = tempfile::tempdir().unwrap();
        let left = fetch_staging_dir(data.path()).join("molecule-plugin-fetch-x/plugin.yaml");
        std::fs::create_dir_all(left.parent().unwrap()).unwrap();
        std::fs::write(&left, "name: x\n").unwrap();
        clear_fetch_staging(data.path());
        assert!(!fetch_staging_dir(data.path()).exists());
        clear_fetch_staging(data.path());
    }

    #[test]
    fn track_values_are_checked() {
        assert_eq!(Track::parse(None), Some(Track::None));
        assert_eq!(Track::parse(Some("none")), Some(Track::None));
        assert_eq!(
            Track::parse(Some("tag:v1.2")),
            Some(Track::Tag("v1.2".into()))
        );
        assert_eq!(
            Track::parse(Some("sha:abc")),
            Some(Track::Sha("abc".into()))
        );
        for bad in [
            "latest",
            "tag:",
            "tag:a..b",
            "branch:main",
            "tag:a b",
            "sha:$(x)",
        ] {
            assert_eq!(Track::parse(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn plugin_names_never_reach_dot_directories_or_leave_plugins() {
        assert!(valid_name("memory"));
        assert!(valid_name("my_plugin-1.2"));
        for bad in ["", ".staging", ".previous", "a/b", "..", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn changes_compare_every_file_and_ignore_the_marker() {
        let mut live = BTreeMap::new();
        live.insert("plugin.yaml".to_owned(), safefs::digest(b"name: p\n"));
        live.insert("skills/a/SKILL.md".to_owned(), safefs::digest(b"old"));
        live.insert("gone.md".to_owned(), safefs::digest(b"x"));
        live.insert(".complete".to_owned(), safefs::digest(b"installed\n"));
        let mut staged = FileTree::new();
        staged.insert(rel("plugin.yaml"), "name: p\n", 0o644);
        staged.insert(rel("skills/a/SKILL.md"), "new", 0o644);
        staged.insert(rel("new.md"), "n", 0o644);
        let mut kinds: Vec<(String, ChangeKind)> = changes(&live, &staged)
            .into_iter()
            .map(|c| (c.path, c.kind))
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            vec![
                ("gone.md".to_owned(), ChangeKind::Removed),
                ("new.md".to_owned(), ChangeKind::Added),
                ("skills/a/SKILL.md".to_owned(), ChangeKind::Modified),
            ]
        );
    }

    #[test]
    fn manifest_integrity_and_the_callers_digest_are_enforced() {
        let mut tree = FileTree::new();
        tree.insert(rel("plugin.yaml"), "name: p\n", 0o644);
        tree.insert(rel("skills/a/SKILL.md"), "# A\n", 0o644);
        let mut hasher = Sha256::new();
        for (path, data) in [("plugin.yaml", "name: p\n"), ("skills/a/SKILL.md", "# A\n")] {
            hasher.update(path.as_bytes());
            hasher.update([0u8]);
            hasher.update(data.as_bytes());
        }
        let good = hex::encode(hasher.finalize());
        tree.insert(
            rel("manifest.json"),
            format!("{{\"sha256\":\"{good}\"}}"),
            0o644,
        );
        check_tree(&tree, None).unwrap();
        let yaml_digest = hex::encode(Sha256::digest(b"name: p\n"));
        check_tree(&tree, Some(&yaml_digest)).unwrap();
        assert!(matches!(
            check_tree(&tree, Some("00")),
            Err(PluginError::Integrity(_))
        ));
        tree.insert(rel("skills/a/SKILL.md"), "# tampered\n", 0o644);
        assert!(matches!(
            check_tree(&tree, None),
            Err(PluginError::Integrity(_))
        ));
    }
}
