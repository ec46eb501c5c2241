//! Loading and calling extension components: validation before instantiation, a cached
//! `InstancePre` per component, and a fresh `Store` per call with its deadline, memory cap and a
//! WASI context with no environment, arguments, network, clock or inherited stdio. Classifiers
//! and restart policies get no filesystem at all; a resolver call gets its destination
//! directory read-write at `/dest` and its granted directories read-only at `/registry`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::bindings::{self, LogLevel};
use super::engine::{EPOCH_TICK, ExtensionEngine, MAX_GUEST_MEMORY};
use super::remote::{RemoteCall, RemoteHost, inspect_tree};
use super::types::{
    Decision, FetchError, FetchQuotas, Fetched, FileChange, Reload, SlotKind, Source, Trigger,
    WorkspaceInfo,
};

/// The package version this host implements; components must export `...@0.1.x`.
pub const API_VERSION: (u64, u64) = (0, 1);

/// Who an extension is, for logs, metrics and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub version: String,
    pub digest: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} ({})",
            self.name,
            self.version,
            &self.digest[..self.digest.len().min(19)]
        )
    }
}

/// Per-call limits: the effective grant (manifest request ∩ operator confirmation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(200),
            memory_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Why a component was refused before it could run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error("the component does not export {expected}; it is not a {kind} extension")]
    WrongWorld {
        kind: &'static str,
        expected: &'static str,
    },
    #[error("the component implements molecule:plugin {found}; this host supports 0.1.x")]
    IncompatibleVersion { found: String },
    #[error("a {kind} extension may not import {import}")]
    ForbiddenImport { kind: &'static str, import: String },
    #[error("the resolver serves {served:?}, not `{scheme}`")]
    WrongScheme { scheme: String, served: Vec<String> },
    #[error("the component cannot be linked: {0}")]
    Link(String),
}

/// Why a call did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the extension trapped: {0}")]
    Trap(String),
    #[error("the extension exceeded its deadline")]
    Timeout,
    #[error("the extension exceeded its memory cap")]
    MemoryCap,
    #[error("the extension could not be started: {0}")]
    Instantiate(String),
}

impl CallError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout => "timeout",
            CallError::MemoryCap => "memory",
            CallError::Instantiate(_) => "instantiate",
        }
    }
}

/// Store data of one call.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    pub(super) label: Arc<str>,
    /// A resolver call's remote access; `None` for the other kinds.
    pub(super) remote: Option<RemoteCall>,
    /// Time this call spent in host functions (git), which the guest's deadline does not count.
    pub(super) host_time: Duration,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("extension", &self.label)
            .finish_non_exhaustive()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::classifier::molecule::plugin::log::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let message: String = message.chars().take(2048).collect();
        let extension = &*self.label;
        match level {
            LogLevel::Trace => tracing::trace!(extension, "{message}"),
            LogLevel::Debug => tracing::debug!(extension, "{message}"),
            LogLevel::Info => tracing::info!(extension, "{message}"),
            LogLevel::Warn => tracing::warn!(extension, "{message}"),
            LogLevel::Error => tracing::error!(extension, "{message}"),
        }
    }
}

impl bindings::classifier::molecule::plugin::types::Host for HostState {}

impl bindings::packed_types::Host for HostState {}

