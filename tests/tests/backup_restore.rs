//! Backup and restore (issue 26), the way the operator guide says: a backup taken of a running
//! host's database, restored into a fresh database with a fresh data directory, serves the same
//! org to a new host given the same secrets key: its workspaces, their secrets (decrypting), its
//! schedules and its activity.
//!
//! - SQLite: `VACUUM INTO '<file>'` on a connection of its own while the host runs (the same
//!   statement the `sqlite3` shell runs; it reads one consistent snapshot, the WAL included), and
//!   the copy is the new host's database file.
//! - PostgreSQL: `pg_dump --format=custom` of the live database, then `pg_restore --no-owner`
//!   into a new, empty database, with the binaries of the test PostgreSQL install.
//!
//! The data directory is not part of the backup: with no agents on the host (runtime `none`) it
//! holds only caches the database rebuilds (the component cache), so the new host starts on an
//! empty one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use molecule_e2e::{ADMIN_TOKEN, Api, DbBackend, Fault, FaultAgent, TestApp};
use molecule_host::Config;
use molecule_host::store::testing::TestDatabase;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

molecule_e2e::on_both_backends!(a_restored_backup_serves_the_same_org_to_a_new_host);

/// The key the original host seals secrets with; the restored host is given the same one (it is
/// configuration, not data: an operator keeps it with the host's config, not in the backup).
const SECRETS_KEY: &str = "backup-restore-key-0123456789abc";

/// What the spec compares between the original host and the restored one.
#[derive(Debug, PartialEq)]
struct Org {
    /// `(name, parent name, status)` of every workspace, sorted.
    workspaces: Vec<(String, Option<String>, String)>,
    /// Each named workspace's decrypted secrets.
    secrets: Vec<(String, Value)>,
    /// Each named workspace's schedules: `(name, cron_expr, prompt, enabled)`.
    schedules: Vec<(String, Vec<Schedule>)>,
    /// Each named workspace's activity: `(type, summary)`, newest first.
    activity: Vec<(String, Vec<(String, String)>)>,
}

/// A schedule as compared: `(name, cron_expr, prompt, enabled)`.
type Schedule = (String, String, String, bool);

async fn a_restored_backup_serves_the_same_org_to_a_new_host(backend: DbBackend) {
    // Arrange: an org with secrets, schedules and activity on a running host.
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let app = TestApp::spawn_with(backend, |c| {
        c.secrets_encryption_key = Some(SECRETS_KEY.to_owned().into());
    })
    .await;
    let imported = app
        .post(
            "/org/import",
            json!({ "template": {
                "name": "Backed Up",
                "workspaces": [{ "name": "Chief", "external": true, "children": [
                    { "name": "Analyst", "external": true },
                    { "name": "Writer", "external": true },
                ]}],
            }}),
        )
        .await
        .expect(201);
    assert_eq!(imported["created_count"], 3, "{imported}");
    let (echo, _) = app.workspace_at("Echo", None, &agent.url).await;
    for (id, key, value) in [
        (id_of(&app, "Chief").await, "OPENAI_API_KEY", "sk-chief"),
        (id_of(&app, "Analyst").await, "DB_PASSWORD", "hunter2"),
        (echo.clone(), "ECHO_TOKEN", "echo-secret"),
    ] {
        app.post(
            &format!("/workspaces/{id}/secrets"),
            json!({ "key": key, "value": value }),
        )
        .await
        .expect(200);
    }
    app.post(
        &format!("/workspaces/{echo}/schedules"),
        json!({ "name": "standup", "cron_expr": "0 9 * * 1-5", "prompt": "Post the standup.", "enabled": true }),
    )
    .await
    .expect(201);
    for n in 0..5 {
        app.post(
            &format!("/workspaces/{echo}/a2a"),
            json!({ "params": { "message": { "content": format!("call {n}") } } }),
        )
        .await
        .expect(200);
    }
    // Activity rows are stored off the answer path, within moments.
    molecule_e2e::eventually(Duration::from_secs(10), || async {
        let rows = app.activity(&echo, "?type=a2a_receive").await;
        (rows.len() == 5).then_some(())
    })
    .await;
    let before = snapshot(&app.api).await;
    // The comparison below is about something: four workspaces, three with secrets, a
    // schedule and the calls' activity.
    assert_eq!(before.workspaces.len(), 4, "{before:?}");
    let echo_of = |org: &Org| {
        let schedules = org
            .schedules
            .iter()
            .find(|(n, _)| n == "Echo")
            .map_or(0, |(_, s)| s.len());
        let received = org
            .activity
            .iter()
            .find(|(n, _)| n == "Echo")
            .map_or(0, |(_, rows)| {
                rows.iter().filter(|(t, _)| t == "a2a_receive").count()
            });
        (schedules, received)
    };
    assert_eq!(echo_of(&before), (1, 5), "{before:?}");

    // Act: back up while the host runs, restore into a fresh database, start a new host on it.
    let restored = TestDatabase::create(backend).await;
    let work = tempfile::tempdir().expect("a backup dir");
    match backend {
        DbBackend::Sqlite => {
            let file = sqlite_file(&restored.url);
            sqlite_backup(app.database_url(), &file).await;
        }
        DbBackend::Postgres => {
            let dump = work.path().join("molecule.dump");
            pg_dump(app.database_url(), &dump);
            pg_restore(&dump, &restored.url);
        }
    }
    let new_data_dir = tempfile::tempdir().expect("a new data dir");
    let host = Host::start(&restored.url, new_data_dir.path()).await;

    // Assert: the same org, secrets decrypting.
    let after = snapshot(&host.api).await;
    assert_eq!(after, before);
    assert_eq!(
        after
            .secrets
            .iter()
            .find(|(n, _)| n == "Analyst")
            .map(|(_, v)| v["DB_PASSWORD"].clone()),
        Some(json!("hunter2"))
    );
    host.stop().await;
}

