//! Workspace schedules: a cron expression in a time zone whose ticks send a prompt to the
//! workspace's agent, as an A2A `message/send` from `system:schedule`.
//!
//! The scheduler ([`Scheduler::sweep`]) runs on the replica holding the `scheduler` lease. It
//! reads the due rows (one indexed query), and fires each only after claiming its tick with a
//! conditional update of `next_run_at` (see [`store::schedules::claim`]): even two replicas that
//! both believe they hold the lease cannot fire a tick twice. The claim moves `next_run_at` to the
//! first tick after now, so a schedule whose ticks were missed during a downtime fires once.
//! Fires run beside the sweep, at most `max_concurrent_fires` at once, each bounded by
//! `fire_timeout_secs`.

pub mod cron;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use self::cron::{CronError, CronSchedule};
use crate::agents::Caller;
use crate::agents::client::{self, Call, Message, OnBusy, Sent};
use crate::events::{activity, names};
use crate::services::Services;
use crate::store::activity::ActivityRow;
use crate::store::schedules::{Run, ScheduleRow, Source};
use crate::store::status::Status;
use crate::store::{self, Constraint, StoreError};

/// Who scheduled prompts come from, in their metadata and in the activity rows.
pub const CALLER: &str = "system:schedule";

/// The longest name and prompt accepted.
const MAX_NAME_LEN: usize = 200;
const MAX_PROMPT_LEN: usize = 100_000;

/// Why a schedule could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A field is invalid; the message names it.
    #[error("{message}")]
    Field {
        field: &'static str,
        message: &'static str,
    },
    #[error("a schedule with this name already exists in this workspace")]
    NameTaken,
    #[error("schedule not found")]
    NotFound,
    #[error("store error")]
    Store(#[from] StoreError),
}

impl From<CronError> for ScheduleError {
    fn from(err: CronError) -> Self {
        tracing::debug!(error = %err, "refused a schedule");
        match err {
            CronError::Expression(_) => ScheduleError::Field {
                field: "cron_expr",
                message: "cron_expr is not a valid cron expression (5 fields, 6 with seconds first, or a macro such as @hourly)",
            },
            CronError::Zone(_) => ScheduleError::Field {
                field: "timezone",
                message: "timezone is not a known IANA time zone (such as UTC or Europe/Berlin)",
            },
        }
    }
}

fn field(field: &'static str, message: &'static str) -> ScheduleError {
    ScheduleError::Field { field, message }
}

/// A schedule's definition, checked: what create, patch and templates write.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub cron_expr: String,
    pub timezone: String,
    pub prompt: String,
    pub enabled: bool,
}

