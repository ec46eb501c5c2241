//! Generated WIT bindings and the one boundary where their types meet the host's domain types.
//! Nothing outside `extensions/` sees this module.

use super::types::{
    ChangeKind, Decision, FetchError, Fetched, FileChange, Reload, RemoteRef, Source, Trigger,
    WorkspaceInfo,
};

pub mod classifier {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "classifier",
    });
}

pub mod restart_policy {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "restart-policy",
        with: {
            "molecule:plugin/types": super::classifier::molecule::plugin::types,
            "molecule:plugin/log": super::classifier::molecule::plugin::log,
        },
    });
}

pub mod resolver {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "resolver",
        with: {
            "molecule:plugin/types": super::classifier::molecule::plugin::types,
            "molecule:plugin/log": super::classifier::molecule::plugin::log,
        },
    });
}

/// Classifiers of `molecule:plugin@0.1.1`, which export `classify-packed`. Its types and the
/// `log` import are 0.1.0's (0.1.1 only adds to them): a component's `...@0.1.1` imports link
/// to the host's 0.1.0 definitions, which wasmtime accepts as semver-compatible.
pub mod packed_classifier {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.1",
        world: "packed-classifier",
        with: {
            "molecule:plugin/types": super::packed_types,
            "molecule:plugin/log": super::classifier::molecule::plugin::log,
        },
    });
}

/// `molecule:plugin/types@0.1.1`: the 0.1.0 types plus the packed-change records.
pub mod packed_types {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.1",
        inline: "
            package molecule:host-packed-types;
            world packed-types {
                import molecule:plugin/types@0.1.1;
            }
        ",
        world: "molecule:host-packed-types/packed-types",
    });
    pub use molecule::plugin::types::*;
}

use classifier::molecule::plugin::types as wit;
use resolver::molecule::plugin::remote as wit_remote;

pub use classifier::molecule::plugin::log::Level as LogLevel;

impl From<&FileChange> for wit::FileChange {
    fn from(change: &FileChange) -> Self {
        wit::FileChange {
            path: change.path.clone(),
            kind: match change.kind {
                ChangeKind::Added => wit::ChangeKind::Added,
                ChangeKind::Removed => wit::ChangeKind::Removed,
                ChangeKind::Modified => wit::ChangeKind::Modified,
            },
            old_digest: change.old_digest.clone(),
            new_digest: change.new_digest.clone(),
        }
    }
}

/// Packs `changes` for `classify-packed` (see `packed-changes` in `wit/v0.1.1/types.wit`):
/// every path and digest into one text, four words per change. A list of integers crosses into
/// the guest as one copy, where a list of records is written field by field. `None` when the
/// text would not fit the `u32` offsets, which no guest memory (at most
/// [`super::engine::MAX_GUEST_MEMORY`]) could hold anyway.
pub(super) fn pack(changes: &[FileChange]) -> Option<packed_types::PackedChanges> {
    const HAS_OLD: u32 = 1 << 8;
    const HAS_NEW: u32 = 1 << 9;
    let len: usize = changes
        .iter()
        .map(|c| {
            c.path.len()
                + c.old_digest.as_ref().map_or(0, String::len)
                + c.new_digest.as_ref().map_or(0, String::len)
        })
        .sum();
    u32::try_from(len).ok()?;
    let mut text = String::with_capacity(len);
    let mut words = Vec::with_capacity(changes.len() * 4);
    for c in changes {
        let mut flags = match c.kind {
            ChangeKind::Added => 0,
            ChangeKind::Removed => 1,
            ChangeKind::Modified => 2,
        };
        text.push_str(&c.path);
        let path_end = text.len() as u32;
        if let Some(old) = &c.old_digest {
            flags |= HAS_OLD;
            text.push_str(old);
        }
        let old_end = text.len() as u32;
        if let Some(new) = &c.new_digest {
            flags |= HAS_NEW;
            text.push_str(new);
        }
        words.extend([flags, path_end, old_end, text.len() as u32]);
    }
    Some(packed_types::PackedChanges {
        text,
        changes: words,
    })
}

/// A classifier's cold reason is kept like a guest's error: never longer than
/// [`MAX_GUEST_MESSAGE`] (it travels on in the restart trigger, to the policy and the logs).
impl From<packed_types::Reload> for Reload {
    fn from(reload: packed_types::Reload) -> Self {
        match reload {
            packed_types::Reload::Hot => Reload::Hot,
            packed_types::Reload::Cold(reason) => Reload::Cold(cut(reason)),
        }
    }
}

