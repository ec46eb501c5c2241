//! `workspaces` and `canvas_layouts`: the org tree, its hierarchy queries and registry columns.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Constraint, Db, StoreError, StoreResult, on_db, on_db_read};

/// The runtime name of a workspace whose agent runs outside the host.
pub const EXTERNAL_RUNTIME: &str = "external";

pub use super::status::{Cause, Status};

/// Binding lists longer than this are split; SQLite caps the variables of one statement.
const ID_CHUNK: usize = 500;

/// A workspace row joined with its canvas layout.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub name: String,
    pub role: Option<String>,
    pub tier: i32,
    pub status: Status,
    pub agent_card: Option<Value>,
    pub url: Option<String>,
    pub parent_id: Option<Uuid>,
    pub forwarded_to: Option<Uuid>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub last_error_rate: f64,
    pub last_sample_error: Option<String>,
    pub active_tasks: i32,
    pub uptime_seconds: i64,
    pub current_task: Option<String>,
    pub awareness_namespace: Option<String>,
    pub runtime: String,
    pub workspace_dir: Option<String>,
    pub workspace_access: String,
    pub budget_limit: Option<i64>,
    /// Cents spent in `spend_period`: see [`WorkspaceRow::spend_in`].
    pub monthly_spend: i64,
    /// The month `monthly_spend` counts (`YYYY-MM`), `None` before any spend.
    pub spend_period: Option<String>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub max_concurrent_tasks: i32,
    pub update_tier: String,
    pub removed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub x: f64,
    pub y: f64,
    pub collapsed: bool,
    /// Minutes of idleness after which the hibernation monitor stops the agent (`None`: never).
    pub hibernation_idle_minutes: Option<i32>,
    /// `push` (the host sends A2A messages to `url`) or `poll` (they wait in the queue for the
    /// agent to fetch): what the agent chose when it registered.
    pub delivery_mode: String,
}

/// [`WorkspaceRow::delivery_mode`] of an agent that fetches its messages.
pub const POLL: &str = "poll";
/// [`WorkspaceRow::delivery_mode`] of an agent the host sends messages to.
pub const PUSH: &str = "push";

impl WorkspaceRow {
    /// Whether the agent fetches its messages instead of being sent them.
    pub fn polls(&self) -> bool {
        self.delivery_mode == POLL
    }

    /// Cents spent in `period` (`YYYY-MM`): a spend counted in another month is none of it.
    pub fn spend_in(&self, period: &str) -> i64 {
        if self.spend_period.as_deref() == Some(period) {
            self.monthly_spend
        } else {
            0
        }
    }
}

const SELECT_WORKSPACE: &str =
    "SELECT w.id, w.name, w.role, w.tier, w.status, w.agent_card, w.url, w.parent_id,
    w.forwarded_to, w.last_heartbeat_at, w.last_error_rate, w.last_sample_error, w.active_tasks,
    w.uptime_seconds, w.current_task, w.awareness_namespace, w.runtime, w.workspace_dir,
    w.workspace_access, w.budget_limit, w.monthly_spend, w.spend_period, w.last_outbound_at, w.max_concurrent_tasks,
    w.update_tier, w.removed_at, w.created_at, w.updated_at,
    COALESCE(c.x, 0.0) AS x, COALESCE(c.y, 0.0) AS y, COALESCE(c.collapsed, FALSE) AS collapsed,
    w.hibernation_idle_minutes, w.delivery_mode
    FROM workspaces w LEFT JOIN canvas_layouts c ON c.workspace_id = w.id";

/// Everything needed to insert a workspace.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: Uuid,
    pub name: String,
    pub role: Option<String>,
    pub tier: i32,
    pub status: Status,
    pub runtime: String,
    pub url: Option<String>,
    pub parent_id: Option<Uuid>,
    pub workspace_dir: Option<String>,
    pub workspace_access: String,
    pub budget_limit: Option<i64>,
    pub max_concurrent_tasks: i32,
    pub hibernation_idle_minutes: Option<i32>,
    pub x: f64,
    pub y: f64,
}

/// An already-encrypted secret to store with a new workspace.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub key: String,
    pub ciphertext: Vec<u8>,
    pub version: i32,
}

