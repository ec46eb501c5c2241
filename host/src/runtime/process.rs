//! The zero-setup runtime: the reference agent as a local child process per workspace, with its
//! own config directory `<data_dir>/workspaces/<id>/configs`, a free port on 127.0.0.1 and its
//! output in `agent.log` beside it. Children are terminated (SIGTERM, then SIGKILL) on stop and
//! on host shutdown; agents a crashed host left behind are found by their pid files and
//! stopped when the next host starts.
//!
//! Agents run confined, never as the host. A root host gives each workspace an unprivileged uid
//! of its own (`uids`) and its directories to that uid; in every mode a Landlock sandbox
//! (`sandbox`) limits the agent, and every command the host runs in its directory, to the
//! workspace's own `configs` and `tmp`, the read-only system directories and its own port. A
//! kernel that cannot enforce the sandbox stops the runtime from starting.
//!
//! ```text
//! <data_dir>/                      searchable by others (o+x), nothing more
//!   workspaces/                    root 0711 (0700 when the host is not root)
//!     .uids/<uid>                  which workspace holds which uid (root 0700)
//!     .agent-bin/molecule-agent    a copy of the agent when its own path is not reachable
//!     <id>/                        root:<agent gid> 0710: log and pid file stay the host's
//!       agent.log, agent.pid
//!       configs/                   <agent uid> 0700: the agent's `/configs`
//!       tmp/                       <agent uid> 0700: its TMPDIR, emptied at each start
//! ```

mod sandbox;
mod uids;

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use uuid::Uuid;

use futures::StreamExt as _;

use super::{
    CONFIGS_ROOT, ContainerRuntime, ExecOutput, FilesChange, Inspection, LogStream, RuntimeError,
    StartSpec, Started, TERMINAL_MARKER, TermSize, Terminal, TerminalControl, WriteTarget,
};
use crate::config::{Config, RuntimeConfig};
use crate::safefs::{FileTree, ListedFile, Owner, RelPath, RootDir, TarEntry};

const AGENT_BINARY: &str = "molecule-agent";
const PID_FILE: &str = "agent.pid";
const LOG_FILE: &str = "agent.log";
/// The uid claims, inside the workspaces directory (not a workspace id, so never listed).
const UIDS_DIR: &str = ".uids";
/// Where the agent binary is copied when agents could not reach it where it is.
const AGENT_BIN_DIR: &str = ".agent-bin";
/// Longest an exec may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// The shell a terminal runs in the agent's sandbox.
const TERMINAL_SHELL: &str = "/bin/sh";
/// How long a start watches a new agent for an early exit before it leaves it to register.
const START_WATCH: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Agent {
    child: Child,
    exit_code: Option<i64>,
}

impl Agent {
    fn poll(&mut self) -> Option<i64> {
        if self.exit_code.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit_code = Some(status.code().map_or_else(
                || {
                    128 + i64::from(
                        std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9),
                    )
                },
                i64::from,
            ));
        }
        self.exit_code
    }
}

/// The process runtime.
#[derive(Debug)]
pub struct ProcessRuntime {
    root: PathBuf,
    agent: PathBuf,
    path_env: Option<String>,
    settings: RuntimeConfig,
    agents: Mutex<HashMap<Uuid, Agent>>,
    /// The part of every agent's sandbox outside its workspace.
    system: Vec<sandbox::SystemRule>,
    /// Set when the host runs as root: each workspace's agent runs under a uid of its own.
    uids: Option<uids::UidPool>,
}

/// What the operator is told when the kernel cannot confine agents.
const NO_SANDBOX: &str = "the process runtime runs every agent in a Landlock sandbox and this kernel cannot enforce it (it needs Landlock ABI 3: Linux 6.2 or later with `landlock` among the enabled LSMs); agents are not run unconfined: use the Docker runtime (runtime.kind = \"docker\") instead";

