//! `activity_logs`: what agents and the host report a workspace did.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub activity_type: String,
    pub source_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub method: Option<String>,
    pub summary: Option<String>,
    pub request_body: Option<Value>,
    pub response_body: Option<Value>,
    pub tool_trace: Option<Value>,
    pub duration_ms: Option<i32>,
    pub status: String,
    pub error_detail: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl ActivityRow {
    /// A row of `activity_type` for `workspace_id` with status `ok` and nothing else filled in.
    /// Its id is a UUIDv7: time-ordered, so the busiest table's primary key (and the rows
    /// SQLite stores by it) grows at its end instead of splitting random B-tree pages.
    pub fn new(workspace_id: Uuid, activity_type: &str) -> ActivityRow {
        ActivityRow {
            id: Uuid::now_v7(),
            workspace_id,
            activity_type: activity_type.to_owned(),
            source_id: None,
            target_id: None,
            method: None,
            summary: None,
            request_body: None,
            response_body: None,
            tool_trace: None,
            duration_ms: None,
            status: "ok".to_owned(),
            error_detail: None,
            idempotency_key: None,
            created_at: Utc::now(),
        }
    }
}

/// The most of a row's text the session search index holds, in bytes: enough for the messages
/// of a conversation, while the writer never tokenizes a whole body (see migration 0020).
pub const SEARCH_TEXT_MAX: usize = 4096;

/// The most a status update appends to a row's search text (its error and response), and the
/// most the text may grow to through updates, in characters.
const SEARCH_TEXT_UPDATE_MAX: usize = SEARCH_TEXT_MAX / 2;
const SEARCH_TEXT_TOTAL_MAX: usize = 2 * SEARCH_TEXT_MAX;

/// Keys whose string values are protocol structure, not something anyone said: an A2A body's
/// `jsonrpc`, `method`, `kind`, `role` and ids would otherwise make every call match `user` or
/// `text`. `bytes` is an encoded file.
const STRUCTURAL_KEYS: &[&str] = &[
    "jsonrpc",
    "id",
    "method",
    "kind",
    "type",
    "role",
    "messageId",
    "contextId",
    "taskId",
    "mimeType",
    "bytes",
];

/// What the session search indexes of `row`: its summary, its error and the string values of its
/// request and response bodies (not those of [`STRUCTURAL_KEYS`]), in that order, at most
/// [`SEARCH_TEXT_MAX`] bytes. `None` when it says nothing.
pub fn search_text(row: &ActivityRow) -> Option<String> {
    let mut text = BoundedText::new(SEARCH_TEXT_MAX);
    text.push(row.summary.as_deref());
    text.push(row.error_detail.as_deref());
    for body in [&row.request_body, &row.response_body]
        .into_iter()
        .flatten()
    {
        text.push_strings(body);
    }
    text.finish()
}

/// What a status update adds to a row's search text: its error and its response's strings.
fn update_search_text(update: &StatusUpdate<'_>) -> Option<String> {
    let mut text = BoundedText::new(SEARCH_TEXT_UPDATE_MAX);
    text.push(update.error_detail);
    if let Some(body) = update.response_body {
        text.push_strings(body);
    }
    text.finish()
}

/// Text gathered up to a byte budget, pieces separated by one space; once full, the rest is
/// skipped without being looked at.
struct BoundedText {
    out: String,
    max: usize,
}