/// Inserts the workspace, its canvas layout, its config row and its initial secrets in one
/// transaction: either all of it exists afterwards or none of it ([`insert_many`] of one).
pub async fn insert(
    db: &Db,
    ws: &NewWorkspace,
    secrets: &[SealedSecret],
    config: &Value,
) -> StoreResult<()> {
    let item = BatchItem {
        row: ws,
        config,
        secrets,
        token: None,
    };
    insert_many(db, &[item]).await
}

/// A workspace token stored with a batch (the hash and prefix of a freshly minted token).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: Uuid,
    pub hash: [u8; 32],
    pub prefix: String,
}

/// One workspace of [`insert_many`]: what [`insert`] stores for it, plus an optional token.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub row: &'a NewWorkspace,
    pub config: &'a Value,
    pub secrets: &'a [SealedSecret],
    pub token: Option<&'a NewToken>,
}

/// Inserts many workspaces with their layouts, config rows, secrets and tokens in one
/// transaction, a few multi-row statements per table: either every row exists afterwards or
/// none does. Parents must come before their children (rows may point at rows earlier in the
/// batch); a live sibling name already taken fails the whole batch with
/// [`Constraint::WorkspaceNameTaken`].
pub async fn insert_many(db: &Db, items: &[BatchItem<'_>]) -> StoreResult<()> {
    insert_many_rows(db, items).await.map_err(parent_missing)
}

async fn insert_many_rows(db: &Db, items: &[BatchItem<'_>]) -> StoreResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let secrets: Vec<(Uuid, &SealedSecret)> = items
        .iter()
        .flat_map(|item| item.secrets.iter().map(|s| (item.row.id, s)))
        .collect();
    let tokens: Vec<(Uuid, &NewToken)> = items
        .iter()
        .filter_map(|item| item.token.map(|t| (item.row.id, t)))
        .collect();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        // Statements differ in their row count, so none is kept in the statement cache.
        for chunk in items.chunks(super::MAX_BINDS / 16) {
            let mut q = QueryBuilder::new(
                "INSERT INTO workspaces (id, name, role, tier, status, runtime, url, parent_id, workspace_dir,
                    workspace_access, budget_limit, max_concurrent_tasks, hibernation_idle_minutes,
                    awareness_namespace, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, item| {
                let ws = item.row;
                b.push_bind(ws.id)
                    .push_bind(&ws.name)
                    .push_bind(&ws.role)
                    .push_bind(ws.tier)
                    .push_bind(ws.status)
                    .push_bind(&ws.runtime)
                    .push_bind(&ws.url)
                    .push_bind(ws.parent_id)
                    .push_bind(&ws.workspace_dir)
                    .push_bind(&ws.workspace_access)
                    .push_bind(ws.budget_limit)
                    .push_bind(ws.max_concurrent_tasks)
                    .push_bind(ws.hibernation_idle_minutes)
                    .push_bind(format!("workspace:{}", ws.id))
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for chunk in items.chunks(super::MAX_BINDS / 3) {
            let mut q = QueryBuilder::new("INSERT INTO canvas_layouts (workspace_id, x, y, collapsed) ");
            q.push_values(chunk, |mut b, item| {
                b.push_bind(item.row.id).push_bind(item.row.x).push_bind(item.row.y).push("FALSE");
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for chunk in items.chunks(super::MAX_BINDS / 3) {
            let mut q = QueryBuilder::new("INSERT INTO workspace_config (workspace_id, data, updated_at) ");
            q.push_values(chunk, |mut b, item| {
                b.push_bind(item.row.id).push_bind(Json(item.config)).push_bind(now);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for chunk in secrets.chunks(super::MAX_BINDS / 7) {
            let mut q = QueryBuilder::new(
                "INSERT INTO workspace_secrets (id, workspace_id, key, encrypted_value, encryption_version, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, (workspace, secret)| {
                b.push_bind(Uuid::new_v4())
                    .push_bind(*workspace)
                    .push_bind(&secret.key)
                    .push_bind(&secret.ciphertext)
                    .push_bind(secret.version)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for chunk in tokens.chunks(super::MAX_BINDS / 5) {
            let mut q = QueryBuilder::new(
                "INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at) ",
            );
            q.push_values(chunk, |mut b, (workspace, token)| {
                b.push_bind(token.id)
                    .push_bind(*workspace)
                    .push_bind(&token.hash[..])
                    .push_bind(&token.prefix)
                    .push_bind(now);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// A live workspace as the org import matches it: by parent and name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveName {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub name: String,
    pub status: Status,
}

/// The live workspaces called any of `names`, wherever they are in the tree.
pub async fn live_named(db: &Db, names: &[&str]) -> StoreResult<Vec<LiveName>> {
    on_db_read!(db, pool => {
        let mut out = Vec::new();
        for chunk in names.chunks(ID_CHUNK) {
            let mut q = QueryBuilder::new(
                "SELECT id, parent_id, name, status FROM workspaces WHERE status <> 'removed' AND name IN (",
            );
            let mut list = q.separated(", ");
            for name in chunk { list.push_bind(*name); }
            q.push(")");
            out.extend(q.build_query_as::<LiveName>().persistent(false).fetch_all(pool).await?);
        }
        Ok(out)
    })
}

/// In `insert` and `update` the only workspace reference the input can break is the parent
/// (the other rows written point at the row being written). SQLite does not name the foreign
/// key that failed, so the store reports it as a missing workspace; here it is the parent.
fn parent_missing(err: StoreError) -> StoreError {
    match err {
        StoreError::Constraint(Constraint::WorkspaceMissing) => {
            StoreError::Constraint(Constraint::WorkspaceParentMissing)
        }
        other => other,
    }
}

/// Every workspace that is not removed, oldest first.
pub async fn list_live(db: &Db) -> StoreResult<Vec<WorkspaceRow>> {
    let sql = format!("{SELECT_WORKSPACE} WHERE w.status <> 'removed' ORDER BY w.created_at, w.id");
    on_db_read!(db, pool => Ok(sqlx::query_as::<_, WorkspaceRow>(&sql).fetch_all(pool).await?))
}

/// One workspace, removed or not.
pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<WorkspaceRow>> {
    let sql = format!("{SELECT_WORKSPACE} WHERE w.id = $1");
    on_db_read!(db, pool => Ok(sqlx::query_as::<_, WorkspaceRow>(&sql).bind(id).fetch_optional(pool).await?))
}

/// Direct children that are not removed: `(id, name)`, oldest first.
pub async fn live_children(db: &Db, id: Uuid) -> StoreResult<Vec<(Uuid, String)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, name FROM workspaces WHERE parent_id = $1 AND status <> 'removed' ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?))
}

/// `(id, parent_id)` for `id` and its ancestors, nearest first, at most `max_depth` rows.
pub async fn ancestry(db: &Db, id: Uuid, max_depth: i64) -> StoreResult<Vec<(Uuid, Option<Uuid>)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "WITH RECURSIVE chain(id, parent_id, depth) AS (
             SELECT id, parent_id, 0 FROM workspaces WHERE id = $1
             UNION ALL
             SELECT w.id, w.parent_id, chain.depth + 1 FROM workspaces w
             JOIN chain ON w.id = chain.parent_id WHERE chain.depth < $2
         )
         SELECT id, parent_id FROM chain ORDER BY depth",
    )
    .bind(id)
    .bind(max_depth - 1)
    .fetch_all(pool)
    .await?))
}

/// `root` and every descendant, whatever their status, root first. A `UNION` (not `UNION ALL`)
/// keeps the walk finite even if a cycle ever reached the table.
pub async fn subtree(db: &Db, root: Uuid) -> StoreResult<Vec<Uuid>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "WITH RECURSIVE tree(id, depth) AS (
             SELECT id, 0 FROM workspaces WHERE id = $1
             UNION
             SELECT w.id, tree.depth + 1 FROM workspaces w JOIN tree ON w.parent_id = tree.id
             WHERE tree.depth < 10000
         )
         SELECT id FROM tree GROUP BY id ORDER BY MIN(depth)",
    )
    .bind(root)
    .fetch_all(pool)
    .await?))
}

/// Marks `ids` removed in one transaction: status, tombstone time, canvas layout dropped, every
/// live token revoked, every schedule disabled. Returns the ids that were live before (those that changed).
pub async fn mark_removed(db: &Db, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let mut changed = Vec::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let mut q = QueryBuilder::new("UPDATE workspaces SET status = ");
            q.push_bind(Status::Removed).push(", removed_at = ");
            q.push_bind(now).push(", updated_at = ").push_bind(now);
            q.push(", url = NULL WHERE status IN (");
            let mut list = q.separated(", ");
            for status in Status::sources(Status::Removed, Cause::Delete) { list.push_bind(status); }
            q.push(") AND id IN (");
            let mut list = q.separated(", ");
            for id in chunk { list.push_bind(*id); }
            q.push(") RETURNING id");
            let rows: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            changed.extend(rows);

            let mut q = QueryBuilder::new("DELETE FROM canvas_layouts WHERE workspace_id IN (");
            let mut list = q.separated(", ");
            for id in chunk { list.push_bind(*id); }
            q.push(")");
            q.build().execute(&mut *tx).await?;

            let mut q = QueryBuilder::new("UPDATE workspace_auth_tokens SET revoked_at = ");
            q.push_bind(now).push(" WHERE revoked_at IS NULL AND workspace_id IN (");
            let mut list = q.separated(", ");
            for id in chunk { list.push_bind(*id); }
            q.push(")");
            q.build().execute(&mut *tx).await?;

            // A removed workspace's schedules stop with it (the scheduler never sees them due).
            let mut q = QueryBuilder::new("UPDATE workspace_schedules SET enabled = FALSE, next_run_at = NULL, updated_at = ");
            q.push_bind(now).push(" WHERE workspace_id IN (");
            let mut list = q.separated(", ");
            for id in chunk { list.push_bind(*id); }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(changed)
    })
}

/// Hard-deletes `ids` (rows of dependent tables go with them through `ON DELETE CASCADE`).
/// References from outside the set are cleared first so no foreign key blocks the delete.
pub async fn purge(db: &Db, ids: &[Uuid]) -> StoreResult<u64> {
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let mut deleted = 0;
        for column in ["forwarded_to", "parent_id"] {
            for chunk in ids.chunks(ID_CHUNK) {
                let mut q = QueryBuilder::new(format!("UPDATE workspaces SET {column} = NULL WHERE {column} IN ("));
                let mut list = q.separated(", ");
                for id in chunk { list.push_bind(*id); }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
        }
        for chunk in ids.chunks(ID_CHUNK) {
            let mut q = QueryBuilder::new("DELETE FROM workspaces WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk { list.push_bind(*id); }
            q.push(")");
            deleted += q.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    })
}

/// The fields PATCH may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub role: Option<Option<String>>,
    pub tier: Option<i32>,
    pub runtime: Option<String>,
    pub parent_id: Option<Option<Uuid>>,
    pub workspace_dir: Option<Option<String>>,
    pub position: Option<(f64, f64)>,
    pub collapsed: Option<bool>,
    pub update_tier: Option<String>,
    pub hibernation_idle_minutes: Option<Option<i32>>,
}

/// Applies every field of `patch` in one transaction. Returns false when no live row matched.
pub async fn update(db: &Db, id: Uuid, patch: &WorkspacePatch) -> StoreResult<bool> {
    update_row(db, id, patch).await.map_err(parent_missing)
}

async fn update_row(db: &Db, id: Uuid, patch: &WorkspacePatch) -> StoreResult<bool> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let mut q = QueryBuilder::new("UPDATE workspaces SET updated_at = ");
        q.push_bind(now);
        if let Some(name) = &patch.name { q.push(", name = ").push_bind(name.clone()); }
        if let Some(role) = &patch.role { q.push(", role = ").push_bind(role.clone()); }
        if let Some(tier) = patch.tier { q.push(", tier = ").push_bind(tier); }
        if let Some(runtime) = &patch.runtime { q.push(", runtime = ").push_bind(runtime.clone()); }
        if let Some(parent) = patch.parent_id { q.push(", parent_id = ").push_bind(parent); }
        if let Some(dir) = &patch.workspace_dir { q.push(", workspace_dir = ").push_bind(dir.clone()); }
        if let Some(tier) = &patch.update_tier { q.push(", update_tier = ").push_bind(tier.clone()); }
        if let Some(minutes) = patch.hibernation_idle_minutes {
            q.push(", hibernation_idle_minutes = ").push_bind(minutes);
        }
        q.push(" WHERE id = ").push_bind(id).push(" AND status <> 'removed'");
        let matched = q.build().execute(&mut *tx).await?.rows_affected() > 0;
        if matched && (patch.position.is_some() || patch.collapsed.is_some()) {
            // Upsert the layout; fields not in the patch keep their stored value.
            sqlx::query(
                "INSERT INTO canvas_layouts (workspace_id, x, y, collapsed) VALUES ($1, 0, 0, FALSE)
                 ON CONFLICT (workspace_id) DO NOTHING",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if let Some((x, y)) = patch.position {
                sqlx::query("UPDATE canvas_layouts SET x = $2, y = $3 WHERE workspace_id = $1")
                    .bind(id).bind(x).bind(y).execute(&mut *tx).await?;
            }
            if let Some(collapsed) = patch.collapsed {
                sqlx::query("UPDATE canvas_layouts SET collapsed = $2 WHERE workspace_id = $1")
                    .bind(id).bind(collapsed).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(matched)
    })
}

