//! The workspace lifecycle: provisioning agents through the runtime, restarts (coalesced, asked of
//! the restart policy), pause and resume, and the sweeps that keep the database honest about what
//! is running.
//!
//! The states and the steps between them:
//!
//! ```text
//! create ─► provisioning ─(agent registers)─► online ◄──────────────┐
//! provisioning ─(start error | timeout | bootstrap-failed)─► failed  │
//! online/degraded ─(agent gone | heartbeat lost)─► offline ─(policy: restart)─► provisioning
//! any live ─(pause, cascades)─► paused ─(resume)─► provisioning
//! ```
//!
//! Every step is idempotent: a stop of a stopped agent succeeds, a transition whose source status
//! no longer holds does nothing, and every change is logged as `old -> new`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::restart_context::{self, Restart, Session};
use super::{Status, WorkspaceError, get_live};
use crate::events::names;
use crate::extensions::types::{Decision, Trigger, WorkspaceInfo};
use crate::runtime::{AgentEnv, ContainerRuntime, RuntimeError, StartSpec};
use crate::safefs::{self, FileTree, RelPath};
use crate::services::Services;
use crate::store::activity::ActivityRow;
use crate::store::status::Cause;
use crate::store::{self, StoreError, workspaces::WorkspaceRow};

/// How far back restarts count towards a policy's `recent_restarts`.
const RESTART_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a restart cycle waits for the agent to come back before the next cycle may run.
const CYCLE_ONLINE_WAIT: Duration = Duration::from_secs(120);
/// How long a provision waits for the host to know the URL its agents reach it on (it is set as
/// soon as the listeners are, before anything provisions; this only bounds a host that never
/// serves).
const PLATFORM_URL_PATIENCE: Duration = Duration::from_secs(60);
/// The longest `last_sample_error` the host stores.
const MAX_SAMPLE_ERROR: usize = 500;

/// Holds the runtime and the lifecycle's own state: provision slots, restart coalescing, the
/// restart history policies see, and the tasks it spawned.
#[derive(Debug)]
pub struct Lifecycle {
    replica: Uuid,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    provision_slots: Semaphore,
    /// The ticket of each workspace's delayed restart still waiting on this replica; requests
    /// meanwhile join it. A restart that starts sooner cancels it (its timer then finds another
    /// ticket, or none). Running cycles are claimed in the database (`workspace_restarts`).
    scheduled: Mutex<HashMap<Uuid, u64>>,
    /// The URL agents reach the host on, once the host knows its listeners. Provisions wait for
    /// it: an agent told a guessed address never registers.
    platform_url: tokio::sync::watch::Sender<Option<String>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    cycles: AtomicU64,
    tickets: AtomicU64,
}

/// What a restart request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// A cycle started.
    Started,
    /// A cycle was running; one more will follow it.
    Coalesced,
    /// The policy answered; what it said, after clamping.
    Decided(Decision),
    /// The workspace is not restarted (removed, paused, external, no runtime...).
    Skipped(&'static str),
}

impl Lifecycle {
    /// `replica` names this host process in the restart claims it takes.
    pub fn new(
        runtime: Option<Arc<dyn ContainerRuntime>>,
        concurrency: usize,
        replica: Uuid,
    ) -> Self {
        Lifecycle {
            replica,
            runtime,
            provision_slots: Semaphore::new(concurrency.max(1)),
            scheduled: Mutex::new(HashMap::new()),
            platform_url: tokio::sync::watch::Sender::new(None),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            cycles: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
        }
    }

    pub fn runtime(&self) -> Option<&Arc<dyn ContainerRuntime>> {
        self.runtime.as_ref()
    }

