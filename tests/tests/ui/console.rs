//! The console's scenarios, one browser and one host per test.

use std::time::{Duration, Instant};

use molecule_e2e::{
    ADMIN_TOKEN, DbBackend, TestApp, builtin_extensions_dir, eventually, process_runtime,
    write_file,
};
use serde_json::json;

use crate::browser::{Browser, report_time};

const ONLINE: Duration = Duration::from_secs(90);

fn org_templates() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../org-templates")
}

/// A host with agents as local processes, the default extensions, the repository's org
/// templates and a local plugin registry holding `helper`.
async fn host(registry: &std::path::Path) -> TestApp {
    let dir = registry.to_path_buf();
    write_file(
        registry,
        "helper/plugin.yaml",
        "name: helper\nversion: 1.0.0\nskills: [greet]\n",
    );
    write_file(
        registry,
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hi.\n",
    );
    TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        process_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.plugins_registry_dir = Some(dir);
        c.org.templates_dir = org_templates();
    })
    .await
}

/// Waits until the agent is online with no restart running, due or still scheduled.
async fn wait_online(app: &TestApp, id: &str) {
    app.wait_settled(id, ONLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_to_work_without_a_token_and_signs_in_with_one() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    app.create_workspace("Solo", None).await;
    let browser = Browser::start(&app.base, "signin").await;

    // Without a token the org page sends the user to sign-in before calling the host: no
    // refusal to show (tests/ui/graph.rs checks the first visit in detail).
    browser.open("#/").await;
    browser
        .until(
            "the sign-in page",
            "return location.hash === '#/signin' && document.querySelector('#signin-form') !== null",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#flash').hidden")
            .await,
        json!(true)
    );
    let leaked = browser
        .js("return document.querySelector('#tree') !== null || document.body.innerText.includes('Solo')")
        .await;
    assert_eq!(leaked, json!(false), "nothing is shown without a token");
    browser.screenshot("1-refused").await;

    // A wrong token is refused with the host's message and not kept.
    browser.type_into("#token", "not-the-admin-token").await;
    browser.click("#signin-submit").await;
    let refused = browser
        .until(
            "the refusal",
            "const n = document.querySelector('#signin-note'); \
             return n && n.classList.contains('error') && !n.hidden ? n.textContent : null;",
        )
        .await;
    assert!(!refused.as_str().unwrap().is_empty());
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('molecule.console.token')")
            .await,
        json!(null)
    );
    browser.screenshot("2-wrong-token").await;

    // The admin token opens the org page, and the event stream (same origin, ?token=) is live.
    browser.sign_in(ADMIN_TOKEN).await;
    browser.until_text("#tree", "Solo").await;
    browser
        .until(
            "the live event stream",
            "return document.querySelector('#live').dataset.state === 'open'",
        )
        .await;
    browser.screenshot("3-signed-in").await;

    // Signing out forgets the token; a reload stays signed out.
    browser.click("#signout").await;
    browser
        .until("the sign-in page", "return location.hash === '#/signin'")
        .await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('molecule.console.token')")
            .await,
        json!(null)
    );
    browser.open("#/extensions").await;
    browser.client.refresh().await.expect("reloading");
    browser
        .until(
            "sign-in after a reload",
            "return location.hash === '#/signin' && document.querySelector('#slots .slot') === null",
        )
        .await;
    browser.close().await;
    report_time(started, "signin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_imports_the_demo_org_and_works_on_a_workspace() {
    let started = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    let app = host(registry.path()).await;
    let browser = Browser::start(&app.base, "org").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser
        .until(
            "the empty org",
            "return document.querySelector('#tree-empty') !== null",
        )
        .await;
    // Navigation from here on is by hash; a full reload would lose this marker.
    browser
        .js("window.__sameDocument = 'kept'; return true;")
        .await;

    // Import the demo org and watch every workspace come online on the import page.
    browser.click("#nav a[data-page=import]").await;
    browser
        .click("#template-list label[data-dir=demo] input")
        .await;
    browser
        .js("const s = document.querySelector('#import-mode'); s.value = 'merge'; return true;")
        .await;
    browser.screenshot("1-import").await;
    browser.click("#import-submit").await;
    browser.until_text("#import-note", "Imported Demo Co").await;
    let rows = browser
        .js("return document.querySelectorAll('#import-table tbody tr').length")
        .await;
    assert_eq!(rows, json!(5), "the demo org has five workspaces");
    browser
        .until(
            "every imported workspace online",
            "const p = document.querySelector('#import-progress'); \
             return p.dataset.done === 'true' && p.textContent.includes('5 online')",
        )
        .await;
    browser.screenshot("2-import-done").await;
    let listed = app.get("/workspaces").await.expect(200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["status"] == "online")
    );

    // The tree shows them all; pausing and resuming the CEO's subtree (outside the browser)
    // shows in the badges through /ws without a reload.
    browser.click("#nav a[data-page=tree]").await;
    browser
        .until(
            "five online nodes",
            "const b = [...document.querySelectorAll('#tree .badge')]; \
             return b.length === 5 && b.every(x => x.dataset.status === 'online')",
        )
        .await;
    browser.screenshot("3-tree-online").await;
    let ceo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "CEO" && w["parent_id"].is_null())
        .expect("the CEO at the root")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paused = app
        .post(&format!("/workspaces/{ceo}/pause"), json!({}))
        .await
        .expect(200);
    assert_eq!(paused["paused_count"], 5);
    browser
        .until(
            "five paused nodes",
            "const b = [...document.querySelectorAll('#tree .badge')]; \
             return b.length === 5 && b.every(x => x.dataset.status === 'paused')",
        )
        .await;
    browser.screenshot("4-tree-paused").await;
    app.post(&format!("/workspaces/{ceo}/resume"), json!({}))
        .await
        .expect(200);
    browser
        .until(
            "every node online again",
            "const b = [...document.querySelectorAll('#tree .badge')]; \
             return b.length === 5 && b.every(x => x.dataset.status === 'online')",
        )
        .await;
    assert_eq!(
        browser.js("return window.__sameDocument").await,
        json!("kept"),
        "the tree followed /ws without a reload"
    );

    // The CEO's page: status, and its system prompt edited in the browser.
    browser
        .click(&format!("#tree [data-id='{ceo}'] a.name"))
        .await;
    browser.until_text("#ws-name", "CEO").await;
    browser
        .until(
            "the CEO online",
            "return document.querySelector('#ws-status').dataset.status === 'online'",
        )
        .await;
    browser
        .click("#file-list button[data-path='system-prompt.md']")
        .await;
    browser
        .until(
            "the prompt in the editor",
            "return document.querySelector('#file-editor').value.length > 0",
        )
        .await;
    let edited = "You run Demo Co. Edited in the console.";
    browser.type_into("#file-editor", edited).await;
    browser.click("#file-save").await;
    let saved = browser
        .until_text("#files-note", "Saved system-prompt.md")
        .await;
    assert!(saved.contains("Saved system-prompt.md — "), "{saved}");
    let kind = browser
        .js("return document.querySelector('#files-note').dataset.restart")
        .await;
    assert!(
        !kind.as_str().unwrap_or_default().is_empty(),
        "the policy's decision is shown: {saved}"
    );
    let stored = app
        .get(&format!("/workspaces/{ceo}/files/system-prompt.md"))
        .await
        .expect(200);
    assert_eq!(stored["content"], edited);
    browser.screenshot("5-file-saved").await;

    // A secret is set by key and value; the value is never shown.
    let value = "s3cret-value-never-shown";
    browser.type_into("#secret-key", "API_KEY").await;
    browser.type_into("#secret-value", value).await;
    browser.click("#secret-form button[type=submit]").await;
    browser
        .until(
            "the secret's key listed",
            "return document.querySelector(\"#secret-list tr[data-key='API_KEY']\") !== null",
        )
        .await;
    let shown = browser
        .js(&format!(
            "return document.documentElement.outerHTML.includes({v}) || document.querySelector('#secret-value').value.includes({v})",
            v = json!(value)
        ))
        .await;
    assert_eq!(shown, json!(false), "a secret value reached the page");

    // A plugin from the local registry is installed, listed, then uninstalled.
    wait_online(&app, &ceo).await;
    browser.type_into("#plugin-source", "local://helper").await;
    browser.click("#plugin-install").await;
    browser
        .until_text("#plugins-note", "installed helper")
        .await;
    browser
        .until(
            "helper listed",
            "return document.querySelector(\"#plugin-list tr[data-plugin='helper']\") !== null",
        )
        .await;
    let plugins = app
        .get(&format!("/workspaces/{ceo}/plugins"))
        .await
        .expect(200);
    assert_eq!(plugins[0]["name"], "helper");
    // An agent reports activity (as its agent would); the page lists it live from /ws.
    app.post(
        &format!("/workspaces/{ceo}/activity"),
        json!({"activity_type": "agent_log", "summary": "reviewed the roadmap"}),
    )
    .await
    .expect(200);
    browser
        .until_text("#activity-list table", "reviewed the roadmap")
        .await;
    browser.screenshot("6-workspace").await;
    wait_online(&app, &ceo).await;
    browser
        .click("#plugin-list tr[data-plugin='helper'] button")
        .await;
    browser
        .until_text("#plugins-note", "Uninstalled helper")
        .await;
    browser
        .until(
            "no plugins",
            "return document.querySelector('#plugins-empty') !== null",
        )
        .await;
    let plugins = app
        .get(&format!("/workspaces/{ceo}/plugins"))
        .await
        .expect(200);
    assert_eq!(plugins, json!([]));
    browser.screenshot("7-plugin-uninstalled").await;
    browser.close().await;
    report_time(started, "org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_shadows_a_classifier_reads_the_report_then_activates_and_rolls_back() {
    let started = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    let app = host(registry.path()).await;
    let id = app.create_workspace("Plugged", None).await;
    let browser = Browser::start(&app.base, "extensions").await;
    browser.sign_in(ADMIN_TOKEN).await;

    browser.click("#nav a[data-page=extensions]").await;
    browser
        .until_text(
            "section[data-slot=classifier] .active-version",
            "skill-classifier",
        )
        .await;
    browser.screenshot("1-extensions").await;

    // Upload the answer classifier (always cold "v2") as a new classifier version.
    // chromedriver wants a canonical path for a file input.
    let wasm = builtin_extensions_dir().join("answer_classifier.wasm");
    let wasm = wasm
        .canonicalize()
        .unwrap_or_else(|e| panic!("{} ({e}): run `make plugins`", wasm.display()));
    assert!(
        wasm.is_file(),
        "{} is missing: run `make plugins`",
        wasm.display()
    );
    browser.type_into("#ext-file", wasm.to_str().unwrap()).await;
    browser.type_into("#ext-name", "strict").await;
    browser.type_into("#ext-version", "2.0.0").await;
    browser
        .js("document.querySelector('#ext-slot').value = 'classifier'; return true;")
        .await;
    browser.click("#ext-upload").await;
    browser
        .until_text("#ext-upload-note", "Uploaded strict 2.0.0")
        .await;
    browser
        .click("section[data-slot=classifier] tr[data-name=strict] button.secondary")
        .await;
    browser
        .until_text("#ext-note", "now shadows classifier")
        .await;
    browser
        .until(
            "an empty shadow report",
            "const c = document.querySelector('section[data-slot=classifier] .report-counts'); \
             return c && c.dataset.calls === '0'",
        )
        .await;

    // Classifications: install the plugin (every file added), then change only its SKILL.md
    // and install again; the active classifier says hot, the candidate says cold.
    wait_online(&app, &id).await;
    let installed = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({"source": "helper"}),
        )
        .await
        .expect(200);
    if installed["restarting"] == true {
        eventually(ONLINE, || async {
            (app.restart_count(&id).await > 0).then_some(())
        })
        .await;
    }
    wait_online(&app, &id).await;
    write_file(
        registry.path(),
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hello warmly.\n",
    );
    let again = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({"source": "helper"}),
        )
        .await
        .expect(200);
    assert_eq!(
        again["reload"], "hot",
        "the active classifier decides: {again}"
    );

    browser
        .click("section[data-slot=classifier] .shadow button")
        .await;
    let counts = browser
        .until(
            "a disagreement in the shadow report",
            "const c = document.querySelector('section[data-slot=classifier] .report-counts'); \
             const rows = document.querySelectorAll('section[data-slot=classifier] table.disagreements tr.outcome-disagree'); \
             if (!c || Number(c.dataset.disagree) < 1 || rows.length < 1) { \
               const b = document.querySelector('section[data-slot=classifier] .shadow button'); if (b) b.click(); return null; } \
             return { calls: Number(c.dataset.calls), disagree: Number(c.dataset.disagree), rows: rows.length };",
        )
        .await;
    let api_report = app
        .get("/admin/extensions/classifier/shadow-report")
        .await
        .expect(200);
    assert_eq!(counts["disagree"], api_report["disagree"], "{api_report}");
    assert_eq!(counts["calls"], api_report["calls"]);
    browser
        .until_text("section[data-slot=classifier] table.disagreements", "v2")
        .await;
    browser.screenshot("2-shadow-report").await;

    // Promote the candidate, then roll back to the built-in classifier.
    browser
        .click("section[data-slot=classifier] tr[data-name=strict] button:not(.secondary):not(.danger)")
        .await;
    browser
        .until_text(
            "section[data-slot=classifier] .active-version",
            "strict 2.0.0",
        )
        .await;
    browser.screenshot("3-activated").await;
    let listed = app.get("/admin/extensions").await.expect(200);
    assert!(
        listed["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "strict" && e["active"] == true)
    );
    browser
        .click("section[data-slot=classifier] .heading button")
        .await;
    browser
        .until_text(
            "section[data-slot=classifier] .active-version",
            "skill-classifier",
        )
        .await;
    browser.until_text("#ext-note", "rolled back").await;
    browser.screenshot("4-rolled-back").await;

    // The drift queue: empty, so Apply all is not offered.
    browser.click("#nav a[data-page=drift]").await;
    browser
        .until(
            "the empty queue without Apply all",
            "return document.querySelector('#drift-empty') !== null \
               && document.querySelector('#drift-apply-all').disabled",
        )
        .await;
    browser.click("#drift-check").await;
    browser.until_text("#drift-note", "Drift check done").await;
    browser.screenshot("5-drift").await;
    browser.close().await;
    report_time(started, "extensions");
}
