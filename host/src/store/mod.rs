//! Persistence: sqlx queries grouped per table family, on SQLite or PostgreSQL.
//!
//! The backend is chosen by the database URL. Each query is written once in SQL both engines
//! accept and compiled for both pools through [`on_db!`]; the few places where the dialects
//! differ say so next to the query. The store knows no lifecycle: it reads and writes rows.

pub mod a2a_queue;
pub mod activity;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod canvas;
pub mod checkpoints;
pub mod events;
pub mod extensions;
pub mod instructions;
pub mod kv;
pub mod memories;
mod migrate;
pub mod pending_uploads;
pub mod plugins;
pub mod restarts;
pub mod schedules;
pub mod secrets;
pub mod settings;
pub mod status;
pub mod testing;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod usage;
pub mod workspace_config;
pub mod workspaces;

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// The most values one batch statement binds: below SQLite's limit of 32,766 variables (the
/// bundled SQLite is 3.46) and PostgreSQL's 65,535 parameters.
pub(crate) const MAX_BINDS: usize = 32_000;

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend `$db` is: on
/// SQLite the one writer connection, so every write is serialised in the host instead of in
/// SQLite's busy handler.
///
/// The body is compiled once per backend, so the same query text and row types serve both.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.writer;
                $body
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Opens a transaction on `pool` (with `statement`, or a plain `BEGIN`) in a task of its own, so
/// a caller cancelled meanwhile (an HTTP handler whose client went away, a timeout) cannot cut
/// the `BEGIN` round trip short: it gets a fully begun transaction, dropped and so rolled back.
///
/// Every store transaction opens here (clippy refuses `Pool::begin` elsewhere). sqlx 0.8's
/// PostgreSQL driver counts a transaction as open only once `BEGIN` has answered, so a future
/// dropped while waiting for that answer left the session inside a transaction nothing would
/// end, and the pool handed that connection on: the next callers' statements ran inside it,
/// uncommitted, and their row locks held every later writer of those rows (a restart cycle
/// waited a minute for an agent's registration that way). Upstream: launchbadge/sqlx#4393,
/// fixed in sqlx-postgres 0.9.1. SQLite's driver rolls such a transaction back already; the
/// writer's `before_acquire` check closes any connection left in one.
pub(crate) async fn begin<DB>(
    pool: &sqlx::Pool<DB>,
    statement: Option<&'static str>,
) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error>
where
    DB: sqlx::Database,
{
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)]
    let begun = tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    });
    match begun.await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // Only when the runtime itself is shutting down.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// [`on_db!`] for a body that only reads: on SQLite it runs on the read-only pool, beside the
/// writer (WAL readers see every committed write and never wait for the writer).
macro_rules! on_db_read {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.reader;
                $body
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db_read;

/// Makes the SQLite database and its journal files readable by the host's user only: they hold
/// token hashes and sealed secrets, and the default umask would leave them world-readable.
fn owner_only(database: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut paths = vec![database.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        paths.push(name.into());
    }
    for path in paths.iter().filter(|p| p.exists()) {
        if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %err, "could not make the database file private");
        }
    }
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A SQLite database the way SQLite wants to be used: one writer connection that every write
/// goes through (no two connections ever fight for the write lock, so nothing sleeps in the
/// busy handler), a pool of read-only connections beside it, and WAL checkpoints run by a
/// background task on a connection of their own instead of inside a committing request.
#[derive(Debug, Clone)]
pub struct Sqlite {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
    checkpointer: std::sync::Arc<checkpoint::Checkpointer>,
}

impl Sqlite {
    /// The database file (empty for an in-memory database).
    pub fn filename(&self) -> std::path::PathBuf {
        self.writer.connect_options().get_filename().to_path_buf()
    }
}

/// The connection pools of one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Sqlite),
    Postgres(PgPool),
}