impl BoundedText {
    fn new(max: usize) -> Self {
        BoundedText {
            out: String::new(),
            max,
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max
    }

    fn push(&mut self, piece: Option<&str>) {
        let Some(piece) = piece.map(str::trim).filter(|p| !p.is_empty()) else {
            return;
        };
        if self.full() {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let room = self.max.saturating_sub(self.out.len());
        let mut end = piece.len().min(room);
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&piece[..end]);
    }

    /// The string values of `value`, depth first (an object's members in key order), skipping
    /// those of structural keys; an array's strings count as its key's.
    fn push_strings(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.push(Some(s)),
            Value::Array(items) => {
                for item in items {
                    if self.full() {
                        return;
                    }
                    self.push_strings(item);
                }
            }
            Value::Object(members) => {
                for (key, member) in members {
                    if self.full() {
                        return;
                    }
                    if !STRUCTURAL_KEYS.contains(&key.as_str()) {
                        self.push_strings(member);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn finish(self) -> Option<String> {
        (!self.out.is_empty()).then_some(self.out)
    }
}

/// The head of an activity row `INSERT`, up to `VALUES`: [`INSERT_COLUMNS`] columns, bound in
/// this order by [`bind_row!`].
macro_rules! insert_into {
    () => {
        "INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, target_id, method, summary,
             request_body, response_body, tool_trace, duration_ms, status, error_detail, idempotency_key, created_at,
             search_text) "
    };
}
pub(super) use insert_into;

/// How many values one activity row binds.
pub(super) const INSERT_COLUMNS: usize = 16;

/// Binds `row` as one `VALUES` tuple of a multi-row `INSERT` headed by [`insert_into!`] (the
/// separated builder `push_values` hands over).
macro_rules! bind_row {
    ($b:expr, $row:expr) => {{
        let row: &$crate::store::activity::ActivityRow = $row;
        $b.push_bind(row.id)
            .push_bind(row.workspace_id)
            .push_bind(&row.activity_type)
            .push_bind(row.source_id)
            .push_bind(row.target_id)
            .push_bind(&row.method)
            .push_bind(&row.summary)
            .push_bind(row.request_body.as_ref().map(sqlx::types::Json))
            .push_bind(row.response_body.as_ref().map(sqlx::types::Json))
            .push_bind(row.tool_trace.as_ref().map(sqlx::types::Json))
            .push_bind(row.duration_ms)
            .push_bind(&row.status)
            .push_bind(&row.error_detail)
            .push_bind(&row.idempotency_key)
            .push_bind(row.created_at)
            .push_bind($crate::store::activity::search_text(row));
    }};
}
pub(super) use bind_row;

/// Inserts one activity row on `$conn` (a pool, or `&mut *tx`).
macro_rules! insert_one {
    ($conn:expr, $row:expr) => {{
        let mut q = sqlx::QueryBuilder::new($crate::store::activity::insert_into!());
        q.push_values(std::iter::once($row), |mut b, row| {
            $crate::store::activity::bind_row!(b, row)
        });
        q.build().execute($conn).await?;
    }};
}
pub(super) use insert_one;

/// Inserts one activity row.
pub async fn insert(db: &Db, row: &ActivityRow) -> StoreResult<()> {
    on_db!(db, pool => {
        insert_one!(pool, row);
        Ok(())
    })
}

/// Who reported an activity: the canvas (no source) or an agent (a source workspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFilter {
    Canvas,
    Agent,
}

/// Newest first, optionally filtered by type and source.
pub async fn list(
    db: &Db,
    workspace_id: Uuid,
    activity_type: Option<&str>,
    source: Option<SourceFilter>,
    limit: i64,
) -> StoreResult<Vec<ActivityRow>> {
    on_db_read!(db, pool => {
        let mut q = QueryBuilder::new(format!(
            "SELECT {ROW_COLUMNS} FROM activity_logs WHERE workspace_id = "
        ));
        q.push_bind(workspace_id);
        if let Some(t) = activity_type {
            q.push(" AND activity_type = ").push_bind(t.to_owned());
        }
        match source {
            Some(SourceFilter::Canvas) => { q.push(" AND source_id IS NULL"); }
            Some(SourceFilter::Agent) => { q.push(" AND source_id IS NOT NULL"); }
            None => {}
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
        Ok(q.build_query_as().fetch_all(pool).await?)
    })
}

/// The conversation between the canvas and the workspace's agent (`a2a_receive` rows without a
/// source workspace: the operator's messages and the agent's own `notify` messages), newest
/// first, from the row before `before` (exclusive) when given; at most `limit`.
pub async fn chat(
    db: &Db,
    workspace_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<ActivityRow>> {
    on_db_read!(db, pool => {
        let mut q = QueryBuilder::new(format!(
            "SELECT {ROW_COLUMNS} FROM activity_logs a WHERE a.workspace_id = "
        ));
        q.push_bind(workspace_id);
        q.push(" AND a.activity_type = 'a2a_receive' AND a.source_id IS NULL");
        if let Some(before) = before {
            q.push(
                " AND EXISTS (SELECT 1 FROM activity_logs b WHERE b.workspace_id = a.workspace_id AND b.id = ",
            )
            .push_bind(before)
            .push(" AND (a.created_at < b.created_at OR (a.created_at = b.created_at AND a.id < b.id)))");
        }
        q.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ").push_bind(limit);
        Ok(q.build_query_as().fetch_all(pool).await?)
    })
}

const ROW_COLUMNS: &str =
    "id, workspace_id, activity_type, source_id, target_id, method, summary, request_body,
     response_body, tool_trace, duration_ms, status, error_detail, idempotency_key, created_at";

/// An activity row a session search found.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchHit {
    pub id: Uuid,
    pub activity_type: String,
    /// What the index holds of the row (see [`search_text`]).
    pub search_text: String,
    pub created_at: DateTime<Utc>,
}

/// The rows of `workspace_id` whose search text holds every word of `q`, newest first, at most
/// `limit`. SQLite matches whole words; PostgreSQL English stems and skips stop words (as the
/// memory search does). Empty when `q` holds no word.
pub async fn search(
    db: &Db,
    workspace_id: Uuid,
    q: &str,
    limit: i64,
) -> StoreResult<Vec<SearchHit>> {
    match db {
        Db::Sqlite(sqlite) => {
            let Some(words) = super::memories::fts5_query(q) else {
                return Ok(Vec::new());
            };
            // The workspace's own word narrows the index to its entries; the join back by id
            // and workspace is what guarantees only its live rows come out.
            let matched = format!("ws : \"{}\" AND body : ({words})", workspace_id.simple());
            Ok(sqlx::query_as(
                "SELECT a.id, a.activity_type, a.search_text, a.created_at
                 FROM activity_search_fts f
                 JOIN activity_search_keys k ON k.seq = f.rowid
                 JOIN activity_logs a ON a.id = k.activity_id
                 WHERE activity_search_fts MATCH $1 AND a.workspace_id = $2
                   AND a.search_text IS NOT NULL
                 ORDER BY a.created_at DESC, a.id DESC LIMIT $3",
            )
            .bind(matched)
            .bind(workspace_id)
            .bind(limit)
            .fetch_all(&sqlite.reader)
            .await?)
        }
        Db::Postgres(pool) => Ok(sqlx::query_as(
            "SELECT a.id, a.activity_type, a.search_text, a.created_at FROM activity_logs a
             WHERE a.workspace_id = $1
               AND to_tsvector('english', COALESCE(a.search_text, '')) @@ plainto_tsquery('english', $2)
             ORDER BY a.created_at DESC, a.id DESC LIMIT $3",
        )
        .bind(workspace_id)
        .bind(q)
        .bind(limit)
        .fetch_all(pool)
        .await?),
    }
}

/// One row of `workspace_id`.
pub async fn get(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<Option<ActivityRow>> {
    let sql =
        format!("SELECT {ROW_COLUMNS} FROM activity_logs WHERE id = $1 AND workspace_id = $2");
    on_db_read!(db, pool => {
        Ok(sqlx::query_as(&sql).bind(id).bind(workspace_id).fetch_optional(pool).await?)
    })
}

/// The row `workspace_id` recorded under `key`.
pub async fn find_by_key(
    db: &Db,
    workspace_id: Uuid,
    key: &str,
) -> StoreResult<Option<ActivityRow>> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM activity_logs WHERE workspace_id = $1 AND idempotency_key = $2"
    );
    on_db_read!(db, pool => {
        Ok(sqlx::query_as(&sql).bind(workspace_id).bind(key).fetch_optional(pool).await?)
    })
}

/// Deletes one row of `workspace_id` if its status is `status`; whether it did.
pub async fn delete_if_status(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    status: &str,
) -> StoreResult<bool> {
    on_db!(db, pool => {
        let done = sqlx::query("DELETE FROM activity_logs WHERE id = $1 AND workspace_id = $2 AND status = $3")
            .bind(id)
            .bind(workspace_id)
            .bind(status)
            .execute(pool)
            .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// A new status for a row, with what came back (`None` keeps the stored value).
#[derive(Debug, Clone, Default)]
pub struct StatusUpdate<'a> {
    pub status: &'a str,
    pub error_detail: Option<&'a str>,
    pub response_body: Option<&'a Value>,
    pub duration_ms: Option<i32>,
}

/// A [`StatusUpdate`] that owns what it carries, for the group-commit writer's queue.
#[derive(Debug, Clone, Default)]
pub struct OwnedStatus {
    pub status: String,
    pub error_detail: Option<String>,
    pub response_body: Option<Value>,
    pub duration_ms: Option<i32>,
}

impl OwnedStatus {
    pub fn of(update: &StatusUpdate<'_>) -> Self {
        OwnedStatus {
            status: update.status.to_owned(),
            error_detail: update.error_detail.map(str::to_owned),
            response_body: update.response_body.cloned(),
            duration_ms: update.duration_ms,
        }
    }

    pub fn as_update(&self) -> StatusUpdate<'_> {
        StatusUpdate {
            status: &self.status,
            error_detail: self.error_detail.as_deref(),
            response_body: self.response_body.as_ref(),
            duration_ms: self.duration_ms,
        }
    }
}

/// A delegation's change the writer stores in its batches ([`super::batch::Writer`]): a status
/// move of its row (see [`update_status`]), or its end (see [`finish_delegation`]).
#[derive(Debug, Clone)]
pub enum DelegationChange {
    Status {
        workspace_id: Uuid,
        id: Uuid,
        update: OwnedStatus,
        final_states: &'static [&'static str],
    },
    Finish {
        workspace_id: Uuid,
        id: Uuid,
        update: OwnedStatus,
        final_states: &'static [&'static str],
        result: Box<ActivityRow>,
    },
}

/// How a [`DelegationChange`] went: whether a status moved, or how a finish went.
#[derive(Debug, Clone)]
pub enum Changed {
    Moved(bool),
    Finished(Finished),
}

impl DelegationChange {
    /// Stores the change alone, in a transaction of its own.
    pub async fn store_alone(&self, db: &Db) -> StoreResult<Changed> {
        match self {
            DelegationChange::Status {
                workspace_id,
                id,
                update,
                final_states,
            } => update_status(db, *workspace_id, *id, &update.as_update(), final_states)
                .await
                .map(Changed::Moved),
            DelegationChange::Finish {
                workspace_id,
                id,
                update,
                final_states,
                result,
            } => finish_delegation(
                db,
                *workspace_id,
                *id,
                &update.as_update(),
                final_states,
                result,
            )
            .await
            .map(Changed::Finished),
        }
    }
}

/// Stores `$change` (a `&DelegationChange`) on `$conn`, inside a transaction the caller commits:
/// a [`Changed`]. (The bodies of [`update_status`] and [`finish_delegation`].)
macro_rules! change_in {
    ($conn:expr, $change:expr) => {{
        match $change {
            $crate::store::activity::DelegationChange::Status {
                workspace_id,
                id,
                update,
                final_states,
            } => {
                let moved = $crate::store::activity::status_update(
                    *workspace_id,
                    *id,
                    &update.as_update(),
                    final_states,
                )
                .build()
                .execute($conn)
                .await?
                .rows_affected()
                    > 0;
                $crate::store::activity::Changed::Moved(moved)
            }
            $crate::store::activity::DelegationChange::Finish {
                workspace_id,
                id,
                update,
                final_states,
                result,
            } => $crate::store::activity::Changed::Finished($crate::store::activity::finish_in!(
                $conn,
                *workspace_id,
                *id,
                &update.as_update(),
                final_states,
                result.as_ref()
            )),
        }
    }};
}
pub(super) use change_in;

/// Moves a row of `workspace_id` to a new status unless it is already in one of `final_states`;
/// whether it moved.
pub async fn update_status(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    update: &StatusUpdate<'_>,
    final_states: &[&str],
) -> StoreResult<bool> {
    on_db!(db, pool => {
        let done = status_update(workspace_id, id, update, final_states).build().execute(pool).await?;
        Ok(done.rows_affected() > 0)
    })
}

/// The `UPDATE` of [`update_status`].
pub(crate) fn status_update<'a, DB: sqlx::Database>(
    workspace_id: Uuid,
    id: Uuid,
    update: &StatusUpdate<'_>,
    final_states: &[&str],
) -> QueryBuilder<'a, DB>
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<Json<Value>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i32>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE activity_logs SET status = ");
    q.push_bind(update.status.to_owned());
    q.push(", error_detail = COALESCE(")
        .push_bind(update.error_detail.map(str::to_owned))
        .push(", error_detail), response_body = COALESCE(")
        .push_bind(update.response_body.cloned().map(Json))
        .push(", response_body), duration_ms = COALESCE(")
        .push_bind(update.duration_ms)
        .push(", duration_ms)");
    // What comes back is searchable too: appended to the row's text (which keeps what it had,
    // bounded), so the index (a trigger on SQLite, a generated column on PostgreSQL) follows.
    if let Some(text) = update_search_text(update) {
        q.push(" , search_text = substr(COALESCE(search_text || ' ', '') || ")
            .push_bind(text)
            .push(format!(", 1, {SEARCH_TEXT_TOTAL_MAX})"));
    }
    q.push(" WHERE id = ")
        .push_bind(id)
        .push(" AND workspace_id = ")
        .push_bind(workspace_id);
    for state in final_states {
        q.push(" AND status <> ").push_bind((*state).to_owned());
    }
    q
}

