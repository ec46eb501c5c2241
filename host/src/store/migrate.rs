//! The migrator: one set of SQL files in `migrations/`, applied at start on either backend.
//!
//! The files are embedded by `sqlx::migrate!` and written in PostgreSQL's dialect. For SQLite the
//! column type names are rewritten word by word through [`SQLITE_TYPES`]; everything else in the
//! files is syntax both engines accept. Applied versions and their checksums are recorded in
//! `schema_migrations`, so editing a released migration is caught at the next start.
//!
//! Where the engines truly differ (full-text search: a `tsvector` column on PostgreSQL, an FTS5
//! table and its triggers on SQLite), a file may hold backend-only blocks, each opened by a line
//! `-- @postgres-only` or `-- @sqlite-only` and closed by `-- @end`; [`translate`] drops the
//! blocks of the other engine before anything else. The markers are comments, so the checksum
//! is still that of the file as written, and files without markers are unchanged.

use anyhow::Context as _;
use sqlx::migrate::Migrator;

use super::{Db, on_db};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// PostgreSQL type name -> SQLite type name. SQLite would accept the PostgreSQL names too, but
/// give them NUMERIC affinity, which turns JSON text such as `123` into an integer.
pub const SQLITE_TYPES: &[(&str, &str)] = &[
    ("DOUBLE PRECISION", "REAL"),
    ("TIMESTAMPTZ", "TEXT"),
    ("JSONB", "TEXT"),
    ("UUID", "BLOB"),
    ("BYTEA", "BLOB"),
    ("BIGINT", "INTEGER"),
    ("BOOLEAN", "INTEGER"),
];

/// Serialises migrations across host replicas sharing one PostgreSQL database.
const PG_MIGRATION_LOCK: i64 = 0x6d6f_6c65_6375_6c65; // "molecule"

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT NOT NULL PRIMARY KEY,
    description TEXT NOT NULL,
    checksum BYTEA NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)";

/// Applies every pending migration in one transaction. On PostgreSQL a transaction-scoped
/// advisory lock makes replicas that start together take turns; DDL is transactional on both
/// engines, so a failed start leaves the schema as it was.
pub async fn run(db: &Db) -> anyhow::Result<()> {
    let backend = db.backend();
    let ledger = translate(backend, CREATE_LEDGER);
    on_db!(db, pool => {
        let mut tx = super::begin(pool, None).await.context("starting the migration transaction")?;
        if backend == super::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .context("taking the migration lock")?;
        }
        // A plain `&str` runs as a simple (multi-statement, unprepared) query on both engines.
        sqlx::Executor::execute(&mut *tx, ledger.as_str()).await.context("creating schema_migrations")?;
        let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .context("reading schema_migrations")?;
        for migration in MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()) {
            if let Some((_, checksum)) = applied.iter().find(|(v, _)| *v == migration.version) {
                anyhow::ensure!(
                    checksum.as_slice() == migration.checksum.as_ref(),
                    "migration {} ({}) was changed after it was applied; released migrations are frozen",
                    migration.version,
                    migration.description
                );
                continue;
            }
            let sql = translate(backend, &migration.sql);
            sqlx::Executor::execute(&mut *tx, sql.as_str())
                .await
                .with_context(|| format!("applying migration {} ({})", migration.version, migration.description))?;
            sqlx::query("INSERT INTO schema_migrations (version, description, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(migration.version)
                .bind(migration.description.as_ref())
                .bind(migration.checksum.as_ref())
                .bind(chrono::Utc::now())
                .execute(&mut *tx)
                .await
                .context("recording a migration")?;
            tracing::info!(version = migration.version, description = %migration.description, "migration applied");
        }
        tx.commit().await.context("committing migrations")?;
        Ok(())
    })
}

/// Rewrites PostgreSQL column type names for `backend`; whole words only, so identifiers such as
/// `uuid_col` or `gen_random_uuid` are never touched.
pub fn translate(backend: super::Backend, sql: &str) -> String {
    let sql = backend_blocks(backend, sql);
    if backend == super::Backend::Postgres {
        return sql;
    }
    let mut out = sql;
    for (pg, sqlite) in SQLITE_TYPES {
        out = replace_word(&out, pg, sqlite);
    }
    out
}

