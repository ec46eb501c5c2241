//! The workspace page's team and agent controls: the template's team expanded and collapsed,
//! and the agent's model assigned, replaced with a reason and removed, with its history shown.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp, write_file};
use serde_json::json;

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_expands_and_collapses_and_the_agent_is_assigned_replaced_and_removed() {
    let started = Instant::now();
    let templates = tempfile::tempdir().unwrap();
    write_file(
        templates.path(),
        "lead/config.yaml",
        "name: Lead\nsub_workspaces:\n  - Coder\n  - Reviewer\n",
    );
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(DbBackend::Sqlite, move |c| {
        c.runtime.templates_dir = Some(dir)
    })
    .await;
    let lead = app
        .post("/workspaces", json!({ "name": "Lead", "template": "lead" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::start(&app.base, "ws-team").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{lead}")).await;

    browser.click("#team-expand").await;
    browser
        .until_text("#team-note", "Created Coder, Reviewer.")
        .await;
    let children = |listed: Vec<serde_json::Value>| {
        listed
            .iter()
            .filter(|w| w["parent_id"] == lead.as_str())
            .count()
    };
    assert_eq!(children(app.workspaces().await), 2);
    browser.click("#team-collapse").await;
    browser
        .until_text("#team-note", "Removed 2 workspaces the team had made.")
        .await;
    assert_eq!(children(app.workspaces().await), 0);

    browser
        .until_text("#agent-current", "No agent assigned")
        .await;
    browser.type_into("#agent-model", "m-1").await;
    browser.click("#agent-save").await;
    browser.until_text("#agent-note", "now runs m-1").await;
    browser.until_text("#agent-current", "Runs m-1").await;
    browser.type_into("#agent-model", "m-2").await;
    browser.type_into("#agent-reason", "faster").await;
    browser.click("#agent-save").await;
    browser.until_text("#agent-current", "Runs m-2").await;
    browser.until_text("#agent-history", "faster").await;
    browser.screenshot("agent").await;
    assert_eq!(
        app.get(&format!("/workspaces/{lead}/model"))
            .await
            .expect(200)["model"],
        "m-2"
    );
    browser.click("#agent-remove").await;
    browser.until_text("#agent-note", "Removed").await;
    browser
        .until_text("#agent-current", "No agent assigned")
        .await;
    browser.close().await;
    report_time(started, "ws-team");
}
