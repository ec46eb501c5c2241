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
//! short-lived helper Pod that mounts the claim, so a restart can still see what is stored.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    CONFIGS_ROOT, ContainerRuntime, ExecOutput, FilesChange, Inspection, MAX_OUTPUT, RuntimeError,
    StartSpec, Started, WORKSPACE_LABEL, WriteTarget, exited_ok, id12, managed_selectors, rooted,
    workspace_labels,
};
use crate::config::{Config, RuntimeConfig};
use crate::safefs::{self, FileTree, RelPath};

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

/// A tar archive of some files, checked against what one ConfigMap or Secret holds.
fn seed_archive(files: &FileTree) -> Result<Vec<u8>, RuntimeError> {
    let tar = files
        .to_tar()
        .map_err(|e| RuntimeError::Failed(format!("building the file archive: {e}")))?;
    if tar.len() > MAX_SEED_BYTES {
        return Err(RuntimeError::Failed(format!(
            "the workspace's first-start files take {} bytes as an archive, more than a \
             Kubernetes ConfigMap or Secret holds ({MAX_SEED_BYTES}); write large files through \
             the files API once the agent runs",
            tar.len()
        )));
    }
    Ok(tar)
}

/// Splits the first-start files into those anyone in the Pod may read (ConfigMap) and those
/// only their owner may (mode without group and other bits, such as `.auth_token`: Secret).
fn split_private(files: &FileTree) -> (FileTree, FileTree) {
    let (mut public, mut private) = (FileTree::new(), FileTree::new());
    for file in files.files() {
        let tree = if file.mode & 0o077 == 0 {
            &mut private
        } else {
            &mut public
        };
        tree.insert(file.path.clone(), file.data.clone(), file.mode);
    }
    (public, private)
}

/// Memory and CPU of a tier as Kubernetes quantities: the limits are Docker's limits; memory is
/// requested in full (it cannot be taken back without killing the agent), CPU a quarter (agents
/// mostly wait on their model, and CPU is shared gracefully).
fn tier_resources(settings: &RuntimeConfig, tier: i32) -> serde_json::Value {
    let (memory, nano_cpus) = settings.tier_limits(tier);
    let mebibytes = memory / (1024 * 1024);
    let millicores = (nano_cpus / 1_000_000).max(1);
    json!({
        "limits": { "memory": format!("{mebibytes}Mi"), "cpu": format!("{millicores}m") },
        "requests": {
            "memory": format!("{mebibytes}Mi"),
            "cpu": format!("{}m", (millicores / 4).max(1)),
        },
    })
}

/// Where a Pod stands on its way to running.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Running,
    /// Scheduling, pulling, initialising; the text says what it last waited for.
    Waiting(String),
    ImageMissing,
    Failed(String),
}

fn progress(pod: &Pod) -> Progress {
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten();
    let mut waiting = None;
    for container in statuses {
        let state = container.state.clone().unwrap_or_default();
        if let Some(reason) = state.waiting.and_then(|w| w.reason) {
            match reason.as_str() {
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                    return Progress::ImageMissing;
                }
                "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                    return Progress::Failed(format!("container {}: {reason}", container.name));
                }
                _ => waiting = Some(format!("container {}: {reason}", container.name)),
            }
        }
        if let Some(done) = state.terminated
            && done.exit_code != 0
        {
            return Progress::Failed(format!(
                "container {} exited with {} ({})",
                container.name,
                done.exit_code,
                done.reason.unwrap_or_default()
            ));
        }
    }
    match status.phase.as_deref() {
        Some("Running") => Progress::Running,
        Some(phase @ ("Failed" | "Succeeded")) => Progress::Failed(format!(
            "the pod ended ({phase}{})",
            status.message.map(|m| format!(": {m}")).unwrap_or_default()
        )),
        _ => Progress::Waiting(waiting.unwrap_or_else(|| {
            status
                .conditions
                .into_iter()
                .flatten()
                .find(|c| c.status == "False")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.unwrap_or(c.type_),
                        c.message.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| status.phase.unwrap_or_else(|| "pending".into()))
        })),
    }
}

/// A Pod as the lifecycle sees it. A Pod being deleted is no longer running.
fn inspection(pod: &Pod) -> Inspection {
    let status = pod.status.clone().unwrap_or_default();
    let running =
        status.phase.as_deref() == Some("Running") && pod.metadata.deletion_timestamp.is_none();
    let exit_code = status
        .container_statuses
        .into_iter()
        .flatten()
        .find(|c| c.name == AGENT_CONTAINER)
        .and_then(|c| c.state?.terminated)
        .map(|t| i64::from(t.exit_code));
    Inspection {
        exists: true,
        running,
        exit_code: if running { None } else { exit_code },
    }
}

