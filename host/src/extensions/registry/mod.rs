//! Slots and versions: uploaded components stored by digest, the active and shadow version of
//! each slot, atomic swaps, rollback through the activation history, and shadow runs; and the
//! calls into each slot (classify, decide, fetch, resolve-revision) with their fallbacks.
//!
//! `manifest` is what an upload declares, `storage` keeps component bytes and loads versions,
//! `versions` is the operator's verbs (upload, activate, roll back, shadow, delete),
//! `resolvers` the fetch and revision calls, `shadow` the classify and decide calls with their
//! shadow runs and report.

mod manifest;
mod resolvers;
mod shadow;
mod storage;
mod versions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use uuid::Uuid;

use super::engine::ExtensionEngine;
use super::metrics::ExtensionMetrics;
use super::policy::Clamp;
use super::remote::{Credentials, RemoteConfig, RemoteHost};
use super::runtime::{CallError, Extension, LoadError};
use super::types::{FetchError, FetchQuotas};
use crate::events::EventBus;
use crate::store::{self, Db, StoreError, extensions::ExtensionRow};

pub use manifest::{Grants, Manifest, Slot, effective_limits};
pub use shadow::ShadowReport;

/// The name under which the local plugin registry can be granted read-only to a resolver
/// (`"read_only_dirs": ["plugins-registry"]`); its path works too.
pub const PLUGINS_REGISTRY_GRANT: &str = "plugins-registry";
/// Largest component accepted for upload.
pub const MAX_COMPONENT_BYTES: usize = 16 * 1024 * 1024;

/// Errors of registry operations; the HTTP layer maps each once.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid manifest: {0}")]
    InvalidManifest(&'static str),
    #[error("component rejected: {0}")]
    Rejected(#[from] LoadError),
    #[error("component failed its self-check: {0}")]
    SelfCheck(CallError),
    #[error("extension not found")]
    NotFound,
    #[error("this version is already stored")]
    Duplicate(Box<ExtensionRow>),
    #[error("the active version of a slot cannot be deleted")]
    Active,
    #[error("a built-in version cannot be deleted")]
    Builtin,
    #[error("this version is not shadowing its slot")]
    NotShadowing,
    #[error("nothing to roll back to")]
    NoPrevious,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("extension storage failed")]
    Io(#[source] std::io::Error),
}

/// Why a fetch (or a revision lookup) produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    /// No resolver is active for the scheme.
    #[error("no resolver for scheme `{0}`")]
    NoResolver(String),
    /// The resolver (or the host's side of `remote`) answered with an error.
    #[error(transparent)]
    Fetch(FetchError),
    /// The resolver trapped, overran its deadline or memory cap, or could not start.
    #[error("the resolver {extension} failed: {error}")]
    Failed { extension: String, error: CallError },
    /// The resolver answered something the host cannot use.
    #[error("the resolver {extension} answered {reason}")]
    Malformed {
        extension: String,
        reason: &'static str,
    },
}

/// How the host serves resolvers. `Default` is what a host without configuration gets: no
/// credentials, https only, the default quotas.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// Tokens per remote host, attached by the host to requests for that host.
    pub credentials: Credentials,
    /// Extra environment for git (e.g. `GIT_CONFIG_*` URL rewrites).
    pub git_env: Vec<(String, String)>,
    /// `GIT_ALLOW_PROTOCOL`; see [`RemoteConfig::allowed_protocols`].
    pub allowed_protocols: String,
    /// Wall-time limit of one remote operation.
    pub timeout: Duration,
    pub quotas: FetchQuotas,
    /// Whether a remote source without a `#ref` may be fetched; it then means the upstream's
    /// `HEAD`. Off by default: an unpinned source changes under the operator's feet.
    pub allow_unpinned: bool,
    /// The local plugin registry, grantable read-only as `plugins-registry`. `None` means
    /// `<data_dir>/plugins-registry` (created if missing), which needs no configuration.
    pub registry_dir: Option<PathBuf>,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        let remote = RemoteConfig::new(PathBuf::new());
        ResolverSettings {
            credentials: Credentials::default(),
            git_env: Vec::new(),
            allowed_protocols: remote.allowed_protocols,
            timeout: remote.timeout,
            quotas: FetchQuotas::default(),
            allow_unpinned: false,
            registry_dir: None,
        }
    }
}

