//! Fresh, migrated databases for tests and benchmarks, one per call, on either backend.
//!
//! SQLite databases are files in a temporary directory; PostgreSQL databases are created on the
//! private server `make test` starts (`MOLECULE_TEST_PG_URL`) and dropped when the handle goes.
//! Without that server a PostgreSQL test fails with a message saying how to get one: it is never
//! skipped.

use std::path::PathBuf;

use uuid::Uuid;

use super::{Backend, Db};

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    backend: Backend,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Creates an empty database (not yet migrated) on `backend`.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("molecule-test-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("creating a temporary directory");
                let url = format!("sqlite://{}", dir.join("molecule.db").display());
                TestDatabase {
                    url,
                    backend,
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = crate::config::test_postgres_url().unwrap_or_else(|| {
                    panic!(
                        "MOLECULE_TEST_PG_URL is not set: PostgreSQL tests need the private server that \
                         `make test` starts (or run `scripts/test-postgres.sh start` and export its URL)"
                    )
                });
                let name = format!("molecule_test_{}", Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!("connecting to the test PostgreSQL at MOLECULE_TEST_PG_URL: {e}")
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .expect("creating a test database");
                admin.close().await;
                let url = match admin_url.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("MOLECULE_TEST_PG_URL must end in /<database>"),
                };
                TestDatabase {
                    url,
                    backend,
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connects and migrates.
    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.url, 8)
            .await
            .expect("connecting to the test database");
        db.migrate().await.expect("migrating the test database");
        db
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop may run inside a runtime; a separate thread with its own runtime can block.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&admin)
                            .await;
                            admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Generates one `#[tokio::test]` per backend from an async fn taking a fresh migrated [`Db`]:
/// `both_backends!(lists_workspaces);` defines `lists_workspaces_sqlite` and `..._postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod both_backends_generated {
            $(
                pub mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        let tdb = $crate::store::testing::TestDatabase::create($crate::store::Backend::Sqlite).await;
                        let db = tdb.connect().await;
                        super::super::$name(db.clone()).await;
                        db.close().await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        let tdb = $crate::store::testing::TestDatabase::create($crate::store::Backend::Postgres).await;
                        let db = tdb.connect().await;
                        super::super::$name(db.clone()).await;
                        db.close().await;
                    }
                }
            )+
        }
    };
}