/// How [`finish_delegation`] went.
#[derive(Debug, Clone)]
pub enum Finished {
    /// The delegation row was already in a final state: nothing was written.
    AlreadyFinal,
    /// Both rows were written; `inserted` is the result row when it is new (not an update of
    /// the one a queued delegation left).
    Written { inserted: Option<Box<ActivityRow>> },
}

/// Ends a delegation in one transaction, so no reader sees one row without the other: moves the
/// delegation row (`id`) unless it is in one of `final_states`, and writes its result row — the
/// existing row with `result`'s idempotency key moves the same way, or `result` is inserted.
pub async fn finish_delegation(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    update: &StatusUpdate<'_>,
    final_states: &[&str],
    result: &ActivityRow,
) -> StoreResult<Finished> {
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let finished = finish_in!(&mut *tx, workspace_id, id, update, final_states, result);
        // Nothing was written when it was already final: the commit stores nothing.
        tx.commit().await?;
        Ok(finished)
    })
}

/// The statements of [`finish_delegation`] on `$conn`, inside a transaction the caller commits:
/// a [`Finished`]. When the delegation was already final, nothing is written.
macro_rules! finish_in {
    ($conn:expr, $workspace_id:expr, $id:expr, $update:expr, $final_states:expr, $result:expr) => {{
        let (workspace_id, id): (Uuid, Uuid) = ($workspace_id, $id);
        let update: &$crate::store::activity::StatusUpdate<'_> = $update;
        let final_states: &[&str] = $final_states;
        let result: &$crate::store::activity::ActivityRow = $result;
        let key = result.idempotency_key.clone().unwrap_or_default();
        let moved = $crate::store::activity::status_update(workspace_id, id, update, final_states)
            .build()
            .execute($conn)
            .await?
            .rows_affected()
            > 0;
        let status: Option<String> = if moved {
            None
        } else {
            sqlx::query_scalar(
                "SELECT status FROM activity_logs WHERE id = $1 AND workspace_id = $2",
            )
            .bind(id)
            .bind(workspace_id)
            .fetch_optional($conn)
            .await?
        };
        if status.is_some_and(|s| final_states.contains(&s.as_str())) {
            $crate::store::activity::Finished::AlreadyFinal
        } else {
            let existing: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM activity_logs WHERE workspace_id = $1 AND idempotency_key = $2",
            )
            .bind(workspace_id)
            .bind(&key)
            .fetch_optional($conn)
            .await?;
            let inserted = match existing {
                Some(existing) => {
                    $crate::store::activity::status_update(
                        workspace_id,
                        existing,
                        update,
                        final_states,
                    )
                    .build()
                    .execute($conn)
                    .await?;
                    None
                }
                None => {
                    $crate::store::activity::insert_one!($conn, result);
                    Some(Box::new(result.clone()))
                }
            };
            $crate::store::activity::Finished::Written { inserted }
        }
    }};
}
pub(super) use finish_in;

