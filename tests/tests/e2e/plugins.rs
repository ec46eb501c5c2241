//! Plugin install on real agents (process runtime and Docker): from the local registry and from
//! a local bare git repository through the real resolver components, hot and cold reinstalls
//! decided by the classifier, the atomic swap (never a partial plugin, with faults injected at
//! every step), uninstall, listing and the org allow-list.

use std::path::Path;
use std::time::Duration;

use molecule_e2e::{
    DbBackend, Runtime, TestApp, builtin_extensions_dir, eventually, on_both_runtimes,
};
use serde_json::{Value, json};

on_both_runtimes!(
    a_local_plugin_installs_hot_and_cold_and_uninstalls,
    a_git_plugin_installs_through_the_resolver_with_its_revision,
    a_fault_at_any_delivery_step_leaves_the_old_or_the_new_plugin_complete,
);

const ONLINE: Duration = Duration::from_secs(60);

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

struct Setup {
    app: TestApp,
    registry: tempfile::TempDir,
    id: String,
}

async fn online_workspace(
    runtime: Runtime,
    backend: DbBackend,
    tweak: impl FnOnce(&mut molecule_host::Config) + Send + 'static,
) -> Setup {
    let registry = tempfile::tempdir().unwrap();
    let dir = registry.path().to_path_buf();
    let app = TestApp::spawn_with(backend, move |c| {
        runtime.configure(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.plugins_registry_dir = Some(dir);
        tweak(c);
    })
    .await;
    let id = app.create_workspace("Plugged", None).await;
    wait_online(&app, &id).await;
    Setup { app, registry, id }
}

async fn wait_online(app: &TestApp, id: &str) {
    eventually(ONLINE, || async {
        let row = app.get(&format!("/workspaces/{id}")).await.body;
        (row["status"] == "online" && !row["last_heartbeat_at"].is_null()).then_some(())
    })
    .await;
}

async fn restarts(app: &TestApp, id: &str) -> usize {
    app.get(&format!("/workspaces/{id}/activity?type=restart&limit=500"))
        .await
        .expect(200)
        .as_array()
        .map_or(0, Vec::len)
}

/// Asks the agent over A2A; the echo brain's answer names the skills it loaded.
async fn ask(app: &TestApp, id: &str, text: &str) -> String {
    let url = app.get(&format!("/workspaces/{id}")).await.body["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": text}]}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply.to_string()
}

/// Installs and waits until the restart the policy decided (if any) is over.
async fn install_settled(app: &TestApp, id: &str, body: Value) -> Value {
    let before = restarts(app, id).await;
    let installed = app
        .post(&format!("/workspaces/{id}/plugins"), body)
        .await
        .expect(200);
    if installed["restarting"] == true {
        eventually(ONLINE, || async {
            (restarts(app, id).await > before).then_some(())
        })
        .await;
    }
    wait_online(app, id).await;
    installed
}

