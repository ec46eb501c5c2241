//! Org import at scale: load + plan + import of a generated 1,000-workspace template on SQLite
//! and on PostgreSQL, with every database write real and container start-up left out (the
//! recording runtime of `runtime::recording`, which only records its calls).
//!
//! For each backend and round: a fresh database; the import (load, plan, preflight, 1,000 rows
//! with secrets and layouts, events); the provisions it schedules, until the recording runtime
//! has seen 1,000 starts; and a second import of the same template, which keeps everything.
//! Prints medians and the PostgreSQL/SQLite ratio. PostgreSQL comes from
//! `MOLECULE_TEST_PG_URL` (`make bench` starts it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use molecule_host::Services;
use molecule_host::config::{Config, RuntimeKind};
use molecule_host::org::import::{self, ImportRequest, Mode, Source};
use molecule_host::runtime::recording::RecordingRuntime;
use molecule_host::store::Backend;
use molecule_host::store::testing::TestDatabase;

const ROUNDS: usize = 3;
/// 1 root, 9 departments, 9 teams each, 11 members each: 1 + 9 + 81 + 891 = 982, plus 18
/// specialists under the root: 1,000 workspaces.
const DEPARTMENTS: usize = 9;
const TEAMS: usize = 9;
const MEMBERS: usize = 11;
const SPECIALISTS: usize = 18;
const TOTAL: usize =
    1 + DEPARTMENTS + DEPARTMENTS * TEAMS + DEPARTMENTS * TEAMS * MEMBERS + SPECIALISTS;

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

struct Sample {
    import: Duration,
    provisioned: Duration,
    reimport: Duration,
}

async fn round(backend: Backend, templates: &Path) -> Sample {
    let db = TestDatabase::create(backend).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        database_url: Some(db.url.clone().into()),
        data_dir: data.path().to_path_buf(),
        builtin_extensions_dir: None,
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
    let request = || ImportRequest {
        source: Source::Dir("bench".into()),
        mode: Mode::Merge,
    };

    let started = Instant::now();
    let outcome = import::import(&svc, request()).await.expect("import");
    let import_time = started.elapsed();
    assert_eq!(outcome.created_count, TOTAL, "{:?}", outcome.error);
    while runtime.starts() < TOTAL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let provisioned = started.elapsed();

    let again = Instant::now();
    let second = import::import(&svc, request()).await.expect("re-import");
    let reimport = again.elapsed();
    assert_eq!(second.skipped_count, TOTAL);
    svc.lifecycle.shutdown().await;
    svc.db.close().await;
    Sample {
        import: import_time,
        provisioned,
        reimport,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
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
            .map(|_| runtime.block_on(round(backend, templates.path())))
            .collect();
        let import = median(samples.iter().map(|s| s.import).collect());
        let provisioned = median(samples.iter().map(|s| s.provisioned).collect());
        let reimport = median(samples.iter().map(|s| s.reimport).collect());
        println!(
            "org import of {TOTAL} workspaces on {:<8}: import {:>8.3} s ({:.2} ms/workspace), all provisioned {:>8.3} s, re-import (all kept) {:>7.3} s",
            backend.name(),
            import.as_secs_f64(),
            import.as_secs_f64() * 1000.0 / TOTAL as f64,
            provisioned.as_secs_f64(),
            reimport.as_secs_f64(),
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
