//! Loading and planning against real directories: includes, escapes, externals through a fake
//! source, env layering, spawning and the delivered files.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};

use super::external::{CachedExternal, ExternalRef, ExternalSource};
use super::plan::{self, PlanSettings};
use super::template::{self, OrgTemplate};
use super::{OrgError, RootDir};
use crate::safefs::RelPath;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Serves externals from local directories, copying them into the org's cache like the real
/// cache does, and counts fetches.
struct FakeExternals {
    root: PathBuf,
    repos: Vec<(String, PathBuf)>,
    fetches: RefCell<Vec<String>>,
}

impl FakeExternals {
    /// Serves `github.com/acme/parts` from `upstream` into the cache under `root`.
    fn serving(root: &Path, upstream: &Path) -> Self {
        FakeExternals {
            root: root.to_path_buf(),
            repos: vec![("github.com/acme/parts".into(), upstream.to_path_buf())],
            fetches: RefCell::new(Vec::new()),
        }
    }

    /// Serves `github.com/<repo>` from `upstream` too.
    fn and(mut self, repo: &str, upstream: &Path) -> Self {
        self.repos
            .push((format!("github.com/{repo}"), upstream.to_path_buf()));
        self
    }

    fn none(root: &Path) -> Self {
        FakeExternals {
            root: root.to_path_buf(),
            repos: Vec::new(),
            fetches: RefCell::new(Vec::new()),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl ExternalSource for FakeExternals {
    fn default_host(&self) -> &str {
        "github.com"
    }

    fn fetch(&self, reference: &ExternalRef) -> Result<CachedExternal, OrgError> {
        let key = reference.repo_key();
        let (_, source) = self
            .repos
            .iter()
            .find(|(k, _)| *k == key)
            .ok_or_else(|| OrgError::Forbidden(format!("{key} is not allowed")))?;
        self.fetches.borrow_mut().push(key.clone());
        let dir = RelPath::parse(&format!(
            ".external-cache/{}/abc123",
            reference.cache_name()
        ))
        .unwrap();
        copy_dir(source, &self.root.join(dir.as_str()));
        Ok(CachedExternal {
            dir,
            sha: "abc123".into(),
        })
    }
}

fn load(root: &Path) -> Result<OrgTemplate, OrgError> {
    let dir = RootDir::open(root).unwrap();
    template::load(&dir, &FakeExternals::none(root))
}

fn load_err(root: &Path) -> String {
    load(root)
        .expect_err("the template must be refused")
        .to_string()
}

#[test]
fn includes_resolve_relative_to_the_including_file_and_nest() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "name: Acme\nworkspaces:\n  - name: CEO\n    children: !include teams/all.yaml\n",
    );
    write(
        org.path(),
        "teams/all.yaml",
        "- !include eng/lead.yaml\n- name: Sales\n",
    );
    write(
        org.path(),
        "teams/eng/lead.yaml",
        "name: Eng Lead\nchildren:\n  - !include ../../people/dev.yaml\n",
    );
    write(org.path(), "people/dev.yaml", "name: Dev\nrole: builds\n");
    let template = load(org.path()).unwrap();
    assert_eq!(template.name, "Acme");
    let ceo = &template.workspaces[0];
    assert_eq!(ceo.children[0].name, "Eng Lead");
    assert_eq!(ceo.children[0].children[0].name, "Dev");
    assert_eq!(ceo.children[1].name, "Sales");
    assert_eq!(template.total_workspaces(), 4);
}

#[test]
fn the_same_file_may_be_included_twice_but_a_cycle_is_refused() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - !include dev.yaml\n  - !include dev.yaml\n",
    );
    write(org.path(), "dev.yaml", "name: Dev\n");
    assert_eq!(load(org.path()).unwrap().workspaces.len(), 2);

    write(org.path(), "org.yaml", "workspaces: !include a.yaml\n");
    write(
        org.path(),
        "a.yaml",
        "- name: A\n  children: !include b.yaml\n",
    );
    write(
        org.path(),
        "b.yaml",
        "- name: B\n  children: !include a.yaml\n",
    );
    assert!(load_err(org.path()).contains("cycle"));
}

#[test]
fn include_depth_is_capped_at_sixteen() {
    let org = tempfile::tempdir().unwrap();
    let chain = |levels: usize| {
        write(org.path(), "org.yaml", "workspaces: !include l1.yaml\n");
        for i in 1..levels {
            write(
                org.path(),
                &format!("l{i}.yaml"),
                &format!("!include l{}.yaml\n", i + 1),
            );
        }
        write(org.path(), &format!("l{levels}.yaml"), "- name: Deep\n");
    };
    chain(16);
    assert_eq!(load(org.path()).unwrap().workspaces[0].name, "Deep");
    chain(17);
    assert!(load_err(org.path()).contains("max depth 16"));
}