async fn file(app: &TestApp, id: &str, path: &str) -> Option<String> {
    let reply = app.get(&format!("/workspaces/{id}/files/{path}")).await;
    (reply.status == 200).then(|| {
        reply.body["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

async fn a_local_plugin_installs_hot_and_cold_and_uninstalls(runtime: Runtime, backend: DbBackend) {
    let s = online_workspace(runtime, backend, |_| {}).await;
    let (app, id) = (&s.app, s.id.as_str());
    write(
        s.registry.path(),
        "helper/plugin.yaml",
        "name: helper\nversion: 1.0.0\nskills: [greet]\n",
    );
    write(
        s.registry.path(),
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hi version one.\n",
    );

    let sources = app.get("/plugins/sources").await.expect(200);
    assert!(
        sources["schemes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "local")
    );
    let listed = app.get("/plugins").await.expect(200);
    assert_eq!(listed[0]["name"], "helper");

    // First install: cold, the policy restarts the agent once.
    let before = restarts(app, id).await;
    let first = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "helper" }),
        )
        .await
        .expect(200);
    assert_eq!(first["status"], "installed");
    assert_eq!(first["plugin"], "helper");
    assert_eq!(first["reload"], "cold");
    assert!(
        first["installed_sha"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    eventually(ONLINE, || async {
        (restarts(app, id).await > before).then_some(())
    })
    .await;
    wait_online(app, id).await;
    assert!(file(app, id, "plugins/helper/.complete").await.is_some());

    // A SKILL.md-only change is hot: no restart, and the agent answers with the new text.
    write(
        s.registry.path(),
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hi version two.\n",
    );
    let settled = restarts(app, id).await;
    let hot = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "local://helper" }),
        )
        .await
        .expect(200);
    assert_eq!(hot["reload"], "hot");
    assert_eq!(hot["restarting"], false);
    // The running agent loaded the plugin (it carries .complete) and its skill.
    let answer = ask(app, id, "which skills do you have?").await;
    assert!(
        answer.contains("\"helper\"") && answer.contains("greet"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(restarts(app, id).await, settled);
    let content = file(app, id, "plugins/helper/skills/greet/SKILL.md")
        .await
        .unwrap();
    assert!(content.contains("version two"), "{content}");

    // A plugin.yaml change is cold: one restart.
    write(
        s.registry.path(),
        "helper/plugin.yaml",
        "name: helper\nversion: 1.1.0\nskills: [greet]\n",
    );
    let cold = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "helper", "track": "tag:v1" }),
        )
        .await
        .expect(200);
    assert_eq!(cold["reload"], "cold");
    eventually(ONLINE, || async {
        (restarts(app, id).await > settled).then_some(())
    })
    .await;
    wait_online(app, id).await;

    // Listing shows the plugin with its tracking row, never the swap's dot directories.
    let installed = app
        .get(&format!("/workspaces/{id}/plugins"))
        .await
        .expect(200);
    let installed = installed.as_array().unwrap();
    assert_eq!(installed.len(), 1, "{installed:?}");
    assert_eq!(installed[0]["name"], "helper");
    assert_eq!(installed[0]["complete"], true);
    assert_eq!(installed[0]["tracked_ref"], "tag:v1");

    // Uninstall removes files and the tracking row; a reinstall starts a fresh row.
    let gone = app
        .delete(&format!("/workspaces/{id}/plugins/helper"))
        .await
        .expect(200);
    assert_eq!(gone["status"], "uninstalled");
    wait_online(app, id).await;
    assert!(file(app, id, "plugins/helper/plugin.yaml").await.is_none());
    assert!(
        app.get(&format!("/workspaces/{id}/plugins"))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.delete(&format!("/workspaces/{id}/plugins/helper"))
            .await
            .status,
        404
    );
    let again = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "helper" }),
        )
        .await
        .expect(200);
    assert_eq!(again["reload"], "cold");
    let installed = app
        .get(&format!("/workspaces/{id}/plugins"))
        .await
        .expect(200);
    assert_eq!(installed[0]["tracked_ref"], "none");

    // Refusals at the edge, before anything is fetched.
    for (body, status) in [
        (json!({ "source": "" }), 400),
        (json!({ "source": "ftp://x/y" }), 400),
        (json!({ "source": "../etc" }), 400),
        (json!({ "source": "helper", "track": "latest" }), 400),
        (json!({ "source": "missing" }), 404),
        (json!({ "source": "helper", "sha256": "0".repeat(64) }), 422),
    ] {
        let reply = app
            .post(&format!("/workspaces/{id}/plugins"), body.clone())
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
    }
    let unknown = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "ftp://x/y" }),
        )
        .await;
    assert!(
        unknown.body["available_schemes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "local")
    );

    // An org allow-list that does not name the plugin refuses it.
    app.put(
        &format!("/orgs/{id}/plugins/allowlist"),
        json!({ "plugins": ["other"] }),
    )
    .await
    .expect(200);
    assert_eq!(
        app.post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "helper" })
        )
        .await
        .status,
        403
    );
    app.put(
        &format!("/orgs/{id}/plugins/allowlist"),
        json!({ "plugins": [] }),
    )
    .await
    .expect(200);
}

