//! The production runtime: one container per workspace through the Docker engine API (bollard).
//!
//! Container `ws-<id12>` runs the agent image with volume `ws-<id12>-configs` at `/configs`, on
//! a user-defined network, port 8000 published on 127.0.0.1 (ephemeral) and memory/CPU limits
//! per tier. Docker never restarts a container by itself: the host's restart policy decides.
//!
//! A host that itself runs in a container on that network (`runtime.host_on_network`, the
//! single-machine recipe in `deploy/`) publishes nothing: it calls agents by their container
//! names, and agents call it at `runtime.platform_url` (its own name on the network).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

use super::{
    CONFIGS_ROOT, ContainerRuntime, ExecOutput, FilesChange, Inspection, KILL_MARKED, LogStream,
    MANAGED_LABEL, RuntimeError, StartSpec, Started, TERMINAL_MARKER, TERMINAL_SHELL, TermSize,
    Terminal, TerminalControl, WORKSPACE_LABEL, WriteTarget, exited_ok, extend_capped, id12,
    managed_selectors, rooted, workspace_labels,
};
use crate::config::RuntimeConfig;
use crate::locks::KeyedLocks;
use crate::safefs::{self, FileTree, RelPath};

/// The agent's A2A port inside the container.
const AGENT_PORT: &str = "8000/tcp";

/// The Docker runtime.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    settings: RuntimeConfig,
    gateway: IpAddr,
    /// Per workspace: file work (writes, reads, renames) holds it shared; replacing or
    /// stopping the container holds it exclusively, so a file operation never chooses a
    /// container that a restart cycle removes or stops before the operation reaches it.
    containers: KeyedLocks<Uuid, RwLock<()>>,
}

/// The agent's URL on the shared network: what other containers (and the agent's card) use.
fn network_url(id: Uuid) -> String {
    format!("http://{}:8000", container_name(id))
}

fn container_name(id: Uuid) -> String {
    format!("ws-{}", id12(id))
}

fn volume_name(id: Uuid) -> String {
    format!("ws-{}-configs", id12(id))
}

