//! Keeping tracked plugins current: the drift sweep asks each tracked plugin's resolver for the
//! upstream revision and queues an update when it moved; an update is applied through the same
//! install pipeline (at the latest revision), dismissed, or rolled out to canary workspaces
//! before production ones. Also the sweep of stale swap directories.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use super::{InstallRequest, Installed, PluginError, Track, deliver, install, install_lock};
use crate::extensions::types::Source;
use crate::runtime::CONFIGS_ROOT;
use crate::safefs::RelPath;
use crate::services::Services;
use crate::store::{self, StoreError};
use crate::workspaces::Status;

/// The source drift detection resolves: the recorded source with the tracked ref as its
/// reference (`tag:v1` → `#v1`, `sha:abc` → `#abc`). Local sources have no refs; their revision
/// is their content digest.
fn tracked_source(source_raw: &str, tracked_ref: &str) -> Option<Source> {
    let mut source = Source::parse(source_raw)?;
    if source.scheme != "local" {
        source.reference = match Track::parse(Some(tracked_ref))? {
            Track::None => return None,
            Track::Tag(value) | Track::Sha(value) => Some(value),
        };
    }
    Some(source)
}

/// The event every finished drift pass records (on the replica that ran it, so any replica can
/// say when drift was last checked): `{trigger, started_at, checked, queued, failed,
/// interval_secs}`.
pub const DRIFT_SWEPT: &str = "PLUGIN_DRIFT_SWEPT";

/// What started a drift pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepTrigger {
    /// The sweeper, every `plugins.drift_interval_secs`.
    Scheduled,
    /// `POST /admin/plugin-updates/check`.
    Manual,
}

impl SweepTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepTrigger::Scheduled => "scheduled",
            SweepTrigger::Manual => "manual",
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Tracked plugins whose upstream was asked.
    pub checked: usize,
    /// Updates queued.
    pub queued: usize,
    /// Tracked plugins whose upstream could not be asked (retried next pass).
    pub failed: usize,
}

/// One pass: queues an update for every tracked plugin whose upstream moved. Returns how many
/// rows were queued (an update already pending for the plugin is not queued twice).
pub async fn sweep(svc: &Services) -> Result<usize, StoreError> {
    Ok(sweep_counted(svc).await?.queued)
}

/// A pass that records [`DRIFT_SWEPT`] when it finishes.
pub async fn sweep_recorded(svc: &Services, trigger: SweepTrigger) -> Result<Swept, StoreError> {
    let started_at = Utc::now();
    let swept = sweep_counted(svc).await?;
    svc.events
        .emit(
            DRIFT_SWEPT,
            None,
            serde_json::json!({
                "trigger": trigger.as_str(),
                "started_at": started_at,
                "checked": swept.checked,
                "queued": swept.queued,
                "failed": swept.failed,
                "interval_secs": svc.config.plugins.drift_interval_secs,
            }),
        )
        .await;
    Ok(swept)
}

async fn sweep_counted(svc: &Services) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    for row in store::plugins::tracked(&svc.db).await? {
        let Some(source) = tracked_source(&row.source_raw, &row.tracked_ref) else {
            continue;
        };
        let scheme = source.scheme.clone();
        swept.checked += 1;
        let latest = match svc.extensions.resolve_revision(&scheme, source).await {
            Ok(latest) => latest,
            Err(err) => {
                swept.failed += 1;
                tracing::warn!(workspace_id = %row.workspace_id, plugin = %row.plugin_name, error = %err, "drift check failed; retrying next sweep");
                continue;
            }
        };
        if row.installed_sha.as_deref() == Some(latest.as_str()) {
            continue;
        }
        if store::plugins::queue_update(
            &svc.db,
            row.workspace_id,
            &row.plugin_name,
            &row.tracked_ref,
            row.installed_sha.as_deref(),
            &latest,
        )
        .await?
        {
            swept.queued += 1;
            tracing::info!(workspace_id = %row.workspace_id, plugin = %row.plugin_name, latest, "plugin drift queued");
        }
    }
    Ok(swept)
}

