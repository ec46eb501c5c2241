//! `a2a_queue`: messages waiting for a busy agent.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// A message to queue for `workspace_id`.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub workspace_id: Uuid,
    pub caller_id: Option<Uuid>,
    pub priority: i32,
    pub body: Value,
    pub method: String,
    /// The message id: a message already waiting is not queued twice.
    pub idempotency_key: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub caller_id: Option<Uuid>,
    pub priority: i32,
    pub body: Json<Value>,
    pub method: Option<String>,
    pub idempotency_key: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub status: String,
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "id, workspace_id, caller_id, priority, body, method, idempotency_key, enqueued_at,
     dispatched_at, completed_at, expires_at, attempts, status, last_error";

/// The statements of [`enqueue`] on one connection or transaction `$conn` (an expression that
/// may be written more than once, such as `&mut *tx`): the new row's id, or that of the row
/// already holding the message.
macro_rules! insert_or_existing {
    ($conn:expr, $item:expr, $now:expr) => {{
        let item: &$crate::store::a2a_queue::NewItem = $item;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO a2a_queue
                 (id, workspace_id, caller_id, priority, body, method, idempotency_key, enqueued_at, expires_at, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued')
             ON CONFLICT (workspace_id, idempotency_key)
                 WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched')
             DO NOTHING
             RETURNING id",
        )
        .bind(Uuid::new_v4())
        .bind(item.workspace_id)
        .bind(item.caller_id)
        .bind(item.priority)
        .bind(sqlx::types::Json(&item.body))
        .bind(&item.method)
        .bind(&item.idempotency_key)
        .bind($now)
        .bind(item.expires_at)
        .fetch_optional($conn)
        .await?;
        match inserted {
            Some(id) => id,
            None => sqlx::query_scalar(
                "SELECT id FROM a2a_queue
                 WHERE workspace_id = $1 AND idempotency_key = $2 AND status IN ('queued', 'dispatched')",
            )
            .bind(item.workspace_id)
            .bind(&item.idempotency_key)
            .fetch_one($conn)
            .await?,
        }
    }};
}
pub(super) use insert_or_existing;

/// How many messages wait for a workspace, read on `$conn`.
macro_rules! waiting_in {
    ($conn:expr, $workspace:expr) => {{
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM a2a_queue WHERE workspace_id = $1 AND status = 'queued'",
        )
        .bind($workspace)
        .fetch_one($conn)
        .await?;
        count
    }};
}
pub(super) use waiting_in;

/// Queues `item` and returns its id with the number of messages now waiting for the workspace.
/// A message whose id is already queued or being delivered is not added again: the id of the
/// row that holds it is returned. (The A2A path queues through the group-commit writer,
/// [`super::batch::Writer::enqueue`], which runs the same statements.)
pub async fn enqueue(db: &Db, item: &NewItem) -> StoreResult<(Uuid, i64)> {
    let now = Utc::now();
    on_db!(db, pool => {
        let id = insert_or_existing!(pool, item, now);
        Ok((id, waiting_in!(pool, item.workspace_id)))
    })
}

/// How many messages wait for `workspace_id`.
pub async fn waiting(db: &Db, workspace_id: Uuid) -> StoreResult<i64> {
    on_db_read!(db, pool => Ok(waiting_in!(pool, workspace_id)))
}

/// Takes the next deliverable message for `workspace_id` (highest priority, then oldest; expired
/// ones are skipped) and marks it dispatched. Concurrent drains never take the same row: on
/// PostgreSQL rows another drain holds are skipped, SQLite has a single writer.
pub async fn claim_next(db: &Db, workspace_id: Uuid) -> StoreResult<Option<QueueRow>> {
    Ok(claim_batch(db, workspace_id, 1).await?.pop())
}

/// How a delivery from the queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Completed,
    /// Back in the queue for the next drain.
    Retry,
    Failed,
}

