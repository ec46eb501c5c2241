//! Commands in a Pod through the exec subresource (the operator's terminal among them), and the
//! short-lived helper Pods that reach a stopped agent's files.

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

impl FilesPod {
    /// The agent's container in its own Pod.
    pub(super) fn agent(id: Uuid) -> Self {
        FilesPod {
            pod: pod_name(id),
            container: AGENT_CONTAINER,
        }
    }
}

/// What every exec here attaches: stdout, through 64 KiB pipes, in `at`'s container; each caller
/// adds stdin, stderr or a TTY.
fn attach_params(at: &FilesPod) -> AttachParams {
    AttachParams::default()
        .container(at.container)
        .stdout(true)
        .max_stdin_buf_size(64 * 1024)
        .max_stdout_buf_size(64 * 1024)
}

impl KubernetesRuntime {
    /// Starts `argv` in `at`'s container through the Pod's exec subresource.
    async fn start_exec(
        &self,
        at: &FilesPod,
        argv: Vec<String>,
        params: &AttachParams,
    ) -> Result<AttachedProcess, RuntimeError> {
        self.pods()
            .exec(&at.pod, argv, params)
            .await
            .map_err(|e| api_failed("starting an exec", e))
    }

    /// Runs `argv` in a Pod's container, with `stdin` fed and closed when given; stdout is kept
    /// up to `cap` bytes.
    pub(super) async fn run(
        &self,
        at: &FilesPod,
        argv: &[String],
        stdin: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<Ran, RuntimeError> {
        let params = attach_params(at).stdin(stdin.is_some()).stderr(true);
        let mut process = self.start_exec(at, argv.to_vec(), &params).await?;
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
            return Ok((f(FilesPod::agent(id)).await?, WriteTarget::Running));
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

/// The command of a terminal exec: an exec cannot set environment variables, so a first shell
/// exports the session's marker (given as `$1`) and the terminal type, then becomes
/// [`TERMINAL_SHELL`].
fn terminal_command(marker: &str) -> Vec<String> {
    script(
        &format!("export TERM=xterm-256color \"$1\"; exec {TERMINAL_SHELL}"),
        &[marker.to_owned()],
    )
}

/// The control side of a terminal exec in the agent's Pod.
struct PodTerminal {
    runtime: KubernetesRuntime,
    id: Uuid,
    at: FilesPod,
    marker: String,
    /// kube's resize channel (channel 4 of the exec's connection).
    sizes: futures::channel::mpsc::Sender<TerminalSize>,
    /// The exec's connection, open while this is held: dropping it aborts kube's message loop.
    process: std::sync::Mutex<Option<AttachedProcess>>,
}

#[async_trait::async_trait]
impl TerminalControl for PodTerminal {
    async fn resize(&self, size: TermSize) -> Result<(), RuntimeError> {
        let size = TerminalSize {
            width: size.cols,
            height: size.rows,
        };
        // A clone has a slot of its own in the channel, so the send never waits on another.
        futures::SinkExt::send(&mut self.sizes.clone(), size)
            .await
            .map_err(|_| RuntimeError::Failed("resizing the terminal: the exec has ended".into()))
    }

    async fn close(&self) {
        // The connection first, so a kill that fails or hangs cannot keep it open; the output
        // then ends (see `terminal_output`).
        let process = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(process);
        let argv = script(KILL_MARKED, std::slice::from_ref(&self.marker));
        let Err(err) = self.runtime.run(&self.at, &argv, None, MAX_OUTPUT).await else {
            return;
        };
        // A Pod that is gone took the session's processes with it.
        if self.runtime.running(self.id).await.unwrap_or(true) {
            tracing::warn!(pod = %self.at.pod, error = %err, "ending a terminal session's processes");
        } else {
            tracing::debug!(pod = %self.at.pod, error = %err, "the terminal's Pod is gone");
        }
    }
}

/// What a terminal exec writes, as it writes it, until the exec ends. kube's message loop shuts
/// the pipe when the shell exits but, when the connection fails or is aborted, drops it unshut,
/// which its reader cannot see; the status channel (`ended`) ends in both cases, and from then on
/// what is already in the pipe is all there is.
fn terminal_output(
    reader: impl AsyncRead + Unpin + Send + 'static,
    ended: impl Future + Send + 'static,
) -> LogStream {
    let state = (reader, Some(Box::pin(ended)));
    futures::stream::unfold(state, |(mut reader, mut ended)| async move {
        let mut chunk = vec![0u8; 8 * 1024];
        let read = loop {
            let Some(pending) = ended.as_mut() else {
                break futures::FutureExt::now_or_never(reader.read(&mut chunk)).unwrap_or(Ok(0));
            };
            tokio::select! {
                biased;
                read = reader.read(&mut chunk) => break read,
                _ = pending => {}
            }
            ended = None;
        };
        match read {
            Ok(n) if n > 0 => {
                chunk.truncate(n);
                Some((Ok(chunk), (reader, ended)))
            }
            // The end, or a broken pipe: either way the shell is out of reach.
            _ => None,
        }
    })
    .boxed()
}

impl KubernetesRuntime {
    /// [`TERMINAL_SHELL`] on a TTY of `size` in the agent's container, its processes marked
    /// with `MOLECULE_TERMINAL=<session>`: keyboard on stdin, the terminal on stdout (a TTY has
    /// no separate stderr), resizes on the exec's resize channel.
    pub(super) async fn open_shell(
        &self,
        id: Uuid,
        session: Uuid,
        size: TermSize,
    ) -> Result<Terminal, RuntimeError> {
        let at = FilesPod::agent(id);
        let marker = format!("{TERMINAL_MARKER}={session}");
        let params = attach_params(&at).stdin(true).stderr(false).tty(true);
        let mut process = self
            .start_exec(&at, terminal_command(&marker), &params)
            .await?;
        let detached = || RuntimeError::Failed("the terminal's exec did not attach".into());
        let input = process.stdin().ok_or_else(detached)?;
        let output = process.stdout().ok_or_else(detached)?;
        let ended = process.take_status().ok_or_else(detached)?;
        let sizes = process.terminal_size().ok_or_else(detached)?;
        let control = PodTerminal {
            runtime: self.clone(),
            id,
            at,
            marker,
            sizes,
            process: std::sync::Mutex::new(Some(process)),
        };
        // Queued before any keystroke; the client's next resize corrects a size lost here.
        if let Err(err) = control.resize(size).await {
            tracing::debug!(workspace_id = %id, error = %err, "setting the terminal's first size");
        }
        Ok(Terminal {
            output: terminal_output(output, ended),
            input: Box::pin(input),
            control: Box::new(control),
        })
    }
}
