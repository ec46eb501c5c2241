//! The workspace template catalogue (`GET /templates`, `POST /templates/import`): listing,
//! importing, every escape refused, a workspace created from an imported template, and an
//! overwrite that is atomic even when it fails half way.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use molecule_e2e::{DbBackend, TestApp, eventually, on_both_backends, process_runtime, write_file};
use molecule_host::config::faults::TemplateImportStep;
use serde_json::{Value, json};

on_both_backends!(the_template_catalogue_lists_imports_refuses_escapes_and_replaces_atomically,);

const ONLINE: Duration = Duration::from_secs(90);

/// Every entry of the templates directory, hidden ones included (staging leftovers would show).
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn listed<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|t| t["id"] == id)
}

fn error_of(reply: Value) -> String {
    reply["error"].as_str().unwrap_or_default().to_owned()
}

async fn the_template_catalogue_lists_imports_refuses_escapes_and_replaces_atomically(
    backend: DbBackend,
) {
    // Arrange: a templates directory with a good template, a broken one, and a symlink that
    // points out of it at a directory holding something to protect.
    let templates = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_file(outside.path(), "keep.txt", "untouched");
    write_file(
        templates.path(),
        "researcher/config.yaml",
        "name: Researcher\ndescription: finds things\ntier: 2\nruntime: langgraph\n\
         runtime_config:\n  model: echo-large\n  provision_timeout_seconds: 300\n",
    );
    write_file(
        templates.path(),
        "researcher/skills/search/SKILL.md",
        "# Search\n",
    );
    write_file(templates.path(), "broken/config.yaml", "name: [unclosed\n");
    write_file(templates.path(), "notes/readme.txt", "not a template");
    std::os::unix::fs::symlink(outside.path(), templates.path().join("outside")).unwrap();
    let dir = templates.path().to_path_buf();
    let mut app = TestApp::spawn_with(backend, move |c| {
        process_runtime(c);
        c.runtime.templates_dir = Some(dir);
    })
    .await;

    // The catalogue: the original's fields; the broken template and the escaping symlink are
    // listed with their error; a directory without config.yaml is not a template.
    let list = app.get("/templates").await.expect(200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["broken", "outside", "researcher"], "{list}");
    let researcher = listed(&list, "researcher").unwrap();
    assert_eq!(researcher["name"], "Researcher");
    assert_eq!(researcher["description"], "finds things");
    assert_eq!(researcher["tier"], 2);
    assert_eq!(researcher["runtime"], "langgraph");
    assert_eq!(researcher["model"], "echo-large");
    assert_eq!(researcher["skills"], json!(["search"]));
    assert_eq!(researcher["skill_count"], 1);
    assert_eq!(researcher["provision_timeout_seconds"], 300);
    assert!(researcher.get("error").is_none(), "{researcher}");
    let broken = listed(&list, "broken").unwrap();
    assert!(
        broken["error"].as_str().unwrap().contains("not valid YAML"),
        "{broken}"
    );
    let escaping = listed(&list, "outside").unwrap();
    assert!(
        escaping["error"]
            .as_str()
            .unwrap()
            .contains("symlink leaving"),
        "{escaping}"
    );

    // Import, then list: it is there, its files owner-only, its skills found.
    let imported = app
        .post(
            "/templates/import",
            json!({
                "name": "Helper Bot",
                "files": {
                    "config.yaml": "name: Helper Bot\ndescription: says hello\nruntime: langgraph\n",
                    "system-prompt.md": "Be brief.\n",
                    "skills/greet/SKILL.md": "---\nname: Greet\n---\nSay hi.\n",
                },
            }),
        )
        .await
        .expect(201);
    assert_eq!(imported["status"], "imported");
    assert_eq!(imported["id"], "helper-bot");
    assert_eq!(imported["name"], "Helper Bot");
    assert_eq!(imported["replaced"], false);
    let mode = std::fs::metadata(templates.path().join("helper-bot/skills/greet/SKILL.md"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let list = app.get("/templates").await.expect(200);
    let helper = listed(&list, "helper-bot").expect("the imported template is listed");
    assert_eq!(helper["description"], "says hello");
    assert_eq!(helper["skills"], json!(["greet"]));

    // An import without config.yaml gets the original's generated one.
    let generated = app
        .post(
            "/templates/import",
            json!({ "name": "Bare", "files": { "notes.md": "hello" } }),
        )
        .await
        .expect(201);
    assert_eq!(generated["files"], 2);
    let list = app.get("/templates").await.expect(200);
    let bare = listed(&list, "bare").unwrap();
    assert_eq!(bare["tier"], 3);
    assert_eq!(bare["required_env"], json!(["ANTHROPIC_API_KEY"]));

    // Escapes and limits, each refused with a 4xx naming the problem, nothing written.
    let before = entries(templates.path());
    for path in [
        "../escaped.md",
        "/tmp/absolute.md",
        "a/../../b.md",
        "skills//x.md",
    ] {
        let reply = app
            .post(
                "/templates/import",
                json!({ "name": "Mole", "files": { path: "x" } }),
            )
            .await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert!(error_of(reply.body).starts_with("files:"), "{path}");
    }
    // The symlink already in the directory is never written through nor replaced, whatever
    // the name normalises from.
    for name in ["outside", "../../Outside", "OUT side"] {
        let reply = app
            .post(
                "/templates/import",
                json!({ "name": name, "files": { "keep.txt": "overwritten" }, "overwrite": true }),
            )
            .await;
        if name == "OUT side" {
            // "out-side" is another name: it imports as a new template of its own.
            assert_eq!(reply.expect(201)["id"], "out-side");
            continue;
        }
        let body = reply.expect(409);
        assert_eq!(body["id"], "outside", "{body}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("keep.txt")).unwrap(),
        "untouched"
    );
    assert_eq!(
        entries(outside.path()),
        BTreeSet::from(["keep.txt".to_owned()])
    );
    // A name that normalises to an existing template is a conflict without overwrite.
    let conflict = app
        .post(
            "/templates/import",
            json!({ "name": "HELPER-bot", "files": { "config.yaml": "name: Impostor\n" } }),
        )
        .await
        .expect(409);
    assert_eq!(conflict["error"], "template already exists");
    assert_eq!(conflict["id"], "helper-bot");
    let too_many: serde_json::Map<String, Value> = (0..201)
        .map(|i| (format!("f{i}.txt"), json!("x")))
        .collect();
    let reply = app
        .post(
            "/templates/import",
            json!({ "name": "Many", "files": too_many }),
        )
        .await
        .expect(400);
    assert_eq!(error_of(reply), "too many files (201), max 200");
    let reply = app
        .post(
            "/templates/import",
            json!({ "name": "Big", "files": { "big.txt": "x".repeat(600 * 1024) } }),
        )
        .await
        .expect(400);
    assert!(error_of(reply).starts_with("files too large"));
    let reply = app
        .post("/templates/import", json!({ "files": {} }))
        .await
        .expect(400);
    assert_eq!(error_of(reply), "name is required");
    let mut after = entries(templates.path());
    after.remove("out-side");
    assert_eq!(
        after, before,
        "refused imports leave the directory as it was"
    );
    assert!(
        !templates
            .path()
            .parent()
            .unwrap()
            .join("escaped.md")
            .exists()
    );
    assert!(!Path::new("/tmp/absolute.md").exists());

    // A workspace created from the imported template gets its files and runs as it.
    let created = app
        .post(
            "/workspaces",
            json!({ "name": "Greeter", "template": "helper-bot" }),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    app.wait_settled(&id, ONLINE).await;
    let skill = app
        .get(&format!("/workspaces/{id}/files/skills/greet/SKILL.md"))
        .await
        .expect(200);
    assert_eq!(skill["content"], "---\nname: Greet\n---\nSay hi.\n");
    let card_name = eventually(ONLINE, || async {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        row["agent_card"]["name"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(card_name, "Helper Bot");
    // Creation refuses a template that does not exist or leaves the directory.
    let reply = app
        .post("/workspaces", json!({ "name": "X", "template": "nope" }))
        .await
        .expect(400);
    assert_eq!(error_of(reply), "template not found");
    for template in ["outside", "../researcher", ".hidden"] {
        let reply = app
            .post("/workspaces", json!({ "name": "X", "template": template }))
            .await
            .expect(400);
        assert_eq!(error_of(reply), "invalid template", "{template}");
    }

    // Overwrite with `overwrite: true` replaces the whole template: old files are gone.
    let replaced = app
        .post(
            "/templates/import",
            json!({
                "name": "Helper Bot",
                "overwrite": true,
                "files": {
                    "config.yaml": "name: Helper Bot\ndescription: version two\n",
                    "skills/wave/SKILL.md": "# Wave\n",
                },
            }),
        )
        .await
        .expect(201);
    assert_eq!(replaced["replaced"], true);
    let helper = templates.path().join("helper-bot");
    assert!(!helper.join("system-prompt.md").exists());
    assert!(!helper.join("skills/greet").exists());
    let list = app.get("/templates").await.expect(200);
    assert_eq!(
        listed(&list, "helper-bot").unwrap()["description"],
        "version two"
    );
    let settled = entries(templates.path());
    assert!(settled.iter().all(|e| !e.starts_with('.')), "{settled:?}");

    // An overwrite that fails after the old template was moved aside puts it back whole, and
    // a failure after staging leaves no staged files behind.
    let snapshot = |dir: &Path| -> Vec<(String, String)> {
        let mut files = Vec::new();
        for entry in walk(dir) {
            let text = std::fs::read_to_string(&entry).unwrap();
            files.push((entry.strip_prefix(dir).unwrap().display().to_string(), text));
        }
        files.sort();
        files
    };
    let old = snapshot(&helper);
    for step in [TemplateImportStep::Swap, TemplateImportStep::Stage] {
        app.restart_with(move |c| c.faults.template_import = Some(step))
            .await
            .unwrap();
        let reply = app
            .post(
                "/templates/import",
                json!({
                    "name": "helper-bot",
                    "overwrite": true,
                    "files": { "config.yaml": "name: Helper Bot\ndescription: version three\n" },
                }),
            )
            .await
            .expect(500);
        assert_eq!(error_of(reply), "internal error");
        assert_eq!(
            snapshot(&helper),
            old,
            "{step:?}: the old template is whole"
        );
        assert_eq!(
            entries(templates.path()),
            settled,
            "{step:?}: nothing left behind"
        );
        let list = app.get("/templates").await.expect(200);
        assert_eq!(
            listed(&list, "helper-bot").unwrap()["description"],
            "version two"
        );
    }
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