impl From<wit::Reload> for Reload {
    fn from(reload: wit::Reload) -> Self {
        match reload {
            wit::Reload::Hot => Reload::Hot,
            wit::Reload::Cold(reason) => Reload::Cold(cut(reason)),
        }
    }
}

impl From<&Reload> for wit::Reload {
    fn from(reload: &Reload) -> Self {
        match reload {
            Reload::Hot => wit::Reload::Hot,
            Reload::Cold(reason) => wit::Reload::Cold(reason.clone()),
        }
    }
}

impl From<&WorkspaceInfo> for wit::WorkspaceInfo {
    fn from(ws: &WorkspaceInfo) -> Self {
        wit::WorkspaceInfo {
            id: ws.id.clone(),
            name: ws.name.clone(),
            runtime: ws.runtime.clone(),
            tier: ws.tier,
            status: ws.status.clone(),
            update_tier: ws.update_tier.as_str().to_owned(),
            recent_restarts: ws.recent_restarts,
        }
    }
}

impl From<&Trigger> for wit::Trigger {
    fn from(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::FilesWritten(paths) => wit::Trigger::FilesWritten(paths.clone()),
            Trigger::SecretsChanged(keys) => wit::Trigger::SecretsChanged(keys.clone()),
            Trigger::PluginInstalled(installed) => {
                wit::Trigger::PluginInstalled(wit::PluginInstalled {
                    name: installed.name.clone(),
                    reload: (&installed.reload).into(),
                })
            }
            Trigger::ConfigChanged => wit::Trigger::ConfigChanged,
            Trigger::AgentExited(code) => wit::Trigger::AgentExited(*code),
            Trigger::DriftApplied(drift) => wit::Trigger::DriftApplied(wit::DriftApplied {
                plugin: drift.plugin.clone(),
                already_updated: drift.already_updated,
            }),
        }
    }
}

impl From<wit::Decision> for Decision {
    fn from(decision: wit::Decision) -> Self {
        match decision {
            wit::Decision::KeepRunning => Decision::KeepRunning,
            wit::Decision::HotReload => Decision::HotReload,
            wit::Decision::RestartNow => Decision::RestartNow,
            wit::Decision::RestartAfterMs(ms) => Decision::RestartAfterMs(ms),
        }
    }
}

/// Longest message the host keeps from a guest's error; the rest is cut.
const MAX_GUEST_MESSAGE: usize = 2048;

pub(super) fn cut(message: String) -> String {
    if message.len() <= MAX_GUEST_MESSAGE {
        return message;
    }
    let mut end = MAX_GUEST_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

impl From<&Source> for wit::Source {
    fn from(source: &Source) -> Self {
        wit::Source {
            scheme: source.scheme.clone(),
            location: source.location.clone(),
            reference: source.reference.clone(),
        }
    }
}

impl From<wit::Fetched> for Fetched {
    fn from(fetched: wit::Fetched) -> Self {
        Fetched {
            name: fetched.name,
            revision: fetched.revision,
        }
    }
}

/// Guest errors are kept, but never longer than [`MAX_GUEST_MESSAGE`].
impl From<wit::FetchError> for FetchError {
    fn from(err: wit::FetchError) -> Self {
        match err {
            wit::FetchError::NotFound(m) => FetchError::NotFound(cut(m)),
            wit::FetchError::InvalidSource(m) => FetchError::InvalidSource(cut(m)),
            wit::FetchError::Denied(m) => FetchError::Denied(cut(m)),
            wit::FetchError::Upstream(m) => FetchError::Upstream(cut(m)),
            wit::FetchError::Timeout => FetchError::Timeout,
            wit::FetchError::TooLarge(m) => FetchError::TooLarge(cut(m)),
        }
    }
}

impl From<FetchError> for wit::FetchError {
    fn from(err: FetchError) -> Self {
        match err {
            FetchError::NotFound(m) => wit::FetchError::NotFound(m),
            FetchError::InvalidSource(m) => wit::FetchError::InvalidSource(m),
            FetchError::Denied(m) => wit::FetchError::Denied(m),
            FetchError::Upstream(m) => wit::FetchError::Upstream(m),
            FetchError::Timeout => wit::FetchError::Timeout,
            FetchError::TooLarge(m) => wit::FetchError::TooLarge(m),
        }
    }
}

impl From<RemoteRef> for wit_remote::RemoteRef {
    fn from(r: RemoteRef) -> Self {
        wit_remote::RemoteRef {
            name: r.name,
            revision: r.revision,
        }
    }
}