impl Definition {
    /// Checks every field and normalises the prompt (carriage returns dropped); returns the
    /// parsed schedule with it.
    pub fn check(mut self) -> Result<(Definition, CronSchedule), ScheduleError> {
        self.name = self.name.trim().to_owned();
        if self.name.chars().count() > MAX_NAME_LEN {
            return Err(field("name", "name must be at most 200 characters"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(field("name", "name must not contain control characters"));
        }
        self.prompt = clean_prompt(&self.prompt);
        if self.prompt.trim().is_empty() {
            return Err(field("prompt", "prompt is required"));
        }
        if self.prompt.len() > MAX_PROMPT_LEN {
            return Err(field("prompt", "prompt must be at most 100000 bytes"));
        }
        self.cron_expr = self.cron_expr.trim().to_owned();
        self.timezone = match self.timezone.trim() {
            "" => "UTC".to_owned(),
            zone => zone.to_owned(),
        };
        let schedule = CronSchedule::parse(&self.cron_expr, &self.timezone)?;
        Ok((self, schedule))
    }
}

/// A prompt as stored: carriage returns dropped (a CRLF file becomes LF lines).
pub fn clean_prompt(prompt: &str) -> String {
    prompt.replace('\r', "")
}

/// A schedule that has not run yet: due at its next tick after `now` when enabled.
fn new_row(
    workspace_id: Uuid,
    definition: Definition,
    source: Source,
    schedule: &CronSchedule,
    now: DateTime<Utc>,
) -> ScheduleRow {
    ScheduleRow {
        id: Uuid::new_v4(),
        workspace_id,
        next_run_at: definition
            .enabled
            .then(|| schedule.next_after(now))
            .flatten(),
        name: definition.name,
        cron_expr: definition.cron_expr,
        timezone: definition.timezone,
        prompt: definition.prompt,
        enabled: definition.enabled,
        source: source.as_str().to_owned(),
        last_run_at: None,
        run_count: 0,
        last_status: None,
        last_error: None,
        consecutive_empty_runs: 0,
        consecutive_failures: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Creates a schedule of `workspace_id`.
pub async fn create(
    svc: &Services,
    workspace_id: Uuid,
    definition: Definition,
    source: Source,
) -> Result<ScheduleRow, ScheduleError> {
    let (definition, schedule) = definition.check()?;
    let row = new_row(workspace_id, definition, source, &schedule, Utc::now());
    match store::schedules::insert(&svc.db, &row).await {
        Ok(()) => Ok(row),
        Err(StoreError::Constraint(Constraint::ScheduleNameTaken)) => Err(ScheduleError::NameTaken),
        Err(err) => Err(err.into()),
    }
}

/// Writes a workspace's template schedules (`source: template`): each is created, or its
/// definition rewritten when a template schedule of that name exists; a schedule of that name
/// created through the API is left alone. With `prune` (reconcile), template schedules the
/// template no longer names are deleted. Returns `(written, removed)`.
pub async fn seed_template(
    svc: &Services,
    workspace_id: Uuid,
    definitions: &[Definition],
    prune: bool,
) -> Result<(usize, usize), StoreError> {
    let now = Utc::now();
    let mut written = 0;
    for definition in definitions {
        // Checked when the plan was built; a definition that no longer parses is skipped.
        let Ok(schedule) = CronSchedule::parse(&definition.cron_expr, &definition.timezone) else {
            continue;
        };
        let row = new_row(
            workspace_id,
            definition.clone(),
            Source::Template,
            &schedule,
            now,
        );
        if store::schedules::upsert_template(&svc.db, &row).await? {
            written += 1;
        } else {
            tracing::info!(%workspace_id, name = row.name, "a template schedule is shadowed by one created through the API");
        }
    }
    let mut removed = 0;
    if prune {
        for (id, name) in store::schedules::template_names(&svc.db, workspace_id).await? {
            if !definitions.iter().any(|d| d.name == name) {
                removed += usize::from(store::schedules::delete(&svc.db, workspace_id, id).await?);
            }
        }
    }
    Ok((written, removed))
}

/// The fields a patch may change; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub name: Option<String>,
    pub cron_expr: Option<String>,
    pub timezone: Option<String>,
    pub prompt: Option<String>,
    pub enabled: Option<bool>,
}

/// Changes a schedule. The next run is recomputed from now whenever the expression, the zone or
/// `enabled` changes (a disabled schedule has none).
pub async fn update(
    svc: &Services,
    workspace_id: Uuid,
    id: Uuid,
    patch: Patch,
) -> Result<ScheduleRow, ScheduleError> {
    let mut row = store::schedules::get(&svc.db, workspace_id, id)
        .await?
        .ok_or(ScheduleError::NotFound)?;
    let retime = patch.cron_expr.is_some() || patch.timezone.is_some() || patch.enabled.is_some();
    let definition = Definition {
        name: patch.name.unwrap_or(row.name.clone()),
        cron_expr: patch.cron_expr.unwrap_or(row.cron_expr.clone()),
        timezone: patch.timezone.unwrap_or(row.timezone.clone()),
        prompt: patch.prompt.unwrap_or(row.prompt.clone()),
        enabled: patch.enabled.unwrap_or(row.enabled),
    };
    let (definition, schedule) = definition.check()?;
    if retime || row.next_run_at.is_none() {
        row.next_run_at = definition
            .enabled
            .then(|| schedule.next_after(Utc::now()))
            .flatten();
    }
    row.name = definition.name;
    row.cron_expr = definition.cron_expr;
    row.timezone = definition.timezone;
    row.prompt = definition.prompt;
    row.enabled = definition.enabled;
    match store::schedules::save_definition(&svc.db, &row).await {
        Ok(true) => Ok(row),
        Ok(false) => Err(ScheduleError::NotFound),
        Err(StoreError::Constraint(Constraint::ScheduleNameTaken)) => Err(ScheduleError::NameTaken),
        Err(err) => Err(err.into()),
    }
}

/// What started a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule's tick (the time it was due).
    Tick(DateTime<Utc>),
    /// `POST .../run`.
    Manual,
}

impl Trigger {
    fn tick(self) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Tick(at) => Some(at),
            Trigger::Manual => None,
        }
    }
}

