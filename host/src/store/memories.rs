//! `agent_memories`: what agents remember, with full-text search on both engines.
//!
//! The dialects differ only in the search: SQLite matches the FTS5 table `agent_memories_fts`
//! (ranked by `bm25`), PostgreSQL the generated `content_tsv` column (ranked by `ts_rank`). Both
//! fall back to a case-insensitive substring match for queries too short for a word index or
//! with no word match. Which rows a caller may see is decided by the domain module above
//! (`memories`) and handed in as a [`Visible`] set.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Db, StoreResult, on_db, on_db_read};

/// One memory as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct MemoryRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub content: String,
    pub scope: String,
    pub namespace: String,
    #[serde(default)]
    pub redactions: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "m.id, m.workspace_id, m.content, m.scope, m.namespace, m.redactions, m.created_at, m.updated_at";

/// Rows of one multi-row `INSERT` (9 binds each, well under both engines' bind limits).
const INSERT_CHUNK: usize = 500;

/// The memories a reader may see: its own LOCAL ones, the TEAM ones of `team` (the workspaces it
/// may talk to in its org, itself included) and the GLOBAL ones of its org's root.
#[derive(Debug, Clone)]
pub struct Visible {
    pub me: Uuid,
    pub team: Vec<Uuid>,
    pub root: Uuid,
}

/// A search or listing.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub scope: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// Free text; `None` lists newest first.
    pub q: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

/// Below this many characters a query is matched as a substring, not through the word index.
pub const MIN_FTS_CHARS: usize = 3;

/// Pushes the visibility, scope and namespace filters (` AND ...`) onto a query builder.
macro_rules! filters {
    ($qb:expr, $visible:expr, $query:expr) => {{
        let visible: &Visible = $visible;
        $qb.push(" AND ((m.scope = 'LOCAL' AND m.workspace_id = ");
        $qb.push_bind(visible.me);
        $qb.push(") OR (m.scope = 'GLOBAL' AND m.workspace_id = ");
        $qb.push_bind(visible.root);
        $qb.push(")");
        if !visible.team.is_empty() {
            $qb.push(" OR (m.scope = 'TEAM' AND m.workspace_id IN (");
            let mut list = $qb.separated(", ");
            for id in &visible.team {
                list.push_bind(*id);
            }
            $qb.push("))");
        }
        $qb.push(")");
        if let Some(scope) = $query.scope {
            $qb.push(" AND m.scope = ");
            $qb.push_bind(scope.to_owned());
        }
        if let Some(namespace) = $query.namespace {
            $qb.push(" AND m.namespace = ");
            $qb.push_bind(namespace.to_owned());
        }
    }};
}

/// Inserts one memory.
pub async fn insert(db: &Db, row: &MemoryRow) -> StoreResult<()> {
    insert_many(db, std::slice::from_ref(row), false)
        .await
        .map(|_| ())
}

/// Inserts `rows` in multi-row statements, one transaction. With `skip_existing` a row whose id
/// is already stored is left as it is (the import's idempotence); the count is of rows written.
pub async fn insert_many(db: &Db, rows: &[MemoryRow], skip_existing: bool) -> StoreResult<u64> {
    let begin = db.begin_write_sql();
    on_db!(db, pool => {
        let mut tx = super::begin(pool, Some(begin)).await?;
        let mut written = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO agent_memories (id, workspace_id, content, scope, namespace, redactions, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.id)
                    .push_bind(row.workspace_id)
                    .push_bind(&row.content)
                    .push_bind(&row.scope)
                    .push_bind(&row.namespace)
                    .push_bind(row.redactions)
                    .push_bind(row.created_at)
                    .push_bind(row.updated_at);
            });
            if skip_existing {
                q.push(" ON CONFLICT (id) DO NOTHING");
            }
            written += q.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    })
}

/// One memory by id.
pub async fn get(db: &Db, id: Uuid) -> StoreResult<Option<MemoryRow>> {
    let sql = format!("SELECT {COLUMNS} FROM agent_memories m WHERE m.id = $1");
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
}

/// Rewrites the content (and its redaction count) and namespace of a memory of `workspace_id`;
/// the row as it is now, or `None` when the workspace has no such memory.
pub async fn update(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    content: &str,
    redactions: i32,
    namespace: &str,
) -> StoreResult<Option<MemoryRow>> {
    // A new content drops the embedding of the old one (the domain asks for a new one).
    let changed = on_db!(db, pool => sqlx::query(
        "UPDATE agent_memories SET content = $3, redactions = $4, namespace = $5, updated_at = $6,
                embedding = CASE WHEN content = $3 THEN embedding ELSE NULL END
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace_id)
    .bind(id)
    .bind(content)
    .bind(redactions)
    .bind(namespace)
    .bind(Utc::now())
    .execute(pool)
    .await?
    .rows_affected());
    if changed == 0 {
        return Ok(None);
    }
    get_written(db, id).await
}

