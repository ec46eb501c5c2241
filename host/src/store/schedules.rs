//! `workspace_schedules` and `workspace_schedule_runs`: cron schedules of workspaces, the claim
//! that makes each tick fire once across replicas, and the history of their fires.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// Where a schedule came from: an org template (rewritten by the next import) or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Template,
    Runtime,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Template => "template",
            Source::Runtime => "runtime",
        }
    }
}

/// One schedule as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub cron_expr: String,
    pub timezone: String,
    pub prompt: String,
    pub enabled: bool,
    pub source: String,
    pub last_run_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub run_count: i64,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_empty_runs: i32,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, workspace_id, name, cron_expr, timezone, prompt, enabled, source, \
     last_run_at, next_run_at, run_count, last_status, last_error, consecutive_empty_runs, \
     consecutive_failures, created_at, updated_at";

/// Inserts `row` (its run fields as given, normally empty).
pub async fn insert(db: &Db, row: &ScheduleRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO workspace_schedules (id, workspace_id, name, cron_expr, timezone, prompt,
                 enabled, source, next_run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(row.id)
        .bind(row.workspace_id)
        .bind(&row.name)
        .bind(&row.cron_expr)
        .bind(&row.timezone)
        .bind(&row.prompt)
        .bind(row.enabled)
        .bind(&row.source)
        .bind(row.next_run_at)
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// The workspace's schedules by name.
pub async fn list(db: &Db, workspace_id: Uuid) -> StoreResult<Vec<ScheduleRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspace_schedules WHERE workspace_id = $1 ORDER BY name, id"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).fetch_all(pool).await?))
}

/// One schedule of the workspace.
pub async fn get(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<Option<ScheduleRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workspace_schedules WHERE workspace_id = $1 AND id = $2");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(id).fetch_optional(pool).await?))
}

/// Writes the definition fields of `row` (name, expression, zone, prompt, enabled, next run);
/// false when it no longer exists.
pub async fn save_definition(db: &Db, row: &ScheduleRow) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_schedules SET name = $3, cron_expr = $4, timezone = $5, prompt = $6,
             enabled = $7, next_run_at = $8, last_error = $9, updated_at = $10
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(row.workspace_id)
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.cron_expr)
    .bind(&row.timezone)
    .bind(&row.prompt)
    .bind(row.enabled)
    .bind(row.next_run_at)
    .bind(&row.last_error)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

/// Deletes one schedule (its history goes with it); false when there was none.
pub async fn delete(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "DELETE FROM workspace_schedules WHERE workspace_id = $1 AND id = $2",
    ).bind(workspace_id).bind(id).execute(pool).await?.rows_affected() > 0))
}

/// Enabled schedules whose tick is due at `now`, earliest first, at most `limit`. One read of the
/// `(next_run_at) WHERE enabled` index, so a pass with nothing due costs one index probe.
pub async fn due(db: &Db, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<ScheduleRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspace_schedules
         WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= $1
         ORDER BY next_run_at LIMIT $2"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(pool).await?))
}

/// Enabled schedules without a next run: rows an older version left unscheduled.
pub async fn unscheduled(db: &Db) -> StoreResult<Vec<ScheduleRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workspace_schedules WHERE enabled AND next_run_at IS NULL");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).fetch_all(pool).await?))
}

/// Claims the tick `seen` of schedule `id` by moving its next run to `next`: true for exactly
/// one caller however many read the same due row (the update matches only while `next_run_at`
/// is still what it read).
pub async fn claim(
    db: &Db,
    id: Uuid,
    seen: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> StoreResult<bool> {
    Ok(claim_many(db, &[Claim { id, seen, next }]).await?[0])
}

/// One tick to claim: schedule `id`, due at `seen`, next due at `next`.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub id: Uuid,
    pub seen: DateTime<Utc>,
    pub next: Option<DateTime<Utc>>,
}

/// [`claim`] for several ticks in one transaction (one commit for a scheduler pass's worth of
/// fires); whether each was won, in the order given. The rows are updated in id order, so two
/// replicas claiming overlapping sets take their row locks in the same order and never deadlock.
pub async fn claim_many(db: &Db, claims: &[Claim]) -> StoreResult<Vec<bool>> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by_key(|&i| claims[i].id);
    let mut won = vec![false; claims.len()];
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        for i in order {
            let Claim { id, seen, next } = claims[i];
            won[i] = sqlx::query(
                "UPDATE workspace_schedules SET next_run_at = $3
                 WHERE id = $1 AND enabled AND next_run_at = $2",
            )
            .bind(id)
            .bind(seen)
            .bind(next)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
        }
        tx.commit().await?;
    });
    Ok(won)
}

/// Sets the next run of an unscheduled row (`next_run_at IS NULL`), as [`claim`] does for a due
/// one; false when another replica did it first.
pub async fn schedule(db: &Db, id: Uuid, next: DateTime<Utc>) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspace_schedules SET next_run_at = $2
         WHERE id = $1 AND enabled AND next_run_at IS NULL",
    ).bind(id).bind(next).execute(pool).await?.rows_affected() > 0))
}

/// Disables a row the scheduler cannot evaluate, saying why in `last_error`.
pub async fn disable_broken(db: &Db, id: Uuid, error: &str) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "UPDATE workspace_schedules SET enabled = FALSE, next_run_at = NULL,
                 last_status = 'error', last_error = $2, updated_at = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// How one fire ended, as the history and the schedule's `last_*` fields record it.
#[derive(Debug, Clone)]
pub struct Run {
    pub schedule_id: Uuid,
    pub workspace_id: Uuid,
    /// The tick it fired for (`None` for a manual run).
    pub tick_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// `ok`, `empty`, `queued`, `skipped` or `error`.
    pub status: &'static str,
    pub error: Option<String>,
    pub request: Value,
}