/// How one fire ended.
#[derive(Debug, Clone)]
pub struct Fired {
    /// `ok`, `empty` (answered without text), `queued` (the agent was busy), `woken` (the
    /// workspace was hibernated: the prompt is queued and the agent started), `skipped` (no
    /// agent to send to) or `error`.
    pub status: &'static str,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// Whether the workspace can take a prompt now, or why the fire is skipped.
async fn target_ready(svc: &Services, workspace_id: Uuid) -> Result<(), String> {
    // The routing table the send path reads next: no second database read per fire.
    let row = svc
        .a2a
        .routes()
        .row(&svc.db, workspace_id)
        .await
        .map_err(|_| "could not read the workspace".to_owned())?;
    let Some(row) = row else {
        return Err("workspace not found".into());
    };
    match row.status {
        Status::Online | Status::Degraded => Ok(()),
        // The send path queues the prompt durably and wakes the agent (see `agents::client`):
        // it is delivered once the woken agent has room, and the run is recorded as `woken`.
        Status::Hibernated | Status::Hibernating => Ok(()),
        Status::Removed => Err("workspace was removed".into()),
        Status::Paused => Err("workspace is paused".into()),
        other => Err(format!("workspace is {}", other.as_str())),
    }
}

/// The `message/send` a fire sends.
fn message(row: &ScheduleRow, trigger: Trigger) -> Value {
    let id8: String = row.id.simple().to_string().chars().take(8).collect();
    let rand8: String = Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(8)
        .collect();
    json!({
        "jsonrpc": "2.0",
        "method": "message/send",
        "params": { "message": {
            "role": "user",
            "messageId": format!("cron-{id8}-{rand8}"),
            "parts": [{ "kind": "text", "text": row.prompt }],
            "metadata": {
                "source": CALLER,
                "schedule_id": row.id,
                "schedule_name": row.name,
                "tick_at": trigger.tick().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            },
        } },
    })
}

/// Fires `row` once: sends its prompt (unless the agent cannot take it), then records the run
/// (history, `last_*`, counters), a `cron_run` activity row and `CRON_*` events.
/// One `schedule.run` span: a root for a tick, in the caller's trace for a manual run.
pub async fn fire(svc: &Services, row: &ScheduleRow, trigger: Trigger) -> Fired {
    let span = svc.traces.start(
        "schedule.run",
        opentelemetry::trace::SpanKind::Internal,
        vec![
            crate::traces::workspace(row.workspace_id),
            opentelemetry::KeyValue::new("molecule.schedule_id", row.id.to_string()),
            opentelemetry::KeyValue::new(
                "molecule.trigger",
                if trigger == Trigger::Manual {
                    "manual"
                } else {
                    "tick"
                },
            ),
        ],
    );
    let fired = crate::traces::within(span.clone(), fire_traced(svc, row, trigger)).await;
    opentelemetry::trace::TraceContextExt::span(&span).set_attribute(opentelemetry::KeyValue::new(
        "molecule.status",
        fired.status,
    ));
    crate::traces::finish(
        &span,
        fired.error.clone().filter(|_| fired.status == "error"),
    );
    fired
}

async fn fire_traced(svc: &Services, row: &ScheduleRow, trigger: Trigger) -> Fired {
    let started_at = Utc::now();
    let clock = Instant::now();
    let announce = json!({
        "schedule_id": row.id,
        "schedule_name": row.name,
        "trigger": if trigger == Trigger::Manual { "manual" } else { "tick" },
        "tick_at": trigger.tick(),
    });
    svc.events
        .emit(names::CRON_STARTED, Some(row.workspace_id), announce)
        .await;
    let timeout = svc.config.schedules.fire_timeout();
    let (status, error) = match target_ready(svc, row.workspace_id).await {
        Err(reason) => ("skipped", Some(reason)),
        Ok(()) => {
            // The proxy's own deadline is the same; this one also bounds the checks before it.
            match tokio::time::timeout(
                timeout + Duration::from_secs(5),
                send(svc, row, trigger, timeout),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => ("error", Some("the fire timed out".to_owned())),
            }
        }
    };
    let fired = Fired {
        status,
        error,
        duration_ms: i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX),
    };
    record(svc, row, trigger, started_at, &fired).await;
    fired
}