#[test]
fn every_escape_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.yaml", "name: Leaked\n");
    let org = tempfile::tempdir().unwrap();
    let root = org.path();
    type Setup<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "dotdot",
            Box::new(|| write(root, "org.yaml", "workspaces: !include ../secret.yaml\n")),
        ),
        (
            "absolute",
            Box::new(|| write(root, "org.yaml", "workspaces: !include /etc/hostname\n")),
        ),
        (
            "symlink to /etc",
            Box::new(|| {
                let _ = fs::remove_file(root.join("etc"));
                std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
                write(root, "org.yaml", "workspaces: !include etc/hostname\n");
            }),
        ),
        (
            "symlink chain",
            Box::new(|| {
                let _ = fs::remove_file(root.join("hop1"));
                let _ = fs::remove_file(root.join("hop2"));
                std::os::unix::fs::symlink("hop2", root.join("hop1")).unwrap();
                std::os::unix::fs::symlink(outside.path().join("secret.yaml"), root.join("hop2"))
                    .unwrap();
                write(root, "org.yaml", "workspaces:\n  - !include hop1\n");
            }),
        ),
        (
            "relative symlink climbing out",
            Box::new(|| {
                let _ = fs::remove_file(root.join("up"));
                std::os::unix::fs::symlink("../", root.join("up")).unwrap();
                write(root, "org.yaml", "workspaces: !include up/x.yaml\n");
            }),
        ),
    ];
    for (name, setup) in cases {
        setup();
        let err = load_err(root);
        assert!(err.contains("escapes"), "{name}: {err}");
        assert!(!err.contains("Leaked"), "{name}");
    }
}

#[test]
fn a_fifo_or_device_is_refused_without_blocking() {
    let org = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(org.path().join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(made.success());
    write(org.path(), "org.yaml", "workspaces: !include pipe.yaml\n");
    assert!(load_err(org.path()).contains("not a regular file"));
}

#[test]
fn a_symlink_inside_the_root_is_followed() {
    let org = tempfile::tempdir().unwrap();
    write(org.path(), "shared/dev.yaml", "name: Dev\n");
    std::os::unix::fs::symlink("shared", org.path().join("alias")).unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - !include alias/dev.yaml\n",
    );
    assert_eq!(load(org.path()).unwrap().workspaces[0].name, "Dev");
}

#[test]
fn unknown_tags_and_bad_include_forms_are_refused() {
    let org = tempfile::tempdir().unwrap();
    write(org.path(), "org.yaml", "workspaces: !exec rm\n");
    assert!(load_err(org.path()).contains("unknown tag"));
    write(org.path(), "org.yaml", "workspaces: !include\n");
    assert!(load_err(org.path()).contains("include"));
    write(org.path(), "org.yaml", "workspaces: !include {a: b}\n");
    assert!(load_err(org.path()).contains("include"));
}

#[test]
fn a_missing_org_yaml_is_not_found() {
    let org = tempfile::tempdir().unwrap();
    assert!(matches!(load(org.path()), Err(OrgError::NotFound)));
}

#[test]
fn externals_expand_relative_to_the_fetched_file_and_files_dirs_point_into_the_cache() {
    let upstream = tempfile::tempdir().unwrap();
    write(
        upstream.path(),
        "teams/eng.yaml",
        "name: Eng\nfiles_dir: eng-files\ncanvas: {x: 5, y: 6}\nrequired_env: [{any_of: [A_KEY, B_KEY]}]\nchildren:\n  - !include people/dev.yaml\n",
    );
    write(
        upstream.path(),
        "teams/people/dev.yaml",
        "name: Dev\nfiles_dir: dev\n",
    );
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: CEO\n    children:\n      - !external {repo: acme/parts, ref: v1, path: teams/eng.yaml}\n",
    );
    let externals = FakeExternals::serving(org.path(), upstream.path());
    let root = RootDir::open(org.path()).unwrap();
    let template = template::load(&root, &externals).unwrap();
    let ceo = &template.workspaces[0];
    let eng = &ceo.children[0];
    let prefix = ".external-cache/github.com__acme__parts/abc123";
    // Paths stay as written; the mapping says which cache entry they resolve in.
    assert_eq!(ceo.origin, None);
    assert_eq!(eng.origin.as_deref(), Some(prefix));
    assert_eq!(eng.files_dir.as_deref(), Some("eng-files"));
    // The origin on every nested mapping leaves their typing alone.
    assert_eq!(eng.canvas.map(|c| (c.x, c.y)), Some((5.0, 6.0)));
    assert_eq!(
        eng.required_env,
        vec![template::EnvRequirement::AnyOf {
            any_of: vec!["A_KEY".into(), "B_KEY".into()]
        }]
    );
    assert_eq!(eng.children[0].origin.as_deref(), Some(prefix));
    assert_eq!(eng.children[0].files_dir.as_deref(), Some("dev"));
    // The plan reads files_dir in the cache and reports it relative to the org root.
    fs::create_dir_all(org.path().join(prefix).join("eng-files/skills")).unwrap();
    write(org.path(), &format!("{prefix}/eng-files/skills/x.md"), "x");
    let empty = tempfile::tempdir().unwrap();
    let plan = plan::build(&template, &root, &settings(empty.path(), empty.path())).unwrap();
    let planned = plan
        .workspaces
        .iter()
        .find(|w| w.request.name == "Eng")
        .unwrap();
    assert_eq!(
        planned.files_dir.as_deref(),
        Some(format!("{prefix}/eng-files").as_str())
    );
    assert!(
        planned
            .request
            .seed_files
            .as_ref()
            .unwrap()
            .contains("skills/x.md")
    );

    // An external that is not served is refused.
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - !external {repo: evil/parts, ref: v1, path: x.yaml}\n",
    );
    assert!(matches!(
        template::load(&root, &externals),
        Err(OrgError::Forbidden(_))
    ));
}