    pub fn runtime_name(&self) -> &'static str {
        self.runtime.as_ref().map_or("none", |r| r.name())
    }

    /// Sets the URL agents are given to reach the host (once, when the host knows its listeners;
    /// later calls change nothing).
    pub fn set_platform_url(&self, url: String) {
        self.platform_url.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(url);
            true
        });
    }

    /// The URL agents reach the host on: waits until the host has set it, at most `patience`.
    /// Nothing that provisions may use a guessed address (the original fell back to
    /// `127.0.0.1:8080`, so agents provisioned at start on another port never registered).
    pub async fn platform_url(&self, patience: Duration) -> Option<String> {
        let mut known = self.platform_url.subscribe();
        match tokio::time::timeout(patience, known.wait_for(Option::is_some)).await {
            Ok(Ok(url)) => url.clone(),
            _ => None,
        }
    }

    /// Restart cycles run since the host started.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Stops every provision and restart task, waits for them, then lets the runtime clean up
    /// (the process runtime stops its children; containers keep running).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(runtime) = &self.runtime {
            runtime.shutdown().await;
        }
    }

    /// Runs `work` to its end in the background: a caller that goes away cannot cut it short,
    /// and host shutdown waits for it before the runtime stops (an org import, which
    /// provisions as it goes).
    pub fn run_to_end<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = fut => {}
            }
        });
    }

    /// A holder name for one claim on a workspace's restarts: this replica and a ticket, so two
    /// requests on the same replica are two claimants like requests on two replicas.
    fn claimant(&self) -> String {
        format!(
            "{}/{}",
            self.replica,
            self.tickets.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Drops this replica's claims on restart cycles (it is stopping, so its cycles stop too).
    pub async fn release_claims(&self, db: &store::Db) {
        match store::restarts::release_all(db, &format!("{}/", self.replica)).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "restart claims released on shutdown"),
            Err(err) => {
                tracing::warn!(error = ?err, "releasing restart claims failed; they expire")
            }
        }
    }

    /// Forgets a removed workspace's delayed restart.
    pub fn forget(&self, id: Uuid) {
        self.scheduled.lock().expect("restart lock").remove(&id);
    }
}

/// Moves `id` to `to` for `cause` (from any status the transition table allows for it, or only
/// from `from`), clearing the URL when the agent stops running and recording `sample_error`;
/// logs `old -> new` when it moved.
async fn transition(
    svc: &Services,
    id: Uuid,
    from: Option<Status>,
    to: Status,
    cause: Cause,
    sample_error: Option<&str>,
) -> Result<bool, StoreError> {
    // With several possible sources, read which one holds, for the `old -> new` log line.
    let old = match from {
        Some(from) => Some(from),
        None => store::workspaces::get(&svc.db, id)
            .await?
            .map(|row| row.status),
    };
    let clears_url = matches!(
        to,
        Status::Offline | Status::Paused | Status::Failed | Status::Provisioning
    );
    let moved = if clears_url {
        store::workspaces::transition_stopped(&svc.db, id, from, to, cause, sample_error).await?
    } else {
        store::workspaces::transition(&svc.db, id, from, to, cause).await?
    };
    if moved {
        let old = old.map_or("?", Status::as_str);
        tracing::info!(workspace_id = %id, ?cause, "workspace {old} -> {to}");
    }
    Ok(moved)
}

/// Keeps an error fit for the canvas: no control characters, no secret values, bounded length.
fn sanitize(message: &str, secrets: &[String]) -> String {
    let mut text: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text.chars().take(MAX_SAMPLE_ERROR).collect()
}

async fn record_activity(
    svc: &Services,
    id: Uuid,
    activity_type: &str,
    summary: String,
    body: Value,
) {
    let mut row = ActivityRow::new(id, activity_type);
    row.summary = Some(summary);
    row.request_body = Some(body);
    if let Err(err) = store::activity::insert(&svc.db, &row).await {
        tracing::warn!(workspace_id = %id, error = ?err, "recording lifecycle activity failed");
    }
}

/// Marks a provision failed (only from `provisioning`) and tells subscribers.
async fn fail_provision(svc: &Services, id: Uuid, error: &str, extra: Value) {
    match transition(
        svc,
        id,
        None,
        Status::Failed,
        Cause::ProvisionFailed,
        Some(error),
    )
    .await
    {
        Ok(true) => {
            let mut payload = json!({ "error": error });
            if let (Some(obj), Value::Object(more)) = (payload.as_object_mut(), extra) {
                obj.extend(more);
            }
            svc.events
                .emit(names::WORKSPACE_PROVISION_FAILED, Some(id), payload)
                .await;
        }
        Ok(false) => {}
        Err(err) => tracing::error!(workspace_id = %id, error = ?err, "marking a provision failed"),
    }
}

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