impl ProcessRuntime {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let settings = &config.runtime;
        let extra = readonly_paths(settings)?;
        let agent = match &settings.agent_binary {
            Some(path) => path.clone(),
            None => default_agent_binary(),
        };
        let agent = on_path(agent);
        sandbox::probe(&sandbox::system_rules(&agent, &extra, None))
            .map_err(|err| anyhow::anyhow!("{NO_SANDBOX} ({err})"))?;
        let separate = nix::unistd::geteuid().is_root();
        if separate {
            uids::check_range(settings.process_uid_base, settings.process_uid_count)
                .map_err(anyhow::Error::msg)?;
        }
        let root = config.data_dir.join("workspaces");
        std::fs::create_dir_all(&root)?;
        let root = root
            .canonicalize()
            .context("resolving the workspaces directory")?;
        set_mode(&root, if separate { 0o711 } else { 0o700 })?;
        let (agent, uids) = if separate {
            ensure_reachable(&root)?;
            let agent = reachable_agent(&root, agent)?;
            let pool = uids::UidPool::open(
                &root.join(UIDS_DIR),
                settings.process_uid_base,
                settings.process_uid_count,
            )
            .context("opening the agents' uid claims")?;
            (agent, Some(pool))
        } else {
            tracing::info!(
                "the host does not run as root: agents run under its own uid, confined by Landlock"
            );
            (agent, None)
        };
        if !agent.is_file() {
            tracing::warn!(agent = %agent.display(), "the agent binary does not exist yet; workspaces will fail to start until it is built (cargo build -p molecule-agent)");
        }
        let system =
            sandbox::system_rules(&agent, &extra, sandbox::resolv_conf_target().as_deref());
        stop_leftovers(&root, uids.as_ref());
        Ok(ProcessRuntime {
            root,
            agent,
            path_env: crate::config::inherited_path(),
            settings: settings.clone(),
            agents: Mutex::new(HashMap::new()),
            system,
            uids,
        })
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Who the agent of `id` runs as: its own uid (claimed on first use) when the host is root,
    /// `None` (the host's user) otherwise.
    fn owner(&self, id: Uuid) -> Result<Option<Owner>, RuntimeError> {
        let Some(pool) = &self.uids else {
            return Ok(None);
        };
        let uid = match pool.uid_of(id) {
            Some(uid) => uid,
            None => pool
                .claim(id, uids::used_by_the_machine())
                .map_err(|e| RuntimeError::Failed(e.to_string()))?,
        };
        Ok(Some(Owner { uid, gid: uid }))
    }

    fn configs(&self, id: Uuid) -> Result<RootDir, RuntimeError> {
        let path = self.dir(id).join("configs");
        if !path.is_dir() {
            return Err(RuntimeError::Offline);
        }
        Ok(RootDir::open(&path)?.owned_by(self.owner(id)?))
    }