/// When drift was last checked and when the sweeper checks next.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepTimes {
    /// `plugins.drift_interval_secs`.
    pub interval_secs: u64,
    /// When the last finished pass (scheduled or manual) started; `null` before the first.
    pub last_run_at: Option<DateTime<Utc>>,
    /// `scheduled` or `manual`.
    pub last_trigger: Option<String>,
    /// What the last pass did.
    pub last_checked: Option<u64>,
    pub last_queued: Option<u64>,
    pub last_failed: Option<u64>,
    /// The last scheduled pass's start plus the interval: when the sweeper (on whichever
    /// replica holds its lease) runs next. `null` before the first scheduled pass; a time in
    /// the past means the pass is due.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// How many recent passes are read to find the last scheduled one behind manual ones.
const SWEEPS_READ: i64 = 50;

/// [`SweepTimes`] from the recorded [`DRIFT_SWEPT`] events.
pub async fn sweep_times(svc: &Services) -> Result<SweepTimes, StoreError> {
    let interval_secs = svc.config.plugins.drift_interval_secs;
    let events = store::events::latest_of_type(&svc.db, DRIFT_SWEPT, SWEEPS_READ).await?;
    let started = |event: &store::events::EventRow| {
        event
            .payload
            .as_ref()
            .and_then(|p| p.get("started_at"))
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
            .unwrap_or(event.created_at)
    };
    let field = |event: &store::events::EventRow, name: &str| {
        event
            .payload
            .as_ref()
            .and_then(|p| p.get(name))
            .and_then(serde_json::Value::as_u64)
    };
    let last = events.first();
    let scheduled = events.iter().find(|e| {
        e.payload
            .as_ref()
            .and_then(|p| p.get("trigger"))
            .and_then(serde_json::Value::as_str)
            == Some(SweepTrigger::Scheduled.as_str())
    });
    let interval =
        chrono::Duration::seconds(i64::try_from(interval_secs).unwrap_or(i64::MAX / 1000));
    Ok(SweepTimes {
        interval_secs,
        last_run_at: last.map(started),
        last_trigger: last.and_then(|e| {
            e.payload
                .as_ref()
                .and_then(|p| p.get("trigger"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        }),
        last_checked: last.and_then(|e| field(e, "checked")),
        last_queued: last.and_then(|e| field(e, "queued")),
        last_failed: last.and_then(|e| field(e, "failed")),
        next_run_at: scheduled.and_then(|e| started(e).checked_add_signed(interval)),
    })
}

/// What applying an update did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub status: &'static str,
    pub queue_id: Uuid,
    pub workspace_id: Uuid,
    pub plugin_name: String,
    pub installed_sha: Option<String>,
    pub restarting: Option<bool>,
}

/// Why an update could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("update not found")]
    NotFound,
    #[error("the update was dismissed")]
    Dismissed,
    #[error("the update was already applied")]
    AlreadyApplied,
    #[error("the plugin is no longer installed (it may have been uninstalled)")]
    Uninstalled,
    #[error("plugin install failed: {0}")]
    Install(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Installs the queued revision through the install pipeline and marks the row applied.
/// Applying an applied row again is a no-op.
pub async fn apply(
    svc: &Services,
    queue_id: Uuid,
    already_updated: u32,
) -> Result<Applied, ApplyError> {
    let row = store::plugins::get_update(&svc.db, queue_id)
        .await?
        .ok_or(ApplyError::NotFound)?;
    let applied = |status, installed: Option<&Installed>| Applied {
        status,
        queue_id,
        workspace_id: row.workspace_id,
        plugin_name: row.plugin_name.clone(),
        installed_sha: installed.map(|i| i.installed_sha.clone()),
        restarting: installed.map(|i| i.restarting),
    };
    match row.status.as_str() {
        "applied" => return Ok(applied("already_applied", None)),
        "dismissed" => return Err(ApplyError::Dismissed),
        _ => {}
    }
    let tracking = store::plugins::get(&svc.db, row.workspace_id, &row.plugin_name)
        .await?
        .ok_or(ApplyError::Uninstalled)?;
    let mut source = Source::parse(&tracking.source_raw).ok_or(PluginError::InvalidSource)?;
    // The latest revision, not the ref the plugin was first installed at.
    if source.scheme != "local" {
        source.reference = Some(row.latest_sha.clone());
    }
    let installed = install(
        svc,
        row.workspace_id,
        InstallRequest {
            source_raw: tracking.source_raw.clone(),
            source,
            sha256: None,
            track: Track::parse(Some(&tracking.tracked_ref)).unwrap_or(Track::None),
            drift: Some(already_updated),
        },
    )
    .await?;
    store::plugins::settle_update(&svc.db, queue_id, "applied").await?;
    Ok(applied("applied", Some(&installed)))
}

/// Dismisses a pending update; dismissing a dismissed one again is a no-op.
pub async fn dismiss(svc: &Services, queue_id: Uuid) -> Result<&'static str, ApplyError> {
    let row = store::plugins::get_update(&svc.db, queue_id)
        .await?
        .ok_or(ApplyError::NotFound)?;
    match row.status.as_str() {
        "dismissed" => Ok("already_dismissed"),
        "applied" => Err(ApplyError::AlreadyApplied),
        _ => {
            store::plugins::settle_update(&svc.db, queue_id, "dismissed").await?;
            Ok("dismissed")
        }
    }
}

/// The result of a rollout.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Updates applied, in order (canary workspaces first).
    pub applied: Vec<Applied>,
    /// The update that failed, if any, and why.
    pub failed: Option<RolloutFailure>,
    /// Whether production workspaces were left alone because a canary failed.
    pub stopped: bool,
}