/// Refuses memory growth past the cap and remembers that it did, so the resulting trap can be
/// reported as what it is.
struct MemoryCap {
    cap: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Clocks that never move: classifiers and restart policies get no time source.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

enum Pre {
    Classifier(bindings::classifier::ClassifierPre<HostState>),
    /// A classifier of 0.1.1 that exports `classify-packed`.
    PackedClassifier(bindings::packed_classifier::PackedClassifierPre<HostState>),
    RestartPolicy(bindings::restart_policy::RestartPolicyPre<HostState>),
    Resolver(bindings::resolver::ResolverPre<HostState>),
}

/// Where the first granted read-only directory appears in a resolver; further ones appear at
/// `/registry-2`, `/registry-3`, ...
pub const REGISTRY_MOUNT: &str = "/registry";
/// Where a resolver's destination directory appears.
pub const DEST_MOUNT: &str = "/dest";

/// What a resolver may reach besides its destination: the effective grant (manifest request ∩
/// operator confirmation ∩ what this host offers), resolved to host paths and hosts. Ignored for
/// the other kinds.
#[derive(Debug, Clone, Default)]
pub struct ResolverAccess {
    /// Hosts (`name` or `name:port`) the resolver's `remote` calls may reach.
    pub allowed_hosts: Vec<String>,
    /// Host directories mounted read-only: the first at [`REGISTRY_MOUNT`], the n-th (from 2)
    /// at `/registry-<n>`.
    pub read_only_dirs: Vec<PathBuf>,
    /// Limits on what a fetch may leave in its destination (checked by the host after the
    /// guest answers, and on every checkout).
    pub quotas: FetchQuotas,
    /// Runs `git` for the `remote` interface; without one every remote call is denied.
    pub remote: Option<Arc<RemoteHost>>,
}

/// A validated, compiled component ready to be called.
pub struct Extension {
    pub identity: Identity,
    pub kind: SlotKind,
    pub limits: Limits,
    /// Whether the compiled artefact came from the disk cache.
    pub from_cache: bool,
    engine: ExtensionEngine,
    pre: Pre,
    label: Arc<str>,
    access: ResolverAccess,
    allowed_hosts: Arc<[String]>,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension")
            .field("identity", &self.identity)
            .field("kind", &self.kind)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Imports a classifier or restart policy may have: our inert interfaces and the WASI basics a
/// Rust std guest links even when it never uses them (with no preopens, environment or sockets).
/// Resolvers may also import `remote`; their `wasi:filesystem` sees only their preopens (and
/// brings in `wasi:clocks/wall-clock` for file times). Nothing network-ish (`wasi:sockets`,
/// `wasi:http`) is admitted for any kind.
pub(super) fn import_allowed(kind: SlotKind, name: &str) -> bool {
    let base = name.split('@').next().unwrap_or(name);
    let ours = matches!(base, "molecule:plugin/log" | "molecule:plugin/types");
    let wasi = [
        "wasi:cli/",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:filesystem/",
    ]
    .iter()
    .any(|prefix| base.starts_with(prefix));
    match kind {
        SlotKind::Classifier | SlotKind::RestartPolicy => ours || wasi,
        SlotKind::Resolver => ours || wasi || base == "molecule:plugin/remote",
    }
}

/// Accepts an exported interface name carrying a version this host implements (`@0.1.x`).
fn check_api_version(export: &str) -> Result<(), LoadError> {
    let version = export.split_once('@').map(|(_, v)| v).unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    if (parts.next().flatten(), parts.next().flatten())
        == (Some(API_VERSION.0), Some(API_VERSION.1))
    {
        return Ok(());
    }
    Err(LoadError::IncompatibleVersion {
        found: if version.is_empty() {
            "(unversioned)".into()
        } else {
            version.to_owned()
        },
    })
}

/// What a classifier of 0.1.1 exports instead of [`SlotKind::export_interface`]'s `classify`.
const PACKED_CLASSIFY: &str = "molecule:plugin/classify-packed";

/// Checks the exported interface and its version, and every import, before instantiation.
/// Returns whether a classifier exports `classify-packed` (which is then the one called).
fn validate(
    engine: &ExtensionEngine,
    component: &Component,
    kind: SlotKind,
) -> Result<bool, LoadError> {
    let ty = component.component_type();
    let expected = kind.export_interface();
    let exports: Vec<String> = ty
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let find = |interface: &str| {
        exports
            .iter()
            .find(|name| name.split('@').next() == Some(interface))
    };
    let packed = match kind {
        SlotKind::Classifier => find(PACKED_CLASSIFY),
        SlotKind::Resolver | SlotKind::RestartPolicy => None,
    };
    let export = packed
        .or_else(|| find(expected))
        .ok_or(LoadError::WrongWorld {
            kind: kind.as_str(),
            expected,
        })?;
    check_api_version(export)?;
    for (name, item) in ty.imports(engine.engine()) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) || !import_allowed(kind, name) {
            return Err(LoadError::ForbiddenImport {
                kind: kind.as_str(),
                import: name.to_owned(),
            });
        }
    }
    Ok(packed.is_some())
}

