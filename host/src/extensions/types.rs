//! Domain types of the extension slots. The rest of the host uses these; only `bindings.rs`
//! converts them to and from the generated WIT types.

/// How a file differs between the live plugin tree and the staged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

/// One changed file, by its `/`-separated path relative to the plugin root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
    pub old_digest: Option<String>,
    pub new_digest: Option<String>,
}

/// Whether a change can be picked up by the running agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum Reload {
    Hot,
    Cold(String),
}

/// The workspace a restart decision is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkspaceInfo {
    pub id: String,
    pub name: String,
    pub runtime: String,
    pub tier: u8,
    pub status: String,
    pub update_tier: String,
    pub recent_restarts: u32,
}

/// What happened that might need a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
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

/// What to do with the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ms")]
pub enum Decision {
    KeepRunning,
    HotReload,
    RestartNow,
    RestartAfterMs(u32),
}

/// The three kinds of extension slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Resolver,
    Classifier,
    RestartPolicy,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Resolver => "resolver",
            SlotKind::Classifier => "classifier",
            SlotKind::RestartPolicy => "restart-policy",
        }
    }

    /// The interface a component of this kind must export (without the version).
    pub fn export_interface(self) -> &'static str {
        match self {
            SlotKind::Resolver => "molecule:plugin/resolve",
            SlotKind::Classifier => "molecule:plugin/classify",
            SlotKind::RestartPolicy => "molecule:plugin/restart",
        }
    }
}