    /// Lays out the workspace's directory for its agent (see the module docs): `<id>` stays
    /// the host's, `configs` and `tmp` become the agent's (given to its uid without following
    /// any link the agent may have planted), and `tmp` starts empty when `fresh_tmp`.
    fn prepare(
        &self,
        id: Uuid,
        owner: Option<Owner>,
        fresh_tmp: bool,
    ) -> Result<(RootDir, RootDir), RuntimeError> {
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(failed("creating the workspace directory", &err));
            }
            _ => {}
        }
        match owner {
            Some(owner) => {
                std::os::unix::fs::lchown(&dir, Some(0), Some(owner.gid))
                    .map_err(|e| failed("giving the workspace directory to its agent", &e))?;
                set_mode(&dir, 0o710)
                    .map_err(|e| failed("protecting the workspace directory", &e))?;
            }
            None => {
                set_mode(&dir, 0o700)
                    .map_err(|e| failed("protecting the workspace directory", &e))?;
            }
        }
        let tmp_path = dir.join("tmp");
        if fresh_tmp {
            match std::fs::remove_dir_all(&tmp_path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(failed("emptying the agent's temporary directory", &err));
                }
                _ => {}
            }
        }
        let mut dirs = Vec::with_capacity(2);
        for path in [dir.join("configs"), tmp_path] {
            let root = RootDir::open_or_create(&path)?.owned_by(owner);
            root.set_mode(0o700)?;
            if let Some(owner) = owner {
                root.give_to(owner)?;
            }
            dirs.push(root);
        }
        let tmp = dirs.pop().expect("two directories");
        let configs = dirs.pop().expect("two directories");
        Ok((configs, tmp))
    }

    /// A command confined like the workspace's agent: its uid, its sandbox (TCP bind on
    /// `bind_port` only), `TMPDIR` its private `tmp`, running in its `configs`.
    fn confined(
        &self,
        program: &Path,
        owner: Option<Owner>,
        configs: &RootDir,
        tmp: &RootDir,
        bind_port: Option<u16>,
    ) -> Result<Command, RuntimeError> {
        let ruleset = self.sandbox(configs, tmp, bind_port)?;
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(self.base_env(tmp))
            .current_dir(configs.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(owner) = owner {
            // std drops the supplementary groups when it switches the uid.
            command.uid(owner.uid).gid(owner.gid);
        }
        sandbox::confine(&mut command, ruleset);
        Ok(command)
    }

    /// The sandbox of a process of the workspace whose directories are `configs` and `tmp`.
    fn sandbox(
        &self,
        configs: &RootDir,
        tmp: &RootDir,
        bind_port: Option<u16>,
    ) -> Result<landlock::RulesetCreated, RuntimeError> {
        use std::os::fd::AsFd as _;
        sandbox::ruleset(&self.system, &[configs.as_fd(), tmp.as_fd()], bind_port)
            .map_err(|e| RuntimeError::Failed(format!("building the agent's sandbox: {e}")))
    }

    /// The environment every confined process starts from: `TMPDIR`, and the host's `PATH`.
    fn base_env(&self, tmp: &RootDir) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = vec![("TMPDIR", tmp.path().as_os_str().to_owned())];
        if let Some(path) = &self.path_env {
            env.push(("PATH", path.into()));
        }
        env
    }

    async fn target(&self, id: Uuid) -> WriteTarget {
        let mut agents = self.agents.lock().await;
        let running = agents
            .get_mut(&id)
            .is_some_and(|agent| agent.poll().is_none());
        if running {
            WriteTarget::Running
        } else {
            WriteTarget::Stored
        }
    }

    async fn terminate(&self, id: Uuid) {
        let agent = self.agents.lock().await.remove(&id);
        if let Some(mut agent) = agent {
            terminate(&mut agent.child, self.stop_timeout()).await;
        }
        let _ = std::fs::remove_file(self.dir(id).join(PID_FILE));
    }

    /// Watches a just-started agent until its port accepts connections or [`START_WATCH`]
    /// passes, and returns its exit code if it exited first. The port was free when the host
    /// chose it, but any program (an outgoing connection included) may take it before the
    /// agent binds; the agent then exits at once, and without this the workspace would sit in
    /// `provisioning` until the provision timeout instead of being started again on another
    /// port. An agent stopped meanwhile is no longer watched.
    async fn exited_before_listening(&self, id: Uuid, port: u16) -> Option<i64> {
        let deadline = tokio::time::Instant::now() + START_WATCH;
        let exited = || async {
            let mut agents = self.agents.lock().await;
            agents.get_mut(&id).map(Agent::poll)
        };
        loop {
            match exited().await {
                None => return None,
                Some(Some(code)) => return Some(code),
                Some(None) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let probe = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), probe).await {
                // Listening (or another listener holds the port: then the agent is exiting,
                // and the health sweep and provision timeout take it from here).
                return exited().await.flatten();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.stop_timeout_secs.max(1))
    }
}

/// The control side of a process-runtime terminal: a second descriptor of its pty for resizes.
struct PtyTerminal {
    pty: std::os::fd::OwnedFd,
    marker: String,
}

#[async_trait::async_trait]
impl TerminalControl for PtyTerminal {
    async fn resize(&self, size: TermSize) -> Result<(), RuntimeError> {
        let winsize = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.pty, winsize)
            .map_err(|e| failed("resizing the terminal", &std::io::Error::from(e)))
    }

    async fn close(&self) {
        let marker = self.marker.clone();
        let killed = tokio::task::spawn_blocking(move || kill_marked(&marker)).await;
        if let Ok(0) | Err(_) = killed {
            tracing::debug!("no process of the terminal session was left to end");
        }
    }
}