/// A registration: the agent's URL and card, and the moment it registered.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `None` for a poll-mode agent that serves no URL.
    pub url: Option<String>,
    pub agent_card: Option<Value>,
    /// [`PUSH`] or [`POLL`]; `None` keeps what the row holds.
    pub delivery_mode: Option<&'static str>,
}

/// Records a registration on a live row: URL (unless the host already stored the runtime's own
/// loopback URL for it), card, `online`, heartbeat time, and an uptime of zero (a new session:
/// the last one's uptime would otherwise stand until the first heartbeat). Returns the stored
/// URL (empty when none) and delivery mode, or `None` when the row is missing or removed.
pub async fn register(
    db: &Db,
    id: Uuid,
    reg: &Registration,
) -> StoreResult<Option<(String, String)>> {
    let now = Utc::now();
    on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "UPDATE workspaces SET url = CASE WHEN url LIKE 'http://127.0.0.1:%' THEN url ELSE ",
        );
        q.push_bind(&reg.url).push(" END, agent_card = ").push_bind(reg.agent_card.as_ref().map(Json));
        q.push(", delivery_mode = COALESCE(").push_bind(reg.delivery_mode).push(", delivery_mode)");
        q.push(", status = ").push_bind(Status::Online);
        q.push(", last_heartbeat_at = ").push_bind(now).push(", uptime_seconds = 0, updated_at = ").push_bind(now);
        q.push(" WHERE id = ").push_bind(id).push(" AND status IN (");
        let mut list = q.separated(", ");
        for status in Status::sources(Status::Online, Cause::Registration) { list.push_bind(status); }
        q.push(") RETURNING url, delivery_mode");
        let stored: Option<(Option<String>, String)> = q.build_query_as().fetch_optional(pool).await?;
        Ok(stored.map(|(url, mode)| (url.unwrap_or_default(), mode)))
    })
}

