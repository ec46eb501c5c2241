//! Extension platform benchmarks, each beside its baseline in the same run:
//!
//! - per-call cost of each slot with a fresh Store and instance, against the native equivalent,
//!   for 10 and 1,000 changes (classifier) and one decision (restart policy);
//! - compiling a component against loading its cached artefact;
//! - swapping a slot's active version.
//!
//! After criterion's report a table prints the medians and the ratios, then the extension call
//! against its goals (fixed cost ≤ 15 µs, a 1,000-change classify ≤ 100 µs; ratio = measured /
//! goal, so ≤ 1 passes). The components come from `make plugins` (`make bench` builds them).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{human, median_ns, report_dir};
use criterion::Criterion;
use molecule_host::events::EventBus;
use molecule_host::extensions::engine::{self, ExtensionEngine};
use molecule_host::extensions::policy;
use molecule_host::extensions::registry::{ExtensionHost, Grants, Manifest};
use molecule_host::extensions::runtime::ResolverAccess;
use molecule_host::extensions::types::{
    ChangeKind, FileChange, Reload, SlotKind, Source, Trigger, WorkspaceInfo,
};
use molecule_host::extensions::{Extension, Identity, Limits};
use molecule_host::store::Backend;
use molecule_host::store::testing::TestDatabase;

fn component(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} ({e}): run `make plugins`", path.display()))
}

fn changes(n: usize) -> Vec<FileChange> {
    (0..n)
        .map(|i| FileChange {
            path: format!("skills/skill-{i}/SKILL.md"),
            kind: ChangeKind::Modified,
            old_digest: Some(format!("sha256:{i:064x}")),
            new_digest: Some(format!("sha256:{:064x}", i + 1)),
        })
        .collect()
}