#[test]
fn externals_nest_at_most_four_deep() {
    // n1.yaml fetches n2.yaml, which fetches n3.yaml, ...; the last one is a plain list.
    let chain = |levels: usize| {
        let upstream = tempfile::tempdir().unwrap();
        for i in 1..levels {
            write(
                upstream.path(),
                &format!("n{i}.yaml"),
                &format!(
                    "!external {{repo: acme/parts, ref: v1, path: n{}.yaml}}\n",
                    i + 1
                ),
            );
        }
        write(
            upstream.path(),
            &format!("n{levels}.yaml"),
            "- name: Deep\n",
        );
        let org = tempfile::tempdir().unwrap();
        write(
            org.path(),
            "org.yaml",
            "workspaces: !external {repo: acme/parts, ref: v1, path: n1.yaml}\n",
        );
        let externals = FakeExternals::serving(org.path(), upstream.path());
        let root = RootDir::open(org.path()).unwrap();
        let result = template::load(&root, &externals).map(|t| t.workspaces[0].name.clone());
        (result, externals.fetches.borrow().len())
    };
    let (four, fetches) = chain(4);
    assert_eq!(four.unwrap(), "Deep");
    assert_eq!(fetches, 4);
    let (five, _) = chain(5);
    assert!(five.unwrap_err().to_string().contains("max depth 4"));

    // A file that fetches itself is a cycle.
    let upstream = tempfile::tempdir().unwrap();
    write(
        upstream.path(),
        "self.yaml",
        "!external {repo: acme/parts, ref: v1, path: self.yaml}\n",
    );
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces: !external {repo: acme/parts, ref: v1, path: self.yaml}\n",
    );
    let externals = FakeExternals::serving(org.path(), upstream.path());
    let root = RootDir::open(org.path()).unwrap();
    assert!(
        template::load(&root, &externals)
            .unwrap_err()
            .to_string()
            .contains("cycle")
    );
}

fn settings(registry: &Path, personas: &Path) -> PlanSettings {
    PlanSettings {
        templates_dir: None,
        plugins_registry: registry.to_path_buf(),
        persona_root: personas.to_path_buf(),
        host_env: |name| (name == "HOST_WORK").then(|| "/srv/work".to_owned()),
    }
}

fn plan(org: &Path, registry: &Path, personas: &Path) -> Result<plan::Plan, OrgError> {
    let root = RootDir::open(org).unwrap();
    let template = template::load(&root, &FakeExternals::none(org))?;
    plan::build(&template, &root, &settings(registry, personas))
}

#[test]
fn spawning_false_drops_the_whole_subtree_but_counts_in_the_listing() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: CEO\n    children:\n      - name: Paused Team\n        spawning: false\n        children:\n          - name: Hidden\n      - name: Eng\n",
    );
    let empty = tempfile::tempdir().unwrap();
    let plan = plan(org.path(), empty.path(), empty.path()).unwrap();
    let names: Vec<&str> = plan
        .workspaces
        .iter()
        .map(|w| w.request.name.as_str())
        .collect();
    assert_eq!(names, vec!["CEO", "Eng"]);
    assert_eq!(plan.workspaces[1].parent, Some(0));
    assert_eq!(load(org.path()).unwrap().total_workspaces(), 4);
}