/// Keeps the lines of `sql` meant for `backend`: drops every `-- @postgres-only` ... `-- @end`
/// block on SQLite and every `-- @sqlite-only` ... `-- @end` block on PostgreSQL (markers and
/// all). Text without markers comes back as it was.
pub(super) fn backend_blocks(backend: super::Backend, sql: &str) -> String {
    if !sql.contains("-- @") {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len());
    // `Some(keep)` inside a block.
    let mut block: Option<bool> = None;
    for line in sql.split_inclusive('\n') {
        match line.trim() {
            "-- @postgres-only" => block = Some(backend == super::Backend::Postgres),
            "-- @sqlite-only" => block = Some(backend == super::Backend::Sqlite),
            "-- @end" => block = None,
            _ if block != Some(false) => out.push_str(line),
            _ => {}
        }
    }
    out
}

fn replace_word(text: &str, word: &str, replacement: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(word) {
        let before_ok = rest[..pos].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = &rest[pos + word.len()..];
        let after_ok = after.chars().next().is_none_or(|c| !is_ident(c));
        out.push_str(&rest[..pos]);
        out.push_str(if before_ok && after_ok {
            replacement
        } else {
            word
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;

    #[test]
    fn sqlite_translation_replaces_whole_type_words_only() {
        let sql = "id UUID, t TIMESTAMPTZ, p JSONB, uuid_col TEXT, f DOUBLE PRECISION, x gen_random_uuid()";
        assert_eq!(
            translate(Backend::Sqlite, sql),
            "id BLOB, t TEXT, p TEXT, uuid_col TEXT, f REAL, x gen_random_uuid()"
        );
        assert_eq!(translate(Backend::Postgres, sql), sql);
    }

    #[test]
    fn backend_only_blocks_are_kept_for_their_engine_only() {
        let sql = "CREATE TABLE a (x UUID);\n-- @postgres-only\nCREATE INDEX pg ON a USING GIN (x);\n-- @end\n  -- @sqlite-only\nCREATE VIRTUAL TABLE f USING fts5(x);\n-- @end\nCREATE TABLE b (y TEXT);\n";
        assert_eq!(
            translate(Backend::Postgres, sql),
            "CREATE TABLE a (x UUID);\nCREATE INDEX pg ON a USING GIN (x);\nCREATE TABLE b (y TEXT);\n"
        );
        assert_eq!(
            translate(Backend::Sqlite, sql),
            "CREATE TABLE a (x BLOB);\nCREATE VIRTUAL TABLE f USING fts5(x);\nCREATE TABLE b (y TEXT);\n"
        );
        let plain = "CREATE TABLE c (z TEXT); -- @end of nothing\n";
        assert_eq!(translate(Backend::Postgres, plain), plain);
    }

    #[test]
    fn every_column_type_in_the_migrations_has_a_sqlite_mapping() {
        // A type name outside this list would silently get NUMERIC affinity on SQLite.
        let known = ["TEXT", "INTEGER", "BLOB", "REAL"];
        for migration in MIGRATOR.iter() {
            let sql = translate(Backend::Sqlite, &migration.sql);
            for (pg, _) in SQLITE_TYPES {
                assert!(!sql.contains(&format!(" {pg} ")), "{pg} left untranslated");
            }
            for line in sql.lines().map(str::trim) {
                let mut words = line.split_whitespace();
                let (Some(first), Some(second)) = (words.next(), words.next()) else {
                    continue;
                };
                let is_column = first.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && second.chars().all(|c| c.is_ascii_uppercase());
                if is_column && !matches!(second, "ON" | "WHERE") {
                    assert!(
                        known.contains(&second.trim_end_matches(',')),
                        "unmapped column type in: {line}"
                    );
                }
            }
        }
    }
}