/// The exit code an exec's final status carries: `Success` is 0; `NonZeroExitCode` names it in
/// a cause; anything else (the command could not start) is an error.
fn exit_code(
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i64, RuntimeError> {
    let Some(status) = status else {
        return Err(RuntimeError::Failed(
            "the exec ended without reporting an exit status".into(),
        ));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = status
            .details
            .and_then(|d| d.causes)
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message?.parse().ok())
    {
        return Ok(code);
    }
    Err(RuntimeError::Failed(format!(
        "the exec failed: {}",
        status.message.unwrap_or_default()
    )))
}

/// Reads a stream to its end, keeping at most `cap` bytes (the rest is drained so the exec
/// never stalls on a full pipe).
async fn read_capped(
    reader: Option<impl AsyncRead + Unpin>,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut reader) = reader else {
        return Ok(out);
    };
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(out);
        }
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// The raw result of a command run in a Pod.
struct Ran {
    exit_code: i64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn output(self) -> ExecOutput {
        ExecOutput {
            exit_code: self.exit_code,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }

    /// The stdout of a file script, with [`MISSING`] as `NotFound`.
    fn file_output(self, program: &str) -> Result<Vec<u8>, RuntimeError> {
        let Ran {
            exit_code,
            stdout,
            stderr,
        } = self;
        if exit_code == MISSING {
            return Err(RuntimeError::NotFound);
        }
        let failed = ExecOutput {
            exit_code,
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        exited_ok(program, &failed)?;
        Ok(stdout)
    }
}

/// A Pod whose containers see the workspace's `/configs`.
struct FilesPod {
    pod: String,
    container: &'static str,
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

    /// Deletes a Pod and waits until it is gone (its containers stopped, its claim released).
    async fn delete_pod(&self, name: &str, grace: Option<u32>) -> Result<(), RuntimeError> {
        let params = DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        match self.pods().delete(name, &params).await {
            Ok(_) => {}
            Err(err) if is_status(&err, 404) => return Ok(()),
            Err(err) => return Err(api_failed("deleting the pod", err)),
        }
        // The answer to a delete may already be the last state; only a read tells whether the
        // Pod is still terminating, and a watch from that read sees its removal.
        let Some(pod) = self
            .pods()
            .get_opt(name)
            .await
            .map_err(|e| api_failed("reading the pod", e))?
        else {
            return Ok(());
        };
        let wait = Duration::from_secs(u64::from(grace.unwrap_or(30)) + 30);
        self.watch_pod(name, pod.resource_version(), wait, "to be deleted", |pod| {
            pod.is_none().then_some(Ok(()))
        })
        .await
    }

    /// Watches one Pod from `version` until `decide` returns a result for its state (`None`: the
    /// Pod is gone), or fails after `timeout`. A watch the server ends (its own timeout, an
    /// expired version) is resumed from a fresh read.
    async fn watch_pod<T>(
        &self,
        name: &str,
        version: Option<String>,
        timeout: Duration,
        what: &str,
        mut decide: impl FnMut(Option<&Pod>) -> Option<Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        let deadline = Instant::now() + timeout;
        let mut version = version.unwrap_or_else(|| "0".into());
        let fields = format!("metadata.name={name}");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let seconds = u32::try_from(remaining.as_secs().clamp(1, 290)).unwrap_or(290);
            let watched = async {
                let params = WatchParams::default().fields(&fields).timeout(seconds);
                let stream = self
                    .pods()
                    .watch(&params, &version)
                    .await
                    .map_err(|e| api_failed("watching the pod", e))?;
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event.map_err(|e| api_failed("watching the pod", e))? {
                        WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                            if let Some(rv) = pod.metadata.resource_version.clone() {
                                version = rv;
                            }
                            if let Some(result) = decide(Some(&pod)) {
                                return result.map(Some);
                            }
                        }
                        WatchEvent::Deleted(_) => {
                            if let Some(result) = decide(None) {
                                return result.map(Some);
                            }
                        }
                        WatchEvent::Bookmark(mark) => version = mark.metadata.resource_version,
                        // 410: the version expired; resume from a fresh read.
                        WatchEvent::Error(status) if status.code == 410 => return Ok(None),
                        WatchEvent::Error(status) => {
                            return Err(RuntimeError::Failed(format!(
                                "watching the pod: {} {}",
                                status.code, status.message
                            )));
                        }
                    }
                }
                Ok(None)
            };
            match tokio::time::timeout(remaining, watched).await {
                Ok(Ok(Some(done))) => return Ok(done),
                Ok(Ok(None)) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(RuntimeError::Failed(format!(
                        "pod {name} did not come {what} within {} s",
                        timeout.as_secs()
                    )));
                }
            }
            let pod = self
                .pods()
                .get_opt(name)
                .await
                .map_err(|e| api_failed("reading the pod", e))?;
            if let Some(result) = decide(pod.as_ref()) {
                return result;
            }
            version = pod
                .and_then(|p| p.metadata.resource_version)
                .unwrap_or_else(|| "0".into());
        }
    }

    /// Creates a Pod and waits (watching it) until it runs; a Pod that cannot run is removed.
    async fn run_pod(&self, pod: &Pod, image: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let name = pod.name_any();
        let created = self
            .pods()
            .create(&PostParams::default(), pod)
            .await
            .map_err(|e| api_failed("creating the pod", e))?;
        let mut last = String::from("pending");
        let outcome = self
            .watch_pod(
                &name,
                created.metadata.resource_version.clone(),
                timeout,
                "up",
                |pod| match pod.map(progress) {
                    None => Some(Err(RuntimeError::Failed(format!(
                        "pod {name} was deleted while starting"
                    )))),
                    Some(Progress::Running) => Some(Ok(())),
                    Some(Progress::ImageMissing) => {
                        Some(Err(RuntimeError::ImageMissing(image.to_owned())))
                    }
                    Some(Progress::Failed(why)) => Some(Err(RuntimeError::Failed(format!(
                        "pod {name} failed to start: {why}"
                    )))),
                    Some(Progress::Waiting(why)) => {
                        last = why;
                        None
                    }
                },
            )
            .await;
        if let Err(err) = outcome {
            // Leave nothing half-started; the error says why it did not run.
            if let Err(cleanup) = self.delete_pod(&name, Some(0)).await {
                tracing::warn!(pod = %name, error = %cleanup, "removing a pod that did not start failed");
            }
            return Err(match err {
                RuntimeError::Failed(message) if message.contains("within") => {
                    RuntimeError::Failed(format!("{message} (last: {last})"))
                }
                other => other,
            });
        }
        Ok(())
    }

    /// The agent's Pod: labels, image, environment from the Secret, tier resources, the seed
    /// init container and the claim at `/configs`.
    fn agent_pod(&self, spec: &StartSpec, image: &str) -> Result<Pod, RuntimeError> {
        let id = spec.workspace_id;
        let mut labels = self.labels(id);
        labels.insert(AGENT_POD_LABEL.into(), "true".into());
        let resources = tier_resources(&self.settings, spec.tier);
        let read_only = spec.tier == 1;
        let security = json!({
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "readOnlyRootFilesystem": read_only,
            "capabilities": { "drop": ["NET_RAW"] },
        });
        let mut mounts = vec![json!({ "name": "configs", "mountPath": CONFIGS_ROOT })];
        let mut volumes = vec![
            json!({ "name": "configs", "persistentVolumeClaim": { "claimName": claim_name(id) } }),
            json!({ "name": "seed-public", "configMap": { "name": files_name(id) } }),
            json!({ "name": "seed-private", "secret": { "secretName": files_name(id), "defaultMode": 0o400 } }),
        ];
        if read_only {
            mounts.push(json!({ "name": "tmp", "mountPath": "/tmp" }));
            volumes.push(
                json!({ "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": "64Mi" } }),
            );
        }
        manifest(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": pod_name(id), "labels": labels },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": self.settings.stop_timeout_secs,
                "initContainers": [{
                    "name": "seed",
                    "image": image,
                    "command": [
                        "sh", "-c",
                        format!("tar -x -f /seed/public/{SEED_KEY} -C {CONFIGS_ROOT} && \
                                 tar -x -f /seed/private/{SEED_KEY} -C {CONFIGS_ROOT}"),
                    ],
                    "resources": resources,
                    "securityContext": security,
                    "volumeMounts": [
                        { "name": "configs", "mountPath": CONFIGS_ROOT },
                        { "name": "seed-public", "mountPath": "/seed/public", "readOnly": true },
                        { "name": "seed-private", "mountPath": "/seed/private", "readOnly": true },
                    ],
                }],
                "containers": [{
                    "name": AGENT_CONTAINER,
                    "image": image,
                    "envFrom": [{ "secretRef": { "name": env_secret_name(id) } }],
                    "ports": [{ "name": "a2a", "containerPort": self.settings.kubernetes.agent_port }],
                    "resources": resources,
                    "securityContext": security,
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            },
        }))
    }

    async fn create_claim(&self, id: Uuid) -> Result<(), RuntimeError> {
        let k = &self.settings.kubernetes;
        let claim: PersistentVolumeClaim = manifest(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": claim_name(id), "labels": self.labels(id) },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": k.storage_class,
                "resources": { "requests": { "storage": k.pvc_size } },
            },
        }))?;
        // An existing claim holds the workspace's files: it is kept as it is.
        match self
            .api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &claim)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, 409) => Ok(()),
            Err(err) => Err(api_failed("creating the config volume claim", err)),
        }
    }

    async fn apply_env(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        let id = spec.workspace_id;
        let data: BTreeMap<&String, k8s_openapi::ByteString> = spec
            .env
            .iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v.clone().into_bytes())))
            .collect();
        let secret: Secret = manifest(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": env_secret_name(id), "labels": self.labels(id) },
            "type": "Opaque",
            "data": data,
        }))?;
        // The API server's messages about a Secret are not passed on: only the status, so no
        // value can travel into an error or a log.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .api::<Secret>()
            .patch(&env_secret_name(id), &params, &Patch::Apply(&secret))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(mut status)) => {
                status.message = "(not shown for a Secret)".into();
                Err(api_failed(
                    "writing the agent's environment Secret",
                    kube::Error::Api(status),
                ))
            }
            Err(err) => Err(api_failed("writing the agent's environment Secret", err)),
        }
    }

    async fn apply_seed(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        let id = spec.workspace_id;
        let (public, private) = split_private(&spec.files);
        let map: ConfigMap = manifest(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": files_name(id), "labels": self.labels(id) },
            "binaryData": { SEED_KEY: k8s_openapi::ByteString(seed_archive(&public)?) },
        }))?;
        let secret: Secret = manifest(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": files_name(id), "labels": self.labels(id) },
            "type": "Opaque",
            "data": { SEED_KEY: k8s_openapi::ByteString(seed_archive(&private)?) },
        }))?;
        self.apply(&files_name(id), &secret, "writing the private files Secret")
            .await?;
        self.apply(&files_name(id), &map, "writing the files ConfigMap")
            .await
    }

    async fn apply_service(&self, id: Uuid) -> Result<(), RuntimeError> {
        let port = self.settings.kubernetes.agent_port;
        let service: Service = manifest(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": pod_name(id), "labels": self.labels(id) },
            "spec": {
                "selector": { WORKSPACE_LABEL: id.to_string(), AGENT_POD_LABEL: "true" },
                "ports": [{ "name": "a2a", "port": port, "targetPort": port }],
            },
        }))?;
        self.apply(&pod_name(id), &service, "writing the agent Service")
            .await
    }

    async fn agent_pod_state(&self, id: Uuid) -> Result<Option<Pod>, RuntimeError> {
        self.pods()
            .get_opt(&pod_name(id))
            .await
            .map_err(|e| api_failed("reading the pod", e))
    }

    async fn running(&self, id: Uuid) -> Result<bool, RuntimeError> {
        Ok(self
            .agent_pod_state(id)
            .await?
            .is_some_and(|p| inspection(&p).running))
    }

    /// Runs `argv` in a Pod's container, with `stdin` fed and closed when given; stdout is kept
    /// up to `cap` bytes.
    async fn run(
        &self,
        at: &FilesPod,
        argv: &[String],
        stdin: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<Ran, RuntimeError> {
        let params = AttachParams::default()
            .container(at.container)
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true)
            .max_stdin_buf_size(64 * 1024)
            .max_stdout_buf_size(64 * 1024);
        let mut process = self
            .pods()
            .exec(&at.pod, argv.to_vec(), &params)
            .await
            .map_err(|e| api_failed("starting an exec", e))?;
        let stdout = process.stdout();
        let stderr = process.stderr();
        let status = process
            .take_status()
            .ok_or_else(|| RuntimeError::Failed("the exec has no status channel".into()))?;
        let writer = process.stdin();
        let feed = async move {
            if let (Some(mut writer), Some(data)) = (writer, stdin) {
                writer.write_all(&data).await?;
                writer.shutdown().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (out, err, fed, status) = tokio::join!(
            read_capped(stdout, cap),
            read_capped(stderr, MAX_OUTPUT),
            feed,
            status
        );
        let io = |e: std::io::Error| RuntimeError::Failed(format!("exec streams: {e}"));
        let (stdout, stderr) = (out.map_err(io)?, err.map_err(io)?);
        fed.map_err(io)?;
        process
            .join()
            .await
            .map_err(|e| RuntimeError::Failed(format!("exec connection: {e}")))?;
        Ok(Ran {
            exit_code: exit_code(status)?,
            stdout,
            stderr,
        })
    }

    /// Runs `f` with a Pod that has the workspace's claim at `/configs`: the agent's own Pod
    /// while it runs, else a helper Pod removed afterwards. No claim: `Offline`.
    async fn with_files_pod<T, F, Fut>(
        &self,
        id: Uuid,
        f: F,
    ) -> Result<(T, WriteTarget), RuntimeError>
    where
        F: FnOnce(FilesPod) -> Fut,
        Fut: Future<Output = Result<T, RuntimeError>>,
    {
        let agent = self.agent_pod_state(id).await?;
        if agent.as_ref().is_some_and(|p| inspection(p).running) {
            let at = FilesPod {
                pod: pod_name(id),
                container: AGENT_CONTAINER,
            };
            return Ok((f(at).await?, WriteTarget::Running));
        }
        let claim = self
            .api::<PersistentVolumeClaim>()
            .get_opt(&claim_name(id))
            .await
            .map_err(|e| api_failed("reading the config volume claim", e))?;
        if claim.is_none() {
            return Err(RuntimeError::Offline);
        }
        // A stopped agent's Pod may still hold the claim on its node (ReadWriteOnce): the
        // helper goes to the same node.
        let node = agent.and_then(|p| p.spec?.node_name);
        let helper = self.start_helper(id, node).await?;
        let result = f(FilesPod {
            pod: helper.clone(),
            container: FILES_CONTAINER,
        })
        .await;
        if let Err(err) = self.delete::<Pod>(&helper, "removing a files helper").await {
            tracing::warn!(pod = %helper, error = %err, "removing a files helper failed");
        }
        Ok((result?, WriteTarget::Stored))
    }

    async fn start_helper(&self, id: Uuid, node: Option<String>) -> Result<String, RuntimeError> {
        let name = format!(
            "{}-files-{}",
            pod_name(id),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let mut labels = self.labels(id);
        labels.insert(HELPER_LABEL.into(), "files".into());
        let image = &self.settings.image;
        let pod: Pod = manifest(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "labels": labels },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "activeDeadlineSeconds": HELPER_DEADLINE_SECS,
                "terminationGracePeriodSeconds": 0,
                "nodeName": node,
                "containers": [{
                    "name": FILES_CONTAINER,
                    "image": image,
                    "command": ["sleep", HELPER_DEADLINE_SECS.to_string()],
                    "resources": tier_resources(&self.settings, 1),
                    "securityContext": { "allowPrivilegeEscalation": false },
                    "volumeMounts": [{ "name": "configs", "mountPath": CONFIGS_ROOT }],
                }],
                "volumes": [{ "name": "configs", "persistentVolumeClaim": { "claimName": claim_name(id) } }],
            },
        }))?;
        let timeout = Duration::from_secs(self.settings.kubernetes.start_timeout_secs);
        self.run_pod(&pod, image, timeout).await?;
        Ok(name)
    }
}