fn is_status(err: &DockerError, codes: &[u16]) -> bool {
    matches!(err, DockerError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// An idempotent step: the engine answering one of `codes` means it was already done.
fn already_done(
    result: Result<(), DockerError>,
    codes: &[u16],
    context: &str,
) -> Result<(), RuntimeError> {
    match result {
        Err(err) if !is_status(&err, codes) => Err(failed(context, err)),
        _ => Ok(()),
    }
}

fn failed(context: &str, err: DockerError) -> RuntimeError {
    // Engine messages name containers and images, never secrets (env is not echoed back).
    RuntimeError::Failed(format!("{context}: {err}"))
}

impl DockerRuntime {
    /// Connects to the local engine, checks it answers and makes sure the network exists.
    pub async fn connect(settings: &RuntimeConfig) -> anyhow::Result<Self> {
        let docker = match &settings.docker_host {
            Some(host) => Docker::connect_with_host(host)?,
            None => Docker::connect_with_local_defaults()?,
        };
        // Checked before the engine is asked anything: without it the host would hand agents a
        // loopback or gateway URL that leads nowhere from inside its own container.
        anyhow::ensure!(
            !settings.host_on_network || settings.platform_url.is_some(),
            "runtime.host_on_network needs runtime.platform_url: agents reach a host running in \
             a container by its name on runtime.network (for example http://molecule-host:8080)"
        );
        tokio::time::timeout(Duration::from_secs(5), docker.ping())
            .await
            .map_err(|_| anyhow::anyhow!("the Docker engine did not answer within 5 s"))??;
        let gateway = ensure_network(&docker, &settings.network).await?;
        tracing::info!(network = %settings.network, %gateway, host_on_network = settings.host_on_network, "docker runtime ready");
        Ok(DockerRuntime {
            docker,
            settings: settings.clone(),
            gateway,
            containers: KeyedLocks::default(),
        })
    }

    /// Held while file work runs on the workspace's volume (see `containers`).
    async fn files_guard(&self, id: Uuid) -> OwnedRwLockReadGuard<()> {
        self.containers.get(id).read_owned().await
    }

    /// Held while the workspace's container is replaced, stopped or removed.
    async fn container_guard(&self, id: Uuid) -> OwnedRwLockWriteGuard<()> {
        self.containers.get(id).write_owned().await
    }

    fn labels(&self, id: Uuid) -> HashMap<String, String> {
        workspace_labels(&self.settings, id).into_iter().collect()
    }

    /// Filters selecting what this host manages.
    fn label_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_owned(), managed_selectors(&self.settings))])
    }

    async fn image_present(&self, image: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, &[404]) => {
                Err(RuntimeError::ImageMissing(image.to_owned()))
            }
            Err(err) => Err(failed("inspecting the agent image", err)),
        }
    }

    async fn container_state(&self, id: Uuid) -> Result<Option<Inspection>, RuntimeError> {
        match self
            .docker
            .inspect_container(&container_name(id), None)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let running = state.running.unwrap_or(false);
                Ok(Some(Inspection {
                    exists: true,
                    running,
                    exit_code: if running { None } else { state.exit_code },
                }))
            }
            Err(err) if is_status(&err, &[404]) => Ok(None),
            Err(err) => Err(failed("inspecting the container", err)),
        }
    }

    async fn volume_exists(&self, id: Uuid) -> Result<bool, RuntimeError> {
        match self.docker.inspect_volume(&volume_name(id)).await {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, &[404]) => Ok(false),
            Err(err) => Err(failed("inspecting the config volume", err)),
        }
    }

    async fn remove_container(&self, id: Uuid) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let removed = self
            .docker
            .remove_container(&container_name(id), Some(options))
            .await;
        already_done(removed, &[404, 409], "removing the container")
    }

    /// Runs `f` against a container that has the workspace's volume at `/configs`: the agent's own
    /// container when it exists (running or not), else a short-lived helper that is never started.
    async fn with_files_container<T, F, Fut>(
        &self,
        id: Uuid,
        f: F,
    ) -> Result<(T, WriteTarget), RuntimeError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        if let Some(state) = self.container_state(id).await? {
            let target = if state.running {
                WriteTarget::Running
            } else {
                WriteTarget::Stored
            };
            return Ok((f(container_name(id)).await?, target));
        }
        if !self.volume_exists(id).await? {
            return Err(RuntimeError::Offline);
        }
        let helper = self.create_helper(id, None).await?;
        let result = f(helper.clone()).await;
        self.drop_helper(&helper).await;
        Ok((result?, WriteTarget::Stored))
    }

    /// Runs `argv` once in a helper mounting the workspace's volume and returns its exit code.
    async fn run_helper_once(&self, id: Uuid, argv: Vec<String>) -> Result<i64, RuntimeError> {
        let helper = self.create_helper(id, Some(argv)).await?;
        let result = async {
            self.docker
                .start_container(&helper, None)
                .await
                .map_err(|e| failed("starting a files helper", e))?;
            let mut code = 0;
            let mut wait = self.docker.wait_container(&helper, None);
            while let Some(status) = wait.next().await {
                match status {
                    Ok(done) => code = done.status_code,
                    // bollard reports a non-zero exit as this error; it is an answer, not a fault.
                    Err(bollard::errors::Error::DockerContainerWaitError {
                        code: exit, ..
                    }) => code = exit,
                    Err(err) => return Err(failed("waiting for a files helper", err)),
                }
            }
            Ok(code)
        }
        .await;
        self.drop_helper(&helper).await;
        result
    }

    /// A container that only mounts the workspace's volume at `/configs` (no network), for file
    /// work on a workspace whose own container is gone. Created, never started, unless it is
    /// given a `command` to run once.
    async fn create_helper(
        &self,
        id: Uuid,
        command: Option<Vec<String>>,
    ) -> Result<String, RuntimeError> {
        self.image_present(&self.settings.image).await?;
        let name = format!("ws-{}-files-{}", id12(id), &Uuid::new_v4().to_string()[..8]);
        let mut labels = self.labels(id);
        labels.insert("molecule.helper".into(), "files".into());
        let (entrypoint, cmd) = match command {
            Some(mut argv) if !argv.is_empty() => {
                let program = argv.remove(0);
                (Some(vec![program]), Some(argv))
            }
            _ => (None, None),
        };
        let body = ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            entrypoint,
            cmd,
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:{CONFIGS_ROOT}", volume_name(id))]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_named(&name, body, "creating a files helper")
            .await?;
        Ok(name)
    }

    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
        context: &str,
    ) -> Result<(), RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|_| ())
            .map_err(|e| failed(context, e))
    }

    async fn drop_helper(&self, name: &str) {
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(err) = self.docker.remove_container(name, Some(remove)).await {
            tracing::warn!(container = %name, error = %err, "removing a files helper failed");
        }
    }

    async fn upload(&self, container: &str, files: &FileTree) -> Result<(), RuntimeError> {
        let tar = files
            .to_tar()
            .map_err(|e| RuntimeError::Failed(format!("building the file archive: {e}")))?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(CONFIGS_ROOT)
            .build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| failed("copying files into the container", e))
    }

    async fn download(&self, container: &str, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) if is_status(&err, &[404]) => return Err(RuntimeError::NotFound),
                Err(err) => return Err(failed("reading files from the container", err)),
            };
            if out.len() + chunk.len() > safefs::MAX_TREE_BYTES as usize {
                return Err(RuntimeError::Failed("file tree too large".into()));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn run_exec(&self, container: &str, argv: &[String]) -> Result<ExecOutput, RuntimeError> {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| failed("creating an exec", e))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| failed("starting an exec", e))?
        {
            while let Some(item) = output.next().await {
                match item.map_err(|e| failed("reading exec output", e))? {
                    bollard::container::LogOutput::StdErr { message } => {
                        extend_capped(&mut stderr, &message)
                    }
                    other => extend_capped(&mut stdout, &other.into_bytes()),
                }
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| failed("inspecting an exec", e))?;
        Ok(ExecOutput {
            exit_code: inspect.exit_code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

/// The control side of a terminal exec.
struct ExecTerminal {
    docker: Docker,
    container: String,
    exec: String,
    marker: String,
}

#[async_trait::async_trait]
impl TerminalControl for ExecTerminal {
    async fn resize(&self, size: TermSize) -> Result<(), RuntimeError> {
        let options = bollard::exec::ResizeExecOptions {
            height: size.rows,
            width: size.cols,
        };
        self.docker
            .resize_exec(&self.exec, options)
            .await
            .map_err(|e| failed("resizing the terminal", e))
    }

    async fn close(&self) {
        let argv = ["sh", "-c", KILL_MARKED, "sh", self.marker.as_str()];
        let options = CreateExecOptions {
            cmd: Some(argv.iter().map(|a| (*a).to_owned()).collect()),
            ..Default::default()
        };
        let killed = match self.docker.create_exec(&self.container, options).await {
            Ok(exec) => {
                let detached = StartExecOptions {
                    detach: true,
                    ..Default::default()
                };
                self.docker
                    .start_exec(&exec.id, Some(detached))
                    .await
                    .map(drop)
            }
            Err(err) => Err(err),
        };
        // A container that is gone took the session's processes with it.
        if let Err(err) = killed
            && !is_status(&err, &[404, 409])
        {
            tracing::warn!(container = %self.container, error = %err, "ending a terminal session's processes");
        }
    }
}

/// Creates the network when missing (a concurrent creator winning is fine) and returns its
/// gateway address.
async fn ensure_network(docker: &Docker, name: &str) -> anyhow::Result<IpAddr> {
    let gateway = |network: bollard::models::NetworkInspect| {
        network
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .find_map(|c| c.gateway.and_then(|g| g.parse::<IpAddr>().ok()))
    };
    match docker.inspect_network(name, None).await {
        Ok(network) => {
            return gateway(network)
                .ok_or_else(|| anyhow::anyhow!("docker network {name} has no gateway"));
        }
        Err(err) if is_status(&err, &[404]) => {}
        Err(err) => return Err(err.into()),
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([(
            MANAGED_LABEL.to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {}
        Err(err) if is_status(&err, &[409]) => {}
        Err(err) => return Err(err.into()),
    }
    let network = docker.inspect_network(name, None).await?;
    gateway(network).ok_or_else(|| anyhow::anyhow!("docker network {name} has no gateway"))
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn network_urls(&self, id: Uuid) -> Vec<String> {
        vec![network_url(id)]
    }

    /// The stored URL is the port published on the host's loopback, which means nothing inside
    /// another container: peers get the container's name on the shared network instead.
    fn peer_url(&self, id: Uuid, stored: &str) -> String {
        if stored.starts_with("http://127.0.0.1:") {
            network_url(id)
        } else {
            stored.to_owned()
        }
    }

    /// On the network itself the host is reached at `platform_url` through its main listener.
    fn agent_listen_ip(&self) -> Option<IpAddr> {
        (!self.settings.host_on_network).then_some(self.gateway)
    }

    async fn start(&self, spec: &StartSpec) -> Result<Started, RuntimeError> {
        let _replacing = self.container_guard(spec.workspace_id).await;
        let id = spec.workspace_id;
        let image = self.settings.image_for(&spec.runtime).to_owned();
        self.image_present(&image).await?;
        self.remove_container(id).await?;
        let volume = volume_name(id);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(self.labels(id)),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("creating the config volume", e))?;
        let (memory, nano_cpus) = self.settings.tier_limits(spec.tier);
        let name = container_name(id);
        let read_only = spec.tier == 1;
        // A host on the agents' network calls the container by name; publishing the port would
        // open it on the machine's loopback for nobody.
        let on_network = self.settings.host_on_network;
        let port_bindings = (!on_network).then(|| {
            HashMap::from([(
                AGENT_PORT.to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(spec.port.to_string()),
                }]),
            )])
        });
        let host_config = HostConfig {
            binds: Some(vec![format!("{volume}:{CONFIGS_ROOT}")]),
            network_mode: Some(self.settings.network.clone()),
            port_bindings,
            memory: Some(memory),
            nano_cpus: Some(nano_cpus),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            readonly_rootfs: Some(read_only),
            tmpfs: read_only.then(|| HashMap::from([("/tmp".to_owned(), "size=64m".to_owned())])),
            // The agent is PID 1; an init reaps whatever its command brain leaves behind.
            init: Some(true),
            cap_drop: Some(vec!["NET_RAW".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels(id)),
            exposed_ports: Some(vec![AGENT_PORT.to_owned()]),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.settings.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        self.create_named(&name, body, "creating the container")
            .await?;
        if !spec.files.is_empty() {
            self.upload(&name, &spec.files).await?;
        }
        if let Err(err) = self.docker.start_container(&name, None).await {
            // Leave nothing half-started (a taken port is the usual cause; the caller retries).
            self.remove_container(id).await?;
            return Err(failed("starting the container", err));
        }
        let url = if on_network {
            network_url(id)
        } else {
            format!("http://127.0.0.1:{}", spec.port)
        };
        Ok(Started { url })
    }

    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        let _stopping = self.container_guard(id).await;
        let timeout = i32::try_from(self.settings.stop_timeout_secs).unwrap_or(10);
        let options = StopContainerOptionsBuilder::default().t(timeout).build();
        let stopped = self
            .docker
            .stop_container(&container_name(id), Some(options))
            .await;
        already_done(stopped, &[304, 404], "stopping the container")
    }

    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError> {
        let _removing = self.container_guard(id).await;
        self.remove_container(id).await?;
        // A concurrent removal (the orphan sweep, a retried delete) may still hold the volume
        // for a moment: "in use" is retried briefly.
        let mut attempt = 0;
        loop {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            match self
                .docker
                .remove_volume(&volume_name(id), Some(options))
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) if is_status(&err, &[404]) => return Ok(()),
                Err(err) if is_status(&err, &[409]) && attempt < 20 => {
                    attempt += 1;
                    self.remove_container(id).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(failed("removing the config volume", err)),
            }
        }
    }

    async fn inspect(&self, id: Uuid) -> Result<Inspection, RuntimeError> {
        Ok(self.container_state(id).await?.unwrap_or_default())
    }

    async fn write_files(&self, id: Uuid, files: &FileTree) -> Result<WriteTarget, RuntimeError> {
        let _files = self.files_guard(id).await;
        let (_, target) = self
            .with_files_container(id, |container| async move {
                self.upload(&container, files).await
            })
            .await?;
        Ok(target)
    }

    async fn archive(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
    ) -> Result<Vec<safefs::TarEntry>, RuntimeError> {
        let _files = self.files_guard(id).await;
        let full = rooted(root, path)?;
        let (archive, _) = self
            .with_files_container(id, |container| async move {
                self.download(&container, &full).await
            })
            .await?;
        Ok(safefs::reroot(safefs::read_tar(&archive)?, path))
    }

    async fn change_files(
        &self,
        id: Uuid,
        change: FilesChange<'_>,
    ) -> Result<WriteTarget, RuntimeError> {
        let _files = self.files_guard(id).await;
        let mut commands = change.commands();
        if self.container_state(id).await?.is_some_and(|s| s.running) {
            let container = container_name(id);
            while let Some(argv) = commands.first() {
                match self.run_exec(&container, argv).await {
                    Ok(out) => exited_ok(&argv[0], &out)?,
                    // The agent exited on its own (a crash, a kill) after the check: the
                    // command did not run, and the helpers below run it on the volume.
                    Err(err) if !self.container_state(id).await?.is_some_and(|s| s.running) => {
                        tracing::debug!(workspace_id = %id, error = %err, "the agent stopped under a file change; finishing it through a files helper");
                        break;
                    }
                    Err(err) => return Err(err),
                }
                commands.remove(0);
            }
            if commands.is_empty() {
                return Ok(WriteTarget::Running);
            }
        }
        // Stopped, or between two restart cycles: change the volume through one-shot helpers,
        // as file writes already do.
        if !self.volume_exists(id).await? {
            return Err(RuntimeError::Offline);
        }
        for argv in commands {
            let code = self.run_helper_once(id, argv.clone()).await?;
            if code != 0 {
                return Err(RuntimeError::Failed(format!(
                    "{} exited with {code} in the files helper",
                    argv[0]
                )));
            }
        }
        Ok(WriteTarget::Stored)
    }

    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError> {
        match self.container_state(id).await? {
            Some(state) if state.running => self.run_exec(&container_name(id), argv).await,
            _ => Err(RuntimeError::Offline),
        }
    }

    fn has_terminal(&self) -> bool {
        true
    }

    async fn open_terminal(
        &self,
        id: Uuid,
        session: Uuid,
        size: TermSize,
    ) -> Result<Terminal, RuntimeError> {
        if !self.container_state(id).await?.is_some_and(|s| s.running) {
            return Err(RuntimeError::Offline);
        }
        let container = container_name(id);
        let marker = format!("{TERMINAL_MARKER}={session}");
        let exec = self
            .docker
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(vec![TERMINAL_SHELL.to_owned()]),
                    env: Some(vec!["TERM=xterm-256color".to_owned(), marker.clone()]),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match is_status(&e, &[404, 409]) {
                true => RuntimeError::Offline,
                false => failed("creating the terminal's exec", e),
            })?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    tty: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| failed("starting the terminal's exec", e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Failed(
                "the terminal's exec did not attach".into(),
            ));
        };
        let control = ExecTerminal {
            docker: self.docker.clone(),
            container,
            exec: exec.id,
            marker,
        };
        // The engine refuses a size before the process runs; the first resize the client sends
        // corrects a size lost here.
        if let Err(err) = control.resize(size).await {
            tracing::debug!(workspace_id = %id, error = %err, "setting the terminal's first size");
        }
        let output = output
            .map(|item| {
                item.map(|chunk| chunk.into_bytes().to_vec())
                    .map_err(|e| failed("reading the terminal", e))
            })
            .boxed();
        Ok(Terminal {
            output,
            input,
            control: Box::new(control),
        })
    }

    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(&container_name(id), Some(options));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(line) => extend_capped(&mut out, &line.into_bytes()),
                Err(err) if is_status(&err, &[404]) => return Err(RuntimeError::NotFound),
                Err(err) => return Err(failed("reading logs", err)),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn follow_logs(&self, id: Uuid, tail: usize) -> Result<LogStream, RuntimeError> {
        if self.container_state(id).await?.is_none() {
            return Err(RuntimeError::NotFound);
        }
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail.to_string())
            .build();
        let stream = self
            .docker
            .logs(&container_name(id), Some(options))
            .map(|item| match item {
                Ok(output) => Ok(output.into_bytes().to_vec()),
                Err(err) if is_status(&err, &[404]) => Err(RuntimeError::NotFound),
                Err(err) => Err(failed("following logs", err)),
            });
        Ok(Box::pin(stream))
    }

    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError> {
        let filters = self.label_filters();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing containers", e))?;
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| failed("listing volumes", e))?;
        let mut ids: Vec<Uuid> = containers
            .into_iter()
            .filter_map(|c| c.labels)
            .chain(
                volumes
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.labels),
            )
            .filter_map(|labels| labels.get(WORKSPACE_LABEL)?.parse().ok())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_on_the_agents_network_refuses_to_start_without_a_platform_url() {
        let settings = RuntimeConfig {
            kind: crate::config::RuntimeKind::Docker,
            host_on_network: true,
            // Never reached: the check comes before the engine is asked anything.
            docker_host: Some("tcp://127.0.0.1:9".into()),
            ..RuntimeConfig::default()
        };
        let err = DockerRuntime::connect(&settings)
            .await
            .expect_err("no platform_url");
        assert!(
            err.to_string().contains("runtime.platform_url"),
            "unexpected error: {err:#}"
        );
    }
}