async fn send(
    svc: &Services,
    row: &ScheduleRow,
    trigger: Trigger,
    timeout: Duration,
) -> (&'static str, Option<String>) {
    let message = match Message::normalize(message(row, trigger)) {
        Ok(message) => message,
        Err(err) => return ("error", Some(err.to_owned())),
    };
    let call = Call {
        caller: Caller::System(CALLER),
        target: row.workspace_id,
        message,
        timeout: Some(timeout),
        on_busy: OnBusy::Enqueue,
    };
    match client::send(svc, call).await {
        Ok(Sent::Delivered(delivery)) => match delivery.failure() {
            Some(failure) => ("error", Some(failure)),
            None if delivery.is_empty_answer() => ("empty", None),
            None => ("ok", None),
        },
        Ok(Sent::Queued { waking: true, .. }) => ("woken", None),
        Ok(Sent::Queued { .. }) => ("queued", None),
        Err(err) => ("error", Some(err.to_string())),
    }
}

async fn record(
    svc: &Services,
    row: &ScheduleRow,
    trigger: Trigger,
    started_at: DateTime<Utc>,
    fired: &Fired,
) {
    let request = json!({
        "schedule_id": row.id,
        "schedule_name": row.name,
        "cron_expr": row.cron_expr,
        "prompt": row.prompt,
        "trigger": if trigger == Trigger::Manual { "manual" } else { "tick" },
    });
    let run = Run {
        schedule_id: row.id,
        workspace_id: row.workspace_id,
        tick_at: trigger.tick(),
        started_at,
        duration_ms: fired.duration_ms,
        status: fired.status,
        error: fired.error.clone(),
        request: request.clone(),
    };
    if let Err(err) = store::schedules::record_run(&svc.db, &run).await {
        tracing::warn!(schedule_id = %row.id, error = ?err, "recording a schedule run failed");
    }
    let mut activity_row = ActivityRow::new(row.workspace_id, "cron_run");
    activity_row.target_id = Some(row.workspace_id);
    activity_row.method = Some("message/send".into());
    activity_row.summary = Some(format!("{CALLER}: {}", row.name));
    activity_row.request_body = Some(request);
    activity_row.duration_ms = Some(fired.duration_ms);
    activity_row.status = fired.status.into();
    activity_row.error_detail = fired.error.clone();
    activity::record_deferred(svc, activity_row).await;
    let event = if fired.status == "error" {
        names::CRON_FAILED
    } else {
        names::CRON_COMPLETED
    };
    svc.events
        .emit(
            event,
            Some(row.workspace_id),
            json!({
                "schedule_id": row.id,
                "schedule_name": row.name,
                "status": fired.status,
                "error": fired.error,
                "duration_ms": fired.duration_ms,
            }),
        )
        .await;
}

/// The scheduler of one replica: the permits that bound its fires in flight, and where those
/// fires run (joined when the host stops).
#[derive(Debug, Clone)]
pub struct Scheduler {
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    last_tick_written: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// How often the lease holder records its last pass for the health routes.
const LAST_TICK_EVERY: Duration = Duration::from_secs(5);

impl Scheduler {
    pub fn new(svc: &Services, tracker: &TaskTracker, shutdown: &CancellationToken) -> Scheduler {
        Scheduler {
            permits: Arc::new(Semaphore::new(
                svc.config.schedules.max_concurrent_fires.max(1),
            )),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            last_tick_written: Arc::default(),
        }
    }