/// Kills every process whose environment holds `marker` (`NAME=value`, one whole entry), and
/// returns how many. A process that exits meanwhile is simply skipped.
fn kill_marked(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// `runtime.process_readonly_paths`, each of which must be absolute.
fn readonly_paths(settings: &RuntimeConfig) -> anyhow::Result<Vec<PathBuf>> {
    settings
        .process_readonly_paths
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|raw| {
            let path = PathBuf::from(raw.trim());
            anyhow::ensure!(
                path.is_absolute(),
                "runtime.process_readonly_paths: {raw:?} is not an absolute path"
            );
            Ok(path)
        })
        .collect()
}

/// A bare program name found on `PATH` as the absolute path the sandbox needs; anything else
/// as it is.
fn on_path(agent: PathBuf) -> PathBuf {
    if agent.components().count() != 1 || agent.is_absolute() {
        return agent;
    }
    crate::config::inherited_path()
        .iter()
        .flat_map(|path| std::env::split_paths(path).collect::<Vec<_>>())
        .map(|dir| dir.join(&agent))
        .find(|candidate| candidate.is_file() && candidate.is_absolute())
        .unwrap_or(agent)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn failed(what: &str, err: &std::io::Error) -> RuntimeError {
    RuntimeError::Failed(format!("{what}: {err}"))
}

/// The first directory on the way to `path` (its ancestors) that other users may not search.
fn unsearchable_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    path.ancestors()
        .skip(1)
        .find(|dir| std::fs::metadata(dir).map_or(true, |m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// Agents under their own uids must pass through every directory above the workspaces
/// directory `root`. The data dir is the host's: it gets the search bit for others (never the
/// read bit, so nobody can list it) when it lacks it; any other directory on the way is the
/// operator's to open, and the runtime refuses to start until it is.
fn ensure_reachable(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let data_dir = root.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(data_dir)?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
        set_mode(data_dir, (mode & 0o7777) | 0o001)?;
        tracing::info!(data_dir = %data_dir.display(), "gave the data dir search permission for others (not read): agents run under their own uids and pass through it");
    }
    if let Some(blocked) = unsearchable_ancestor(root) {
        anyhow::bail!(
            "{} does not let other users pass through it, and agents run under uids of their own that must reach {}: allow it (chmod o+x {}) or move data_dir",
            blocked.display(),
            root.display(),
            blocked.display()
        );
    }
    Ok(())
}

/// The agent binary where agents can execute it: where it is if every directory above it lets
/// others pass and it is readable and executable by others, else a copy (a hard link when it
/// may be) in `<root>/.agent-bin`, which the host owns.
fn reachable_agent(root: &Path, agent: PathBuf) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(&agent) else {
        return Ok(agent);
    };
    let shared = meta.permissions().mode() & 0o005 == 0o005;
    if shared && agent.is_absolute() && unsearchable_ancestor(&agent).is_none() {
        return Ok(agent);
    }
    let dir = root.join(AGENT_BIN_DIR);
    std::fs::create_dir_all(&dir)?;
    set_mode(&dir, 0o755)?;
    let staged = dir.join(AGENT_BINARY);
    let tmp = dir.join(format!("{AGENT_BINARY}.{}", Uuid::new_v4().simple()));
    let linked = shared && std::fs::hard_link(&agent, &tmp).is_ok();
    if !linked {
        std::fs::copy(&agent, &tmp)
            .with_context(|| format!("copying {} where agents can run it", agent.display()))?;
        set_mode(&tmp, 0o755)?;
    }
    std::fs::rename(&tmp, &staged)?;
    tracing::info!(agent = %agent.display(), staged = %staged.display(), "agents run a copy of the agent binary: its own path is not reachable by other users");
    Ok(staged)
}

/// `molecule-agent` beside the running executable (or one level up, for test binaries in
/// `target/*/deps`), else whatever `PATH` finds.
fn default_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    [beside, beside.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(AGENT_BINARY))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(AGENT_BINARY))
}