#[test]
fn env_layers_apply_persona_then_org_then_files_dir() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: Lead\n    files_dir: lead\n    workspace_dir: ${WORK_ROOT}/lead\n  - name: Other\n    workspace_dir: ${HOST_WORK}/other\n",
    );
    write(
        org.path(),
        ".env",
        "SHARED=org\nORG_ONLY=1\nWORK_ROOT=/srv/org\n",
    );
    write(org.path(), "lead/.env", "SHARED=dir\nDIR_ONLY=1\n");
    write(org.path(), "lead/notes.md", "notes\r\n");
    let personas = tempfile::tempdir().unwrap();
    write(
        personas.path(),
        "lead/env",
        "SHARED=persona\nPERSONA_ONLY=1\nORG_ONLY=persona\n",
    );
    let registry = tempfile::tempdir().unwrap();
    let plan = plan(org.path(), registry.path(), personas.path()).unwrap();
    let lead = &plan.workspaces[0].request;
    let get = |key: &str| {
        lead.secrets
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("SHARED"), Some("dir"));
    assert_eq!(get("ORG_ONLY"), Some("1"));
    assert_eq!(get("PERSONA_ONLY"), Some("1"));
    assert_eq!(get("DIR_ONLY"), Some("1"));
    assert_eq!(lead.workspace_dir.as_deref(), Some("/srv/org/lead"));
    let files = lead.seed_files.as_ref().unwrap();
    assert!(files.contains("notes.md"));
    assert!(!files.contains(".env"), "secrets never travel as a file");
    let other = &plan.workspaces[1].request;
    assert_eq!(other.workspace_dir.as_deref(), Some("/srv/work/other"));
    assert!(
        other
            .secrets
            .iter()
            .all(|(k, _)| k != "DIR_ONLY" && k != "PERSONA_ONLY")
    );

    // A missing persona file is a silent no-op; an unset variable is refused by name.
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: X\n    files_dir: nobody\n    workspace_dir: ${UNSET_VAR}/x\n",
    );
    let err = plan_err(org.path(), registry.path(), personas.path());
    assert!(err.contains("UNSET_VAR"), "{err}");
}

fn plan_err(org: &Path, registry: &Path, personas: &Path) -> String {
    plan(org, registry, personas)
        .expect_err("the plan must be refused")
        .to_string()
}

#[test]
fn files_prompts_and_plugins_are_assembled_for_the_first_start() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "defaults:\n  plugins: [memory, missing]\n  initial_prompt_file: prompts/start.md\nworkspaces:\n  - name: Dev\n    role: builds things\n    files_dir: dev\n    system_prompt: You build.\n    plugins: [\"!missing\", review]\n",
    );
    write(org.path(), "dev/prompts/start.md", "Say hello.\n");
    write(org.path(), "dev/skills/code/SKILL.md", "# Code\n");
    let registry = tempfile::tempdir().unwrap();
    write(registry.path(), "memory/plugin.yaml", "name: memory\n");
    write(registry.path(), "review/plugin.yaml", "name: review\n");
    let personas = tempfile::tempdir().unwrap();
    let plan = plan(org.path(), registry.path(), personas.path()).unwrap();
    let dev = &plan.workspaces[0];
    let files = dev.request.seed_files.as_ref().unwrap();
    let text = |path: &str| String::from_utf8(files.get(path).unwrap().data.clone()).unwrap();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text("config.yaml")).unwrap();
    assert_eq!(config["initial_prompt"].as_str(), Some("Say hello.\n"));
    assert_eq!(config["name"].as_str(), Some("Dev"));
    assert_eq!(text("system-prompt.md"), "You build.");
    assert!(files.contains("skills/code/SKILL.md"));
    assert!(files.contains("plugins/memory/plugin.yaml"));
    assert!(files.contains("plugins/memory/.complete"));
    assert!(files.contains("plugins/review/.complete"));
    assert!(!files.contains("plugins/missing/.complete"));
    assert!(dev.plugins_missing.is_empty(), "{:?}", dev.plugins_missing);
}

#[test]
fn a_files_dir_or_prompt_leaving_the_root_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "x.md", "secret");
    let org = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    files_dir: ../elsewhere\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("escapes"));
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    initial_prompt_file: /etc/hostname\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("escapes"));
    std::os::unix::fs::symlink(outside.path(), org.path().join("linked")).unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    files_dir: linked\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("escapes"));
    write(org.path(), "inside/skills/x.md", "ok");
    std::os::unix::fs::symlink("/etc", org.path().join("inside/etc")).unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    files_dir: inside\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("escapes"));
}

#[test]
fn bad_fields_refuse_the_whole_plan() {
    let org = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n  - name: B\n    tier: 9\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("tier"));
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    workspace_dir: /etc/x\n",
    );
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("workspace_dir"));
    write(org.path(), "org.yaml", "workspaces:\n  - role: nameless\n");
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("name"));
    write(org.path(), "org.yaml", "workspaces: 5\n");
    assert!(plan_err(org.path(), empty.path(), empty.path()).contains("invalid org template"));
}