/// Starts the workspace's agent. Failures end in `failed` with a sanitised reason.
async fn provision(svc: &Services, id: Uuid, model: Option<String>, seed: Option<FileTree>) {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return;
    };
    let Ok(_slot) = svc.lifecycle.provision_slots.acquire().await else {
        return;
    };
    let row = match store::workspaces::get(&svc.db, id).await {
        Ok(Some(row)) if row.status == Status::Provisioning => row,
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
struct ProvisionError {
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
async fn start_agent(
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

fn is_port_taken(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("port is already allocated") || message.contains("address already in use")
}

fn config_yaml() -> RelPath {
    RelPath::parse("config.yaml").expect("static path")
}

/// The files of the workspace's template: `<templates_dir>/<template>`, else
/// `<templates_dir>/<runtime>-default`, else none.
async fn template_files(svc: &Services, row: &WorkspaceRow) -> Result<FileTree, ProvisionError> {
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
/// else `None`. A template is one directory name (no separators, no `..`). The error names the
/// template that could not be read.
pub fn find_template(
    templates: &std::path::Path,
    named: Option<&str>,
    runtime: &str,
) -> Result<Option<FileTree>, (String, safefs::SafeFsError)> {
    let candidates = named
        .map(str::to_owned)
        .into_iter()
        .chain(std::iter::once(format!("{runtime}-default")));
    for name in candidates {
        let Ok(rel) = RelPath::parse(&name) else {
            continue;
        };
        if rel.as_str().contains('/') {
            continue;
        }
        let dir = templates.join(rel.as_str());
        if !dir.is_dir() {
            continue;
        }
        return safefs::collect_template(&dir)
            .map(Some)
            .map_err(|e| (name, e));
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

/// Why a workspace is not restarted, if it is not.
async fn restart_blocker(
    svc: &Services,
    row: &WorkspaceRow,
) -> Result<Option<&'static str>, StoreError> {
    if svc.lifecycle.runtime.is_none() {
        return Ok(Some("no runtime"));
    }
    if row.runtime == "external" {
        return Ok(Some("external workspace"));
    }
    match Some(row.status) {
        Some(Status::Removed) => return Ok(Some("removed")),
        Some(Status::Paused) => return Ok(Some("paused")),
        Some(Status::Hibernated | Status::Hibernating) => return Ok(Some("hibernated")),
        _ => {}
    }
    if paused_ancestor(svc, row.id).await?.is_some() {
        return Ok(Some("an ancestor is paused"));
    }
    Ok(None)
}

/// The name of the nearest paused ancestor, if any.
async fn paused_ancestor(svc: &Services, id: Uuid) -> Result<Option<String>, StoreError> {
    let chain = store::workspaces::ancestry(&svc.db, id, 64).await?;
    for (ancestor, _) in chain.into_iter().filter(|(a, _)| *a != id) {
        if let Some(row) = store::workspaces::get(&svc.db, ancestor).await?
            && row.status == Status::Paused
        {
            return Ok(Some(row.name));
        }
    }
    Ok(None)
}

/// An automatic restart: the active restart policy decides (clamped by the host, falling back to
/// the built-in default); its decision is recorded in the activity log and then carried out.
pub async fn request_restart(
    svc: &Services,
    id: Uuid,
    trigger: Trigger,
) -> Result<RestartOutcome, StoreError> {
    let Some(row) = store::workspaces::get(&svc.db, id).await? else {
        return Ok(RestartOutcome::Skipped("not found"));
    };
    if let Some(reason) = restart_blocker(svc, &row).await? {
        return Ok(RestartOutcome::Skipped(reason));
    }
    let info = WorkspaceInfo {
        id: id.to_string(),
        name: row.name.clone(),
        runtime: row.runtime.clone(),
        tier: u8::try_from(row.tier).unwrap_or(2),
        status: row.status.to_string(),
        update_tier: row.update_tier.clone(),
        recent_restarts: recent_restarts(svc, id).await,
    };
    let decision = svc.extensions.decide(info, trigger.clone()).await;
    record_activity(
        svc,
        id,
        "restart_decision",
        format!("restart policy: {}", decision_label(&decision)),
        json!({ "trigger": trigger, "decision": decision }),
    )
    .await;
    tracing::info!(workspace_id = %id, decision = decision_label(&decision), "restart policy decided");
    match decision {
        Decision::KeepRunning | Decision::HotReload => {}
        Decision::RestartNow => {
            restart_now(svc, id).await;
        }
        Decision::RestartAfterMs(ms) => {
            restart_after(svc, id, Duration::from_millis(u64::from(ms))).await;
        }
    }
    Ok(RestartOutcome::Decided(decision))
}

fn decision_label(decision: &Decision) -> String {
    match decision {
        Decision::KeepRunning => "keep_running".into(),
        Decision::HotReload => "hot_reload".into(),
        Decision::RestartNow => "restart_now".into(),
        Decision::RestartAfterMs(ms) => format!("restart_after_ms({ms})"),
    }
}

/// Restarts a workspace has had within [`RESTART_WINDOW`], on any replica (from the activity
/// log, which every cycle writes to).
async fn recent_restarts(svc: &Services, id: Uuid) -> u32 {
    let since = Utc::now() - RESTART_WINDOW;
    match store::activity::count_since(&svc.db, id, "restart", since).await {
        Ok(count) => u32::try_from(count).unwrap_or(u32::MAX),
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "counting recent restarts failed");
            0
        }
    }
}

/// How long a claim on a workspace's restart cycles holds without being renewed: four times the
/// renewal period of a running cycle, so only a holder that died loses it.
fn claim_lease() -> chrono::Duration {
    chrono::Duration::from_std(CYCLE_ONLINE_WAIT * 2).unwrap_or(chrono::Duration::MAX)
}

/// Requests a restart cycle now. While a cycle runs — on this replica or any other on the same
/// database — further requests only mark one more cycle due, so any number of requests collapse
/// into at most two cycles and the last change is always picked up. A delayed restart still
/// waiting here is replaced by this one.
pub async fn restart_now(svc: &Services, id: Uuid) -> RestartOutcome {
    svc.lifecycle
        .scheduled
        .lock()
        .expect("restart lock")
        .remove(&id);
    let holder = svc.lifecycle.claimant();
    let now = Utc::now();
    match store::restarts::claim(&svc.db, id, &holder, now, now + claim_lease()).await {
        Ok(store::restarts::Claim::Won) => {
            spawn_cycles(svc, id, holder);
            RestartOutcome::Started
        }
        Ok(store::restarts::Claim::Joined) => RestartOutcome::Coalesced,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "claiming a restart failed");
            RestartOutcome::Skipped("the restart could not be recorded")
        }
    }
}

/// Requests a restart after `delay` (the policy's or the clamp's back-off). A cycle already
/// running (anywhere) or scheduled here absorbs it: that cycle starts from the files as they are
/// then.
async fn restart_after(svc: &Services, id: Uuid, delay: Duration) {
    match store::restarts::join_running(&svc.db, id, Utc::now()).await {
        Ok(true) => return,
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "checking for a running restart failed")
        }
    }
    let ticket = {
        let mut scheduled = svc.lifecycle.scheduled.lock().expect("restart lock");
        if scheduled.contains_key(&id) {
            return;
        }
        let ticket = svc.lifecycle.tickets.fetch_add(1, Ordering::Relaxed);
        scheduled.insert(id, ticket);
        ticket
    };
    let task_svc = svc.clone();
    svc.lifecycle.spawn(async move {
        tokio::time::sleep(delay).await;
        let due = {
            let mut scheduled = task_svc.lifecycle.scheduled.lock().expect("restart lock");
            // Otherwise superseded by a restart that started sooner.
            scheduled.get(&id) == Some(&ticket) && scheduled.remove(&id).is_some()
        };
        if due {
            restart_now(&task_svc, id).await;
        }
    });
}

