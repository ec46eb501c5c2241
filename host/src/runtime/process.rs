//! The zero-setup runtime: the reference agent as a local child process per workspace, with its
//! own config directory `<data_dir>/workspaces/<id>/configs`, a free port on 127.0.0.1 and its
//! output in `agent.log` beside it. Children are terminated (SIGTERM, then SIGKILL) on stop and
//! on host shutdown; agents a crashed host left behind are found by their pid files and stopped
//! when the next host starts.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{
    CONFIGS_ROOT, ContainerRuntime, ExecOutput, Inspection, RuntimeError, StartSpec, Started,
    WriteTarget,
};
use crate::config::{Config, RuntimeConfig};
use crate::safefs::{FileTree, ListedFile, RelPath, RootDir};

const AGENT_BINARY: &str = "molecule-agent";
const PID_FILE: &str = "agent.pid";
const LOG_FILE: &str = "agent.log";
/// Longest an exec may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

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
}

impl ProcessRuntime {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let root = config.data_dir.join("workspaces");
        std::fs::create_dir_all(&root)?;
        let agent = match &config.runtime.agent_binary {
            Some(path) => path.clone(),
            None => default_agent_binary(),
        };
        if !agent.is_file() {
            tracing::warn!(agent = %agent.display(), "the agent binary does not exist yet; workspaces will fail to start until it is built (cargo build -p molecule-agent)");
        }
        stop_leftovers(&root);
        Ok(ProcessRuntime {
            root,
            agent,
            path_env: crate::config::inherited_path(),
            settings: config.runtime.clone(),
            agents: Mutex::new(HashMap::new()),
        })
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn configs(&self, id: Uuid) -> Result<RootDir, RuntimeError> {
        let path = self.dir(id).join("configs");
        if !path.is_dir() {
            return Err(RuntimeError::Offline);
        }
        Ok(RootDir::open(&path)?)
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

    fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.stop_timeout_secs.max(1))
    }
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

/// How long a start watches a new agent for an early exit before it leaves it to register.
const START_WATCH: Duration = Duration::from_secs(2);

/// Watches a just-started agent until its port accepts connections or [`START_WATCH`] passes,
/// and returns its exit code if it exited first (`-1` for a signal). The port was free when
/// the host chose it, but any program (an outgoing connection included) may take it before the
/// agent binds; the agent then exits at once, and without this the workspace would sit in
/// `provisioning` until the provision timeout instead of being started again on another port.
async fn exited_before_listening(child: &mut Child, port: u16) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + START_WATCH;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.code().unwrap_or(-1));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        let probe = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), probe).await {
            // Listening (or another listener holds the port: then the agent is exiting, and
            // the health sweep and provision timeout take it from here).
            return child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| status.code().unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops agents a previous host left running, recognised by pid file and command line.
fn stop_leftovers(root: &Path) {
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
        if !self.agent.is_file() && !self.agent.is_relative() {
            return Err(RuntimeError::Failed(format!(
                "agent binary {} not found; build it with `cargo build -p molecule-agent`",
                self.agent.display()
            )));
        }
        let dir = self.dir(id);
        let configs = RootDir::open_or_create(&dir.join("configs"))?;
        configs.write_tree(&spec.files)?;
        let port = spec.port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
            .map_err(|e| RuntimeError::Failed(format!("opening the agent log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| RuntimeError::Failed(format!("opening the agent log: {e}")))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(&self.agent);
        command
            .env_clear()
            .envs(spec.env.iter())
            .env("WORKSPACE_CONFIG_PATH", configs.path())
            .env("MOLECULE_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("MOLECULE_AGENT_URL", &url)
            .current_dir(configs.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .process_group(0);
        if let Some(path) = &self.path_env {
            command.env("PATH", path);
        }
        let mut child = command
            .spawn()
            .map_err(|e| RuntimeError::Failed(format!("starting {}: {e}", self.agent.display())))?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
        }
        if let Some(code) = exited_before_listening(&mut child, port).await {
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
            return Err(RuntimeError::Failed(format!(
                "the agent exited with code {code} before it listened on port {port}: {}",
                tail_lines(&log, 5)
            )));
        }
        self.agents.lock().await.insert(
            id,
            Agent {
                child,
                exit_code: None,
            },
        );
        Ok(Started { url })
    }

    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.terminate(id).await;
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.terminate(id).await;
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(RuntimeError::Failed(format!(
                "removing the workspace directory: {err}"
            ))),
        }
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

    async fn remove_path(&self, id: Uuid, path: &RelPath) -> Result<WriteTarget, RuntimeError> {
        self.configs(id)?.remove(path)?;
        Ok(self.target(id).await)
    }

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

    async fn digests(
        &self,
        id: Uuid,
        path: Option<&RelPath>,
    ) -> Result<BTreeMap<String, String>, RuntimeError> {
        Ok(self.configs(id)?.digests(path)?)
    }

    async fn rename_path(
        &self,
        id: Uuid,
        from: &RelPath,
        to: &RelPath,
    ) -> Result<(), RuntimeError> {
        let configs = self.configs(id)?;
        if let Some(parent) = to.parent() {
            configs.create_dir_all(&parent)?;
        }
        configs.rename(from, to)?;
        Ok(())
    }

    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError> {
        let configs = self.configs(id)?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| RuntimeError::Failed("empty command".into()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .current_dir(configs.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &self.path_env {
            command.env("PATH", path);
        }
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

    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError> {
        let text =
            std::fs::read(self.dir(id).join(LOG_FILE)).map_err(|_| RuntimeError::NotFound)?;
        Ok(tail_lines(&String::from_utf8_lossy(&text), tail))
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