#[derive(Debug, Clone)]
pub struct RolloutFailure {
    pub queue_id: Uuid,
    pub workspace_id: Uuid,
    pub plugin_name: String,
    pub update_tier: String,
    pub error: String,
}

/// Applies every pending update, canary workspaces first: each must come back online with a
/// fresh heartbeat before the next starts; a canary failure stops the rollout before any
/// production workspace is touched. A production failure is reported and the rest continue.
pub async fn apply_all(svc: &Services) -> Result<Rollout, StoreError> {
    let mut canary = Vec::new();
    let mut production = Vec::new();
    for row in store::plugins::pending_updates(&svc.db)
        .await?
        .into_iter()
        .rev()
    {
        let tier = store::workspaces::get(&svc.db, row.workspace_id)
            .await?
            .map(|w| w.update_tier)
            .unwrap_or_default();
        if tier == "canary" {
            canary.push((row, tier));
        } else {
            production.push((row, tier));
        }
    }
    let mut rollout = Rollout {
        applied: Vec::new(),
        failed: None,
        stopped: false,
    };
    let timeout = Duration::from_secs(svc.config.plugins.rollout_health_timeout_secs.max(1));
    for (index, (row, tier)) in canary.iter().chain(production.iter()).enumerate() {
        let is_canary = index < canary.len();
        let started = Utc::now();
        let updated = u32::try_from(rollout.applied.len()).unwrap_or(u32::MAX);
        // A rollout proves each step by the workspace coming back healthy: one that is not
        // running (paused, failed, provisioning) cannot, so it is not updated at all.
        let running = store::workspaces::get(&svc.db, row.workspace_id)
            .await?
            .is_some_and(|w| w.status == Status::Online || w.status == Status::Degraded);
        let result = if !running {
            Err(
                "the workspace is not running, so a rollout cannot check it took the update"
                    .to_owned(),
            )
        } else {
            match apply(svc, row.id, updated).await {
                Ok(applied) => match healthy_after(svc, row.workspace_id, started, timeout).await {
                    Ok(true) => Ok(applied),
                    Ok(false) => Err(format!(
                        "the workspace did not come back online with a fresh heartbeat within {}s",
                        timeout.as_secs()
                    )),
                    Err(err) => return Err(err),
                },
                Err(err) => Err(err.to_string()),
            }
        };
        match result {
            Ok(applied) => rollout.applied.push(applied),
            Err(error) => {
                tracing::warn!(workspace_id = %row.workspace_id, plugin = %row.plugin_name, tier, error, "rollout step failed");
                rollout.failed.get_or_insert(RolloutFailure {
                    queue_id: row.id,
                    workspace_id: row.workspace_id,
                    plugin_name: row.plugin_name.clone(),
                    update_tier: tier.clone(),
                    error,
                });
                if is_canary {
                    rollout.stopped = true;
                    break;
                }
            }
        }
    }
    Ok(rollout)
}

