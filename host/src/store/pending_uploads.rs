//! `pending_uploads`: chat attachments for a poll-mode agent, which has no files the host can
//! write into. They wait here until the agent downloads and acknowledges them.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// How long an unacknowledged file waits for its agent.
pub const KEEP_UNACKED: Duration = Duration::hours(24);
/// How long an acknowledged file is kept (a retried download still finds it).
pub const KEEP_ACKED: Duration = Duration::hours(1);

/// A file to store for `workspace_id`.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub file_id: Uuid,
    pub workspace_id: Uuid,
    pub filename: String,
    pub mimetype: String,
    pub content: Vec<u8>,
}

/// A stored file's description, without its bytes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadRow {
    pub file_id: Uuid,
    pub workspace_id: Uuid,
    pub filename: String,
    pub mimetype: String,
    pub size_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "file_id, workspace_id, filename, mimetype, size_bytes, created_at, fetched_at, acked_at, expires_at";

/// Stores `uploads` in one transaction: all of them or none.
pub async fn insert_many(db: &Db, uploads: &[NewUpload]) -> StoreResult<()> {
    let now = Utc::now();
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        for (i, upload) in (0i64..).zip(uploads) {
            // One microsecond apart, so "oldest first" keeps the order they were sent in.
            let at = now + Duration::microseconds(i);
            sqlx::query(
                "INSERT INTO pending_uploads
                     (file_id, workspace_id, content, size_bytes, filename, mimetype, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(upload.file_id)
            .bind(upload.workspace_id)
            .bind(&upload.content)
            .bind(i64::try_from(upload.content.len()).unwrap_or(i64::MAX))
            .bind(&upload.filename)
            .bind(&upload.mimetype)
            .bind(at)
            .bind(at + KEEP_UNACKED)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// The files waiting for `workspace_id`'s agent (not acknowledged, not expired), oldest first.
pub async fn waiting(db: &Db, workspace_id: Uuid) -> StoreResult<Vec<UploadRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pending_uploads
         WHERE workspace_id = $1 AND acked_at IS NULL AND expires_at > $2
         ORDER BY created_at, file_id"
    );
    on_db_read!(db, pool => {
        Ok(sqlx::query_as(&sql).bind(workspace_id).bind(Utc::now()).fetch_all(pool).await?)
    })
}

/// A file of `workspace_id` with its bytes, unless it expired or was acknowledged. `fetched`
/// records the first download (the agent's; the operator's look does not count).
pub async fn content(
    db: &Db,
    workspace_id: Uuid,
    file_id: Uuid,
    fetched: bool,
) -> StoreResult<Option<(UploadRow, Vec<u8>)>> {
    let now = Utc::now();
    let sql = format!(
        "SELECT {COLUMNS}, content FROM pending_uploads
         WHERE file_id = $1 AND workspace_id = $2 AND acked_at IS NULL AND expires_at > $3"
    );
    #[derive(sqlx::FromRow)]
    struct WithContent {
        #[sqlx(flatten)]
        row: UploadRow,
        content: Vec<u8>,
    }
    let found: Option<WithContent> = on_db_read!(db, pool => {
        sqlx::query_as(&sql).bind(file_id).bind(workspace_id).bind(now).fetch_optional(pool).await?
    });
    let Some(found) = found else {
        return Ok(None);
    };
    if fetched && found.row.fetched_at.is_none() {
        on_db!(db, pool => {
            sqlx::query("UPDATE pending_uploads SET fetched_at = $2 WHERE file_id = $1 AND fetched_at IS NULL")
                .bind(file_id)
                .bind(now)
                .execute(pool)
                .await?;
        });
    }
    Ok(Some((found.row, found.content)))
}

/// How an acknowledgement went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// This call acknowledged it.
    Acked,
    /// It had been acknowledged already (a retried or concurrent ack).
    AlreadyAcked,
}

/// Acknowledges a file of `workspace_id`: it is no longer offered, and is deleted an hour later.
/// `None` for a file that does not exist (or is another workspace's).
pub async fn ack(db: &Db, workspace_id: Uuid, file_id: Uuid) -> StoreResult<Option<Ack>> {
    let now = Utc::now();
    on_db!(db, pool => {
        let acked = sqlx::query(
            "UPDATE pending_uploads SET acked_at = $3 WHERE file_id = $1 AND workspace_id = $2 AND acked_at IS NULL",
        )
        .bind(file_id)
        .bind(workspace_id)
        .bind(now)
        .execute(pool)
        .await?;
        if acked.rows_affected() > 0 {
            return Ok(Some(Ack::Acked));
        }
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pending_uploads WHERE file_id = $1 AND workspace_id = $2",
        )
        .bind(file_id)
        .bind(workspace_id)
        .fetch_one(pool)
        .await?;
        Ok((exists > 0).then_some(Ack::AlreadyAcked))
    })
}

/// Deletes files acknowledged more than an hour before `now` and unacknowledged ones past their
/// expiry; how many went.
pub async fn sweep(db: &Db, now: DateTime<Utc>) -> StoreResult<u64> {
    on_db!(db, pool => {
        let done = sqlx::query(
            "DELETE FROM pending_uploads
             WHERE (acked_at IS NOT NULL AND acked_at < $1) OR (acked_at IS NULL AND expires_at <= $2)",
        )
        .bind(now - KEEP_ACKED)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
}

/// Moves a file's times `by` into the past, as if it had been stored (and acknowledged) that much
/// earlier: how a spec shows expiry without waiting a day.
pub async fn backdate(db: &Db, file_id: Uuid, by: Duration) -> StoreResult<()> {
    let sql = format!("SELECT {COLUMNS} FROM pending_uploads WHERE file_id = $1");
    let rows: Vec<UploadRow> =
        on_db_read!(db, pool => sqlx::query_as(&sql).bind(file_id).fetch_all(pool).await?);
    for UploadRow {
        acked_at,
        created_at,
        fetched_at,
        expires_at,
        ..
    } in rows
    {
        on_db!(db, pool => {
            sqlx::query(
                "UPDATE pending_uploads SET acked_at = $2, created_at = $3, fetched_at = $4, expires_at = $5 WHERE file_id = $1",
            )
            .bind(file_id)
            .bind(acked_at.map(|t| t - by))
            .bind(created_at - by)
            .bind(fetched_at.map(|t| t - by))
            .bind(expires_at - by)
            .execute(pool)
            .await?;
        });
    }
    Ok(())
}
