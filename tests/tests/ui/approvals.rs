//! The pending-approvals banner: absent while nothing is pending; an agent's request makes it
//! appear on whatever page is open; its dialog shows the workspace, action, reason and context;
//! approving with a note takes the banner away and the host records the decision.

use std::time::Instant;

use molecule_e2e::{ADMIN_TOKEN, DbBackend, TestApp};
use serde_json::json;

use crate::browser::{Browser, report_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_approval_shows_a_banner_whose_dialog_approves_it() {
    let started = Instant::now();
    let app = TestApp::spawn(DbBackend::Sqlite).await;
    let id = app.create_workspace("Deployer", None).await;
    let agent = app.with_token(&app.agent_token(&id).await);
    let browser = Browser::start(&app.base, "approvals").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.open("#/extensions").await;
    browser
        .until(
            "the banner hidden while nothing is pending",
            "const b = document.querySelector('#approvals-banner'); return (b && b.hidden) || null",
        )
        .await;

    let created = agent
        .post(
            &format!("/workspaces/{id}/approvals"),
            json!({
                "action": "deploy to production",
                "reason": "release 1.2 is tagged",
                "context": { "version": "1.2.0" },
            }),
        )
        .await
        .expect(201);
    let approval = created["id"].as_str().unwrap().to_owned();

    let text = browser
        .until_text("#approvals-banner", "1 approval pending")
        .await;
    assert!(text.contains("Deployer: deploy to production"), "{text}");
    browser.screenshot("banner").await;
    browser.click("#approvals-banner .approval-review").await;
    browser
        .until_text("#approval-dialog #approval-workspace", "Deployer")
        .await;
    browser
        .until_text("#approval-dialog #approval-action", "deploy to production")
        .await;
    browser
        .until_text("#approval-dialog #approval-reason", "release 1.2 is tagged")
        .await;
    browser
        .until_text("#approval-dialog #approval-context", "1.2.0")
        .await;
    browser.type_into("#approval-note", "ship it").await;
    browser.screenshot("dialog").await;
    browser.click("#approval-approve").await;
    browser
        .until(
            "the dialog closed and the banner gone",
            "const b = document.querySelector('#approvals-banner'); \
             return (!document.querySelector('#approval-dialog') && b.hidden) || null",
        )
        .await;

    let stored = app
        .get(&format!("/workspaces/{id}/approvals"))
        .await
        .expect(200);
    assert_eq!(stored[0]["id"], approval.as_str());
    assert_eq!(stored[0]["status"], "approved", "{stored}");
    assert_eq!(stored[0]["note"], "ship it");
    assert_eq!(stored[0]["decided_by"], "operator");
    let errors: Vec<String> = browser
        .console_log()
        .await
        .expect("reading the browser's console")
        .into_iter()
        .filter(|line| line.starts_with("SEVERE"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    report_time(
        started,
        "a_requested_approval_shows_a_banner_whose_dialog_approves_it",
    );
}