impl Db {
    /// Connects to `url` (`sqlite:` or `postgres:`/`postgresql:`), creating a SQLite file and its
    /// directory on first start.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parsing the sqlite database url")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // In WAL mode NORMAL syncs at checkpoints, not at every commit: a power loss can
                // undo the last commits but never corrupts the database, and a crashed process
                // (SIGKILL) loses nothing that committed.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // The checkpointer keeps the WAL short; this is the backstop should it fall
                // behind (in pages, about 40 MB).
                .pragma(
                    "wal_autocheckpoint",
                    checkpoint::AUTOCHECKPOINT_PAGES.to_string(),
                )
                // Statement journals (a multi-row INSERT with triggers inside a transaction keeps
                // one) and temporary tables stay in memory: on disk each spilled journal was a
                // file created, written, unlinked and closed within a commit.
                .pragma("temp_store", "memory")
                .busy_timeout(Duration::from_secs(10));
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("creating the database directory {}", dir.display())
                })?;
            }
            let path = options.get_filename().to_path_buf();
            // A local file does not drop connections: no ping on every acquire and release.
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                // A write SQLite refuses part-way for want of space (SQLITE_FULL: a full disk)
                // rolls its whole transaction back by itself; sqlx's own ROLLBACK then fails and
                // it goes on counting the transaction as open, so every later BEGIN on this, the
                // only writer connection, would fail until the host restarted. Such a connection
                // is closed instead and the next write opens a fresh one. (Releasing a connection
                // pings it, which runs the rollback a dropped transaction queued, first.)
                .before_acquire(|conn, _| {
                    Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
                })
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone())
                .await
                .context("opening the sqlite database")?;
            let reader = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .test_before_acquire(false)
                .connect_with(options.clone().read_only(true))
                .await
                .context("opening the sqlite database for reading")?;
            let checkpointer = checkpoint::Checkpointer::start(options);
            owner_only(&path);
            Ok(Db::Sqlite(Sqlite {
                writer,
                reader,
                checkpointer: std::sync::Arc::new(checkpointer),
            }))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options =
                PgConnectOptions::from_str(url).context("parsing the postgres database url")?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .context("connecting to postgres")?;
            Ok(Db::Postgres(pool))
        } else {
            anyhow::bail!("unsupported database url scheme: expected sqlite: or postgres:")
        }
    }

    /// The statement that opens a write transaction. On SQLite it takes the write lock up
    /// front (`IMMEDIATE`): a deferred transaction that reads and then writes fails at once with
    /// `SQLITE_BUSY` when another writer committed in between, where waiting is what we want.
    pub fn begin_write_sql(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every migration in `migrations/` that has not run yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrate::run(self).await
    }

    /// Whether the database answers at all (used by health checks and tests).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(StoreError::from))
    }

    /// Stops the checkpointer (which checkpoints one last time) and closes the pools.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => {
                sqlite.reader.close().await;
                sqlite.writer.close().await;
                sqlite.checkpointer.stop().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

mod checkpoint;

/// A named constraint the HTTP layer turns into a client error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// `workspaces_parent_name_uniq`: a live sibling already has this name.
    WorkspaceNameTaken,
    /// `workspaces_parent_fkey`: the parent does not exist.
    WorkspaceParentMissing,
    /// `<table>_workspace_fkey`: the workspace a row belongs to does not exist.
    WorkspaceMissing,
    /// `workspaces_tier_check`, `..._status_check`, `..._workspace_access_check`, ...
    WorkspaceFieldInvalid,
    /// `activity_logs_idempotency_uniq`: this activity was already recorded.
    ActivityDuplicate,
    /// `workspace_schedules_name_uniq`: the workspace already has a schedule of this name.
    ScheduleNameTaken,
    /// Any other constraint; carries its name for the log (`"unknown"` for a name this build
    /// does not know).
    Other(&'static str),
}

