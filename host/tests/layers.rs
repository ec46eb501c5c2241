//! The host's layer rule, checked over its source: no module imports a module above it.
//!
//! Each top-level module of `host/src` sits on a floor of [`LAYERS`]; a `crate::<module>` path in
//! production code (test modules and test-support files are left out: fixtures may borrow from
//! anywhere) may name only modules on lower floors. `services` (the [`Services`] handed to every
//! domain function, built from all of them) and the crate root (`lib.rs`, `main.rs`) wire the
//! floors together and are outside the rule. ARCHITECTURE.md draws the same floors.
//!
//! [`Services`]: molecule_host::Services

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, lowest first. A module may import the modules of the floors below its own only.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["store", "liveness", "traces"],
    &["events", "secrets", "cluster", "locks", "safefs"],
    &["runtime", "extensions", "auth"],
    &["agents", "audit"],
    &["workspaces"],
    &["memories", "memory", "approvals", "session_search"],
    &["delegation", "plugins", "schedules"],
    &["org"],
    &["sweepers"],
    &["http", "cli"],
];

/// Wiring, outside the rule: importable from every floor, importing every floor.
const WIRING: &[&str] = &["services"];

fn floor(module: &str) -> Option<usize> {
    LAYERS.iter().position(|floor| floor.contains(&module))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading host/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module `path` (under `src`) belongs to: `agents` for `src/agents/url.rs`.
fn module_of(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).expect("a path under src");
    let top = rel.components().next().expect("a first component");
    top.as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// Test-only files: whole files of tests and test support.
fn is_test_file(path: &Path) -> bool {
    let name = path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == "tests" || name.ends_with("_tests") || name == "testing" || name == "fake"
}

/// The source without its `#[cfg(test)]` items (a test module runs to the end of its braces).
fn production_code(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // Skip the item: to the end of its first brace group, or of its statement.
        let Some(open) = after.find(['{', ';']) else {
            rest = "";
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules a source names through `crate::`: `crate::a::…` and the first segment
/// of each item of a `crate::{a, b::c, …}` group.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in source.match_indices("crate::") {
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `molecule_crate::` and the like
        }
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(&src, p)).collect();
    // Every module has a floor, so a new one cannot slip past the rule.
    for module in &modules {
        if ["lib", "main"].contains(&module.as_str()) || WIRING.contains(&module.as_str()) {
            continue;
        }
        assert!(
            floor(module).is_some(),
            "host/src/{module} has no floor: add it to LAYERS in host/tests/layers.rs and to \
             ARCHITECTURE.md's layer list"
        );
    }

    let mut upward: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let module = module_of(&src, path);
        let module = module.as_str();
        let Some(own) = floor(module) else { continue };
        if is_test_file(path) {
            continue;
        }
        let source = std::fs::read_to_string(path).expect("reading a source file");
        for target in crate_paths(&production_code(&source)) {
            if target == module || WIRING.contains(&target.as_str()) {
                continue;
            }
            let Some(theirs) = floor(&target) else {
                continue;
            };
            if theirs >= own {
                upward
                    .entry(format!("{} ({module}, floor {own})", rel.display()))
                    .or_default()
                    .push(format!("{target} (floor {theirs})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that cross a layer upward or sideways (see LAYERS):\n{}",
        upward
            .iter()
            .map(|(file, targets)| format!("  {file} -> {}", targets.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_path_reader_sees_groups_and_skips_tests() {
    let source = "use crate::{a::X, b, c::{d, e}};\nuse crate::f::G;\nfn x() { crate::g::h(); }\n\
                  #[cfg(test)]\nmod tests { use crate::z; }\nfn y() { other_crate::q(); }";
    let found = crate_paths(&production_code(source));
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["a", "b", "c", "f", "g"]
    );
}