    /// Gives every enabled row without a next run one (or disables it with `last_error` when
    /// its stored expression or zone no longer parses). Run once at start, before the first sweep,
    /// so a broken row never stalls the loop.
    pub async fn repair(&self, svc: &Services) -> Result<usize, StoreError> {
        let now = Utc::now();
        let mut repaired = 0;
        for row in store::schedules::unscheduled(&svc.db).await? {
            match CronSchedule::parse(&row.cron_expr, &row.timezone).map(|s| s.next_after(now)) {
                Ok(Some(next)) => {
                    store::schedules::schedule(&svc.db, row.id, next).await?;
                }
                Ok(None) => {
                    store::schedules::disable_broken(
                        &svc.db,
                        row.id,
                        "cron_expr never matches a future date",
                    )
                    .await?;
                }
                Err(err) => {
                    store::schedules::disable_broken(&svc.db, row.id, &err.to_string()).await?;
                }
            }
            repaired += 1;
        }
        if repaired > 0 {
            tracing::info!(repaired, "repaired unscheduled schedules");
        }
        Ok(repaired)
    }

    /// One pass: claims every due tick and starts its fire. Returns how many it started.
    pub async fn sweep(&self, svc: &Services) -> Result<usize, StoreError> {
        self.note_tick(svc).await;
        let settings = &svc.config.schedules;
        let batch = settings.batch.max(1);
        let mut started = 0;
        // Many schedules share an expression and zone: each is parsed once per pass.
        let mut parsed: HashMap<(String, String), Result<CronSchedule, CronError>> = HashMap::new();
        loop {
            let now = Utc::now();
            let due = store::schedules::due(&svc.db, now, batch).await?;
            let full = due.len() as i64 >= batch;
            let mut claimed_any = false;
            let mut rows = due.into_iter();
            loop {
                // Wait for one free fire, then take every other free one: the ticks claimed
                // together (one commit) are those that can start at once, so a crash never
                // leaves more claimed but unfired ticks than there are fires in flight.
                let mut permits = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Ok(started),
                    permit = self.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => vec![permit],
                        Err(_) => return Ok(started),
                    },
                };
                while let Ok(permit) = self.permits.clone().try_acquire_owned() {
                    permits.push(permit);
                }
                let mut claims = Vec::with_capacity(permits.len());
                while claims.len() < permits.len() {
                    let Some(row) = rows.next() else { break };
                    let Some(seen) = row.next_run_at else {
                        continue;
                    };
                    let key = (row.cron_expr.clone(), row.timezone.clone());
                    let schedule = parsed
                        .entry(key)
                        .or_insert_with(|| CronSchedule::parse(&row.cron_expr, &row.timezone));
                    match schedule {
                        Ok(schedule) => {
                            let next = schedule.next_after(Utc::now().max(seen));
                            let claim = store::schedules::Claim {
                                id: row.id,
                                seen,
                                next,
                            };
                            claims.push((row, claim));
                        }
                        Err(err) => {
                            // A row an older version stored: disabled, never retried each pass.
                            store::schedules::disable_broken(&svc.db, row.id, &err.to_string())
                                .await?;
                        }
                    }
                }
                if claims.is_empty() {
                    break;
                }
                let ticks: Vec<_> = claims.iter().map(|(_, claim)| *claim).collect();
                let won = store::schedules::claim_many(&svc.db, &ticks).await?;
                for ((row, claim), won) in claims.into_iter().zip(won) {
                    if !won {
                        continue;
                    }
                    claimed_any = true;
                    if claim.next.is_none() {
                        store::schedules::disable_broken(
                            &svc.db,
                            row.id,
                            "cron_expr never matches a future date",
                        )
                        .await?;
                    }
                    started += 1;
                    let permit = permits.pop().expect("a permit for every claim");
                    let (svc, shutdown) = (svc.clone(), self.shutdown.clone());
                    let seen = claim.seen;
                    self.tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = shutdown.cancelled() => {
                                tracing::info!(schedule_id = %row.id, "a schedule fire was cut off by shutdown");
                            }
                            _ = fire(&svc, &row, Trigger::Tick(seen)) => {}
                        }
                    });
                }
            }
            if !full || !claimed_any {
                return Ok(started);
            }
        }
    }

    /// Records the pass time for the health routes, at most every [`LAST_TICK_EVERY`].
    async fn note_tick(&self, svc: &Services) {
        {
            let mut last = self.last_tick_written.lock().expect("last tick lock");
            if last.is_some_and(|at| at.elapsed() < LAST_TICK_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(err) = store::schedules::set_last_tick(&svc.db, Utc::now()).await {
            tracing::debug!(error = ?err, "recording the scheduler's last pass failed");
        }
    }
}

/// What the health routes report.
#[derive(Debug, Clone)]
pub struct Health {
    pub last_tick_at: Option<DateTime<Utc>>,
    pub total: i64,
    pub enabled: i64,
    pub overdue: Vec<ScheduleRow>,
    pub failing: Vec<ScheduleRow>,
    pub empty: Vec<ScheduleRow>,
}

/// Schedules that are overdue, failing repeatedly or answered empty repeatedly, for one
/// workspace or all, and the scheduler's last pass.
pub async fn health(svc: &Services, workspace_id: Option<Uuid>) -> Result<Health, StoreError> {
    let settings = &svc.config.schedules;
    let grace = chrono::Duration::seconds(i64::try_from(settings.overdue_grace_secs).unwrap_or(60));
    let overdue_before = Utc::now() - grace;
    let failures = settings.health_failures.max(1);
    let empties = settings.health_empty_runs.max(1);
    let rows =
        store::schedules::unhealthy(&svc.db, workspace_id, overdue_before, failures, empties)
            .await?;
    let (total, enabled) = store::schedules::counts(&svc.db, workspace_id).await?;
    let mut health = Health {
        last_tick_at: store::schedules::last_tick(&svc.db).await?,
        total,
        enabled,
        overdue: Vec::new(),
        failing: Vec::new(),
        empty: Vec::new(),
    };
    for row in rows {
        if row.next_run_at.is_some_and(|at| at < overdue_before) {
            health.overdue.push(row.clone());
        }
        if row.consecutive_failures >= failures {
            health.failing.push(row.clone());
        }
        if row.consecutive_empty_runs >= empties {
            health.empty.push(row);
        }
    }
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(cron_expr: &str, timezone: &str, prompt: &str) -> Definition {
        Definition {
            name: "daily".into(),
            cron_expr: cron_expr.into(),
            timezone: timezone.into(),
            prompt: prompt.into(),
            enabled: true,
        }
    }

    #[test]
    fn a_definition_is_checked_field_by_field() {
        let (ok, _) = definition("0 9 * * *", "", "line one\r\nline two\r\n")
            .check()
            .unwrap();
        assert_eq!(ok.timezone, "UTC", "the zone defaults to UTC");
        assert_eq!(ok.prompt, "line one\nline two\n", "CRLF becomes LF");
        let field_of = |d: Definition| match d.check() {
            Err(ScheduleError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field_of(definition("0 9 * *", "UTC", "hi")), "cron_expr");
        assert_eq!(
            field_of(definition("0 9 * * *", "Nowhere/City", "hi")),
            "timezone"
        );
        assert_eq!(field_of(definition("0 9 * * *", "UTC", " \r\n ")), "prompt");
        let mut long_name = definition("0 9 * * *", "UTC", "hi");
        long_name.name = "x".repeat(201);
        assert_eq!(field_of(long_name), "name");
    }

    #[test]
    fn a_fire_message_comes_from_the_scheduler_with_the_prompt() {
        let now = Utc::now();
        let row = ScheduleRow {
            id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            name: "report".into(),
            cron_expr: "* * * * *".into(),
            timezone: "UTC".into(),
            prompt: "write the report".into(),
            enabled: true,
            source: "runtime".into(),
            last_run_at: None,
            next_run_at: None,
            run_count: 0,
            last_status: None,
            last_error: None,
            consecutive_empty_runs: 0,
            consecutive_failures: 0,
            created_at: now,
            updated_at: now,
        };
        let body = message(&row, Trigger::Manual);
        let message = &body["params"]["message"];
        assert_eq!(message["parts"][0]["text"], "write the report");
        assert_eq!(message["metadata"]["source"], CALLER);
        assert!(message["messageId"].as_str().unwrap().starts_with("cron-"));
        assert!(Message::normalize(body).is_ok());
    }
}