/// Constraints of the schema that callers do not match on, kept so [`Constraint::Other`] can
/// name them. A store test checks that every constraint in `migrations/` is mapped or listed.
const OTHER_CONSTRAINTS: &[&str] = &[
    "workspace_restart_due_pkey",
    "workspace_restart_due_workspace_fkey",
    "audit_events_pkey",
    "audit_events_id_uniq",
    "workspaces_pkey",
    "workspaces_forwarded_to_fkey",
    "canvas_layouts_pkey",
    "canvas_viewport_pkey",
    "structure_events_pkey",
    "activity_logs_pkey",
    "activity_search_keys_activity_uniq",
    "workspace_secrets_pkey",
    "workspace_secrets_encryption_version_check",
    "workspace_secrets_workspace_key_uniq",
    "global_secrets_pkey",
    "global_secrets_encryption_version_check",
    "workspace_auth_tokens_pkey",
    "workspace_auth_tokens_hash_uniq",
    "org_api_tokens_pkey",
    "org_api_tokens_hash_uniq",
    "org_api_tokens_org_fkey",
    "workspace_config_pkey",
    "extensions_pkey",
    "extensions_slot_digest_uniq",
    "extension_slots_pkey",
    "extension_slots_active_fkey",
    "extension_slots_shadow_fkey",
    "extension_activations_pkey",
    "extension_activations_extension_fkey",
    "extension_activations_action_check",
    "extension_shadow_results_pkey",
    "extension_shadow_results_candidate_fkey",
    "extension_shadow_results_outcome_check",
    "workspace_plugins_pkey",
    "workspace_restarts_pkey",
    "workspace_restarts_workspace_fkey",
    "extension_blobs_pkey",
    "org_plugin_allowlist_pkey",
    "org_plugin_allowlist_org_fkey",
    "plugin_update_queue_pkey",
    "plugin_update_queue_status_check",
    "plugin_update_queue_pending_uniq",
    "a2a_queue_pkey",
    "a2a_queue_priority_check",
    "a2a_queue_status_check",
    "a2a_queue_active_uniq",
    "host_settings_pkey",
    "workspace_schedules_pkey",
    "workspace_schedules_source_check",
    "workspace_schedule_runs_pkey",
    "workspace_schedule_runs_schedule_fkey",
    "approval_requests_pkey",
    "approval_requests_status_check",
    "workspace_memory_pkey",
    "platform_instructions_pkey",
    "platform_instructions_scope_check",
    "platform_instructions_target_check",
    "workflow_checkpoints_pkey",
    "workflow_checkpoints_step_uniq",
    "agent_memories_pkey",
    "agent_memories_id_uniq",
    "agent_memories_scope_check",
    "workspace_token_usage_pkey",
    "agents_pkey",
    "agents_status_check",
    "workspaces_delivery_mode_check",
    "pending_uploads_pkey",
    "pending_uploads_workspace_fkey",
    "pending_uploads_size_check",
    "pending_uploads_filename_check",
    "agents_active_uniq",
];

impl Constraint {
    fn from_name(name: &str) -> Self {
        match name {
            "workspaces_parent_name_uniq" => Constraint::WorkspaceNameTaken,
            "workspaces_parent_fkey" => Constraint::WorkspaceParentMissing,
            "workspaces_tier_check"
            | "workspaces_status_check"
            | "workspaces_workspace_access_check"
            | "workspaces_max_concurrent_tasks_check"
            | "workspaces_update_tier_check" => Constraint::WorkspaceFieldInvalid,
            "activity_logs_idempotency_uniq" => Constraint::ActivityDuplicate,
            "workspace_schedules_name_uniq" => Constraint::ScheduleNameTaken,
            SQLITE_FOREIGN_KEY => Constraint::WorkspaceMissing,
            _ if name.ends_with("_workspace_fkey") => Constraint::WorkspaceMissing,
            _ => Constraint::Other(
                OTHER_CONSTRAINTS
                    .iter()
                    .find(|known| **known == name)
                    .copied()
                    .unwrap_or("unknown"),
            ),
        }
    }
}