/// What an agent reports in a heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReport {
    pub error_rate: f64,
    pub sample_error: Option<String>,
    pub active_tasks: i32,
    pub current_task: Option<String>,
    pub uptime_seconds: i64,
    pub monthly_spend: Option<i64>,
}

/// The row before and after a heartbeat was applied.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    pub status_before: String,
    pub task_before: Option<String>,
    /// How many tasks the agent may run at once (`max_concurrent_tasks`).
    pub max_concurrent_tasks: i32,
}

/// Stores a heartbeat's counters and time on a live row. Returns what the row held before, or
/// `None` when the row is missing or removed.
pub async fn record_heartbeat(
    db: &Db,
    id: Uuid,
    report: &HeartbeatReport,
) -> StoreResult<Option<HeartbeatOutcome>> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let before: Option<(String, Option<String>, i32)> =
            sqlx::query_as("SELECT status, current_task, max_concurrent_tasks FROM workspaces WHERE id = $1 AND status <> 'removed'")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status_before, task_before, max_concurrent_tasks)) = before else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE workspaces SET last_heartbeat_at = $2, last_error_rate = $3, last_sample_error = $4,
                 active_tasks = $5, current_task = $6, uptime_seconds = $7,
                 updated_at = $2
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(report.error_rate)
        .bind(&report.sample_error)
        .bind(report.active_tasks)
        .bind(&report.current_task)
        .bind(report.uptime_seconds)
        .execute(&mut *tx)
        .await?;
        // The agent's own estimate of this month's spend raises the host's, never lowers it.
        if let Some(cents) = report.monthly_spend {
            sqlx::query(super::usage::RAISE_SPEND)
                .bind(id)
                .bind(super::usage::period_of(now))
                .bind(cents)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(HeartbeatOutcome { status_before, task_before, max_concurrent_tasks }))
    })
}