/// Records `run`: a history row, and the schedule's `last_*`, `run_count` and the counters of
/// empty answers and failures in a row. One transaction.
pub async fn record_run(db: &Db, run: &Run) -> StoreResult<()> {
    let begin = db.begin_write_sql();
    let empty = i32::from(run.status == "empty");
    let failed = i32::from(run.status == "error");
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        sqlx::query(
            "INSERT INTO workspace_schedule_runs (id, schedule_id, workspace_id, tick_at, started_at,
                 duration_ms, status, error_detail, request)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::new_v4())
        .bind(run.schedule_id)
        .bind(run.workspace_id)
        .bind(run.tick_at)
        .bind(run.started_at)
        .bind(run.duration_ms)
        .bind(run.status)
        .bind(&run.error)
        .bind(&run.request)
        .execute(&mut *tx)
        .await?;
        // A skipped fire (the agent was not there) says nothing about the agent's answers: the
        // counters stay as they were.
        sqlx::query(
            "UPDATE workspace_schedules SET last_run_at = $2, run_count = run_count + 1,
                 last_status = $3, last_error = $4,
                 consecutive_empty_runs = CASE WHEN $3 = 'skipped' THEN consecutive_empty_runs
                     WHEN $5 = 1 THEN consecutive_empty_runs + 1 ELSE 0 END,
                 consecutive_failures = CASE WHEN $3 = 'skipped' THEN consecutive_failures
                     WHEN $6 = 1 THEN consecutive_failures + 1 ELSE 0 END,
                 updated_at = $2
             WHERE id = $1",
        )
        .bind(run.schedule_id)
        .bind(run.started_at)
        .bind(run.status)
        .bind(&run.error)
        .bind(empty)
        .bind(failed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// One fire in a schedule's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub started_at: DateTime<Utc>,
    pub tick_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i32>,
    pub status: String,
    pub error_detail: Option<String>,
    pub request: Option<Value>,
}

/// The latest `limit` fires of a schedule, newest first.
pub async fn history(db: &Db, schedule_id: Uuid, limit: i64) -> StoreResult<Vec<RunRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT started_at, tick_at, duration_ms, status, error_detail, request
         FROM workspace_schedule_runs WHERE schedule_id = $1
         ORDER BY started_at DESC, id LIMIT $2",
    ).bind(schedule_id).bind(limit).fetch_all(pool).await?))
}

/// Schedules that need a look: enabled and overdue before `overdue_before`, or failing or empty
/// at least the given number of times in a row. `workspace_id` narrows it to one workspace.
pub async fn unhealthy(
    db: &Db,
    workspace_id: Option<Uuid>,
    overdue_before: DateTime<Utc>,
    failures: i32,
    empties: i32,
) -> StoreResult<Vec<ScheduleRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspace_schedules
         WHERE ($1 IS NULL OR workspace_id = $1) AND enabled
           AND (next_run_at < $2 OR consecutive_failures >= $3 OR consecutive_empty_runs >= $4)
         ORDER BY workspace_id, name LIMIT 1000"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql)
        .bind(workspace_id)
        .bind(overdue_before)
        .bind(failures)
        .bind(empties)
        .fetch_all(pool)
        .await?))
}

/// Counts of schedules: `(all, enabled)`, for one workspace or all.
pub async fn counts(db: &Db, workspace_id: Option<Uuid>) -> StoreResult<(i64, i64)> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN enabled THEN 1 ELSE 0 END), 0)
         FROM workspace_schedules WHERE ($1 IS NULL OR workspace_id = $1)",
    ).bind(workspace_id).fetch_one(pool).await?))
}

/// Template schedules of a workspace, by name.
pub async fn template_names(db: &Db, workspace_id: Uuid) -> StoreResult<Vec<(Uuid, String)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, name FROM workspace_schedules WHERE workspace_id = $1 AND source = 'template'",
    ).bind(workspace_id).fetch_all(pool).await?))
}

/// Overwrites the definition of the template schedule `name` of a workspace, or inserts it;
/// a runtime schedule of that name is left alone (false).
pub async fn upsert_template(db: &Db, row: &ScheduleRow) -> StoreResult<bool> {
    on_db!(db, pool => Ok(sqlx::query(
        "INSERT INTO workspace_schedules (id, workspace_id, name, cron_expr, timezone, prompt,
             enabled, source, next_run_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'template', $8, $9, $9)
         ON CONFLICT (workspace_id, name) DO UPDATE SET
             cron_expr = excluded.cron_expr, timezone = excluded.timezone,
             prompt = excluded.prompt, enabled = excluded.enabled,
             next_run_at = excluded.next_run_at, last_error = NULL,
             updated_at = excluded.updated_at
         WHERE workspace_schedules.source = 'template'",
    )
    .bind(row.id)
    .bind(row.workspace_id)
    .bind(&row.name)
    .bind(&row.cron_expr)
    .bind(&row.timezone)
    .bind(&row.prompt)
    .bind(row.enabled)
    .bind(row.next_run_at)
    .bind(row.created_at)
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

/// The scheduler's last pass, as the lease holder recorded it.
pub async fn last_tick(db: &Db) -> StoreResult<Option<DateTime<Utc>>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT updated_at FROM host_settings WHERE key = $1",
    ).bind(LAST_TICK).fetch_optional(pool).await?))
}

/// Records that the scheduler ran a pass at `at`.
pub async fn set_last_tick(db: &Db, at: DateTime<Utc>) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO host_settings (key, value, updated_at) VALUES ($1, '', $2)
             ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(LAST_TICK)
        .bind(at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

const LAST_TICK: &str = "scheduler_last_tick";