impl Extension {
    /// Validates, compiles (or loads the cached artefact) and pre-instantiates a component. A
    /// resolver loaded this way has no grant: no remote hosts, no read-only directories.
    pub fn load(
        engine: &ExtensionEngine,
        kind: SlotKind,
        identity: Identity,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Self, LoadError> {
        Self::load_with_access(
            engine,
            kind,
            identity,
            bytes,
            limits,
            ResolverAccess::default(),
        )
    }

    /// [`Extension::load`] with a resolver's grant.
    pub fn load_with_access(
        engine: &ExtensionEngine,
        kind: SlotKind,
        identity: Identity,
        bytes: &[u8],
        limits: Limits,
        access: ResolverAccess,
    ) -> Result<Self, LoadError> {
        let (component, from_cache) = engine
            .load(&identity.digest, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let packed = validate(engine, &component, kind)?;
        let mut linker: Linker<HostState> = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let pre = match kind {
            SlotKind::Classifier if packed => {
                bindings::packed_classifier::PackedClassifier::add_to_linker::<_, HasSelf<_>>(
                    &mut linker,
                    |s| s,
                )
                .map_err(link)?;
                let pre = linker.instantiate_pre(&component).map_err(link)?;
                Pre::PackedClassifier(
                    bindings::packed_classifier::PackedClassifierPre::new(pre).map_err(link)?,
                )
            }
            SlotKind::Classifier => {
                bindings::classifier::Classifier::add_to_linker::<_, HasSelf<_>>(
                    &mut linker,
                    |s| s,
                )
                .map_err(link)?;
                let pre = linker.instantiate_pre(&component).map_err(link)?;
                Pre::Classifier(bindings::classifier::ClassifierPre::new(pre).map_err(link)?)
            }
            SlotKind::RestartPolicy => {
                bindings::restart_policy::RestartPolicy::add_to_linker::<_, HasSelf<_>>(
                    &mut linker,
                    |s| s,
                )
                .map_err(link)?;
                let pre = linker.instantiate_pre(&component).map_err(link)?;
                Pre::RestartPolicy(
                    bindings::restart_policy::RestartPolicyPre::new(pre).map_err(link)?,
                )
            }
            SlotKind::Resolver => {
                bindings::resolver::Resolver::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(link)?;
                let pre = linker.instantiate_pre(&component).map_err(link)?;
                Pre::Resolver(bindings::resolver::ResolverPre::new(pre).map_err(link)?)
            }
        };
        let limits = Limits {
            memory_bytes: limits.memory_bytes.min(MAX_GUEST_MEMORY),
            ..limits
        };
        let label: Arc<str> = identity.to_string().into();
        let allowed_hosts = access.allowed_hosts.clone().into();
        Ok(Extension {
            identity,
            kind,
            limits,
            from_cache,
            engine: engine.clone(),
            pre,
            label,
            access,
            allowed_hosts,
        })
    }

    /// The resolver's grant (empty for the other kinds).
    pub fn access(&self) -> &ResolverAccess {
        &self.access
    }

    /// A fresh store for one call of a classifier or restart policy: no preopens at all.
    fn store(&self) -> (Store<HostState>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(4096);
        let wasi = Self::wasi_builder(&stderr).build();
        (self.store_with(wasi, None), stderr)
    }

    /// The WASI context every call starts from: stderr captured for the log, clocks frozen,
    /// no network; no environment, arguments, stdin or stdout (the builder starts empty and
    /// nothing is inherited).
    fn wasi_builder(stderr: &MemoryOutputPipe) -> WasiCtxBuilder {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        builder
    }

    /// A fresh store for one resolver call: `dest` (if any) read-write at `/dest`, the granted
    /// directories read-only at `/registry`..., and the call's remote access.
    fn resolver_store(
        &self,
        dest: Option<&Path>,
    ) -> Result<(Store<HostState>, MemoryOutputPipe), CallError> {
        let stderr = MemoryOutputPipe::new(4096);
        let mut builder = Self::wasi_builder(&stderr);
        // File operations run on the calling thread, which is already a blocking one.
        builder.allow_blocking_current_thread(true);
        let unopenable = |what: String, path: &Path, err: wasmtime::Error| {
            tracing::warn!(extension = %self.label, path = %path.display(), error = %err, "a resolver preopen cannot be opened");
            CallError::Instantiate(format!("{what} cannot be opened"))
        };
        if let Some(dest) = dest {
            builder
                .preopened_dir(dest, DEST_MOUNT, FsPerms::ReadWrite)
                .map_err(|e| unopenable("the destination directory".into(), dest, e))?;
        }
        for (i, dir) in self.access.read_only_dirs.iter().enumerate() {
            let mount = match i {
                0 => REGISTRY_MOUNT.to_owned(),
                n => format!("{REGISTRY_MOUNT}-{}", n + 1),
            };
            builder
                .preopened_dir(dir, &mount, FsPerms::ReadOnly)
                .map_err(|e| unopenable(format!("the granted directory {mount}"), dir, e))?;
        }
        let remote = RemoteCall {
            host: self.access.remote.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            quotas: self.access.quotas,
            dest: dest.map(Path::to_path_buf),
            operations: 0,
        };
        Ok((self.store_with(builder.build(), Some(remote)), stderr))
    }

    fn store_with(&self, wasi: WasiCtx, remote: Option<RemoteCall>) -> Store<HostState> {
        let resolver = remote.is_some();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: self.limits.memory_bytes,
                exceeded: false,
            },
            label: self.label.clone(),
            remote,
            host_time: Duration::ZERO,
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        let deadline = self.limits.deadline;
        let ticks =
            |budget: Duration| budget.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        // One extra tick: the ticker may advance just after the deadline is set.
        store.set_epoch_deadline(ticks(deadline) + 1);
        if resolver {
            // A resolver's deadline counts the guest's own time: the time it waits for the
            // host's git is bounded separately (a timeout per remote operation, a few
            // operations per call). So when the epoch deadline comes, the host time is taken
            // out and the guest gets the rest of its budget.
            let started = Instant::now();
            store.epoch_deadline_callback(move |ctx| {
                let guest = started.elapsed().saturating_sub(ctx.data().host_time);
                Ok(match deadline.checked_sub(guest) {
                    Some(left) if !left.is_zero() => UpdateDeadline::Continue(ticks(left)),
                    _ => UpdateDeadline::Interrupt,
                })
            });
        } else {
            store.epoch_deadline_trap();
        }
        store
    }

    /// Turns a failed call into a [`CallError`], logging what the guest wrote to stderr.
    fn failure(
        &self,
        store: &Store<HostState>,
        stderr: &MemoryOutputPipe,
        err: wasmtime::Error,
    ) -> CallError {
        let guest_stderr = String::from_utf8_lossy(&stderr.contents())
            .chars()
            .take(1024)
            .collect::<String>();
        let error = if store.data().limiter.exceeded {
            CallError::MemoryCap
        } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            CallError::Timeout
        } else {
            CallError::Trap(err.root_cause().to_string())
        };
        tracing::warn!(extension = %self.label, error = %error, guest_stderr, "extension call failed");
        error
    }