/// [`get`] on the writer (SQLite), so a read right after a write sees it.
async fn get_written(db: &Db, id: Uuid) -> StoreResult<Option<MemoryRow>> {
    let sql = format!("SELECT {COLUMNS} FROM agent_memories m WHERE m.id = $1");
    on_db!(db, pool => Ok(sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
}

/// Deletes a memory of `workspace_id`; the row it was, or `None` when there was none.
pub async fn delete(db: &Db, workspace_id: Uuid, id: Uuid) -> StoreResult<Option<MemoryRow>> {
    let sql = format!(
        "DELETE FROM agent_memories WHERE workspace_id = $1 AND id = $2
         RETURNING {}",
        COLUMNS.replace("m.", "")
    );
    on_db!(db, pool => Ok(sqlx::query_as(&sql).bind(workspace_id).bind(id).fetch_optional(pool).await?))
}

/// Stores the embedding (JSON array text) of a memory whose content is still `content`: an
/// embedding of content since changed is dropped. Whether it was stored.
pub async fn set_embedding(db: &Db, id: Uuid, content: &str, vector: &str) -> StoreResult<bool> {
    let sql = match db {
        Db::Sqlite(_) => "UPDATE agent_memories SET embedding = $2 WHERE id = $1 AND content = $3",
        Db::Postgres(_) => {
            "UPDATE agent_memories SET embedding = CAST($2 AS JSONB) WHERE id = $1 AND content = $3"
        }
    };
    on_db!(db, pool => Ok(sqlx::query(sql)
        .bind(id)
        .bind(vector)
        .bind(content)
        .execute(pool)
        .await?
        .rows_affected() > 0))
}

/// The stored embeddings (JSON array text) of those of `ids` that have one.
pub async fn embeddings(db: &Db, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let column = match db {
        Db::Sqlite(_) => "embedding",
        Db::Postgres(_) => "embedding::text",
    };
    on_db_read!(db, pool => {
        let mut qb = QueryBuilder::new(format!(
            "SELECT id, {column} FROM agent_memories WHERE embedding IS NOT NULL AND id IN ("
        ));
        let mut list = qb.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        qb.push(")");
        Ok(qb.build_query_as().fetch_all(pool).await?)
    })
}

/// The words of `q` as an FTS5 query: each word quoted (so no operator syntax gets through),
/// all required. `None` when `q` has no word.
pub(super) fn fts5_query(q: &str) -> Option<String> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// `%q%` for `LIKE ... ESCAPE '\'`, lower-cased, with the pattern characters escaped.
fn like_pattern(q: &str) -> String {
    let mut out = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The memories `visible` lets a reader see that match `query`: ranked by the word index when
/// the query is long enough and matches, else by substring, else newest first (no `q`).
pub async fn search(db: &Db, visible: &Visible, query: &Query<'_>) -> StoreResult<Vec<MemoryRow>> {
    let q = query.q.map(str::trim).filter(|q| !q.is_empty());
    if let Some(q) = q
        && q.chars().count() >= MIN_FTS_CHARS
    {
        let ranked = match db {
            Db::Sqlite(sqlite) => match fts5_query(q) {
                None => Vec::new(),
                Some(fts) => {
                    let mut qb = QueryBuilder::new(format!(
                        "SELECT {COLUMNS} FROM agent_memories_fts
                         JOIN agent_memories m ON m.seq = agent_memories_fts.rowid
                         WHERE agent_memories_fts MATCH "
                    ));
                    qb.push_bind(fts);
                    filters!(qb, visible, query);
                    qb.push(" ORDER BY bm25(agent_memories_fts), m.created_at DESC LIMIT ");
                    qb.push_bind(query.limit);
                    qb.push(" OFFSET ");
                    qb.push_bind(query.offset);
                    qb.build_query_as().fetch_all(&sqlite.reader).await?
                }
            },
            Db::Postgres(pool) => {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {COLUMNS} FROM agent_memories m
                     WHERE m.content_tsv @@ plainto_tsquery('english', "
                ));
                qb.push_bind(q.to_owned());
                qb.push(")");
                filters!(qb, visible, query);
                qb.push(" ORDER BY ts_rank(m.content_tsv, plainto_tsquery('english', ");
                qb.push_bind(q.to_owned());
                // Normalised by document length (1 + log), like bm25: a short memory that is
                // mostly the query ranks above a long one that mentions it.
                qb.push("), 1) DESC, m.created_at DESC LIMIT ");
                qb.push_bind(query.limit);
                qb.push(" OFFSET ");
                qb.push_bind(query.offset);
                qb.build_query_as().fetch_all(pool).await?
            }
        };
        if !ranked.is_empty() {
            return Ok(ranked);
        }
    }
    on_db_read!(db, pool => {
        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM agent_memories m WHERE 1 = 1"));
        if let Some(q) = q {
            qb.push(" AND LOWER(m.content) LIKE ");
            qb.push_bind(like_pattern(q));
            qb.push(" ESCAPE '\\'");
        }
        filters!(qb, visible, query);
        qb.push(" ORDER BY m.created_at DESC, m.id LIMIT ");
        qb.push_bind(query.limit);
        qb.push(" OFFSET ");
        qb.push_bind(query.offset);
        Ok(qb.build_query_as().fetch_all(pool).await?)
    })
}

/// The memories `workspace_id` wrote itself (any scope) whose content holds every word of `q`,
/// newest first, at most `limit`: the session search's memories. Through the same word index as
/// [`search`], without its substring fallback. Empty when `q` holds no word.
pub async fn search_own(
    db: &Db,
    workspace_id: Uuid,
    q: &str,
    limit: i64,
) -> StoreResult<Vec<MemoryRow>> {
    match db {
        Db::Sqlite(sqlite) => {
            let Some(fts) = fts5_query(q) else {
                return Ok(Vec::new());
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM agent_memories_fts
                 JOIN agent_memories m ON m.seq = agent_memories_fts.rowid
                 WHERE agent_memories_fts MATCH $1 AND m.workspace_id = $2
                 ORDER BY m.created_at DESC, m.id DESC LIMIT $3"
            );
            Ok(sqlx::query_as(&sql)
                .bind(fts)
                .bind(workspace_id)
                .bind(limit)
                .fetch_all(&sqlite.reader)
                .await?)
        }
        Db::Postgres(pool) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM agent_memories m
                 WHERE m.workspace_id = $1 AND m.content_tsv @@ plainto_tsquery('english', $2)
                 ORDER BY m.created_at DESC, m.id DESC LIMIT $3"
            );
            Ok(sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(q)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        }
    }
}

/// How many memories `visible` lets a reader see under the scope and namespace of `query` (its
/// text, limit and offset are ignored).
pub async fn count(db: &Db, visible: &Visible, query: &Query<'_>) -> StoreResult<i64> {
    on_db_read!(db, pool => {
        let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM agent_memories m WHERE 1 = 1");
        filters!(qb, visible, query);
        let (n,): (i64,) = qb.build_query_as().fetch_one(pool).await?;
        Ok(n)
    })
}

/// The namespaces of the memories `visible` lets a reader see, with their counts, by name.
pub async fn namespaces(db: &Db, visible: &Visible) -> StoreResult<Vec<(String, i64)>> {
    on_db_read!(db, pool => {
        let mut qb = QueryBuilder::new("SELECT m.namespace, COUNT(*) FROM agent_memories m WHERE 1 = 1");
        filters!(qb, visible, &Query::default());
        qb.push(" GROUP BY m.namespace ORDER BY m.namespace");
        Ok(qb.build_query_as().fetch_all(pool).await?)
    })
}

/// Every memory, oldest first, `limit` at a time after `after` (the export's pages).
pub async fn page_all(
    db: &Db,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> StoreResult<Vec<MemoryRow>> {
    // Year 1 sorts before every stored time on both engines (SQLite compares the RFC 3339 text).
    let start = DateTime::<Utc>::from_naive_utc_and_offset(
        chrono::NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default(),
        Utc,
    );
    let (at, id) = after.unwrap_or((start, Uuid::nil()));
    let sql = format!(
        "SELECT {COLUMNS} FROM agent_memories m
         WHERE m.created_at > $1 OR (m.created_at = $1 AND m.id > $2)
         ORDER BY m.created_at, m.id LIMIT $3"
    );
    on_db_read!(db, pool => Ok(sqlx::query_as(&sql).bind(at).bind(id).bind(limit).fetch_all(pool).await?))
}

/// Whether a workspace holds any memory (an org import seeds only a workspace without any).
pub async fn any_of(db: &Db, workspace_id: Uuid) -> StoreResult<bool> {
    on_db_read!(db, pool => Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM agent_memories WHERE workspace_id = $1",
    ).bind(workspace_id).fetch_one(pool).await? > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_queries_quote_every_word_and_drop_operators() {
        assert_eq!(
            fts5_query(r#"deploy "key" OR NEAR(x*"#).as_deref(),
            Some(r#""deploy" "key" "OR" "NEAR" "x""#)
        );
        assert_eq!(fts5_query(" -*- "), None);
    }

    #[test]
    fn like_patterns_escape_their_wildcards() {
        assert_eq!(like_pattern("50%_A\\"), "%50\\%\\_a\\\\%");
    }
}
