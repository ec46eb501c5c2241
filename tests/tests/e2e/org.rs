//! Org templates over HTTP: listing, import in merge and reconcile modes, the env preflight,
//! `!external` through the real git resolver component from a local bare repository, event
//! pairing, and a three-level org whose agents all come online.

use std::path::Path;
use std::time::Duration;

use molecule_e2e::{
    DbBackend, Runtime, TestApp, builtin_extensions_dir, eventually, on_both_backends,
    on_both_runtimes, serve_github_from, upstream_repo, write_file,
};
use molecule_host::store::{Db, events};
use serde_json::{Value, json};

on_both_backends!(
    the_listing_counts_every_entry_and_skips_broken_templates,
    merge_creates_the_tree_once_and_a_second_import_keeps_everything,
    missing_required_env_is_412_and_nothing_is_created,
    reconcile_removes_exactly_the_reparented_orphans,
    bad_requests_are_refused_and_only_parsed_templates_record_events,
    an_inline_template_imports_but_cannot_include,
    concurrent_imports_of_one_template_create_each_workspace_once,
    an_external_comes_from_a_bare_repository_through_the_resolver_and_is_cached,
    a_large_import_lands_whole_with_its_secrets_layouts_and_events,
    a_failure_part_way_through_the_batch_leaves_nothing,
);

on_both_runtimes!(
    a_three_level_org_imports_and_every_agent_comes_online,
    the_demo_org_imported_at_start_comes_online_whatever_port_the_host_listens_on,
);

/// The repository's org templates (`make run` imports `demo` from there).
fn repository_templates() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../org-templates")
}

/// The repository's workspace templates (`make run` sets `runtime.templates_dir` there).
fn repository_workspace_templates() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workspace-templates")
}

/// `make run`'s first minute on a fresh host: the demo org imported at start, on a port other
/// than 8080 (every test host listens on a random one). Agents provisioned before the host knew
/// where they reach it were told `127.0.0.1:8080` and never registered.
async fn the_demo_org_imported_at_start_comes_online_whatever_port_the_host_listens_on(
    runtime: Runtime,
    backend: DbBackend,
) {
    let app = TestApp::spawn_with(backend, move |c| {
        runtime.configure(c);
        c.org.templates_dir = repository_templates();
        c.org.import_on_start = Some("demo".to_owned());
        c.runtime.templates_dir = Some(repository_workspace_templates());
    })
    .await;
    assert_ne!(app.addr.port(), 8080);
    let ids: Vec<String> = eventually(Duration::from_secs(60), || async {
        let listed = app.get("/workspaces").await.expect(200);
        let ids: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() == 5).then_some(ids)
    })
    .await;
    for id in &ids {
        app.wait_settled(id, Duration::from_secs(120)).await;
    }
    let listed = app.get("/workspaces").await.expect(200);
    for workspace in listed.as_array().unwrap() {
        assert_eq!(workspace["status"], "online", "{workspace}");
    }
    // The developers and the researcher run the shipped workspace templates (`make run` points
    // runtime.templates_dir at workspace-templates/), which the catalogue lists.
    for (name, skill) in [
        ("Backend Developer", "write-tests"),
        ("Frontend Developer", "write-tests"),
        ("Research Analyst", "summarise"),
    ] {
        let id = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .and_then(|w| w["id"].as_str())
            .unwrap();
        app.get(&format!("/workspaces/{id}/files/skills/{skill}/SKILL.md"))
            .await
            .expect(200);
    }
    let catalogue = app.get("/templates").await.expect(200);
    let ids: Vec<&str> = catalogue
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["developer", "researcher"]);
}

