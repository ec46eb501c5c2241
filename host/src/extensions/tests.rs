//! The runtime against real components: the default plugins and deliberately hostile guests,
//! built by `make plugins` into `plugins/target/wasm32-wasip2/release/`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::policy::{self, Clamp};
use super::types::{
    ChangeKind, Decision, DriftApplied, FileChange, PluginInstalled, Reload, SlotKind, Trigger,
    WorkspaceInfo,
};
use super::*;

/// One engine (and epoch ticker) for every test in this process, as in the host.
pub(crate) fn engine() -> &'static ExtensionEngine {
    static ENGINE: OnceLock<(ExtensionEngine, tempfile::TempDir)> = OnceLock::new();
    let (engine, _) = ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a cache dir");
        let engine = ExtensionEngine::new(dir.path()).expect("the engine starts");
        engine.start_ticker();
        (engine, dir)
    });
    engine
}

/// The bytes of a component built by `make plugins`.
pub(crate) fn component(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run `make plugins` (make test does) to build the components",
            path.display()
        )
    })
}

fn load(name: &str, kind: SlotKind, limits: Limits) -> Result<Arc<Extension>, LoadError> {
    let bytes = component(name);
    let identity = Identity {
        name: name.into(),
        version: "0.1.0".into(),
        digest: engine::digest(&bytes),
    };
    Extension::load(engine(), kind, identity, &bytes, limits).map(Arc::new)
}

fn change(path: &str, kind: ChangeKind) -> FileChange {
    FileChange {
        path: path.into(),
        kind,
        old_digest: (kind != ChangeKind::Added).then(|| "sha256:aa".into()),
        new_digest: (kind != ChangeKind::Removed).then(|| "sha256:bb".into()),
    }
}

fn workspace(recent_restarts: u32, update_tier: &str) -> WorkspaceInfo {
    WorkspaceInfo {
        id: "6f1c1d7e-0000-4000-8000-000000000000".into(),
        name: "Dev".into(),
        runtime: "langgraph".into(),
        tier: 3,
        status: "online".into(),
        update_tier: update_tier.into(),
        recent_restarts,
    }
}

#[test]
fn the_skill_classifier_is_hot_only_for_modified_skill_files() {
    let ext = load("skill-classifier", SlotKind::Classifier, Limits::default()).unwrap();
    assert_eq!(ext.classify(&[]).unwrap(), Reload::Hot);
    let skills = [
        change("skills/a/SKILL.md", ChangeKind::Modified),
        change("SKILL.md", ChangeKind::Modified),
    ];
    assert_eq!(ext.classify(&skills).unwrap(), Reload::Hot);
    for cold in [
        vec![change("skills/a/SKILL.md", ChangeKind::Added)],
        vec![change("skills/a/SKILL.md", ChangeKind::Removed)],
        vec![
            change("skills/a/SKILL.md", ChangeKind::Modified),
            change("plugin.yaml", ChangeKind::Modified),
        ],
        vec![change("skills/a/run.py", ChangeKind::Modified)],
    ] {
        assert!(
            matches!(ext.classify(&cold).unwrap(), Reload::Cold(_)),
            "{cold:?}"
        );
    }
    ext.self_check().expect("the self-check answers");
}

