//! Commands in a Pod through the exec subresource, and the short-lived helper Pods that reach a
//! stopped agent's files.

use super::*;

/// The exit code an exec's final status carries: `Success` is 0; `NonZeroExitCode` names it in
/// a cause; anything else (the command could not start) is an error.
pub(super) fn exit_code(
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
pub(super) async fn read_capped(
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
pub(super) struct Ran {
    exit_code: i64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    pub(super) fn output(self) -> ExecOutput {
        ExecOutput {
            exit_code: self.exit_code,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }

    /// The stdout of a file script, with [`MISSING`] as `NotFound`.
    pub(super) fn file_output(self, program: &str) -> Result<Vec<u8>, RuntimeError> {
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
pub(super) struct FilesPod {
    pub(super) pod: String,
    pub(super) container: &'static str,
}

impl KubernetesRuntime {
    /// Runs `argv` in a Pod's container, with `stdin` fed and closed when given; stdout is kept
    /// up to `cap` bytes.
    pub(super) async fn run(
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
    pub(super) async fn with_files_pod<T, F, Fut>(
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

    pub(super) async fn start_helper(
        &self,
        id: Uuid,
        node: Option<String>,
    ) -> Result<String, RuntimeError> {
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
pub(super) fn script(code: &str, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        code.to_owned(),
        "sh".to_owned(),
    ];
    argv.extend(args.iter().cloned());
    argv
}