/// `molecule org import --wait` against a live host: one line per workspace as it is created
/// and as it comes online, then the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_with_progress_and_waits_for_every_agent() {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        Runtime::Process.configure(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.org.templates_dir = dir;
    })
    .await;
    let remote = molecule_host::cli::Remote {
        host: app.base.clone(),
        token: app.token.clone(),
    };
    let lines =
        molecule_host::cli::org::import(&remote, "acme", "merge", true, Duration::from_secs(120))
            .await
            .expect("the import succeeds and every agent comes online");
    for name in ["CEO", "Eng", "Dev", "Sales"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("created") && l.ends_with(name)),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("online") && l.ends_with(name)),
            "{lines:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l == "Acme: 4 created, 0 kept"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("every workspace is online")
    );

    // Again: everything is kept, nothing waits.
    let again =
        molecule_host::cli::org::import(&remote, "acme", "merge", true, Duration::from_secs(30))
            .await
            .unwrap();
    assert!(
        again.iter().any(|l| l == "Acme: 0 created, 4 kept"),
        "{again:?}"
    );
    // A refused import is an error.
    assert!(
        molecule_host::cli::org::import(
            &remote,
            "missing",
            "merge",
            false,
            Duration::from_secs(30)
        )
        .await
        .is_err()
    );
}

/// `--wait` is about the org being up: a second import right after a first one (which did not
/// wait) keeps every workspace and still waits until each is online; a workspace that cannot
/// start fails the wait with its name and the host's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_kept_workspaces_and_names_the_ones_that_failed() {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    write_file(
        templates.path(),
        "broken/org.yaml",
        "name: Broken\nworkspaces:\n  - name: Fine\n  - name: Hopeless\n    files_dir: hopeless\n",
    );
    // An agent configuration the agent refuses at start: it exits before it listens.
    write_file(
        templates.path(),
        "broken/hopeless/config.yaml",
        "name: Hopeless\nbrain:\n  kind: command\n  command: []\n",
    );
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        Runtime::Process.configure(c);
        c.org.templates_dir = dir;
    })
    .await;
    let remote = molecule_host::cli::Remote {
        host: app.base.clone(),
        token: app.token.clone(),
    };
    let timeout = Duration::from_secs(120);

    // Act: import without waiting, then at once again with --wait.
    molecule_host::cli::org::import(&remote, "acme", "merge", false, timeout)
        .await
        .unwrap();
    let again = molecule_host::cli::org::import(&remote, "acme", "merge", true, timeout)
        .await
        .expect("every kept workspace comes online");

    // Assert
    assert!(
        again.iter().any(|l| l == "Acme: 0 created, 4 kept"),
        "{again:?}"
    );
    assert_eq!(
        again.last().map(String::as_str),
        Some("every workspace is online")
    );
    let listed = app.get("/workspaces").await.expect(200);
    for w in listed.as_array().unwrap() {
        assert!(
            matches!(w["status"].as_str(), Some("online" | "degraded")),
            "{w}"
        );
    }
    let failed = molecule_host::cli::org::import(&remote, "broken", "merge", true, timeout)
        .await
        .expect_err("a workspace that cannot start fails the wait");
    let message = format!("{failed:#}");
    assert!(
        message.contains("1 workspace(s) failed to start"),
        "{message}"
    );
    assert!(message.contains("Hopeless ("), "{message}");
    assert!(!message.contains("Fine"), "{message}");
}

/// A host whose org templates live in `templates`.
async fn spawn(backend: DbBackend, templates: &Path) -> TestApp {
    let dir = templates.to_path_buf();
    TestApp::spawn_with(backend, move |c| c.org.templates_dir = dir).await
}

const ACME: &str = "\
name: Acme
description: A small company
defaults:
  tier: 1
workspaces:
  - name: CEO
    files_dir: ceo
    required_env: [CEO_KEY]
    children: !include teams.yaml
";

const TEAMS: &str = "\
- name: Eng
  children:
    - name: Dev
- name: Sales
- name: Research
  spawning: false
  children:
    - name: Scientist
";

fn acme(root: &Path) {
    write_file(root, "acme/org.yaml", ACME);
    write_file(root, "acme/teams.yaml", TEAMS);
    write_file(root, "acme/ceo/.env", "CEO_KEY=from-dotenv\n");
    write_file(root, "acme/.env", "SHARED=org\n");
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    app.get("/events")
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == kind)
        .cloned()
        .collect()
}

async fn live_names(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = app
        .workspaces()
        .await
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The keys of a workspace's secrets (never their values).
async fn secret_keys(app: &TestApp, id: &str) -> Vec<String> {
    app.get(&format!("/workspaces/{id}/secrets"))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect()
}

fn by_name<'a>(outcome: &'a Value, name: &str) -> &'a Value {
    outcome["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {outcome}"))
}