/// `sh -c <script> sh <args...>`: the arguments reach the script as `$1…`, never as code.
fn script(code: &str, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        code.to_owned(),
        "sh".to_owned(),
    ];
    argv.extend(args.iter().cloned());
    argv
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
        let at = FilesPod {
            pod: pod_name(id),
            container: AGENT_CONTAINER,
        };
        Ok(self.run(&at, argv, None, MAX_OUTPUT).await?.output())
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

#[cfg(test)]
mod fake;

#[cfg(test)]
mod tests {
    //! The runtime against an in-process fake of the Kubernetes API server, or against a real
    //! cluster when `MOLECULE_TEST_KUBECONFIG` names a kubeconfig (then the exact request
    //! sequences are not checked; everything else is). The fake keeps objects in memory, plays
    //! the kubelet when a Pod is watched (a Pending Pod runs its init container and becomes
    //! Running; a deleted Pod disappears), runs exec commands for real against per-claim
    //! directories, and records every request.

    use super::fake::{self, FakeApi};
    use super::*;
    use crate::runtime::AgentEnv;

    /// What a test runs against.
    struct Harness {
        runtime: KubernetesRuntime,
        fake: Option<FakeApi>,
    }

    impl Harness {
        async fn new() -> Self {
            let mut settings = RuntimeConfig {
                stop_timeout_secs: 2,
                ..RuntimeConfig::default()
            };
            settings.kubernetes.start_timeout_secs = 120;
            if let Some(path) = crate::config::test_kubeconfig() {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                    .expect("MOLECULE_TEST_KUBECONFIG names a readable kubeconfig");
                let config = kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .expect("the kubeconfig is usable");
                // Each test's objects carry its own label, so parallel runs never meet.
                settings.labels.insert(
                    "molecule.test.run".into(),
                    Uuid::new_v4().simple().to_string(),
                );
                let client = Client::try_from(config).expect("a client for the cluster");
                return Harness {
                    runtime: KubernetesRuntime::with_client(client, &settings),
                    fake: None,
                };
            }
            let fake = FakeApi::start().await;
            Harness {
                runtime: KubernetesRuntime::with_client(fake.client(), &settings),
                fake: Some(fake),
            }
        }