#[test]
fn required_env_is_met_by_globals_or_the_workspace_layers() {
    let org = tempfile::tempdir().unwrap();
    write(
        org.path(),
        "org.yaml",
        "required_env: [ORG_KEY]\nworkspaces:\n  - name: A\n    files_dir: a\n    required_env: [A_KEY, {any_of: [X_KEY, Y_KEY]}]\n  - name: B\n    required_env: [B_KEY]\n",
    );
    write(org.path(), "a/.env", "A_KEY=1\n");
    let empty = tempfile::tempdir().unwrap();
    let plan = plan(org.path(), empty.path(), empty.path()).unwrap();
    let (org_missing, per_ws) = plan.missing_env(&|name| name == "Y_KEY");
    assert_eq!(org_missing, vec!["ORG_KEY".to_owned()]);
    assert_eq!(per_ws.len(), 1);
    assert_eq!(per_ws[0].workspace, "B");
    assert_eq!(per_ws[0].unsatisfied_env, vec!["B_KEY".to_owned()]);
    let (org_missing, per_ws) =
        plan.missing_env(&|name| ["ORG_KEY", "B_KEY", "X_KEY"].contains(&name));
    assert!(org_missing.is_empty() && per_ws.is_empty());
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// YAML-ish text built from fragments that exercise tags, nesting, anchors and odd scalars.
    fn yamlish() -> impl Strategy<Value = String> {
        let fragment = prop_oneof![
            Just("workspaces:\n".to_owned()),
            Just("  - name: A\n".to_owned()),
            Just("    children: !include x.yaml\n".to_owned()),
            Just("!include org.yaml\n".to_owned()),
            Just("!include ../../etc/passwd\n".to_owned()),
            Just("- !external {repo: a/b, ref: v1, path: x.yaml}\n".to_owned()),
            Just("&a [*a]\n".to_owned()),
            Just("tier: 99999999999999999999\n".to_owned()),
            Just("spawning: maybe\n".to_owned()),
            Just("canvas: {x: .nan, y: -.inf}\n".to_owned()),
            Just("required_env: [{any_of: []}, 7]\n".to_owned()),
            Just("? [complex]\n: key\n".to_owned()),
            Just("--- \n".to_owned()),
            "[ -~]{0,20}\n",
            any::<String>(),
        ];
        prop::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_yaml_never_panics_the_loader_or_the_planner(org_yaml in yamlish(), include in yamlish()) {
            let org = tempfile::tempdir().unwrap();
            write(org.path(), "org.yaml", &org_yaml);
            write(org.path(), "x.yaml", &include);
            if let Ok(template) = load(org.path()) {
                let empty = tempfile::tempdir().unwrap();
                let root = RootDir::open(org.path()).unwrap();
                let _ = plan::build(&template, &root, &settings(empty.path(), empty.path()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let org = tempfile::tempdir().unwrap();
            fs::write(org.path().join("org.yaml"), &bytes).unwrap();
            let _ = load(org.path());
        }
    }
}

/// An org root holding things external content must never reach, and an upstream repository
/// served as `github.com/acme/parts` whose `part.yaml` is `part`.
struct Climb {
    org: tempfile::TempDir,
    upstream: tempfile::TempDir,
}

const ORG_SECRET: &str = "org-secret-value-4711";
const PREFIX: &str = ".external-cache/github.com__acme__parts/abc123";

impl Climb {
    fn new() -> Self {
        let org = tempfile::tempdir().unwrap();
        write(org.path(), ".env", &format!("ORG_TOKEN={ORG_SECRET}\n"));
        write(org.path(), "secret.md", ORG_SECRET);
        write(org.path(), "secret.yaml", &format!("name: {ORG_SECRET}\n"));
        write(org.path(), "vault/.env", &format!("VAULT={ORG_SECRET}\n"));
        write(org.path(), "vault/key.md", ORG_SECRET);
        write(
            org.path(),
            "org.yaml",
            "workspaces: !external {repo: acme/parts, ref: v1, path: teams/part.yaml}\n",
        );
        Climb {
            org,
            upstream: tempfile::tempdir().unwrap(),
        }
    }

    /// Loads and plans with `teams/part.yaml` upstream being `part`.
    fn run(&self, part: &str) -> Result<plan::Plan, OrgError> {
        write(self.upstream.path(), "teams/part.yaml", part);
        let externals = FakeExternals::serving(self.org.path(), self.upstream.path());
        let root = RootDir::open(self.org.path()).unwrap();
        let template = template::load(&root, &externals)?;
        let empty = tempfile::tempdir().unwrap();
        plan::build(&template, &root, &settings(empty.path(), empty.path()))
    }

    #[track_caller]
    fn refused(&self, part: &str, names: &str) {
        let err = self
            .run(part)
            .expect_err("external content must stay in its entry");
        let text = err.to_string();
        assert!(
            matches!(err, OrgError::Expansion(_) | OrgError::Invalid(_)),
            "{part}: a 400, not {err:?}"
        );
        assert!(text.contains(names), "{part}: {text} does not name {names}");
        assert!(!text.contains(ORG_SECRET), "{part}: {text}");
    }
}

#[test]
fn external_content_cannot_name_anything_outside_its_cache_entry() {
    let climb = Climb::new();
    // files_dir up to the org root's directories.
    climb.refused("- name: Mole\n  files_dir: ../../../vault\n", "files_dir");
    climb.refused("- name: Mole\n  files_dir: ../\n", "files_dir");
    // Includes, from the fetched file's directory and from a nested include.
    climb.refused("- !include ../../../../secret.yaml\n", "!include");
    climb.refused("- !include ../../x.yaml\n", "!include");
    write(
        climb.upstream.path(),
        "teams/inner.yaml",
        "!include ../../x.yaml\n",
    );
    climb.refused("- !include inner.yaml\n", "!include");
    // Prompt files, relative to files_dir or from the top of the entry.
    write(climb.upstream.path(), "mole/notes.md", "mine\n");
    climb.refused(
        "- name: Mole\n  files_dir: mole\n  initial_prompt_file: ../../../../secret.md\n",
        "initial_prompt_file",
    );
    climb.refused(
        "- name: Mole\n  idle_prompt_file: ../secret.md\n",
        "idle_prompt_file",
    );
    // Without `..`: the org's own files are simply not in the entry.
    climb.refused(
        "- name: Mole\n  initial_prompt_file: secret.md\n",
        "not found",
    );
    // A host directory is never remote content's to choose.
    climb.refused(
        "- name: Mole\n  workspace_dir: /srv/mole\n",
        "workspace_dir",
    );
    // The org's own `.env` layering is untouched, and nothing else leaks: the entry's files only.
    let plan = climb
        .run("- name: Mole\n  files_dir: mole\n  initial_prompt_file: notes.md\n")
        .unwrap();
    let mole = &plan.workspaces[0];
    assert_eq!(
        mole.files_dir.as_deref(),
        Some(format!("{PREFIX}/mole").as_str())
    );
    let files = mole.request.seed_files.as_ref().unwrap();
    assert_eq!(files.paths().len(), 2, "{:?}", files.paths());
    assert!(files.contains("notes.md"));
    let config = String::from_utf8(files.get("config.yaml").unwrap().data.clone()).unwrap();
    assert!(config.contains("mine"), "{config}");
    assert!(!config.contains(ORG_SECRET));
}

#[test]
fn a_symlink_inside_a_cache_entry_cannot_reach_the_org_root() {
    let climb = Climb::new();
    // A resolver refuses links in fetched trees; this entry gets one anyway, as if another
    // resolver (or a later hand) had put it there.
    write(
        climb.upstream.path(),
        "teams/part.yaml",
        "- name: Mole\n  files_dir: mole\n",
    );
    let externals = FakeExternals::serving(climb.org.path(), climb.upstream.path());
    let root = RootDir::open(climb.org.path()).unwrap();
    template::load(&root, &externals).unwrap();
    let entry = climb.org.path().join(PREFIX);
    fs::create_dir_all(entry.join("mole")).unwrap();
    std::os::unix::fs::symlink("../../../../vault", entry.join("mole/vault")).unwrap();
    std::os::unix::fs::symlink("../../../secret.md", entry.join("secret.md")).unwrap();
    std::os::unix::fs::symlink("../../../secret.yaml", entry.join("teams/leak.yaml")).unwrap();
    for (part, names) in [
        (
            "- name: Mole\n  files_dir: mole\n",
            "escapes its !external content",
        ),
        (
            "- name: Mole\n  initial_prompt_file: secret.md\n",
            "escapes its !external content",
        ),
        ("- !include leak.yaml\n", "escapes its !external content"),
    ] {
        // The fake copies upstream over the entry again; the links stay.
        climb.refused(part, names);
    }
}

#[test]
fn nested_externals_stay_in_their_own_entry() {
    let climb = Climb::new();
    let other = tempfile::tempdir().unwrap();
    write(
        other.path(),
        "inner.yaml",
        "- name: Inner\n  files_dir: ../../github.com__acme__parts/abc123/mine\n",
    );
    write(climb.upstream.path(), "mine/x.md", "x");
    write(
        climb.upstream.path(),
        "teams/part.yaml",
        "- name: Outer\n  files_dir: mine\n  children: !external {repo: acme/other, ref: v1, path: inner.yaml}\n",
    );
    let externals = FakeExternals::serving(climb.org.path(), climb.upstream.path())
        .and("acme/other", other.path());
    let root = RootDir::open(climb.org.path()).unwrap();
    let template = template::load(&root, &externals).unwrap();
    let outer = &template.workspaces[0];
    assert_eq!(outer.origin.as_deref(), Some(PREFIX));
    assert_eq!(
        outer.children[0].origin.as_deref(),
        Some(".external-cache/github.com__acme__other/abc123")
    );
    let empty = tempfile::tempdir().unwrap();
    let err = plan::build(&template, &root, &settings(empty.path(), empty.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("files_dir") && err.contains("escapes"),
        "{err}"
    );

    // An include from the inner entry into the outer one is refused the same way.
    write(
        other.path(),
        "inner.yaml",
        "!include ../../github.com__acme__parts/abc123/teams/part.yaml\n",
    );
    let err = template::load(&root, &externals).unwrap_err().to_string();
    assert!(err.contains("!include") && err.contains("escapes"), "{err}");
}

#[test]
fn no_content_can_claim_an_origin() {
    let climb = Climb::new();
    // External content claiming the org root still resolves in its entry.
    climb.refused(
        "- name: Mole\n  __molecule_origin: vault\n  initial_prompt_file: key.md\n",
        "not found",
    );
    // The org's own content claiming a cache entry still resolves in the org root.
    write(
        climb.org.path(),
        "org.yaml",
        "workspaces:\n  - name: Own\n    __molecule_origin: .external-cache/x/y\n    files_dir: vault\n",
    );
    let root = RootDir::open(climb.org.path()).unwrap();
    let template = template::load(&root, &FakeExternals::none(climb.org.path())).unwrap();
    assert_eq!(template.workspaces[0].origin, None);
    let inline: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "workspaces:\n  - name: Own\n    __molecule_origin: .external-cache/x/y\n",
    )
    .unwrap();
    assert_eq!(
        template::typed_inline(inline).unwrap().workspaces[0].origin,
        None
    );
}

#[test]
fn external_defaults_resolve_in_their_entry_and_the_orgs_own_defaults_may_use_a_fetched_files_dir()
{
    let climb = Climb::new();
    write(climb.upstream.path(), "mine/start.md", "from the entry\n");
    write(
        climb.upstream.path(),
        "defaults.yaml",
        "initial_prompt_file: ../secret.md\n",
    );
    write(
        climb.org.path(),
        "org.yaml",
        "defaults: !external {repo: acme/parts, ref: v1, path: defaults.yaml}\nworkspaces:\n  - name: Own\n    files_dir: vault\n",
    );
    let root = RootDir::open(climb.org.path()).unwrap();
    let externals = FakeExternals::serving(climb.org.path(), climb.upstream.path());
    let template = template::load(&root, &externals).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let err = plan::build(&template, &root, &settings(empty.path(), empty.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("defaults.initial_prompt_file") && err.contains("escapes"),
        "{err}"
    );
    assert!(!err.contains(ORG_SECRET));

    // The org's own default prompt, relative to an external workspace's fetched files_dir.
    write(
        climb.org.path(),
        "org.yaml",
        "defaults:\n  initial_prompt_file: start.md\nworkspaces: !external {repo: acme/parts, ref: v1, path: teams/part.yaml}\n",
    );
    let plan = climb.run("- name: Fetched\n  files_dir: mine\n").unwrap();
    let files = plan.workspaces[0].request.seed_files.as_ref().unwrap();
    let config = String::from_utf8(files.get("config.yaml").unwrap().data.clone()).unwrap();
    assert!(config.contains("from the entry"), "{config}");
}

#[test]
fn an_external_files_dir_never_selects_a_persona() {
    let climb = Climb::new();
    write(climb.upstream.path(), "lead/x.md", "x");
    let personas = tempfile::tempdir().unwrap();
    write(personas.path(), "lead/env", "PERSONA_TOKEN=operator-only\n");
    write(
        climb.upstream.path(),
        "teams/part.yaml",
        "- name: Lead\n  files_dir: lead\n",
    );
    let externals = FakeExternals::serving(climb.org.path(), climb.upstream.path());
    let root = RootDir::open(climb.org.path()).unwrap();
    let template = template::load(&root, &externals).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let plan = plan::build(&template, &root, &settings(empty.path(), personas.path())).unwrap();
    let secrets = &plan.workspaces[0].request.secrets;
    assert!(
        secrets.iter().all(|(k, _)| k != "PERSONA_TOKEN"),
        "{secrets:?}"
    );
}

/// `org.yaml` includes `l1.yaml`, and each `l<i>.yaml` is a list of `fan_out` includes of the
/// next level, down to `l<levels>.yaml`, a leaf of about `leaf_bytes`.
fn fan_out(root: &Path, fan_out: usize, levels: usize, leaf_bytes: usize) {
    write(
        root,
        "org.yaml",
        "workspaces:\n  - name: A\n    notes: !include l1.yaml\n",
    );
    for i in 1..levels {
        let list = format!("- !include l{}.yaml\n", i + 1).repeat(fan_out);
        write(root, &format!("l{i}.yaml"), &list);
    }
    write(
        root,
        &format!("l{levels}.yaml"),
        &format!("text: {}\n", "x".repeat(leaf_bytes)),
    );
}

#[test]
fn an_include_fan_out_is_refused_on_its_budget_before_it_grows() {
    let org = tempfile::tempdir().unwrap();
    // 8^15 reads if nothing stopped it.
    fan_out(org.path(), 8, 16, 1024);
    let started = std::time::Instant::now();
    let err = load_err(org.path());
    assert!(err.contains("budget") && err.contains("documents"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // Within the document budget but over the bytes: a few hundred reads of a large leaf.
    fan_out(org.path(), 20, 3, 100 * 1024);
    let err = load_err(org.path());
    assert!(err.contains("budget") && err.contains("bytes"), "{err}");

    // Small files, many nodes each: the node budget.
    let org = tempfile::tempdir().unwrap();
    fan_out(org.path(), 30, 2, 0);
    let leaf = "- a\n".repeat(10_000);
    write(org.path(), "l2.yaml", &leaf);
    let err = load_err(org.path());
    assert!(err.contains("budget") && err.contains("nodes"), "{err}");

    // A real-sized template is far below every limit: 300 workspaces in 30 files.
    let org = tempfile::tempdir().unwrap();
    let team: String = (0..10)
        .map(|i| format!("- name: W{i}\n  role: works\n  plugins: [a, b]\n  required_env: [K]\n  canvas: {{x: 1, y: 2}}\n"))
        .collect();
    let mut org_yaml = "workspaces:\n".to_owned();
    for t in 0..30 {
        write(org.path(), &format!("teams/t{t}.yaml"), &team);
        org_yaml.push_str(&format!(
            "  - name: T{t}\n    children: !include teams/t{t}.yaml\n"
        ));
    }
    write(org.path(), "org.yaml", &org_yaml);
    assert_eq!(load(org.path()).unwrap().total_workspaces(), 330);
}

#[test]
fn externals_count_on_the_budget_too() {
    let upstream = tempfile::tempdir().unwrap();
    write(upstream.path(), "x.yaml", "name: X\n");
    let org = tempfile::tempdir().unwrap();
    let many = "  - !external {repo: acme/parts, ref: v1, path: x.yaml}\n"
        .repeat(template::MAX_EXTERNALS + 1);
    write(org.path(), "org.yaml", &format!("workspaces:\n{many}"));
    let externals = FakeExternals::serving(org.path(), upstream.path());
    let root = RootDir::open(org.path()).unwrap();
    let err = template::load(&root, &externals).unwrap_err().to_string();
    assert!(err.contains("budget") && err.contains("!external"), "{err}");
    assert_eq!(externals.fetches.borrow().len(), template::MAX_EXTERNALS);

    // An external's includes are documents on the same budget.
    write(
        upstream.path(),
        "x.yaml",
        &"- !include y.yaml\n".repeat(600),
    );
    write(upstream.path(), "y.yaml", "name: Y\n");
    write(
        org.path(),
        "org.yaml",
        "workspaces:\n  - name: A\n    children: !external {repo: acme/parts, ref: v1, path: x.yaml}\n  - name: B\n    children: !external {repo: acme/parts, ref: v1, path: x.yaml}\n",
    );
    let err = template::load(&root, &externals).unwrap_err().to_string();
    assert!(err.contains("budget") && err.contains("documents"), "{err}");
}

#[test]
fn hibernation_idle_minutes_comes_from_the_entry_else_the_defaults_and_is_validated() {
    let org = tempfile::tempdir().unwrap();
    let root = RootDir::open(org.path()).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let plan_of = |yaml: &str| {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let template = template::typed_inline(value).unwrap();
        plan::build(&template, &root, &settings(empty.path(), empty.path()))
    };
    let plan = plan_of(
        "defaults:\n  hibernation_idle_minutes: 30\nworkspaces:\n  - name: Lead\n    children:\n      - name: Night\n        hibernation_idle_minutes: 0\n",
    )
    .unwrap();
    let minutes: Vec<_> = plan
        .workspaces
        .iter()
        .map(|w| (w.request.name.as_str(), w.request.hibernation_idle_minutes))
        .collect();
    assert_eq!(minutes, [("Lead", Some(30)), ("Night", Some(0))]);
    let err = plan_of("workspaces:\n  - name: Bad\n    hibernation_idle_minutes: -1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("hibernation_idle_minutes"), "{err}");
}
