//! The types a restart decision is made over. The guest SDK re-exports them as its own; the
//! host uses them as its domain types, and with the `host` feature reads and writes them as
//! JSON in the shape its case files and shadow reports have always had.

#[cfg(feature = "host")]
use serde::{Deserialize, Serialize};

/// Whether the agent can pick a change up while running.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "host",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case", tag = "kind", content = "reason")
)]
pub enum Reload {
    /// The running agent reloads the files itself.
    Hot,
    /// The agent must restart; the reason lands in the host's log and events.
    Cold(String),
}

impl Reload {
    pub fn cold(reason: impl Into<String>) -> Self {
        Reload::Cold(reason.into())
    }

    pub fn is_hot(&self) -> bool {
        matches!(self, Reload::Hot)
    }
}

/// Which wave of a rollout a workspace belongs to. In JSON it is the tier's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "host",
    derive(Serialize, Deserialize),
    serde(from = "String", into = "String")
)]
pub enum UpdateTier {
    /// Takes updates first.
    Canary,
    /// Takes updates after the canaries.
    Production,
    /// A tier this version does not know; treat it like production.
    Other(String),
}

impl UpdateTier {
    pub fn parse(raw: &str) -> Self {
        match raw {
            "canary" => UpdateTier::Canary,
            "production" => UpdateTier::Production,
            other => UpdateTier::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            UpdateTier::Canary => "canary",
            UpdateTier::Production => "production",
            UpdateTier::Other(other) => other,
        }
    }
}

impl From<&str> for UpdateTier {
    fn from(raw: &str) -> Self {
        UpdateTier::parse(raw)
    }
}

impl From<String> for UpdateTier {
    fn from(raw: String) -> Self {
        UpdateTier::parse(&raw)
    }
}

impl From<UpdateTier> for String {
    fn from(tier: UpdateTier) -> Self {
        match tier {
            UpdateTier::Other(other) => other,
            known => known.as_str().to_owned(),
        }
    }
}

/// The workspace a restart decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "host", derive(Serialize, Deserialize))]
pub struct WorkspaceInfo {
    pub id: String,
    pub name: String,
    /// The agent runtime, e.g. `langgraph`.
    pub runtime: String,
    /// 1 to 4.
    pub tier: u8,
    /// The lifecycle status, e.g. `online`, `paused`, `hibernated`.
    pub status: String,
    pub update_tier: UpdateTier,
    /// Restarts in the host's recent window, for crash-loop back-off.
    pub recent_restarts: u32,
}

/// What happened that might need a restart.
///
/// Non-exhaustive for extension authors: a later API version may add triggers, so match with a
/// `_` arm. The host (the `host` feature) ships with this crate and matches every trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "host"), non_exhaustive)]
#[cfg_attr(
    feature = "host",
    derive(Serialize, Deserialize),
    serde(from = "json::Trigger", into = "json::Trigger")
)]
pub enum Trigger {
    /// Files were written into the workspace's config dir (relative paths).
    FilesWritten(Vec<String>),
    /// Secrets changed (their keys, never their values).
    SecretsChanged(Vec<String>),
    /// A plugin was installed; `reload` is the classifier's verdict.
    PluginInstalled(PluginInstalled),
    /// The workspace's configuration changed.
    ConfigChanged,
    /// The agent process exited with this code.
    AgentExited(i32),
    /// A tracked plugin drifted upstream and the update was applied.
    DriftApplied(DriftApplied),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginInstalled {
    pub name: String,
    pub reload: Reload,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DriftApplied {
    pub plugin: String,
    /// How many workspaces of the same org have already been updated in this rollout.
    pub already_updated: u32,
}

/// What to do with the workspace. The host clamps every answer (minimum delay, maximum
/// restarts per window), so a policy cannot cause a restart storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "host",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case", tag = "kind", content = "ms")
)]
pub enum Decision {
    KeepRunning,
    HotReload,
    RestartNow,
    RestartAfterMs(u32),
}

impl Decision {
    /// Restart after `delay`, saturating at `u32::MAX` milliseconds (about 49 days).
    pub fn restart_after(delay: std::time::Duration) -> Self {
        Decision::RestartAfterMs(u32::try_from(delay.as_millis()).unwrap_or(u32::MAX))
    }

    /// Whether the agent is (or will be) restarted.
    pub fn restarts(self) -> bool {
        matches!(self, Decision::RestartNow | Decision::RestartAfterMs(_))
    }
}

/// The JSON shape of a trigger: internally tagged by `kind`, each payload a named field
/// (`{"kind": "agent_exited", "code": 1}`), as the host has always written and read it.
#[cfg(feature = "host")]
mod json {
    use serde::{Deserialize, Serialize};

    use super::{DriftApplied, PluginInstalled, Reload};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", tag = "kind")]
    pub(super) enum Trigger {
        FilesWritten {
            paths: Vec<String>,
        },
        SecretsChanged {
            keys: Vec<String>,
        },
        PluginInstalled {
            name: String,
            reload: Reload,
        },
        ConfigChanged,
        AgentExited {
            code: i32,
        },
        DriftApplied {
            plugin: String,
            already_updated: u32,
        },
    }

    impl From<Trigger> for super::Trigger {
        fn from(trigger: Trigger) -> Self {
            match trigger {
                Trigger::FilesWritten { paths } => super::Trigger::FilesWritten(paths),
                Trigger::SecretsChanged { keys } => super::Trigger::SecretsChanged(keys),
                Trigger::PluginInstalled { name, reload } => {
                    super::Trigger::PluginInstalled(PluginInstalled { name, reload })
                }
                Trigger::ConfigChanged => super::Trigger::ConfigChanged,
                Trigger::AgentExited { code } => super::Trigger::AgentExited(code),
                Trigger::DriftApplied {
                    plugin,
                    already_updated,
                } => super::Trigger::DriftApplied(DriftApplied {
                    plugin,
                    already_updated,
                }),
            }
        }
    }

    impl From<super::Trigger> for Trigger {
        fn from(trigger: super::Trigger) -> Self {
            match trigger {
                super::Trigger::FilesWritten(paths) => Trigger::FilesWritten { paths },
                super::Trigger::SecretsChanged(keys) => Trigger::SecretsChanged { keys },
                super::Trigger::PluginInstalled(PluginInstalled { name, reload }) => {
                    Trigger::PluginInstalled { name, reload }
                }
                super::Trigger::ConfigChanged => Trigger::ConfigChanged,
                super::Trigger::AgentExited(code) => Trigger::AgentExited { code },
                super::Trigger::DriftApplied(DriftApplied {
                    plugin,
                    already_updated,
                }) => Trigger::DriftApplied {
                    plugin,
                    already_updated,
                },
            }
        }
    }
}