/// Whether the workspace is online with a heartbeat newer than `since` before `timeout`.
async fn healthy_after(
    svc: &Services,
    id: Uuid,
    since: chrono::DateTime<Utc>,
    timeout: Duration,
) -> Result<bool, StoreError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(row) = store::workspaces::get(&svc.db, id).await?
            && row.status == Status::Online
            && row.last_heartbeat_at.is_some_and(|at| at > since)
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes `.staging` and `.previous` entries older than the configured age from every running
/// workspace (an install in progress holds its lock and is skipped), after rolling back any
/// swap a killed host left half-done. Returns how many went. One listing of each workspace's
/// `plugins/` (two levels: the plugins with their markers, the swap dirs with their entries)
/// serves both.
pub async fn sweep_swap_dirs(svc: &Services) -> Result<usize, StoreError> {
    let Some(runtime) = svc.lifecycle.runtime().cloned() else {
        return Ok(0);
    };
    let max_age = chrono::Duration::seconds(
        i64::try_from(svc.config.plugins.swap_dir_max_age_secs).unwrap_or(i64::MAX),
    );
    let now = Utc::now().naive_utc();
    let plugins = RelPath::parse(deliver::PLUGINS_DIR).expect("a static path");
    let mut removed = 0;
    for id in store::workspaces::running_ids(&svc.db).await? {
        let Ok(entries) = runtime
            .list_files(id, CONFIGS_ROOT, Some(&plugins), 2)
            .await
        else {
            continue;
        };
        let restored = recover_interrupted_swaps(svc, &runtime, id, &entries).await?;
        for entry in entries.iter().filter(|e| e.dir) {
            let Some((parent, file)) = entry.path.rsplit_once('/') else {
                continue;
            };
            if ![deliver::STAGING, deliver::PREVIOUS].contains(&parent)
                || restored.contains(&entry.path)
            {
                continue;
            }
            let Some((name, stamp)) = stamp_of(file) else {
                continue;
            };
            if now - stamp < max_age {
                continue;
            }
            let Some(_held) = install_lock(svc, id, name, false).await? else {
                continue;
            };
            let Ok(path) = RelPath::parse(&entry.path) else {
                continue;
            };
            match runtime.remove_path(id, &path).await {
                Ok(_) => removed += 1,
                Err(err) => {
                    tracing::warn!(workspace_id = %id, path = %path, error = %err, "removing a stale swap directory failed")
                }
            }
        }
    }
    Ok(removed)
}