/// Records the end of a dispatched message's delivery attempt.
pub async fn settle(db: &Db, id: Uuid, outcome: Settled, error: Option<&str>) -> StoreResult<()> {
    let now = Utc::now();
    let (status, completed_at) = match outcome {
        Settled::Completed => ("completed", Some(now)),
        Settled::Retry => ("queued", None),
        Settled::Failed => ("failed", Some(now)),
    };
    on_db!(db, pool => {
        sqlx::query(
            "UPDATE a2a_queue SET status = $2, completed_at = $3, last_error = COALESCE($4, last_error)
             WHERE id = $1 AND status = 'dispatched'",
        )
        .bind(id)
        .bind(status)
        .bind(completed_at)
        .bind(error)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Drops queued messages whose expiry has passed and returns them.
pub async fn expire(db: &Db) -> StoreResult<Vec<QueueRow>> {
    let now = Utc::now();
    let sql = format!(
        "UPDATE a2a_queue SET status = 'dropped', completed_at = $1,
             last_error = 'expired before the agent had capacity'
         WHERE status = 'queued' AND expires_at IS NOT NULL AND expires_at <= $1
         RETURNING {COLUMNS}"
    );
    on_db!(db, pool => Ok(sqlx::query_as(&sql).bind(now).fetch_all(pool).await?))
}

/// Puts messages left mid-delivery by a host that stopped hard back in the queue: those
/// dispatched before `dispatched_before` (no delivery lasts that long, so no live replica is still
/// delivering them). Returns how many there were.
pub async fn requeue_interrupted(db: &Db, dispatched_before: DateTime<Utc>) -> StoreResult<u64> {
    on_db!(db, pool => {
        let done = sqlx::query(
            "UPDATE a2a_queue SET status = 'queued',
                 last_error = 'the host stopped during delivery'
             WHERE status = 'dispatched' AND dispatched_at < $1",
        )
        .bind(dispatched_before)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
}

/// One queued message of `workspace_id`; `None` for an id of another workspace.
pub async fn get(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<Option<QueueRow>> {
    let sql = format!("SELECT {COLUMNS} FROM a2a_queue WHERE id = $1 AND workspace_id = $2");
    on_db_read!(db, pool => {
        Ok(sqlx::query_as(&sql).bind(id).bind(workspace_id).fetch_optional(pool).await?)
    })
}

/// Drops messages queued before `cutoff` (for one workspace, or all), noting why in
/// `last_error`. Returns how many were dropped.
pub async fn drop_stale(
    db: &Db,
    cutoff: DateTime<Utc>,
    workspace_id: Option<Uuid>,
) -> StoreResult<u64> {
    let now = Utc::now();
    on_db!(db, pool => {
        let done = sqlx::query(
            "UPDATE a2a_queue SET status = 'dropped', completed_at = $1,
                 last_error = COALESCE(last_error || '; ', '') || 'dropped as stale by an operator'
             WHERE status = 'queued' AND enqueued_at < $2 AND ($3 IS NULL OR workspace_id = $3)",
        )
        .bind(now)
        .bind(cutoff)
        .bind(workspace_id)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
}

/// Takes up to `limit` deliverable messages of `workspace_id` (for a drain, or for a poll-mode
/// agent fetching its inbox): highest priority, then oldest, expired ones skipped, each marked
/// dispatched. Concurrent claims never take the same row: on PostgreSQL rows another claim holds
/// are skipped, SQLite has a single writer.
/// A message fetched and never acknowledged is queued again by [`requeue_interrupted`], so it is
/// offered again: delivery is at least once.
pub async fn claim_batch(db: &Db, workspace_id: Uuid, limit: i64) -> StoreResult<Vec<QueueRow>> {
    let now = Utc::now();
    let lock = match db.backend() {
        super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        super::Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE a2a_queue SET status = 'dispatched', dispatched_at = $2, attempts = attempts + 1
         WHERE id IN (
             SELECT id FROM a2a_queue
             WHERE workspace_id = $1 AND status = 'queued' AND (expires_at IS NULL OR expires_at > $2)
             ORDER BY priority DESC, enqueued_at ASC
             LIMIT $3{lock})
         RETURNING {COLUMNS}"
    );
    let mut rows: Vec<QueueRow> = on_db!(db, pool => {
        sqlx::query_as(&sql)
            .bind(workspace_id)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    // RETURNING keeps no order.
    rows.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.enqueued_at.cmp(&b.enqueued_at))
    });
    Ok(rows)
}

/// How an agent's acknowledgement of an inbox message went.
#[derive(Debug, Clone)]
pub enum Acked {
    /// This call settled it; the row as settled.
    Now(Box<QueueRow>),
    /// It had been settled already (a retried ack, or it expired or was dropped first): its status.
    Already(String),
}

/// Settles a message of `workspace_id`'s inbox as its agent says: `failed` with `error`, else
/// `completed`, whether or not it was fetched first. `None` for a message that does not exist
/// (or is another workspace's).
pub async fn ack(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    error: Option<&str>,
) -> StoreResult<Option<Acked>> {
    let status = if error.is_some() {
        "failed"
    } else {
        "completed"
    };
    let sql = format!(
        "UPDATE a2a_queue SET status = $3, completed_at = $4, last_error = COALESCE($5, last_error)
         WHERE id = $1 AND workspace_id = $2 AND status IN ('queued', 'dispatched')
         RETURNING {COLUMNS}"
    );
    let settled: Option<QueueRow> = on_db!(db, pool => {
        sqlx::query_as(&sql)
            .bind(id)
            .bind(workspace_id)
            .bind(status)
            .bind(Utc::now())
            .bind(error)
            .fetch_optional(pool)
            .await?
    });
    Ok(match settled {
        Some(row) => Some(Acked::Now(Box::new(row))),
        None => get(db, workspace_id, id)
            .await?
            .map(|row| Acked::Already(row.status)),
    })
}