/// The id of the workspace named `name`.
async fn id_of(api: &Api, name: &str) -> String {
    api.workspaces()
        .await
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["id"].as_str())
        .unwrap_or_else(|| panic!("no workspace named {name}"))
        .to_owned()
}

async fn snapshot(api: &Api) -> Org {
    let listed = api.workspaces().await;
    let name_of = |id: &Value| {
        listed
            .iter()
            .find(|w| w["id"] == *id)
            .and_then(|w| w["name"].as_str())
            .map(str::to_owned)
    };
    let mut workspaces: Vec<(String, Option<String>, String)> = listed
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_owned(),
                name_of(&w["parent_id"]),
                w["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    workspaces.sort();
    let mut secrets = Vec::new();
    let mut schedules = Vec::new();
    let mut activity = Vec::new();
    for (name, _, _) in &workspaces {
        let id = id_of(api, name).await;
        let values = api
            .get(&format!("/workspaces/{id}/secrets/values"))
            .await
            .expect(200);
        secrets.push((name.clone(), values));
        let listed = api
            .get(&format!("/workspaces/{id}/schedules"))
            .await
            .expect(200);
        let mut rows: Vec<Schedule> = listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_owned(),
                    s["cron_expr"].as_str().unwrap_or_default().to_owned(),
                    s["prompt"].as_str().unwrap_or_default().to_owned(),
                    s["enabled"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        rows.sort();
        schedules.push((name.clone(), rows));
        let rows = api
            .activity(&id, "?limit=500")
            .await
            .iter()
            .map(|a| {
                (
                    a["activity_type"].as_str().unwrap_or_default().to_owned(),
                    a["summary"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        activity.push((name.clone(), rows));
    }
    Org {
        workspaces,
        secrets,
        schedules,
        activity,
    }
}

/// The file a `sqlite://<path>` URL names.
fn sqlite_file(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("sqlite://").expect("a sqlite:// url"))
}

/// `VACUUM INTO` on a connection of its own: what `sqlite3 <db> "VACUUM INTO '<file>'"` does.
async fn sqlite_backup(url: &str, into: &Path) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("a connection to the live database");
    let target = into.to_str().expect("a utf-8 path").replace('\'', "''");
    sqlx::query(&format!("VACUUM INTO '{target}'"))
        .execute(&mut conn)
        .await
        .expect("VACUUM INTO");
    conn.close().await.expect("closing");
}

/// A server binary of the test PostgreSQL install (`scripts/test-postgres.sh` uses
/// `/usr/lib/postgresql/<version>/bin`), the newest version there.
fn pg_binary(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the PostgreSQL install (scripts/test-postgres.sh start)")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| {
        p.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql/*/bin"))
}

fn run(command: &mut std::process::Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pg_dump(url: &str, into: &Path) {
    run(std::process::Command::new(pg_binary("pg_dump"))
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(into)
        .arg(format!("--dbname={url}")));
}

fn pg_restore(dump: &Path, url: &str) {
    run(std::process::Command::new(pg_binary("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--single-transaction"])
        .arg(format!("--dbname={url}"))
        .arg(dump));
}

/// A host on an existing database (the restored one) and a data directory of its own.
struct Host {
    api: Api,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Host {
    async fn start(database_url: &str, data_dir: &Path) -> Host {
        let config = Config {
            secrets_encryption_key: Some(SECRETS_KEY.to_owned().into()),
            ..molecule_e2e::base_config(database_url, data_dir)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = listener.local_addr().expect("an address");
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let handle = tokio::spawn(async move {
            molecule_host::run(config, listener, shutdown.cancelled_owned()).await
        });
        let api = Api::at(addr, Some(ADMIN_TOKEN), Duration::from_secs(30));
        molecule_e2e::eventually(Duration::from_secs(30), || async {
            assert!(
                !handle.is_finished(),
                "the restored host exited during start"
            );
            let health = api.client.get(api.url("/health")).send().await.ok()?;
            health.status().is_success().then_some(())
        })
        .await;
        Host { api, stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the host stops")
            .expect("the host task")
            .expect("the host ran cleanly");
    }
}