#[test]
fn classifiers_of_0_1_0_and_of_0_1_1_packed_receive_the_same_changes() {
    let classic = load(
        "echo-classifier-0-1-0",
        SlotKind::Classifier,
        Limits::default(),
    )
    .unwrap();
    let packed = load("echo-classifier", SlotKind::Classifier, Limits::default()).unwrap();
    let unusual = FileChange {
        path: "skills/ünï/SKILL.md".into(),
        kind: ChangeKind::Modified,
        old_digest: Some(String::new()),
        new_digest: None,
    };
    let many: Vec<FileChange> = (0..500)
        .map(|i| change(&format!("skills/s{i}/SKILL.md"), ChangeKind::Modified))
        .collect();
    for changes in [
        vec![],
        vec![
            change("SKILL.md", ChangeKind::Modified),
            change("hooks/pre.sh", ChangeKind::Added),
            unusual,
            change("plugin.yaml", ChangeKind::Removed),
        ],
        many,
    ] {
        let expected = std::iter::once("call 1".to_owned())
            .chain(changes.iter().map(|c| {
                let kind = match c.kind {
                    ChangeKind::Added => "added",
                    ChangeKind::Removed => "removed",
                    ChangeKind::Modified => "modified",
                };
                format!(
                    "{kind} {} {} {}",
                    c.path,
                    c.old_digest.as_deref().unwrap_or("-"),
                    c.new_digest.as_deref().unwrap_or("-")
                )
            }))
            .collect::<Vec<_>>()
            .join("\n");
        // A cold reason is cut like a guest error (500 changes echoed are longer than that):
        // both worlds cut it at the same place.
        let expected = super::bindings::cut(expected);
        // Each call counts 1: a fresh instance starts from the initial memory, though the
        // pool hands it the very slot the previous call wrote its count into.
        for _ in 0..3 {
            assert_eq!(
                classic.classify(&changes),
                Ok(Reload::Cold(expected.clone()))
            );
            assert_eq!(
                packed.classify(&changes),
                Ok(Reload::Cold(expected.clone()))
            );
        }
    }
}

#[test]
fn the_default_restart_policy_component_agrees_with_the_native_default() {
    let ext = load(
        "default-restart-policy",
        SlotKind::RestartPolicy,
        Limits::default(),
    )
    .unwrap();
    let triggers = [
        Trigger::PluginInstalled(PluginInstalled {
            name: "p".into(),
            reload: Reload::Hot,
        }),
        Trigger::PluginInstalled(PluginInstalled {
            name: "p".into(),
            reload: Reload::Cold("x".into()),
        }),
        Trigger::FilesWritten(vec!["a".into()]),
        Trigger::SecretsChanged(vec!["K".into()]),
        Trigger::ConfigChanged,
        Trigger::AgentExited(0),
        Trigger::AgentExited(137),
        Trigger::DriftApplied(DriftApplied {
            plugin: "p".into(),
            already_updated: 0,
        }),
    ];
    for ws in [
        workspace(0, "production"),
        workspace(3, "production"),
        workspace(0, "canary"),
        workspace(30, "canary"),
    ] {
        for trigger in &triggers {
            assert_eq!(
                ext.decide(&ws, trigger).unwrap(),
                policy::default_decide(&ws, trigger),
                "{ws:?} {trigger:?}"
            );
        }
    }
}