/// Errors from the store. Callers match on [`StoreError::Constraint`]; everything else is a
/// server fault whose detail only goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("constraint violated: {0:?}")]
    Constraint(Constraint),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db_err) = &err
            && let Some(name) = constraint_name(db_err.as_ref())
        {
            return StoreError::Constraint(Constraint::from_name(&name));
        }
        StoreError::Database(err)
    }
}

/// The violated constraint's name. PostgreSQL reports it directly. SQLite only names it in the
/// message, and for a unique index over plain columns it names the columns instead, so those are
/// mapped back through [`SQLITE_UNIQUE_COLUMNS`]. This is the one place that reads SQLite's text.
fn constraint_name(err: &dyn sqlx::error::DatabaseError) -> Option<String> {
    if let Some(name) = err.constraint() {
        return Some(name.to_owned());
    }
    let message = err.message();
    if let Some(rest) = message.strip_prefix("UNIQUE constraint failed: ") {
        if let Some(index) = rest
            .strip_prefix("index '")
            .and_then(|r| r.strip_suffix('\''))
        {
            return Some(index.to_owned());
        }
        return SQLITE_UNIQUE_COLUMNS
            .iter()
            .find(|(columns, _)| *columns == rest)
            .map(|(_, name)| (*name).to_owned());
    }
    if let Some(rest) = message.strip_prefix("CHECK constraint failed: ") {
        return Some(rest.trim().to_owned());
    }
    if message == "FOREIGN KEY constraint failed" {
        // SQLite does not say which key. Every foreign key but two points from a row to the
        // workspace it belongs to, so that is the answer; the writes of `workspaces` itself,
        // where the parent is the key input can break, say so instead (see
        // `workspaces::parent_missing`).
        return Some(SQLITE_FOREIGN_KEY.to_owned());
    }
    None
}

/// Stands for the foreign key SQLite does not name.
const SQLITE_FOREIGN_KEY: &str = "sqlite_foreign_key";

