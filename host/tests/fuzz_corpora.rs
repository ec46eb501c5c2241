//! The fuzz targets' short version, on stable: every file of every checked-in corpus
//! (`fuzz/corpus/<target>/`) and every saved crash (`fuzz/regressions/<target>/`) goes through
//! the same check the libFuzzer target runs (`fuzz/targets/<target>.rs`, included here by path).
//! `make fuzz` runs the campaign itself; a crash it finds is fixed and its input saved under
//! `fuzz/regressions/<target>/`, so this test keeps it fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/targets/a2a_normalize.rs"]
mod a2a_normalize;
#[path = "../../fuzz/targets/cron.rs"]
mod cron;
#[path = "../../fuzz/targets/org_template.rs"]
mod org_template;
#[path = "../../fuzz/targets/plugin_source.rs"]
mod plugin_source;
#[path = "../../fuzz/targets/relpath.rs"]
mod relpath;
#[path = "../../fuzz/targets/route_bodies.rs"]
mod route_bodies;
#[path = "../../fuzz/targets/wit_answers.rs"]
mod wit_answers;

/// What a fuzz target runs on one input; it panics when the input breaks a rule.
type Check = fn(&[u8]);

/// Every fuzz target with its check; a target added to `fuzz/` belongs here too.
const TARGETS: &[(&str, Check)] = &[
    ("org_template", org_template::check),
    ("plugin_source", plugin_source::check),
    ("relpath", relpath::check),
    ("a2a_normalize", a2a_normalize::check),
    ("route_bodies", route_bodies::check),
    ("cron", cron::check),
    ("wit_answers", wit_answers::check),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file, collecting the ones that panic (with the panic's message).
fn replay(check: Check, inputs: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for input in inputs {
        let data = std::fs::read(input).expect("reading a corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            failures.push(format!("{}: {why}", input.display()));
        }
    }
    failures
}

#[test]
fn every_corpus_and_regression_input_passes_its_fuzz_targets_checks() {
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let corpus = files(&fuzz.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target} is missing or empty: every target keeps a seed corpus"
        );
        failures.extend(replay(*check, &corpus));
        failures.extend(replay(
            *check,
            &files(&fuzz.join("regressions").join(target)),
        ));
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their checks:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    on_disk.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    replayed.sort();
    assert_eq!(on_disk, replayed, "fuzz/fuzz_targets and TARGETS disagree");
}