#[test]
fn components_of_the_wrong_kind_or_not_components_at_all_are_refused_before_running() {
    let wrong = load(
        "skill-classifier",
        SlotKind::RestartPolicy,
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(wrong, LoadError::WrongWorld { .. }), "{wrong}");
    assert!(
        wrong.to_string().contains("molecule:plugin/restart"),
        "{wrong}"
    );
    let garbage = Extension::load(
        engine(),
        SlotKind::Classifier,
        Identity {
            name: "junk".into(),
            version: "0".into(),
            digest: engine::digest(b"junk"),
        },
        b"definitely not wasm",
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(garbage, LoadError::Invalid(_)), "{garbage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_classifier_is_contained_and_answered_with_cold() {
    let metrics = metrics::ExtensionMetrics::default();
    let ext = load("trap-classifier", SlotKind::Classifier, Limits::default()).unwrap();
    // Calls block (WASI's stderr needs a blocking thread), as in the host.
    let call = |ext: Arc<Extension>| async move {
        tokio::task::spawn_blocking(move || ext.classify(&[]))
            .await
            .unwrap()
    };
    assert!(matches!(call(ext.clone()).await, Err(CallError::Trap(_))));
    let answer = classify_or_cold(
        ext.clone(),
        &metrics,
        vec![change("SKILL.md", ChangeKind::Modified)],
    )
    .await;
    assert!(matches!(answer, Reload::Cold(_)), "{answer:?}");
    assert_eq!(metrics.fallbacks(&ext, "trap"), 1);
    assert_eq!(metrics.calls(&ext, "trap"), 1);
    // A trap poisons only its own Store: the next call starts clean and traps the same way,
    // and other extensions are unaffected.
    assert!(matches!(call(ext.clone()).await, Err(CallError::Trap(_))));
    let healthy = load("skill-classifier", SlotKind::Classifier, Limits::default()).unwrap();
    assert_eq!(call(healthy).await.unwrap(), Reload::Hot);
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let ext = load("loop-classifier", SlotKind::Classifier, limits).unwrap();
    let started = Instant::now();
    assert_eq!(ext.classify(&[]), Err(CallError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        started.elapsed()
    );
}

#[test]
fn unbounded_memory_growth_hits_the_cap() {
    let limits = Limits {
        memory_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let ext = load("memory-hog-classifier", SlotKind::Classifier, limits).unwrap();
    assert_eq!(ext.classify(&[]), Err(CallError::MemoryCap));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_restart_policy_falls_back_to_the_default_and_every_answer_is_clamped() {
    let metrics = metrics::ExtensionMetrics::default();
    let clamp = Clamp::default();
    let crash = Trigger::AgentExited(1);
    let policy = load(
        "default-restart-policy",
        SlotKind::RestartPolicy,
        Limits::default(),
    )
    .unwrap();
    let decided = decide_or_default(
        Some(policy.clone()),
        &metrics,
        &clamp,
        workspace(0, "production"),
        crash.clone(),
    )
    .await;
    assert_eq!(decided, Decision::RestartAfterMs(1000));
    // A grant too small for the guest's initial memory makes every call fail: the host answers
    // with its built-in default and counts the fallback.
    let starved = load(
        "default-restart-policy",
        SlotKind::RestartPolicy,
        Limits {
            memory_bytes: 1,
            ..Limits::default()
        },
    )
    .unwrap();
    let decided = decide_or_default(
        Some(starved.clone()),
        &metrics,
        &clamp,
        workspace(0, "production"),
        crash,
    )
    .await;
    assert_eq!(decided, Decision::RestartAfterMs(1000));
    assert_eq!(metrics.fallbacks(&starved, "memory"), 1);
    let storm = decide_or_default(
        None,
        &metrics,
        &clamp,
        workspace(7, "production"),
        Trigger::ConfigChanged,
    )
    .await;
    assert_eq!(
        storm,
        Decision::RestartAfterMs(clamp.cooldown_ms),
        "a restart storm is slowed down"
    );
    assert_eq!(metrics.calls(&policy, "ok"), 1);
}

#[test]
fn compiled_artefacts_are_cached_on_disk_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component("skill-classifier");
    let identity = Identity {
        name: "skill".into(),
        version: "1".into(),
        digest: engine::digest(&bytes),
    };
    let first = ExtensionEngine::new(dir.path()).unwrap();
    let cold = Extension::load(
        &first,
        SlotKind::Classifier,
        identity.clone(),
        &bytes,
        Limits::default(),
    )
    .unwrap();
    assert!(!cold.from_cache);
    // A new engine (a host restart) with the same configuration loads instead of compiling.
    let second = ExtensionEngine::new(dir.path()).unwrap();
    second.start_ticker();
    let warm = Extension::load(
        &second,
        SlotKind::Classifier,
        identity,
        &bytes,
        Limits::default(),
    )
    .unwrap();
    assert!(warm.from_cache);
    assert_eq!(warm.classify(&[]).unwrap(), Reload::Hot);
    second.stop_ticker();
}

mod registry_specs {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{change, component, workspace};
    use crate::events::EventBus;
    use crate::extensions::registry::{ExtensionHost, Grants, Manifest, RegistryError, Slot};
    use crate::extensions::types::{ChangeKind, Decision, Reload, Trigger};
    use crate::store::Db;
    use crate::store::extensions::ExtensionRow;

    /// Uploads a component built by `make plugins` under a default manifest.
    async fn upload(host: &ExtensionHost, name: &str, slot: &str, file: &str) -> ExtensionRow {
        host.upload(manifest(name, slot), component(file), None, false)
            .await
            .unwrap()
    }

    fn manifest(name: &str, slot: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: "1.0.0".into(),
            slot: slot.into(),
            grants: Grants::default(),
        }
    }

    async fn host(db: &Db, builtins: bool) -> (Arc<ExtensionHost>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let builtin_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release");
        let host = ExtensionHost::start(
            db.clone(),
            EventBus::new(db.clone(), uuid::Uuid::new_v4()),
            dir.path(),
            builtins.then_some(builtin_dir.as_path()),
        )
        .await
        .expect("the extension host starts");
        (host, dir)
    }

    async fn first_start_installs_and_activates_the_defaults(db: Db) {
        let (host, dir) = host(&db, true).await;
        let slots = host.slot_versions();
        // classifier, restart-policy, resolver:local, resolver:github, resolver:git
        assert_eq!(slots.len(), 5, "{slots:?}");
        assert!(slots.iter().all(|(_, active, _)| active.is_some()));
        assert_eq!(
            host.classify(vec![change("SKILL.md", ChangeKind::Modified)])
                .await,
            Reload::Hot
        );
        let decided = host
            .decide(workspace(0, "production"), Trigger::ConfigChanged)
            .await;
        assert_eq!(decided, Decision::RestartNow);
        host.stop();
        // A restart finds the same versions active and installs nothing twice.
        let again = ExtensionHost::start(
            db.clone(),
            EventBus::new(db.clone(), uuid::Uuid::new_v4()),
            dir.path(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(again.slot_versions(), slots);
        again.stop();
    }

    async fn swapping_under_load_fails_no_call_and_in_flight_calls_finish_on_the_old_version(
        db: Db,
    ) {
        let (host, _dir) = host(&db, false).await;
        // slow-classifier works ~10 ms per change and answers cold("slow"); answer-classifier cold("v2").
        // A generous deadline: eight calls share two cores, and the deadline counts wall time.
        let mut slow_manifest = manifest("slow", "classifier");
        slow_manifest.grants.deadline_ms = Some(5000);
        let slow = host
            .upload(slow_manifest, component("slow-classifier"), None, false)
            .await
            .unwrap();
        let next = upload(&host, "answer", "classifier", "answer-classifier").await;
        host.activate(slow.id).await.unwrap();
        let input = vec![change("SKILL.md", ChangeKind::Modified); 10];
        let mut calls = Vec::new();
        for _ in 0..8 {
            let (host, input) = (host.clone(), input.clone());
            calls.push(tokio::spawn(async move { host.classify(input).await }));
        }
        // Each call works ~100 ms and eight share two cores: the swap lands mid-flight.
        tokio::time::sleep(Duration::from_millis(100)).await;
        host.activate(next.id).await.unwrap();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("no call fails"));
        }
        // Calls that started before the swap answered with the old version; none fell back.
        let old = Reload::Cold("slow".into());
        assert!(answers.contains(&old), "{answers:?}");
        // A failed call would have been answered with the host's fallback (a different cold
        // reason): every answer is one of the two versions'.
        assert!(
            answers
                .iter()
                .all(|a| *a == old || *a == Reload::Cold("v2".into())),
            "{answers:?}"
        );
        // After the swap every call gets the new version's answer.
        assert_eq!(host.classify(input).await, Reload::Cold("v2".into()));
    }

    async fn rollback_reactivates_the_previous_version_and_the_active_one_cannot_be_deleted(
        db: Db,
    ) {
        let (host, _dir) = host(&db, false).await;
        let slot = Slot::parse("classifier").unwrap();
        assert!(matches!(
            host.rollback(&slot).await,
            Err(RegistryError::NoPrevious)
        ));
        let v1 = upload(&host, "skill", "classifier", "skill-classifier").await;
        let v2 = upload(&host, "answer", "classifier", "answer-classifier").await;
        host.activate(v1.id).await.unwrap();
        host.activate(v2.id).await.unwrap();
        assert!(matches!(
            host.delete(v2.id).await,
            Err(RegistryError::Active)
        ));
        let back = host.rollback(&slot).await.unwrap();
        assert_eq!(back.id, v1.id);
        assert_eq!(host.classify(vec![]).await, Reload::Hot);
        host.delete(v2.id)
            .await
            .expect("an inactive version can be deleted");
        let dup = host
            .upload(
                manifest("skill", "classifier"),
                component("skill-classifier"),
                None,
                false,
            )
            .await;
        assert!(matches!(dup, Err(RegistryError::Duplicate(_))));
    }

    async fn a_shadow_candidate_sees_every_input_and_the_report_counts_agreements(db: Db) {
        let (host, _dir) = host(&db, false).await;
        let active = upload(&host, "skill", "classifier", "skill-classifier").await;
        let candidate = upload(&host, "answer", "classifier", "answer-classifier").await;
        host.activate(active.id).await.unwrap();
        host.shadow(candidate.id).await.unwrap();
        // The active version answers hot for a skill edit; the candidate always answers cold.
        let skill_change = vec![change("skills/a/SKILL.md", ChangeKind::Modified)];
        for _ in 0..3 {
            assert_eq!(
                host.classify(skill_change.clone()).await,
                Reload::Hot,
                "only the active answer is used"
            );
        }
        let trap = host
            .upload(
                manifest("trap", "classifier"),
                component("trap-classifier"),
                None,
                false,
            )
            .await;
        assert!(
            trap.is_err(),
            "a trapping component fails its self-check at upload"
        );
        let report = host
            .shadow_report(&Slot::parse("classifier").unwrap())
            .await
            .unwrap();
        assert_eq!(report.calls(), 3);
        assert_eq!(report.disagree, 3);
        assert_eq!(report.agree, 0);
        assert_eq!(
            report.recent[0].active_answer,
            Some(serde_json::json!({ "kind": "hot" }))
        );
        assert_eq!(
            report.recent[0].candidate_answer,
            Some(serde_json::json!({ "kind": "cold", "reason": "v2" }))
        );
        // Promoting the candidate ends the shadow run.
        host.activate(candidate.id).await.unwrap();
        assert!(
            host.shadow_report(&Slot::parse("classifier").unwrap())
                .await
                .is_err()
        );
    }

    async fn the_shadow_report_counts_agreements_disagreements_and_candidate_failures(db: Db) {
        let (host, _dir) = host(&db, false).await;
        let active = upload(&host, "default", "restart-policy", "default-restart-policy").await;
        let candidate = upload(
            &host,
            "batching",
            "restart-policy",
            "batching-restart-policy",
        )
        .await;
        host.activate(active.id).await.unwrap();
        host.shadow(candidate.id).await.unwrap();
        for code in [0, 1, 2] {
            host.decide(workspace(0, "production"), Trigger::AgentExited(code))
                .await;
        }
        let decided = host
            .decide(workspace(0, "production"), Trigger::ConfigChanged)
            .await;
        assert_eq!(
            decided,
            Decision::RestartNow,
            "the active answer is the one used"
        );
        let report = host
            .shadow_report(&Slot::parse("restart-policy").unwrap())
            .await
            .unwrap();
        assert_eq!((report.calls(), report.agree, report.disagree), (4, 3, 1));
        assert_eq!(report.recent.len(), 1, "only disagreements are listed");
        assert_eq!(
            report.recent[0].candidate_answer,
            Some(serde_json::json!({ "kind": "restart_after_ms", "ms": 60000 }))
        );
        assert_eq!(
            report.recent[0].input.as_ref().unwrap()["trigger"]["kind"],
            "config_changed"
        );

        // A candidate that cannot answer in time is reported as failing, never used.
        let classifier = upload(&host, "skill", "classifier", "skill-classifier").await;
        let mut slow = manifest("slow", "classifier");
        slow.grants.deadline_ms = Some(20);
        let slow = host
            .upload(slow, component("slow-classifier"), None, false)
            .await
            .unwrap();
        host.activate(classifier.id).await.unwrap();
        host.shadow(slow.id).await.unwrap();
        let answer = host
            .classify(vec![change("SKILL.md", ChangeKind::Modified); 20])
            .await;
        assert_eq!(answer, Reload::Hot);
        let report = host
            .shadow_report(&Slot::parse("classifier").unwrap())
            .await
            .unwrap();
        assert_eq!(report.candidate_failed, 1);
        assert_eq!(
            report.recent[0].candidate_answer,
            Some(serde_json::json!({ "error": "timeout" }))
        );
    }

    fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk_files(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    /// Two replicas with their own data directories on one database: what one uploads and
    /// activates, the other loads by digest from the database and swaps in on sync; a shadow run
    /// started on one runs on both, and the report counts both replicas' calls.
    async fn another_replica_follows_activation_and_shadow_and_their_reports_merge(db: Db) {
        let (a, _a_dir) = host(&db, false).await;
        let (b, b_dir) = host(&db, false).await;
        let slot = Slot::parse("classifier").unwrap();
        let v1 = upload(&a, "skill", "classifier", "skill-classifier").await;
        a.activate(v1.id).await.unwrap();
        assert_eq!(b.sync().await.unwrap(), 1, "one swap: the active version");
        let active_on_b = |host: &ExtensionHost| {
            host.slot_versions()
                .into_iter()
                .find(|(s, _, _)| *s == slot)
                .map(|(_, active, shadow)| (active, shadow))
        };
        assert_eq!(active_on_b(&b), Some((Some(v1.id), None)));
        let cached = walk_files(b_dir.path());
        assert!(
            cached.iter().any(|p| p.ends_with(format!(
                "components/{}.wasm",
                v1.digest.trim_start_matches("sha256:")
            ))),
            "the component was cached in B's own data directory: {cached:?}"
        );
        let skill_change = vec![change("skills/a/SKILL.md", ChangeKind::Modified)];
        assert_eq!(b.classify(skill_change.clone()).await, Reload::Hot);

        let v2 = upload(&a, "answer", "classifier", "answer-classifier").await;
        a.shadow(v2.id).await.unwrap();
        assert_eq!(b.sync().await.unwrap(), 1, "one swap: the shadow");
        assert_eq!(b.sync().await.unwrap(), 0, "in line: nothing to do");
        a.classify(skill_change.clone()).await;
        b.classify(skill_change.clone()).await;
        b.classify(skill_change.clone()).await;
        for host in [&a, &b] {
            let report = host.shadow_report(&slot).await.unwrap();
            assert_eq!(report.calls(), 3, "both replicas' shadow calls: {report:?}");
            assert_eq!(report.disagree, 3);
        }

        // Activated on B, followed by A; rolled back on A, followed by B.
        b.activate(v2.id).await.unwrap();
        a.sync().await.unwrap();
        assert_eq!(active_on_b(&a), Some((Some(v2.id), None)));
        assert_eq!(
            a.classify(skill_change.clone()).await,
            Reload::Cold("v2".into())
        );
        a.rollback(&slot).await.unwrap();
        b.sync().await.unwrap();
        assert_eq!(b.classify(skill_change).await, Reload::Hot);
    }

    /// Replicas started at the same moment on an empty database both install the defaults:
    /// whichever stores a component second takes the first one's row, so each default is stored
    /// once and both hosts run the same versions.
    async fn hosts_starting_together_on_an_empty_database_store_each_default_once(db: Db) {
        let ((first, _first_dir), (second, _second_dir)) =
            tokio::join!(host(&db, true), host(&db, true));

        let stored = crate::store::extensions::list(&db).await.unwrap();
        assert_eq!(stored.len(), 5, "{stored:?}");
        let versions = first.slot_versions();
        assert!(
            versions.iter().all(|(_, active, _)| active.is_some()),
            "{versions:?}"
        );
        assert_eq!(second.slot_versions(), versions);
        first.stop();
        second.stop();
    }

    crate::both_backends!(
        hosts_starting_together_on_an_empty_database_store_each_default_once,
        another_replica_follows_activation_and_shadow_and_their_reports_merge,
        the_shadow_report_counts_agreements_disagreements_and_candidate_failures,
        first_start_installs_and_activates_the_defaults,
        swapping_under_load_fails_no_call_and_in_flight_calls_finish_on_the_old_version,
        rollback_reactivates_the_previous_version_and_the_active_one_cannot_be_deleted,
        a_shadow_candidate_sees_every_input_and_the_report_counts_agreements,
    );
}
