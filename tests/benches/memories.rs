//! Memory search at scale: 100,000 memories (`MEMORIES_BENCH_COUNT` changes it) of one org on
//! SQLite and on PostgreSQL, inserted in bulk through the store (multi-row inserts), then
//! searched through the same domain function the HTTP route and the MCP tool use (visibility
//! set included): ranked full-text queries of one and two words, a short (substring) query, and
//! a query no word matches (full-text miss, then the substring fallback). Prints p50/p99 per
//! kind; asserts only that the searches find what they should.
//! PostgreSQL comes from `MOLECULE_TEST_PG_URL` (`make bench` starts it).

use std::time::{Duration, Instant};

use chrono::Utc;
use molecule_host::Services;
use molecule_host::config::{Config, RuntimeKind};
use molecule_host::memories::{self, Search};
use molecule_host::store::Backend;
use molecule_host::store::memories::{self as store, MemoryRow};
use molecule_host::store::status::Status;
use molecule_host::store::testing::TestDatabase;
use molecule_host::store::workspaces::{self, NewWorkspace};
use serde_json::json;
use uuid::Uuid;

/// Workspaces of the org: a root and its children.
const WORKSPACES: usize = 10;
/// Searches per kind.
const QUERIES: usize = 200;
/// Makes one search text.
type Query<'a> = dyn Fn(&mut Lcg) -> String + 'a;

/// Rows per store call while loading.
const BATCH: usize = 5_000;

/// A small deterministic generator (no seeding from the clock: every run stores the same text).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// A vocabulary of 3,000 pronounceable words.
fn vocabulary() -> Vec<String> {
    let onsets = ["b", "d", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"];
    let vowels = ["a", "e", "i", "o", "u"];
    let mut words = Vec::new();
    'outer: for a in onsets {
        for b in vowels {
            for c in onsets {
                for d in vowels {
                    for e in ["n", "r", "s", "x"] {
                        words.push(format!("{a}{b}{c}{d}{e}"));
                        if words.len() == 3_000 {
                            break 'outer;
                        }
                    }
                }
            }
        }
    }
    words
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn round(backend: Backend, count: usize) {
    let db = TestDatabase::create(backend).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        database_url: Some(db.url.clone().into()),
        data_dir: data.path().to_path_buf(),
        builtin_extensions_dir: None,
        ..Config::default()
    };
    config.runtime.kind = RuntimeKind::None;
    let svc = Services::start_with_runtime(config, None)
        .await
        .expect("services start");

    let mut ids = Vec::with_capacity(WORKSPACES);
    for w in 0..WORKSPACES {
        let ws = NewWorkspace {
            id: Uuid::new_v4(),
            name: format!("agent-{w}"),
            role: None,
            tier: 2,
            status: Status::Online,
            runtime: "external".into(),
            url: None,
            parent_id: ids.first().copied(),
            workspace_dir: None,
            workspace_access: "none".into(),
            budget_limit: None,
            max_concurrent_tasks: 1,
            x: 0.0,
            y: 0.0,
            hibernation_idle_minutes: None,
        };
        workspaces::insert(&svc.db, &ws, &[], &json!({}))
            .await
            .unwrap();
        ids.push(ws.id);
    }

    let words = vocabulary();
    let mut rng = Lcg(42);
    let started = Instant::now();
    let mut rows = Vec::with_capacity(BATCH);
    for i in 0..count {
        let writer = ids[i % WORKSPACES];
        let scope = match i % 10 {
            0 if writer == ids[0] => "GLOBAL",
            0..=4 => "TEAM",
            _ => "LOCAL",
        };
        let len = 8 + (rng.next() % 24) as usize;
        let content = (0..len)
            .map(|_| words[(rng.next() % words.len() as u64) as usize].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let now = Utc::now();
        rows.push(MemoryRow {
            id: Uuid::new_v4(),
            workspace_id: writer,
            content,
            scope: scope.into(),
            namespace: ["general", "ops", "research"][i % 3].into(),
            redactions: 0,
            created_at: now,
            updated_at: now,
        });
        if rows.len() == BATCH || i + 1 == count {
            store::insert_many(&svc.db, &rows, false).await.unwrap();
            rows.clear();
        }
    }
    println!(
        "{}: {count} memories stored in {:.2} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );

    // A child reads its LOCAL, the org's TEAM through CanCommunicate, and the root's GLOBAL.
    let reader = ids[1];
    let kinds: [(&str, Box<Query<'_>>); 4] = [
        (
            "one word (ranked)",
            Box::new(|rng: &mut Lcg| words[(rng.next() % words.len() as u64) as usize].clone()),
        ),
        (
            "two words (ranked)",
            Box::new(|rng: &mut Lcg| {
                let a = &words[(rng.next() % words.len() as u64) as usize];
                let b = &words[(rng.next() % words.len() as u64) as usize];
                format!("{a} {b}")
            }),
        ),
        (
            "2 characters (substring)",
            Box::new(|rng: &mut Lcg| {
                words[(rng.next() % words.len() as u64) as usize][..2].to_owned()
            }),
        ),
        (
            "no match (fts miss + substring)",
            Box::new(|rng: &mut Lcg| format!("qqq{}", rng.next() % 1000)),
        ),
    ];
    println!(
        "{}: search over {count} memories, {QUERIES} queries each, limit 20:",
        backend.name()
    );
    for (name, query) in &kinds {
        let mut times = Vec::with_capacity(QUERIES);
        let mut found = 0;
        for _ in 0..QUERIES {
            let q = query(&mut rng);
            let at = Instant::now();
            let (rows, _) = memories::search(
                &svc,
                reader,
                Search {
                    q: Some(&q),
                    ..Search::default()
                },
            )
            .await
            .expect("a search");
            times.push(at.elapsed());
            found += rows.len();
        }
        times.sort();
        if name.starts_with("no match") {
            assert_eq!(found, 0, "{name} found rows");
        } else {
            assert!(found > 0, "{name} found nothing");
        }
        println!(
            "  {:<34} p50 {:>8.2} ms   p99 {:>8.2} ms   ({:.1} rows/query)",
            name,
            percentile(&times, 0.50),
            percentile(&times, 0.99),
            found as f64 / QUERIES as f64
        );
    }
    svc.writes.close().await;
    svc.db.close().await;
}

fn main() {
    let count: usize = std::env::var("MEMORIES_BENCH_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        round(Backend::Sqlite, count).await;
        round(Backend::Postgres, count).await;
    });
}