/// Runs cycles while this claim holds and one more is due, then releases it.
fn spawn_cycles(svc: &Services, id: Uuid, holder: String) {
    let task_svc = svc.clone();
    svc.lifecycle.spawn(async move {
        let mut back = None;
        loop {
            back = renewing(&task_svc, id, &holder, restart_cycle(&task_svc, id))
                .await
                .or(back);
            let lease_until = Utc::now() + claim_lease();
            match store::restarts::next_cycle(&task_svc.db, id, &holder, lease_until).await {
                Ok(true) => continue,
                Ok(false) => {
                    // Told once the last cycle is done (an agent about to be stopped again
                    // would not keep it), and outside the claim: the answer may take a whole
                    // turn of the agent's model, and a new restart must not wait for it.
                    if let Some(restart) = back
                        && task_svc.config.runtime.restart_context
                    {
                        restart_context::send(&task_svc, id, restart).await;
                    }
                    break;
                }
                Err(err) => {
                    tracing::error!(workspace_id = %id, error = ?err, "releasing a restart claim failed; it expires");
                    break;
                }
            }
        }
    });
}

/// Runs `cycle` while renewing `holder`'s claim every half [`CYCLE_ONLINE_WAIT`], so a cycle
/// held up (a provisioning backlog, a slow stop) keeps its claim and no other replica starts a
/// concurrent one. A claim lost anyway is logged; the cycle under way still finishes, and
/// [`store::restarts::next_cycle`] then ends this holder's cycles.
async fn renewing<T>(svc: &Services, id: Uuid, holder: &str, cycle: impl Future<Output = T>) -> T {
    let every = CYCLE_ONLINE_WAIT / 2;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(cycle);
    loop {
        tokio::select! {
            done = &mut cycle => return done,
            _ = renew.tick() => {
                let lease_until = Utc::now() + claim_lease();
                match store::restarts::renew(&svc.db, id, holder, lease_until).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(workspace_id = %id, "a restart claim was lost during a cycle"),
                    Err(err) => tracing::warn!(workspace_id = %id, error = ?err, "renewing a restart claim failed"),
                }
            }
        }
    }
}

