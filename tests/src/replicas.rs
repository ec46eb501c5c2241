//! Several `molecule serve` processes on one PostgreSQL database, for the scale-out spec and the
//! replica benchmark. Each replica is a real child process of the `molecule` binary (so it can be
//! killed the hard way), with its own data directory, its own port and a config file; all share
//! the database, the org templates and the Docker label that marks their containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use molecule_host::store::Backend;
use molecule_host::store::testing::TestDatabase;

use crate::{ADMIN_TOKEN, AGENT_IMAGE, Api, TEST_LABEL, docker, remove_labelled};

/// The `molecule` binary beside the running test or bench executable (`target/<profile>/`).
pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<exe>");
    let path = profile_dir.join("molecule");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p molecule-host --bin molecule` (make test does)",
        path.display()
    );
    path
}

/// Starts `molecule serve --config <config>` with a clean environment (`PATH` only) at log
/// level `level`, its stdout and stderr appended to `log`.
pub fn serve(config: &Path, log: &Path, level: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("a log file");
    Command::new(host_binary())
        .args(["serve", "--config"])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLECULE_LOG", level)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a log handle"))
        .stderr(log)
        .spawn()
        .expect("starting molecule serve")
}

/// How the replicas run agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agents {
    /// Docker containers of [`AGENT_IMAGE`], shared by every replica through the engine.
    Docker,
    /// None: the replicas only serve the API (the benchmark).
    None,
    /// Local processes of the reference agent ([`crate::agent_binary`]): for one replica at a
    /// time, whose agents' files live in its data directory (kept by [`ReplicaSet::restart`]).
    Process,
}

/// One replica process.
#[derive(Debug)]
pub struct Replica {
    pub name: String,
    pub api: Api,
    child: Option<Child>,
    data_dir: tempfile::TempDir,
}

impl Replica {
    /// The replica's log so far (stderr and stdout), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("host.log")).unwrap_or_default()
    }

    /// The replica's data directory (the process runtime keeps its agents' files there).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no graceful shutdown, connections simply drop, as when a machine dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to end: the graceful shutdown an operator's
    /// `systemctl stop` or `docker stop` asks for.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -TERM failed");
            let _ = child.wait();
        }
    }

    /// This replica's `/metrics` samples named `metric`, keyed by their `sweeper` label (or the
    /// whole label set when there is none).
    pub async fn metric(&self, metric: &str) -> BTreeMap<String, f64> {
        let text = self
            .api
            .client
            .get(format!("{}/metrics", self.api.base))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a metrics body");
        parse_metric(&text, metric)
    }
}

/// The samples of `metric` in a Prometheus text exposition, keyed by their `sweeper` label.
pub fn parse_metric(text: &str, metric: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            if name != metric {
                return None;
            }
            let key = labels
                .split(',')
                .find_map(|l| l.strip_prefix("sweeper="))
                .map_or(labels, |v| v.trim_matches('"'))
                .to_owned();
            Some((key, value.parse().ok()?))
        })
        .collect()
}

/// Replicas sharing one fresh database (PostgreSQL; or SQLite, one replica at a time); every
/// process and container is removed on drop.
#[derive(Debug)]
pub struct ReplicaSet {
    pub replicas: Vec<Replica>,
    /// Extra lines for the `[a2a]` table of replicas started from now on.
    pub a2a_settings: String,
    /// Extra top-level lines of the config of replicas started from now on.
    pub settings: String,
    /// `runtime.provision_timeout_secs` of replicas started from now on (120 unless changed).
    pub provision_timeout_secs: u64,
    db: TestDatabase,
    agents: Agents,
    label: String,
    templates: PathBuf,
    registry: tempfile::TempDir,
}

impl ReplicaSet {
    /// Starts `count` replicas on PostgreSQL one after another (each healthy before the next
    /// starts).
    pub async fn start(count: usize, agents: Agents, templates: &Path) -> Self {
        let mut set = Self::new(Backend::Postgres, agents, templates).await;
        for _ in 0..count {
            set.spawn().await;
        }
        set
    }

    /// A fresh database on `backend` and no replica yet: [`ReplicaSet::spawn`] starts them.
    pub async fn new(backend: Backend, agents: Agents, templates: &Path) -> Self {
        if agents == Agents::Docker {
            let image = docker(&["image", "inspect", "--format", "{{.Id}}", AGENT_IMAGE]);
            assert!(
                !image.is_empty(),
                "Docker engine or image {AGENT_IMAGE} unavailable: run `make image` (make test does)"
            );
        }
        ReplicaSet {
            replicas: Vec::new(),
            a2a_settings: String::new(),
            settings: String::new(),
            provision_timeout_secs: 120,
            db: TestDatabase::create(backend).await,
            agents,
            label: uuid::Uuid::new_v4().to_string(),
            templates: templates.to_path_buf(),
            registry: tempfile::tempdir().expect("a plugin registry dir"),
        }
    }

    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// Starts one more replica and waits until it serves; returns its index.
    pub async fn spawn(&mut self) -> usize {
        let index = self.replicas.len();
        let name = format!("replica-{}", (b'A' + index as u8) as char);
        let data_dir = tempfile::tempdir().expect("a data dir");
        let replica = self.launch(name, data_dir, crate::free_port()).await;
        self.replicas.push(replica);
        index
    }

    /// Starts replica `index` again (killing it first if it still runs) on its own data
    /// directory and port, with the configuration as it is now, and waits until it serves: a
    /// host restarted on the machine it ran on. Its log is appended to.
    pub async fn restart(&mut self, index: usize) {
        self.replicas[index].kill();
        let placeholder = tempfile::tempdir().expect("a placeholder dir");
        let old = std::mem::replace(&mut self.replicas[index].data_dir, placeholder);
        let name = self.replicas[index].name.clone();
        let port = self.replicas[index].api.addr.port();
        self.replicas[index] = self.launch(name, old, port).await;
    }

    /// The directory the replicas' `local://` plugin sources come from.
    pub fn registry_dir(&self) -> &Path {
        self.registry.path()
    }

    async fn launch(&self, name: String, data_dir: tempfile::TempDir, port: u16) -> Replica {
        let config = self.config(data_dir.path(), port);
        let config_path = data_dir.path().join("molecule.toml");
        std::fs::write(&config_path, config).expect("writing the replica's config");
        let child = serve(&config_path, &data_dir.path().join("host.log"), "info");
        let api = Api::at(
            ([127, 0, 0, 1], port).into(),
            Some(ADMIN_TOKEN),
            Duration::from_secs(60),
        );
        let mut replica = Replica {
            name,
            api,
            child: Some(child),
            data_dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = replica
                .api
                .client
                .get(format!("{}/health", replica.api.base))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                replica.is_running(),
                "{} exited during start:\n{}",
                replica.name,
                replica.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not become healthy:\n{}",
                replica.name,
                replica.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    fn config(&self, data_dir: &Path, port: u16) -> String {
        let runtime = match self.agents {
            Agents::Docker => "docker",
            Agents::None => "none",
            Agents::Process => "process",
        };
        let agent_binary = match self.agents {
            Agents::Process => format!("agent_binary = \"{}\"", crate::agent_binary().display()),
            Agents::Docker | Agents::None => String::new(),
        };
        let builtins = crate::builtin_extensions_dir();
        format!(
            r#"admin_token = "{ADMIN_TOKEN}"
database_url = "{db}"
database_max_connections = 8
data_dir = "{data}"
bind_addr = "127.0.0.1:{port}"
rate_limit_per_minute = 0
builtin_extensions_dir = "{builtins}"
plugins_registry_dir = "{registry}"
{settings}

[liveness]
sweep_interval_secs = 1
heartbeat_ttl_secs = 30

[runtime]
kind = "{runtime}"
heartbeat_interval_secs = 1
health_sweep_secs = 1
orphan_sweep_secs = 1
stop_timeout_secs = 5
provision_timeout_secs = {provision_timeout}
{agent_binary}

[runtime.labels]
"{TEST_LABEL}" = "{label}"

[org]
templates_dir = "{templates}"

[plugins]
drift_interval_secs = 1
swap_sweep_secs = 1

[a2a]
queue_expiry_sweep_secs = 1
{a2a}
"#,
            db = self.db.url,
            data = data_dir.display(),
            builtins = builtins.display(),
            registry = self.registry.path().display(),
            label = self.label,
            templates = self.templates.display(),
            a2a = self.a2a_settings,
            settings = self.settings,
            provision_timeout = self.provision_timeout_secs,
        )
    }
}

impl std::ops::Index<usize> for ReplicaSet {
    type Output = Replica;
    fn index(&self, index: usize) -> &Replica {
        &self.replicas[index]
    }
}

impl std::ops::IndexMut<usize> for ReplicaSet {
    fn index_mut(&mut self, index: usize) -> &mut Replica {
        &mut self.replicas[index]
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            replica.kill();
            if self.agents == Agents::Process {
                kill_agents(replica.data_dir());
            }
        }
        remove_labelled(&self.label);
    }
}

/// SIGKILLs the agents the process runtime started under `data_dir` (a killed host leaves them
/// running; the next host would stop them, but a finished test has no next host).
fn kill_agents(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("workspaces")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = std::fs::read_to_string(entry.path().join("agent.pid")) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        if pid > 1 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
