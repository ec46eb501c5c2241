//! The workspace page's operator tabs against a real agent on the process runtime: the terminal
//! opens a shell, runs a command typed into it and closes; the agent's log shows its lines and,
//! followed, a line as soon as the agent writes it; the audit ledger lists the workspace's
//! actions and verifies the chain; a delegation to a child shows as one trace whose waterfall
//! has the host's spans and both agents'.

use std::io::Write as _;
use std::time::{Duration, Instant};

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp, eventually, process_runtime};
use serde_json::json;

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_logs_traces_and_audit_tabs_work_against_a_running_agent() {
    let started = Instant::now();
    let app = TestApp::spawn_with(DbBackend::Sqlite, process_runtime).await;
    let id = app.create_workspace("Operated", None).await;
    app.wait_settled(&id, Duration::from_secs(90)).await;
    // One action for the ledger: the operator mints a token for the workspace.
    app.post(&format!("/workspaces/{id}/tokens"), json!({}))
        .await
        .expect(201);
    let browser = Browser::start(&app.base, "ws-operate").await;
    browser.sign_in(ADMIN_TOKEN).await;

    // Terminal: diagnose says a shell can open; a command's output comes back; closing ends it.
    browser.open(&format!("#/workspaces/{id}/terminal")).await;
    browser
        .until_text("#terminal-state", "A shell can open")
        .await;
    browser.click("#terminal-open").await;
    browser.until_text("#terminal-state", "Connected").await;
    browser
        .type_into("#terminal-input", "echo console-$((20+22))")
        .await;
    browser.click("#terminal-send").await;
    browser.until_text("#terminal-screen", "console-42").await;
    browser.screenshot("terminal").await;
    browser.click("#terminal-close").await;
    browser.until_text("#terminal-state", "Closed").await;

    // Logs: the agent's start line, then a line it writes while the page follows.
    browser.click("#tab-logs").await;
    browser
        .until_text("#logs-screen", "starting molecule-agent")
        .await;
    browser.click("#logs-follow").await;
    browser.until_text("#logs-note", "Following").await;
    let log = app
        .data_dir()
        .join("workspaces")
        .join(&id)
        .join("agent.log");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("the agent's log");
    writeln!(file, "a line written while the console follows").unwrap();
    browser
        .until_text("#logs-screen", "a line written while the console follows")
        .await;
    browser.screenshot("logs").await;

    // Audit: the mint and the terminal session, and an intact chain.
    browser.click("#tab-audit").await;
    browser.until_text("#audit-list", "token.minted").await;
    browser.until_text("#audit-list", "terminal.opened").await;
    browser.click("#audit-verify").await;
    browser
        .until_text("#audit-note", "The chain is intact")
        .await;
    browser.screenshot("audit").await;

    // Traces: a delegation to a child is one trace; its waterfall shows the host's spans and
    // both agents'.
    let child = app.create_workspace("Helper", Some(&id)).await;
    app.wait_settled(&child, Duration::from_secs(90)).await;
    let reply = app
        .post(
            &format!("/workspaces/{id}/a2a"),
            json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": { "message": {
                "role": "user", "parts": [{ "kind": "text", "text": format!("delegate {child}: hi") }] } } }),
        )
        .await;
    let trace_id = reply.headers["x-trace-id"].to_str().unwrap().to_owned();
    reply.expect(200);
    eventually(Duration::from_secs(30), || async {
        let page = app
            .get(&format!("/workspaces/{id}/traces?trace_id={trace_id}"))
            .await
            .expect(200);
        let agents = page["traces"][0]["spans"]
            .as_array()?
            .iter()
            .filter(|s| s["name"] == "agent message/send")
            .count();
        (agents == 2).then_some(())
    })
    .await;
    browser.click("#tab-traces").await;
    browser
        .until_text("#trace-waterfall", "agent message/send")
        .await;
    browser.until_text("#trace-waterfall", "delegation").await;
    browser.until_text("#traces-list", "Helper").await;
    browser.screenshot("traces").await;
    browser.close().await;
    report_time(started, "ws-operate");
}