/// The statuses an update may move a row from: those the table allows for `to` and `cause`,
/// narrowed to `from` when the caller saw one (a compare-and-set), empty when it may not move.
fn sources(from: Option<Status>, to: Status, cause: Cause) -> Vec<Status> {
    let allowed = Status::sources(to, cause);
    match from {
        Some(from) if allowed.contains(&from) => vec![from],
        Some(from) => {
            tracing::error!(from = %from, to = %to, ?cause, "a status move the transition table does not hold");
            Vec::new()
        }
        None => allowed,
    }
}

/// Moves `id` to `to` for `cause`, from any status the transition table allows (only from
/// `from` when given: a compare-and-set on what the caller read); true when it moved.
pub async fn transition(
    db: &Db,
    id: Uuid,
    from: Option<Status>,
    to: Status,
    cause: Cause,
) -> StoreResult<bool> {
    let from = sources(from, to, cause);
    if from.is_empty() {
        return Ok(false);
    }
    let now = Utc::now();
    on_db!(db, pool => {
        let mut q = QueryBuilder::new("UPDATE workspaces SET status = ");
        q.push_bind(to).push(", updated_at = ").push_bind(now).push(" WHERE id = ").push_bind(id);
        q.push(" AND status IN (");
        let mut list = q.separated(", ");
        for status in &from { list.push_bind(*status); }
        q.push(")");
        Ok(q.build().execute(pool).await?.rows_affected() > 0)
    })
}

