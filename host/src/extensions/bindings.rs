//! Generated WIT bindings and the one boundary where their types meet the host's domain types.
//! Nothing outside `extensions/` sees this module.

use super::types::{ChangeKind, Decision, FileChange, Reload, Trigger, WorkspaceInfo};

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

use classifier::molecule::plugin::types as wit;

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

impl From<wit::Reload> for Reload {
    fn from(reload: wit::Reload) -> Self {
        match reload {
            wit::Reload::Hot => Reload::Hot,
            wit::Reload::Cold(reason) => Reload::Cold(reason),
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
            update_tier: ws.update_tier.clone(),
            recent_restarts: ws.recent_restarts,
        }
    }
}

impl From<&Trigger> for wit::Trigger {
    fn from(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::FilesWritten { paths } => wit::Trigger::FilesWritten(paths.clone()),
            Trigger::SecretsChanged { keys } => wit::Trigger::SecretsChanged(keys.clone()),
            Trigger::PluginInstalled { name, reload } => {
                wit::Trigger::PluginInstalled(wit::PluginInstalled {
                    name: name.clone(),
                    reload: reload.into(),
                })
            }
            Trigger::ConfigChanged => wit::Trigger::ConfigChanged,
            Trigger::AgentExited { code } => wit::Trigger::AgentExited(*code),
            Trigger::DriftApplied {
                plugin,
                already_updated,
            } => wit::Trigger::DriftApplied(wit::DriftApplied {
                plugin: plugin.clone(),
                already_updated: *already_updated,
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
