//! Where agents run. [`ContainerRuntime`] is the narrow seam the lifecycle needs; `docker`
//! (bollard) is the production runtime, `kubernetes` (kube-rs) runs one Pod per workspace in a
//! cluster, and `process` runs the reference agent as local child processes when no Docker
//! engine answers. Runtimes run things and write no database rows.

pub mod docker;
pub mod kubernetes;
pub mod process;
pub mod recording;

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::{Config, RuntimeConfig, RuntimeKind};
use crate::safefs::{self, FileTree, ListedFile, RelPath, SafeFsError};

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

/// Output kept from an exec or a log read.
pub(crate) const MAX_OUTPUT: usize = 1024 * 1024;

/// Appends what fits under [`MAX_OUTPUT`]; the rest is dropped.
pub(crate) fn extend_capped(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// The labels of everything the host creates for a workspace: the configured extra labels, the
/// managed marker and the workspace id.
pub(crate) fn workspace_labels(settings: &RuntimeConfig, id: Uuid) -> BTreeMap<String, String> {
    let mut labels = settings.labels.clone();
    labels.insert(MANAGED_LABEL.into(), "true".into());
    labels.insert(WORKSPACE_LABEL.into(), id.to_string());
    labels
}

/// `key=value` selectors matching what this host manages (its extra labels included, so hosts
/// sharing an engine or a namespace, such as parallel tests, never touch each other's agents).
pub(crate) fn managed_selectors(settings: &RuntimeConfig) -> Vec<String> {
    let mut selectors = vec![format!("{MANAGED_LABEL}=true")];
    selectors.extend(settings.labels.iter().map(|(k, v)| format!("{k}={v}")));
    selectors
}

/// The absolute path of `path` under one of the [`FILE_ROOTS`].
pub(crate) fn rooted(root: &str, path: Option<&RelPath>) -> Result<String, RuntimeError> {
    if !FILE_ROOTS.contains(&root) {
        return Err(RuntimeError::InvalidPath);
    }
    Ok(match path {
        Some(p) => format!("{root}/{p}"),
        None => root.to_owned(),
    })
}

/// A listing from the entries of an archive of `root/path` (already re-rooted): at most `depth`
/// levels below `path`, without tool and cache directories, sorted by path.
fn listing(
    entries: Vec<safefs::TarEntry>,
    path: Option<&RelPath>,
    depth: usize,
) -> Vec<ListedFile> {
    let base_depth = path.map_or(0, |p| p.as_str().split('/').count());
    let mut out: Vec<ListedFile> = entries
        .into_iter()
        .filter(|(p, _)| Some(p) != path)
        .filter(|(p, _)| {
            let parts: Vec<&str> = p.as_str().split('/').collect();
            parts.len() - base_depth <= depth
                && !parts
                    .iter()
                    .any(|part| safefs::SKIPPED_NAMES.contains(part))
        })
        .map(|(p, data)| ListedFile {
            path: p.to_string(),
            size: data.as_ref().map_or(0, |d| d.len() as u64),
            dir: data.is_none(),
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// `sha256:<hex>` of every file among the entries of an archive of `/configs/path`, keyed by
/// its path relative to `path`.
fn entry_digests(
    entries: Vec<safefs::TarEntry>,
    path: Option<&RelPath>,
) -> BTreeMap<String, String> {
    let prefix = path.map(|p| format!("{p}/"));
    entries
        .into_iter()
        .filter_map(|(p, data)| {
            let data = data?;
            let relative = match &prefix {
                Some(prefix) => p.as_str().strip_prefix(prefix.as_str())?.to_owned(),
                None => p.to_string(),
            };
            Some((relative, safefs::digest(&data)))
        })
        .collect()
}

/// A change to the files under `/configs`, what [`ContainerRuntime::change_files`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesChange<'a> {
    /// Remove a file or directory with everything below it.
    Remove(&'a RelPath),
    /// Rename `from` to `to`, creating `to`'s parent first; `to` must not exist.
    Rename { from: &'a RelPath, to: &'a RelPath },
}

impl FilesChange<'_> {
    /// The commands that make this change inside a container or Pod, in order.
    pub(crate) fn commands(self) -> Vec<Vec<String>> {
        match self {
            FilesChange::Remove(path) => vec![vec![
                "rm".to_owned(),
                "-rf".to_owned(),
                format!("{CONFIGS_ROOT}/{path}"),
            ]],
            FilesChange::Rename { from, to } => {
                let target = format!("{CONFIGS_ROOT}/{to}");
                let parent = target
                    .rsplit_once('/')
                    .map_or(CONFIGS_ROOT, |(p, _)| p)
                    .to_owned();
                vec![
                    vec!["mkdir".to_owned(), "-p".to_owned(), parent],
                    vec!["mv".to_owned(), format!("{CONFIGS_ROOT}/{from}"), target],
                ]
            }
        }
    }
}

/// A command that must succeed: a non-zero exit is an error naming the program and the first
/// line of its stderr.
pub(crate) fn exited_ok(program: &str, out: &ExecOutput) -> Result<(), RuntimeError> {
    if out.exit_code == 0 {
        return Ok(());
    }
    Err(RuntimeError::Failed(format!(
        "{program} exited with {}: {}",
        out.exit_code,
        out.stderr.lines().next().unwrap_or_default()
    )))
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

/// An agent's output as it is written (see [`ContainerRuntime::follow_logs`]).
pub type LogStream = futures::stream::BoxStream<'static, Result<Vec<u8>, RuntimeError>>;

/// The size of a terminal, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// The environment variable that marks every process of one terminal session (its value is the
/// session's id): closing the session kills each process that carries it, whatever it became
/// (a background job, a daemon that left the session), which a process group would not catch.
pub const TERMINAL_MARKER: &str = "MOLECULE_TERMINAL";

/// The shell a terminal runs in an agent's container (Docker, Kubernetes).
pub const TERMINAL_SHELL: &str = "/bin/sh";

/// Kills, inside an agent's container, every process whose environment carries the marker
/// given as `$1` (`MOLECULE_TERMINAL=<session>`): the shell of a session and all it started.
/// Neither Docker nor a Pod exec can signal an exec's process, and both leave it running when
/// the attached client goes away.
pub const KILL_MARKED: &str = r#"for p in /proc/[0-9]*; do
  if grep -q "$1" "$p/environ" 2>/dev/null; then kill -9 "${p#/proc/}" 2>/dev/null; fi
done"#;

/// An interactive shell in a workspace's environment (see [`ContainerRuntime::open_terminal`]).
pub struct Terminal {
    /// What the shell writes to its terminal, as it writes it; ends when the shell exits.
    pub output: LogStream,
    /// The shell's keyboard.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Resizes the terminal and ends the session.
    pub control: Box<dyn TerminalControl>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

/// The side of a [`Terminal`] that is not a byte stream.
#[async_trait::async_trait]
pub trait TerminalControl: Send + Sync {
    async fn resize(&self, size: TermSize) -> Result<(), RuntimeError>;
    /// Ends the shell and every process the session started. Safe to call more than once.
    async fn close(&self);
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
    /// `docker`, `kubernetes` or `process`.
    fn name(&self) -> &'static str;
    /// The URLs this runtime gives `id`'s agent on its own network, names the host and other
    /// agents may reach it by; the first is the one the agent announces (`MOLECULE_AGENT_URL`).
    /// Empty when the agent has no such name (the process runtime assigns a loopback port).
    fn network_urls(&self, _id: Uuid) -> Vec<String> {
        Vec::new()
    }
    /// The URL another agent reaches `id`'s agent on, given the URL the host stores for it (the
    /// host's view, which may mean nothing inside another agent's network).
    fn peer_url(&self, _id: Uuid, stored: &str) -> String {
        stored.to_owned()
    }
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
    /// The files under `root/path` (one of the [`FILE_ROOTS`]) as archive entries named
    /// relative to `root`, a directory without content: the one read primitive the listing, the
    /// digests and (unless a runtime reads a single file more cheaply) `read_file` are built on.
    async fn archive(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
    ) -> Result<Vec<safefs::TarEntry>, RuntimeError>;
    /// Applies one change to the files under `/configs`: the running agent's files, or its stored
    /// files when it is stopped (or between two restart cycles: a plugin swap must not depend on
    /// catching the agent up). The one write primitive `remove_path` and `rename_path` are built
    /// on.
    async fn change_files(
        &self,
        id: Uuid,
        change: FilesChange<'_>,
    ) -> Result<WriteTarget, RuntimeError>;
    /// Removes a file or directory under `/configs`.
    async fn remove_path(&self, id: Uuid, path: &RelPath) -> Result<WriteTarget, RuntimeError> {
        self.change_files(id, FilesChange::Remove(path)).await
    }
    async fn read_file(
        &self,
        id: Uuid,
        root: &str,
        path: &RelPath,
    ) -> Result<Vec<u8>, RuntimeError> {
        self.archive(id, root, Some(path))
            .await?
            .into_iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, data)| data)
            .ok_or(RuntimeError::NotFound)
    }
    async fn list_files(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
        depth: usize,
    ) -> Result<Vec<ListedFile>, RuntimeError> {
        Ok(listing(self.archive(id, root, path).await?, path, depth))
    }
    /// `sha256:<hex>` of every file under a `/configs` subdirectory, keyed by relative path.
    async fn digests(
        &self,
        id: Uuid,
        path: Option<&RelPath>,
    ) -> Result<BTreeMap<String, String>, RuntimeError> {
        Ok(entry_digests(
            self.archive(id, CONFIGS_ROOT, path).await?,
            path,
        ))
    }
    /// Renames `from` to `to` inside `/configs`, creating `to`'s parent; `to` must not exist.
    async fn rename_path(
        &self,
        id: Uuid,
        from: &RelPath,
        to: &RelPath,
    ) -> Result<(), RuntimeError> {
        self.change_files(id, FilesChange::Rename { from, to })
            .await
            .map(drop)
    }
    /// Runs a command inside the workspace (the running container, or the agent's directory).
    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError>;
    /// The last `tail` lines of the agent's output.
    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError>;
    /// The last `tail` lines of the agent's output, then what it writes from then on, until the
    /// stream is dropped. Runtimes that cannot follow answer [`RuntimeError::Unavailable`].
    async fn follow_logs(&self, _id: Uuid, _tail: usize) -> Result<LogStream, RuntimeError> {
        Err(RuntimeError::Unavailable(format!(
            "the {} runtime cannot follow an agent's log",
            self.name()
        )))
    }
    /// Whether [`ContainerRuntime::open_terminal`] can work here at all.
    fn has_terminal(&self) -> bool {
        false
    }
    /// Starts an interactive shell of `size` in the workspace's environment, as its agent runs
    /// (the container's user, or the agent's uid and sandbox), its processes marked with
    /// [`TERMINAL_MARKER`]` = session`. [`RuntimeError::Offline`] when the agent is not running.
    async fn open_terminal(
        &self,
        _id: Uuid,
        _session: Uuid,
        _size: TermSize,
    ) -> Result<Terminal, RuntimeError> {
        Err(RuntimeError::Unavailable(format!(
            "the {} runtime has no terminal",
            self.name()
        )))
    }
    /// Workspaces this runtime (and this host's labels) has agents or files for.
    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError>;
    /// Called once on host shutdown: the process runtime stops its children; containers stay.
    async fn shutdown(&self);
}

/// Picks the runtime the configuration asks for; `auto` means Docker when an engine answers,
/// else local processes, but never silently in production: there the host refuses to start
/// unless `process` is chosen explicitly.
pub async fn select(config: &Config) -> anyhow::Result<Option<Arc<dyn ContainerRuntime>>> {
    let settings = &config.runtime;
    Ok(Some(match settings.kind {
        RuntimeKind::None => return Ok(None),
        RuntimeKind::Docker => Arc::new(docker::DockerRuntime::connect(settings).await?),
        RuntimeKind::Process => Arc::new(process::ProcessRuntime::new(config)?),
        RuntimeKind::Kubernetes => Arc::new(kubernetes::KubernetesRuntime::connect(config).await?),
        RuntimeKind::Auto => match docker::DockerRuntime::connect(settings).await {
            Ok(docker) => Arc::new(docker),
            Err(err) if config.is_production() => {
                anyhow::bail!(
                    "runtime.kind = \"auto\" found no Docker engine ({err:#}); in production the host does not fall back to running agents as local processes on its own machine: start Docker (or set runtime.docker_host), or choose runtime.kind = \"process\" explicitly"
                );
            }
            Err(err) => {
                tracing::info!(reason = %err, "no Docker engine answered; workspaces run as local processes");
                Arc::new(process::ProcessRuntime::new(config)?)
            }
        },
    }))
}