/// A loaded version and its database id.
#[derive(Debug)]
pub struct Loaded {
    pub id: Uuid,
    pub ext: Arc<Extension>,
}

#[derive(Debug, Default)]
struct SlotState {
    active: ArcSwapOption<Loaded>,
    shadow: ArcSwapOption<Loaded>,
}

impl SlotState {
    fn install(&self, loaded: Arc<Loaded>, shadow: bool) {
        if shadow {
            self.shadow.store(Some(loaded))
        } else {
            self.active.store(Some(loaded))
        }
    }
}

/// The extension platform as the rest of the host sees it.
#[derive(Debug)]
pub struct ExtensionHost {
    engine: ExtensionEngine,
    pub metrics: ExtensionMetrics,
    pub clamp: Clamp,
    db: Db,
    events: EventBus,
    components_dir: PathBuf,
    slots: RwLock<HashMap<Slot, Arc<SlotState>>>,
    remote: Arc<RemoteHost>,
    quotas: FetchQuotas,
    /// Directories this host can grant read-only to resolvers, by grant name.
    grantable_dirs: Vec<(String, PathBuf)>,
    allow_unpinned: bool,
}

/// The default components and the slots they fill on first start.
const BUILTINS: &[(&str, &str)] = &[
    ("skill-classifier", "classifier"),
    ("default-restart-policy", "restart-policy"),
    ("local-resolver", "resolver:local"),
    ("git-resolver", "resolver:github"),
    ("git-resolver", "resolver:git"),
];

/// What the default components ask for. The resolvers' deadlines count only their own work:
/// the git transfers they ask of the host have their own timeout.
fn builtin_grants(name: &str) -> Grants {
    match name {
        "local-resolver" => Grants {
            deadline_ms: Some(5000),
            read_only_dirs: vec![PLUGINS_REGISTRY_GRANT.to_owned()],
            ..Grants::default()
        },
        "git-resolver" => Grants {
            deadline_ms: Some(2000),
            allowed_hosts: vec!["github.com".to_owned()],
            ..Grants::default()
        },
        _ => Grants::default(),
    }
}

impl ExtensionHost {
    /// Opens the engine and cache under `data_dir`, loads every slot's active and shadow version,
    /// and on first start installs and activates the default components found in `builtin_dir`.
    /// Resolvers get the default [`ResolverSettings`].
    pub async fn start(
        db: Db,
        events: EventBus,
        data_dir: &Path,
        builtin_dir: Option<&Path>,
    ) -> anyhow::Result<Arc<Self>> {
        Self::start_with(
            db,
            events,
            data_dir,
            builtin_dir,
            ResolverSettings::default(),
        )
        .await
    }

