//! `structure_events`: the append-only log behind `record_and_broadcast`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub event_type: String,
    pub workspace_id: Option<Uuid>,
    pub payload: Option<Value>,
    pub created_at: DateTime<Utc>,
}

impl EventRow {
    /// A new event of `event_type` happening now, with an id of its own: a UUIDv7, time-ordered,
    /// so the log's primary key grows at its end instead of at random pages (as the activity
    /// log's does).
    pub fn new(event_type: &str, workspace_id: Option<Uuid>, payload: Value) -> Self {
        EventRow {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            workspace_id,
            payload: Some(payload),
            created_at: Utc::now(),
        }
    }
}

pub async fn insert(db: &Db, row: &EventRow) -> StoreResult<()> {
    on_db!(db, pool => {
        sqlx::query(
            "INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(row.id)
        .bind(&row.event_type)
        .bind(row.workspace_id)
        .bind(row.payload.as_ref().map(Json))
        .bind(row.created_at)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Five bound values a row; 100 rows a statement stays far below SQLite's variable limit.
pub(super) const ROWS_PER_STATEMENT: usize = 100;

/// Inserts `$rows` (`&[EventRow]`) on `$conn` (a transaction), in multi-row statements.
macro_rules! insert_rows {
    ($conn:expr, $rows:expr) => {{
        let rows: &[$crate::store::events::EventRow] = $rows;
        for chunk in rows.chunks($crate::store::events::ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) ",
            );
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.id)
                    .push_bind(row.event_type.clone())
                    .push_bind(row.workspace_id)
                    .push_bind(row.payload.clone().map(sqlx::types::Json))
                    .push_bind(row.created_at);
            });
            // Row counts vary, so no such statement is kept in the statement cache.
            q.build().persistent(false).execute($conn).await?;
        }
    }};
}
pub(super) use insert_rows;

/// Inserts many events in one transaction, in order.
pub async fn insert_many(db: &Db, rows: &[EventRow]) -> StoreResult<()> {
    on_db!(db, pool => {
        let mut tx = super::begin(pool, None).await?;
        insert_rows!(&mut *tx, rows);
        tx.commit().await?;
        Ok(())
    })
}

/// The newest `limit` events, for one workspace or all, newest first.
pub async fn recent(db: &Db, workspace_id: Option<Uuid>, limit: i64) -> StoreResult<Vec<EventRow>> {
    on_db_read!(db, pool => {
        let rows = match workspace_id {
            Some(id) => sqlx::query_as(
                "SELECT id, event_type, workspace_id, payload, created_at FROM structure_events
                 WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await?,
            None => sqlx::query_as(
                "SELECT id, event_type, workspace_id, payload, created_at FROM structure_events
                 ORDER BY created_at DESC, id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?,
        };
        Ok(rows)
    })
}

/// The newest `limit` events named `event_type`, newest first.
pub async fn latest_of_type(db: &Db, event_type: &str, limit: i64) -> StoreResult<Vec<EventRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, event_type, workspace_id, payload, created_at FROM structure_events
         WHERE event_type = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    ).bind(event_type).bind(limit).fetch_all(pool).await?))
}

/// The `started` events of org imports that carry an `import_id` (every import since end events
/// name their start) and have no end event naming it: their ids and payloads, oldest first.
pub async fn unfinished_imports(db: &Db, started: &str) -> StoreResult<Vec<(Uuid, Value)>> {
    let rows: Vec<(Uuid, Option<Json<Value>>)> = on_db_read!(db, pool => sqlx::query_as(
        "SELECT s.id, s.payload FROM structure_events s
         WHERE s.event_type = $1 AND s.payload ->> 'import_id' IS NOT NULL
           AND NOT EXISTS (
               SELECT 1 FROM structure_events e
               WHERE e.event_type IN ('org.import.completed', 'org.import.failed')
                 AND e.payload ->> 'import_id' = s.payload ->> 'import_id')
         ORDER BY s.created_at",
    ).bind(started).fetch_all(pool).await?);
    Ok(rows
        .into_iter()
        .map(|(id, payload)| (id, payload.map_or(Value::Null, |p| p.0)))
        .collect())
}

/// Whether an end event names the import `import_id`.
pub async fn import_ended(db: &Db, import_id: Uuid) -> StoreResult<bool> {
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM structure_events
         WHERE event_type IN ('org.import.completed', 'org.import.failed')
           AND payload ->> 'import_id' = $1",
    ).bind(import_id.to_string()).fetch_one(pool).await?);
    Ok(n > 0)
}

/// One event by id (a notification too large to carry the event names only its id).
pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<EventRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, event_type, workspace_id, payload, created_at FROM structure_events WHERE id = $1",
    ).bind(id).fetch_optional(pool).await?))
}

/// Events recorded at or after `since`, oldest first, at most `limit`.
pub async fn since(db: &Db, since: DateTime<Utc>, limit: i64) -> StoreResult<Vec<EventRow>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT id, event_type, workspace_id, payload, created_at FROM structure_events
         WHERE created_at >= $1 ORDER BY created_at, id LIMIT $2",
    ).bind(since).bind(limit).fetch_all(pool).await?))
}