    /// Runs the classifier on `changes`. Blocking: call from a blocking thread.
    pub fn classify(&self, changes: &[FileChange]) -> Result<Reload, CallError> {
        match &self.pre {
            Pre::PackedClassifier(pre) => {
                // Packed before the store exists: an input no guest could hold costs nothing.
                let input = bindings::pack(changes).ok_or(CallError::MemoryCap)?;
                let (mut store, stderr) = self.store();
                let instance = match pre.instantiate(&mut store) {
                    Ok(instance) => instance,
                    Err(err) => return Err(self.instantiate_failure(&store, &stderr, err)),
                };
                instance
                    .molecule_plugin_classify_packed()
                    .call_classify(&mut store, &input)
                    .map(Reload::from)
                    .map_err(|err| self.failure(&store, &stderr, err))
            }
            Pre::Classifier(pre) => {
                let (mut store, stderr) = self.store();
                let instance = match pre.instantiate(&mut store) {
                    Ok(instance) => instance,
                    Err(err) => return Err(self.instantiate_failure(&store, &stderr, err)),
                };
                let input: Vec<_> = changes.iter().map(Into::into).collect();
                instance
                    .molecule_plugin_classify()
                    .call_classify(&mut store, &input)
                    .map(Reload::from)
                    .map_err(|err| self.failure(&store, &stderr, err))
            }
            _ => Err(CallError::Instantiate("not a classifier".into())),
        }
    }

