//! Where agents run. [`ContainerRuntime`] is the narrow seam the lifecycle needs; `docker`
//! (bollard) is the production runtime and `process` runs the reference agent as local child
//! processes when no Docker engine answers. Runtimes run things and write no database rows.

pub mod docker;
pub mod process;

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::{Config, RuntimeKind};
use crate::safefs::{FileTree, ListedFile, RelPath, SafeFsError};

/// The label every container and volume the host manages carries.
pub const MANAGED_LABEL: &str = "molecule.platform.managed";
/// The label naming the workspace a container belongs to.
pub const WORKSPACE_LABEL: &str = "molecule.workspace.id";
/// Where the agent finds its files inside a container.
pub const CONFIGS_ROOT: &str = "/configs";
/// Roots a file listing may ask for.
pub const FILE_ROOTS: &[&str] = &["/configs", "/workspace", "/home", "/plugins"];

/// The first 12 characters of a workspace id: container `ws-<id12>`.
pub fn id12(id: Uuid) -> String {
    id.to_string()[..12].to_owned()
}

/// Environment for an agent. `Debug` shows only the names: values carry secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgentEnv(BTreeMap<String, String>);

impl AgentEnv {
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

impl std::fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Everything a runtime needs to start a workspace's agent.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub workspace_id: Uuid,
    /// The workspace's runtime name (chooses the image).
    pub runtime: String,
    pub tier: i32,
    pub env: AgentEnv,
    /// Written into `/configs` before the agent starts, over what is already there.
    pub files: FileTree,
    /// The 127.0.0.1 port the agent is reached on (published by Docker, bound by a process),
    /// chosen before the start so the host knows the agent's URL before the agent registers.
    pub port: u16,
}

/// A port on 127.0.0.1 that is free right now. Another program may take it before the agent
/// does; a start that fails on it is retried with another.
pub fn free_loopback_port() -> Result<u16, RuntimeError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| RuntimeError::Failed(format!("finding a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| RuntimeError::Failed(format!("finding a free port: {e}")))
}

/// A started agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Where the host reaches the agent.
    pub url: String,
}

/// What a runtime knows about a workspace's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inspection {
    /// A container or process record exists (it may have exited).
    pub exists: bool,
    pub running: bool,
    /// Set once the agent has exited.
    pub exit_code: Option<i64>,
}

/// Where a file write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    /// Into the running agent's files.
    Running,
    /// Into the stored files of a stopped agent (its volume or directory).
    Stored,
}

impl WriteTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteTarget::Running => "container",
            WriteTarget::Stored => "volume",
        }
    }
}

/// The output of a command run in a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Failures of a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The workspace has no container, volume or process: nothing holds its files.
    #[error("workspace offline — retry after it starts")]
    Offline,
    #[error("not found")]
    NotFound,
    #[error("invalid path")]
    InvalidPath,
    /// The agent image is missing; the operator must build it.
    #[error("agent image {0} not found; build it with `make image`")]
    ImageMissing(String),
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl From<SafeFsError> for RuntimeError {
    fn from(err: SafeFsError) -> Self {
        match err {
            SafeFsError::InvalidPath | SafeFsError::Escapes(_) => RuntimeError::InvalidPath,
            SafeFsError::NotFound => RuntimeError::NotFound,
            other => RuntimeError::Failed(other.to_string()),
        }
    }
}

/// What the lifecycle needs from wherever agents run. Every operation is idempotent: stopping a
/// stopped agent or removing a removed one succeeds.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// `docker` or `process`.
    fn name(&self) -> &'static str;
    /// The address agents reach the host on when it is not loopback (the Docker network's
    /// gateway); the host opens an extra listener there. `None`: the main listener serves.
    fn agent_listen_ip(&self) -> Option<std::net::IpAddr>;
    /// Replaces any previous agent of the workspace with a fresh one; files persist.
    async fn start(&self, spec: &StartSpec) -> Result<Started, RuntimeError>;
    /// Stops the agent; its files stay.
    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError>;
    /// Stops the agent and removes it with its files.
    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError>;
    async fn inspect(&self, id: Uuid) -> Result<Inspection, RuntimeError>;
    /// Writes files into `/configs` of a running agent, or into its stored files when stopped.
    async fn write_files(&self, id: Uuid, files: &FileTree) -> Result<WriteTarget, RuntimeError>;
    /// Removes a file or directory under `/configs`.
    async fn remove_path(&self, id: Uuid, path: &RelPath) -> Result<WriteTarget, RuntimeError>;
    async fn read_file(
        &self,
        id: Uuid,
        root: &str,
        path: &RelPath,
    ) -> Result<Vec<u8>, RuntimeError>;
    async fn list_files(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
        depth: usize,
    ) -> Result<Vec<ListedFile>, RuntimeError>;
    /// `sha256:<hex>` of every file under a `/configs` subdirectory, keyed by relative path.
    async fn digests(
        &self,
        id: Uuid,
        path: Option<&RelPath>,
    ) -> Result<BTreeMap<String, String>, RuntimeError>;
    /// Runs a command inside the workspace (the running container, or the agent's directory).
    /// Renames `from` to `to` inside `/configs`, creating `to`'s parent; `to` must not exist.
    /// Docker needs the container running (the atomic plugin swap runs against live agents).
    async fn rename_path(&self, id: Uuid, from: &RelPath, to: &RelPath)
    -> Result<(), RuntimeError>;
    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError>;
    /// The last `tail` lines of the agent's output.
    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError>;
    /// Workspaces this runtime (and this host's labels) has agents or files for.
    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError>;
    /// Called once on host shutdown: the process runtime stops its children; containers stay.
    async fn shutdown(&self);
}

/// Picks the runtime the configuration asks for; `auto` means Docker when an engine answers.
pub async fn select(config: &Config) -> anyhow::Result<Option<Arc<dyn ContainerRuntime>>> {
    let settings = &config.runtime;
    Ok(Some(match settings.kind {
        RuntimeKind::None => return Ok(None),
        RuntimeKind::Docker => Arc::new(docker::DockerRuntime::connect(settings).await?),
        RuntimeKind::Process => Arc::new(process::ProcessRuntime::new(config)?),
        RuntimeKind::Auto => match docker::DockerRuntime::connect(settings).await {
            Ok(docker) => Arc::new(docker),
            Err(err) => {
                tracing::info!(reason = %err, "no Docker engine answered; workspaces run as local processes");
                Arc::new(process::ProcessRuntime::new(config)?)
            }
        },
    }))
}