/// The skill classifier's rule in native code: the baseline a component call is compared to.
fn native_classify(changes: &[FileChange]) -> Reload {
    match changes.iter().find(|c| {
        c.kind != ChangeKind::Modified || c.path.rsplit('/').next().is_none_or(|f| f != "SKILL.md")
    }) {
        None => Reload::Hot,
        Some(c) => Reload::Cold(format!("{} is not an edited SKILL.md", c.path)),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn workspace() -> WorkspaceInfo {
    WorkspaceInfo {
        id: "6f1c1d7e-0000-4000-8000-000000000000".into(),
        name: "Dev".into(),
        runtime: "langgraph".into(),
        tier: 3,
        status: "online".into(),
        update_tier: "production".into(),
        recent_restarts: 2,
    }
}

fn load(engine: &ExtensionEngine, name: &str, kind: SlotKind) -> Extension {
    let bytes = component(name);
    let identity = Identity {
        name: name.into(),
        version: "bench".into(),
        digest: engine::digest(&bytes),
    };
    Extension::load(
        engine,
        kind,
        identity,
        &bytes,
        Limits {
            deadline: Duration::from_secs(5),
            ..Limits::default()
        },
    )
    .expect("the component loads")
}

fn bench(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let engine = ExtensionEngine::new(cache.path()).unwrap();
    engine.start_ticker();
    let classifier = load(&engine, "skill-classifier", SlotKind::Classifier);
    let policy_ext = load(&engine, "default-restart-policy", SlotKind::RestartPolicy);

    for n in [10, 1_000] {
        let input = changes(n);
        let mut group = c.benchmark_group(format!("classify_{n}"));
        group.bench_function("native", |b| {
            b.iter(|| native_classify(std::hint::black_box(&input)))
        });
        group.bench_function("component", |b| {
            b.iter(|| classifier.classify(std::hint::black_box(&input)).unwrap())
        });
        group.finish();
    }

    let ws = workspace();
    let trigger = Trigger::AgentExited(1);
    let mut group = c.benchmark_group("decide");
    group.bench_function("native", |b| {
        b.iter(|| policy::default_decide(std::hint::black_box(&ws), &trigger))
    });
    group.bench_function("component", |b| {
        b.iter(|| {
            policy_ext
                .decide(std::hint::black_box(&ws), &trigger)
                .unwrap()
        })
    });
    group.finish();

    // A fetch through the local resolver (copying a 10-file registry entry inside the sandbox,
    // then the host's check of the result) against a native copy of the same tree.
    let registry = tempfile::tempdir().unwrap();
    let entry = registry.path().join("tools");
    std::fs::create_dir_all(entry.join("skills/a")).unwrap();
    std::fs::write(entry.join("plugin.yaml"), "name: tools\n").unwrap();
    for i in 0..9 {
        std::fs::write(
            entry.join(format!("skills/a/file-{i}.md")),
            "x".repeat(2048),
        )
        .unwrap();
    }
    let bytes = component("local-resolver");
    let identity = Identity {
        name: "local".into(),
        version: "bench".into(),
        digest: engine::digest(&bytes),
    };
    let access = ResolverAccess {
        read_only_dirs: vec![registry.path().to_path_buf()],
        ..ResolverAccess::default()
    };
    let resolver = Extension::load_with_access(
        &engine,
        SlotKind::Resolver,
        identity,
        &bytes,
        Limits {
            deadline: Duration::from_secs(5),
            ..Limits::default()
        },
        access,
    )
    .expect("the resolver loads");
    let source = Source {
        scheme: "local".into(),
        location: "tools".into(),
        reference: None,
    };
    let mut group = c.benchmark_group("fetch_local_10_files");
    group.bench_function("native", |b| {
        b.iter_batched(
            tempfile::TempDir::new,
            |dest| copy_tree(&entry, dest.unwrap().path()),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("component", |b| {
        b.iter_batched(
            tempfile::TempDir::new,
            |dest| {
                resolver
                    .fetch(&source, dest.unwrap().path())
                    .unwrap()
                    .unwrap()
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();

    // Compile from bytes vs load the cached artefact: a fresh cache directory per compile.
    let bytes = component("skill-classifier");
    let digest = engine::digest(&bytes);
    let warm = ExtensionEngine::new(cache.path()).unwrap();
    warm.load(&digest, &bytes).unwrap();
    let mut group = c.benchmark_group("component_ready");
    group.sample_size(10);
    group.bench_function("compile", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                (ExtensionEngine::new(dir.path()).unwrap(), dir)
            },
            |(fresh, _dir)| fresh.load(&digest, &bytes).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("cached", |b| b.iter(|| warm.load(&digest, &bytes).unwrap()));
    group.finish();

    // Swapping the active classifier between two stored versions (database row + atomic swap).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db_handle = rt.block_on(TestDatabase::create(Backend::Sqlite));
    let data = tempfile::tempdir().unwrap();
    let (host, a, b) = rt.block_on(async {
        let db = db_handle.connect().await;
        let host: Arc<ExtensionHost> = ExtensionHost::start(
            db.clone(),
            EventBus::new(db, uuid::Uuid::new_v4()),
            data.path(),
            None,
        )
        .await
        .unwrap();
        let manifest = |name: &str| Manifest {
            name: name.into(),
            version: "1".into(),
            slot: "classifier".into(),
            grants: Grants::default(),
        };
        let a = host
            .upload(
                manifest("skill"),
                component("skill-classifier"),
                None,
                false,
            )
            .await
            .unwrap();
        let b = host
            .upload(
                manifest("answer"),
                component("answer-classifier"),
                None,
                false,
            )
            .await
            .unwrap();
        (host, a.id, b.id)
    });
    let mut group = c.benchmark_group("swap");
    group.sample_size(20);
    let mut flip = false;
    group.bench_function("activate", |bench| {
        bench.iter(|| {
            flip = !flip;
            rt.block_on(host.activate(if flip { a } else { b }))
                .unwrap()
        })
    });
    group.finish();
    host.stop();
    engine.stop_ticker();
}

fn summary() {
    println!(
        "\n{:<18} {:>14} {:>14} {:>10}",
        "median", "baseline", "measured", "ratio"
    );
    for (group, baseline, measured) in [
        ("classify_10", "native", "component"),
        ("classify_1000", "native", "component"),
        ("decide", "native", "component"),
        ("fetch_local_10_files", "native", "component"),
        ("component_ready", "cached", "compile"),
    ] {
        if let (Some(base), Some(value)) = (median_ns(group, baseline), median_ns(group, measured))
        {
            println!(
                "{:<18} {:>14} {:>14} {:>9.0}x",
                group,
                format!("{baseline} {}", human(base)),
                format!("{measured} {}", human(value)),
                value / base
            );
        }
    }
    if let Some(swap) = median_ns("swap", "activate") {
        println!("{:<18} {:>14}", "swap (activate)", human(swap));
    }
    goals();
}

/// The extension call against issue 20's goals: what one call costs whatever it does (a trivial
/// decide: a fresh Store and instance, the call, the drop) and a classify of 1,000 changes, each
/// with a fresh instance, as every call of the host has.
fn goals() {
    println!(
        "\nextension call (fresh instance per call) {:>10} {:>10} {:>7} {:>6}   native",
        "measured", "goal", "ratio", ""
    );
    for (what, group, goal_ns) in [
        ("fixed cost (trivial decide)", "decide", 15_000.0),
        ("classify of 1,000 changes", "classify_1000", 100_000.0),
    ] {
        let (Some(measured), Some(native)) =
            (median_ns(group, "component"), median_ns(group, "native"))
        else {
            continue;
        };
        println!(
            "{:<40} {:>10} {:>10} {:>7.2} {:>6}   {}",
            what,
            human(measured),
            format!("≤ {}", human(goal_ns)),
            measured / goal_ns,
            if measured <= goal_ns { "pass" } else { "FAIL" },
            human(native)
        );
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .output_directory(&report_dir())
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    bench(&mut criterion);
    criterion.final_summary();
    summary();
}
