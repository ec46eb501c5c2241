//! Org import at scale: load + plan + import of a generated 1,000-workspace template on SQLite
//! and on PostgreSQL, with every database write real and container start-up left out (the
//! recording runtime of `runtime::recording`, which only records its calls), against its
//! baseline measured in the same run: the same 1,000 workspaces created one by one with
//! `POST /workspaces` over one HTTP connection, on a host set up the same way.
//!
//! For each backend and round: a fresh database; the import (load, plan, preflight, 1,000 rows
//! with secrets and layouts, events); the provisions it schedules, until the recording runtime
//! has seen 1,000 starts; and a second import of the same template, which keeps everything.
//! Then, on another fresh database, the loop of single creates (same tree, names, tier and
//! secrets). Prints medians, the loop/import ratio, the goals (import ≤ 0.2 s on SQLite,
//! ≥ 3× faster than the loop) and the PostgreSQL/SQLite ratio. PostgreSQL comes from
//! `MOLECULE_TEST_PG_URL` (`make bench` starts it).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use molecule_host::Services;
use molecule_host::config::{Config, RuntimeKind};
use molecule_host::http;
use molecule_host::org::import::{self, ImportRequest, Mode, Source};
use molecule_host::runtime::recording::RecordingRuntime;
use molecule_host::store::Backend;
use molecule_host::store::testing::TestDatabase;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 3;
/// 1 root, 9 departments, 9 teams each, 11 members each: 1 + 9 + 81 + 891 = 982, plus 18
/// specialists under the root: 1,000 workspaces.
const DEPARTMENTS: usize = 9;
const TEAMS: usize = 9;
const MEMBERS: usize = 11;
const SPECIALISTS: usize = 18;
const TOTAL: usize =
    1 + DEPARTMENTS + DEPARTMENTS * TEAMS + DEPARTMENTS * TEAMS * MEMBERS + SPECIALISTS;
/// The goals of issue 20.
const SQLITE_IMPORT_GOAL: Duration = Duration::from_millis(200);
const SPEEDUP_GOAL: f64 = 3.0;
const ADMIN_TOKEN: &str = "org-import-bench-admin-token";

/// Writes the template: `org.yaml` including one file per department, each with its teams; an
/// org `.env`, a files_dir with a prompt and a skill for every team lead.
fn generate(root: &Path) {
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let mut org = String::from(
        "name: Bench Org\ndefaults:\n  tier: 2\n  initial_prompt: Start.\nworkspaces:\n  - name: Root\n    children:\n",
    );
    for d in 0..DEPARTMENTS {
        org.push_str(&format!("      - !include departments/d{d}.yaml\n"));
    }
    for s in 0..SPECIALISTS {
        org.push_str(&format!(
            "      - name: Specialist {s}\n        role: helps\n"
        ));
    }
    write("org.yaml", &org);
    write(".env", "SHARED_KEY=shared\nOTHER_KEY=other\n");
    write("lead/system-prompt.md", "You lead a team.\n");
    write("lead/skills/plan/SKILL.md", "# Plan\n");
    for d in 0..DEPARTMENTS {
        let mut dept = format!("name: Department {d}\nchildren:\n");
        for t in 0..TEAMS {
            dept.push_str(&format!(
                "  - name: Team {d}-{t}\n    files_dir: lead\n    children:\n"
            ));
            for m in 0..MEMBERS {
                dept.push_str(&format!("      - name: Member {d}-{t}-{m}\n"));
            }
        }
        write(&format!("departments/d{d}.yaml"), &dept);
    }
}

/// Services on a fresh database with the recording runtime, as both measurements use them.
async fn services(
    backend: Backend,
    templates: &Path,
) -> (
    Services,
    Arc<RecordingRuntime>,
    TestDatabase,
    tempfile::TempDir,
) {
    let db = TestDatabase::create(backend).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        database_url: Some(db.url.clone().into()),
        data_dir: data.path().to_path_buf(),
        builtin_extensions_dir: None,
        rate_limit_per_minute: 1_000_000,
        ..Config::default()
    };
    config.runtime.kind = RuntimeKind::None;
    config.runtime.provision_concurrency = 16;
    config.org.templates_dir = templates.to_path_buf();
    let runtime = Arc::new(RecordingRuntime::default());
    let svc = Services::start_with_runtime(config, Some(runtime.clone()))
        .await
        .expect("services start");
    // No listener here: say where agents would reach the host, as `run` does once it listens.
    svc.lifecycle
        .set_platform_url("http://127.0.0.1:8080".to_owned());
    (svc, runtime, db, data)
}

async fn stop(svc: Services) {
    svc.lifecycle.shutdown().await;
    svc.writes.close().await;
    svc.db.close().await;
}

struct Sample {
    import: Duration,
    provisioned: Duration,
    reimport: Duration,
}

