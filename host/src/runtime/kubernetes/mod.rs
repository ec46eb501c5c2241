//! The Kubernetes runtime: one Pod per workspace through the API server (kube-rs).
//!
//! Per workspace, in `runtime.kubernetes.namespace`: the claim `ws-<id12>-configs` mounted at
//! `/configs` (it outlives the Pod, like Docker's volume), the Secret `ws-<id12>-env` the agent
//! reads its environment from (`envFrom`, so no value is ever in the Pod spec), the first-start
//! files as a tar archive in the ConfigMap `ws-<id12>-files` (and, for owner-only files such as
//! the token file, in the Secret `ws-<id12>-files`), laid over `/configs` by the init container
//! `seed`, the Pod `ws-<id12>` (restart policy `Never`: the host's restart policy decides) and
//! the Service `ws-<id12>` in front of the agent port. Files of a running agent go in and out
//! through the exec subresource (`tar`, `cat`, `rm`, `mv`); a stopped agent's files through a
//! short-lived helper Pod that mounts the claim, so a restart can still see what is stored. The
//! operator's terminal is an exec of `/bin/sh` with a TTY in the agent's container; closing it
//! runs a second exec that kills every process marked with the session.
//!
//! `pods.rs` holds the objects of a workspace and the Pod lifecycle (apply, watch, delete),
//! `exec.rs` running commands in a Pod, the terminal and the files helper Pods; the trait is
//! implemented here.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{
    Api, AttachParams, AttachedProcess, DeleteParams, ListParams, LogParams, Patch, PatchParams,
    PostParams, TerminalSize, WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    CONFIGS_ROOT, ContainerRuntime, ExecOutput, FilesChange, Inspection, KILL_MARKED, LogStream,
    MAX_OUTPUT, RuntimeError, StartSpec, Started, TERMINAL_MARKER, TERMINAL_SHELL, TermSize,
    Terminal, TerminalControl, WORKSPACE_LABEL, WriteTarget, exited_ok, id12, managed_selectors,
    rooted, workspace_labels,
};
use crate::config::{Config, RuntimeConfig};
use crate::safefs::{self, FileTree, RelPath};

mod exec;
#[cfg(test)]
mod fake;
mod pods;
#[cfg(test)]
mod tests;

use exec::*;
use pods::*;

/// The agent's container in its Pod (exec and logs name it).
const AGENT_CONTAINER: &str = "agent";
/// The container of a files helper Pod.
const FILES_CONTAINER: &str = "files";
/// Marks the agent's own Pod, which the Service selects (helper Pods carry the workspace label
/// too, and must never receive agent traffic).
const AGENT_POD_LABEL: &str = "molecule.workspace.agent";
/// Marks a files helper Pod.
const HELPER_LABEL: &str = "molecule.helper";
/// The server-side apply field manager of every object the host applies.
const FIELD_MANAGER: &str = "molecule-host";
/// The one key of the seed archives in the files ConfigMap and Secret.
const SEED_KEY: &str = "files.tar";
/// What one ConfigMap or Secret may hold (the API server refuses objects over 1 MiB; the rest
/// is left for metadata).
const MAX_SEED_BYTES: usize = 1000 * 1024;
/// How long a helper Pod may live at most, in case the host dies before removing it.
const HELPER_DEADLINE_SECS: u64 = 600;
/// Exit status the file scripts use for "no such file or directory", so it is told apart from
/// other failures without reading message text.
const MISSING: i64 = 44;

/// The Kubernetes runtime.
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    settings: RuntimeConfig,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("namespace", &self.settings.kubernetes.namespace)
            .finish_non_exhaustive()
    }
}

fn pod_name(id: Uuid) -> String {
    format!("ws-{}", id12(id))
}

fn claim_name(id: Uuid) -> String {
    format!("ws-{}-configs", id12(id))
}

fn env_secret_name(id: Uuid) -> String {
    format!("ws-{}-env", id12(id))
}

/// The files ConfigMap and the files Secret share this name.
fn files_name(id: Uuid) -> String {
    format!("ws-{}-files", id12(id))
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// An API failure as a runtime error. Connection failures mean the cluster is unavailable; a
/// 403 names the missing permission. The API server's message is kept (it names objects, never
/// the Secret's values, which are not echoed back).
fn api_failed(context: &str, err: kube::Error) -> RuntimeError {
    match err {
        kube::Error::Api(status) if status.code == 403 => RuntimeError::Failed(format!(
            "{context}: forbidden by the cluster's RBAC ({}); the host's service account needs \
             the Role in docs/kubernetes.md",
            status.message
        )),
        kube::Error::Api(status) => RuntimeError::Failed(format!(
            "{context}: the API server answered {} {}: {}",
            status.code, status.reason, status.message
        )),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            RuntimeError::Unavailable(format!("{context}: the Kubernetes API server: {err}"))
        }
        other => RuntimeError::Failed(format!("{context}: {other}")),
    }
}

