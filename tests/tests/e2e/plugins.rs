//! Plugin install on real agents (process runtime and Docker): from the local registry and from
//! a local bare git repository through the real resolver components, hot and cold reinstalls
//! decided by the classifier, the atomic swap (never a partial plugin, with faults injected at
//! every step), uninstall, listing and the org allow-list.

use std::time::Duration;

use molecule_e2e::{
    DbBackend, Runtime, TestApp, builtin_extensions_dir, eventually, git, kill_agent,
    on_both_backends, on_both_runtimes, serve_github_from, upstream_repo, write_file,
};
use serde_json::{Value, json};

on_both_runtimes!(
    a_local_plugin_installs_hot_and_cold_and_uninstalls,
    a_plugin_installed_while_the_agent_is_down_lands_and_is_loaded_when_it_is_back,
    a_plugin_installed_into_a_paused_workspace_is_loaded_when_it_resumes,
    a_git_plugin_installs_through_the_resolver_with_its_revision,
    a_fault_at_any_delivery_step_leaves_the_old_or_the_new_plugin_complete,
    a_moved_tag_is_queued_once_and_rolled_out_canary_first,
);

on_both_backends!(the_drift_sweep_says_when_it_ran_and_when_it_runs_next);

const ONLINE: Duration = Duration::from_secs(60);

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

