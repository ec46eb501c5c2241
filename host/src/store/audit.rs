//! `audit_events`: the HMAC-chained audit ledger (the top-level `audit` module says what is
//! sealed and how). Appends are serialised (SQLite's one writer; a transaction-scoped advisory lock on
//! PostgreSQL, whichever replica appends), so each row reads the chain's head and extends it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// One row of the ledger as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub actor: String,
    pub workspace_id: Option<Uuid>,
    pub target: Option<String>,
    /// JSON text, exactly as sealed.
    pub detail: String,
    pub created_at: DateTime<Utc>,
    pub prev_hmac: String,
    pub hmac: String,
}

const COLUMNS: &str =
    "seq, id, event_type, actor, workspace_id, target, detail, created_at, prev_hmac, hmac";

/// Serialises appends across PostgreSQL replicas ("MOLAUDIT" as a number).
const APPEND_LOCK: i64 = 0x4d4f_4c41_5544_4954;

/// Appends `row` at the chain's head: its `seq` and `prev_hmac` are set here from the head's,
/// then `seal` computes its `hmac`. The stored row.
pub async fn append(
    db: &Db,
    mut row: AuditRow,
    seal: impl Fn(&AuditRow) -> String + Send,
) -> StoreResult<AuditRow> {
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        if matches!(db, Db::Postgres(_)) {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hmac FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (seq, prev) = head.unwrap_or((0, String::new()));
        row.seq = seq + 1;
        row.prev_hmac = prev;
        row.hmac = seal(&row);
        sqlx::query(
            "INSERT INTO audit_events (seq, id, event_type, actor, workspace_id, target, detail, created_at, prev_hmac, hmac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(row.seq)
        .bind(row.id)
        .bind(&row.event_type)
        .bind(&row.actor)
        .bind(row.workspace_id)
        .bind(&row.target)
        .bind(&row.detail)
        .bind(row.created_at)
        .bind(&row.prev_hmac)
        .bind(&row.hmac)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    })
}

/// A workspace's rows, newest first: before `before` (a `seq`) when given, of `event_type`
/// when given, at most `limit`.
pub async fn list(
    db: &Db,
    workspace_id: Uuid,
    event_type: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE workspace_id = $1
           AND ($2 IS NULL OR event_type = $2) AND ($3 IS NULL OR seq < $3)
         ORDER BY seq DESC LIMIT $4"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql)
        .bind(workspace_id)
        .bind(event_type)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await?))
}

/// The chain in order from `after` (a `seq`, exclusive), at most `limit` rows.
pub async fn page(db: &Db, after: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
    let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?))
}