/// Marks online or degraded workspaces whose last heartbeat is older than `cutoff` (or that never
/// sent one since going online before `cutoff`) offline. Returns the ids it changed.
pub async fn mark_stale_offline(db: &Db, cutoff: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
    let now = Utc::now();
    on_db!(db, pool => {
        let mut q = QueryBuilder::new("UPDATE workspaces SET status = ");
        q.push_bind(Status::Offline).push(", updated_at = ").push_bind(now).push(" WHERE status IN (");
        let mut list = q.separated(", ");
        for status in Status::sources(Status::Offline, Cause::Liveness) { list.push_bind(status); }
        q.push(") AND COALESCE(last_heartbeat_at, updated_at) < ").push_bind(cutoff).push(" RETURNING id");
        Ok(q.build_query_scalar().fetch_all(pool).await?)
    })
}

/// Stores a new agent card on a live row; false when no live row matched.
pub async fn update_card(db: &Db, id: Uuid, card: &Value) -> StoreResult<bool> {
    let now = Utc::now();
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspaces SET agent_card = $2, updated_at = $3 WHERE id = $1 AND status <> 'removed'",
    )
    .bind(id)
    .bind(Json(card))
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

/// Live workspaces that share `parent` (roots when `None`), including `exclude` unless filtered.
pub async fn live_with_parent(db: &Db, parent: Option<Uuid>) -> StoreResult<Vec<WorkspaceRow>> {
    let sql = match parent {
        Some(_) => format!(
            "{SELECT_WORKSPACE} WHERE w.status <> 'removed' AND w.parent_id = $1 ORDER BY w.created_at, w.id"
        ),
        None => format!(
            "{SELECT_WORKSPACE} WHERE w.status <> 'removed' AND w.parent_id IS NULL ORDER BY w.created_at, w.id"
        ),
    };
    on_db_read!(db, pool => {
        let q = sqlx::query_as::<_, WorkspaceRow>(&sql);
        let q = match parent { Some(p) => q.bind(p), None => q };
        Ok(q.fetch_all(pool).await?)
    })
}

