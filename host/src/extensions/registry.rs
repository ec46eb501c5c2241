//! Slots and versions: uploaded components stored by digest, the active and shadow version of
//! each slot, atomic swaps, rollback through the activation history, and shadow runs; and the
//! calls into each slot (classify, decide, fetch, resolve-revision) with their fallbacks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::{self, ExtensionEngine, MAX_GUEST_MEMORY};
use super::metrics::ExtensionMetrics;
use super::policy::{self, Clamp};
use super::remote::{Credentials, RemoteConfig, RemoteHost};
use super::runtime::{CallError, Extension, Identity, Limits, LoadError, ResolverAccess};
use super::types::{
    Decision, FetchError, FetchQuotas, Fetched, FileChange, Reload, SlotKind, Source, Trigger,
    WorkspaceInfo,
};
use crate::events::EventBus;
use crate::store::{self, Db, StoreError, extensions::ExtensionRow};

/// Largest deadline any grant may give a call. For a resolver it counts the guest's own time;
/// the git work it asks of the host is bounded by [`ResolverSettings::timeout`].
const MAX_DEADLINE: Duration = Duration::from_secs(5);
/// The name under which the local plugin registry can be granted read-only to a resolver
/// (`"read_only_dirs": ["plugins-registry"]`); its path works too.
pub const PLUGINS_REGISTRY_GRANT: &str = "plugins-registry";
/// Largest component accepted for upload.
pub const MAX_COMPONENT_BYTES: usize = 16 * 1024 * 1024;

/// A slot name: `classifier`, `restart-policy` or `resolver:<scheme>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Slot(String);

impl Slot {
    pub fn parse(raw: &str) -> Option<Slot> {
        let valid = match raw.strip_prefix("resolver:") {
            Some(scheme) => {
                !scheme.is_empty()
                    && scheme.len() <= 32
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }
            None => matches!(raw, "classifier" | "restart-policy"),
        };
        valid.then(|| Slot(raw.to_owned()))
    }

    pub fn kind(&self) -> SlotKind {
        match self.0.as_str() {
            "classifier" => SlotKind::Classifier,
            "restart-policy" => SlotKind::RestartPolicy,
            _ => SlotKind::Resolver,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme of a `resolver:<scheme>` slot.
    pub fn scheme(&self) -> Option<&str> {
        self.0.strip_prefix("resolver:")
    }
}

/// What an extension asks for; the operator's confirmation and the host's maximum cut it down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Grants {
    pub deadline_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// Resolvers only: hosts (`name` or `name:port`) `remote` calls may reach.
    pub allowed_hosts: Vec<String>,
    /// Resolvers only: directories mounted read-only, by the name the host offers them under
    /// (`plugins-registry`) or by their path.
    pub read_only_dirs: Vec<String>,
}

/// The manifest uploaded with a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub slot: String,
    #[serde(default)]
    pub grants: Grants,
}

