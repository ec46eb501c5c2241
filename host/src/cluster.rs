//! Running as one of several replicas on one database.
//!
//! Every `molecule serve` process is a replica with its own id. On PostgreSQL any number of them
//! share the database and behave as one host: background sweeps run on whichever replica holds
//! their lease ([`Leases`]), events cross replicas through `LISTEN/NOTIFY` (`events/`), and
//! restart cycles are claimed in `workspace_restarts`. On SQLite there is exactly one replica: a
//! lock file beside the database refuses a second process on the same file.

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use uuid::Uuid;

use crate::store::Db;

/// The first key of every sweeper lease's advisory lock (`pg_try_advisory_lock(int, int)`; the
/// two-key space never overlaps the one-key locks migrations take). "MOLS".
const LEASE_CLASS: i32 = 0x4D4F_4C53;
/// The `application_name` of the connection holding this replica's leases, so an operator (or a
/// test) can find it in `pg_stat_activity`.
pub const LEASE_CONNECTION_NAME: &str = "molecule-leases";

/// This replica: its id and its leases. Shared through `Services`.
#[derive(Debug)]
pub struct Cluster {
    pub replica: Uuid,
    pub leases: Leases,
    /// Held for the process's lifetime on SQLite; dropping it lets another host start.
    _sqlite_lock: Option<File>,
}

impl Cluster {
    /// Joins the database as a new replica; on SQLite, refuses when another host already runs on
    /// the same file.
    pub fn join(db: &Db) -> anyhow::Result<Cluster> {
        let replica = Uuid::new_v4();
        Ok(match db {
            Db::Sqlite(sqlite) => Cluster {
                replica,
                leases: Leases::new(None),
                _sqlite_lock: sqlite_lock(&sqlite.filename())?,
            },
            Db::Postgres(pool) => Cluster {
                replica,
                leases: Leases::new(Some(
                    (*pool.connect_options())
                        .clone()
                        .application_name(LEASE_CONNECTION_NAME),
                )),
                _sqlite_lock: None,
            },
        })
    }
}

/// The lock file of a SQLite database: `<file>.replica-lock`.
pub fn sqlite_lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".replica-lock");
    PathBuf::from(name)
}

/// Takes the single-replica lock of a SQLite database file (none for an in-memory database).
fn sqlite_lock(database: &Path) -> anyhow::Result<Option<File>> {
    if database.as_os_str().is_empty() || database.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let path = sqlite_lock_path(database);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening the replica lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "another molecule host is already running on the SQLite database {}; SQLite serves \
             one replica. Stop the other host, or run every replica on one PostgreSQL database \
             (database_url = \"postgres://…\")",
            database.display()
        ),
        Err(TryLockError::Error(e)) => {
            anyhow::bail!("locking the replica lock {}: {e}", path.display())
        }
    }
}

/// The first key of the advisory locks that serialise one plugin's installs in one workspace
/// across replicas ("MOLP").
pub const PLUGIN_LOCK_CLASS: i32 = 0x4D4F_4C50;

/// Exclusive work on one key across every replica: this replica's own lock for the key, then,
/// on PostgreSQL, a session advisory lock on a pooled connection. The connection is closed
/// rather than returned when the guard drops (on success, error, panic or cancellation alike),
/// which releases the advisory lock with it.
#[derive(Debug)]
pub struct KeyGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _remote: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// Takes the lock of `key` in `class` (waiting for it, or `None` at once when `wait` is false and
/// it is held, here or on another replica). `local` is this replica's lock of the same key.
pub async fn lock_key(
    db: &Db,
    local: std::sync::Arc<tokio::sync::Mutex<()>>,
    class: i32,
    key: &str,
    wait: bool,
) -> Result<Option<KeyGuard>, sqlx::Error> {
    let local = if wait {
        local.lock_owned().await
    } else {
        match local.try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => return Ok(None),
        }
    };
    let remote = match db {
        Db::Sqlite(_) => None,
        Db::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            conn.close_on_drop();
            let sql = if wait {
                "SELECT pg_advisory_lock($1, $2) IS NOT NULL"
            } else {
                "SELECT pg_try_advisory_lock($1, $2)"
            };
            let taken: bool = sqlx::query_scalar(sql)
                .bind(class)
                .bind(lease_key(key))
                .fetch_one(&mut *conn)
                .await?;
            if !taken {
                return Ok(None);
            }
            Some(conn)
        }
    };
    Ok(Some(KeyGuard {
        _local: local,
        _remote: remote,
    }))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweeperLabels {
    sweeper: String,
}