async fn the_listing_counts_every_entry_and_skips_broken_templates(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    write_file(
        templates.path(),
        "broken/org.yaml",
        "workspaces: !include loop.yaml\n",
    );
    write_file(templates.path(), "broken/loop.yaml", "!include loop.yaml\n");
    write_file(templates.path(), "not-a-template/readme.md", "hi\n");
    let app = spawn(backend, templates.path()).await;
    let listed = app.get("/org/templates").await.expect(200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["dir"], "acme");
    assert_eq!(listed[0]["name"], "Acme");
    assert_eq!(listed[0]["description"], "A small company");
    assert_eq!(listed[0]["workspaces"], 6, "spawning:false entries count");
    assert_eq!(listed[0]["required_env"], json!(["CEO_KEY"]));
    assert_eq!(app.anonymous().get("/org/templates").await.status, 401);
}

async fn merge_creates_the_tree_once_and_a_second_import_keeps_everything(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    let app = spawn(backend, templates.path()).await;
    let first = app
        .post("/org/import", json!({ "dir": "acme" }))
        .await
        .expect(201);
    assert_eq!(first["org"], "Acme");
    assert_eq!(first["count"], 4);
    assert_eq!(first["created_count"], 4);
    assert_eq!(live_names(&app).await, vec!["CEO", "Dev", "Eng", "Sales"]);

    // The tree, the defaults and the env layers.
    let ceo = by_name(&first, "CEO")["id"].as_str().unwrap().to_owned();
    let eng = by_name(&first, "Eng")["id"].as_str().unwrap().to_owned();
    let dev = app
        .get(&format!(
            "/workspaces/{}",
            by_name(&first, "Dev")["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(dev["parent_id"], eng.as_str());
    assert_eq!(dev["tier"], 1);
    let eng_row = app.get(&format!("/workspaces/{eng}")).await.expect(200);
    assert_eq!(eng_row["parent_id"], ceo.as_str());
    let keys = secret_keys(&app, &ceo).await;
    assert!(
        keys.contains(&"CEO_KEY".to_owned()) && keys.contains(&"SHARED".to_owned()),
        "{keys:?}"
    );

    let second = app
        .post("/org/import", json!({ "dir": "acme", "mode": "merge" }))
        .await
        .expect(201);
    assert_eq!(second["created_count"], 0);
    assert_eq!(second["skipped_count"], 4);
    assert!(
        second["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["skipped"] == true)
    );
    assert_eq!(by_name(&second, "CEO")["id"], ceo.as_str());
    assert_eq!(live_names(&app).await.len(), 4);

    let started = events_of(&app, "org.import.started").await;
    let completed = events_of(&app, "org.import.completed").await;
    assert_eq!(started.len(), 2);
    assert_eq!(completed.len(), 2);
    assert!(events_of(&app, "org.import.failed").await.is_empty());
    assert_eq!(started[0]["payload"]["name"], "Acme");
    assert_eq!(started[0]["payload"]["dir"], "acme");
    assert_eq!(started[0]["payload"]["mode"], "merge");
    let counts: Vec<(i64, i64)> = completed
        .iter()
        .map(|e| {
            (
                e["payload"]["created_count"].as_i64().unwrap(),
                e["payload"]["skipped_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        counts.contains(&(4, 0)) && counts.contains(&(0, 4)),
        "{counts:?}"
    );
    assert!(completed[0]["payload"]["duration_ms"].is_u64());
    assert!(completed.iter().all(|e| e["workspace_id"].is_null()));
}

async fn missing_required_env_is_412_and_nothing_is_created(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    // Required at the org level and by Dev; only a global secret can satisfy them.
    write_file(
        templates.path(),
        "acme/org.yaml",
        &ACME.replace("defaults:", "required_env: [ORG_TOKEN]\ndefaults:"),
    );
    write_file(
        templates.path(),
        "acme/teams.yaml",
        &TEAMS.replace(
            "    - name: Dev\n",
            "    - name: Dev\n      required_env: [{any_of: [OPENAI_KEY, ANTHROPIC_KEY]}]\n",
        ),
    );
    let app = spawn(backend, templates.path()).await;
    let refused = app.post("/org/import", json!({ "dir": "acme" })).await;
    assert_eq!(refused.status, 412, "{}", refused.text);
    assert_eq!(
        refused.body["error"],
        "missing required environment variables"
    );
    assert_eq!(refused.body["missing_env"], json!(["ORG_TOKEN"]));
    assert_eq!(refused.body["missing_workspace_env"][0]["workspace"], "Dev");
    assert_eq!(
        refused.body["missing_workspace_env"][0]["unsatisfied_env"],
        json!(["OPENAI_KEY|ANTHROPIC_KEY"])
    );
    assert_eq!(refused.body["template"], "Acme");
    assert!(live_names(&app).await.is_empty());
    assert_eq!(events_of(&app, "org.import.started").await.len(), 1);
    let failed = events_of(&app, "org.import.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["payload"]["created_count"], 0);

    for (key, value) in [("ORG_TOKEN", "t"), ("ANTHROPIC_KEY", "k")] {
        app.put("/settings/secrets", json!({ "key": key, "value": value }))
            .await
            .expect(200);
    }
    app.post("/org/import", json!({ "dir": "acme" }))
        .await
        .expect(201);
    assert_eq!(live_names(&app).await.len(), 4);
}

async fn reconcile_removes_exactly_the_reparented_orphans(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    let app = spawn(backend, templates.path()).await;
    let first = app
        .post("/org/import", json!({ "dir": "acme" }))
        .await
        .expect(201);
    let old_dev = by_name(&first, "Dev")["id"].as_str().unwrap().to_owned();
    // Workspaces the template did not create are never touched, even with a template name:
    // neither a hand-made one nor one another template created.
    let by_hand = app.create_workspace("Dev", None).await;
    let unrelated = app.create_workspace("Unrelated", None).await;
    write_file(
        templates.path(),
        "other/org.yaml",
        "name: Other\nworkspaces:\n  - name: Board\n    children:\n      - name: Dev\n",
    );
    let other = app
        .post("/org/import", json!({ "dir": "other" }))
        .await
        .expect(201);
    let other_dev = by_name(&other, "Dev")["id"].as_str().unwrap().to_owned();

    // Dev moves from Eng to Sales.
    write_file(
        templates.path(),
        "acme/teams.yaml",
        "- name: Eng\n- name: Sales\n  children:\n    - name: Dev\n",
    );
    let merged = app
        .post("/org/import", json!({ "dir": "acme" }))
        .await
        .expect(201);
    assert!(merged.get("reconcile_removed_count").is_none());
    assert_eq!(
        app.get(&format!("/workspaces/{old_dev}")).await.body["status"],
        "provisioning"
    );

    let reconciled = app
        .post("/org/import", json!({ "dir": "acme", "mode": "reconcile" }))
        .await
        .expect(201);
    assert_eq!(reconciled["mode"], "reconcile");
    assert_eq!(reconciled["reconcile_removed_count"], 1, "{reconciled}");
    assert_eq!(reconciled["reconcile_errors"], json!([]));
    assert_eq!(reconciled["created_count"], 0);
    let gone = app.get(&format!("/workspaces/{old_dev}")).await;
    assert!(
        gone.status == 404 || gone.status == 410 || gone.body["status"] == "removed",
        "{}",
        gone.text
    );
    for id in [&by_hand, &unrelated, &other_dev] {
        let kept = app.get(&format!("/workspaces/{id}")).await.expect(200);
        assert_ne!(kept["status"], "removed");
    }
    let names = live_names(&app).await;
    assert_eq!(
        names,
        vec![
            "Board",
            "CEO",
            "Dev",
            "Dev",
            "Dev",
            "Eng",
            "Sales",
            "Unrelated"
        ]
    );
    let completed = events_of(&app, "org.import.completed").await;
    assert!(completed.iter().any(
        |e| e["payload"]["mode"] == "reconcile" && e["payload"]["reconcile_removed_count"] == 1
    ));
}

async fn bad_requests_are_refused_and_only_parsed_templates_record_events(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    write_file(
        templates.path(),
        "escape/org.yaml",
        "workspaces: !include ../../../etc/hostname\n",
    );
    write_file(
        templates.path(),
        "invalid/org.yaml",
        "workspaces: {not: a list}\n",
    );
    write_file(
        templates.path(),
        "badtier/org.yaml",
        "name: Bad\nworkspaces:\n  - name: A\n  - name: B\n    tier: 9\n",
    );
    write_file(
        templates.path(),
        "badurl/org.yaml",
        "name: BadUrl\nworkspaces:\n  - name: A\n    external: true\n    url: ftp://example.com\n",
    );
    let app = spawn(backend, templates.path()).await;
    let cases = [
        (json!({}), 400, "provide 'dir' or 'template'"),
        (json!({ "dir": "../acme" }), 400, "invalid org directory"),
        (json!({ "dir": "/etc" }), 400, "invalid org directory"),
        (json!({ "dir": "nope" }), 404, "org template not found"),
        (
            json!({ "dir": "escape" }),
            400,
            "org template expansion failed",
        ),
        (json!({ "dir": "invalid" }), 400, "invalid org template"),
        (
            json!({ "dir": "acme", "mode": "replace" }),
            400,
            "mode must be merge or reconcile",
        ),
    ];
    for (body, status, error) in cases {
        let reply = app.post("/org/import", body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(reply.body["error"], error, "{body}");
    }
    assert!(events_of(&app, "org.import.started").await.is_empty());
    assert!(events_of(&app, "org.import.failed").await.is_empty());
    assert_eq!(
        app.anonymous()
            .post("/org/import", json!({ "dir": "acme" }))
            .await
            .status,
        401
    );

    // Refused after parsing: nothing is created, and the started row gets its failed row.
    for dir in ["badtier", "badurl"] {
        let reply = app.post("/org/import", json!({ "dir": dir })).await;
        assert_eq!(reply.status, 400, "{dir}: {}", reply.text);
        assert_eq!(reply.body["error"], "invalid org template");
    }
    assert!(live_names(&app).await.is_empty());
    let started = events_of(&app, "org.import.started").await;
    let failed = events_of(&app, "org.import.failed").await;
    assert_eq!((started.len(), failed.len()), (2, 2));
    assert!(failed.iter().all(|e| {
        e["payload"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("invalid org template")
    }));
}

async fn an_inline_template_imports_but_cannot_include(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    let app = spawn(backend, templates.path()).await;
    let inline = json!({ "name": "Inline", "workspaces": [{ "name": "Solo", "children": [{ "name": "Helper", "external": true, "url": "http://127.0.0.1:9" }] }] });
    let outcome = app
        .post("/org/import", json!({ "template": inline }))
        .await
        .expect(201);
    assert_eq!(outcome["count"], 2);
    assert_eq!(by_name(&outcome, "Helper")["status"], "online");
    let started = events_of(&app, "org.import.started").await;
    assert_eq!(started[0]["payload"]["dir"], Value::Null);
}

async fn concurrent_imports_of_one_template_create_each_workspace_once(backend: DbBackend) {
    let templates = tempfile::tempdir().unwrap();
    acme(templates.path());
    let app = spawn(backend, templates.path()).await;
    let imports = (0..4).map(|_| app.post("/org/import", json!({ "dir": "acme" })));
    let replies = futures::future::join_all(imports).await;
    let mut created = 0;
    for reply in replies {
        assert_eq!(reply.status, 201, "{}", reply.text);
        created += reply.body["created_count"].as_i64().unwrap();
    }
    assert_eq!(created, 4);
    assert_eq!(live_names(&app).await, vec!["CEO", "Dev", "Eng", "Sales"]);
    assert_eq!(events_of(&app, "org.import.started").await.len(), 4);
    assert_eq!(events_of(&app, "org.import.completed").await.len(), 4);
}

/// Teams under one root, each with a files_dir `.env`, and members under every team.
const TEAMS_OF_LARGE: usize = 12;
const MEMBERS_OF_LARGE: usize = 24;
const LARGE: usize = 1 + TEAMS_OF_LARGE + TEAMS_OF_LARGE * MEMBERS_OF_LARGE;

/// `large/`: a 301-workspace org whose every workspace gets the org `.env` and whose teams get
/// their own `.env` too.
fn large(root: &Path) {
    let mut org = String::from("name: Large\nworkspaces:\n  - name: HQ\n    children:\n");
    for t in 0..TEAMS_OF_LARGE {
        org.push_str(&format!(
            "      - name: Team {t}\n        files_dir: team\n        children:\n"
        ));
        for m in 0..MEMBERS_OF_LARGE {
            org.push_str(&format!("          - name: Member {t}-{m}\n"));
        }
    }
    write_file(root, "large/org.yaml", &org);
    write_file(root, "large/.env", "SHARED=org\n");
    write_file(root, "large/team/.env", "TEAM_KEY=team\n");
}

/// Rows of `table` in the test's database.
async fn rows_in(app: &TestApp, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("opening the test database");
    let count = match &db {
        Db::Sqlite(sqlite) => sqlx::query_scalar(&sql).fetch_one(&sqlite.reader).await,
        Db::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await,
    }
    .expect("counting rows");
    db.close().await;
    count
}

/// Workspaces, layouts, config rows, secrets and tokens stored.
async fn stored_rows(app: &TestApp) -> [i64; 5] {
    [
        rows_in(app, "workspaces").await,
        rows_in(app, "canvas_layouts").await,
        rows_in(app, "workspace_config").await,
        rows_in(app, "workspace_secrets").await,
        rows_in(app, "workspace_auth_tokens").await,
    ]
}

async fn a_large_import_lands_whole_with_its_secrets_layouts_and_events(backend: DbBackend) {
    // Arrange
    let templates = tempfile::tempdir().unwrap();
    large(templates.path());
    let app = spawn(backend, templates.path()).await;
    let mut stream = app.events().await;

    // Act
    let outcome = app
        .post("/org/import", json!({ "dir": "large" }))
        .await
        .expect(201);

    // Assert: every row, each secret layer (the org's for all, the team's for teams) and,
    // with no runtime here, a token each.
    assert_eq!(outcome["created_count"], LARGE);
    let teams = TEAMS_OF_LARGE as i64;
    let all = LARGE as i64;
    assert_eq!(stored_rows(&app).await, [all, all, all, all + teams, all]);
    let rows = app.workspaces().await;
    let by_id: std::collections::HashMap<&str, &Value> = rows
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w))
        .collect();
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let Some(member) = name.strip_prefix("Member ") else {
            continue;
        };
        let team = member.split('-').next().unwrap();
        let parent = by_id[row["parent_id"].as_str().expect("a parent")];
        assert_eq!(parent["name"], format!("Team {team}"));
        // Laid out inside its team's card.
        assert!(
            row["x"].as_f64() > parent["x"].as_f64(),
            "{row} in {parent}"
        );
        assert!(
            row["y"].as_f64() > parent["y"].as_f64(),
            "{row} in {parent}"
        );
    }
    let hq = by_name(&outcome, "HQ")["id"].as_str().unwrap();
    let keys = secret_keys(&app, by_name(&outcome, "Team 7")["id"].as_str().unwrap()).await;
    assert!(
        keys.contains(&"SHARED".to_owned()) && keys.contains(&"TEAM_KEY".to_owned()),
        "{keys:?}"
    );

    // One announcement each, recorded parents before children, streamed to the canvas as they
    // were recorded, children placed relative to their parent.
    let db = Db::connect(app.database_url(), 1)
        .await
        .expect("opening the test database");
    let recorded = events::since(&db, chrono::DateTime::UNIX_EPOCH, 10_000)
        .await
        .expect("reading the event log");
    db.close().await;
    let announced: Vec<_> = recorded
        .iter()
        .filter(|e| e.event_type == "WORKSPACE_PROVISIONING")
        .collect();
    assert_eq!(announced.len(), LARGE);
    let mut seen = std::collections::HashSet::new();
    for event in &announced {
        let payload = event.payload.as_ref().unwrap();
        if let Some(parent) = payload["parent_id"].as_str() {
            assert!(seen.contains(parent), "{payload} before its parent");
        }
        seen.insert(event.workspace_id.unwrap().to_string());
    }
    let first_team = announced
        .iter()
        .map(|e| e.payload.as_ref().unwrap())
        .find(|p| p["parent_id"] == hq)
        .unwrap();
    assert_eq!(
        (&first_team["x"], &first_team["y"]),
        (&json!(16.0), &json!(130.0))
    );
    let mut streamed = Vec::new();
    while streamed.len() < LARGE {
        let frame = stream.next().await;
        if frame["event"] == "WORKSPACE_PROVISIONING" {
            streamed.push(frame["workspace_id"].as_str().unwrap().to_owned());
        }
    }
    let in_log: Vec<String> = announced
        .iter()
        .map(|e| e.workspace_id.unwrap().to_string())
        .collect();
    assert_eq!(streamed, in_log);

    // A second import keeps everything and stores nothing.
    let second = app
        .post("/org/import", json!({ "dir": "large" }))
        .await
        .expect(201);
    assert_eq!(second["skipped_count"], LARGE);
    assert_eq!(second["created_count"], 0);
    assert_eq!(stored_rows(&app).await, [all, all, all, all + teams, all]);
}

async fn a_failure_part_way_through_the_batch_leaves_nothing(backend: DbBackend) {
    // Arrange: the database refuses the secrets of the 200th new workspace, after every
    // workspace, layout and config row (and the secrets before it) went in.
    let templates = tempfile::tempdir().unwrap();
    large(templates.path());
    let dir = templates.path().to_path_buf();
    let mut app = TestApp::spawn_with(backend, move |c| {
        c.org.templates_dir = dir;
        c.faults.org_import_refused_secret_at = Some(200);
    })
    .await;

    // Act
    let refused = app.post("/org/import", json!({ "dir": "large" })).await;

    // Assert: an internal error, nothing stored, nothing announced, the failure recorded.
    assert_eq!(refused.status, 500, "{}", refused.text);
    assert_eq!(refused.body["error"], "internal error");
    assert_eq!(stored_rows(&app).await, [0; 5]);
    assert!(app.workspaces().await.is_empty());
    assert!(events_of(&app, "WORKSPACE_PROVISIONING").await.is_empty());
    assert_eq!(events_of(&app, "org.import.started").await.len(), 1);
    let failed = events_of(&app, "org.import.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["payload"]["created_count"], 0);
    assert_eq!(failed[0]["payload"]["errors"], json!(["database error"]));

    // Nothing half-created stands in the way of the next import.
    app.restart_with(|c| c.faults.org_import_refused_secret_at = None)
        .await
        .expect("the host restarts");
    let outcome = app
        .post("/org/import", json!({ "dir": "large" }))
        .await
        .expect(201);
    assert_eq!(outcome["created_count"], LARGE);
}

async fn an_external_comes_from_a_bare_repository_through_the_resolver_and_is_cached(
    backend: DbBackend,
) {
    // A bare repository `acme/parts` served as https://github.com/acme/parts.git through a
    // git URL rewrite; the host's git side and the real resolver component do the rest.
    let repos = tempfile::tempdir().unwrap();
    upstream_repo(
        repos.path(),
        "acme/parts",
        &[
            (
                "teams/eng.yaml",
                "name: Eng\nfiles_dir: eng-files\nchildren:\n  - !include people/dev.yaml\n",
            ),
            ("teams/people/dev.yaml", "name: Dev\n"),
            ("eng-files/skills/build/SKILL.md", "# Build\n"),
        ],
    );

    let templates = tempfile::tempdir().unwrap();
    write_file(
        templates.path(),
        "ext/org.yaml",
        "name: Ext\nworkspaces:\n  - name: CEO\n    children:\n      - !external {repo: acme/parts, ref: v1, path: teams/eng.yaml}\n",
    );
    write_file(
        templates.path(),
        "denied/org.yaml",
        "name: Denied\nworkspaces:\n  - !external {repo: other/parts, ref: v1, path: x.yaml}\n",
    );
    let dir = templates.path().to_path_buf();
    let repos_root = repos.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| {
        c.org.templates_dir = dir;
        c.org.external_allowlist = vec!["github.com/acme/".into()];
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        serve_github_from(c, &repos_root);
    })
    .await;

    let first = app
        .post("/org/import", json!({ "dir": "ext" }))
        .await
        .expect(201);
    assert_eq!(first["externals"][0]["repo"], "github.com/acme/parts");
    assert_eq!(first["externals"][0]["cached"], false);
    let sha = first["externals"][0]["sha"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 40);
    assert_eq!(live_names(&app).await, vec!["CEO", "Dev", "Eng"]);
    let cache = templates
        .path()
        .join(format!("ext/.external-cache/github.com__acme__parts/{sha}"));
    assert!(cache.join(".complete").is_file());
    assert!(cache.join("eng-files/skills/build/SKILL.md").is_file());
    // files_dir points into the cache.
    let eng = by_name(&first, "Eng")["id"].as_str().unwrap().to_owned();
    let config = app
        .get(&format!("/workspaces/{eng}/config"))
        .await
        .expect(200);
    assert_eq!(
        config["data"]["org"]["files_dir"],
        format!(".external-cache/github.com__acme__parts/{sha}/eng-files")
    );

    // The second import is served from the cache.
    let second = app
        .post("/org/import", json!({ "dir": "ext" }))
        .await
        .expect(201);
    assert_eq!(second["externals"][0]["cached"], true);
    assert_eq!(second["skipped_count"], 3);

    // An interrupted entry (no marker) is a miss and is fetched again.
    std::fs::remove_file(cache.join(".complete")).unwrap();
    std::fs::remove_file(cache.join("teams/people/dev.yaml")).unwrap();
    let third = app
        .post("/org/import", json!({ "dir": "ext" }))
        .await
        .expect(201);
    assert_eq!(third["externals"][0]["cached"], false);
    assert!(cache.join(".complete").is_file());
    assert!(cache.join("teams/people/dev.yaml").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(cache.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        vec![sha.clone()],
        "no temporary directory is left behind"
    );

    // Concurrent imports of the same revision into an empty cache: one complete entry.
    std::fs::remove_dir_all(cache.parent().unwrap()).unwrap();
    let imports = (0..3).map(|_| app.post("/org/import", json!({ "dir": "ext" })));
    for reply in futures::future::join_all(imports).await {
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    assert!(cache.join(".complete").is_file());
    let entries: Vec<_> = std::fs::read_dir(cache.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec![sha.clone()]);

    // Outside the allow-list: refused before any fetch, with the started/failed pair.
    let denied = app.post("/org/import", json!({ "dir": "denied" })).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(!templates.path().join("denied/.external-cache").exists());
}

async fn a_three_level_org_imports_and_every_agent_comes_online(
    runtime: Runtime,
    backend: DbBackend,
) {
    let templates = tempfile::tempdir().unwrap();
    write_file(
        templates.path(),
        "three/org.yaml",
        "name: Three\ndefaults:\n  initial_prompt: Introduce yourself.\nworkspaces:\n  - name: Chief\n    system_prompt: You lead.\n    children:\n      - name: Lead\n        files_dir: lead\n        children:\n          - name: Worker\n",
    );
    write_file(
        templates.path(),
        "three/lead/skills/plan/SKILL.md",
        "# Plan\n",
    );
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| {
        runtime.configure(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.org.templates_dir = dir;
    })
    .await;
    let outcome = app
        .post("/org/import", json!({ "dir": "three" }))
        .await
        .expect(201);
    assert_eq!(outcome["created_count"], 3);
    for w in outcome["workspaces"].as_array().unwrap() {
        let id = w["id"].as_str().unwrap();
        eventually(Duration::from_secs(60), || async {
            let row = app.get(&format!("/workspaces/{id}")).await.body;
            (row["status"] == "online" && !row["last_heartbeat_at"].is_null()).then_some(())
        })
        .await;
    }
    let chief = by_name(&outcome, "Chief")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let prompt = app
        .get(&format!("/workspaces/{chief}/files/system-prompt.md"))
        .await
        .expect(200);
    assert!(prompt.to_string().contains("You lead."), "{prompt}");
    let lead = by_name(&outcome, "Lead")["id"].as_str().unwrap().to_owned();
    let skill = app
        .get(&format!("/workspaces/{lead}/files/skills/plan/SKILL.md"))
        .await
        .expect(200);
    assert!(skill.to_string().contains("# Plan"), "{skill}");
    let config = app
        .get(&format!("/workspaces/{lead}/files/config.yaml"))
        .await
        .expect(200);
    assert!(
        config.to_string().contains("Introduce yourself."),
        "{config}"
    );
}
