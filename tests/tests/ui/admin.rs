//! The console's admin pages, one browser and one host per test: the extensions page's shadow
//! report read as text (and stopping the shadow, and no Delete on built-in versions), the
//! import page's outcome when a workspace fails, and plugins from the workspace page (a failed
//! source's reason, `track`) followed onto the drift page (tiers, sweep times, Apply all).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use molecule_e2e::{
    ADMIN_TOKEN, DbBackend, TestApp, agent_binary, builtin_extensions_dir, eventually,
    process_runtime, write_file,
};
use serde_json::{Value, json};

use crate::browser::{Browser, report_time};

const ONLINE: Duration = Duration::from_secs(90);

/// A local plugin registry holding `helper` (one skill).
fn registry_with_helper(registry: &Path) {
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
}

/// Installs `source` into `id` through the API and waits until any restart it caused is over.
async fn install_settled(app: &TestApp, id: &str, source: &str) -> Value {
    app.wait_settled(id, ONLINE).await;
    let before = app.restart_count(id).await;
    let installed = app
        .post(
            &format!("/workspaces/{id}/plugins"),
            json!({ "source": source }),
        )
        .await
        .expect(200);
    if installed["restarting"] == true {
        eventually(ONLINE, || async {
            (app.restart_count(id).await > before).then_some(())
        })
        .await;
    }
    app.wait_settled(id, ONLINE).await;
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_report_reads_as_a_summary_and_shadowing_can_be_stopped() {
    let started = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    registry_with_helper(registry.path());
    let dir = registry.path().to_path_buf();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        process_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.plugins_registry_dir = Some(dir);
    })
    .await;
    let id = app.create_workspace("Plugged", None).await;
    let browser = Browser::start(&app.base, "admin-shadow").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.click("#nav a[data-page=extensions]").await;
    browser
        .until_text(
            "section[data-slot=classifier] .active-version",
            "skill-classifier",
        )
        .await;

    // Built-in versions offer no Delete, and a slot with no history offers no Roll back.
    let builtins = browser
        .js(
            "const rows = [...document.querySelectorAll('#slots tr[data-builtin=true]')]; \
             return { rows: rows.length, deletes: rows.filter(r => r.querySelector('button.danger')).length, \
               rollback: document.querySelector('section[data-slot=classifier] button.rollback').disabled };",
        )
        .await;
    assert_eq!(builtins["rows"], 5, "{builtins}");
    assert_eq!(
        builtins["deletes"], 0,
        "no Delete on a built-in: {builtins}"
    );
    assert_eq!(builtins["rollback"], true, "nothing to roll back to yet");
    browser.screenshot("1-built-ins").await;

    // Upload the answer classifier (always cold "v2") and shadow it.
    let wasm = builtin_extensions_dir().join("answer_classifier.wasm");
    let wasm = wasm
        .canonicalize()
        .unwrap_or_else(|e| panic!("{} ({e}): run `make plugins`", wasm.display()));
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
        .until(
            "a Delete button on the uploaded version",
            "return document.querySelector('section[data-slot=classifier] tr[data-name=strict] button.danger') !== null",
        )
        .await;
    browser
        .click("section[data-slot=classifier] tr[data-name=strict] button.secondary")
        .await;
    browser
        .until_text("#ext-note", "now shadows classifier")
        .await;
    browser
        .until_text("section[data-slot=classifier] .report", "No calls yet")
        .await;
    browser.screenshot("2-shadowing").await;

    // Classifications: install the plugin, then change only its SKILL.md and install again;
    // the active classifier says hot, the candidate cold. Nobody clicks Refresh: the report
    // follows by itself.
    install_settled(&app, &id, "helper").await;
    write_file(
        registry.path(),
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hello warmly.\n",
    );
    let again = install_settled(&app, &id, "helper").await;
    assert_eq!(again["reload"], "hot", "the active classifier decides");
    let api_report = app
        .get("/admin/extensions/classifier/shadow-report")
        .await
        .expect(200);
    let calls = api_report["calls"].as_i64().unwrap();
    assert!(
        api_report["disagree"].as_i64().unwrap() >= 1,
        "{api_report}"
    );
    let summary = format!(
        "{calls} call{}: {} agree, {} disagree, 0 candidate failed",
        if calls == 1 { "" } else { "s" },
        api_report["agree"],
        api_report["disagree"]
    );
    browser
        .until_text("section[data-slot=classifier] .report-counts", &summary)
        .await;

    // The newest disagreement, as text: the changed path and each side's answer.
    let newest = browser
        .until(
            "the newest disagreement as text",
            "const row = document.querySelector('section[data-slot=classifier] table.disagreements tbody tr'); \
             if (!row) return null; \
             return { outcome: row.dataset.outcome, \
               paths: [...row.querySelectorAll('.paths li')].map(li => li.textContent), \
               active: row.querySelector('.answer-active').textContent, \
               candidate: row.querySelector('.answer-candidate').textContent, \
               headers: [...row.closest('table').querySelectorAll('th')].map(th => th.textContent) };",
        )
        .await;
    assert_eq!(newest["outcome"], "disagree", "{newest}");
    assert_eq!(
        newest["paths"],
        json!(["modified skills/greet/SKILL.md"]),
        "{newest}"
    );
    assert_eq!(newest["active"], "hot reload", "{newest}");
    assert_eq!(newest["candidate"], "cold: v2", "{newest}");
    let headers = newest["headers"].to_string();
    assert!(
        headers.contains("Active: skill-classifier") && headers.contains("Candidate: strict 2.0.0"),
        "{headers}"
    );
    let raw_hidden = browser
        .js("return document.querySelector('section[data-slot=classifier] pre.raw-json').hidden")
        .await;
    assert_eq!(
        raw_hidden,
        json!(true),
        "the raw JSON waits behind its toggle"
    );
    browser.screenshot("3-shadow-report").await;

    // The raw JSON behind the toggle is the API's report.
    browser
        .click("section[data-slot=classifier] button.raw-toggle")
        .await;
    let raw = browser
        .until(
            "the raw JSON shown",
            "const pre = document.querySelector('section[data-slot=classifier] pre.raw-json'); \
             return pre && !pre.hidden ? pre.textContent : null;",
        )
        .await;
    let shown: Value = serde_json::from_str(raw.as_str().unwrap()).unwrap();
    assert_eq!(shown["calls"], api_report["calls"]);
    assert_eq!(shown["disagree"], api_report["disagree"]);
    assert_eq!(shown["candidate_id"], api_report["candidate_id"]);
    browser.screenshot("4-raw-json").await;

    // Stop shadowing: the slot keeps its active version, the report goes away.
    browser
        .click("section[data-slot=classifier] button.stop-shadow")
        .await;
    browser
        .until_text("#ext-note", "strict 2.0.0 no longer shadows classifier")
        .await;
    browser
        .until(
            "no shadow on the classifier slot",
            "return document.querySelector('section[data-slot=classifier] .shadow') === null \
               && document.querySelector('section[data-slot=classifier] tr[data-name=strict] button.secondary') !== null",
        )
        .await;
    app.get("/admin/extensions/classifier/shadow-report")
        .await
        .expect(404);
    let listed = app.get("/admin/extensions").await.expect(200);
    let classifier = listed["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == "classifier")
        .unwrap();
    assert_eq!(classifier["shadow_id"], Value::Null);
    browser.screenshot("5-shadow-stopped").await;

    // Activating the candidate gives the slot a history: Roll back is offered, naming where to.
    browser
        .click("section[data-slot=classifier] tr[data-name=strict] button:not(.secondary):not(.danger)")
        .await;
    browser
        .until_text(
            "section[data-slot=classifier] .active-version",
            "strict 2.0.0",
        )
        .await;
    browser
        .until(
            "Roll back enabled",
            "const b = document.querySelector('section[data-slot=classifier] button.rollback'); \
             return b && !b.disabled && b.title.includes('skill-classifier');",
        )
        .await;
    browser.screenshot("6-rollback-offered").await;
    browser.close().await;
    report_time(started, "admin-shadow");
}