/// Exactly-once background work across replicas. Each sweeper's lease is a session advisory lock
/// held on one dedicated connection per replica: the holder keeps it pass after pass, and when
/// the holder dies its connection closes, PostgreSQL drops the lock, and the next replica to
/// try (at its next tick, so within one interval) takes it. Without PostgreSQL every lease is
/// this replica's. A holder confirms its connection before each pass, so two replicas overlap
/// by at most the one pass that was running when the holder's connection dropped; every sweep
/// is written to tolerate that (status transitions are conditional updates).
#[derive(Debug)]
pub struct Leases {
    options: Option<PgConnectOptions>,
    /// The lease connection and the leases it holds; `None` until first needed or after it broke.
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    held: Mutex<BTreeSet<&'static str>>,
    passes: Family<SweeperLabels, Counter>,
    holding: Family<SweeperLabels, Gauge>,
}

impl Leases {
    fn new(options: Option<PgConnectOptions>) -> Self {
        Leases {
            options,
            conn: tokio::sync::Mutex::new(None),
            held: Mutex::new(BTreeSet::new()),
            passes: Family::default(),
            holding: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sweeper_passes",
            "Sweeper passes this replica ran (each sweeper runs on one replica at a time)",
            self.passes.clone(),
        );
        registry.register(
            "sweeper_lease_held",
            "1 while this replica holds the sweeper's lease",
            self.holding.clone(),
        );
    }

    /// Counts one pass of `sweeper` on this replica.
    pub fn count_pass(&self, sweeper: &'static str) {
        self.passes.get_or_create(&labels(sweeper)).inc();
    }

    /// Whether this replica holds (or has now taken) `sweeper`'s lease. A held lease is checked
    /// against a live connection first, so a replica cut off from the database stops sweeping.
    pub async fn hold(&self, sweeper: &'static str) -> bool {
        let Some(options) = &self.options else {
            self.set_held(sweeper, true);
            return true;
        };
        let mut conn = self.conn.lock().await;
        let held = match lease_query(&mut conn, options, sweeper, self.is_held(sweeper)).await {
            Ok(held) => held,
            Err(err) => {
                if !self.held_names().is_empty() {
                    tracing::warn!(error = %err, "the lease connection broke; this replica's sweeper leases are lost");
                }
                *conn = None;
                for name in self.held_names() {
                    self.set_held(name, false);
                }
                false
            }
        };
        if held != self.is_held(sweeper) {
            tracing::info!(
                sweeper,
                held,
                "sweeper lease {}",
                if held { "taken" } else { "lost" }
            );
        }
        self.set_held(sweeper, held);
        held
    }

    fn is_held(&self, sweeper: &'static str) -> bool {
        self.held.lock().expect("lease lock").contains(sweeper)
    }

    fn held_names(&self) -> Vec<&'static str> {
        self.held
            .lock()
            .expect("lease lock")
            .iter()
            .copied()
            .collect()
    }

    fn set_held(&self, sweeper: &'static str, held: bool) {
        let mut names = self.held.lock().expect("lease lock");
        if held {
            names.insert(sweeper);
        } else {
            names.remove(sweeper);
        }
        self.holding
            .get_or_create(&labels(sweeper))
            .set(i64::from(held));
    }

    /// Gives every lease up (the replica is stopping). The locks are released by a query before
    /// the connection closes: a closed connection's locks go only when its server process has
    /// noticed, a moment later, and another replica asking meanwhile would be refused.
    pub async fn release(&self) {
        if let Some(mut conn) = self.conn.lock().await.take() {
            if let Err(err) = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut conn)
                .await
            {
                tracing::debug!(error = %err, "releasing the leases");
            }
            if let Err(err) = conn.close().await {
                tracing::debug!(error = %err, "closing the lease connection");
            }
        }
        for name in self.held_names() {
            self.set_held(name, false);
        }
    }
}

fn labels(sweeper: &str) -> SweeperLabels {
    SweeperLabels {
        sweeper: sweeper.to_owned(),
    }
}

