//! The workspace page: the file editor never writes one file's text under another path and
//! holds unsaved edits, a failed workspace says why, lifecycle buttons follow the state (a
//! subtree pause asks first), the operator chats with the agent and delegates to a peer, saves
//! say in words what they restart, and the activity log groups restart cycles.

use std::time::{Duration, Instant};

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp, process_runtime};
use serde_json::{Value, json};

use crate::browser::{Browser, report_time};

const ONLINE: Duration = Duration::from_secs(90);

/// A host whose agents run as local processes (echo brains).
async fn host() -> TestApp {
    TestApp::spawn_with(DbBackend::Sqlite, process_runtime).await
}

/// A JavaScript string literal.
fn js(value: &str) -> String {
    json!(value).to_string()
}

/// Waits for the in-console confirmation and returns its message.
async fn confirmation(browser: &Browser) -> String {
    let message = browser
        .until(
            "a confirmation",
            "const d = document.querySelector('#confirm-dialog'); \
             return d && d.open ? document.querySelector('#confirm-message').textContent : null;",
        )
        .await;
    message.as_str().unwrap_or_default().to_owned()
}

async fn stored(app: &TestApp, id: &str, path: &str) -> (u16, Value) {
    let reply = app.get(&format!("/workspaces/{id}/files/{path}")).await;
    (reply.status.as_u16(), reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_editor_never_saves_one_files_text_under_another_path_and_holds_unsaved_edits() {
    let started = Instant::now();
    let app = host().await;
    let id = app.create_workspace("Writer", None).await;
    app.wait_settled(&id, ONLINE).await;
    let first = "The text of notes.md.";
    app.put(
        &format!("/workspaces/{id}/files/notes.md"),
        json!({ "content": first }),
    )
    .await
    .expect(200);
    app.wait_settled(&id, ONLINE).await;
    let browser = Browser::start(&app.base, "ws-editor").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{id}")).await;

    // A file opens.
    browser
        .click("#file-list button[data-path='notes.md']")
        .await;
    browser
        .until(
            "notes.md in the editor",
            &format!(
                "return document.querySelector('#file-editor').value === {}",
                js(first)
            ),
        )
        .await;
    browser.screenshot("1-file-open").await;

    // A file whose read fails (it does not exist), then Save: notes.md's text must not be
    // written under the new path.
    browser.type_into("#file-path", "missing.md").await;
    browser.click("#file-open").await;
    browser
        .until(
            "the read of missing.md to end",
            "const n = document.querySelector('#files-note'); \
             return !document.querySelector('#file-open').hasAttribute('aria-busy') \
               && !n.hidden && !n.textContent.startsWith('Opening');",
        )
        .await;
    browser
        .js("document.querySelector('#file-save').click(); return true;")
        .await;
    browser
        .until(
            "any save to end",
            "return !document.querySelector('#file-save').hasAttribute('aria-busy') \
               && !document.querySelector('#files-note').textContent.startsWith('Saving');",
        )
        .await;
    let (status, body) = stored(&app, &id, "missing.md").await;
    assert_ne!(
        body["content"], first,
        "notes.md's text was saved under missing.md"
    );
    assert_eq!(status, 404, "nothing was written: {body}");

    // The missing file is open as a new, empty one: Save writes only what is typed.
    let state = browser
        .js("const s = document.querySelector('#file-state'); \
             return [s.dataset.state, s.dataset.path, document.querySelector('#file-editor').value];")
        .await;
    assert_eq!(state, json!(["new", "missing.md", ""]));
    browser.screenshot("2-missing-file-opens-empty").await;
    browser
        .type_into("#file-editor", "Written on purpose.")
        .await;
    browser.click("#file-save").await;
    browser.until_text("#files-note", "Saved missing.md").await;
    assert_eq!(
        stored(&app, &id, "missing.md").await.1["content"],
        "Written on purpose."
    );
    assert_eq!(stored(&app, &id, "notes.md").await.1["content"], first);

    // A file that may not be read at all: nothing is open, nothing can be saved.
    browser.type_into("#file-path", ".auth_token").await;
    browser.click("#file-open").await;
    browser
        .until_text("#files-note", "Could not open .auth_token")
        .await;
    let closed = browser
        .js(
            "return [document.querySelector('#file-state').dataset.state, \
                     document.querySelector('#file-editor').value, \
                     document.querySelector('#file-editor').disabled, \
                     document.querySelector('#file-save').disabled];",
        )
        .await;
    assert_eq!(closed, json!(["none", "", true, true]));
    browser.screenshot("3-unreadable-file").await;

    // An edit is marked unsaved, on the editor and in the list.
    browser
        .click("#file-list button[data-path='notes.md']")
        .await;
    browser
        .until(
            "notes.md marked open and saved",
            "const s = document.querySelector('#file-state'); \
             const b = document.querySelector(\"#file-list button[data-path='notes.md']\"); \
             return s && s.dataset.state === 'clean' && s.dataset.path === 'notes.md' \
               && b.classList.contains('open') && document.querySelector('#file-save').disabled;",
        )
        .await;
    let edit = "An edit that is not saved yet.";
    browser.type_into("#file-editor", edit).await;
    browser
        .until(
            "the unsaved marker",
            "const s = document.querySelector('#file-state'); \
             return s.dataset.state === 'dirty' && s.textContent.includes('unsaved changes') \
               && document.querySelector(\"#file-list button[data-path='notes.md']\").classList.contains('unsaved') \
               && !document.querySelector('#file-save').disabled;",
        )
        .await;
    browser.screenshot("4-unsaved-changes").await;

    // Leaving the document (reload, close, another address) is held by the browser.
    let held = browser
        .js(
            "const e = new Event('beforeunload', { cancelable: true }); \
             window.dispatchEvent(e); return e.defaultPrevented;",
        )
        .await;
    assert_eq!(
        held,
        json!(true),
        "beforeunload is cancelled with unsaved edits"
    );

    // Opening another file asks first; keeping the edit keeps everything as it was.
    browser
        .click("#file-list button[data-path='missing.md']")
        .await;
    let asked = confirmation(&browser).await;
    assert!(asked.contains("notes.md has unsaved changes"), "{asked}");
    browser.screenshot("5-confirm-before-opening").await;
    browser.click("#confirm-cancel").await;
    let kept = browser
        .js(
            "return [document.querySelector('#confirm-dialog') === null, \
                     document.querySelector('#file-state').dataset.path, \
                     document.querySelector('#file-editor').value];",
        )
        .await;
    assert_eq!(kept, json!([true, "notes.md", edit]));

    // Leaving the page in the console asks too; Stay keeps the page and the edit.
    browser.click("#nav a[data-page=tree]").await;
    let asked = confirmation(&browser).await;
    assert!(asked.contains("Leave this page"), "{asked}");
    browser.screenshot("6-confirm-before-leaving").await;
    browser.click("#confirm-cancel").await;
    let stayed = browser
        .js("return [document.body.dataset.page, location.hash, \
                     document.querySelector('#file-editor').value];")
        .await;
    assert_eq!(
        stayed,
        json!(["workspace", format!("#/workspaces/{id}"), edit])
    );

    // Leave: the org page shows, the edit is gone, and the host still has the saved text.
    browser.click("#nav a[data-page=tree]").await;
    confirmation(&browser).await;
    browser.click("#confirm-ok").await;
    browser
        .until(
            "the org page",
            "return document.body.dataset.page === 'tree'",
        )
        .await;
    let released = browser
        .js(
            "const e = new Event('beforeunload', { cancelable: true }); \
             window.dispatchEvent(e); return e.defaultPrevented;",
        )
        .await;
    assert_eq!(
        released,
        json!(false),
        "the page's unload hold went with it"
    );
    assert_eq!(stored(&app, &id, "notes.md").await.1["content"], first);
    browser.close().await;
    report_time(started, "ws-editor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workspace_says_why_and_lifecycle_buttons_follow_the_state() {
    let started = Instant::now();
    // No runtime: workspaces stay provisioning until the test moves them.
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let lead = app.create_workspace("Lead", None).await;
    let worker = app.create_workspace("Worker", Some(&lead)).await;
    app.create_workspace("Tester", Some(&lead)).await;
    let browser = Browser::start(&app.base, "ws-failed").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{worker}")).await;
    browser
        .until(
            "the worker provisioning",
            "return document.querySelector('#ws-status').dataset.status === 'provisioning' \
               && !document.querySelector('#ws-pause').disabled",
        )
        .await;
    let buttons = browser
        .js("return ['restart', 'pause', 'resume'].map((a) => document.querySelector('#ws-' + a).disabled) \
               .concat([document.querySelector('#ws-failure').hidden]);")
        .await;
    assert_eq!(
        buttons,
        json!([false, false, true, true]),
        "restart, pause, resume disabled?, failure hidden"
    );

    // The agent's launcher reports a failure: the page shows the reason, as text.
    let reason = "pip install failed: <b id=\"injected\">no such package</b>";
    app.post(
        &format!("/admin/workspaces/{worker}/bootstrap-failed"),
        json!({ "error": reason }),
    )
    .await
    .expect(200);
    browser
        .until(
            "the failure reason",
            &format!(
                "const f = document.querySelector('#ws-failure'); \
                 const r = document.querySelector('#ws-failure-reason'); \
                 return f && !f.hidden && r && r.textContent === {} \
                   && document.querySelector('#ws-status').dataset.status === 'failed';",
                js(reason)
            ),
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#injected') === null")
            .await,
        json!(true),
        "the reason became markup"
    );
    let listed = app.get("/workspaces").await.expect(200);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == worker.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["last_sample_error"], reason);
    browser.screenshot("1-failed-with-reason").await;

    // A message to the failed agent is answered plainly with why it cannot be delivered.
    browser.click("#tab-chat").await;
    browser.type_into("#chat-input", "hello").await;
    browser.click("#chat-send").await;
    let said = browser
        .until(
            "the chat's error",
            "const m = document.querySelector('#chat-log .chat-msg.from-agent[data-state=error]'); \
             return m ? m.textContent : null;",
        )
        .await;
    assert!(said.as_str().unwrap().contains("Not answered: "), "{said}");
    browser.screenshot("2-chat-to-a-failed-agent").await;

    // Pausing a workspace with a subtree asks, with the count; cancelling pauses nothing.
    browser.open(&format!("#/workspaces/{lead}")).await;
    browser
        .until(
            "the lead's buttons",
            "return document.querySelector('#ws-name').textContent === 'Lead' \
               && !document.querySelector('#ws-pause').disabled",
        )
        .await;
    browser.click("#ws-pause").await;
    let asked = confirmation(&browser).await;
    assert!(
        asked.contains("the 2 workspaces under it") && asked.contains("3 agents stop"),
        "{asked}"
    );
    browser.screenshot("3-pause-asks-with-the-count").await;
    browser.click("#confirm-cancel").await;
    let lead_row = app.get(&format!("/workspaces/{lead}")).await.expect(200);
    assert_eq!(lead_row["status"], "provisioning", "cancel paused nothing");

    browser.click("#ws-pause").await;
    confirmation(&browser).await;
    browser.click("#confirm-ok").await;
    browser
        .until_text("#ws-lifecycle-note", "Paused 3 workspaces")
        .await;
    let paused = browser
        .until(
            "the paused lead's buttons",
            "if (document.querySelector('#ws-status').dataset.status !== 'paused') return null; \
             const d = ['restart', 'pause', 'resume'].map((a) => document.querySelector('#ws-' + a).disabled); \
             return d[0] && d[1] && !d[2] ? d : null;",
        )
        .await;
    assert_eq!(paused, json!([true, true, false]));
    browser.screenshot("4-paused-buttons").await;

    // Under a paused parent, the worker cannot be resumed or restarted on its own.
    browser.open(&format!("#/workspaces/{worker}")).await;
    let title = browser
        .until(
            "the worker's buttons under a paused lead",
            "const r = document.querySelector('#ws-resume'); \
             return document.querySelector('#ws-status').dataset.status === 'paused' \
               && r.disabled && document.querySelector('#ws-restart').disabled ? r.title : null;",
        )
        .await;
    assert!(title.as_str().unwrap().contains("Lead"), "{title}");
    browser.screenshot("5-paused-under-a-paused-parent").await;
    browser.close().await;
    report_time(started, "ws-failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_chats_with_an_agent_and_delegates_to_its_report() {
    let started = Instant::now();
    let app = host().await;
    let boss = app.create_workspace("Boss", None).await;
    let helper = app.create_workspace("Helper", Some(&boss)).await;
    app.wait_settled(&boss, ONLINE).await;
    app.wait_settled(&helper, ONLINE).await;
    let browser = Browser::start(&app.base, "ws-chat").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{boss}/chat")).await;
    browser
        .until(
            "the empty chat",
            "return document.querySelector('#tab-chat').classList.contains('active') \
               && !document.querySelector('#panel-chat').hidden \
               && document.querySelector('#chat-empty') !== null",
        )
        .await;

    // A round trip with the echo agent.
    browser.type_into("#chat-input", "hello").await;
    browser.click("#chat-send").await;
    let exchange = "const e = [...document.querySelectorAll('#chat-log .chat-entry[data-kind=operator]')] \
                      .find((x) => x.querySelector('.from-operator .chat-text').textContent === 'hello'); \
                    const a = e && e.querySelector('.from-agent'); \
                    return a && a.dataset.state === 'answered' \
                      && a.querySelector('.chat-text').textContent === 'Boss: hello';";
    browser.until("the agent's answer", exchange).await;
    browser.screenshot("1-chat-answer").await;

    // An attachment: stored in the workspace's files first, then referred to by the message.
    let dir = tempfile::tempdir().expect("a temp dir");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "the plan, in short\n").unwrap();
    browser
        .client
        .find(fantoccini::Locator::Css("#chat-files"))
        .await
        .expect("the attach input")
        .send_keys(notes.to_str().unwrap())
        .await
        .expect("choosing the file");
    browser.type_into("#chat-input", "see attached").await;
    browser.click("#chat-send").await;
    browser
        .until(
            "the answer to the message with an attachment",
            "const e = [...document.querySelectorAll('#chat-log .chat-entry[data-kind=operator]')] \
               .find((x) => x.querySelector('.from-operator .chat-text').textContent === 'see attached'); \
             const a = e && e.querySelector('.from-agent'); \
             return a && a.dataset.state === 'answered' \
               && e.querySelector('.chat-files').textContent === 'Attachments: notes.txt';",
        )
        .await;
    let sent = app
        .activity(&boss, "?type=a2a_receive&source=canvas&limit=5")
        .await;
    let file = sent
        .iter()
        .find_map(|row| {
            row.pointer("/request_body/params/message/parts")?
                .as_array()?
                .iter()
                .find(|p| p["kind"] == "file")
                .cloned()
        })
        .expect("the message refers to its attachment");
    let uri = file["file"]["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("workspace:/configs/chat-uploads/"),
        "{file}"
    );
    assert_eq!(file["file"]["mimeType"], "text/plain");
    let path = uri.trim_start_matches("workspace:/configs/");
    let stored = app
        .get(&format!("/workspaces/{boss}/chat/download?path={path}"))
        .await;
    assert_eq!(stored.text, "the plan, in short\n");
    browser.screenshot("1b-chat-attachment").await;

    // What others say to the agent, and what it says on its own, arrives live.
    browser
        .js("window.__sameDocument = 'kept'; return true;")
        .await;
    app.post(
        &format!("/workspaces/{boss}/a2a"),
        json!({ "params": { "message": { "content": "status report?" } } }),
    )
    .await
    .expect(200);
    browser
        .until_text("#chat-log", "Boss: status report?")
        .await;
    app.post(
        &format!("/workspaces/{boss}/notify"),
        json!({ "message": "I finished the plan." }),
    )
    .await
    .expect(200);
    browser
        .until(
            "the agent's own message",
            "return [...document.querySelectorAll('#chat-log .chat-entry[data-kind=agent]')] \
               .some((e) => e.textContent.includes('I finished the plan.'))",
        )
        .await;
    assert_eq!(
        browser.js("return window.__sameDocument").await,
        json!("kept"),
        "live, without a reload"
    );
    browser.screenshot("2-chat-live").await;

    // After a reload the conversation comes back from the activity log.
    browser.client.refresh().await.expect("reloading");
    browser
        .until(
            "a fresh document",
            "return document.body.dataset.page === 'workspace' && window.__sameDocument === undefined",
        )
        .await;
    browser.until("the answer in the history", exchange).await;
    browser
        .until_text("#chat-log", "I finished the plan.")
        .await;
    browser.screenshot("3-chat-history").await;

    // Delegate a task to the report; it completes with the report's answer.
    browser.click("#tab-delegations").await;
    browser
        .until(
            "the report among the targets",
            &format!(
                "const s = document.querySelector('#delegate-target'); \
                 if (!s.querySelector('option[value=\"{helper}\"]')) return null; \
                 s.value = '{helper}'; return true;"
            ),
        )
        .await;
    browser.type_into("#delegate-task", "draft the plan").await;
    browser.click("#delegate-submit").await;
    browser
        .until_text("#delegate-note", "Delegated to Helper")
        .await;
    let done = browser
        .until(
            "the delegation completed",
            "const r = document.querySelector('#delegations-out tr[data-status=completed]'); \
             return r ? r.textContent : null;",
        )
        .await;
    let done = done.as_str().unwrap();
    assert!(
        done.contains("Helper") && done.contains("Helper: draft the plan"),
        "{done}"
    );
    let listed = app
        .get(&format!("/workspaces/{boss}/delegations"))
        .await
        .expect(200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["type"] == "delegate" && d["status"] == "completed"),
        "{listed}"
    );
    browser.screenshot("4-delegation-completed").await;

    // The report lists it among what it received.
    browser
        .open(&format!("#/workspaces/{helper}/delegations"))
        .await;
    let received = browser
        .until(
            "the received delegation",
            "const r = document.querySelector('#delegations-in tr[data-delegation]:not([data-delegation=\"\"])'); \
             return r ? r.textContent : null;",
        )
        .await;
    let received = received.as_str().unwrap();
    assert!(
        received.contains("Boss") && received.contains("draft the plan"),
        "{received}"
    );
    browser.screenshot("5-delegation-received").await;
    browser.close().await;
    report_time(started, "ws-chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_say_in_words_what_they_restart_and_the_activity_log_groups_each_restart_cycle() {
    let started = Instant::now();
    let app = host().await;
    let id = app.create_workspace("Restarter", None).await;
    app.wait_settled(&id, ONLINE).await;
    let browser = Browser::start(&app.base, "ws-restart").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{id}")).await;
    browser
        .until(
            "the agent online",
            "return document.querySelector('#ws-status').dataset.status === 'online'",
        )
        .await;

    // A secret: the first restart in a while happens at once.
    browser.type_into("#secret-key", "API_KEY").await;
    browser.type_into("#secret-value", "not-shown").await;
    browser.click("#secret-form button[type=submit]").await;
    let said = browser.until_text("#secrets-note", "Set API_KEY").await;
    assert_eq!(
        browser
            .js("return document.querySelector('#secrets-note').dataset.restart")
            .await,
        json!("restart_now")
    );
    assert!(said.contains("Set API_KEY — restarting now."), "{said}");
    browser.screenshot("1-secret-restarting-now").await;
    app.wait_settled(&id, ONLINE).await;

    // A file: a second restart within minutes waits the host's minimum delay, and says so.
    browser.type_into("#file-path", "notes.md").await;
    browser.click("#file-open").await;
    browser
        .until(
            "a new file",
            "return document.querySelector('#file-state').dataset.state === 'new'",
        )
        .await;
    browser.type_into("#file-editor", "Plans.").await;
    browser.click("#file-save").await;
    let said = browser.until_text("#files-note", "Saved notes.md").await;
    assert_eq!(
        browser
            .js("return document.querySelector('#files-note').dataset.restart")
            .await,
        json!("restart_after_ms")
    );
    assert!(
        said.contains("Saved notes.md — restarting in 1 s."),
        "{said}"
    );
    assert!(!said.contains("restart_after_ms") && !said.contains("ms:"));
    browser.screenshot("2-file-restarting-in-1-s").await;
    app.wait_settled(&id, ONLINE).await;

    // A row whose text looks like markup stays text.
    app.post(
        &format!("/workspaces/{id}/activity"),
        json!({
            "activity_type": "agent_log",
            "summary": "<img id=\"injected\" src=x>",
            "request_body": { "html": "<b id=\"bold\">not bold</b>" },
        }),
    )
    .await
    .expect(200);

    // The activity log: each restart cycle is one group (decision, restart, restart context).
    browser.click("#tab-activity").await;
    let cycles = browser
        .until(
            "two restart cycles, each told to the agent",
            "const g = [...document.querySelectorAll('#activity-table tbody.restart-cycle')]; \
             if (g.length < 2 || !g.every((b) => b.querySelector('tr.activity-row[data-type=a2a_receive]') \
                 && b.querySelector('tr.activity-row[data-type=restart]') \
                 && b.querySelector('tr.activity-row[data-type=restart_decision]'))) return null; \
             if (!document.querySelector('#activity-table').textContent.includes('<img')) return null; \
             return g.map((b) => b.querySelector('tr.cycle-head').textContent);",
        )
        .await;
    let cycles: Vec<&str> = cycles
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        cycles[0].contains("files written (notes.md)")
            && cycles[0].contains("policy: restarting in 1 s"),
        "{cycles:?}"
    );
    assert!(
        cycles[1].contains("secret changed (API_KEY)")
            && cycles[1].contains("policy: restarting now")
            && cycles[1].contains("the agent was told it restarted"),
        "{cycles:?}"
    );
    assert_eq!(
        browser
            .js("return document.querySelector('#injected') === null")
            .await,
        json!(true)
    );
    let hidden = browser
        .js("return [...document.querySelectorAll('tbody.restart-cycle tr.activity-row')].every((r) => r.hidden)")
        .await;
    assert_eq!(hidden, json!(true), "cycles start folded");
    browser.screenshot("3-activity-grouped").await;

    // Open the newest cycle, then its decision: the request body as indented JSON text.
    browser
        .click("#activity-table tbody.restart-cycle tr.cycle-head")
        .await;
    browser
        .click("#activity-table tbody.restart-cycle tr.activity-row[data-type=restart_decision]")
        .await;
    let body = browser
        .until(
            "the decision's request body",
            "const p = document.querySelector('#activity-table tbody.restart-cycle tr.activity-detail:not([hidden]) .request-body pre'); \
             return p && p.children.length === 0 ? p.textContent : null;",
        )
        .await;
    let body = body.as_str().unwrap();
    assert!(
        body.contains("\"kind\": \"restart_after_ms\"") && body.contains("\n  "),
        "{body}"
    );
    let parsed: Value = serde_json::from_str(body).expect("the body is JSON");
    assert_eq!(parsed["trigger"]["paths"], json!(["notes.md"]));
    browser.screenshot("4-activity-expanded").await;

    // The markup-looking row opens to text too.
    browser
        .click("#activity-table tr.activity-row[data-type=agent_log]")
        .await;
    browser
        .until_text(
            "#activity-table tr.activity-detail:not([hidden]) .request-body pre",
            "<b id=\\\"bold\\\">",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#bold') === null")
            .await,
        json!(true)
    );

    // Filtered by type: only restart rows, one by one.
    browser
        .js(
            "const s = document.querySelector('#activity-filter'); s.value = 'restart'; \
             s.dispatchEvent(new Event('change')); return true;",
        )
        .await;
    let types = browser
        .until(
            "only restart rows",
            "if (document.querySelector('#activity-table tbody.restart-cycle')) return null; \
             const t = [...document.querySelectorAll('#activity-table tr.activity-row')].map((r) => r.dataset.type); \
             return t.length && t.every((x) => x === 'restart') ? t : null;",
        )
        .await;
    assert_eq!(types.as_array().unwrap().len(), 2, "{types}");
    browser.screenshot("5-activity-filtered").await;
    browser.close().await;
    report_time(started, "ws-restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hibernate_button_stops_a_running_agent_and_a_chat_message_wakes_it() {
    let started = Instant::now();
    let app = host().await;
    let id = app.create_workspace("Sleeper", None).await;
    app.wait_settled(&id, ONLINE).await;
    let browser = Browser::start(&app.base, "ws-hibernate").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{id}")).await;
    // Running: hibernate is offered, resume is not.
    browser
        .until(
            "the running agent's buttons",
            "return document.querySelector('#ws-status').dataset.status === 'online' \
               && !document.querySelector('#ws-hibernate').disabled \
               && document.querySelector('#ws-resume').disabled ? true : null;",
        )
        .await;
    browser.click("#ws-hibernate").await;
    browser
        .until_text("#ws-lifecycle-note", "Hibernated: the agent is stopped")
        .await;
    let buttons = browser
        .until(
            "the hibernated agent's buttons",
            "if (document.querySelector('#ws-status').dataset.status !== 'hibernated') return null; \
             const d = ['hibernate', 'resume'].map((a) => document.querySelector('#ws-' + a).disabled); \
             return d[0] && !d[1] ? d : null;",
        )
        .await;
    assert_eq!(buttons, json!([true, false]));
    let stored = app.get(&format!("/workspaces/{id}")).await.expect(200);
    assert_eq!(stored["status"], "hibernated");
    browser.screenshot("1-hibernated").await;

    // A chat message wakes it: the console says so, then shows the woken agent's answer. A
    // process agent can wake and answer before the browser has read the 202, and a real answer
    // is never replaced by "queued": so the console shows the waking note or, already, the
    // answer; the host's own record says the call was queued to wake it either way.
    browser.click("#tab-chat").await;
    browser.type_into("#chat-input", "good morning").await;
    browser.click("#chat-send").await;
    browser
        .until(
            "the waking note or the woken agent's answer",
            "const t = document.querySelector('#chat-log').textContent; \
             return t.includes('waking from hibernation') || t.includes('Sleeper: good morning') \
               ? true : null;",
        )
        .await;
    browser.screenshot("2-waking").await;
    browser
        .until_text("#chat-log", "Sleeper: good morning")
        .await;
    browser.screenshot("3-answered-after-waking").await;
    let calls = app
        .get(&format!("/workspaces/{id}/activity?type=a2a_receive"))
        .await
        .expect(200);
    assert!(
        calls
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["status"] == "queued" && r["response_body"]["waking"] == true),
        "the message was queued to wake the agent: {calls}"
    );
    browser.close().await;
    report_time(started, "ws-hibernate");
}
