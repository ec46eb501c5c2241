//! A workspace's objects (claim, Secrets, ConfigMap, Service) and its Pods: the manifests, server-
//! side apply, and the watch that follows a Pod to running or to its end.

use super::*;

/// A tar archive of some files, checked against what one ConfigMap or Secret holds.
pub(super) fn seed_archive(files: &FileTree) -> Result<Vec<u8>, RuntimeError> {
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
pub(super) fn split_private(files: &FileTree) -> (FileTree, FileTree) {
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
pub(super) fn tier_resources(settings: &RuntimeConfig, tier: i32) -> serde_json::Value {
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
pub(super) enum Progress {
    Running,
    /// Scheduling, pulling, initialising; the text says what it last waited for.
    Waiting(String),
    ImageMissing,
    Failed(String),
}

pub(super) fn progress(pod: &Pod) -> Progress {
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
pub(super) fn inspection(pod: &Pod) -> Inspection {
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

impl KubernetesRuntime {
    /// Deletes a Pod and waits until it is gone (its containers stopped, its claim released).
    pub(super) async fn delete_pod(
        &self,
        name: &str,
        grace: Option<u32>,
    ) -> Result<(), RuntimeError> {
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
    pub(super) async fn watch_pod<T>(
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
    pub(super) async fn run_pod(
        &self,
        pod: &Pod,
        image: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
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
    pub(super) fn agent_pod(&self, spec: &StartSpec, image: &str) -> Result<Pod, RuntimeError> {
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

    pub(super) async fn create_claim(&self, id: Uuid) -> Result<(), RuntimeError> {
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

    pub(super) async fn apply_env(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
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

    pub(super) async fn apply_seed(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
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

    pub(super) async fn apply_service(&self, id: Uuid) -> Result<(), RuntimeError> {
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

    pub(super) async fn agent_pod_state(&self, id: Uuid) -> Result<Option<Pod>, RuntimeError> {
        self.pods()
            .get_opt(&pod_name(id))
            .await
            .map_err(|e| api_failed("reading the pod", e))
    }

    pub(super) async fn running(&self, id: Uuid) -> Result<bool, RuntimeError> {
        Ok(self
            .agent_pod_state(id)
            .await?
            .is_some_and(|p| inspection(&p).running))
    }
}
