//! Provisioning: the agent's environment, files and token, then the runtime starts it; failures
//! are recorded with their reason. Workspace template lookup lives here, for org planning too.

use super::*;

/// Schedules the first provision of a freshly created workspace. `model` is the caller's model,
/// which wins over stored secrets.
/// `seed` is the file tree of the first start when the caller already built it (an org import);
/// otherwise the template is looked up when the agent starts.
pub fn schedule_provision(svc: &Services, id: Uuid, model: Option<String>, seed: Option<FileTree>) {
    if svc.lifecycle.runtime.is_none() {
        return;
    }
    let task_svc = svc.clone();
    svc.lifecycle.spawn(async move {
        provision(&task_svc, id, model, seed).await;
    });
}

/// Starts the agent of a workspace in `provisioning` (a first start). Failures end in `failed`
/// with a sanitised reason. Nothing is started when the workspace left `provisioning`
/// meanwhile, or when a restart cycle that ran first already started its agent: starting it again
/// would replace an agent that may have registered, under the health sweep's eyes.
pub(super) async fn provision(
    svc: &Services,
    id: Uuid,
    model: Option<String>,
    seed: Option<FileTree>,
) {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return;
    };
    let lock = svc.lifecycle.starting.get(id);
    let _starting = lock.lock().await;
    if runtime.inspect(id).await.is_ok_and(|agent| agent.running) {
        tracing::info!(workspace_id = %id, "provision skipped: a restart cycle already started the agent");
        return;
    }
    provision_locked(svc, id, model, seed, Start::First).await;
}

/// Which start [`provision_locked`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// The first (only while the workspace is `provisioning`).
    First,
    /// A restart cycle's, after it stopped the old agent: also when that agent registered while
    /// the cycle was stopping it, or was then seen gone (the workspace is marked `provisioning`
    /// again), since the new agent must start with what the cycle was for.
    Restart,
}

/// [`provision`] with the workspace's `starting` lock held by the caller.
pub(super) async fn provision_locked(
    svc: &Services,
    id: Uuid,
    model: Option<String>,
    seed: Option<FileTree>,
    start: Start,
) {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return;
    };
    let Ok(_slot) = svc.lifecycle.provision_slots.acquire().await else {
        return;
    };
    let row = match store::workspaces::get(&svc.db, id).await {
        Ok(Some(row)) if row.status == Status::Provisioning => row,
        Ok(Some(row))
            if start == Start::Restart
                && matches!(
                    row.status,
                    Status::Online | Status::Degraded | Status::Offline
                ) =>
        {
            match transition(
                svc,
                id,
                Some(row.status),
                Status::Provisioning,
                Cause::Restart,
                None,
            )
            .await
            {
                Ok(true) => row,
                Ok(false) => return,
                Err(err) => {
                    tracing::error!(workspace_id = %id, error = ?err, "marking a restart again");
                    return;
                }
            }
        }
        Ok(_) => return,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "loading a workspace to provision");
            return;
        }
    };
    let mut secret_values = Vec::new();
    let result = start_agent(svc, &runtime, &row, model, seed, &mut secret_values).await;
    match result {
        Ok(url) => {
            if let Err(err) = store::workspaces::set_url(&svc.db, id, Some(&url)).await {
                tracing::error!(workspace_id = %id, error = ?err, "storing the agent url");
            }
            svc.events.invalidate(Invalidation::Workspace(id));
            // Removed while starting: take the agent down again.
            if let Ok(Some(now)) = store::workspaces::get(&svc.db, id).await
                && now.status == Status::Removed
                && let Err(err) = runtime.remove(id).await
            {
                tracing::warn!(workspace_id = %id, error = %err, "removing an agent whose workspace was deleted while it started");
            }
            tracing::info!(workspace_id = %id, runtime = runtime.name(), "agent started; waiting for it to register");
        }
        Err(ProvisionError { message, extra }) => {
            let message = sanitize(&message, &secret_values);
            tracing::warn!(workspace_id = %id, error = %message, "provisioning failed");
            fail_provision(svc, id, &message, extra).await;
        }
    }
}