        /// Asserts the requests since the last call, in order (fake only).
        fn expect_requests(&self, expected: &[String]) {
            if let Some(fake) = &self.fake {
                assert_eq!(fake.take_requests(), expected);
            }
        }

        /// Forgets the requests so far (fake only).
        fn forget_requests(&self) {
            if let Some(fake) = &self.fake {
                fake.take_requests();
            }
        }
    }

    fn spec(id: Uuid, tier: i32) -> StartSpec {
        let mut env = AgentEnv::default();
        env.set("WORKSPACE_ID", id.to_string());
        env.set("ANTHROPIC_API_KEY", "sk-very-secret-value");
        let mut files = FileTree::new();
        files.insert(
            RelPath::parse("config.yaml").unwrap(),
            crate::workspaces::lifecycle::generated_config("kube", None, tier, "langgraph", None),
            0o644,
        );
        files.insert(RelPath::parse("skills/a/SKILL.md").unwrap(), "# A\n", 0o644);
        files.insert(
            RelPath::parse(".auth_token").unwrap(),
            "token-very-secret-value",
            0o600,
        );
        StartSpec {
            workspace_id: id,
            runtime: "langgraph".into(),
            tier,
            env,
            files,
            port: 0,
        }
    }

    fn path(raw: &str) -> RelPath {
        RelPath::parse(raw).unwrap()
    }