    /// Asks the restart policy. Blocking: call from a blocking thread.
    pub fn decide(
        &self,
        workspace: &WorkspaceInfo,
        trigger: &Trigger,
    ) -> Result<Decision, CallError> {
        let Pre::RestartPolicy(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a restart policy".into()));
        };
        let (mut store, stderr) = self.store();
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) => return Err(self.instantiate_failure(&store, &stderr, err)),
        };
        instance
            .molecule_plugin_restart()
            .call_decide(&mut store, &workspace.into(), &trigger.into())
            .map(Decision::from)
            .map_err(|err| self.failure(&store, &stderr, err))
    }

    fn instantiate_failure(
        &self,
        store: &Store<HostState>,
        stderr: &MemoryOutputPipe,
        err: wasmtime::Error,
    ) -> CallError {
        match self.failure(store, stderr, err) {
            CallError::Trap(message) => CallError::Instantiate(message),
            other => other,
        }
    }

    /// A fresh Store (with `dest` preopened when given) and a resolver instance in it.
    fn resolver_instance(
        &self,
        dest: Option<&Path>,
    ) -> Result<
        (
            Store<HostState>,
            MemoryOutputPipe,
            bindings::resolver::Resolver,
        ),
        CallError,
    > {
        let Pre::Resolver(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a resolver".into()));
        };
        let (mut store, stderr) = self.resolver_store(dest)?;
        match pre.instantiate(&mut store) {
            Ok(instance) => Ok((store, stderr, instance)),
            Err(err) => Err(self.instantiate_failure(&store, &stderr, err)),
        }
    }

    /// The schemes a resolver serves. Blocking: call from a blocking thread.
    pub fn schemes(&self) -> Result<Vec<String>, CallError> {
        let (mut store, stderr, instance) = self.resolver_instance(None)?;
        instance
            .molecule_plugin_resolve()
            .call_schemes(&mut store)
            .map_err(|err| self.failure(&store, &stderr, err))
    }

    /// Has the resolver fetch `source` into `dest` (an existing, empty directory the caller
    /// owns; the guest sees it as `/dest`). The outer error is the call failing (trap,
    /// deadline, memory cap); the inner one is the resolver's answer, or the host's when the
    /// tree it left in `dest` breaks the quotas or holds links or special files. On any error
    /// `dest` may hold a partial tree: the caller discards it. Blocking: call from a blocking
    /// thread.
    pub fn fetch(
        &self,
        source: &Source,
        dest: &Path,
    ) -> Result<Result<Fetched, FetchError>, CallError> {
        let (mut store, stderr, instance) = self.resolver_instance(Some(dest))?;
        let answer = instance
            .molecule_plugin_resolve()
            .call_fetch(&mut store, &source.into())
            .map_err(|err| self.failure(&store, &stderr, err))?;
        let answer = answer.map(Fetched::from).map_err(FetchError::from);
        // Whatever the guest did inside `/dest` (it may make links there), the host only hands
        // on a tree of plain files and directories within the quotas.
        Ok(answer.and_then(|fetched| {
            inspect_tree(dest, &self.access.quotas)?;
            Ok(fetched)
        }))
    }

    /// The current upstream revision of `source`, for drift detection. The guest gets no
    /// destination (a checkout is denied) and writes nothing. Blocking: call from a blocking
    /// thread.
    pub fn resolve_revision(
        &self,
        source: &Source,
    ) -> Result<Result<String, FetchError>, CallError> {
        let (mut store, stderr, instance) = self.resolver_instance(None)?;
        instance
            .molecule_plugin_resolve()
            .call_resolve_revision(&mut store, &source.into())
            .map(|answer| answer.map_err(FetchError::from))
            .map_err(|err| self.failure(&store, &stderr, err))
    }

    /// How long the last call took is measured by callers; this runs the slot's self-check: a
    /// call on a fixed input that must answer within the limits (for a resolver, `schemes`).
    pub fn self_check(&self) -> Result<Duration, CallError> {
        let started = Instant::now();
        match self.kind {
            SlotKind::Classifier => self.classify(&[]).map(|_| ()),
            SlotKind::RestartPolicy => self
                .decide(
                    &WorkspaceInfo {
                        id: "00000000-0000-0000-0000-000000000000".into(),
                        name: "self-check".into(),
                        runtime: "langgraph".into(),
                        tier: 3,
                        status: "online".into(),
                        update_tier: "production".into(),
                        recent_restarts: 0,
                    },
                    &Trigger::ConfigChanged,
                )
                .map(|_| ()),
            SlotKind::Resolver => self.schemes().map(|_| ()),
        }?;
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn only_components_of_api_0_1_are_accepted_and_the_refusal_names_the_version() {
        assert!(check_api_version("molecule:plugin/classify@0.1.0").is_ok());
        assert!(check_api_version("molecule:plugin/classify@0.1.7").is_ok());
        let newer = check_api_version("molecule:plugin/classify@0.2.0").unwrap_err();
        assert_eq!(
            newer.to_string(),
            "the component implements molecule:plugin 0.2.0; this host supports 0.1.x"
        );
        assert!(check_api_version("molecule:plugin/classify@1.1.0").is_err());
        let bare = check_api_version("molecule:plugin/classify").unwrap_err();
        assert!(bare.to_string().contains("(unversioned)"));
    }
}
