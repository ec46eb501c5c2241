//! The workspace page's schedules tab: the cron field is checked by the host as it is typed
//! (an invalid one names the problem and keeps Create off; a valid one previews its next three
//! runs), a created schedule is listed with its next runs, it can be disabled and enabled, run
//! now (the agent receives the prompt) and its history read.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, Fault, FaultAgent, TestApp};

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_previewed_created_toggled_run_and_its_history_shown() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let agent = FaultAgent::start(|_| Fault::Answer).await;
    let (id, _) = app.workspace_at("Planner", None, &agent.url).await;
    let browser = Browser::start(&app.base, "ws-schedules").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open(&format!("#/workspaces/{id}")).await;
    browser.click("#tab-schedules").await;
    browser.until_text("#schedules-empty", "No schedules").await;

    browser.type_into("#schedule-cron", "61 * * * *").await;
    browser.until_text("#schedule-preview", "cron_expr").await;
    assert_eq!(
        browser
            .js("return document.querySelector('#schedule-submit').disabled")
            .await,
        true
    );
    browser.type_into("#schedule-cron", "*/5 * * * *").await;
    let preview = browser.until_text("#schedule-preview", "Next runs:").await;
    assert_eq!(preview.matches("; ").count(), 2, "three runs: {preview}");
    browser
        .type_into("#schedule-timezone", "Europe/Berlin")
        .await;
    browser.type_into("#schedule-name", "standup").await;
    browser.type_into("#schedule-prompt", "Plan the day.").await;
    browser
        .until(
            "Create enabled",
            "return document.querySelector('#schedule-submit').disabled === false || null",
        )
        .await;
    browser.screenshot("form").await;
    browser.click("#schedule-submit").await;
    browser.until_text("#schedule-note", "Created").await;
    browser.until_text("#schedule-list", "standup").await;
    browser.until_text("#schedule-list", "Europe/Berlin").await;

    browser
        .click("#schedule-list button[data-action=toggle]")
        .await;
    browser
        .until(
            "the schedule disabled",
            "return document.querySelector('[data-schedule][data-enabled=false]') !== null || null",
        )
        .await;
    browser.until_text("#schedule-list", "disabled").await;
    browser
        .click("#schedule-list button[data-action=toggle]")
        .await;
    browser
        .until(
            "the schedule enabled",
            "return document.querySelector('[data-schedule][data-enabled=true]') !== null || null",
        )
        .await;

    browser
        .click("#schedule-list button[data-action=run]")
        .await;
    browser.until_text("#schedule-note", "standup: ok").await;
    assert!(
        agent.requests().iter().any(|r| r
            .pointer("/params/message/parts/0/text")
            .and_then(|t| t.as_str())
            == Some("Plan the day.")),
        "the agent received the prompt"
    );
    browser
        .click("#schedule-list button[data-action=history]")
        .await;
    browser.until_text("#schedule-history", "run now").await;
    browser.screenshot("history").await;
    // No script error and no failed schedules request but the refused preview (this workspace
    // has no runtime, so its files panel's requests fail on their own).
    let errors: Vec<String> = browser
        .console_log()
        .await
        .expect("reading the browser's console")
        .into_iter()
        .filter(|line| line.starts_with("SEVERE"))
        .filter(|line| {
            !line.contains("Failed to load resource")
                || (line.contains("/schedules") && !line.contains("/schedules/preview"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    report_time(
        started,
        "a_schedule_is_previewed_created_toggled_run_and_its_history_shown",
    );
}