/// Asks the agent over A2A; the echo brain's answer names the skills it loaded.
async fn ask(app: &TestApp, id: &str, text: &str) -> String {
    let url = app.get(&format!("/workspaces/{id}")).await.body["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = reqwest::Client::new()
        .post(&url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": text}]}}}))
        .send()
        .await;
    let reply = match sent {
        Ok(response) => response.json::<Value>().await,
        Err(err) => Err(err),
    };
    match reply {
        Ok(reply) => reply.to_string(),
        // Say what the host knew of the agent then: its row and latest activity (a restart
        // nobody asked for shows there).
        Err(err) => {
            let row = app.get(&format!("/workspaces/{id}")).await.body;
            let activity = app.activity(id, "?limit=15").await;
            let lines: Vec<String> = activity
                .iter()
                .map(|a| {
                    format!(
                        "{} {} {} {}",
                        a["created_at"], a["activity_type"], a["status"], a["summary"]
                    )
                })
                .collect();
            panic!(
                "asking the agent at {url} failed: {err}\nworkspace: {row}\nactivity (newest first):\n{}",
                lines.join("\n")
            );
        }
    }
}

/// Installs and waits until the restart the policy decided (if any) is over.
async fn install_settled(app: &TestApp, id: &str, body: Value) -> Value {
    let before = app.restart_count(id).await;
    let installed = app
        .post(&format!("/workspaces/{id}/plugins"), body)
        .await
        .expect(200);
    settle(app, id, before, &installed).await;
    installed
}

/// Waits for the restart an answer announced (`restarting`) and for the agent to be back with
/// no restart running or due: a second coalesced cycle would otherwise stop it under the next
/// request.
async fn settle(app: &TestApp, id: &str, restarts_before: usize, answer: &Value) {
    if answer["restarting"] == true {
        eventually(ONLINE, || async {
            (app.restart_count(id).await > restarts_before).then_some(())
        })
        .await;
    }
    app.wait_settled(id, ONLINE).await;
}

/// The agent's card, fetched from the agent itself.
async fn agent_card(app: &TestApp, id: &str) -> String {
    let url = app.get(&format!("/workspaces/{id}")).await.body["url"]
        .as_str()
        .unwrap()
        .to_owned();
    reqwest::get(format!("{url}/.well-known/agent.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

/// A local plugin `name` with one skill `skill`, in the registry.
fn registry_plugin(registry: &std::path::Path, name: &str, skill: &str) {
    write_file(
        registry,
        &format!("{name}/plugin.yaml"),
        &format!("name: {name}\nversion: 1.0.0\nskills: [{skill}]\n"),
    );
    write_file(
        registry,
        &format!("{name}/skills/{skill}/SKILL.md"),
        &format!("---\nname: {skill}\ndescription: the {skill} skill\n---\nDo {skill}.\n"),
    );
}

async fn a_plugin_installed_while_the_agent_is_down_lands_and_is_loaded_when_it_is_back(
    runtime: Runtime,
    backend: DbBackend,
) {
    // Arrange: an online agent, and a plugin in the registry.
    let s = online_workspace(runtime, backend, |_| {}).await;
    let (app, id) = (&s.app, s.id.as_str());
    registry_plugin(s.registry.path(), "midway", "bridge");
    app.wait_settled(id, ONLINE).await;

    // Act: the agent dies (as between the stop and the start of a restart cycle), and the
    // install arrives before the host has brought it back; the original, and this host before,
    // answered 503 "workspace container not running".
    kill_agent(app, runtime, id);
    let installed = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "midway" }),
        )
        .await;

    // Assert: it lands in the stored files, and the agent the host starts again loads it.
    assert_eq!(installed.status, 200, "{}", installed.text);
    assert_eq!(installed.body["plugin"], "midway");
    assert!(file(app, id, "plugins/midway/.complete").await.is_some());
    eventually(ONLINE, || async {
        (app.restart_count(id).await > 0).then_some(())
    })
    .await;
    app.wait_settled(id, ONLINE).await;
    let answer = ask(app, id, "which skills do you have?").await;
    assert!(answer.contains("bridge"), "{answer}");
}

async fn a_plugin_installed_into_a_paused_workspace_is_loaded_when_it_resumes(
    runtime: Runtime,
    backend: DbBackend,
) {
    // Arrange: an online agent, paused (its agent stopped, its files kept).
    let s = online_workspace(runtime, backend, |_| {}).await;
    let (app, id) = (&s.app, s.id.as_str());
    registry_plugin(s.registry.path(), "later", "resume");
    app.wait_settled(id, ONLINE).await;
    app.post(&format!("/workspaces/{id}/pause"), json!({}))
        .await
        .expect(200);

    // Act
    let installed = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": "later" }),
        )
        .await;

    // Assert: installed into the stored files; the paused agent is not started by it, and
    // loads the plugin once resumed.
    assert_eq!(installed.status, 200, "{}", installed.text);
    assert_eq!(
        app.get(&format!("/workspaces/{id}")).await.expect(200)["status"],
        "paused"
    );
    assert!(file(app, id, "plugins/later/.complete").await.is_some());
    app.post(&format!("/workspaces/{id}/resume"), json!({}))
        .await
        .expect(200);
    app.wait_settled(id, ONLINE).await;
    let answer = ask(app, id, "which skills do you have?").await;
    assert!(answer.contains("resume"), "{answer}");
}

async fn a_local_plugin_installs_hot_and_cold_and_uninstalls(runtime: Runtime, backend: DbBackend) {
    let s = online_workspace(runtime, backend, |_| {}).await;
    let (app, id) = (&s.app, s.id.as_str());
    write_file(
        s.registry.path(),
        "helper/plugin.yaml",
        "name: helper\nversion: 1.0.0\nskills: [greet]\n",
    );
    write_file(
        s.registry.path(),
        "helper/skills/greet/SKILL.md",
        "---\nname: Greet\ndescription: says hi, version one\n---\nSay hi.\n",
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
    let before = app.restart_count(id).await;
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
        (app.restart_count(id).await > before).then_some(())
    })
    .await;
    app.wait_settled(id, ONLINE).await;
    assert!(file(app, id, "plugins/helper/.complete").await.is_some());

    // A SKILL.md-only change is hot: no restart, and the agent answers with the new text.
    write_file(
        s.registry.path(),
        "helper/skills/greet/SKILL.md",
        "---\nname: Greet\ndescription: says hi, version two\n---\nSay hi.\n",
    );
    let settled = app.restart_count(id).await;
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
    assert_eq!(app.restart_count(id).await, settled);
    let content = file(app, id, "plugins/helper/skills/greet/SKILL.md")
        .await
        .unwrap();
    assert!(content.contains("version two"), "{content}");
    // The running agent serves the new skill text (its card re-reads SKILL.md files).
    let card = agent_card(app, id).await;
    assert!(card.contains("says hi, version two"), "{card}");

    // Concurrent installs of the same plugin are serialised: both succeed, the result is whole.
    let path = format!("/workspaces/{id}/plugins");
    let installs = (0..3).map(|_| app.post(&path, json!({ "source": "helper" })));
    for reply in futures::future::join_all(installs).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["reload"], "hot");
    }
    assert!(file(app, id, "plugins/helper/.complete").await.is_some());

    // A plugin.yaml change is cold: one restart.
    write_file(
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
    settle(app, id, settled, &cold).await;

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
    let before = app.restart_count(id).await;
    let gone = app
        .delete(&format!("/workspaces/{id}/plugins/helper"))
        .await
        .expect(200);
    assert_eq!(gone["status"], "uninstalled");
    settle(app, id, before, &gone).await;
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
    let again = install_settled(app, id, json!({ "source": "helper" })).await;
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

async fn a_git_plugin_installs_through_the_resolver_with_its_revision(
    runtime: Runtime,
    backend: DbBackend,
) {
    let repos = tempfile::tempdir().unwrap();
    upstream_repo(
        repos.path(),
        "acme/gitplug",
        &[
            ("plugin.yaml", "name: gitplug\n"),
            ("skills/fetch/SKILL.md", "# Fetch\n"),
        ],
    );
    let repos_root = repos.path().to_path_buf();
    let s = online_workspace(runtime, backend, move |c| serve_github_from(c, &repos_root)).await;
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
        write_file(
            s.registry.path(),
            "swap/plugin.yaml",
            "name: swap\nversion: 1\n",
        );
        write_file(s.registry.path(), "swap/skills/a/SKILL.md", "old\n");
        // The first install always succeeds; the fault hits the reinstall.
        install_settled(app, id, json!({ "source": "swap" })).await;
        write_file(
            s.registry.path(),
            "swap/plugin.yaml",
            "name: swap\nversion: 2\n",
        );
        write_file(s.registry.path(), "swap/skills/a/SKILL.md", "new\n");
        let reply = app
            .post(
                &format!("/workspaces/{id}/plugins"),
                json!({ "source": "swap" }),
            )
            .await;
        assert_eq!(reply.status, 500, "{step:?}: {}", reply.text);
        assert!(
            !reply.text.contains("injected"),
            "internal error text leaked: {}",
            reply.text
        );
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
                let answer = ask(app, id, "plugins?").await;
                assert!(
                    !answer.contains("\"swap\""),
                    "an unmarked plugin is loaded: {answer}"
                );
            }
            _ => {
                assert!(
                    yaml.contains("version: 1") && skill == "old\n",
                    "{step:?}: {yaml} {skill}"
                );
                assert!(marker.is_some(), "{step:?}");
                let answer = ask(app, id, "plugins?").await;
                assert!(answer.contains("\"swap\""), "{step:?}: {answer}");
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

/// A work repository whose bare clone is served as https://github.com/acme/<name>.git.
struct Upstream {
    root: tempfile::TempDir,
    work: std::path::PathBuf,
}

impl Upstream {
    fn new(name: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let yaml = format!("name: {name}\nversion: 1\n");
        let work = upstream_repo(
            root.path(),
            &format!("acme/{name}"),
            &[("plugin.yaml", &yaml)],
        );
        Upstream { root, work }
    }

    /// Commits a new version and moves tag v1 to it.
    fn move_tag(&self, version: u32) {
        write_file(
            &self.work,
            "plugin.yaml",
            &format!("name: drifty\nversion: {version}\n"),
        );
        git(&self.work, &["commit", "-q", "-am", &format!("v{version}")]);
        git(&self.work, &["tag", "-f", "v1"]);
        git(&self.work, &["push", "-q", "-f", "origin", "main", "v1"]);
    }
}

async fn a_moved_tag_is_queued_once_and_rolled_out_canary_first(
    runtime: Runtime,
    backend: DbBackend,
) {
    let upstream = Upstream::new("drifty");
    let repos_root = upstream.root.path().to_path_buf();
    let s = online_workspace(runtime, backend, move |c| serve_github_from(c, &repos_root)).await;
    let app = &s.app;
    let canary = s.id.clone();
    let prod = app.create_workspace("Production", None).await;
    wait_online(app, &prod).await;
    assert_eq!(
        app.patch(
            &format!("/workspaces/{canary}"),
            json!({ "update_tier": "beta" })
        )
        .await
        .status,
        400
    );
    app.patch(
        &format!("/workspaces/{canary}"),
        json!({ "update_tier": "canary" }),
    )
    .await
    .expect(200);
    let body = json!({ "source": "github://acme/drifty#v1", "track": "tag:v1" });
    let first = install_settled(app, &canary, body.clone()).await;
    install_settled(app, &prod, body).await;
    let v1 = first["installed_sha"].as_str().unwrap().to_owned();

    // Nothing moved: nothing queued.
    assert_eq!(
        app.post("/admin/plugin-updates/check", json!({}))
            .await
            .expect(200)["queued"],
        0
    );
    assert_eq!(
        app.get("/admin/plugin-updates-pending").await.expect(200),
        json!([])
    );

    // The tag moves: one pending row per workspace, however often the sweep runs.
    upstream.move_tag(2);
    assert_eq!(
        app.post("/admin/plugin-updates/check", json!({}))
            .await
            .expect(200)["queued"],
        2
    );
    assert_eq!(
        app.post("/admin/plugin-updates/check", json!({}))
            .await
            .expect(200)["queued"],
        0
    );
    let pending = app.get("/admin/plugin-updates-pending").await.expect(200);
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|p| p["current_sha"] == v1.as_str() && p["latest_sha"] != v1.as_str())
    );
    let v2 = pending[0]["latest_sha"].as_str().unwrap().to_owned();

    // Roll out: canary first, then production, each at the latest revision.
    let rollout = app
        .post("/admin/plugin-updates/apply-all", json!({}))
        .await
        .expect(200);
    assert_eq!(rollout["stopped"], false, "{rollout}");
    let order: Vec<&str> = rollout["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["workspace_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec![canary.as_str(), prod.as_str()]);
    for id in [&canary, &prod] {
        let listed = app
            .get(&format!("/workspaces/{id}/plugins"))
            .await
            .expect(200);
        assert_eq!(listed[0]["installed_sha"], v2.as_str());
        assert_eq!(listed[0]["source"], "github://acme/drifty#v1");
    }
    assert_eq!(
        app.get("/admin/plugin-updates-pending").await.expect(200),
        json!([])
    );
    let queue_id = rollout["applied"][0]["queue_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = app
        .post(
            &format!("/admin/plugin-updates/{queue_id}/apply"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(again["status"], "already_applied");
    let late = app
        .post(
            &format!("/admin/plugin-updates/{queue_id}/dismiss"),
            json!({}),
        )
        .await;
    assert_eq!(late.status, 409, "an applied update cannot be dismissed");
    assert_eq!(
        app.post(
            &format!("/admin/plugin-updates/{}/apply", uuid::Uuid::new_v4()),
            json!({})
        )
        .await
        .status,
        404
    );
    for id in [&canary, &prod] {
        wait_online(app, id).await;
    }

    // A canary that cannot take the update stops the rollout before production.
    upstream.move_tag(3);
    assert_eq!(
        app.post("/admin/plugin-updates/check", json!({}))
            .await
            .expect(200)["queued"],
        2
    );
    app.post(&format!("/workspaces/{canary}/pause"), json!({}))
        .await
        .expect(200);
    let stopped = app
        .post("/admin/plugin-updates/apply-all", json!({}))
        .await
        .expect(200);
    assert_eq!(stopped["stopped"], true, "{stopped}");
    assert_eq!(stopped["failed"]["workspace_id"], canary.as_str());
    assert_eq!(stopped["failed"]["update_tier"], "canary");
    assert_eq!(stopped["applied"], json!([]));
    let left = app.get("/admin/plugin-updates-pending").await.expect(200);
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    let listed = app
        .get(&format!("/workspaces/{prod}/plugins"))
        .await
        .expect(200);
    assert_eq!(
        listed[0]["installed_sha"],
        v2.as_str(),
        "production untouched"
    );

    // Dismissing is final: applying a dismissed update is a conflict.
    let prod_row = left
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workspace_id"] == prod.as_str())
        .unwrap();
    let prod_queue = prod_row["id"].as_str().unwrap();
    let dismissed = app
        .post(
            &format!("/admin/plugin-updates/{prod_queue}/dismiss"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(dismissed["status"], "dismissed");
    assert_eq!(
        app.post(
            &format!("/admin/plugin-updates/{prod_queue}/apply"),
            json!({})
        )
        .await
        .status,
        409
    );
}

/// Swap directories an interrupted install left behind are removed once stale; fresh ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_swap_directories_are_swept() {
    let s = online_workspace(Runtime::Process, DbBackend::Sqlite, |c| {
        c.plugins.swap_sweep_secs = 1;
        c.plugins.swap_dir_max_age_secs = 600;
    })
    .await;
    let (app, id) = (&s.app, s.id.as_str());
    let fresh = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let stale = "plugins/.staging/helper.20200101T000000.000000Z/plugin.yaml";
    let previous = "plugins/.previous/my.plugin.20200101T000000.000000Z/plugin.yaml";
    let kept = format!("plugins/.staging/helper.{fresh}/plugin.yaml");
    for path in [stale, previous, kept.as_str()] {
        app.put(
            &format!("/workspaces/{id}/files/{path}"),
            json!({ "content": "name: helper\n" }),
        )
        .await
        .expect(200);
    }
    eventually(ONLINE, || async {
        (file(app, id, stale).await.is_none() && file(app, id, previous).await.is_none())
            .then_some(())
    })
    .await;
    assert!(file(app, id, &kept).await.is_some());
}

/// A fetch that fails says why in the answer's `detail`: git's one-line reason and the URL the
/// resolver asked for, never a path of the host (a rewrite to local files). (That no credential
/// reaches it is the resolver unit specs' part: `registry_specs` in the host.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_git_fetch_says_why_without_the_hosts_paths() {
    // Arrange: github.com/acme/ is served from local bare repositories, github.com/offline/
    // from a host that never resolves (RFC 6761's `.invalid`).
    let repos = tempfile::tempdir().unwrap();
    upstream_repo(
        repos.path(),
        "acme/gitplug",
        &[("plugin.yaml", "name: gitplug\n")],
    );
    let root = repos.path().to_path_buf();
    let local = root.display().to_string();
    let s = online_workspace(Runtime::Process, DbBackend::Sqlite, move |c| {
        serve_github_from(c, &root);
        c.git_env.insert("GIT_CONFIG_COUNT".into(), "2".into());
        c.git_env.insert(
            "GIT_CONFIG_KEY_1".into(),
            "url.https://unreachable.invalid/offline/.insteadOf".into(),
        );
        c.git_env.insert(
            "GIT_CONFIG_VALUE_1".into(),
            "https://github.com/offline/".into(),
        );
    })
    .await;
    let (app, id) = (&s.app, s.id.as_str());
    let install = |source: &'static str| async move {
        app.post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": source }),
        )
        .await
    };

    // Act / Assert: an unreachable host.
    let offline = install("github://offline/tools#v1").await.expect(502);
    assert_eq!(offline["error"], "fetching the plugin failed");
    assert_eq!(
        offline["detail"],
        "listing the refs of https://github.com/offline/tools.git failed: \
         Could not resolve host: unreachable.invalid"
    );

    // A repository that is not there: git named the rewritten local path.
    let missing = install("github://acme/nope#v1").await.expect(404);
    assert_eq!(missing["error"], "plugin source not found");
    let detail = missing["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("listing the refs of https://github.com/acme/nope.git failed: ")
            && detail.contains("[local path]")
            && !detail.contains(&local)
            && !detail.contains("file://"),
        "{missing}"
    );

    // The resolver's own refusal is passed on too.
    let unpinned = install("github://acme/gitplug").await.expect(422);
    assert_eq!(unpinned["error"], "plugin source refused");
    assert!(
        unpinned["detail"]
            .as_str()
            .unwrap()
            .contains("pinned ref is required"),
        "{unpinned}"
    );
}

async fn the_drift_sweep_says_when_it_ran_and_when_it_runs_next(backend: DbBackend) {
    // Arrange: the sweeper passes once at start, then hourly.
    let app = TestApp::spawn_with(backend, |c| c.plugins.drift_interval_secs = 3600).await;
    app.anonymous()
        .get("/admin/plugin-updates/sweep")
        .await
        .expect(401);
    let agent = app.create_workspace("Agent", None).await;
    let agent_token = app.agent_token(&agent).await;
    app.with_token(&agent_token)
        .get("/admin/plugin-updates/sweep")
        .await
        .expect(401);

    // Act: wait for the first scheduled pass.
    let scheduled = eventually(ONLINE, || async {
        let times = app.get("/admin/plugin-updates/sweep").await.expect(200);
        (!times["last_run_at"].is_null()).then_some(times)
    })
    .await;

    // Assert
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(scheduled["interval_secs"], 3600);
    assert_eq!(scheduled["last_trigger"], "scheduled");
    assert_eq!(scheduled["last_checked"], 0);
    assert_eq!(scheduled["last_queued"], 0);
    let next = at(&scheduled["next_run_at"]);
    assert_eq!(
        (next - at(&scheduled["last_run_at"])).num_seconds(),
        3600,
        "{scheduled}"
    );

    // A manual check is the last run; the sweeper's next pass does not move.
    app.post("/admin/plugin-updates/check", json!({}))
        .await
        .expect(200);
    let manual = app.get("/admin/plugin-updates/sweep").await.expect(200);
    assert_eq!(manual["last_trigger"], "manual");
    assert!(at(&manual["last_run_at"]) >= at(&scheduled["last_run_at"]));
    assert_eq!(at(&manual["next_run_at"]), next);
    let events = app.get("/events").await.expect(200);
    assert_eq!(events[0]["event_type"], "PLUGIN_DRIFT_SWEPT");
    assert_eq!(events[0]["payload"]["trigger"], "manual");
}