/// Puts back the previous version of every plugin whose swap a killed host left half-done, as
/// the swap itself would have on an error: the live copy moved to `plugins/.previous` and then
/// either nothing in its place (killed between the snapshot and the swap) or the new tree
/// without its `.complete` marker (killed between the swap and the marker). The install was not
/// recorded (that happens after the swap), so the previous version is what the database says
/// is installed. Each plugin is handled under its install lock, skipped while an install holds
/// it. A first install cut short (no previous copy) left an unmarked directory the agent never
/// loads; it is removed when no install of that plugin is recorded for the workspace.
/// `entries` is the sweep's listing of `plugins/`; returns the snapshots it moved back.
async fn recover_interrupted_swaps(
    svc: &Services,
    runtime: &std::sync::Arc<dyn crate::runtime::ContainerRuntime>,
    id: Uuid,
    entries: &[crate::safefs::ListedFile],
) -> Result<Vec<String>, StoreError> {
    let child_dirs = |parent: &'static str| {
        entries.iter().filter(move |e| e.dir).filter_map(move |e| {
            let (dir, name) = e.path.rsplit_once('/')?;
            (dir == parent).then_some((name, e.path.as_str()))
        })
    };
    // The newest snapshot of each plugin.
    let mut previous: std::collections::BTreeMap<&str, (NaiveDateTime, &str)> =
        std::collections::BTreeMap::new();
    for (file, path) in child_dirs(deliver::PREVIOUS) {
        let Some((name, stamp)) = stamp_of(file) else {
            continue;
        };
        if previous.get(name).is_none_or(|(at, _)| *at < stamp) {
            previous.insert(name, (stamp, path));
        }
    }
    let live_dirs: std::collections::BTreeSet<&str> = child_dirs(deliver::PLUGINS_DIR)
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with('.'))
        .collect();
    let mut names: std::collections::BTreeSet<&str> = previous.keys().copied().collect();
    names.extend(live_dirs.iter().copied());
    let mut restored = Vec::new();
    for name in names {
        let exists = live_dirs.contains(name);
        if exists && deliver::is_marked(entries, name) {
            continue;
        }
        let Ok(live) = RelPath::parse(&format!("{}/{name}", deliver::PLUGINS_DIR)) else {
            continue;
        };
        // The database says what is installed: a recorded plugin gets its snapshot back, an
        // unrecorded one loses its unmarked directory (a snapshot of it is a stale one, left
        // by an earlier swap before the plugin was uninstalled).
        let recorded = store::plugins::get(&svc.db, id, name).await?.is_some();
        let snapshot = previous
            .get(name)
            .filter(|_| recorded)
            .map(|(_, path)| *path);
        if snapshot.is_none() && (!exists || recorded) {
            continue;
        }
        let Some(_held) = install_lock(svc, id, name, false).await? else {
            continue;
        };
        // An install may have finished between the listing and the lock.
        if exists
            && runtime
                .list_files(id, CONFIGS_ROOT, Some(&live), 1)
                .await
                .is_ok_and(|now| deliver::is_marked(&now, name))
        {
            continue;
        }
        if exists && let Err(err) = runtime.remove_path(id, &live).await {
            tracing::warn!(workspace_id = %id, plugin = %name, error = %err, "removing a half-swapped plugin failed");
            continue;
        }
        match snapshot.map(|path| (path, RelPath::parse(path))) {
            Some((path, Ok(snapshot))) => match runtime.rename_path(id, &snapshot, &live).await {
                Ok(()) => {
                    restored.push(path.to_owned());
                    tracing::warn!(workspace_id = %id, plugin = %name, "a plugin swap cut short by a stopped host was rolled back to the previous version")
                }
                Err(err) => {
                    tracing::warn!(workspace_id = %id, plugin = %name, error = %err, "restoring a plugin's previous version failed")
                }
            },
            Some((_, Err(_))) => {}
            None => {
                tracing::warn!(workspace_id = %id, plugin = %name, "an unrecorded plugin install cut short by a stopped host was removed")
            }
        }
    }
    Ok(restored)
}

/// `<name>.<yyyymmddThhmmss.ffffffZ>` → (name, time). Names may contain dots; the stamp has a
/// fixed width.
fn stamp_of(file: &str) -> Option<(&str, NaiveDateTime)> {
    const STAMP: usize = "20260101T000000.000000Z".len();
    let split = file.len().checked_sub(STAMP + 1)?;
    let (name, rest) = (file.get(..split)?, file.get(split..)?);
    let stamp = NaiveDateTime::parse_from_str(rest.strip_prefix('.')?, "%Y%m%dT%H%M%S%.fZ").ok()?;
    Some((name, stamp)).filter(|(name, _)| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracked_ref_becomes_the_reference() {
        let tag = tracked_source("github://acme/tools#v1", "tag:v2").unwrap();
        assert_eq!(tag.reference.as_deref(), Some("v2"));
        let sha = tracked_source("git://git.example.com/a/b", "sha:abc").unwrap();
        assert_eq!(sha.reference.as_deref(), Some("abc"));
        let local = tracked_source("helper", "tag:x").unwrap();
        assert_eq!(local.reference, None);
        assert!(tracked_source("github://acme/tools#v1", "none").is_none());
    }

    #[test]
    fn swap_dir_names_carry_their_time() {
        let (name, at) = stamp_of("helper.20261130T101500.123456Z").unwrap();
        assert_eq!(name, "helper");
        assert_eq!(at.to_string(), "2026-11-30 10:15:00.123456");
        assert_eq!(
            stamp_of("my.plugin.20261130T101500.123456Z").unwrap().0,
            "my.plugin"
        );
        assert!(stamp_of("helper").is_none());
        assert!(stamp_of("helper.yesterday").is_none());
    }
}