/// SIGTERM, then SIGKILL after `timeout`; reaps the child.
async fn terminate(child: &mut Child, timeout: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Stops agents a previous host left running, recognised by pid file and command line, and
/// releases the uids of workspaces whose directory is gone (removed while the host was down,
/// or a claim made just before a crash).
fn stop_leftovers(root: &Path, uids: Option<&uids::UidPool>) {
    if let Some(pool) = uids {
        for (id, _) in pool.held() {
            if !root.join(id.to_string()).is_dir() {
                let _ = pool.release(id);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let pid_file = entry.path().join(PID_FILE);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(AGENT_BINARY) {
            tracing::info!(pid, "stopping an agent a previous host left running");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(pid_file);
    }
}

/// How often a followed log file is looked at for new output.
const LOG_POLL: Duration = Duration::from_millis(250);

/// The bytes of `path` from `from` to `to` (at most 1 MiB at a time, the rest on the next look).
fn read_from(path: &std::path::Path, from: u64, to: u64) -> Result<Vec<u8>, RuntimeError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|_| RuntimeError::NotFound)?;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| RuntimeError::Failed(format!("reading the agent log: {e}")))?;
    let mut out = Vec::new();
    file.take((to - from).min(1024 * 1024))
        .read_to_end(&mut out)
        .map_err(|e| RuntimeError::Failed(format!("reading the agent log: {e}")))?;
    Ok(out)
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[async_trait::async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn agent_listen_ip(&self) -> Option<IpAddr> {
        None
    }

    async fn start(&self, spec: &StartSpec) -> Result<Started, RuntimeError> {
        let id = spec.workspace_id;
        self.terminate(id).await;
        if !self.agent.is_file() {
            return Err(RuntimeError::Failed(format!(
                "agent binary {} not found; build it with `cargo build -p molecule-agent`",
                self.agent.display()
            )));
        }
        let dir = self.dir(id);
        let owner = self.owner(id)?;
        let (configs, tmp) = self.prepare(id, owner, true)?;
        configs.write_tree(&spec.files)?;
        let port = spec.port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(LOG_FILE))
            .map_err(|e| RuntimeError::Failed(format!("opening the agent log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| RuntimeError::Failed(format!("opening the agent log: {e}")))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = self.confined(&self.agent, owner, &configs, &tmp, Some(port))?;
        command
            .envs(spec.env.iter())
            .env("WORKSPACE_CONFIG_PATH", configs.path())
            .env("MOLECULE_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("MOLECULE_AGENT_URL", &url)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| RuntimeError::Failed(format!("starting {}: {e}", self.agent.display())))?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
        }
        // Known before it can register: the agent may be online (registered and heartbeating)
        // before the watch below ends, and whatever asks the runtime then must find it.
        self.agents.lock().await.insert(
            id,
            Agent {
                child,
                exit_code: None,
            },
        );
        if let Some(code) = self.exited_before_listening(id, port).await {
            self.agents.lock().await.remove(&id);
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
            return Err(RuntimeError::Failed(format!(
                "the agent exited with code {code} before it listened on port {port}: {}",
                tail_lines(&log, 5)
            )));
        }
        Ok(Started { url })
    }

    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.terminate(id).await;
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.terminate(id).await;
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(failed("removing the workspace directory", &err)),
        }
        if let Some(pool) = &self.uids {
            pool.release(id)
                .map_err(|e| failed("releasing the agent's uid", &e))?;
        }
        Ok(())
    }

    async fn inspect(&self, id: Uuid) -> Result<Inspection, RuntimeError> {
        let mut agents = self.agents.lock().await;
        Ok(match agents.get_mut(&id) {
            None => Inspection::default(),
            Some(agent) => {
                let exit_code = agent.poll();
                Inspection {
                    exists: true,
                    running: exit_code.is_none(),
                    exit_code,
                }
            }
        })
    }

    async fn write_files(&self, id: Uuid, files: &FileTree) -> Result<WriteTarget, RuntimeError> {
        self.configs(id)?.write_tree(files)?;
        Ok(self.target(id).await)
    }

    /// Its config directory read directly; other roots are not the process runtime's to show.
    async fn archive(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
    ) -> Result<Vec<TarEntry>, RuntimeError> {
        if root != CONFIGS_ROOT {
            return Ok(Vec::new());
        }
        Ok(self.configs(id)?.entries(path)?)
    }

    async fn change_files(
        &self,
        id: Uuid,
        change: FilesChange<'_>,
    ) -> Result<WriteTarget, RuntimeError> {
        let configs = self.configs(id)?;
        match change {
            FilesChange::Remove(path) => configs.remove(path)?,
            FilesChange::Rename { from, to } => {
                if let Some(parent) = to.parent() {
                    configs.create_dir_all(&parent)?;
                }
                configs.rename(from, to)?;
            }
        }
        Ok(self.target(id).await)
    }

    /// Reads the one file, where the default would read the archive around it.
    async fn read_file(
        &self,
        id: Uuid,
        root: &str,
        path: &RelPath,
    ) -> Result<Vec<u8>, RuntimeError> {
        if root != CONFIGS_ROOT {
            return Err(RuntimeError::NotFound);
        }
        Ok(self.configs(id)?.read(path)?)
    }

    /// Reads metadata only, where the default would read every file's content.
    async fn list_files(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
        depth: usize,
    ) -> Result<Vec<ListedFile>, RuntimeError> {
        if root != CONFIGS_ROOT {
            return Ok(Vec::new());
        }
        Ok(self.configs(id)?.list(path, depth)?)
    }

    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError> {
        if !self.dir(id).join("configs").is_dir() {
            return Err(RuntimeError::Offline);
        }
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| RuntimeError::Failed("empty command".into()))?;
        let owner = self.owner(id)?;
        let (configs, tmp) = self.prepare(id, owner, false)?;
        let mut command = self.confined(Path::new(program), owner, &configs, &tmp, None)?;
        command.args(args);
        let output = tokio::time::timeout(EXEC_TIMEOUT, command.output())
            .await
            .map_err(|_| RuntimeError::Failed("command timed out".into()))?
            .map_err(|e| RuntimeError::Failed(format!("running {program}: {e}")))?;
        Ok(ExecOutput {
            exit_code: output.status.code().map_or(-1, i64::from),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn has_terminal(&self) -> bool {
        true
    }

    /// A shell on a pty, as the agent's uid and in its sandbox, in its `configs` (also `HOME`).
    async fn open_terminal(
        &self,
        id: Uuid,
        session: Uuid,
        size: TermSize,
    ) -> Result<Terminal, RuntimeError> {
        if !self.inspect(id).await?.running {
            return Err(RuntimeError::Offline);
        }
        let owner = self.owner(id)?;
        let (configs, tmp) = self.prepare(id, owner, false)?;
        let ruleset = self.sandbox(&configs, &tmp, None)?;
        let pty_failed = |what: &str, e: pty_process::Error| {
            RuntimeError::Failed(format!("{what} the terminal's pty: {e}"))
        };
        let (pty, pts) = pty_process::open().map_err(|e| pty_failed("opening", e))?;
        let resizer = std::os::fd::AsFd::as_fd(&pty)
            .try_clone_to_owned()
            .map_err(|e| failed("keeping the terminal's pty", &e))?;
        let control = PtyTerminal {
            pty: resizer,
            marker: format!("{TERMINAL_MARKER}={session}"),
        };
        control.resize(size).await?;
        let mut command = pty_process::Command::new(TERMINAL_SHELL)
            .env_clear()
            .envs(self.base_env(&tmp))
            .env("HOME", configs.path())
            .env("TERM", "xterm-256color")
            .env(TERMINAL_MARKER, session.to_string())
            .current_dir(configs.path())
            .kill_on_drop(true);
        if let Some(owner) = owner {
            command = command.uid(owner.uid).gid(owner.gid);
        }
        let mut child = sandbox::confine_pty(command, ruleset)
            .spawn(pts)
            .map_err(|e| pty_failed("starting a shell on", e))?;
        // Reaped when it exits, so an ended session leaves no zombie behind.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let (read, write) = pty.into_split();
        // Once the shell and everything on its terminal exit, reading the pty fails (EIO): the
        // end of the session.
        let output = tokio_util::io::ReaderStream::new(read)
            .scan((), |(), chunk| futures::future::ready(chunk.ok()))
            .map(|bytes| Ok(bytes.to_vec()))
            .boxed();
        Ok(Terminal {
            output,
            input: Box::pin(write),
            control: Box::new(control),
        })
    }

    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError> {
        let text =
            std::fs::read(self.dir(id).join(LOG_FILE)).map_err(|_| RuntimeError::NotFound)?;
        Ok(tail_lines(&String::from_utf8_lossy(&text), tail))
    }

    async fn follow_logs(&self, id: Uuid, tail: usize) -> Result<LogStream, RuntimeError> {
        let path = self.dir(id).join(LOG_FILE);
        let text = std::fs::read(&path).map_err(|_| RuntimeError::NotFound)?;
        let mut first = tail_lines(&String::from_utf8_lossy(&text), tail).into_bytes();
        if !first.is_empty() {
            first.push(b'\n');
        }
        // Then what is appended, looked for every LOG_POLL; a file that shrank (replaced by a
        // restart) is read again from its start.
        let follow = futures::stream::unfold(text.len() as u64, move |offset| {
            let path = path.clone();
            async move {
                loop {
                    tokio::time::sleep(LOG_POLL).await;
                    let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) else {
                        return Some((Err(RuntimeError::NotFound), u64::MAX));
                    };
                    let from = if len < offset { 0 } else { offset };
                    if len == from {
                        continue;
                    }
                    return Some((read_from(&path, from, len), len));
                }
            }
        })
        .take_while(|item| futures::future::ready(!matches!(item, Err(RuntimeError::NotFound))));
        Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(follow)))
    }

    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| RuntimeError::Failed(format!("listing workspaces: {e}")))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect())
    }

    async fn shutdown(&self) {
        let agents: Vec<(Uuid, Agent)> = self.agents.lock().await.drain().collect();
        let timeout = self.stop_timeout();
        let root = self.root.clone();
        futures::future::join_all(agents.into_iter().map(|(id, mut agent)| {
            let pid_file = root.join(id.to_string()).join(PID_FILE);
            async move {
                terminate(&mut agent.child, timeout).await;
                let _ = std::fs::remove_file(pid_file);
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_data_dir_gets_the_search_bit_and_a_closed_directory_above_it_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let root = data.join("workspaces");
        std::fs::create_dir_all(&root).unwrap();
        set_mode(&data, 0o700).unwrap();
        set_mode(tmp.path(), 0o755).unwrap();

        ensure_reachable(&root).unwrap();
        assert_eq!(mode(&data), 0o701, "search for others, never read");

        // A private directory above the data dir (a home such as /root) is the operator's.
        set_mode(tmp.path(), 0o700).unwrap();
        let err = ensure_reachable(&root).unwrap_err().to_string();
        assert!(
            err.contains(&tmp.path().display().to_string()) && err.contains("chmod o+x"),
            "{err}"
        );
        assert_eq!(mode(tmp.path()), 0o700, "left as it was");
    }

    #[test]
    fn an_agent_binary_others_cannot_reach_is_copied_where_they_can() {
        let tmp = tempfile::tempdir().unwrap();
        set_mode(tmp.path(), 0o755).unwrap();
        let root = tmp.path().join("workspaces");
        std::fs::create_dir_all(&root).unwrap();
        let private = tmp.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let agent = private.join("molecule-agent");
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        set_mode(&agent, 0o755).unwrap();

        // Reachable: used where it is.
        assert_eq!(reachable_agent(&root, agent.clone()).unwrap(), agent);

        // Behind a closed directory: staged under the workspaces directory.
        set_mode(&private, 0o700).unwrap();
        let staged = reachable_agent(&root, agent.clone()).unwrap();
        assert_eq!(staged, root.join(AGENT_BIN_DIR).join(AGENT_BINARY));
        assert_eq!(std::fs::read(&staged).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode(&staged) & 0o005, 0o005);
        assert!(unsearchable_ancestor(&staged).is_none());

        // Not executable by others: a copy of its own (a hard link would share the mode).
        set_mode(&private, 0o755).unwrap();
        set_mode(&agent, 0o700).unwrap();
        let copied = reachable_agent(&root, agent.clone()).unwrap();
        assert_eq!(mode(&copied), 0o755);
        assert_eq!(mode(&agent), 0o700);
    }
}