    /// [`ExtensionHost::start`] with resolver settings (credentials, git environment, quotas,
    /// the local registry's location).
    pub async fn start_with(
        db: Db,
        events: EventBus,
        data_dir: &Path,
        builtin_dir: Option<&Path>,
        settings: ResolverSettings,
    ) -> anyhow::Result<Arc<Self>> {
        let root = data_dir.join("extensions");
        let engine = ExtensionEngine::new(&root.join("compiled"))?;
        engine.start_ticker();
        let components_dir = root.join("components");
        std::fs::create_dir_all(&components_dir)?;
        // The local plugin registry: `<data_dir>/plugins-registry` unless configured, created
        // here so the local resolver's grant always opens.
        let registry_dir = settings
            .registry_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("plugins-registry"));
        std::fs::create_dir_all(&registry_dir)?;
        let remote = RemoteHost::new(
            RemoteConfig {
                timeout: settings.timeout,
                allowed_protocols: settings.allowed_protocols.clone(),
                extra_env: settings.git_env.clone(),
                ..RemoteConfig::new(root.join("scratch"))
            },
            settings.credentials.clone(),
        )?;
        let host = Arc::new(ExtensionHost {
            engine,
            metrics: ExtensionMetrics::default(),
            clamp: Clamp::default(),
            db,
            events,
            components_dir,
            slots: RwLock::new(HashMap::new()),
            remote: Arc::new(remote),
            quotas: settings.quotas,
            grantable_dirs: vec![(PLUGINS_REGISTRY_GRANT.to_owned(), registry_dir)],
            allow_unpinned: settings.allow_unpinned,
        });
        host.backfill_blobs().await?;
        for slot in store::extensions::slots(&host.db).await? {
            let Some(name) = Slot::parse(&slot.slot) else {
                continue;
            };
            for (id, shadow) in [(slot.active_id, false), (slot.shadow_id, true)] {
                let Some(id) = id else { continue };
                match host.load_by_id(id).await {
                    Ok(loaded) => host.slot(&name).install(loaded, shadow),
                    Err(err) => {
                        tracing::error!(slot = %slot.slot, %id, error = %err, "cannot load a stored extension; the slot falls back")
                    }
                }
            }
        }
        if let Some(dir) = builtin_dir {
            host.install_builtins(dir).await;
        }
        Ok(host)
    }

    pub fn stop(&self) {
        self.engine.stop_ticker();
    }

    fn slot(&self, slot: &Slot) -> Arc<SlotState> {
        if let Some(state) = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(slot)
        {
            return state.clone();
        }
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(slot.clone())
            .or_default()
            .clone()
    }

    async fn install_builtins(&self, dir: &Path) {
        for (name, slot) in BUILTINS {
            let slot = Slot::parse(slot).expect("builtin slots are valid");
            if self.slot(&slot).active.load().is_some() {
                continue;
            }
            let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
            let Ok(bytes) = std::fs::read(&path) else {
                tracing::warn!(path = %path.display(), "default extension not built (run `make plugins`); the slot uses the host's built-in fallback");
                continue;
            };
            let manifest = Manifest {
                name: (*name).to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                slot: slot.as_str().to_owned(),
                grants: builtin_grants(name),
            };
            let row = match self.upload(manifest, bytes.clone(), None, true).await {
                Ok(row) => row,
                // Known to the database but its bytes may be gone from this data dir (a wiped
                // disk, another replica's volume): put them back before activating.
                Err(RegistryError::Duplicate(row)) => {
                    match self.store_component(&row.digest, &bytes).await {
                        Ok(()) => *row,
                        Err(err) => {
                            tracing::error!(extension = name, error = %err, "restoring a default extension failed");
                            continue;
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(extension = name, error = %err, "installing a default extension failed");
                    continue;
                }
            };
            match self.activate(row.id).await {
                Ok(_) => tracing::info!(
                    extension = name,
                    slot = slot.as_str(),
                    "default extension activated"
                ),
                Err(err) => {
                    tracing::error!(extension = name, error = %err, "activating a default extension failed")
                }
            }
        }
    }

    /// The active version of `slot`, as loaded.
    pub fn active_extension(&self, slot: &Slot) -> Option<Arc<Extension>> {
        self.slot(slot).active.load_full().map(|l| l.ext.clone())
    }

    /// The active and shadow version ids of every slot.
    pub fn slot_versions(&self) -> Vec<(Slot, Option<Uuid>, Option<Uuid>)> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = slots
            .iter()
            .map(|(slot, state)| {
                (
                    slot.clone(),
                    state.active.load().as_ref().map(|l| l.id),
                    state.shadow.load().as_ref().map(|l| l.id),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }
}