fn git(cwd: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

async fn a_git_plugin_installs_through_the_resolver_with_its_revision(
    runtime: Runtime,
    backend: DbBackend,
) {
    let repos = tempfile::tempdir().unwrap();
    let work = repos.path().join("work");
    write(&work, "plugin.yaml", "name: gitplug\n");
    write(&work, "skills/fetch/SKILL.md", "# Fetch\n");
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "v1"]);
    let bare = repos.path().join("acme/gitplug.git");
    git(
        repos.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let rewrite = format!("file://{}/", repos.path().display());
    let s = online_workspace(runtime, backend, move |c| {
        c.git_allowed_protocols = Some("https:file".into());
        c.git_env = [
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", &format!("url.{rewrite}.insteadOf")),
            ("GIT_CONFIG_VALUE_0", "https://github.com/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    })
    .await;
    let (app, id) = (&s.app, s.id.as_str());
    let installed = install_settled(
        app,
        id,
        json!({ "source": "github://acme/gitplug#v1", "track": "tag:v1" }),
    )
    .await;
    assert_eq!(installed["plugin"], "gitplug");
    assert_eq!(installed["installed_sha"].as_str().unwrap().len(), 40);
    let listed = app
        .get(&format!("/workspaces/{id}/plugins"))
        .await
        .expect(200);
    assert_eq!(listed[0]["installed_sha"], installed["installed_sha"]);
    assert_eq!(listed[0]["source"], "github://acme/gitplug#v1");
    assert_eq!(
        app.post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "github://acme/nope#v1" })
        )
        .await
        .status,
        404
    );
}

async fn a_fault_at_any_delivery_step_leaves_the_old_or_the_new_plugin_complete(
    runtime: Runtime,
    backend: DbBackend,
) {
    use molecule_host::plugins::deliver::Step;
    for step in [Step::Stage, Step::Snapshot, Step::Swap, Step::Marker] {
        let s = online_workspace(runtime, backend, move |c| {
            c.faults.plugin_reinstall = Some(step)
        })
        .await;
        let (app, id) = (&s.app, s.id.as_str());
        write(
            s.registry.path(),
            "swap/plugin.yaml",
            "name: swap\nversion: 1\n",
        );
        write(s.registry.path(), "swap/skills/a/SKILL.md", "old\n");
        // The first install always succeeds; the fault hits the reinstall.
        install_settled(app, id, json!({ "source": "swap" })).await;
        write(
            s.registry.path(),
            "swap/plugin.yaml",
            "name: swap\nversion: 2\n",
        );
        write(s.registry.path(), "swap/skills/a/SKILL.md", "new\n");
        let reply = app
            .post(
                &format!("/workspaces/{id}/plugins"),
                json!({ "source": "swap" }),
            )
            .await;
        assert_eq!(reply.status, 500, "{step:?}: {}", reply.text);
        let yaml = file(app, id, "plugins/swap/plugin.yaml").await.unwrap();
        let skill = file(app, id, "plugins/swap/skills/a/SKILL.md")
            .await
            .unwrap();
        let marker = file(app, id, "plugins/swap/.complete").await;
        match step {
            Step::Marker => {
                // The new content is in place but unmarked: the agent does not load it, and
                // the error says how to recover.
                assert!(yaml.contains("version: 2") && skill == "new\n", "{step:?}");
                assert!(marker.is_none(), "{step:?}");
                assert!(reply.text.contains(".complete"), "{}", reply.text);
            }
            _ => {
                assert!(
                    yaml.contains("version: 1") && skill == "old\n",
                    "{step:?}: {yaml} {skill}"
                );
                assert!(marker.is_some(), "{step:?}");
            }
        }
        let installed = app
            .get(&format!("/workspaces/{id}/plugins"))
            .await
            .expect(200);
        assert_eq!(
            installed.as_array().unwrap().len(),
            1,
            "{step:?}: {installed}"
        );
    }
}