/// How many `activity_type` rows a workspace has had since `since` (restarts a policy sees,
/// whichever replica ran them).
pub async fn count_since(
    db: &Db,
    workspace_id: Uuid,
    activity_type: &str,
    since: DateTime<Utc>,
) -> StoreResult<i64> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM activity_logs WHERE workspace_id = $1 AND activity_type = $2 AND created_at >= $3",
    ).bind(workspace_id).bind(activity_type).bind(since).fetch_one(pool).await?))
}

/// When the newest activity row of `workspace_id` was written, if it has any.
pub async fn newest_at(db: &Db, workspace_id: Uuid) -> StoreResult<Option<DateTime<Utc>>> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar(
        "SELECT created_at FROM activity_logs WHERE workspace_id = $1 ORDER BY created_at DESC LIMIT 1",
    ).bind(workspace_id).fetch_optional(pool).await?))
}

/// Delegations the host carries out itself (`"carrier": "host"` in the request) still `pending`
/// or `dispatched` though created before `created_before`: the host carrying them stopped hard.
/// Their `(workspace_id, id)`.
pub async fn stranded_delegations(
    db: &Db,
    created_before: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, Uuid)>> {
    on_db_read!(db, pool => Ok(sqlx::query_as(
        "SELECT workspace_id, id FROM activity_logs
         WHERE activity_type = 'delegation' AND method = 'delegate'
           AND status IN ('pending', 'dispatched') AND created_at < $1
           AND request_body ->> 'carrier' = 'host'
         ORDER BY created_at",
    ).bind(created_before).fetch_all(pool).await?))
}
