//! Loading and calling extension components: validation before instantiation, a cached
//! `InstancePre` per component, and a fresh `Store` per call with its deadline, memory cap and an
//! inert WASI context (no preopens, environment, network or clock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::bindings::{self, LogLevel};
use super::engine::{EPOCH_TICK, ExtensionEngine, MAX_GUEST_MEMORY};
use super::types::{Decision, FileChange, Reload, SlotKind, Trigger, WorkspaceInfo};

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
    label: Arc<str>,
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
    RestartPolicy(bindings::restart_policy::RestartPolicyPre<HostState>),
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
fn import_allowed(kind: SlotKind, name: &str) -> bool {
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

/// Checks the exported interface and its version, and every import, before instantiation.
fn validate(
    engine: &ExtensionEngine,
    component: &Component,
    kind: SlotKind,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let expected = kind.export_interface();
    let export = ty
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .find(|name| name.split('@').next() == Some(expected))
        .ok_or(LoadError::WrongWorld {
            kind: kind.as_str(),
            expected,
        })?;
    let version = export
        .split_once('@')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    if (parts.next().flatten(), parts.next().flatten())
        != (Some(API_VERSION.0), Some(API_VERSION.1))
    {
        return Err(LoadError::IncompatibleVersion {
            found: if version.is_empty() {
                "(unversioned)".into()
            } else {
                version
            },
        });
    }
    for (name, item) in ty.imports(engine.engine()) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) || !import_allowed(kind, name) {
            return Err(LoadError::ForbiddenImport {
                kind: kind.as_str(),
                import: name.to_owned(),
            });
        }
    }
    Ok(())
}

impl Extension {
    /// Validates, compiles (or loads the cached artefact) and pre-instantiates a component.
    pub fn load(
        engine: &ExtensionEngine,
        kind: SlotKind,
        identity: Identity,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Self, LoadError> {
        if kind == SlotKind::Resolver {
            return Err(LoadError::Link(
                "resolver extensions are not supported by this host yet".into(),
            ));
        }
        let (component, from_cache) = engine
            .load(&identity.digest, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        validate(engine, &component, kind)?;
        let mut linker: Linker<HostState> = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let pre = match kind {
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
            SlotKind::Resolver => unreachable!("refused above"),
        };
        let limits = Limits {
            memory_bytes: limits.memory_bytes.min(MAX_GUEST_MEMORY),
            ..limits
        };
        let label: Arc<str> = identity.to_string().into();
        Ok(Extension {
            identity,
            kind,
            limits,
            from_cache,
            engine: engine.clone(),
            pre,
            label,
        })
    }

    fn store(&self) -> (Store<HostState>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(4096);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: self.limits.memory_bytes,
                exceeded: false,
            },
            label: self.label.clone(),
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        let ticks = self
            .limits
            .deadline
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1) as u64;
        // One extra tick: the ticker may advance just after the deadline is set.
        store.set_epoch_deadline(ticks + 1);
        store.epoch_deadline_trap();
        (store, stderr)
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
        let Pre::Classifier(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a classifier".into()));
        };
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

    /// How long the last call took is measured by callers; this runs the slot's self-check: a
    /// call on a fixed input that must answer within the limits.
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
            SlotKind::Resolver => Ok(()),
        }?;
        Ok(started.elapsed())
    }
}