/// The live workspace called `name` under `parent` (a root when `None`).
pub async fn live_child_named(
    db: &Db,
    parent: Option<Uuid>,
    name: &str,
) -> StoreResult<Option<WorkspaceRow>> {
    let sql = match parent {
        Some(_) => format!(
            "{SELECT_WORKSPACE} WHERE w.status <> 'removed' AND w.name = $1 AND w.parent_id = $2"
        ),
        None => format!(
            "{SELECT_WORKSPACE} WHERE w.status <> 'removed' AND w.name = $1 AND w.parent_id IS NULL"
        ),
    };
    on_db_read!(db, pool => {
        let q = sqlx::query_as::<_, WorkspaceRow>(&sql).bind(name);
        let q = match parent { Some(p) => q.bind(p), None => q };
        Ok(q.fetch_optional(pool).await?)
    })
}

/// Ids of live workspaces that are not paused or external (the ones a restart would touch).
pub async fn restartable_ids(db: &Db) -> StoreResult<Vec<Uuid>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT id FROM workspaces WHERE status NOT IN ('removed', 'paused', 'hibernated', 'hibernating')
             AND runtime <> 'external' ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?))
}

/// Stores (or clears) the URL the host reaches the agent on.
pub async fn set_url(db: &Db, id: Uuid, url: Option<&str>) -> StoreResult<bool> {
    let now = Utc::now();
    on_db!(db, pool => Ok(sqlx::query(
        "UPDATE workspaces SET url = $2, updated_at = $3 WHERE id = $1 AND status <> 'removed'",
    )
    .bind(id)
    .bind(url)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected() > 0))
}

/// [`transition`] for a move that leaves no agent running: also clears the URL (the agent is
/// gone) and sets `last_sample_error` when given; true when it moved.
pub async fn transition_stopped(
    db: &Db,
    id: Uuid,
    from: Option<Status>,
    to: Status,
    cause: Cause,
    sample_error: Option<&str>,
) -> StoreResult<bool> {
    let from = sources(from, to, cause);
    if from.is_empty() {
        return Ok(false);
    }
    let now = Utc::now();
    on_db!(db, pool => {
        let mut q = QueryBuilder::new("UPDATE workspaces SET status = ");
        q.push_bind(to).push(", url = NULL, updated_at = ").push_bind(now);
        if let Some(error) = sample_error {
            q.push(", last_sample_error = ").push_bind(error);
        }
        q.push(" WHERE id = ").push_bind(id).push(" AND status IN (");
        let mut list = q.separated(", ");
        for status in &from { list.push_bind(*status); }
        q.push(")");
        Ok(q.build().execute(pool).await?.rows_affected() > 0)
    })
}

/// Workspaces in `status` whose last change is older than `cutoff`, with their runtime.
pub async fn in_status_since(
    db: &Db,
    status: Status,
    cutoff: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, String)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, runtime FROM workspaces WHERE status = $1 AND updated_at < $2 ORDER BY updated_at",
    )
    .bind(status)
    .bind(cutoff)
    .fetch_all(pool)
    .await?))
}

/// A workspace the hibernation monitor may stop: online or degraded, not external, no task
/// running, with a positive `hibernation_idle_minutes`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdleCandidate {
    pub id: Uuid,
    pub hibernation_idle_minutes: i32,
    pub created_at: DateTime<Utc>,
    pub last_outbound_at: Option<DateTime<Utc>>,
}

/// The workspaces the hibernation monitor looks at (see [`IdleCandidate`]).
pub async fn idle_candidates(db: &Db) -> StoreResult<Vec<IdleCandidate>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, hibernation_idle_minutes, created_at, last_outbound_at FROM workspaces
         WHERE status IN ('online', 'degraded') AND runtime <> 'external' AND active_tasks = 0
           AND hibernation_idle_minutes > 0
         ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?))
}

/// Online or degraded workspaces the host runs (not external): the ones a health sweep checks.
pub async fn running_ids(db: &Db) -> StoreResult<Vec<Uuid>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT id FROM workspaces WHERE status IN ('online', 'degraded') AND runtime <> 'external'
         ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?))
}