#[derive(Debug)]
pub(super) struct ProvisionError {
    message: String,
    extra: Value,
}

impl From<StoreError> for ProvisionError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = ?err, "database error while provisioning");
        ProvisionError {
            message: "internal error while provisioning".into(),
            extra: json!({}),
        }
    }
}

impl From<RuntimeError> for ProvisionError {
    fn from(err: RuntimeError) -> Self {
        ProvisionError {
            message: format!("workspace start failed: {err}"),
            extra: json!({}),
        }
    }
}

/// The provisioning steps: secrets → environment → token → files → start.
pub(super) async fn start_agent(
    svc: &Services,
    runtime: &Arc<dyn ContainerRuntime>,
    row: &WorkspaceRow,
    model: Option<String>,
    seed: Option<FileTree>,
    secret_values: &mut Vec<String>,
) -> Result<String, ProvisionError> {
    let id = row.id;
    let secrets = match crate::secrets::bundle(&svc.db, &svc.cipher, id).await? {
        crate::secrets::Bundle::Complete(values) => values,
        crate::secrets::Bundle::Refused { failed_keys } => {
            return Err(ProvisionError {
                message: format!(
                    "secrets cannot be decrypted ({}); re-enter them and restart",
                    failed_keys.join(", ")
                ),
                extra: json!({ "failed_keys": failed_keys }),
            });
        }
    };
    secret_values.extend(secrets.values().map(|v| v.expose_secret().to_owned()));

    let mut env = AgentEnv::default();
    for (key, value) in &secrets {
        env.set(key, value.expose_secret());
    }
    let model = model
        .filter(|m| !m.is_empty())
        .or_else(|| env.get("MODEL").map(str::to_owned))
        .or_else(|| env.get(crate::secrets::MODEL_KEY).map(str::to_owned));
    if let Some(model) = &model {
        env.set("MODEL", model);
    }
    let Some(platform) = svc.lifecycle.platform_url(PLATFORM_URL_PATIENCE).await else {
        return Err(ProvisionError {
            message:
                "the host does not know yet where its agents reach it; retry once it has started"
                    .into(),
            extra: json!({}),
        });
    };
    env.set("WORKSPACE_ID", id.to_string());
    env.set("WORKSPACE_CONFIG_PATH", crate::runtime::CONFIGS_ROOT);
    env.set("PLATFORM_URL", &platform);
    env.set("MOLECULE_URL", &platform);
    env.set("TIER", row.tier.to_string());
    env.set("MOLECULE_AGENT_ROLE", row.role.clone().unwrap_or_default());
    env.set(
        "HEARTBEAT_INTERVAL_SECS",
        svc.config.runtime.heartbeat_interval_secs.to_string(),
    );
    if let Some(announced) = runtime.network_urls(id).into_iter().next() {
        env.set("MOLECULE_AGENT_URL", announced);
    }

    let mut files = FileTree::new();
    let has_config = runtime
        .read_file(id, crate::runtime::CONFIGS_ROOT, &config_yaml())
        .await
        .is_ok();
    if !has_config {
        files = match seed {
            Some(seed) => seed,
            None => template_files(svc, row).await?,
        };
        if !files.contains("config.yaml") {
            files.insert(
                config_yaml(),
                generated_config(
                    &row.name,
                    row.role.as_deref(),
                    row.tier,
                    &row.runtime,
                    model.as_deref(),
                ),
                0o644,
            );
        }
    }

    store::tokens::revoke_rotated_workspace_tokens(&svc.db, id).await?;
    // The previous agent's token stops working on every replica now.
    svc.events.invalidate(Invalidation::Workspace(id));
    let token = crate::auth::issue_workspace_token(&svc.db, id, crate::auth::Lifetime::Rotated)
        .await?
        .ok_or_else(|| ProvisionError {
            message: "could not issue a workspace token".into(),
            extra: json!({}),
        })?;
    let token_value = token.plaintext.expose_secret().to_owned();
    secret_values.push(token_value.clone());
    files.insert(
        RelPath::parse(".auth_token").expect("static path"),
        token_value,
        0o600,
    );

    let mut spec = StartSpec {
        workspace_id: id,
        runtime: row.runtime.clone(),
        tier: row.tier,
        env,
        files,
        port: 0,
    };
    // The URL is stored before the agent starts, so nobody ever reads the address the agent
    // reports from inside its container (which the host cannot reach).
    let mut attempt = 0;
    loop {
        spec.port = crate::runtime::free_loopback_port()?;
        let url = format!("http://127.0.0.1:{}", spec.port);
        store::workspaces::set_url(&svc.db, id, Some(&url)).await?;
        svc.events.invalidate(Invalidation::Workspace(id));
        match runtime.start(&spec).await {
            Ok(started) => return Ok(started.url),
            Err(RuntimeError::Failed(message)) if attempt < 2 && is_port_taken(&message) => {
                attempt += 1;
                tracing::info!(workspace_id = %id, port = spec.port, "the agent's port was taken meanwhile; retrying with another");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

pub(super) fn is_port_taken(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("port is already allocated") || message.contains("address already in use")
}

pub(super) fn config_yaml() -> RelPath {
    RelPath::parse("config.yaml").expect("static path")
}

/// The files of the workspace's template: `<templates_dir>/<template>`, else
/// `<templates_dir>/<runtime>-default`, else none.
pub(super) async fn template_files(
    svc: &Services,
    row: &WorkspaceRow,
) -> Result<FileTree, ProvisionError> {
    let Some(templates) = svc.config.runtime.templates_dir.clone() else {
        return Ok(FileTree::new());
    };
    let config = store::workspace_config::get(&svc.db, row.id)
        .await?
        .unwrap_or_default();
    let named = config
        .get("template")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let runtime = row.runtime.clone();
    tokio::task::spawn_blocking(move || find_template(&templates, named.as_deref(), &runtime))
        .await
        .map_err(|e| ProvisionError {
            message: format!("reading the template failed: {e}"),
            extra: json!({}),
        })?
        .map(Option::unwrap_or_default)
        .map_err(|(name, e)| ProvisionError {
            message: format!("template {name} cannot be delivered: {e}"),
            extra: json!({ "template": name }),
        })
}

/// A workspace template's files: `<templates>/<named>`, else `<templates>/<runtime>-default`,
/// else `None`. A template is one directory name (no separators, no `..`, not hidden: the
/// catalogue's half-written imports are hidden). The templates directory is opened as a
/// [`safefs::RootDir`], so a template that is a symlink leaving it, or holds one, is refused
/// rather than followed. The error names the template that could not be read.
pub fn find_template(
    templates: &std::path::Path,
    named: Option<&str>,
    runtime: &str,
) -> Result<Option<FileTree>, (String, safefs::SafeFsError)> {
    let Ok(root) = safefs::RootDir::open(templates) else {
        return Ok(None);
    };
    let candidates = named
        .map(str::to_owned)
        .into_iter()
        .chain(std::iter::once(format!("{runtime}-default")));
    for name in candidates {
        let Ok(rel) = RelPath::parse(&name) else {
            continue;
        };
        if rel.as_str().contains('/') || rel.as_str().starts_with('.') {
            continue;
        }
        match root.open_dir(&rel) {
            Ok(dir) => return dir.collect_all().map(Some).map_err(|e| (name, e)),
            Err(safefs::SafeFsError::NotFound) => continue,
            Err(err) => return Err((name, err)),
        }
    }
    Ok(None)
}

/// A minimal `config.yaml` for a workspace without a template.
pub fn generated_config(
    name: &str,
    role: Option<&str>,
    tier: i32,
    runtime: &str,
    model: Option<&str>,
) -> String {
    #[derive(serde::Serialize)]
    struct Generated<'a> {
        name: &'a str,
        description: &'a str,
        role: &'a str,
        version: &'a str,
        tier: i32,
        runtime: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<&'a str>,
    }
    let role = role.unwrap_or_default();
    serde_yaml_ng::to_string(&Generated {
        name,
        description: role,
        role,
        version: "1.0.0",
        tier,
        runtime,
        model,
    })
    .unwrap_or_default()
}