/// One restart: stop the agent, `provisioning`, start it again from its existing files, and wait
/// (bounded) for it to register, so requests arriving meanwhile coalesce. What the agent is told
/// about it, when it came back online.
async fn restart_cycle(svc: &Services, id: Uuid) -> Option<Restart> {
    let runtime = svc.lifecycle.runtime.clone()?;
    let row = match store::workspaces::get(&svc.db, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "loading a workspace to restart");
            return None;
        }
    };
    match restart_blocker(svc, &row).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            tracing::info!(workspace_id = %id, reason, "restart skipped");
            return None;
        }
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "checking a restart");
            return None;
        }
    }
    svc.lifecycle.cycles.fetch_add(1, Ordering::Relaxed);
    let cycle = recent_restarts(svc, id).await + 1;
    // Marked before the agent stops, so the health sweep never mistakes the stop for a crash.
    match transition(svc, id, None, Status::Provisioning, Cause::Restart, None).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(workspace_id = %id, "restart skipped: the workspace changed meanwhile");
            return None;
        }
        Err(err) => {
            tracing::error!(workspace_id = %id, error = ?err, "marking a restart");
            return None;
        }
    }
    // The agent hears first, so it can wind down what it is doing before the stop.
    crate::agents::client::signal_restart_pending(svc, &row).await;
    if let Err(err) = runtime.stop(id).await {
        tracing::warn!(workspace_id = %id, error = %err, "stopping the agent before a restart failed");
    }
    let restart = Restart {
        at: Utc::now(),
        previous: Session::of(&row),
    };
    record_activity(
        svc,
        id,
        "restart",
        format!("workspace restarted ({})", runtime.name()),
        json!({ "runtime": runtime.name(), "recent_restarts": cycle }),
    )
    .await;
    svc.events
        .emit(
            names::WORKSPACE_PROVISIONING,
            Some(id),
            json!({ "name": row.name, "tier": row.tier, "runtime": row.runtime, "restart": true }),
        )
        .await;
    provision(svc, id, None, None).await;
    let deadline = Instant::now() + CYCLE_ONLINE_WAIT;
    let mut back = false;
    while Instant::now() < deadline {
        match store::workspaces::get(&svc.db, id).await {
            Ok(Some(now)) if now.status != Status::Provisioning => {
                back = matches!(Some(now.status), Some(Status::Online | Status::Degraded));
                break;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    back.then_some(restart)
}

/// `POST /workspaces/:id/restart`: a manual restart (no policy), refused under a paused
/// ancestor.
pub async fn manual_restart(svc: &Services, id: Uuid) -> Result<RestartOutcome, LifecycleError> {
    let row = get_live(svc, id).await?;
    if let Some(name) = paused_ancestor(svc, id).await? {
        return Err(LifecycleError::AncestorPaused(name));
    }
    if row.runtime == "external" {
        return Ok(RestartOutcome::Skipped("external workspace"));
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    if row.status == Status::Paused {
        return Err(LifecycleError::Conflict(
            "workspace is paused — resume it instead",
        ));
    }
    Ok(restart_now(svc, id).await)
}

/// Errors of lifecycle operations the HTTP layer maps.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("parent workspace {0:?} is paused — resume it first")]
    AncestorPaused(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("provisioner not available")]
    NoRuntime,
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

impl From<StoreError> for LifecycleError {
    fn from(err: StoreError) -> Self {
        LifecycleError::Workspace(WorkspaceError::Store(err))
    }
}

/// Pauses a workspace and every live descendant not already paused: agents stopped, status
/// `paused`. Returns how many were paused.
pub async fn pause(svc: &Services, id: Uuid) -> Result<usize, LifecycleError> {
    let row = get_live(svc, id).await?;
    if row.status == Status::Paused {
        // The original answered 404 "workspace not found" here, which sent operators looking
        // for a workspace that was right there.
        return Err(LifecycleError::Conflict("workspace is already paused"));
    }
    let subtree = store::workspaces::subtree(&svc.db, id).await?;
    let mut paused = 0;
    for member in subtree.iter().rev() {
        let Some(member_row) = store::workspaces::get(&svc.db, *member).await? else {
            continue;
        };
        let Some(status) = Some(member_row.status) else {
            continue;
        };
        if matches!(status, Status::Removed | Status::Paused) {
            continue;
        }
        // Marked before the agent stops, so the health sweep never mistakes the stop for a crash.
        if transition(
            svc,
            *member,
            Some(status),
            Status::Paused,
            Cause::Pause,
            None,
        )
        .await?
        {
            if let Some(runtime) = &svc.lifecycle.runtime
                && let Err(err) = runtime.stop(*member).await
            {
                tracing::warn!(workspace_id = %member, error = %err, "stopping a paused agent failed");
            }
            paused += 1;
            svc.events
                .emit(
                    names::WORKSPACE_PAUSED,
                    Some(*member),
                    json!({ "name": member_row.name }),
                )
                .await;
        }
    }
    Ok(paused)
}

/// Resumes a paused workspace and its paused descendants: each goes back to `provisioning` and
/// starts from its existing files. Refused while an ancestor is paused.
pub async fn resume(svc: &Services, id: Uuid) -> Result<usize, LifecycleError> {
    let row = get_live(svc, id).await?;
    if row.status != Status::Paused {
        return Err(LifecycleError::Conflict("workspace is not paused"));
    }
    if let Some(name) = paused_ancestor(svc, id).await? {
        return Err(LifecycleError::AncestorPaused(name));
    }
    if svc.lifecycle.runtime.is_none() {
        return Err(LifecycleError::NoRuntime);
    }
    let subtree = store::workspaces::subtree(&svc.db, id).await?;
    let mut resumed = 0;
    for member in subtree {
        let Some(member_row) = store::workspaces::get(&svc.db, member).await? else {
            continue;
        };
        if transition(svc, member, None, Status::Provisioning, Cause::Resume, None).await? {
            resumed += 1;
            svc.events
                .emit(
                    names::WORKSPACE_PROVISIONING,
                    Some(member),
                    json!({ "name": member_row.name, "tier": member_row.tier, "runtime": member_row.runtime }),
                )
                .await;
            schedule_provision(svc, member, None, None);
        }
    }
    Ok(resumed)
}

/// `POST /admin/workspaces/:id/bootstrap-failed`: the agent (or its supervisor) reports that it
/// cannot boot. True when the workspace moved from `provisioning` to `failed`.
pub async fn bootstrap_failed(
    svc: &Services,
    id: Uuid,
    error: &str,
    log_tail: Option<&str>,
) -> Result<bool, LifecycleError> {
    get_live(svc, id).await?;
    let message = sanitize(error, &[]);
    let moved = transition(
        svc,
        id,
        None,
        Status::Failed,
        Cause::ProvisionFailed,
        Some(&message),
    )
    .await?;
    if moved {
        let tail: Option<String> = log_tail.map(|t| {
            let clean = sanitize(t, &[]);
            clean
                .chars()
                .rev()
                .take(MAX_SAMPLE_ERROR)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        });
        svc.events
            .emit(
                names::WORKSPACE_PROVISION_FAILED,
                Some(id),
                json!({ "error": message, "log_tail": tail, "source": "bootstrap_failed" }),
            )
            .await;
    }
    Ok(moved)
}

/// Stops and removes the agents of workspaces that were just removed (leaves first). Returns the
/// ids whose removal failed; retrying is safe.
pub async fn remove_agents(svc: &Services, ids: &[Uuid]) -> Vec<Uuid> {
    let Some(runtime) = &svc.lifecycle.runtime else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for id in ids.iter().rev() {
        svc.lifecycle.forget(*id);
        if let Err(err) = runtime.remove(*id).await {
            tracing::warn!(workspace_id = %id, error = %err, "removing the agent of a removed workspace failed");
            failures.push(*id);
        }
    }
    failures
}

/// Provision-timeout sweep: workspaces stuck in `provisioning` fail.
pub async fn sweep_provision_timeouts(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let timeout = svc.config.runtime.provision_timeout_secs;
    let cutoff =
        Utc::now() - chrono::Duration::seconds(i64::try_from(timeout).unwrap_or(i64::MAX / 1000));
    let stuck = store::workspaces::in_status_since(&svc.db, Status::Provisioning, cutoff).await?;
    let mut failed = Vec::new();
    for (id, runtime) in stuck {
        let message = format!(
            "provisioning timed out — the agent started but never called /registry/register within {timeout} s"
        );
        fail_provision(
            svc,
            id,
            &message,
            json!({ "timeout_secs": timeout, "runtime": runtime, "source": "provision_timeout_sweep" }),
        )
        .await;
        failed.push(id);
    }
    Ok(failed)
}

/// Health sweep: a running workspace whose container or process is gone goes offline, and the
/// restart policy is asked what to do about the exit.
pub async fn sweep_health(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return Ok(Vec::new());
    };
    let mut gone = Vec::new();
    for id in store::workspaces::running_ids(&svc.db).await? {
        if let AgentCheck::Exited { went_offline: true } =
            check_agent(svc, runtime.as_ref(), id).await?
        {
            gone.push(id);
        }
    }
    Ok(gone)
}

pub use crate::agents::AgentCheck;

/// Asks the runtime whether the agent of `id` still runs. When it stopped, an online or degraded
/// workspace goes offline (`WORKSPACE_OFFLINE`) and the restart policy decides what follows.
pub async fn check_agent(
    svc: &Services,
    runtime: &dyn ContainerRuntime,
    id: Uuid,
) -> Result<AgentCheck, StoreError> {
    let inspection = match runtime.inspect(id).await {
        Ok(inspection) => inspection,
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = %err, "agent check skipped: runtime error");
            return Ok(AgentCheck::Unknown);
        }
    };
    if inspection.running {
        return Ok(AgentCheck::Running);
    }
    let code = inspection.exit_code.unwrap_or(-1);
    let moved = transition(
        svc,
        id,
        None,
        Status::Offline,
        Cause::AgentExited,
        Some(&format!("agent exited with code {code}")),
    )
    .await?;
    if moved {
        svc.events
            .emit(
                names::WORKSPACE_OFFLINE,
                Some(id),
                json!({ "exit_code": code }),
            )
            .await;
        let code = i32::try_from(code).unwrap_or(-1);
        request_restart(svc, id, Trigger::AgentExited { code }).await?;
    }
    Ok(AgentCheck::Exited {
        went_offline: moved,
    })
}