/// Confirms a held lease (the connection answers) or tries to take a free one.
async fn lease_query(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    sweeper: &str,
    held: bool,
) -> Result<bool, sqlx::Error> {
    if conn.is_none() {
        *conn = Some(PgConnection::connect_with(options).await?);
    }
    let conn = conn.as_mut().expect("connected above");
    if held {
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        return Ok(true);
    }
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LEASE_CLASS)
        .bind(lease_key(sweeper))
        .fetch_one(&mut *conn)
        .await
}

/// A stable 32-bit key per name (FNV-1a), the same on every replica and every build. Two names
/// sharing a key only serialise each other.
fn lease_key(sweeper: &str) -> i32 {
    let hash = sweeper.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_stable_and_distinct() {
        let names = [
            "liveness",
            "plugin-drift",
            "a2a-queue-expiry",
            "delayed-restarts",
            "plugin-swap-dirs",
            "provision-timeout",
            "health",
            "orphans",
            "hibernation",
            "scheduler",
        ];
        let keys: BTreeSet<i32> = names.iter().map(|n| lease_key(n)).collect();
        assert_eq!(keys.len(), names.len());
        // FNV-1a of "liveness": a changed key would let old and new replicas sweep together.
        assert_eq!(lease_key("liveness"), lease_key("liveness"));
        assert_eq!(lease_key(""), 0x811c_9dc5_u32 as i32);
    }

    #[test]
    fn a_second_host_on_one_sqlite_file_is_refused_until_the_first_stops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("molecule.db");
        let first = sqlite_lock(&db).unwrap();
        assert!(first.is_some());
        let err = sqlite_lock(&db).unwrap_err().to_string();
        assert!(
            err.contains("already running on the SQLite database"),
            "{err}"
        );
        assert!(err.contains("PostgreSQL"), "{err}");
        drop(first);
        assert!(sqlite_lock(&db).unwrap().is_some());
        assert!(sqlite_lock(Path::new(":memory:")).unwrap().is_none());
    }

    /// Two replicas on one PostgreSQL: a lease has one holder, the holder keeps it, and when the
    /// holder's connection goes (the process died) the other takes it at its next try.
    #[tokio::test]
    async fn a_lease_has_one_holder_and_passes_on_when_the_holder_goes() {
        let tdb =
            crate::store::testing::TestDatabase::create(crate::store::Backend::Postgres).await;
        let db = tdb.connect().await;
        let a = Cluster::join(&db).unwrap();
        let b = Cluster::join(&db).unwrap();
        assert!(a.leases.hold("liveness").await);
        assert!(!b.leases.hold("liveness").await);
        assert!(b.leases.hold("health").await, "leases are per sweeper");
        assert!(!a.leases.hold("health").await);
        assert!(
            a.leases.hold("liveness").await,
            "the holder keeps its lease"
        );
        assert!(!b.leases.hold("liveness").await);

        // The holder's connection is cut by the server (as when its process dies).
        let Db::Postgres(pool) = &db else {
            unreachable!()
        };
        let a_pid: i32 = {
            let mut guard = a.leases.conn.lock().await;
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(guard.as_mut().unwrap())
                .await
                .unwrap()
        };
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(a_pid)
            .execute(pool)
            .await
            .unwrap();
        let mut taken = false;
        for _ in 0..100 {
            if b.leases.hold("liveness").await {
                taken = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(taken, "the lease passed to the other replica");
        assert!(
            !a.leases.hold("liveness").await,
            "the old holder noticed it lost the lease and does not sweep"
        );
        assert!(!a.leases.is_held("liveness"));

        // A graceful stop gives leases up at once.
        b.leases.release().await;
        assert!(a.leases.hold("health").await);

        // A key lock is exclusive across replicas (each has its own local lock) and is released
        // when its guard drops.
        let local = || std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let held = lock_key(&db, local(), PLUGIN_LOCK_CLASS, "ws/plugin", true)
            .await
            .unwrap()
            .expect("a free key");
        assert!(
            lock_key(&db, local(), PLUGIN_LOCK_CLASS, "ws/plugin", false)
                .await
                .unwrap()
                .is_none(),
            "held by the other replica"
        );
        assert!(
            lock_key(&db, local(), PLUGIN_LOCK_CLASS, "ws/other", false)
                .await
                .unwrap()
                .is_some()
        );
        drop(held);
        let mut again = None;
        for _ in 0..100 {
            again = lock_key(&db, local(), PLUGIN_LOCK_CLASS, "ws/plugin", false)
                .await
                .unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "released when the guard dropped");
    }
}