/// The intersection of what the manifest requests, what the operator confirmed and the host max.
pub fn effective_limits(requested: &Grants, confirmed: Option<&Grants>) -> Limits {
    let defaults = Limits::default();
    let pick = |req: Option<u64>, conf: Option<u64>, default: u64, max: u64| {
        let mut value = req.unwrap_or(default);
        if let Some(conf) = conf {
            value = value.min(conf);
        }
        value.min(max)
    };
    let deadline_ms = pick(
        requested.deadline_ms,
        confirmed.and_then(|c| c.deadline_ms),
        defaults.deadline.as_millis() as u64,
        MAX_DEADLINE.as_millis() as u64,
    );
    let memory_mb = pick(
        requested.memory_mb,
        confirmed.and_then(|c| c.memory_mb),
        (defaults.memory_bytes / (1024 * 1024)) as u64,
        (MAX_GUEST_MEMORY / (1024 * 1024)) as u64,
    );
    Limits {
        deadline: Duration::from_millis(deadline_ms.max(1)),
        memory_bytes: (memory_mb.max(1) as usize) * 1024 * 1024,
    }
}

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

    /// Writes a component's bytes under its digest (write, then rename), unless already there.
    async fn store_component(&self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let path = self.component_path(digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp-{}", Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(RegistryError::Io)?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(RegistryError::Io)
    }

    /// A component's bytes: from this replica's cache, else from the database (stored by
    /// another replica), checked against the digest and cached.
    async fn component_bytes(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        match tokio::fs::read(self.component_path(digest)).await {
            Ok(bytes) => Ok(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let bytes = store::extensions::get_blob(&self.db, digest)
                    .await?
                    .ok_or(RegistryError::Io(err))?;
                if engine::digest(&bytes) != digest {
                    return Err(RegistryError::InvalidManifest(
                        "stored component does not match its digest",
                    ));
                }
                self.store_component(digest, &bytes).await?;
                Ok(bytes)
            }
            Err(err) => Err(RegistryError::Io(err)),
        }
    }

    /// Copies into the database the bytes of versions stored before it kept them, so other
    /// replicas can load them.
    async fn backfill_blobs(&self) -> Result<(), RegistryError> {
        for digest in store::extensions::digests_without_blob(&self.db).await? {
            match tokio::fs::read(self.component_path(&digest)).await {
                Ok(bytes) => store::extensions::put_blob(&self.db, &digest, &bytes).await?,
                Err(err) => {
                    tracing::warn!(%digest, error = %err, "a stored extension's component is missing here")
                }
            }
        }
        Ok(())
    }

    /// Brings this replica's slots in line with the database after another replica activated,
    /// rolled back, shadowed or deleted a version: each slot whose stored active or shadow id
    /// differs from the loaded one loads the stored version by digest and swaps it in. Returns
    /// how many swaps it made.
    pub async fn sync(&self) -> Result<usize, RegistryError> {
        let mut swapped = 0;
        for row in store::extensions::slots(&self.db).await? {
            let Some(slot) = Slot::parse(&row.slot) else {
                continue;
            };
            let state = self.slot(&slot);
            for (want, shadow) in [(row.active_id, false), (row.shadow_id, true)] {
                let cell = if shadow { &state.shadow } else { &state.active };
                if cell.load().as_ref().map(|l| l.id) == want {
                    continue;
                }
                match want {
                    None => cell.store(None),
                    Some(id) => match self.load_by_id(id).await {
                        Ok(loaded) => cell.store(Some(loaded)),
                        Err(err) => {
                            tracing::error!(slot = slot.as_str(), %id, error = %err, "cannot load the version another replica chose; the slot keeps its current one");
                            continue;
                        }
                    },
                }
                swapped += 1;
                tracing::info!(slot = slot.as_str(), id = ?want, shadow, "extension slot follows the database");
            }
        }
        Ok(swapped)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.components_dir
            .join(format!("{}.wasm", digest.trim_start_matches("sha256:")))
    }

    async fn load_by_id(&self, id: Uuid) -> Result<Arc<Loaded>, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        self.load_row(&row).await
    }

    async fn load_row(&self, row: &ExtensionRow) -> Result<Arc<Loaded>, RegistryError> {
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::InvalidManifest("unknown slot"))?;
        let manifest: Manifest = serde_json::from_value(row.manifest.clone())
            .map_err(|_| RegistryError::InvalidManifest("stored manifest unreadable"))?;
        let confirmed: Option<Grants> = row
            .manifest
            .get("confirmed")
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        let bytes = self.component_bytes(&row.digest).await?;
        let identity = Identity {
            name: row.name.clone(),
            version: row.version.clone(),
            digest: row.digest.clone(),
        };
        let limits = effective_limits(&manifest.grants, confirmed.as_ref());
        let access = self.resolver_access(&manifest.grants, confirmed.as_ref());
        let engine = self.engine.clone();
        let ext = tokio::task::spawn_blocking(move || {
            Extension::load_with_access(&engine, slot.kind(), identity, &bytes, limits, access)
        })
        .await
        .map_err(|_| RegistryError::Unsupported("loading was aborted"))??;
        Ok(Arc::new(Loaded {
            id: row.id,
            ext: Arc::new(ext),
        }))
    }

    /// Validates a component (world, API version, imports, a self-check call) and stores it.
    pub async fn upload(
        &self,
        manifest: Manifest,
        bytes: Vec<u8>,
        confirmed: Option<Grants>,
        builtin: bool,
    ) -> Result<ExtensionRow, RegistryError> {
        let slot = Slot::parse(&manifest.slot).ok_or(RegistryError::InvalidManifest(
            "slot must be classifier, restart-policy or resolver:<scheme>",
        ))?;
        let text_ok =
            |s: &str| !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_graphic());
        if !text_ok(&manifest.name) || !text_ok(&manifest.version) {
            return Err(RegistryError::InvalidManifest(
                "name and version must be 1-100 printable characters",
            ));
        }
        if slot.kind() == SlotKind::Resolver
            && manifest
                .grants
                .read_only_dirs
                .iter()
                .any(|dir| self.grantable_dir(dir).is_none())
        {
            return Err(RegistryError::InvalidManifest(
                "read_only_dirs may only name plugins-registry",
            ));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(RegistryError::InvalidManifest(
                "component larger than 16 MiB",
            ));
        }
        let digest = engine::digest(&bytes);
        if let Some(existing) =
            store::extensions::find_by_digest(&self.db, slot.as_str(), &digest).await?
        {
            return Err(RegistryError::Duplicate(Box::new(existing)));
        }
        let limits = effective_limits(&manifest.grants, confirmed.as_ref());
        let identity = Identity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: digest.clone(),
        };
        let engine = self.engine.clone();
        let kind = slot.kind();
        let checked = bytes.clone();
        let scheme = slot.scheme().map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let ext = Extension::load(&engine, kind, identity, &checked, limits)?;
            match scheme {
                // A resolver's self-check is `schemes`, which must include the slot's scheme.
                Some(scheme) => {
                    let served = ext.schemes().map_err(RegistryError::SelfCheck)?;
                    if !served.contains(&scheme) {
                        return Err(LoadError::WrongScheme { scheme, served }.into());
                    }
                }
                None => {
                    ext.self_check().map_err(RegistryError::SelfCheck)?;
                }
            }
            Ok::<_, RegistryError>(())
        })
        .await
        .map_err(|_| RegistryError::Unsupported("validation was aborted"))??;

        self.store_component(&digest, &bytes).await?;
        store::extensions::put_blob(&self.db, &digest, &bytes).await?;
        let mut stored_manifest = serde_json::to_value(&manifest).unwrap_or(Value::Null);
        if let Some(confirmed) = &confirmed {
            stored_manifest["confirmed"] = serde_json::to_value(confirmed).unwrap_or(Value::Null);
        }
        let row = ExtensionRow {
            id: Uuid::new_v4(),
            name: manifest.name,
            version: manifest.version,
            slot: slot.as_str().to_owned(),
            digest,
            manifest: stored_manifest,
            builtin,
            created_at: Utc::now(),
        };
        if let Err(err) = store::extensions::insert(&self.db, &row).await {
            // The same component stored meanwhile (another replica installing the defaults on
            // the same empty database): theirs is the row.
            if matches!(err, StoreError::Constraint(_))
                && let Some(existing) =
                    store::extensions::find_by_digest(&self.db, &row.slot, &row.digest).await?
            {
                return Err(RegistryError::Duplicate(Box::new(existing)));
            }
            return Err(err.into());
        }
        tracing::info!(extension = %row.name, version = %row.version, slot = %row.slot, digest = %row.digest, "extension stored");
        Ok(row)
    }

    /// Makes `id` the active version of its slot. Calls already running finish on the version
    /// they started with: they hold their own reference to it.
    pub async fn activate(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        self.activate_with(id, "activated").await
    }

    async fn activate_with(&self, id: Uuid, action: &str) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let loaded = self.load_row(&row).await?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        store::extensions::activate(&self.db, slot.as_str(), id, action).await?;
        let state = self.slot(&slot);
        state.active.store(Some(loaded));
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            state.shadow.store(None);
        }
        tracing::info!(slot = slot.as_str(), extension = %row.name, version = %row.version, digest = %row.digest, action, "extension slot swapped");
        let event = if action == "rolled_back" {
            "EXTENSION_ROLLED_BACK"
        } else {
            "EXTENSION_ACTIVATED"
        };
        self.events
            .emit(event, None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// The version a rollback of `slot` would re-activate: the newest one in its activation
    /// history that is not the current one (deleting a version drops it from the history).
    pub async fn previous(&self, slot: &Slot) -> Result<Option<Uuid>, RegistryError> {
        let history = store::extensions::activation_history(&self.db, slot.as_str()).await?;
        let current = self.slot(slot).active.load().as_ref().map(|l| l.id);
        Ok(history.into_iter().find(|id| Some(*id) != current))
    }

    /// Re-activates the version that was active before the current one.
    pub async fn rollback(&self, slot: &Slot) -> Result<ExtensionRow, RegistryError> {
        let previous = self
            .previous(slot)
            .await?
            .ok_or(RegistryError::NoPrevious)?;
        self.activate_with(previous, "rolled_back").await
    }

    /// Runs `id` in shadow beside its slot's active version.
    pub async fn shadow(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        if slot.kind() == SlotKind::Resolver {
            // A shadow fetch would repeat every transfer into a second destination; resolvers
            // are swapped and rolled back, not shadowed.
            return Err(RegistryError::Unsupported(
                "resolver slots do not run shadows",
            ));
        }
        let state = self.slot(&slot);
        if state.active.load().as_ref().is_some_and(|a| a.id == id) {
            return Err(RegistryError::Unsupported(
                "the active version cannot shadow itself",
            ));
        }
        if !store::extensions::set_shadow(&self.db, slot.as_str(), Some(id)).await? {
            return Err(RegistryError::Unsupported(
                "a slot needs an active version before it can run a shadow",
            ));
        }
        state.shadow.store(Some(self.load_row(&row).await?));
        self.events
            .emit("EXTENSION_SHADOWED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// Stops `id` running in shadow: the slot's shadow is cleared only while it is still `id`
    /// (one conditional update, so a click on a stale page cannot stop a candidate another
    /// operator set meanwhile). Its shadow results stay with it; shadowing it again starts its
    /// report where it left off. Other replicas follow through `EXTENSION_SHADOW_STOPPED`.
    pub async fn stop_shadow(&self, id: Uuid) -> Result<ExtensionRow, RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        if !store::extensions::clear_shadow(&self.db, slot.as_str(), id).await? {
            return Err(RegistryError::NotShadowing);
        }
        let state = self.slot(&slot);
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            state.shadow.store(None);
        }
        tracing::info!(slot = slot.as_str(), extension = %row.name, version = %row.version, "extension shadow stopped");
        self.events
            .emit("EXTENSION_SHADOW_STOPPED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version, "digest": row.digest }))
            .await;
        Ok(row)
    }

    /// Deletes a stored version. The active version and the host's built-in ones are kept: a
    /// built-in is the known-good version a slot rolls back to, and the host only puts one back
    /// when its slot is empty at start.
    pub async fn delete(&self, id: Uuid) -> Result<(), RegistryError> {
        let row = store::extensions::get(&self.db, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let slot = Slot::parse(&row.slot).ok_or(RegistryError::NotFound)?;
        let state = self.slot(&slot);
        if state.active.load().as_ref().is_some_and(|a| a.id == id) {
            return Err(RegistryError::Active);
        }
        if row.builtin {
            return Err(RegistryError::Builtin);
        }
        if state.shadow.load().as_ref().is_some_and(|s| s.id == id) {
            store::extensions::set_shadow(&self.db, slot.as_str(), None).await?;
            state.shadow.store(None);
        }
        store::extensions::delete(&self.db, id).await?;
        let still_used = store::extensions::list(&self.db)
            .await?
            .iter()
            .any(|r| r.digest == row.digest);
        if !still_used {
            let _ = tokio::fs::remove_file(self.component_path(&row.digest)).await;
            store::extensions::delete_unused_blob(&self.db, &row.digest).await?;
        }
        self.events
            .emit("EXTENSION_DELETED", None, json!({ "slot": slot.as_str(), "id": row.id, "name": row.name, "version": row.version }))
            .await;
        Ok(())
    }

    /// The host directory a `read_only_dirs` entry names: a grant name this host offers, or the
    /// path of one.
    fn grantable_dir(&self, entry: &str) -> Option<&Path> {
        self.grantable_dirs
            .iter()
            .find(|(name, path)| name == entry || Path::new(entry) == path.as_path())
            .map(|(_, path)| path.as_path())
    }

    /// A resolver's effective access: what its manifest asks for, cut down to what the operator
    /// confirmed (when they confirmed anything) and to the directories this host offers.
    fn resolver_access(&self, requested: &Grants, confirmed: Option<&Grants>) -> ResolverAccess {
        let allowed_hosts = requested
            .allowed_hosts
            .iter()
            .filter(|host| {
                confirmed
                    .is_none_or(|c| c.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
            })
            .map(|host| host.to_ascii_lowercase())
            .collect();
        let mut read_only_dirs = Vec::new();
        for entry in &requested.read_only_dirs {
            if confirmed.is_some_and(|c| !c.read_only_dirs.contains(entry)) {
                continue;
            }
            match self.grantable_dir(entry) {
                Some(path) if !read_only_dirs.iter().any(|p: &PathBuf| p == path) => {
                    read_only_dirs.push(path.to_path_buf())
                }
                Some(_) => {}
                None => tracing::warn!(
                    directory = entry,
                    "a stored resolver asks for a directory this host does not offer; it is not mounted"
                ),
            }
        }
        ResolverAccess {
            allowed_hosts,
            read_only_dirs,
            quotas: self.quotas,
            remote: Some(self.remote.clone()),
        }
    }

    /// Runs git for the resolvers (its process counter is what tests read).
    pub fn remote(&self) -> &Arc<RemoteHost> {
        &self.remote
    }

    /// The active resolver of `resolver:<scheme>`. The caller keeps its own reference, so a
    /// swap during the call does not affect it.
    fn resolver(&self, scheme: &str) -> Result<Arc<Extension>, FetchFailure> {
        Slot::parse(&format!("resolver:{scheme}"))
            .and_then(|slot| self.active_extension(&slot))
            .ok_or_else(|| FetchFailure::NoResolver(scheme.to_owned()))
    }

    /// Fetches `source` into `dest` (an existing, empty directory owned by the caller) with the
    /// active resolver of `resolver:<scheme>`. A trap, deadline or memory overrun, or an answer
    /// the host cannot use, fails this fetch: it is logged with the extension's identity and
    /// counted as a fallback. On any error `dest` may hold a partial tree; discard it.
    pub async fn fetch(
        &self,
        scheme: &str,
        source: Source,
        dest: &Path,
    ) -> Result<Fetched, FetchFailure> {
        let ext = self.resolver(scheme)?;
        let source = self.pin(scheme, source);
        let dest = dest.to_path_buf();
        let started = Instant::now();
        let call = ext.clone();
        let result = tokio::task::spawn_blocking(move || call.fetch(&source, &dest))
            .await
            .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
        self.metrics.observe(&ext, &result, started.elapsed());
        let fetched = self.answer(&ext, result, "fetch")?;
        if !valid_plugin_name(&fetched.name) {
            return Err(
                self.malformed(&ext, "a plugin name that is not 1-128 of A-Z a-z 0-9 . _ -")
            );
        }
        if !valid_revision(&fetched.revision) {
            return Err(self.malformed(&ext, "a revision that is not 1-256 printable characters"));
        }
        Ok(fetched)
    }

    /// The current upstream revision of `source` according to the active resolver of
    /// `resolver:<scheme>`, for drift detection. Failures are handled as in
    /// [`ExtensionHost::fetch`].
    pub async fn resolve_revision(
        &self,
        scheme: &str,
        source: Source,
    ) -> Result<String, FetchFailure> {
        let ext = self.resolver(scheme)?;
        let source = self.pin(scheme, source);
        let started = Instant::now();
        let call = ext.clone();
        let result = tokio::task::spawn_blocking(move || call.resolve_revision(&source))
            .await
            .unwrap_or_else(|join| Err(CallError::Trap(format!("call aborted: {join}"))));
        self.metrics.observe(&ext, &result, started.elapsed());
        let revision = self.answer(&ext, result, "resolve-revision")?;
        if !valid_revision(&revision) {
            return Err(self.malformed(&ext, "a revision that is not 1-256 printable characters"));
        }
        Ok(revision)
    }

    /// An unpinned remote source means the upstream's `HEAD` when the operator allows unpinned
    /// sources; otherwise it goes to the resolver as it is (and a remote resolver refuses it).
    /// Local sources have no revisions to pin.
    fn pin(&self, scheme: &str, mut source: Source) -> Source {
        if self.allow_unpinned && scheme != "local" && source.reference.is_none() {
            source.reference = Some("HEAD".to_owned());
        }
        source
    }

    /// The resolver's answer, or the failure of its call (logged and counted).
    fn answer<T>(
        &self,
        ext: &Extension,
        result: Result<Result<T, FetchError>, CallError>,
        what: &str,
    ) -> Result<T, FetchFailure> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                // The message goes on to an error body: the guest's words and git's, made safe
                // once here for every caller (plugin installs, drift checks, `!external`).
                let error = error.map_message(|m| super::reason::public(&self.remote.redact(&m)));
                tracing::info!(extension = %ext.identity, %error, "resolver {what} answered an error");
                Err(FetchFailure::Fetch(error))
            }
            Err(error) => {
                self.metrics.fallback(ext, &error);
                tracing::warn!(extension = %ext.identity, %error, "resolver {what} failed; the fetch fails");
                Err(FetchFailure::Failed {
                    extension: ext.identity.to_string(),
                    error,
                })
            }
        }
    }

    fn malformed(&self, ext: &Extension, reason: &'static str) -> FetchFailure {
        self.metrics.failed(ext, "malformed");
        tracing::warn!(extension = %ext.identity, reason, "resolver answered something unusable; the fetch fails");
        FetchFailure::Malformed {
            extension: ext.identity.to_string(),
            reason,
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

    /// Classifies changes with the active classifier (cold when none is active or it fails),
    /// running the shadow candidate on the same input when one is set.
    pub async fn classify(&self, changes: Vec<FileChange>) -> Reload {
        let slot = Slot("classifier".into());
        let state = self.slot(&slot);
        let Some(active) = state.active.load_full() else {
            return policy::classifier_fallback("no classifier active");
        };
        let started = Instant::now();
        let answer =
            super::classify_or_cold(active.ext.clone(), &self.metrics, changes.clone()).await;
        let active_time = started.elapsed();
        if let Some(candidate) = state.shadow.load_full() {
            let call = candidate.ext.clone();
            let input = changes.clone();
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || call.classify(&input))
                .await
                .unwrap_or_else(|join| Err(CallError::Trap(join.to_string())));
            self.metrics
                .observe(&candidate.ext, &result, started.elapsed());
            let candidate_answer = result.map(|r| json!(r));
            self.record_shadow(
                &slot,
                &active,
                &candidate,
                json!(changes),
                json!(answer),
                candidate_answer,
                active_time,
                started.elapsed(),
            )
            .await;
        }
        answer
    }

    /// Asks the active restart policy (the built-in default when none is active or it fails),
    /// clamped; the shadow candidate sees the same input when one is set.
    pub async fn decide(&self, workspace: WorkspaceInfo, trigger: Trigger) -> Decision {
        let slot = Slot("restart-policy".into());
        let state = self.slot(&slot);
        let active = state.active.load_full();
        let started = Instant::now();
        let answer = super::decide_or_default(
            active.as_ref().map(|a| a.ext.clone()),
            &self.metrics,
            &self.clamp,
            workspace.clone(),
            trigger.clone(),
        )
        .await;
        let active_time = started.elapsed();
        if let (Some(active), Some(candidate)) = (active, state.shadow.load_full()) {
            let call = candidate.ext.clone();
            let (ws, tr) = (workspace.clone(), trigger.clone());
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || call.decide(&ws, &tr))
                .await
                .unwrap_or_else(|join| Err(CallError::Trap(join.to_string())));
            self.metrics
                .observe(&candidate.ext, &result, started.elapsed());
            let clamped = result.map(|d| json!(self.clamp.apply(&workspace, d)));
            let input = json!({ "workspace": workspace, "trigger": trigger });
            self.record_shadow(
                &slot,
                &active,
                &candidate,
                input,
                json!(answer),
                clamped,
                active_time,
                started.elapsed(),
            )
            .await;
        }
        answer
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_shadow(
        &self,
        slot: &Slot,
        active: &Loaded,
        candidate: &Loaded,
        input: Value,
        active_answer: Value,
        candidate_answer: Result<Value, CallError>,
        active_time: Duration,
        candidate_time: Duration,
    ) {
        let (outcome, candidate_value) = match candidate_answer {
            Ok(value) if value == active_answer => ("agree", Some(value)),
            Ok(value) => ("disagree", Some(value)),
            Err(err) => ("candidate_failed", Some(json!({ "error": err.label() }))),
        };
        let row = store::extensions::ShadowResultRow {
            id: Uuid::new_v4(),
            slot: slot.as_str().to_owned(),
            active_id: active.id,
            candidate_id: candidate.id,
            outcome: outcome.to_owned(),
            input: (outcome != "agree").then_some(input),
            active_answer: Some(active_answer),
            candidate_answer: candidate_value,
            active_us: active_time.as_micros() as i64,
            candidate_us: candidate_time.as_micros() as i64,
            created_at: Utc::now(),
        };
        if let Err(err) = store::extensions::insert_shadow_result(&self.db, &row).await {
            tracing::warn!(error = ?err, "recording a shadow result failed");
        }
    }

    /// The shadow report of a slot's current (or given) candidate.
    pub async fn shadow_report(&self, slot: &Slot) -> Result<Value, RegistryError> {
        let state = self.slot(slot);
        let active = state.active.load_full();
        let candidate = state.shadow.load_full().ok_or(RegistryError::NotFound)?;
        let counts =
            store::extensions::shadow_counts(&self.db, slot.as_str(), candidate.id).await?;
        let count = |name: &str| {
            counts
                .iter()
                .find(|(o, _)| o == name)
                .map_or(0, |(_, n)| *n)
        };
        let disagreements =
            store::extensions::shadow_disagreements(&self.db, slot.as_str(), candidate.id, 20)
                .await?;
        Ok(json!({
            "slot": slot.as_str(),
            "active_id": active.as_ref().map(|a| a.id),
            "candidate_id": candidate.id,
            "calls": count("agree") + count("disagree") + count("candidate_failed"),
            "agree": count("agree"),
            "disagree": count("disagree"),
            "candidate_failed": count("candidate_failed"),
            "recent": disagreements.iter().map(|d| json!({
                "outcome": d.outcome,
                "input": d.input,
                "active": d.active_answer,
                "candidate": d.candidate_answer,
                "active_us": d.active_us,
                "candidate_us": d.candidate_us,
                "at": d.created_at,
            })).collect::<Vec<_>>(),
        }))
    }
}

/// A plugin name the host can use as a directory name: 1-128 of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit, no `..` (the rule the guest SDK's `validate_plugin_name` applies).
fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A revision the host can record: a commit id, a `sha256:` digest or another short token.
fn valid_revision(revision: &str) -> bool {
    !revision.is_empty() && revision.len() <= 256 && revision.bytes().all(|b| b.is_ascii_graphic())
}