/// Orphan sweep: agents (containers, volumes, directories) whose workspace is removed or unknown
/// to this database are removed.
pub async fn sweep_orphans(svc: &Services) -> Result<Vec<Uuid>, StoreError> {
    let Some(runtime) = svc.lifecycle.runtime.clone() else {
        return Ok(Vec::new());
    };
    let managed = match runtime.managed().await {
        Ok(ids) => ids,
        Err(err) => {
            tracing::warn!(error = %err, "orphan sweep skipped: runtime error");
            return Ok(Vec::new());
        }
    };
    let mut removed = Vec::new();
    for id in managed {
        let orphan = match store::workspaces::get(&svc.db, id).await? {
            None => true,
            Some(row) => row.status == Status::Removed,
        };
        if !orphan {
            continue;
        }
        match runtime.remove(id).await {
            Ok(()) => {
                tracing::info!(workspace_id = %id, "orphaned agent removed");
                svc.lifecycle.forget(id);
                removed.push(id);
            }
            Err(err) => {
                tracing::warn!(workspace_id = %id, error = %err, "removing an orphaned agent failed")
            }
        }
    }
    Ok(removed)
}

/// A secret (or the model) of a workspace changed: the change is announced and the restart
/// policy decides what the workspace does about it (`None` when that could not be asked).
pub async fn secrets_changed(
    svc: &Services,
    id: Uuid,
    reason: &str,
    key: &str,
) -> Option<RestartOutcome> {
    svc.events
        .emit(
            names::WORKSPACE_RESTART_REQUESTED,
            Some(id),
            json!({ "reason": reason, "key": key }),
        )
        .await;
    let trigger = Trigger::SecretsChanged {
        keys: vec![key.to_owned()],
    };
    match request_restart(svc, id, trigger).await {
        Ok(outcome) => Some(outcome),
        Err(err) => {
            tracing::warn!(workspace_id = %id, error = ?err, "restart after a secret change failed");
            None
        }
    }
}

/// A global secret changed: every live workspace that inherits `key` (no own override of it)
/// hears of it through [`secrets_changed`], so the policy decides about each.
pub async fn global_secret_changed(
    svc: &Services,
    reason: &str,
    key: &str,
) -> Result<(), StoreError> {
    for workspace in store::secrets::workspaces_inheriting_global(&svc.db, key).await? {
        secrets_changed(svc, workspace, reason, key).await;
    }
    Ok(())
}

/// After the liveness sweep marked silent workspaces offline, the policy decides about each.
pub async fn after_heartbeat_loss(svc: &Services, ids: &[Uuid]) {
    for id in ids {
        if let Err(err) = request_restart(svc, *id, Trigger::AgentExited { code: -1 }).await {
            tracing::warn!(workspace_id = %id, error = ?err, "restart after heartbeat loss failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_errors_lose_secrets_control_characters_and_length() {
        let clean = sanitize(
            "start failed: token abcd1234 bad\nnext",
            &["abcd1234".into(), "ab".into()],
        );
        assert_eq!(clean, "start failed: token [redacted] bad next");
        assert_eq!(sanitize(&"x".repeat(2000), &[]).len(), MAX_SAMPLE_ERROR);
    }
}