/// An object from its manifest; the manifests are written by this module, so a failure is a bug
/// reported as an error rather than a panic.
fn manifest<K: DeserializeOwned>(value: serde_json::Value) -> Result<K, RuntimeError> {
    serde_json::from_value(value)
        .map_err(|e| RuntimeError::Failed(format!("building a Kubernetes object: {e}")))
}
impl KubernetesRuntime {
    /// Connects with kube's standard inference (`KUBECONFIG`, `~/.kube/config`, in-cluster) and
    /// checks the API server answers.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.runtime.platform_url.is_some(),
            "runtime.platform_url must be set for the kubernetes runtime: agents in Pods cannot \
             reach the host's loopback address (see docs/kubernetes.md)"
        );
        let client = Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes cluster: {e}"))?;
        let version = tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("the Kubernetes API server did not answer within 5 s"))?
            .map_err(|e| anyhow::anyhow!("asking the Kubernetes API server its version: {e}"))?;
        tracing::info!(
            namespace = %config.runtime.kubernetes.namespace,
            server = %version.git_version,
            "kubernetes runtime ready"
        );
        Ok(Self::with_client(client, &config.runtime))
    }

    /// A runtime on an existing client (tests point one at their API server).
    pub fn with_client(client: Client, settings: &RuntimeConfig) -> Self {
        KubernetesRuntime {
            client,
            settings: settings.clone(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.kubernetes.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        self.api()
    }

    fn labels(&self, id: Uuid) -> BTreeMap<String, String> {
        workspace_labels(&self.settings, id)
    }

    fn agent_url(&self, id: Uuid) -> String {
        let k = &self.settings.kubernetes;
        format!(
            "http://{}.{}.svc:{}",
            pod_name(id),
            k.namespace,
            k.agent_port
        )
    }

    /// Deletes an object; "not found" means it is already gone.
    async fn delete<K>(&self, name: &str, context: &str) -> Result<(), RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self.api::<K>().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, 404) => Ok(()),
            Err(err) => Err(api_failed(context, err)),
        }
    }

    /// Creates or updates an object to exactly this manifest (server-side apply).
    async fn apply<K>(&self, name: &str, object: &K, context: &str) -> Result<(), RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<K>()
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map(|_| ())
            .map_err(|e| api_failed(context, e))
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    /// The Service's full name (what the agent announces, reachable from any namespace) and its
    /// short name (reachable inside the namespace).
    fn network_urls(&self, id: Uuid) -> Vec<String> {
        let port = self.settings.kubernetes.agent_port;
        vec![
            self.agent_url(id),
            format!("http://{}:{port}", pod_name(id)),
        ]
    }

    fn agent_listen_ip(&self) -> Option<std::net::IpAddr> {
        None
    }

    async fn start(&self, spec: &StartSpec) -> Result<Started, RuntimeError> {
        let id = spec.workspace_id;
        let image = self.settings.image_for(&spec.runtime).to_owned();
        let pod = self.agent_pod(spec, &image)?;
        self.delete_pod(&pod_name(id), None).await?;
        self.create_claim(id).await?;
        self.apply_env(spec).await?;
        self.apply_seed(spec).await?;
        self.apply_service(id).await?;
        let timeout = Duration::from_secs(self.settings.kubernetes.start_timeout_secs);
        self.run_pod(&pod, &image, timeout).await?;
        Ok(Started {
            url: self.agent_url(id),
        })
    }

    async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        let grace = u32::try_from(self.settings.stop_timeout_secs).unwrap_or(u32::MAX);
        self.delete_pod(&pod_name(id), Some(grace)).await
    }

    async fn remove(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.stop(id).await?;
        self.delete::<Service>(&pod_name(id), "removing the agent Service")
            .await?;
        self.delete::<ConfigMap>(&files_name(id), "removing the files ConfigMap")
            .await?;
        self.delete::<Secret>(&files_name(id), "removing the private files Secret")
            .await?;
        self.delete::<Secret>(&env_secret_name(id), "removing the environment Secret")
            .await?;
        self.delete::<PersistentVolumeClaim>(&claim_name(id), "removing the config volume claim")
            .await
    }

    async fn inspect(&self, id: Uuid) -> Result<Inspection, RuntimeError> {
        Ok(self
            .agent_pod_state(id)
            .await?
            .map(|p| inspection(&p))
            .unwrap_or_default())
    }

    async fn write_files(&self, id: Uuid, files: &FileTree) -> Result<WriteTarget, RuntimeError> {
        let archive = files
            .to_tar()
            .map_err(|e| RuntimeError::Failed(format!("building the file archive: {e}")))?;
        let argv: Vec<String> = ["tar", "-x", "-f", "-", "-C", CONFIGS_ROOT]
            .map(str::to_owned)
            .into();
        let (_, target) = self
            .with_files_pod(id, |at| async move {
                let ran = self.run(&at, &argv, Some(archive), MAX_OUTPUT).await?;
                exited_ok("tar", &ran.output())
            })
            .await?;
        Ok(target)
    }

    /// Read as a tar stream through exec.
    async fn archive(
        &self,
        id: Uuid,
        root: &str,
        path: Option<&RelPath>,
    ) -> Result<Vec<safefs::TarEntry>, RuntimeError> {
        let full = rooted(root, path)?;
        let argv = script(
            &format!("cd \"$1\" 2>/dev/null || exit {MISSING}; exec tar -c -f - ."),
            &[full],
        );
        let (archive, _) = self
            .with_files_pod(id, |at| async move {
                self.run(&at, &argv, None, safefs::MAX_TREE_BYTES as usize)
                    .await?
                    .file_output("tar")
            })
            .await?;
        Ok(safefs::read_tar(&archive)?
            .into_iter()
            .filter_map(|(entry, data)| {
                let joined = match path {
                    Some(path) => path.join(entry.as_str()).ok()?,
                    None => entry,
                };
                Some((joined, data))
            })
            .collect())
    }

    async fn change_files(
        &self,
        id: Uuid,
        change: FilesChange<'_>,
    ) -> Result<WriteTarget, RuntimeError> {
        // In the running agent's Pod, or (between two restart cycles, or stopped) a helper Pod
        // mounting the claim: a plugin swap must not depend on catching the agent up.
        let (_, target) = self
            .with_files_pod(id, |at| async move {
                for argv in change.commands() {
                    let ran = self.run(&at, &argv, None, MAX_OUTPUT).await?;
                    exited_ok(&argv[0], &ran.output())?;
                }
                Ok(())
            })
            .await?;
        Ok(target)
    }

    async fn read_file(
        &self,
        id: Uuid,
        root: &str,
        path: &RelPath,
    ) -> Result<Vec<u8>, RuntimeError> {
        let full = rooted(root, Some(path))?;
        let argv = script(
            &format!("[ -f \"$1\" ] || exit {MISSING}; exec cat \"$1\""),
            &[full],
        );
        let (data, _) = self
            .with_files_pod(id, |at| async move {
                self.run(&at, &argv, None, safefs::MAX_TREE_BYTES as usize)
                    .await?
                    .file_output("cat")
            })
            .await?;
        Ok(data)
    }

    async fn exec(&self, id: Uuid, argv: &[String]) -> Result<ExecOutput, RuntimeError> {
        if !self.running(id).await? {
            return Err(RuntimeError::Offline);
        }
        let at = FilesPod::agent(id);
        Ok(self.run(&at, argv, None, MAX_OUTPUT).await?.output())
    }

    fn has_terminal(&self) -> bool {
        true
    }

    /// An exec of `/bin/sh` with a TTY in the agent's container (see `exec.rs`).
    async fn open_terminal(
        &self,
        id: Uuid,
        session: Uuid,
        size: TermSize,
    ) -> Result<Terminal, RuntimeError> {
        if !self.running(id).await? {
            return Err(RuntimeError::Offline);
        }
        self.open_shell(id, session, size).await
    }

    async fn logs(&self, id: Uuid, tail: usize) -> Result<String, RuntimeError> {
        let params = LogParams {
            container: Some(AGENT_CONTAINER.into()),
            tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
            limit_bytes: Some(MAX_OUTPUT as i64),
            ..LogParams::default()
        };
        match self.pods().logs(&pod_name(id), &params).await {
            Ok(text) => Ok(text),
            Err(err) if is_status(&err, 404) => Err(RuntimeError::NotFound),
            Err(err) => Err(api_failed("reading logs", err)),
        }
    }

    /// The Pod's log subresource with `follow`: its last `tail` lines, then each new one until
    /// the stream is dropped or the Pod goes away.
    async fn follow_logs(&self, id: Uuid, tail: usize) -> Result<LogStream, RuntimeError> {
        let params = LogParams {
            container: Some(AGENT_CONTAINER.into()),
            tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
            follow: true,
            ..LogParams::default()
        };
        let reader = match self.pods().log_stream(&pod_name(id), &params).await {
            Ok(reader) => reader,
            Err(err) if is_status(&err, 404) => return Err(RuntimeError::NotFound),
            Err(err) => return Err(api_failed("following logs", err)),
        };
        let chunks = futures::stream::unfold(Box::pin(reader), |mut reader| async move {
            use futures::AsyncReadExt as _;
            let mut buf = vec![0u8; 8 * 1024];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf), reader))
                }
                Err(err) => {
                    // The Pod went away or the API server closed the stream: the log ends.
                    tracing::debug!(error = %err, "following a Pod's log ended");
                    None
                }
            }
        });
        Ok(chunks.boxed())
    }

    async fn managed(&self) -> Result<Vec<Uuid>, RuntimeError> {
        let params = ListParams::default().labels(&managed_selectors(&self.settings).join(","));
        let pods = self
            .pods()
            .list(&params)
            .await
            .map_err(|e| api_failed("listing pods", e))?;
        let claims = self
            .api::<PersistentVolumeClaim>()
            .list(&params)
            .await
            .map_err(|e| api_failed("listing volume claims", e))?;
        let mut ids: Vec<Uuid> = pods
            .items
            .iter()
            .map(|p| &p.metadata)
            .chain(claims.items.iter().map(|c| &c.metadata))
            .filter_map(|meta| meta.labels.as_ref()?.get(WORKSPACE_LABEL)?.parse().ok())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn shutdown(&self) {}
}
