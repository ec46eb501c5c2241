//! Attack specs for org templates (issue 17, item 7): `!external` content that climbs out of its
//! cache entry to reach the org's other files, and an `!include` fan-out bomb.

use std::path::Path;
use std::time::Duration;

use molecule_e2e::{
    DbBackend, Runtime, TestApp, builtin_extensions_dir, eventually, on_both_backends,
    serve_github_from, upstream_repo, write_file,
};
use serde_json::{Value, json};

on_both_backends!(
    external_content_cannot_climb_out_of_its_cache_entry_to_the_orgs_files,
    an_include_fan_out_bomb_is_refused_quickly_and_the_host_stays_responsive,
);

/// The fetched repository `acme/parts`: one attack per file, each reaching for the org root
/// (the cache entry is `<org>/.external-cache/github.com__acme__parts/<sha>/`, three levels
/// down, and the attacking files sit one more level down in `climb/`).
const CLIMBS: &[(&str, &str, &str)] = &[
    (
        "climb-files-dir",
        "climb/files-dir.yaml",
        "- name: Mole by files_dir\n  files_dir: ../../../vault\n",
    ),
    (
        "climb-include",
        "climb/include.yaml",
        "- name: Mole by include\n  role: !include ../../../../credentials.txt\n",
    ),
    (
        "climb-prompt",
        "climb/prompt.yaml",
        "- name: Mole by prompt\n  files_dir: mole\n  initial_prompt_file: ../../../../credentials.txt\n",
    ),
];

/// Which key each attack names, as the refusal must say.
fn offending_key(dir: &str) -> &'static str {
    match dir {
        "climb-files-dir" => "files_dir",
        "climb-include" => "!include",
        _ => "initial_prompt_file",
    }
}

/// Where a workspace of `outcome` shows `secret`, once its agent got its files; `None` if it
/// never does within the deadline.
async fn delivered(app: &TestApp, outcome: &Value, secret: &str) -> Option<String> {
    let ids: Vec<String> = outcome["workspaces"]
        .as_array()?
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    let found = tokio::time::timeout(
        Duration::from_secs(60),
        eventually(Duration::from_secs(60), || async {
            for id in &ids {
                for path in [
                    format!("/workspaces/{id}"),
                    format!("/workspaces/{id}/files/config.yaml"),
                    format!("/workspaces/{id}/files/credentials.txt"),
                ] {
                    if app.get(&path).await.text.contains(secret) {
                        return Some(path);
                    }
                }
            }
            None
        }),
    )
    .await;
    found.ok()
}

async fn external_content_cannot_climb_out_of_its_cache_entry_to_the_orgs_files(
    backend: DbBackend,
) {
    // Arrange: a remote repository whose content reaches for `../`, and org directories that
    // each hold a secret beside their org.yaml (another team's files, credentials).
    let secret = format!("org-secret-{}", uuid::Uuid::new_v4().simple());
    let repos = tempfile::tempdir().unwrap();
    let mut files: Vec<(&str, &str)> = CLIMBS
        .iter()
        .map(|(_, path, yaml)| (*path, *yaml))
        .collect();
    files.push(("mole/README.md", "# Mole\n"));
    upstream_repo(repos.path(), "acme/parts", &files);
    let templates = tempfile::tempdir().unwrap();
    for (dir, path, _) in CLIMBS {
        write_file(
            templates.path(),
            &format!("{dir}/org.yaml"),
            &format!(
                "name: Climb\nworkspaces: !external {{repo: acme/parts, ref: v1, path: {path}}}\n"
            ),
        );
        write_file(templates.path(), &format!("{dir}/credentials.txt"), &secret);
        write_file(
            templates.path(),
            &format!("{dir}/vault/credentials.txt"),
            &secret,
        );
    }
    let (dir, repos_root) = (templates.path().to_path_buf(), repos.path().to_path_buf());
    let app = TestApp::spawn_with(backend, move |c| {
        Runtime::Process.configure(c);
        c.org.templates_dir = dir;
        c.org.external_allowlist = vec!["github.com/acme/".into()];
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        serve_github_from(c, &repos_root);
    })
    .await;

    // Act: each attack in turn (all of them run, so a failure lists every one that got through).
    let mut got_through = Vec::new();
    for (dir, _, _) in CLIMBS {
        let reply = app.post("/org/import", json!({ "dir": dir })).await;
        if reply.status.is_success() {
            let place = delivered(&app, &reply.body, &secret).await;
            got_through.push(format!(
                "{dir}: accepted ({}), the org's secret delivered at {place:?}",
                reply.status
            ));
            continue;
        }

        // Assert: refused with a 400 naming the key, and the secret is nowhere.
        assert!(
            !reply.text.contains(&secret),
            "{dir}: the refusal shows the secret"
        );
        let body = reply.expect(400);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(offending_key(dir)) && detail.contains("escapes its !external content"),
            "{dir}: {body}"
        );
    }
    assert!(got_through.is_empty(), "{got_through:#?}");
    assert_eq!(
        app.get("/workspaces").await.expect(200),
        json!([]),
        "nothing is created"
    );
    // The fetch itself happened: the refusal is about what the content names, not the source.
    assert!(
        templates
            .path()
            .join("climb-prompt/.external-cache/github.com__acme__parts")
            .is_dir()
    );
}

/// `bomb/org.yaml` includes `l1.yaml`; each `l<i>.yaml` lists the next level 8 times, 16 levels
/// deep, down to a 1 KB leaf: 8^15 copies of the leaf if nothing stops it.
fn include_bomb(templates: &Path) {
    write_file(
        templates,
        "bomb/org.yaml",
        "name: Bomb\nworkspaces:\n  - name: Boom\n    notes: !include l1.yaml\n",
    );
    for level in 1..16 {
        write_file(
            templates,
            &format!("bomb/l{level}.yaml"),
            &format!("- !include l{}.yaml\n", level + 1).repeat(8),
        );
    }
    write_file(
        templates,
        "bomb/l16.yaml",
        &format!("text: {}\n", "x".repeat(1024)),
    );
    write_file(
        templates,
        "fine/org.yaml",
        "name: Fine\nworkspaces:\n  - name: Calm\n",
    );
}

async fn an_include_fan_out_bomb_is_refused_quickly_and_the_host_stays_responsive(
    backend: DbBackend,
) {
    // Arrange
    let templates = tempfile::tempdir().unwrap();
    include_bomb(templates.path());
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| c.org.templates_dir = dir).await;

    // Act
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        app.post("/org/import", json!({ "dir": "bomb" })),
    )
    .await
    .expect("the import of an include bomb answers within 10 s");

    // Assert: a clear 400, nothing created, and the host answers everything else at once.
    let body = reply.expect(400);
    assert_eq!(body["error"], "org template expansion failed");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("budget") && detail.contains("documents"),
        "{body}"
    );
    assert_eq!(app.get("/workspaces").await.expect(200), json!([]));
    let responsive = Duration::from_secs(5);
    let health = tokio::time::timeout(responsive, app.get("/health"))
        .await
        .expect("/health answers");
    assert!(health.status.is_success());
    let listed = tokio::time::timeout(responsive, app.get("/org/templates"))
        .await
        .expect("the listing answers")
        .expect(200);
    let dirs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["dir"].as_str())
        .collect();
    assert_eq!(dirs, vec!["fine"], "the bomb is skipped, the rest listed");
    let fine = tokio::time::timeout(
        responsive,
        app.post("/org/import", json!({ "dir": "fine" })),
    )
    .await
    .expect("a normal import answers")
    .expect(201);
    assert_eq!(fine["created_count"], 1);
}