/// SQLite names the columns of a violated unique index over plain columns; these are ours.
const SQLITE_UNIQUE_COLUMNS: &[(&str, &str)] = &[
    (
        "activity_logs.workspace_id, activity_logs.idempotency_key",
        "activity_logs_idempotency_uniq",
    ),
    (
        "workspace_secrets.workspace_id, workspace_secrets.key",
        "workspace_secrets_workspace_key_uniq",
    ),
    (
        "workspace_auth_tokens.token_hash",
        "workspace_auth_tokens_hash_uniq",
    ),
    ("org_api_tokens.token_hash", "org_api_tokens_hash_uniq"),
    (
        "workspace_schedules.workspace_id, workspace_schedules.name",
        "workspace_schedules_name_uniq",
    ),
    ("workspace_schedules.id", "workspace_schedules_pkey"),
    ("workspace_schedule_runs.id", "workspace_schedule_runs_pkey"),
    ("approval_requests.id", "approval_requests_pkey"),
    ("agents.workspace_id", "agents_active_uniq"),
    ("agents.id", "agents_pkey"),
    // Primary keys other than INTEGER ones are unique indexes too, reported the same way.
    ("workspaces.id", "workspaces_pkey"),
    ("canvas_layouts.workspace_id", "canvas_layouts_pkey"),
    ("canvas_viewport.id", "canvas_viewport_pkey"),
    ("structure_events.id", "structure_events_pkey"),
    ("activity_logs.id", "activity_logs_pkey"),
    ("workspace_secrets.id", "workspace_secrets_pkey"),
    ("global_secrets.key", "global_secrets_pkey"),
    ("workspace_auth_tokens.id", "workspace_auth_tokens_pkey"),
    ("org_api_tokens.id", "org_api_tokens_pkey"),
    ("workspace_config.workspace_id", "workspace_config_pkey"),
    (
        "extensions.slot, extensions.digest",
        "extensions_slot_digest_uniq",
    ),
    ("extensions.id", "extensions_pkey"),
    ("extension_slots.slot", "extension_slots_pkey"),
    ("extension_activations.id", "extension_activations_pkey"),
    (
        "extension_shadow_results.id",
        "extension_shadow_results_pkey",
    ),
];

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod full_disk_tests {
    use super::Db;

    /// A write refused for want of space (`max_page_count` makes SQLite answer exactly as on a
    /// full disk: SQLITE_FULL, rolling the transaction back) must not leave the one writer
    /// connection counted as inside a transaction: the next write works, without a restart.
    #[tokio::test]
    async fn a_write_refused_for_want_of_space_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}", dir.path().join("full.db").display());
        let db = Db::connect(&url, 2).await.expect("a database");
        let Db::Sqlite(sqlite) = &db else {
            unreachable!("a sqlite url")
        };
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&sqlite.writer)
            .await
            .expect("a table");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&sqlite.writer)
            .await
            .expect("the page count");
        // The cap is the writer connection's own; a fresh connection has none.
        sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 2))
            .execute(&sqlite.writer)
            .await
            .expect("capping the database");
        let mut tx = super::begin(&sqlite.writer, Some(db.begin_write_sql()))
            .await
            .expect("a write transaction");
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))")
            .execute(&mut *tx)
            .await
            .expect_err("the capped database is full");
        assert!(
            matches!(&full, sqlx::Error::Database(e) if e.code().as_deref() == Some("13")),
            "{full:?}"
        );
        let _ = tx.commit().await;
        for _ in 0..2 {
            let mut tx = super::begin(&sqlite.writer, Some(db.begin_write_sql()))
                .await
                .expect("a write transaction after the refused one");
            sqlx::query("INSERT INTO t VALUES (zeroblob(100))")
                .execute(&mut *tx)
                .await
                .expect("a write after the refused one");
            tx.commit().await.expect("its commit");
        }
    }
}

#[cfg(test)]
mod cancelled_begin_tests {
    use std::time::Duration;

    use sqlx::Connection as _;
    use sqlx::postgres::PgPoolOptions;

    use super::Backend;
    use super::testing::TestDatabase;

    /// Callers cancelled at every point of `BEGIN` (timeouts from nothing to a few round trips)
    /// leave no session inside a transaction: each write made through the pool after them is
    /// committed and seen from another connection. With sqlx 0.8's own `Pool::begin`, one
    /// cancelled while waiting for `BEGIN`'s answer left the pool's one connection inside a
    /// transaction, and the writes after it ran uncommitted there.
    #[tokio::test]
    async fn transactions_cancelled_during_begin_leave_later_writes_committed() {
        let database = TestDatabase::create(Backend::Postgres).await;
        // One connection: every attempt and every write after it share it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database.url)
            .await
            .expect("the test database");
        sqlx::query("CREATE TABLE written (n INT)")
            .execute(&pool)
            .await
            .expect("a table");
        const ATTEMPTS: i32 = 300;
        for n in 0..ATTEMPTS {
            let cut = Duration::from_micros(u64::try_from(n).unwrap_or(0) * 3);
            let _ = tokio::time::timeout(cut, super::begin(&pool, None)).await;
            sqlx::query("INSERT INTO written (n) VALUES ($1)")
                .bind(n)
                .execute(&pool)
                .await
                .expect("a write after a cancelled begin");
        }
        let mut other = sqlx::PgConnection::connect(&database.url)
            .await
            .expect("a second connection");
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM written")
            .fetch_one(&mut other)
            .await
            .expect("counting from outside");
        assert_eq!(
            seen,
            i64::from(ATTEMPTS),
            "writes made after a cancelled BEGIN ran inside a transaction nobody ended"
        );
        other.close().await.ok();
        pool.close().await;
    }
}
