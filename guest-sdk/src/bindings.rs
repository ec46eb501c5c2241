//! The generated bindings and the one boundary where their types become this crate's types.
//!
//! Only the import side is generated here, for a private world that imports `types`, `log` and
//! `remote`. The export side is generated in the author's crate by the export macros (see
//! `export.rs` for why), with `with:` pointing back at the modules below so both sides share one
//! set of types.
#![allow(unsafe_code, missing_debug_implementations, clippy::all)]

wit_bindgen::generate!({
    path: "../wit/v0.1.1",
    inline: "
        package molecule:guest-sdk;

        world imports {
            import molecule:plugin/types@0.1.1;
            import molecule:plugin/log@0.1.1;
            import molecule:plugin/remote@0.1.1;
        }
    ",
    world: "molecule:guest-sdk/imports",
    generate_all,
    generate_unused_types: true,
});

use molecule::plugin::{log as wlog, remote as wremote, types as w};

use crate::types::{
    ChangeKind, Decision, DriftApplied, FetchError, Fetched, FileChange, PluginInstalled, Reload,
    RemoteRef, Source, Trigger, UpdateTier, WorkspaceInfo,
};

impl From<w::Source> for Source {
    fn from(s: w::Source) -> Self {
        Source {
            scheme: s.scheme,
            location: s.location,
            reference: s.reference,
        }
    }
}

impl From<Fetched> for w::Fetched {
    fn from(f: Fetched) -> Self {
        w::Fetched {
            name: f.name,
            revision: f.revision,
        }
    }
}

impl From<FetchError> for w::FetchError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::NotFound(m) => w::FetchError::NotFound(m),
            FetchError::InvalidSource(m) => w::FetchError::InvalidSource(m),
            FetchError::Denied(m) => w::FetchError::Denied(m),
            FetchError::Upstream(m) => w::FetchError::Upstream(m),
            FetchError::Timeout => w::FetchError::Timeout,
            FetchError::TooLarge(m) => w::FetchError::TooLarge(m),
        }
    }
}

impl From<w::FetchError> for FetchError {
    fn from(e: w::FetchError) -> Self {
        match e {
            w::FetchError::NotFound(m) => FetchError::NotFound(m),
            w::FetchError::InvalidSource(m) => FetchError::InvalidSource(m),
            w::FetchError::Denied(m) => FetchError::Denied(m),
            w::FetchError::Upstream(m) => FetchError::Upstream(m),
            w::FetchError::Timeout => FetchError::Timeout,
            w::FetchError::TooLarge(m) => FetchError::TooLarge(m),
        }
    }
}

impl From<w::ChangeKind> for ChangeKind {
    fn from(kind: w::ChangeKind) -> Self {
        match kind {
            w::ChangeKind::Added => ChangeKind::Added,
            w::ChangeKind::Removed => ChangeKind::Removed,
            w::ChangeKind::Modified => ChangeKind::Modified,
        }
    }
}

impl From<w::FileChange> for FileChange {
    fn from(c: w::FileChange) -> Self {
        FileChange {
            path: c.path,
            kind: c.kind.into(),
            old_digest: c.old_digest,
            new_digest: c.new_digest,
        }
    }
}

impl From<w::Reload> for Reload {
    fn from(r: w::Reload) -> Self {
        match r {
            w::Reload::Hot => Reload::Hot,
            w::Reload::Cold(reason) => Reload::Cold(reason),
        }
    }
}

impl From<Reload> for w::Reload {
    fn from(r: Reload) -> Self {
        match r {
            Reload::Hot => w::Reload::Hot,
            Reload::Cold(reason) => w::Reload::Cold(reason),
        }
    }
}

impl From<w::WorkspaceInfo> for WorkspaceInfo {
    fn from(ws: w::WorkspaceInfo) -> Self {
        WorkspaceInfo {
            id: ws.id,
            name: ws.name,
            runtime: ws.runtime,
            tier: ws.tier,
            status: ws.status,
            update_tier: UpdateTier::parse(&ws.update_tier),
            recent_restarts: ws.recent_restarts,
        }
    }
}

impl From<w::Trigger> for Trigger {
    fn from(t: w::Trigger) -> Self {
        match t {
            w::Trigger::FilesWritten(paths) => Trigger::FilesWritten(paths),
            w::Trigger::SecretsChanged(keys) => Trigger::SecretsChanged(keys),
            w::Trigger::PluginInstalled(p) => Trigger::PluginInstalled(PluginInstalled {
                name: p.name,
                reload: p.reload.into(),
            }),
            w::Trigger::ConfigChanged => Trigger::ConfigChanged,
            w::Trigger::AgentExited(code) => Trigger::AgentExited(code),
            w::Trigger::DriftApplied(d) => Trigger::DriftApplied(DriftApplied {
                plugin: d.plugin,
                already_updated: d.already_updated,
            }),
        }
    }
}

impl From<Decision> for w::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::KeepRunning => w::Decision::KeepRunning,
            Decision::HotReload => w::Decision::HotReload,
            Decision::RestartNow => w::Decision::RestartNow,
            Decision::RestartAfterMs(ms) => w::Decision::RestartAfterMs(ms),
        }
    }
}

impl From<wremote::RemoteRef> for RemoteRef {
    fn from(r: wremote::RemoteRef) -> Self {
        RemoteRef {
            name: r.name,
            revision: r.revision,
        }
    }
}

pub(crate) fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level;
    let level = match level {
        Level::Trace => wlog::Level::Trace,
        Level::Debug => wlog::Level::Debug,
        Level::Info => wlog::Level::Info,
        Level::Warn => wlog::Level::Warn,
        Level::Error => wlog::Level::Error,
    };
    wlog::log(level, message);
}

pub(crate) fn list_refs(url: &str) -> Result<Vec<RemoteRef>, FetchError> {
    wremote::list_refs(url)
        .map(|refs| refs.into_iter().map(RemoteRef::from).collect())
        .map_err(FetchError::from)
}

pub(crate) fn checkout(url: &str, revision: &str, subdir: Option<&str>) -> Result<(), FetchError> {
    wremote::checkout(url, revision, subdir).map_err(FetchError::from)
}