async fn import_round(backend: Backend, templates: &Path) -> Sample {
    let (svc, runtime, _db, _data) = services(backend, templates).await;
    let request = || ImportRequest {
        source: Source::Dir("bench".into()),
        mode: Mode::Merge,
    };

    let started = Instant::now();
    let outcome = import::import(&svc, request()).await.expect("import");
    let import_time = started.elapsed();
    assert_eq!(outcome.created_count, TOTAL);
    while runtime.starts() < TOTAL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let provisioned = started.elapsed();

    let again = Instant::now();
    let second = import::import(&svc, request()).await.expect("re-import");
    let reimport = again.elapsed();
    assert_eq!(second.skipped_count, TOTAL);
    stop(svc).await;
    Sample {
        import: import_time,
        provisioned,
        reimport,
    }
}

/// The template's tree as `(name, parent index)`, parents first, as the import creates it.
fn tree() -> Vec<(String, Option<usize>)> {
    let mut nodes = vec![("Root".to_owned(), None)];
    for d in 0..DEPARTMENTS {
        nodes.push((format!("Department {d}"), Some(0)));
        let department = nodes.len() - 1;
        for t in 0..TEAMS {
            nodes.push((format!("Team {d}-{t}"), Some(department)));
            let team = nodes.len() - 1;
            for m in 0..MEMBERS {
                nodes.push((format!("Member {d}-{t}-{m}"), Some(team)));
            }
        }
    }
    for s in 0..SPECIALISTS {
        nodes.push((format!("Specialist {s}"), Some(0)));
    }
    assert_eq!(nodes.len(), TOTAL);
    nodes
}

/// The baseline: the template's workspaces created one `POST /workspaces` at a time over one
/// keep-alive connection (each waits for the previous answer: children need their parent's id).
async fn loop_round(backend: Backend, templates: &Path) -> Duration {
    let (svc, runtime, _db, _data) = services(backend, templates).await;
    let stopping = CancellationToken::new();
    let state = http::AppState::new(
        svc.clone(),
        Arc::new(http::Metrics::new()),
        stopping.clone(),
    )
    .expect("app state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = stopping.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let nodes = tree();

    let started = Instant::now();
    let mut ids: Vec<String> = Vec::with_capacity(TOTAL);
    for (name, parent) in &nodes {
        let mut body = json!({
            "name": name,
            "tier": 2,
            "secrets": { "SHARED_KEY": "shared", "OTHER_KEY": "other" },
        });
        if let Some(parent) = parent {
            body["parent_id"] = json!(ids[*parent]);
        }
        let response = client
            .post(format!("{base}/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("create sent");
        assert_eq!(response.status(), 201, "creating {name}");
        let created: Value = response.json().await.expect("a creation answer");
        ids.push(created["id"].as_str().expect("an id").to_owned());
    }
    let elapsed = started.elapsed();

    while runtime.starts() < TOTAL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(client);
    stopping.cancel();
    server.await.unwrap().unwrap();
    stop(svc).await;
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met { "PASS" } else { "FAIL" }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let templates = tempfile::tempdir().unwrap();
    generate(&templates.path().join("bench"));
    let mut rows = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && molecule_host::config::test_postgres_url().is_none() {
            assert!(
                !molecule_host::config::running_in_ci(),
                "MOLECULE_TEST_PG_URL is required in CI"
            );
            println!("postgres: skipped (MOLECULE_TEST_PG_URL is not set; `make bench` sets it)");
            continue;
        }
        let samples: Vec<Sample> = (0..ROUNDS)
            .map(|_| runtime.block_on(import_round(backend, templates.path())))
            .collect();
        let loops: Vec<Duration> = (0..ROUNDS)
            .map(|_| runtime.block_on(loop_round(backend, templates.path())))
            .collect();
        let import = median(samples.iter().map(|s| s.import).collect());
        let provisioned = median(samples.iter().map(|s| s.provisioned).collect());
        let reimport = median(samples.iter().map(|s| s.reimport).collect());
        let single = median(loops);
        println!(
            "org import of {TOTAL} workspaces on {:<8}: import {:>7.3} s ({:.3} ms/workspace), all provisioned {:>7.3} s, re-import (all kept) {:>7.3} s",
            backend.name(),
            import.as_secs_f64(),
            import.as_secs_f64() * 1000.0 / TOTAL as f64,
            provisioned.as_secs_f64(),
            reimport.as_secs_f64(),
        );
        let speedup = single.as_secs_f64() / import.as_secs_f64();
        println!(
            "  baseline on {:<8}: {TOTAL} single POST /workspaces over one connection {:>7.3} s; loop/import {speedup:.2}x",
            backend.name(),
            single.as_secs_f64(),
        );
        if backend == Backend::Sqlite {
            println!(
                "  goal: import <= {:.1} s on sqlite: {}",
                SQLITE_IMPORT_GOAL.as_secs_f64(),
                verdict(import <= SQLITE_IMPORT_GOAL)
            );
        }
        println!(
            "  goal: import >= {SPEEDUP_GOAL:.0}x faster than the loop on {}: {}",
            backend.name(),
            verdict(speedup >= SPEEDUP_GOAL)
        );
        rows.push((backend, import, reimport));
    }
    if let [(_, sqlite, sqlite_re), (_, pg, pg_re)] = rows.as_slice() {
        println!(
            "postgres/sqlite ratio: import {:.2}, re-import {:.2}",
            pg.as_secs_f64() / sqlite.as_secs_f64(),
            pg_re.as_secs_f64() / sqlite_re.as_secs_f64()
        );
    }
}
