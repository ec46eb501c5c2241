//! Store benchmarks on SQLite and PostgreSQL side by side: listing 1,000 workspaces and
//! cascade-deleting a 1,000-node tree through the domain function the DELETE route calls.
//!
//! Each group has one function per backend (`list_1000/sqlite`, `list_1000/postgres`, ...), so
//! criterion's report shows them together; after the run a table prints both medians and the
//! PostgreSQL/SQLite ratio, SQLite being the baseline measured in the same run. PostgreSQL is the
//! private test server (`MOLECULE_TEST_PG_URL`, started by `make bench`); without it the
//! benchmark stops with a message saying how to get one.

use std::time::{Duration, Instant};

mod common;

use common::{human, median_ns, report_dir};
use criterion::{Criterion, SamplingMode};
use futures::StreamExt as _;
use molecule_host::store::testing::TestDatabase;
use molecule_host::store::workspaces::NewWorkspace;
use molecule_host::store::{self, Backend};
use molecule_host::{Config, Services};
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Workspaces per benchmark tree or list.
const NODES: usize = 1_000;
/// Children per node in the benchmark tree: 1 + 10 + 100 + 889 nodes, four levels.
const FAN_OUT: usize = 10;

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// A host's services on a fresh database that lives as long as this value.
struct Fixture {
    svc: Services,
    _db: TestDatabase,
    _data_dir: tempfile::TempDir,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDatabase::create(backend).await;
    let data_dir = tempfile::tempdir().expect("a data dir");
    let config = Config {
        database_url: Some(db.url.clone().into()),
        data_dir: data_dir.path().to_path_buf(),
        builtin_extensions_dir: None,
        ..Config::default()
    };
    let svc = Services::start(config).await.expect("services start");
    Fixture {
        svc,
        _db: db,
        _data_dir: data_dir,
    }
}

fn node(name: String, parent: Option<Uuid>) -> NewWorkspace {
    NewWorkspace {
        id: Uuid::new_v4(),
        name,
        role: Some("bench".to_owned()),
        tier: 3,
        status: molecule_host::store::status::Status::Online,
        runtime: "langgraph".to_owned(),
        url: None,
        parent_id: parent,
        workspace_dir: None,
        workspace_access: "none".to_owned(),
        budget_limit: None,
        max_concurrent_tasks: 1,
        hibernation_idle_minutes: None,
        x: 0.0,
        y: 0.0,
    }
}

/// Inserts `nodes` workspaces (with their layout and config rows, as creation writes them) as
/// a tree with `FAN_OUT` children per node, level by level. Returns the root.
async fn build_tree(svc: &Services, nodes: usize) -> Uuid {
    // PostgreSQL takes concurrent writers; SQLite serialises them, so there they go one by one.
    let writers = match svc.db.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => 8,
    };
    let root = node(format!("bench-root-{}", Uuid::new_v4()), None);
    let root_id = root.id;
    insert(svc, root).await;
    let mut level = vec![root_id];
    let mut count = 1;
    while count < nodes {
        let mut next = Vec::new();
        for parent in &level {
            for i in 0..FAN_OUT {
                if count + next.len() == nodes {
                    break;
                }
                next.push(node(format!("node-{i}"), Some(*parent)));
            }
        }
        count += next.len();
        let ids: Vec<Uuid> = next.iter().map(|n| n.id).collect();
        futures::stream::iter(next)
            .for_each_concurrent(writers, |n| insert(svc, n))
            .await;
        level = ids;
    }
    root_id
}

async fn insert(svc: &Services, ws: NewWorkspace) {
    store::workspaces::insert(&svc.db, &ws, &[], &json!({}))
        .await
        .expect("inserting a bench workspace");
}

fn list_1000(c: &mut Criterion, rt: &Runtime, fixtures: &[(Backend, Fixture)]) {
    let mut group = c.benchmark_group("list_1000");
    for (backend, fixture) in fixtures {
        let svc = &fixture.svc;
        rt.block_on(build_tree(svc, NODES));
        let listed = rt.block_on(store::workspaces::list_live(&svc.db)).unwrap();
        assert_eq!(
            listed.len(),
            NODES,
            "the list benchmark sees exactly its tree"
        );
        group.bench_function(backend.name(), |b| {
            b.to_async(rt).iter(|| async {
                let rows = store::workspaces::list_live(&svc.db)
                    .await
                    .expect("listing");
                std::hint::black_box(rows)
            });
        });
    }
    group.finish();
}

fn cascade_delete_1000(c: &mut Criterion, rt: &Runtime, fixtures: &[(Backend, Fixture)]) {
    let mut group = c.benchmark_group("cascade_delete_1000");
    // One iteration takes tenths of a second plus a tree to build: few samples, flat sampling.
    group.sampling_mode(SamplingMode::Flat);
    for (backend, fixture) in fixtures {
        let svc = &fixture.svc;
        group.bench_function(backend.name(), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    // Building the tree and purging the tombstones afterwards stay outside the
                    // measurement, so every iteration deletes the same tree from the same table.
                    let root = build_tree(svc, NODES).await;
                    let started = Instant::now();
                    let outcome = molecule_host::workspaces::cascade_delete(svc, root, false)
                        .await
                        .expect("cascade delete");
                    measured += started.elapsed();
                    assert_eq!(outcome.subtree.len(), NODES);
                    assert_eq!(outcome.descendants_removed, NODES - 1);
                    store::workspaces::purge(&svc.db, &outcome.subtree)
                        .await
                        .expect("purging the removed tree");
                }
                measured
            });
        });
    }
    group.finish();
}

fn print_summary(groups: &[&str]) {
    println!();
    println!(
        "{:<22} {:>14} {:>14} {:>18}",
        "median", "sqlite", "postgres", "postgres/sqlite"
    );
    for group in groups {
        let (Some(sqlite), Some(postgres)) =
            (median_ns(group, "sqlite"), median_ns(group, "postgres"))
        else {
            continue;
        };
        println!(
            "{:<22} {:>14} {:>14} {:>17.2}x",
            group,
            human(sqlite),
            human(postgres),
            postgres / sqlite
        );
    }
}

fn main() {
    if molecule_host::config::test_postgres_url().is_none() {
        eprintln!(
            "error: MOLECULE_TEST_PG_URL is not set. The benchmarks compare SQLite with the private \
             test PostgreSQL: run `make bench`, or `export MOLECULE_TEST_PG_URL=$(scripts/test-postgres.sh start)` first."
        );
        std::process::exit(2);
    }
    let rt = Runtime::new().expect("a tokio runtime");
    let fixtures: Vec<(Backend, Fixture)> = BACKENDS
        .iter()
        .map(|backend| (*backend, rt.block_on(fixture(*backend))))
        .collect();
    let mut c = Criterion::default()
        .output_directory(&report_dir())
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    list_1000(&mut c, &rt, &fixtures);
    cascade_delete_1000(&mut c, &rt, &fixtures);
    c.final_summary();
    print_summary(&["list_1000", "cascade_delete_1000"]);
    for (_, fixture) in &fixtures {
        rt.block_on(fixture.svc.db.close());
    }
}