    /// The requests of a start of a workspace with no Pod yet.
    fn first_start(n: &str) -> Vec<String> {
        vec![
            format!("DELETE pods/{n}"),
            "POST persistentvolumeclaims".into(),
            format!("PATCH secrets/{n}-env"),
            format!("PATCH secrets/{n}-files"),
            format!("PATCH configmaps/{n}-files"),
            format!("PATCH services/{n}"),
            "POST pods".into(),
            format!("GET pods?watch=true&fieldSelector=metadata.name={n}"),
        ]
    }

    /// Stopping a Pod that exists: delete, read (still terminating), watch until it is gone.
    fn pod_deletion(n: &str) -> Vec<String> {
        vec![
            format!("DELETE pods/{n}"),
            format!("GET pods/{n}"),
            format!("GET pods?watch=true&fieldSelector=metadata.name={n}"),
        ]
    }

    #[tokio::test]
    async fn start_creates_the_objects_in_order_and_waits_for_the_pod_to_run() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);

        let started = h.runtime.start(&spec(id, 2)).await.expect("start");

        assert_eq!(started.url, format!("http://{n}.molecule.svc:8000"));
        h.expect_requests(&first_start(&n));
        let state = h.runtime.inspect(id).await.unwrap();
        assert_eq!(
            state,
            Inspection {
                exists: true,
                running: true,
                exit_code: None
            }
        );
        h.expect_requests(&[format!("GET pods/{n}")]);
        // The init step laid the first-start files (public and private) over /configs.
        let token = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path(".auth_token"))
            .await;
        assert_eq!(token.unwrap(), b"token-very-secret-value");
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn the_pod_spec_carries_labels_env_from_the_secret_tier_resources_and_the_init_step() {
        let h = Harness::new().await;
        let Some(fake) = &h.fake else {
            return; // Reads the fake's stored objects; the behaviour is covered by the others.
        };
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 1)).await.expect("start");

        let pod = fake.object("pods", &n).expect("the pod");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels[crate::runtime::MANAGED_LABEL], "true");
        assert_eq!(labels[WORKSPACE_LABEL], id.to_string());
        assert_eq!(labels[AGENT_POD_LABEL], "true");
        let agent = &pod["spec"]["containers"][0];
        assert_eq!(agent["name"], AGENT_CONTAINER);
        assert_eq!(agent["image"], "molecule-agent:dev");
        assert_eq!(agent["envFrom"][0]["secretRef"]["name"], format!("{n}-env"));
        assert!(agent.get("env").is_none(), "no plain env values: {agent}");
        // Tier 1: 256 MiB and half a CPU (512 shares), memory requested in full, a quarter of
        // the CPU; a read-only root with a memory /tmp.
        assert_eq!(
            agent["resources"],
            json!({
                "limits": { "memory": "256Mi", "cpu": "500m" },
                "requests": { "memory": "256Mi", "cpu": "125m" },
            })
        );
        assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        let init = &pod["spec"]["initContainers"][0];
        assert_eq!(init["name"], "seed");
        assert!(
            init["command"][2]
                .as_str()
                .unwrap()
                .contains("tar -x -f /seed/public/files.tar -C /configs"),
            "{init}"
        );
        let service = fake.object("services", &n).expect("the service");
        assert_eq!(service["spec"]["selector"][AGENT_POD_LABEL], "true");
        assert_eq!(service["spec"]["ports"][0]["port"], 8000);
        // No secret value in the Pod or the ConfigMap; the token file went to the Secret.
        let map = fake.object("configmaps", &format!("{n}-files")).unwrap();
        for (what, object) in [("pod", &pod), ("configmap", &map)] {
            let text = decoded(object);
            assert!(
                !text.contains("very-secret"),
                "a secret value in the {what}"
            );
        }
        assert!(decoded(&map).contains("skills/a/SKILL.md"));
        let private = fake.object("secrets", &format!("{n}-files")).unwrap();
        assert!(decoded(&private).contains("token-very-secret-value"));
        let env = fake.object("secrets", &format!("{n}-env")).unwrap();
        assert!(decoded(&env).contains("sk-very-secret-value"));

        // Tier 3 gets tier 3's limits.
        let other = Uuid::new_v4();
        h.runtime.start(&spec(other, 3)).await.expect("start");
        let pod = fake.object("pods", &pod_name(other)).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"],
            json!({ "memory": "2048Mi", "cpu": "2000m" })
        );
    }

    /// An object's JSON with every base64 value decoded, so a secret cannot hide in encoding.
    fn decoded(object: &serde_json::Value) -> String {
        use base64::Engine as _;
        let mut text = object.to_string();
        for field in ["data", "binaryData"] {
            for value in object[field]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap_or_default())
                    .unwrap_or_default();
                text.push_str(&String::from_utf8_lossy(&raw));
            }
        }
        text
    }

    #[tokio::test]
    async fn a_second_start_replaces_the_pod_and_keeps_the_files() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.runtime
            .write_files(id, &{
                let mut more = FileTree::new();
                more.insert(path("notes/kept.md"), "kept", 0o644);
                more
            })
            .await
            .unwrap();
        h.forget_requests();

        h.runtime.start(&spec(id, 2)).await.expect("restart");

        let mut expected = pod_deletion(&n);
        expected.extend(first_start(&n).into_iter().skip(1));
        h.expect_requests(&expected);
        let kept = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path("notes/kept.md"))
            .await;
        assert_eq!(kept.unwrap(), b"kept");
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn stop_deletes_the_pod_and_waits_until_it_is_gone() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.forget_requests();

        h.runtime.stop(id).await.expect("stop");

        h.expect_requests(&pod_deletion(&n));
        assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
        // Stopping again is a success that changes nothing.
        h.forget_requests();
        h.runtime.stop(id).await.expect("second stop");
        h.expect_requests(&[format!("DELETE pods/{n}")]);
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn remove_deletes_every_object_and_a_second_remove_is_a_no_op() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        assert!(h.runtime.managed().await.unwrap().contains(&id));
        h.forget_requests();

        h.runtime.remove(id).await.expect("remove");

        let deletes = vec![
            format!("DELETE services/{n}"),
            format!("DELETE configmaps/{n}-files"),
            format!("DELETE secrets/{n}-files"),
            format!("DELETE secrets/{n}-env"),
            format!("DELETE persistentvolumeclaims/{n}-configs"),
        ];
        let mut expected = pod_deletion(&n);
        expected.extend(deletes.iter().cloned());
        h.expect_requests(&expected);

        h.runtime.remove(id).await.expect("second remove");

        let mut again = vec![format!("DELETE pods/{n}")];
        again.extend(deletes);
        h.expect_requests(&again);
        assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
        let offline = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path("config.yaml"))
            .await;
        assert!(matches!(offline, Err(RuntimeError::Offline)), "{offline:?}");
    }

    #[tokio::test]
    async fn exec_runs_in_the_agent_container_and_reports_exit_code_and_output() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.forget_requests();

        let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
            .map(str::to_owned)
            .into();
        let out = h.runtime.exec(id, &argv).await.expect("exec");

        assert_eq!(
            out,
            ExecOutput {
                exit_code: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
        h.expect_requests(&[
            format!("GET pods/{n}"),
            format!(
                "GET pods/{n}/exec?container=agent&command=sh -c echo out; echo err >&2; exit 3"
            ),
        ]);
        let ok = h.runtime.exec(id, &["true".to_owned()]).await.unwrap();
        assert_eq!(ok.exit_code, 0);

        h.runtime.stop(id).await.unwrap();
        let offline = h.runtime.exec(id, &["true".to_owned()]).await;
        assert!(matches!(offline, Err(RuntimeError::Offline)), "{offline:?}");
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn files_go_in_and_out_of_a_running_agent_and_the_plugin_swap_renames() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        h.runtime.start(&spec(id, 2)).await.unwrap();
        let mut files = FileTree::new();
        files.insert(path("plugins/.staging/p.1/plugin.yaml"), "name: p\n", 0o644);
        files.insert(path("plugins/.staging/p.1/rules.md"), "be kind\n", 0o644);

        let target = h.runtime.write_files(id, &files).await.expect("write");
        assert_eq!(target, WriteTarget::Running);
        h.runtime
            .rename_path(id, &path("plugins/.staging/p.1"), &path("plugins/p"))
            .await
            .expect("rename");

        let digests = h
            .runtime
            .digests(id, Some(&path("plugins/p")))
            .await
            .unwrap();
        assert_eq!(
            digests,
            BTreeMap::from([
                ("plugin.yaml".to_owned(), safefs::digest(b"name: p\n")),
                ("rules.md".to_owned(), safefs::digest(b"be kind\n")),
            ])
        );
        let listed = h
            .runtime
            .list_files(id, CONFIGS_ROOT, Some(&path("plugins")), 1)
            .await;
        let listed: Vec<String> = listed.unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(listed, ["plugins/.staging", "plugins/p"]);
        let target = h.runtime.remove_path(id, &path("plugins/.staging")).await;
        assert_eq!(target.unwrap(), WriteTarget::Running);
        let missing = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path("plugins/.staging/p.1/rules.md"))
            .await;
        assert!(matches!(missing, Err(RuntimeError::NotFound)));
        let escape = h.runtime.read_file(id, "/etc", &path("passwd")).await;
        assert!(matches!(escape, Err(RuntimeError::InvalidPath)));
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_agents_files_are_read_and_written_through_a_helper_pod() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.runtime.stop(id).await.unwrap();
        h.forget_requests();

        let config = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path("config.yaml"))
            .await;

        assert!(
            String::from_utf8(config.expect("read"))
                .unwrap()
                .contains("tier: 2")
        );
        if let Some(fake) = &h.fake {
            let requests: Vec<String> = fake
                .take_requests()
                .into_iter()
                .map(|r| fake::without_helper_suffix(&r))
                .collect();
            assert_eq!(
                requests,
                [
                    format!("GET pods/{n}"),
                    format!("GET persistentvolumeclaims/{n}-configs"),
                    "POST pods".into(),
                    format!("GET pods?watch=true&fieldSelector=metadata.name={n}-files-*"),
                    format!(
                        "GET pods/{n}-files-*/exec?container=files&command=sh -c \
                         [ -f \"$1\" ] || exit 44; exec cat \"$1\" sh /configs/config.yaml"
                    ),
                    format!("DELETE pods/{n}-files-*"),
                ]
            );
        }
        let mut files = FileTree::new();
        files.insert(path("later.md"), "later", 0o644);
        assert_eq!(
            h.runtime.write_files(id, &files).await.unwrap(),
            WriteTarget::Stored
        );
        h.runtime.start(&spec(id, 2)).await.unwrap();
        let later = h
            .runtime
            .read_file(id, CONFIGS_ROOT, &path("later.md"))
            .await;
        assert_eq!(later.unwrap(), b"later");
        h.runtime.remove(id).await.unwrap();
    }

    #[tokio::test]
    async fn logs_come_from_the_log_subresource_with_tail_lines() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        let n = pod_name(id);
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.forget_requests();

        let logs = h.runtime.logs(id, 2).await.expect("logs");

        assert!(logs.lines().count() <= 2, "{logs}");
        h.expect_requests(&[format!("GET pods/{n}/log?container=agent&tailLines=2")]);
        if h.fake.is_some() {
            assert_eq!(logs, "agent line 4\nagent line 5\n");
        }
        h.runtime.remove(id).await.unwrap();
        assert!(matches!(
            h.runtime.logs(id, 2).await,
            Err(RuntimeError::NotFound)
        ));
    }

    #[tokio::test]
    async fn managed_lists_workspaces_by_the_hosts_labels() {
        let h = Harness::new().await;
        let id = Uuid::new_v4();
        h.runtime.start(&spec(id, 2)).await.unwrap();
        h.forget_requests();

        let managed = h.runtime.managed().await.expect("managed");

        assert!(managed.contains(&id), "{managed:?}");
        let selector = managed_selectors(&h.runtime.settings).join(",");
        h.expect_requests(&[
            format!("GET pods?labelSelector={selector}"),
            format!("GET persistentvolumeclaims?labelSelector={selector}"),
        ]);
        h.runtime.remove(id).await.unwrap();
        assert!(!h.runtime.managed().await.unwrap().contains(&id));
    }

    #[tokio::test]
    async fn an_api_server_error_is_a_clear_failure() {
        let h = Harness::new().await;
        let Some(fake) = &h.fake else {
            return; // A real cluster cannot be made to fail on cue.
        };
        let id = Uuid::new_v4();
        fake.fail("PATCH", "services");

        let err = h
            .runtime
            .start(&spec(id, 2))
            .await
            .expect_err("start fails");

        let message = err.to_string();
        assert!(
            message.contains("writing the agent Service")
                && message.contains("500")
                && message.contains("etcd is on fire"),
            "{message}"
        );
        assert!(!message.contains("very-secret"));
        fake.fail("PATCH", "secrets/");
        let err = h
            .runtime
            .start(&spec(id, 2))
            .await
            .expect_err("start fails");
        assert!(err.to_string().contains("environment Secret"), "{err}");
        assert!(
            !err.to_string().contains("etcd"),
            "a Secret's error text is not passed on"
        );
    }

    #[tokio::test]
    async fn a_pod_that_fails_is_removed_and_reported() {
        let h = Harness::new().await;
        let Some(fake) = &h.fake else {
            return; // A real cluster's Pods fail only when the image does.
        };
        let id = Uuid::new_v4();
        let n = pod_name(id);
        fake.fail_pods();

        let err = h
            .runtime
            .start(&spec(id, 2))
            .await
            .expect_err("start fails");

        assert!(
            err.to_string().contains(&format!(
                "pod {n} failed to start: container agent exited with 1"
            )),
            "{err}"
        );
        let mut expected = first_start(&n);
        expected.extend(pod_deletion(&n));
        h.expect_requests(&expected);
        assert_eq!(h.runtime.inspect(id).await.unwrap(), Inspection::default());
    }

    #[test]
    fn owner_only_files_are_kept_out_of_the_config_map() {
        let mut files = FileTree::new();
        files.insert(path("config.yaml"), "a", 0o644);
        files.insert(path(".auth_token"), "t", 0o600);
        let (public, private) = split_private(&files);
        assert_eq!(public.paths(), ["config.yaml"]);
        assert_eq!(private.paths(), [".auth_token"]);
    }

    #[test]
    fn an_exec_status_maps_to_an_exit_code() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
        let success = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(success)).unwrap(), 0);
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("7".into()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(failed)).unwrap(), 7);
        let broken = Status {
            status: Some("Failure".into()),
            message: Some("executable file not found".into()),
            ..Status::default()
        };
        assert!(
            exit_code(Some(broken))
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        assert!(exit_code(None).is_err());
    }
}