/// An agent binary that fails at start in a workspace whose files hold `DOOMED` (the way an
/// agent with a broken configuration does) and is the real agent everywhere else. The
/// directory is readable by the agents' own users and granted to their sandbox.
fn doomable_agent() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = tempfile::tempdir().unwrap();
    let real = bin.path().join("molecule-agent");
    std::fs::copy(agent_binary(), &real).expect("copying the agent binary");
    let wrapper = bin.path().join("agent");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e DOOMED ]; then\n  echo 'config.yaml: no model configured' >&2\n  exit 3\nfi\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    for (path, mode) in [(bin.path(), 0o755), (&real, 0o755), (&wrapper, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    bin
}

/// A three-workspace org whose `Doomed` workspace carries the `DOOMED` marker.
fn template_with_a_doomed_workspace(root: &Path) -> PathBuf {
    let templates = root.join("templates");
    write_file(
        &templates,
        "flaky/org.yaml",
        "name: Flaky Co\n\
         description: Two agents that start and one that cannot.\n\
         workspaces:\n\
         \x20 - name: Lead\n\
         \x20   role: Leads.\n\
         \x20   children:\n\
         \x20     - name: Worker\n\
         \x20       role: Works.\n\
         \x20     - name: Doomed\n\
         \x20       role: Never starts.\n\
         \x20       files_dir: doomed\n",
    );
    write_file(
        &templates,
        "flaky/doomed/DOOMED",
        "this agent fails at start\n",
    );
    write_file(
        &templates,
        "flaky/doomed/system-prompt.md",
        "You never start.\n",
    );
    templates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_page_shows_a_failed_workspace_as_a_failure_with_its_reason() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let templates = template_with_a_doomed_workspace(work.path());
    let bin = doomable_agent();
    let agent = bin.path().join("agent");
    let readable = bin.path().to_str().unwrap().to_owned();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        process_runtime(c);
        c.runtime.agent_binary = Some(agent);
        c.runtime.process_readonly_paths = vec![readable];
        c.org.templates_dir = templates;
    })
    .await;
    let browser = Browser::start(&app.base, "admin-import").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.click("#nav a[data-page=import]").await;
    browser
        .click("#template-list label[data-dir=flaky] input")
        .await;
    browser.click("#import-submit").await;
    browser
        .until_text("#import-note", "Imported Flaky Co")
        .await;

    // Every workspace settles; the outcome is a failure, in the failure colour, and names the
    // workspace that failed with the host's reason.
    let outcome = browser
        .until(
            "the import settled with its failure explained",
            "const p = document.querySelector('#import-progress'); \
             const li = [...document.querySelectorAll('#import-failures li')]; \
             if (p.dataset.done !== 'true' || !li.length || !li[0].textContent.includes('exited')) return null; \
             return { text: p.textContent, outcome: p.dataset.outcome, colour: getComputedStyle(p).color, \
               failures: li.map(x => x.textContent), shown: !document.querySelector('#import-failures').hidden, \
               cell: document.querySelector('#import-table tr .reason') ? document.querySelector('#import-table tr .reason').textContent : null };",
        )
        .await;
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert_eq!(
        outcome["text"], "Done with failures: 2 online, 1 failed of 3.",
        "{outcome}"
    );
    assert_eq!(
        outcome["colour"], "rgb(185, 28, 28)",
        "the failure colour, not green: {outcome}"
    );
    assert_eq!(outcome["shown"], true);
    let failures = outcome["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{outcome}");
    let failure = failures[0].as_str().unwrap();
    assert!(
        failure.starts_with("Doomed: ")
            && failure.contains("the agent exited with code 3")
            && failure.contains("no model configured"),
        "{failure}"
    );
    assert!(
        outcome["cell"]
            .as_str()
            .unwrap_or_default()
            .contains("no model configured"),
        "the row says why too: {outcome}"
    );
    let doomed = app
        .workspaces()
        .await
        .iter()
        .find(|w| w["name"] == "Doomed")
        .cloned()
        .unwrap();
    assert_eq!(doomed["status"], "failed");
    assert!(failure.ends_with(doomed["last_sample_error"].as_str().unwrap()));
    browser.screenshot("1-import-with-a-failure").await;
    browser.close().await;
    report_time(started, "admin-import");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_from_the_console_say_why_a_source_failed_and_tracked_ones_show_on_the_drift_page()
{
    let started = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    registry_with_helper(registry.path());
    let dir = registry.path().to_path_buf();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        process_runtime(c);
        c.builtin_extensions_dir = Some(builtin_extensions_dir());
        c.plugins_registry_dir = Some(dir);
        c.plugins.drift_interval_secs = 3600;
        // github.com is served by a host that never resolves (RFC 6761's `.invalid`).
        c.git_env = [
            ("GIT_CONFIG_COUNT", "1"),
            (
                "GIT_CONFIG_KEY_0",
                "url.https://unreachable.invalid/.insteadOf",
            ),
            ("GIT_CONFIG_VALUE_0", "https://github.com/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    })
    .await;
    let canary = app.create_workspace("Canary", None).await;
    app.patch(
        &format!("/workspaces/{canary}"),
        json!({ "update_tier": "canary" }),
    )
    .await
    .expect(200);
    app.create_workspace("Steady", None).await;
    let browser = Browser::start(&app.base, "admin-plugins").await;
    browser.sign_in(ADMIN_TOKEN).await;
    app.wait_settled(&canary, ONLINE).await;

    // An unreachable source: the host's reason, once.
    browser.open(&format!("#/workspaces/{canary}")).await;
    browser.until_text("#ws-name", "Canary").await;
    browser
        .type_into("#plugin-source", "github://acme/tools#v1")
        .await;
    browser.click("#plugin-install").await;
    let said = browser
        .until(
            "the install's error",
            "const n = document.querySelector('#plugins-note'); \
             return n && n.classList.contains('error') ? n.textContent : null;",
        )
        .await;
    let said = said.as_str().unwrap();
    assert_eq!(
        said,
        "fetching the plugin failed: listing the refs of https://github.com/acme/tools.git failed: \
         Could not resolve host: unreachable.invalid"
    );
    assert_eq!(said.matches("Could not resolve host").count(), 1);
    assert_eq!(said.matches("fetching the plugin failed").count(), 1);
    browser.screenshot("1-unreachable-source").await;

    // A local plugin installed with `track`: the error note gives way to the result.
    browser.type_into("#plugin-source", "local://helper").await;
    browser
        .js(
            "const k = document.querySelector('#plugin-track-kind'); k.value = 'tag'; \
             k.dispatchEvent(new Event('change')); return true;",
        )
        .await;
    browser.type_into("#plugin-track-ref", "stable").await;
    browser.click("#plugin-install").await;
    browser
        .until(
            "the install's result replacing the error",
            "const n = document.querySelector('#plugins-note'); \
             return n.classList.contains('ok') && n.textContent.includes('installed helper');",
        )
        .await;
    browser
        .until_text("#plugin-list tr[data-plugin='helper']", "tag:stable")
        .await;
    let plugins = app
        .get(&format!("/workspaces/{canary}/plugins"))
        .await
        .expect(200);
    assert_eq!(plugins[0]["tracked_ref"], "tag:stable", "{plugins}");
    browser.screenshot("2-tracked-install").await;
    app.wait_settled(&canary, ONLINE).await;

    // The drift page: when the sweeper ran (at start) and runs next, each workspace's tier,
    // and nothing to apply.
    browser.click("#nav a[data-page=drift]").await;
    let sweep = browser
        .until(
            "the sweep times",
            "const s = document.querySelector('#drift-sweep'); \
             return s && s.dataset.last && s.dataset.next ? { last: s.dataset.last, next: s.dataset.next, text: s.textContent } : null;",
        )
        .await;
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        (at(&sweep["next"]) - at(&sweep["last"])).num_seconds(),
        3600
    );
    let text = sweep["text"].as_str().unwrap();
    assert!(
        text.contains("Last checked") && text.contains("the sweeper") && text.contains("every 1 h"),
        "{text}"
    );
    let tiers = browser
        .until(
            "the update tiers",
            "const t = [...document.querySelectorAll('#drift-tiers a[data-tier]')]; \
             return t.length === 2 ? Object.fromEntries(t.map(a => [a.textContent, a.dataset.tier])) : null;",
        )
        .await;
    assert_eq!(tiers, json!({ "Canary": "canary", "Steady": "production" }));
    browser
        .until(
            "the empty queue",
            "return document.querySelector('#drift-empty') !== null",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#drift-apply-all').disabled")
            .await,
        json!(true),
        "Apply all on an empty queue is not offered"
    );
    browser.screenshot("3-drift-empty").await;

    // The plugin's upstream moves; Check now queues it, shown with its workspace's tier, and
    // Apply all is offered.
    write_file(
        registry.path(),
        "helper/skills/greet/SKILL.md",
        "# Greet\nSay hello.\n",
    );
    browser.click("#drift-check").await;
    browser
        .until_text("#drift-note", "Drift check done: 1 update queued")
        .await;
    let row = browser
        .until(
            "the queued update with its tier",
            "const r = document.querySelector('#drift-table tbody tr'); \
             return r ? { text: r.textContent, tier: r.querySelector('.tier').textContent } : null;",
        )
        .await;
    assert_eq!(row["tier"], "canary", "{row}");
    assert!(row["text"].as_str().unwrap().contains("helper"), "{row}");
    browser
        .until(
            "Apply all offered",
            "return !document.querySelector('#drift-apply-all').disabled",
        )
        .await;
    browser
        .until_text(
            "#drift-sweep",
            "Check now: 1 tracked plugin checked, 1 queued",
        )
        .await;
    browser.screenshot("4-drift-queued").await;

    // Dismissing the only update empties the queue again.
    browser
        .click("#drift-table tbody tr button.secondary")
        .await;
    browser.until_text("#drift-note", "Update dismissed").await;
    browser
        .until(
            "the empty queue and no Apply all",
            "return document.querySelector('#drift-empty') !== null \
               && document.querySelector('#drift-apply-all').disabled",
        )
        .await;
    browser.screenshot("5-drift-dismissed").await;
    browser.close().await;
    report_time(started, "admin-plugins");
}
